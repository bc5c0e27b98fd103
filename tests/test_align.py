"""Faces near the camera and alignment in every way in (``gclf.faces.align``, ``gclf bench-recrop``),
on the one real face scikit-image ships (the astronaut): crops that fill the frame or are cut are
found, a re-framed crop is aligned back onto its chip, ``gclf predict`` aligns crops and detected
faces unless told not to, and says so in every row."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data
from test_faces import ASTRONAUT_FACE, save_test_model

from gclf.bench.recrop import Framing, recrop
from gclf.cli import main
from gclf.data.images import decode_image
from gclf.data.manifest import Record, manifest_text
from gclf.deploy.predict import Predictor
from gclf.errors import UserError
from gclf.faces import align
from gclf.faces.detect import FaceDetector, crop_square, face_crop

pytestmark = pytest.mark.usefixtures("one_thread")
ALIGNER = align.load_aligner()
needs_aligner = pytest.mark.skipif(ALIGNER is None, reason="dlib or its 5-point landmark model is not installed")
SIZE = 64  # enough pixels to compare crops by


@pytest.fixture(scope="module")
def face() -> Image.Image:
    """The astronaut's face, cropped square and tight: the face fills the frame (116 px)."""
    return Image.fromarray(skimage_data.astronaut()).crop(ASTRONAUT_FACE)


@pytest.fixture(scope="module")
def chip(face) -> Image.Image:
    """The face aligned as UTKFace's chips are (200 px)."""
    if ALIGNER is None:
        pytest.skip("dlib or its 5-point landmark model is not installed")
    return Image.fromarray(ALIGNER.chip(np.asarray(face.resize((200, 200)))))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return save_test_model(tmp_path_factory.mktemp("model") / "model.pt", 0.5, SIZE)


def landmark_offset(pixels: np.ndarray, reference: np.ndarray) -> float:
    """Median distance (px) between the five landmarks of two images of the same size."""
    return float(np.median(np.hypot(*(ALIGNER.points(pixels) - ALIGNER.points(reference)).T)))


def test_faces_that_fill_the_frame_or_are_cut_are_found(face):
    detector = FaceDetector(threads=1)
    forms = {
        "as cropped": face,
        "upscaled 3x": face.resize((3 * face.width, 3 * face.height), Image.BICUBIC),
        "top 15 % cut": face.crop((0, round(0.15 * face.height), face.width, face.height)),
    }
    for name, image in forms.items():
        (found,) = detector(image)  # exactly one: the far views' detections merge with the near one's
        cx, cy, side = crop_square(found)
        assert abs(cx - image.width / 2) < 0.2 * image.width and 0.6 < side / image.width < 1.6, name
    assert detector(Image.new("RGB", face.size, (128, 128, 128))) == []


def test_recrop_frames_the_chip_as_asked():
    chip = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)).resize((200, 200))
    pixels = np.asarray(chip).astype(float)

    def close(framing: Framing, expected: np.ndarray) -> bool:
        return np.abs(np.asarray(recrop(chip, framing)).astype(float) - expected).mean() < 8

    assert close(Framing(1.0, 0.0, 0.0, 0.0), pixels)
    assert close(Framing(0.5, 0.0, 0.0, 0.0), pixels[50:150, 50:150])  # tighter
    assert close(Framing(0.5, 0.1, -0.1, 0.0), pixels[30:130, 70:170])  # moved right and up
    assert close(Framing(1.0, 0.0, 0.0, 90.0), np.asarray(chip.rotate(90)).astype(float))  # rolled counter-clockwise
    cut = recrop(chip, Framing(1.0, 0.0, 0.0, 0.0, cut_top=0.2))
    assert cut.size == (200, 160) and close(Framing(1.0, 0.0, 0.0, 0.0, cut_top=0.2), pixels[40:])
    wide = np.asarray(recrop(chip, Framing(1.2, 0.0, 0.0, 0.0))).astype(float)
    assert np.abs(wide[:20, 20:-20] - pixels[19::-1]).mean() < 8  # beyond the chip: the chip mirrored


@needs_aligner
def test_a_reframed_crop_is_aligned_back_onto_its_chip(chip):
    tight = Framing(0.76, 0.1, 0.1, 18.0, cut_bottom=0.2)  # one landmark pass lands 30 px off (measured)
    loose = Framing(1.2, -0.08, 0.08, -15.0)
    reference = np.asarray(chip)
    for framing in (tight, loose):
        framed = recrop(chip, framing)
        assert landmark_offset(np.asarray(framed.resize((200, 200))), reference) > 15
        refined = ALIGNER.chip(np.asarray(framed), passes=4)  # refinement lands the landmarks (inference uses 1)
        assert landmark_offset(refined, reference) < 6, framing


@needs_aligner
def test_predict_aligns_a_crop_unless_told_not_to(chip, model_path, tmp_path):
    path = tmp_path / "web crop.png"
    framed = recrop(chip, Framing(0.8, 0.08, -0.06, 15.0, cut_top=0.15))
    framed.save(path)
    row, pixels = Predictor(model_path, threads=1).decode((0, (str(path), "")), None)[0]
    assert row["aligned"] is True
    assert np.array_equal(pixels, ALIGNER.face_pixels(np.asarray(framed), SIZE))
    row, pixels = Predictor(model_path, threads=1, align=False).decode((0, (str(path), "")), None)[0]
    assert row["aligned"] is False and np.array_equal(pixels, decode_image(str(path), SIZE))
    for option, written in (([], "true"), (["--no-align"], "false")):
        main(["predict", str(path), "--model", model_path, "--out", str(tmp_path / "rows.csv"), *option])
        (row,) = csv.DictReader(open(tmp_path / "rows.csv", encoding="utf-8"))
        assert row["aligned"] == written and row["error"] == ""


@needs_aligner
def test_detected_faces_are_aligned_from_the_detectors_box(chip, model_path, tmp_path):
    photo = Image.new("RGB", (640, 480), (90, 120, 60))
    turned = chip.resize((180, 180)).convert("RGBA").rotate(20, Image.BILINEAR)
    photo.paste(turned, (300, 150), turned)
    photo.save(tmp_path / "photo.png")
    predictor = Predictor(model_path, threads=1, detect_faces=True)
    ((row, pixels),) = predictor.decode((0, (str(tmp_path / "photo.png"), "")), None)
    assert row["aligned"] is True
    reference = np.asarray(chip.resize((SIZE, SIZE), Image.BILINEAR)).astype(float).ravel()
    levelled = face_crop(photo, FaceDetector(threads=1)(photo)[0], SIZE).astype(float).ravel()
    aligned = np.corrcoef(pixels.astype(float).ravel(), reference)[0, 1]
    assert aligned > 0.85 and aligned > np.corrcoef(levelled, reference)[0, 1] + 0.1  # measured 0.88 and 0.71


def test_without_the_landmark_model_faces_go_in_unaligned_or_align_says_why(model_path, tmp_path, monkeypatch):
    monkeypatch.setattr(align, "landmark_model_path", lambda: None)
    with pytest.raises(UserError, match="alignment needs dlib and its 5-point landmark model"):
        Predictor(model_path, threads=1, align=True)
    Image.new("RGB", (64, 64), (200, 150, 120)).save(tmp_path / "crop.png")
    main(["predict", str(tmp_path / "crop.png"), "--model", model_path, "--out", str(tmp_path / "rows.csv")])
    (row,) = csv.DictReader(open(tmp_path / "rows.csv", encoding="utf-8"))
    assert row["aligned"] == "false" and row["error"] == ""


@needs_aligner
def test_bench_recrop_scores_originals_and_recrops_with_and_without_alignment(chip, model_path, tmp_path, capsys):
    records = []
    for index, gain in enumerate((0.8, 1.0, 1.2)):
        path = tmp_path / f"{index}.png"
        Image.eval(chip, lambda v, g=gain: min(255, round(v * g))).save(path)
        records.append(Record(str(path), index % 2, {}))
    records.append(Record(str(tmp_path / "missing.png"), 0, {}))
    manifest, out = tmp_path / "test.csv", tmp_path / "recrop.json"
    manifest.write_text(manifest_text(records, []), encoding="utf-8")
    main(["bench-recrop", "--model", model_path, "--data", str(manifest), "--threads", "1", "--out", str(out)])
    printed = capsys.readouterr()
    assert f"on 3 chips of {manifest}" in printed.out and "| re-crops aligned |" in printed.out
    assert f"skipped 1 file:\n  {tmp_path / 'missing.png'}: no such file\n" in printed.err
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["chips"] == 3 and report["cpu_model"]
    for name in ("originals", "originals_aligned", "recrops", "recrops_aligned"):
        assert 0.0 <= report[f"accuracy_{name}"] <= 1.0
    assert report["landmark_offset_recrops_aligned_median_px"] < 6 < report["landmark_offset_recrops_median_px"]


@needs_aligner
def test_evaluate_aligns_by_default_and_counts_the_aligned_faces(chip, model_path, tmp_path, capsys):
    for label, gain in (("female", 0.9), ("male", 1.1)):
        (tmp_path / "faces" / label).mkdir(parents=True)
        Image.eval(recrop(chip, Framing(0.9, 0.05, 0.0, 10.0)), lambda v, g=gain: min(255, round(v * g))).save(
            tmp_path / "faces" / label / "crop.png"
        )
    for option, aligned in (([], 2), (["--no-align"], 0)):
        main(["evaluate", "--data", str(tmp_path / "faces"), "--model", model_path, "--bootstrap", "0", *option])
        report = json.loads(capsys.readouterr().out)
        assert report["images"] == 2 and report["aligned"] == aligned
