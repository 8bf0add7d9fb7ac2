"""Time budgets the course relies on, measured (they used to be wall-clock asserts in the test suite).

A budget is what a user's setting allows, with a margin: a graded check cell must finish well inside nbgrader's
default 30 s per cell (with its hidden tests, which rerun the checker on two more seeds and in float64: about
four runs), VOC evaluation of 1,000 images must not dominate a training run's evaluation, and rendering the
built-in images must stay a small part of a training step. Each row is the median of ``--repeats`` timed calls
after one warm-up call; the exit status is 1 if a row is over its budget.

Usage::

    .venv/bin/python -m benchmarks.bench_budgets               # prints a table, exit 1 if over budget
    .venv/bin/python -m benchmarks.bench_budgets --repeats 1   # one timed call per row
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Callable


if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_metrics import make_dataset  # noqa: E402
from ssd_lib.course.ablations import summarize  # noqa: E402
from ssd_lib.course.checks import check_min_iou_crop, check_sgd_step, check_summarize  # noqa: E402
from ssd_lib.course.checks.crop import _min_iou_crop_reference  # noqa: E402
from ssd_lib.course.checks.sgd import _sgd_reference  # noqa: E402
from ssd_lib.course.checks.tripwire import reference_allowed  # noqa: E402
from ssd_lib.data import ShapesDataset  # noqa: E402
from ssd_lib.metrics import evaluate_voc  # noqa: E402


def _check(checker: Callable, reference: Callable) -> Callable[[], None]:
    def run() -> None:
        with reference_allowed(), contextlib.redirect_stdout(io.StringIO()):  # the checker's own report
            result = checker(reference)
        if not result.passed:
            raise RuntimeError(f"{checker.__name__} failed the library's own answer: {result.message}")
    return run


def _voc_1000_images() -> Callable[[], None]:
    """1,000 VOC-sized images x 100 detections of 20 classes (bench_metrics' synthetic test set)."""
    detections, truths = make_dataset(num_images=1000, dets_per_image=100, num_classes=20, seed=3)
    return lambda: evaluate_voc(detections, truths, num_classes=20)


def _render_100_images() -> Callable[[], None]:
    dataset = ShapesDataset("train", size=100, image_size=256)
    return lambda: [dataset[i] for i in range(100)]


# (name, what to time, budget in seconds, why that budget)
ROWS: list[tuple[str, Callable[[], Callable[[], None]], float, str]] = [
    ("check_summarize (lesson 10)", lambda: _check(check_summarize, summarize), 1.0, "nbgrader's 30 s per cell"),
    ("check_sgd_step (lesson 7)", lambda: _check(check_sgd_step, _sgd_reference), 1.0, "nbgrader's 30 s per cell"),
    ("check_min_iou_crop (lesson 6)", lambda: _check(check_min_iou_crop, _min_iou_crop_reference), 2.0,
     "nbgrader's 30 s per cell"),
    ("evaluate_voc, 1,000 images x 100 detections", _voc_1000_images, 10.0, "a laptop takes well under 1 s"),
    ("ShapesDataset, 100 images at 256 px", _render_100_images, 2.0, "20 ms per image"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_budgets", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row (median reported)")
    args = parser.parse_args(argv)
    over = 0
    print(f"{'what':48s} {'median s':>9s} {'budget s':>9s}  status  (budget from)")
    for name, make, budget, why in ROWS:
        work = make()
        work()  # warm-up: imports, caches
        seconds = []
        for _ in range(max(args.repeats, 1)):
            start = time.perf_counter()
            work()
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        status = "ok" if median <= budget else "OVER"
        over += status == "OVER"
        print(f"{name:48s} {median:9.3f} {budget:9.1f}  {status:6s}  ({why})")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
