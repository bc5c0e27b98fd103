"""The CI regression check (.ci/check_regression.py): HEAD's committed metrics against an earlier
commit's (BASE), on doctored copies of this repository's committed metrics and on its own history."""

import subprocess
import sys
from pathlib import Path

import pytest
from test_ci_check import ROOT, commit, committed_json

sys.path.insert(0, str(ROOT / ".ci"))  # as when CI runs it from .ci/: it imports check_metrics
import check_regression  # noqa: E402

DROP = object()  # a key to leave out of HEAD's file


@pytest.fixture
def regression(tmp_path, monkeypatch, capsys):
    """A git repo whose first commit (BASE) holds this repository's committed dvc.yaml and metrics;
    ``run({file: {key: value or DROP}})`` commits them so changed as HEAD and returns the check's exit
    code and failure lines."""
    pipeline = subprocess.run(["git", "-C", str(ROOT), "show", "HEAD:dvc.yaml"], capture_output=True, text=True)
    if pipeline.returncode != 0:
        pytest.skip("needs the project's git checkout")
    files = check_regression.metrics_files(check_regression.yaml.safe_load(pipeline.stdout))
    base = {path: committed_json(path) for path in files}
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    Path("dvc.yaml").write_text(pipeline.stdout)
    commit(base, "BASE: the committed run")

    def run(changes: dict[str, dict | object]) -> tuple[int, list[str]]:
        head = {path: dict(content) for path, content in base.items()}
        for path, change in changes.items():
            if change is DROP:
                del head[path]
                Path(path).unlink()
                continue
            head.setdefault(path, {}).update(change)
            head[path] = {k: v for k, v in head[path].items() if v is not DROP}
        commit(head, "HEAD: a doctored run")
        capsys.readouterr()
        code = check_regression.main([])
        return code, [line.strip() for line in capsys.readouterr().err.splitlines()[1:]]

    run.base = base
    return run


def test_regression_an_unchanged_run_passes(regression):
    assert regression({}) == (0, [])


@pytest.mark.parametrize("key", ["test_accuracy", "test_roc_auc"])
def test_regression_a_fall_of_three_points_fails_one_within_the_interval_passes(regression, key):
    evaluation = regression.base["metrics/eval.json"]
    old, low = evaluation[key], evaluation[f"{key}_ci_low"]
    # an honest re-run moves within BASE's interval: just above its low end passes
    assert regression({"metrics/eval.json": {key: round(low + 0.001, 4)}}) == (0, [])
    code, lines = regression({"metrics/eval.json": {key: round(old - 0.03, 4)}})
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"metrics/eval.json:{key}: ")


def test_regression_takes_bases_interval_not_heads(regression):
    evaluation = regression.base["metrics/eval.json"]
    widened = {"test_accuracy": evaluation["test_accuracy"] - 0.03, "test_accuracy_ci_low": 0.5}
    assert regression({"metrics/eval.json": widened})[0] == 1


def test_regression_static_int8_must_agree_with_fp32_on_97_percent(regression):
    assert regression({"metrics/quantize.json": {"int8_static_agreement": 0.97}}) == (0, [])
    code, lines = regression({"metrics/quantize.json": {"int8_static_agreement": 0.969}})
    assert code == 1 and len(lines) == 1 and "int8_static_agreement: 0.969" in lines[0]


@pytest.mark.parametrize("key", ["int8_static_speedup_b1", "int8_static_speedup_b32"])
def test_regression_static_int8_must_stay_faster_but_timings_are_not_compared_with_base(regression, key):
    # far slower than BASE's run on another machine, still faster than FP32 in its own run: passes
    assert regression({"metrics/benchmark.json": {key: 1.2}}) == (0, [])
    code, lines = regression({"metrics/benchmark.json": {key: 0.99}})
    assert code == 1 and len(lines) == 1 and f"{key}: 0.99" in lines[0]


def test_regression_a_key_or_file_base_has_must_stay_and_a_new_one_is_fine(regression):
    code, lines = regression({"metrics/benchmark.json": {"int8_static_speedup_b1": DROP}})
    assert code == 1 and lines == ["metrics/benchmark.json:int8_static_speedup_b1: in BASE, missing in HEAD"]
    code, lines = regression({"metrics/teacher.json": DROP})
    assert code == 1 and lines == ["metrics/teacher.json:teacher_enabled: in BASE, missing in HEAD"]
    assert regression({"metrics/eval.json": {"test_brier": 0.1}, "metrics/new.json": {"x": 1}}) == (0, [])


@pytest.mark.parametrize("commits_back", range(5))
def test_regression_the_committed_history_passes(commits_back, monkeypatch):
    """Each of the last five commits against its parent, in this repository."""
    monkeypatch.chdir(ROOT)
    head, base = f"HEAD~{commits_back}", f"HEAD~{commits_back + 1}"
    if subprocess.run(["git", "rev-parse", "-q", "--verify", f"{base}^{{commit}}"], capture_output=True).returncode:
        pytest.skip(f"needs the project's git history back to {base} (a shallow clone?)")
    failures, compared = check_regression.check(base, head)
    assert failures == [] and compared >= 9
