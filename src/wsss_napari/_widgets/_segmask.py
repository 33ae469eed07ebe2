"""The tuning widget's "Mask from" choice: the tissue map from a segmentation model (stage 2)
or from the CAMs + post-processing (the sliders).

With a segmentation model the mask is made once per maps (and suppressed classes) on the
maps' grid (:func:`wsss_napari.inference.slide_seg.slide_seg` with the CAM store's geometry
and shape), so it lines up pixel for pixel with the CAM layers, and is shown as the same
editable "Pseudo-mask" Labels layer with the same record (plus ``mask_from='seg'`` and the
segmentation model's file and hash): corrections, the review queue and export work on it
unchanged. The post-processing sliders only tune the CAM path; with the segmentation model
they are disabled (its mask needs no post-processing; the sliders' glass rule still applies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QCheckBox, QComboBox

from .. import WsssError
from ..classes import LABEL_NAMES
from ..labels_encoding import ENCODING
from ..layer_record import LayerRecord
from ..params import CamParams, PostprocParams
from ._worker import notify_error

SEG_CHOICE = "Segmentation model"
CAM_CHOICE = "CAMs + post-processing"
SLIDERS_OFF_TIP = ("The sliders tune the CAM post-processing. The segmentation model's mask "
                   "needs none (only their glass rule applies): choose 'Mask from: CAMs + "
                   "post-processing' to use them.")


def seg_source(meta: LayerRecord) -> str | None:
    """The segmentation model that goes with the maps' CAM model: the default one for the
    default CAM model, when installed (``inference.mask_source``); else None."""
    from ..inference.mask_source import resolve_mask_source
    from ..models.checkpoint import default_model_path

    path = meta.model_path
    if not path:
        return None
    source = "default" if Path(path).resolve() == default_model_path().resolve() else path
    try:
        src = resolve_mask_source(source, "auto")
    except WsssError:
        return None
    return src.model if src.kind == "seg" else None


def _cam_params(meta: LayerRecord) -> CamParams:
    """The CAM parameters the maps were made with (the defaults when the record has none)."""
    return meta.cam_params if isinstance(meta.cam_params, CamParams) else CamParams()


def seg_mask_job(meta: LayerRecord, model: Any, glass: PostprocParams, present: tuple,
                 epithelium: float = 1.0):
    """Generator: the segmentation model's mask over the maps' grid (Progress, returns it),
    with the epithelium prior of weight ``epithelium`` (0 = off)."""
    from ..inference.slide_seg import slide_seg

    cams = meta.slide_cams
    if meta.slide is None:
        raise WsssError("the slide of these maps is not open: recompute the maps")
    cam = _cam_params(meta)
    params = CamParams(device=cam.device, skip_glass=cam.skip_glass, tile_size=cam.tile_size,
                       epithelium=epithelium)
    return (yield from slide_seg(meta.slide, model, cams.geometry, tuple(cams.cams.shape[-2:]),
                                 params, glass=glass, present=present))


class MaskFromChoice:
    """The "Mask from" combo box of a TuneWidget and its segmentation path."""

    def __init__(self, tune: Any) -> None:
        self.tune = tune
        self.combo = QComboBox()
        self.combo.addItems([SEG_CHOICE, CAM_CHOICE])
        self.combo.setCurrentText(CAM_CHOICE)
        self.combo.setToolTip("Which model makes the tissue map: the segmentation model "
                              "(stage 2, trained on the CAM model's tuned pseudo-masks; the "
                              "default when installed) or the CAMs + the post-processing "
                              "sliders. The CAM layers come from the CAM model either way.")
        self.combo.currentIndexChanged.connect(self._on_changed)
        self.epithelium = _epithelium_box()
        self.epithelium.setEnabled(False)  # until a segmentation model makes the mask
        self.epithelium.toggled.connect(self._on_changed)
        self.models: dict[str, tuple[Any, str]] = {}
        self.source: str | None = None  # the segmentation model of the current maps
        self.user_chose_cams = False
        self._last: tuple[Any, Any] = (None, None)  # (key, mask) of the last mask made

    @property
    def active(self) -> bool:
        """True when the segmentation model makes the mask."""
        return self.combo.currentText() == SEG_CHOICE and self.source is not None

    def adopt(self, meta: LayerRecord) -> None:
        """New maps: offer their segmentation model and choose it unless the user chose CAMs."""
        self.source = seg_source(meta)
        item = self.combo.model().item(0)
        item.setEnabled(self.source is not None)
        self.combo.blockSignals(True)
        use_seg = self.source is not None and not self.user_chose_cams
        self.combo.setCurrentText(SEG_CHOICE if use_seg else CAM_CHOICE)
        self.combo.blockSignals(False)
        self._sync_sliders()

    def _on_changed(self, *_: Any) -> None:
        self.user_chose_cams = self.combo.currentText() == CAM_CHOICE
        self._sync_sliders()
        self.tune.recompute(preview=False)

    @property
    def epithelium_weight(self) -> float:
        """The prior's weight for the next mask: 1 when ticked (and installed), else 0."""
        box = self.epithelium
        return 1.0 if box.isEnabled() and box.isChecked() else 0.0

    def _sync_sliders(self) -> None:
        on = not self.active
        from ..epithelium import epithelium_available

        self.epithelium.setEnabled(self.active and epithelium_available() is None)
        self.tune.form.setEnabled(on)
        self.tune.fit_button.setEnabled(on)
        self.tune.form.setToolTip("" if on else SLIDERS_OFF_TIP)

    def _model(self) -> tuple[Any, str]:
        from ..models.checkpoint import file_hash, load_model

        path = str(self.source)
        if path not in self.models:
            self.models.clear()
            self.models[path] = (load_model(path), file_hash(path))
        return self.models[path]

    def recompute(self, meta: LayerRecord, params: PostprocParams, present: tuple, gen: int):
        """Start the worker that makes and shows the segmentation mask; returns it."""
        from napari.qt.threading import create_worker

        tune = self.tune
        cams = meta.slide_cams
        glass = (params.white_method, params.white_threshold, params.white_min_size)
        epi = self.epithelium_weight
        key = (cams.geometry, tuple(cams.cams.shape[-2:]), present, glass, self.source, epi)

        def job():
            from ..progress import run_to_end

            model, digest = self._model()
            if self._last[0] == key:  # the same grid again (e.g. the final maps after
                mask = self._last[1]  # their one-scale preview): no need to recompute
            else:
                mask = run_to_end(seg_mask_job(meta, model, params, present, epi))
                self._last = (key, mask)
            return gen, meta, params, present, mask.copy(), digest, epi

        worker = create_worker(job, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(lambda err: notify_error(err, "segmentation mask"))
        worker.finished.connect(lambda: tune._recompute_workers.discard(worker))
        tune._recompute_workers.add(worker)
        tune.status.setText("segmentation mask…")
        worker.start()
        return worker

    def _on_returned(self, out: Any) -> None:
        from ._tune import MASK_LAYER
        from ._tunelayers import show_mask

        gen, meta, params, present, mask, digest, epi = out
        tune = self.tune
        if gen != tune.generation:
            return
        cams = meta.slide_cams
        rec = meta.replace(kind="mask", slide_cams=None, class_index=None,
                           cam_params=_cam_params(meta).replace(epithelium=epi),
                           slide_cams_id=id(cams), geometry=cams.geometry,
                           postproc_params=params, present=present, label_names=LABEL_NAMES,
                           label_encoding=ENCODING, mask_from="seg",
                           mask_model_path=str(self.source), mask_model_hash=digest)
        show_mask(tune.viewer, MASK_LAYER, mask, rec, cams, tune._slide_layer(meta))
        tune.status.setText(f"segmentation mask {mask.shape[1]} x {mask.shape[0]} px "
                            f"({Path(str(self.source)).name}"
                            f"{', tissue prior' if epi else ''})")


def _epithelium_box() -> QCheckBox:
    """The "tissue prior" tick box (epithelium and alveoli): on by default, greyed out (with
    the reason) where the optional package is not installed."""
    from ..epithelium import epithelium_available

    box = QCheckBox("tissue prior")
    box.setChecked(True)
    reason = epithelium_available()
    box.setToolTip(reason or "Reweight the segmentation model's tissue: tumor where SHELL's "
                   "pretrained H&E network sees epithelium, normal lung where the tissue is "
                   "mostly air (alveoli), stroma elsewhere (docs/training.md, 'The epithelium "
                   "prior', 'Airiness'). Never turns tissue into glass. Untick to see the "
                   "model's own mask.")
    return box
