"""`wsss-napari fine-tune` on a slide's edit store: the review widget's versioned checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_napari.cli import main
from wsss_napari.models import ModelConfig, build_model, file_hash, load_model, save_model
from wsss_napari.models.versioning import list_versions

torch.set_num_threads(1)
FLAGS = ["--steps", "2", "--batch-size", "2", "--crop-size", "32", "--device", "cpu"]


@pytest.fixture
def edited(tmp_path):
    """A generated slide whose edit store holds one painted tumor square at downsample 4."""
    from wsss_napari.corrections.store import EditStore, edits_path, slide_identity
    from wsss_napari.sample.synth import write_pyramidal_tiff

    slide = write_pyramidal_tiff(tmp_path / "case.tif", 512, 512, seed=2, mpp=0.5)
    root = edits_path(slide)
    store = EditStore.open_or_create(root, slide_identity(slide, mpp=0.5), shape=(128, 128),
                                     downsample=4.0, tile=64)
    labels = np.full((20, 30), 255, np.uint8)
    labels[2:18, 3:27] = 0
    store.write(70, 10, labels)  # rows 70..90, cols 10..40: tiles (1, 0)
    store.close()
    torch.manual_seed(0)
    model = tmp_path / "cam.safetensors"
    save_model(build_model(ModelConfig(backbone="test_resnet", input_size=64)).eval(), model)
    return slide, root, model


def test_fine_tune_saves_the_next_version_with_its_lineage(edited, tmp_path, capsys):
    slide, root, model = edited
    out = tmp_path / "models"
    assert main(["fine-tune", str(model), "--edits", str(root), "--out", str(out), *FLAGS]) == 0
    assert main(["fine-tune", str(model), "--edits", str(root), "--out", str(out), *FLAGS]) == 0
    text = capsys.readouterr().out
    assert "384 corrected px in 1 tiles of case.tif" in text
    versions = list_versions(out)
    assert [(v.name, v.number) for v in versions] == [("cam", 1), ("cam", 2)]
    child = load_model(versions[0].path)
    assert versions[0].path.name == f"cam-v1-{file_hash(versions[0].path)[:8]}.safetensors"
    assert child.config.parent_hash == file_hash(model)
    info = child.config.extra["finetune"]
    assert info["slides"] == [str(slide)] and info["steps"] == 2
    # the edited tile (rows 64..128, cols 0..64 at downsample 4) in level-0 pixels
    assert info["regions"] == [{"y": 256, "x": 0, "height": 256, "width": 256}]
    assert info["labelled_pixels"]["tumor"] == 16 * 24
    # same seed, same data: both versions hold the same weights
    twin = load_model(versions[1].path)
    for k, v in child.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[k], v)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_fine_tune_bad_input_is_one_line(edited, tmp_path, capsys):
    slide, root, model = edited
    assert main(["fine-tune", str(model), "--edits", str(tmp_path), "--out",
                 str(tmp_path / "m"), *FLAGS]) == 2
    assert "is not a wsss-napari edit store" in capsys.readouterr().err
    assert main(["fine-tune", str(model), "--edits", str(root), "--out",
                 str(tmp_path / "m2.safetensors"), *FLAGS]) == 2
    assert "folder of model versions" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_fine_tune_leaves_out_the_review_queues_excluded_items(edited, tmp_path, capsys):
    """Edits inside an item the reviewer excluded (painted before or after the decision)
    are not learned from; the rest of the store is."""
    from wsss_napari.params import UncertaintyParams
    from wsss_napari.region import MaskGeometry, Region
    from wsss_napari.review_queue import EXCLUDE, QueueItem, ReviewQueue, queue_path

    slide, root, model = edited
    geo = MaskGeometry(downsample=4.0, mpp=0.5, slide="case.tif")  # the store's grid
    # store rows 64..80, cols 0..64: the upper 8 rows of the 16 x 24 tumor square
    item = QueueItem(id="r64c0n0", rank=1, box=(64, 0, 16, 64), mask=np.ones((16, 64), bool),
                     region=Region(y=256, x=0, height=64, width=256), area_px=1024,
                     area_mm2=None, cls=0, runner_up=1, probs=(0.5, 0.5, 0.0, 0.0), score=1.0)
    queue = ReviewQueue(items=[item], geometry=geo, params=UncertaintyParams())
    queue.decide(item, EXCLUDE)
    queue.save(queue_path(root))
    out = tmp_path / "models"
    assert main(["fine-tune", str(model), "--edits", str(root), "--out", str(out), *FLAGS]) == 0
    (version,) = list_versions(out)
    assert version.finetune["labelled_pixels"] == {"tumor": 8 * 24}
