import math

import numpy as np
import pytest

from gclf.metrics import binary_metrics, bootstrap_ci, calibration_bins, expected_calibration_error
from gclf.threshold import choose, fit_temperature, sweep

LABELS = np.array([1, 1, 1, 0, 0, 0, 0, 0])
PROBS = np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.05])


def test_metrics_match_hand_computed_values():
    m = binary_metrics(LABELS, PROBS, threshold=0.5)
    # predicted positive: 0.9, 0.6 (true), 0.7 (false) -> tp=2 fp=1 fn=1 tn=4
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 4)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m["male_recall"] == pytest.approx(4 / 5)
    assert m["male_precision"] == pytest.approx(4 / 5)
    # AUC: fraction of (positive, negative) pairs ranked right: 0.9>all 5, 0.6>4, 0.3>3 -> 12/15
    assert m["roc_auc"] == pytest.approx(12 / 15)


def test_threshold_is_inclusive_and_auc_undefined_for_one_class():
    m = binary_metrics([1, 0], [0.5, 0.49], threshold=0.5)
    assert m["tp"] == 1 and m["tn"] == 1
    assert math.isnan(binary_metrics([1, 1], [0.2, 0.9])["roc_auc"])


def test_ece_perfectly_calibrated_and_overconfident():
    labels = np.array([1] * 7 + [0] * 3)
    assert expected_calibration_error(labels, np.full(10, 0.7)) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(labels, np.full(10, 0.95)) == pytest.approx(0.25)


def test_bootstrap_interval_contains_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(labels * 0.4 + rng.random(300) * 0.6, 0, 1)
    ci = bootstrap_ci(labels, probs, 0.5, resamples=200, seed=3)
    point = binary_metrics(labels, probs, 0.5)
    for name in ("accuracy", "f1", "roc_auc"):
        lo, hi = ci[name]
        assert lo <= point[name] <= hi and hi - lo < 0.2
    assert ci == bootstrap_ci(labels, probs, 0.5, resamples=200, seed=3)


def test_sweep_and_choose():
    rows = sweep(LABELS, PROBS, [0.25, 0.5, 0.65, 0.8])
    by_t = {r["threshold"]: r for r in rows}
    assert by_t[0.5]["f1"] == pytest.approx(2 / 3)
    # at 0.25: tp=3 fp=2 -> f1 = 6/8
    assert by_t[0.25]["f1"] == pytest.approx(0.75)
    assert by_t[0.25]["youden"] == pytest.approx(1 + 3 / 5 - 1)
    assert choose(rows, "f1")["threshold"] == 0.25
    # at 0.65: tp=1 (0.9) fp=1 (0.7): tpr=1/3 tnr=4/5; at 0.8: tpr 1/3 tnr 1
    assert choose(rows, "balanced_accuracy")["threshold"] == 0.25
    with pytest.raises(ValueError):
        choose(rows, "accuracy")


def test_calibration_bins_skip_empty_bins_and_count_every_image():
    rows = calibration_bins([1, 0, 1, 1], [0.05, 0.15, 0.95, 1.0], bins=10)
    assert [r["count"] for r in rows] == [1, 1, 2]
    assert rows[-1] == {"confidence": 0.975, "observed": 1.0, "count": 2}


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, 20_000)
    labels = rng.random(20_000) < 1 / (1 + np.exp(-logits / 2.5))  # true T = 2.5: overconfident logits
    assert fit_temperature(labels, logits) == pytest.approx(2.5, rel=0.05)
    labels = rng.random(20_000) < 1 / (1 + np.exp(-logits / 0.5))  # underconfident
    assert fit_temperature(labels, logits) == pytest.approx(0.5, rel=0.05)


def test_fit_temperature_lowers_the_calibration_error_and_keeps_the_ranking():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, 5_000)
    labels = rng.random(5_000) < 1 / (1 + np.exp(-logits / 3))
    t = fit_temperature(labels, logits)
    raw, calibrated = 1 / (1 + np.exp(-logits)), 1 / (1 + np.exp(-logits / t))
    assert expected_calibration_error(labels, calibrated) < expected_calibration_error(labels, raw) / 3
    assert binary_metrics(labels, calibrated)["roc_auc"] == binary_metrics(labels, raw)["roc_auc"]


def test_fit_temperature_without_both_classes_is_identity():
    assert fit_temperature([1, 1, 1], [0.3, 2.0, -1.0]) == 1.0
    assert fit_temperature([], []) == 1.0
