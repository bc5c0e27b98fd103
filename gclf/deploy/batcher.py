"""Dynamic batching for ``gclf serve``: items from concurrent requests share one model call.

The queue is bounded: a request whose items do not fit is refused at once (:class:`QueueFull`,
answered 503), so memory does not grow with the load. Items whose request has been given up (its
client went away, or its deadline passed: the request cancels its wait) are dropped before the
model runs, never predicted for no one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

Item = TypeVar("Item")
log = logging.getLogger("uvicorn.error")  # uvicorn's own log, so gclf's lines keep its format and level


class QueueFull(Exception):
    """The batcher holds as many items as it may: the request is refused rather than queued."""


class BatcherStopped(Exception):
    """The batching task is not running (it failed, or the service is stopping): nothing would be predicted."""


@dataclass
class BatchStats:
    """What the batcher has done in this worker: shown by ``GET /meta``."""

    batches: int = 0
    images: int = 0
    largest: int = 0
    dropped: int = 0  # items given up by their request before the model ran: not predicted
    refused: int = 0  # items refused because the queue was full


@dataclass
class Waiting(Generic[Item]):
    item: Item
    since: float  # loop time it arrived: its wait is bounded, however long the model was busy
    done: asyncio.Future


class Batcher(Generic[Item]):
    """Items from concurrent requests gathered into one call of ``handle(items)``.

    A call starts once ``max_batch`` items wait or the oldest has waited ``max_wait_s``. Calls run
    one at a time in a thread of their own, so the event loop goes on reading requests while the
    model runs, and the next batch gathers meanwhile. At most ``capacity`` items wait. :meth:`start`
    starts the one task that makes calls; :attr:`alive` says whether it still runs.
    """

    def __init__(self, handle: Callable[[list[Item]], None], max_batch: int, max_wait_s: float, capacity: int):
        self.handle, self.max_batch, self.max_wait_s, self.capacity = handle, max_batch, max_wait_s, capacity
        self.stats = BatchStats()
        self._waiting: deque[Waiting[Item]] = deque()
        self._arrived = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="gclf-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gclf-batcher")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def failure(self) -> str:
        """Why the batching task stopped, in one line ("" while it runs)."""
        if self.alive:
            return ""
        if self._task is None or self._task.cancelled():
            return "not running"
        error = self._task.exception()
        return f"{type(error).__name__}: {error}" if error else "ended"

    async def submit(self, items: list[Item]) -> None:
        """Wait until all ``items`` have been handled; the handler's exception, if it raised. Raises
        :class:`QueueFull` when they do not fit (an empty queue takes any number: a request of more
        items than ``capacity`` is served when it comes alone) and :class:`BatcherStopped` when no
        task would handle them. Cancelling the wait drops the items not yet handled."""
        if not self.alive:
            raise BatcherStopped(self.failure())
        if self._waiting and len(self._waiting) + len(items) > self.capacity:
            self.stats.refused += len(items)
            raise QueueFull(f"{len(self._waiting)} images wait for the model (at most {self.capacity})")
        loop = asyncio.get_running_loop()
        waits = [Waiting(item, loop.time(), loop.create_future()) for item in items]
        self._waiting.extend(waits)
        self._arrived.set()
        try:
            await asyncio.gather(*(w.done for w in waits))
        except BaseException:  # cancelled, or one failed: the others are dropped, not predicted for no one
            for waiting in waits:
                waiting.done.cancel()
            raise

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._thread.shutdown(wait=True, cancel_futures=True)

    async def _run(self) -> None:
        batch: list[Waiting[Item]] = []
        try:
            while True:
                batch = await self._gather()
                await self._call(batch)
                batch = []
        except BaseException as e:  # a bug here would leave every request waiting: fail them now
            if not isinstance(e, asyncio.CancelledError):
                log.error("gclf serve: the batching task failed; /health now answers 503", exc_info=e)
            for waiting in [*batch, *self._waiting]:
                if not waiting.done.done():
                    waiting.done.set_exception(BatcherStopped(f"{type(e).__name__}: {e}"))
            self._waiting.clear()
            raise

    async def _gather(self) -> list[Waiting[Item]]:
        """The next batch: up to ``max_batch`` items, once it is full or its oldest item's wait is over."""
        loop = asyncio.get_running_loop()
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._waiting[0].since + self.max_wait_s
        while len(self._waiting) < self.max_batch and (remaining := deadline - loop.time()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return [self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))]

    async def _call(self, gathered: list[Waiting[Item]]) -> None:
        batch = [waiting for waiting in gathered if not waiting.done.done()]  # given up meanwhile: dropped
        self.stats.dropped += len(gathered) - len(batch)
        if not batch:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self.handle, [w.item for w in batch])
        except Exception as e:  # the requests of this batch fail with it; the service goes on
            for waiting in batch:
                if not waiting.done.done():
                    waiting.done.set_exception(e)
            return
        self.stats.batches += 1
        self.stats.images += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        for waiting in batch:
            if not waiting.done.done():
                waiting.done.set_result(None)
