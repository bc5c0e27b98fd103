"""The package's shape (docs/code.md): folders by concern whose imports only go down, small modules,
thin stages, and a code map that names exactly the modules there are."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from test_dvc_deps import imports_of, module_file, with_packages

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gclf"
# Lowest first: a module may import from its own layer and the ones before it, never after.
LAYERS = ("", "data", "faces", "train", "export", "deploy", "evaluate", "bench", "cli")
MAX_MODULE_LINES = 400
MAX_MODULES_PER_FOLDER = 12
MAX_STAGE_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The rank of ``gclf.<folder>...``'s folder; a module of the floor (``gclf.io``) is 0."""
    folder = module.split(".")[1]
    return LAYERS.index(folder if folder in LAYERS else "")


def gclf_imports(path: Path) -> set[str]:
    """Every ``gclf`` module ``path`` imports, at module level or inside a function (test_dvc_deps's
    reading of imports; ``from gclf.x import y`` counts as ``gclf.x.y`` when that is a module). The
    package's own lazy ``__getattr__`` (``gclf.Predictor``) is not an import of ``gclf``."""
    found = set()
    for name, _ in imports_of(path)[0]:
        modules = [m for m in with_packages(name) if module_file(m) is not None]
        found.add(modules[-1] if modules else name)
    return {m for m in found if m.startswith("gclf.")}


@cache
def graph() -> dict[str, set[str]]:
    return {module_name(p): gclf_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    # gclf/__init__.py is the package's public face (gclf.Predictor), not a layer
    return [f"{m} -> {t}" for m, ts in edges.items() if m != "gclf" for t in ts if layer(t) > layer(m)]


def depth(edges: dict[str, set[str]]) -> int:
    """Layers of the import graph: the modules on its longest chain of imports (it has no cycle)."""
    seen: dict[str, int] = {}

    def visit(m: str, path: tuple[str, ...]) -> int:
        assert m not in path, f"import cycle: {' -> '.join(path + (m,))}"
        if m not in seen:
            seen[m] = 1 + max((visit(t, path + (m,)) for t in edges.get(m, ()) if t in edges), default=0)
        return seen[m]

    return max(visit(m, ()) for m in edges if m != "gclf")


def test_imports_only_go_down_the_layers_and_never_round_in_a_cycle():
    assert upward_imports(graph()) == []
    assert depth(graph()) < 11  # 11 before the package was split by concern


def test_the_layer_check_catches_an_upward_import_and_a_cycle():
    assert upward_imports({"gclf.data.images": {"gclf.faces.align"}}) == ["gclf.data.images -> gclf.faces.align"]
    assert upward_imports({"gclf.io": {"gclf.data.manifest"}, "gclf.deploy.serve": {"gclf.io"}}) == [
        "gclf.io -> gclf.data.manifest"
    ]
    with pytest.raises(AssertionError, match="import cycle"):
        depth({"gclf.a": {"gclf.b"}, "gclf.b": {"gclf.a"}})
    assert depth({"gclf.a": {"gclf.b"}, "gclf.b": {"gclf.c"}, "gclf.c": set()}) == 3


def test_every_folder_is_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == set(LAYERS) - {""}


def test_modules_are_small_and_folders_few():
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}
    for folder in [PACKAGE, *(p for p in PACKAGE.iterdir() if (p / "__init__.py").exists())]:
        assert len(list(folder.glob("*.py"))) <= MAX_MODULES_PER_FOLDER, folder


def test_stages_are_wiring():
    long = {
        p.name: n for p in (ROOT / "stages").glob("*.py") if (n := len(p.read_text().splitlines())) > MAX_STAGE_LINES
    }
    assert long == {}
    for p in (ROOT / "stages").glob("*.py"):
        assert not any(t.startswith("stages") for t in gclf_imports(p)), p  # no stage imports another


def mapped_modules(text: str) -> set[str]:
    """The ``gclf/....py`` paths in the first column of docs/code.md's tables."""
    return set(re.findall(r"^\| `(gclf/[\w/]+\.py)` \|", text, re.M))


def test_the_code_map_names_every_module_and_only_those():
    mapped = mapped_modules((ROOT / "docs" / "code.md").read_text())
    real = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert sorted(real - mapped) == [], "modules missing from docs/code.md"
    assert sorted(mapped - real) == [], "docs/code.md names modules that do not exist"


def test_the_map_check_reads_table_rows_only():
    text = "| `gclf/io.py` | atomic writes |\nsee `gclf/params.py` in prose\n| `gclf/data/split.py` | the split |\n"
    assert mapped_modules(text) == {"gclf/io.py", "gclf/data/split.py"}
