"""A small autograder for the course notebooks, keyed by nbgrader's ``grade_id``.

:func:`grade_notebook` runs a filled-in notebook in a fresh kernel and reports, per exercise of the
teacher notebook (identified by its check cell's ``grade_id``, never by position), passed or failed
with the first line of the reason. The teacher's check cells (hidden tests included) are put back
before the run, as nbgrader's autograder does, so moved, copied, split, added or edited cells do
not change what is graded; a deleted check cell fails by name.

Usage::

    python -m ssd_lib grade submissions/alice/01_boxes.ipynb [--teacher notebooks/01_boxes.ipynb]
    report = grade_notebook("submissions/alice/01_boxes.ipynb"); print(report.points, report.max_points)
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from ssd_lib.files import write_json

from .assets import NOTEBOOK_DIR, NOTEBOOK_GLOB, REPO_ROOT, short_path
from .modes import mode_environment
from .student import HIDDEN_BEGIN, HIDDEN_END, NotebookFormatError, cell_source, nbgrader_metadata, replace_regions, first_line, read_notebook

__all__ = ["AUTO", "Exercise", "ExerciseResult", "GradeReport", "teacher_exercises", "find_teacher_notebook",
           "grade_notebook", "cli"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


_TIMEOUT_ENAME = "CellTimeout"
AUTO = "auto"  # grade_notebook(teacher=AUTO): look for the teacher version next to the notebook or in notebooks/


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


def _is_check_cell(cell) -> bool:
    meta = nbgrader_metadata(cell)
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def _is_solution_cell(cell) -> bool:
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
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if "❌" in ln]
    return lines[-1].replace("❌", "", 1).strip() if lines else ""


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    # Grading mode, read in the kernel by ssd_lib.course.modes.grading_mode(): widgets are not
    # displayed and no training runs. Fast mode keeps whatever still runs small.
    env.update(mode_environment(fast=True, grading=True), MPLBACKEND="Agg")
    # ssd_lib is importable in the kernel even when the package is not installed.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


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
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"notebook {path} does not exist")
    teacher_path = find_teacher_notebook(path) if isinstance(teacher, str) and teacher == AUTO else teacher
    teacher_path = Path(teacher_path) if teacher_path is not None else None
    if teacher_path is not None and not teacher_path.is_file():
        raise FileNotFoundError(f"teacher notebook {teacher_path} does not exist")
    nb = read_notebook(path)
    if teacher_path is not None:
        exercises = teacher_exercises(read_notebook(teacher_path), teacher_path.name)
        report_notes: list[str] = []
    else:
        exercises, report_notes = _exercises_found_in(nb, path.name)
    known = {e.grade_id for e in exercises}

    # Identity: where each exercise's check cell is now. The last copy is graded; the others lose
    # their nbgrader metadata and run as ordinary cells (nbgrader's DeduplicateIds does the same).
    graded: dict[str, int] = {}
    notes: dict[str, list[str]] = {e.grade_id: [] for e in exercises}
    for e in exercises:
        found = [i for i, c in enumerate(nb.cells) if nbgrader_metadata(c).get("grade_id") == e.grade_id]
        if not found:
            continue
        graded[e.grade_id] = found[-1]
        for i in found[:-1]:
            nb.cells[i].metadata.pop("nbgrader", None)
        if len(found) > 1:
            notes[e.grade_id].append(f"{len(found)} cells carry this grade_id (cells {found}): graded the last one, "
                                     f"as nbgrader does; the others ran as ordinary cells")
    for i, cell in enumerate(nb.cells):
        gid = nbgrader_metadata(cell).get("grade_id")
        if _is_check_cell(cell) and gid and gid not in known:
            report_notes.append(f"cell {i} has grade_id {gid!r}, which is not an exercise of the teacher notebook: "
                                f"it ran but was not graded")
    for e in exercises:
        index = graded.get(e.grade_id)
        if index is None:
            continue
        if teacher_path is not None and restore_checks:
            notes[e.grade_id] += _restore_check(nb, index, e)
        elif nb.cells[index].cell_type != "code":
            notes[e.grade_id].append(f"the check cell is a {nb.cells[index].cell_type} cell, not code: it did not run")

    replies: dict[int, dict] = {}

    def on_cell_executed(cell, cell_index, execute_reply, **_):
        replies[cell_index] = (execute_reply or {}).get("content", {})

    client = NotebookClient(
        nb, timeout=timeout_per_cell, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
        error_on_timeout={"ename": _TIMEOUT_ENAME, "evalue": f"timed out after {timeout_per_cell:g} s", "traceback": []},
        record_timing=False, resources={"metadata": {"path": str(path.resolve().parent)}},
        extra_arguments=["--log-level=ERROR"],  # no "running over TCP without encryption" warnings
        on_cell_executed=on_cell_executed,
    )
    start = time.perf_counter()
    stopped_at, kernel_problem = None, None
    with client.setup_kernel(env=_kernel_env()):
        count = 0
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            count += 1
            try:
                client.execute_cell(cell, index, execution_count=count)  # timeout_per_cell applies to every cell
            except DeadKernelError:
                stopped_at, kernel_problem = index, f"the kernel died in cell {index}; later cells were not run"
                break
            if replies.get(index, {}).get("ename") == _TIMEOUT_ENAME and not _kernel_responds(client):
                stopped_at = index
                kernel_problem = f"the kernel did not recover after cell {index} timed out; later cells were not run"
                break
    seconds = time.perf_counter() - start

    def ran(i: int) -> bool:
        return nb.cells[i].cell_type == "code" and (stopped_at is None or i <= stopped_at)

    def solution_cells(e: Exercise) -> list[int]:
        return [i for i, c in enumerate(nb.cells) if e.solution_id and nbgrader_metadata(c).get("grade_id") == e.solution_id]

    def solution_hint(e: Exercise, check_index: int) -> tuple[str | None, str]:
        """(the first error of the exercise's solution cell(s), a hint about where they are)."""
        if e.solution_id is None:
            return None, ""
        cells = solution_cells(e)
        if not cells:
            return None, f"; the solution cell {e.solution_id!r} is missing from the notebook (deleted?)"
        for i in cells:
            failure = _cell_failure(nb.cells[i], replies.get(i), timeout_per_cell) if ran(i) and i != stopped_at else None
            if failure:
                return f"{failure} (in the solution cell {e.solution_id!r})", ""
        if all(i > check_index for i in cells):
            return None, (f"; the check (cell {check_index}) runs before its solution cell {e.solution_id!r} "
                          f"(cell {cells[0]}): was a cell moved?")
        return None, ""

    results: list[ExerciseResult] = []
    for e in exercises:
        index = graded.get(e.grade_id)
        if index is None:
            hint = ("" if e.solution_id is None or solution_cells(e)
                    else f"; its solution cell {e.solution_id!r} is missing too")
            results.append(ExerciseResult(e.grade_id, "failed", 0.0, e.points,
                                          f"missing: no check cell with grade_id {e.grade_id!r} in the notebook "
                                          f"(deleted?){hint}", -1, notes[e.grade_id]))
            continue
        cell = nb.cells[index]
        if stopped_at is not None and index > stopped_at:
            results.append(ExerciseResult(e.grade_id, "not run", 0.0, e.points, f"not run: {kernel_problem}", index,
                                          notes[e.grade_id]))
            continue
        if cell.cell_type != "code":
            failure = f"the check cell is a {cell.cell_type} cell and did not run"
        elif stopped_at == index:
            failure = kernel_problem
        else:
            failure = _cell_failure(cell, replies.get(index), timeout_per_cell)
        if failure is None:
            results.append(ExerciseResult(e.grade_id, "passed", e.points, e.points, "", index, notes[e.grade_id]))
            continue
        timed_out = replies.get(index, {}).get("ename") == _TIMEOUT_ENAME
        if timed_out or stopped_at == index or cell.cell_type != "code":
            message = failure
        else:
            solution_failure, hint = solution_hint(e, index)
            message = (_checker_line(cell) or solution_failure or failure) + hint
        results.append(ExerciseResult(e.grade_id, "failed", 0.0, e.points, message, index, notes[e.grade_id]))
    return GradeReport(path, results, seconds, float(timeout_per_cell), kernel_problem, nb, teacher_path, report_notes)


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

# ---------------------------------------------------------------- command line
