"""Fault injection: kill the default pipeline at random moments, then check that ``dvc repro`` still
ends with exactly the results of an uninterrupted run.

    python -m gclf.faults [--kills-per-stage 3] [--seed 0] [--dir .cache/faults]

It clones the current commit twice. In one clone ``dvc repro`` runs uninterrupted: the reference,
and each stage's duration. In the other, each stage is SIGKILLed (the process group: DVC and the
stage's Python, as the OOM killer or a lost machine would) ``--kills-per-stage`` times at random
moments within it, each kill followed by a plain ``dvc repro`` that picks up from what is on disk
(a stage already done is forced to run again to be killed). Then each stage gets one SIGINT
(Ctrl-C), which must end it with exit code 130 and a line saying what was kept (a stage that ran
under MIN_SIGINT_S in the uninterrupted run ends before one could come, and gets none). A last
``dvc repro`` finishes the pipeline, and every output of both clones is compared through the
stages' manifests (:mod:`gclf.outputs`): all must be byte-identical, except the timings
(``metrics/speed/``, DVCLive's images/s per epoch, the benchmark's latencies, throughputs and
speed-ups and its plot), which no two runs share. Prints the kills per stage and a verdict; exit
code 0 when all hold.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gclf.io import read_json, write_json
from gclf.outputs import MANIFEST_SUFFIX, stage_outs

STAGE_STARTS = re.compile(r"^Running stage '([\w-]+)'")
# metrics/speed/, DVCLive's images/s per epoch (plots/<stage>/plots/metrics/speed/), the benchmark
TIMING_FILES = re.compile(r"/speed/|^plots/benchmark\.png$|^metrics/benchmark\.json$")
TIMING_KEYS = re.compile(r"(_ms|_img_s|_speedup_b\d+|_speedup)$")  # benchmark.json keys that are timings
MIN_SIGINT_S = 8.0  # after the stage's imports (torch, timm: a few seconds), so run_stage is listening


@dataclass
class Run:
    """One ``dvc repro`` in its own process group, its output read line by line as it comes."""

    cwd: Path
    args: list[str]
    log: list[str] = field(default_factory=list)
    stages: list[tuple[float, str]] = field(default_factory=list)  # (start time, stage)
    ended: bool = False  # the output has been read to its end

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(
            ["dvc", "repro", *self.args],
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(self.cwd)},  # the clone's gclf, not an editable install's
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_stage(self, stage: str) -> bool:
        """Follow the output until ``stage`` starts (True) or the run ends without it (False)."""
        while not self.ended:
            self._note(self.lines.get())
            if self.stages and self.stages[-1][1] == stage:
                return True
        return False

    def _note(self, line: str | None) -> None:
        if line is None:
            self.ended = True
            return
        self.log.append(line)
        if match := STAGE_STARTS.match(line):
            self.stages.append((time.monotonic(), match.group(1)))

    def current_stage(self) -> str:
        self._drain()
        return self.stages[-1][1] if self.stages else "dvc"

    def _drain(self) -> None:
        while not self.ended:
            try:
                self._note(self.lines.get_nowait())
            except queue.Empty:
                return

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def finish(self) -> int:
        """Wait for the run to end; its exit code."""
        while not self.ended:
            self._note(self.lines.get())
        return self.proc.wait()


def clone(source: Path, dest: Path) -> Path:
    if dest.exists():
        subprocess.run(["rm", "-rf", str(dest)], check=True)
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True)
    return dest


def pipeline_stages(repo: Path) -> list[str]:
    import yaml

    return list(yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))["stages"])


def reference_run(repo: Path) -> dict[str, float]:
    """Run the whole pipeline uninterrupted; each stage's duration in seconds."""
    run = Run(repo, ["-f"])
    code = run.finish()
    if code:
        sys.exit("the uninterrupted run failed:\n" + "".join(run.log[-30:]))
    ends = [t for t, _ in run.stages[1:]] + [time.monotonic()]
    return {stage: end - start for (start, stage), end in zip(run.stages, ends)}


def kill_during(repo: Path, stage: str, after_s: float, sig: int) -> tuple[str, int, list[str]]:
    """Start ``dvc repro``, send ``sig`` ``after_s`` seconds into ``stage``; where it landed (the
    stage running then, or "none" when the run ended first), the exit code, the log. A stage that is
    up to date (an earlier kill landed after it) is run again on its own, ``dvc repro -f -s STAGE``,
    as a user re-running one stage would, and killed there."""
    run = Run(repo, [])
    reached = run.wait_for_stage(stage)
    if not reached and run.finish() == 0:
        run = Run(repo, ["-f", "-s", stage])
        reached = run.wait_for_stage(stage)
    landed = "none"
    if reached:
        deadline = time.monotonic() + after_s
        while time.monotonic() < deadline and run.proc.poll() is None:
            time.sleep(0.05)
        if run.proc.poll() is None:
            landed = run.current_stage()
            run.signal(sig)
    return landed, run.finish(), run.log


def kill_schedule(durations: dict[str, float], per_stage: int, rng: random.Random) -> list[tuple[str, float]]:
    """(stage, seconds into it) for ``per_stage`` kills of each stage, in pipeline order. A stage run
    again after a kill is shorter (training resumes after its last finished epoch), so each further
    kill of a stage comes within a shrinking share of its duration."""
    return [
        (stage, rng.uniform(0.05, 0.95) * seconds * 0.6**k)
        for stage, seconds in durations.items()
        for k in range(per_stage)
    ]


def outputs_by_stage(repo: Path, stages: list[str]) -> dict[str, dict[str, str]]:
    """Each stage's file hashes as its manifest records them (manifest path -> file -> sha256)."""
    found = {}
    for stage in stages:
        manifest = next(o for o in stage_outs(stage, repo / "dvc.yaml") if o.endswith(MANIFEST_SUFFIX))
        record = read_json(repo / manifest) if (repo / manifest).exists() else {}
        base = Path(manifest).parent
        files = record.get("files", {}) if record.get("complete") else {}
        found[stage] = {os.path.normpath(base / name): digest for name, digest in files.items()}
    return found


def differences(reference: Path, faulted: Path, stages: list[str]) -> list[str]:
    """Every output that differs between the two clones, timings aside; [] when they agree."""
    ref, got = outputs_by_stage(reference, stages), outputs_by_stage(faulted, stages)
    problems = [f"{stage}: its manifest is missing or pending" for stage in stages if not got[stage]]
    for stage in stages:
        for path in sorted(set(ref[stage]) | set(got[stage])):
            if not TIMING_FILES.search(path) and ref[stage].get(path) != got[stage].get(path):
                problems.append(f"{stage}: {path} differs")
    untimed = [read_json(repo / "metrics/benchmark.json") for repo in (reference, faulted)]
    for key in sorted(set(untimed[0]) | set(untimed[1])):
        if not TIMING_KEYS.search(key) and untimed[0].get(key) != untimed[1].get(key):
            problems.append(f"benchmark: metrics/benchmark.json {key} {untimed[0].get(key)} != {untimed[1].get(key)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gclf.faults", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills-per-stage", type=int, default=3, help="SIGKILLs aimed at each stage (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill moments (default 0)")
    ap.add_argument("--dir", default=".cache/faults", help="where the two clones go (default .cache/faults)")
    ap.add_argument("--out", help="also write the report as JSON")
    args = ap.parse_args(argv)
    # Started in the background (`cmd &`, nohup), a process ignores SIGINT and so would every
    # process it starts: the SIGINTs would do nothing. Restore the default for our children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    source = Path(subprocess.check_output(["git", "rev-parse", "--show-toplevel"], text=True).strip())
    work = Path(args.dir).resolve()
    reference, faulted = clone(source, work / "reference"), clone(source, work / "faulted")
    stages = pipeline_stages(reference)

    print("uninterrupted run ...", flush=True)
    durations = reference_run(reference)
    print("  " + ", ".join(f"{s} {d:.0f} s" for s, d in durations.items()), flush=True)

    kills: Counter[str] = Counter()
    for aimed, after_s in kill_schedule(durations, args.kills_per_stage, random.Random(args.seed)):
        landed, code, _ = kill_during(faulted, aimed, after_s, signal.SIGKILL)
        kills[landed] += 1
        print(f"  SIGKILL aimed at {aimed} +{after_s:.1f} s: landed in {landed} (exit {code})", flush=True)

    interrupts = {}
    for stage in stages:
        if durations[stage] < MIN_SIGINT_S:  # it ends before a SIGINT could come after its imports
            interrupts[stage] = {"landed": "not sent", "exit_130": False, "said": f"ran {durations[stage]:.0f} s"}
            print(f"  SIGINT in {stage}: not sent, the stage ran {durations[stage]:.0f} s", flush=True)
            continue
        landed, code, log = kill_during(faulted, stage, max(MIN_SIGINT_S, 0.5 * durations[stage]), signal.SIGINT)
        said = next((line.strip() for line in log if line.startswith("interrupted:")), "")
        exit_130 = code == 130 or any("exited with 130" in line for line in log)  # DVC reports the stage's code
        interrupts[stage] = {"landed": landed, "exit_130": exit_130, "said": said}
        print(f"  SIGINT in {stage}: landed in {landed}, exit {code}: {said or '(no message)'}", flush=True)

    final = Run(faulted, [])
    if final.finish():
        print("".join(final.log[-30:]))
        return 1
    problems = differences(reference, faulted, stages)
    short = [s for s in stages if kills[s] < 2]
    if sum(kills[s] for s in stages) < 20 or short:
        problems.append(f"too few kills landed: {dict(kills)} (each stage needs 2, 20 in all); try another --seed")
    problems += [
        f"SIGINT in {s}: no exit 130 with a message"
        for s, r in interrupts.items()
        if r["landed"] != "not sent" and not (r["exit_130"] and r["said"])
    ]
    report = {"kills": dict(kills), "sigint": interrupts, "durations_s": durations, "problems": problems}
    if args.out:
        write_json(args.out, report, digits=1)
    print("kills per stage: " + ", ".join(f"{s} {kills[s]}" for s in [*stages, "none"] if kills[s]))
    print("\n".join(problems) if problems else "identical to the uninterrupted run (timings aside)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
