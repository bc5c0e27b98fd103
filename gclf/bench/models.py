"""The artifact benchmarks: agreement, speed and size of every deployable artifact against FP32
eager, for the benchmark stage (the pipeline's artifacts) and ``gclf bench`` (a random-weight model
at any size), timed by :mod:`gclf.bench.harness`.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from gclf.bench.harness import benchmark, random_pixels
from gclf.export.agreement import FP32_ATOL, REFERENCE, check_agreement
from gclf.export.artifact import ARTIFACTS, artifact_size_mb
from gclf.export.quantize import write_artifacts
from gclf.export.runtime import Runner, compiled_torch_runner, load_runner, openvino_runner
from gclf.train.model import artifact_meta, build_model


def artifact_runners(
    paths: dict[str, str], threads: int, example: np.ndarray, torch_compile: bool
) -> dict[str, Runner]:
    """A runner per artifact of :data:`gclf.export.artifact.ARTIFACTS` (at ``paths``), plus the FP32 ONNX file
    through OpenVINO and, when asked and it compiles here, the FP32 checkpoint through torch.compile."""
    runners = {name: load_runner(path, threads) for name, path in paths.items()}
    runners["fp32_openvino"] = openvino_runner(paths["fp32_onnxruntime"], threads)
    compiled = compiled_torch_runner(paths["fp32_eager"], threads, example) if torch_compile else None
    if compiled is not None:
        runners["fp32_torch_compile"] = compiled
    return runners


def benchmark_artifacts(
    pixels: np.ndarray,
    *,
    threads: int,
    warmup: int,
    repeats: int,
    seed: int,
    torch_compile: bool,
    int8_min_correlation: float,
    paths: dict[str, str] = ARTIFACTS,
) -> dict[str, float]:
    """Agreement on ``pixels`` (float32 (B, 3, S, S); B is the throughput batch), then speed and size
    of every artifact, ratios against FP32 eager: the benchmark stage's metrics, and ``gclf bench``'s.

    FP32 runtimes must match FP32 eager within :data:`FP32_ATOL`; INT8 ones must keep the images'
    ranking (Spearman >= ``int8_min_correlation``), else :class:`AgreementError`.
    """
    runners = artifact_runners(paths, threads, pixels, torch_compile)
    fp32 = [name for name in runners if name.startswith("fp32")]
    agreement = check_agreement({name: runners[name] for name in fp32}, pixels, atol=FP32_ATOL)
    others = {name: runners[name] for name in runners if name not in fp32[1:]}
    agreement |= check_agreement(others, pixels, min_correlation=int8_min_correlation)
    report = benchmark(runners, pixels.shape[-1], warmup=warmup, repeats=repeats, batch_size=len(pixels), seed=seed)
    sizes = {f"{name}_size_mb": artifact_size_mb(path) for name, path in paths.items()}
    sizes |= {f"{name}_size_ratio": sizes[f"{name}_size_mb"] / sizes[f"{REFERENCE}_size_mb"] for name in paths}
    return {**report, **sizes, **agreement}


def random_weight_benchmark(
    arch: str,
    image_size: int,
    *,
    head: str = "mlp",
    batch_size: int = 32,
    threads: int = 2,
    warmup: int = 3,
    repeats: int = 20,
    calibration_images: int = 64,
    torch_compile: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`benchmark_artifacts` for a model with random weights at any image size (``gclf bench``).

    Writes every artifact the quantize stage writes to a temporary folder, the static INT8 one
    calibrated on random images: the speed and size of each runtime at, say, 224 px, without
    training. Random weights say nothing about accuracy, so INT8 is not held to the ranking there.
    """
    torch.manual_seed(seed)
    model = build_model(arch, head, dropout=0.0).eval()
    meta = artifact_meta(arch, head, 0.0, image_size)
    with tempfile.TemporaryDirectory(prefix="gclf-bench-") as tmp:
        paths = {name: os.path.join(tmp, os.path.basename(path)) for name, path in ARTIFACTS.items()}
        write_artifacts(model, meta, random_pixels(calibration_images, image_size, seed), paths)
        return benchmark_artifacts(
            random_pixels(batch_size, image_size, seed + 2),
            threads=threads,
            warmup=warmup,
            repeats=repeats,
            seed=seed,
            torch_compile=torch_compile,
            int8_min_correlation=-1.0,
            paths=paths,
        )


def report_table(report: dict[str, float], batch_size: int) -> str:
    """A Markdown table of a benchmark report: per runner, size, batch-1 p50/p90 and batch throughput."""
    names = [key.removesuffix("_b1_p50_ms") for key in report if key.endswith("_b1_p50_ms")]
    bn = f"b{batch_size}"
    lines = [
        f"| runner | size MB | batch-1 p50 ms | p90 ms | speedup | batch-{batch_size} img/s | speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        size = report.get(f"{name}_size_mb")
        lines.append(
            f"| {name} | {'—' if size is None else f'{size:.2f}'} | {report[f'{name}_b1_p50_ms']:.2f} "
            f"| {report[f'{name}_b1_p90_ms']:.2f} | {report[f'{name}_speedup_b1']:.2f}x "
            f"| {report[f'{name}_{bn}_img_s']:.0f} | {report[f'{name}_speedup_{bn}']:.2f}x |"
        )
    return "\n".join(lines)
