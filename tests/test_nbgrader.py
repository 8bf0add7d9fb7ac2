"""nbgrader compatibility: nbgrader's own ``generate_assignment`` accepts the teacher notebooks as
they are (their nbgrader metadata), its release version shows no solution or hidden-test text, and
it is exactly what ``python -m ssd_lib.course student`` writes. Runs nbgrader in a subprocess on a
temporary course directory (config, gradebook database and release all under tmp)."""
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
        "c.CourseDirectory.course_id = 'ssd-course'\n")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "jupyter_config"), JUPYTER_DATA_DIR=str(tmp / "jupyter_data"))
    # nbgrader runs the `alembic` command of its environment to set up the gradebook.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT, "--force"],
                          cwd=course, env=env, capture_output=True, text=True, timeout=300)
    return course, done, tmp


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
