"""The fault-injection check's own logic: where kills are aimed, and what counts as a difference."""

import os
import random
import signal

from gclf.faults import differences, kill_during, kill_schedule
from gclf.io import write_json, write_text
from gclf.outputs import output_set

DVC_YAML = """
stages:
  train:
    cmd: x
    outs:
      - models/train.manifest.json
      - models/model.pt
      - metrics/speed/train.json
  benchmark:
    cmd: x
    outs:
      - metrics/benchmark.manifest.json
      - metrics/benchmark.json
"""


def test_every_stage_gets_its_kills_in_order_within_its_duration():
    plan = kill_schedule({"split": 10.0, "train": 100.0}, 3, random.Random(0))
    assert [stage for stage, _ in plan] == ["split"] * 3 + ["train"] * 3
    assert all(0 < after < {"split": 10.0, "train": 100.0}[stage] for stage, after in plan)


def make_repo(root, model: bytes, speed: float, benchmark: dict):
    write_text(root / "dvc.yaml", DVC_YAML)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with output_set("train"):
            (root / "models").mkdir(exist_ok=True)
            (root / "models/model.pt").write_bytes(model)
            write_json("metrics/speed/train.json", {"images_per_s": speed})
        with output_set("benchmark"):
            write_json("metrics/benchmark.json", benchmark)
    finally:
        os.chdir(cwd)


def test_timings_may_differ_everything_else_must_not(tmp_path):
    ref, got = tmp_path / "ref", tmp_path / "got"
    make_repo(
        ref, b"w1", 10.0, {"int8_static_b1_p50_ms": 8.0, "int8_static_speedup_b1": 4.0, "int8_static_size_mb": 4.4}
    )
    make_repo(
        got, b"w1", 12.0, {"int8_static_b1_p50_ms": 9.0, "int8_static_speedup_b1": 3.9, "int8_static_size_mb": 4.4}
    )
    assert differences(ref, got, ["train", "benchmark"]) == []
    make_repo(
        got, b"w2", 12.0, {"int8_static_b1_p50_ms": 9.0, "int8_static_speedup_b1": 3.9, "int8_static_size_mb": 4.5}
    )
    assert differences(ref, got, ["train", "benchmark"]) == [
        "train: models/model.pt differs",
        "benchmark: metrics/benchmark.json int8_static_size_mb 4.4 != 4.5",
    ]


def test_a_kill_aimed_at_a_stage_already_done_forces_it_to_run_again(tmp_path, monkeypatch):
    """The kill aimed at a stage that is already done: the plain run ends without it (and nothing
    hangs), then the stage is forced to run again on its own and killed there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dvc"
    # dvc repro runs split only, quantize being up to date; dvc repro -f -s quantize runs it
    fake.write_text('#!/bin/sh\nif [ "$2" = -f ]; then echo "Running stage \'$4\':"; sleep 30; fi\necho done\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    landed, code, log = kill_during(tmp_path, "quantize", 0.5, signal.SIGKILL)
    assert (landed, code) == ("quantize", -signal.SIGKILL) and log == ["Running stage 'quantize':\n"]
