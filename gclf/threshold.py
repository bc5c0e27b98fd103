"""Calibrating probabilities and choosing the decision threshold on a validation split, never on
the reported test split."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

CRITERIA = ("f1", "balanced_accuracy", "youden")


def sweep(labels, probs, thresholds) -> list[dict[str, float]]:
    """F1, balanced accuracy and Youden's J (TPR + TNR - 1) at each threshold."""
    labels = np.asarray(labels).astype(bool)
    probs = np.asarray(probs, float)
    positives, negatives = labels.sum(), (~labels).sum()
    rows = []
    for t in thresholds:
        pred = probs >= t
        tp = float((pred & labels).sum())
        fp = float((pred & ~labels).sum())
        fn = float(positives - tp)
        tpr = tp / positives if positives else 0.0
        tnr = (negatives - fp) / negatives if negatives else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        rows.append(
            {
                "threshold": float(t),
                "f1": f1,
                "balanced_accuracy": (tpr + tnr) / 2,
                "youden": tpr + tnr - 1,
                "tpr": tpr,
                "tnr": tnr,
            }
        )
    return rows


def choose(rows: list[dict[str, float]], criterion: str) -> dict[str, float]:
    """The row that maximises ``criterion``; ties go to the threshold closest to 0.5."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}")
    return max(rows, key=lambda r: (round(r[criterion], 12), -abs(r["threshold"] - 0.5)))


def fit_temperature(labels, logits) -> float:
    """Temperature scaling (Guo et al., 2017): the T > 0 for which sigmoid(logit / T) has the lowest
    log loss on ``labels``. One parameter, monotone in the logit: it changes no ranking (ROC-AUC)
    and no decision at a correspondingly moved threshold, only how far the probabilities can be
    trusted (calibration). Searched over log T in [-4, 4] (T from 0.018 to 55)."""
    y = np.asarray(labels, np.float64)
    z = np.asarray(logits, np.float64)
    if len(y) == 0 or y.min() == y.max():
        return 1.0  # nothing to calibrate against

    def log_loss(log_t: float) -> float:
        scaled = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, scaled) - y * scaled))  # -log sigmoid, stably

    return float(np.exp(minimize_scalar(log_loss, bounds=(-4.0, 4.0), method="bounded").x))
