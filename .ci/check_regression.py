"""Fail when the metrics committed at HEAD regress against those of an earlier commit (BASE).

    python .ci/check_regression.py [BASE]     # BASE defaults to HEAD~1

.ci/check_metrics.py asks whether a re-run reproduces HEAD's metrics; this asks whether HEAD's
metrics are as good as BASE's. Both sides are read from git (`git show REV:path`), never from the
working tree, so it gives the same answer before and after a `dvc repro`. The metrics files are
those BASE's dvc.yaml lists (top-level `metrics:` and stages' `metrics:`). One line per failed rule,
exit code 1; the rules (docs/reproducibility.md says why each):

- a score with its own bootstrap interval in BASE's metrics/eval.json (`test_accuracy`,
  `test_roc_auc`, `test_f1` and their `tta_` twins, with `<key>_ci_low` and `<key>_ci_high`) must not
  fall below BASE's `<key>_ci_low`: a 95 % interval's lower distance, about 0.028 for accuracy and
  ROC-AUC on the 600 test images, so an honest re-run, which moves within the interval, passes and
  a drop of 0.03 fails. BASE's interval, never HEAD's: a regressed run may widen its own;
- static INT8 must agree with FP32 eager on at least 97 % of the test images
  (`int8_static_agreement` in HEAD's metrics/quantize.json);
- static INT8 must be faster than FP32 eager (every `int8_static_speedup_*` above 1) and its file
  under 30 % of FP32's, in HEAD's metrics/benchmark.json (the rule of .ci/check_metrics.py). Speed-ups
  are ratios measured within one run on one machine; BASE's timings came from another machine and
  are never compared with HEAD's;
- every metric key in BASE must be in HEAD (a key new in HEAD is fine): a dropped file or key, such
  as `int8_static_speedup_b1` while `_b32` remains, would hide what no rule then compares.
"""

import json
import subprocess
import sys

import yaml
from check_metrics import EPS, int8_lead_failures

EVAL = "metrics/eval.json"
QUANTIZE = "metrics/quantize.json"
BENCHMARK = "metrics/benchmark.json"
AGREEMENT = "int8_static_agreement"
MIN_AGREEMENT = 0.97
INTERVAL_LOW = "_ci_low"


def git_show(rev: str, path: str) -> str | None:
    """The file ``path`` as committed at ``rev``, or None when ``rev`` has no such file."""
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def metrics_files(pipeline: dict) -> list[str]:
    """The metrics files a dvc.yaml lists: its top-level ``metrics:`` and its stages' ``metrics:``."""
    entries = list(pipeline.get("metrics", []))
    entries += [e for stage in pipeline.get("stages", {}).values() for e in stage.get("metrics", [])]
    return sorted({e if isinstance(e, str) else next(iter(e)) for e in entries})


def flat(content: dict, prefix: str = "") -> dict:
    """A metrics file's keys, nested ones joined with dots (as `dvc metrics show` names them)."""
    keys = {}
    for key, value in content.items():
        if isinstance(value, dict):
            keys.update(flat(value, f"{prefix}{key}."))
        else:
            keys[f"{prefix}{key}"] = value
    return keys


def committed_metrics(rev: str, files: list[str]) -> dict[str, dict]:
    """``{file: {key: value}}`` of the metrics ``files`` committed at ``rev``; a file absent there is left out."""
    found = {}
    for path in files:
        text = git_show(rev, path)
        if text is not None:
            try:
                found[path] = flat(json.loads(text))
            except ValueError:
                raise SystemExit(f"{rev}:{path}: not JSON") from None
    return found


def missing_keys(base: dict[str, dict], head: dict[str, dict]) -> list[str]:
    return [
        f"{path}:{key}: in BASE, missing in HEAD"
        for path, keys in sorted(base.items())
        for key in sorted(keys)
        if key not in head.get(path, {})
    ]


def interval_falls(base_eval: dict, head_eval: dict) -> list[str]:
    """Each score of BASE's with a bootstrap interval that HEAD's value falls below."""
    failures = []
    for low_key in sorted(k for k in base_eval if k.endswith(INTERVAL_LOW)):
        key = low_key.removesuffix(INTERVAL_LOW)
        old, low, new = base_eval.get(key), base_eval[low_key], head_eval.get(key)
        if isinstance(old, (int, float)) and isinstance(new, (int, float)) and new < low - EPS:
            failures.append(
                f"{EVAL}:{key}: {old:.4f} -> {new:.4f}, fell {old - new:.4f}, below BASE's 95 % interval ({low:.4f} ..)"
            )
    return failures


def agreement_failures(head_quantize: dict) -> list[str]:
    agreement = head_quantize.get(AGREEMENT)
    if isinstance(agreement, (int, float)) and agreement < MIN_AGREEMENT - EPS:
        return [f"{QUANTIZE}:{AGREEMENT}: {agreement} (static INT8 agrees with FP32 on under {MIN_AGREEMENT:.0%})"]
    return []


def regressions(base: dict[str, dict], head: dict[str, dict]) -> list[str]:
    """Every failed rule (module docstring), one line each."""
    failures = missing_keys(base, head) + interval_falls(base.get(EVAL, {}), head.get(EVAL, {}))
    failures += agreement_failures(head.get(QUANTIZE, {}))
    if BENCHMARK in head:
        failures += int8_lead_failures(head[BENCHMARK], BENCHMARK)
    return failures


def check(base_rev: str, head_rev: str = "HEAD") -> tuple[list[str], int]:
    """The failed rules of ``head_rev`` against ``base_rev``, and how many metrics files BASE has."""
    for rev in (base_rev, head_rev):
        if subprocess.run(["git", "rev-parse", "--verify", "-q", f"{rev}^{{commit}}"], capture_output=True).returncode:
            raise SystemExit(f"no commit {rev} to compare (in a shallow clone, fetch with --depth 2)")
    pipeline = git_show(base_rev, "dvc.yaml")
    files = metrics_files(yaml.safe_load(pipeline)) if pipeline else []
    base = committed_metrics(base_rev, files)
    return regressions(base, committed_metrics(head_rev, files)), len(base)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise SystemExit("usage: python .ci/check_regression.py [BASE]   (BASE defaults to HEAD~1)")
    rev = argv[0] if argv else "HEAD~1"
    failures, compared = check(rev)
    if failures:
        print(f"HEAD's committed metrics regress against {rev}:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"HEAD's committed metrics hold against {rev} ({compared} metrics files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
