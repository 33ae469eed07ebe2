"""Segmentation ensembles: several stage-2 models as one model file.

Why: stage-2 models trained from the same weak labels with different seeds make different
mistakes; averaging their class probabilities removes part of them (on the weak-label
benchmark two seeds on the same pseudo-masks gained +0.010 mIoU over the mean of the two
alone, every class up, and members from two whole pipelines +0.024; ``docs/training.md``).
Stored as one checkpoint (``config.extra['ensemble']`` = number of members, weights under
``members.<i>.``) and behaving as one :class:`~.seg.SegNet`, so every path that runs a
segmentation model (``predict``, whole slides, the widgets, self-training, fine-tuning)
runs an ensemble unchanged: ``forward`` returns the log of the members' mean softmax, whose
softmax *is* that mean.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .. import WsssError
from .config import ModelConfig, model_kind

#: ``config.extra`` key holding the number of members of an ensemble checkpoint.
ENSEMBLE_KEY = "ensemble"
#: ``config.extra`` key listing the members' file hashes and sources (provenance).
MEMBERS_KEY = "ensemble_members"
#: what must agree for models to be averaged pixel for pixel
_SAME = ("kind", "arch", "backbone", "class_names", "input_size", "mean", "std", "mpp")


def ensemble_size(config: ModelConfig) -> int:
    """Members of the ensemble ``config`` describes (0 for a plain model)."""
    n = config.extra.get(ENSEMBLE_KEY, 0) if isinstance(config.extra, dict) else 0
    return int(n) if isinstance(n, int) and n > 1 else 0


def member_config(config: ModelConfig) -> ModelConfig:
    """The config of one member: the ensemble's, without the ensemble entries."""
    extra = {k: v for k, v in config.extra.items() if k not in (ENSEMBLE_KEY, MEMBERS_KEY)}
    return dataclasses.replace(config, extra=extra)


class SegEnsemble(nn.Module):
    """``n`` segmentation networks of one architecture; ``forward`` = log mean softmax.

    Args:
        config: a ``kind='seg'`` config with ``extra['ensemble'] = n`` (n >= 2).
        pretrained, weights: as for :class:`~.seg.SegNet` (applied to every member).
    """

    def __init__(self, config: ModelConfig, pretrained: bool = False,
                 weights: str | None = None) -> None:
        super().__init__()
        from .seg import SegNet

        n = ensemble_size(config)
        if config.kind != "seg" or n < 2:
            raise WsssError("an ensemble needs a kind='seg' config with "
                            f"extra['{ENSEMBLE_KEY}'] >= 2")
        self.config = config
        one = member_config(config)
        self.members = nn.ModuleList(SegNet(one, pretrained, weights) for _ in range(n))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0-255 float) input -> normalised float32 (the members share it)."""
        return self.members[0].normalize(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``log(mean_i softmax(member_i(x)))`` ``(B, C+1, H, W)``: logits whose softmax is
        the members' mean probability."""
        logp = torch.stack([torch.log_softmax(m(x).float(), dim=1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


def _check_members(models: Sequence[Any], names: Sequence[str]) -> None:
    if len(models) < 2:
        raise WsssError("an ensemble needs at least two segmentation models")
    for m, name in zip(models, names, strict=True):
        if model_kind(m) != "seg":
            raise WsssError(f"'{name}' is a {model_kind(m) or 'non'}-kind model; only "
                            "segmentation models (train-seg) can be ensembled")
        if ensemble_size(m.config):
            raise WsssError(f"'{name}' is already an ensemble; give its members instead")
    first = models[0].config
    for m, name in zip(models[1:], names[1:], strict=True):
        diff = [f"{k} ({getattr(m.config, k)!r} vs {getattr(first, k)!r})" for k in _SAME
                if getattr(m.config, k) != getattr(first, k)]
        if diff:
            raise WsssError(f"'{name}' differs from '{names[0]}' in {'; '.join(diff)}: only "
                            "models of one architecture, classes, input size and scaling can "
                            "be averaged")


def build_ensemble(models: Sequence[Any], names: Sequence[str] | None = None) -> SegEnsemble:
    """One :class:`SegEnsemble` holding copies of ``models``' weights (they must agree in
    architecture, encoder, classes, input size, scaling and mpp)."""
    names = list(names or [getattr(m, "source", f"model {i}") for i, m in enumerate(models)])
    _check_members(models, names)
    first = models[0].config
    extra = dict(first.extra)
    extra[ENSEMBLE_KEY] = len(models)
    extra[MEMBERS_KEY] = [{"source": str(n), "sha256": getattr(m, "file_hash", "")}
                          for m, n in zip(models, names, strict=True)]
    config = dataclasses.replace(first, extra=extra, parent_hash="")
    ens = SegEnsemble(config)
    for dst, src in zip(ens.members, models, strict=True):
        dst.load_state_dict(src.state_dict(), strict=True)
    return ens.eval()
