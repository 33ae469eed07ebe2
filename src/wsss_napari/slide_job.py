"""One whole slide, end to end: mask -> OME-TIFF, GeoJSON and tissue report.

The mask comes from a segmentation model (``inference.slide_seg``; the default when the
shipped default segmentation model is installed) or from the CAMs (cached) and the
post-processing, as ``SlideSpec.mask_from`` resolves (:mod:`wsss_napari.inference.mask_source`).

``wsss-napari slide`` runs :func:`run_slide` in the process; ``wsss-napari batch`` runs the
same function on dask workers (:mod:`wsss_napari.cohort`), one task per slide. Outputs in
``OUT_DIR`` for a slide ``S.svs``:

- ``S.mask.ome.tif``: the mask, pyramidal OME-TIFF (level-0 origin and
  downsample in its description, physical pixel size when the mpp is known);
- ``S.geojson``: QuPath annotations in level-0 pixel coordinates;
- ``S.report.json`` / ``S.report.csv``: areas per class and tumor-stroma ratio
  (:mod:`wsss_napari.report`), with the hashes of the model that made the mask and of the
  parameters (the run records beside the exports also say ``mask_from``: seg or cam);
- ``S.done.json``: written last, after every other file is complete. A rerun with the same
  slide file, model hash and parameter hash finds it and skips the slide (unless ``force``);
- ``S.error.log``: the traceback, when the slide failed (removed once it succeeds).

Every file is written to a temporary name and renamed (``io.atomic``), so a killed worker
leaves either the old file or the new one, never half of one; its temporary files are
removed when the slide is run again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import WsssError
from .params import CamParams, ExportFormat, ExportParams, PostprocParams, RunRecord
from .progress import Progress
from .region import MaskGeometry, Region
from .report import TissueReport, tissue_report, write_report

DONE_FORMAT = "wsss-napari-slide/1"


def slide_stem(path: str | os.PathLike) -> str:
    """The name of a slide's outputs: its file name without the (``.ome``) image suffix."""
    name = Path(path).name
    for sfx in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(sfx):
            return name[: -len(sfx)]
    return Path(name).stem or name


@dataclass(frozen=True)
class SlideOutputs:
    """The files of one slide in an output folder."""

    mask: Path
    geojson: Path
    report_json: Path
    report_csv: Path
    done: Path
    log: Path

    @classmethod
    def of(cls, out_dir: str | os.PathLike, slide: str | os.PathLike) -> SlideOutputs:
        d, s = Path(out_dir), slide_stem(slide)
        return cls(mask=d / f"{s}.mask.ome.tif", geojson=d / f"{s}.geojson",
                   report_json=d / f"{s}.report.json", report_csv=d / f"{s}.report.csv",
                   done=d / f"{s}.done.json", log=d / f"{s}.error.log")

    def columns(self) -> dict[str, str]:
        """Output paths for the cohort table."""
        return {"mask": str(self.mask), "geojson": str(self.geojson),
                "report": str(self.report_json)}


@dataclass(frozen=True)
class SlideSpec:
    """Everything a slide's result depends on except the slide: what a cohort applies to each.

    Attributes:
        model: ``'default'`` or a checkpoint path (workers must see the same path).
        cam: CAM parameters.
        postproc: post-processing parameters; ``None``: the model's recommendation (the
            defaults if it has none), as in the tuning widget.
        region: only this level-0 region of each slide (``None``: the whole slide).
        present: per foreground class, False to suppress it (the widget's check boxes).
        cache_dir: CAM cache folder (``None``: the default cache, ``$WSSS_CACHE_DIR``).
        torch_threads: threads torch may use in this process (``None``: leave as is).
        mask_from: ``auto``, ``seg`` or ``cam``: which model makes the mask
            (:mod:`wsss_napari.inference.mask_source`; with ``seg`` no CAMs are computed and
            the post-processing only lends its glass rule).
        seg_model: segmentation checkpoint (``None``: the default one, if installed).
        slide_mpp: level-0 microns per pixel given by the user (``--slide-mpp``), over what
            the file says (``None``: the file's; unknown -> level 0 read at the model's mpp).
    """

    model: str = "default"
    cam: CamParams = field(default_factory=CamParams)
    postproc: PostprocParams | None = None
    region: Region | None = None
    present: tuple[bool, ...] = (True, True, True)
    cache_dir: str | None = None
    torch_threads: int | None = None
    mask_from: str = "auto"
    seg_model: str | None = None
    slide_mpp: float | None = None


@dataclass(frozen=True)
class SlideResult:
    """Outcome of :func:`run_slide`: ``status`` is ``'done'`` or ``'skipped'``."""

    slide: str
    status: str
    report: TissueReport
    outputs: SlideOutputs
    seconds: float
    warnings: tuple[str, ...] = ()


# ------------------------------------------------------------------------------ hashes
def params_hash(cam: CamParams, post: PostprocParams, region: Region | None,
                present: Sequence[bool], mask_from: str = "cam",
                slide_mpp: float | None = None) -> str:
    """Hash (16 hex) of every parameter that changes the mask (not device or batch size);
    ``mask_from`` ``'seg'`` and a user ``slide_mpp`` are part of it (``'cam'`` and no
    ``slide_mpp`` keep the hashes of earlier runs)."""
    c = cam.to_dict()
    for k in ("device", "batch_size"):  # change speed, not results
        c.pop(k, None)
    blob = {"cam": c, "postproc": post.to_dict(),
            "region": None if region is None else region.to_dict(),
            "present": [bool(p) for p in present]}
    if mask_from != "cam":
        blob["mask_from"] = mask_from
    if slide_mpp:
        blob["slide_mpp"] = float(slide_mpp)
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _load(path: str, mtime_ns: int) -> Any:
    from .models.checkpoint import load_model

    return load_model(path)


def load_spec_model(source: str) -> Any:
    """The model of ``source`` ('default' or a path), kept loaded for the next slide of the
    same process (a dask worker runs many slides with one model)."""
    from .models.checkpoint import _resolve

    p = _resolve(source)
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as err:
        raise WsssError(f"model '{p}' cannot be read: {err.strerror or err}") from err
    return _load(str(p), mtime)


def spec_model_hash(source: str) -> str:
    """sha256 of the checkpoint ``source`` ('default' or a path), as ``load_model`` sets it."""
    from .models.checkpoint import _resolve

    p = _resolve(source)
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as err:
        raise WsssError(f"model '{p}' cannot be read: {err.strerror or err}") from err
    return _file_hash(str(p), mtime)


@functools.lru_cache(maxsize=8)
def _file_hash(path: str, mtime_ns: int) -> str:
    from .models.checkpoint import file_hash

    return file_hash(path)


def resolve_postproc(model: Any, post: PostprocParams | None) -> PostprocParams:
    """``post``, or the recommended post-processing of ``model`` (a loaded model or a
    checkpoint source), the tuning widget's start."""
    from .models.checkpoint import recommended_postproc

    return post if post is not None else recommended_postproc(model)


def check_out_dir(out_dir: str | os.PathLike, create: bool = True) -> Path:
    """Create the output folder (if ``create``); one clear error when it is a file or not
    writable."""
    from .io.atomic import check_writable_dir

    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise WsssError(f"output folder '{d}' is a file; choose a folder")
    return check_writable_dir(d) if create else d


def _slide_identity(path: Path) -> dict[str, Any]:
    try:
        st = path.stat()
    except OSError as err:
        raise WsssError(f"cannot read slide '{path}': {err.strerror or err}") from err
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def finished(outputs: SlideOutputs, identity: dict[str, Any], model_hash: str,
             p_hash: str) -> dict[str, Any] | None:
    """The done-marker of a slide finished with the same file, model and parameters, if any."""
    try:
        done = json.loads(outputs.done.read_text())
    except (OSError, ValueError):
        return None
    same = (done.get("format") == DONE_FORMAT and done.get("model_hash") == model_hash
            and done.get("params_hash") == p_hash
            and {k: done.get("slide", {}).get(k) for k in ("size", "mtime_ns")}
            == {k: identity[k] for k in ("size", "mtime_ns")})
    files = (outputs.mask, outputs.geojson, outputs.report_json, outputs.report_csv)
    return done if same and all(f.is_file() for f in files) else None


def _remove_leftovers(out_dir: Path, outputs: SlideOutputs) -> None:
    """Temporary files of an earlier, killed attempt at this slide (``io.atomic`` names)."""
    import re

    files = [*vars(outputs).values(), *(Path(f"{p}.run.json") for p in (outputs.mask,
                                                                          outputs.geojson))]
    stems = "|".join(re.escape(p.stem) for p in files)
    temp = re.compile(rf"^\.(?:{stems})\.[A-Za-z0-9_]+\.part")  # io.atomic's temporary names
    for p in out_dir.iterdir():
        if temp.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)


def write_mask_files(mask: Any, geometry: MaskGeometry, outputs: SlideOutputs,
                     record: RunRecord) -> None:
    """The mask as pyramidal OME-TIFF and as QuPath GeoJSON (level-0 px), atomically."""
    from .io.export import export_mask

    export_mask(mask, outputs.mask, ExportParams(format=ExportFormat.OME_TIFF),
                geometry=geometry, record=record)
    export_mask(mask, outputs.geojson, ExportParams(format=ExportFormat.GEOJSON),
                geometry=geometry, record=record)


# ------------------------------------------------------------------------------ the job
def run_slide(slide_path: str | os.PathLike, out_dir: str | os.PathLike, spec: SlideSpec,
              force: bool = False, model: Any = None) -> Generator[Progress, None, SlideResult]:
    """CAMs (cached), mask, exports and report of one slide (see the module docstring).

    Args:
        slide_path: the slide file.
        out_dir: output folder (created).
        spec: model and parameters.
        force: recompute even when the done-marker says this exact job is finished.
        model: the loaded model that makes the mask (default: the one ``spec.model``,
            ``spec.mask_from`` and ``spec.seg_model`` resolve to, loaded here and kept per
            process).

    Yields:
        :class:`Progress` of the CAM (or segmentation) tiles, then of post-processing and
        writing.

    Returns:
        :class:`SlideResult` (``status`` ``'skipped'`` when the outputs were already there).
    """
    from .inference.mask_source import resolve_mask_source
    from .io.slide import Slide

    t0 = time.perf_counter()
    slide_path = Path(slide_path)
    out = check_out_dir(out_dir, create=False)
    outputs = SlideOutputs.of(out, slide_path)
    identity = _slide_identity(slide_path)
    src = resolve_mask_source(spec.model, spec.mask_from, spec.seg_model)
    # hashes from the checkpoint file: a finished slide is skipped without loading torch
    model_hash = str(model.file_hash) if model is not None else spec_model_hash(src.model)
    post = resolve_postproc(model if model is not None else (src.cam_model or src.model),
                            spec.postproc)
    p_hash = params_hash(spec.cam, post, spec.region, spec.present, src.kind, spec.slide_mpp)
    done = None if force else finished(outputs, identity, model_hash, p_hash)
    if done is not None:
        return SlideResult(str(slide_path), "skipped", TissueReport.from_dict(done["report"]),
                           outputs, time.perf_counter() - t0)
    if spec.torch_threads:
        import torch

        torch.set_num_threads(int(spec.torch_threads))
    model = model if model is not None else load_spec_model(src.model)
    with Slide.open(slide_path, mpp=spec.slide_mpp) as slide:
        check_out_dir(out)
        outputs.done.unlink(missing_ok=True)  # from here on the old outputs are not "done"
        _remove_leftovers(out, outputs)
        mask, geometry, warnings = yield from _make_mask(slide, model, spec, post)
    yield Progress("writing", 0, 1)
    record = RunRecord.make(post, spec.cam, model_name=Path(str(model.source)).name,
                            model_hash=model_hash, mask_from=src.kind,
                            slide=identity["path"], slide_mpp=geometry.mpp)
    write_mask_files(mask, geometry, outputs, record)
    report = tissue_report(mask, geometry, slide=str(slide_path), model_hash=model_hash,
                           params_hash=p_hash, mask_from=src.kind)
    write_report(report, outputs.report_json, outputs.report_csv)
    seconds = time.perf_counter() - t0
    _write_done(outputs, identity, record, report, p_hash, warnings, seconds)
    yield Progress("writing", 1, 1)
    return SlideResult(str(slide_path), "done", report, outputs, seconds, tuple(warnings))


def _write_done(outputs: SlideOutputs, identity: dict[str, Any], record: RunRecord,
                report: TissueReport, p_hash: str, warnings: list[str], seconds: float) -> None:
    """The done marker, written last (atomically); the error log of a failed try goes."""
    from .io.atomic import atomic_write_text

    marker = {"format": DONE_FORMAT, "slide": identity, "model_hash": record.model_hash,
              "params_hash": p_hash, "report": report.to_dict(), "mask_from": record.mask_from,
              "outputs": {k: str(v) for k, v in vars(outputs).items()},
              "warnings": list(warnings), "seconds": seconds, "record": record.to_dict()}
    atomic_write_text(outputs.done, json.dumps(marker, indent=2, sort_keys=True))
    outputs.log.unlink(missing_ok=True)


def _make_mask(slide: Any, model: Any, spec: SlideSpec, post: PostprocParams
               ) -> Generator[Progress, None, tuple[Any, MaskGeometry, list[str]]]:
    """The slide's mask, its geometry and warnings: from a segmentation ``model`` on the
    CAM maps' grid (``inference.slide_seg``), or from the CAMs of a CAM ``model`` (cached)
    and the post-processing."""
    if model.config.kind == "seg":
        from .inference.slide_seg import map_geometry, slide_seg
        from .inference.tile_plan import mpp_warnings

        geometry, shape = map_geometry(slide, model, spec.cam, spec.region)
        mask = yield from slide_seg(slide, model, geometry, shape, spec.cam, glass=post,
                                    present=tuple(spec.present))
        return mask, geometry, mpp_warnings(slide, model)
    from .inference.slide_cam import slide_cams
    from .inference.slide_mask import slide_mask

    cams = yield from slide_cams(slide, model, spec.cam, cache_dir=spec.cache_dir,
                                 region=spec.region)
    yield Progress("post-processing", 0, 1)
    mask, geometry = slide_mask(cams, post, slide, present=tuple(spec.present))
    return mask, geometry, list(cams.warnings)


def mask_layer_data(mask_path: str | os.PathLike) -> tuple[Any, dict[str, Any], str]:
    """A napari Labels layer-data tuple of a ``<slide>.mask.ome.tif``, placed over its slide
    as the plugin's reader opens it (scale in µm when the slide's mpp is known, else px), in
    the widgets' layer encoding (class + 1, ``0`` = nothing) and colours.

    Usage: ``viewer.add_labels(data, **kwargs)`` after ``viewer.open(slide,
    plugin="wsss-napari")``.
    """
    from .classes import LABEL_NAMES
    from .io.export import read_exported_mask
    from .labels_encoding import ENCODING, layer_colors, to_layer
    from .layer_record import LayerRecord

    mask, meta = read_exported_mask(mask_path)
    geo = meta.get("geometry")
    if not isinstance(geo, MaskGeometry):
        raise WsssError(f"'{mask_path}' does not say where it lies on its slide (not a "
                        "wsss-napari mask export)")
    d = float(geo.downsample)
    s = float(geo.mpp or 1.0)  # the reader's slide layer: scale mpp (or 1) per level-0 px
    kwargs: dict[str, Any] = {
        "name": Path(mask_path).name.split(".")[0] + " mask", "opacity": 0.5,
        "colormap": layer_colors(), "scale": (s * d, s * d),
        # map pixel i covers level-0 [o + d*i, o + d*(i+1)): centre o + d*i + (d - 1) / 2
        "translate": ((geo.y + (d - 1) / 2) * s, (geo.x + (d - 1) / 2) * s),
        "metadata": LayerRecord(kind="mask_file", geometry=geo, label_encoding=ENCODING,
                                label_names=LABEL_NAMES, source_file=str(mask_path),
                                record=meta.get("record", {})).to_metadata(),
    }
    if geo.mpp:
        kwargs["units"] = ("um", "um")
    return to_layer(mask), kwargs, "labels"
