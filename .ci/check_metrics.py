"""Fail when a reproduced metric moves beyond the committed metric's own uncertainty, when static
INT8 loses its speed or size lead, or when a plot or the model card is missing or empty.

Input: `dvc metrics diff --json HEAD` (only changed metrics are listed). On one machine training is
deterministic and every file reproduces byte for byte. Another CPU or PyTorch build rounds floats
differently, and training from scratch grows that into a different model of the same quality: its
scores differ from the committed ones by about as much as the test split's sampling noise. So each
score must stay inside a 95 % interval around its COMMITTED value, read from the committed files
(`git show HEAD:metrics/...`), never from the reproduced ones (a regressed run can widen its own):

- a score with its own bootstrap interval (metrics/eval.json: `test_accuracy`, `test_f1`,
  `test_roc_auc` and their `tta_` twins, with `<key>_ci_low` and `<key>_ci_high`): that interval;
- a score of the same kind (accuracy, F1, ROC-AUC) measured on n images (validation scores in
  metrics/train_phase*.json and metrics/threshold.json on the validation split, the runtimes' scores
  in metrics/quantize.json on the test split, a subgroup's on its images): the matching committed
  test interval, its distances below and above the test score scaled by sqrt(test images / n)
  (the standard error of a mean over n images), around the committed value of the score; `tta_`
  scores take the `tta_` interval;
- a subgroup accuracy gap (the best minus the worst large group, whose standard errors add in
  squares): the test accuracy interval scaled by sqrt(test/n_best + test/n_worst), the two groups
  as in the committed file;
- a proportion without an interval: the Wilson score interval for its committed value and its
  denominator: balanced accuracy over 4 / (1/females + 1/males) images (the mean of the two class
  recalls), PR-AUC over the female images (Boyd et al. 2013, the binomial interval for average
  precision);
- the calibration error (ECE, calibrated or not): a bin-weighted mean of observed rates, each
  binomial, whose noise is at most that of the test split's share of females, so the committed
  value +- 1.96 sqrt(share (1 - share) / test images).

Only a move for the worse beyond the interval fails: a rise of a score (a fall of the calibration
error or of a subgroup gap) beyond it is printed as "better" and passes. Accuracy, F1 and the
class recalls are read at a threshold chosen on a flat validation curve; an honest rerun on another
CPU moved test accuracy by +0.030 (to its interval's top) by moving the threshold from 0.25 to
0.46, and a rerun could as well land below; failing improvements would leave no margin for that.

Other rules:

- data counts (metrics/data.json, subgroup sizes and `_small` flags) must match exactly;
- decisions (the thresholds, the best epoch, the epochs run) are the argmax of a validation curve
  that is flat near its top, so a model of the same quality may pick a distant one: they are not
  compared, the scores they reach are; likewise the temperature, fitted to the model it calibrates:
  the calibration error it reaches is compared;
- precision, recall and the per-class precisions and recalls, and the confusion counts, are where
  on that flat curve the threshold landed: a moved threshold trades one for the other. Not compared;
  F1, accuracy and balanced accuracy, which sum them up, are. Likewise a runtime's agreement with
  FP32 eager in metrics/quantize.json: it counts the images a runtime moves across the threshold,
  so how many test images lie near the threshold decides it (the FP32 runtimes are held to FP32
  eager by the quantize stage itself); every runtime's accuracy, F1 and ROC-AUC are compared;
- the validation loss, the training objective: its noise is not in the metrics files; the
  validation scores beside it are compared;
- an interval's own bounds are not compared: the score it bounds is;
- a metric that vanished, appeared or became non-numeric fails, and so does one without a rule;
- timing files (metrics/speed/, metrics/benchmark.json) measure the machine: not compared. Instead
  metrics/benchmark.json must show the direction, on any machine: static INT8 faster than FP32
  eager (every `int8_static_speedup_*` above 1) and its file under 30 % of FP32's
  (`int8_static_size_ratio`);
- every plot and report that dvc.yaml lists (its stages' `.png`, `.csv`, `.tsv` and `.md` outs and
  plots, and the files and folders its top-level `plots:` draw) must exist and not be empty: a CSV
  or TSV with only a header is empty, so is a JSON plot without data points (DVCLive writes
  `{"roc": [...]}` or `[...]`), and a folder is empty when it holds no file or an empty one.
"""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import yaml

Z = 1.96  # 95 %, the level of the bootstrap intervals
EPS = 1e-9  # float noise when a value sits on its interval's (rounded) bound
TIMING = ("metrics/speed/", "metrics/benchmark.json")
EXACT_FILES = ("metrics/data.json",)
DECISIONS = ("threshold", "tta_threshold", "best_epoch", "epochs_run", "temperature")
OPERATING_POINT = re.compile(r"(tta_)?test_((fe)?male_)?(precision|recall|tp|fp|tn|fn)|.+_agreement")
INTERVAL_KINDS = {"accuracy": "accuracy", "f1": "f1", "roc_auc": "roc_auc", "auc": "roc_auc"}
SCORE = re.compile(r"(?P<prefix>.*?)(?P<split>test|val)_(?P<name>accuracy|f1|roc_auc|auc)")
GROUP_SCORE = re.compile(r"group_.+_(accuracy|f1)")
GAP = re.compile(r"group_(?P<column>.+)_accuracy_gap")
LOWER_IS_BETTER = ("_ece", "_ece_uncalibrated", "_accuracy_gap")
SPEEDUP_PREFIX = "int8_static_speedup_"
SIZE_RATIO = "int8_static_size_ratio"
MAX_SIZE_RATIO = 0.30
REPORT_SUFFIXES = (".png", ".csv", ".tsv", ".md")  # of stage outs (not metrics .json)
TABLE_SUFFIXES = (".csv", ".tsv")


class NoRule(Exception):
    """A metric the check has no tolerance for."""


def committed(path: str) -> dict:
    """The metrics file ``path`` as committed at git HEAD."""
    shown = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"cannot read the committed {path}: {shown.stderr.strip()}")
    return json.loads(shown.stdout)


def skip_reason(key: str) -> str | None:
    """Why ``key`` is not compared, or None when it is."""
    if key in DECISIONS:
        return "a decision"
    if OPERATING_POINT.fullmatch(key):
        return "an operating point of the threshold"
    if key.endswith(("_ci_low", "_ci_high")):
        return "an interval bound"
    if key == "val_loss":
        return "the training objective"
    return None


def wilson(p: float, n: float) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion ``p`` of ``n`` trials."""
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


def scaled(old: float, reference: str, evaluation: dict, scale: float) -> tuple[float, float]:
    """The committed interval of ``reference``, its distances to its score times ``scale``, around ``old``."""
    value = evaluation[reference]
    low, high = evaluation[f"{reference}_ci_low"], evaluation[f"{reference}_ci_high"]
    return old - (value - low) * scale, old + (high - value) * scale


def gap_groups(column: str, evaluation: dict) -> list[str]:
    """The committed best and worst large groups of ``column`` (key prefixes), as the gap compares them."""
    groups = [k[: -len("_count")] for k in evaluation if k.startswith(f"group_{column}_") and k.endswith("_count")]
    large = {g: evaluation[f"{g}_accuracy"] for g in groups if not evaluation.get(f"{g}_small")}
    return [max(large, key=large.get), min(large, key=large.get)]


def score_range(file: str, key: str, old: float, evaluation: dict, data: dict) -> tuple[float, float]:
    """The interval a reproduced ``file:key`` must stay in (see the module docstring)."""
    tests, females = data["test_total"], data["test_female"]
    if gap := GAP.fullmatch(key):
        images = [evaluation[f"{g}_count"] for g in gap_groups(gap["column"], evaluation)]
        return scaled(old, "test_accuracy", evaluation, math.sqrt(sum(tests / n for n in images)))
    if GROUP_SCORE.fullmatch(key):
        kind = key.rsplit("_", 1)[1]
        return scaled(old, f"test_{kind}", evaluation, math.sqrt(tests / evaluation[key.rsplit("_", 1)[0] + "_count"]))
    if score := SCORE.fullmatch(key):
        tta = "tta_" if score["prefix"] == "tta_" else ""
        images = tests if score["split"] == "test" else data["val_total"]
        return scaled(old, f"{tta}test_{INTERVAL_KINDS[score['name']]}", evaluation, math.sqrt(tests / images))
    if key.endswith("balanced_accuracy"):
        return wilson(old, 4 / (1 / females + 1 / data["test_male"]))
    if key.endswith("pr_auc"):
        return wilson(old, females)
    if key.endswith(("_ece", "_ece_uncalibrated")):
        share = females / tests
        half = Z * math.sqrt(share * (1 - share) / tests)
        return old - half, old + half
    raise NoRule(f"{file}:{key}: no tolerance rule for this metric")


def diff_failures(diff: dict, evaluation: dict, data: dict) -> list[str]:
    """Compare each changed metric with its committed value; print one line each, return the failed ones."""
    failures = []
    for file, metrics in sorted(diff.items()):
        if file.startswith(TIMING):
            continue
        for key, change in sorted(metrics.items()):
            old, new = change.get("old"), change.get("new")
            if not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
                failures.append(f"{file}:{key}: {old!r} -> {new!r}")
                continue
            if reason := skip_reason(key):
                print(f"skip {file}:{key}: {old} -> {new} ({reason}, see .ci/check_metrics.py)")
                continue
            if file in EXACT_FILES or key.endswith(("_count", "_small")):
                low = high = old
                allowed = "must match"
            else:
                try:
                    low, high = score_range(file, key, old, evaluation, data)
                except NoRule as error:
                    failures.append(str(error))
                    continue
                except KeyError as missing:
                    failures.append(f"{file}:{key}: no committed {missing.args[0]} to derive its interval from")
                    continue
                allowed = f"allowed {low:.4f} .. {high:.4f}"
            status = "ok" if low - EPS <= new <= high + EPS else "FAIL"
            if status == "FAIL" and file not in EXACT_FILES and not key.endswith(("_count", "_small")):
                better = new < low if key.endswith(LOWER_IS_BETTER) else new > high
                status = "better" if better else status
            print(f"{status:6} {file}:{key}: {old:.4g} -> {new:.4g} ({allowed})")
            if status == "FAIL":
                failures.append(f"{file}:{key}")
    return failures


def benchmark_failures(path: str = "metrics/benchmark.json") -> list[str]:
    """Static INT8 must beat FP32 eager in speed and size on any machine."""
    if not Path(path).is_file():
        return [f"{path}: missing"]
    return int8_lead_failures(json.loads(Path(path).read_text()), path)


def int8_lead_failures(bench: dict, path: str) -> list[str]:
    """The failures of :func:`benchmark_failures` in ``bench``, the content of the benchmark file ``path``
    (also .ci/check_regression.py's rule for the committed file)."""
    speedups = {k: v for k, v in bench.items() if k.startswith(SPEEDUP_PREFIX)}
    failures = [f"{path}: no {SPEEDUP_PREFIX}* key"] if not speedups else []
    failures += [f"{path}:{k}: {v} (static INT8 not faster than FP32 eager)" for k, v in speedups.items() if v <= 1]
    ratio = bench.get(SIZE_RATIO)
    if ratio is None or ratio >= MAX_SIZE_RATIO:
        failures.append(f"{path}:{SIZE_RATIO}: {ratio} (static INT8 file not under {MAX_SIZE_RATIO:.0%} of FP32)")
    return failures


def report_paths(pipeline: dict) -> list[str]:
    """The plots and reports of ``pipeline`` (dvc.yaml): its stages' outs and plots with a
    :data:`REPORT_SUFFIXES` name, and every file or folder its top-level ``plots:`` draw."""
    paths = set()
    for stage in pipeline["stages"].values():
        for entry in stage.get("outs", []) + stage.get("plots", []):
            name = entry if isinstance(entry, str) else next(iter(entry))
            if name.endswith(REPORT_SUFFIXES):
                paths.add(name)
    for entry in pipeline.get("plots", []):
        if isinstance(entry, str):
            paths.add(entry)
            continue
        ((name, spec),) = entry.items()
        files = [f for axis in ("x", "y") if isinstance((spec or {}).get(axis), dict) for f in spec[axis]]
        paths.update(files or [name])  # with files per axis, the name is only the plot's title
    return sorted(paths)


def is_empty(path: Path) -> bool:
    """No bytes; for text, no non-blank line; for a table, no row under its header; for JSON, no
    data point; for a folder, no file or an empty one."""
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        return not files or any(map(is_empty, files))
    if path.suffix == ".json":
        data = json.loads(path.read_text() or "null")
        points = next((v for v in data.values() if isinstance(v, list)), data) if isinstance(data, dict) else data
        return not points
    if path.suffix not in TABLE_SUFFIXES + (".md",):
        return path.stat().st_size == 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return len(lines) < (2 if path.suffix in TABLE_SUFFIXES else 1)


def report_failures(dvc_yaml: str = "dvc.yaml") -> list[str]:
    """Every plot and report dvc.yaml lists must exist and not be empty."""
    failures = []
    for name in report_paths(yaml.safe_load(Path(dvc_yaml).read_text())):
        path = Path(name)
        if not path.exists():
            failures.append(f"{name}: missing")
        elif is_empty(path):
            failures.append(f"{name}: empty")
    return failures


def main(path: str) -> int:
    diff = json.loads(Path(path).read_text())
    failures = diff_failures(diff, committed("metrics/eval.json"), committed("metrics/data.json"))
    failures += benchmark_failures() + report_failures()
    if failures:
        print("CI metrics check failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("reproduced metrics match the committed ones; static INT8 leads; plots and model card present")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
