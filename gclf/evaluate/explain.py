"""``gclf explain``: the Grad-CAM map of one image, from a trained checkpoint, as a PNG; with face
detection, every face of a photo boxed and labelled, its map inside its box."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from PIL import Image
from torch import nn

from gclf.data.manifest import CLASSES, DataError
from gclf.errors import ModelError
from gclf.evaluate.gradcam import grad_cam
from gclf.evaluate.plots import heat_overlay, image_grid_png, save_figure
from gclf.export.artifact import DYNAMIC_INT8, read_artifact_meta
from gclf.faces.detect import Face, FaceDetector, crop_square, face_crop, levelling_angle
from gclf.faces.read import guarded, read_image
from gclf.train.model import load_model

CLASS_COLOURS = ("tab:blue", "tab:red")  # male, female: the boxes' colours


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


def explain_faces_png(
    model: nn.Module,
    meta: dict,
    photo_path: str,
    out_path: str | Path,
    detector: FaceDetector,
    *,
    threshold: float,
    target: int | None = None,
    layer: str | None = None,
) -> list[tuple[Face, float, int]]:
    """Write the photo with every face boxed and labelled and its Grad-CAM map inside its box to
    ``out_path``; return (face in the whole photo's pixels, P(female), class mapped) per face, left
    to right. Raises :class:`DataError` when the photo cannot be read or holds no face."""
    found, error = guarded(lambda: detector.in_photo(photo_path), photo_path)
    if found is None:
        raise DataError(f"{photo_path}: {error}")
    photo, (sx, sy), faces = found
    if not faces:
        raise DataError(f"{photo_path}: no face found")
    size = int(meta["image_size"])
    crops = torch.from_numpy(np.stack([face_crop(photo, face, size) for face in faces])).permute(0, 3, 1, 2)
    crops = crops.float() / 255
    with torch.no_grad():
        probs = torch.sigmoid(model(crops) / meta.get("temperature", 1.0)).flatten()
    predicted = (probs >= threshold).long()
    targets = predicted if target is None else torch.full_like(predicted, target)
    cams, _ = grad_cam(model, crops, classes=targets, layer=layer)
    fig, ax = plt.subplots(figsize=(8, 8 * photo.height / photo.width))
    ax.imshow(photo)
    for index, (face, prob, cam) in enumerate(zip(faces, probs.tolist(), cams.numpy())):
        cx, cy, side = crop_square(face)
        # a levelled crop was cut from the photo turned by the face's roll: turn its map back
        overlay = Image.fromarray((heat_overlay(cam) * 255).astype(np.uint8)).rotate(
            -levelling_angle(face), Image.BILINEAR
        )
        ax.imshow(overlay, extent=(cx - side / 2, cx + side / 2, cy + side / 2, cy - side / 2))
        colour = CLASS_COLOURS[int(predicted[index])]
        ax.add_patch(Rectangle((face.x, face.y), face.w, face.h, fill=False, edgecolor=colour, linewidth=2))
        ax.text(
            face.x,
            face.y,
            f"{index}: {CLASSES[int(predicted[index])]} {prob:.2f}",
            color="white",
            fontsize=9,
            va="bottom",
            bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "edgecolor": "none"},
        )
    ax.set_xlim(0, photo.width)
    ax.set_ylim(photo.height, 0)
    ax.axis("off")
    mapped = "predicted class" if target is None else CLASSES[target]
    ax.set_title(
        f"{os.path.basename(photo_path)}: {len(faces)} face{'s' * (len(faces) != 1)}, P({CLASSES[1]}) at threshold "
        f"{threshold:.2f}; Grad-CAM: evidence for the {mapped}",
        fontsize=9,
    )
    save_figure(fig, out_path)
    return [(face.scaled(sx, sy), prob, int(t)) for face, prob, t in zip(faces, probs.tolist(), targets)]
