"""Stage threshold_sweep: choose the decision threshold on the validation split only (the test
split stays untouched for evaluate), for plain inference and for TTA."""

import numpy as np

from gclf.cli import run_stage
from gclf.data import load_split
from gclf.io import write_json
from gclf.model import load_model
from gclf.plots import threshold_png, write_table
from gclf.threshold import choose, sweep
from gclf.train import select_device
from gclf.tta import predict_probs


def main(p):
    device = select_device(p.device, p.threads)
    images, labels, _ = load_split("val", p.data.image_size)
    model, _ = load_model("models/train_phase2.pt")
    grid = np.linspace(p.threshold.min, p.threshold.max, p.threshold.steps)
    summary = {"criterion": p.threshold.metric}
    for prefix, views in (("", ("identity",)), ("tta_", p.tta.views)):
        rows = sweep(labels.numpy(), predict_probs(model.to(device), images, views=views, device=device), grid)
        best = choose(rows, p.threshold.metric)
        summary.update(
            {f"{prefix}threshold": best["threshold"], f"{prefix}val_{p.threshold.metric}": best[p.threshold.metric]}
        )
        if not prefix:
            write_table("plots/threshold.csv", rows)
            threshold_png("plots/threshold.png", rows, best["threshold"], p.threshold.metric)
    write_json("metrics/threshold.json", summary)


if __name__ == "__main__":
    run_stage(main)
