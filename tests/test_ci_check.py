"""The CI reproduction check (.ci/check_metrics.py): what it compares, and with which tolerance."""

import importlib.util
import json
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("check_metrics", Path(__file__).parents[1] / ".ci" / "check_metrics.py")
check_metrics = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(check_metrics)

EVALUATION = {
    "group_skin_dark_count": 75,
    "group_skin_dark_small": 0,
    "group_skin_light_count": 300,
    "group_skin_light_small": 0,
    "group_skin_tiny_count": 3,
    "group_skin_tiny_small": 1,
}


@pytest.fixture
def check(tmp_path, monkeypatch):
    """Run the check on a metrics diff ``{file: {key: (old, new)}}`` beside a 300-image test split."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/data.json").write_text(json.dumps({"test_total": 300}))
    (tmp_path / "metrics/eval.json").write_text(json.dumps(EVALUATION))

    def run(diff: dict) -> int:
        as_dvc = {f: {k: {"old": o, "new": n} for k, (o, n) in m.items()} for f, m in diff.items()}
        (tmp_path / "diff.json").write_text(json.dumps(as_dvc))
        return check_metrics.main("diff.json")

    return run


def test_scores_within_tolerance_pass_and_beyond_fail(check):
    # tolerance 0.03 + 5 % of 0.8 = 0.07
    assert check({"metrics/eval.json": {"test_accuracy": (0.8, 0.869)}}) == 0
    assert check({"metrics/eval.json": {"test_accuracy": (0.8, 0.871)}}) == 1


def test_data_counts_must_match_exactly(check):
    assert check({"metrics/data.json": {"kept": (2000, 1999)}}) == 1
    assert check({"metrics/eval.json": {"group_skin_dark_count": (75, 76)}}) == 1


def test_decisions_confusion_counts_and_timings_are_not_compared(check):
    diff = {
        "metrics/threshold.json": {"threshold": (0.29, 0.61), "tta_threshold": (0.4, 0.6)},
        "metrics/train_phase2.json": {"best_epoch": (11, 20)},
        "metrics/eval.json": {"test_fp": (71, 28), "tta_test_tn": (139, 182)},
        "metrics/speed/train_phase2.json": {"train_images_per_s": (150, 15)},
        "metrics/benchmark.json": {"int8_static_speedup_b1": (4.2, 1.0)},
    }
    assert check(diff) == 0
    # the validation score a threshold reaches is compared
    assert check({"metrics/threshold.json": {"val_f1": (0.73, 0.5)}}) == 1


def test_subgroup_tolerance_grows_with_fewer_images(check):
    # 75 of 300 images: twice the noise, tolerance 2 x (0.03 + 5 % of 0.8) = 0.14
    assert check({"metrics/eval.json": {"group_skin_dark_accuracy": (0.8, 0.93)}}) == 0
    assert check({"metrics/eval.json": {"group_skin_dark_accuracy": (0.8, 0.95)}}) == 1
    # 300 of 300: as for the whole split
    assert check({"metrics/eval.json": {"group_skin_light_accuracy": (0.8, 0.93)}}) == 1
    # a gap is as noisy as its smallest compared group (dark); the small group is left out of it
    # (tolerance 2 x (0.03 + 5 % of 0.1) = 0.07; with the tiny group it would be 10 x)
    assert check({"metrics/eval.json": {"group_skin_accuracy_gap": (0.1, 0.16)}}) == 0
    assert check({"metrics/eval.json": {"group_skin_accuracy_gap": (0.1, 0.18)}}) == 1


def test_a_metric_that_disappears_fails(check):
    assert check({"metrics/eval.json": {"test_accuracy": (0.8, None)}}) == 1


def test_a_decision_that_disappears_fails(check):
    assert check({"metrics/threshold.json": {"threshold": (0.6, None)}}) == 1
