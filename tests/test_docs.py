"""The README and docs/ stay true: code examples are valid, links resolve, the README is short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
README_LIMIT_BYTES = 12 * 1024


def _blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(page.read_text()) if lang == language]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_compile(page: Path) -> None:
    """Every ```python block of the page is valid Python."""
    for number, body in enumerate(_blocks(page, "python")):
        compile(body, f"{page.name}[python block {number}]", "exec")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link of the page names a file that exists."""
    for target in _LINK.findall(page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_readme_is_short() -> None:
    """The README stays a five-minute read (at most 12 KB); the rest lives in docs/."""
    assert (ROOT / "README.md").stat().st_size <= README_LIMIT_BYTES


def test_readme_opens_with_the_two_commands() -> None:
    """The README's first code block is the set-up + demo command and the test command CI runs."""
    first = _blocks(ROOT / "README.md", "bash")[0]
    assert "scripts/setup.sh && .venv/bin/casaguard demo" in first
    assert ".venv/bin/python -m pytest" in first
    assert ".venv/bin/python -m pytest\n" in (ROOT / ".ci" / "run").read_text()
