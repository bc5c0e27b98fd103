"""``gclf bench-serve``: a load test of ``gclf serve`` against in-process ``gclf predict`` on the same images.

The server starts in its own process on a free port; for each concurrency, the in-process
:class:`~gclf.deploy.predict.Predictor` is timed on the images while the server idles, then that
many clients (aiohttp, keep-alive connections) post one image per request, back to back, for a
fixed time: images/s, p50 and p99 latency and errors per concurrency, and each rate as a fraction
of the in-process one measured just before (docs/serve.md). Then the server is pushed past its
limits: an overload and a slow-header phase (:mod:`gclf.bench.stress`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import numpy as np
import torch

from gclf.bench.harness import machine_facts
from gclf.bench.stress import noise_png, overload, slow_headers
from gclf.data.synthetic import make_synthetic
from gclf.deploy.connections import raise_open_file_limit
from gclf.deploy.inputs import Inputs
from gclf.deploy.predict import DEFAULT_TTA_VIEWS, Predictor
from gclf.deploy.serveconfig import STOPPED
from gclf.errors import UserError
from gclf.export.artifact import deployment_meta
from gclf.train.model import artifact_meta, build_model, save_model

UTKFACE = "../shared/data/utkface"  # where the README's examples keep UTKFace; used when present
STARTUP_TIMEOUT_S = 300  # each worker imports torch and loads the model; slow on busy cores
WARMUP_S = 3.0  # at the highest concurrency, untimed: every worker has loaded and run its first batches


@dataclass(frozen=True)
class RunningServer:
    url: str
    pid: int


@dataclass
class Level:
    """One concurrency's figures."""

    clients: int
    requests: int
    errors: int
    images_per_s: float
    p50_ms: float
    p99_ms: float


def bench_images(inputs: list[str], count: int, image_size: int, folder: str) -> list[str]:
    """Up to ``count`` image files from ``inputs`` (anything ``gclf predict`` takes); without inputs,
    UTKFace's when present, else ``count`` faces of the embedded synthetic dataset written to ``folder``."""
    if not inputs and os.path.isdir(UTKFACE):
        inputs = [UTKFACE]
    if not inputs:
        return [os.path.join(folder, rel) for rel, _, _ in make_synthetic(folder, count, seed=0, image_size=image_size)]
    paths = list(itertools.islice((path for path, error in Inputs(inputs) if not error), count))
    if not paths:
        raise UserError(f"no images in {' '.join(inputs)}")
    return paths


def random_checkpoint(path: str, arch: str, head: str, image_size: int) -> str:
    """An FP32 checkpoint with random weights and threshold 0.5: for speed only, like ``gclf bench``."""
    torch.manual_seed(0)
    model = build_model(arch, head, dropout=0.0).eval()
    meta = deployment_meta(artifact_meta(arch, head, 0.0, image_size, model), 0.5, 0.5, DEFAULT_TTA_VIEWS)
    save_model(path, model, meta)
    return path


def in_process_rate(predictor: Predictor, paths: list[str]) -> float:
    """Images/s of ``gclf predict`` (a :class:`Predictor`) on ``paths``: decode and model, as the server does."""
    start = time.perf_counter()
    rows = predictor.predict(paths)
    elapsed = time.perf_counter() - start
    failed = [row for row in rows if row["error"]]
    if failed:
        raise UserError(f"{len(failed)} images cannot be predicted, as {failed[0]['path']}: {failed[0]['error']}")
    return len(paths) / elapsed


# --- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(serve_args: list[str], log_path: str) -> Iterator[RunningServer]:
    """``gclf serve`` with ``serve_args`` in its own process on a free port, its output in ``log_path``;
    yields it once ``/health`` answers, and stops it (SIGTERM: uvicorn's graceful shutdown)."""
    port = free_port()
    command = [sys.executable, "-c", "from gclf.cli import main; main()", "serve", *serve_args, "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log_path)
        yield RunningServer(url, process.pid)
    except BaseException:
        halt(process)
        raise
    halt(process)
    # uvicorn raises the signal again once it has shut down, so the status is 0 or SIGTERM's either way
    if process.returncode not in (0, -signal.SIGTERM) or STOPPED not in Path(log_path).read_text(errors="replace"):
        raise UserError(f"gclf serve did not stop cleanly on SIGTERM (exit code {process.returncode}; log: {log_path})")


def halt(process: subprocess.Popen) -> None:
    """SIGTERM, as a service manager stops a service; SIGKILL if it has not exited a minute later."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_healthy(url: str, process: subprocess.Popen, log_path: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-1:]
            raise UserError(f"gclf serve exited with code {process.returncode}: {' '.join(tail)} (log: {log_path})")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet
            time.sleep(0.2)
    raise UserError(f"gclf serve did not answer /health within {STARTUP_TIMEOUT_S} s (log: {log_path})")


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


# --- the clients ------------------------------------------------------------------------------


async def load(url: str, images: list[tuple[str, bytes]], clients: int, seconds: float) -> Level:
    """``clients`` clients each posting one image per request, back to back, for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def client(session: aiohttp.ClientSession, first: int) -> None:
        nonlocal errors
        for index in itertools.count(first, clients):
            if loop.time() >= deadline:
                return
            name, data = images[index % len(images)]
            form = aiohttp.FormData()
            form.add_field("file", data, filename=name, content_type="application/octet-stream")
            start = time.perf_counter()
            try:
                async with session.post(f"{url}/predict", data=form) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session, i) for i in range(clients)))
    elapsed = time.perf_counter() - start
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000 if latencies else (float("nan"), float("nan"))
    return Level(clients, len(latencies) + errors, errors, len(latencies) / elapsed, float(p50), float(p99))


# --- the benchmark ----------------------------------------------------------------------------


def bench_serve(
    model: str | None,
    inputs: list[str],
    *,
    count: int,
    concurrency: list[int],
    seconds: float,
    workers: int,
    threads: int,
    max_batch: int,
    max_wait_ms: float,
    arch: str,
    head: str,
    image_size: int,
    overload_requests: int,
    stalled_sockets: int,
    header_timeout_s: float,
) -> dict[str, Any]:
    """The load test's figures: per concurrency a :class:`Level`, with the in-process images/s measured
    just before; then the overload and slow-header phases (none for a count of 0)."""
    described = model or f"random weights ({arch}, {head} head)"
    with tempfile.TemporaryDirectory(prefix="gclf-bench-serve-") as tmp:
        if model is None:
            model = random_checkpoint(os.path.join(tmp, "model.pt"), arch, head, image_size)
        paths = bench_images(inputs, count, image_size, os.path.join(tmp, "images"))
        predictor = Predictor(model, threads=threads, batch_size=max_batch)
        predictor.predict(paths[:max_batch])  # untimed: the first calls allocate
        images = [(os.path.basename(path), Path(path).read_bytes()) for path in paths]
        serve_args = ["--model", model, "--workers", str(workers), "--max-batch", str(max_batch)]
        serve_args += ["--max-wait-ms", str(max_wait_ms), "--header-timeout-s", str(header_timeout_s)]
        levels = []
        phases: dict[str, Any] = {}
        raise_open_file_limit()  # the overload phase opens a connection per request
        with running_server(serve_args, os.path.join(tmp, "serve.log")) as server:
            url = server.url
            asyncio.run(load(url, images, max(concurrency), WARMUP_S))
            for clients in concurrency:
                # in-process right before each level (the idle server takes no CPU): on a machine
                # shared with other work, each ratio compares two runs under the same load
                rate = in_process_rate(predictor, paths)
                levels.append(
                    {**asdict(asyncio.run(load(url, images, clients, seconds))), "in_process_images_per_s": rate}
                )
            if overload_requests:
                phases["overload"] = asyncio.run(overload(url, server.pid, noise_png(), overload_requests))
            if stalled_sockets:
                phases["slow_headers"] = asyncio.run(slow_headers(url, server.pid, stalled_sockets, header_timeout_s))
            meta = get_json(f"{url}/meta")
    return {
        "cpu_model": machine_facts(threads)["cpu_model"],
        "cores": threads,
        "model": described,
        "image_size": meta["image_size"],
        "images": len(paths),
        "seconds_per_level": seconds,
        "workers": workers,
        "threads_per_worker": meta["worker"]["threads"],
        "max_batch": max_batch,
        "max_wait_ms": max_wait_ms,
        "levels": levels,
        **phases,
        "batching_one_worker": meta["batching"],
        "requests_one_worker": meta["requests"],
    }


def report_table(report: dict[str, Any]) -> str:
    """A Markdown table: per concurrency, images/s, latency, errors, and the in-process rate measured just before."""
    lines = [
        "| clients | images/s | p50 ms | p99 ms | errors / requests | in-process images/s | served / in-process |",
        "|---|---|---|---|---|---|---|",
    ]
    for level in report["levels"]:
        rate = level["in_process_images_per_s"]
        lines.append(
            f"| {level['clients']} | {level['images_per_s']:.1f} | {level['p50_ms']:.1f} | {level['p99_ms']:.1f} "
            f"| {level['errors']} / {level['requests']} | {rate:.1f} | {level['images_per_s'] / rate:.0%} |"
        )
    phases = [(name, report[name]) for name in ("overload", "slow_headers") if name in report]
    if phases:
        lines += [
            "",
            "| phase | what the clients got | seconds | peak RSS growth, MB (largest worker) | /health p50 / p99 ms |",
            "|---|---|---|---|---|",
        ]
    for name, phase in phases:
        statuses = ", ".join(f"{status}: {n}" for status, n in phase["statuses"].items())
        if name == "overload":
            what = f"{phase['requests']} requests of {phase['image_bytes'] / 1e6:.2f} MB at once: {statuses}"
        else:
            what = (
                f"{phase['sockets']} stalled sockets: {statuses}; {phase['closed_within_deadline']} closed within the "
                f"{phase['header_timeout_s']:g} s header deadline, the last after {phase['closed_after_max_s']:.2f} s"
            )
        failed = f" ({sum(phase['health_failures'].values())} probes failed)" if phase["health_failures"] else ""
        lines.append(
            f"| {name.replace('_', ' ')} | {what} | {phase['seconds']:.1f} | {phase['rss_growth_mb_max']:.0f} "
            f"| {phase['health_p50_ms']:.1f} / {phase['health_p99_ms']:.1f}{failed} |"
        )
    return "\n".join(lines)
