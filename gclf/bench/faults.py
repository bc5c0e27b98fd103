"""Fault injection: kill the default pipeline at random moments, then check that ``dvc repro`` still
ends with exactly the results of an uninterrupted run.

    python -m gclf.bench.faults [--kills-per-stage 3] [--seed 0] [--dir .cache/faults]

It clones the current commit twice. In one clone ``dvc repro`` runs uninterrupted: the reference,
and each stage's duration. In the other, each stage is SIGKILLed (the process group: DVC and the
stage's Python, as the OOM killer or a lost machine would) ``--kills-per-stage`` times at random
moments within it, each kill followed by a plain ``dvc repro`` that picks up from what is on disk
(a stage already done is forced to run again to be killed). Kills are aimed after the moment the
stage began writing its outputs in the uninterrupted run (its manifest marked pending, after its
imports), and a kill counts for its stage only when the stage had begun writing in that run: one
that lands during the imports tests nothing. Then each stage gets one SIGINT
(Ctrl-C), which must end it with exit code 130 and a line saying what was kept (a stage that ran
under MIN_SIGINT_S in the uninterrupted run ends before one could come, and gets none). A last
``dvc repro`` finishes the pipeline, and every output file of both clones (each stage's outs in
dvc.yaml, a folder's files included) is hashed again on disk: each must match its stage's manifest
(:mod:`gclf.outputs`), and all must be byte-identical between the clones, except the timings
(``metrics/speed/``, DVCLive's images/s per epoch, the benchmark's latencies, throughputs and
speed-ups and its plot), which no two runs share. Prints the kills per stage and a verdict; exit
code 0 when all hold.
"""

from __future__ import annotations

import argparse
import functools
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
from gclf.outputs import MANIFEST_SUFFIX, sha256, stage_outs

STAGE_STARTS = re.compile(r"^Running stage '([\w-]+)'")
# metrics/speed/, DVCLive's images/s per epoch (plots/<stage>/plots/metrics/speed/), the benchmark
TIMING_FILES = re.compile(r"/speed/|^plots/benchmark\.png$|^metrics/benchmark\.json$")
TIMING_KEYS = re.compile(r"(_ms|_img_s|_speedup_b\d+|_speedup)$")  # benchmark.json keys that are timings
MIN_SIGINT_S = 8.0  # after the stage's imports (torch, timm: a few seconds), so run_stage is listening


@dataclass
class Run:
    """One ``dvc repro`` in its own process group, its output read line by line as it comes. As a
    stage starts, the state of its manifest is noted, so that :meth:`wrote` can tell later whether
    the stage has begun writing its outputs since."""

    cwd: Path
    args: list[str]
    log: list[str] = field(default_factory=list)
    stages: list[tuple[float, str]] = field(default_factory=list)  # (start time, stage)
    manifests: dict[str, tuple[int, int] | None] = field(default_factory=dict)  # stage -> its manifest at its start
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
            # the time and the manifest as the line comes, not when the main thread reads it: by then
            # the stage may have marked its manifest pending
            stage = match.group(1) if (match := STAGE_STARTS.match(line)) else None
            self.lines.put((line, time.monotonic(), stage, stage and manifest_state(self.cwd, stage)))
        self.lines.put(None)

    def wait_for_stage(self, stage: str) -> bool:
        """Follow the output until ``stage`` starts (True) or the run ends without it (False)."""
        while not self.ended:
            self._note(self.lines.get())
            if self.stages and self.stages[-1][1] == stage:
                return True
        return False

    def _note(self, item: tuple[str, float, str | None, tuple[int, int] | None] | None) -> None:
        if item is None:
            self.ended = True
            return
        line, at, stage, manifest = item
        self.log.append(line)
        if stage:
            self.stages.append((at, stage))
            self.manifests[stage] = manifest

    def poll(self, timeout: float) -> None:
        """Note the next line of output if one comes within ``timeout`` seconds."""
        try:
            self._note(self.lines.get(timeout=timeout))
        except queue.Empty:
            pass

    def wrote(self, stage: str) -> bool:
        """Whether ``stage``, started in this run, has rewritten its manifest since: it began writing
        its outputs (marked them pending), and may have sealed them."""
        return stage in self.manifests and manifest_state(self.cwd, stage) != self.manifests[stage]

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


@functools.lru_cache
def manifest_path(repo: Path, stage: str) -> Path | None:
    """``stage``'s manifest in ``repo`` (its dvc.yaml says which), or None when it lists none."""
    try:
        return repo / next(o for o in stage_outs(stage, repo / "dvc.yaml") if o.endswith(MANIFEST_SUFFIX))
    except (OSError, KeyError, StopIteration):
        return None


def manifest_state(repo: Path, stage: str) -> tuple[int, int] | None:
    """(inode, modification time in ns) of ``stage``'s manifest, None when there is none: each write
    of it, always whole through a rename (:func:`gclf.io.atomic_write`), changes it."""
    path = manifest_path(repo, stage)
    try:
        info = os.stat(path) if path else None
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_mtime_ns) if info else None


def reference_run(repo: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Run the whole pipeline uninterrupted: each stage's duration, and how far into it it began
    writing its outputs (marked its manifest pending, after its imports), in seconds."""
    run = Run(repo, ["-f"])
    writing: dict[str, float] = {}
    while not run.ended:
        run.poll(0.05)
        if run.stages and run.stages[-1][1] not in writing and run.wrote(run.stages[-1][1]):
            start, stage = run.stages[-1]
            writing[stage] = time.monotonic() - start
    if run.proc.wait():
        sys.exit("the uninterrupted run failed:\n" + "".join(run.log[-30:]))
    ends = [t for t, _ in run.stages[1:]] + [time.monotonic()]
    return {stage: end - start for (start, stage), end in zip(run.stages, ends)}, writing


@dataclass
class Kill:
    """Where a signal landed: the stage running then ("none": the run ended first), whether that
    stage had begun writing its outputs (:meth:`Run.wrote`), the run's exit code and its log."""

    landed: str
    writing: bool
    code: int
    log: list[str]

    @property
    def counts(self) -> bool:
        """A kill tests a stage only once it writes its outputs: during its imports nothing is at stake."""
        return self.writing or self.landed == "none"


def kill_during(repo: Path, stage: str, after_s: float, sig: int) -> Kill:
    """Start ``dvc repro`` and send ``sig`` ``after_s`` seconds into ``stage``. A stage that is
    up to date (an earlier kill landed after it) is run again on its own, ``dvc repro -f -s STAGE``,
    as a user re-running one stage would, and killed there."""
    run = Run(repo, [])
    reached = run.wait_for_stage(stage)
    if not reached and run.finish() == 0:
        run = Run(repo, ["-f", "-s", stage])
        reached = run.wait_for_stage(stage)
    landed, writing = "none", False
    if reached:
        deadline = time.monotonic() + after_s
        while time.monotonic() < deadline and run.proc.poll() is None:
            time.sleep(0.05)
        if run.proc.poll() is None:
            landed = run.current_stage()
            writing = run.wrote(landed)
            run.signal(sig)
    return Kill(landed, writing, run.finish(), run.log)


def kill_schedule(
    durations: dict[str, float], writing: dict[str, float], per_stage: int, rng: random.Random
) -> list[tuple[str, float]]:
    """(stage, seconds into it) for ``per_stage`` kills of each stage, in pipeline order, each after
    the moment the stage began ``writing`` its outputs (0 when unknown) and before its end. A stage
    run again after a kill is shorter (training resumes after its last finished epoch), so each
    further kill of a stage comes within a shrinking share of what is left of it."""
    return [
        (stage, writing.get(stage, 0.0) + rng.uniform(0.05, 0.95) * (seconds - writing.get(stage, 0.0)) * 0.6**k)
        for stage, seconds in durations.items()
        for k in range(per_stage)
    ]


def recorded_hashes(repo: Path, stage: str) -> dict[str, str] | None:
    """The sha256 of each of ``stage``'s files as its sealed manifest records them (path in the repo
    -> digest); None when the manifest is missing or pending."""
    manifest = manifest_path(repo, stage)
    record = read_json(manifest) if manifest and manifest.exists() else {}
    if not record.get("complete"):
        return None
    base = manifest.relative_to(repo).parent
    return {Path(os.path.normpath(base / name)).as_posix(): digest for name, digest in record["files"].items()}


def hashes_on_disk(repo: Path, stage: str) -> dict[str, str]:
    """The sha256 of each file of ``stage``'s outs (a folder out: every file in it), read from disk
    now, manifest aside: the files themselves, not what a manifest says of them."""
    found = {}
    for out in stage_outs(stage, repo / "dvc.yaml"):
        path = repo / out
        if out.endswith(MANIFEST_SUFFIX):
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        found.update({f.relative_to(repo).as_posix(): sha256(f) if f.is_file() else "missing" for f in files})
    return found


def differences(reference: Path, faulted: Path, stages: list[str]) -> list[str]:
    """Every output that differs between the two clones, timings aside, or from its own manifest; []
    when they agree."""
    problems = []
    for stage in stages:
        disk = {clone: hashes_on_disk(clone, stage) for clone in (reference, faulted)}
        for clone, run in ((reference, "uninterrupted"), (faulted, "faulted")):
            recorded = recorded_hashes(clone, stage)
            if recorded is None:
                problems.append(f"{stage}: its manifest is missing or pending in the {run} run")
                continue
            problems += [
                f"{stage}: {path} on disk differs from its manifest in the {run} run"
                for path in sorted(set(recorded) | set(disk[clone]))
                if recorded.get(path) != disk[clone].get(path)
            ]
        problems += [
            f"{stage}: {path} differs"
            for path in sorted(set(disk[reference]) | set(disk[faulted]))
            if not TIMING_FILES.search(path) and disk[reference].get(path) != disk[faulted].get(path)
        ]
    untimed = [read_json(repo / "metrics/benchmark.json") for repo in (reference, faulted)]
    for key in sorted(set(untimed[0]) | set(untimed[1])):
        if not TIMING_KEYS.search(key) and untimed[0].get(key) != untimed[1].get(key):
            problems.append(f"benchmark: metrics/benchmark.json {key} {untimed[0].get(key)} != {untimed[1].get(key)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gclf.bench.faults", description=__doc__.split("\n\n")[0])
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
    durations, writing = reference_run(reference)
    timed = (f"{s} {d:.0f} s (writing from {writing.get(s, 0):.0f} s)" for s, d in durations.items())
    print("  " + ", ".join(timed), flush=True)

    kills: Counter[str] = Counter()  # kills that landed while a stage was writing its outputs
    early: Counter[str] = Counter()  # kills that landed before the stage began writing: not counted
    for aimed, after_s in kill_schedule(durations, writing, args.kills_per_stage, random.Random(args.seed)):
        kill = kill_during(faulted, aimed, after_s, signal.SIGKILL)
        (kills if kill.counts else early)[kill.landed] += 1
        landed = kill.landed if kill.counts else f"{kill.landed} before it began writing, not counted"
        print(f"  SIGKILL aimed at {aimed} +{after_s:.1f} s: landed in {landed} (exit {kill.code})", flush=True)

    interrupts = {}
    for stage in stages:
        if durations[stage] < MIN_SIGINT_S:  # it ends before a SIGINT could come after its imports
            interrupts[stage] = {"landed": "not sent", "exit_130": False, "said": f"ran {durations[stage]:.0f} s"}
            print(f"  SIGINT in {stage}: not sent, the stage ran {durations[stage]:.0f} s", flush=True)
            continue
        kill = kill_during(faulted, stage, max(MIN_SIGINT_S, 0.5 * durations[stage]), signal.SIGINT)
        said = next((line.strip() for line in kill.log if line.startswith("interrupted:")), "")
        # DVC reports the stage's exit code in its log
        exit_130 = kill.code == 130 or any("exited with 130" in line for line in kill.log)
        interrupts[stage] = {"landed": kill.landed, "exit_130": exit_130, "said": said}
        print(f"  SIGINT in {stage}: landed in {kill.landed}, exit {kill.code}: {said or '(no message)'}", flush=True)

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
    report = {
        "kills": dict(kills),
        "kills_before_writing": dict(early),
        "sigint": interrupts,
        "durations_s": durations,
        "writing_from_s": writing,
        "problems": problems,
    }
    if args.out:
        write_json(args.out, report, digits=1)
    print("kills per stage: " + ", ".join(f"{s} {kills[s]}" for s in [*stages, "none"] if kills[s]))
    print("\n".join(problems) if problems else "identical to the uninterrupted run (timings aside)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
