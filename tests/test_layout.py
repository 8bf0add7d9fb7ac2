"""The package's layout: ``ssd_lib`` reads like the paper, ``ssd_lib.course`` runs the course.

* The imports (every ``import`` statement, also those inside functions) follow the map in
  ``ssd_lib/__init__.py``: a core module imports only modules of rows below its own, and never
  the course or the course's packages (ipywidgets, nbclient, nbformat, nbconvert, playwright).
* Every core module imports in a process where ipywidgets, nbclient and nbformat cannot be imported.
* Sizes stay readable: no core module over 450 lines, no core function over 80 lines, no checker
  module over 300 lines.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ssd_lib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ssd_lib"
COURSE = PACKAGE / "course"
COURSE_ONLY = {"ipywidgets", "nbclient", "nbformat", "nbconvert", "playwright", "IPython", "jupyter_core", "nbgrader"}
MAX_CORE_MODULE_LINES = 450
MAX_CORE_FUNCTION_LINES = 80
MAX_CHECKS_MODULE_LINES = 300


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _core_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if COURSE not in p.parents)


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``; ``from ssd_lib import x`` gives ``ssd_lib.x``."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "ssd_lib":
                found += [(node.lineno, f"ssd_lib.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return found


def _row(module: str) -> int | None:
    """The row of :data:`ssd_lib.LAYERS` of a core module (``ssd_lib.data.voc`` is in the row of ``data``)."""
    top = module.split(".")[1] if module.count(".") else ""
    for index, row in enumerate(ssd_lib.LAYERS):
        if top in row:
            return index
    return None


def test_every_core_module_is_on_the_map():
    missing = sorted({_module_name(p) for p in _core_files() if p != PACKAGE / "__init__.py" and _row(_module_name(p)) is None})
    assert not missing, f"add these modules to ssd_lib.LAYERS (ssd_lib/__init__.py): {missing}"
    listed = {name for row in ssd_lib.LAYERS for name in row}
    present = {_module_name(p).split(".")[1] for p in _core_files() if p != PACKAGE / "__init__.py"}
    assert listed == present, f"on the map but not in the package: {sorted(listed - present)}"


def _violations(files: list[Path], root: Path = ROOT) -> list[str]:
    problems = []
    for path in files:
        name = _module_name(path, root)
        own = _row(name)
        for line, target in _imports(path, root):
            where = f"{path.relative_to(root)}:{line} imports {target}"
            if target.split(".")[0] in COURSE_ONLY:
                problems.append(f"{where}: a course-only package (the course extra)")
            if target == "ssd_lib.course" or target.startswith("ssd_lib.course."):
                problems.append(f"{where}: the library must not import the course")
            elif target.startswith("ssd_lib.") and own is not None:
                row = _row(target)
                same_package = target.split(".")[1] == name.split(".")[1]
                if row is None:
                    problems.append(f"{where}: not on the map")
                elif row >= own and not same_package:
                    problems.append(f"{where}: it stands at or above {name} in ssd_lib.LAYERS")
    return problems


def test_core_modules_import_only_rows_below_and_never_the_course():
    problems = _violations(_core_files())
    assert not problems, "\n".join(problems)


def test_the_layout_check_catches_upward_and_course_imports(tmp_path):
    """The walker itself, on a planted module: each kind of bad import is found, also inside a function."""
    planted = tmp_path / "ssd_lib" / "boxes.py"
    planted.parent.mkdir()
    planted.write_text("import ipywidgets\nfrom .priors import PriorConfig\n\n\ndef f():\n"
                       "    from ssd_lib import course\n    from ssd_lib.train import train\n")
    problems = _violations([planted], tmp_path)
    assert [p.split(" imports ")[0] for p in problems] == [
        "ssd_lib/boxes.py:1", "ssd_lib/boxes.py:2", "ssd_lib/boxes.py:6", "ssd_lib/boxes.py:7"], problems
    assert "course-only" in problems[0] and "above" in problems[1] and "must not import the course" in problems[2]


def test_core_modules_import_without_the_course_packages():
    modules = [_module_name(p) for p in _core_files() if not p.name == "__main__.py"]
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ipywidgets', 'nbclient', 'nbformat'):
            raise ImportError(f'{{name}} is blocked for this test')
sys.meta_path.insert(0, Block())
import importlib
for name in {modules!r}:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('ipywidgets', 'nbclient', 'nbformat') or m.startswith('ssd_lib.course'))
print('loaded:', loaded)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "loaded: []", done.stdout
    assert "ssd_lib.matching" in modules and "ssd_lib.train" in modules


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_core_modules_and_functions_stay_short():
    problems = []
    for path in _core_files():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_CORE_MODULE_LINES:
            problems.append(f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_CORE_MODULE_LINES})")
        for fn in _functions(ast.parse(text)):
            length = fn.end_lineno - fn.lineno + 1
            if length > MAX_CORE_FUNCTION_LINES:
                problems.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}: {length} lines "
                                f"(at most {MAX_CORE_FUNCTION_LINES})")
    assert not problems, "\n".join(problems)


def test_checker_modules_stay_short():
    modules = sorted((COURSE / "checks").glob("*.py"))
    assert len(modules) >= 8, "one checker module per lesson"
    long = [f"{p.name}: {n} lines" for p in modules if (n := len(p.read_text().splitlines())) > MAX_CHECKS_MODULE_LINES]
    assert not long, f"checker modules over {MAX_CHECKS_MODULE_LINES} lines: {long}"


@pytest.mark.parametrize("command", ["grade", "doctor", "html"])
def test_the_course_commands_reach_the_command_line_through_entry_points(command):
    """``python -m ssd_lib`` lists the course's commands without importing the course itself."""
    from ssd_lib.__main__ import plugin_commands

    commands = plugin_commands()
    assert command in commands, f"{command} is not registered under ssd_lib.commands (pyproject.toml; reinstall)"
    assert commands[command].entry_point.value.startswith("ssd_lib.course.")
    assert commands[command].description()


def test_the_license_is_an_spdx_string_with_its_file():
    # A table (`{ text = "MIT" }`) makes setuptools >= 77 print a deprecation wall at every `pip install -e .`.
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (root / "LICENSE").read_text().startswith("MIT License")
