"""Using a trained artifact outside the pipeline: :mod:`gclf.deploy.predict` (``gclf predict``, :class:`Predictor`),
:mod:`gclf.deploy.serve` (``gclf serve``, an HTTP service; the ``serve`` extra) and its load test,
:mod:`gclf.bench.serve` (``gclf bench-serve``)."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on (a container or ``taskset`` may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
