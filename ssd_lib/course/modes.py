"""The course's two modes, read from the environment here and nowhere else.

* ``SSD_COURSE_FAST=1``: small data and a few training steps, so that every notebook runs in about
  a minute (the headless notebook tests and ``python -m ssd_lib html --fast`` set it).
* ``SSD_COURSE_GRADING=1``: no widgets and no training (the grader sets it in the kernel it starts).
* **nbgrader**: ``nbgrader autograde`` and ``nbgrader validate`` run the notebooks with
  ``NBGRADER_EXECUTION`` set ("autograde" / "validate", nbgrader's own variable, which the kernel
  inherits). There both modes are on unless a course variable says "0": a teacher runs nbgrader's
  commands with their defaults (30 s per cell) and sets nothing.

The values are read when the functions are called, never frozen at import, so a kernel, a test or
the grader that sets a variable sees it at once. A notebook reads them once, at its top::

    from ssd_lib.course.modes import fast_mode, grading_mode
    FAST, GRADING = fast_mode(), grading_mode()
"""
from __future__ import annotations

import os

__all__ = ["fast_mode", "grading_mode", "nbgrader_execution", "mode_environment", "FAST_VARIABLE",
           "GRADING_VARIABLE"]

FAST_VARIABLE = "SSD_COURSE_FAST"
GRADING_VARIABLE = "SSD_COURSE_GRADING"
NBGRADER_VARIABLE = "NBGRADER_EXECUTION"  # set by nbgrader (converters/autograde.py, validator.py) while it executes
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


def _env_flag(name: str) -> bool:
    """The course variable ``name`` if it is set to a yes or a no; otherwise: is nbgrader executing?"""
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    return nbgrader_execution()


def nbgrader_execution() -> bool:
    """True while ``nbgrader autograde`` or ``nbgrader validate`` runs this kernel."""
    return os.environ.get(NBGRADER_VARIABLE, "").strip().lower() in {"autograde", "validate"}


def fast_mode() -> bool:
    """True when ``SSD_COURSE_FAST`` is "1", "true" or "yes", or, unless it is "0", "false" or "no",
    when nbgrader executes the notebook: small data, a few training steps."""
    return _env_flag(FAST_VARIABLE)


def grading_mode() -> bool:
    """True when ``SSD_COURSE_GRADING`` is "1", "true" or "yes", or, unless it is "0", "false" or "no",
    when nbgrader executes the notebook: no widgets, no training."""
    return _env_flag(GRADING_VARIABLE)


def mode_environment(fast: bool, grading: bool = False) -> dict[str, str]:
    """The variables that put a child process (a kernel the grader or the site builder starts) in
    these modes: merge into its environment. ``grading=False`` sets the flag to "0", so a grading
    flag inherited from the parent cannot leak into a headless run."""
    return {FAST_VARIABLE: "1" if fast else "0", GRADING_VARIABLE: "1" if grading else "0"}
