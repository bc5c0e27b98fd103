"""Byte-stable output: sorted keys and rounded floats, with an optional leading set of keys."""

import json

from gclf.io import dumps_json


def test_json_keys_are_sorted_at_every_level_and_floats_rounded():
    text = dumps_json({"b": [{"z": 1.23456, "a": float("nan")}], "a": {"y": 2, "x": 0.5}}, digits=2)
    assert text == json.dumps({"a": {"x": 0.5, "y": 2}, "b": [{"a": None, "z": 1.23}]}, indent=2) + "\n"


def test_first_keys_lead_in_the_given_order_the_rest_stay_sorted():
    text = dumps_json({"d": 4, "a": 1, "c": {"z": 1, "y": 2}, "b": 2}, first=("c", "missing", "b"))
    assert list(json.loads(text)) == ["c", "b", "a", "d"]
    assert list(json.loads(text)["c"]) == ["y", "z"]
