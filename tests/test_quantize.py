"""Export, quantization, runners and artifact meta on timm's tiny ``test_efficientnet`` at 32 px: no downloads."""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from gclf.errors import ModelError
from gclf.export import artifact, quantize, runtime
from gclf.export import onnx as export
from gclf.export.agreement import REFERENCE, AgreementError
from gclf.export.scores import score_artifacts
from gclf.train.model import artifact_meta, build_model, save_model

ARCH, HEAD, DROPOUT, SIZE, THREADS = "test_efficientnet", "mlp", 0.3, 32, 1


def pixels(batch: int, seed: int = 0) -> np.ndarray:
    """Seeded random images the model accepts."""
    return np.random.default_rng(seed).random((batch, 3, SIZE, SIZE), dtype=np.float32)


def eager_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def with_batchnorm_statistics(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Give freshly initialised BatchNorms real statistics, so logits vary between images.

    Untrained timm models give nearly the same logit for every image, against which a broken
    INT8 graph would look as good as a working one.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches seen
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, object]:
    """One tiny model as every artifact: checkpoint, ONNX, static INT8 IR, dynamic INT8 checkpoint."""
    folder = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    model = with_batchnorm_statistics(build_model(ARCH, HEAD, DROPOUT), torch.from_numpy(pixels(64, seed=9)))
    meta = artifact_meta(ARCH, HEAD, DROPOUT, SIZE)
    paths = {
        "pt": folder / "model.pt",
        "onnx": folder / "model.onnx",
        "xml": folder / "int8.xml",
        "dynamic": folder / "int8_dynamic.pt",
    }
    save_model(paths["pt"], model, meta)
    export.export_onnx(model, paths["onnx"], SIZE)
    quantize.quantize_static(paths["onnx"], pixels(32, seed=1), paths["xml"])
    quantize.save_dynamic_int8(paths["dynamic"], quantize.quantize_dynamic_linear(model), meta)
    return {"model": model, "folder": folder, **paths}


def test_export_onnx_writes_one_file_with_named_dynamic_batch(artifacts):
    graph = onnx.load(str(artifacts["onnx"]))
    onnx.checker.check_model(graph)
    (inp,), (out,) = graph.graph.input, graph.graph.output
    assert inp.name == export.INPUT_NAME and out.name == export.OUTPUT_NAME
    assert inp.type.tensor_type.shape.dim[0].dim_param  # symbolic batch, not a fixed number
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [3, SIZE, SIZE]
    assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {export.ONNX_OPSET}
    # Self-contained and atomic: no external-data file, no temporary left behind.
    assert sorted(p.name for p in artifacts["folder"].iterdir() if p.name.startswith((".model", "model"))) == [
        "model.onnx",
        "model.pt",
    ]


def test_artifacts_are_byte_stable_whatever_the_path_or_checkout(artifacts, tmp_path):
    """The same model saved again elsewhere gives the same bytes: no file name inside the
    checkpoint's zip, no absolute source path in the ONNX nodes' stack traces."""
    model, meta = artifacts["model"], artifact_meta(ARCH, HEAD, DROPOUT, SIZE)
    save_model(tmp_path / "elsewhere.pt", model, meta)
    export.export_onnx(model, tmp_path / "elsewhere.onnx", SIZE)
    assert (tmp_path / "elsewhere.pt").read_bytes() == artifacts["pt"].read_bytes()
    assert (tmp_path / "elsewhere.onnx").read_bytes() == artifacts["onnx"].read_bytes()
    assert str(Path.cwd()) not in artifacts["onnx"].read_bytes().decode("latin-1")


@pytest.mark.parametrize("make_runner", [runtime.onnxruntime_runner, runtime.openvino_runner])
def test_fp32_runtimes_match_eager_at_any_batch_size(artifacts, make_runner):
    run = make_runner(artifacts["onnx"], THREADS)
    inputs = [pixels(batch, seed=seed) for seed, batch in enumerate((1, 5, 1))]  # batch 1 again: cached compile
    outputs = [run(x) for x in inputs]  # all before comparing: a result must not share the runtime's buffer
    for x, logits in zip(inputs, outputs):
        assert logits.shape == (len(x),) and logits.dtype == np.float32
        np.testing.assert_allclose(logits, eager_logits(artifacts["model"], x), atol=1e-4)


def test_static_int8_quantizes_convolutions_and_stays_close(artifacts):
    ops = [layer.get("type") for layer in ET.parse(artifacts["xml"]).getroot().iter("layer")]
    assert ops.count("FakeQuantize") >= ops.count("Convolution") > 0  # every conv input is quantized
    assert not Path(artifacts["xml"]).with_suffix(".onnx").exists()
    assert artifact.artifact_size_mb(artifacts["xml"]) < artifact.artifact_size_mb(artifacts["onnx"])

    x = pixels(64, seed=2)
    int8, fp32 = runtime.load_runner(artifacts["xml"], THREADS)(x), eager_logits(artifacts["model"], x)
    assert int8.shape == (64,) and int8.dtype == np.float32
    assert not np.array_equal(int8, fp32)  # really quantized, not a copy of the FP32 graph
    assert np.corrcoef(int8, fp32)[0, 1] > 0.7  # measured 0.86: tiny layers quantize coarsely


def test_quantize_static_also_takes_a_torch_module(artifacts, tmp_path):
    out = tmp_path / "from_module.xml"
    quantize.quantize_static(artifacts["model"], pixels(8, seed=3), out)
    assert out.exists() and out.with_suffix(".bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["from_module.bin", "from_module.xml"]
    assert runtime.load_runner(out, THREADS)(pixels(3)).shape == (3,)


def test_quantize_static_rejects_calibration_of_the_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        quantize.quantize_static(tmp_path / "model.onnx", pixels(4)[:, :1], tmp_path / "int8.xml")


def test_dynamic_int8_round_trips_quietly_through_a_file(artifacts):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the silenced torch.ao notices must not escape
        loaded = runtime.load_torch_artifact(artifacts["dynamic"])
    linears = [m for m in loaded.head if "Linear" in type(m).__name__]
    assert linears and all(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in linears)
    x = pixels(4)
    logits = runtime.load_runner(artifacts["dynamic"], THREADS)(x)
    # After the runner, which sets torch's threads: another thread count rounds differently (1e-8).
    expected = eager_logits(quantize.quantize_dynamic_linear(artifacts["model"]), x)
    np.testing.assert_array_equal(logits, expected)


def test_pt_runner_is_the_eager_model_and_sets_torch_threads(artifacts):
    before = torch.get_num_threads()
    try:
        run = runtime.load_runner(artifacts["pt"], THREADS)
        x = pixels(3)
        np.testing.assert_array_equal(run(x), eager_logits(artifacts["model"], x))
        assert torch.get_num_threads() == THREADS
    finally:
        torch.set_num_threads(before)


def test_every_artifact_kind_has_a_runner():
    # artifact.py checks suffixes without importing the runners (no cycle): the two lists must agree
    assert sorted(runtime.RUNNER_FACTORIES) == sorted(artifact.ARTIFACT_SUFFIXES)


def test_load_runner_rejects_unknown_artifacts(tmp_path):
    with pytest.raises(ModelError, match="unknown artifact"):
        runtime.load_runner(tmp_path / "model.tflite", THREADS)
    for missing in ("missing.pt", "missing.onnx", "missing.xml"):
        with pytest.raises(ModelError, match="no such model file"):
            runtime.load_runner(tmp_path / missing, THREADS)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a gclf checkpoint"):
        runtime.load_runner(tmp_path / "garbage.pt", THREADS)


def test_artifact_size_counts_the_bin_beside_an_xml(tmp_path):
    (tmp_path / "m.xml").write_bytes(b"x" * 500_000)
    (tmp_path / "m.bin").write_bytes(b"x" * 1_500_000)
    (tmp_path / "m.onnx").write_bytes(b"x" * 250_000)
    assert artifact.artifact_size_mb(tmp_path / "m.xml") == pytest.approx(2.0)
    assert artifact.artifact_size_mb(tmp_path / "m.onnx") == pytest.approx(0.25)


def test_pipeline_artifacts_start_with_the_reference_and_all_have_runners():
    assert next(iter(artifact.ARTIFACTS)) == REFERENCE  # benchmark rows and agreement read it first
    assert {Path(p).suffix for p in artifact.ARTIFACTS.values()} <= set(runtime.RUNNER_FACTORIES)
    assert set(runtime.RUNNER_FACTORIES) == set(artifact.ARTIFACT_SUFFIXES)  # every kind named is runnable


def test_calibration_sample_is_seeded_kept_in_order_and_scaled():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2)  # image i is all i
    sample = quantize.calibration_sample(images, 4, seed=3)
    assert sample.shape == (4, 3, 2, 2) and sample.dtype == np.float32 and sample.flags.c_contiguous
    picked = np.round(sample[:, 0, 0, 0] * 255).astype(int).tolist()
    assert picked == sorted(set(picked))  # four different images, in the order they came
    np.testing.assert_array_equal(quantize.calibration_sample(images, 4, seed=3), sample)
    assert len(quantize.calibration_sample(images, 100, seed=3)) == 10  # all of them when fewer


def test_score_artifacts_scores_each_runner_and_its_decisions_against_the_reference():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (40, 3, 4, 4), dtype=np.uint8))
    labels = torch.arange(40) % 2

    def mean_logit(x: np.ndarray) -> np.ndarray:
        return (x.mean(axis=(1, 2, 3)) - 0.5).astype(np.float32) * 20

    runners = {REFERENCE: mean_logit, "fp32_onnxruntime": mean_logit, "flipped": lambda x: -mean_logit(x)}
    report = score_artifacts(runners, images, labels, threshold=0.5, temperature=2.0)
    keys = ("test_accuracy", "test_f1", "test_roc_auc", "agreement")
    assert set(report) == {f"{name}_{key}" for name in runners for key in keys}
    assert report[f"{REFERENCE}_agreement"] == report["fp32_onnxruntime_agreement"] == 1.0
    assert report["flipped_agreement"] == 0.0
    assert report["flipped_test_roc_auc"] == pytest.approx(1 - report[f"{REFERENCE}_test_roc_auc"])
    runners["fp32_onnxruntime"] = lambda x: mean_logit(x) + np.float32(0.01)  # an export that drifted
    with pytest.raises(AgreementError, match="fp32_onnxruntime"):
        score_artifacts(runners, images, labels, threshold=0.5, temperature=2.0)
