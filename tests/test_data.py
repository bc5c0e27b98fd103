"""The split stage's data handling: dataset layouts, unusable files, duplicates, stratified splits, manifests."""

import csv
import hashlib
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gclf.data.formats import class_label
from gclf.data.manifest import DataError, Record, read_manifest
from gclf.data.split import build_splits, stratified_split

UTKFACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "utkface"
SPLIT_ARGS = dict(
    val_fraction=0.2, test_fraction=0.2, seed=0, synthetic_count=40, synthetic_size=32, synthetic_female_fraction=0.3
)


def write_image(path, seed, size=8, fmt=None):
    """A tiny noise image, unique per seed (so no accidental duplicates)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_imagefolder(root, females=4, males=6, start=0):
    for i in range(females):
        write_image(Path(root) / "Female" / f"f{i}.png", start + i)
    for i in range(males):
        write_image(Path(root) / "Male" / f"m{i}.jpg", start + 1000 + i)


def rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def split_paths(out_dir):
    return {s: {r["path"] for r in rows(Path(out_dir) / f"{s}.csv")} for s in ("train", "val", "test")}


def skipped(out_dir):
    return {os.path.basename(r["path"]): r["reason"] for r in rows(Path(out_dir) / "skipped.csv")}


def counts(summary):
    """A split summary as (scanned, kept, bad names, unreadable), (duplicates removed, conflicting groups, conflicting
    dropped) and {split: (female, male, total)}, every key of it."""
    summary = dict(summary)
    files = tuple(summary.pop(k) for k in ("scanned", "kept", "bad_names", "unreadable"))
    duplicates = tuple(summary.pop(k) for k in ("duplicates_removed", "conflicting_groups", "conflicting_dropped"))
    splits = {s: tuple(summary.pop(f"{s}_{k}") for k in ("female", "male", "total")) for s in ("train", "val", "test")}
    assert summary == {}, "keys the test does not know"
    return files, duplicates, splits


def test_class_names_are_case_insensitive_aliases():
    assert [class_label(n) for n in ("Female", "WOMEN", "f", "Male", "men", "M")] == [1, 1, 1, 0, 0, 0]
    with pytest.raises(DataError, match="'cats' is not a class name"):
        class_label("cats")


def test_imagefolder_gives_relative_paths_and_stratified_disjoint_splits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_imagefolder("ds", females=10, males=20)
    write_image("ds/Male/nested/deeper.png", 99)
    Path("ds/Male/notes.txt").write_text("not an image, ignored")
    summary = build_splits("imagefolder", "ds", "splits", **SPLIT_ARGS)
    assert counts(summary) == ((31, 31, 0, 0), (0, 0, 0), {"train": (6, 13, 19), "val": (2, 4, 6), "test": (2, 4, 6)})
    paths = split_paths("splits")
    assert not (paths["train"] & paths["val"] or paths["train"] & paths["test"] or paths["val"] & paths["test"])
    assert "ds/Male/nested/deeper.png" in set().union(*paths.values())
    train = rows("splits/train.csv")
    assert list(train[0]) == ["path", "label", "sha1"]
    assert all(r["sha1"] == hashlib.sha1(Path(r["path"]).read_bytes()).hexdigest() for r in train)
    assert [r["path"] for r in train] == sorted(r["path"] for r in train)
    assert all(r["label"] == ("1" if "/Female/" in r["path"] else "0") for r in train)
    assert Path("splits/skipped.csv").read_text() == "path,reason\n"


def test_unknown_format_and_no_usable_image_are_data_errors_saying_what_is_allowed(tmp_path):
    with pytest.raises(DataError, match="^unknown data format 'xml': use synthetic or one of imagefolder, presplit, "):
        build_splits("xml", str(tmp_path), str(tmp_path / "out"), **SPLIT_ARGS)
    (tmp_path / "ds" / "male").mkdir(parents=True)
    (tmp_path / "ds" / "male" / "empty.png").write_bytes(b"")
    (tmp_path / "ds" / "male" / "text.jpg").write_text("not an image")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=re.escape(f"ds: none of the 2 images is usable; see {out}/skipped.csv")):
        build_splits("imagefolder", str(tmp_path / "ds"), str(out), **SPLIT_ARGS)
    assert (out / "skipped.csv").read_text().count("\n") == 3  # the header and both files, with their reasons


def test_a_dataset_of_one_class_is_a_data_error(tmp_path):
    for i in range(6):
        write_image(tmp_path / "ds" / "female" / f"{i}.png", i)
    with pytest.raises(
        DataError,
        match=r"ds: all 6 usable images are female; a gender classifier needs images of both classes \(male, female\)$",
    ):
        build_splits("imagefolder", str(tmp_path / "ds"), str(tmp_path / "out"), **SPLIT_ARGS)


def test_unknown_class_folder_is_a_data_error_naming_it(tmp_path):
    make_imagefolder(tmp_path)
    write_image(tmp_path / "Unknown" / "x.png", 5)
    with pytest.raises(DataError, match=r"Unknown: 'Unknown' is not a class name.*female"):
        build_splits("imagefolder", str(tmp_path), str(tmp_path / "out"), **SPLIT_ARGS)


@pytest.mark.parametrize("root_kind", ["missing", "empty"])
def test_no_images_is_a_data_error(tmp_path, root_kind):
    root = tmp_path / "ds"
    if root_kind == "empty":
        (root / "female").mkdir(parents=True)
    found = r"no images found \(\.jpg, \.jpeg, \.png, .*\) for data.format=imagefolder"
    with pytest.raises(DataError, match="no such folder" if root_kind == "missing" else found):
        build_splits("imagefolder", str(root), str(tmp_path / "out"), **SPLIT_ARGS)


def test_presplit_with_three_folders_keeps_the_given_splits(tmp_path):
    for i, name in enumerate(("Train", "Validation", "Test")):
        make_imagefolder(tmp_path / "Dataset" / name, females=2, males=3, start=100 * i)
    build_splits("presplit", str(tmp_path / "Dataset"), str(tmp_path / "out"), **SPLIT_ARGS)
    paths = split_paths(tmp_path / "out")
    for split, folder in (("train", "Train"), ("val", "Validation"), ("test", "Test")):
        assert len(paths[split]) == 5
        assert all(f"/Dataset/{folder}/" in p for p in paths[split])


def test_presplit_with_train_and_val_carves_test_from_train(tmp_path):
    make_imagefolder(tmp_path / "Task_A" / "train", females=6, males=14)
    make_imagefolder(tmp_path / "Task_A" / "val", females=2, males=3, start=500)
    summary = build_splits("presplit", str(tmp_path / "Task_A"), str(tmp_path / "out"), **SPLIT_ARGS)
    paths = split_paths(tmp_path / "out")
    assert all("/val/" in p for p in paths["val"]) and len(paths["val"]) == 5
    assert all("/train/" in p for p in paths["test"] | paths["train"])
    # test is test_fraction of train + val per class: round(0.2 * 8) females, round(0.2 * 17) males
    assert (summary["test_female"], summary["test_male"]) == (2, 3)


def test_presplit_needs_train_and_val(tmp_path):
    make_imagefolder(tmp_path / "ds" / "training")
    with pytest.raises(DataError, match="no val folder"):
        build_splits("presplit", str(tmp_path / "ds"), str(tmp_path / "out"), **SPLIT_ARGS)
    make_imagefolder(tmp_path / "ds" / "misc")
    with pytest.raises(DataError, match="misc: not a split folder"):
        build_splits("presplit", str(tmp_path / "ds"), str(tmp_path / "out"), **SPLIT_ARGS)


def test_csv_manifest_with_class_names_and_metadata(tmp_path):
    for i in range(10):
        write_image(tmp_path / "imgs" / f"{i}.png", i)
    lines = ["path,label,camera,age"] + [
        f"imgs/{i}.png,{label},cam{i % 2},{20 + i}"
        for i, label in enumerate(["Female", "1", "woman", "f", "0", "male", "Men", "M", "0", "male"])
    ]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    summary = build_splits("csv", str(tmp_path / "labels.csv"), str(tmp_path / "out"), **SPLIT_ARGS)
    assert summary["kept"] == 10 and summary["train_female"] + summary["val_female"] + summary["test_female"] == 4
    records = sum((read_manifest(str(tmp_path / "out" / f"{s}.csv")) for s in ("train", "val", "test")), [])
    by_name = {os.path.basename(r.path): r for r in records}
    assert by_name["0.png"].label == 1 and by_name["9.png"].label == 0
    assert by_name["3.png"].meta == {"age": "23", "camera": "cam1"}
    assert os.path.isfile(by_name["3.png"].path)
    assert list(rows(tmp_path / "out" / "train.csv")[0]) == ["path", "label", "sha1", "age", "camera"]


def test_csv_manifest_without_label_column_is_a_data_error(tmp_path):
    (tmp_path / "m.csv").write_text("path,gender\na.png,female\n")
    with pytest.raises(DataError, match="needs columns path,label"):
        build_splits("csv", str(tmp_path / "m.csv"), str(tmp_path / "out"), **SPLIT_ARGS)


def test_csv_manifest_with_an_unknown_label_names_the_line(tmp_path):
    write_image(tmp_path / "a.png", 1)
    (tmp_path / "m.csv").write_text("path,label\na.png,female\na.png,cat\n")
    with pytest.raises(DataError, match=r"m.csv, line 3: 'cat' is not a class name"):
        build_splits("csv", str(tmp_path / "m.csv"), str(tmp_path / "out"), **SPLIT_ARGS)


def test_utkface_names_give_labels_and_metadata(tmp_path):
    names = [
        "25_0_0_20170116174525125.jpg.chip.jpg",
        "8_1_1_20170109142408075.jpg.chip.jpg",
        "61_1_2_20170109150557335.jpg.chip.jpg",
        "39_1_20170116174525125.jpg.chip.jpg",
        "45_0_3_20170119171234567.jpg.chip.jpg",
        "33_1_4_20170117012345678.jpg.chip.jpg",
    ]
    for i, name in enumerate(names):
        write_image(tmp_path / "utk" / name, i, fmt="JPEG")
    summary = build_splits("utkface", str(tmp_path / "utk"), str(tmp_path / "out"), **SPLIT_ARGS)
    assert (summary["scanned"], summary["bad_names"], summary["kept"]) == (6, 1, 5)
    assert skipped(tmp_path / "out") == {"39_1_20170116174525125.jpg.chip.jpg": "bad name"}
    records = {
        os.path.basename(r.path)[:7]: r
        for s in ("train", "val", "test")
        for r in read_manifest(str(tmp_path / "out" / f"{s}.csv"))
    }
    assert records["8_1_1_2"].label == 1 and records["25_0_0_"].label == 0
    assert records["8_1_1_2"].meta == {"age": "8", "age_band": "0-9", "race": "black"}
    assert records["61_1_2_"].meta["age_band"] == "60+" and records["61_1_2_"].meta["race"] == "asian"
    assert records["45_0_3_"].meta["age_band"] == "40-59" and records["33_1_4_"].meta["race"] == "others"


def test_bad_files_are_skipped_and_counted(tmp_path, monkeypatch):
    make_imagefolder(tmp_path / "ds")
    female = tmp_path / "ds" / "Female"
    (female / "empty.jpg").write_bytes(b"")
    (female / "text.jpg").write_text("hello, I am not a JPEG")
    good = write_image(tmp_path / "full.jpg", 7, size=20, fmt="JPEG").read_bytes()
    (female / "cut.jpg").write_bytes(good[: len(good) // 2])
    big = write_image(tmp_path / "big.png", 8, size=40)
    shutil.copy(big, female / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 40 x 40 is over twice this: an error
    summary = build_splits("imagefolder", str(tmp_path / "ds"), str(tmp_path / "out"), **SPLIT_ARGS)
    assert skipped(tmp_path / "out") == {
        "empty.jpg": "empty file",
        "text.jpg": "not an image",
        "cut.jpg": "truncated",
        "big.png": "too large",
    }
    assert (summary["scanned"], summary["unreadable"], summary["kept"]) == (14, 4, 10)


def test_duplicates_keep_one_copy_and_conflicts_drop_all(tmp_path):
    make_imagefolder(tmp_path / "ds", females=4, males=6)
    ds = tmp_path / "ds"
    shutil.copy(ds / "Female" / "f0.png", ds / "Female" / "f0_copy.png")  # same label: one kept
    shutil.copy(ds / "Female" / "f1.png", ds / "Male" / "f1_as_male.png")  # conflicting labels
    summary = build_splits("imagefolder", str(ds), str(tmp_path / "out"), **SPLIT_ARGS)
    assert skipped(tmp_path / "out") == {
        "f0_copy.png": "duplicate",
        "f1.png": "duplicate with conflicting labels",
        "f1_as_male.png": "duplicate with conflicting labels",
    }
    assert (summary["duplicates_removed"], summary["conflicting_groups"], summary["conflicting_dropped"]) == (1, 1, 2)
    assert summary["kept"] == 9


def test_duplicate_across_presplit_folders_is_kept_only_in_the_held_out_split(tmp_path):
    root = tmp_path / "ds"
    for i, name in enumerate(("train", "val", "test")):
        make_imagefolder(root / name, females=2, males=2, start=100 * i)
    shutil.copy(root / "test" / "Male" / "m0.jpg", root / "train" / "Male" / "leaked.jpg")
    shutil.copy(root / "val" / "Female" / "f0.png", root / "train" / "Female" / "leaked.png")
    build_splits("presplit", str(root), str(tmp_path / "out"), **SPLIT_ARGS)
    paths = split_paths(tmp_path / "out")
    assert str(root / "test" / "Male" / "m0.jpg") in paths["test"]
    assert str(root / "val" / "Female" / "f0.png") in paths["val"]
    assert not any("leaked" in p for p in paths["train"])


def fake_records(females, males):
    return [Record(f"f/{i:03d}.png", 1) for i in range(females)] + [Record(f"m/{i:03d}.png", 0) for i in range(males)]


def test_stratified_split_is_deterministic_per_seed_and_keeps_both_classes_everywhere():
    records = fake_records(30, 70)
    first = stratified_split(records, 0.15, 0.15, seed=1)
    assert first == stratified_split(list(reversed(records)), 0.15, 0.15, seed=1)
    assert first != stratified_split(records, 0.15, 0.15, seed=2)
    for split, (females, males) in {"train": (22, 50), "val": (4, 10), "test": (4, 10)}.items():
        assert sum(r.split == split and r.label == 1 for r in first) == females
        assert sum(r.split == split and r.label == 0 for r in first) == males
    tiny = stratified_split(fake_records(3, 3), 0.01, 0.01, seed=0)
    assert {(r.split, r.label) for r in tiny} == {(s, c) for s in ("train", "val", "test") for c in (0, 1)}
    # a class too small for three splits keeps one image for train first, then fills test
    fewest = Counter((r.split, r.label) for r in stratified_split(fake_records(2, 1), 0.15, 0.15, seed=0))
    assert fewest == {("train", 1): 1, ("test", 1): 1, ("train", 0): 1}


def test_same_seed_writes_byte_identical_manifests(tmp_path):
    make_imagefolder(tmp_path / "ds", females=8, males=12)
    outs = [tmp_path / name for name in ("a", "b", "c")]
    for out, seed in zip(outs, (5, 5, 6)):
        build_splits("imagefolder", str(tmp_path / "ds"), str(out), **{**SPLIT_ARGS, "seed": seed})
    text = [(out / "test.csv").read_bytes() for out in outs]
    assert text[0] == text[1] != text[2]


def test_synthetic_format_writes_images_under_the_output_folder(tmp_path):
    out = tmp_path / "splits"
    (out / "synthetic" / "male").mkdir(parents=True)
    write_image(out / "synthetic" / "male" / "stale.png", 1)  # from an older run: must not be listed
    summary = build_splits("synthetic", "unused", str(out), **SPLIT_ARGS)
    assert summary["kept"] == 40 and sum(summary[f"{s}_female"] for s in ("train", "val", "test")) == 12
    records = read_manifest(str(out / "train.csv"))
    assert all(r.path.startswith(str(out / "synthetic")) and os.path.isfile(r.path) for r in records)
    assert {r.meta["skin"] for r in records} <= {"light", "medium", "dark"}
    assert not (out / "synthetic" / "male" / "stale.png").exists()


def test_read_manifest_points_to_the_split_stage_when_missing(tmp_path):
    with pytest.raises(DataError, match="dvc repro split"):
        read_manifest(str(tmp_path / "train.csv"))


def gender_digit(path):
    """The gender field of a UTKFace name (AGE_GENDER_RACE_DATE.jpg.chip.jpg), read here independently."""
    return os.path.basename(path).split("_")[1]


def checked_utkface_split(root, out):
    """build_splits on a UTKFace folder, with the recipe's 80/10/10 split, every written row checked against the
    files themselves; returns the summary and {file name: reason} of the skipped files."""
    summary = build_splits("utkface", str(root), str(out), **{**SPLIT_ARGS, "val_fraction": 0.1, "test_fraction": 0.1})
    digests = {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in Path(root).iterdir()}
    genders_by_digest = {}
    for path, digest in digests.items():
        genders_by_digest.setdefault(digest, set()).add(gender_digit(path))
    kept = [r for s in ("train", "val", "test") for r in rows(Path(out) / f"{s}.csv")]
    reasons = {r["path"]: r["reason"] for r in rows(Path(out) / "skipped.csv")}
    assert sorted([r["path"] for r in kept] + list(reasons)) == sorted(digests)  # each file once, kept or skipped
    assert all(r["sha1"] == digests[r["path"]] and r["label"] == gender_digit(r["path"]) for r in kept)
    kept_digests = {r["sha1"] for r in kept}
    assert len(kept_digests) == len(kept)  # no image twice, so none in two splits
    for path, reason in reasons.items():
        if reason == "duplicate":  # another copy with the same gender is kept
            assert digests[path] in kept_digests and len(genders_by_digest[digests[path]]) == 1, path
        elif reason == "duplicate with conflicting labels":  # no copy is kept, and the copies disagree
            assert digests[path] not in kept_digests and genders_by_digest[digests[path]] == {"0", "1"}, path
        else:
            assert reason == "bad name", path
    return summary, {os.path.basename(path): reason for path, reason in reasons.items()}


def test_utkface_duplicates_and_bad_names_in_a_tiny_folder(tmp_path):
    utk = tmp_path / "utk"
    names = [f"{20 + i}_{i % 2}_{i % 5}_2017010{i}120000000.jpg.chip.jpg" for i in range(10)]
    for i, name in enumerate(names + ["39_1_20170116174525125.jpg.chip.jpg", "7_2_0_20170116174525125.jpg.chip.jpg"]):
        write_image(utk / name, i, fmt="JPEG")
    shutil.copy(utk / names[0], utk / "50_0_1_20170101000000001.jpg.chip.jpg")  # male twice: one copy kept
    shutil.copy(utk / names[1], utk / "51_0_1_20170101000000002.jpg.chip.jpg")  # female and male: both dropped
    shutil.copy(utk / names[1], utk / "52_1_1_20170101000000003.jpg.chip.jpg")  # the same group, female again
    summary, reasons = checked_utkface_split(utk, tmp_path / "out")
    assert counts(summary) == ((15, 9, 2, 0), (1, 1, 3), {"train": (2, 3, 5), "val": (1, 1, 2), "test": (1, 1, 2)})
    assert sorted(name for name, reason in reasons.items() if reason == "bad name") == [
        "39_1_20170116174525125.jpg.chip.jpg",
        "7_2_0_20170116174525125.jpg.chip.jpg",
    ]


# The real folder is not in CI: test_utkface_duplicates_and_bad_names_in_a_tiny_folder runs the same
# checks (checked_utkface_split, counts, the bad names) on a folder with every case the real one has.
@pytest.mark.skipif(not UTKFACE.is_dir(), reason="real UTKFace folder not present")
def test_real_utkface_split_matches_its_files_and_the_documented_counts(tmp_path):
    summary, reasons = checked_utkface_split(UTKFACE, tmp_path)
    # docs/data.md and docs/training.md quote these
    assert counts(summary) == (
        (9780, 9659, 2, 0),
        (90, 14, 29),
        {"train": (4266, 3461, 7727), "val": (533, 433, 966), "test": (533, 433, 966)},
    )
    assert sorted(name for name, reason in reasons.items() if reason == "bad name") == [
        "61_1_20170109142408075.jpg.chip.jpg",
        "61_3_20170109150557335.jpg.chip.jpg",
    ]
