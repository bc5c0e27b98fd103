"""FP32 export of the classifier: one self-contained ONNX file with a dynamic batch axis, the
OpenVINO model made from it, and OpenVINO IR saved so that a killed run leaves no half-written pair.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import openvino as ov
import torch
from torch import nn

from gclf.io import atomic_write, fsync

META_KEY = "gclf"  # ONNX metadata_props key / OpenVINO rt_info key of the artifact's meta, a JSON string

ONNX_OPSET = 18  # the opset the torch.export-based exporter targets natively (no version conversion)
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"  # a node's metadata_props entry from the exporter


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
    for node in program.model.graph.all_nodes():
        # Each node's Python stack trace names the absolute path of the checkout it was exported from:
        # the same model exported from two clones would give two files.
        node.metadata_props.pop(STACK_TRACE_KEY, None)
    if meta is not None:
        program.model.metadata_props[META_KEY] = json.dumps(meta)
    # Weights inline (no .onnx.data beside it): one file is what DVC tracks and atomic_write renames.
    atomic_write(path, lambda tmp: program.save(tmp, external_data=False))


def to_openvino(source: nn.Module | str | Path, image_size: int) -> ov.Model:
    """An OpenVINO model with a dynamic batch axis, from a torch module or an ONNX file."""
    if not isinstance(source, nn.Module):
        return ov.convert_model(str(source))
    # Through ONNX rather than ov.convert_model(module): that traces with the deprecated torch.jit.
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(source, onnx_path, image_size)
        return ov.convert_model(str(onnx_path))


def save_openvino_ir(model: ov.Model, xml_path: Path) -> None:
    """Save IR beside ``xml_path`` via a temporary folder, so a killed run leaves no half-written file
    (whether the .xml and .bin are one pair is the stage's manifest's to say: :mod:`gclf.outputs`)."""
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml_path.parent, prefix=f".{xml_path.name}.") as tmp:
        staged = Path(tmp) / xml_path.name
        # What is left in FP32 (biases, quantizer ranges: ~0.4 MB) stays FP32; fp16 would save little.
        ov.save_model(model, str(staged), compress_to_fp16=False)
        for written in (staged.with_suffix(".bin"), staged):  # .bin first: the .xml names the pair
            fsync(written)
            os.replace(written, xml_path.with_suffix(written.suffix))
        fsync(xml_path.parent)
