"""A DVC remote round trip on the real pipeline (docs/scaling.md#data-and-cache-on-a-dvc-remote).

One throwaway repo reproduces a tiny pipeline and pushes to a local-directory remote; a fresh
`git clone` of it pulls and must find nothing stale and nothing to re-run. The throwaway repo is
the working tree's files as git would commit them (tracked and untracked, ignored ones left out),
so the test sees uncommitted edits like the rest of the suite; in CI's fresh clone that is HEAD.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
OUTPUT_FOLDERS = ("data/splits", "models", "metrics", "plots", "reports")  # cached and uncached outs

# The smallest pipeline that still runs every stage: 56 train, 12 validation and 12 test images of
# 32 px, one epoch per phase. The benchmark stage checks that static INT8 keeps the ranking of the
# images it times (Spearman >= 0.8): that takes ImageNet weights (offline), calibration on the whole
# train split and all 12 test images (0.96 here; 0.43 with 8 calibration and 8 test images).
TINY = {
    "threads": 1,  # tiny tensors: a second thread only waits, and spins when other processes share the cores
    "data": {"synthetic_count": 80, "image_size": 32},
    "model": {"pretrained": True},
    "phase1": {"epochs": 1, "batch_size": 16},
    "phase2": {"epochs": 1, "batch_size": 8},  # 7 steps: onecycle divides by zero on 5 or fewer
    "tta": {"views": ["identity"]},
    "evaluate": {"bootstrap": 10, "gallery_size": 2, "gradcam_per_case": 1},
    "quantize": {"calibration_images": 56},
    "benchmark": {"threads": 1, "warmup": 0, "repeats": 1, "batch_size": 12},  # above the test split: KeyError
}


def pipeline_env(repo: Path, tmp: Path) -> dict[str, str]:
    """Stages import ``repo``'s gclf (not the editable install's) with this interpreter; git and DVC stay in ``tmp``."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(repo),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # dvc.yaml runs `python`
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(tmp / "dvc-site-cache"),
        GIT_CONFIG_GLOBAL=os.devnull,  # no signing or hooks from the user's config
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    return env


def run(args: list[str], repo: Path, env: dict[str, str]) -> str:
    """Run a command in ``repo``; its stdout, or a failure showing the end of its output."""
    result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def dvc(*args: str, repo: Path, env: dict[str, str]) -> str:
    return run([sys.executable, "-m", "dvc", *args], repo, env)


def git(*args: str, repo: Path, env: dict[str, str]) -> str:
    return run(["git", *args], repo, env)


def copy_working_tree(dest: Path) -> None:
    """The files ``git add -A`` would commit from ROOT (deleted ones left out)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def make_tiny(params_file: Path) -> None:
    params = yaml.safe_load(params_file.read_text())
    for key, value in TINY.items():
        params[key] = params[key] | value if isinstance(value, dict) else value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def output_mtimes(repo: Path) -> dict[str, int]:
    """mtime (ns) of every file in the folders stages write to: a stage that runs again rewrites its outputs."""
    files = [f for folder in OUTPUT_FOLDERS for f in (repo / folder).rglob("*") if f.is_file()]
    return {str(f.relative_to(repo)): f.stat().st_mtime_ns for f in files}


@pytest.fixture(scope="module")
def pulled_clone(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Reproduce and push in one repo, then clone and pull into a fresh one; the clone and its env."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs the project's git checkout")
    tmp = tmp_path_factory.mktemp("dvc_remote")
    origin, clone = tmp / "origin", tmp / "clone"
    origin.mkdir()
    copy_working_tree(origin)
    env = pipeline_env(origin, tmp)
    git("init", "-q", repo=origin, env=env)
    make_tiny(origin / "params.yaml")
    dvc("remote", "add", "-d", "local", str(tmp / "remote"), repo=origin, env=env)
    dvc("repro", repo=origin, env=env)
    dvc("push", repo=origin, env=env)
    git("add", "-A", repo=origin, env=env)
    git("commit", "-q", "-m", "tiny pipeline, pushed", repo=origin, env=env)

    git("clone", "-q", str(origin), str(clone), repo=tmp, env=env)
    env = pipeline_env(clone, tmp)
    dvc("pull", repo=clone, env=env)
    imported = run([sys.executable, "-c", "import gclf; print(gclf.__file__)"], clone / "stages", env)
    assert Path(imported.strip()).is_relative_to(clone), "stages must import the clone's gclf"
    return clone, env


def test_pull_into_a_fresh_clone_leaves_nothing_stale(pulled_clone):
    clone, env = pulled_clone
    assert json.loads(dvc("status", "--json", repo=clone, env=env)) == {}
    assert (clone / "models/int8/model.xml").is_file() and (clone / "data/splits/train.csv").is_file()


def test_repro_after_pull_runs_no_stage(pulled_clone):
    clone, env = pulled_clone
    before = output_mtimes(clone)
    output = dvc("repro", repo=clone, env=env)
    assert "Running stage" not in output, output
    assert output_mtimes(clone) == before
    assert git("status", "--porcelain", repo=clone, env=env) == ""
    assert json.loads(dvc("status", "--json", repo=clone, env=env)) == {}


def test_the_registry_entries_download_by_name_from_a_fresh_clone(pulled_clone, tmp_path):
    """dvc.yaml's `artifacts:` (docs/predict.md#the-model-registry): a version is an annotated GTO tag."""
    from gclf.export.artifact import read_artifact_meta

    clone, env = pulled_clone
    for name, downloaded in {"gender-fp32": "fp32.pt", "gender-int8": "int8/model.xml"}.items():
        git("tag", "-a", f"{name}@v0.0.1", "-m", "registered by the test", repo=clone, env=env)
        out = tmp_path / Path(downloaded).parts[0]
        dvc("artifacts", "get", ".", name, "-o", str(out), repo=clone, env=env)
        assert read_artifact_meta(tmp_path / downloaded)["image_size"] == TINY["data"]["image_size"]
