"""Build argparse flags from a parameter dataclass, and the dataclass back from parsed args.

Flags use the field names (``bg_exponent`` -> ``--bg-exponent``), the field's help and
documented range; ``--config FILE`` (JSON/YAML) overrides the defaults, explicit flags
override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from enum import StrEnum
from typing import Any

from ..params import ParamsBase


def add_params_arguments(parser: argparse.ArgumentParser, cls: type[ParamsBase],
                         skip: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per field of ``cls`` (default ``None`` = not given)."""
    group = parser.add_argument_group(f"{cls.key()} parameters")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f.metadata.get("help", "")
        rng = f.metadata.get("range")
        if rng:
            help_ += f" [{rng[0]:g}..{rng[1]:g}]"
        dflt = default.value if isinstance(default, StrEnum) else default
        help_ += f" (default: {dflt})"
        help_ = help_.replace("%", "%%")  # argparse %-formats help texts ("5 %" is not a field)
        kw: dict[str, Any] = {"dest": f"{cls.key()}__{f.name}", "default": None, "help": help_}
        if tp is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(tp, type) and issubclass(tp, StrEnum):
            group.add_argument(flag, choices=[m.value for m in tp], **kw)
        elif f.metadata.get("choices"):
            group.add_argument(flag, choices=f.metadata["choices"], **kw)
        elif typing.get_origin(tp) is tuple:
            inner = typing.get_args(tp)[0]
            group.add_argument(flag, nargs="+", type=inner, metavar=f.name.upper(), **kw)
        else:
            group.add_argument(flag, type=tp if tp in (int, float, str) else str,
                               metavar=f.name.upper(), **kw)


def params_from_args(args: argparse.Namespace, cls: type[ParamsBase],
                     config_attr: str = "config", base: ParamsBase | None = None) -> ParamsBase:
    """Resolve defaults (or ``base``) <- ``--config`` file <- explicit flags into a ``cls``."""
    cfg = getattr(args, config_attr, None)
    base = cls.from_file(cfg) if cfg else (base if base is not None else cls())
    prefix = f"{cls.key()}__"
    changes = {
        k[len(prefix):]: (tuple(v) if isinstance(v, list) else v)
        for k, v in vars(args).items()
        if k.startswith(prefix) and v is not None
    }
    return cls.from_dict({**base.to_dict(), **changes})


def has_flags(args: argparse.Namespace, cls: type[ParamsBase]) -> bool:
    """Whether any ``--flag`` of ``cls`` was given on the command line."""
    prefix = f"{cls.key()}__"
    return any(k.startswith(prefix) and v is not None for k, v in vars(args).items())


def postproc_from_args(args: argparse.Namespace, model: Any,
                       config_attr: str = "config") -> tuple[Any, str]:
    """A run's post-processing: the ``config_attr`` file if given, else the parameters
    ``model`` recommends (``tune --into-model``), else the defaults; the flags on top.

    Why one function: ``predict`` and ``pseudo`` must post-process a model the same way (a
    stage-2 model trained on pseudo-masks made otherwise than it is used learns the wrong
    masks); ``slide`` and ``batch`` must match the tuning widget. ``model``: a loaded model,
    or a checkpoint path / ``'default'`` (only its header is read). Returns
    ``(PostprocParams, where they came from, in words)``."""
    from ..models.checkpoint import recommended_postproc
    from ..params import PostprocParams

    cfg = getattr(args, config_attr, None)
    base = None if cfg else recommended_postproc(model)
    post = params_from_args(args, PostprocParams, config_attr=config_attr, base=base)
    source = (f"from {cfg}" if cfg else
              "recommended by the model" if base != PostprocParams() else "defaults")
    if has_flags(args, PostprocParams):
        source += " (+ command-line flags)"
    return post, source
