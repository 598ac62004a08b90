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
