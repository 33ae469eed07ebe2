"""``wsss-napari batch``: a cohort of slides on dask.distributed (local or an existing cluster)."""

from __future__ import annotations

import argparse

from ._slide import add_job_arguments, spec_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "batch",
        help="many slides on dask (local cluster or --scheduler) -> cohort.csv",
        description="Run 'wsss-napari slide' on every slide, one dask task per slide: on a "
        "local cluster of process workers sized to this machine, or on an existing dask "
        "scheduler (--scheduler; dask-jobqueue, dask-kubernetes...). Each slide's outputs "
        "go to OUT_DIR as in 'slide'; OUT_DIR/cohort.csv has one row per slide (status done, "
        "skipped or failed, error, seconds, areas, tumor-stroma ratio, hashes, output "
        "paths). Slides done with the same model and parameters are skipped unless --force. "
        "Exit status 1 when any slide failed (the others' outputs are kept).",
    )
    p.add_argument("slides", nargs="*", metavar="SLIDE", help="slide files")
    p.add_argument("--list", metavar="FILE", dest="list_file",
                   help="text file of slide paths, one per line (relative to the file)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of a running dask scheduler (e.g. tcp://host:8786); "
                   "default: start a local cluster")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default: sized to the cores and memory)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for --scheduler (default: 10)")
    add_job_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import WsssError
    from ..cohort import read_slide_list, run_cohort
    from ..progress import run_to_end
    from ..slide_job import check_out_dir

    if args.workers is not None and args.workers < 1:
        raise WsssError("--workers must be at least 1")
    slides = read_slide_list(args.slides, args.list_file)
    spec = spec_from_args(args)
    out = check_out_dir(args.out, create=False)  # created once the cluster is reached

    def on_client(client) -> None:
        n = len(client.scheduler_info().get("workers", {}))
        print(f"dask dashboard: {client.dashboard_link}  ({n} workers)", flush=True)  # noqa: T201

    rows = run_to_end(run_cohort(slides, out, spec, scheduler=args.scheduler,
                                 workers=args.workers, force=args.force, timeout=args.timeout,
                                 on_client=on_client), show=True, desc="slides")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    print(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed: "  # noqa: T201
          f"{out / 'cohort.csv'}")
    for r in rows:
        if r["status"] == "failed":
            print(f"failed: {r['slide']}: {r['error']}")  # noqa: T201
    return 1 if counts["failed"] else 0

