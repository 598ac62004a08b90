"""The architecture contracts (pyproject.toml's [tool.importlinter], run by `make lint`) hold, and
catch what they are for: an import that climbs a layer or closes a cycle, wherever it stands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = str(Path(sys.executable).with_name("lint-imports"))


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [LINT, "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "dispatcher", tmp_path / "dispatcher", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_its_contracts(tmp_path: Path) -> None:
    done = lint(copy_of_the_package(tmp_path))
    assert done.returncode == 0, done.stdout
    assert "Contracts: 3 kept, 0 broken." in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # Tencent's rules reaching up to the engine, inside a function: a cycle and a layer climbed.
        ("tim/rules.py", "def _late() -> None:\n    import dispatcher.run.engine\n", "Layers, top to bottom"),
        # Two limiters importing each other, under TYPE_CHECKING: a cycle inside one package.
        (
            "pacing/memory.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import dispatcher.pacing.redis\n",
            "No import cycles",
        ),
        # The client half of an API importing the emulator.
        ("tim/apis/base.py", "def _late() -> None:\n    import dispatcher.sandbox\n", "never imports the sandbox"),
    ],
)
def test_an_import_that_breaks_the_architecture_fails_the_lint(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    tree = copy_of_the_package(tmp_path)
    if module == "pacing/memory.py":  # the other side of the cycle: redis already imports base; make it memory
        (tree / "dispatcher/pacing/redis.py").write_text(
            (tree / "dispatcher/pacing/redis.py").read_text()
            + "\n\ndef _late() -> None:\n    import dispatcher.pacing.memory\n"
        )
    target = tree / "dispatcher" / module
    target.write_text(target.read_text() + "\n\n" + line)
    done = lint(tree)
    assert done.returncode == 1
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout


COMMANDS = ("send", "work", "report", "sandbox", "usersig")


def chains_between_commands(tree: Path) -> str:
    """Every chain of imports from one command of the command line to another in `tree`, one a line,
    found on import-linter's own graph (grimp): a command is a thin layer over the library, never
    over another command."""
    code = (
        "import grimp\n"
        "graph = grimp.build_graph('dispatcher', cache_dir=None)\n"
        f"commands = {COMMANDS!r}\n"
        "for a in commands:\n"
        "    for b in commands:\n"
        "        chain = a != b and graph.find_shortest_chain(f'dispatcher.cli.{a}', f'dispatcher.cli.{b}')\n"
        "        if chain:\n"
        "            print(' -> '.join(chain))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def test_no_command_imports_another(tmp_path: Path) -> None:
    assert chains_between_commands(copy_of_the_package(tmp_path)) == ""


def test_a_command_importing_another_is_found(tmp_path: Path) -> None:
    tree = copy_of_the_package(tmp_path)
    report = tree / "dispatcher/cli/report.py"
    report.write_text(report.read_text() + "\n\ndef _late() -> None:\n    from dispatcher.cli import send\n")
    assert chains_between_commands(tree) == "dispatcher.cli.report -> dispatcher.cli.send\n"
