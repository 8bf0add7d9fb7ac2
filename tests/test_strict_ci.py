"""``CI=true`` cannot go green by skipping (tests/conftest.py): run in a scratch folder with a copy of the conftest,
on tests that skip in each way the suite's tests do."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SKIPPING = '''
import pytest

def test_runtime_skip():
    pytest.skip("the deploy extra is not installed")

@pytest.mark.gpu
def test_gpu_skip():
    pytest.skip("no CUDA GPU")

def test_passes():
    assert True
'''
PLUMBING = '''
import pytest
from check_results import on_its_reference

@pytest.mark.plumbing
def test_marked():
    with on_its_reference():
        pass

def test_unmarked():
    with on_its_reference():
        pass

def test_correct():
    assert True
'''
IMPORT_SKIP = 'import pytest\npytest.importorskip("no_such_module_for_this_test")\n\ndef test_x():\n    pass\n'
INI = "[pytest]\nmarkers =\n    gpu: needs a CUDA GPU\n    plumbing: a checker run on its own reference\n"


def _run(tmp_path: Path, ci: str | None, chromium: str, import_skip: bool = False,
         tests: str = SKIPPING) -> subprocess.CompletedProcess:
    for name in ("conftest.py", "browser_helpers.py", "check_results.py"):
        shutil.copy(TESTS / name, tmp_path / name)
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_skipping.py").write_text(tests)
    if import_skip:
        (tmp_path / "test_import_skip.py").write_text(IMPORT_SKIP)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"SSD_CHROMIUM": chromium,
                                                              "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # faster start
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)


def test_without_ci_skips_stay_skips(tmp_path):
    run = _run(tmp_path, None, "/nonexistent/chromium", import_skip=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 3 skipped" in run.stdout, run.stdout


def test_under_ci_every_skip_but_the_gpu_ones_fails(tmp_path):
    run = _run(tmp_path, "true", shutil.which("true") or "/bin/true")  # a Chromium that "exists"
    assert run.returncode == 1, run.stdout + run.stderr
    assert "CI=true: a skip counts as a failure here (the deploy extra is not installed)" in run.stdout, run.stdout
    assert "1 failed, 1 passed, 1 skipped" in run.stdout, run.stdout  # the gpu test alone still skips


def test_under_ci_an_importorskip_fails_the_collection(tmp_path):
    run = _run(tmp_path, "true", shutil.which("true") or "/bin/true", import_skip=True)
    assert run.returncode != 0, run.stdout + run.stderr
    assert "CI=true: a skip counts as a failure here" in run.stdout and "no_such_module_for_this_test" in run.stdout


def test_under_ci_a_missing_part_ends_the_run_with_one_line(tmp_path):
    run = _run(tmp_path, "true", "/nonexistent/chromium")
    assert run.returncode == 1, run.stdout + run.stderr
    lines = [line for line in (run.stdout + run.stderr).splitlines() if "CI=true: missing" in line]
    assert lines and "Debian's chromium" in lines[-1] and "bash run.sh setup" in lines[-1], run.stdout
    assert "Traceback" not in run.stdout + run.stderr


def test_plumbing_tests_need_their_marker_and_are_counted_apart(tmp_path):
    """A test that runs a checker on its own reference fails unless marked ``plumbing``; the summary counts the marked
    ones apart from the correctness tests."""
    run = _run(tmp_path, None, "/nonexistent/chromium", tests=PLUMBING)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 2 passed" in run.stdout, run.stdout
    assert "test_unmarked runs a checker on its own reference: mark it @pytest.mark.plumbing" in run.stdout, run.stdout
    assert ("1 passed tests of correctness; 1 more are plumbing (a checker run on its own reference), not counted as "
            "correctness") in run.stdout, run.stdout
