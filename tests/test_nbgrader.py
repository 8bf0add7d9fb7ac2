"""nbgrader compatibility: nbgrader's own ``generate_assignment`` accepts the teacher notebooks as
they are (their nbgrader metadata), its release version shows no solution or hidden-test text, and
it is exactly what ``python -m ssd_lib.course student`` writes; its own ``autograde`` gives the teacher's solutions
full marks and a blank release fewer, with nbgrader's default 30 s per cell for every cell but one: lesson 13's
training cell, which gets :data:`CAPSTONE_TIMEOUT_LINE`, the one ``nbgrader_config.py`` line a teacher adds for the
capstone. Runs nbgrader in a subprocess on a temporary course directory (config, gradebook database and release all
under tmp)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from notebook_lines import solution_lines
from ssd_lib.course.student import HIDDEN_BEGIN, HIDDEN_END, SOLUTION_BEGIN, SOLUTION_END, make_student_notebook

pytest.importorskip("nbgrader", reason="nbgrader is in the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ASSIGNMENT = "ssd"
# The one line of nbgrader_config.py that lesson 13 needs: its training cell (grade_id "train_your_ssd", the graded
# run, a few minutes on a CPU) may run 15 minutes; every other cell keeps nbgrader's default of 30 s. The trait is
# nbclient's NotebookClient.timeout_func (a callable given the cell), which nbgrader's Execute preprocessor inherits.
CAPSTONE_TIMEOUT_LINE = ('c.Execute.timeout_func = lambda cell: 900 if cell.metadata.get("nbgrader", {}).get("grade_id") '
                         '== "train_your_ssd" else 30')


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Run ``nbgrader generate_assignment`` on a copy of the course; return (course dir, completed process)."""
    if not NOTEBOOKS:
        pytest.skip("no course notebooks yet (notebooks/NN_*.ipynb)")
    tmp = tmp_path_factory.mktemp("nbgrader")
    course = tmp / "course"
    source = course / "source" / ASSIGNMENT
    source.mkdir(parents=True)
    for path in NOTEBOOKS:
        shutil.copy(path, source / path.name)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        f"c.CourseDirectory.db_url = {'sqlite:///' + str(tmp / 'gradebook.db')!r}\n"
        "c.CourseDirectory.course_id = 'ssd-course'\n"
        + CAPSTONE_TIMEOUT_LINE + "\n")
    done = _nbgrader(["generate_assignment", ASSIGNMENT, "--force"], course, tmp, timeout=300)
    return course, done, tmp


def _nbgrader(args, course, tmp, timeout):
    """Run nbgrader's own command in ``course`` with state folders under ``tmp`` and no course variable set
    (a teacher sets nothing); nbgrader runs the `alembic` command of its environment to set up the gradebook."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSD_COURSE_")}
    env.update(JUPYTER_CONFIG_DIR=str(tmp / "jupyter_config"), JUPYTER_DATA_DIR=str(tmp / "jupyter_data"),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_nbgrader_generate_assignment_accepts_the_course(released):
    course, done, tmp = released
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"nbgrader generate_assignment failed:\n{log[-4000:]}"
    assert "ERROR" not in log, log[-4000:]
    names = sorted(p.name for p in (course / "release" / ASSIGNMENT).glob("*.ipynb"))
    assert names == [p.name for p in NOTEBOOKS]
    assert (tmp / "gradebook.db").is_file() and not (ROOT / "gradebook.db").exists()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_nbgrader_release_has_no_solution_and_matches_our_student_version(released, path):
    course, done, _ = released
    assert done.returncode == 0, "nbgrader generate_assignment failed (see the test above)"
    release = nbformat.read(course / "release" / ASSIGNMENT / path.name, as_version=4)
    teacher = nbformat.read(path, as_version=4)
    text = "\n".join(cell.source for cell in release.cells)
    for marker in (SOLUTION_BEGIN, SOLUTION_END, HIDDEN_BEGIN, HIDDEN_END):
        assert marker not in text, f"nbgrader's release of {path.name} contains {marker!r}"
    secret, public = solution_lines(teacher.cells)
    distinctive = {ln for ln in secret - public if len(ln) > 25}  # short lines (`return x`) occur elsewhere too
    leaked = sorted(distinctive & {ln.strip() for ln in text.splitlines()})
    assert not leaked, f"nbgrader's release of {path.name} shows solution lines: {leaked}"
    ours = make_student_notebook(teacher, path.name)
    assert [c.source for c in release.cells] == [c.source for c in ours.cells], (
        f"{path.name}: nbgrader's release and `python -m ssd_lib.course student` differ")


# ------------------------------------------------- the teacher's workflow: generate_assignment -> submit -> autograde

# Lessons autograded in the suite: each ~15 s per submission, but the capstone's solved submission trains its graded
# run (a few minutes); the blank releases of the first lesson and of the capstone stop at their first exercise.
AUTOGRADED = ["01_boxes", "03_matching", "08_inference", "13_your_ssd"]
BLANK = [AUTOGRADED[0], "13_your_ssd"]
AUTOGRADE_TIMEOUT = 1500  # seconds for nbgrader's autograde of all of them (the capstone's training included)


def _solved(release, teacher):
    """A student's submission with the teacher's answers: the release with each code solution cell's stub
    replaced by the model answer (the marker lines dropped), as a student who solved everything hands it in."""
    submission = nbformat.from_dict(release)
    answers = {c.metadata["nbgrader"]["grade_id"]: c for c in teacher.cells
               if (c.metadata.get("nbgrader") or {}).get("solution")}
    for cell in submission.cells:
        meta = cell.metadata.get("nbgrader") or {}
        if meta.get("solution") and cell.cell_type == "code":
            lines = answers[meta["grade_id"]].source.split("\n")
            cell.source = "\n".join(ln for ln in lines if ln.strip() not in (SOLUTION_BEGIN, SOLUTION_END))
    return submission


@pytest.fixture(scope="module")
def autograded(released):
    """nbgrader's own ``autograde`` with its default settings (30 s per cell, no course variable set) plus the
    capstone's one line (CAPSTONE_TIMEOUT_LINE), on two students: "solved" hands in the teacher's answers, "blank" the
    releases of BLANK as they are. Returns (course dir, completed process, {(student, lesson): (score, max_score)})."""
    course, done, tmp = released
    assert done.returncode == 0, "nbgrader generate_assignment failed (see the test above)"
    for lesson in AUTOGRADED:
        release = nbformat.read(course / "release" / ASSIGNMENT / f"{lesson}.ipynb", as_version=4)
        teacher = nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", as_version=4)
        submissions = [("solved", _solved(release, teacher))] + ([("blank", release)] if lesson in BLANK else [])
        for student, notebook in submissions:
            folder = course / "submitted" / student / ASSIGNMENT
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, folder / f"{lesson}.ipynb")
    graded = _nbgrader(["autograde", ASSIGNMENT, "--create"], course, tmp, timeout=AUTOGRADE_TIMEOUT)
    from nbgrader.api import Gradebook

    scores = {}
    with Gradebook("sqlite:///" + str(tmp / "gradebook.db"), "ssd-course") as gradebook:
        for student, lessons in (("solved", AUTOGRADED), ("blank", BLANK)):
            for lesson in lessons:
                notebook = gradebook.find_submission_notebook(lesson, ASSIGNMENT, student)
                scores[student, lesson] = (notebook.code_score, notebook.max_code_score)
    return course, graded, scores


@pytest.mark.slow
@pytest.mark.timeout(AUTOGRADE_TIMEOUT + 300)  # the fixture's autograde runs in the first test that asks for it
def test_nbgrader_autograde_gives_the_solutions_full_marks_with_default_settings(autograded):
    course, graded, scores = autograded
    log = graded.stdout + graded.stderr
    assert graded.returncode == 0, f"nbgrader autograde failed:\n{log[-4000:]}"
    assert "Timeout" not in log and "CellTimeoutError" not in log, log[-4000:]
    for lesson in AUTOGRADED:
        score, max_score = scores["solved", lesson]
        assert max_score >= 2 and score == max_score, (lesson, scores["solved", lesson], log[-3000:])
        executed = nbformat.read(course / "autograded" / "solved" / ASSIGNMENT / f"{lesson}.ipynb", as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, (lesson, [(e["ename"], e["evalue"][:200]) for e in errors])
        checks = [c for c in executed.cells if (c.metadata.get("nbgrader") or {}).get("grade") and c.cell_type == "code"]
        assert all("hidden_tests" in c.source for c in checks), f"{lesson}: autograde ran without the hidden tests"
        printed = "".join(o.get("text", "") for c in checks for o in c.get("outputs", []))
        assert "(hidden, seed" in printed and "❌" not in printed, printed[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(AUTOGRADE_TIMEOUT + 300)
def test_nbgrader_autograde_gives_a_blank_release_no_points(autograded):
    _, graded, scores = autograded
    assert graded.returncode == 0
    for lesson in BLANK:  # two lessons: a blank release runs as long as a solved one
        score, max_score = scores["blank", lesson]
        assert max_score > 0 and score == 0, (lesson, scores["blank", lesson])


@pytest.mark.slow
@pytest.mark.timeout(AUTOGRADE_TIMEOUT + 300)
def test_nbgrader_autograde_grades_the_capstone_by_the_map_of_the_learners_own_pieces(autograded):
    """Lesson 13 under nbgrader: the training cell ran the graded run with the solutions' pieces (the one cell with
    the longer timeout), the graded mAP cell passed with its hidden seeds, and its 5 points count in the full marks."""
    course, graded, scores = autograded
    assert graded.returncode == 0
    executed = nbformat.read(course / "autograded" / "solved" / ASSIGNMENT / "13_your_ssd.ipynb", as_version=4)
    by_id = {(c.metadata.get("nbgrader") or {}).get("grade_id"): c for c in executed.cells}
    trained = "".join(o.get("text", "") for o in by_id["train_your_ssd"].outputs)
    assert "graded run:" in trained and "test mAP@0.5 with your postprocess on 500 test images" in trained, trained
    graded_map = "".join(o.get("text", "") for o in by_id["check_your_ssd"].outputs)
    assert "✅ check_trained_detector passed" in graded_map and "(hidden, seed" in graded_map, graded_map
    assert by_id["check_your_ssd"].metadata["nbgrader"]["points"] == 5
    blank = nbformat.read(course / "autograded" / "blank" / ASSIGNMENT / "13_your_ssd.ipynb", as_version=4)
    blank_cells = {(c.metadata.get("nbgrader") or {}).get("grade_id"): c for c in blank.cells}
    assert any(o.get("ename") == "NotImplementedError" for o in blank_cells["train_your_ssd"].outputs)


def test_the_capstone_timeout_line_is_nbclient_s_trait_and_spares_every_other_cell():
    """The documented line sets nbclient's ``timeout_func`` (nbgrader's Execute preprocessor inherits it): the
    capstone's training cell gets 900 s, every other cell nbgrader's default 30 s."""
    from nbclient import NotebookClient
    from nbgrader.preprocessors import Execute
    from traitlets.config import Config

    assert "timeout_func" in NotebookClient.class_trait_names(config=True) and issubclass(Execute, NotebookClient)
    assert Execute.class_traits()["timeout"].default_value == 30
    namespace = {"c": Config()}
    exec(CAPSTONE_TIMEOUT_LINE, namespace)
    execute = Execute(config=namespace["c"])
    teacher = nbformat.read(ROOT / "notebooks" / "13_your_ssd.ipynb", as_version=4)
    timeouts = {i: execute._get_timeout(cell) for i, cell in enumerate(teacher.cells) if cell.cell_type == "code"}
    training = [i for i, c in enumerate(teacher.cells) if (c.metadata.get("nbgrader") or {}).get("grade_id") == "train_your_ssd"]
    assert len(training) == 1 and timeouts.pop(training[0]) == 900
    assert set(timeouts.values()) == {30}
    assert CAPSTONE_TIMEOUT_LINE in (ROOT / "README.md").read_text(), "the README documents this very line"


def test_grading_mode_follows_nbgrader_s_own_execution_variable(monkeypatch):
    """nbgrader sets NBGRADER_EXECUTION while it executes (autograde, validate): the course reads it, so a teacher
    sets nothing; a course variable set to 0 still wins."""
    import inspect

    import nbgrader.converters.autograde
    import nbgrader.validator

    from ssd_lib.course.modes import fast_mode, grading_mode

    assert "NBGRADER_EXECUTION='autograde'" in inspect.getsource(nbgrader.converters.autograde)
    assert "NBGRADER_EXECUTION='validate'" in inspect.getsource(nbgrader.validator)
    for name in ("SSD_COURSE_FAST", "SSD_COURSE_GRADING", "NBGRADER_EXECUTION"):
        monkeypatch.delenv(name, raising=False)
    assert not fast_mode() and not grading_mode()
    for value in ("autograde", "validate"):
        monkeypatch.setenv("NBGRADER_EXECUTION", value)
        assert fast_mode() and grading_mode()
    monkeypatch.setenv("SSD_COURSE_GRADING", "0")
    assert fast_mode() and not grading_mode()
    monkeypatch.setenv("NBGRADER_EXECUTION", "something else")
    monkeypatch.delenv("SSD_COURSE_GRADING")
    assert not fast_mode() and not grading_mode()
