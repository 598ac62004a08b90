"""The suite's own rule: helpers that several test modules use live in conftest.py, and no test
module imports another (wherever the import stands), so that moving or splitting one breaks none."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT


def imports_of_test_modules(tests: Path) -> dict[str, set[str]]:
    """Test module -> the test modules it imports, at its top or inside a function."""
    found: dict[str, set[str]] = {}
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.module == "tests":  # from tests import test_x
                    names = [f"tests.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found.setdefault(path.stem, set()).update(name for name in names if name.startswith("tests.test_"))
    return {module: imported for module, imported in found.items() if imported}


def test_no_test_module_imports_another() -> None:
    assert imports_of_test_modules(ROOT / "tests") == {}


def test_the_check_sees_imports_at_the_top_and_inside_functions(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text("from tests.test_b import helper\n")
    (tmp_path / "test_b.py").write_text("def test_x():\n    import tests.test_a\n    from tests import test_c\n")
    (tmp_path / "test_c.py").write_text("from tests.conftest import ROOT\n")
    assert imports_of_test_modules(tmp_path) == {"test_a": {"tests.test_b"}, "test_b": {"tests.test_a", "tests.test_c"}}
