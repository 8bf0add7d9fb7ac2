"""ssd_lib.course (modes, student, grade, assets): modes from the environment, student versions (nbgrader's replacement, no
leaks, deterministic), the grader (pass, fail with a message, timeout, dead kernel; exercises found
by identity whatever the student did to the cells: moved, copied, split, deleted, added, edited;
hidden tests restored; no widget or training while grading), and the course model loader's errors.
Most notebooks are built here with nbformat; the tests marked slow grade student-like copies of the
real notebooks/01_boxes.ipynb."""
from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ssd_lib.course import assets
from ssd_lib.course.__main__ import main as course_main
from ssd_lib.course.assets import load_course_model
from ssd_lib.course.grade import cli as cli_grade
from ssd_lib.course.grade import find_teacher_notebook, grade_notebook, teacher_exercises
from ssd_lib.course.modes import fast_mode, grading_mode
from ssd_lib.course.student import (
    CODE_STUB, HIDDEN_BEGIN, HIDDEN_END, SOLUTION_BEGIN, SOLUTION_END, NotebookFormatError, check_student_versions,
    generate_student_versions, make_student_notebook,
)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- notebooks built for the tests

def _solution(source: str, grade_id: str, markdown: bool = False):
    meta = {"nbgrader": {"grade": markdown, "grade_id": grade_id, "locked": False, "schema_version": 3,
                         "solution": True, "task": False}}
    if markdown:
        meta["nbgrader"]["points"] = 1
        return new_markdown_cell(source, metadata=meta)
    return new_code_cell(source, metadata=meta)


def _check(source: str, grade_id: str, points: float = 1):
    return new_code_cell(source, metadata={"nbgrader": {"grade": True, "grade_id": grade_id, "locked": True,
                                                        "points": points, "schema_version": 3, "solution": False,
                                                        "task": False}})


SETUP = '''\
import json
import os
from ssd_lib.course.modes import fast_mode, grading_mode
FAST, GRADING = fast_mode(), grading_mode()

def run_check(name, fn, args, expected):
    """Like ssd_lib.course.checks: print one line, never raise."""
    try:
        got = fn(*args)
    except NotImplementedError:
        print(f"❌ {name}: not implemented yet: replace the `raise NotImplementedError` with your code")
        return False
    if got != expected:
        print(f"❌ {name}: expected {expected!r}, got {got!r}")
        return False
    print(f"✅ {name} passed")
    return True'''

ADD_SOLUTION = '''\
def add(a, b):
    """Sum of a and b."""
    ### BEGIN SOLUTION
    total = a + b  # SOLUTION_TOKEN_add_7f3
    return total
    ### END SOLUTION'''

SCALE_SOLUTION = '''\
def scale(values, factor):
    out = []
    for v in values:
        ### BEGIN SOLUTION
        out.append(v * factor)  # SOLUTION_TOKEN_scale_2b9
        ### END SOLUTION
    return out'''

ADD_CHECK = '''\
assert GRADING and FAST, "the grader must set SSD_COURSE_GRADING and SSD_COURSE_FAST"
assert open("data.txt").read() == "42", "the kernel must run in the notebook's folder"
assert run_check("check_add", add, (2, 3), 5)
### BEGIN HIDDEN TESTS
assert add(-1, 1) == 0, "hidden test: add(-1, 1) should be 0"  # HIDDEN_TOKEN_91c
### END HIDDEN TESTS'''


def teacher_notebook():
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                "celltoolbar": "Create Assignment"})
    nb.cells = [
        new_markdown_cell("# A tiny lesson"),
        new_code_cell(SETUP),
        _solution(ADD_SOLUTION, "ex_add"),
        _check(ADD_CHECK, "check_add", points=1),
        new_markdown_cell("Now a loop."),
        _solution(SCALE_SOLUTION, "ex_scale"),
        _check('assert scale([1, 2], 3) == [3, 6], "scale([1, 2], 3) should be [3, 6]"', "check_scale", points=2),
        _solution("Why?\n### BEGIN SOLUTION\nBecause MARKDOWN_TOKEN_5d1.\n### END SOLUTION", "q_why", markdown=True),
        new_code_cell("print(add(1, 1))"),
    ]
    # outputs as if the teacher had run it: the student version must not keep them
    nb.cells[8].outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    nb.cells[8].execution_count = 7
    return nb


def write(nb, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def teacher_dir(tmp_path):
    src = tmp_path / "notebooks"
    write(teacher_notebook(), src / "01_tiny.ipynb")
    (src / "data.txt").write_text("42")
    return src


# ---------------------------------------------------------------- modes

@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("YES", True), (" yes ", True),
                                             ("0", False), ("", False), ("no", False), ("false", False)])
def test_modes_read_their_environment_variables(monkeypatch, value, expected):
    monkeypatch.setenv("SSD_COURSE_FAST", value)
    monkeypatch.setenv("SSD_COURSE_GRADING", value)
    assert fast_mode() is expected and grading_mode() is expected
    monkeypatch.delenv("SSD_COURSE_FAST")
    monkeypatch.delenv("SSD_COURSE_GRADING")
    assert not fast_mode() and not grading_mode()


def test_modes_are_read_when_called_not_frozen_at_import():
    """No module-level constant: a variable set after the import is seen by the next call."""
    code = ("import os\nfrom ssd_lib.course import modes\nfirst = (modes.fast_mode(), modes.grading_mode())\n"
            "os.environ['SSD_COURSE_FAST'] = '1'\nos.environ['SSD_COURSE_GRADING'] = 'yes'\n"
            "print(*first, modes.fast_mode(), modes.grading_mode(), hasattr(modes, 'FAST'), hasattr(modes, 'GRADING'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSD_COURSE_")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["False", "False", "True", "True", "False", "False"]


# ---------------------------------------------------------------- student versions

def test_student_version_replaces_solutions_like_nbgrader():
    teacher = teacher_notebook()
    student = make_student_notebook(teacher, "01_tiny.ipynb")
    assert student.cells[2].source == ('def add(a, b):\n    """Sum of a and b."""\n'
                                       '    # YOUR CODE HERE\n    raise NotImplementedError()')
    assert student.cells[5].source == ("def scale(values, factor):\n    out = []\n    for v in values:\n"
                                       "        # YOUR CODE HERE\n        raise NotImplementedError()\n    return out")
    assert CODE_STUB == "# YOUR CODE HERE\nraise NotImplementedError()"
    assert student.cells[7].source == "Why?\nYOUR ANSWER HERE"
    assert "HIDDEN" not in student.cells[3].source
    assert student.cells[3].source.endswith('assert run_check("check_add", add, (2, 3), 5)')
    for t, s in zip(teacher.cells, student.cells):  # metadata (nbgrader's) and ids kept
        assert s.metadata == t.metadata and s.id == t.id
    assert student.cells[8].outputs == [] and student.cells[8].execution_count is None
    assert "celltoolbar" not in student.metadata and student.metadata.kernelspec.name == "python3"
    assert teacher.cells[2].source == ADD_SOLUTION  # the input is not modified


def test_unmarked_solution_cell_is_replaced_whole():
    nb = new_notebook(cells=[_solution("answer = 42  # SOLUTION_TOKEN_whole", "ex_whole")])
    assert make_student_notebook(nb).cells[0].source == CODE_STUB


def test_generated_files_leak_no_solution_and_are_deterministic(teacher_dir, tmp_path):
    written = generate_student_versions(teacher_dir, tmp_path / "a")
    assert [p.name for p in written] == ["01_tiny.ipynb"]
    text = written[0].read_text()
    for token in ("SOLUTION_TOKEN", "HIDDEN_TOKEN", "MARKDOWN_TOKEN", "BEGIN SOLUTION", "BEGIN HIDDEN"):
        assert token not in text
    nbformat.validate(nbformat.read(written[0], as_version=4))
    again = generate_student_versions(teacher_dir, tmp_path / "b")
    assert again[0].read_bytes() == written[0].read_bytes()
    mtime = written[0].stat().st_mtime_ns
    generate_student_versions(teacher_dir, tmp_path / "a")
    assert written[0].stat().st_mtime_ns == mtime  # unchanged content is not rewritten
    assert check_student_versions(teacher_dir, tmp_path / "a") == []


@pytest.mark.filterwarnings("ignore::nbformat.warnings.MissingIDFieldWarning")
def test_cells_without_ids_get_stable_ids(tmp_path):
    nb = teacher_notebook()
    for cell in nb.cells:
        del cell["id"]
    src = tmp_path / "src"
    src.mkdir()
    (src / "01_noids.ipynb").write_text(nbformat.writes(nb, version=nbformat.NO_CONVERT))
    first = generate_student_versions(src, tmp_path / "a")[0].read_bytes()
    assert generate_student_versions(src, tmp_path / "b")[0].read_bytes() == first


def test_check_reports_missing_stale_and_orphaned_files(teacher_dir, tmp_path):
    dst = tmp_path / "student"
    assert check_student_versions(teacher_dir, dst) == [dst / "01_tiny.ipynb"]
    generate_student_versions(teacher_dir, dst)
    nb = teacher_notebook()
    nb.cells[1].source += "\nprint('changed')"
    write(nb, teacher_dir / "01_tiny.ipynb")
    write(teacher_notebook(), dst / "02_gone.ipynb")
    assert check_student_versions(teacher_dir, dst) == [dst / "01_tiny.ipynb", dst / "02_gone.ipynb"]
    generate_student_versions(teacher_dir, dst)
    assert check_student_versions(teacher_dir, dst) == [] and not (dst / "02_gone.ipynb").exists()


@pytest.mark.parametrize("source, fragment", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    ### END SOLUTION", "without"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "inside another"),
    ("## BEGIN SOLUTION\nx = 1\n## END SOLUTION", "exactly"),
])
def test_malformed_markers_are_errors_naming_notebook_and_cell(teacher_dir, tmp_path, source, fragment):
    nb = teacher_notebook()
    nb.cells[5].source = source
    write(nb, teacher_dir / "02_broken.ipynb")
    with pytest.raises(NotebookFormatError, match=fragment) as info:
        generate_student_versions(teacher_dir, tmp_path / "student")
    assert "02_broken.ipynb, cell 5 (grade_id 'ex_scale')" in str(info.value)
    assert not (tmp_path / "student").exists()  # nothing written


def test_solution_region_outside_a_solution_cell_is_an_error():
    nb = new_notebook(cells=[new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")])
    with pytest.raises(NotebookFormatError, match="solution"):
        make_student_notebook(nb, "x.ipynb")


def test_student_cli_check_and_write(teacher_dir, tmp_path, capsys):
    args = ["--src", str(teacher_dir), "--dst", str(tmp_path / "student")]
    assert course_main(["student", "--check", *args]) == 1
    assert "stale" in capsys.readouterr().out
    assert course_main(["student", *args]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "ssd_lib.course", "student", "--check", *args], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- grading

def test_filled_notebook_passes_every_exercise(teacher_dir):
    report = grade_notebook(teacher_dir / "01_tiny.ipynb", timeout_per_cell=60)
    assert [(e.grade_id, e.status) for e in report.exercises] == [("check_add", "passed"), ("check_scale", "passed")]
    assert (report.points, report.max_points) == (3, 3) and report.all_passed
    assert "check_add" in str(report) and "Total: 3/3 points" in str(report)
    assert report.executed.cells[8].outputs  # the copy ran; the file did not change
    assert nbformat.read(teacher_dir / "01_tiny.ipynb", as_version=4).cells[2].get("outputs") == []


def test_student_notebook_fails_every_exercise_with_a_message(teacher_dir, tmp_path, capsys):
    generate_student_versions(teacher_dir, teacher_dir / "student")
    (teacher_dir / "student" / "data.txt").write_text("42")
    assert cli_grade([str(teacher_dir / "student" / "01_tiny.ipynb"), "--timeout", "60",
                      "--json", str(tmp_path / "report.json")]) == 0
    printed = capsys.readouterr().out
    assert "Total: 0/3 points" in printed and "Traceback" not in printed
    report = json.loads((tmp_path / "report.json").read_text())
    messages = {e["grade_id"]: (e["status"], e["message"]) for e in report["exercises"]}
    assert messages["check_add"] == ("failed", "check_add: not implemented yet: replace the `raise NotImplementedError` "
                                               "with your code")
    assert messages["check_scale"][0] == "failed"
    assert messages["check_scale"][1].startswith("NotImplementedError: not implemented yet")


def test_endless_loop_times_out_and_later_exercises_are_graded(tmp_path):
    nb = new_notebook(cells=[
        new_code_cell("x = 1"),
        _check("while True:\n    pass", "check_loop"),
        _check("assert x == 1", "check_after"),
    ])
    report = grade_notebook(write(nb, tmp_path / "loop.ipynb"), timeout_per_cell=5)
    assert report["check_loop"].status == "failed" and "timed out after 5 s" in report["check_loop"].message
    assert report["check_after"].passed  # same kernel, state kept
    assert report.kernel_problem is None


def test_dead_kernel_reports_remaining_exercises_as_not_run(tmp_path):
    nb = new_notebook(cells=[
        _check("assert True", "check_first"),
        _check("import os\nos._exit(1)", "check_dies"),
        _check("assert True", "check_never"),
    ])
    report = grade_notebook(write(nb, tmp_path / "dies.ipynb"), timeout_per_cell=30)
    assert [e.status for e in report.exercises] == ["passed", "failed", "not run"]
    assert "kernel died" in report["check_dies"].message and "kernel died" in report["check_never"].message


def test_without_a_teacher_copies_do_not_break_grading_and_missing_files_are_errors(tmp_path, capsys):
    nb = new_notebook(cells=[
        _check("assert False, 'the first copy'", "same"),
        _check("assert True", "same"),
        new_code_cell("print('no grade_id')", metadata={"nbgrader": {"grade": True, "solution": False, "points": 1}}),
    ])
    report = grade_notebook(write(nb, tmp_path / "dup.ipynb"), timeout_per_cell=30, teacher=None)
    assert [(e.grade_id, e.status, e.cell_index) for e in report.exercises] == [("same", "passed", 1)]
    assert "graded the last one" in report["same"].notes[0]
    assert any("no grade_id" in note for note in report.notes)
    assert report.teacher is None and "without a teacher version" in str(report)
    assert cli_grade([str(tmp_path / "missing.ipynb")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_grade([str(tmp_path / "dup.ipynb"), "--teacher", str(tmp_path / "nowhere.ipynb")]) == 2
    assert "teacher notebook" in capsys.readouterr().err


# ------------------------------------------------- grading by identity: what students do to cells

def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _index(nb, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if _meta(c).get("grade_id") == grade_id)


def _without_markers(source: str) -> str:
    return "\n".join(ln for ln in source.split("\n") if ln.strip() not in (SOLUTION_BEGIN, SOLUTION_END))


def filled_student_version(teacher):
    """What a student hands in with every exercise done: the student version (no hidden tests) with
    the teacher's solutions typed into the solution cells."""
    student = make_student_notebook(teacher)
    solutions = {_meta(c)["grade_id"]: _without_markers(c.source) for c in teacher.cells if _meta(c).get("solution")}
    for cell in student.cells:
        if _meta(cell).get("solution"):
            cell.source = solutions[_meta(cell)["grade_id"]]
    return student


def split_cell(nb, index: int, first_lines: int) -> None:
    """JupyterLab's Split Cell: two cells, both with the original metadata (grade_id included)."""
    cell = nb.cells[index]
    lines = cell.source.split("\n")
    first = copy.deepcopy(cell)
    first.id = f"{cell.id}-a"
    first.source, cell.source = "\n".join(lines[:first_lines]), "\n".join(lines[first_lines:])
    nb.cells.insert(index, first)


def copy_cell(nb, index: int, to: int) -> None:
    clone = copy.deepcopy(nb.cells[index])
    clone.id = f"{clone.id}-copy"
    nb.cells.insert(to, clone)


def move_cells(nb, indices: list[int], to: int) -> None:
    """Move ``nb.cells[indices]`` (in that order) so that they start at ``to`` of what remains."""
    moving = [nb.cells[i] for i in indices]
    rest = [c for i, c in enumerate(nb.cells) if i not in indices]
    nb.cells = rest[:to] + moving + rest[to:]


@pytest.fixture
def submission(tmp_path, teacher_dir):
    """(filled student notebook, writer): the writer saves it as a submission next to its data file."""
    folder = tmp_path / "alice"
    folder.mkdir()
    (folder / "data.txt").write_text("42")

    def save(nb):
        return write(nb, folder / "01_tiny.ipynb")

    return filled_student_version(nbformat.read(teacher_dir / "01_tiny.ipynb", as_version=4)), save


def test_filled_student_version_passes_and_the_hidden_tests_run(submission, teacher_dir):
    nb, save = submission
    report = grade_notebook(save(nb), timeout_per_cell=60, teacher=teacher_dir / "01_tiny.ipynb")
    assert report.all_passed and (report.points, report.max_points) == (3, 3), str(report)
    assert report.teacher == teacher_dir / "01_tiny.ipynb"
    assert "HIDDEN_TOKEN_91c" in report.executed.cells[report["check_add"].cell_index].source
    assert report["check_add"].notes == ["hidden tests restored from the teacher version"]
    assert report["check_scale"].notes == []  # unchanged, no hidden tests: nothing to say


def test_default_teacher_is_found_by_file_name(teacher_dir, tmp_path):
    generate_student_versions(teacher_dir, teacher_dir / "student")
    assert find_teacher_notebook(teacher_dir / "student" / "01_tiny.ipynb") == teacher_dir / "01_tiny.ipynb"
    assert find_teacher_notebook(tmp_path / "elsewhere" / "01_boxes.ipynb") == ROOT / "notebooks" / "01_boxes.ipynb"
    assert find_teacher_notebook(tmp_path / "01_tiny.ipynb") is None  # no teacher version of that name
    assert find_teacher_notebook(ROOT / "notebooks" / "my_copy.ipynb") is None  # not named like a course notebook


def test_hidden_test_and_restored_check_catch_what_the_public_check_misses(submission, teacher_dir):
    nb, save = submission
    nb.cells[_index(nb, "ex_add")].source = "def add(a, b):\n    return 5  # right for (2, 3) only"
    nb.cells[_index(nb, "ex_scale")].source = "def scale(values, factor):\n    return list(values)"
    check_scale = nb.cells[_index(nb, "check_scale")]
    check_scale.source = "pass  # the check was in my way"
    check_scale.metadata["nbgrader"]["points"] = 100
    path = save(nb)

    report = grade_notebook(path, timeout_per_cell=60, teacher=teacher_dir / "01_tiny.ipynb")
    assert [e.status for e in report.exercises] == ["failed", "failed"], str(report)
    assert report["check_add"].message == "AssertionError: hidden test: add(-1, 1) should be 0"
    assert report["check_scale"].message.startswith("AssertionError: scale([1, 2], 3) should be [3, 6]")
    assert "the check cell had been edited; graded with the teacher's version" in report["check_scale"].notes
    assert report.max_points == 3  # points come from the teacher notebook, not the student's metadata
    assert "note: the check cell had been edited" in str(report)

    trusting = grade_notebook(path, timeout_per_cell=60, teacher=teacher_dir / "01_tiny.ipynb", restore_checks=False)
    assert trusting.all_passed and trusting.max_points == 3  # what an edited check gets without the restore


def test_moved_copied_and_added_cells_still_grade_by_identity(submission, teacher_dir):
    nb, save = submission
    move_cells(nb, [_index(nb, "ex_add"), _index(nb, "check_add")], to=len(nb.cells))   # exercise 1 to the end
    copy_cell(nb, _index(nb, "check_scale"), to=2)             # a copy of a check, above its solution: fails there
    nb.cells.insert(3, new_code_cell("scratch = [v * 2 for v in range(3)]\nprint(scratch)"))
    nb.cells.insert(4, new_code_cell("1 / 0  # a student's experiment that fails"))
    nb.cells.insert(5, new_markdown_cell("My notes."))
    nb.cells.append(_check("assert True", "check_mine", points=5))  # a cell dressed as a check: not graded
    report = grade_notebook(save(nb), timeout_per_cell=60, teacher=teacher_dir / "01_tiny.ipynb")

    assert [(e.grade_id, e.status) for e in report.exercises] == [("check_add", "passed"), ("check_scale", "passed")]
    assert (report.points, report.max_points) == (3, 3), str(report)
    copies = [i for i, c in enumerate(nb.cells) if _meta(c).get("grade_id") == "check_scale"]
    assert report["check_scale"].cell_index == copies[-1]
    assert f"2 cells carry this grade_id (cells {copies})" in report["check_scale"].notes[0]
    assert any("'check_mine'" in note and "not graded" in note for note in report.notes)
    assert report.executed.cells[copies[0]].outputs[0]["ename"] == "NameError"  # the copy ran as an ordinary cell


def test_split_cells_still_grade(submission, teacher_dir):
    nb, save = submission
    solution = nb.cells[_index(nb, "ex_add")]
    solution.source = "def plus(a, b):\n    return a + b\n\n\ndef add(a, b):\n    return plus(a, b)"
    split_cell(nb, _index(nb, "ex_add"), first_lines=3)        # the helper and add() in two cells
    split_cell(nb, _index(nb, "check_add"), first_lines=2)     # the check in two cells, both keep the grade_id
    report = grade_notebook(save(nb), timeout_per_cell=60, teacher=teacher_dir / "01_tiny.ipynb")

    assert report.all_passed and report.points == 3, str(report)
    assert "2 cells carry this grade_id" in report["check_add"].notes[0]


def test_deleted_exercise_fails_naming_it(submission, teacher_dir):
    nb, save = submission
    del nb.cells[_index(nb, "check_scale")]
    del nb.cells[_index(nb, "ex_add")]
    report = grade_notebook(save(nb), timeout_per_cell=60, teacher=teacher_dir / "01_tiny.ipynb")

    assert [e.status for e in report.exercises] == ["failed", "failed"], str(report)
    assert report["check_scale"].message == ("missing: no check cell with grade_id 'check_scale' in the notebook "
                                             "(deleted?)")
    assert report["check_scale"].cell_index == -1
    assert report["check_add"].message == ("NameError: name 'add' is not defined; the solution cell 'ex_add' is "
                                           "missing from the notebook (deleted?)")
    lines = str(report).splitlines()
    assert any(ln.startswith("  ❌ check_scale") and "missing" in ln for ln in lines)


def test_check_moved_above_its_solution_fails_with_a_hint(submission, teacher_dir):
    nb, save = submission
    move_cells(nb, [_index(nb, "check_scale")], to=_index(nb, "ex_scale"))
    report = grade_notebook(save(nb), timeout_per_cell=60, teacher=teacher_dir / "01_tiny.ipynb")
    assert report["check_add"].passed and not report["check_scale"].passed
    assert report["check_scale"].message.startswith("NameError: name 'scale' is not defined; the check (cell ")
    assert "runs before its solution cell 'ex_scale'" in report["check_scale"].message


def test_check_turned_into_markdown_is_graded_as_code(submission, teacher_dir):
    nb, save = submission
    index = _index(nb, "check_add")
    cell = nb.cells[index]
    nb.cells[index] = new_markdown_cell(cell.source, metadata=cell.metadata)
    report = grade_notebook(save(nb), timeout_per_cell=60, teacher=teacher_dir / "01_tiny.ipynb")
    assert report["check_add"].passed, str(report)
    assert "turned into a markdown cell" in report["check_add"].notes[0]


def test_teacher_notebook_must_identify_each_exercise():
    teacher = teacher_notebook()
    exercises = teacher_exercises(teacher)
    assert [(e.grade_id, e.points, e.solution_id, e.has_hidden_tests) for e in exercises] == [
        ("check_add", 1.0, "ex_add", True), ("check_scale", 2.0, "ex_scale", False)]
    assert HIDDEN_BEGIN not in exercises[0].public_source and HIDDEN_END in exercises[0].source
    teacher.cells.append(_check("assert True", "check_add"))
    with pytest.raises(NotebookFormatError, match="check_add"):
        teacher_exercises(teacher)


def test_cli_grade_options(submission, teacher_dir, tmp_path, capsys):
    nb, save = submission
    nb.cells[_index(nb, "ex_add")].source = "def add(a, b):\n    return 5"
    path = save(nb)
    out = tmp_path / "report.json"
    assert cli_grade([str(path), "--teacher", str(teacher_dir / "01_tiny.ipynb"), "--timeout", "60",
                      "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["teacher"] == str(teacher_dir / "01_tiny.ipynb") and data["points"] == 2
    assert data["exercises"][0]["notes"] == ["hidden tests restored from the teacher version"]
    assert cli_grade([str(path), "--no-teacher", "--timeout", "60", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["points"] == 3  # no hidden tests without the teacher version
    assert "without a teacher version" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_grade([str(path), "--no-teacher", "--teacher", str(teacher_dir / "01_tiny.ipynb")])


# ------------------------------------------------- the grading flag: widgets and training stay off

TRIPWIRE = '''\
import ssd_lib.train
def _tripwire(*args, **kwargs):
    raise RuntimeError("TRIPWIRE: ssd_lib.train.train() ran during grading")
ssd_lib.train.train = _tripwire
'''
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def tripwire(tmp_path, monkeypatch):
    """Kernels started by the grader in this test load an IPython startup file that makes
    ``ssd_lib.train.train`` raise: a notebook that trains while grading shows the TRIPWIRE error."""
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-tripwire.py").write_text(TRIPWIRE)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))


def grading_violations(executed) -> list[str]:
    """Cells of an executed notebook that trained (the tripwire fired) or displayed a widget."""
    found = []
    for i, cell in enumerate(executed.cells):
        for output in cell.get("outputs", []):
            if "TRIPWIRE" in str(output.get("evalue", "")):
                found.append(f"cell {i} trained")
            if WIDGET_VIEW in output.get("data", {}):
                found.append(f"cell {i} displayed a widget")
    return found


@pytest.mark.slow
def test_widgets_and_training_do_not_run_while_grading(tmp_path, tripwire):
    cells = [
        new_code_cell("from ssd_lib.course.modes import grading_mode\nGRADING = grading_mode()\n"
                      "from ipywidgets import IntSlider, interact\n"
                      "from ssd_lib.train import TrainConfig, train\nassert GRADING"),
        new_code_cell("if not GRADING:\n    train(None, None, None, TrainConfig.small_cpu())"),
        new_code_cell("if not GRADING:\n    interact(lambda x: x, x=IntSlider(3))"),
        new_code_cell("input('a cell waiting for the keyboard does not hang the grader: ')"),
        _check("assert True", "check_guarded"),
        # The same calls without the guard: the tripwire and the widget scan see them.
        new_code_cell("train(None, None, None, TrainConfig.small_cpu())"),
        new_code_cell("interact(lambda x: x, x=IntSlider(3))"),
    ]
    report = grade_notebook(write(new_notebook(cells=cells), tmp_path / "guards.ipynb"), timeout_per_cell=120,
                            teacher=None)
    assert report.all_passed, str(report)
    assert [o["ename"] for o in report.executed.cells[3].outputs if o["output_type"] == "error"] == [
        "StdinNotImplementedError"]
    assert grading_violations(report.executed) == ["cell 5 trained", "cell 6 displayed a widget"]


# ------------------------------------------------- real course notebook: student-like copies of lesson 1

TEACHER_01 = ROOT / "notebooks" / "01_boxes.ipynb"


def lesson1_submission(folder: Path):
    """notebooks/01_boxes.ipynb as a student hands it in: the student version with the teacher's
    solutions typed in, keeping the imports and the exercise cells only (the student deleted the
    demonstrations: the grader must not care, and it keeps these tests fast). Creates ``folder``."""
    nb = filled_student_version(nbformat.read(TEACHER_01, as_version=4))
    imports = next(i for i, c in enumerate(nb.cells) if "from ssd_lib.course.modes import fast_mode, grading_mode" in c.source)
    nb.cells = [c for i, c in enumerate(nb.cells) if c.cell_type == "markdown" or i == imports or _meta(c).get("grade_id")]
    folder.mkdir(parents=True, exist_ok=True)
    return nb


@pytest.mark.slow
def test_real_lesson_with_moved_copied_split_added_and_deleted_cells(tmp_path):
    nb = lesson1_submission(tmp_path / "bob")
    move_cells(nb, [_index(nb, "ex_iou"), _index(nb, "check_iou")], to=_index(nb, "ex_xyxy_to_cxcywh"))  # iou first
    copy_cell(nb, _index(nb, "check_iou"), to=len(nb.cells))                  # a copy of the check at the end
    solution = nb.cells[_index(nb, "ex_xyxy_to_cxcywh")]
    solution.source = "import torch\n\n" + solution.source
    split_cell(nb, _index(nb, "ex_xyxy_to_cxcywh"), first_lines=2)             # split after the import
    nb.cells.insert(_index(nb, "check_iou") + 1, new_code_cell(
        "print(iou(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]])))"))
    nb.cells.insert(1, new_code_cell("undefined_name  # fails; grading goes on"))
    del nb.cells[_index(nb, "check_xyxy_to_cxcywh")]
    path = write(nb, tmp_path / "bob" / "01_boxes.ipynb")

    report = grade_notebook(path, timeout_per_cell=120)  # teacher found by name: notebooks/01_boxes.ipynb
    print(report)
    assert report.teacher == TEACHER_01
    assert [(e.grade_id, e.status) for e in report.exercises] == [("check_xyxy_to_cxcywh", "failed"),
                                                                  ("check_iou", "passed")]
    assert report["check_xyxy_to_cxcywh"].message.startswith("missing: no check cell with grade_id "
                                                             "'check_xyxy_to_cxcywh'")
    assert report["check_iou"].cell_index == len(nb.cells) - 1  # the last copy
    assert report["check_iou"].notes[-1] == "hidden tests restored from the teacher version"
    assert "2 cells carry this grade_id" in report["check_iou"].notes[0]
    assert (report.points, report.max_points) == (3, 4)  # check_iou is worth 3 of the lesson's 4 points


def test_real_lesson_hidden_test_catches_what_check_iou_lets_through(capsys):
    """The hidden test of notebooks/01_boxes.ipynb's check_iou cell, run here on learner functions
    that pass the public checker (a kernel is not needed: the cell's code is plain Python)."""
    import torch
    import torchvision

    teacher = nbformat.read(TEACHER_01, as_version=4)
    check = teacher.cells[_index(teacher, "check_iou")].source
    student_check = make_student_notebook(teacher).cells[_index(teacher, "check_iou")].source
    assert HIDDEN_BEGIN in check and HIDDEN_BEGIN not in student_check and "hidden_iou" not in student_check
    solution = {}
    exec(_without_markers(teacher.cells[_index(teacher, "ex_iou")].source), {"torch": torch}, solution)

    def as_float32(boxes_a, boxes_b):  # a learner's habit: .float() first
        return solution["iou"](boxes_a.float(), boxes_b.float())

    def run(fn):
        exec(check, {"torch": torch, "torchvision": torchvision, "iou": fn})

    run(solution["iou"])  # the teacher's solution passes the hidden test too
    from ssd_lib.course.checks import check_iou

    assert check_iou(as_float32)  # the public checker lets it through ...
    capsys.readouterr()
    with pytest.raises(AssertionError):  # ... the hidden test not
        run(as_float32)
    printed = capsys.readouterr().out
    assert "❌ check_iou (hidden, seed" in printed and "torch.float64 inputs gave a torch.float32 result" in printed


# ------------------------------------------------- the course notebooks keep widgets and training off when grading

COURSE_NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WIDGET_CALLS = {"interact", "interactive", "interact_manual", "interactive_output"}
RICH_DISPLAY = {"Markdown", "HTML", "Image", "Latex", "Math", "SVG", "JSON"}  # IPython.display objects, not widgets


def _name(node) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _guards_grading(test, negated: bool) -> bool:
    """Is ``test`` ``not GRADING`` (negated=True) or ``GRADING`` (False), alone or in an ``and``?"""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_guards_grading(value, negated) for value in test.values)
    if negated:
        return isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and _name(test.operand) == "GRADING"
    return _name(test) == "GRADING"


def unguarded_calls(source: str) -> list[str]:
    """Calls that train or show a widget at the top level of a cell, outside ``if not GRADING:``
    (function bodies are skipped: what matters is whether the call site is guarded)."""
    if source.lstrip().startswith("%%"):
        return []
    code = "\n".join("pass" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.split("\n"))
    found = []

    def visit(node, guarded: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return
        if isinstance(node, ast.If):
            visit(node.test, guarded)
            for child in node.body:
                visit(child, guarded or _guards_grading(node.test, negated=True))
            for child in node.orelse:
                visit(child, guarded or _guards_grading(node.test, negated=False))
            return
        if isinstance(node, ast.Call) and not guarded:
            name = _name(node.func)
            module_train = (name == "train" and isinstance(node.func, ast.Attribute)
                            and _name(node.func.value) == "train")  # ssd_lib.train.train(...), not model.train()
            shows = name == "display" and isinstance(node.func, ast.Name) and not all(
                isinstance(arg, ast.Call) and _name(arg.func) in RICH_DISPLAY for arg in node.args)
            if (isinstance(node.func, ast.Name) and name == "train") or module_train or name in WIDGET_CALLS or shows:
                found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(code), False)
    return found


def test_the_guard_finder_sees_what_it_should():
    assert unguarded_calls("train(model, data, None, cfg)") == ["line 1: train(model, data, None, cfg)"]
    assert unguarded_calls("if not GRADING:\n    train(m, d, None, c)\n    interact(f, x=1)") == []
    assert unguarded_calls("if GRADING:\n    pass\nelse:\n    display(live_figure(f))") == []
    assert len(unguarded_calls("model.train()\ndisplay(Markdown('x'))\nexplorer.display()\ninteract(f, x=1)")) == 1
    assert unguarded_calls("def f():\n    train(m, d, None, c)") == []


@pytest.mark.parametrize("path", COURSE_NOTEBOOKS, ids=[p.stem for p in COURSE_NOTEBOOKS])
def test_course_notebooks_guard_training_and_widgets_with_grading(path):
    problems = []
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type == "code":
            problems += [f"cell {index}, {call}" for call in unguarded_calls(cell.source)]
    assert not problems, (f"{path.name}: training or widget calls outside `if not GRADING:` (the grader would run "
                          f"them):\n  " + "\n  ".join(problems))


# Grading a notebook costs a full fast-mode run (20-60 s on two busy cores), so the default suite grades the
# lesson that trains; SSD_TEST_GRADE_ALL=1 grades every course notebook this way (all passed when written).
TRIPWIRE_NOTEBOOKS = (COURSE_NOTEBOOKS if os.environ.get("SSD_TEST_GRADE_ALL", "").strip() == "1"
                      else [p for p in COURSE_NOTEBOOKS if p.name == "07_training.ipynb"])


@pytest.mark.slow
@pytest.mark.notebook_exec
@pytest.mark.parametrize("path", TRIPWIRE_NOTEBOOKS, ids=[p.stem for p in TRIPWIRE_NOTEBOOKS])
def test_grading_a_course_notebook_runs_no_training_and_no_widget(path, tripwire):
    report = grade_notebook(path, timeout_per_cell=300)
    print(report)
    assert report.exercises and report.all_passed, str(report)
    assert grading_violations(report.executed) == [], str(report)


# ---------------------------------------------------------------- the course model

@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A model-only checkpoint in ssd_lib's format (what the course ships)."""
    import torch

    from ssd_lib.model import ssd_small

    torch.manual_seed(0)
    model = ssd_small(num_classes=3, image_size=64)
    path = tmp_path / "model.pt"
    torch.save({"format": "ssd_lib.checkpoint/1", "model_config": model.config.to_dict(), "model": model.state_dict(),
                "extra": {"class_names": ["circle", "star"]}}, path)
    return path


def test_load_course_model_loads_a_checkpoint_in_eval_mode(tiny_checkpoint):
    model, class_names = load_course_model(tiny_checkpoint)
    assert not model.training and class_names == ["circle", "star"]


def test_truncated_or_foreign_checkpoint_is_a_one_line_value_error(tiny_checkpoint, tmp_path):
    import torch

    data = tiny_checkpoint.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    for name in ("cut.pt", "foreign.pt", "text.pt"):
        with pytest.raises(ValueError) as info:
            load_course_model(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)
    with pytest.raises(ValueError, match="does not exist"):
        load_course_model(tmp_path / "nowhere.pt")


@pytest.fixture
def no_shipped_model(tmp_path, monkeypatch):
    """No shipped model and an empty cache under tmp_path; a fallback model trains in 2 steps (fast mode)."""
    monkeypatch.setattr(assets, "ASSET_PATH", tmp_path / "assets" / "ssd_small_shapes.pt")
    monkeypatch.setattr(assets, "CACHE_DIR", tmp_path / "results" / "course_model")
    monkeypatch.setitem(assets.FALLBACK_TRAINING, True, dict(epochs=1, max_steps_per_epoch=2, batch_size=2, warmup_steps=1,
                                                             num_workers=0))
    monkeypatch.setenv("SSD_COURSE_FAST", "1")
    return monkeypatch


@pytest.mark.slow
def test_missing_asset_trains_caches_and_reuses_a_quick_model(no_shipped_model, tmp_path, capsys):
    model, class_names = load_course_model()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1 and "training a quick model" in lines[0]
    assert (tmp_path / "results" / "course_model" / "fast" / "last.pt").is_file()
    assert not model.training and len(class_names) == model.num_classes - 1
    load_course_model()
    assert capsys.readouterr().out == ""  # cached: no training the second time


def test_a_stale_cached_model_is_trained_again(no_shipped_model, tmp_path, capsys):
    """A cache written by an older model definition (its weights no longer fit) is replaced, not an error."""
    import torch

    no_shipped_model.delenv("SSD_COURSE_GRADING", raising=False)
    stale = tmp_path / "results" / "course_model" / "fast" / "last.pt"
    stale.parent.mkdir(parents=True)
    load_course_model()  # trains and caches
    ckpt = torch.load(stale, weights_only=True)
    ckpt["model"] = {k + ".old": v for k, v in ckpt["model"].items()}  # weights of another architecture
    torch.save(ckpt, stale)
    capsys.readouterr()
    model, _ = load_course_model()
    assert "training a quick model" in capsys.readouterr().out
    assert not model.training


def test_grading_never_trains_a_missing_course_model(no_shipped_model):
    no_shipped_model.setenv("SSD_COURSE_GRADING", "1")
    with pytest.raises(FileNotFoundError, match="grading never trains"):
        load_course_model()
