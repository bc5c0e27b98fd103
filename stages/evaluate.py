"""Stage evaluate: score the phase-2 model on the test split at the thresholds chosen on
validation, with and without TTA, with bootstrap confidence intervals; audit subgroups, draw
Grad-CAM maps and the most confident mistakes, and write the model card."""

from gclf.data.images import load_split
from gclf.device import select_device
from gclf.evaluate.modelcard import render_model_card
from gclf.evaluate.report import draw_galleries, log_curves_and_subgroups, score_baselines, score_test_split
from gclf.io import read_json, write_json, write_text
from gclf.live import open_live
from gclf.outputs import verified
from gclf.stage import run_stage
from gclf.train.model import load_model

# The scores `dvc exp show` lists first: metrics/eval.json is the first metrics file in dvc.yaml.
HEADLINE = ("test_accuracy", "test_roc_auc", "test_f1", "test_ece")


def main(p):
    device = select_device(p.device, p.threads)
    images, labels, records = load_split("test", p.data.image_size)
    labels, paths, image_meta = labels.numpy(), [r.path for r in records], [r.meta for r in records]
    model, meta = load_model("models/train_phase2.pt")
    model = model.to(device)
    thresholds = read_json(verified("metrics/threshold.json"))
    e = p.evaluate
    scoring = dict(bootstrap=e.bootstrap, seed=p.seed, min_group_size=e.min_group_size)
    report, audit, probs = score_test_split(
        model, images, labels, image_meta, thresholds, p.tta.views, device, **scoring
    )

    # The figures describe plain inference, the results the model card reports first.
    threshold = thresholds["threshold"]
    log_curves_and_subgroups(open_live("evaluate"), labels, probs, threshold, report, audit, "plots/subgroups.png")
    shown = dict(gallery_size=e.gallery_size, per_case=e.gradcam_per_case)
    draw_galleries(model, images, labels, probs, threshold, paths, "plots/errors.png", "plots/gradcam.png", **shown)
    scores, baselines = score_baselines(paths, labels, image_meta, teacher=p.distill.enabled, peers=e.peers, **scoring)
    report.update(scores)

    write_json("metrics/eval.json", report, first=HEADLINE)
    data, phase1, phase2 = (read_json(f"metrics/{name}.json") for name in ("data", "train_phase1", "train_phase2"))
    card = render_model_card(p, meta, data, phase1, phase2, thresholds, report, audit, baselines)
    write_text("reports/model_card.md", card)


if __name__ == "__main__":
    run_stage(main, stage="evaluate")
