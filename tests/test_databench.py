"""`gclf bench-data` on a tiny image folder: the wiring and the report, never the times."""

from __future__ import annotations

import json
import time

import pytest
from test_data import write_image

from gclf import cli
from gclf.train.memory import PeakMemory, rss_anon_mb


@pytest.fixture
def faces(tmp_path):
    for i in range(10):
        write_image(tmp_path / "faces" / ("female" if i % 3 == 0 else "male") / f"{i}.png", i, size=20)
    return tmp_path / "faces"


@pytest.mark.parametrize("augment", ["batched", "per-image"])
def test_bench_data_decodes_a_cold_store_then_times_training_batches(faces, tmp_path, augment, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench-data", "--data", str(faces), "--image-size", "16", "--batch-size", "4", "--augment", augment]
    cli.main([*argv, "--device", "cpu", "--cache-dir", str(tmp_path / "store"), "--out", str(out)])
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["augment"] == augment and report["images"] == 10
    assert report["images_timed"] == 8  # whole batches of 4, as training drops the last partial one
    assert report["images_per_second"] > 0 and report["peak_rss_anon_mb"] > 0
    assert report["store_mb"] == round(10 * 16 * 16 * 3 / 1e6, 1)
    assert len(list((tmp_path / "store").glob("*.u8"))) == 1  # decoded once into the store


def test_bench_data_of_an_empty_folder_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "empty" / "male").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench-data", "--data", str(tmp_path / "empty"), "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no images found" in err


def test_peak_memory_sees_an_allocation_that_is_freed_before_the_end():
    with PeakMemory() as memory:
        before = rss_anon_mb()
        block = bytearray(200 * 1024 * 1024)  # touched: anonymous memory
        block[::4096] = b"x" * len(block[::4096])
        time.sleep(0.05)  # several sampling periods
        del block
    assert memory.peak_mb > before + 150
