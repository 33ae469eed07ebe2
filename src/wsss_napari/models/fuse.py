"""Inference copies of models: BatchNorm folded into the convolutions, static "same" padding.

* In eval mode a BatchNorm layer is a per-channel affine map, so ``bn(conv(x))`` equals one
  convolution with scaled weights and a bias (:func:`fold_batchnorm`).
* timm's ``Conv2dSame`` (TensorFlow "same" padding: ``F.pad`` copies the whole activation
  before each strided convolution) becomes a convolution with symmetric padding and, where
  the padding is odd, a kernel with a leading zero row / column (:class:`StaticSameConv`):
  the same sums of the same products.

``tf_efficientnet_lite0``, the default CAM backbone, has a BatchNorm after each of its 49
convolutions and 5 ``Conv2dSame``: together they took half of a single-threaded forward
pass (docs/cam.md, run 8). The CAM engine runs such a copy (:func:`inference_model`); the
model itself is never changed, so its weights on disk, its cache key and every model that is
fine-tuned or trained stay unfused. The copy is rebuilt whenever the model's weights change
(fine-tuning in place, ``load_state_dict``, moving it to another device), and checked
against the model on one input when it is built: a model whose copy does not reproduce its
class maps (relative difference above :data:`CHECK_RTOL`) is run as it is.
"""

from __future__ import annotations

import copy
import logging
import threading
import weakref
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Largest difference of the copy's class maps from the model's, relative to their largest
#: magnitude, on the check input (float32 folding agrees to ~1e-6).
CHECK_RTOL = 1e-4

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _conv_bn_pairs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv name, batch-norm name)`` where a BatchNorm2d's input is exactly a Conv2d's
    output in one traced forward pass (modules called more than once are left alone)."""
    names = {m: n for n, m in model.named_modules()}
    calls: dict[nn.Module, int] = {}
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []

    def count(mod: nn.Module) -> None:
        calls[mod] = calls.get(mod, 0) + 1

    def after_conv(mod: nn.Module, _args: Any, out: Any) -> None:
        count(mod)
        if isinstance(out, torch.Tensor):
            produced[id(out)] = (names[mod], out)  # the tensor is kept: ids stay unique

    def before_bn(mod: nn.Module, args: Any) -> None:
        count(mod)
        hit = produced.get(id(args[0])) if args else None
        if hit is not None and hit[1] is args[0]:
            pairs.append((hit[0], names[mod]))

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):  # timm's Conv2dSame too (pads, then the same conv)
            handles.append(m.register_forward_hook(after_conv))
        elif _foldable_bn(m):
            handles.append(m.register_forward_pre_hook(before_bn))
    try:
        with torch.inference_mode():
            model.class_maps(x)
    finally:
        for h in handles:
            h.remove()
    mods = dict(model.named_modules())
    used = [c for c, _ in pairs]
    return [(c, b) for c, b in pairs
            if calls.get(mods[c]) == 1 and calls.get(mods[b]) == 1 and used.count(c) == 1]


def _foldable_bn(m: nn.Module) -> bool:
    """A 2-d batch norm with running statistics whose forward is the plain affine map
    (``nn.BatchNorm2d``, or timm's ``BatchNormAct2d``: the same, then dropout and an
    activation)."""
    if not isinstance(m, nn.BatchNorm2d) or m.running_mean is None or m.running_var is None:
        return False
    return type(m) is nn.BatchNorm2d or (type(m).__name__ == "BatchNormAct2d"
                                         and hasattr(m, "act") and hasattr(m, "drop"))


def _after_bn(bn: nn.Module) -> nn.Module:
    """What remains of ``bn`` once its affine map is folded away: timm's dropout and
    activation (identities in eval mode are dropped), or nothing."""
    rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None))
            if m is not None and not isinstance(m, nn.Identity)]
    if not rest:
        return nn.Identity()
    return rest[0] if len(rest) == 1 else nn.Sequential(*rest)


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn``'s eval-mode affine map into ``conv``'s weight and bias (in float64)."""
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    w = conv.weight
    fused_w = (w.double() * scale.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype)
    conv.weight.copy_(fused_w)
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)
    else:
        conv.bias.copy_(bias.to(conv.bias.dtype))


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def fold_batchnorm(model: nn.Module, sample: torch.Tensor) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d (traced on ``sample``, a
    normalised input batch) into that convolution, **in place**; returns how many were
    folded. Only for a model in eval mode that is not trained afterwards: use
    :func:`inference_model` for a copy."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    pairs = _conv_bn_pairs(model, sample)
    mods = dict(model.named_modules())
    for conv_name, bn_name in pairs:
        _fold(mods[conv_name], mods[bn_name])
        _set_module(model, bn_name, _after_bn(mods[bn_name]))
    return len(pairs)


def static_same_padding(model: nn.Module) -> int:
    """Replace timm's ``Conv2dSame`` layers (dilation 1) of ``model`` by
    :class:`StaticSameConv`, **in place**; returns how many."""
    found = [(n, m) for n, m in model.named_modules()
             if type(m).__name__ == "Conv2dSame" and tuple(m.dilation) == (1, 1)]
    for name, conv in found:
        _set_module(model, name, StaticSameConv(conv))
    return len(found)


def _fingerprint(model: nn.Module) -> tuple:
    """Identity and version of every weight: changes when any is modified in place (an
    optimizer step, ``load_state_dict``), replaced, or moved to another device."""
    return tuple((id(t), t.data_ptr(), t._version, t.device.type)
                 for t in (*model.parameters(), *model.buffers()))


def _check_input(model: nn.Module, device: torch.device) -> torch.Tensor:
    size = int(getattr(getattr(model, "config", None), "input_size", 0) or 64)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, size, size, generator=g).mul_(255.0)
    return model.normalize(x.to(device)).contiguous(memory_format=torch.channels_last)


def _build(model: nn.Module, device: torch.device) -> nn.Module:
    work = copy.deepcopy(model).eval()  # traced and changed: ``model`` is never touched
    for p in work.parameters():
        p.requires_grad_(False)
    x = _check_input(model, device)
    n = fold_batchnorm(work, x) + static_same_padding(work)
    if n == 0:
        return model
    work.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = model.class_maps(x).float()
        got = work.class_maps(x).float()
    err = float((ref - got).abs().max())
    tol = CHECK_RTOL * max(float(ref.abs().max()), 1e-6)
    if not err <= tol:  # also refuses NaN
        log.warning("folding BatchNorm changed the class maps by %.3g (> %.3g): running the "
                    "model unfused", err, tol)
        return model
    log.debug("inference copy: %d layers folded or replaced (class maps within %.2g)", n, err)
    return work


def inference_model(model: nn.Module) -> nn.Module:
    """The model to run for inference: a cached copy of ``model`` (eval mode, on its device)
    with BatchNorm folded into the convolutions, or ``model`` itself where there is nothing
    to fold, it needs gradients (Grad-CAM) or is in training mode.

    The copy is held outside ``model`` (deep copies and fine-tuning of ``model`` never see
    it) and rebuilt when ``model``'s weights change."""
    if model.training or getattr(model, "needs_grad", False) or not hasattr(model,
                                                                           "class_maps"):
        return model
    first = next(model.parameters(), None)
    if first is None:
        return model
    key = _fingerprint(model)
    with _LOCK:
        hit = _CACHE.get(model)
        if hit is not None and hit[0] == key:
            return hit[1] or model
        work = _build(model, first.device)
        _CACHE[model] = (key, None if work is model else work)  # no strong ref to the key
    return work


class StaticSameConv(nn.Module):
    """timm's ``Conv2dSame`` ("same" padding computed per input, applied by ``F.pad``
    before the convolution) as plain convolutions with symmetric padding, which oneDNN
    pads on the fly instead of copying the whole activation.

    Where "same" needs an odd total padding ``P`` along an axis (``P // 2`` before,
    ``P - P // 2`` after: every stride-2 layer on an even size), the kernel gets a leading
    zero row (column) and the input ``(P + 1) // 2`` on both sides: the extra leading
    pixel meets the zero weight, so each output is the same sum of the same products."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.stride, self.groups = tuple(conv.stride), conv.groups
        self.kernel = tuple(conv.weight.shape[-2:])
        w = conv.weight.detach()
        self.bias = conv.bias
        for odd_h in (0, 1):
            for odd_w in (0, 1):
                v = torch.nn.functional.pad(w, (odd_w, 0, odd_h, 0))  # leading zeros
                self.register_buffer(f"w{odd_h}{odd_w}", v.contiguous(), persistent=False)

    @staticmethod
    def _pad(n: int, k: int, s: int) -> int:
        return max((-(-n // s) - 1) * s + k - n, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph = self._pad(x.shape[-2], self.kernel[0], self.stride[0])
        pw = self._pad(x.shape[-1], self.kernel[1], self.stride[1])
        w = getattr(self, f"w{ph % 2}{pw % 2}")
        return torch.nn.functional.conv2d(x, w, self.bias, self.stride,
                                          ((ph + 1) // 2, (pw + 1) // 2), 1, self.groups)
