"""``gclf predict`` and the Predictor API on timm's tiny ``test_efficientnet`` at 32 px: every bad
input docs/predict.md lists, every artifact kind, and agreement with what the evaluate stage computes."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn

import gclf
from gclf.cli import main
from gclf.data.images import load_images
from gclf.deploy.inputs import Inputs, in_shard, selected
from gclf.deploy.predict import COLUMNS, Predictor
from gclf.deploy.rows import write_rows
from gclf.errors import EXIT_SOME_INPUTS_FAILED, EXIT_USER_ERROR, ModelError
from gclf.export import artifact, quantize
from gclf.export import onnx as export
from gclf.export.runtime import load_runner
from gclf.faces.detect import Face
from gclf.faces.read import read_image
from gclf.io import dumps_json
from gclf.train.model import artifact_meta, build_model, load_model, save_model
from gclf.tta import predict_probs

ARCH, HEAD, DROPOUT, SIZE = "test_efficientnet", "mlp", 0.3, 32
GOOD = None  # expected error of an input that must be predicted


def noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def with_batchnorm_statistics(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Real BatchNorm statistics, so an untrained model's logits vary between images."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    """Ten different good images, in several formats and sizes."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i in range(10):
        paths.append(str(folder / f"face{i}.{'png' if i % 2 else 'jpg'}"))
        Image.fromarray(noise((40 + 4 * i, 48, 3), seed=i)).save(paths[-1])
    return paths


TEMPERATURE = 2.0  # not 1, so that an artifact whose temperature were ignored shows


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, photos) -> dict[str, Path]:
    """One tiny model as every artifact kind, each carrying the deployment meta (and one checkpoint
    without); the stored thresholds are the median probability of ``photos``, so both labels occur."""
    folder = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    calibration = load_images(photos, SIZE).float().div(255)
    model = with_batchnorm_statistics(build_model(ARCH, HEAD, DROPOUT), calibration)
    with torch.no_grad():
        # halfway between the two middle probabilities, not one of them: a threshold equal to an
        # image's probability would flip its label with the last bit, which the thread count changes
        median = float(torch.sigmoid(model(calibration) / TEMPERATURE).flatten().quantile(0.5))
    meta = artifact.deployment_meta(
        artifact_meta(ARCH, HEAD, DROPOUT, SIZE, model), median, median, ["identity", "hflip"], TEMPERATURE
    )
    paths = {
        "pt": folder / "model.pt",
        "bare": folder / "train_phase2.pt",
        "onnx": folder / "model.onnx",
        "xml": folder / "model_int8.xml",
        "dynamic": folder / "model_dynamic_int8.pt",
    }
    save_model(paths["pt"], model, meta)
    save_model(paths["bare"], model, artifact_meta(ARCH, HEAD, DROPOUT, SIZE))
    export.export_onnx(model, paths["onnx"], SIZE, meta=meta)
    quantize.quantize_static(paths["onnx"], calibration.numpy(), paths["xml"], meta=meta)
    quantize.save_dynamic_int8(paths["dynamic"], quantize.quantize_dynamic_linear(model), meta)
    return paths


def write_bad_inputs(root: Path) -> dict[str, tuple[Path, str | None]]:
    """Every case of the bad-input table in docs/predict.md: name -> (path, expected error or GOOD)."""
    rgb = Image.fromarray(noise((48, 40, 3), seed=1))
    cases: dict[str, tuple[Path, str | None]] = {}

    def save(name: str, image: Image.Image, file: str, **options) -> None:
        image.save(root / file, **options)
        cases[name] = (root / file, GOOD)

    jpeg = root / "whole.jpg"
    rgb.save(jpeg, quality=95)
    (root / "truncated.jpg").write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    jpeg.unlink()
    cases["truncated JPEG"] = (root / "truncated.jpg", "truncated image")
    (root / "empty.jpg").write_bytes(b"")
    cases["zero-byte file"] = (root / "empty.jpg", "empty file")
    (root / "notes.jpg").write_text("not a picture")
    cases["text file named .jpg"] = (root / "notes.jpg", "not an image")
    save("grayscale", rgb.convert("L"), "gray.png")
    save("RGBA", rgb.convert("RGBA"), "rgba.png")
    save("LA", rgb.convert("LA"), "la.png")
    palette = rgb.convert("P", palette=Image.ADAPTIVE)
    save("palette PNG", palette, "palette.png", transparency=0)
    save("CMYK JPEG", rgb.convert("CMYK"), "cmyk.jpg")
    save("16-bit PNG", Image.fromarray(noise((48, 40), seed=2).astype(np.uint16) * 257), "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    save("EXIF-rotated photo", rgb, "rotated.jpg", exif=exif)
    save("GIF (first frame)", rgb, "animated.gif", save_all=True, append_images=[rgb.rotate(90)])
    rgb.resize((10, 10)).save(root / "tiny.png")
    cases["10x10 image"] = (root / "tiny.png", "too small for a face (10x10 px; at least 32 px a side)")
    (root / "ünï cødé folder").mkdir()
    save("unicode and spaces in the path", rgb, "ünï cødé folder/фото 1.png")
    cases["path that does not exist"] = (root / "missing.jpg", "no such file or folder")
    (root / "no images").mkdir()
    (root / "no images" / "readme.txt").write_text("nothing to see")
    cases["folder with no images"] = (root / "no images", "folder has no images")
    return cases


@pytest.fixture(scope="module")
def fp32(artifacts) -> Predictor:
    return Predictor(artifacts["pt"], threads=1, batch_size=4)


def test_every_bad_input_gets_its_own_row_and_the_batch_goes_on(fp32, tmp_path):
    cases = write_bad_inputs(tmp_path)
    rows = fp32.predict([path for path, _ in cases.values()])
    assert [row["path"] for row in rows] == [str(path) for path, _ in cases.values()]
    for (name, (_, expected)), row in zip(cases.items(), rows):
        if expected is GOOD:
            assert row["error"] == "" and 0 <= row["probability"] <= 1, (name, row)
            assert row["label"] == fp32.classes[row["probability"] >= fp32.threshold], name
        else:
            assert expected in row["error"] and row["probability"] is None and row["label"] == "", (name, row)


def test_images_over_the_decompression_bomb_limit_are_refused(fp32, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1100)  # so the files stay tiny
    for side in (40, 50):  # PIL warns over the limit and raises over twice the limit: both are refused
        Image.fromarray(noise((side, side, 3), seed=side)).save(tmp_path / f"bomb{side}.png")
    Image.fromarray(noise((32, 32, 3), seed=3)).save(tmp_path / "small.png")
    rows = fp32.predict(sorted(tmp_path.iterdir()))
    assert [row["error"].split(" (")[0] for row in rows] == ["too large", "too large", ""]


@pytest.mark.parametrize(
    "raised, reason",
    [
        (PermissionError(13, "Permission denied"), "permission denied"),
        (ValueError("bad\ntile"), "cannot decode (ValueError: bad tile)"),
    ],
)
def test_other_decode_failures_are_one_line_reasons(photos, monkeypatch, raised, reason):
    def fail(path, size):
        raise raised

    monkeypatch.setattr("gclf.faces.read.decode_image", fail)  # root may read any file, and PIL's errors vary
    assert read_image(photos[0], SIZE) == (None, reason)


def test_exif_rotated_photo_is_turned_upright(tmp_path):
    upright = np.zeros((48, 32, 3), np.uint8)
    upright[:24] = 230  # bright top half, dark bottom half: wrong if left on its side
    Image.fromarray(upright).save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": stored turned counter-clockwise
    Image.fromarray(np.rot90(upright)).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    rotated, error = read_image(str(tmp_path / "rotated.jpg"), SIZE)
    expected, _ = read_image(str(tmp_path / "upright.png"), SIZE)
    assert error == "" and np.abs(rotated.astype(int) - expected).mean() < 2  # JPEG noise only
    assert rotated[:12].mean() > 200 and rotated[-12:].mean() < 30


def test_predictions_on_a_folder_equal_the_evaluate_stage(artifacts, photos):
    model, _ = load_model(artifacts["pt"])
    images = load_images(photos, SIZE)  # what evaluate reads, through load_split
    for tta, views in ((False, ("identity",)), (True, ("identity", "hflip"))):
        # unaligned, as the evaluate stage decodes its (already aligned) chips; batches of 3, 3, 3, 1
        predictor = Predictor(artifacts["pt"], threads=1, tta=tta, batch_size=3, align=False)
        rows = predictor.predict([str(Path(photos[0]).parent)])
        assert [row["path"] for row in rows] == sorted(photos)
        expected = predict_probs(model, images, views=views, temperature=TEMPERATURE)  # as evaluate applies it
        np.testing.assert_allclose([row["probability"] for row in rows], expected, atol=1e-6)
        labels = np.array(predictor.classes)[(expected >= predictor.threshold).astype(int)]
        assert [row["label"] for row in rows] == list(labels)
        assert len(set(labels)) == 2  # the median threshold splits them: the comparison means something


def test_every_artifact_kind_predicts_the_same(artifacts, photos):
    # unaligned: static INT8 was calibrated on these noise images as they are, not on their chips
    probs = {
        kind: np.array(
            [row["probability"] for row in Predictor(artifacts[kind], threads=1, align=False).predict(photos)]
        )
        for kind in ("pt", "onnx", "xml", "dynamic")
    }
    np.testing.assert_allclose(probs["onnx"], probs["pt"], atol=1e-4)
    np.testing.assert_allclose(probs["dynamic"], probs["pt"], atol=0.02)  # INT8 Linear layers only
    # the whole network in INT8: at most 0.033 apart here (AMD EPYC, OpenVINO 2026.4.1), where
    # the probabilities span 0.14; an input flipped, in BGR or unscaled moved one by 0.095 to 0.13
    assert np.abs(probs["xml"] - probs["pt"]).max() < 0.05
    assert np.corrcoef(probs["xml"], probs["pt"])[0, 1] > 0.9  # 0.96; those input bugs: 0.26 or less
    assert not np.array_equal(probs["xml"], probs["pt"])


def test_dynamic_int8_gives_each_image_the_same_probability_in_any_batch(artifacts, photos):
    alone = [Predictor(artifacts["dynamic"], threads=1, batch_size=1).predict(p)[0]["probability"] for p in photos[:4]]
    batched = Predictor(artifacts["dynamic"], threads=1, batch_size=4).predict(photos[:4])
    assert [row["probability"] for row in batched] == alone


def test_meta_and_threshold_come_from_the_artifact(artifacts):
    metas = {kind: artifact.read_artifact_meta(artifacts[kind]) for kind in ("pt", "onnx", "xml", "dynamic")}
    stored = metas["pt"]
    assert stored["arch"] == ARCH and stored["image_size"] == SIZE and stored["classes"] == ["male", "female"]
    assert stored["tta_views"] == ["identity", "hflip"] and "normalisation inside the model" in stored["input"]
    assert all({k: v for k, v in m.items() if k != "quantization"} == stored for m in metas.values())
    assert metas["dynamic"]["quantization"] == artifact.DYNAMIC_INT8
    plain, tta = Predictor(artifacts["xml"], threads=1), Predictor(artifacts["xml"], threads=1, tta=True)
    assert (plain.threshold, plain.threshold_source, plain.views) == (stored["threshold"], "artifact", ("identity",))
    assert (tta.threshold, tta.views) == (stored["tta_threshold"], ("identity", "hflip"))
    assert Predictor(artifacts["onnx"], threshold=0.9).threshold_source == "argument"
    bare = Predictor(artifacts["bare"], threads=1)
    assert (bare.threshold, bare.threshold_source) == (0.5, "default")


def test_corrupted_and_foreign_artifacts_are_clear_model_errors(artifacts, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(artifacts["pt"].read_bytes()[:5000])
    (tmp_path / "garbage.onnx").write_bytes(b"\x08garbage")
    (tmp_path / "garbage.xml").write_text("<net>")
    for path in (truncated, tmp_path / "garbage.onnx", tmp_path / "garbage.xml"):
        with pytest.raises(ModelError, match="not a gclf artifact or corrupted"):
            Predictor(path)
    graph = onnx.load(str(artifacts["onnx"]))
    del graph.metadata_props[:]
    onnx.save(graph, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ModelError, match="carries no gclf metadata"):
        Predictor(tmp_path / "foreign.onnx")
    other = tmp_path / "other_arch.pt"  # weights of one architecture, meta of another
    save_model(
        other, load_model(artifacts["pt"])[0], {**artifact.read_artifact_meta(artifacts["pt"]), "arch": "test_resnet"}
    )
    with pytest.raises(ModelError, match="weights do not fit a test_resnet .* another architecture"):
        Predictor(other)
    with pytest.raises(ModelError, match="no such model file"):
        Predictor(tmp_path / "missing.pt")


def test_inputs_expand_from_folders_globs_and_csvs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a/1.jpg", "a/deep/2.PNG", "a/.hidden/3.jpg", "a/notes.txt", "b/4.jpg", "b/5.png"):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(b"x")
    Path("b/list.csv").write_text("label,path\nf,4.jpg\nm,../a/1.jpg\n")
    Path("b/bare.csv").write_text("5.png\n\n4.jpg\n")
    Path("b/wide.csv").write_text("file,label\n4.jpg,f\n")
    inputs = Inputs(["a", "b/*.png", "b/list.csv", "b/bare.csv", "b/wide.csv", "a/*.gif", "gone.jpg", "b/*"])
    assert list(inputs) == [
        ("a/1.jpg", ""),
        ("a/deep/2.PNG", ""),
        ("b/5.png", ""),
        ("b/4.jpg", ""),
        ("b/../a/1.jpg", ""),
        ("b/5.png", ""),
        ("b/4.jpg", ""),
        ("b/wide.csv", "CSV has several columns but none named 'path'"),
        ("a/*.gif", "no image matches this pattern"),
        ("gone.jpg", "no such file or folder"),
        ("b/4.jpg", ""),
        ("b/5.png", ""),
    ]
    assert inputs.skipped == 4  # a/notes.txt, and b/*'s three CSVs; hidden a/.hidden/3.jpg is not seen at all


def run_cli(args: list[str]) -> int:
    """``gclf ARGS``'s exit code."""
    try:
        main(args)
    except SystemExit as e:
        return e.code
    return 0


def test_cli_writes_csv_or_json_and_exits_0_when_every_input_is_predicted(artifacts, photos, tmp_path, capsys):
    model = str(artifacts["xml"])
    assert run_cli(["predict", *photos[:3], "--model", model, "--out", str(tmp_path / "p.csv"), "--threads", "1"]) == 0
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(COLUMNS) and [r["path"] for r in rows] == photos[:3]
    assert "images/s" in capsys.readouterr().err
    assert run_cli(["predict", photos[0], "--model", model, "--out", str(tmp_path / "p.json"), "--tta"]) == 0
    (row,) = json.loads((tmp_path / "p.json").read_text())
    assert row["path"] == photos[0] and row["error"] == "" and 0 <= row["probability"] <= 1
    assert run_cli(["predict", photos[0], "--model", model, "--threshold", "0"]) == 0  # CSV on stdout
    (row,) = csv.DictReader(capsys.readouterr().out.splitlines())
    assert row["label"] == "female" and row["error"] == ""


def test_cli_exit_codes_name_each_failed_input(artifacts, photos, tmp_path, capsys):
    model = str(artifacts["pt"])
    (tmp_path / "empty.jpg").write_bytes(b"")
    code = run_cli(["predict", photos[0], str(tmp_path / "empty.jpg"), str(tmp_path / "gone.jpg"), "--model", model])
    assert code == EXIT_SOME_INPUTS_FAILED
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty.jpg'}: empty file" in err and f"{tmp_path / 'gone.jpg'}: no such file" in err
    (tmp_path / "nothing here").mkdir()
    assert run_cli(["predict", str(tmp_path / "nothing here"), "--model", model]) == EXIT_USER_ERROR
    assert "error: nothing could be read: " in capsys.readouterr().err
    assert run_cli(["predict", str(tmp_path / "empty.jpg"), str(tmp_path / "gone.jpg"), "--model", model]) == 2
    assert "error: nothing could be read: all 2 inputs failed" in capsys.readouterr().err


def test_cli_user_mistakes_are_one_line_errors(artifacts, photos, tmp_path, capsys):
    assert run_cli(["predict", photos[0], "--model", str(artifacts["pt"]), "--out", "p.txt"]) == EXIT_USER_ERROR
    assert run_cli(["predict", photos[0], "--model", str(tmp_path / "missing.onnx")]) == EXIT_USER_ERROR
    assert run_cli(["predict", photos[0], "--model", str(artifacts["pt"]), "--threshold", "2"]) == EXIT_USER_ERROR
    assert capsys.readouterr().err.count("error: ") == 3
    assert run_cli(["predict", photos[0], "--model", str(artifacts["pt"]), "--batch-size", "0"]) == EXIT_USER_ERROR


def test_cli_notes_once_when_the_checkpoint_has_no_threshold(artifacts, photos, capsys):
    assert run_cli(["predict", *photos[:2], "--model", str(artifacts["bare"])]) == 0
    assert capsys.readouterr().err.count("carries no threshold; using 0.5") == 1


def test_import_gclf_is_light_and_exports_predictor():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, gclf; print('torch' in sys.modules)"], capture_output=True, text=True
    )
    assert loaded.stdout.strip() == "False"
    assert gclf.Predictor is Predictor


@pytest.mark.parametrize("kind", ["pt", "onnx", "xml", "dynamic"])
def test_every_artifact_applies_its_temperature(artifacts, photos, kind):
    """P = sigmoid(logit / T), with the artifact's T and its own runtime's logits (INT8 ones for INT8)."""
    pixels = np.stack([read_image(str(p), SIZE)[0] for p in photos[:4]])
    predictor = Predictor(artifacts[kind], threads=1)
    assert predictor.temperature == TEMPERATURE and Predictor(artifacts["bare"]).temperature == 1.0
    runner = load_runner(artifacts[kind], threads=1)
    floats = pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255  # as the runners take images
    logits = np.concatenate([runner(floats[i : i + 1]).reshape(-1) for i in range(len(floats))])
    calibrated = predictor.probabilities(pixels)
    np.testing.assert_allclose(calibrated, sigmoid(logits / TEMPERATURE), rtol=0, atol=1e-6)
    assert np.abs(sigmoid(logits / 1.6) - calibrated).min() > 1e-3  # so a temperature a bit off would show


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


# --- streaming, --resume, --shard ---------------------------------------------------------------


def rows_on_disk(out: Path) -> list[str]:
    """The rows in the output file ``out`` so far, as text (a CSV's header left out)."""
    if not out.exists():
        return []
    lines = out.read_text(encoding="utf-8").splitlines()
    return lines[1:] if out.suffix == ".csv" else lines


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_rows_are_on_disk_as_each_batch_ends(fp32, photos, tmp_path, suffix):
    out = tmp_path / f"p{suffix}"
    on_disk, consumed = [], []

    def watched(chunks):
        for rows in chunks:
            on_disk.append(len(rows_on_disk(out)))  # the file before this batch's rows are handed on
            yield rows

    def paths():
        for path in photos * 4:
            consumed.append(path)
            yield path

    chunks = fp32.stream(paths())
    write_rows(watched(chunks), str(out), fp32.columns)
    assert on_disk == list(range(0, 40, 4))  # batches of 4: each one written and flushed before the next
    assert len(rows_on_disk(out)) == 40
    chunks = fp32.stream(paths())
    next(chunks)
    chunks.close()
    assert len(consumed) < 60  # inputs are read a few batches ahead, not all at once


def test_a_json_array_is_written_whole_as_before(fp32, photos, tmp_path):
    out = tmp_path / "p.json"
    write_rows(fp32.stream(photos[:3] + ["missing.jpg"]), str(out), fp32.columns)
    rows = fp32.predict(photos[:3] + ["missing.jpg"])
    assert out.read_text() == dumps_json([{c: row[c] for c in fp32.columns} for row in rows], digits=6)


def predict_cli(*args: str | Path) -> int:
    return run_cli(["predict", *map(str, args), "--threads", "1", "--batch-size", "2"])


def cut_copy(full: Path, copy: Path, text: str) -> None:
    """``copy`` as a killed run of ``full`` would have left it: ``text``, and ``full``'s recorded settings."""
    copy.write_text(text)
    shutil.copy(f"{full}.meta.json", f"{copy}.meta.json")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_after_a_torn_line_gives_the_rows_of_an_uninterrupted_run(artifacts, photos, tmp_path, suffix, capsys):
    inputs = [*photos, tmp_path / "missing.jpg", photos[0]]  # an error row, and a path listed twice
    full, resumed = tmp_path / f"full{suffix}", tmp_path / f"resumed{suffix}"
    model = ("--model", artifacts["pt"])
    assert predict_cli(*inputs, *model, "--out", full) == EXIT_SOME_INPUTS_FAILED
    text = full.read_text()
    torn = text.index("\n", text.index(photos[0], len(text) // 2)) - 5  # in the row of the second photos[0]
    cut_copy(full, resumed, text[:torn])
    assert predict_cli(*inputs, *model, "--out", resumed, "--resume") == EXIT_SOME_INPUTS_FAILED
    assert resumed.read_text() == text
    err = capsys.readouterr().err
    assert f"kept the 10 rows already in {resumed}" in err and "1 of 12 inputs failed" in err
    assert predict_cli(*inputs, *model, "--out", resumed) == EXIT_SOME_INPUTS_FAILED  # no --resume: replaced
    assert resumed.read_text() == text


def test_resume_between_two_faces_of_a_photo_does_the_photo_again(artifacts, photos, tmp_path, monkeypatch):
    def three_faces(self, path):  # a stand-in detector, so that every photo has several faces
        pixels, _ = read_image(path, SIZE)
        return [(Face(10.0 * i, 0.0, 10.0, 10.0, 0.9, ((0.0, 0.0), (0.0, 0.0))), np.roll(pixels, i)) for i in range(3)]

    monkeypatch.setattr(Predictor, "detect", three_faces)
    full, resumed = tmp_path / "full.csv", tmp_path / "resumed.csv"
    command = [*photos[:4], "--model", artifacts["pt"], "--detect-faces", "--out"]
    assert predict_cli(*command, full) == 0
    lines = full.read_text().splitlines(keepends=True)
    assert [line.split(",")[1] for line in lines[7:10]] == ["0", "1", "2"]  # the third photo's faces
    cut_copy(full, resumed, "".join(lines[:9]))  # killed after its second face
    assert predict_cli(*command, resumed, "--resume") == 0
    assert resumed.read_text() == full.read_text()


def test_resume_refuses_other_rows_and_outputs_it_cannot_add_to(artifacts, photos, tmp_path, capsys):
    plain = tmp_path / "plain.csv"
    assert predict_cli(photos[0], "--model", artifacts["pt"], "--out", plain) == 0
    faces = ("--model", artifacts["pt"], "--detect-faces", "--resume")
    assert predict_cli(photos[0], *faces, "--out", plain) == EXIT_USER_ERROR
    assert predict_cli(photos[0], *faces, "--out", tmp_path / "p.json") == EXIT_USER_ERROR
    assert predict_cli(photos[0], *faces) == EXIT_USER_ERROR  # no --out
    err = capsys.readouterr().err
    assert err.count("error: --resume") == 3 and "Traceback" not in err
    assert f"{plain} was predicted with columns {','.join(COLUMNS)} (now path,face," in err
    plain.write_text("path,face,x\n")  # rows of other columns under the same settings
    assert predict_cli(photos[0], "--model", artifacts["pt"], "--resume", "--out", plain) == EXIT_USER_ERROR
    assert f"{plain} holds other than rows of {','.join(COLUMNS)}" in capsys.readouterr().err


def test_shards_split_the_inputs_exactly_once(fp32, photos, tmp_path):
    inputs = [*photos, str(tmp_path / "missing.jpg"), str(tmp_path / "gone.png")]
    everything = [row["path"] for row in fp32.predict(inputs)]
    shards = [
        [row["path"] for rows in fp32.stream(inputs, keep=selected((k, 3), Counter())) for row in rows]
        for k in (1, 2, 3)
    ]
    assert sorted(path for shard in shards for path in shard) == sorted(everything)  # each input exactly once
    assert all(shard == [path for path in everything if path in shard] for shard in shards)  # in input order
    counts = Counter(next(k for k in range(1, 5) if in_shard(f"photos/{i}.jpg", k, 4)) for i in range(2000))
    assert sorted(counts) == [1, 2, 3, 4] and min(counts.values()) > 400  # about 500 each
    shard_of = {path: next(k for k in range(1, 5) if in_shard(path, k, 4)) for path in ("a.png", "b/c.jpg")}
    assert shard_of == {"a.png": 3, "b/c.jpg": 4}  # the same on every machine and in every version


@pytest.mark.parametrize("shard", ["0/3", "4/3", "3", "a/b", "1/0"])
def test_a_bad_shard_is_one_error_line(artifacts, photos, capsys, shard):
    assert predict_cli(photos[0], "--model", artifacts["pt"], "--shard", shard) == EXIT_USER_ERROR
    assert "argument --shard: expected K/N, shard K of N with 1 <= K <= N" in capsys.readouterr().err


def test_a_killed_run_resumed_ends_like_an_uninterrupted_one(artifacts, tmp_path):
    """A real ``gclf predict`` in its own process, each batch slowed down so that the kill lands midway."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(36):
        Image.fromarray(noise((40, 40, 3), seed=100 + i)).save(folder / f"{i:02d}.png")
    args = [str(folder), "--model", str(artifacts["pt"]), "--threads", "1", "--batch-size", "1", "--out"]
    killed, full = tmp_path / "killed.csv", tmp_path / "full.csv"
    slowed = (
        "import sys, time; from gclf.deploy import predict; from gclf.cli import main; "
        "fast = predict.Predictor.predicted; "
        "predict.Predictor.predicted = lambda *a: (time.sleep(0.1), fast(*a))[1]; main(sys.argv[1:])"
    )
    process = subprocess.Popen([sys.executable, "-c", slowed, "predict", *args, str(killed)])
    deadline = time.monotonic() + 120
    while len(rows_on_disk(killed)) < 5 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and 5 <= len(rows_on_disk(killed)) < 36
    assert run_cli(["predict", *args, str(killed), "--resume"]) == 0
    assert run_cli(["predict", *args, str(full)]) == 0
    assert killed.read_text() == full.read_text() and len(rows_on_disk(full)) == 36
