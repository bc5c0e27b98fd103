"""Choosing the decision threshold on a validation split, never on the reported test split."""

from __future__ import annotations

import numpy as np

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
