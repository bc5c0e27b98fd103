"""Stage evaluate: score the phase-2 model on the test split at the thresholds chosen on
validation, with and without TTA, with bootstrap confidence intervals; audit subgroups, draw
Grad-CAM maps and the most confident mistakes, and write the model card."""

import os

import torch

from gclf.data.images import load_split
from gclf.data.manifest import CLASSES
from gclf.device import select_device
from gclf.evaluate.gradcam import cam_cases, grad_cam
from gclf.evaluate.modelcard import render_model_card
from gclf.evaluate.peers import score_peer
from gclf.evaluate.plots import image_grid_png, subgroup_rows, subgroups_png
from gclf.evaluate.scoring import BASELINE_METRICS, score
from gclf.faces.targets import teacher_test_probs
from gclf.io import read_json, write_json, write_text
from gclf.live import log_evaluation, log_rows, open_live
from gclf.metrics import expected_calibration_error, most_confident
from gclf.outputs import verified
from gclf.stage import run_stage
from gclf.train.model import load_model
from gclf.tta import inference_views, probs_from_logits, view_logits

# The scores `dvc exp show` lists first: metrics/eval.json is the first metrics file in dvc.yaml.
HEADLINE = ("test_accuracy", "test_roc_auc", "test_f1", "test_ece")


def main(p):
    device = select_device(p.device, p.threads)
    images, labels, records = load_split("test", p.data.image_size)
    labels = labels.numpy()
    model, meta = load_model("models/train_phase2.pt")
    model = model.to(device)
    thresholds = read_json(verified("metrics/threshold.json"))
    temperature = thresholds["temperature"]  # fitted on validation
    logits = {
        prefix: view_logits(model, images, views=v, device=device) for prefix, v in inference_views(p.tta.views).items()
    }
    probs_by = {prefix: probs_from_logits(rows, temperature) for prefix, rows in logits.items()}
    image_meta = [r.meta for r in records]
    scoring = dict(bootstrap=p.evaluate.bootstrap, seed=p.seed, min_group_size=p.evaluate.min_group_size)
    report, audit = {}, {}
    for prefix, probs in probs_by.items():  # the subgroup audit of plain inference only
        scores = score(
            labels,
            probs,
            thresholds[f"{prefix}threshold"],
            image_meta if not prefix else [{}] * len(image_meta),
            **scoring,
        )
        report.update(scores.flat(f"{prefix}test_", prefix))
        report[f"{prefix}test_ece_uncalibrated"] = expected_calibration_error(labels, probs_from_logits(logits[prefix]))
        audit = audit or scores.audit

    # Curves, subgroups, galleries and Grad-CAM describe plain inference, the results the card reports first.
    probs, threshold = probs_by[""], thresholds["threshold"]
    live = open_live("evaluate")
    log_evaluation(live, labels, probs, threshold, CLASSES)
    overall = {"count": len(labels), "accuracy": report["test_accuracy"], "f1": report["test_f1"]}
    rows = subgroup_rows(audit, overall)
    title = f"test split by metadata group, threshold {threshold:.2f}"
    log_rows(live, "subgroups", rows, "accuracy", "label", "bar_horizontal", title)
    subgroups_png("plots/subgroups.png", rows, title)

    def caption(i: int, first_line: str) -> str:
        name = os.path.basename(records[i].path)  # cut so that neighbouring captions do not overlap
        return f"{first_line}: P(female) {probs[i]:.2f}\n{name if len(name) <= 26 else name[:25] + '…'}"

    errors = most_confident(labels, probs, threshold, correct=False, n=p.evaluate.gallery_size)
    image_grid_png(
        "plots/errors.png",
        images[errors].numpy(),
        [caption(i, f"true {CLASSES[int(labels[i])]}") for i in errors],
        f"most confident mistakes on the test split (threshold {threshold:.2f})",
    )
    cases = cam_cases(labels, probs, threshold, p.evaluate.gradcam_per_case)
    chosen = [i for i, _ in cases]
    cams, _ = grad_cam(model, images[chosen].float() / 255, classes=torch.from_numpy(probs[chosen] >= threshold))
    image_grid_png(
        "plots/gradcam.png",
        images[chosen].numpy(),
        [caption(i, case) for i, case in cases],
        "Grad-CAM on the test split: where the evidence for the predicted class lies",
        heatmaps=cams.numpy(),
    )

    baselines = {}  # the teacher and the peers on the same test images, each at its own threshold
    if p.distill.enabled:
        teacher_probs, teacher_threshold = teacher_test_probs()
        scores = score(labels, teacher_probs, teacher_threshold, image_meta, **scoring)
        report.update(scores.flat("teacher_test_", "teacher_", BASELINE_METRICS))
        report.update(teacher_test_scored=scores.scored, teacher_threshold=teacher_threshold)
        baselines["teacher"] = scores.audit
    if p.evaluate.peers:
        peer = score_peer([r.path for r in records], labels, image_meta, **scoring)
        if peer is not None:
            report.update(peer[0])
            baselines["age_gender"] = peer[1]

    write_json("metrics/eval.json", report, first=HEADLINE)
    card = render_model_card(
        p,
        meta,
        read_json("metrics/data.json"),
        read_json("metrics/train_phase1.json"),
        read_json("metrics/train_phase2.json"),
        thresholds,
        report,
        audit,
        baselines,
    )
    write_text("reports/model_card.md", card)


if __name__ == "__main__":
    run_stage(main, stage="evaluate")
