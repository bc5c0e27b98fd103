"""Fail when a reproduced metric differs from the committed one by more than run-to-run noise.

Input: `dvc metrics diff --json HEAD` (only changed metrics are listed). On one machine training is
deterministic and every file reproduces byte for byte. Another CPU or PyTorch build rounds floats
differently, and training from scratch grows that into a different model of the same quality, so:

- timing files (metrics/speed/, metrics/benchmark.json) measure the machine: skipped;
- data counts (metrics/data.json, subgroup sizes) must match exactly;
- decisions (the thresholds, the best epoch) are the argmax of a validation curve that is flat
  near its top, so a model of the same quality may pick a distant one: they are not compared, the
  validation scores they reach are, and so is every test score measured at them; likewise the
  temperature, fitted to the model it calibrates: the calibration error it reaches is compared;
- confusion counts follow from the per-class recalls and the class counts, which are compared:
  not compared again;
- a score may move by ABS_TOL + REL_TOL * |committed value|; a subgroup's scores are measured on
  fewer images, so their tolerance grows as sqrt(test images / group images) (a gap's: as for the
  smallest group it compares).
"""

import json
import math
import sys

ABS_TOL = 0.03
REL_TOL = 0.05
TIMING = ("metrics/speed/", "metrics/benchmark.json")
EXACT = ("metrics/data.json",)
DECISIONS = ("threshold", "tta_threshold", "best_epoch", "temperature")
CONFUSION = ("_tp", "_fp", "_tn", "_fn")  # counts of the test split


def noise_scale(key: str, split_images: int, evaluation: dict) -> float:
    """How much noisier ``key`` of metrics/eval.json is than a score on the whole test split."""
    if not key.startswith("group_"):
        return 1.0
    if key.endswith("_accuracy_gap"):
        column = key[len("group_") : -len("_accuracy_gap")]
        sizes = [
            v
            for k, v in evaluation.items()
            if k.startswith(f"group_{column}_") and k.endswith("_count") and not evaluation.get(k[:-5] + "small")
        ]
    else:
        sizes = [evaluation.get(key.rsplit("_", 1)[0] + "_count", split_images)]
    return math.sqrt(split_images / max(min(sizes, default=split_images), 1))


def main(path: str) -> int:
    diff = json.load(open(path))
    split_images = json.load(open("metrics/data.json"))["test_total"]
    evaluation = json.load(open("metrics/eval.json"))
    failures = []
    for file, metrics in sorted(diff.items()):
        if file.startswith(TIMING):
            continue
        for key, change in sorted(metrics.items()):
            old, new = change.get("old"), change.get("new")
            if not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
                failures.append(f"{file}:{key}: {old!r} -> {new!r}")
                continue
            if key in DECISIONS or key.endswith(CONFUSION):
                print(f"skip {file}:{key}: {old} -> {new} (a decision or a confusion count, see above)")
                continue
            if file in EXACT or key.endswith(("_count", "_small")):
                tol = 0
            else:
                tol = (ABS_TOL + REL_TOL * abs(old)) * noise_scale(key, split_images, evaluation)
            status = "ok" if abs(new - old) <= tol else "FAIL"
            print(f"{status:4} {file}:{key}: {old:.4g} -> {new:.4g} (tolerance {tol:.4g})")
            if status == "FAIL":
                failures.append(f"{file}:{key}")
    if failures:
        print("metrics differ from the committed ones: " + ", ".join(failures), file=sys.stderr)
        return 1
    print("reproduced metrics match the committed ones")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
