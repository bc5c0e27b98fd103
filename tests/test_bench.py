"""Benchmark bookkeeping with fake runners and a fake clock, so nothing is flaky; one end-to-end
`gclf bench` on a tiny model checks the wiring, never the times."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gclf import cli
from gclf.bench import harness
from gclf.bench import models as bench
from gclf.bench.harness import benchmark, cpu_info, machine_facts, round_orders
from gclf.export.agreement import FP32_ATOL, AgreementError, check_agreement


def mean_logit(pixels: np.ndarray) -> np.ndarray:
    """A stand-in model: one float32 'logit' per image, centred on zero."""
    return (pixels.mean(axis=(1, 2, 3)) - 0.5).astype(np.float32)


def recording_runner(name: str, calls: list[tuple[str, int]]):
    def run(pixels: np.ndarray) -> np.ndarray:
        calls.append((name, len(pixels)))
        return mean_logit(pixels)

    return run


def test_round_orders_alternate_direction():
    assert round_orders(["a", "b", "c"], 3) == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]


def test_benchmark_warms_every_runner_then_interleaves_rounds_in_both_orders():
    calls: list[tuple[str, int]] = []
    runners = {name: recording_runner(name, calls) for name in ("fp32_eager", "int8", "onnx")}
    benchmark(runners, image_size=8, warmup=2, repeats=2, batch_size=4)

    warmup = [(name, n) for name in runners for _ in range(2) for n in (1, 4)]
    forward = [(name, n) for name in ("fp32_eager", "int8", "onnx") for n in (1, 4)]
    backward = [(name, n) for name in ("onnx", "int8", "fp32_eager") for n in (1, 4)]
    assert calls == warmup + forward + backward


def test_benchmark_feeds_the_same_seeded_pixels_every_time():
    seen: list[np.ndarray] = []

    def keep(pixels: np.ndarray) -> np.ndarray:
        seen.append(pixels.copy())
        return mean_logit(pixels)

    benchmark({"fp32_eager": keep}, image_size=8, warmup=1, repeats=2, batch_size=3, seed=5)
    singles = [p for p in seen if len(p) == 1]
    batches = [p for p in seen if len(p) == 3]
    assert all(np.array_equal(p, singles[0]) for p in singles)
    assert all(np.array_equal(p, batches[0]) for p in batches)
    assert singles[0].shape == (1, 3, 8, 8) and batches[0].dtype == np.float32
    assert 0.0 <= batches[0].min() and batches[0].max() <= 1.0
    assert not np.array_equal(batches[0][:1], singles[0])  # the two inputs are different draws


def fake_clock(seconds: dict[tuple[str, int], list[float]]):
    """A ``seconds_per_call`` that replays scripted durations per (runner name, batch size)."""
    position = {key: 0 for key in seconds}

    def seconds_per_call(runner, pixels: np.ndarray) -> float:
        key = (runner.name, len(pixels))
        value = seconds[key][position[key] % len(seconds[key])]
        position[key] += 1
        return value

    return seconds_per_call


def named(name: str):
    def run(pixels: np.ndarray) -> np.ndarray:
        return mean_logit(pixels)

    run.name = name
    return run


def test_benchmark_reports_percentiles_throughput_and_speedups(monkeypatch):
    one_to_ten_ms = [i / 1000 for i in range(1, 11)]
    script = {
        ("fp32_eager", 1): [0.010],
        ("fp32_eager", 4): [0.040],  # 100 img/s
        ("int8", 1): one_to_ten_ms,
        ("int8", 4): [0.004, 0.002, 0.001],  # median 2 ms per batch: 2000 img/s
    }
    monkeypatch.setattr(harness, "seconds_per_call", fake_clock(script))
    runners = {"fp32_eager": named("fp32_eager"), "int8": named("int8")}
    result = benchmark(runners, image_size=4, warmup=0, repeats=9, batch_size=4)

    names = {"b1_p50_ms", "b1_p90_ms", "b4_img_s", "speedup_b1", "speedup_b4"}
    assert set(result) == {f"{runner}_{name}" for runner in runners for name in names}
    assert result["fp32_eager_b1_p50_ms"] == pytest.approx(10.0)
    assert result["int8_b1_p50_ms"] == pytest.approx(5.0)  # 1..9 ms: the 10th scripted value is never reached
    assert result["int8_b1_p90_ms"] == pytest.approx(8.2)
    assert result["fp32_eager_b4_img_s"] == pytest.approx(100.0)
    assert result["int8_b4_img_s"] == pytest.approx(2000.0)
    assert result["int8_speedup_b1"] == pytest.approx(2.0)
    assert result["int8_speedup_b4"] == pytest.approx(20.0)
    assert result["fp32_eager_speedup_b1"] == pytest.approx(1.0)


def test_benchmark_needs_the_reference_runner():
    with pytest.raises(ValueError, match="fp32_eager"):
        benchmark({"int8": mean_logit}, image_size=4, warmup=0, repeats=1)


def test_check_agreement_reports_difference_and_sign_agreement():
    pixels = np.random.default_rng(0).random((64, 3, 4, 4), dtype=np.float32)
    runners = {
        "fp32_eager": mean_logit,
        "same": mean_logit,
        "nudged": lambda x: mean_logit(x) + np.float32(0.01),
    }
    result = check_agreement(runners, pixels, atol=0.02)
    assert result["same_max_abs_diff"] == 0.0 and result["same_sign_agreement"] == 1.0
    assert result["nudged_max_abs_diff"] == pytest.approx(0.01, rel=1e-3)
    # A +0.01 shift flips exactly the images whose logit lies in (-0.01, 0].
    flipped = np.mean((mean_logit(pixels) > -0.01) & (mean_logit(pixels) <= 0))
    assert result["nudged_sign_agreement"] == pytest.approx(1.0 - flipped)
    assert "fp32_eager_max_abs_diff" not in result


@pytest.mark.parametrize("bad", [lambda x: mean_logit(x) + 1.0, lambda x: mean_logit(x) * np.nan])
def test_check_agreement_fails_naming_the_runner_over_tolerance(bad):
    pixels = np.random.default_rng(0).random((4, 3, 4, 4), dtype=np.float32)
    runners = {"fp32_eager": mean_logit, "good": mean_logit, "int8_static": bad}
    with pytest.raises(AgreementError, match="int8_static") as error:
        check_agreement(runners, pixels, atol=0.1)
    assert "good" not in str(error.value)


def test_cpu_info_reads_model_and_relevant_flags():
    text = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_vnni sse4_2\n"
    assert cpu_info(text) == {"cpu_model": "Test CPU 9000", "cpu_isa": ["avx2", "avx512f", "avx512_vnni"]}


def test_machine_facts_names_threads_and_versions():
    facts = machine_facts(threads=3)
    assert facts["threads"] == 3 and facts["logical_cores"] >= 1
    assert facts["torch"][0].isdigit() and facts["python"].count(".") == 2
    assert {"cpu_model", "cpu_isa", "onnxruntime", "openvino", "nncf", "timm"} <= set(facts)


def test_check_agreement_on_rank_correlation_accepts_squashed_logits_and_rejects_noise():
    pixels = np.random.default_rng(0).random((64, 3, 4, 4), dtype=np.float32)
    noise = np.random.default_rng(1).standard_normal(64).astype(np.float32)
    # INT8 squashing outlying logits keeps their order, which is what is checked
    runners = {"fp32_eager": mean_logit, "int8_static": lambda x: np.tanh(3 * mean_logit(x)) + 0.5}
    result = check_agreement(runners, pixels, min_correlation=0.99)
    assert result["int8_static_rank_correlation"] == pytest.approx(1.0)
    runners["broken"] = lambda x: noise[: len(x)]
    with pytest.raises(AgreementError, match="broken"):
        check_agreement(runners, pixels, min_correlation=0.9)


def test_gclf_bench_measures_every_artifact_kind_of_a_random_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the artifacts must go to a temporary folder, never to models/
    cli.main(
        "bench --arch test_efficientnet --image-size 32 --batch-size 4 --threads 1 --warmup 1 --repeats 2 "
        "--calibration-images 4 --out speed.json".split()
    )
    out = capsys.readouterr().out.splitlines()  # NNCF prints its own tables first
    table = out[out.index("test_efficientnet, random weights, 32 px, 1 threads, 2 rounds") :]
    rows = [line.split(" | ")[0].lstrip("| ") for line in table[3:]]
    assert rows == ["fp32_eager", "int8_dynamic_linear", "fp32_onnxruntime", "int8_static", "fp32_openvino"]
    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["fp32_eager_speedup_b1"] == 1.0 and report["fp32_eager_size_ratio"] == 1.0
    assert report["int8_static_size_ratio"] < 0.6  # convolutions stored as INT8
    assert report["fp32_onnxruntime_max_abs_diff"] <= FP32_ATOL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speed.json"]


def test_report_table_has_a_row_per_runner_with_its_ratios():
    report = {"fp32_eager_size_mb": 16.0, "int8_static_size_mb": 4.0}
    for name, p50, img_s in (("fp32_eager", 20.0, 100.0), ("int8_static", 5.0, 900.0)):
        report |= {f"{name}_b1_p50_ms": p50, f"{name}_b1_p90_ms": p50 + 1, f"{name}_b32_img_s": img_s}
        report |= {f"{name}_speedup_b1": 20.0 / p50, f"{name}_speedup_b32": img_s / 100.0}
    assert bench.report_table(report, 32).splitlines()[2:] == [
        "| fp32_eager | 16.00 | 20.00 | 21.00 | 1.00x | 100 | 1.00x |",
        "| int8_static | 4.00 | 5.00 | 6.00 | 4.00x | 900 | 9.00x |",
    ]
