"""Tooltip texts of the widgets, kept apart so the widget code stays about wiring."""

from __future__ import annotations

import dataclasses

from ..params import ParamsBase

CAM = {
    "image": "The slide (image layer) to compute class activation maps for.",
    "model": "'default' = the model shipped with wsss-napari; or choose a checkpoint file "
    "(.safetensors) made by 'wsss-napari train-cls' or by fine-tuning.",
    "browse": "Choose a model checkpoint file (.safetensors).",
    "region": "Field of view: what the canvas shows now. Shapes ROI: the bounding box of the "
    "shapes of a Shapes layer. Whole slide: every tile with tissue.",
    "shapes": "The Shapes layer whose shapes bound the region.",
    "scales": "Image scales of the multi-scale test, comma-separated (e.g. 0.5, 1, 2). "
    "More scales: smoother maps, proportionally slower.",
    "run": "Compute the maps in the background; the viewer stays usable.",
    "cancel": "Stop the computation (within a second). Finished tiles stay cached.",
    "scores": "Image-level scores of the classifier for the region (0 = absent, 1 = present).",
}

TUNE = {
    "cams": "The class activation maps to turn into a tissue map (from the CAM widget).",
    "suppress": "Force this class out of the tissue map (its pixels go to the next best class).",
    "gt": "A Labels layer with ground truth covering the same area as the maps: a mask file "
    "(0 tumor, 1 stroma, 2 normal, 3 background) or a layer made by this plugin.",
    "fit": "Search the post-processing parameters that best match the ground truth "
    "(mean IoU) and set the sliders to them.",
    "load": "Load post-processing parameters from a JSON or YAML file.",
    "save": "Save the current post-processing parameters to a JSON file "
    "(usable by 'wsss-napari predict --params').",
    "reset": "Back to the parameters recommended by the maps' model (or the defaults).",
    "undo": "Back to the parameters before the last change (sliders, reset, load, fit).",
}

REVIEW = {
    "mask": "The tissue map (Labels layer) to correct.",
    "level": "Pyramid level to edit at: 0 = full resolution of the map; higher = coarser, "
    "larger area.",
    "edit": "Copy the visible part of the tissue map into an editable layer 'Correction'. "
    "Earlier edits of this slide are restored. Paint with napari's brush (1 tumor, 2 stroma, "
    "3 normal, 4 background); the eraser forgets a correction; Ctrl+Z undoes.",
    "write_back": "Merge the corrected pixels into the whole-slide tissue map.",
    "folder": "Where edits are autosaved (default: next to the slide).",
    "steps": "Optimisation steps of fine-tuning.",
    "start": "Fine-tune the model on the corrected regions in the background.",
    "pause": "Pause / resume fine-tuning (takes effect within a second).",
    "stop": "Stop fine-tuning now; the model learnt so far is kept and saved.",
    "apply": "Recompute the maps of the slide with the fine-tuned model.",
    "compare": "Toggle between the maps of the previous and the fine-tuned model.",
}

EXPORT = {
    "mask": "The tissue map (Labels layer) to export.",
    "formats": "File formats to write. OME-TIFF: pyramidal, for viewers and QuPath; "
    "PNG: palette image (WSSS4LUAD colours); GeoJSON: polygons QuPath imports; "
    "CSV: run-length encoding, one row per class.",
    "folder": "Output folder; each export also writes <name>.run.json with the parameters "
    "and the model that produced the map.",
    "run": "Write the files (atomically: a failed export leaves nothing half-written).",
}


QUEUE = {
    "cams": "The class activation maps (CAM layers) whose uncertainty ranks the queue.",
    "folder": "Where the edits and the queue are autosaved (default: next to the slide).",
    "build": "Reopen this slide's saved queue, or build it from the cached maps "
    "(no network pass): regions ranked by uncertainty.",
    "rebuild": "Build the queue again with the parameters above; decisions on regions still "
    "in the queue are kept.",
    "previous": "Go back to the previous region.",
    "next": "Go to the next region.",
    "accept": "The region's class is right: save it as a correction (or save the brush).",
    "exclude": "Ambiguous: keep this region out of the training data and the queue.",
    "brush": "Paint the region's classes in a 'Queue brush' layer; Accept or Next saves it.",
}

def params_tooltip(cls: type[ParamsBase], name: str) -> str:
    """Tooltip of a parameter field: its help text and documented range."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]  # type: ignore[arg-type]
    text = f.metadata.get("help", name)
    rng = f.metadata.get("range")
    if rng:
        text += f" [{rng[0]:g} .. {rng[1]:g}]"
    return f"{name}: {text}"
