"""Student versions of the teacher notebooks, in nbgrader's format.

Exercises are written the nbgrader way: a solution cell with ``### BEGIN SOLUTION`` / ``### END
SOLUTION`` and, right after it, a check cell (nbgrader metadata ``grade: true``, a ``grade_id`` and
``points``), whose ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` region students never see.
:func:`generate_student_versions` writes ``notebooks/student/`` as ``nbgrader generate_assignment``
would: each solution region becomes nbgrader's own stub (``# YOUR CODE HERE`` /
``raise NotImplementedError()``), hidden tests are removed and outputs cleared.

Model answers to the questions that close a lesson are solutions too. Each one is a markdown cell of
its own, right after its question, holding only ``<details class="answer"><summary>Model
answer</summary>`` ... ``</details>`` (collapsed in the teacher notebook) and nbgrader's metadata
of a written answer worth 0 points (``solution`` and ``grade`` true: nbgrader requires both for a
markdown solution), so that this module and ``nbgrader generate_assignment`` alike replace the
whole cell by "YOUR ANSWER HERE": :func:`answer_cell` makes one. A model answer anywhere else is an
error, since nbgrader would release it; a ``<details>`` hint meant for students (any other summary)
is kept.

The notebook helpers (:func:`read_notebook`, :func:`cell_source`, :func:`nbgrader_metadata`,
:func:`replace_regions`, :func:`first_line`, :func:`strip_terminal_colours`) serve the grader too.

Usage::

    python -m ssd_lib.course student [--check]     # write / verify notebooks/student/
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

from ssd_lib.files import write_text

from .assets import NOTEBOOK_DIR, NOTEBOOK_GLOB, short_path

__all__ = [
    "SOLUTION_BEGIN", "SOLUTION_END", "HIDDEN_BEGIN", "HIDDEN_END", "CODE_STUB", "TEXT_STUB",
    "ANSWER_BEGIN", "ANSWER_END", "answer_cell", "is_answer_cell",
    "NotebookFormatError", "make_student_notebook", "generate_student_versions", "check_student_versions",
    "read_notebook", "cell_source", "nbgrader_metadata", "replace_regions", "first_line", "strip_terminal_colours",
    "main",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"  # nbgrader's default code stub
TEXT_STUB = "YOUR ANSWER HERE"  # nbgrader's default text stub
ANSWER_BEGIN, ANSWER_END = '<details class="answer"><summary>Model answer</summary>', "</details>"
# What gives a model answer away: the answer class, or a summary naming answers or solutions. A hint's
# <details> ("Hint", "Show a tip") matches neither and reaches the students.
_ANSWER_MARK = re.compile(r"<details\b[^>]*\bclass\s*=\s*[\"']?[^>]*\banswer\b"
                          r"|<summary>\s*(?:model\s+)?(?:answers?|solutions?)\s*</summary>", re.IGNORECASE)
# Output-like metadata dropped from the student version (nbconvert's ClearOutput drops the first two).
_CELL_METADATA_TO_DROP = ("collapsed", "scrolled", "execution")
_NOTEBOOK_METADATA_TO_DROP = ("celltoolbar", "widgets")  # nbgrader drops celltoolbar; widgets = saved widget state


class NotebookFormatError(ValueError):
    """A file that is not a readable notebook, or a teacher notebook whose exercise markers or
    metadata cannot be turned into a student version (or graded)."""


# ---------------------------------------------------------------- notebooks and cells (the grader uses them too)

def read_notebook(path: str | Path):
    """The notebook at ``path`` as a NotebookNode, read without nbformat's validation (which would
    invent random ids for cells lacking one): from format 4.5 on, a cell without an id gets one
    derived from the file name and its index, so what is written from it is deterministic. A file
    that is not a format-4 Jupyter notebook is a NotebookFormatError naming it."""
    import nbformat

    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotebookFormatError(f"cannot read notebook {path}: {first_line(str(exc))}") from None
    if not isinstance(data, dict) or data.get("nbformat") != 4 or not isinstance(data.get("cells"), list):
        raise NotebookFormatError(f"{path} is not a Jupyter notebook in format 4")
    nb = nbformat.v4.reads(text)  # joins line lists into strings; no validation, no invented ids
    if nb.get("nbformat_minor", 0) >= 5:
        for index, cell in enumerate(nb.cells):
            if not cell.get("id"):  # deterministic, so the student file does not change at every run
                cell["id"] = hashlib.sha1(f"{Path(path).name}:{index}".encode()).hexdigest()[:8]
    return nb


def cell_source(cell) -> str:
    """The cell's source as one string (a notebook file may store it as a list of lines)."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def nbgrader_metadata(cell) -> dict:
    """The cell's nbgrader metadata (``grade``, ``solution``, ``grade_id``, ``points``, ...); {} if it has none."""
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def replace_regions(source: str, begin: str, end: str, stub: str | None, where: str) -> tuple[str, bool]:
    """Replace each ``begin``..``end`` region (marker lines included) by ``stub`` indented like the
    begin line, or drop it when ``stub`` is None. Returns (new source, whether a region was found).
    A marker that is misspelt, nested or unterminated is a NotebookFormatError starting with
    ``where`` (e.g. "01_boxes.ipynb, cell 7"): it would leak the solution."""
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


def first_line(text: str, limit: int = 300) -> str:
    """The first non-blank line of ``text`` without terminal colours, cut at ``limit`` characters."""
    for line in strip_terminal_colours(text or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""


def strip_terminal_colours(text: str) -> str:
    """``text`` without ANSI escape sequences (the colours of tracebacks and checker lines)."""
    return _ANSI.sub("", text)


# ---------------------------------------------------------------- model answers

def answer_cell(answer: str, grade_id: str, cell_id: str | None = None):
    """The markdown cell of a model answer (markdown ``answer``) to an end-of-lesson question, to go
    right after the question's cell: ``answer`` inside ANSWER_BEGIN .. ANSWER_END, with the nbgrader
    metadata of a written answer worth 0 points (``grade_id`` e.g. "answer_q1", unique in the notebook)."""
    import nbformat

    meta = {"nbgrader": {"grade": True, "grade_id": grade_id, "locked": False, "points": 0, "schema_version": 3,
                         "solution": True, "task": False}}
    cell = nbformat.v4.new_markdown_cell(f"{ANSWER_BEGIN}\n\n{answer.strip()}\n\n{ANSWER_END}", metadata=meta)
    if cell_id is not None:
        cell["id"] = cell_id
    return cell


def is_answer_cell(cell) -> bool:
    """Whether ``cell`` is a model-answer cell as :func:`answer_cell` makes them."""
    meta, source = nbgrader_metadata(cell), cell_source(cell).strip()
    return (cell.get("cell_type") == "markdown" and bool(meta.get("solution")) and bool(meta.get("grade"))
            and source.startswith(ANSWER_BEGIN) and source.endswith(ANSWER_END))


# ---------------------------------------------------------------- student versions

def _describe_cell(name: str, index: int, cell) -> str:
    """Where a cell is, for error messages: "01_boxes.ipynb, cell 7 (grade_id 'ex_iou')"."""
    grade_id = nbgrader_metadata(cell).get("grade_id")
    return f"{name}, cell {index}" + (f" (grade_id {grade_id!r})" if grade_id else "")


def make_student_notebook(nb, name: str = "notebook"):
    """The student version of a teacher notebook (a new NotebookNode; ``nb`` is not changed).

    As ``nbgrader generate_assignment`` does: each ``### BEGIN SOLUTION`` .. ``### END SOLUTION``
    region becomes ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` (indented like the BEGIN
    line; "YOUR ANSWER HERE" in markdown), a solution cell without markers is replaced whole,
    ``### BEGIN HIDDEN TESTS`` .. ``### END HIDDEN TESTS`` regions are removed, outputs and
    execution counts are cleared, and the nbgrader metadata is kept. ``name`` appears in errors.
    A model answer (an answer cell is a solution cell, replaced whole) that would survive this is a
    NotebookFormatError: nbgrader would release it.
    """
    import nbformat

    student = nbformat.from_dict(copy.deepcopy(dict(nb)))
    for key in _NOTEBOOK_METADATA_TO_DROP:
        student.metadata.pop(key, None)
    for index, cell in enumerate(student.cells):
        where = _describe_cell(name, index, cell)
        meta = nbgrader_metadata(cell)
        source = cell_source(cell)
        if cell.cell_type in ("code", "markdown"):
            stub = CODE_STUB if cell.cell_type == "code" else TEXT_STUB
            source, replaced = replace_regions(source, SOLUTION_BEGIN, SOLUTION_END, stub, where)
            if replaced and not meta.get("solution"):
                raise NotebookFormatError(f"{where}: has a solution region but its nbgrader metadata lacks \"solution\": true")
            if meta.get("solution") and not replaced:
                source = stub  # nbgrader replaces an unmarked solution cell whole
            source, removed = replace_regions(source, HIDDEN_BEGIN, HIDDEN_END, None, where)
            if removed and not meta.get("grade"):
                raise NotebookFormatError(f"{where}: has hidden tests but its nbgrader metadata lacks \"grade\": true")
            if cell.cell_type == "markdown" and _ANSWER_MARK.search(source):
                raise NotebookFormatError(f"{where}: a model answer outside an answer cell would reach the students; "
                                          f"put it alone in the markdown cell after its question, made by "
                                          f"ssd_lib.course.student.answer_cell (nbgrader solution and grade true)")
            cell.source = source
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in _CELL_METADATA_TO_DROP:
            cell.metadata.pop(key, None)
    return student


def _notebook_text(nb) -> str:
    """The file text of ``nb`` as nbformat writes it, ending with a newline."""
    import nbformat

    text = nbformat.writes(nb, version=nbformat.NO_CONVERT)  # sorted keys, indent 1: deterministic
    return text if text.endswith("\n") else text + "\n"


def _resolve_dirs(src_dir, dst_dir) -> tuple[Path, Path]:
    """(teacher folder, student folder): ``<repo>/notebooks`` and its ``student/`` unless given."""
    src = Path(src_dir) if src_dir is not None else NOTEBOOK_DIR
    dst = Path(dst_dir) if dst_dir is not None else src / "student"
    return src, dst


def _expected_student_files(src: Path, dst: Path) -> dict[Path, str]:
    """{student file: the text it should have} for every course notebook in ``src``."""
    return {dst / path.name: _notebook_text(make_student_notebook(read_notebook(path), path.name))
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


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    """``python -m ssd_lib.course student [--check] [--src DIR] [--dst DIR]``."""
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
                print(f"stale: {short_path(p)}")
            if stale:
                print("run `python -m ssd_lib.course student` to update the student notebooks")
                return 1
            print("student notebooks are up to date")
            return 0
        written = generate_student_versions(args.src, args.dst)
    except NotebookFormatError as exc:
        print(f"error: {first_line(str(exc))}", file=sys.stderr)
        return 2
    print(f"{len(written)} student notebook(s) in {short_path(_resolve_dirs(args.src, args.dst)[1])}")
    return 0
