"""The README is a front page, and the guide's strict build (in `make lint`) fails on a broken link."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT, cli_env

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
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")  # the guide shows them from their files
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


def test_the_built_site_loads_nothing_from_the_network(tmp_path: Path) -> None:
    """Read from disk with no network, the site keeps its styles, highlighting and search: every
    script, stylesheet and image it loads is a file of the site."""
    built = _build_docs_with(tmp_path, "index.md", "")
    assert built.returncode == 0, built.stderr
    site = tmp_path / "build" / "site"
    loads = re.compile(r"<(?:script|link|img)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"")
    pages = sorted(page for page in site.rglob("*.html") if page.name != "404.html")  # a server's, absolute
    assert len(pages) >= 15
    for page in pages:
        for url in loads.findall(page.read_text()):
            assert not re.match(r"(?:[a-z]+:)?//", url), f"{page.relative_to(site)} loads {url}"
            target = (page.parent / url.split("#")[0].split("?")[0]).resolve()
            assert target.is_file(), f"{page.relative_to(site)} loads {url}: not in the site"
    for sheet in site.rglob("*.css"):
        assert not re.search(r"url\(['\"]?(?:https?:)?//", sheet.read_text()), f"{sheet.name} loads from the network"
    reference = (site / "reference.html").read_text()
    assert 'class="highlight"' in reference  # code is highlighted at build time, not by a script from a CDN
    assert (site / "search" / "search_index.js").is_file()  # search works from file:// too


def _quickstart_commands() -> list[tuple[str, int]]:
    """The Quickstart's shell commands as a reader types them, with the exit status each one's
    comment gives (`# exit 1: ...`; 0 otherwise). A here-document is one command with its lines."""
    text = (ROOT / "docs" / "guide" / "quickstart.md").read_text()
    commands: list[tuple[str, int]] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        lines = iter(block.splitlines())
        for line in lines:
            if line.startswith(("make run", "source ")):
                continue  # the set-up of the checkout, which `make run` and CI do themselves
            command = line
            if "<<'EOF'" in line:
                for more in lines:
                    command += "\n" + more
                    if more == "EOF":
                        break
            status = re.search(r"#\s*exit (\d+)", line)
            commands.append((command, int(status.group(1)) if status else 0))
    return commands


def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    commands = _quickstart_commands()
    assert len(commands) == 11
    env = cli_env(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    for command, status in commands:
        ran = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert ran.returncode == status, (
            f"{command!r} exited {ran.returncode}: {ran.stdout[-2000:]}{ran.stderr[-2000:]}"
        )
    outcomes = [line for line in (tmp_path / "build" / "hello.outcomes.jsonl").read_text().splitlines() if line]
    assert len(outcomes) == 3  # hello sent, hello-jun rejected, then hello-jun sent after the fix
    warehouse = (tmp_path / "build" / "warehouse.outcomes.jsonl").read_text()
    assert warehouse.count('"status":"ok"') == 3  # 1,100 recipients in batches of 500


def test_the_python_pages_blocks_run_as_written(tmp_path: Path) -> None:
    """The first three blocks run against the sandbox, from a copy of the checkout's jobs; the last, which
    needs PostgreSQL and Tencent's endpoint, is compiled and its names resolved."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "guide" / "python.md").read_text(), flags=re.S)
    assert len(blocks) == 4
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    (tmp_path / "build").mkdir()
    printed = []
    for block in blocks[:3]:
        ran = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120
        )
        assert ran.returncode == 0, ran.stderr
        printed.append(ran.stdout.splitlines()[-1])
    assert (tmp_path / "build" / "out.jsonl").is_file() and (tmp_path / "build" / "runner.outcomes.jsonl").is_file()
    assert printed[1] == "0"  # the exit status the Runner gave (its log lines come first)
    # Jobs held in memory: 1,200 members from a generator in 3 batches, 2 accounts in 1, a typo rejected.
    assert printed[2] == "1 4 1"
    memory = [orjson.loads(line) for line in (tmp_path / "build" / "memory.outcomes.jsonl").read_text().splitlines()]
    assert sorted((line["job_id"], line["status"]) for line in memory) == [
        ("spring-sale", "ok"),
        ("spring-sale", "ok"),
        ("spring-sale", "ok"),
        ("typo", "rejected"),
        ("welcome", "ok"),
    ]
    compile(blocks[3], "python.md", "exec")
    import dispatcher

    assert callable(dispatcher.work) and callable(dispatcher.credentials_from_env)
    assert dispatcher.REGIONS["singapore"] == "https://adminapisgp.im.qcloud.com"
