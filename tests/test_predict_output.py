"""``gclf predict``'s inputs and output file beyond the rows: globs walked like folders (symlink loops
included), the settings recorded beside ``--out`` that ``--resume`` checks, and the lock against a
second writer. On timm's tiny ``test_efficientnet`` at 32 px."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gclf.cli import main
from gclf.deploy.inputs import Inputs
from gclf.deploy.output_file import output_lock
from gclf.deploy.predict import COLUMNS
from gclf.errors import EXIT_USER_ERROR
from gclf.export import artifact
from gclf.train.model import artifact_meta, build_model, save_model

ARCH, HEAD, SIZE = "test_efficientnet", "linear", 32
GLOB_DEADLINE_S = 2


def image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Two checkpoints of one name that differ in their weights only, with threshold 0.5 and TTA views."""
    paths = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(ARCH, HEAD, 0.0).eval()
        meta = artifact.deployment_meta(artifact_meta(ARCH, HEAD, 0.0, SIZE, model), 0.5, 0.5, ["identity", "hflip"])
        paths[f"seed{seed}"] = tmp_path_factory.mktemp(f"seed{seed}") / "model.pt"
        save_model(paths[f"seed{seed}"], model, meta)
    return paths


def run_cli(*args: str | Path) -> int:
    """``gclf predict ARGS``'s exit code."""
    try:
        main(["predict", *map(str, args), "--threads", "1"])
    except SystemExit as e:
        return e.code
    return 0


class Overran(Exception):
    """Not an OSError, which glob's directory listing would swallow."""


@contextmanager
def deadline(seconds: int):
    """Fail the body when it runs longer than ``seconds`` (a runaway glob would never end)."""

    def expire(signum, frame):
        raise Overran(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def looped_tree(tmp_path, monkeypatch) -> list[str]:
    """``p/`` with two symlink loops, a symlinked folder outside it and a hidden folder; the images a
    folder walk of ``p`` finds, in its order."""
    monkeypatch.chdir(tmp_path)
    for i, name in enumerate(["p/1.jpg", "p/a/2.jpg", "p/a/b/3.jpg", "p/.hidden/4.jpg", "out/5.jpg"]):
        image(Path(name), i)
    Path("p/a/b/notes.txt").write_text("not an image")
    os.symlink("..", "p/a/up")  # p/a/up -> p
    os.symlink("../../a", "p/a/b/back")  # p/a/b/back -> p/a: a second loop
    os.symlink("../out", "p/outside")  # a folder outside p
    return ["p/1.jpg", "p/a/2.jpg", "p/a/b/3.jpg"]


def test_a_glob_gives_each_file_once_without_following_symlinked_folders(looped_tree):
    with deadline(GLOB_DEADLINE_S):  # glob.glob(recursive=True) follows both loops, without end
        expanded = list(Inputs(["p/**/*.jpg"]))
        assert expanded == [(path, "") for path in looped_tree]
        assert list(Inputs(["p/**"])) == list(Inputs(["p"]))  # the folder walk's rule, and its order
        assert list(Inputs(["p/*"])) == list(Inputs(["p"]))  # a matched folder gives its files


def test_gclf_predict_a_glob_through_symlink_loops_ends_at_once_with_each_file_once(looped_tree, models):
    start = time.perf_counter()
    with deadline(30):  # fails rather than hangs
        assert run_cli("p/**/*.jpg", "--model", models["seed0"], "--out", "preds.csv") == 0
    elapsed = time.perf_counter() - start
    with open("preds.csv", newline="", encoding="utf-8") as f:
        assert [row["path"] for row in csv.DictReader(f)] == looped_tree
    assert elapsed < GLOB_DEADLINE_S, f"gclf predict took {elapsed:.1f} s"


def settings_of(out: Path) -> dict:
    return json.loads(Path(f"{out}.meta.json").read_text())


def test_the_output_records_the_model_threshold_and_views(models, tmp_path):
    image(tmp_path / "face.png", 0)
    out = tmp_path / "preds.csv"
    assert run_cli(tmp_path / "face.png", "--model", models["seed0"], "--out", out, "--tta", "--shard", "1/1") == 0
    digest = hashlib.sha256(models["seed0"].read_bytes()).hexdigest()
    assert settings_of(out) == {
        "model_sha256": {"model.pt": digest},
        "threshold": 0.5,
        "tta_views": ["identity", "hflip"],
        "shard": [1, 1],
        "columns": list(COLUMNS),
    }
    assert run_cli(tmp_path / "face.png", "--model", models["seed0"], "--out", out, "--threshold", "0.25") == 0
    assert settings_of(out)["threshold"] == 0.25 and settings_of(out)["tta_views"] == ["identity"]  # a new run's


@pytest.mark.parametrize(
    "change, said",
    [
        (("--threshold", "0.3"), "threshold 0.5 (now 0.3)"),
        (("--tta",), "TTA views identity (now identity,hflip)"),
        (("--model", "seed1"), "model model.pt "),
        (("--shard", "1/2"), "shard none (now 1/2)"),
    ],
    ids=["threshold", "tta", "model", "shard"],
)
def test_resume_with_other_settings_is_refused_naming_what_differs(models, tmp_path, capsys, change, said):
    for i in range(3):
        image(tmp_path / "in" / f"{i}.png", i)
    out = tmp_path / "preds.csv"
    assert run_cli(tmp_path / "in", "--model", models["seed0"], "--out", out) == 0
    written = out.read_text()
    change = tuple(str(models[c]) if c in models else c for c in change)
    model = () if "--model" in change else ("--model", models["seed0"])
    capsys.readouterr()
    assert run_cli(tmp_path / "in", *model, *change, "--out", out, "--resume") == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --resume: {out} was predicted with ") and said in err
    assert out.read_text() == written  # refused before the last input's rows were cut off
    assert run_cli(tmp_path / "in", "--model", models["seed0"], "--out", out, "--resume") == 0  # the same: fine


def test_resume_refuses_rows_whose_settings_were_not_recorded(models, tmp_path, capsys):
    image(tmp_path / "face.png", 0)
    out = tmp_path / "preds.csv"
    assert run_cli(tmp_path / "face.png", "--model", models["seed0"], "--out", out) == 0
    os.remove(f"{out}.meta.json")
    assert run_cli(tmp_path / "face.png", "--model", models["seed0"], "--out", out, "--resume") == EXIT_USER_ERROR
    assert f"--resume: {out} has no {out}.meta.json" in capsys.readouterr().err


HOLD_LOCK = (
    "import sys, time; from gclf.deploy.output_file import output_lock\n"
    "with output_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n"
)


def test_a_second_writer_of_the_same_output_stops_at_once(models, tmp_path, capsys):
    image(tmp_path / "face.png", 0)
    out = tmp_path / "preds.csv"
    out.write_text("rows of the first run\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        start = time.perf_counter()
        # a model that does not exist: the lock is refused first, before any model is loaded
        assert run_cli(tmp_path / "face.png", "--model", tmp_path / "none.pt", "--out", out) == EXIT_USER_ERROR
        assert time.perf_counter() - start < 1
        err = capsys.readouterr().err
        assert err == (
            f"error: --out {out}: another gclf predict (pid {holder.pid}) is writing it; "
            "wait for it or use another --out\n"
        )
        assert out.read_text() == "rows of the first run\n"  # neither truncated nor added to
    finally:
        holder.kill()
        holder.wait()
    assert run_cli(tmp_path / "face.png", "--model", models["seed0"], "--out", out) == 0  # the kill freed it
    with output_lock(str(tmp_path / "other.csv")):  # other outputs are not locked by it
        assert run_cli(tmp_path / "face.png", "--model", models["seed0"], "--out", out) == 0
