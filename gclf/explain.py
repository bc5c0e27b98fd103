"""``gclf explain``: the Grad-CAM map of one image, from a trained checkpoint, as a PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gclf.artifact import DYNAMIC_INT8, read_artifact_meta
from gclf.data.manifest import DataError
from gclf.gradcam import grad_cam
from gclf.model import CLASSES, ModelError, load_model
from gclf.plots import image_grid_png
from gclf.predict import read_image


def load_explainable(model_path: str | Path) -> tuple[nn.Module, dict]:
    """The FP32 torch model and meta of a ``.pt`` checkpoint: Grad-CAM needs gradients, which
    ONNX, OpenVINO and dynamically quantized artifacts do not give."""
    path = Path(model_path)
    if path.suffix != ".pt":
        raise ModelError(
            f"{path}: Grad-CAM needs a PyTorch checkpoint (.pt); ONNX and OpenVINO files have no gradients"
        )
    if read_artifact_meta(path).get("quantization") == DYNAMIC_INT8:
        raise ModelError(f"{path}: is quantized; Grad-CAM needs the FP32 checkpoint it was made from")
    return load_model(path)


def explain_png(
    model: nn.Module,
    meta: dict,
    image_path: str,
    out_path: str | Path,
    *,
    threshold: float,
    target: int | None = None,
    layer: str | None = None,
) -> tuple[float, int]:
    """Write the image and its Grad-CAM map side by side to ``out_path``; return (P(female), the
    class mapped). ``target`` is the class whose evidence to map, by default the one predicted at
    ``threshold``."""
    pixels, error = read_image(image_path, int(meta["image_size"]))
    if pixels is None:
        raise DataError(f"{image_path}: {error}")
    image = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None]  # a copy: decoded arrays are read-only
    with torch.no_grad():
        prob = float(torch.sigmoid(model(image.float() / 255) / meta.get("temperature", 1.0))[0])
    target = int(prob >= threshold) if target is None else target
    cams, _ = grad_cam(model, image.float() / 255, classes=torch.tensor([target]), layer=layer)
    predicted = CLASSES[int(prob >= threshold)]
    image_grid_png(
        out_path,
        np.concatenate([image.numpy()] * 2),
        [os.path.basename(image_path), f"Grad-CAM: evidence for {CLASSES[target]}"],
        f"P({CLASSES[1]}) {prob:.2f}, threshold {threshold:.2f}: {predicted}",
        heatmaps=[None, cams[0].numpy()],
        columns=2,
    )
    return prob, target
