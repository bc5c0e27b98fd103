import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gclf.params import Params, ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_are_the_schema_defaults():
    # params.yaml documents every key; the schema's defaults must not drift from it
    assert load_params(ROOT / "params.yaml") == Params()


def test_every_schema_key_is_in_params_yaml():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())

    def keys(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            yield from keys(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [prefix + f.name]

    for key in keys(Params()):
        node = raw
        for part in key.split("."):
            assert part in node, f"{key} missing from params.yaml"
            node = node[part]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"loss": "fokal"}, "loss: expected one of bce, weighted_bce, focal, got 'fokal'"),
        ({"phase2": {"lr": "fast"}}, "phase2.lr: expected a number in (0, 10], got 'fast'"),
        ({"phase2": {"lr": 0}}, "phase2.lr: expected a number in (0, 10]"),
        ({"phase1": {"epochs": 2.5}}, "phase1.epochs: expected an integer"),
        ({"data": {"image_size": True}}, "data.image_size: expected an integer"),
        ({"model": {"pretrained": "yes"}}, "model.pretrained: expected true or false"),
        ({"phase2": {"nope": 1}}, "phase2.nope: unknown key"),
        ({"dat": {}}, "dat: unknown key (did you mean data? allowed here: seed, loss"),
        ({"phase2": {"ema_decy": 0.9}}, "phase2.ema_decy: unknown key (did you mean phase2.ema_decay? allowed here:"),
        ({"augment": {"zzz": 1}}, "augment.zzz: unknown key (allowed here: crop_scale"),
        ({"tta": {"views": ["identity", "mirror"]}}, "tta.views: expected a list drawn from"),
        (
            {"data": {"val_fraction": 0.5, "test_fraction": 0.45}},
            "data.val_fraction + data.test_fraction: must leave at least 10 %",
        ),
        ({"threshold": {"min": 0.9, "max": 0.1}}, "threshold.min: must be below threshold.max"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(raw, message):
    with pytest.raises(ParamsError, match="^" + re.escape(message)):
        parse_params(raw)


def test_ints_are_accepted_for_floats_and_lists_become_tuples():
    p = parse_params({"phase2": {"lr": 1}, "tta": {"views": ["hflip"]}})
    assert p.phase2.lr == 1.0 and isinstance(p.phase2.lr, float)
    assert p.tta.views == ("hflip",)


def test_stage_exits_2_with_one_line_and_no_traceback(tmp_path):
    (tmp_path / "params.yaml").write_text("loss: fokal\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "split.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: loss: expected one of bce, weighted_bce, focal, got 'fokal'"
    assert "Traceback" not in result.stderr


def test_unreadable_yaml_is_a_params_error(tmp_path):
    (tmp_path / "params.yaml").write_text("loss: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ParamsError, match="cannot read"):
        load_params(tmp_path / "missing.yaml")


def test_check_params_command_prints_yaml_or_exits_2(tmp_path, capsys):
    from gclf.cli import main

    main(["check-params", str(ROOT / "params.yaml")])
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "bad.yaml").write_text("phase2: {epochs: -1}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["check-params", str(tmp_path / "bad.yaml")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: phase2.epochs: expected an integer in [0, 1000], got -1\n"
