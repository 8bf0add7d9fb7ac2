"""What the checker test modules share: the assertion that a check failed on the case built for a mistake, with
the hint that names that mistake; and the one way to run a checker on its own reference (:func:`on_its_reference`).
"""
from __future__ import annotations

from contextlib import contextmanager

PLUMBING = "plumbing"  # the marker of a test that runs a checker on its own reference
CURRENT = {"item": None}  # the running test, set by conftest's autouse fixture


@contextmanager
def on_its_reference():
    """The tripwire off, to run a checker on the very function its reference is. Such a run can only show the
    checker's plumbing (it runs, reports, prints once), never that its cases are right: the reference agrees with
    itself whatever the cases say. So a test that does it must be marked ``@pytest.mark.plumbing``; the suite's
    summary counts those apart from the correctness tests (``pytest -m "not plumbing"`` runs only the latter)."""
    from ssd_lib.course.checks.tripwire import reference_allowed

    item = CURRENT["item"]
    if item is not None and item.get_closest_marker(PLUMBING) is None:
        raise AssertionError(f"{item.nodeid} runs a checker on its own reference: mark it @pytest.mark.{PLUMBING} "
                             "(a plumbing test), and test the checker's correctness on other solutions")
    with reference_allowed():
        yield


def assert_fails_on(result, checker_name: str, case: str, hint: str, whole_name: bool = False) -> None:
    """``result`` (a CheckResult) failed first on the case whose name starts with ``case`` (is ``case``, with
    ``whole_name``), and its hint contains ``hint``."""
    assert not result.passed, result.message
    prefix = f"❌ {checker_name}: case '{case}" + ("' (" if whole_name else "")
    assert result.message.startswith(prefix), result.message
    assert hint in result.message.split("Hint: ", 1)[1], result.message
