"""Binary classification metrics: pure functions of labels, probabilities and a threshold.

scikit-learn computes each metric where it has one; what it lacks (expected calibration error,
bootstrap intervals) is written here. Class 1 (female) is the positive class.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn import metrics as skm


def _safe_auc(score: Callable, labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC/PR AUC, or NaN when only one class is present (the AUC is undefined then)."""
    return float(score(labels, probs)) if len(np.unique(labels)) == 2 else float("nan")


def calibration_bins(labels, probs, bins: int = 10) -> list[dict]:
    """Per non-empty equal-width bin of the positive-class probability: mean predicted
    probability (``confidence``), observed positive rate (``observed``) and ``count``."""
    labels, probs = np.asarray(labels, float), np.asarray(probs, float)
    idx = np.minimum((probs * bins).astype(int), bins - 1)
    return [
        {
            "confidence": float(probs[idx == b].mean()),
            "observed": float(labels[idx == b].mean()),
            "count": int((idx == b).sum()),
        }
        for b in range(bins)
        if (idx == b).any()
    ]


def expected_calibration_error(labels, probs, bins: int = 10) -> float:
    """Mean |observed - confidence| over the :func:`calibration_bins`, weighted by bin size."""
    rows = calibration_bins(labels, probs, bins)
    total = sum(r["count"] for r in rows)
    return float(sum(r["count"] / total * abs(r["observed"] - r["confidence"]) for r in rows))


def binary_metrics(labels, probs, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy, precision, recall, F1, ROC-AUC, PR-AUC, ECE, confusion counts
    and per-class precision/recall at ``threshold`` (predicted positive when prob >= threshold)."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, float)
    preds = (probs >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(labels, preds, labels=[0, 1]).ravel()
    precision, recall, _, _ = skm.precision_recall_fscore_support(labels, preds, labels=[0, 1], zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(labels, preds)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, preds))
        if len(set(labels)) == 2
        else float("nan"),
        "precision": float(precision[1]),
        "recall": float(recall[1]),
        "f1": float(skm.f1_score(labels, preds, zero_division=0)),
        "roc_auc": _safe_auc(skm.roc_auc_score, labels, probs),
        "pr_auc": _safe_auc(skm.average_precision_score, labels, probs),
        "ece": expected_calibration_error(labels, probs),
        "male_precision": float(precision[0]),
        "male_recall": float(recall[0]),
        "female_precision": float(precision[1]),
        "female_recall": float(recall[1]),
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
    }


def bootstrap_ci(
    labels,
    probs,
    threshold: float,
    names=("accuracy", "f1", "roc_auc"),
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals for the named metrics of :func:`binary_metrics`."""
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, float)
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in names}
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        m = binary_metrics(labels[idx], probs[idx], threshold)
        for name in names:
            if not np.isnan(m[name]):
                draws[name].append(m[name])
    tail = (1 - level) / 2 * 100
    return {
        name: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) if v else (float("nan"),) * 2
        for name, v in draws.items()
    }
