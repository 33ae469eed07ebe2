"""Cohorts on dask.distributed: one task per slide, resumable, failures kept apart.

:func:`run_cohort` submits :func:`slide_task` once per slide to a dask cluster: a
``LocalCluster`` of process workers sized to this machine, or an existing scheduler
(``dask-jobqueue`` on SLURM/PBS, ``dask-kubernetes``, ``dask-gateway``... anything with an
address), so no scheduler is written here. Each task opens its slide on the worker and reads
its own tiles there (only the slide's path travels; no pixels are scattered from the client),
then runs :func:`wsss_napari.slide_job.run_slide`, which writes every file atomically and a
done-marker last. Consequences:

- a slide that fails (corrupt file, no tissue...) becomes a ``failed`` row with its error,
  the traceback goes to ``<slide>.error.log``, and the other slides go on;
- a worker that dies mid-slide (out of memory, node lost) loses nothing: the scheduler runs
  the task again elsewhere (up to ``distributed.scheduler.allowed-failures`` times), the
  retry removes the dead attempt's temporary files and rewrites whole files;
- a rerun skips slides done with the same slide file, model hash and parameter hash
  (``skipped`` rows), unless ``force``.

``cohort.csv`` (one row per input, :data:`COLUMNS`) is rewritten atomically after every
finished slide, so it is complete up to the last finished slide even if the client dies.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
import uuid
from collections.abc import Generator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import WsssError
from .progress import Progress
from .slide_job import SlideOutputs, SlideSpec, check_out_dir, slide_stem

log = logging.getLogger(__name__)

COLUMNS = ("slide", "status", "error", "seconds", "tumor_mm2", "stroma_mm2", "normal_mm2",
           "tumor_stroma_ratio", "stroma_high", "area_unit", "tumor_px", "stroma_px",
           "normal_px", "mpp", "model_hash", "params_hash", "mask", "geojson", "report", "log")
#: Memory a worker needs at least (model, one slide's maps and masks): caps the local size.
WORKER_MEMORY = 4 * 2**30
CONNECT_TIMEOUT = 10.0


def read_slide_list(slides: Sequence[str], list_file: str | None = None) -> list[str]:
    """Slides given on the command line and/or one per line of ``list_file`` (``#`` comments)."""
    out = [str(s) for s in slides]
    if list_file:
        try:
            text = Path(list_file).read_text()
        except OSError as err:
            raise WsssError(f"cannot read the slide list '{list_file}': "
                            f"{err.strerror or err}") from err
        base = Path(list_file).parent
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                p = Path(line).expanduser()
                out.append(str(p if p.is_absolute() else base / p))
    if not out:
        raise WsssError("no slides: give slide files or --list FILE")
    seen: dict[str, str] = {}
    for s in out:
        stem = slide_stem(s)
        if stem in seen and Path(seen[stem]).resolve() != Path(s).resolve():
            raise WsssError(f"'{seen[stem]}' and '{s}' would write the same outputs "
                            f"('{stem}.*'): rename one or run them into different folders")
        seen[stem] = s
    return list(dict.fromkeys(out))


def slide_task(slide: str, out_dir: str, spec: SlideSpec, force: bool = False) -> dict[str, Any]:
    """Run one slide (on a worker); any error becomes a ``failed`` row, its traceback a log.

    A dead worker is not an error here: the scheduler reruns the task.
    """
    from .io.atomic import atomic_write_text
    from .progress import run_to_end
    from .slide_job import run_slide

    t0 = time.perf_counter()
    outputs = SlideOutputs.of(out_dir, slide)
    try:
        res = run_to_end(run_slide(slide, out_dir, spec, force=force))
    except Exception as err:  # noqa: BLE001 - every failure becomes a row, others go on
        msg = str(err) if isinstance(err, WsssError) else f"{type(err).__name__}: {err}"
        try:
            atomic_write_text(outputs.log, f"slide: {slide}\nerror: {msg}\n\n"
                              + traceback.format_exc())
            log_path = str(outputs.log)
        except WsssError:
            log_path = ""
        return {"slide": slide, "status": "failed", "error": " ".join(msg.split()),
                "seconds": round(time.perf_counter() - t0, 3), "log": log_path}
    return {"slide": slide, "status": res.status, "error": "",
            "seconds": round(res.seconds, 3), **res.report.row(), **outputs.columns(),
            "log": ""}


def local_cluster_size(n_slides: int, workers: int | None = None) -> dict[str, Any]:
    """Process workers sized to this machine: ``n_workers``, ``memory_limit`` (bytes each)
    and the torch threads of each (cores / workers, so workers never oversubscribe)."""
    import psutil

    cores = os.cpu_count() or 1
    total = psutil.virtual_memory().total
    if workers is None:
        workers = max(1, min(cores, int(total * 0.8 // WORKER_MEMORY), n_slides))
    workers = max(1, int(workers))
    return {"n_workers": workers, "memory_limit": int(total * 0.8 // workers),
            "torch_threads": max(1, cores // workers)}


def connect(scheduler: str | None, n_slides: int, workers: int | None = None,
            timeout: float = CONNECT_TIMEOUT) -> tuple[Any, Any, int | None]:
    """A dask ``Client``: to ``scheduler`` (an address) or to a new ``LocalCluster``.

    Returns:
        ``(client, cluster or None, torch threads per task or None)``.
    """
    from distributed import Client

    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError, ValueError) as err:
            raise WsssError(f"cannot reach the dask scheduler at '{scheduler}' within "
                            f"{timeout:g} s ({type(err).__name__})") from err
        return client, None, None
    cluster, threads = start_local_cluster(n_slides, workers)
    return Client(cluster), cluster, threads


def start_local_cluster(n_slides: int, workers: int | None = None,
                        **kw: Any) -> tuple[Any, int]:
    """A ``LocalCluster`` of process workers (:func:`local_cluster_size`), one task at a time
    each; returns ``(cluster, torch threads per task)``."""
    from distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # its INFO lines drown the bar
    size = local_cluster_size(n_slides, workers)
    threads = size["torch_threads"]
    cluster = LocalCluster(
        n_workers=size["n_workers"], threads_per_worker=1, processes=True,
        memory_limit=size["memory_limit"], silence_logs=logging.ERROR,
        env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
             "NUMBA_NUM_THREADS": str(threads)}, **kw,
    )
    return cluster, threads


def run_cohort(slides: Sequence[str], out_dir: str | os.PathLike, spec: SlideSpec, *,
               scheduler: str | None = None, workers: int | None = None, force: bool = False,
               timeout: float = CONNECT_TIMEOUT,
               on_client: Any = None) -> Generator[Progress, None, list[dict[str, Any]]]:
    """Every slide through :func:`slide_task` on dask; yields a Progress per finished slide.

    Args:
        slides: slide paths (workers must see them under the same path).
        out_dir: output folder (``cohort.csv`` and each slide's files).
        spec: model and parameters (post-processing resolved by the caller, so every slide
            gets the same ``params_hash``).
        scheduler: address of an existing scheduler; ``None`` starts a ``LocalCluster``.
        workers: local workers (default: sized to the machine); ignored with ``scheduler``.
        force: recompute slides already done with the same model and parameters.
        timeout: seconds to wait for the scheduler.
        on_client: called with the client once connected (the CLI prints the dashboard link).

    Returns:
        The table's rows, in the order of ``slides``.
    """
    from distributed import as_completed

    check_out_dir(out_dir, create=False)  # a file there: say so before starting a cluster
    slides = [str(s) for s in slides]
    client, cluster, threads = connect(scheduler, len(slides), workers, timeout)
    try:
        out = check_out_dir(out_dir)
    except BaseException:
        client.close()
        if cluster is not None:
            cluster.close()
        raise
    if threads is not None:
        spec = replace(spec, torch_threads=threads)
    rows: list[dict[str, Any] | None] = [None] * len(slides)
    try:
        if on_client is not None:
            on_client(client)
        run_id = uuid.uuid4().hex[:8]  # two runs on one cluster never share a task
        futures = {client.submit(slide_task, s, str(out), spec, force, pure=False,
                                 key=f"wsss-slide-{slide_stem(s)}-{i}-{run_id}"): i
                   for i, s in enumerate(slides)}
        yield Progress("slides", 0, len(slides))
        for n, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            try:
                rows[i] = fut.result()
            except Exception as err:  # noqa: BLE001 - KilledWorker, lost scheduler...
                rows[i] = _lost(slides[i], out, err)
            write_table(out, [r for r in rows if r is not None])
            yield Progress("slides", n, len(slides), {"last": rows[i]["status"]})
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return [r for r in rows if r is not None]


def _lost(slide: str, out: Path, err: Exception) -> dict[str, Any]:
    """The row of a task that did not return (its workers kept dying, the scheduler went)."""
    from .io.atomic import atomic_write_text

    msg = f"{type(err).__name__}: {err}".splitlines()[0]
    log_path = str(SlideOutputs.of(out, slide).log)
    try:
        atomic_write_text(log_path, f"slide: {slide}\nerror: {msg}\n\n"
                          + "".join(traceback.format_exception(err)))
    except WsssError:
        log_path = ""
    return {"slide": slide, "status": "failed", "error": msg, "log": log_path}


def write_table(out_dir: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """``cohort.csv`` of ``rows`` (:data:`COLUMNS`), atomically."""
    from .io.atomic import atomic_write_text
    from .report import csv_text

    full = [{c: r.get(c, "") for c in COLUMNS} for r in rows]
    return atomic_write_text(Path(out_dir) / "cohort.csv", csv_text(full, COLUMNS))
