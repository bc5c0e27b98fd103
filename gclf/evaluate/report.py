"""The evaluate stage's work on the test split: the scores at the thresholds chosen on validation
(plain inference and TTA), the figures, and the baselines scored on the same images.

The figures describe plain inference, the results the model card reports first: DVCLive's curves
and the subgroup table, the most confident mistakes and Grad-CAM maps of right and wrong answers.
The baselines are the distillation teacher and the peers a user would install instead, each at its
own threshold.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from gclf.data.manifest import CLASSES
from gclf.evaluate.gradcam import cam_cases, grad_cam
from gclf.evaluate.peers import score_peer
from gclf.evaluate.plots import image_grid_png, subgroup_rows, subgroups_png
from gclf.evaluate.scoring import BASELINE_METRICS, score
from gclf.faces.targets import teacher_test_probs
from gclf.live import StageLive, log_evaluation, log_rows
from gclf.metrics import expected_calibration_error, most_confident
from gclf.tta import inference_views, probs_from_logits, view_logits

MAX_NAME = 26  # characters of a file name under an image: longer ones would run into their neighbours'


def score_test_split(
    model: nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    meta: Sequence[Mapping[str, str]],
    thresholds: Mapping[str, float],
    views: Sequence[str],
    device: torch.device,
    **scoring,
) -> tuple[dict[str, float], dict, np.ndarray]:
    """(the ``test_*`` and ``tta_test_*`` metrics, the subgroup audit over ``meta``, the probabilities
    of plain inference). Both are calibrated by the temperature of ``thresholds`` (fitted on
    validation) and scored at their own threshold; the audit is of plain inference only.
    ``scoring``: :func:`gclf.evaluate.scoring.score`'s ``bootstrap``, ``seed``, ``min_group_size``."""
    logits = {
        prefix: view_logits(model, images, views=v, device=device) for prefix, v in inference_views(views).items()
    }
    probs_by = {prefix: probs_from_logits(rows, thresholds["temperature"]) for prefix, rows in logits.items()}
    report, audit = {}, {}
    for prefix, probs in probs_by.items():
        scores = score(
            labels, probs, thresholds[f"{prefix}threshold"], meta if not prefix else [{}] * len(meta), **scoring
        )
        report.update(scores.flat(f"{prefix}test_", prefix))
        report[f"{prefix}test_ece_uncalibrated"] = expected_calibration_error(labels, probs_from_logits(logits[prefix]))
        audit = audit or scores.audit
    return report, audit, probs_by[""]


def log_curves_and_subgroups(
    live: StageLive,
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    report: Mapping[str, float],
    audit: dict,
    png: str,
) -> None:
    """ROC, precision-recall, calibration and confusion to ``live``, and the accuracy by subgroup
    beside the whole split's both to ``live`` and as the figure ``png``."""
    log_evaluation(live, labels, probs, threshold, CLASSES)
    overall = {"count": len(labels), "accuracy": report["test_accuracy"], "f1": report["test_f1"]}
    rows = subgroup_rows(audit, overall)
    title = f"test split by metadata group, threshold {threshold:.2f}"
    log_rows(live, "subgroups", rows, "accuracy", "label", "bar_horizontal", title)
    subgroups_png(png, rows, title)


def draw_galleries(
    model: nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    paths: Sequence[str],
    errors_png: str,
    gradcam_png: str,
    *,
    gallery_size: int,
    per_case: int,
) -> None:
    """``errors_png``: the ``gallery_size`` most confident mistakes; ``gradcam_png``: Grad-CAM maps of
    ``per_case`` images per class and right or wrong; each image captioned with its probability and
    the name of its file (of ``paths``)."""

    def caption(i: int, first_line: str) -> str:
        name = os.path.basename(paths[i])
        return (
            f"{first_line}: P(female) {probs[i]:.2f}\n{name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + '…'}"
        )

    errors = most_confident(labels, probs, threshold, correct=False, n=gallery_size)
    image_grid_png(
        errors_png,
        images[errors].numpy(),
        [caption(i, f"true {CLASSES[int(labels[i])]}") for i in errors],
        f"most confident mistakes on the test split (threshold {threshold:.2f})",
    )
    cases = cam_cases(labels, probs, threshold, per_case)
    chosen = [i for i, _ in cases]
    cams, _ = grad_cam(model, images[chosen].float() / 255, classes=torch.from_numpy(probs[chosen] >= threshold))
    image_grid_png(
        gradcam_png,
        images[chosen].numpy(),
        [caption(i, case) for i, case in cases],
        "Grad-CAM on the test split: where the evidence for the predicted class lies",
        heatmaps=cams.numpy(),
    )


def score_baselines(
    paths: Sequence[str],
    labels: np.ndarray,
    meta: Sequence[Mapping[str, str]],
    *,
    teacher: bool,
    peers: bool,
    **scoring,
) -> tuple[dict[str, float], dict[str, dict]]:
    """(their metrics, {baseline: its subgroup audit}) for the teacher, from its targets on the test
    split (``teacher``: distillation ran), and for the peers that are installed (``peers``), scored
    on the same images as :func:`score_test_split`."""
    report, audits = {}, {}
    if teacher:
        teacher_probs, teacher_threshold = teacher_test_probs()
        scores = score(labels, teacher_probs, teacher_threshold, meta, **scoring)
        report.update(scores.flat("teacher_test_", "teacher_", BASELINE_METRICS))
        report.update(teacher_test_scored=scores.scored, teacher_threshold=teacher_threshold)
        audits["teacher"] = scores.audit
    if peers:
        peer = score_peer(paths, labels, meta, **scoring)
        if peer is not None:
            report.update(peer[0])
            audits["age_gender"] = peer[1]
    return report, audits
