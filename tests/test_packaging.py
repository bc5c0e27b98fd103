"""An installed gclf has every package of the source tree (a subpackage left out imports only from a checkout)."""

import ast
import re
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_package_discovery_includes_every_gclf_package():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = pyproject.split("[tool.setuptools.packages.find]", 1)[1]  # tomllib needs Python 3.11
    include = ast.literal_eval(re.search(r"^include = (\[.*?\])", section, re.M).group(1))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gclf").rglob("__init__.py")}
    assert set(find_packages(str(ROOT), include=include)) == on_disk


def test_bundled_weights_ship_with_the_package():
    from gclf.faces.detect import MODEL_PATH

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = pyproject.split("[tool.setuptools.package-data]", 1)[1]
    patterns = ast.literal_eval(re.search(r'^"gclf.faces" = (\[.*?\])', section, re.M).group(1))
    shipped = {p for pattern in patterns for p in (ROOT / "gclf" / "faces").glob(pattern)}
    assert MODEL_PATH in shipped and MODEL_PATH.with_name("LICENSE-face_detection_full_range.txt") in shipped
