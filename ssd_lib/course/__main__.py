"""``python -m ssd_lib.course student [--check]`` or ``python -m ssd_lib.course grade NOTEBOOK``."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["student"]:
        from .student import main as student_main

        return student_main(argv[1:])
    if argv[:1] == ["grade"]:
        from .grade import cli

        return cli(argv[1:])
    print("usage: python -m ssd_lib.course {student [--check] | grade NOTEBOOK [--teacher PATH] [--timeout S]}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
