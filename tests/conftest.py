"""Suite-wide rules.

``CI=true`` (or 1/yes): the run may not go green by skipping. Before any test, the parts the suite needs are
checked (Chromium and Playwright for the browser tests, the deploy extra for ONNX, nbgrader) and a missing one ends
the run with a one-line reason; during the run, any skip (an ``importorskip`` at collection included) is reported
as a failure, except the GPU tests' skip on a machine without CUDA (tests marked ``gpu``, or a collection skip whose
reason says it needs a GPU/CUDA). Without ``CI`` set, skips stay skips (a learner's partial set-up still runs).

Tests marked ``plumbing`` run a checker on its own reference (tests/check_results.py, ``on_its_reference``): they are
kept, but the summary counts them apart from the correctness tests.
"""
from __future__ import annotations

import importlib.util
import os
import re

import pytest

STRICT = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
# Modules the suite's extras must provide (pyproject.toml's `test` extra), by what needs them.
REQUIRED_MODULES = {"playwright": "the browser tests", "onnx": "ONNX export", "onnxruntime": "ONNX export",
                    "onnxscript": "ONNX export", "nbgrader": "the nbgrader tests"}
_GPU_REASON = re.compile(r"\b(GPU|CUDA)\b", re.IGNORECASE)
SETUP_HINT = "run `bash run.sh setup` (as root, or with passwordless sudo, for Chromium)"


def missing_parts() -> list[str]:
    """What the strict run needs and this machine lacks, one phrase each."""
    from browser_helpers import find_chromium  # tests/ is on sys.path (rootdir conftest)

    missing = [f"{name} (for {what})" for name, what in REQUIRED_MODULES.items()
               if importlib.util.find_spec(name) is None]
    if find_chromium() is None:
        missing.append("Debian's chromium (for the browser tests; or set SSD_CHROMIUM)")
    return missing


def pytest_sessionstart(session) -> None:
    if STRICT and (missing := missing_parts()):
        pytest.exit(f"CI=true: missing {'; '.join(missing)}: {SETUP_HINT}", returncode=1)


def _strict_failure(report, reason: str) -> None:
    report.outcome = "failed"
    report.longrepr = f"CI=true: a skip counts as a failure here ({reason})"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (STRICT and report.skipped and not hasattr(report, "wasxfail")
            and item.get_closest_marker("gpu") is None):
        _strict_failure(report, _skip_reason(report))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not _GPU_REASON.search(_skip_reason(report)):
        _strict_failure(report, _skip_reason(report))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests, then the thread count as it was. The machine's two cores are shared,
    and these tests run small tensor ops, where extra intra-op threads only add overhead (10x for the checks' tiny
    convolutions); training runs compared with each other also need the same thread count. A module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch  # here, not at the top: the strict-CI check above runs without importing torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _current_test(request):
    """Tells tests/check_results.py which test runs, so ``on_its_reference`` can insist on the plumbing marker."""
    import check_results  # tests/ is on sys.path (rootdir conftest)

    check_results.CURRENT["item"] = request.node
    yield
    check_results.CURRENT["item"] = None


def pytest_terminal_summary(terminalreporter) -> None:
    """One line: how many of the passed tests only ran a checker on its own reference (not counted as correctness)."""
    passed = [r for r in terminalreporter.stats.get("passed", []) if r.when == "call"]
    plumbing = sum(1 for r in passed if "plumbing" in r.keywords)
    if plumbing:
        terminalreporter.write_line(f"{len(passed) - plumbing} passed tests of correctness; {plumbing} more are "
                                    "plumbing (a checker run on its own reference), not counted as correctness")
