"""gclf: a reproducible DVC pipeline for an EfficientNet face gender classifier."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]


def __getattr__(name: str) -> Any:
    """``gclf.Predictor`` on first use: importing it loads torch, ONNX Runtime and OpenVINO."""
    if name == "Predictor":
        from gclf.deploy.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'gclf' has no attribute {name!r}")
