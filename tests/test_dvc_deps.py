"""Each stage's code deps in ``dvc.yaml`` are exactly the ``gclf`` modules its script imports.

DVC re-runs a stage when one of its deps changes. A module the stage runs but does not list lets a
code change go unnoticed (stale results); a listed module it never runs re-runs it for nothing.
So the ``gclf/`` deps of a stage must equal the files of the modules ``stages/<name>.py`` imports,
transitively: ``import gclf.x``, ``from gclf.x import y`` and ``from gclf import x``, at module level
or inside functions (a function's import runs when the stage calls it). Importing a module runs
its packages' ``__init__.py`` too. A PEP 562 ``__getattr__`` in a package (``gclf.Predictor``)
imports only when that attribute is asked for, so its imports count only for ``import gclf`` and
for ``from gclf import <name>`` where the name is not a submodule. A dep naming a folder covers
the files under it, and is stale unless the stage imports all of them.
"""

from __future__ import annotations

import ast
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "gclf"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def module_file(name: str) -> Path | None:
    """The file of the ``gclf`` module or package ``name``, or None when ``name`` is none."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    path = ROOT.joinpath(*parts)
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def with_packages(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module imports every package above it."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


Import = tuple[str, bool]  # (dotted name, a plain ``import name``: any attribute of it may be asked for)


@cache
def imports_of(path: Path) -> tuple[frozenset[Import], frozenset[Import]]:
    """(what the file imports, what only its module-level ``__getattr__`` imports), anywhere in it.

    ``from gclf.x import y`` gives ``gclf.x.y``: a module or an attribute of ``gclf.x``, as
    :func:`modules_run_by` tells.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lazy_nodes = {
        id(node)
        for top in tree.body
        if isinstance(top, ast.FunctionDef) and top.name == "__getattr__"
        for node in ast.walk(top)
    }
    eager: set[Import] = set()
    lazy: set[Import] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found = {(alias.name, True) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: a relative import; this test follows absolute imports only"
            found = {(f"{node.module}.{alias.name}", False) for alias in node.names}
        else:
            continue
        (lazy if id(node) in lazy_nodes else eager).update(found)
    return frozenset(eager), frozenset(lazy)


def modules_run_by(name: str, plain: bool) -> list[str]:
    """The ``gclf`` modules that importing ``name`` runs: its packages and itself when it is a
    module. A lazy ``__getattr__``'s imports run too when ``name`` is an attribute it may provide
    (``from gclf import Predictor``), or after a plain ``import`` (any attribute may be asked for)."""
    modules = [m for m in with_packages(name) if module_file(m) is not None]
    owner = name if plain else modules[-1] if modules and module_file(name) is None else None
    if owner is not None and module_file(owner) is not None:
        for lazy_name, lazy_plain in imports_of(module_file(owner))[1]:
            modules += modules_run_by(lazy_name, lazy_plain)
    return modules


def imported_files(script: Path) -> set[Path]:
    """The ``gclf`` files that running ``script`` can execute, by its imports, transitively."""
    found: set[Path] = set()
    todo = [script]
    while todo:
        for name, plain in imports_of(todo.pop())[0]:
            for module in modules_run_by(name, plain):
                file = module_file(module)
                if file not in found:
                    found.add(file)
                    todo.append(file)
    return found


def script_of(stage: dict) -> Path:
    """``stages/<name>.py`` from the stage's ``cmd`` (``python stages/<name>.py``)."""
    return ROOT / next(word for word in shlex.split(stage["cmd"]) if word.endswith(".py"))


def code_deps(stage: dict) -> list[str]:
    """The stage's deps inside ``gclf/``, as written (a file or a folder)."""
    return [d.rstrip("/") for d in stage.get("deps", []) if d.split("/")[0] == PACKAGE]


def covered(file: str, dep: str) -> bool:
    return file == dep or file.startswith(dep + "/")


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_code_deps_are_exactly_the_modules_it_imports(name):
    stage = STAGES[name]
    script = script_of(stage)
    assert script.relative_to(ROOT).as_posix() in stage["deps"], f"{name}: its script is not one of its deps"
    imported = {f.relative_to(ROOT).as_posix() for f in imported_files(script)}
    deps = code_deps(stage)
    missing = sorted(f for f in imported if not any(covered(f, d) for d in deps))
    stale = []
    for dep in deps:
        files = (
            [dep] if dep.endswith(".py") else sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / dep).rglob("*.py"))
        )
        if not files:
            stale.append(f"{dep} (no such module)")
        stale += [f"{f} (via {dep})" if f != dep else f for f in files if f not in imported]
    problems = []
    if missing:
        problems.append(f"add to its deps (imported, not listed): {', '.join(missing)}")
    if stale:
        problems.append(f"remove from its deps (listed, not imported): {', '.join(stale)}")
    assert not problems, f"dvc.yaml stage {name}: " + "; ".join(problems)


def test_the_import_walk_finds_what_a_stage_runs():
    """The walk itself: packages, from-imports of modules, their imports in turn, lazy attributes
    (imports inside functions: :func:`test_lazy_attributes_count_only_when_asked_for`)."""
    files = {f.relative_to(ROOT).as_posix() for f in imported_files(ROOT / "stages" / "train_phase1.py")}
    assert {"gclf/__init__.py", "gclf/data/__init__.py", "gclf/data/images.py", "gclf/stage.py"} <= files
    assert {"gclf/train/augment.py", "gclf/live.py", "gclf/train/losses.py"} <= files  # via gclf.train.phases
    assert "gclf/deploy/predict.py" not in files  # gclf.__getattr__'s import: only for gclf.Predictor


def test_lazy_attributes_count_only_when_asked_for(tmp_path):
    lazy = ROOT / "gclf" / "deploy" / "predict.py"  # what gclf.__getattr__ imports for gclf.Predictor
    for source, runs_lazy in (
        ("from gclf import Predictor\n", True),
        ("import gclf\n", True),
        ("from gclf import io\n", False),
        ("import gclf.io\n", False),
        ("def main():\n    from gclf.io import write_json\n", False),
    ):
        script = tmp_path / "stage.py"
        script.write_text(source)
        imports_of.cache_clear()
        files = imported_files(script)
        assert ROOT / "gclf" / "__init__.py" in files, source
        assert (lazy in files) == runs_lazy, source
        if not runs_lazy:
            assert (ROOT / "gclf" / "io.py" in files) == ("io" in source), source
