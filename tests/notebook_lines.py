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
