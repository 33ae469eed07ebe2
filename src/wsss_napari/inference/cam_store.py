"""The on-disk CAM store of a slide (zarr): its format, cache key, creation and reading.

Layout of ``<store>``: ``cams`` float32 ``(C, h, w)`` unnormalised maps at ``1/out_stride`` of
the model's resolution; ``done`` uint8 ``(ty, tx)`` per tile (:data:`PENDING`,
:data:`COMPUTED`, :data:`GLASS`); ``tile_max`` / ``tile_scores`` ``(ty, tx, C)``; optional
``scale_cams``; attributes: format, cache key, geometry, region, parameters, model hash,
recommended post-processing, warnings, ``complete``. Written by
:func:`.slide_cam.slide_cams`; read back as :class:`SlideCams`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import WsssError
from ..params import CamParams
from ..region import MaskGeometry, Region

if TYPE_CHECKING:
    from .tile_plan import _Plan

STORE_FORMAT = "wsss-napari-cams/2"

#: Stores of format 1 kept the origin as ``origin: [y, x]`` (read as such).
_LEGACY_FORMATS = ("wsss-napari-cams/1",)

#: done-bitmap values
PENDING, COMPUTED, GLASS = 0, 1, 2

@dataclass
class SlideCams:
    """CAMs of a slide (or region) backed by a zarr store.

    Attributes:
        cams: lazy (dask) float32 ``(C, h, w)`` in ``[0, 1]``: ``raw`` divided per class by
            its maximum over the processed tiles (made on first use: a CLI run that only
            writes the store never imports dask).
        raw: the zarr array of unnormalised CAMs.
        scores: float32 ``(C,)`` image-level scores (maximum over tiles).
        maxima: float32 ``(C,)`` the per-class normalisers.
        geometry: where the maps lie on the slide (:class:`~wsss_napari.region.MaskGeometry`:
            level-0 ``y``/``x`` of the top-left corner of CAM pixel (0, 0), ``downsample``
            = level-0 pixels per CAM pixel, slide ``mpp`` and file).
        region: the level-0 :class:`~wsss_napari.region.Region` that was asked for (clipped
            to the slide).
        path: the zarr store.
        level: pyramid level that was read.
        tile_scores: float32 ``(ty, tx, C)``; ``done``: uint8 ``(ty, tx)`` (1 computed,
            2 glass, 0 not done).
        class_names: class of each channel.
        warnings: things the user should know (e.g. unknown mpp).
        out_stride: model-resolution pixels per CAM pixel (``CamParams.out_stride``): the
            ``pixel_scale`` of the post-processing on these maps.
        postproc: the model's recommended post-processing (a ``PostprocParams`` dict) when
            the maps were computed, or ``None`` if it had none.
        scale_cams: lazy ``(S, C, h, w)`` per-scale maps normalised like ``cams``
            (``CamParams.keep_scales``), else ``None``; ``scale_raw`` the zarr array.
        slide_id: identity of the slide the maps belong to (path, size, name, mpp).
    """

    raw: Any
    scores: np.ndarray
    maxima: np.ndarray
    geometry: MaskGeometry
    region: Region
    path: Path
    level: int
    tile_scores: np.ndarray
    done: np.ndarray
    class_names: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    out_stride: int = 1
    postproc: dict[str, Any] | None = None
    slide_id: dict[str, Any] = field(default_factory=dict)
    scale_raw: Any = field(default=None, repr=False)  # zarr (S, C, h, w) or None

    @functools.cached_property
    def cams(self) -> Any:
        return _normalised(self.raw, self.maxima)

    @functools.cached_property
    def scale_cams(self) -> Any:
        return None if self.scale_raw is None else _normalised(self.scale_raw, self.maxima)

    @property
    def downsample(self) -> float:
        """Level-0 pixels per CAM pixel (``geometry.downsample``)."""
        return self.geometry.downsample

    @classmethod
    def open(cls, path: str | Path) -> SlideCams:
        """Re-open a finished store (e.g. one written by ``wsss-napari cam``)."""
        import zarr

        p = Path(path)
        try:
            group = zarr.open_group(str(p), mode="r")
        except Exception as err:  # noqa: BLE001 - zarr raises several types here
            raise WsssError(f"'{p}' is not a CAM store ({err})") from err
        if group.attrs.get("format") not in (STORE_FORMAT, *_LEGACY_FORMATS):
            raise WsssError(f"'{p}' is not a wsss-napari CAM store")
        return _result(group, p)


def is_cam_store(path: str | Path) -> bool:
    """Does ``path`` look like a CAM store (a zarr group of one of our formats)?"""
    p = Path(path)
    meta = p / "zarr.json"
    if not meta.is_file():
        return False
    try:
        fmt = json.loads(meta.read_text()).get("attributes", {}).get("format")
    except (OSError, ValueError, AttributeError):
        return False
    return fmt in (STORE_FORMAT, *_LEGACY_FORMATS)


def default_cache_dir() -> Path:
    """Where whole-slide CAM stores are cached (see :mod:`wsss_napari.cache`)."""
    from ..cache import cache_dir

    return cache_dir("cams")


def _slide_identity(slide: Any) -> dict[str, Any]:
    path = getattr(slide, "path", None)
    if path:
        p = Path(path)
        try:
            st = p.stat()
        except OSError as err:
            raise WsssError(f"cannot stat slide '{p}': {err.strerror or err}") from err
        return {"path": str(p.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns}
    # in-memory slide: identify it by its content at the thumbnail level
    thumb = np.ascontiguousarray(slide.thumbnail(256))
    return {"name": str(getattr(slide, "name", "array")), "shape": list(slide.shape[:2]),
            "thumb": hashlib.sha256(thumb.tobytes()).hexdigest()}


def _model_hash(model: Any) -> str:
    h = getattr(model, "file_hash", None)
    if h:
        return str(h)
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, t in model.state_dict().items():
        digest.update(name.encode())
        digest.update(t.detach().float().cpu().numpy().tobytes())
    return "mem-" + digest.hexdigest()


def cache_key(slide: Any, model: Any, params: CamParams, region: Region | None) -> str:
    """Hash of everything that determines the CAMs: slide file, model, parameters, region."""
    p = params.to_dict()
    for k in ("device", "batch_size", "threads", "halo"):  # change speed, not results
        p.pop(k, None)
    blob = {"format": STORE_FORMAT, "slide": _slide_identity(slide), "model": _model_hash(model),
            "params": p, "region": region.to_dict() if region is not None else None}
    if getattr(slide, "mpp_source", None) == "user":  # --slide-mpp: other CAMs (old keys kept)
        blob["slide_mpp"] = float(slide.mpp)
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _open_store(path: Path, key: str, plan: _Plan, model: Any, params: CamParams,
                explicit: bool, slide: Any) -> Any:
    import zarr

    n_cls = model.config.num_classes
    if path.exists():
        try:
            group = zarr.open_group(str(path), mode="a")
            same = group.attrs.get("key") == key and group.attrs.get("format") == STORE_FORMAT
        except Exception:  # noqa: BLE001 - an unreadable leftover is not ours
            same, group = False, None
        if same:
            return group
        if explicit and group is not None and group.attrs.get("format") != STORE_FORMAT:
            raise WsssError(f"'{path}' exists and is not a wsss-napari CAM store; "
                            "choose another output path")
        if explicit:
            raise WsssError(f"'{path}' holds CAMs of another slide, model, region or "
                            "parameters; delete it or choose another output path")
    from ..io.atomic import check_writable_dir

    check_writable_dir(path.parent)
    group = zarr.open_group(str(path), mode="w")
    cs = plan.tile // plan.out_stride
    group.create_array("cams", shape=(n_cls, *plan.out_shape), dtype="float32",
                       chunks=(1, min(cs, plan.out_shape[0]), min(cs, plan.out_shape[1])),
                       fill_value=0.0)
    group.create_array("done", shape=plan.grid, dtype="uint8", chunks=plan.grid, fill_value=0)
    if params.keep_scales:
        group.create_array("scale_cams", shape=(len(params.scales), n_cls, *plan.out_shape),
                           dtype="float32", chunks=(1, 1, min(cs, plan.out_shape[0]),
                                                    min(cs, plan.out_shape[1])),
                           fill_value=0.0)
    for name in ("tile_max", "tile_scores"):
        group.create_array(name, shape=(*plan.grid, n_cls), dtype="float32",
                           chunks=(*plan.grid, n_cls), fill_value=0.0)
    group.attrs.update({
        "format": STORE_FORMAT, "key": key, "class_names": list(model.config.class_names),
        "geometry": MaskGeometry(y=plan.y0, x=plan.x0,
                                 downsample=plan.model_ds * plan.out_stride,
                                 mpp=slide_mpp(slide), slide=slide_name(slide)).to_dict(),
        "region": Region(y=plan.y0, x=plan.x0, height=plan.h0, width=plan.w0).to_dict(),
        "level": plan.level, "params": params.to_dict(), "model_hash": _model_hash(model),
        "postproc": _recommended(model), "warnings": list(plan.warnings), "complete": False,
    })
    return group


def slide_mpp(slide: Any) -> float | None:
    mpp = getattr(slide, "mpp", None)
    return float(mpp) if mpp else None


def slide_name(slide: Any) -> str:
    """What a geometry records as its slide: the resolved file path, or the array's name."""
    path = getattr(slide, "path", None)
    return str(Path(path).resolve()) if path else str(getattr(slide, "name", "") or "")


def _recommended(model: Any) -> dict[str, Any] | None:
    from ..models.checkpoint import POSTPROC_KEY, recommended_postproc

    if POSTPROC_KEY not in (getattr(model.config, "extra", None) or {}):
        return None
    return recommended_postproc(model).to_dict()


def _normalised(raw: Any, maxima: np.ndarray) -> Any:
    """Lazy ``raw / maxima`` per class (axis -3), clipped to [0, 1], float32; a class whose
    maximum is ~0 is 0. The divisors are chunked per class like ``raw``, so dask does not
    rechunk (its rechunk looked for dask.distributed: a 0.2-0.5 s import)."""
    import dask.array as da

    denom = np.where(maxima > 1e-5, maxima, np.inf).astype(np.float32).reshape(-1, 1, 1)
    lazy = da.from_zarr(raw)
    div = da.from_array(denom.reshape((1,) * (lazy.ndim - 3) + denom.shape),
                        chunks=(1,) * lazy.ndim)
    return da.clip(lazy / div, 0.0, 1.0).astype(np.float32)


def _result(group: Any, path: Path) -> SlideCams:
    raw = group["cams"]
    done = np.asarray(group["done"][...])
    computed = done == COMPUTED
    tile_max = np.asarray(group["tile_max"][...])
    tile_scores = np.asarray(group["tile_scores"][...])
    n_cls = raw.shape[0]
    if computed.any():
        maxima = tile_max[computed].max(axis=0).astype(np.float32)
        scores = tile_scores[computed].max(axis=0).astype(np.float32)
    else:
        maxima = np.zeros(n_cls, np.float32)
        scores = np.zeros(n_cls, np.float32)
    attrs = dict(group.attrs)
    if "geometry" in attrs:
        geometry = MaskGeometry.from_dict(attrs["geometry"])
        region = Region.from_dict(attrs["region"])
    else:  # format 1: origin [y, x] and region [y, x, h, w], level-0 px
        try:
            (y, x), ds = attrs["origin"], float(attrs["downsample"])
            ry, rx, rh, rw = attrs.get("region") or (y, x, raw.shape[1] * ds, raw.shape[2] * ds)
            geometry = MaskGeometry(y=float(y), x=float(x), downsample=ds)
            region = Region(y=ry, x=rx, height=rh, width=rw)
        except (KeyError, TypeError, ValueError) as err:
            raise WsssError(f"'{path}': CAM store without a readable geometry") from err
    return SlideCams(
        raw=raw, scores=scores, maxima=maxima, geometry=geometry, region=region,
        path=path, level=int(attrs["level"]), tile_scores=tile_scores, done=done,
        class_names=tuple(attrs.get("class_names", ())), warnings=list(attrs.get("warnings", [])),
        out_stride=int(attrs.get("params", {}).get("out_stride", 1)),
        postproc=attrs.get("postproc"),
        scale_raw=group["scale_cams"] if "scale_cams" in group else None,
        slide_id=dict(attrs.get("slide", {})),
    )


def _is_complete(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        import zarr

        return bool(zarr.open_group(str(path), mode="r").attrs.get("complete"))
    except Exception:  # noqa: BLE001 - unreadable: not complete
        return False
