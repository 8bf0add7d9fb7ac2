"""Which lines of a teacher notebook a student must never see (shared by the student-version tests
and the nbgrader test)."""
from __future__ import annotations

from ssd_lib.course.student import HIDDEN_BEGIN, HIDDEN_END, SOLUTION_BEGIN, SOLUTION_END


def solution_lines(cells) -> tuple[set[str], set[str]]:
    """(lines inside solution / hidden-test regions or unmarked solution cells, all other lines),
    stripped."""
    secret, public = set(), set()
    for cell in cells:
        lines = cell.source.splitlines()
        markers = any(ln.strip() in (SOLUTION_BEGIN, HIDDEN_BEGIN) for ln in lines)
        if (cell.metadata.get("nbgrader", {}) or {}).get("solution") and not markers:
            secret.update(ln.strip() for ln in lines)
            continue
        inside = False
        for line in lines:
            stripped = line.strip()
            if stripped in (SOLUTION_BEGIN, HIDDEN_BEGIN):
                inside = True
            elif stripped in (SOLUTION_END, HIDDEN_END):
                inside = False
            else:
                (secret if inside else public).add(stripped)
    return secret, public


def graded_checks(cells) -> list[tuple[str, list, list]]:
    """For each graded code cell: (grade_id, public calls, hidden calls). A public call is
    ``assert check_x(fn)`` outside the hidden region, as (checker name, function name); a hidden one is
    ``assert hidden_tests(check_x, fn, seeds=(...))`` inside it, as (checker name, function name, seeds)."""
    import ast

    found = []
    for cell in cells:
        meta = cell.metadata.get("nbgrader", {}) or {}
        if cell.cell_type != "code" or not meta.get("grade"):
            continue
        lines = cell.source.splitlines()
        hidden_lines, inside = set(), False
        for number, line in enumerate(lines, start=1):
            if line.strip() == HIDDEN_BEGIN:
                inside = True
            elif line.strip() == HIDDEN_END:
                inside = False
            elif inside:
                hidden_lines.add(number)
        public, hidden = [], []
        for node in ast.walk(ast.parse(cell.source)):
            if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Call)
                    and isinstance(node.test.func, ast.Name)):
                continue
            call, name = node.test, node.test.func.id
            names = [arg.id for arg in call.args if isinstance(arg, ast.Name)]
            if name == "hidden_tests" and node.lineno in hidden_lines:
                seeds = next(ast.literal_eval(k.value) for k in call.keywords if k.arg == "seeds")
                hidden.append((names[0], names[1], tuple(seeds)))
            elif name.startswith("check_") and node.lineno not in hidden_lines:
                public.append((name, names[0]))
        found.append((meta.get("grade_id", ""), public, hidden))
    return found
