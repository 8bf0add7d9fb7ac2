"""ssd_lib.course: modes from the environment, student versions (nbgrader's replacement, no
leaks, deterministic), the grader (pass, fail with a message, timeout, dead kernel), and the
course model loader's errors. Notebooks are built here with nbformat: these tests do not depend on
the real course notebooks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ssd_lib import course
from ssd_lib.course import (
    CODE_STUB, NotebookFormatError, check_student_versions, cli_grade, fast_mode, generate_student_versions,
    grade_notebook, grading_mode, load_course_model, make_student_notebook,
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
from ssd_lib.course import FAST, GRADING

def run_check(name, fn, args, expected):
    """Like ssd_lib.checks: print one line, never raise."""
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
assert add(-1, 1) == 0  # HIDDEN_TOKEN_91c
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


def test_mode_constants_are_computed_at_import():
    env = {**os.environ, "SSD_COURSE_FAST": "true", "SSD_COURSE_GRADING": "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", "from ssd_lib.course import FAST, GRADING; print(FAST, GRADING)"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


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
    assert course.main(["student", "--check", *args]) == 1
    assert "stale" in capsys.readouterr().out
    assert course.main(["student", *args]) == 0
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


def test_grading_rejects_duplicate_grade_ids_and_missing_files(tmp_path, capsys):
    nb = new_notebook(cells=[_check("assert True", "same"), _check("assert True", "same")])
    with pytest.raises(NotebookFormatError, match="same"):
        grade_notebook(write(nb, tmp_path / "dup.ipynb"))
    assert cli_grade([str(tmp_path / "missing.ipynb")]) == 2
    assert "does not exist" in capsys.readouterr().err


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


@pytest.mark.slow
def test_missing_asset_trains_caches_and_reuses_a_quick_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(course, "ASSET_PATH", tmp_path / "assets" / "ssd_small_shapes.pt")
    monkeypatch.setattr(course, "CACHE_DIR", tmp_path / "results" / "course_model")
    monkeypatch.setitem(course.FALLBACK_TRAINING, True, dict(epochs=1, max_steps_per_epoch=2, batch_size=2, warmup_steps=1,
                                                             num_workers=0))
    monkeypatch.setenv("SSD_COURSE_FAST", "1")
    model, class_names = load_course_model()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1 and "training a quick model" in lines[0]
    assert (tmp_path / "results" / "course_model" / "fast" / "last.pt").is_file()
    assert not model.training and len(class_names) == model.num_classes - 1
    load_course_model()
    assert capsys.readouterr().out == ""  # cached: no training the second time
