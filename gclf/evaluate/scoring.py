"""One scoring recipe for every set of predictions: the evaluate stage's test split, ``gclf evaluate
--data`` on outside data, the distillation teacher and the peers a user would install instead.

:func:`score` gives :func:`gclf.metrics.binary_metrics` at the chosen threshold, percentile
bootstrap intervals for accuracy, F1 and ROC-AUC, the subgroup audit (age band, race, ...) with a
Wilson 95 % interval for each group's accuracy, and the same accuracies at threshold 0.5 side by
side (a threshold chosen on a validation split full of children trades adults for them; the pair
shows by how much). :meth:`Scores.flat` names the numbers for a metrics file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from gclf.metrics import audit_scalars, binary_metrics, bootstrap_ci, group_key, subgroup_audit

Z95 = 1.959964  # two-sided 95 % normal quantile
HALF = 0.5  # the threshold reported beside the chosen one: what a model's raw probabilities say
BASELINE_METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc")  # kept for the teacher and the peers


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (NaN, NaN for n = 0): unlike the
    normal approximation it stays inside [0, 1] and is honest for small groups and rates near 1."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Scores:
    """``overall``: binary metrics + ``<name>_ci_low/high``; ``groups``: flat subgroup scalars with
    accuracy intervals; ``at_half``: ``accuracy`` and ``group_..._accuracy`` at threshold 0.5; ``audit``:
    the subgroup rows ({column: rows}) for plots and the model card; ``scored``: the images scored."""

    overall: dict[str, float]
    groups: dict[str, float]
    at_half: dict[str, float]
    audit: dict
    scored: int

    def flat(self, prefix: str = "test_", group_prefix: str = "", keep: Sequence[str] | None = None) -> dict:
        """The scores as metrics-file keys: ``<prefix><metric>``, ``<group_prefix>group_...``, and the
        accuracies at 0.5 as ``<prefix>accuracy_at_0_5`` and ``<group_prefix>group_..._accuracy_at_0_5``;
        ``keep`` limits the overall metrics (their intervals follow them)."""
        overall = self.overall
        if keep is not None:
            overall = {k: v for k, v in overall.items() if k in keep or k.rsplit("_ci_", 1)[0] in keep}
        return {
            **{f"{prefix}{k}": v for k, v in overall.items()},
            **{f"{group_prefix}{k}": v for k, v in self.groups.items()},
            **{
                (f"{prefix}{k}" if k == "accuracy" else f"{group_prefix}{k}") + "_at_0_5": v
                for k, v in self.at_half.items()
            },
        }


def group_intervals(audit: Mapping[str, Sequence[Mapping]], prefix: str = "group_") -> dict[str, float]:
    """``<prefix><column>_<group>_accuracy_ci_{low,high}``: each group's Wilson interval."""
    out: dict[str, float] = {}
    for column, rows in audit.items():
        for row in rows:
            low, high = wilson(round(row["accuracy"] * row["count"]), row["count"])
            key = f"{prefix}{group_key(column)}_{group_key(row['group'])}_accuracy"
            out.update({f"{key}_ci_low": low, f"{key}_ci_high": high})
    return out


def score(
    labels,
    probs,
    threshold: float,
    meta: Sequence[Mapping[str, str]],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    min_group_size: int = 30,
) -> Scores:
    """Score probabilities ``probs`` of the positive class against ``labels`` at ``threshold``, with
    ``bootstrap`` resamples for the intervals (0 = none) and the subgroup audit over ``meta``. A NaN
    probability (a face a teacher or a peer could not score) leaves its image out."""
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs)
    finite = np.isfinite(probs)
    if not finite.all():
        labels, probs, meta = labels[finite], probs[finite], [m for m, keep in zip(meta, finite) if keep]
    overall = binary_metrics(labels, probs, threshold)
    if bootstrap:
        for name, (low, high) in bootstrap_ci(labels, probs, threshold, resamples=bootstrap, seed=seed).items():
            overall.update({f"{name}_ci_low": low, f"{name}_ci_high": high})
    audit = subgroup_audit(labels, probs, threshold, meta, min_group_size)
    groups = {**audit_scalars(audit), **group_intervals(audit)}
    half_audit = subgroup_audit(labels, probs, HALF, meta, min_group_size)
    at_half = {"accuracy": binary_metrics(labels, probs, HALF)["accuracy"]}
    at_half.update({k: v for k, v in audit_scalars(half_audit).items() if k.endswith("_accuracy")})
    return Scores(overall, groups, at_half, audit, len(labels))
