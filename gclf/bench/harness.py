"""The timing harness: CPU speed of inference runners measured fairly against each other, and the
facts of the machine the numbers depend on.

Every runner is warmed up first, then rounds are interleaved across runners and their order flips
every round, so drift in the machine (thermal, other load, caches) spreads over all runners instead
of favouring one.
"""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata

import numpy as np

from gclf.export.agreement import REFERENCE
from gclf.export.runtime import Runner

PACKAGES = ("torch", "onnxruntime", "openvino", "nncf", "timm", "numpy")
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")  # what INT8/BF16 speed hinges on


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
