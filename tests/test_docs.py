"""The README is a front page, and the guide's strict build (in `make lint`) fails on a broken link."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_is_a_front_page_with_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "make run" in text and "make test" in text
    assert "../shared" not in text  # outside the repository: broken on GitHub and in the sdist


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page (outside code fences)."""
    anchors, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_every_relative_link_of_the_readme_resolves() -> None:
    """The docs build checks the pages under docs/; the README is outside it, so it is checked here."""
    links = [link for link in LINK.findall(README.read_text()) if not re.match(r"[a-z]+:", link)]
    assert "docs/reference.md" in links and "docs/guide/promises.md" in links
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README.md links {link}: no such file"
        if anchor:
            assert anchor in _anchors(target), f"README.md links {link}: no such heading"


def _lint_docs_command() -> list[str]:
    """The docs build exactly as `make lint` runs it, with this venv's bin for $(BIN)."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nlint:") :].split("\n\n")[0]
    (line,) = (line.strip() for line in recipe.splitlines() if "mkdocs build" in line)
    return line.replace("$(BIN)", str(Path(sys.executable).parent)).split()


def _build_docs_with(tmp_path: Path, page: str, text: str) -> subprocess.CompletedProcess[str]:
    """The lint's docs build, on a copy of docs/ with `text` appended to (or making) `page`."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    with open(tmp_path / "docs" / page, "a") as out:
        out.write(text)
    return subprocess.run(_lint_docs_command(), cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_the_docs_as_they_are_build_strictly(tmp_path: Path) -> None:
    built = _build_docs_with(tmp_path, "index.md", "")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "build" / "site" / "guide" / "promises.html").is_file()


@pytest.mark.parametrize(
    ("page", "text", "named"),
    [
        ("index.md", "\n[gone](guide/gone.md)\n", "'guide/gone.md'"),
        ("guide/jobs.md", "\n[gone](rate.md#no-such-heading)\n", "'#no-such-heading'"),
        ("guide/orphan.md", "# A page the nav leaves out\n", "guide/orphan.md"),
    ],
    ids=["missing-page", "missing-anchor", "page-not-in-nav"],
)
def test_the_lint_fails_on_a_broken_link_or_a_page_missing_from_the_nav(
    tmp_path: Path, page: str, text: str, named: str
) -> None:
    built = _build_docs_with(tmp_path, page, text)
    assert built.returncode == 1
    assert named in built.stderr
    assert built.stdout.strip() == "Aborted with 1 warnings in strict mode!"
