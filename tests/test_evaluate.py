"""The evaluate stage's additions (subgroup audit, galleries, model card) and ``gclf evaluate``,
on hand-computed values and on timm's tiny ``test_efficientnet`` at 32 px."""

from __future__ import annotations

import csv
import json
import runpy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_quantize import with_batchnorm_statistics

from gclf.cli import main
from gclf.data.images import load_images
from gclf.data.manifest import DataError
from gclf.deploy.predict import Predictor
from gclf.evaluate.external import scan_labelled
from gclf.evaluate.modelcard import render_model_card
from gclf.metrics import (
    accuracy_gap,
    audit_scalars,
    binary_metrics,
    categorical_columns,
    most_confident,
    subgroup_audit,
    subgroup_metrics,
)
from gclf.params import EvaluateParams, Params
from gclf.train.model import load_model

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
LABELS = np.array([1, 1, 1, 0, 0, 0, 0, 0])
PROBS = np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.05])
GROUPS = ["a", "a", "b", "a", "b", "b", "a", "c"]


def test_most_confident_ranks_by_the_probability_of_the_predicted_class():
    # at 0.5 the mistakes are 2 (female at 0.3: 0.7 sure of male) and 3 (male at 0.7: 0.7 sure of female)
    assert most_confident(LABELS, PROBS, 0.5, correct=False, n=5) == [2, 3]  # a tie keeps index order
    assert most_confident(LABELS, PROBS, 0.5, correct=True, label=0, n=2) == [7, 5]  # 0.95, 0.9 sure of male
    assert most_confident(LABELS, PROBS, 0.5, correct=True, label=1, n=9) == [0, 1]
    assert most_confident(LABELS, PROBS, 0.65, correct=False, label=1, n=9) == [2, 1]  # 0.6 now says male


def test_subgroup_metrics_match_hand_computed_values():
    rows = subgroup_metrics(LABELS, PROBS, 0.5, GROUPS, min_count=2)
    # a: images 0, 1, 3, 6 -> tp, tp, fp, tn: accuracy 3/4, F1 2*2/(2*2+1) = 0.8
    # b: images 2, 4, 5 -> fn, tn, tn: accuracy 2/3, F1 0; c: image 7 -> tn, one image: small
    assert rows == [
        {"group": "a", "count": 4, "accuracy": 0.75, "f1": pytest.approx(0.8), "small": 0},
        {"group": "b", "count": 3, "accuracy": pytest.approx(2 / 3), "f1": 0.0, "small": 0},
        {"group": "c", "count": 1, "accuracy": 1.0, "f1": 0.0, "small": 1},
    ]
    assert accuracy_gap(rows) == pytest.approx(0.75 - 2 / 3)  # c is small: its 1.0 does not count
    assert accuracy_gap(subgroup_metrics(LABELS, PROBS, 0.5, GROUPS, min_count=4)) is None  # only a is large


def test_only_categorical_columns_are_audited():
    meta = [
        {"age": str(20 + i), "age_band": "20-39", "race": "white" if i % 2 else "black", "id": f"p{i}"}
        for i in range(25)
    ]
    meta[0] = {**meta[0], "race": ""}
    # age is a number, id has more distinct values than groups can have
    assert categorical_columns(meta) == ["age_band", "race"]
    audit = subgroup_audit(np.zeros(25), np.zeros(25), 0.5, meta, min_count=10)
    assert [(r["group"], r["count"], r["small"]) for r in audit["race"]] == [
        ("black", 12, 0),
        ("unknown", 1, 1),
        ("white", 12, 0),
    ]


def test_audit_scalars_are_flat_stable_keys():
    audit = {"age_band": subgroup_metrics(LABELS, PROBS, 0.5, ["60+"] * 4 + ["0-9"] * 4, min_count=1)}
    scalars = audit_scalars(audit)
    assert scalars["group_age_band_60+_count"] == 4 and scalars["group_age_band_0-9_small"] == 0
    assert scalars["group_age_band_60+_accuracy"] == 0.5  # 0.9, 0.6 right; 0.3 (female), 0.7 (male) wrong
    assert scalars["group_age_band_0-9_accuracy"] == 1.0
    assert scalars["group_age_band_accuracy_gap"] == 0.5
    assert all(isinstance(v, (int, float)) for v in scalars.values())  # DVC drops anything else
    assert "group_x_accuracy_gap" not in audit_scalars({"x": subgroup_metrics([1], [0.9], 0.5, ["a"], 5)})


DATA = {
    "scanned": 2000,
    "kept": 1990,
    "duplicates_removed": 6,
    "conflicting_groups": 1,
    "conflicting_dropped": 2,
    "unreadable": 1,
    "bad_names": 1,
    **{f"{s}_{c}": n for s in ("train", "val", "test") for c, n in (("male", 100), ("female", 50))},
    **{f"{s}_total": 150 for s in ("train", "val", "test")},
}
PHASE = {"best_epoch": 3, "epochs_run": 4, "monitor": "val_auc", "val_auc": 0.8, "val_accuracy": 0.75, "val_f1": 0.6}
META = {"arch": "efficientnet_b0", "head": "mlp", "dropout": 0.3, "image_size": 64, "classes": ["male", "female"]}
THRESHOLDS = {"criterion": "f1", "temperature": 1.5, "threshold": 0.64, "tta_threshold": 0.61}


def evaluation_report() -> dict[str, float]:
    report = {}
    for prefix in ("", "tta_"):
        report.update({f"{prefix}test_{k}": v for k, v in binary_metrics(LABELS, PROBS, 0.5).items()})
        report.update({f"{prefix}test_{n}_ci_low": 0.1 for n in ("accuracy", "f1", "roc_auc")})
        report.update({f"{prefix}test_{n}_ci_high": 0.9 for n in ("accuracy", "f1", "roc_auc")})
        report[f"{prefix}test_ece_uncalibrated"] = 0.321
    return report


def test_model_card_reports_the_saved_results():
    audit = {"race": subgroup_metrics(LABELS, PROBS, 0.5, GROUPS, min_count=2)}
    card = render_model_card(Params(), META, DATA, PHASE, PHASE, THRESHOLDS, evaluation_report(), audit)
    sections = [line for line in card.splitlines() if line.startswith("## ")]
    assert sections == [
        "## Intended use",
        "## Data and splits",
        "## Training recipe",
        "## Results",
        "## Subgroups",
        "## Limits",
        "## Ethical considerations",
    ]
    assert "| plain | 0.64 | 0.750 [0.100, 0.900] | 0.733 | 0.667 [0.100, 0.900] | 0.800 [0.100, 0.900] |" in card
    assert "| TTA: identity, hflip | 0.61 |" in card
    assert "| train | 100 | 50 | 150 |" in card and "6 duplicates removed" in card
    assert "best epoch 3 of 4 by val_auc: validation AUC 0.800" in card
    assert "temperature of 1.500 fitted on the validation split" in card and "0.321 before temperature" in card
    assert "| c | 1 | 1.000 | 0.000 | small |" in card
    assert "Largest accuracy gap: 0.083 (a vs b)." in card
    assert "synthetic drawings" in card and "Binary labels" in card and "Privacy" in card
    assert card.endswith("\n") and not card.endswith("\n\n")


def test_model_card_says_what_it_could_not_measure():
    p = replace(
        Params(),
        data=replace(Params().data, format="imagefolder", path="data/faces"),
        evaluate=replace(Params().evaluate, bootstrap=0),
    )
    report = {k: float("nan") if "_ci_" in k else v for k, v in evaluation_report().items()}  # as bootstrap 0 gives
    skipped = {"best_epoch": -1, "epochs_run": 0, "monitor": "val_auc"}  # train_phase1 with epochs 0
    card = render_model_card(p, META, DATA, skipped, PHASE, THRESHOLDS, report, {})
    assert "- Phase 1, frozen backbone: skipped (0 epochs)." in card
    assert "no subgroup could be audited" in card
    assert "No intervals" in card and "| plain | 0.64 | 0.750 | 0.733 | 0.667 | 0.800 |" in card
    assert "`data/faces` read as `data.format=imagefolder`" in card
    assert "gclf evaluate --data PATH" in card


def noise_png(path: Path, seed: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from gclf.train.model import artifact_meta, build_model, save_model

    torch.manual_seed(0)
    images = torch.from_numpy(np.random.default_rng(9).random((64, 3, SIZE, SIZE), dtype=np.float32))
    model = with_batchnorm_statistics(build_model("test_efficientnet", "mlp", 0.3), images)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, model, artifact_meta("test_efficientnet", "mlp", 0.3, SIZE))
    return path


def test_evaluate_stage_writes_every_output(checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = []
    for i in range(24):
        path = f"data/images/{i:02d}.png"
        noise_png(tmp_path / path, seed=i)
        race = "white" if i < 10 else "black" if i < 20 else "asian"  # asian: 4 images, small
        rows.append([path, i % 2, "", str(20 + i), "20-39", race])
    Path("data/splits").mkdir()
    with open("data/splits/test.csv", "w") as f:
        csv.writer(f, lineterminator="\n").writerows([["path", "label", "sha1", "age", "age_band", "race"], *rows])
    Path("models").mkdir()
    Path("models/train_phase2.pt").write_bytes(checkpoint.read_bytes())
    # the scores by hand: the model's probabilities at the temperature, and a threshold between the
    # two middle ones, so that 12 images fall each side and the accuracy depends on which ones
    model = load_model(checkpoint)[0].eval()
    labels = np.array([row[1] for row in rows])
    with torch.no_grad():
        logits = model(load_images([row[0] for row in rows], SIZE).float() / 255)
    probs = torch.sigmoid(logits / THRESHOLDS["temperature"]).double().numpy()
    middle = float(np.sort(probs)[11:13].mean())
    Path("metrics").mkdir()
    for name, content in (
        ("threshold", {**THRESHOLDS, "threshold": middle, "tta_threshold": 0.99}),
        ("data", DATA),
        ("train_phase1", PHASE),
        ("train_phase2", PHASE),
    ):
        Path(f"metrics/{name}.json").write_text(json.dumps(content))
    p = Params(threads=1, device="cpu")
    p = replace(
        p,
        data=replace(p.data, image_size=SIZE),
        evaluate=EvaluateParams(bootstrap=20, gallery_size=4, gradcam_per_case=1, min_group_size=5),
    )
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(ROOT / "stages" / "evaluate.py"))["main"](p)
    finally:
        torch.set_num_threads(threads)  # the stage sets them for the whole process

    report = json.loads(Path("metrics/eval.json").read_text())
    assert list(report)[:4] == ["test_accuracy", "test_roc_auc", "test_f1", "test_ece"]  # dvc exp show's first columns
    expected = binary_metrics(labels, probs, middle)
    for name in ("accuracy", "roc_auc", "f1", "tp", "fp", "tn", "fn"):
        assert report[f"test_{name}"] == pytest.approx(expected[name], abs=1e-4), name
    assert report["group_race_asian_count"] == 4 and report["group_race_asian_small"] == 1
    assert report["group_race_white_small"] == 0 and "group_race_accuracy_gap" in report
    assert "group_age_20_count" not in report and report["group_age_band_20-39_count"] == 24  # bands, not ages
    assert report["test_tp"] + report["test_fp"] + report["test_tn"] + report["test_fn"] == 24
    assert report["test_ece"] != report["test_ece_uncalibrated"]  # the temperature of threshold.json is applied
    assert all(isinstance(v, (int, float)) for v in report.values())
    table = json.loads(Path("plots/evaluate/plots/custom/subgroups.json").read_text())
    assert [r["label"] for r in table] == ["all", "age_band=20-39", "race=asian (small)", "race=black", "race=white"]
    drawn = {p.name for p in Path("plots/evaluate/plots/sklearn").iterdir()}
    assert drawn == {"precision_recall.json", "calibration.json", "confusion_matrix.json"}
    assert Path("plots/evaluate/plots/custom/roc.json").is_file()
    for png in ("gradcam", "errors", "subgroups"):
        assert Path(f"plots/{png}.png").read_bytes().startswith(b"\x89PNG")
    card = Path("reports/model_card.md").read_text()
    assert "`test_efficientnet`" in card and "| asian | 4 |" in card and str(tmp_path) not in card


@pytest.fixture()
def faces(tmp_path) -> Path:
    """``Female/`` and ``male/`` with 6 images each, one of them not an image."""
    for i in range(12):
        noise_png(tmp_path / "faces" / ("Female" if i % 2 else "male") / f"{i}.png", seed=i)
    (tmp_path / "faces" / "male" / "broken.jpg").write_bytes(b"not a jpeg")
    return tmp_path / "faces"


def test_gclf_evaluate_scores_a_folder_and_skips_what_it_cannot_read(checkpoint, faces, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    main(["evaluate", "--data", str(faces), "--model", str(checkpoint), "--out", str(out), "--bootstrap", "20"])
    captured = capsys.readouterr()
    report = json.loads(out.read_text())
    assert json.loads(captured.out) == report
    assert report["images"] == 12 and report["skipped"] == 1 and report["threshold"] == 0.5
    assert "broken.jpg: not an image" in captured.err and "carries no threshold" in captured.err

    records, _ = scan_labelled(str(faces), "imagefolder")
    rows = Predictor(checkpoint, threads=1).predict([r.path for r in records if r.path.endswith(".png")])
    labels = [r.label for r in records if r.path.endswith(".png")]
    expected = binary_metrics(labels, np.array([row["probability"] for row in rows], dtype=np.float32), 0.5)
    for name in ("accuracy", "f1", "tp", "fp", "tn", "fn", "roc_auc"):
        assert report[name] == pytest.approx(expected[name], abs=1e-4)
    assert report["accuracy_ci_low"] <= report["accuracy"] <= report["accuracy_ci_high"]

    main(["evaluate", "--data", str(faces), "--model", str(checkpoint), "--threshold", "0", "--bootstrap", "0"])
    at_zero = json.loads(capsys.readouterr().out)
    assert at_zero["threshold"] == 0 and at_zero["recall"] == 1.0 and "accuracy_ci_low" not in at_zero


def test_gclf_evaluate_audits_utkface_metadata(checkpoint, tmp_path, capsys):
    for i in range(8):
        noise_png(tmp_path / "utk" / f"{25 + i}_{i % 2}_{i % 3}_2017.jpg.chip.png", seed=i)
    utk = str(tmp_path / "utk")
    main(["evaluate", "--data", utk, "--format", "utkface", "--model", str(checkpoint), "--bootstrap", "0"])
    report = json.loads(capsys.readouterr().out)
    assert report["group_race_white_count"] == 3 and report["group_race_white_small"] == 1  # under 30
    assert report["group_age_band_20-39_count"] == 8 and "group_age_band_accuracy_gap" not in report


def test_scan_labelled_refuses_what_it_cannot_evaluate(faces, tmp_path):
    with pytest.raises(DataError, match="--split test needs --format presplit"):
        scan_labelled(str(faces), "imagefolder", "test")
    with pytest.raises(DataError, match="unknown dataset format 'synthetic'"):
        scan_labelled(str(faces), "synthetic")
    for split in ("train", "val", "test"):
        noise_png(tmp_path / "pre" / split / "women" / f"{split}.png", seed=1)
    records, _ = scan_labelled(str(tmp_path / "pre"), "presplit", "test")
    assert [Path(r.path).name for r in records] == ["test.png"]
    (tmp_path / "empty" / "male").mkdir(parents=True)
    with pytest.raises(DataError, match="no labelled images"):
        scan_labelled(str(tmp_path / "empty"), "imagefolder")
