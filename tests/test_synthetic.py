import os

import numpy as np
from PIL import Image

from gclf.data.synthetic import female_flags, make_synthetic, sample_face


def read_all(folder):
    """{relative path: bytes} of every file under ``folder``."""
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            files[os.path.relpath(path, folder)] = open(path, "rb").read()
    return files


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    a = make_synthetic(str(tmp_path / "a"), 12, seed=3, image_size=32)
    b = make_synthetic(str(tmp_path / "b"), 12, seed=3, image_size=32)
    c = make_synthetic(str(tmp_path / "c"), 12, seed=4, image_size=32)
    assert a == b and a != c
    assert read_all(tmp_path / "a") == read_all(tmp_path / "b")
    files_a, files_c = read_all(tmp_path / "a"), read_all(tmp_path / "c")
    assert all(files_a[p] != files_c[p] for p in set(files_a) & set(files_c))


def test_items_match_files_labels_and_metadata(tmp_path):
    items = make_synthetic(str(tmp_path), 20, seed=0, image_size=48)
    assert len(items) == 20 == len(read_all(tmp_path))
    for rel, label, meta in items:
        assert rel.split("/")[0] == ("male", "female")[label]
        assert meta["skin"] in ("light", "medium", "dark")
        with Image.open(tmp_path / rel) as image:
            assert (image.mode, image.size) == ("RGB", (48, 48))
    assert sorted(rel for rel, _, _ in items) == sorted(p.replace(os.sep, "/") for p in read_all(tmp_path))


def test_class_balance_is_the_requested_fraction():
    flags = female_flags(1000, seed=0, female_fraction=0.3)
    assert flags.sum() == 300
    assert not np.array_equal(flags, female_flags(1000, seed=1, female_fraction=0.3))


def test_class_cues_differ_but_overlap():
    """Each cue shifts with the class, yet both classes cover both sides: no cue alone decides."""

    def faces(female):
        return [sample_face(np.random.default_rng([9, i]), female) for i in range(800)]

    women, men = faces(True), faces(False)
    long_hair = np.mean([f.long_hair for f in women]), np.mean([f.long_hair for f in men])
    assert long_hair[0] > long_hair[1] + 0.2 and 0 < long_hair[1] and long_hair[0] < 1
    jaw_women, jaw_men = np.array([f.jaw for f in women]), np.array([f.jaw for f in men])
    assert jaw_women.mean() < jaw_men.mean()
    assert np.mean(jaw_women > np.median(jaw_men)) > 0.05  # overlapping distributions
    skins = {f.skin_name for f in women} & {f.skin_name for f in men}
    assert skins == {"light", "medium", "dark"}
