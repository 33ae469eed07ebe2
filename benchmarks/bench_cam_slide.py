"""Whole-slide CAM speed against a baseline checkout, quiet and beside a busy PyTorch job.

    git worktree add --detach /tmp/old <baseline commit>
    python benchmarks/bench_cam_slide.py --baseline-src /tmp/old/src

Each measurement runs in a fresh subprocess that imports ``wsss_napari`` from ``src/`` of
this checkout ("ours") or from ``--baseline-src`` ("baseline"), loads the default model and
computes CAMs with the default ``CamParams`` into a fresh cache, back to back in one run:

* slide: the whole slide (default: ``../shared/data/slides/CMU-1-Small-Region.svs``), and the
  crops the network saw (counted at ``model.logits_and_cams``): first in the fresh process
  (its time includes the first use of zarr, dask, OpenCV and scikit-image and their set-up),
  then again into a fresh cache in the now warm process ("warm": the throughput of a
  long-running napari session or cohort worker; the bare model gets a warm-up pass too);
  crops are counted from each tile's crop progress;
* bare model: ``logits_and_cams`` of the model as loaded (the unmodified timm network a user
  would run) on ready normalised tensors (batch 16, at the model's input size: the crops the
  slide run feeds) with PyTorch's default threads, contiguous and channels_last, and as the
  library's CPU streams (``device.cpu_plan``): the best of the three is "bare"; and the same
  streams with the network the engine runs (``models.fuse.inference_model``: BatchNorm
  folded, static padding), so both ratios are printed;
* fov: a 1024 x 1024 field of view as the CAM widget computes it (ours: the time to the
  one-scale preview and to the final maps; the baseline had one pass);
* png: a 64 x 64 image (a one-tile "slide");
* loaded: the slide (or ``--load-region``, measured quiet first) again while another
  process runs a 2-thread PyTorch convolution loop (started and stopped by this script),
  ratio to the quiet time.

Prints one table; times exclude importing torch and loading the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLIDE = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
LOAD = ("import torch\ntorch.set_num_threads(2)\nx = torch.randn(16, 128, 56, 56)\n"
        "conv = torch.nn.Conv2d(128, 128, 3, padding=1)\n"
        "with torch.inference_mode():\n    while True:\n        conv(x)\n")


def worker(args) -> dict:
    """One measurement in this process (``--task``); returns a JSON-able record."""
    sys.path.insert(0, args.src)
    import numpy as np
    import torch

    from wsss_napari.inference import slide_cam
    from wsss_napari.io.slide import Slide
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import CamParams

    model = load_model("default")
    crops = [0]  # crops the network saw: each tile's crop progress, else a hook (old code)

    def count_batch(_mod, args):
        crops[0] += args[0].shape[0]

    hook = model.backbone.register_forward_pre_hook(count_batch)  # inference copies keep it
    cache = tempfile.mkdtemp(prefix="wsss-bench-cam-")
    rec: dict = {"task": args.task, "threads": torch.get_num_threads()}
    region = tuple(args.region) if args.region else None
    if region is not None and hasattr(slide_cam, "_check_region"):  # regions are records now
        from wsss_napari.region import Region

        region = Region(y=region[0], x=region[1], height=region[2], width=region[3])
    if args.task == "bare":
        hook.remove()
        from wsss_napari.device import cpu_plan, torch_threads

        plan = cpu_plan()
        size = int(getattr(model.config, "input_size", 224))  # the crops the slide run feeds
        rec["crop_px"] = size
        x = torch.randn(16, 3, size, size).contiguous(memory_format=torch.channels_last)
        model.to(memory_format=torch.channels_last)

        from concurrent.futures import ThreadPoolExecutor

        def streams(net) -> float:
            def stream(n: int) -> None:
                with torch.inference_mode():
                    for _ in range(n):
                        net.logits_and_cams(x)

            with torch_threads(plan), ThreadPoolExecutor(plan.streams) as pool:
                list(pool.map(stream, [1] * plan.streams))  # warm-up
                per = max(1, args.bare_crops // (16 * plan.streams))
                t = time.perf_counter()
                list(pool.map(stream, [per] * plan.streams))
                return per * 16 * plan.streams / (time.perf_counter() - t)

        rec["crops_per_s_streams"] = streams(model)  # the timm model as loaded
        try:  # the network the engine runs: BatchNorm folded, static padding (models/fuse.py)
            from wsss_napari.models.fuse import inference_model
        except ImportError:
            pass
        else:
            fused = inference_model(model)
            if fused is not model:  # alternated, the best of two each
                rec["crops_per_s_streams_fused"] = streams(fused)
                rec["crops_per_s_streams"] = max(rec["crops_per_s_streams"], streams(model))
                rec["crops_per_s_streams_fused"] = max(rec["crops_per_s_streams_fused"],
                                                       streams(fused))
        rec["streams"] = [plan.streams, plan.intra]
        for fmt in ("contiguous", "channels_last"):
            mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
            model.to(memory_format=mf)
            x = torch.randn(16, 3, size, size).contiguous(memory_format=mf)
            with torch.inference_mode():
                model.logits_and_cams(x)
                t, n = time.perf_counter(), 0
                while n < args.bare_crops:
                    model.logits_and_cams(x)
                    n += 16
            rec[f"crops_per_s_{fmt}"] = n / (time.perf_counter() - t)
        return rec
    with Slide.open(args.slide) as slide:
        if args.task == "png":
            rgb = np.asarray(slide.read_region(0, 1500, 1100, 64, 64))[..., :3].copy()
            slide = Slide.from_arrays([rgb], mpp=slide.mpp)
            region = None
        params = CamParams(stride=args.stride)
        t = time.perf_counter()
        if args.task == "fov" and hasattr(slide_cam, "progressive_slide_cams"):
            res, n_crops = run_counted(slide_cam.progressive_slide_cams(
                slide, model, params, cache_dir=cache, region=region), crops, rec, t)
        else:
            crops[0] = 0
            res, n_crops = run_counted(slide_cam.slide_cams(slide, model, params,
                                                            cache_dir=cache, region=region),
                                       crops)
        rec["seconds"] = time.perf_counter() - t
        rec["crops"] = n_crops
        rec["crops_per_s"] = n_crops / rec["seconds"]
        if args.save:
            np.save(args.save, np.asarray(res.cams))
        if args.warm:  # again in this warm process (imports, first-call set-up done)
            crops[0] = 0
            t = time.perf_counter()
            _, n_crops = run_counted(slide_cam.slide_cams(
                slide, model, params, cache_dir=tempfile.mkdtemp(prefix="wsss-bench-"),
                region=region), crops)
            rec["warm_seconds"] = time.perf_counter() - t
            rec["warm_crops_per_s"] = n_crops / rec["warm_seconds"]
    return rec


def run_counted(gen, hooked: list, rec: dict | None = None, t0: float = 0.0) -> tuple:
    """Run ``slide_cams`` (or ``progressive_slide_cams``) to the end; ``(result, crops run)``:
    the sum of each tile's crop total (``info['crops'] = 'done/total'``) over every pass, or
    what the hook counted (older code). An item that is not a ``Progress`` (a field of
    view's preview) ends a pass; the first one sets ``rec['first_s']`` (seconds since
    ``t0``)."""
    from wsss_napari.progress import Progress

    totals: dict = {}
    passes = 0
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            res = stop.value
            break
        if not isinstance(p, Progress):
            if rec is not None and "first_s" not in rec:
                rec["first_s"] = time.perf_counter() - t0
            passes += 1
            continue
        crops = (p.info or {}).get("crops")
        if crops:  # p.done: tiles done before it, within its pass
            totals[passes, p.done] = int(str(crops).split("/")[1])
    return res, (sum(totals.values()) if totals else hooked[0])


def run_worker(src: str, task: str, args, region=None, save=None, warm=False) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--src", src, "--task", task,
           "--slide", str(args.slide), "--bare-crops", str(args.bare_crops)]
    if warm:
        cmd += ["--warm"]
    if args.stride:
        cmd += ["--stride", str(args.stride)]
    if region:
        cmd += ["--region", *map(str, region)]
    if save:
        cmd += ["--save", save]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"{task} with {src} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-src", required=False, help="src/ of the baseline checkout")
    ap.add_argument("--slide", default=str(SLIDE))
    ap.add_argument("--fov", type=int, nargs=4, default=[1000, 600, 1024, 1024],
                    metavar=("Y", "X", "H", "W"))
    ap.add_argument("--load-region", type=int, nargs=4, metavar=("Y", "X", "H", "W"),
                    help="region for the loaded runs (default: the whole slide)")
    ap.add_argument("--bare-crops", type=int, default=320)
    ap.add_argument("--save-prefix", help="save the whole-slide maps as PREFIX_{ours,base}.npy")
    ap.add_argument("--skip", nargs="*", default=[], help="parts to skip: fov png loaded")
    ap.add_argument("--stride", type=int, default=0,
                    help="CamParams.stride for every run (default 0: each version's default)")
    # worker mode
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--task", help=argparse.SUPPRESS)
    ap.add_argument("--region", type=int, nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    ap.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))  # noqa: T201
        return 0
    versions = {"ours": str(REPO / "src")}
    if args.baseline_src:
        versions["baseline"] = args.baseline_src
    res: dict = {v: {} for v in versions}
    print(f"cores available: {len(os.sched_getaffinity(0))}, load average "  # noqa: T201
          f"{os.getloadavg()[0]:.1f} at start", flush=True)
    res["ours"]["bare"] = run_worker(versions["ours"], "bare", args)
    for v, src in versions.items():
        save = f"{args.save_prefix}_{v}.npy" if args.save_prefix else None
        res[v]["slide"] = run_worker(src, "slide", args, save=save, warm=True)
        if "fov" not in args.skip:
            res[v]["fov"] = run_worker(src, "fov", args, region=args.fov)
        if "png" not in args.skip:
            res[v]["png"] = run_worker(src, "png", args)
        print(v, json.dumps(res[v]), flush=True)  # noqa: T201
    if "loaded" not in args.skip:
        for v, src in versions.items():  # the same region without the load, first
            res[v]["quiet_for_load"] = (res[v]["slide"] if not args.load_region else
                                        run_worker(src, "slide", args, region=args.load_region))
        load = subprocess.Popen([sys.executable, "-c", LOAD])
        try:
            time.sleep(3)
            for v, src in versions.items():
                res[v]["loaded"] = run_worker(src, "slide", args, region=args.load_region)
                print(v, "loaded", json.dumps(res[v]["loaded"]), flush=True)  # noqa: T201
        finally:
            load.kill()
            load.wait()
    bare = res["ours"]["bare"]
    best_bare = max(bare["crops_per_s_contiguous"], bare["crops_per_s_channels_last"],
                    bare["crops_per_s_streams"])
    print(f"\nbare model (batch 16, {bare['threads']} threads): "  # noqa: T201
          f"{bare['crops_per_s_contiguous']:.1f} crops/s contiguous, "
          f"{bare['crops_per_s_channels_last']:.1f} channels_last; "
          f"{bare['crops_per_s_streams']:.1f} as {bare['streams'][0]} streams x "
          f"{bare['streams'][1]} thread (cpu_plan); the best is 'bare' below")
    fused = bare.get("crops_per_s_streams_fused")
    if fused:
        print(f"bare model with BatchNorm folded and static padding (the network the engine "  # noqa: T201
              f"runs, models/fuse.py): {fused:.1f} crops/s as {bare['streams'][0]} streams "
              f"= {fused / max(bare['crops_per_s_contiguous'], bare['crops_per_s_channels_last'], bare['crops_per_s_streams']):.2f}x bare")  # noqa: E501
    for v in versions:
        r = res[v]
        s = r["slide"]
        line = (f"{v:9s} slide {s['seconds']:6.1f} s  {s['crops']:5d} crops  "
                f"{s['crops_per_s']:6.1f} crops/s = {s['crops_per_s'] / best_bare:.0%} of bare"
                f" | warm process {s['warm_seconds']:.1f} s, {s['warm_crops_per_s']:.1f} "
                f"crops/s = {s['warm_crops_per_s'] / best_bare:.0%} of bare")
        if fused:
            line += (f" (of the folded bare model: {s['crops_per_s'] / fused:.0%} fresh, "
                     f"{s['warm_crops_per_s'] / fused:.0%} warm)")
        if "fov" in r:
            f = r["fov"]
            first = f.get("first_s", f["seconds"])
            line += f"  | fov {first:.1f} s first, {f['seconds']:.1f} s all"
        if "png" in r:
            line += f"  | 64px png {r['png']['seconds']:.2f} s ({r['png']['crops']} crops)"
        if "loaded" in r:
            line += (f"  | loaded {r['loaded']['seconds']:.1f} s = "
                     f"{r['loaded']['seconds'] / r['quiet_for_load']['seconds']:.2f}x quiet")
        print(line)  # noqa: T201
    if "baseline" in res:
        print(f"whole slide: ours = {res['baseline']['slide']['seconds'] / res['ours']['slide']['seconds']:.2f}x "  # noqa: E501,T201
              "faster than the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
