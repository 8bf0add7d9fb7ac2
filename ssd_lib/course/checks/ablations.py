"""Lesson 10 (notebook 10_ablations): is a variant's effect larger than the seed-to-seed noise?

``check_compare_runs`` compares ``compare_runs(baseline, variant) -> (difference, noise, within_noise)``
with :func:`ssd_lib.course.ablations.compare_runs` (k = 2).

Usage::

    from ssd_lib.course.checks import check_compare_runs
    assert check_compare_runs(compare_runs)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np

from ssd_lib.course.ablations import compare_runs

from .harness import Case, CheckResult, Mismatch, as_bool, compare_number, run, unpack
from .tripwire import Forbid

_NOISE_RULE = ("difference = mean(variant) - mean(baseline); noise = 2 * sqrt(s_b**2 / n_b + s_v**2 / n_v) with s the "
               "SAMPLE standard deviation (np.std(values, ddof=1)) and n the number of seeds; within_noise = "
               "abs(difference) <= noise")


def _diagnose_noise(value: float, args: tuple) -> Optional[str]:
    b, v = (np.asarray(a, dtype=float) for a in args)
    population = 2 * math.sqrt(b.var() / b.size + v.var() / v.size)
    no_sqrt_n = 2 * math.sqrt(b.var(ddof=1) + v.var(ddof=1))
    if math.isclose(value, population, rel_tol=1e-6):
        return "you used the population standard deviation (ddof=0); with a few seeds use the sample one, ddof=1"
    if math.isclose(value, no_sqrt_n, rel_tol=1e-6):
        return ("the noise of a MEAN over n seeds is its standard error s / sqrt(n): divide each variance by its "
                "number of seeds before adding them")
    return None


def _random_runs(seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8)
    n_b, n_v = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    shift = rng.normal(0, 0.05)
    return ([round(float(x), 4) for x in base + rng.normal(0, 0.02, n_b)],
            [round(float(x), 4) for x in base + shift + rng.normal(0, 0.02, n_v)])


_COMPARE_RUNS_FORBID = Forbid("check_compare_runs", "the noise test", (compare_runs,),
                              "numpy operations (mean, var with ddof=1) and math.sqrt")


def check_compare_runs(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``compare_runs(baseline, variant) -> (difference, noise, within_noise)`` (one metric value
    per seed on each side) against ``ssd_lib.course.ablations.compare_runs`` with k = 2."""
    cases = [
        Case("variant clearly worse (difference far beyond the spread)", ([0.50, 0.52, 0.51], [0.40, 0.41, 0.39]),
             _NOISE_RULE),
        Case("variant better by less than the spread", ([0.50, 0.56, 0.44], [0.53, 0.47, 0.59]), _NOISE_RULE),
        Case("variant better, beyond the noise", ([0.30, 0.31, 0.32], [0.36, 0.35, 0.37]),
             "difference is variant minus baseline, so a better variant gives a positive difference"),
        Case("variant worse, just beyond the noise", ([0.60, 0.62, 0.61], [0.58, 0.57, 0.59]),
             "compare the SIZE of the difference with the noise: abs(difference) <= noise, a worse variant is "
             "not within the noise just because its difference is negative"),
        Case("different numbers of seeds (3 and 5)", ([0.40, 0.45, 0.50], [0.42, 0.44, 0.46, 0.48, 0.43]), _NOISE_RULE),
        *(Case(f"random runs (seed {s})", _random_runs(s), _NOISE_RULE) for s in range(seed, seed + 3)),
    ]

    def compare(expected: tuple, got: Any, args: tuple) -> None:
        difference, noise, within = unpack(got, 3, "(difference, noise, within_noise)")
        compare_number(expected[0], difference, what="difference", atol=1e-9, rtol=1e-6,
                       diagnose=lambda value: ("difference is mean(variant) - mean(baseline), you have it the other "
                                               "way round") if math.isclose(value, -expected[0], rel_tol=1e-6) else None)
        compare_number(expected[1], noise, what="noise", atol=1e-9, rtol=1e-6,
                       diagnose=lambda value: _diagnose_noise(value, args))
        within = as_bool(within, "within_noise as True or False", "return a bool: abs(difference) <= noise")
        if within != bool(expected[2]):
            raise Mismatch(f"expected within_noise={expected[2]}, got {within} (difference {expected[0]:+.4g}, "
                           f"noise {expected[1]:.4g})",
                           "compare the SIZE of the difference with the noise: abs(difference) <= noise"
                           if expected[0] < 0 and within else None)

    return run("check_compare_runs", fn, ("baseline", "variant"), cases, compare_runs, compare, _COMPARE_RUNS_FORBID)
