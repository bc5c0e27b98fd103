"""DVCLive logging: the training stages' per-epoch curves and the evaluation's plots.

Each stage logs into its own DVCLive folder, ``plots/<stage>/``, one of its outs in dvc.yaml. The
top-level ``plots:`` of dvc.yaml says how to draw them, so DVCLive writes no dvc.yaml of its own
(``dvcyaml=None``) and saves no experiment (the stages run under ``dvc repro`` or ``dvc exp run``,
which do). Values are rounded so that equal runs write equal bytes; the one timing, images/s per
epoch, goes under ``speed/`` (a file of its own) and stays out of the summary, ``metrics.json``.
"""

from __future__ import annotations

import numpy as np
from dvclive import Live
from sklearn.metrics import roc_curve

DIGITS = 6  # far below any difference that matters, far above float noise
SPEED = "speed/images_per_s"


class StageLive(Live):
    """DVCLive's logger without its DVC repo. DVCLive opens the repo to save experiments and to post
    live updates to DVC Studio; the stages do neither (``dvc repro`` and ``dvc exp
    run`` track the folder and save the experiment). Opened anyway, the repo fails in a git repo
    without commits (scmrepo's "Empty git repo") and prints "Exception ignored" tracebacks from its
    pack files as Python exits."""

    def _init_dvc(self) -> None:
        pass

    def _init_studio(self) -> None:  # no repo, so no DVC Studio config: post nothing
        self._studio_events_to_skip.update({"start", "data", "done"})


def open_live(stage: str) -> StageLive:
    """A fresh DVCLive logger for ``stage`` in ``plots/<stage>/`` (what an earlier run left there is removed)."""
    return StageLive(f"plots/{stage}", dvcyaml=None, save_dvc_exp=False, report=None)


class EpochLog:
    """Logs each epoch of a training stage: step = epoch (1, 2, ...), one TSV per score in the row
    (``train_loss``, ``val_auc``, ``lr``...) and ``speed/images_per_s``; call it with the epoch's
    row and its training images/s."""

    def __init__(self, stage: str):
        self.live = open_live(stage)
        self.live.make_summary()  # an empty metrics.json, so the folder is never empty (0 epochs)

    def __call__(self, row: dict[str, float], images_per_s: float) -> None:
        live = self.live
        live.step = int(row["epoch"])
        for name, value in row.items():
            if name != "epoch":
                live.log_metric(name, round(float(value), DIGITS))
        live.log_metric(SPEED, round(float(images_per_s), 1))
        live.summary.pop(SPEED.split("/")[0])  # a timing: the summary stays byte-stable
        live.make_summary()


def log_evaluation(
    live: StageLive, labels: np.ndarray, probs: np.ndarray, threshold: float, classes: tuple[str, str], bins: int = 10
) -> None:
    """The test split's ROC, precision-recall and calibration curves and its confusion matrix at
    ``threshold``: DVCLive's scikit-learn plots (``plots/sklearn/{precision_recall,calibration,
    confusion_matrix}.json``), and the ROC curve as ``plots/custom/roc.json``, its first threshold
    1.0 where scikit-learn's is infinite (``Infinity`` is not JSON: strict readers such as the
    browser's ``JSON.parse`` refuse the file). The curves use probabilities rounded to
    :data:`DIGITS`, for stable bytes; the confusion matrix the unrounded ones, as
    :func:`gclf.metrics.binary_metrics` counts them."""
    labels = np.asarray(labels).astype(int)
    predicted = np.asarray(probs, dtype=np.float64) >= threshold  # before rounding, as binary_metrics compares
    probs = np.round(np.asarray(probs, dtype=np.float64), DIGITS)
    fpr, tpr, cuts = roc_curve(labels, probs)
    roc = [{"fpr": float(f), "tpr": float(t), "threshold": min(float(c), 1.0)} for f, t, c in zip(fpr, tpr, cuts)]
    log_rows(live, "roc", roc, "fpr", "tpr", "simple", "ROC (test)")
    live.log_sklearn_plot("precision_recall", labels, probs, name="precision_recall.json", drop_intermediate=True)
    live.log_sklearn_plot("calibration", labels, probs, name="calibration.json", n_bins=bins)
    names = np.asarray(classes)
    live.log_sklearn_plot(
        "confusion_matrix",
        names[labels].tolist(),
        names[predicted.astype(int)].tolist(),
        name="confusion_matrix.json",
    )


def log_rows(live: StageLive, name: str, rows: list[dict], x: str, y: str, template: str, title: str) -> None:
    """``rows`` as the DVCLive custom plot ``plots/custom/<name>.json``, floats rounded to :data:`DIGITS`
    (dvc.yaml's ``plots:`` may draw more of its columns than the ``y`` recorded here)."""
    rounded = [{k: round(v, DIGITS) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
    live.log_plot(name, rounded, x=x, y=y, template=template, title=title)
