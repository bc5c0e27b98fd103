"""A stage's outputs form one set: readers refuse a set that a killed stage left pending, or one
whose files come from two runs; files of the user's own (no manifest lists them) read as before."""

import os
import stat
from pathlib import Path

import pytest

from gclf.io import read_json, write_text
from gclf.outputs import IncompleteOutputs, output_set, stage_outs, verified
from gclf.stage import run_stage

DVC_YAML = """
stages:
  make:
    cmd: python make.py
    outs:
      - models/make.manifest.json
      - models/a.bin
      - models/b.bin:
          persist: true
      - tables
      - models/ir
    plots:
      - plots/curve.csv:
          cache: false
"""


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_text("dvc.yaml", DVC_YAML)
    return tmp_path


def write_all(tag: str) -> None:
    paths = (
        "models/a.bin",
        "models/b.bin",
        "models/ir/model.xml",
        "tables/x.csv",
        "tables/deep/y.csv",
        "plots/curve.csv",
    )
    for path in paths:
        write_text(path, f"{tag} {path}")


def test_stage_outs_reads_outs_and_plots_in_order(repo):
    assert stage_outs("make") == [
        "models/make.manifest.json",
        "models/a.bin",
        "models/b.bin",
        "tables",
        "models/ir",
        "plots/curve.csv",
    ]


def test_a_finished_set_records_every_file_hash_and_reads_back(repo):
    with output_set("make"):
        write_all("run1")
    record = read_json("models/make.manifest.json")
    assert record["complete"] is True and record["stage"] == "make"
    assert sorted(record["files"]) == [
        "../plots/curve.csv",
        "../tables/deep/y.csv",
        "../tables/x.csv",
        "a.bin",
        "b.bin",
        "ir/model.xml",
    ]
    assert verified("models/a.bin") == type(verified("models/a.bin"))("models/a.bin")


def test_a_stage_that_stops_midway_leaves_its_set_refused(repo):
    with output_set("make"):
        write_all("run1")
    with pytest.raises(RuntimeError), output_set("make"):
        write_text("models/a.bin", "run2 models/a.bin")  # b.bin still from run 1
        raise RuntimeError("killed")
    with pytest.raises(IncompleteOutputs, match="stage make stopped before it finished.*dvc repro"):
        verified("models/b.bin")


def test_a_stage_reads_its_own_new_files_while_it_writes_them(repo):
    with output_set("make"):
        write_all("run1")
        assert read_json("models/make.manifest.json")["complete"] is False  # what other readers refuse
        # the quantize stage scores the artifacts it has just written
        assert verified("models/a.bin") == Path("models/a.bin")


def test_a_file_from_another_run_is_refused_naming_it(repo):
    with output_set("make"):
        write_all("run1")
    write_text("tables/x.csv", "from another commit")
    with pytest.raises(IncompleteOutputs, match=r"tables/x.csv differs .*dvc checkout"):
        verified("models/a.bin")
    os.remove("tables/x.csv")
    with pytest.raises(IncompleteOutputs, match="is missing"):
        verified("models/a.bin")


def test_a_file_in_a_folder_out_is_checked_by_the_manifest_one_folder_up(repo):
    with output_set("make"):
        write_all("run1")
    write_text("models/b.bin", "from another run")
    with pytest.raises(IncompleteOutputs, match="b.bin differs"):
        verified("models/ir/model.xml")  # the OpenVINO pair lives in models/int8/, its manifest in models/


def test_a_file_no_manifest_lists_is_read_as_it_is(repo):
    with output_set("make"):
        write_all("run1")
    write_text("models/b.bin", "from another run")  # the set beside it is mixed: its own files are refused
    write_text("models/mine.bin", "the user's own model")
    assert verified("models/mine.bin") == Path("models/mine.bin")
    write_text("elsewhere/model.pt", "no manifest here")
    assert verified("elsewhere/model.pt") == Path("elsewhere/model.pt")
    with pytest.raises(IncompleteOutputs, match="b.bin differs"):
        verified("models/a.bin")


def test_an_out_the_stage_did_not_write_keeps_the_set_pending(repo, capsys):
    write_text("params.yaml", "seed: 7\n")
    with pytest.raises(SystemExit):
        run_stage(lambda p: write_text("models/a.bin", "only one"), "params.yaml", stage="make")
    assert "did not write models/b.bin" in capsys.readouterr().err
    assert read_json("models/make.manifest.json")["complete"] is False


def test_run_stage_leaves_the_old_set_untouched_on_bad_params(repo, capsys):
    with output_set("make"):
        write_all("run1")
    before = read_json("models/make.manifest.json")
    write_text("params.yaml", "no_such_key: 1\n")
    with pytest.raises(SystemExit):
        run_stage(lambda p: pytest.fail("ran"), "params.yaml", stage="make")
    assert read_json("models/make.manifest.json") == before


def test_outputs_are_created_with_the_users_umask(repo):
    old = os.umask(0o022)
    os.umask(old)
    with output_set("make"):
        write_all("run1")
    mode = stat.S_IMODE(os.stat("models/a.bin").st_mode)
    assert mode == 0o666 & ~old
