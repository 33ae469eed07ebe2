"""Choose the compute device (CUDA, then Apple MPS, then CPU, unless the user names one) and
the CPU threading of inference.

CPU threads are chosen deliberately (:func:`cpu_plan`): never more than the cores this
process may run on (``os.sched_getaffinity``, not the machine's count), and inference runs
its batches as independent single-threaded *streams*, one per core, instead of one batch
spread over all cores by OpenMP. The two are as fast on a quiet machine, but when another
process (a training run, another worker) is busy on the same cores, OpenMP's lock-step
threads wait for the slowest one at every layer and inference slowed down 7x where a fair
share of the cores costs 2x; independent streams just get their share.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from . import WsssError


def choose_device(preference: str = "auto"):
    """Return a ``torch.device`` for ``preference`` ('auto', 'cuda', 'cuda:1', 'mps' or 'cpu').

    Raises:
        WsssError: when the requested device is not available here.
    """
    import torch

    pref = (preference or "auto").lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise WsssError(f"device '{preference}' was requested but CUDA is not available here")
    if pref == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise WsssError("device 'mps' was requested but Apple MPS is not available here")
    try:
        return torch.device(pref)
    except RuntimeError as err:
        raise WsssError(f"unknown device '{preference}': use auto, cuda, mps or cpu") from err


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; containers and ``taskset``
    restrict it below ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS / Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class CpuPlan:
    """How CPU inference uses the cores: ``streams`` batches at once, each on ``intra``
    intra-op threads (``streams * intra <= available_cores()``)."""

    streams: int
    intra: int


#: At most this many concurrent CPU streams (each holds a batch of activations); more cores
#: go to intra-op threads of each stream.
MAX_STREAMS = 8


def cpu_plan(threads: int = 0) -> CpuPlan:
    """The CPU plan for ``threads`` cores (0 = all the cores this process may use; more
    than that is capped): one single-threaded stream per core, up to :data:`MAX_STREAMS`."""
    n = available_cores() if threads <= 0 else min(int(threads), available_cores())
    streams = max(1, min(n, MAX_STREAMS))
    return CpuPlan(streams=streams, intra=max(1, n // streams))


@contextlib.contextmanager
def torch_threads(plan: CpuPlan | None) -> Iterator[None]:
    """Run the block with ``plan.intra`` intra-op threads (restored afterwards); threads
    started inside the block inherit it. ``None``: leave the setting alone (GPU work)."""
    import torch

    if plan is None:
        yield
        return
    before = torch.get_num_threads()
    if before != plan.intra:
        torch.set_num_threads(plan.intra)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def worker_init_threads(worker_id: int = 0) -> None:
    """``DataLoader(worker_init_fn=...)``: one intra-op thread per loader worker (the main
    process already uses the cores; N workers x N threads would oversubscribe them)."""
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(Exception):  # OpenCV is optional in a worker
        import cv2

        cv2.setNumThreads(1)


#: Held while a model runs on a device (inference or fine-tuning), so the two never fight
#: over GPU memory; CPU work takes it too, which keeps the two cores from being oversubscribed.
import threading as _threading  # noqa: E402

DEVICE_LOCK = _threading.RLock()
