"""Export, quantize and run the classifier on CPU: every artifact becomes a ``runner``.

Static INT8 uses OpenVINO + NNCF post-training quantization: on this 2-core AVX-512/VNNI CPU it
was the fastest measured INT8 path (4x eager at batch 1), while ONNX Runtime QDQ INT8 was slower
than ONNX Runtime FP32 and torchao PT2E needs a static batch and torch.compile at load time.

A runner maps float32 pixels in [0, 1] (N, 3, S, S) to float32 logits (N,), whatever the artifact.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnxruntime as ort
import openvino as ov
import openvino.properties as ov_props
import openvino.properties.hint as ov_hints
import torch
from torch import nn

from gclf.bench import Runner
from gclf.io import atomic_write
from gclf.model import ModelError, build_model, load_model

ONNX_OPSET = 18  # the opset the torch.export-based exporter targets natively (no version conversion)
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
DYNAMIC_INT8 = "dynamic_int8_linear"  # meta["quantization"] of a dynamically quantized checkpoint
ARTIFACTS = {  # benchmark row name -> pipeline file, reference first (the quantize and benchmark stages)
    "fp32_eager": "models/train_phase2.pt",
    "int8_dynamic_linear": "models/model_dynamic_int8.pt",
    "fp32_onnxruntime": "models/model.onnx",
    "int8_static": "models/model_int8.xml",
}


def export_onnx(model: nn.Module, path: str | Path, image_size: int, opset: int = ONNX_OPSET) -> None:
    """Write ``model`` as one self-contained FP32 ONNX file with a dynamic batch axis."""
    example = torch.rand(2, 3, image_size, image_size)  # batch 2: a batch of 1 could be specialised away
    program = torch.onnx.export(
        model.eval(),
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    # Weights inline (no .onnx.data beside it): one file is what DVC tracks and atomic_write renames.
    atomic_write(path, lambda tmp: program.save(tmp, external_data=False))


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


def quantize_dynamic_linear(model: nn.Module) -> nn.Module:
    """INT8 weights for ``nn.Linear`` only, activations quantized on the fly: the seed project's method.

    Kept as a comparison row: the convolutions, where EfficientNet spends its time, stay FP32.
    """
    with legacy_quantization_warnings_silenced():
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def save_dynamic_int8(path: str | Path, quantized: nn.Module, meta: dict[str, Any]) -> None:
    """Save a :func:`quantize_dynamic_linear` model as a state dict; meta says how to rebuild it."""
    state = {"state_dict": quantized.state_dict(), "meta": {**meta, "quantization": DYNAMIC_INT8}}
    with legacy_quantization_warnings_silenced():
        atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_torch_artifact(path: str | Path) -> nn.Module:
    """Load a ``.pt`` file: a plain gclf checkpoint, or one written by :func:`save_dynamic_int8`."""
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
        model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def _to_openvino(source: nn.Module | str | Path, image_size: int) -> ov.Model:
    """An OpenVINO model with a dynamic batch axis, from a torch module or an ONNX file."""
    if not isinstance(source, nn.Module):
        return ov.convert_model(str(source))
    # Through ONNX rather than ov.convert_model(module): that traces with the deprecated torch.jit.
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(source, onnx_path, image_size)
        return ov.convert_model(str(onnx_path))


def quantize_static(
    source: nn.Module | str | Path,
    calibration: np.ndarray,
    out_path: str | Path,
) -> None:
    """Post-training INT8 (weights and activations, convolutions included) to OpenVINO IR ``.xml`` + ``.bin``.

    ``calibration`` is float32 (N, 3, S, S) in [0, 1], as the model sees in inference; NNCF fixes
    activation ranges on all N images (the caller picks N: ``quantize.calibration_images``).
    """
    import nncf  # here, not at the top: importing it takes seconds and only this stage needs it

    if calibration.ndim != 4 or calibration.shape[1] != 3 or calibration.shape[2] != calibration.shape[3]:
        raise ValueError(f"calibration must be (N, 3, S, S), got {calibration.shape}")
    fp32 = _to_openvino(source, calibration.shape[-1])
    images = [image[None] for image in calibration.astype(np.float32, copy=False)]  # batches of one image
    int8 = nncf.quantize(fp32, nncf.Dataset(images), subset_size=len(images))
    _save_openvino_ir(int8, Path(out_path))


def _save_openvino_ir(model: ov.Model, xml_path: Path) -> None:
    """Save IR beside ``xml_path`` via a temporary folder, so a killed run leaves no half-written pair."""
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml_path.parent, prefix=f".{xml_path.name}.") as tmp:
        staged = Path(tmp) / xml_path.name
        # FP32 stays FP32 in the file: INT8 weights are already small, and fp16 would only cost accuracy.
        ov.save_model(model, str(staged), compress_to_fp16=False)
        # .bin first: the .xml names the pair, so it appears only when its weights are in place.
        os.replace(staged.with_suffix(".bin"), xml_path.with_suffix(".bin"))
        os.replace(staged, xml_path)


def artifact_size_mb(path: str | Path) -> float:
    """Size on disk in MB (10**6 bytes); an OpenVINO ``.xml`` counts with its ``.bin``."""
    path = Path(path)
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return sum(f.stat().st_size for f in files) / 1e6


def torch_runner(model: nn.Module, threads: int) -> Runner:
    """Eager PyTorch on CPU with ``threads`` intra-op threads."""
    model = model.eval()

    def run(pixels: np.ndarray) -> np.ndarray:
        # Set on every call: torch threads are process-global and other torch runners may differ.
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return model(torch.from_numpy(pixels)).numpy().astype(np.float32, copy=False)

    return run


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
    path = Path(path)
    if path.suffix not in RUNNER_FACTORIES:
        raise ModelError(f"{path}: unknown artifact type {path.suffix!r} (expected {', '.join(RUNNER_FACTORIES)})")
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    return RUNNER_FACTORIES[path.suffix](path, threads)
