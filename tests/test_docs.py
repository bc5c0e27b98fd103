"""The docs stay true to the code: README.md and docs/*.md name only real params keys (with valid
values) and real ``gclf`` subcommands, their relative links resolve (anchors included), the README
stays a front door (at most 12,000 characters) that links every docs page, and every line of
recipes/*.txt is an override the params schema accepts. Fast: text only, no network, no model."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from gclf.cli import main as gclf_main
from gclf.params import ParamsError, parse_params

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
RECIPES = sorted((ROOT / "recipes").glob("*.txt"))
README_LIMIT = 12_000

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
OVERRIDE = re.compile(r"(?<!\S)-S[ \t]+(\S+=\S*)")  # dvc exp run -S key=value
KEY_VALUE = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*=\S+")  # a bare key=value
COMMAND = re.compile(r"(?<![\w./-])gclf[ \t]+([a-z][\w-]*)")  # gclf <subcommand> in shell code
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto: ...
PLACEHOLDER = "key=value"  # the docs' name for the form itself, not an override


# --- reading markdown ---------------------------------------------------------------------------


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1).strip().lower(), m.group(2)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def inline_code(text: str) -> list[str]:
    return INLINE.findall(prose(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for match in HEADING.finditer(prose(text)):
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


# --- what the docs name -------------------------------------------------------------------------


def override_groups(text: str) -> list[list[str]]:
    """``key=value`` overrides, grouped as they apply together: the ``-S`` of one command line
    (in a code block or an inline span), the bare ``key=value`` lines of one code block (a recipe
    excerpt), or one inline span that is a bare ``key=value``."""
    groups = []
    text = text.replace(f"`{PLACEHOLDER}`", "").replace(f"-S {PLACEHOLDER}", "")
    for language, body in code_blocks(text):
        if language == "python":
            continue
        bare = []
        for line in body.splitlines():
            if KEY_VALUE.fullmatch(line.strip()):
                bare.append(line.strip())
            elif OVERRIDE.search(line):
                groups.append(OVERRIDE.findall(line))
        if bare:
            groups.append(bare)
    for span in inline_code(text):
        if OVERRIDE.search(span):
            groups.append(OVERRIDE.findall(span))
        elif KEY_VALUE.fullmatch(span.strip()):
            groups.append([span.strip()])
    return groups


def commands(text: str) -> set[str]:
    """Subcommands named as ``gclf <subcommand>`` in shell code blocks and in inline code spans."""
    names = set()
    for language, body in code_blocks(text):
        if language != "python":
            names |= set(COMMAND.findall(body))
    for span in inline_code(text):
        if span.startswith("gclf "):
            names |= set(COMMAND.findall(span))
    return names


def links(text: str) -> list[str]:
    """Link targets outside code (a link inside backticks is text, not a link)."""
    return LINK.findall(INLINE.sub("", prose(text)))


# --- checks, each returning what is wrong -------------------------------------------------------


def base_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def override_problem(overrides: list[str], base: dict) -> str | None:
    """Apply ``key=value`` overrides (values parsed as YAML, as ``dvc exp run -S`` does) to
    ``base`` and validate with :func:`gclf.params.parse_params`; None when they are valid."""
    raw = copy.deepcopy(base)
    for item in overrides:
        key, _, text = item.partition("=")
        *sections, leaf = key.split(".")
        node = raw
        for section in sections:
            if not isinstance(node.get(section, {}), dict):
                return f"{item}: {section} is not a params section"
            node = node.setdefault(section, {})
        node[leaf] = yaml.safe_load(text)
    try:
        parse_params(raw)
    except ParamsError as e:
        return f"{' '.join(overrides)}: {e}" if len(overrides) <= 3 else str(e)
    return None


def link_problems(page: Path) -> list[str]:
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            problems.append(f"{page.name}: {target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            problems.append(f"{page.name}: {target}: no such heading")
    return problems


def is_subcommand(name: str, capsys) -> bool:
    """Whether ``gclf NAME --help`` is accepted by the CLI's parser (unknown names exit with 2)."""
    with pytest.raises(SystemExit) as exit_info:
        gclf_main([name, "--help"])
    capsys.readouterr()
    return exit_info.value.code == 0


# --- tests ---------------------------------------------------------------------------------------


def test_readme_is_a_front_door():
    size = len(README.read_text(encoding="utf-8"))
    assert size <= README_LIMIT, f"README.md has {size} characters; move detail to docs/ (limit {README_LIMIT})"


def test_readme_links_every_docs_page():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README.read_text("utf-8"))}
    assert DOCS, "no docs/*.md pages"
    missing = [page.name for page in DOCS if page.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    assert not link_problems(page)


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_docs_page_opens_with_what_it_is_for(page):
    """A title, then a paragraph of prose saying what a reader comes to the page for."""
    blocks = [b.strip() for b in page.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    assert blocks[0].startswith("# ") and "\n" not in blocks[0], f"{page.name}: no title line"
    assert blocks[1][0] not in "#|`<-", f"{page.name}: the title is not followed by a paragraph"


def test_docs_overrides_name_real_params_with_valid_values():
    base = base_params()
    groups = [(page.name, group) for page in PAGES for group in override_groups(page.read_text(encoding="utf-8"))]
    assert len(groups) > 5, "the override extraction found (almost) nothing: is the pattern broken?"
    problems = [f"{name}: {problem}" for name, group in groups if (problem := override_problem(group, base))]
    assert not problems


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_lines_are_valid_overrides(recipe):
    lines = [line.strip() for line in recipe.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    assert lines, f"{recipe.name} is empty"
    malformed = [line for line in lines if not KEY_VALUE.fullmatch(line)]
    assert not malformed, f"{recipe.name}: not key=value: {malformed}"
    problem = override_problem(lines, base_params())
    assert problem is None, f"{recipe.name}: {problem}"


def test_gclf_subcommands_named_in_the_docs_exist(capsys):
    named = set().union(*(commands(page.read_text(encoding="utf-8")) for page in PAGES))
    assert {"predict", "evaluate", "explain", "bench"} <= named, f"extraction found only {sorted(named)}"
    unknown = sorted(name for name in named if not is_subcommand(name, capsys))
    assert not unknown, f"the docs name gclf subcommands the CLI does not have: {unknown}"


def test_the_checks_catch_mistakes(tmp_path, capsys):
    """Each check above fails on a broken example, so a green run means something."""
    base = base_params()
    assert override_problem(["phase2.epochs=5", "loss=focal"], base) is None
    assert "unknown key" in override_problem(["phase2.epoch=5"], base)
    assert "expected one of" in override_problem(["loss=fokal"], base)
    assert "start_size" in override_problem(["phase2.start_size=128"], base)  # above data.image_size 64
    assert override_problem(["seed.x=1"], base)
    text = (
        "```bash\ndvc exp run -S nosuch=1 -S loss=bce  # two\n```\n"
        "Then `phase1.epochs=0`, `gclf frob --x`, a `key=value` list and `dvc exp run -S key=value`.\n"
    )
    assert override_groups(text) == [["nosuch=1", "loss=bce"], ["phase1.epochs=0"]]
    assert commands(text) == {"frob"} and not is_subcommand("frob", capsys)
    assert commands("```python\nfrom gclf import Predictor\n```\n") == set()
    page = tmp_path / "page.md"
    page.write_text("# T\n\n[a](missing.md) [b](#t) [c](#nope) [d](https://example.org) `[e](gone.md)`\n")
    assert link_problems(page) == ["page.md: missing.md: no such file", "page.md: #nope: no such heading"]
    assert slug("`gclf explain`: one image") == "gclf-explain-one-image"
