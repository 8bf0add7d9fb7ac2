"""Model answers to the questions that close a lesson (ssd_lib.course.student.answer_cell): in each lesson of
ANSWERED every question has its own answer cell right after it, a collapsed ``<details class="answer">`` in the
teacher notebook; the student versions (ours, and nbgrader's release) show "YOUR ANSWER HERE" in its place and no
answer text, a model answer anywhere else is refused, and a ``<details>`` hint meant for students reaches them."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ssd_lib.course.student import (
    ANSWER_BEGIN, ANSWER_END, TEXT_STUB, NotebookFormatError, answer_cell, cell_source, generate_student_versions,
    is_answer_cell, make_student_notebook, read_notebook,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
LESSONS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
# The lessons whose closing questions have model answers; add a lesson's stem here once its answers are written.
ANSWERED = ["01_boxes", "02_default_boxes", "03_matching", "04_network", "05_loss", "06_augmentation",
            "07_training", "08_inference", "09_evaluation", "10_ablations", "11_debugging",
            "12_deployment"]
QUESTIONS_HEADING = "## Questions"
QUESTION = re.compile(r"\*\*Question (\d+)\.\*\* \S")
HINT = "<details><summary>Hint</summary>\n\nBroadcast with `[:, None]`, HINT_TOKEN_4e1.\n\n</details>"


def answer_text(cell) -> str:
    """The model answer inside an answer cell, without the <details> frame."""
    return cell_source(cell).strip()[len(ANSWER_BEGIN):-len(ANSWER_END)].strip()


def closing_questions(nb, name: str) -> list[tuple[int, object]]:
    """[(question number, the cell right after the question)] for the cells after the lesson's
    "## Questions" cell; asserts the layout: one question per cell, numbered 1, 2, ..."""
    headings = [i for i, c in enumerate(nb.cells)
                if c.cell_type == "markdown" and cell_source(c).lstrip().startswith(QUESTIONS_HEADING)]
    assert len(headings) == 1, f"{name}: expected one markdown cell starting with {QUESTIONS_HEADING!r}, found {headings}"
    heading = cell_source(nb.cells[headings[0]])
    assert not re.search(r"^\s*\d+\. ", heading, re.M), (
        f"{name}: the questions are still a numbered list in the {QUESTIONS_HEADING!r} cell; give each question a cell "
        f"'**Question N.** ...' followed by its answer cell (ssd_lib.course.student.answer_cell)")
    found, index = [], headings[0] + 1
    while index < len(nb.cells):
        match = QUESTION.match(cell_source(nb.cells[index]))
        if nb.cells[index].cell_type != "markdown" or not match:
            break
        after = nb.cells[index + 1] if index + 1 < len(nb.cells) else None
        found.append((int(match.group(1)), after))
        index += 2
    assert [number for number, _ in found] == list(range(1, len(found) + 1)), f"{name}: questions numbered {found}"
    return found


@pytest.mark.parametrize("stem", ANSWERED)
def test_every_closing_question_has_its_model_answer_right_after_it(stem):
    nb = read_notebook(NOTEBOOK_DIR / f"{stem}.ipynb")
    questions = closing_questions(nb, stem)
    assert len(questions) >= 3, f"{stem}: only {len(questions)} closing questions found"
    for number, after in questions:
        assert after is not None and is_answer_cell(after), (
            f"{stem}, question {number}: the next cell is not a model answer (ssd_lib.course.student.answer_cell)")
        text = answer_text(after)
        assert len(text) >= 150, f"{stem}, question {number}: the model answer is only {len(text)} characters"
        assert not re.match(r"\d+\. ", text), f"{stem}, question {number}: one answer per cell, not a numbered list"
    answers = [c for c in nb.cells if is_answer_cell(c)]
    assert len(answers) == len(questions), f"{stem}: {len(answers)} answer cells for {len(questions)} questions"


def test_answered_lessons_exist():
    assert set(ANSWERED) <= {p.stem for p in LESSONS}


def test_student_versions_show_no_model_answer(tmp_path):
    """Generated into tmp_path (notebooks/student/ is the lead's): no answer frame in any lesson, and in the
    answered lessons no line of any answer, and "YOUR ANSWER HERE" right after each question."""
    written = {p.stem: p for p in generate_student_versions(NOTEBOOK_DIR, tmp_path)}
    for stem, path in written.items():
        text = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
        for marker in ("Model answer", 'class="answer"', "<summary>Answers"):
            assert marker not in text, f"student {stem}: contains {marker!r}"
    for stem in ANSWERED:
        teacher = read_notebook(NOTEBOOK_DIR / f"{stem}.ipynb")
        student = nbformat.read(written[stem], as_version=4)
        student_lines = {line.strip() for cell in student.cells for line in cell.source.splitlines()}
        public = {line.strip() for cell in teacher.cells if not is_answer_cell(cell)
                  for line in cell_source(cell).splitlines()}
        questions = closing_questions(teacher, stem)
        for number, after in questions:
            secret = {line.strip() for line in answer_text(after).splitlines() if len(line.strip()) > 25} - public
            assert secret and not secret & student_lines, f"student {stem}, question {number}: shows its model answer"
        stubs = [after.source if after is not None else None for _, after in closing_questions(student, stem)]
        assert stubs == [TEXT_STUB] * len(questions), f"student {stem}: {stubs}"


def test_every_details_block_outside_an_answer_reaches_the_students():
    """A <details> meant for students (a hint) is kept as it is, in every lesson (none has one yet: the
    synthetic test below covers the case)."""
    for path in LESSONS:
        teacher = read_notebook(path)
        student = make_student_notebook(teacher, path.name)
        for t, s in zip(teacher.cells, student.cells):
            if "<details" in cell_source(t) and not is_answer_cell(t):
                assert s.source == cell_source(t), f"{path.name}: a <details> block was changed in the student version"


def lesson_with_answer_and_hint():
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [
        new_markdown_cell("# A tiny lesson"),
        new_code_cell("x = 1"),
        new_markdown_cell("## Questions\n\nWrite your answer in the cell under each question."),
        new_markdown_cell("**Question 1.** What is the IoU of a box with itself?\n\n" + HINT),
        answer_cell("Always 1: the intersection is the box itself, and so is the union (ANSWER_TOKEN_9b2).",
                    "answer_q1"),
    ]
    return nb


def test_student_version_keeps_the_hint_and_replaces_the_answer():
    teacher = lesson_with_answer_and_hint()
    assert is_answer_cell(teacher.cells[4]) and not is_answer_cell(teacher.cells[3])
    assert teacher.cells[4].source.startswith(ANSWER_BEGIN + "\n\n") and teacher.cells[4].source.endswith(ANSWER_END)
    student = make_student_notebook(teacher, "01_tiny.ipynb")
    assert student.cells[3].source == teacher.cells[3].source and HINT in student.cells[3].source
    assert student.cells[4].source == TEXT_STUB
    assert student.cells[4].metadata == teacher.cells[4].metadata and student.cells[4].id == teacher.cells[4].id


@pytest.mark.parametrize("source", [
    ANSWER_BEGIN + "\n\nAlways 1.\n\n" + ANSWER_END,                          # an answer frame in a plain cell
    "**Question 1.** Why?\n\n<details><summary>Answers</summary>\n\n1. Because.\n</details>",   # the old layout
    '<details class="answer" open><summary>Show</summary>Because.</details>',
])
def test_a_model_answer_outside_an_answer_cell_is_refused(source):
    nb = new_notebook(cells=[new_markdown_cell("# Lesson"), new_markdown_cell(source)])
    with pytest.raises(NotebookFormatError, match="model answer") as info:
        make_student_notebook(nb, "07_x.ipynb")
    assert "07_x.ipynb, cell 1" in str(info.value)


def test_a_model_answer_outside_the_solution_region_of_a_solution_cell_is_refused():
    cell = answer_cell("Inside.", "answer_q1")
    cell.source = "### BEGIN SOLUTION\nA written answer.\n### END SOLUTION\n" + cell.source
    with pytest.raises(NotebookFormatError, match="model answer"):
        make_student_notebook(new_notebook(cells=[cell]), "x.ipynb")


def test_answer_cells_carry_valid_nbgrader_metadata():
    validator = pytest.importorskip("nbgrader.nbgraderformat").MetadataValidator()
    cell = answer_cell("Some answer.", "answer_q3", cell_id="0a1b2c3d")
    validator.validate_cell(cell)  # a markdown solution must also be a grade cell, with points (0 allowed)
    assert cell.id == "0a1b2c3d" and cell.metadata.nbgrader["points"] == 0


@pytest.mark.slow
def test_nbgrader_releases_the_hint_but_no_answer(tmp_path):
    """nbgrader's own generate_assignment on a lesson with an answer cell and a hint: it accepts the metadata,
    its release equals our student version, shows the hint and not the answer."""
    pytest.importorskip("nbgrader", reason="nbgrader is in the test extra: pip install -e '.[test]'")
    course = tmp_path / "course"
    (course / "source" / "ssd").mkdir(parents=True)
    teacher = lesson_with_answer_and_hint()
    nbformat.write(teacher, course / "source" / "ssd" / "01_tiny.ipynb")
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        f"c.CourseDirectory.db_url = {'sqlite:///' + str(tmp_path / 'gradebook.db')!r}\n"
        "c.CourseDirectory.course_id = 'ssd-answers'\n")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter_config"),
               JUPYTER_DATA_DIR=str(tmp_path / "jupyter_data"))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # nbgrader runs alembic
    done = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "ssd", "--force"], cwd=course,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    release = nbformat.read(course / "release" / "ssd" / "01_tiny.ipynb", as_version=4)
    text = "\n".join(cell.source for cell in release.cells)
    assert "ANSWER_TOKEN" not in text and "Model answer" not in text and "HINT_TOKEN_4e1" in text
    assert [c.source for c in release.cells] == [c.source for c in make_student_notebook(teacher).cells]
