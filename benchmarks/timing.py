"""Wall-clock timing of ours against theirs: warm-up, interleaved repeats, median and min, and a profiler summary.

Ours and theirs alternate inside every repeat (and swap who goes first each time), so a burst of load
from another process hits both sides alike. On CUDA every timed call is bracketed by
``torch.cuda.synchronize()``. A timed function may return a :class:`Laps` to report segments of
one call (forward, then end-to-end) without running it twice. Every segment is also recorded in
process CPU seconds (``"<segment>:cpu"``): on a shared machine, with one torch thread, CPU time
stays close to what a quiet machine's wall clock would show, while the wall time does not.

Usage::

    ours_t, theirs_t = measure_pair(ours_fn, theirs_fn, device, warmup=1, repeats=5)
    print(ours_t.median(), ours_t.min(), theirs_t.median() / ours_t.median())
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["Laps", "Timing", "synchronize", "time_call", "measure", "measure_pair", "top_ops"]


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Laps:
    """Split times inside one timed call: ``laps.mark("forward")`` records wall and CPU seconds since creation."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        synchronize(device)
        self.start, self.start_cpu = time.perf_counter(), time.process_time()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        synchronize(self.device)
        self.marks[name] = time.perf_counter() - self.start
        self.marks[f"{name}:cpu"] = time.process_time() - self.start_cpu


@dataclass
class Timing:
    """Seconds per repeat, per segment; segment ``"total"`` is the whole call."""

    samples: dict[str, list[float]] = field(default_factory=lambda: {"total": []})

    def add(self, total: float, segments: dict[str, float] | None = None) -> None:
        """``total`` wall seconds of one call; ``segments`` more named seconds (``total:cpu``, laps)."""
        self.samples["total"].append(total)
        for name, seconds in (segments or {}).items():
            self.samples.setdefault(name, []).append(seconds)

    def median(self, segment: str = "total") -> float:
        return statistics.median(self.samples[segment])

    def min(self, segment: str = "total") -> float:
        return min(self.samples[segment])

    @classmethod
    def from_seconds(cls, seconds: list[float]) -> "Timing":
        """A Timing of already measured repeats (e.g. from a reused benchmark script)."""
        return cls({"total": list(seconds)})

    def to_dict(self) -> dict[str, Any]:
        return {
            name: {"median_s": statistics.median(values), "min_s": min(values), "all_s": values}
            for name, values in self.samples.items()
        }


def time_call(fn: Callable[[], Any], device: torch.device) -> tuple[float, dict[str, float]]:
    """Wall seconds of one call of ``fn`` (synchronised on CUDA), and segments: ``total:cpu`` (process CPU
    seconds, all threads) plus the laps if ``fn`` returned a :class:`Laps`."""
    synchronize(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    out = fn()
    synchronize(device)
    total, total_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return total, {"total:cpu": total_cpu, **(out.marks if isinstance(out, Laps) else {})}


def measure(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> Timing:
    """``warmup`` untimed calls, then ``repeats`` timed ones."""
    for _ in range(warmup):
        fn()
    timing = Timing()
    for _ in range(repeats):
        timing.add(*time_call(fn, device))
    return timing


def measure_pair(
    ours: Callable[[], Any], theirs: Callable[[], Any], device: torch.device, warmup: int, repeats: int
) -> tuple[Timing, Timing]:
    """Time both sides, interleaved: repeat r runs ours first when r is even, theirs first when odd."""
    for _ in range(warmup):
        ours()
        theirs()
    ours_timing, theirs_timing = Timing(), Timing()
    for repeat in range(repeats):
        order = [(ours, ours_timing), (theirs, theirs_timing)]
        for fn, timing in order if repeat % 2 == 0 else order[::-1]:
            timing.add(*time_call(fn, device))
    return ours_timing, theirs_timing


def top_ops(fn: Callable[[], Any], device: torch.device, row_limit: int = 12) -> dict[str, Any]:
    """Profile one call of ``fn`` with torch.profiler: the ops with the most self time.

    Returns ``wall_s`` (the call), ``op_self_s`` (sum of all ops' self time; on CPU the rest of the
    wall time is Python and framework overhead between ops), ``ops`` (name, self seconds, calls,
    share of the wall time) and ``table`` (the profiler's own text table).
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    attribute = "self_cpu_time_total"
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        attribute = "self_device_time_total"
    with torch.profiler.profile(activities=activities) as prof:
        wall_s, _ = time_call(fn, device)
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attribute), reverse=True)
    total_self_s = sum(getattr(e, attribute) for e in events) / 1e6
    ops = [
        {"op": e.key, "self_s": getattr(e, attribute) / 1e6, "calls": e.count,
         "share": getattr(e, attribute) / 1e6 / wall_s}
        for e in events[:row_limit]
    ]
    table = prof.key_averages().table(sort_by=attribute, row_limit=row_limit)
    return {"wall_s": wall_s, "op_self_s": total_self_s, "ops": ops, "table": table}
