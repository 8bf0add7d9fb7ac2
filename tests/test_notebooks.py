"""The course notebooks, run headless in fast mode (marker ``notebooks``; 10-40 s each).

Each ``notebooks/NN_*.ipynb`` must run top to bottom without an error, be committed without
outputs, have at least one nbgrader exercise (solution cell, then a check cell) and one widget or
interactive figure, and show no figure through an ``ipywidgets.Output`` (``interact`` uses one);
``notebooks/student/`` must be up to date and leak no solution; and the grader must pass a real
teacher notebook and fail its student version with a message per exercise. The runs (marker
``notebook_exec``) are part of the default suite.

    pytest -m notebooks tests/test_notebooks.py      # times in results/notebook_times.json
    pytest -m notebook_exec                          # only the headless runs
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import nbformat
import pytest

from notebook_lines import solution_lines
from ssd_lib.course.grade import grade_notebook
from ssd_lib.course.student import check_student_versions

pytestmark = pytest.mark.notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
STUDENT_DIR = NOTEBOOK_DIR / "student"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
NO_NOTEBOOKS = "no course notebooks yet (notebooks/NN_*.ipynb)"
TIMEOUT_PER_CELL = 300
# Displays that put a figure into an ipywidgets.Output; use ssd_lib.course.widgets (explorers, PlotExplorer) instead.
OUTPUT_DISPLAYS = re.compile(r"\b(interact|interactive|interact_manual|interactive_output|clear_output)\(|\bOutput\(")
TIMES_FILE = ROOT / "results" / "notebook_times.json"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

if NOTEBOOKS:
    PARAMS = [pytest.param(p, id=p.stem) for p in NOTEBOOKS]
else:
    PARAMS = [pytest.param(None, id="no-notebooks", marks=pytest.mark.skip(reason=NO_NOTEBOOKS))]


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {}) or {}


def headless_client(nb, **kwargs):
    """An nbclient ``NotebookClient`` without nbclient's mimic of the Output widget.

    With the mimic, a cell that writes into an ``ipywidgets.Output`` intermittently waits the whole
    per-cell timeout although the kernel has finished (jupyter/nbclient#312; measured here: 10 of 25
    such cells with a 400 KB PNG stalled, 0 of 40 without the mimic, 0 of 25 writing the same PNG into
    an ``ipywidgets.Image``). The course notebooks use no Output (a test below checks); this keeps a
    new one from hanging the suite: its output lands in the cell's outputs instead."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, **kwargs)
    client.widget_registry = {}  # no "@jupyter-widgets/output" handler: Output messages are plain outputs
    return client


def _kernel_env() -> dict[str, str]:
    """Fast mode, headless figures, not grading (widgets are built and displayed), ssd_lib importable."""
    env = dict(os.environ, SSD_COURSE_FAST="1", MPLBACKEND="Agg")
    env.pop("SSD_COURSE_GRADING", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


@pytest.fixture(scope="session")
def notebook_times(request):
    """Seconds per notebook run, printed at the end and merged into results/notebook_times.json."""
    times: dict[str, float] = {}
    yield times
    if not times:
        return
    previous = {}
    if TIMES_FILE.is_file():
        try:
            previous = json.loads(TIMES_FILE.read_text()).get("seconds", {})
        except (ValueError, AttributeError):
            previous = {}
    merged = {**previous, **{name: round(s, 1) for name, s in times.items()}}
    TIMES_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = TIMES_FILE.with_name(TIMES_FILE.name + ".tmp")
    tmp.write_text(json.dumps({"fast_mode": True, "cpu_count": os.cpu_count(), "seconds": dict(sorted(merged.items()))},
                              indent=2) + "\n")
    os.replace(tmp, TIMES_FILE)
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    lines = [f"notebook execution times (fast mode), written to {TIMES_FILE.relative_to(ROOT)}:"]
    lines += [f"  {name:<32} {seconds:6.1f} s" for name, seconds in sorted(times.items())]
    for line in lines:
        (reporter.write_line if reporter else print)(line)


# ---------------------------------------------------------------- execution

@pytest.mark.notebook_exec
@pytest.mark.parametrize("path", PARAMS)
def test_notebook_runs_top_to_bottom_in_fast_mode(path, notebook_times):
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    current = {"index": None}

    def on_cell_start(cell, cell_index, **_):
        current["index"] = cell_index

    client = headless_client(nb, timeout=TIMEOUT_PER_CELL, kernel_name="python3", allow_errors=False,
                             resources={"metadata": {"path": str(NOTEBOOK_DIR)}}, on_cell_start=on_cell_start,
                             extra_arguments=["--log-level=ERROR"])
    start = time.perf_counter()
    failure = None
    try:
        client.execute(env=_kernel_env())
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        failure = exc
    if failure is not None:  # reported outside the except block: no chained nbclient dump
        index = current["index"]
        cell = nb.cells[index] if index is not None else None
        if isinstance(failure, CellExecutionError):
            outputs = [o for o in (cell.get("outputs", []) if cell else []) if o.get("output_type") == "error"]
            trace = ANSI.sub("", "\n".join(outputs[0].get("traceback", []))).strip().splitlines() if outputs else []
            error = "\n".join(trace[-12:]) or f"{failure.ename}: {failure.evalue}"
        elif isinstance(failure, CellTimeoutError):
            error = f"the cell did not finish within {TIMEOUT_PER_CELL} s"
        else:
            error = "the kernel died (out of memory? a crash in native code?)"
        source = cell.source if cell is not None else "?"
        pytest.fail(f"{path.name}: cell {index} failed\n--- cell source ---\n{source}\n--- error ---\n{error}", pytrace=False)
    notebook_times[path.name] = time.perf_counter() - start


@pytest.mark.parametrize("path", PARAMS)
def test_outputs_are_not_committed(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: code cells {dirty} have outputs or execution counts; clear them before committing "
                       f"(JupyterLab: Edit > Clear Outputs of All Cells, then save)")
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in the notebook metadata; clear it before committing"


# ---------------------------------------------------------------- exercises

@pytest.mark.parametrize("path", PARAMS)
def test_notebook_has_exercises_unique_grade_ids_and_a_widget(path):
    cells = nbformat.read(path, as_version=4).cells
    ids = [_nbgrader(c)["grade_id"] for c in cells if _nbgrader(c).get("grade_id")]
    duplicates = sorted({gid for gid in ids if ids.count(gid) > 1})
    assert not duplicates, f"{path.name}: grade_id(s) {duplicates} are used by more than one cell; nbgrader needs them unique"

    exercises, problems = [], []
    for i, cell in enumerate(cells):
        meta = _nbgrader(cell)
        if cell.cell_type == "code" and meta.get("solution"):
            after = cells[i + 1] if i + 1 < len(cells) else None
            check = _nbgrader(after) if after is not None else {}
            if after is None or after.cell_type != "code" or check.get("grade") is not True or check.get("solution"):
                problems.append(f"solution cell {i} ({meta.get('grade_id')!r}) is not followed right away by a check "
                                f"cell (code, nbgrader grade: true)")
            else:
                exercises.append((meta.get("grade_id"), check.get("grade_id")))
        if cell.cell_type == "code" and meta.get("grade") is True and not meta.get("solution"):
            if not meta.get("grade_id") or not float(meta.get("points", 0) or 0) > 0:
                problems.append(f"check cell {i} needs a grade_id and points > 0 (has {meta})")
            if "assert" not in cell.source:
                problems.append(f"check cell {i} ({meta.get('grade_id')!r}) has no assert: a failing check would still "
                                f"count as passed (write `assert check_...(fn)`)")
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)
    assert exercises, f"{path.name}: no exercise (a solution cell with nbgrader metadata followed by a check cell)"

    code = [c.source for c in cells if c.cell_type == "code"]
    assert any("ssd_lib.course.widgets" in src or "widgets.Image" in src for src in code), (
        f"{path.name}: no widget (`from ssd_lib.course.widgets import ...`) or interactive figure (an `ipywidgets.Image`)")


@pytest.mark.parametrize("path", PARAMS)
def test_no_figure_is_shown_through_an_output_widget(path):
    cells = nbformat.read(path, as_version=4).cells
    found = [(i, m.group(0)) for i, c in enumerate(cells) if c.cell_type == "code"
             for m in OUTPUT_DISPLAYS.finditer(c.source)]
    assert not found, (f"{path.name}: cells {found} show output through an ipywidgets.Output, which stalls headless "
                       f"runs (nbclient#312) and piles up figures; use ssd_lib.course.widgets.PlotExplorer(draw, controls) "
                       f"or an explorer, or set the .value of one ipywidgets.Image")


def test_student_versions_are_up_to_date():
    if not NOTEBOOKS:
        pytest.skip(NO_NOTEBOOKS)
    stale = check_student_versions(NOTEBOOK_DIR, STUDENT_DIR)
    assert not stale, (f"stale or missing student notebooks: {[str(p.relative_to(ROOT)) for p in stale]}; "
                       f"run `python -m ssd_lib.course student`")


@pytest.mark.parametrize("path", PARAMS)
def test_student_version_leaks_no_solution(path):
    student_path = STUDENT_DIR / path.name
    assert student_path.is_file(), f"{student_path.relative_to(ROOT)} is missing; run `python -m ssd_lib.course student`"
    teacher = nbformat.read(path, as_version=4)
    student = nbformat.read(student_path, as_version=4)
    text = "\n".join(c.source for c in student.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text, f"{student_path.name} contains {marker!r}"
    secret, public = solution_lines(teacher.cells)
    # Short lines (`return x`) may legitimately appear elsewhere: compare only distinctive ones.
    distinctive = {ln for ln in secret - public if len(ln) > 25}
    leaked = sorted(distinctive & {ln.strip() for ln in text.splitlines()})
    assert not leaked, f"{student_path.name} shows solution lines: {leaked}"
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code"), f"{student_path.name} has outputs"


# ---------------------------------------------------------------- grading

@pytest.mark.notebook_exec
def test_grader_passes_a_teacher_notebook_and_fails_its_student_version():
    if not NOTEBOOKS:
        pytest.skip(NO_NOTEBOOKS)
    teacher_path = NOTEBOOKS[0]
    student_path = STUDENT_DIR / teacher_path.name
    assert student_path.is_file(), f"{student_path.relative_to(ROOT)} is missing; run `python -m ssd_lib.course student`"

    teacher = grade_notebook(teacher_path, timeout_per_cell=TIMEOUT_PER_CELL)
    print(teacher)
    assert teacher.exercises and teacher.all_passed, f"the teacher's solutions must pass:\n{teacher}"

    student = grade_notebook(student_path, timeout_per_cell=TIMEOUT_PER_CELL)
    print(student)
    assert [e.grade_id for e in student.exercises] == [e.grade_id for e in teacher.exercises]
    for e in student.exercises:
        assert e.status == "failed", f"{e.grade_id} should fail in the student version:\n{student}"
        assert e.message and "Traceback" not in e.message and "\n" not in e.message, f"{e.grade_id}: {e.message!r}"
