"""Face detection (``--detect-faces``): the detector on composite photos the tests make from the one
real face scikit-image ships (the astronaut), the crop, large photos, and the commands' rows."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from gclf.bench.faces import CROP_VARIANTS, face_benchmark, match_faces, read_faces
from gclf.cli import main
from gclf.data.manifest import Record
from gclf.deploy.predict import FACE_COLUMNS, Predictor, crop_name
from gclf.errors import EXIT_SOME_INPUTS_FAILED
from gclf.export import artifact
from gclf.faces import photos as photos_module
from gclf.faces.composites import composite_photos
from gclf.faces.detect import (
    FARTHER_VIEWS,
    MAX_TILE_LEVELS,
    RELIABLE_FRACTION,
    Face,
    FaceDetector,
    box_iou,
    crop_square,
    detection_windows,
    face_crop,
    weighted_nms,
)
from gclf.faces.photos import PHOTO_MAX_SIDE, open_photo
from gclf.faces.read import MIN_IMAGE_SIDE
from gclf.train.model import artifact_meta, build_model, save_model

ASTRONAUT_FACE = (170, 68, 286, 184)  # a UTKFace-like square crop of skimage's astronaut photo
SIZE = 32


@pytest.fixture(scope="module")
def face() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut()).crop(ASTRONAUT_FACE)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(threads=1)


def save_test_model(path, threshold: float, size: int = SIZE) -> str:
    """A tiny seeded classifier of ``size`` px images saved as an artifact that calls female from
    ``threshold`` (0: every face)."""
    torch.manual_seed(0)
    model = build_model("test_efficientnet", "mlp", 0.3).eval()
    meta = artifact_meta("test_efficientnet", "mlp", 0.3, size, model)
    save_model(path, model, artifact.deployment_meta(meta, threshold, threshold, ["identity"]))
    return str(path)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return save_test_model(tmp_path_factory.mktemp("model") / "model.pt", 0.5)


def test_finds_every_pasted_face_and_nothing_else(face, detector):
    photos = composite_photos([face], 12, seed=3, sides=(80, 300))
    assert sum(len(pasted) for _, pasted in photos) >= 15
    for photo, pasted in photos:
        faces = detector(photo)
        assert len(faces) == len(pasted)
        assert len(match_faces(pasted, faces)) == len(pasted)  # crop square over the pasted square, IoU >= 0.5
        assert [f.x for f in faces] == sorted(f.x for f in faces)  # left to right


def test_almost_no_face_in_backgrounds_and_none_in_real_face_free_photos(face, detector):
    # made-up backgrounds: about one false positive per 100 (docs/faces.md); here a pink ellipse on a blue disc
    found = sum(len(detector(photo)) for photo, _ in composite_photos([face], 30, seed=4, max_faces=0))
    assert found <= 2
    for name in ("coffee", "chelsea", "rocket", "coins"):
        pixels = getattr(skimage_data, name)()
        photo = Image.fromarray(pixels if pixels.ndim == 3 else np.stack([pixels] * 3, -1))
        assert detector(photo) == [], name


def test_finds_the_two_people_in_real_photos(detector):
    for name in ("astronaut", "camera"):
        pixels = getattr(skimage_data, name)()
        photo = Image.fromarray(pixels if pixels.ndim == 3 else np.stack([pixels] * 3, -1))
        assert len(detector(photo)) == 1, name


def test_crop_of_the_detection_matches_the_face_the_model_was_shown(face, detector):
    photo = Image.new("RGB", (640, 480), (90, 120, 60))
    photo.paste(face.resize((200, 200)), (300, 150))
    (found,) = detector(photo)
    cx, cy, side = crop_square(found)
    assert box_iou(np.array([cx - side / 2, cy - side / 2, side, side]), np.array([[300, 150, 200, 200]]))[0] > 0.75
    crop = face_crop(photo, found, 64).astype(float)
    reference = np.asarray(face.resize((64, 64), Image.BILINEAR)).astype(float)
    assert np.corrcoef(crop.ravel(), reference.ravel())[0, 1] > 0.8


def test_turned_face_is_levelled(face, detector):
    photo = Image.new("RGB", (640, 480), (90, 120, 60))
    turned = face.resize((200, 200)).convert("RGBA").rotate(25, Image.BILINEAR)  # counter-clockwise
    photo.paste(turned, (220, 140), turned)
    (found,) = detector(photo)
    assert found.roll_degrees == pytest.approx(-25, abs=8)
    reference = np.asarray(face.resize((64, 64), Image.BILINEAR)).astype(float)
    levelled = face_crop(photo, found, 64).astype(float)
    as_is = face_crop(photo, found, 64, level_from=math.inf).astype(float)
    correlation = [np.corrcoef(crop.ravel(), reference.ravel())[0, 1] for crop in (levelled, as_is)]
    assert correlation[0] > correlation[1] + 0.1


def test_windows_hold_every_face_the_min_size_asks_for():
    for width, height, min_face in ((640, 480, 64), (4000, 3000, 64), (300, 900, 40), (100, 100, 64)):
        windows = detection_windows(width, height, min_face)
        finest = min(side for _, _, side in windows)
        assert windows[0][2] == max(width, height)  # the whole photo first
        levels = len({side for *_, side in windows}) - 1 - len(FARTHER_VIEWS)
        assert finest * RELIABLE_FRACTION <= min_face or levels == MAX_TILE_LEVELS
        # any face up to half the finest tile lies whole inside one tile
        for x in np.linspace(0, width - finest / 2, 7):
            for y in np.linspace(0, height - finest / 2, 7):
                assert any(
                    wx - 1e-6 <= x
                    and x + finest / 2 <= wx + s + 1e-6
                    and wy - 1e-6 <= y
                    and y + finest / 2 <= wy + s + 1e-6
                    for wx, wy, s in windows
                    if s == finest
                )


def test_weighted_nms_merges_overlaps_and_keeps_apart_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [50, 50, 10, 10]], float)
    scores = np.array([0.9, 0.6, 0.8])
    eyes = np.zeros((3, 2, 2))
    merged = weighted_nms(boxes, scores, eyes)
    assert [f.score for f in merged] == [0.9, 0.8]
    assert merged[0].x == pytest.approx(0.6 / 1.5)
    # an empty or broken box overlaps nothing, not even itself: dropped, not looped over for ever
    broken = np.array([[0, 0, -1, 5], [0, 0, np.nan, 5], [3, 3, 4, 4]], float)
    assert [f.x for f in weighted_nms(broken, np.array([0.9, 0.8, 0.7]), np.zeros((3, 2, 2)))] == [pytest.approx(3)]


def test_large_jpeg_is_decoded_small_and_boxes_come_back_in_its_pixels(face, detector, tmp_path):
    photo = Image.new("RGB", (4000, 3000), (200, 190, 170))
    photo.paste(face.resize((1000, 1000)), (2500, 1200))
    photo.save(tmp_path / "big.jpg", quality=90)
    small, (sx, sy) = open_photo(str(tmp_path / "big.jpg"))
    assert max(small.size) <= PHOTO_MAX_SIDE and (sx, sy) == (2.0, 2.0)  # JPEG draft: decoded at 1/2
    (found,) = detector(small, sx)
    cx, cy, side = crop_square(found.scaled(sx, sy))
    assert abs(cx - 3000) < 60 and abs(cy - 1700) < 60 and abs(side - 1000) < 120
    # --min-face-size counts the photo's pixels, not those of the halved copy
    assert len(FaceDetector(threads=1, min_face_size=800)(small, sx)) == 1
    assert FaceDetector(threads=1, min_face_size=1300)(small, sx) == []


def test_exif_rotated_photo_gives_boxes_in_upright_pixels(face, detector, tmp_path):
    upright = Image.new("RGB", (480, 640), (90, 120, 60))
    upright.paste(face.resize((150, 150)), (60, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned; "rotate 90 degrees clockwise to display"
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    photo, scale = open_photo(str(tmp_path / "turned.jpg"))
    assert photo.size == (480, 640) and scale == (1.0, 1.0)
    (found,) = detector(photo)
    assert abs(found.x + found.w / 2 - 135) < 15 and abs(found.y + found.h / 2 - 375) < 20


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, face):
    """Three photos: 2 faces, none, 1 face; and a GIF of one face and a text file."""
    folder = tmp_path_factory.mktemp("photos")
    two = Image.new("RGB", (640, 480), (40, 60, 80))
    two.paste(face.resize((160, 160)), (400, 100))
    two.paste(face.resize((120, 120)), (60, 250))
    two.save(folder / "a_two.jpg", quality=92)
    Image.new("RGB", (640, 480), (40, 60, 80)).save(folder / "b_none.png")
    one = Image.new("RGB", (300, 300), (200, 200, 200))
    one.paste(face.resize((180, 180)), (60, 60))
    one.save(folder / "c_one.gif")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_predict_detect_faces_rows(model_path, photo_folder, tmp_path, capsys):
    out = tmp_path / "faces.csv"
    crops = tmp_path / "crops"
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "predict",
                str(photo_folder),
                "--model",
                model_path,
                "--detect-faces",
                "--out",
                str(out),
                "--save-crops",
                str(crops),
            ]
        )
    assert stop.value.code == EXIT_SOME_INPUTS_FAILED  # the photo without a face
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == FACE_COLUMNS
    assert [(r["path"].rsplit("/", 1)[1], r["face"], r["error"]) for r in rows] == [
        ("a_two.jpg", "0", ""),
        ("a_two.jpg", "1", ""),
        ("b_none.png", "", "no face found"),
        ("c_one.gif", "0", ""),
    ]
    assert int(rows[0]["x"]) < 120 < 380 < int(rows[1]["x"])  # left to right, in photo pixels
    assert all(
        0.5 <= float(r["detection_score"]) <= 1 and r["label"] in ("male", "female") for r in rows if not r["error"]
    )
    assert sorted(p.name for p in crops.iterdir())[0].startswith("0000_") and "a_two.jpg.face0" in str(
        sorted(crops.iterdir())[0]
    )
    assert len(list(crops.iterdir())) == 3
    err = capsys.readouterr().err
    assert "3 faces in 2 photos" in err and "skipped 1 files that are not images by their extension" in err


def test_max_faces_and_min_face_size(model_path, photo_folder):
    two = str(photo_folder / "a_two.jpg")
    assert len(Predictor(model_path, detect_faces=True, max_faces=1).predict(two)) == 1
    rows = Predictor(model_path, detect_faces=True, min_face_size=140).predict(two)
    assert [r["face"] for r in rows] == [0] and rows[0]["x"] > 350  # only the larger face is big enough


def test_without_the_flag_nothing_changes_but_tiny_images_are_refused(model_path, photo_folder, tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "one_pixel.png")
    Image.new("RGB", (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)).save(tmp_path / "smallest.png")
    rows = Predictor(model_path).predict(
        [str(photo_folder), str(tmp_path / "one_pixel.png"), str(tmp_path / "smallest.png")]
    )
    assert [tuple(r) for r in rows][0] == ("path", "probability", "label", "aligned", "error")
    assert [r["error"] for r in rows] == [
        "",
        "",
        "",
        f"too small for a face (1x1 px; at least {MIN_IMAGE_SIDE} px a side)",
        "",
    ]


def test_huge_photo_is_refused_with_a_reason(model_path, tmp_path, monkeypatch):
    monkeypatch.setattr(photos_module, "PHOTO_MAX_PIXELS", 10_000)  # so the file stays small
    Image.new("L", (120, 110)).save(tmp_path / "huge.png")
    (row,) = Predictor(model_path, detect_faces=True).predict(str(tmp_path / "huge.png"))
    assert row["error"] == "too large (120x110 px; the limit is 10,000 pixels)"


def test_crops_get_distinct_names_and_a_bad_folder_is_one_error(model_path, photo_folder, tmp_path, capsys):
    assert crop_name(0, "a/b_c.jpg", 0) != crop_name(1, "a_b/c.jpg", 0)
    assert len(crop_name(7, "/" + "x" * 300 + "/photo.jpg", 2)) < 200
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "predict",
                str(photo_folder),
                "--model",
                model_path,
                "--detect-faces",
                "--save-crops",
                str(tmp_path / "taken"),
            ]
        )
    assert stop.value.code == 2 and "error: cannot save crops to" in capsys.readouterr().err


def test_evaluate_detect_faces_scores_each_photo_by_its_largest_face(model_path, photo_folder, tmp_path, capsys):
    for label in ("female", "male"):
        (tmp_path / label).mkdir()
    for name in ("a_two.jpg", "b_none.png"):
        (tmp_path / "female" / name).write_bytes((photo_folder / name).read_bytes())
    (tmp_path / "male" / "c_one.gif").write_bytes((photo_folder / "c_one.gif").read_bytes())
    main(["evaluate", "--data", str(tmp_path), "--model", model_path, "--detect-faces", "--bootstrap", "0"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["images"] == 2 and report["skipped"] == 1
    assert "no face found" in captured.err


def test_explain_detect_faces_draws_every_face(model_path, photo_folder, tmp_path, capsys):
    out = tmp_path / "faces.png"
    main(["explain", str(photo_folder / "a_two.jpg"), "--model", model_path, "--detect-faces", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "face 0 at x=" in printed and "face 1 at x=" in printed and "2 faces mapped" in printed
    assert Image.open(out).size[0] > 400


def test_face_benchmark_counts_every_pasted_face_and_scores_it_by_its_own_label(face, tmp_path):
    face.save(tmp_path / "face.png")
    (tmp_path / "broken.png").write_text("not an image")
    # the same face as a female and as a male record, and a model that calls every face female (threshold 0):
    # each accuracy is then the share of the female record among the large faces pasted
    labelled = [("face.png", 1), ("broken.png", 1), ("face.png", 0)]
    records, faces, unreadable = read_faces([Record(str(tmp_path / name), label) for name, label in labelled])
    assert [r.label for r in records] == [1, 0] and unreadable == [(str(tmp_path / "broken.png"), "not an image")]
    model = save_test_model(tmp_path / "model.pt", 0.0)
    report = face_benchmark(model, records, faces, photos=3, seed=5, threads=1, rounds=1)
    for name, roll in (("upright", 0.0), ("rolled", 30.0)):
        pasted = [p for _, in_photo in composite_photos(faces, 3, seed=5, max_roll=roll) for p in in_photo]
        large = [p for p in pasted if p.side >= 64]  # the recall target's size; smaller ones the detector skips
        female_share = sum(records[p.source].label for p in large) / len(large)
        assert len(pasted) > len(large) and 0 < female_share < 1  # the composites test both sizes and both labels
        accuracies = ["end_to_end_accuracy_large", "crop_accuracy_large", "crop_accuracy_at_pasted_size_large"]
        accuracies += [f"accuracy_{variant}" for variant in CROP_VARIANTS]
        assert {key.removeprefix(f"{name}_"): v for key, v in report.items() if key.startswith(f"{name}_")} == {
            "recall_large": 1.0,
            "precision_large": 1.0,
            "faces_large": len(large),
            "recall_small": 0.0,
            "precision_small": None,
            "faces_small": len(pasted) - len(large),
            **dict.fromkeys(accuracies, female_share),
        }
    speeds = {key: report.pop(key) for key in ("detect_faces_images_per_s", "crop_only_images_per_s")}
    assert all(speed > 0 for speed in speeds.values())
    assert {k: v for k, v in report.items() if not k.startswith(("upright_", "rolled_"))} == {
        "photos": 3,
        "seed": 5,
        "threads": 1,
        "min_face_size": 64,
    }


def test_face_sizes_are_consistent():
    face = Face(10, 20, 30, 30, 0.9, ((15.0, 30.0), (35.0, 30.0)))
    assert face.size == 30 and face.roll_degrees == 0
    assert face.scaled(2, 2).eyes == ((30.0, 60.0), (70.0, 60.0))
    assert math.isclose(crop_square(face)[2], 31.5)
