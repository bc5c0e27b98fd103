"""The deployable artifacts and the meta they carry.

Which files the pipeline deploys (:data:`ARTIFACTS`), what inference needs in each one's meta
(architecture, image size, classes, temperature, thresholds, TTA views, input contract), reading
that meta back from any artifact (``.pt``, ``.onnx``, OpenVINO ``.xml``) without building a model,
and an artifact's size on disk.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import openvino as ov
import torch

from gclf.errors import ModelError
from gclf.export.onnx import META_KEY
from gclf.outputs import verified

DYNAMIC_INT8 = "dynamic_int8_linear"  # meta["quantization"] of a dynamically quantized checkpoint
INPUT_CONTRACT = "RGB float in [0,1], NCHW; normalisation inside the model"
REQUIRED_META = ("arch", "image_size", "classes")  # what inference cannot do without
ARTIFACT_SUFFIXES = (".pt", ".onnx", ".xml")  # a checkpoint (FP32 or dynamic INT8), ONNX, OpenVINO IR
ARTIFACTS = {  # benchmark row name -> pipeline file, reference first (the quantize and benchmark stages)
    "fp32_eager": "models/model.pt",
    "int8_dynamic_linear": "models/model_dynamic_int8.pt",
    "fp32_onnxruntime": "models/model.onnx",
    "int8_static": "models/int8/model.xml",
}


def input_pixels(images: torch.Tensor) -> np.ndarray:
    """Decoded uint8 images (N, 3, S, S) as every artifact takes them (:data:`INPUT_CONTRACT`):
    contiguous float32 in [0, 1]."""
    return images.float().div(255).contiguous().numpy()


def deployment_meta(
    meta: dict[str, Any],
    threshold: float,
    tta_threshold: float,
    tta_views: list[str] | tuple[str, ...],
    temperature: float = 1.0,
) -> dict[str, Any]:
    """A checkpoint's meta plus what deployment needs: the temperature and thresholds fitted on
    validation (P = sigmoid(logit / temperature), compared with the threshold), the TTA views,
    the input contract."""
    return {
        **meta,
        "temperature": temperature,
        "threshold": threshold,
        "tta_threshold": tta_threshold,
        "tta_views": list(tta_views),
        "input": INPUT_CONTRACT,
    }


@contextmanager
def legacy_quantization_warnings_silenced() -> Iterator[None]:
    """Hide the deprecation notices of torch.ao quantized tensors, for the dynamic INT8 row only.

    torch.ao.quantization is deprecated in favour of torchao; the row exists to show the seed
    project's method, so its notices are known and would only bury real warnings in stage logs.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")  # packing qint8 weights
        warnings.filterwarnings("ignore", message=r"TypedStorage is deprecated")  # (un)pickling qint8 tensors
        yield


def artifact_size_mb(path: str | Path) -> float:
    """Size on disk in MB (10**6 bytes); an OpenVINO ``.xml`` counts with its ``.bin``."""
    path = Path(path)
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return sum(f.stat().st_size for f in files) / 1e6


def existing_artifact(path: str | Path) -> Path:
    """``path`` as a Path if it is an artifact file of a known kind from a complete output set
    (:func:`gclf.outputs.verified`), else :class:`ModelError` or :class:`~gclf.outputs.IncompleteOutputs`."""
    path = Path(path)
    if path.suffix not in ARTIFACT_SUFFIXES:
        raise ModelError(f"{path}: unknown artifact type {path.suffix!r} (expected {', '.join(ARTIFACT_SUFFIXES)})")
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    return verified(path)


def _embedded_meta_text(path: Path) -> str | None:
    """The JSON meta string stored in an ``.onnx`` or ``.xml`` file, or None when it has none."""
    if path.suffix == ".onnx":
        graph = onnx.load(str(path), load_external_data=False)
        return next((p.value for p in graph.metadata_props if p.key == META_KEY), None)
    model = ov.Core().read_model(str(path))
    return model.get_rt_info(META_KEY).astype(str) if model.has_rt_info(META_KEY) else None


def read_artifact_meta(path: str | Path) -> dict[str, Any]:
    """The meta stored in any artifact (``.pt``, ``.onnx``, ``.xml``), read without building a model.

    Raises :class:`ModelError` for a missing, corrupted or foreign file, or one without gclf meta.
    """
    path = existing_artifact(path)
    try:
        if path.suffix == ".pt":
            with legacy_quantization_warnings_silenced():
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
            meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
        else:
            text = _embedded_meta_text(path)
            meta = None if text is None else json.loads(text)
    except Exception as e:  # truncated file, foreign pickle, broken IR or protobuf: one message for the user
        raise ModelError(f"{path}: not a gclf artifact or corrupted ({type(e).__name__})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: carries no gclf metadata; export it again with the quantize stage")
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise ModelError(f"{path}: its gclf metadata lacks {', '.join(missing)}")
    return meta
