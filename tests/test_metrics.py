import math
import warnings

import numpy as np
import pytest

from gclf.metrics import (
    binary_metrics,
    bootstrap_ci,
    calibration_bins,
    categorical_columns,
    expected_calibration_error,
    group_key,
    most_confident,
    subgroup_audit,
    subgroup_metrics,
)
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
    # average precision: the precision where each positive is reached, ranks 1, 3 and 5: (1 + 2/3 + 3/5) / 3
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # each image alone in its bin: ECE = mean |label - prob|
    assert m["ece"] == pytest.approx(np.abs(LABELS - PROBS).mean())
    assert (m["female_precision"], m["female_recall"]) == (m["precision"], m["recall"])
    assert binary_metrics(LABELS, PROBS) == m  # the threshold is 0.5 unless given


def test_threshold_is_inclusive_and_auc_undefined_for_one_class():
    m = binary_metrics([1, 0], [0.5, 0.49], threshold=0.5)
    assert m["tp"] == 1 and m["tn"] == 1
    one_class = binary_metrics([1, 1], [0.2, 0.9])
    assert all(math.isnan(one_class[name]) for name in ("roc_auc", "pr_auc", "balanced_accuracy"))


def test_one_class_sets_give_every_count_and_zero_for_undefined_rates_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn warns where a rate is undefined unless told what to give
        females = binary_metrics([1, 1], [0.9, 0.8])
        males = binary_metrics([0, 0], [0.1, 0.2])
        missed = binary_metrics([1, 0], [0.1, 0.2])
    assert (females["tp"], females["fp"], females["fn"], females["tn"], females["female_recall"]) == (2, 0, 0, 0, 1.0)
    assert (females["male_precision"], females["male_recall"]) == (0.0, 0.0)
    assert (males["tn"], males["precision"], males["recall"], males["f1"], males["male_recall"]) == (2, 0, 0, 0, 1)
    assert (missed["precision"], missed["f1"], missed["male_precision"]) == (0.0, 0.0, 0.5)


def test_ece_perfectly_calibrated_and_overconfident():
    labels = np.array([1] * 7 + [0] * 3)
    assert expected_calibration_error(labels, np.full(10, 0.7)) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(labels, np.full(10, 0.95)) == pytest.approx(0.25)


def test_ece_bins_are_ten_unless_given():
    # 0.21 and 0.38 share a bin of width 0.2, not of width 0.1; 0.25 and 0.28 share one of width 0.1, not 1/11
    assert expected_calibration_error([1, 0], [0.21, 0.38], bins=5) == pytest.approx(abs(0.5 - 0.295))
    assert expected_calibration_error([1, 0], [0.21, 0.38]) == pytest.approx((0.79 + 0.38) / 2)
    assert expected_calibration_error([1, 0], [0.25, 0.28]) == pytest.approx(abs(0.5 - 0.265))
    assert [r["count"] for r in calibration_bins([1, 0], [0.25, 0.28])] == [2]


def test_bootstrap_resamples_every_image_at_the_given_threshold():
    # image 0 is the only female: a resample without it has no AUC, one with it ranks perfectly
    assert bootstrap_ci([1, 0, 0], [0.9, 0.2, 0.1], 0.5, names=("roc_auc",), resamples=20) == {"roc_auc": (1.0, 1.0)}
    # at threshold 1 nothing is called female, so F1 is 0 in every resample
    assert bootstrap_ci(LABELS, PROBS, 1.0, names=("f1",), resamples=20) == {"f1": (0.0, 0.0)}
    low, high = bootstrap_ci([1, 1], [0.9, 0.8], 0.5, names=("roc_auc",), resamples=5)["roc_auc"]
    assert math.isnan(low) and math.isnan(high)  # never defined: no interval


def test_bootstrap_level_sets_the_percentiles():
    rng = np.random.default_rng(2)
    labels, probs = rng.integers(0, 2, 60), rng.random(60)
    ci = {level: bootstrap_ci(labels, probs, 0.5, ("roc_auc",), 40, 1, level)["roc_auc"] for level in (0, 0.5)}
    median = ci[0][0]
    assert ci[0][1] == median  # a 0 % interval is the median
    assert ci[0.5][0] < median < ci[0.5][1]  # the quartiles lie either side of it


def test_float32_probabilities_are_compared_with_the_threshold_in_float64():
    # models give float32; float32(0.35) is just below the threshold grid's 0.35 (NumPy alone would compare in float32)
    labels, probs = np.array([1, 0]), np.array([0.35, 0.9], np.float32)
    assert binary_metrics(labels, probs, 0.35)["fn"] == 1
    assert sweep(labels, probs, [0.35])[0]["tpr"] == 0.0
    assert subgroup_metrics(labels, probs, 0.35, ["a", "a"], 1)[0]["accuracy"] == 0.0
    assert most_confident(labels, probs, 0.35, correct=False, n=2) == [1, 0]
    assert bootstrap_ci(labels, probs, 0.35, names=("recall",), resamples=10) == {"recall": (0.0, 0.0)}
    assert [r["count"] for r in calibration_bins([1, 0], np.array([0.7, 0.65], np.float32))] == [2]  # bin 0.6-0.7


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


def test_most_confident_ranks_each_prediction_by_the_probability_of_its_class():
    assert most_confident([1, 0], [0.95, 0.2], 0.5, correct=True, n=2) == [0, 1]  # 0.95 female before 0.8 male
    assert most_confident([1, 0], [0.95, 0.2], 0.5, correct=True) == [0]  # one unless asked for more
    assert most_confident([1, 0], [0.5, 0.2], 0.5, correct=True, label=1) == [0]  # the threshold is inclusive
    probs = np.where(np.arange(40) % 7 == 0, 0.1, 0.3)  # two confidences among 40 males
    expected = [i for i in range(40) if i % 7 == 0] + [i for i in range(40) if i % 7]  # ties in index order
    assert most_confident(np.zeros(40), probs, 0.5, correct=True, n=40) == expected


def test_subgroups_small_below_min_count_and_f1_zero_without_females_and_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = subgroup_metrics([0, 0, 1], [0.1, 0.2, 0.5], 0.5, ["m", "m", "f"], min_count=2)
    assert rows == [
        {"group": "f", "count": 1, "accuracy": 1.0, "f1": 1.0, "small": 1},  # 0.5 at threshold 0.5: female
        {"group": "m", "count": 2, "accuracy": 1.0, "f1": 0.0, "small": 0},
    ]


def test_audited_columns_missing_values_and_group_keys():
    meta = [{"age": "20", "site": "a"}, {"age": "30", "site": "b"}, {"site": "c"}]
    assert categorical_columns(meta, max_groups=3) == ["site"]  # age: numbers (one missing), not groups
    assert categorical_columns(meta, max_groups=2) == []
    audit = subgroup_audit([1, 0, 1], [0.9, 0.1, 0.8], 0.5, [{"site": "a"}, {"site": "a"}, {}], min_count=1)
    assert [r["group"] for r in audit["site"]] == ["a", "unknown"]
    assert [group_key(v) for v in ("  Age band ", "60+", "40-59", "???")] == ["age_band", "60+", "40-59", "_"]


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
    assert by_t[0.25]["balanced_accuracy"] == pytest.approx((1 + 3 / 5) / 2)
    assert (by_t[0.65]["tpr"], by_t[0.65]["tnr"]) == (pytest.approx(1 / 3), pytest.approx(4 / 5))
    assert by_t[0.65]["balanced_accuracy"] == pytest.approx((1 / 3 + 4 / 5) / 2)
    with pytest.raises(ValueError, match="unknown criterion 'accuracy'"):
        choose(rows, "accuracy")


def test_sweep_threshold_is_inclusive_and_rates_of_an_absent_class_are_zero():
    (at_prob,) = sweep([1, 0], [0.6, 0.3], [0.6])
    assert (at_prob["tpr"], at_prob["tnr"], at_prob["f1"]) == (1.0, 1.0, 1.0)
    (males,) = sweep([0, 0], [0.2, 0.8], [0.9])  # no female, none called female
    assert (males["tpr"], males["tnr"], males["f1"], males["balanced_accuracy"], males["youden"]) == (0, 1, 0, 0.5, 0)
    (females,) = sweep([1, 1], [0.2, 0.8], [0.5])
    assert (females["tpr"], females["tnr"], females["f1"]) == (0.5, 0.0, pytest.approx(2 / 3))


def test_choose_breaks_ties_towards_one_half_and_ignores_float_noise():
    rows = [{"threshold": t, "f1": 0.7} for t in (0.3, 0.45, 0.6, 0.7)]
    assert choose(rows, "f1")["threshold"] == 0.45
    noisy = [{"threshold": 0.3, "f1": 0.7 + 2e-13}, {"threshold": 0.45, "f1": 0.7}]
    assert choose(noisy, "f1")["threshold"] == 0.45


def test_calibration_bins_skip_empty_bins_and_count_every_image():
    rows = calibration_bins([1, 0, 1, 1, 0], [0.05, 0.15, 0.95, 1.0, 0.85], bins=10)
    assert [r["count"] for r in rows] == [1, 1, 1, 2]  # 1.0 joins the last bin
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


def test_fit_temperature_stays_in_its_search_range():
    assert fit_temperature([0, 1], [-1.0, 1.0]) == pytest.approx(math.exp(-4), rel=1e-3)  # separable: T -> 0
    assert fit_temperature([1, 0], [-1.0, 1.0]) == pytest.approx(math.exp(4), rel=1e-3)  # backwards: T -> infinity


def test_fit_temperature_without_both_classes_is_identity():
    assert fit_temperature([1, 1, 1], [0.3, 2.0, -1.0]) == 1.0
    assert fit_temperature([], []) == 1.0
