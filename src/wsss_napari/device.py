"""Choose the compute device: CUDA, then Apple MPS, then CPU, unless the user names one."""

from __future__ import annotations

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


#: Held while a model runs on a device (inference or fine-tuning), so the two never fight
#: over GPU memory; CPU work takes it too, which keeps the two cores from being oversubscribed.
import threading as _threading  # noqa: E402

DEVICE_LOCK = _threading.RLock()
