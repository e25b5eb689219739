"""The README and docs/ as pages: a short README that starts with the two commands, one page
per audience, and links that lead somewhere (files that exist, headings that exist)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.doc_blocks import ROOT, doc_files

README = ROOT / "README.md"
#: One page per audience (and the map).
PAGES = [
    "design",
    "architecture",
    "operations",
    "configuration",
    "security",
    "observability",
    "performance",
]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCED = re.compile(r"^```.*?^```", re.S | re.M)
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: move detail into docs/"
    first_screen = "\n".join(lines[:40])
    assert "make up" in first_screen and "make test" in first_screen


def test_one_page_per_audience_linked_from_the_readme() -> None:
    readme = README.read_text()
    for page in PAGES:
        assert (ROOT / "docs" / f"{page}.md").is_file(), f"docs/{page}.md is missing"
        assert f"(docs/{page}.md)" in readme, f"README.md does not link docs/{page}.md"


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces -> '-'."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def anchors(page: Path) -> set[str]:
    text = _FENCED.sub("", page.read_text())
    return {slug(m[1]) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, re.M)}


def links(page: Path) -> list[str]:
    text = _CODE_SPAN.sub("", _FENCED.sub("", page.read_text()))
    return _LINK.findall(text)


@pytest.mark.parametrize("page", doc_files(), ids=lambda page: str(page.relative_to(ROOT)))
def test_links_lead_somewhere(page: Path) -> None:
    for link in links(page):
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        found = (page.parent / target).resolve() if target else page
        assert found.exists(), f"{page.name}: {link} leads to no file"
        if anchor:
            assert found.suffix == ".md", f"{page.name}: {link} has an anchor into a non-page"
            assert anchor in anchors(found), f"{page.name}: {link}: no such heading"


_REPO_PATH = re.compile(r"`((?:services|deploy|bench|tests|protos|mk|docs|gen)/[\w./-]*)`")


@pytest.mark.parametrize("page", doc_files(), ids=lambda page: str(page.relative_to(ROOT)))
def test_named_files_exist(page: Path) -> None:
    """Every repository path a page names in backticks, e.g. `services/order/store.py`."""
    named = set(_REPO_PATH.findall(page.read_text()))
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"{page.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("page", doc_files(), ids=lambda page: str(page.relative_to(ROOT)))
def test_named_modules_exist(page: Path) -> None:
    """Every `python -m <module>` a page names can be run (placeholders aside)."""
    named = {m for m in re.findall(r"python -m ([\w.]+)", page.read_text()) if m[-1] != "."}
    missing = sorted(module for module in named if importlib.util.find_spec(module) is None)
    assert not missing, f"{page.name} names modules that do not exist: {missing}"


def test_slugs_are_githubs() -> None:
    assert slug("The `paysaga` command") == "the-paysaga-command"
    assert slug("Effectively-once, hop by hop") == "effectively-once-hop-by-hop"
