"""The quantize stage's metrics: every artifact scored on the test split at the threshold and
temperature chosen on validation, and how often its decisions match FP32 eager's."""

from __future__ import annotations

import numpy as np
import torch

from gclf.export.agreement import FP32_ATOL, REFERENCE, check_agreement
from gclf.export.artifact import input_pixels
from gclf.export.runtime import Runner
from gclf.metrics import binary_metrics
from gclf.tta import predict_probs

AGREEMENT_IMAGES = 32  # test images whose FP32 logits are compared before scoring
# One image per call: dynamic INT8 scales activations by the range of the whole batch, so its
# prediction for an image moves with the other images in the batch (measured: 17 % of test
# predictions flip between batch 1 and batch 300). Deployment sees single images.
EVAL_BATCH = 1


def score_artifacts(
    runners: dict[str, Runner], images: torch.Tensor, labels: torch.Tensor, threshold: float, temperature: float
) -> dict[str, float]:
    """``{name}_test_{accuracy,f1,roc_auc}`` of each runner on uint8 ``images`` at ``threshold`` and
    ``temperature``, and ``{name}_agreement``: the fraction of its decisions that match the first
    runner's (:data:`~gclf.export.agreement.REFERENCE`). First the FP32 ONNX export must match the
    reference's logits within :data:`~gclf.export.agreement.FP32_ATOL`, else
    :class:`~gclf.export.agreement.AgreementError`."""
    fp32_pair = {name: runners[name] for name in (REFERENCE, "fp32_onnxruntime")}
    check_agreement(fp32_pair, input_pixels(images[:AGREEMENT_IMAGES]), atol=FP32_ATOL)
    report, reference_preds = {}, None
    for name, runner in runners.items():
        probs = predict_probs(
            lambda x: torch.from_numpy(runner(x.contiguous().numpy())),
            images,
            batch_size=EVAL_BATCH,
            temperature=temperature,
        )
        preds = probs >= threshold
        reference_preds = preds if reference_preds is None else reference_preds
        m = binary_metrics(labels.numpy(), probs, threshold)
        report.update({f"{name}_test_{k}": m[k] for k in ("accuracy", "f1", "roc_auc")})
        report[f"{name}_agreement"] = float(np.mean(preds == reference_preds))
    return report
