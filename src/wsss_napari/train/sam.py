"""Sharpness-aware minimisation (SAM, Foret et al. 2021) around any torch optimizer.

One SAM step costs two forward-backward passes:

1. gradient ``g`` at the weights ``w``; climb to ``w + e`` with ``e = rho * g / |g|``
   (``adaptive=True``: ASAM, ``e = rho * w**2 * g / |w * g|``);
2. gradient at ``w + e``; restore ``w`` and let the base optimizer (SGD or AdamW) step with
   that second gradient.

BatchNorm running statistics are updated by the first pass only: during the second pass
every BatchNorm's ``momentum`` is 0, so its running mean/variance stay as pass 1 left them
(the perturbed weights' batch statistics never leak into inference statistics).

AMP policy (CUDA only; the CPU path is plain fp32): torch's ``GradScaler`` cannot serve two
backward passes per step (a second ``unscale_`` before ``update()`` raises), so SAM keeps its
own dynamic loss scale (:class:`LossScale`). Each pass's loss is multiplied by the scale, its
gradients are divided by it right after the backward, and if either pass produced an inf/NaN
gradient the whole step is skipped (weights restored, base optimizer not stepped) and the
scale halves; it doubles after ``growth_interval`` clean steps.

The learning rate lives on ``optimizer.param_groups`` (shared with the base optimizer), so
the training loop's schedule works unchanged; ``state_dict``/``load_state_dict`` are the base
optimizer's, so resume files look the same with and without SAM.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .. import WsssError

#: Optimizer names of ``--optimizer``.
OPTIMIZERS = ("sgd", "adamw", "sam", "sam-adamw")


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers keep their running statistics (momentum 0) inside the block."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, m.momentum, m.num_batches_tracked.clone()
                          if m.num_batches_tracked is not None else None))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class LossScale:
    """Dynamic loss scale for SAM under AMP (halves on overflow, grows after clean steps)."""

    def __init__(self, init: float = 2.0 ** 16, growth_interval: int = 2000) -> None:
        self.scale = float(init)
        self.growth_interval = int(growth_interval)
        self._good = 0
        self.skipped = 0

    def update(self, finite: bool) -> None:
        if not finite:
            self.scale = max(self.scale / 2.0, 1.0)
            self._good = 0
            self.skipped += 1
            return
        self._good += 1
        if self._good >= self.growth_interval:
            self.scale *= 2.0
            self._good = 0


class SAM(torch.optim.Optimizer):
    """SAM wrapper: ``first_step`` climbs to ``w + e``, ``second_step`` restores and steps.

    Args:
        params: the model's parameters (or parameter groups).
        base_optimizer: the optimizer class that makes the actual update (e.g. SGD, AdamW).
        rho: neighbourhood radius (0.05 typical; about 2.0 with ``adaptive``).
        adaptive: ASAM (scale-invariant neighbourhood).
        **kwargs: passed to ``base_optimizer`` (lr, momentum, weight_decay ...).
    """

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer], rho: float = 0.05,
                 adaptive: bool = False, **kwargs: Any) -> None:
        if not (rho > 0 and math.isfinite(rho)):
            raise WsssError(f"SAM rho must be positive, not {rho!r}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self._e_w: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        norms = [((torch.abs(p) if g["adaptive"] else 1.0) * p.grad).norm(p=2)
                 for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not norms:
            return torch.zeros(())
        return torch.stack(norms).norm(p=2)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True) -> None:
        """Move every parameter to ``w + e`` (remembering ``e``)."""
        norm = self._grad_norm()
        self._e_w.clear()
        for g in self.param_groups:
            scale = g["rho"] / (norm + 1e-12)
            for p in g["params"]:
                if p.grad is None:
                    continue
                e_w = (torch.pow(p, 2) if g["adaptive"] else 1.0) * p.grad * scale.to(p)
                p.add_(e_w)
                self._e_w[p] = e_w
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        """Back from ``w + e`` to ``w`` (without stepping)."""
        for p, e_w in self._e_w.items():
            p.sub_(e_w)
        self._e_w.clear()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = True) -> None:
        """Restore ``w`` and step the base optimizer with the gradient taken at ``w + e``."""
        self.restore()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def step(self, closure: Callable[[], torch.Tensor] | None = None):  # type: ignore[override]
        """Both steps; ``closure`` must do a full forward-backward (and return the loss)."""
        if closure is None:
            raise WsssError("SAM.step needs a closure (or call first_step / second_step)")
        closure = torch.enable_grad()(closure)
        self.first_step(zero_grad=True)
        loss = closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


def _grads_finite(optimizer: torch.optim.Optimizer) -> bool:
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack([g.float().abs().sum() for g in grads])).all())


def _unscale(optimizer: torch.optim.Optimizer, scale: float) -> None:
    inv = 1.0 / scale
    for g in optimizer.param_groups:
        for p in g["params"]:
            if p.grad is not None:
                p.grad.mul_(inv)


def sam_train_step(model: nn.Module, optimizer: SAM, forward_loss: Callable[[], torch.Tensor],
                   loss_scale: LossScale | None = None) -> tuple[torch.Tensor, bool]:
    """One SAM step: two forward-backward passes, BN statistics from the first only.

    Args:
        model: the network (BatchNorm layers are frozen during pass 2).
        optimizer: a :class:`SAM`.
        forward_loss: runs the forward pass (under autocast if wanted) and returns the loss.
        loss_scale: AMP loss scale (see the module docstring); ``None`` for fp32.

    Returns:
        ``(loss of pass 1, stepped)``; ``stepped`` is False when an inf/NaN gradient made the
        step be skipped (only under AMP; in fp32 a non-finite loss is the caller's to report).
    """
    scale = loss_scale.scale if loss_scale is not None else 1.0
    optimizer.zero_grad(set_to_none=True)
    loss = forward_loss()
    (loss * scale).backward()
    if loss_scale is not None:
        _unscale(optimizer, scale)
        if not _grads_finite(optimizer):
            optimizer.zero_grad(set_to_none=True)
            loss_scale.update(False)
            return loss.detach(), False
    optimizer.first_step(zero_grad=True)
    with frozen_bn_stats(model):
        (forward_loss() * scale).backward()
    if loss_scale is not None:
        _unscale(optimizer, scale)
        if not _grads_finite(optimizer):
            optimizer.restore()
            optimizer.zero_grad(set_to_none=True)
            loss_scale.update(False)
            return loss.detach(), False
        loss_scale.update(True)
    optimizer.second_step(zero_grad=True)
    return loss.detach(), True


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float = 0.9,
                   weight_decay: float = 1e-4, rho: float = 0.05) -> torch.optim.Optimizer:
    """The optimizer of ``--optimizer``: ``sgd``, ``adamw``, ``sam`` (SAM around SGD) or
    ``sam-adamw`` (SAM around AdamW)."""
    if name not in OPTIMIZERS:
        raise WsssError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    base, kw = ((torch.optim.AdamW, {"lr": lr, "weight_decay": weight_decay})
                if name.endswith("adamw") else
                (torch.optim.SGD, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}))
    if name.startswith("sam"):
        return SAM(params, base, rho=rho, **kw)
    return base(params, **kw)
