"""Fail when a reproduced metric differs from the committed one by more than the tolerance.

Input: `dvc metrics diff --json HEAD` (only changed metrics are listed). Timing files
(metrics/speed/, metrics/benchmark.json) measure the machine, not the pipeline, and are skipped.
Data counts must match exactly; scores may move by ABS_TOL + REL_TOL * |committed value|, which
covers float differences between CPUs of the same kind (training itself is deterministic on one).
"""

import json
import sys

ABS_TOL = 0.03
REL_TOL = 0.05
TIMING = ("metrics/speed/", "metrics/benchmark.json")
EXACT = ("metrics/data.json",)


def main(path: str) -> int:
    diff = json.load(open(path))
    failures = []
    for file, metrics in sorted(diff.items()):
        if file.startswith(TIMING):
            continue
        for key, change in sorted(metrics.items()):
            old, new = change.get("old"), change.get("new")
            if not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
                failures.append(f"{file}:{key}: {old!r} -> {new!r}")
                continue
            tol = 0 if file in EXACT else ABS_TOL + REL_TOL * abs(old)
            status = "ok" if abs(new - old) <= tol else "FAIL"
            print(f"{status:4} {file}:{key}: {old} -> {new} (tolerance {tol:.4g})")
            if status == "FAIL":
                failures.append(f"{file}:{key}")
    if failures:
        print("metrics differ from the committed ones: " + ", ".join(failures), file=sys.stderr)
        return 1
    print("reproduced metrics match the committed ones")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
