"""Stage quantize: the deployable FP32 checkpoint, an FP32 ONNX export (checked against PyTorch),
the reference project's dynamic INT8 of the Linear layers (a comparison row), and static INT8 of
the whole network (OpenVINO + NNCF, calibrated on a seeded sample of train images); each scored
on the test split. Every artifact carries its meta (architecture, image size, classes, the
thresholds chosen on validation, TTA views), so `gclf predict` needs nothing else."""

import numpy as np
import torch

from gclf.bench.models import FP32_ATOL, REFERENCE, check_agreement
from gclf.data.images import load_split
from gclf.export.artifact import ARTIFACTS, deployment_meta
from gclf.export.quantize import write_artifacts
from gclf.export.runtime import load_runner
from gclf.io import read_json, write_json
from gclf.metrics import binary_metrics
from gclf.outputs import verified
from gclf.stage import run_stage
from gclf.train.model import load_model
from gclf.tta import predict_probs

# One image per call: dynamic INT8 scales activations by the range of the whole batch, so its
# prediction for an image moves with the other images in the batch (measured: 17 % of test
# predictions flip between batch 1 and batch 300). Deployment sees single images.
EVAL_BATCH = 1


def main(p):
    size = p.data.image_size
    model, meta = load_model("models/train_phase2.pt")
    thresholds = read_json(verified("metrics/threshold.json"))
    temperature = thresholds["temperature"]
    meta = deployment_meta(meta, thresholds["threshold"], thresholds["tta_threshold"], p.tta.views, temperature)
    train_images = load_split("train", size)[0]
    picked = np.random.default_rng(p.seed).permutation(len(train_images))[: p.quantize.calibration_images]
    calibration = train_images[np.sort(picked)].float().div(255).contiguous().numpy()
    write_artifacts(model, meta, calibration)

    images, labels, _ = load_split("test", size)
    threshold = thresholds["threshold"]
    runners = {name: load_runner(path, p.threads) for name, path in ARTIFACTS.items()}
    fp32_pair = {k: runners[k] for k in (REFERENCE, "fp32_onnxruntime")}
    check_agreement(fp32_pair, images[:32].float().div(255).contiguous().numpy(), atol=FP32_ATOL)
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
    write_json("metrics/quantize.json", report)


if __name__ == "__main__":
    run_stage(main, stage="quantize")
