"""Grad-CAM in plain PyTorch: where in an image the evidence for a class lies.

Grad-CAM (Selvaraju et al., 2017) weights the channels of a convolutional feature map by the
spatial mean of the class score's gradient with respect to them, sums them, keeps the positive
part and upsamples it to the image. The classifier has one logit, for "female"; the score of
"male" is its negative.

The usual layer is the backbone's last feature map, but at small inputs it has too few cells to
point anywhere (EfficientNet at 64 px: 2 x 2, and the map came out nearly flat on the default
model). So the default is the final map when it has at least :data:`MIN_SIDE` cells a side (from
128 px up), else the last stage output that has (EfficientNet at 64 px: the stride-16 stage).
Any layer can be named instead.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from gclf.data.manifest import CLASSES
from gclf.errors import ModelError
from gclf.metrics import most_confident

MIN_SIDE = 4  # cells per side of the default feature map


def feature_maps(model: nn.Module, pixels: torch.Tensor) -> list[tuple[str, tuple[int, int]]]:
    """(module name, (H, W)) of every module whose output is a spatial feature map, in the order
    they finish in one forward pass of ``pixels[:1]``; a module that runs twice is listed once.

    A feature map is a 4-D (N, C, H, W) output with more than one cell; 1 x 1 outputs (global
    pooling, squeeze-and-excitation) say nothing about where the evidence lies.
    """
    finished: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(_module, _inputs, output) -> None:
            if _is_feature_map(output):
                finished.setdefault(name, tuple(output.shape[-2:]))

        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(pixels[:1].to(_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return list(finished.items())


def default_layer(model: nn.Module, pixels: torch.Tensor, min_side: int = MIN_SIDE) -> str:
    """The backbone's final feature map if it has at least ``min_side`` cells a side, else the
    last earlier stage output (timm's ``feature_info``) that has, else the finest of them."""
    maps = dict(feature_maps(model, pixels))
    if not maps:
        raise ModelError("Grad-CAM: the model has no convolutional feature map")
    # Stage outputs, not any layer of the right size: inside the next block, layers still run at
    # that size before it downsamples, and mapping them would split a block in two.
    stages = [f"backbone.{info['module']}" for info in getattr(getattr(model, "backbone", None), "feature_info", [])]
    candidates = [list(maps)[-1], *reversed([s for s in stages if s in maps])]
    large = [name for name in candidates if min(maps[name]) >= min_side]
    return large[0] if large else max(candidates, key=lambda name: min(maps[name]))


def _is_feature_map(output) -> bool:
    return isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-2] * output.shape[-1] > 1


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def _captured_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """A list that receives ``module``'s output on each forward call while the context is open."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


def grad_cam(
    model: nn.Module,
    pixels: torch.Tensor,
    classes: torch.Tensor | None = None,
    layer: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heat maps (N, H, W) in [0, 1] and P(female) (N,) for float ``pixels`` (N, 3, H, W) in [0, 1].

    ``classes`` (N,) holds, per image, the class whose evidence to map (0 male, 1 female); by
    default the class the model predicts at probability 0.5. ``layer`` names the module whose
    output is the feature map (see :func:`feature_maps`); by default :func:`default_layer`.
    A map that is zero everywhere means no part of the image speaks for the class.
    """
    model.eval()
    layer = default_layer(model, pixels) if layer is None else layer
    module = dict(model.named_modules()).get(layer)
    if module is None:
        raise ModelError(f"Grad-CAM: the model has no layer {layer!r}; `gclf explain --list-layers` names them")
    # The input asks for gradients so a graph is built even when the weights are frozen.
    x = pixels.detach().to(_device(model)).float().requires_grad_(True)
    with torch.enable_grad(), _captured_output(module) as outputs:
        logits = model(x)
    if len(outputs) != 1 or not _is_feature_map(outputs[0]):
        raise ModelError(f"Grad-CAM: layer {layer!r} must run once per forward and output a map (N, C, H, W)")
    features = outputs[0]
    if classes is None:
        classes = (logits >= 0).long()
    sign = torch.where(torch.as_tensor(classes, device=logits.device).bool(), 1.0, -1.0)
    # Images are independent in eval mode, so one backward pass gives every image's own gradient.
    (gradients,) = torch.autograd.grad((logits * sign).sum(), features)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cams = F.relu((weights * features).sum(dim=1, keepdim=True))
    cams = F.interpolate(cams, size=pixels.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cams.amax(dim=(1, 2), keepdim=True)
    cams = torch.where(peak > 0, cams / peak.clamp_min(1e-12), torch.zeros_like(cams))
    return cams.detach().cpu(), torch.sigmoid(logits).detach().cpu()


CASES = ((0, True), (0, False), (1, True), (1, False))  # (true class, predicted right)


def cam_cases(labels, probs, threshold: float, per_case: int) -> list[tuple[int, str]]:
    """(image index, case) for a Grad-CAM grid: per true class, the most confident right and wrong
    predictions at ``threshold``, ``per_case`` each; rank by rank, so a 4-column grid shows one
    case per column. A case with fewer images gives fewer, so captions, not columns, name the case."""
    chosen = {
        case: most_confident(labels, probs, threshold, correct=case[1], label=case[0], n=per_case) for case in CASES
    }
    return [
        (chosen[case][rank], f"{CLASSES[case[0]]}, {'right' if case[1] else 'wrong'}")
        for rank in range(per_case)
        for case in CASES
        if rank < len(chosen[case])
    ]
