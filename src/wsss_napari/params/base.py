"""The common machinery of every parameter class: field metadata, validation, round trips."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from .. import WsssError

P = TypeVar("P", bound="ParamsBase")


def _f(default: Any, help: str, range: tuple[float, float] | None = None,
       choices: tuple[str, ...] | None = None, **kw: Any) -> Any:
    meta: dict[str, Any] = {"help": help}
    if range is not None:
        meta["range"] = range
    if choices is not None:
        meta["choices"] = tuple(choices)
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


class ParamsBase:
    """Mixin: validation against documented ranges, dict/JSON/YAML round trips."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            rng = f.metadata.get("range")
            v = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices is not None and v not in choices:
                raise WsssError(f"{f.name} must be one of {', '.join(choices)}, not {v!r}")
            if rng is not None and v is not None and (
                    isinstance(v, bool) or not isinstance(v, (int, float))):
                raise WsssError(f"{type(self).__name__}.{f.name}={v!r} is not a number "
                                f"(expected one in [{rng[0]}, {rng[1]}])")
            if rng is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
                lo, hi = rng
                if not (lo <= v <= hi) or (isinstance(v, float) and math.isnan(v)):
                    raise WsssError(f"{type(self).__name__}.{f.name}={v!r} is outside [{lo}, {hi}]")
        self.validate()

    def validate(self) -> None:
        """Extra checks of a subclass (cross-field rules)."""

    def _coerce_enum(self, name: str, enum: type[StrEnum]) -> None:
        """Turn a string field into its ``enum`` member (frozen, so via ``object.__setattr__``)."""
        v = getattr(self, name)
        if not isinstance(v, enum):
            try:
                object.__setattr__(self, name, enum(v))
            except ValueError as err:
                raise WsssError(f"{name} must be one of {[m.value for m in enum]}") from err

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, StrEnum):
                v = v.value
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Path):
                v = str(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls: type[P], data: dict[str, Any], strict: bool = True) -> P:
        """Build from a dict; unknown keys raise (``strict``) or are ignored."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - set(fields)
        if unknown and strict:
            raise WsssError(f"unknown {cls.__name__} parameter(s): {', '.join(sorted(unknown))}")
        kwargs = {}
        for k, v in data.items():
            if k not in fields:
                continue
            default = fields[k].default
            if isinstance(default, tuple) and isinstance(v, list):
                v = tuple(v)
            kwargs[k] = v
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise WsssError(f"bad {cls.__name__} parameters: {err}") from err

    @classmethod
    def from_file(cls: type[P], path: str | Path, strict: bool = False) -> P:
        """Load from a JSON or YAML file (a top-level key named after the class is accepted)."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as err:
            raise WsssError(f"cannot read parameter file '{p}': {err.strerror or err}") from err
        try:
            if p.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except Exception as err:  # noqa: BLE001 - any parse error is a user error here
            mark = getattr(err, "problem_mark", None)  # YAML: say where, in one line
            what = getattr(err, "problem", None) or " ".join(str(err).split())
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise WsssError(f"cannot parse parameter file '{p}': {what}{where}") from err
        if not isinstance(data, dict):
            raise WsssError(f"parameter file '{p}' must hold a mapping")
        section = data.get(cls.__name__, data.get(cls.key()))
        if isinstance(section, dict):  # this class's own section: every key must be ours
            data, strict = section, True
        else:  # a flat file: keys of other parameter sets may sit beside ours, typos may not
            known = _known_keys()
            typos = sorted(k for k in data if k not in known)
            if typos:
                raise WsssError(f"unknown parameter(s) in '{p}': {', '.join(map(str, typos))}")
        try:
            return cls.from_dict(data, strict=strict)
        except WsssError as err:
            raise WsssError(f"'{p}': {err}") from err

    @classmethod
    def key(cls) -> str:
        """Short name used as a section key in saved metadata, e.g. 'postproc'."""
        return cls.__name__.removesuffix("Params").lower()

    def replace(self: P, **changes: Any) -> P:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _known_keys() -> set[str]:
    """Field names and section keys of every parameter class."""
    known: set[str] = set()
    todo = list(ParamsBase.__subclasses__())
    while todo:
        c = todo.pop()
        todo += c.__subclasses__()
        known |= {c.key(), c.__name__}
        if dataclasses.is_dataclass(c):
            known |= {f.name for f in dataclasses.fields(c)}
    return known
