"""Every artifact as a runner on CPU: eager PyTorch (FP32 or dynamic INT8 checkpoints),
``torch.compile``, ONNX Runtime and OpenVINO, and :func:`load_runner` picking the one for a file.

A runner maps float32 pixels in [0, 1] (N, 3, S, S) to float32 logits (N,), whatever the artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import openvino as ov
import openvino.properties as ov_props
import openvino.properties.hint as ov_hints
import torch
from torch import nn

from gclf.errors import ModelError
from gclf.export.artifact import DYNAMIC_INT8, existing_artifact, legacy_quantization_warnings_silenced
from gclf.export.quantize import quantize_dynamic_linear
from gclf.train.model import build_model, load_model, load_weights

Runner = Callable[[np.ndarray], np.ndarray]  # float32 pixels (N, 3, S, S) in [0, 1] -> float32 logits (N,)


def load_torch_artifact(path: str | Path) -> nn.Module:
    """Load a ``.pt`` file: a plain gclf checkpoint, or one written by
    :func:`gclf.export.quantize.save_dynamic_int8`."""
    try:
        with legacy_quantization_warnings_silenced():
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except Exception as e:  # truncated file, foreign pickle, ...: one message for the user
        raise ModelError(f"{path}: not a gclf checkpoint or corrupted ({type(e).__name__})") from None
    meta = ckpt.get("meta", {}) if isinstance(ckpt, dict) else {}
    if meta.get("quantization") != DYNAMIC_INT8:
        return load_model(path)[0]  # reads the file again, for load_model's own checks and messages
    # Quantized modules own packed weights, so the skeleton must be quantized before loading into it.
    model = quantize_dynamic_linear(build_model(meta["arch"], meta["head"], meta["dropout"]))
    with legacy_quantization_warnings_silenced():
        load_weights(model, ckpt["state_dict"], path, meta)
    return model.eval()


def torch_runner(model: nn.Module, threads: int) -> Runner:
    """Eager PyTorch on CPU with ``threads`` intra-op threads."""
    model = model.eval()

    def run(pixels: np.ndarray) -> np.ndarray:
        # Set on every call: torch threads are process-global and other torch runners may differ.
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return model(torch.from_numpy(pixels)).numpy().astype(np.float32, copy=False)

    return run


def compiled_torch_runner(path: str | Path, threads: int, example: np.ndarray) -> Runner | None:
    """FP32 ``.pt`` through ``torch.compile`` (inductor, C++ code: needs a compiler), or None if it
    fails to compile here, with the reason printed: the row is optional.

    Each batch size compiles on its first call (tens of seconds on 2 cores); ``example`` pays for
    one here, the benchmark's warm-up for the others.
    """
    runner = torch_runner(torch.compile(load_torch_artifact(path), dynamic=False), threads)
    try:
        runner(example)
    except Exception as e:  # no compiler, an op inductor cannot lower, ...: report and go on
        print(f"torch.compile unavailable, row skipped: {type(e).__name__}: {e}"[:300])
        return None
    return runner


def onnxruntime_runner(path: str | Path, threads: int) -> Runner:
    """ONNX Runtime CPU session: ``threads`` intra-op, one inter-op thread, all graph optimisations, no spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT threads otherwise spin for a while after each call, taking the cores from whatever
    # runs next: measured here, that doubled the latency of the torch runner benchmarked after it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(pixels: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: pixels})[0].astype(np.float32, copy=False)

    return run


def openvino_runner(path: str | Path, threads: int) -> Runner:
    """OpenVINO on CPU for an ``.xml`` IR or an ``.onnx`` file, any batch size.

    The latency hint keeps one stream using all ``threads`` for a single request; precision is
    pinned to f32 so ops left unquantized are not silently run in bf16 on CPUs that have it.
    """
    core = ov.Core()
    config = {
        ov_props.inference_num_threads(): threads,
        ov_hints.performance_mode(): ov_hints.PerformanceMode.LATENCY,
        ov_hints.inference_precision(): ov.Type.f32,
    }
    model = core.read_model(str(path))
    requests: dict[tuple[int, ...], ov.InferRequest] = {}

    def request_for(shape: tuple[int, ...]) -> ov.InferRequest:
        # Compiled for one exact shape, batch 1 ran ~1.5x faster than with a dynamic batch axis here.
        # Each new shape compiles once (well under a second); inference sees one or two shapes.
        if shape not in requests:
            fixed = model.clone()
            fixed.reshape(list(shape))
            requests[shape] = core.compile_model(fixed, "CPU", config).create_infer_request()
        return requests[shape]

    def run(pixels: np.ndarray) -> np.ndarray:
        request = request_for(pixels.shape)
        request.infer({0: pixels})
        # Copy: the output tensor is the request's buffer, overwritten by the next call.
        return np.array(request.get_output_tensor(0).data, dtype=np.float32).reshape(len(pixels))

    return run


def torch_checkpoint_runner(path: str | Path, threads: int) -> Runner:
    """Eager PyTorch for a ``.pt`` file, FP32 or dynamic INT8."""
    return torch_runner(load_torch_artifact(path), threads)


RUNNER_FACTORIES: dict[str, Callable[[Path, int], Runner]] = {
    ".pt": torch_checkpoint_runner,
    ".onnx": onnxruntime_runner,
    ".xml": openvino_runner,
}


def load_runner(path: str | Path, threads: int) -> Runner:
    """A runner for any artifact: ``.pt`` (FP32 or dynamic INT8), ``.onnx`` (ONNX Runtime), ``.xml`` (OpenVINO)."""
    path = existing_artifact(path)
    return RUNNER_FACTORIES[path.suffix](path, threads)
