"""Lesson 10 (notebook 10_ablations): is a variant's effect larger than the seed-to-seed noise, and
the rows of the ablation table.

``check_compare_runs`` compares ``compare_runs(baseline, variant) -> (difference, noise, within_noise)``
with :func:`ssd_lib.course.ablations.compare_runs` (k = 2); ``check_summarize`` compares
``summarize(data, metric) -> {variant: {"mean", "std", "min", "max", "n", "seeds"}}`` with
:func:`ssd_lib.course.ablations.summarize`.

Usage::

    from ssd_lib.course.checks import check_compare_runs
    assert check_compare_runs(compare_runs)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np

from ssd_lib.course.ablations import compare_runs, summarize

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


# ---------------------------------------------------------------------------------------------
# The rows of the ablation table: mean, sample std, range and seeds of one metric per variant
# ---------------------------------------------------------------------------------------------

_ROW_RULE = ("for each variant of data['variants']: the runs of that variant whose metric is present, "
             "not None and finite; from their values the mean, the SAMPLE std (ddof=1; NaN for a single run), min, "
             "max, n (the number of values) and their seeds in the order of data['runs']; leave out a variant "
             "without any such run")
_ROW_SKIP = ("skip the runs whose metric is missing (a speed-only run has no mAP), None (JSON's null: undefined, e.g. "
             "no object of that size) or NaN (math.isfinite is False): they are not measurements")
_ROW_STATS = ("std is the SAMPLE standard deviation, np.std(values, ddof=1): with 3 seeds, dividing by n instead of "
              "n - 1 makes the noise look about 18% smaller than it is")
_ROW_ONE = ("one run has no spread to measure: its std is NaN (float('nan'), what np.std(values, ddof=1) gives for one "
            "value), not 0, so that nobody reads it as 'no noise'")
_ROW_METRIC = "the statistics are of the metric asked for: r[metric], not always 'mAP'"
_ROW_KEYS = ("mean", "std", "min", "max", "n", "seeds")


def _usable(data: dict, name: str, metric: str) -> tuple[list, list]:
    """(all runs of variant ``name``, the runs whose ``metric`` is a finite number)."""
    runs = [r for r in data.get("runs", []) if r.get("variant") == name]
    return runs, [r for r in runs if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]


def _diagnose_row(key: str, value: Any, want: Any, data: dict, name: str, metric: str) -> Optional[str]:
    runs, usable = _usable(data, name, metric)
    values = np.array([r[metric] for r in usable], dtype=float)
    if len(usable) < len(runs) and (key == "n" and value == len(runs) or key != "n" and not
                                    (isinstance(value, float) and math.isfinite(value)) and math.isfinite(want)):
        return _ROW_SKIP
    if key == "std" and len(values) > 1 and math.isclose(value, float(values.std()), rel_tol=1e-6):
        return _ROW_STATS
    if key == "std" and len(values) == 1:
        return _ROW_ONE
    if key == "seeds" and isinstance(value, list) and sorted(value) == sorted(want):
        return "keep the seeds in the order of the runs in data['runs'] (the order they finished), not sorted"
    return None


def _compare_row(want: dict, row: Any, data: dict, name: str, metric: str) -> None:
    where = f"summary[{name!r}]"
    if not isinstance(row, dict):
        raise Mismatch(f"expected {where} as a dict with keys {', '.join(_ROW_KEYS)}, got {type(row).__name__}",
                       "build one dict per variant: {'mean': ..., 'std': ..., 'min': ..., 'max': ..., 'n': ..., "
                       "'seeds': [...]}")
    missing = [k for k in _ROW_KEYS if k not in row]
    if missing:
        raise Mismatch(f"{where} has no key {missing[0]!r} (it has {sorted(map(str, row))})",
                       f"each variant's dict has the keys {', '.join(_ROW_KEYS)}")
    for key in ("n", "seeds", "mean", "std", "min", "max"):
        value, expected = row[key], want[key]
        hint = lambda v, k=key, e=expected: _diagnose_row(k, v, e, data, name, metric)  # noqa: E731
        if key == "seeds":
            value = list(value) if isinstance(value, (list, tuple)) else value
            if value != expected:
                raise Mismatch(f"expected {where}['seeds'] = {expected}, got {value!r}", hint(value))
        elif key == "n":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) != expected:
                raise Mismatch(f"expected {where}['n'] = {expected} (values of {metric!r}), got {value!r}",
                               hint(value) or "n is the number of values the statistics are computed from: an int")
        elif math.isnan(expected):
            if not isinstance(value, (float, np.floating)) or not math.isnan(value):
                raise Mismatch(f"expected {where}[{key!r}] = nan (a single run), got {value!r}", _ROW_ONE)
        else:
            value = compare_number(expected, value, what=f"{where}[{key!r}]", atol=1e-12, rtol=1e-9, diagnose=hint)


def _study(variants: dict, runs: list) -> dict:
    """A study in the format of assets/ablations.json (only the keys summarize reads, and a few others)."""
    return {"format": "ssd_lib.ablations/1", "variants": {name: {"claim": claim} for name, claim in variants.items()},
            "runs": runs, "complete": True}


def _runs(name: str, values: list, metric: str = "mAP", seeds: Optional[list] = None, **other) -> list:
    return [{"variant": name, "seed": seed, metric: value, **other}
            for seed, value in zip(seeds if seeds is not None else range(len(values)), values)]


_CLAIMS = {"full": "reference", "no_sampling_aug": "data augmentation is crucial",
           "no_ratio3": "more default box shapes is better", "square_only": "more default box shapes is better",
           "fewer_maps": "multiple output layers at different resolutions is better",
           "single_map": "multiple output layers at different resolutions is better", "non_atrous": "atrous is faster"}


def _random_study(seed: int, k: int) -> tuple:
    rng = np.random.default_rng([seed, k])
    names = [n for n in _CLAIMS if n != "non_atrous"]
    chosen = [names[i] for i in sorted(rng.choice(len(names), size=int(rng.integers(2, 5)), replace=False))]
    metric = ["mAP", "mAP_small", "final_loss"][int(rng.integers(3))]
    runs = []
    for seed_of_run in range(int(rng.integers(1, 5))):  # seed-major, as run_ablations orders its runs
        for name in chosen:
            if rng.random() < 0.15:
                continue  # a run that has not finished
            value = round(float(rng.uniform(0.05, 0.9)), 4)
            if metric == "mAP_small" and rng.random() < 0.2:
                value = None  # no small object in this run's bin
            runs.append({"variant": name, "seed": seed_of_run, "mAP": value if metric == "mAP" else 0.3,
                         metric: value, "train_s": round(float(rng.uniform(50, 90)), 1)})
    return _study({n: _CLAIMS[n] for n in chosen}, runs), metric


def _describe_study(args: tuple) -> str:
    data, metric = args
    counts = {name: sum(r["variant"] == name for r in data["runs"]) for name in data["variants"]}
    return f"data with {len(data['runs'])} runs (per variant: {counts}), metric={metric!r}"


_SUMMARIZE_FORBID = Forbid("check_summarize", "the ablation table's rows", (summarize,),
                           "Python loops and comprehensions, numpy (mean, std with ddof=1, min, max) and "
                           "math.isfinite, math.nan")


def check_summarize(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``summarize(data, metric="mAP") -> {variant: {"mean", "std", "min", "max", "n", "seeds"}}`` (a
    study as stored in assets/ablations.json) against ``ssd_lib.course.ablations.summarize``."""
    speed = {"speed": {"atrous": {"images_per_s": 2.1}}, "slowdown_non_atrous": 0.6}
    two = {"full": _CLAIMS["full"], "square_only": _CLAIMS["square_only"]}
    cases = [
        Case("two variants, three seeds each", (_study(two, _runs("full", [0.187, 0.141, 0.188])
                                                       + _runs("square_only", [0.421, 0.270, 0.320])), "mAP"), _ROW_RULE),
        Case("the speed-only variant non_atrous: its runs have no 'mAP', so it has no row",
             (_study({"full": "reference", "non_atrous": _CLAIMS["non_atrous"]},
                     _runs("full", [0.30, 0.34]) + [{"variant": "non_atrous", "seed": s, **speed} for s in (0, 1)]),
              "mAP"), _ROW_SKIP),
        Case("one seed only: no spread to measure (std is NaN)",
             (_study(two, _runs("full", [0.25, 0.29, 0.21]) + _runs("square_only", [0.33])), "mAP"), _ROW_ONE),
        Case("metric 'mAP_small' is None in one run (JSON's null: no small object to find)",
             (_study(two, _runs("full", [0.08, None, 0.10], "mAP_small") + _runs("square_only", [0.23, 0.16, 0.19],
                                                                                 "mAP_small")), "mAP_small"), _ROW_SKIP),
        Case("a NaN value (a study in memory, before JSON turned NaN into null)",
             (_study(two, _runs("full", [0.52, 0.55, math.nan]) + _runs("square_only", [0.61, 0.58])), "mAP"),
             _ROW_SKIP),
        Case("a partial study: a planned variant with no finished run has no row",
             (_study({**two, "single_map": _CLAIMS["single_map"]}, _runs("full", [0.4, 0.5])
                     + _runs("square_only", [0.45, 0.43])), "mAP"), _ROW_RULE),
        Case("no runs yet (a study that has just started): an empty summary",
             (_study(two, []), "mAP"), "a study without runs has no rows: return an empty dict"),
        Case("the seeds in the order of the runs (seed 2 finished first)",
             (_study(two, _runs("full", [0.31, 0.28, 0.35], seeds=[2, 0, 1])
                     + _runs("square_only", [0.30, 0.36], seeds=[1, 0])), "mAP"), _ROW_RULE),
        Case("another metric: 'train_s' (seconds of training)",
             (_study(two, _runs("full", [71.5, 69.0, 80.2], "train_s") + _runs("square_only", [64.3, 66.1], "train_s")),
              "train_s"), _ROW_METRIC),
        *(Case(f"a random study (seed {seed}, case {k})", _random_study(seed, k), _ROW_RULE) for k in range(3)),
    ]
    for case in cases:
        case.inputs = _describe_study(case.args)

    def compare(expected: dict, got: Any, args: tuple) -> None:
        data, metric = args
        if not isinstance(got, dict):
            raise Mismatch(f"expected a dict {{variant: row}}, got {type(got).__name__}",
                           "return a dict with one entry per variant: {'full': {'mean': ..., ...}, ...}")
        missing = [name for name in expected if name not in got]
        if missing:
            raise Mismatch(f"the summary has no row for {missing[0]!r} (expected rows for {list(expected)})",
                           _ROW_METRIC if metric != "mAP" and not got else _ROW_RULE)
        extra = [name for name in got if name not in expected]
        if extra:
            no_values = extra[0] in data.get("variants", {})
            raise Mismatch(f"the summary has a row for {extra[0]!r}, which has no value of {metric!r} "
                           f"(expected rows for {list(expected)})" if no_values else
                           f"the summary has a row for {extra[0]!r}, which is not a variant of this study",
                           (_ROW_SKIP + "; a variant without any value has no row") if no_values else _ROW_RULE)
        for name, want in expected.items():
            _compare_row(want, got[name], data, name, metric)

    return run("check_summarize", fn, ("data", "metric"), cases, summarize, compare, _SUMMARIZE_FORBID)
