"""CPU speed and agreement of inference runners, measured fairly against each other.

Rounds are interleaved across runners and their order flips every round, so drift in the
machine (thermal, other load, caches) spreads over all runners instead of favouring one.
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from importlib import metadata

import numpy as np
import torch
from scipy.stats import spearmanr

from gclf.export.artifact import ARTIFACTS, artifact_size_mb
from gclf.export.quantize import write_artifacts
from gclf.export.runtime import Runner, compiled_torch_runner, load_runner, openvino_runner
from gclf.train.model import artifact_meta, build_model

REFERENCE = "fp32_eager"
FP32_ATOL = 1e-3  # FP32 runtimes against FP32 eager: float reordering only
PACKAGES = ("torch", "onnxruntime", "openvino", "nncf", "timm", "numpy")
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")  # what INT8/BF16 speed hinges on


class AgreementError(Exception):
    """A runner whose logits stray from the reference by more than the tolerance."""


def random_pixels(batch_size: int, image_size: int, seed: int) -> np.ndarray:
    """Seeded float32 images in [0, 1], shape (batch_size, 3, image_size, image_size)."""
    return np.random.default_rng(seed).random((batch_size, 3, image_size, image_size), dtype=np.float32)


def seconds_per_call(runner: Runner, pixels: np.ndarray) -> float:
    """Wall time of one call, in seconds."""
    start = time.perf_counter()
    runner(pixels)
    return time.perf_counter() - start


def round_orders(names: list[str], repeats: int) -> list[list[str]]:
    """Runner order per round: as given on even rounds, reversed on odd ones (A B C, C B A, ...)."""
    return [names if r % 2 == 0 else names[::-1] for r in range(repeats)]


def timed_rounds(
    runners: dict[str, Runner], inputs: list[np.ndarray], warmup: int, repeats: int
) -> dict[str, list[list[float]]]:
    """Seconds per call for each runner, input and round, after ``warmup`` untimed calls of each."""
    for runner in runners.values():
        for _ in range(warmup):
            for pixels in inputs:
                runner(pixels)
    times: dict[str, list[list[float]]] = {name: [[] for _ in inputs] for name in runners}
    for order in round_orders(list(runners), repeats):
        for name in order:
            for per_input, pixels in zip(times[name], inputs):
                per_input.append(seconds_per_call(runners[name], pixels))
    return times


def benchmark(
    runners: dict[str, Runner],
    image_size: int,
    *,
    warmup: int,
    repeats: int,
    batch_size: int = 32,
    seed: int = 0,
    reference: str = REFERENCE,
) -> dict[str, float]:
    """Batch-1 latency (p50, p90 in ms), batch-``batch_size`` throughput and speedups vs ``reference``.

    Keys: ``{name}_b1_p50_ms``, ``{name}_b1_p90_ms``, ``{name}_b{B}_img_s``, ``{name}_speedup_b1``
    (reference p50 / runner p50) and ``{name}_speedup_b{B}`` (runner img/s / reference img/s).
    """
    if reference not in runners:
        raise ValueError(f"speedups need a runner named {reference!r}; got {', '.join(runners)}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    inputs = [random_pixels(1, image_size, seed), random_pixels(batch_size, image_size, seed + 1)]
    times = timed_rounds(runners, inputs, warmup, repeats)
    bn = f"b{batch_size}"
    metrics: dict[str, float] = {}
    for name, (single, batched) in times.items():
        metrics[f"{name}_b1_p50_ms"] = float(np.percentile(single, 50) * 1e3)
        metrics[f"{name}_b1_p90_ms"] = float(np.percentile(single, 90) * 1e3)
        metrics[f"{name}_{bn}_img_s"] = float(batch_size / np.median(batched))
    for name in runners:
        metrics[f"{name}_speedup_b1"] = metrics[f"{reference}_b1_p50_ms"] / metrics[f"{name}_b1_p50_ms"]
        metrics[f"{name}_speedup_{bn}"] = metrics[f"{name}_{bn}_img_s"] / metrics[f"{reference}_{bn}_img_s"]
    return metrics


def check_agreement(
    runners: dict[str, Runner],
    pixels: np.ndarray,
    *,
    atol: float = math.inf,
    min_correlation: float = -1.0,
    reference: str = REFERENCE,
) -> dict[str, float]:
    """Max absolute logit difference, rank correlation and sign agreement of each runner vs ``reference``.

    Returns ``{name}_max_abs_diff``, ``{name}_rank_correlation`` (Spearman, over ``pixels``) and
    ``{name}_sign_agreement`` (fraction of images whose predicted class matches the reference) for
    every other runner. Raises :class:`AgreementError` naming every runner over ``atol`` or under
    ``min_correlation``, after all have been compared. FP32 runtimes are held to a tight ``atol``;
    INT8 moves logits by design (clipped activation ranges squash outlying logits most), so it is
    held to the ranking of the images, which is what ROC-AUC and a threshold use and what a broken
    graph loses.
    """
    if reference not in runners:
        raise ValueError(f"agreement needs a runner named {reference!r}; got {', '.join(runners)}")
    expected = runners[reference](pixels)
    metrics: dict[str, float] = {}
    too_far: list[str] = []
    for name, runner in runners.items():
        if name == reference:
            continue
        logits = runner(pixels)
        diff = float(np.max(np.abs(logits - expected)))
        correlation = float(spearmanr(logits, expected).statistic) if len(pixels) > 1 else 1.0
        metrics[f"{name}_max_abs_diff"] = diff
        metrics[f"{name}_rank_correlation"] = correlation
        metrics[f"{name}_sign_agreement"] = float(np.mean((logits > 0) == (expected > 0)))
        # written so that NaN logits fail too
        if not (diff <= atol and correlation >= min_correlation):
            too_far.append(f"{name} (max |logit diff| {diff:.4g}, correlation {correlation:.4f})")
    if too_far:
        raise AgreementError(
            f"logits differ from {reference} beyond atol={atol} / min correlation={min_correlation}: "
            + ", ".join(too_far)
        )
    return metrics


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


def cpu_info(cpuinfo_text: str) -> dict[str, object]:
    """CPU model name and the INT8/BF16-relevant instruction sets present, from /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in cpuinfo_text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields[key.strip()] = value.strip()  # every processor repeats the same model and flags
    flags = set(fields.get("flags", "").split())
    return {
        "cpu_model": fields.get("model name") or platform.processor() or "unknown",
        "cpu_isa": [flag for flag in ISA_FLAGS if flag in flags],
    }


def package_version(name: str) -> str:
    """Installed version of ``name``, or ``"not installed"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_facts(threads: int) -> dict[str, object]:
    """What the numbers depend on: CPU, cores, threads used and library versions."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = cpu_info(f.read())
    except OSError:  # not Linux
        cpu = cpu_info("")
    return {
        **cpu,
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        **{name: package_version(name) for name in PACKAGES},
    }
