"""A small autograder for the course notebooks, keyed by nbgrader's ``grade_id``.

:func:`grade_notebook` runs a filled-in notebook in a fresh kernel and reports, per exercise of the
teacher notebook (identified by its check cell's ``grade_id``, never by position), passed or failed
with the first line of the reason. The teacher's check cells (hidden tests included) are put back
before the run, as nbgrader's autograder does, so moved, copied, split, added or edited cells do
not change what is graded; a deleted check cell fails by name.

:func:`grade_notebook` reads as the steps of grading: read the exercises, locate each one's check
cell, restore the teacher's check cells, run the notebook, turn each exercise into a result.

Usage::

    python -m ssd_lib grade submissions/alice/01_boxes.ipynb [--teacher notebooks/01_boxes.ipynb]
    report = grade_notebook("submissions/alice/01_boxes.ipynb"); print(report.points, report.max_points)
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from ssd_lib.files import write_json

from .assets import NOTEBOOK_DIR, NOTEBOOK_GLOB, REPO_ROOT, short_path
from .modes import mode_environment
from .student import (
    HIDDEN_BEGIN, HIDDEN_END, NotebookFormatError, cell_source, first_line, nbgrader_metadata, read_notebook,
    replace_regions, strip_terminal_colours,
)

__all__ = ["AUTO", "Exercise", "ExerciseResult", "GradeReport", "teacher_exercises", "find_teacher_notebook",
           "grade_notebook", "cli"]

AUTO = "auto"  # grade_notebook(teacher=AUTO): look for the teacher version next to the notebook or in notebooks/
_TIMEOUT_ENAME = "CellTimeout"  # the ename nbclient gives a cell interrupted for running past the timeout


@dataclass(frozen=True)
class Exercise:
    """One auto-graded exercise as the teacher notebook defines it: the check cell's ``grade_id``,
    ``points`` and source (hidden tests included), and the ``grade_id`` of the solution cell it
    checks (the nearest solution cell above it; None if there is none)."""

    grade_id: str
    points: float
    source: str
    solution_id: str | None = None

    @property
    def public_source(self) -> str:
        """The check cell as students see it: hidden tests removed."""
        return replace_regions(self.source, HIDDEN_BEGIN, HIDDEN_END, None, self.grade_id)[0]

    @property
    def has_hidden_tests(self) -> bool:
        return any(line.strip() == HIDDEN_BEGIN for line in self.source.split("\n"))


@dataclass
class ExerciseResult:
    """One exercise: ``status`` is "passed", "failed" or "not run"; ``cell_index`` is the graded
    cell in the student's notebook (-1: the check cell is missing); ``notes`` say what the grader
    did about the student's edits (a restored check cell, copies of it)."""

    grade_id: str
    status: str
    points: float
    max_points: float
    message: str = ""
    cell_index: int = -1
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class GradeReport:
    """Result of :func:`grade_notebook`: one :class:`ExerciseResult` per exercise of the teacher
    notebook (in its order), or per check cell found in the notebook when there is no teacher version."""

    notebook: Path
    exercises: list[ExerciseResult]
    seconds: float
    timeout_per_cell: float
    kernel_problem: str | None = None  # e.g. "the kernel died in cell 7"
    executed: Any = field(default=None, repr=False)  # the executed copy (NotebookNode)
    teacher: Path | None = None  # the teacher notebook that defined the exercises
    notes: list[str] = field(default_factory=list)  # about the notebook as a whole (cells not graded, ...)

    @property
    def points(self) -> float:
        return sum(e.points for e in self.exercises)

    @property
    def max_points(self) -> float:
        return sum(e.max_points for e in self.exercises)

    @property
    def all_passed(self) -> bool:
        return all(e.passed for e in self.exercises)

    def __getitem__(self, grade_id: str) -> ExerciseResult:
        for exercise in self.exercises:
            if exercise.grade_id == grade_id:
                return exercise
        raise KeyError(f"no exercise with grade_id {grade_id!r}; have {[e.grade_id for e in self.exercises]}")

    def to_dict(self) -> dict:
        return {"notebook": str(self.notebook), "teacher": str(self.teacher) if self.teacher else None,
                "points": self.points, "max_points": self.max_points, "seconds": round(self.seconds, 1),
                "kernel_problem": self.kernel_problem, "notes": list(self.notes),
                "exercises": [asdict(e) for e in self.exercises]}

    def __str__(self) -> str:
        against = (f"against {short_path(self.teacher)}" if self.teacher
                   else "without a teacher version: exercises are the check cells found in it")
        lines = [f"Grading {self.notebook.name} {against} (timeout {self.timeout_per_cell:g} s per cell)"]
        width = max([len(e.grade_id) for e in self.exercises] + [8])
        for e in self.exercises:
            mark = {"passed": "✅", "failed": "❌"}.get(e.status, "⏭️")
            line = f"  {mark} {e.grade_id:<{width}}  {e.status:<7}  {e.points:g}/{e.max_points:g}"
            lines.append(line + (f"  {e.message}" if e.message else ""))
            lines += [f"       note: {note}" for note in e.notes]
        if not self.exercises:
            lines.append("  no check cells found (code cells with nbgrader metadata \"grade\": true)")
        lines += [f"  note: {note}" for note in self.notes]
        if self.kernel_problem:
            lines.append(f"  note: {self.kernel_problem}")
        passed = sum(e.passed for e in self.exercises)
        lines.append(f"Total: {self.points:g}/{self.max_points:g} points, {passed} of {len(self.exercises)} "
                     f"exercises passed ({self.seconds:.0f} s)")
        return "\n".join(lines)


# ---------------------------------------------------------------- the teacher's exercises

def _is_check_cell(cell) -> bool:
    """A check cell: code with nbgrader ``grade: true`` that is not a solution (nbgrader's autograded test)."""
    meta = nbgrader_metadata(cell)
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def _is_solution_cell(cell) -> bool:
    """A cell the student fills in (nbgrader ``solution: true``), code or markdown."""
    return bool(nbgrader_metadata(cell).get("solution"))


def _exercise_at(cells, index: int) -> Exercise:
    """The exercise of the check cell ``cells[index]``; its solution is the nearest solution cell
    above it with no other check cell in between."""
    meta, solution_id = nbgrader_metadata(cells[index]), None
    for cell in reversed(cells[:index]):
        if _is_check_cell(cell):
            break
        if _is_solution_cell(cell):
            solution_id = nbgrader_metadata(cell).get("grade_id")
            break
    return Exercise(meta["grade_id"], float(meta.get("points", 0) or 0), cell_source(cells[index]), solution_id)


def teacher_exercises(nb, name: str = "notebook") -> list[Exercise]:
    """The auto-graded exercises of a teacher notebook, in notebook order: one per check cell (code,
    nbgrader ``grade: true``, not a solution). A check cell without a ``grade_id``, or two cells
    sharing a ``grade_id``, is a NotebookFormatError: the teacher's notebook must identify each one."""
    checks = [i for i, c in enumerate(nb.cells) if _is_check_cell(c)]
    unnamed = [i for i in checks if not nbgrader_metadata(nb.cells[i]).get("grade_id")]
    if unnamed:
        raise NotebookFormatError(f"{name}: check cell(s) {unnamed} have no nbgrader grade_id; give each a unique one")
    ids = [nbgrader_metadata(c).get("grade_id") for c in nb.cells if nbgrader_metadata(c).get("grade_id")]
    duplicates = sorted({gid for gid in ids if ids.count(gid) > 1})
    if duplicates:
        raise NotebookFormatError(f"{name}: grade_id(s) {duplicates} are used by more than one cell; make them unique")
    return [_exercise_at(nb.cells, i) for i in checks]


def _exercises_found_in(nb, name: str) -> tuple[list[Exercise], list[str]]:
    """Without a teacher version: the notebook's own check cells, the last cell of each grade_id
    (as nbgrader does with duplicates), in order of first appearance; plus notes."""
    notes, last, order = [], {}, []
    for i, cell in enumerate(nb.cells):
        if not _is_check_cell(cell):
            continue
        gid = nbgrader_metadata(cell).get("grade_id")
        if not gid:
            notes.append(f"cell {i} is marked as a check (nbgrader grade: true) but has no grade_id: it ran but was "
                         f"not graded")
            continue
        if gid not in last:
            order.append(gid)
        last[gid] = i
    return [_exercise_at(nb.cells, last[gid]) for gid in order], notes


def find_teacher_notebook(path: str | Path) -> Path | None:
    """The teacher version of a notebook named like a course notebook (``NN_name.ipynb``):
    ``<folder>/../NN_name.ipynb`` when the notebook sits in a ``student/`` folder, else
    ``<repo>/notebooks/NN_name.ipynb``; None when neither exists (or the name is not a course name)."""
    path = Path(path)
    if not fnmatch(path.name, NOTEBOOK_GLOB):
        return None
    candidates = ([path.resolve().parent.parent / path.name] if path.resolve().parent.name == "student" else [])
    candidates.append(NOTEBOOK_DIR / path.name)
    return next((c for c in candidates if c.is_file()), None)


# ---------------------------------------------------------------- grading, step by step

def grade_notebook(path: str | Path, timeout_per_cell: float = 300, teacher: str | Path | None = AUTO,
                   restore_checks: bool = True) -> GradeReport:
    """Run a copy of a (filled-in) notebook in a fresh ``python3`` kernel of this environment and
    grade it, nbgrader style: a check cell earns its ``points`` when it runs without error.

    Exercises are identified by the ``grade_id`` of their check cell, never by position:

    * ``teacher``: the teacher notebook that defines the exercises (grade_id, points, check source
      with hidden tests). ``AUTO`` (default) uses :func:`find_teacher_notebook`; ``None``, or no
      teacher version found, grades the check cells found in the notebook itself.
    * An exercise whose check cell is missing (deleted) fails with a message naming it. Cells that
      were moved, split or added run where they are; a cell with a grade_id the teacher notebook
      does not have runs but earns nothing.
    * Copies (several cells with the same check grade_id, e.g. a copied or split check cell): the
      LAST one is graded, as nbgrader's ``DeduplicateIds`` does; the others run as ordinary cells.
    * ``restore_checks`` (default): the graded cell's source is replaced by the teacher's (hidden
      tests included), so editing a check does not make it pass; the report notes an edit.

    The kernel's working directory is the notebook's folder; ``SSD_COURSE_GRADING=1`` (see
    :func:`grading_mode`) and ``SSD_COURSE_FAST=1`` are set. Errors do not stop the run; a cell
    running longer than ``timeout_per_cell`` seconds is interrupted and counted as failed. If the
    kernel dies (or does not recover from the interrupt), the remaining exercises are reported as
    not run. The file on disk is never changed; the executed copy is ``report.executed``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"notebook {path} does not exist")
    teacher_path = _teacher_path(path, teacher)
    nb = read_notebook(path)
    exercises, report_notes = _exercises_to_grade(nb, path.name, teacher_path)
    check_cells, notes = _locate_check_cells(nb, exercises)
    report_notes += _ungraded_check_notes(nb, exercises)
    _prepare_check_cells(nb, exercises, check_cells, notes, restore=teacher_path is not None and restore_checks)
    run = _run_notebook(nb, path.resolve().parent, timeout_per_cell)
    results = [_exercise_result(e, check_cells.get(e.grade_id), notes[e.grade_id], run) for e in exercises]
    return GradeReport(path, results, run.seconds, float(timeout_per_cell), run.kernel_problem, nb, teacher_path,
                       report_notes)


def _teacher_path(path: Path, teacher: str | Path | None) -> Path | None:
    """The teacher notebook to grade ``path`` against: ``teacher`` itself, the one
    :func:`find_teacher_notebook` finds for ``AUTO``, or None. A teacher path that does not exist
    is a FileNotFoundError (``AUTO`` finding nothing is not: the notebook is graded on its own)."""
    found = find_teacher_notebook(path) if isinstance(teacher, str) and teacher == AUTO else teacher
    found = Path(found) if found is not None else None
    if found is not None and not found.is_file():
        raise FileNotFoundError(f"teacher notebook {found} does not exist")
    return found


def _exercises_to_grade(nb, name: str, teacher_path: Path | None) -> tuple[list[Exercise], list[str]]:
    """Step 1: the exercises, read from the teacher notebook, or from the check cells of ``nb``
    (named ``name``) when there is none; plus notes about the notebook as a whole."""
    if teacher_path is None:
        return _exercises_found_in(nb, name)
    return teacher_exercises(read_notebook(teacher_path), teacher_path.name), []


def _locate_check_cells(nb, exercises: list[Exercise]) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Step 2: where each exercise's check cell is in ``nb`` now, found by grade_id, never by position.

    Returns ({grade_id: cell index}, with no entry for a deleted check cell; {grade_id: notes}).
    Of several cells carrying the same grade_id (copied or split), the LAST one is graded; the others
    lose their nbgrader metadata (``nb`` is changed) and run as ordinary cells, as nbgrader's
    ``DeduplicateIds`` does."""
    check_cells: dict[str, int] = {}
    notes: dict[str, list[str]] = {e.grade_id: [] for e in exercises}
    for e in exercises:
        found = [i for i, c in enumerate(nb.cells) if nbgrader_metadata(c).get("grade_id") == e.grade_id]
        if not found:
            continue
        check_cells[e.grade_id] = found[-1]
        for i in found[:-1]:
            nb.cells[i].metadata.pop("nbgrader", None)
        if len(found) > 1:
            notes[e.grade_id].append(f"{len(found)} cells carry this grade_id (cells {found}): graded the last one, "
                                     f"as nbgrader does; the others ran as ordinary cells")
    return check_cells, notes


def _ungraded_check_notes(nb, exercises: list[Exercise]) -> list[str]:
    """Notes on the check cells of ``nb`` whose grade_id is not an exercise (a cell dressed as a
    check by the student): they run but earn nothing."""
    known = {e.grade_id for e in exercises}
    notes = []
    for i, cell in enumerate(nb.cells):
        gid = nbgrader_metadata(cell).get("grade_id")
        if _is_check_cell(cell) and gid and gid not in known:
            notes.append(f"cell {i} has grade_id {gid!r}, which is not an exercise of the teacher notebook: "
                         f"it ran but was not graded")
    return notes


def _prepare_check_cells(nb, exercises: list[Exercise], check_cells: dict[str, int],
                         notes: dict[str, list[str]], restore: bool) -> None:
    """Step 3: with ``restore``, put the teacher's version of each located check cell back in ``nb``
    (hidden tests included, see :func:`_restore_check`); without it, only note a check cell that
    is no longer code, since it will not run. Notes go to ``notes[grade_id]``."""
    for e in exercises:
        index = check_cells.get(e.grade_id)
        if index is None:
            continue
        if restore:
            notes[e.grade_id] += _restore_check(nb, index, e)
        elif nb.cells[index].cell_type != "code":
            notes[e.grade_id].append(f"the check cell is a {nb.cells[index].cell_type} cell, not code: it did not run")


def _restore_check(nb, index: int, exercise: Exercise) -> list[str]:
    """Put the teacher's check cell back at ``nb.cells[index]`` (as nbgrader's autograder does with
    locked cells); return notes on what differed. Hidden tests come back with it."""
    import nbformat

    cell, notes = nb.cells[index], []
    if cell.cell_type != "code":
        notes.append(f"the check cell had been turned into a {cell.cell_type} cell; graded as code with the "
                     f"teacher's version")
        restored = nbformat.v4.new_code_cell(exercise.source, metadata=copy.deepcopy(dict(cell.metadata)))
        if "id" in cell:
            restored["id"] = cell["id"]
        else:
            restored.pop("id", None)
        nb.cells[index] = restored
    elif cell.source.strip() not in (exercise.source.strip(), exercise.public_source.strip()):
        notes.append("the check cell had been edited; graded with the teacher's version")
    nb.cells[index].source = exercise.source
    if exercise.has_hidden_tests:
        notes.append("hidden tests restored from the teacher version")
    return notes


@dataclass
class _NotebookRun:
    """What running a notebook produced: the notebook, ``executed`` in place (outputs filled in);
    the content of nbclient's execute_reply per code cell index; and, when the kernel died or stayed
    stuck after a timeout, the cell where the run stopped (``stopped_at``) and why."""

    executed: Any  # NotebookNode
    timeout_per_cell: float
    replies: dict[int, dict] = field(default_factory=dict)
    stopped_at: int | None = None
    kernel_problem: str | None = None  # e.g. "the kernel died in cell 7; later cells were not run"
    seconds: float = 0.0

    def record_reply(self, cell, cell_index: int, execute_reply, **_) -> None:
        """nbclient's ``on_cell_executed`` hook: keep the content of the cell's execute_reply."""
        self.replies[cell_index] = (execute_reply or {}).get("content", {})

    def timed_out(self, index: int) -> bool:
        """Whether cell ``index`` ran past the per-cell timeout and was interrupted."""
        return self.replies.get(index, {}).get("ename") == _TIMEOUT_ENAME

    def reached(self, index: int) -> bool:
        """Whether the run got as far as cell ``index`` (the cell where it stopped included)."""
        return self.stopped_at is None or index <= self.stopped_at

    def completed(self, index: int) -> bool:
        """Whether cell ``index`` is a code cell that ran and returned, with or without an error."""
        return self.executed.cells[index].cell_type == "code" and self.reached(index) and index != self.stopped_at

    def failure(self, index: int) -> str | None:
        """Why code cell ``index`` failed, in one line (see :func:`_cell_failure`); None if it did not."""
        return _cell_failure(self.executed.cells[index], self.replies.get(index), self.timeout_per_cell)


def _run_notebook(nb, folder: Path, timeout_per_cell: float) -> _NotebookRun:
    """Step 4: run the code cells of ``nb`` in place, in order, in a fresh ``python3`` kernel working
    in ``folder``, with :func:`_kernel_env`. Errors do not stop the run; a cell running longer than
    ``timeout_per_cell`` seconds is interrupted. The run stops at a cell where the kernel dies, or
    does not answer after the interrupt."""
    from nbclient.exceptions import DeadKernelError

    run = _NotebookRun(nb, timeout_per_cell)
    client = _notebook_client(nb, folder, timeout_per_cell, run.record_reply)
    code_cells = [(index, cell) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    start = time.perf_counter()
    with client.setup_kernel(env=_kernel_env()):
        for count, (index, cell) in enumerate(code_cells, start=1):
            try:
                client.execute_cell(cell, index, execution_count=count)  # timeout_per_cell applies to every cell
            except DeadKernelError:
                run.stopped_at, run.kernel_problem = index, f"the kernel died in cell {index}; later cells were not run"
                break
            if run.timed_out(index) and not _kernel_responds(client):
                run.stopped_at = index
                run.kernel_problem = f"the kernel did not recover after cell {index} timed out; later cells were not run"
                break
    run.seconds = time.perf_counter() - start
    return run


def _notebook_client(nb, folder: Path, timeout_per_cell: float, on_cell_executed):
    """An nbclient client for ``nb`` that keeps going after errors and turns a cell running past
    ``timeout_per_cell`` seconds into an interrupt plus a ``CellTimeout`` error (in the reply too)."""
    from nbclient import NotebookClient

    return NotebookClient(
        nb, timeout=timeout_per_cell, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
        error_on_timeout={"ename": _TIMEOUT_ENAME, "evalue": f"timed out after {timeout_per_cell:g} s", "traceback": []},
        record_timing=False, resources={"metadata": {"path": str(folder)}},
        extra_arguments=["--log-level=ERROR"],  # no "running over TCP without encryption" warnings
        on_cell_executed=on_cell_executed,
    )


def _kernel_env() -> dict[str, str]:
    """The grading kernel's environment: this process's, plus grading and fast mode and the repository on PYTHONPATH."""
    env = dict(os.environ)
    # Grading mode, read in the kernel by ssd_lib.course.modes.grading_mode(): widgets are not
    # displayed and no training runs. Fast mode keeps whatever still runs small.
    env.update(mode_environment(fast=True, grading=True), MPLBACKEND="Agg")
    # ssd_lib is importable in the kernel even when the package is not installed.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _kernel_responds(client, seconds: float = 20) -> bool:
    """After an interrupted cell: does the kernel answer a kernel_info request within ``seconds``?"""
    from nbclient.exceptions import DeadKernelError

    previous = client.timeout
    client.timeout = seconds
    try:
        return client.wait_for_reply(client.kc.kernel_info()) is not None
    except DeadKernelError:
        return False
    finally:
        client.timeout = previous


def _exercise_result(exercise: Exercise, index: int | None, notes: list[str], run: _NotebookRun) -> ExerciseResult:
    """Step 5: grade one exercise from the run, its check cell being ``run.executed.cells[index]``
    (``index`` None: missing). Passed, with all its points, when the check cell ran without error;
    not run when the run stopped before it; failed otherwise, with a one-line message."""
    grade_id, max_points = exercise.grade_id, exercise.points
    if index is None:
        message = _missing_check_message(exercise, run.executed)
        return ExerciseResult(grade_id, "failed", 0.0, max_points, message, -1, notes)
    if not run.reached(index):
        return ExerciseResult(grade_id, "not run", 0.0, max_points, f"not run: {run.kernel_problem}", index, notes)
    failure = _check_failure(exercise, index, run)
    if failure is None:
        return ExerciseResult(grade_id, "passed", max_points, max_points, "", index, notes)
    return ExerciseResult(grade_id, "failed", 0.0, max_points, failure, index, notes)


def _missing_check_message(exercise: Exercise, nb) -> str:
    """The message of an exercise whose check cell is not in ``nb``, saying if its solution cell is gone too."""
    hint = ("" if exercise.solution_id is None or _solution_cells(nb, exercise)
            else f"; its solution cell {exercise.solution_id!r} is missing too")
    return f"missing: no check cell with grade_id {exercise.grade_id!r} in the notebook (deleted?){hint}"


def _check_failure(exercise: Exercise, index: int, run: _NotebookRun) -> str | None:
    """Why the check cell ``index`` (reached by the run) failed, as the report says it, or None if it passed.

    A timeout, a dead or stuck kernel, or a check cell that is not code speak for themselves. Otherwise
    the clearest line wins: the checker's own "❌ ..." line, else the error of the exercise's solution
    cell, else the check cell's error; plus a hint when the solution cell is missing or below the check."""
    cell = run.executed.cells[index]
    if cell.cell_type != "code":
        return f"the check cell is a {cell.cell_type} cell and did not run"
    if run.stopped_at == index:
        return run.kernel_problem
    failure = run.failure(index)
    if failure is None or run.timed_out(index):
        return failure
    solution_failure, hint = _solution_hint(exercise, index, run)
    return (_checker_line(cell) or solution_failure or failure) + hint


def _solution_cells(nb, exercise: Exercise) -> list[int]:
    """The indices of the cells of ``nb`` carrying the grade_id of the exercise's solution cell."""
    return [i for i, c in enumerate(nb.cells)
            if exercise.solution_id and nbgrader_metadata(c).get("grade_id") == exercise.solution_id]


def _solution_hint(exercise: Exercise, check_index: int, run: _NotebookRun) -> tuple[str | None, str]:
    """(the first error of the exercise's solution cell(s), a hint about where they are): the
    solution cell is missing, or every copy of it sits below the check cell ``check_index``."""
    if exercise.solution_id is None:
        return None, ""
    cells = _solution_cells(run.executed, exercise)
    if not cells:
        return None, f"; the solution cell {exercise.solution_id!r} is missing from the notebook (deleted?)"
    for i in cells:
        failure = run.failure(i) if run.completed(i) else None
        if failure:
            return f"{failure} (in the solution cell {exercise.solution_id!r})", ""
    if all(i > check_index for i in cells):
        return None, (f"; the check (cell {check_index}) runs before its solution cell {exercise.solution_id!r} "
                      f"(cell {cells[0]}): was a cell moved?")
    return None, ""


def _cell_failure(cell, reply: dict | None, timeout: float) -> str | None:
    """Why a cell failed (one line), or None if it ran without error."""
    if reply is not None and reply.get("ename") == _TIMEOUT_ENAME:
        return f"timed out after {timeout:g} s and was stopped (an endless loop?)"
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        ename, evalue = errors[0].get("ename", "Error"), errors[0].get("evalue", "")
    elif reply is not None and reply.get("status") == "error":
        ename, evalue = reply.get("ename", "Error"), reply.get("evalue", "")
    else:
        return None
    detail = first_line(evalue)
    if ename == "NotImplementedError" and not detail:
        detail = "not implemented yet (replace `raise NotImplementedError()` with your code)"
    return f"{ename}: {detail}" if detail else ename


def _checker_line(cell) -> str:
    """The last "❌ ..." line the checker printed, without the mark."""
    text = "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")
    lines = [ln.strip() for ln in strip_terminal_colours(text).splitlines() if "❌" in ln]
    return lines[-1].replace("❌", "", 1).strip() if lines else ""


# ---------------------------------------------------------------- command line

def cli(argv: list[str] | None = None) -> int:
    """Run a filled-in course notebook headless and grade each exercise.

    ``python -m ssd_lib grade NOTEBOOK [--teacher PATH | --no-teacher] [--keep-checks] [--timeout S]
    [--json PATH]``: print the report. Exit 0 whatever the grades (they are results, not errors); 2
    for a missing or malformed notebook."""
    parser = argparse.ArgumentParser(prog="python -m ssd_lib grade",
                                     description="Run a filled-in course notebook in a fresh kernel and grade its exercises.")
    parser.add_argument("notebook", help="the .ipynb file to grade (e.g. submissions/alice/01_boxes.ipynb)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--teacher", metavar="PATH",
                       help="the teacher notebook that defines the exercises (default: the notebook of the same name "
                            "in the folder above a student/ folder, else in <repo>/notebooks/)")
    which.add_argument("--no-teacher", action="store_true",
                       help="grade the check cells found in the notebook itself (no restored checks, no hidden tests)")
    parser.add_argument("--keep-checks", action="store_true",
                        help="run the student's check cells as they are instead of the teacher's (hidden tests are "
                             "then not run)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per cell (default 300)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    teacher = None if args.no_teacher else (args.teacher or AUTO)
    try:
        report = grade_notebook(args.notebook, timeout_per_cell=args.timeout, teacher=teacher,
                                restore_checks=not args.keep_checks)
    except (FileNotFoundError, NotebookFormatError) as exc:
        print(f"error: {first_line(str(exc))}", file=sys.stderr)
        return 2
    print(report)
    if args.json:
        write_json(Path(args.json), report.to_dict())
    return 0
