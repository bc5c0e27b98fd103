"""Using a trained artifact outside the pipeline: ``gclf predict`` (:class:`gclf.deploy.predict.Predictor`)
and ``gclf serve``, the HTTP service (the ``serve`` extra); docs/code.md."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on (a container or ``taskset`` may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
