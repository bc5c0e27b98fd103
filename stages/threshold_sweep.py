"""Stage threshold_sweep: on the validation split only (the test split stays untouched for
evaluate), fit the temperature that calibrates the probabilities, then choose the decision
threshold on the calibrated probabilities, for plain inference and for TTA."""

import numpy as np

from gclf.data.images import load_split
from gclf.device import select_device
from gclf.io import write_json
from gclf.live import log_rows, open_live
from gclf.stage import run_stage
from gclf.threshold import choose, fit_temperature, sweep
from gclf.train.model import load_model
from gclf.tta import inference_views, probs_from_logits, view_logits


def main(p):
    device = select_device(p.device, p.threads)
    images, labels, _ = load_split("val", p.data.image_size)
    model, _ = load_model("models/train_phase2.pt")
    model = model.to(device)
    logits = {
        prefix: view_logits(model, images, views=v, device=device) for prefix, v in inference_views(p.tta.views).items()
    }
    temperature = fit_temperature(labels.numpy(), logits[""][0])
    grid = np.linspace(p.threshold.min, p.threshold.max, p.threshold.steps)
    summary = {"criterion": p.threshold.metric, "temperature": temperature}
    for prefix, view_rows in logits.items():
        rows = sweep(labels.numpy(), probs_from_logits(view_rows, temperature), grid)
        best = choose(rows, p.threshold.metric)
        summary.update(
            {f"{prefix}threshold": best["threshold"], f"{prefix}val_{p.threshold.metric}": best[p.threshold.metric]}
        )
        if not prefix:
            title = f"threshold sweep on validation (chosen {best['threshold']:.2f} by {p.threshold.metric})"
            log_rows(open_live("threshold_sweep"), "threshold", rows, "threshold", p.threshold.metric, "linear", title)
    write_json("metrics/threshold.json", summary)


if __name__ == "__main__":
    run_stage(main, stage="threshold_sweep")
