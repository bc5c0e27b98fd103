import numpy as np
import torch

from gclf.tta import predict_probs, probs_from_logits, view_batches


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


def test_probabilities_average_views_after_the_temperature():
    logits = np.array([[2.0, -1.0], [0.0, 3.0]], np.float32)  # two views, two images
    expected = (1 / (1 + np.exp(-logits / 2.0))).mean(0)
    np.testing.assert_allclose(probs_from_logits(logits, 2.0), expected, rtol=1e-6)
    np.testing.assert_allclose(probs_from_logits(logits[:1]), 1 / (1 + np.exp(-logits[0])), rtol=1e-6)
