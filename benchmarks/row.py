"""One line of the results table, and the settings every case reads.

A :class:`Row` holds both sides' timings (seconds), the speed-up target (theirs / ours) and the
outcome of the correctness check. ``finish_row`` profiles both sides of a row that misses its
target when ``--profile`` is on.

Usage::

    settings = Settings(device=torch.device("cpu"), quick=True)
    row = finish_row(Row("1 match + loss", ours_t, theirs_t, target=3.0, check=summary), settings, ours_fn, theirs_fn)
    print(row.speedup, row.met)
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ContextManager, Optional

import torch

from .checks import Mismatch
from .timing import Timing, top_ops

__all__ = ["Settings", "Row", "run_check", "finish_row", "error_row"]


@dataclass(frozen=True)
class Settings:
    """``quick``: tiny repeats and batches (a smoke run); ``amp``: bf16 autocast + channels_last for the
    timed calls (default: on for CUDA); ``profile``: profile the rows that miss their target."""

    device: torch.device
    quick: bool = False
    profile: bool = False
    amp: bool = False
    seed: int = 0

    def autocast(self) -> ContextManager:
        """bf16 autocast on ``device`` when ``amp`` is on, else nothing."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.amp else torch.contiguous_format


@dataclass
class Row:
    """``segment``: which lap of the timings this row reports (``"total"`` unless a call was split).
    ``target``: required speed-up theirs/ours (None: no target). ``check``: "ok: ..." or "MISMATCH: ..."."""

    case: str
    ours: Optional[Timing]
    theirs: Optional[Timing]
    target: Optional[float] = None
    check: str = "ok"
    unit: str = "ms"
    segment: str = "total"
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)

    def cpu_view(self) -> "Row":
        """The same row read in process CPU seconds (segment ``"<segment>:cpu"``), without profiles."""
        return replace(self, segment=f"{self.segment}:cpu", profile={})

    @property
    def failed(self) -> bool:
        return self.check.startswith(("MISMATCH", "ERROR"))

    @property
    def speedup(self) -> Optional[float]:
        """theirs / ours median time: > 1 means ours is faster. None without both sides or after a failed check."""
        if self.failed or self.ours is None or self.theirs is None:
            return None
        if self.segment not in self.ours.samples or self.segment not in self.theirs.samples:
            return None
        return self.theirs.median(self.segment) / self.ours.median(self.segment)

    @property
    def met(self) -> Optional[bool]:
        if self.target is None or self.speedup is None:
            return None
        return self.speedup >= self.target

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case, "unit": self.unit, "segment": self.segment,
            "ours": self.ours.to_dict() if self.ours else None,
            "theirs": self.theirs.to_dict() if self.theirs else None,
            "speedup": self.speedup, "target": self.target, "met": self.met, "check": self.check,
            "notes": self.notes, "extra": self.extra,
            "profile": {side: {k: v for k, v in p.items() if k != "table"} for side, p in self.profile.items()},
        }


def run_check(check: Callable[[], str]) -> str:
    """``"ok: <summary>"`` if ``check()`` passes, ``"MISMATCH: <why>"`` if it raises :class:`Mismatch`.
    The case is still timed after a mismatch, but its row reports no speed-up."""
    try:
        return f"ok: {check()}"
    except Mismatch as error:
        return f"MISMATCH: {error}"


def finish_row(row: Row, settings: Settings, ours: Callable[[], Any] | None = None,
               theirs: Callable[[], Any] | None = None) -> Row:
    """Attach profiles of both sides (one call each, torch.profiler) when ``--profile`` is on and the row missed."""
    if settings.profile and row.met is False:
        for side, fn in (("ours", ours), ("theirs", theirs)):
            if fn is not None:
                row.profile[side] = top_ops(fn, settings.device)
    return row


def error_row(case: str, error: BaseException) -> Row:
    """A row for a case that raised: MISMATCH for a failed check, ERROR for anything else."""
    if isinstance(error, Mismatch):
        return Row(case, None, None, check=f"MISMATCH: {error}")
    return Row(case, None, None, check=f"ERROR: {type(error).__name__}: {error}")
