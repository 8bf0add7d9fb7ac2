"""The course's two modes, read from the environment here and nowhere else.

* ``SSD_COURSE_FAST=1``: small data and a few training steps, so that every notebook runs in about
  a minute (the headless notebook tests and ``python -m ssd_lib html --fast`` set it).
* ``SSD_COURSE_GRADING=1``: no widgets and no training (the grader sets it in the kernel it starts).

The values are read when the functions are called, never frozen at import, so a kernel, a test or
the grader that sets a variable sees it at once. A notebook reads them once, at its top::

    from ssd_lib.course.modes import fast_mode, grading_mode
    FAST, GRADING = fast_mode(), grading_mode()
"""
from __future__ import annotations

import os

__all__ = ["fast_mode", "grading_mode", "mode_environment", "FAST_VARIABLE", "GRADING_VARIABLE"]

FAST_VARIABLE = "SSD_COURSE_FAST"
GRADING_VARIABLE = "SSD_COURSE_GRADING"
_TRUE = {"1", "true", "yes"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def fast_mode() -> bool:
    """True when ``SSD_COURSE_FAST`` is "1", "true" or "yes": small data, a few training steps."""
    return _env_flag(FAST_VARIABLE)


def grading_mode() -> bool:
    """True when ``SSD_COURSE_GRADING`` is "1", "true" or "yes": no widgets, no training."""
    return _env_flag(GRADING_VARIABLE)


def mode_environment(fast: bool, grading: bool = False) -> dict[str, str]:
    """The variables that put a child process (a kernel the grader or the site builder starts) in
    these modes: merge into its environment. ``grading=False`` sets the flag to "0", so a grading
    flag inherited from the parent cannot leak into a headless run."""
    return {FAST_VARIABLE: "1" if fast else "0", GRADING_VARIABLE: "1" if grading else "0"}
