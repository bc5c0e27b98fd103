import pytest
import torch
import torch.nn.functional as F

from gclf.train.losses import focal_loss, make_loss, positive_weight

LOGITS = torch.tensor([2.0, -1.0, 0.5, -3.0, 0.1])
TARGETS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])


def test_focal_loss_matches_its_formula():
    # one positive at logit 1: p = sigmoid(1); alpha (1 - p)^gamma (-log p)
    p = torch.sigmoid(torch.tensor(1.0))
    expected = 0.25 * (1 - p) ** 2 * -torch.log(p)
    assert torch.isclose(focal_loss(torch.tensor([1.0]), torch.tensor([1.0]), gamma=2.0, alpha=0.25), expected)


def test_focal_with_gamma_zero_is_alpha_weighted_bce():
    alpha = 0.7
    weights = torch.where(TARGETS == 1, alpha, 1 - alpha)
    expected = (weights * F.binary_cross_entropy_with_logits(LOGITS, TARGETS, reduction="none")).mean()
    assert torch.allclose(focal_loss(LOGITS, TARGETS, gamma=0.0, alpha=alpha), expected)


def test_focal_alpha_changes_the_loss_and_its_gradient_direction():
    def grad(alpha):
        x = LOGITS.clone().requires_grad_()
        focal_loss(x, TARGETS, gamma=2.0, alpha=alpha).backward()
        return x.grad

    assert focal_loss(LOGITS, TARGETS, 2.0, 0.25) != pytest.approx(float(focal_loss(LOGITS, TARGETS, 2.0, 0.75)))
    g1, g2 = grad(0.25), grad(0.75)
    # the ratio between a positive's and a negative's gradient moves with alpha
    assert (g1[0] / g1[1]) != pytest.approx(float(g2[0] / g2[1]))


def test_focal_down_weights_easy_examples():
    easy, hard = torch.tensor([4.0]), torch.tensor([-1.0])
    one = torch.tensor([1.0])
    ratio_focal = focal_loss(easy, one, 2.0, 0.5) / focal_loss(hard, one, 2.0, 0.5)
    ratio_bce = F.binary_cross_entropy_with_logits(easy, one) / F.binary_cross_entropy_with_logits(hard, one)
    assert ratio_focal < ratio_bce / 10


def test_focal_from_params_uses_its_gamma_and_alpha():
    assert torch.allclose(make_loss("focal", TARGETS)(LOGITS, TARGETS), focal_loss(LOGITS, TARGETS, 2.0, 0.5))
    focal = make_loss("focal", TARGETS, gamma=1.5, alpha=0.3)
    assert torch.allclose(focal(LOGITS, TARGETS), focal_loss(LOGITS, TARGETS, 1.5, 0.3))
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        make_loss("hinge", TARGETS)


def test_weighted_bce_uses_train_counts():
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert positive_weight(labels) == 3.0
    assert positive_weight(torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])) == 2.0
    assert positive_weight(torch.tensor([1.0, 1.0, 1.0, 0.0])) == pytest.approx(1 / 3)
    loss = make_loss("weighted_bce", labels)
    expected = F.binary_cross_entropy_with_logits(LOGITS, TARGETS, pos_weight=torch.tensor(3.0))
    assert torch.allclose(loss(LOGITS, TARGETS), expected)
    assert positive_weight(torch.zeros(3)) == positive_weight(torch.ones(3)) == 1.0  # one class: no weighting


def test_plain_bce():
    assert torch.allclose(
        make_loss("bce", TARGETS)(LOGITS, TARGETS), F.binary_cross_entropy_with_logits(LOGITS, TARGETS)
    )


def test_label_smoothing_moves_the_targets_towards_one_half():
    logits, targets = torch.tensor([3.0, -2.0, 0.5]), torch.tensor([1.0, 0.0, 1.0])
    smoothed = make_loss("bce", targets, label_smoothing=0.2)(logits, targets)
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor([0.9, 0.1, 0.9]))
    assert torch.isclose(smoothed, expected)
    assert torch.equal(
        make_loss("bce", targets, label_smoothing=0.0)(logits, targets), make_loss("bce", targets)(logits, targets)
    )
