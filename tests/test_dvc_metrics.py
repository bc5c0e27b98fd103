"""``dvc exp show`` opens with the headline metrics: the metrics files are declared once, in order,
at the top level of ``dvc.yaml`` (DVC would list metrics declared by stages first, in stage order)."""

from pathlib import Path

import yaml

from gclf.outputs import MANIFEST_SUFFIX

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))


def out_paths(stage: dict) -> list[str]:
    return [next(iter(out)) if isinstance(out, dict) else out for out in stage.get("outs", [])]


def test_every_metrics_file_a_stage_writes_is_declared_once_in_display_order():
    outs = [path for stage in DVC_YAML["stages"].values() for path in out_paths(stage)]
    written = [path for path in outs if path.startswith("metrics/") and not path.endswith(MANIFEST_SUFFIX)]
    declared = DVC_YAML["metrics"]
    assert sorted(declared) == sorted(written) and len(set(declared)) == len(declared)
    assert declared[:2] == ["metrics/eval.json", "metrics/benchmark.json"]  # test scores, then INT8 speed and size
    assert declared[-1] == "metrics/data.json"  # the data counts last
    assert not [name for name, stage in DVC_YAML["stages"].items() if "metrics" in stage]  # would be listed first
