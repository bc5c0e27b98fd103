"""Grad-CAM on timm's tiny ``test_efficientnet``, trained for a few steps where one square decides."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gclf.cli import main
from gclf.errors import ModelError
from gclf.evaluate.explain import explain_png, load_explainable
from gclf.evaluate.gradcam import cam_cases, default_layer, feature_maps, grad_cam
from gclf.export import quantize
from gclf.train.model import artifact_meta, build_model, save_model

SIZE, HALF = 64, 32  # at 64 px the tiny model's default map is 4 x 4 cells
QUADRANTS = {"top left": (0, 0), "top right": (0, 1), "bottom left": (1, 0), "bottom right": (1, 1)}


def square_images(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Dim noise; every second image (label 1) has a white square in the top-left corner."""
    images = torch.rand(count, 3, SIZE, SIZE, generator=generator) * 0.5
    labels = (torch.arange(count) % 2).float()
    images[labels.bool(), :, 4:20, 4:20] = 1.0
    return images, labels


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def square_model(one_thread) -> torch.nn.Module:
    """Trained until the square alone decides the label (25 steps, about 2 s)."""
    torch.manual_seed(0)
    model = build_model("test_efficientnet", "linear", 0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(25):
        images, labels = square_images(32, generator)
        loss = F.binary_cross_entropy_with_logits(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def with_square() -> torch.Tensor:
    images, labels = square_images(16, torch.Generator().manual_seed(1))
    return images[labels.bool()]


def moved(images: torch.Tensor, quadrant: str) -> torch.Tensor:
    """The top-left square flipped into ``quadrant``."""
    row, column = QUADRANTS[quadrant]
    dims = [d for d, flip in ((-2, row), (-1, column)) if flip]
    return images.flip(dims) if dims else images


def share_in_quadrant(cams: torch.Tensor, quadrant: str) -> torch.Tensor:
    row, column = QUADRANTS[quadrant]
    inside = cams[:, row * HALF : (row + 1) * HALF, column * HALF : (column + 1) * HALF]
    return inside.sum(dim=(1, 2)) / cams.sum(dim=(1, 2)).clamp_min(1e-12)


def test_the_model_learned_the_square(square_model, with_square):
    plain, labels = square_images(16, torch.Generator().manual_seed(2))
    with torch.no_grad():
        probs = torch.sigmoid(square_model(plain))
    assert torch.equal(probs >= 0.5, labels.bool())


@pytest.mark.parametrize("quadrant", list(QUADRANTS))
def test_female_map_peaks_where_the_square_is(square_model, with_square, quadrant):
    # Trained with the square top left only, the evidence must follow the square when it moves:
    # a map stuck to one place, or spread evenly (a quarter in each quadrant), fails.
    cams, _ = grad_cam(square_model, moved(with_square, quadrant), classes=torch.ones(len(with_square)))
    row, column = QUADRANTS[quadrant]
    peaks = [divmod(int(i), SIZE) for i in cams.flatten(1).argmax(dim=1)]
    assert all((y >= HALF) == row and (x >= HALF) == column for y, x in peaks)
    assert share_in_quadrant(cams, quadrant).min() > 0.5  # measured 0.76 to 0.97


def test_male_map_is_not_on_the_square(square_model, with_square):
    cams, _ = grad_cam(square_model, with_square, classes=torch.zeros(len(with_square)))
    assert share_in_quadrant(cams, "top left").max() < 0.2  # measured 0.03


def test_maps_are_scaled_per_image_and_need_no_trainable_weights(square_model, with_square):
    frozen = build_model("test_efficientnet", "linear", 0.0)
    frozen.load_state_dict(square_model.state_dict())
    frozen.requires_grad_(False)
    cams, probs = grad_cam(frozen, with_square)
    assert cams.shape == (len(with_square), SIZE, SIZE)
    assert cams.min() >= 0 and torch.allclose(cams.amax(dim=(1, 2)), torch.ones(len(with_square)))
    with torch.no_grad():
        assert torch.allclose(probs, torch.sigmoid(square_model(with_square)))
    expected, _ = grad_cam(square_model, with_square)
    assert torch.allclose(cams, expected, atol=1e-6)


@pytest.mark.parametrize("size, layer", [(32, "backbone.blocks.2"), (64, "backbone.blocks.3"), (128, "backbone.bn2")])
def test_default_layer_is_the_last_map_of_at_least_4_by_4(size, layer):
    # test_efficientnet's final map is 2 x 2 at 64 px: too coarse, so a stage output 4 x 4 is used
    model = build_model("test_efficientnet", "linear", 0.0).eval()
    pixels = torch.rand(1, 3, size, size)
    assert default_layer(model, pixels) == layer
    assert min(dict(feature_maps(model, pixels))[layer]) >= 4


def test_unknown_layer_is_a_model_error(square_model, with_square):
    with pytest.raises(ModelError, match="no layer 'backbone.nope'"):
        grad_cam(square_model, with_square, layer="backbone.nope")


def test_cam_cases_pick_the_most_confident_per_class_and_outcome():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.1, 0.3, 0.8, 0.6, 0.9, 0.7, 0.2, 0.45])
    # threshold 0.5: male right 0 (0.9 sure), 1 (0.7); male wrong 2 (0.8), 3 (0.6);
    # female right 4 (0.9), 5 (0.7); female wrong 6 (0.8), 7 (0.55)
    assert cam_cases(labels, probs, 0.5, per_case=2) == [
        (0, "male, right"),
        (2, "male, wrong"),
        (4, "female, right"),
        (6, "female, wrong"),
        (1, "male, right"),
        (3, "male, wrong"),
        (5, "female, right"),
        (7, "female, wrong"),
    ]
    assert cam_cases(labels[:4], probs[:4], 0.5, per_case=1) == [(0, "male, right"), (2, "male, wrong")]


@pytest.fixture(scope="module")
def checkpoint(square_model, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("explain") / "model.pt"
    save_model(path, square_model, artifact_meta("test_efficientnet", "linear", 0.0, SIZE))
    return str(path)


def test_explain_writes_a_png_and_reports_the_prediction(square_model, with_square, checkpoint, tmp_path, capsys):
    image = tmp_path / "face.png"
    Image.fromarray((with_square[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(image)
    model, meta = load_explainable(checkpoint)
    prob, mapped = explain_png(model, meta, str(image), tmp_path / "direct.png", threshold=0.5)
    assert prob > 0.5 and mapped == 1
    assert (tmp_path / "direct.png").read_bytes().startswith(b"\x89PNG")

    main(["explain", str(image), "--model", checkpoint, "--out", str(tmp_path / "cam.png"), "--target", "male"])
    captured = capsys.readouterr()
    assert f"P(female) {prob:.4f} at threshold 0.50: female; evidence for male" in captured.out
    assert "carries no threshold" in captured.err
    assert (tmp_path / "cam.png").is_file()


def test_explain_refuses_artifacts_without_gradients(square_model, checkpoint, tmp_path):
    with pytest.raises(ModelError, match="needs a PyTorch checkpoint"):
        load_explainable(tmp_path / "model.onnx")
    dynamic = tmp_path / "int8.pt"
    quantize.save_dynamic_int8(
        dynamic, quantize.quantize_dynamic_linear(square_model), artifact_meta("test_efficientnet", "linear", 0.0, SIZE)
    )
    with pytest.raises(ModelError, match="is quantized"):
        load_explainable(dynamic)
