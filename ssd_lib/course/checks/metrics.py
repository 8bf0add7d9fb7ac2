"""Lesson 9 (notebook 09_evaluation): average precision, VOC2007's 11-point and VOC2010+'s all-point.

``check_average_precision`` compares AP from a (recall, precision) curve with
:func:`ssd_lib.metrics.average_precision`, for both values of ``use_07_metric``.

Usage::

    from ssd_lib.course.checks import check_average_precision
    assert check_average_precision(my_average_precision)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ssd_lib.metrics import average_precision
from ssd_lib.metrics.voc import precision_envelope

from .harness import Case, CheckResult, compare_number, run
from .tripwire import Forbid

_AP_11 = ("use_07_metric=True is VOC2007's 11-point AP: the mean over t = 0, 0.1, ..., 1 of the best precision at "
          "recall >= t (0 if recall never reaches t)")
_AP_ALL = ("use_07_metric=False is the VOC2010+ AP: the area under the precision envelope, sum over the recall steps "
           "of (r_i - r_(i-1)) * envelope_i, starting from recall 0")
_AP_ENVELOPE = ("use the precision envelope: at each recall the BEST precision at this or any higher recall "
                "(np.maximum.accumulate(precision[::-1])[::-1]), since raw precision zig-zags")
_AP_LEVELS = ("the 11 recall levels are exactly k / 10 and a level counts when recall >= t: np.arange(0, 1.1, 0.1) "
              "makes 0.3 into 0.30000000000000004, so 3 of 10 objects found misses its level; use np.arange(11) / 10")


def _pr_curve(hits: Sequence[bool], num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Ranked detections (True = true positive) to a (recall, precision) curve."""
    tp = np.cumsum(np.asarray(hits, dtype=bool))
    fp = np.cumsum(~np.asarray(hits, dtype=bool))
    return tp / num_gt, tp / np.maximum(tp + fp, 1)


def _random_pr_curve(seed: int, num_detections: int = 20, num_gt: int = 12) -> tuple[np.ndarray, np.ndarray]:
    hits = np.random.default_rng(seed).random(num_detections) < 0.5
    hits &= np.cumsum(hits) <= num_gt  # no more true positives than objects
    return _pr_curve(hits, num_gt)


def _diagnose_ap(value: float, args: tuple) -> Optional[str]:
    recall, precision, use_07_metric = args
    if math.isclose(value, average_precision(recall, precision, not use_07_metric), abs_tol=1e-9):
        return ("you computed the other AP: " + _AP_11) if use_07_metric else ("you computed the 11-point AP: " + _AP_ALL)
    return None


_AP_FORBID = Forbid("check_average_precision", "the average precision", (average_precision, precision_envelope),
                    "numpy operations (np.maximum.accumulate, np.concatenate, indexing, sums)")


def check_average_precision(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``average_precision(recall (K,), precision (K,), use_07_metric=True) -> float`` (numpy inputs)
    against :func:`ssd_lib.metrics.average_precision`, with both values of ``use_07_metric``."""
    perfect = (np.array([0.5, 1.0]), np.array([1.0, 1.0]))
    zigzag = _pr_curve([True, False, True, True], num_gt=4)  # precision 1, 0.5, 0.67, 0.75
    three_of_ten = _pr_curve([True, True, True], num_gt=10)  # recall 0.1, 0.2, 0.3 exactly
    empty = (np.zeros(0), np.zeros(0))
    cases = [
        Case("perfect detector (11-point)", (*perfect, True), _AP_11),
        Case("perfect detector (all-point)", (*perfect, False), _AP_ALL),
        Case("recall stops at exactly 0.3 = 3/10 (11-point)", (*three_of_ten, True), _AP_LEVELS),
        Case("precision goes up again (11-point)", (*zigzag, True), _AP_ENVELOPE),
        Case("precision goes up again (all-point)", (*zigzag, False), _AP_ENVELOPE + "; " + _AP_ALL),
        Case("no detections: empty curve (11-point)", (*empty, True),
             "no detections: AP is 0 (the max of an empty array raises: handle it)"),
        Case("no detections: empty curve (all-point)", (*empty, False), "no detections: AP is 0"),
        Case(f"random ranking of 20 detections, 12 objects (seed {seed}, 11-point)", (*_random_pr_curve(seed), True), _AP_11),
        Case(f"random ranking of 20 detections, 12 objects (seed {seed + 1}, all-point)",
             (*_random_pr_curve(seed + 1), False), _AP_ALL),
    ]

    def compare(expected: float, got: Any, args: tuple) -> None:
        compare_number(expected, got, what="AP", atol=1e-9, rtol=1e-9, diagnose=lambda value: _diagnose_ap(value, args))

    return run("check_average_precision", fn, ("recall", "precision", "use_07_metric"), cases, average_precision, compare, _AP_FORBID)
