"""Progress that shows in a terminal and in a log: a tqdm bar on a TTY, else a plain line every so often.

``dvc exp run`` and CI capture output without a terminal, where tqdm (``disable=None``) shows
nothing; a line every ``every`` items (and at the end) says how far a long loop is and how fast.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(
    items: Iterable[T], desc: str, total: int | None = None, unit: str = "batch", every: int = 50, file=None
) -> Iterator[T]:
    """Iterate ``items`` with a tqdm bar when ``file`` (default stderr) is a terminal, else print
    ``desc: done/total unit (rate unit/s)`` every ``every`` items and after the last one."""
    file = file or sys.stderr
    if file.isatty():
        yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False, file=file)
        return
    total = total if total is not None else getattr(items, "__len__", lambda: None)()
    start, done = time.perf_counter(), 0
    for done, item in enumerate(items, 1):
        yield item
        if done % every == 0 or done == total:
            rate = done / max(time.perf_counter() - start, 1e-9)
            print(
                f"{desc}: {done}/{total if total is not None else '?'} {unit} ({rate:.1f} {unit}/s)",
                file=file,
                flush=True,
            )
