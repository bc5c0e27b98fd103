"""Peak anonymous memory: what a process holds itself (RssAnon), without the page cache of the files it
maps (the decoded-image store), which the kernel drops when memory is short."""

from __future__ import annotations

import threading


def rss_anon_mb() -> float:
    """This process's anonymous resident memory now, in MB (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024
    except (OSError, StopIteration):
        return 0.0


class PeakMemory:
    """The peak of :func:`rss_anon_mb` while the ``with`` block runs, sampled by a thread."""

    def __init__(self, every_s: float = 0.005):
        self.every_s, self.peak_mb = every_s, rss_anon_mb()
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_mb = max(self.peak_mb, rss_anon_mb())

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_anon_mb())
