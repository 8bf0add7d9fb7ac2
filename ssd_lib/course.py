"""Course tooling: the fast/grading modes, the trained model of notebooks 8-9, the student versions
of the notebooks, and a small autograder.

* Modes are read here and nowhere else: ``SSD_COURSE_FAST=1`` shrinks data and training so every
  notebook runs in about a minute; ``SSD_COURSE_GRADING=1`` (set by the grader) hides widgets and
  skips training.
* Exercises use nbgrader's format: a solution cell with ``### BEGIN SOLUTION`` / ``### END
  SOLUTION`` and, right after it, a check cell (nbgrader metadata ``grade: true``, a ``grade_id``
  and ``points``). :func:`generate_student_versions` replaces each solution region by nbgrader's
  own stub, ``# YOUR CODE HERE`` / ``raise NotImplementedError()``.
* :func:`grade_notebook` runs a filled-in notebook in a fresh kernel and reports, per exercise of
  the teacher notebook (identified by its check cell's ``grade_id``, never by position), passed or
  failed with the first line of the reason. The teacher's check cells (hidden tests included) are
  put back before the run, as nbgrader's autograder does, so moved, copied, split, added or edited
  cells do not change what is graded; a deleted check cell fails by name.

Usage::

    from ssd_lib.course import FAST, GRADING, load_course_model
    model, class_names = load_course_model()      # eval mode, on the CPU
    python -m ssd_lib.course student [--check]     # write / verify notebooks/student/
    python -m ssd_lib grade submissions/alice/01_boxes.ipynb [--teacher notebooks/01_boxes.ipynb]
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FAST", "GRADING", "fast_mode", "grading_mode",
    "REPO_ROOT", "ASSET_PATH", "CACHE_DIR", "load_course_model",
    "NotebookFormatError", "make_student_notebook", "generate_student_versions", "check_student_versions",
    "AUTO", "Exercise", "ExerciseResult", "GradeReport", "teacher_exercises", "find_teacher_notebook",
    "grade_notebook", "cli_grade", "main",
]

from .files import atomic_write, write_json, write_text
from .model_card import ASSET_PATH  # the shipped model (its card is beside it)

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / "results" / "course_model"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"

# ---------------------------------------------------------------- modes

_TRUE = {"1", "true", "yes"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def fast_mode() -> bool:
    """True when ``SSD_COURSE_FAST`` is "1", "true" or "yes": small data, a few training steps."""
    return _env_flag("SSD_COURSE_FAST")


def grading_mode() -> bool:
    """True when ``SSD_COURSE_GRADING`` is "1", "true" or "yes": no widgets, no training."""
    return _env_flag("SSD_COURSE_GRADING")


FAST: bool = fast_mode()
GRADING: bool = grading_mode()

# ---------------------------------------------------------------- the course model

# Used only when the shipped checkpoint is missing (keyed by fast mode). On two busy CPU cores the
# small SSD trains at about 6 images/s (the augmentation dominates): fast mode (384 images) takes
# about a minute, the full run (1920 images) about five. Enough to see boxes, not a good mAP.
FALLBACK_TRAINING: dict[bool, dict[str, Any]] = {
    True: dict(epochs=1, max_steps_per_epoch=24, batch_size=16, warmup_steps=5),
    False: dict(epochs=2, max_steps_per_epoch=60, batch_size=16, warmup_steps=20),
}


def load_course_model(path: str | Path | None = None, device: str = "cpu"):
    """The trained small SSD of notebooks 8 and 9: ``(model, class_names)``, model in eval mode.

    ``path=None`` loads the shipped ``assets/ssd_small_shapes.pt``; if that file is missing, a quick
    model is trained on ``ShapesDataset`` (fast mode: about a minute; otherwise a few minutes) and
    cached under ``results/course_model/`` so the next call loads it. An explicit ``path`` must
    exist. Checkpoints are read with ``weights_only=True``; a truncated or foreign file raises
    ValueError with a one-line reason.
    """
    from .train import model_from_checkpoint

    if path is None and ASSET_PATH.is_file():
        path = ASSET_PATH
    if path is None:
        try:
            model, ckpt = model_from_checkpoint(_cached_or_trained_model(), map_location=device)
        except (ValueError, RuntimeError):  # a cache from an older version of the model: train it again
            for stale in (CACHE_DIR / "last.pt", CACHE_DIR / "fast" / "last.pt"):
                stale.unlink(missing_ok=True)
            model, ckpt = model_from_checkpoint(_cached_or_trained_model(), map_location=device)
    else:
        model, ckpt = model_from_checkpoint(path, map_location=device)
    model = model.to(device).eval()
    class_names = list(ckpt.get("extra", {}).get("class_names") or [])
    if len(class_names) != model.num_classes - 1:
        from .data import ShapesDataset

        default = list(ShapesDataset.classes)
        class_names = default if len(default) == model.num_classes - 1 else [f"class {i}" for i in range(1, model.num_classes)]
    return model, class_names


def _cached_or_trained_model() -> Path:
    """The cached fallback model, trained now if absent. A full-mode cache serves both modes; a
    fast-mode one (``fast/last.pt``) only fast mode."""
    fast = fast_mode()
    full_cache = CACHE_DIR / "last.pt"
    fast_cache = CACHE_DIR / "fast" / "last.pt"
    if full_cache.is_file():
        return full_cache
    if fast and fast_cache.is_file():
        return fast_cache
    if grading_mode():
        raise FileNotFoundError(f"{_short(ASSET_PATH)} is missing and grading never trains a model: restore it "
                                "(git checkout -- assets/) or run `python -m ssd_lib main` and `python -m ssd_lib.model_card results/main`")
    out_dir = fast_cache.parent if fast else full_cache.parent
    _train_fallback_model(out_dir, fast)
    return out_dir / "last.pt"


def _train_fallback_model(out_dir: Path, fast: bool) -> None:
    import torch

    from .data import ShapesDataset
    from .model import ModelConfig, build_model
    from .train import TrainConfig, train

    settings = FALLBACK_TRAINING[fast]
    steps = settings["epochs"] * settings["max_steps_per_epoch"]
    print(f"ssd_lib.course: {_short(ASSET_PATH)} not found; training a quick model "
          f"({steps} steps{', fast mode' if fast else ''}) and caching it as {_short(out_dir / 'last.pt')}", flush=True)
    dataset = ShapesDataset("train")
    torch.manual_seed(0)
    model = build_model(ModelConfig.small(len(dataset.classes) + 1))
    train(model, dataset, None, TrainConfig.small_cpu(**settings), out_dir=None, progress=False)
    # Model only (no optimizer or RNG state): the cache is for inference, and every entry is a
    # tensor or a plain type, so train.load_checkpoint reads it with weights_only=True.
    ckpt = {"format": "ssd_lib.checkpoint/1", "model_config": model.config.to_dict(), "model": model.state_dict(),
            "extra": {"class_names": list(dataset.classes), "trained_by": "ssd_lib.course fallback", "fast": fast}}
    atomic_write(out_dir / "last.pt", lambda tmp: torch.save(ckpt, tmp))


def _short(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)

# ---------------------------------------------------------------- student versions

SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"  # nbgrader's default code stub
TEXT_STUB = "YOUR ANSWER HERE"  # nbgrader's default text stub
# Output-like metadata dropped from the student version (nbconvert's ClearOutput drops the first two).
_CELL_METADATA_TO_DROP = ("collapsed", "scrolled", "execution")
_NOTEBOOK_METADATA_TO_DROP = ("celltoolbar", "widgets")  # nbgrader drops celltoolbar; widgets = saved widget state


class NotebookFormatError(ValueError):
    """A teacher notebook whose exercise markers or metadata cannot be turned into a student version."""


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _describe_cell(name: str, index: int, cell) -> str:
    grade_id = _nbgrader(cell).get("grade_id")
    return f"{name}, cell {index}" + (f" (grade_id {grade_id!r})" if grade_id else "")


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _replace_regions(source: str, begin: str, end: str, stub: str | None, where: str) -> tuple[str, bool]:
    """Replace each ``begin``..``end`` region (marker lines included) by ``stub`` indented like the
    begin line, or drop it when ``stub`` is None. Returns (new source, whether a region was found).
    A marker that is misspelt, nested or unterminated is an error: it would leak the solution."""
    begin_word, end_word = begin.lstrip("# "), end.lstrip("# ")
    out: list[str] = []
    inside, found = False, False
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if begin_word in line:
            if stripped != begin:
                raise NotebookFormatError(f"{where}, line {number}: write the marker exactly as {begin!r} on its own line, not {stripped!r}")
            if inside:
                raise NotebookFormatError(f"{where}, line {number}: {begin!r} inside another region; close the first with {end!r}")
            inside, found = True, True
            if stub is not None:
                indent = line[: line.index(begin)]
                out.extend(indent + stub_line for stub_line in stub.split("\n"))
        elif end_word in line:
            if stripped != end:
                raise NotebookFormatError(f"{where}, line {number}: write the marker exactly as {end!r} on its own line, not {stripped!r}")
            if not inside:
                raise NotebookFormatError(f"{where}, line {number}: {end!r} without a {begin!r} before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise NotebookFormatError(f"{where}: {begin!r} is never closed; add a {end!r} line")
    return "\n".join(out), found


def make_student_notebook(nb, name: str = "notebook"):
    """The student version of a teacher notebook (a new NotebookNode; ``nb`` is not changed).

    As ``nbgrader generate_assignment`` does: each ``### BEGIN SOLUTION`` .. ``### END SOLUTION``
    region becomes ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` (indented like the BEGIN
    line; "YOUR ANSWER HERE" in markdown), a solution cell without markers is replaced whole,
    ``### BEGIN HIDDEN TESTS`` .. ``### END HIDDEN TESTS`` regions are removed, outputs and
    execution counts are cleared, and the nbgrader metadata is kept. ``name`` appears in errors.
    """
    import nbformat

    student = nbformat.from_dict(copy.deepcopy(dict(nb)))
    for key in _NOTEBOOK_METADATA_TO_DROP:
        student.metadata.pop(key, None)
    for index, cell in enumerate(student.cells):
        where = _describe_cell(name, index, cell)
        meta = _nbgrader(cell)
        source = _source(cell)
        if cell.cell_type in ("code", "markdown"):
            stub = CODE_STUB if cell.cell_type == "code" else TEXT_STUB
            source, replaced = _replace_regions(source, SOLUTION_BEGIN, SOLUTION_END, stub, where)
            if replaced and not meta.get("solution"):
                raise NotebookFormatError(f"{where}: has a solution region but its nbgrader metadata lacks \"solution\": true")
            if meta.get("solution") and not replaced:
                source = stub  # nbgrader replaces an unmarked solution cell whole
            source, removed = _replace_regions(source, HIDDEN_BEGIN, HIDDEN_END, None, where)
            if removed and not meta.get("grade"):
                raise NotebookFormatError(f"{where}: has hidden tests but its nbgrader metadata lacks \"grade\": true")
            cell.source = source
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in _CELL_METADATA_TO_DROP:
            cell.metadata.pop(key, None)
    return student


def _read_notebook(path: Path):
    """Read without nbformat's validation, which would invent random ids for cells lacking one."""
    import nbformat

    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotebookFormatError(f"cannot read notebook {path}: {_first_line(str(exc))}") from None
    if not isinstance(data, dict) or data.get("nbformat") != 4 or not isinstance(data.get("cells"), list):
        raise NotebookFormatError(f"{path} is not a Jupyter notebook in format 4")
    nb = nbformat.v4.reads(text)  # joins line lists into strings; no validation, no invented ids
    if nb.get("nbformat_minor", 0) >= 5:
        for index, cell in enumerate(nb.cells):
            if not cell.get("id"):  # deterministic, so the student file does not change at every run
                cell["id"] = hashlib.sha1(f"{Path(path).name}:{index}".encode()).hexdigest()[:8]
    return nb


def _notebook_text(nb) -> str:
    import nbformat

    text = nbformat.writes(nb, version=nbformat.NO_CONVERT)  # sorted keys, indent 1: deterministic
    return text if text.endswith("\n") else text + "\n"


def _resolve_dirs(src_dir, dst_dir) -> tuple[Path, Path]:
    src = Path(src_dir) if src_dir is not None else REPO_ROOT / "notebooks"
    dst = Path(dst_dir) if dst_dir is not None else src / "student"
    return src, dst


def _expected_student_files(src: Path, dst: Path) -> dict[Path, str]:
    return {dst / path.name: _notebook_text(make_student_notebook(_read_notebook(path), path.name))
            for path in sorted(src.glob(NOTEBOOK_GLOB))}


def generate_student_versions(src_dir: str | Path | None = None, dst_dir: str | Path | None = None) -> list[Path]:
    """Write the student version of every ``src_dir/NN_*.ipynb`` to ``dst_dir`` (default
    ``<repo>/notebooks`` -> ``<repo>/notebooks/student``) and return the paths written. Files are
    rewritten only when their content changes; student notebooks whose teacher version no longer
    exists are deleted. Raises NotebookFormatError (naming notebook and cell) before writing anything."""
    src, dst = _resolve_dirs(src_dir, dst_dir)
    expected = _expected_student_files(src, dst)  # all errors surface before any file is touched
    for path, text in expected.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_text(path, text)
    for orphan in sorted(dst.glob(NOTEBOOK_GLOB)) if dst.is_dir() else []:
        if orphan not in expected:
            orphan.unlink()
    return list(expected)


def check_student_versions(src_dir: str | Path | None = None, dst_dir: str | Path | None = None) -> list[Path]:
    """The student notebooks that are missing, out of date, or left over from a deleted teacher
    notebook (empty list: ``notebooks/student`` is up to date)."""
    src, dst = _resolve_dirs(src_dir, dst_dir)
    expected = _expected_student_files(src, dst)
    stale = [p for p, text in expected.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    if dst.is_dir():
        stale += [p for p in sorted(dst.glob(NOTEBOOK_GLOB)) if p not in expected]
    return stale

# ---------------------------------------------------------------- grading

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
        return _replace_regions(self.source, HIDDEN_BEGIN, HIDDEN_END, None, self.grade_id)[0]

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
        against = (f"against {_short(self.teacher)}" if self.teacher
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
    meta = _nbgrader(cell)
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def _is_solution_cell(cell) -> bool:
    return bool(_nbgrader(cell).get("solution"))


def _exercise_at(cells, index: int) -> Exercise:
    """The exercise of the check cell ``cells[index]``; its solution is the nearest solution cell
    above it with no other check cell in between."""
    meta, solution_id = _nbgrader(cells[index]), None
    for cell in reversed(cells[:index]):
        if _is_check_cell(cell):
            break
        if _is_solution_cell(cell):
            solution_id = _nbgrader(cell).get("grade_id")
            break
    return Exercise(meta["grade_id"], float(meta.get("points", 0) or 0), _source(cells[index]), solution_id)


def teacher_exercises(nb, name: str = "notebook") -> list[Exercise]:
    """The auto-graded exercises of a teacher notebook, in notebook order: one per check cell (code,
    nbgrader ``grade: true``, not a solution). A check cell without a ``grade_id``, or two cells
    sharing a ``grade_id``, is a NotebookFormatError: the teacher's notebook must identify each one."""
    checks = [i for i, c in enumerate(nb.cells) if _is_check_cell(c)]
    unnamed = [i for i in checks if not _nbgrader(nb.cells[i]).get("grade_id")]
    if unnamed:
        raise NotebookFormatError(f"{name}: check cell(s) {unnamed} have no nbgrader grade_id; give each a unique one")
    ids = [_nbgrader(c).get("grade_id") for c in nb.cells if _nbgrader(c).get("grade_id")]
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
        gid = _nbgrader(cell).get("grade_id")
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
    from fnmatch import fnmatch

    path = Path(path)
    if not fnmatch(path.name, NOTEBOOK_GLOB):
        return None
    candidates = ([path.resolve().parent.parent / path.name] if path.resolve().parent.name == "student" else [])
    candidates.append(REPO_ROOT / "notebooks" / path.name)
    return next((c for c in candidates if c.is_file()), None)


def _first_line(text: str, limit: int = 300) -> str:
    for line in _ANSI.sub("", text or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""


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
    detail = _first_line(evalue)
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
    # The grading flag, read in the kernel by grading_mode() (ssd_lib.course.GRADING): widgets are not
    # displayed and no training runs. Fast mode keeps whatever still runs small.
    env.update(SSD_COURSE_GRADING="1", SSD_COURSE_FAST="1", MPLBACKEND="Agg")
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
    nb = _read_notebook(path)
    if teacher_path is not None:
        exercises = teacher_exercises(_read_notebook(teacher_path), teacher_path.name)
        report_notes: list[str] = []
    else:
        exercises, report_notes = _exercises_found_in(nb, path.name)
    known = {e.grade_id for e in exercises}

    # Identity: where each exercise's check cell is now. The last copy is graded; the others lose
    # their nbgrader metadata and run as ordinary cells (nbgrader's DeduplicateIds does the same).
    graded: dict[str, int] = {}
    notes: dict[str, list[str]] = {e.grade_id: [] for e in exercises}
    for e in exercises:
        found = [i for i, c in enumerate(nb.cells) if _nbgrader(c).get("grade_id") == e.grade_id]
        if not found:
            continue
        graded[e.grade_id] = found[-1]
        for i in found[:-1]:
            nb.cells[i].metadata.pop("nbgrader", None)
        if len(found) > 1:
            notes[e.grade_id].append(f"{len(found)} cells carry this grade_id (cells {found}): graded the last one, "
                                     f"as nbgrader does; the others ran as ordinary cells")
    for i, cell in enumerate(nb.cells):
        gid = _nbgrader(cell).get("grade_id")
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
        return [i for i, c in enumerate(nb.cells) if e.solution_id and _nbgrader(c).get("grade_id") == e.solution_id]

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


def cli_grade(argv: list[str] | None = None) -> int:
    """``python -m ssd_lib grade NOTEBOOK [--teacher PATH | --no-teacher] [--keep-checks] [--timeout S]
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
        print(f"error: {_first_line(str(exc))}", file=sys.stderr)
        return 2
    print(report)
    if args.json:
        write_json(Path(args.json), report.to_dict())
    return 0

# ---------------------------------------------------------------- command line


def _cli_student(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssd_lib.course student",
                                     description="Write notebooks/student/ from the teacher notebooks (solutions removed).")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a student notebook is stale")
    parser.add_argument("--src", help="teacher notebooks folder (default: <repo>/notebooks)")
    parser.add_argument("--dst", help="student notebooks folder (default: SRC/student)")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = check_student_versions(args.src, args.dst)
            for p in stale:
                print(f"stale: {_short(p)}")
            if stale:
                print("run `python -m ssd_lib.course student` to update the student notebooks")
                return 1
            print("student notebooks are up to date")
            return 0
        written = generate_student_versions(args.src, args.dst)
    except NotebookFormatError as exc:
        print(f"error: {_first_line(str(exc))}", file=sys.stderr)
        return 2
    print(f"{len(written)} student notebook(s) in {_short(_resolve_dirs(args.src, args.dst)[1])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ssd_lib.course student [--check]`` or ``python -m ssd_lib.course grade NOTEBOOK``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"student": _cli_student, "grade": cli_grade}
    if not argv or argv[0] not in commands:
        print("usage: python -m ssd_lib.course {student [--check] | grade NOTEBOOK [--teacher PATH] [--timeout S]}",
              file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
