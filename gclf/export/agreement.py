"""Whether the deployable artifacts' logits agree with FP32 eager PyTorch's, the reference they were
made from, on the same pixels: the quantize and benchmark stages' guard against a broken export."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr

from gclf.export.runtime import Runner

REFERENCE = "fp32_eager"
FP32_ATOL = 1e-3  # FP32 runtimes against FP32 eager: float reordering only


class AgreementError(Exception):
    """A runner whose logits stray from the reference by more than the tolerance."""


def check_agreement(
    runners: dict[str, Runner],
    pixels: np.ndarray,
    *,
    atol: float = math.inf,
    min_correlation: float = -1.0,
    reference: str = REFERENCE,
) -> dict[str, float]:
    """Max absolute logit difference, rank correlation and sign agreement of each runner vs ``reference``.

    Returns ``{name}_max_abs_diff``, ``{name}_rank_correlation`` (Spearman, over ``pixels``) and
    ``{name}_sign_agreement`` (fraction of images whose predicted class matches the reference) for
    every other runner. Raises :class:`AgreementError` naming every runner over ``atol`` or under
    ``min_correlation``, after all have been compared. FP32 runtimes are held to a tight ``atol``;
    INT8 moves logits by design (clipped activation ranges squash outlying logits most), so it is
    held to the ranking of the images, which is what ROC-AUC and a threshold use and what a broken
    graph loses.
    """
    if reference not in runners:
        raise ValueError(f"agreement needs a runner named {reference!r}; got {', '.join(runners)}")
    expected = runners[reference](pixels)
    metrics: dict[str, float] = {}
    too_far: list[str] = []
    for name, runner in runners.items():
        if name == reference:
            continue
        logits = runner(pixels)
        diff = float(np.max(np.abs(logits - expected)))
        correlation = float(spearmanr(logits, expected).statistic) if len(pixels) > 1 else 1.0
        metrics[f"{name}_max_abs_diff"] = diff
        metrics[f"{name}_rank_correlation"] = correlation
        metrics[f"{name}_sign_agreement"] = float(np.mean((logits > 0) == (expected > 0)))
        # written so that NaN logits fail too
        if not (diff <= atol and correlation >= min_correlation):
            too_far.append(f"{name} (max |logit diff| {diff:.4g}, correlation {correlation:.4f})")
    if too_far:
        raise AgreementError(
            f"logits differ from {reference} beyond atol={atol} / min correlation={min_correlation}: "
            + ", ".join(too_far)
        )
    return metrics
