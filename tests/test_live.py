"""DVCLive logging (gclf/live.py): what the training and evaluation stages write for `dvc plots`."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from gclf.live import EpochLog, log_evaluation, log_rows, open_live

ROWS = [
    {"epoch": 1, "lr": 0.001, "train_loss": 0.69314718, "val_loss": 0.6, "val_auc": 0.7123456789},
    {"epoch": 2, "lr": 0.0005, "train_loss": 0.5, "val_loss": 0.55, "val_auc": 0.8},
]


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def files(folder: str) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_each_epoch_is_a_step_of_every_score():
    log = EpochLog("train_phase1")
    for row, speed in zip(ROWS, (100.0, 120.0)):
        log(row, speed)
    metrics = Path("plots/train_phase1/plots/metrics")
    assert (metrics / "val_auc.tsv").read_text() == "step\tval_auc\n1\t0.712346\n2\t0.8\n"
    assert (metrics / "speed/images_per_s.tsv").read_text() == "step\timages_per_s\n1\t100.0\n2\t120.0\n"
    assert sorted(p.name for p in metrics.glob("*.tsv")) == ["lr.tsv", "train_loss.tsv", "val_auc.tsv", "val_loss.tsv"]
    summary = json.loads(Path("plots/train_phase1/metrics.json").read_text())
    assert summary == {"lr": 0.0005, "train_loss": 0.5, "val_loss": 0.55, "val_auc": 0.8, "step": 2}


def test_equal_runs_write_equal_bytes_but_for_the_timing():
    """A resumed run replays the saved epochs into a fresh log: it must end as the uninterrupted one."""
    first = EpochLog("train_phase2")
    for row in ROWS:
        first(row, 100.0)
    before = files("plots/train_phase2")
    replayed = EpochLog("train_phase2")  # removes what the first one wrote
    for row in ROWS:
        replayed(row, 55.5)
    after = files("plots/train_phase2")
    timing = "plots/metrics/speed/images_per_s.tsv"
    assert before.pop(timing) != after.pop(timing)
    assert before == after


def test_a_phase_of_zero_epochs_replaces_the_curves_of_an_earlier_run():
    EpochLog("train_phase1")(ROWS[0], 10.0)
    EpochLog("train_phase1")  # no epoch runs
    assert files("plots/train_phase1") == {"metrics.json": b"{}\n"}  # an empty summary: the folder is not empty


def test_evaluation_plots_match_the_scores():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    probs = np.clip(labels * 0.3 + rng.random(500) * 0.7, 0, 1)
    probs[:3] = 0.5  # on the threshold: predicted female
    probs[3] = 0.4999996  # just under it: male, though it rounds to 0.5 for the curves
    log_evaluation(open_live("evaluate"), labels, probs, 0.5, ("male", "female"))
    sklearn = Path("plots/evaluate/plots/sklearn")
    roc = json.loads(Path("plots/evaluate/plots/custom/roc.json").read_text())
    fpr, tpr = np.array([r["fpr"] for r in roc]), np.array([r["tpr"] for r in roc])
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(labels, probs.round(6)), abs=1e-6)  # curve of rounded
    cuts = [r["threshold"] for r in roc]
    assert cuts[0] == 1.0 and all(t == round(t, 6) for t in cuts)  # rounded probabilities: stable bytes
    for path in Path("plots/evaluate").rglob("*.json"):  # strict JSON: no Infinity or NaN
        json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{path}: {name}"))
    confusion = json.loads((sklearn / "confusion_matrix.json").read_text())
    assert len(confusion) == 500
    female = [c["predicted"] == "female" for c in confusion]
    assert female == list(probs >= 0.5)  # predicted positive at the threshold itself
    assert [c["actual"] for c in confusion] == [("male", "female")[y] for y in labels]
    calibration = json.loads((sklearn / "calibration.json").read_text())["calibration"]
    assert 1 < len(calibration) <= 10
    pr = json.loads((sklearn / "precision_recall.json").read_text())["precision_recall"]
    assert pr and all(0 <= r["precision"] <= 1 for r in pr)


def test_custom_rows_are_rounded():
    log_rows(
        open_live("threshold_sweep"), "threshold", [{"threshold": 0.1, "f1": 1 / 3}], "threshold", "f1", "linear", "t"
    )
    assert json.loads(Path("plots/threshold_sweep/plots/custom/threshold.json").read_text()) == [
        {"threshold": 0.1, "f1": 0.333333}
    ]


def test_a_git_repo_without_commits_is_fine():
    """`git init`, then `dvc repro` before the first commit: DVCLive's own repo handling fails there."""
    subprocess.run(["git", "init", "-q"], check=True)
    EpochLog("train_phase1")({"epoch": 1, "val_auc": 0.5}, 10.0)
    assert Path("plots/train_phase1/plots/metrics/val_auc.tsv").is_file()
