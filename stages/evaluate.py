"""Stage evaluate: score the phase-2 model on the test split at the thresholds chosen on
validation, with and without TTA, with bootstrap confidence intervals."""

from gclf.cli import run_stage
from gclf.data import load_split
from gclf.io import read_json, write_json
from gclf.metrics import binary_metrics, bootstrap_ci, calibration_bins
from gclf.model import CLASSES, load_model
from gclf.plots import evaluation_png, pr_rows, roc_rows, write_table
from gclf.train import select_device
from gclf.tta import predict_probs


def main(p):
    device = select_device(p.device, p.threads)
    images, labels, _ = load_split("test", p.data.image_size)
    labels = labels.numpy()
    model, _ = load_model("models/train_phase2.pt")
    thresholds = read_json("metrics/threshold.json")
    report = {}
    for prefix, views in (("", ("identity",)), ("tta_", p.tta.views)):
        probs = predict_probs(model.to(device), images, views=views, device=device)
        threshold = thresholds[f"{prefix}threshold"]
        report.update({f"{prefix}test_{k}": v for k, v in binary_metrics(labels, probs, threshold).items()})
        for name, (lo, hi) in bootstrap_ci(
            labels, probs, threshold, resamples=p.evaluate.bootstrap, seed=p.seed
        ).items():
            report.update({f"{prefix}test_{name}_ci_low": lo, f"{prefix}test_{name}_ci_high": hi})
        if not prefix:
            write_table("plots/roc.csv", roc_rows(labels, probs))
            write_table("plots/pr.csv", pr_rows(labels, probs))
            write_table("plots/reliability.csv", calibration_bins(labels, probs))
            write_table(
                "plots/confusion.csv",
                [{"actual": CLASSES[int(y)], "predicted": CLASSES[int(q >= threshold)]} for y, q in zip(labels, probs)],
            )
            evaluation_png("plots/evaluation.png", labels, probs, threshold, "test split, no TTA")
    write_json("metrics/eval.json", report)


if __name__ == "__main__":
    run_stage(main)
