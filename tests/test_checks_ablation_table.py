"""Tests for check_summarize (lesson 10, the rows of the ablation table): the library's summarize and a
learner-style solution pass it; each common mistake fails with the hint that names it; handing the
work to the library fails with the tripwire's message; memorised public answers fail another seed;
on the stored study (assets/ablations.json) the learner's rows are the library's."""
from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ssd_lib.course.ablations import summarize as library_summarize
from ssd_lib.course.checks import check_summarize, hidden_tests
from check_results import on_its_reference  # tests/check_results.py

STUDY = Path(__file__).resolve().parents[1] / "assets" / "ablations.json"


def summarize(data, metric="mAP", skip="finite", ddof=1, one_run="nan", seeds="in order", keep_empty=False,
              metric_used=None, n_type=int, crash_on_missing=False):
    """A learner's summarize; each keyword switches on one mistake."""
    metric_used = metric_used or metric
    summary = {}
    for name in data["variants"]:
        runs = [r for r in data["runs"] if r["variant"] == name]
        if crash_on_missing:
            runs = [r for r in runs if r[metric_used] is not None]
        elif skip == "finite":
            runs = [r for r in runs if r.get(metric_used) is not None and math.isfinite(r[metric_used])]
        elif skip == "None only":
            runs = [r for r in runs if r.get(metric_used) is not None]
        elif skip == "missing only":
            runs = [r for r in runs if metric_used in r]
        if not runs and not keep_empty:
            continue
        values = np.array([r.get(metric_used) if r.get(metric_used) is not None else np.nan for r in runs], dtype=float)
        std = float(values.std(ddof=ddof)) if len(values) > 1 else (math.nan if one_run == "nan" else 0.0)
        seed_list = [r["seed"] for r in runs]
        summary[name] = {"mean": float(values.mean()) if len(values) else math.nan, "std": std,
                         "min": float(values.min()) if len(values) else math.nan,
                         "max": float(values.max()) if len(values) else math.nan, "n": n_type(len(values)),
                         "seeds": sorted(seed_list) if seeds == "sorted" else seed_list}
    return summary


P = functools.partial
TWO = "two variants, three seeds each"

# (a wrong version, the case it first fails, words its hint must contain)
WRONG = [
    (P(summarize, ddof=0), TWO, "SAMPLE standard deviation"),
    (P(summarize, one_run="zero"), "one seed only", "its std is NaN"),
    (P(summarize, seeds="sorted"), "the seeds in the order of the runs", "not sorted"),
    (P(summarize, skip="None only"), "a NaN value", "skip the runs whose metric is missing"),
    (P(summarize, skip="missing only"), "metric 'mAP_small' is None in one run", "skip the runs"),
    (P(summarize, skip="nothing"), "the speed-only variant non_atrous", "a variant without any value has no row"),
    (P(summarize, keep_empty=True), "the speed-only variant non_atrous", "a variant without any value has no row"),
    (P(summarize, metric_used="mAP"), "metric 'mAP_small' is None in one run", "the metric asked for"),
    (P(summarize, n_type=float), TWO, "an int"),
    (P(summarize, crash_on_missing=True), "the speed-only variant non_atrous", "skip the runs whose metric is missing"),
]


@pytest.mark.plumbing
@pytest.mark.parametrize("seed", [0, 7, 1234])
def test_the_library_passes(seed):
    with on_its_reference():
        assert check_summarize(library_summarize, seed=seed).passed
        assert hidden_tests(check_summarize, library_summarize, seeds=(5207, 7613)).passed


@pytest.mark.parametrize("seed", [0, 7, 1234])
def test_a_learner_passes(seed):
    result = check_summarize(summarize, seed=seed)
    assert result.passed, result.message


def test_hidden_tests_pass_the_learner():
    result = hidden_tests(check_summarize, summarize, seeds=(5207, 7613))
    assert result.passed, result.message


@pytest.mark.parametrize("wrong, case, hint", WRONG, ids=[h for _, _, h in WRONG])
def test_each_mistake_fails_with_its_hint(wrong, case, hint):
    result = check_summarize(wrong)
    assert not result.passed
    assert case in result.message.split(" (", 1)[0], result.message
    assert hint in result.message.split("Hint: ", 1)[1], result.message


def test_results_of_the_wrong_form_are_reported():
    result = check_summarize(lambda data, metric: list(summarize(data, metric).values()))
    assert not result.passed and "expected a dict {variant: row}" in result.message, result.message

    def without_seeds(data, metric):
        return {name: {k: v for k, v in row.items() if k != "seeds"} for name, row in summarize(data, metric).items()}

    result = check_summarize(without_seeds)
    assert not result.passed and "has no key 'seeds'" in result.message, result.message


def test_numpy_numbers_are_accepted():
    def numpy_rows(data, metric):
        rows = summarize(data, metric)
        return {name: {**row, "mean": np.float64(row["mean"]), "n": np.int64(row["n"]), "seeds": tuple(row["seeds"])}
                for name, row in rows.items()}

    result = check_summarize(numpy_rows)
    assert result.passed, result.message


@pytest.mark.parametrize("delegate", [library_summarize, lambda data, metric: library_summarize(data, metric)],
                         ids=["itself", "lambda"])
def test_handing_the_work_to_the_library_fails(delegate):
    result = check_summarize(delegate)
    assert not result.passed and "asks you to write the ablation table's rows yourself" in result.message, \
        result.message
    assert "called `ssd_lib.course.ablations.summarize`" in result.message


def test_memorised_public_answers_fail_another_seed():
    seen = []

    def record(data, metric):
        out = summarize(data, metric)
        seen.append((copy.deepcopy((data, metric)), copy.deepcopy(out)))
        return out

    assert check_summarize(record).passed

    def memorised(data, metric):
        for (known, known_metric), out in seen:
            if json.dumps(known, sort_keys=True) == json.dumps(data, sort_keys=True) and known_metric == metric:
                return copy.deepcopy(out)
        return {}

    assert check_summarize(memorised).passed
    assert not hidden_tests(check_summarize, memorised, seeds=(5207, 7613)).passed


def test_on_the_stored_study_the_learners_rows_are_the_librarys():
    """The lesson's table: three seeds per trained variant, no row for the speed-only non_atrous."""
    data = json.loads(STUDY.read_text())
    for metric in ("mAP", "mAP_small", "train_s"):
        ours, library = summarize(data, metric), library_summarize(data, metric)
        assert ours.keys() == library.keys()
        for name, row in library.items():
            assert ours[name]["n"] == row["n"] and ours[name]["seeds"] == row["seeds"]
            for key in ("mean", "std", "min", "max"):
                assert ours[name][key] == pytest.approx(row[key], nan_ok=True)
    rows = summarize(data)
    assert "non_atrous" not in rows and all(row["n"] == 3 for row in rows.values()), rows
