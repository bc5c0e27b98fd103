"""The overload and slow-header phases of ``gclf bench-serve``: ``gclf serve`` past its limits.

Overload: ``count`` requests sent at once, each a noise PNG of about 1 MB on a connection of its
own; a bounded service answers each with 200 or 503 and its memory stays flat. Slow headers:
``count`` sockets each send half a request line and stall; the service closes each within its
header deadline and stays responsive meanwhile. For each phase: what the clients got (status
counts), each worker's peak RSS growth over the phase (Linux's ``VmHWM``, reset at the start
through ``/proc/PID/clear_refs``), and the latency of ``GET /health`` on a fresh connection every
:data:`PROBE_INTERVAL_S`, as a load balancer's health check would see it.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import numpy as np
from PIL import Image

PROBE_INTERVAL_S = 0.05
OVERLOAD_IMAGE_SIDE = 600  # noise does not compress: 600 x 600 x 3 bytes is a PNG of about 1.08 MB
SPAWNED_WORKER = b"spawn_main"  # in the command line of the worker processes uvicorn starts
HALF_A_REQUEST_LINE = b"GET /health HT"
CLOSE_GRACE_S = 5.0  # how long past the header deadline a stalled socket is watched before it counts as open
# the server's clock starts when it accepts a socket, which in a burst of connections comes a little
# after the client's connect returns: closed this long past the deadline still counts as within it
ACCEPT_SLACK_S = 0.5


def noise_png(side: int = OVERLOAD_IMAGE_SIDE) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


# --- the server's memory ----------------------------------------------------------------------


def worker_pids(server_pid: int) -> list[int]:
    """The processes that serve: the workers uvicorn spawned, or the server itself when it runs one."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            spawned = parent == server_pid and SPAWNED_WORKER in (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # it exited meanwhile
            continue
        if spawned:
            children.append(int(entry.name))
    return sorted(children) or [server_pid]


def status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory figure (``VmRSS``, ``VmHWM``) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/{pid}/status")


class PeakMemory:
    """Each worker's resident memory now, its peak reset to it; :meth:`growth_mb` is the peak since."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.start_kb = {}
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset VmHWM to the current RSS
            self.start_kb[pid] = status_kb(pid, "VmRSS")

    def growth_mb(self) -> dict[str, float]:
        return {str(pid): (status_kb(pid, "VmHWM") - kb) / 1024 for pid, kb in self.start_kb.items()}


# --- /health meanwhile ------------------------------------------------------------------------


async def health_latency(host: str, port: int) -> float:
    """Seconds from connecting to the end of a ``GET /health`` answer; raises unless it is 200."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
    finally:
        writer.close()
    if not answer.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(answer.split(b"\r\n", 1)[0].decode(errors="replace") or "no answer")
    return loop.time() - start


@asynccontextmanager
async def probing_health(url: str) -> AsyncIterator[dict[str, Any]]:
    """Probes ``/health`` while the block runs; the dict then holds p50/p99 ms and the failed probes."""
    parts = urlsplit(url)
    latencies: list[float] = []
    failures = Counter[str]()
    figures: dict[str, Any] = {}

    async def probe() -> None:
        while True:
            try:
                latencies.append(await asyncio.wait_for(health_latency(parts.hostname, parts.port), 30))
            except (OSError, asyncio.TimeoutError) as e:
                failures[type(e).__name__] += 1
            await asyncio.sleep(PROBE_INTERVAL_S)

    task = asyncio.create_task(probe())
    try:
        yield figures
    finally:
        task.cancel()
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000 if latencies else (float("nan"), float("nan"))
    figures.update(health_p50_ms=float(p50), health_p99_ms=float(p99), health_probes=len(latencies))
    figures["health_failures"] = dict(failures)


# --- the phases -------------------------------------------------------------------------------


async def overload(url: str, server_pid: int, image: bytes, count: int) -> dict[str, Any]:
    """``count`` requests of ``image`` at once, each on its own connection."""
    statuses = Counter[str]()

    async def one(session: aiohttp.ClientSession) -> None:
        form = aiohttp.FormData()
        form.add_field("file", image, filename="overload.png", content_type="image/png")
        try:
            async with session.post(f"{url}/predict", data=form) as response:
                await response.read()
                statuses[str(response.status)] += 1
        except aiohttp.ClientError as e:
            statuses[type(e).__name__] += 1

    memory = PeakMemory(worker_pids(server_pid))
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with probing_health(url) as health:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)  # no pool: every request a connection
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(one(session) for _ in range(count)))
    rss = memory.growth_mb()
    return {
        "requests": count,
        "image_bytes": len(image),
        "seconds": loop.time() - start,
        "statuses": dict(sorted(statuses.items())),
        "rss_growth_mb": rss,
        "rss_growth_mb_max": max(rss.values()),
        **health,
    }


async def slow_headers(url: str, server_pid: int, count: int, header_timeout_s: float) -> dict[str, Any]:
    """``count`` sockets that send half a request line and stall: how the server ends each, and when."""
    parts = urlsplit(url)
    outcomes = Counter[str]()
    closed_after: list[float] = []
    loop = asyncio.get_running_loop()

    async def one() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(HALF_A_REQUEST_LINE)
        start = loop.time()
        try:
            answer = await asyncio.wait_for(reader.read(), header_timeout_s + CLOSE_GRACE_S)
        except asyncio.TimeoutError:
            outcomes["still open"] += 1
            return
        except OSError as e:
            outcomes[type(e).__name__] += 1
        else:
            outcomes[answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed silently"] += 1
        finally:
            writer.close()
        closed_after.append(loop.time() - start)

    memory = PeakMemory(worker_pids(server_pid))
    start = loop.time()
    async with probing_health(url) as health:
        await asyncio.gather(*(one() for _ in range(count)))
    rss = memory.growth_mb()
    return {
        "sockets": count,
        "header_timeout_s": header_timeout_s,
        "seconds": loop.time() - start,
        "statuses": dict(sorted(outcomes.items())),
        "closed_after_max_s": max(closed_after, default=float("nan")),
        "closed_within_deadline": sum(s <= header_timeout_s + ACCEPT_SLACK_S for s in closed_after),
        "rss_growth_mb": rss,
        "rss_growth_mb_max": max(rss.values()),
        **health,
    }
