"""One assertion the checker test modules share: a check failed on the case built for a mistake, with the hint
that names that mistake."""
from __future__ import annotations


def assert_fails_on(result, checker_name: str, case: str, hint: str, whole_name: bool = False) -> None:
    """``result`` (a CheckResult) failed first on the case whose name starts with ``case`` (is ``case``, with
    ``whole_name``), and its hint contains ``hint``."""
    assert not result.passed, result.message
    prefix = f"❌ {checker_name}: case '{case}" + ("' (" if whole_name else "")
    assert result.message.startswith(prefix), result.message
    assert hint in result.message.split("Hint: ", 1)[1], result.message
