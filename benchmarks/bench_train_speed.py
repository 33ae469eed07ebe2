"""Training speed: patches per second of one ``train-cls`` epoch, per backbone and device.

For each backbone two numbers from the same run:

* ``model only`` -- SGD steps on a random tensor already in memory: the compute limit
  (the naive reference: what the network alone costs);
* ``pipeline``   -- a real epoch of :func:`wsss_napari.train.cls.train_classifier` on
  generated patches (PNG decoding, random resized crop, flips, HED jitter, normalisation,
  loss, optimizer, per-epoch checkpoint) -- what a user gets.

The ratio pipeline / model-only shows how much the data path costs. Rows for ``resnet18``
(the method's usual backbone) show why the default is a MobileNetV3. Runs on CPU, and on CUDA
as well when available.

    python benchmarks/bench_train_speed.py                 # ~4 min on one CPU core
    python benchmarks/bench_train_speed.py --quick
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def model_only(backbone: str, device, batch: int, size: int, steps: int) -> float:
    """Patches/s of bare SGD steps (forward + backward + step) on one in-memory batch."""
    import torch

    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model

    model = build_model(ModelConfig(backbone=backbone, input_size=size)).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 2, (batch, 3), device=device).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    t = 0.0
    for i in range(steps + 1):
        if i == 1:
            _sync(device)
            t = time.perf_counter()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t)


def pipeline(backbone: str, device: str, data: Path, batch: int, size: int, workers: int
             ) -> float:
    """Patches/s of the second epoch of a real train-cls run (the first warms up)."""
    from wsss_napari.params import TrainClsParams
    from wsss_napari.train.cls import train_classifier

    params = TrainClsParams(backbone=backbone, pretrained=False, epochs=2, batch_size=batch,
                            crop_size=size, val_fraction=0.0, device=device, workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        gen = train_classifier(data, Path(tmp) / "m.safetensors", params)
        t_start, n = None, 0
        for p in gen:
            if p.info.get("epoch") == 2 and "lr" in p.info:
                if t_start is None:
                    t_start = time.perf_counter()
                else:
                    n += batch
        return n / (time.perf_counter() - t_start)


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", nargs="+",
                    default=["mobilenetv3_small_100", "resnet18"])
    ap.add_argument("--patches", type=int, default=120)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="40 patches, mobilenet only")
    args = ap.parse_args(argv)
    if args.quick:
        args.patches, args.backbones = 40, ["mobilenetv3_small_100"]

    import torch

    from wsss_napari.sample.synth import write_patch_dataset

    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), crop {args.size}, "
          f"batch {args.batch}, {args.patches} patches")
    print("| backbone | device | model only (patch/s) | pipeline (patch/s) | pipeline / model |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_patch_dataset(Path(tmp) / "patches", args.patches, size=224, seed=0)
        for backbone in args.backbones:
            for dev in devices:
                steps = 3 if dev == "cpu" else 20
                mo = model_only(backbone, torch.device(dev), args.batch, args.size, steps)
                pl = pipeline(backbone, dev, data, args.batch, args.size, args.workers)
                print(f"| {backbone} | {dev} | {mo:.1f} | {pl:.1f} | {pl / mo:.2f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
