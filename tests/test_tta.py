import numpy as np
import pytest
import torch

from gclf.tta import inference_views, predict_probs, probs_from_logits, view_batches


class MeanOfLeftHalf(torch.nn.Module):
    """A toy 'model' whose logit depends on where the bright pixels are."""

    def forward(self, x):
        return x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3)) * 10 - 2.5


def test_identity_only_tta_equals_plain_inference():
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    model = MeanOfLeftHalf()
    plain = torch.sigmoid(model(images.float() / 255)).numpy()
    assert np.allclose(predict_probs(model, images, batch_size=2), plain)


def test_hflip_view_and_label_mapping():
    # bright left half -> high probability of class 1; flipping moves the light to the right
    images = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    images[..., :8] = 255
    model = MeanOfLeftHalf()
    p_plain = predict_probs(model, images)[0]
    p_flip = predict_probs(model, images, views=("hflip",))[0]
    p_both = predict_probs(model, images, views=("identity", "hflip"))[0]
    assert p_plain > 0.9 and p_flip < 0.1
    # TTA averages probabilities of the same class, it never swaps them
    assert np.isclose(p_both, (p_plain + p_flip) / 2)


def test_views_keep_the_image_size():
    x = torch.rand(2, 3, 32, 32)
    views = view_batches(x, ("identity", "hflip", "center_crop", "corner_crops", "scale_up"))
    assert len(views) == 8
    assert all(v.shape == x.shape for v in views)
    with pytest.raises(ValueError, match="unknown TTA view 'zoom'; use identity, hflip, center_crop, corner_crops, "):
        view_batches(x, ("zoom",))


def zoomed_ramp(offset: int, crop: int, size: int) -> np.ndarray:
    """A ramp 0, 1, ... of ``size`` pixels, cropped to ``crop`` pixels from ``offset`` and resized back to ``size``
    bilinearly with pixel centres aligned (align_corners=False): linear inside, held at the ends."""
    return offset + np.clip((np.arange(size) + 0.5) * crop / size - 0.5, 0, crop - 1)


def test_crop_views_take_the_documented_square_and_resize_it_back():
    s = 32
    ramps = torch.zeros(1, 2, s, s)
    ramps[0, 0] = torch.arange(s).float()  # channel 0 holds each pixel's column, channel 1 its row
    ramps[0, 1] = torch.arange(s).float()[:, None]
    crop, scale_up = 28, 26  # 0.875 and 0.8 of 32
    # (top, left, side) of each view's square: centred, then the four corners top-left, top-right, ...
    squares = [(2, 2, crop), (0, 0, crop), (0, 4, crop), (4, 0, crop), (4, 4, crop), (3, 3, scale_up)]
    views = view_batches(ramps, ("center_crop", "corner_crops", "scale_up"))
    assert len(views) == len(squares)
    for view, (top, left, side) in zip(views, squares):
        np.testing.assert_allclose(view[0, 0, 7], zoomed_ramp(left, side, s), atol=1e-5)
        np.testing.assert_allclose(view[0, 1, :, 7], zoomed_ramp(top, side, s), atol=1e-5)


def test_inference_views_are_plain_and_tta():
    assert inference_views(["identity", "hflip"]) == {"": ("identity",), "tta_": ("identity", "hflip")}


def test_probabilities_average_views_after_the_temperature():
    logits = np.array([[2.0, -1.0], [0.0, 3.0]], np.float32)  # two views, two images
    expected = (1 / (1 + np.exp(-logits / 2.0))).mean(0)
    np.testing.assert_allclose(probs_from_logits(logits, 2.0), expected, rtol=1e-6)
    np.testing.assert_allclose(probs_from_logits(logits[:1]), 1 / (1 + np.exp(-logits[0])), rtol=1e-6)
    # float32, whatever comes in: evaluate and predict compare the same numbers with the threshold
    assert probs_from_logits(logits.astype(np.float64)).dtype == np.float32


def test_predict_probs_applies_the_temperature():
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    model = MeanOfLeftHalf()
    logits = model(images.float() / 255).numpy()
    np.testing.assert_allclose(predict_probs(model, images, temperature=2.0), 1 / (1 + np.exp(-logits / 2)), rtol=1e-5)
