"""The fault-injection check's own logic: where kills are aimed, which ones count, and what counts as
a difference. ``dvc`` is a shell script here that prints what DVC prints and writes what a stage
writes, on cue."""

import os
import random
import signal

from gclf.bench.faults import differences, kill_during, kill_schedule, reference_run
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


def test_every_stage_gets_its_kills_in_order_after_it_begins_writing_and_before_its_end():
    plan = kill_schedule({"split": 10.0, "train": 100.0}, {"train": 90.0}, 3, random.Random(0))
    assert [stage for stage, _ in plan] == ["split"] * 3 + ["train"] * 3
    assert all(
        {"split": 0, "train": 90.0}[stage] < after < {"split": 10.0, "train": 100.0}[stage] for stage, after in plan
    )


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


def test_the_files_on_disk_are_hashed_again_not_read_from_their_manifests(tmp_path):
    ref, got = tmp_path / "ref", tmp_path / "got"
    for repo in (ref, got):
        make_repo(repo, b"w1", 10.0, {"int8_static_speedup_b1": 4.0})
    (got / "models/model.pt").write_bytes(b"w2")  # the manifests of both still say w1
    assert differences(ref, got, ["train", "benchmark"]) == [
        "train: models/model.pt on disk differs from its manifest in the faulted run",
        "train: models/model.pt differs",
    ]
    (got / "models/model.pt").unlink()
    assert (
        differences(ref, got, ["train"])[0]
        == "train: models/model.pt on disk differs from its manifest in the faulted run"
    )


def fake_dvc(tmp_path, monkeypatch, script: str) -> None:
    """``dvc`` on the PATH runs ``script`` (sh) in the repo."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text("#!/bin/sh\n" + script)
    (bin_dir / "dvc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


# a stage that imports for 2 s, then marks its manifest pending (written whole, by a rename) and works
TRAIN_WRITES_AFTER_2_S = """echo "Running stage 'train':"
sleep 2
printf '{"complete": false}' > models/.pending && mv models/.pending models/train.manifest.json
sleep 30
"""


def test_a_kill_counts_only_once_the_stage_has_begun_writing(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    make_repo(repo, b"w1", 10.0, {})  # a sealed manifest, from an earlier run
    fake_dvc(tmp_path, monkeypatch, TRAIN_WRITES_AFTER_2_S)
    importing = kill_during(repo, "train", 0.5, signal.SIGKILL)
    assert (importing.landed, importing.writing, importing.counts) == ("train", False, False)
    writing = kill_during(repo, "train", 3.5, signal.SIGKILL)  # the manifest is pending from the last kill
    assert (writing.landed, writing.writing, writing.counts) == ("train", True, True)
    assert writing.code == -signal.SIGKILL


def test_the_uninterrupted_run_says_when_each_stage_began_writing(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    make_repo(repo, b"w1", 10.0, {})
    fake_dvc(
        tmp_path,
        monkeypatch,
        TRAIN_WRITES_AFTER_2_S.replace("sleep 30", "sleep 1") + "echo \"Running stage 'benchmark':\"\n",
    )
    durations, writing = reference_run(repo)
    assert list(durations) == ["train", "benchmark"] and list(writing) == ["train"]  # benchmark wrote nothing
    assert 1.5 <= writing["train"] < durations["train"]  # its imports: 2 s after the line that started it


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
    kill = kill_during(tmp_path, "quantize", 0.5, signal.SIGKILL)
    assert (kill.landed, kill.code) == ("quantize", -signal.SIGKILL) and kill.log == ["Running stage 'quantize':\n"]
