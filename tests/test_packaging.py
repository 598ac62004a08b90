"""The release as a user gets it: the sdist and the wheel built from the checkout, the wheel installed
into a fresh venv, and the command run from there (not from this checkout)."""

from __future__ import annotations

import email.parser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env

RUNTIME = ("aiohttp", "orjson", "structlog", "rich")
# What the build reads; the rest of the checkout (venvs, caches, journals) is not the release.
SOURCES = ("pyproject.toml", "MANIFEST.in", "README.md", "mkdocs.yml", "docs", "dispatcher")


def _copy_sources(dest: Path) -> None:
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel built from the sdist (so a file the sdist forgot is missing from the
    wheel too). Built from a copy, so the checkout gets no build/ or egg-info of it. No isolation:
    the build backend is a dev dependency, so this needs no network."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    _copy_sources(src)
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


def _installed_in(package: str) -> str:
    """The directory this venv holds `package` in (its site-packages, as a rule)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin is not None
    return str(Path(spec.origin).parent.parent)


def _only(dist: Path, pattern: str) -> Path:
    (found,) = dist.glob(pattern)
    return found


def test_the_distribution_is_tim_dispatcher(dist: Path) -> None:
    wheel = _only(dist, "tim_dispatcher-*-py3-none-any.whl")
    _only(dist, "tim_dispatcher-*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        (info,) = {name.split("/")[0] for name in archive.namelist() if name.endswith(".dist-info/METADATA")}
        meta = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert meta["Name"] == "tim-dispatcher"
    assert "[console_scripts]\ndispatcher = dispatcher.cli:main\n" in entry_points
    requires = meta.get_all("Requires-Dist") or []
    # aiolimiter is the benchmark baseline's alone: an extra (and a dev tool), never installed with the tool.
    assert sorted(r for r in requires if r.startswith("aiolimiter")) == [
        'aiolimiter>=1.1; extra == "bench"',
        'aiolimiter>=1.1; extra == "dev"',
    ]
    for needed in ("aiohttp>=3.9", "orjson>=3.9", "structlog>=24.1", "rich>=13.0"):
        assert needed in requires
    assert {"redis", "bench", "dev"} <= set(meta.get_all("Provides-Extra") or [])


def test_the_wheel_and_the_sdist_ship_py_typed(dist: Path) -> None:
    with zipfile.ZipFile(_only(dist, "tim_dispatcher-*.whl")) as archive:
        assert "dispatcher/py.typed" in archive.namelist()
    with tarfile.open(_only(dist, "tim_dispatcher-*.tar.gz")) as archive:
        assert any(name.endswith("/dispatcher/py.typed") for name in archive.getnames())


def test_the_wheel_ships_the_sql_of_postgresql(dist: Path) -> None:
    """The schema, the migrations and the queries are read as package resources: a wheel without them
    could not open a journal or a budget in PostgreSQL."""
    with zipfile.ZipFile(_only(dist, "tim_dispatcher-*.whl")) as archive:
        names = set(archive.namelist())
    for name in ("schema", "meta", "outcomes", "claims", "plan", "run", "report", "budget"):
        assert f"dispatcher/pg/sql/{name}.sql" in names
    migrations = sorted(n for n in names if n.startswith("dispatcher/pg/sql/migrations/"))
    assert migrations == [
        "dispatcher/pg/sql/migrations/002_budget_ramp_and_count.sql",
        "dispatcher/pg/sql/migrations/002_journal_claims.sql",
    ]


# The report page's template and the charting library it inlines, with the library's licence.
PAGE_DATA = (
    "dispatcher/observe/page/template.html",
    "dispatcher/observe/page/vendor/uPlot.iife.min.js",
    "dispatcher/observe/page/vendor/uPlot.min.css",
    "dispatcher/observe/page/vendor/uPlot.LICENSE",
)


def test_the_wheel_ships_the_report_page_and_its_charting_library_with_its_licence(dist: Path) -> None:
    with zipfile.ZipFile(_only(dist, "tim_dispatcher-*.whl")) as archive:
        assert sorted(name for name in PAGE_DATA if name not in archive.namelist()) == []
        licence = archive.read("dispatcher/observe/page/vendor/uPlot.LICENSE").decode()
    assert licence.startswith("The MIT License (MIT)\n\nCopyright (c) 2022 Leon Sorokin")


def test_the_sdist_holds_every_page_the_readme_links(dist: Path) -> None:
    with tarfile.open(_only(dist, "tim_dispatcher-*.tar.gz")) as archive:
        names = archive.getnames()
        (readme,) = (name for name in names if name.count("/") == 1 and name.endswith("/README.md"))
        top = readme.split("/")[0]
        extracted = archive.extractfile(readme)
        assert extracted is not None
        text = extracted.read().decode()
    links = {link.partition("#")[0] for link in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in link}
    assert {"docs/reference.md", "docs/guide/promises.md", "docs/guide/choices.md"} <= links
    assert sorted(link for link in links if f"{top}/{link}" not in names) == []
    assert f"{top}/mkdocs.yml" in names  # the guide builds from the sdist too


def test_the_wheel_installed_in_a_fresh_venv_runs(dist: Path, tmp_path: Path) -> None:
    """A fresh venv with nothing but the wheel in it. The wheel is installed with --no-deps and
    --no-index, and the dependencies are borrowed from this venv by a path entry (a .pth line is
    only added to sys.path; the .pth files there, such as this checkout's editable install, are not
    run): offline, a few seconds, and `dispatcher` can only be imported from the wheel."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    bin_dir = env_dir / "bin"
    python = bin_dir / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    wheel = _only(dist, "tim_dispatcher-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index", wheel],
        check=True,
        capture_output=True,
        timeout=120,
    )
    deps = {_installed_in(name) for name in RUNTIME}
    Path(purelib, "borrowed-deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    env = {**cli_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # From an empty directory, so that this checkout's `dispatcher/` cannot be imported instead.
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    version = run(str(bin_dir / "dispatcher"), "--version")
    assert version.returncode == 0
    assert re.fullmatch(r"dispatcher \d+\.\d+\.\d+ \(tim-dispatcher\)\n", version.stdout)
    helped = run(str(python), "-m", "dispatcher", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: dispatcher [-h] [--version]")
    where = run(str(python), "-c", "import dispatcher, pathlib; print(pathlib.Path(dispatcher.__file__).parent)")
    assert where.stdout == f"{purelib}/dispatcher\n"
    assert Path(purelib, "dispatcher", "py.typed").is_file()
    # The installed wheel reads its SQL (no psycopg needed for that): the components and their versions.
    latest = run(str(python), "-c", "from dispatcher.pg import migrate; print(sorted(migrate.LATEST.items()))")
    assert latest.stdout == "[('budget', 2), ('journal', 2)]\n", latest.stderr
    # The report page, from the wheel's own template and library.
    journal = tmp_path / "out.jsonl"
    journal.write_text(
        '{"job_id": "a", "batch": 0, "batches": 1, "attempt": 1, "status": "ok", "final": true, "group_id": "@TGS#a", '
        '"recipients": ["p"], "error_code": 0, "error_info": "OK", "http_status": 200, "latency_ms": 40.0, '
        '"at": "2026-03-02T12:00:01.200Z", "job_hash": "h"}\n'
    )
    paged = run(str(bin_dir / "dispatcher"), "report", str(journal), "--html", str(tmp_path / "page.html"))
    assert paged.returncode == 0, paged.stderr
    page = (tmp_path / "page.html").read_text()
    assert "var uPlot=function()" in page
    assert "Copyright (c) 2022 Leon Sorokin" in page  # MIT: its notice goes with every copy
