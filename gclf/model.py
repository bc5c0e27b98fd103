"""The classifier: a timm backbone, a one-logit head, and input normalisation baked in.

The model takes float images in [0, 1] (N, 3, H, W) and returns one logit per image (N,).
Normalisation lives inside the model so every exported artifact (checkpoint, ONNX, INT8)
needs nothing but pixels; the sigmoid lives in the loss and in inference.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from gclf.errors import UserError
from gclf.io import atomic_write

CLASSES = ("male", "female")  # label 0, label 1 (the positive class)
HEADS = ("mlp", "linear")


class ModelError(UserError):
    """A model or artifact that cannot be built or loaded, with a message for the user."""


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


def build_model(arch: str, head: str = "mlp", dropout: float = 0.3, pretrained: bool = False) -> Classifier:
    """A timm backbone (global-pooled features, no classifier) under a one-logit head."""
    if arch not in timm.list_models():
        raise ModelError(f"unknown timm model {arch!r} (see timm.list_models())")
    try:
        backbone = timm.create_model(arch, pretrained=pretrained, num_classes=0)
    except Exception as e:  # no network, no cached weights, hub errors: all end the same way
        if not pretrained:
            raise
        raise ModelError(
            f"could not fetch ImageNet weights for {arch} ({type(e).__name__}); without internet set "
            "model.pretrained=false and model.weights=PATH to a local state dict"
        ) from e
    cfg = backbone.pretrained_cfg
    return Classifier(backbone, build_head(head, backbone.num_features, dropout), cfg["mean"], cfg["std"])


def from_torchvision_keys(state: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a torchvision EfficientNet state dict (``features.N...``) to ``backbone``'s timm keys.

    Both libraries register the same tensors in the same order (stem, blocks with expansion,
    depthwise, squeeze-excitation and projection, head conv), so tensors pair up by position; the
    shapes are checked pair by pair, so another architecture fails loudly instead of loading noise.
    """
    theirs = [(k, v) for k, v in state.items() if k.startswith("features.")]
    ours = list(backbone.state_dict().items())
    mismatch = len(theirs) != len(ours) or any(v.shape != w.shape for (_, v), (_, w) in zip(theirs, ours))
    if mismatch:
        raise ModelError(
            f"torchvision weights ({len(theirs)} tensors) do not fit {type(backbone).__name__} "
            f"({len(ours)} tensors); wrong architecture?"
        )
    return {key: value for (key, _), (_, value) in zip(ours, theirs)}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a local state dict into ``backbone``; return (missing, unexpected) keys.

    timm key names load as they are, after stripping wrappers' prefixes (``module.``, ``model.``,
    ``backbone.``); torchvision EfficientNet names (``features.N...``) are renamed to timm's. The
    ImageNet classifier is ignored, since the head is ours.
    """
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
    if any(k.startswith("features.") for k in cleaned):
        try:
            cleaned = from_torchvision_keys(cleaned, backbone)
        except ModelError as e:
            raise ModelError(f"model.weights: {path}: {e}") from None
    cleaned = {k: v for k, v in cleaned.items() if not k.startswith("classifier.")}
    result = backbone.load_state_dict(cleaned, strict=False)
    if not set(cleaned) - set(result.unexpected_keys):
        raise ModelError(f"model.weights: {path}: no key matches {type(backbone).__name__}; wrong architecture?")
    return list(result.missing_keys), list(result.unexpected_keys)


def artifact_meta(arch: str, head: str, dropout: float, image_size: int) -> dict[str, Any]:
    """What inference needs to rebuild and feed a model, stored inside every checkpoint."""
    return {"arch": arch, "head": head, "dropout": dropout, "image_size": image_size, "classes": list(CLASSES)}


def save_model(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save({"state_dict": state, "meta": meta}, tmp))


def load_model(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_model` without unpickling arbitrary objects."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        meta = ckpt["meta"]
        model = build_model(meta["arch"], meta["head"], meta["dropout"])
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError:  # missing, unexpected or mis-shaped keys: the PyTorch message is pages long
            raise ModelError(
                f"{path}: its weights do not fit a {meta['arch']} with a {meta['head']} head "
                "(an artifact of another architecture?)"
            ) from None
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{path}: not a gclf checkpoint or corrupted ({type(e).__name__}: {e})"[:300]) from None
    return model.eval(), meta
