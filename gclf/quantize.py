"""Export, quantize and run the classifier on CPU: every artifact becomes a ``runner``.

Static INT8 uses OpenVINO + NNCF post-training quantization: on this 2-core AVX-512/VNNI CPU it
was the fastest measured INT8 path (4x eager at batch 1), while ONNX Runtime QDQ INT8 was slower
than ONNX Runtime FP32 and torchao PT2E needs a static batch and torch.compile at load time.

A runner maps float32 pixels in [0, 1] (N, 3, S, S) to float32 logits (N,), whatever the artifact.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import openvino.properties as ov_props
import openvino.properties.hint as ov_hints
import torch
from torch import nn

from gclf.io import atomic_write
from gclf.model import ModelError, build_model, load_model, save_model

Runner = Callable[[np.ndarray], np.ndarray]  # float32 pixels (N, 3, S, S) in [0, 1] -> float32 logits (N,)

ONNX_OPSET = 18  # the opset the torch.export-based exporter targets natively (no version conversion)
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
DYNAMIC_INT8 = "dynamic_int8_linear"  # meta["quantization"] of a dynamically quantized checkpoint
META_KEY = "gclf"  # ONNX metadata_props key / OpenVINO rt_info key of the artifact's meta, a JSON string
INPUT_CONTRACT = "RGB float in [0,1], NCHW; normalisation inside the model"
REQUIRED_META = ("arch", "image_size", "classes")  # what inference cannot do without
ARTIFACTS = {  # benchmark row name -> pipeline file, reference first (the quantize and benchmark stages)
    "fp32_eager": "models/model.pt",
    "int8_dynamic_linear": "models/model_dynamic_int8.pt",
    "fp32_onnxruntime": "models/model.onnx",
    "int8_static": "models/model_int8.xml",
}


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


def export_onnx(
    model: nn.Module,
    path: str | Path,
    image_size: int,
    opset: int = ONNX_OPSET,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` as one self-contained FP32 ONNX file with a dynamic batch axis; ``meta`` goes
    into the file's ``metadata_props`` under :data:`META_KEY`."""
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
    if meta is not None:
        program.model.metadata_props[META_KEY] = json.dumps(meta)
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
    try:
        with legacy_quantization_warnings_silenced():
            model.load_state_dict(ckpt["state_dict"])
    except RuntimeError:  # as in load_model: a page of key names would not help the user
        raise ModelError(
            f"{path}: its weights do not fit a {meta['arch']} with a {meta['head']} head "
            "(an artifact of another architecture?)"
        ) from None
    return model.eval()


def write_artifacts(
    model: nn.Module, meta: dict[str, Any], calibration: np.ndarray, paths: dict[str, str] = ARTIFACTS
) -> None:
    """Every artifact of :data:`ARTIFACTS` (at ``paths``) from an FP32 model: the checkpoint, the ONNX
    export, the dynamic INT8 of the Linear layers and the static INT8 IR calibrated on ``calibration``."""
    save_model(paths["fp32_eager"], model, meta)
    export_onnx(model, paths["fp32_onnxruntime"], calibration.shape[-1], meta=meta)
    save_dynamic_int8(paths["int8_dynamic_linear"], quantize_dynamic_linear(model), meta)
    quantize_static(paths["fp32_onnxruntime"], calibration, paths["int8_static"], meta=meta)


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
    meta: dict[str, Any] | None = None,
) -> None:
    """Post-training INT8 (weights and activations, convolutions included) to OpenVINO IR ``.xml`` + ``.bin``.

    ``calibration`` is float32 (N, 3, S, S) in [0, 1], as the model sees in inference; NNCF fixes
    activation ranges on all N images (the caller picks N: ``quantize.calibration_images``).
    ``meta`` goes into the IR's ``rt_info`` under :data:`META_KEY`.
    """
    import nncf  # here, not at the top: importing it takes seconds and only this stage needs it

    if calibration.ndim != 4 or calibration.shape[1] != 3 or calibration.shape[2] != calibration.shape[3]:
        raise ValueError(f"calibration must be (N, 3, S, S), got {calibration.shape}")
    fp32 = _to_openvino(source, calibration.shape[-1])
    images = [image[None] for image in calibration.astype(np.float32, copy=False)]  # batches of one image
    # MIXED: asymmetric activation ranges (symmetric weights). EfficientNet's SiLU outputs are
    # nearly all >= 0, so symmetric ranges waste half the INT8 levels: on the default run's
    # validation split, 97.7 % of predictions agreed with FP32 at the swept threshold, against
    # 90.3 % with the symmetric preset, for ~10 % more batch-1 latency.
    int8 = nncf.quantize(fp32, nncf.Dataset(images), subset_size=len(images), preset=nncf.QuantizationPreset.MIXED)
    # NNCF leaves squeeze-excitation convolutions in FP32 on purpose (its SE_BLOCK ignored pattern:
    # they run on pooled 1x1 tensors, where INT8 saves no time), but their weights were 2.5 of the
    # 7.3 MB of EfficientNet-B0's IR. Weight-only INT8 for them (per channel, expanded to FP32 when
    # the model compiles) took the file from 38 % to 29 % of the FP32 checkpoint, all test
    # predictions unchanged.
    int8 = nncf.compress_weights(int8, mode=nncf.CompressWeightsMode.INT8_ASYM)
    if meta is not None:
        int8.set_rt_info(json.dumps(meta), META_KEY)
    _save_openvino_ir(int8, Path(out_path))


def _save_openvino_ir(model: ov.Model, xml_path: Path) -> None:
    """Save IR beside ``xml_path`` via a temporary folder, so a killed run leaves no half-written pair."""
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml_path.parent, prefix=f".{xml_path.name}.") as tmp:
        staged = Path(tmp) / xml_path.name
        # What is left in FP32 (biases, quantizer ranges: ~0.4 MB) stays FP32; fp16 would save little.
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


def existing_artifact(path: str | Path) -> Path:
    """``path`` as a Path if it is an artifact file of a known kind, else :class:`ModelError`."""
    path = Path(path)
    if path.suffix not in RUNNER_FACTORIES:
        raise ModelError(f"{path}: unknown artifact type {path.suffix!r} (expected {', '.join(RUNNER_FACTORIES)})")
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    return path


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


def load_runner(path: str | Path, threads: int) -> Runner:
    """A runner for any artifact: ``.pt`` (FP32 or dynamic INT8), ``.onnx`` (ONNX Runtime), ``.xml`` (OpenVINO)."""
    path = existing_artifact(path)
    return RUNNER_FACTORIES[path.suffix](path, threads)
