"""Binary classification metrics: pure functions of labels, probabilities and a threshold.

scikit-learn computes each metric where it has one; what it lacks (expected calibration error,
bootstrap intervals, subgroup audit) is written here. Class 1 (female) is the positive class.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

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


# --- which images to show -----------------------------------------------------------------------


def most_confident(
    labels, probs, threshold: float, *, correct: bool, label: int | None = None, n: int = 1
) -> list[int]:
    """Indices of up to ``n`` images predicted right (``correct``) or wrong, of true class ``label``
    (None: either), most confident first; ties keep index order.

    Confidence is the probability the model gives the class it predicted at ``threshold``.
    """
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, float)
    preds = (probs >= threshold).astype(int)
    confidence = np.where(preds == 1, probs, 1 - probs)
    chosen = (preds == labels) == correct
    if label is not None:
        chosen &= labels == label
    candidates = np.flatnonzero(chosen)
    order = np.argsort(-confidence[candidates], kind="stable")
    return [int(i) for i in candidates[order][:n]]


# --- subgroup audit -----------------------------------------------------------------------------

MAX_GROUPS = 20  # a metadata column with more distinct values is an identifier, not a group


def categorical_columns(meta: Sequence[Mapping[str, str]], max_groups: int = MAX_GROUPS) -> list[str]:
    """The metadata columns to audit, sorted: at most ``max_groups`` distinct values and not all
    numbers (raw ``age`` is skipped; its ``age_band`` is the group)."""

    def is_number(value: str) -> bool:
        try:
            float(value)
        except ValueError:
            return False
        return True

    columns = sorted({key for row in meta for key in row})
    values = {c: {row.get(c, "") for row in meta} for c in columns}
    return [c for c in columns if len(values[c]) <= max_groups and not all(is_number(v) for v in values[c] if v)]


def subgroup_metrics(labels, probs, threshold: float, groups: Sequence[str], min_count: int) -> list[dict]:
    """Per group (sorted by name): ``count``, ``accuracy``, ``f1`` (female) at ``threshold`` and
    ``small`` (1 when fewer than ``min_count`` images, too few to trust the numbers, else 0)."""
    labels, probs, groups = np.asarray(labels).astype(int), np.asarray(probs, float), np.asarray(groups, dtype=str)
    preds = (probs >= threshold).astype(int)
    rows = []
    for group in sorted(set(groups.tolist())):
        member = groups == group
        rows.append(
            {
                "group": group,
                "count": int(member.sum()),
                "accuracy": float(skm.accuracy_score(labels[member], preds[member])),
                "f1": float(skm.f1_score(labels[member], preds[member], zero_division=0)),
                "small": int(member.sum() < min_count),
            }
        )
    return rows


def accuracy_gap(rows: Sequence[Mapping]) -> float | None:
    """Highest minus lowest accuracy among the groups that are not small; None with fewer than two."""
    accuracies = [r["accuracy"] for r in rows if not r["small"]]
    return float(max(accuracies) - min(accuracies)) if len(accuracies) >= 2 else None


def subgroup_audit(labels, probs, threshold: float, meta: Sequence[Mapping[str, str]], min_count: int) -> dict:
    """:func:`subgroup_metrics` for every :func:`categorical_columns` column of the images' metadata
    (a missing value is the group ``unknown``), as {column: rows}."""
    return {
        column: subgroup_metrics(
            labels, probs, threshold, [row.get(column, "") or "unknown" for row in meta], min_count
        )
        for column in categorical_columns(meta)
    }


def group_key(value: str) -> str:
    """A group name as part of a metrics key: lower case, runs of other characters than letters,
    digits, ``+`` and ``-`` become ``_`` (``40-59``, ``60+`` stay readable)."""
    return re.sub(r"[^a-z0-9+-]+", "_", value.lower()).strip("_") or "_"


def audit_scalars(audit: Mapping[str, Sequence[Mapping]]) -> dict[str, float]:
    """Flat metrics for a JSON file: ``group_<column>_<group>_{count,accuracy,f1,small}`` and
    ``group_<column>_accuracy_gap`` (left out when fewer than two groups are large enough)."""
    scalars: dict[str, float] = {}
    for column, rows in audit.items():
        for row in rows:
            prefix = f"group_{group_key(column)}_{group_key(row['group'])}"
            scalars.update({f"{prefix}_{k}": row[k] for k in ("count", "accuracy", "f1", "small")})
        gap = accuracy_gap(rows)
        if gap is not None:
            scalars[f"group_{group_key(column)}_accuracy_gap"] = gap
    return scalars
