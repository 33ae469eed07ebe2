"""Tooltip texts of the widgets, kept apart so the widget code stays about wiring."""

from __future__ import annotations

import dataclasses

from ..params import ParamsBase

CAM = {
    "image": "The slide (image layer) to compute class activation maps for.",
    "model": "'default' = the model shipped with wsss-napari; or choose a checkpoint file "
    "(.safetensors) made by 'wsss-napari train-cls' or by fine-tuning.",
    "browse": "Choose a model checkpoint file (.safetensors).",
    "slide_mpp": "Level-0 microns per pixel of the slide (0.25 = 40x, 0.5 = 20x, 1.0 = 10x), "
    "over what the file says; 'from file' = the file's. Needed when the file has none: the "
    "slide is then read as if it were at the model's mpp (CLI: --slide-mpp).",
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

ATTENTION = {
    "image": "The image or slide (image layer) whose attention maps to compute.",
    "model": "A transformer or hybrid CNN-Transformer CAM model (.safetensors), e.g. trained "
    "with 'wsss-napari train-cls --backbone wsss_hybrid_resnet18'. CNN models have no attention.",
    "method": "Rollout: where the class token looks, over all layers (class-agnostic). "
    "Gradient-weighted rollout: one map per class (what supports that class).",
    "region": "Field of view: what the canvas shows now (at most 2048 x 2048 px). "
    "Whole image: the entire image (small images only).",
    "run": "Compute the maps in the background; they appear as layers next to the CAMs.",
}

CELLS = {
    "cams": "The CAM layer (from the CAM widget) whose maps label the cells; its slide is "
    "the one whose nuclei are found.",
    "instances": "Use the nuclei of a Labels layer (e.g. from stardist or cellpose; level-0 "
    "shape of the slide) instead of the built-in haematoxylin watershed.",
    "dilate": "Grow each nucleus by this many px before averaging its CAMs (0 = the nucleus).",
    "region": "Field of view: what the canvas shows now. Whole slide: the CAMs' extent.",
    "run": "Find the nuclei and label each with the class whose CAM is highest over it; "
    "adds a Points layer coloured by class (confidence and class in its features).",
}

STAIN = {
    "image": "The slide (image layer) to normalise.",
    "method": "Macenko: stain vectors in optical density (H&E-specific). Reinhard: colour "
    "statistics in CIELAB (fast, any stain).",
    "shapes": "Target stain from the region drawn on this Shapes layer (a rectangle over "
    "well-stained tissue).",
    "reference": "Or a reference image / slide file whose stain is the target (used when "
    "given).",
    "run": "Estimate the slide's stain once (from its thumbnail's tissue) and add the "
    "normalised slide as a layer above the original: toggle its visibility to compare.",
}
