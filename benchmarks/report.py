"""The results, three ways: a terminal table, ``latest.json`` + ``latest.md`` (written atomically), and the
recorded section of ``benchmarks/RESULTS.md`` for the device (between its ``results:<device>`` markers).

A run made with ``--quick`` is labelled SMOKE RUN in every output (its figures are not benchmark figures); a
full run on a machine whose load average exceeds half its cores is labelled LOADED MACHINE (read its process
CPU times, not its wall clock). :func:`smoke_label` writes both labels; RESULTS.md uses the same words.

Usage::

    print(text_table(rows))
    write_outputs(result, rows, Path("benchmarks/results"), results_md=Path("benchmarks/RESULTS.md"))
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from .machine import describe
from .row import Row

__all__ = ["text_table", "markdown_table", "render_markdown", "smoke_label", "write_atomic", "write_outputs",
           "update_results_md"]

_SCALE = {"ms": 1e3, "ms/img": 1e3, "s": 1.0}
HEADER = ("case", "unit", "ours median (min)", "torchvision median (min)", "speed-up", "target", "met")


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def _cell(row: Row, side: str) -> str:
    timing = getattr(row, side)
    if timing is None or row.segment not in timing.samples:
        return "-"
    scale = _SCALE[row.unit]
    return f"{_num(timing.median(row.segment) * scale)} ({_num(timing.min(row.segment) * scale)})"


def _met(row: Row) -> str:
    if row.failed:
        return row.check.split(":", 1)[0]
    return {None: "-", True: "yes", False: "NO"}[row.met]


def _fields(row: Row) -> tuple[str, ...]:
    speedup = "-" if row.speedup is None else f"{row.speedup:.2f}x"
    target = "-" if row.target is None else f">= {row.target:g}x"
    return (row.case, row.unit, _cell(row, "ours"), _cell(row, "theirs"), speedup, target, _met(row))


def text_table(rows: list[Row]) -> str:
    """Fixed-width table for the terminal; speed-up = torchvision time / ours (> 1: ours faster)."""
    lines = [_fields(r) for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(HEADER)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*HEADER), "  ".join("-" * w for w in widths)] + [fmt.format(*line) for line in lines]
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(f.replace("|", "/") for f in _fields(r)) + " |" for r in rows]
    return "\n".join(lines)


def smoke_label(result: dict[str, Any]) -> Optional[str]:
    """Why these figures are not benchmark figures, or None for a proper run."""
    reasons = []
    info = result["machine"]
    load = (f"load average {info['load_average_start'][0]} at start, "
            f"{info.get('load_average_end', ['?'])[0]} at end, on {info['cpu_cores']} cores")
    if result["settings"]["quick"]:
        reasons.append("--quick (tiny repeats and batches)")
        if result["loaded"]:
            reasons.append(f"loaded machine ({load})")
        return "SMOKE RUN: " + "; ".join(reasons) + ". Not benchmark figures."
    if result["loaded"]:
        # A full run on a shared machine: the wall clock includes waiting for the neighbours, the
        # process CPU time of a one-thread run does not (it counts the work done).
        threads = info.get("torch_threads")
        return (f"LOADED MACHINE ({load}; torch threads: {threads}): the wall-clock table includes time spent "
                "waiting for other jobs; read the process CPU time table"
                + ("." if threads == 1 else ", and prefer a one-thread run (--threads 1)."))
    return None


def _profile_md(case: str, side: str, profile: dict[str, Any]) -> list[str]:
    wall, ops_s = profile["wall_s"], profile["op_self_s"]
    lines = [f"**{case}, {side}**: one call took {wall * 1e3:.0f} ms; ops' self time {ops_s * 1e3:.0f} ms "
             f"(the rest, {max(wall - ops_s, 0) * 1e3:.0f} ms, is Python and dispatch between ops).", "",
             "| op | self ms | calls | share of wall |", "|---|---|---|---|"]
    lines += [f"| `{op['op']}` | {op['self_s'] * 1e3:.1f} | {op['calls']} | {100 * op['share']:.0f}% |"
              for op in profile["ops"][:8]]
    return lines + [""]


def render_markdown(result: dict[str, Any], rows: list[Row]) -> str:
    """The recorded section: label, command, machine, table, checks, notes, profiles of missed targets."""
    info, label = result["machine"], smoke_label(result)
    lines = [f"**{label}**", ""] if label else []
    lines += [f"- Command: `{result['command']}`", f"- Machine: {describe(info)}",
              f"- Settings: device {info['device']}, amp (bf16 + channels_last) {result['settings']['amp']}, "
              f"seed {result['settings']['seed']}; speed-up = torchvision median / ours median (> 1: ours faster)",
              "", "Wall clock:", "", markdown_table(rows), "",
              "Process CPU time (all threads; on a shared machine with one thread, closer to a quiet machine's wall "
              "clock than the wall clock is):", "", markdown_table([r.cpu_view() for r in rows]), "",
              "Checks (both sides computed the same thing):", ""]
    lines += [f"- {r.case}: {r.check}" for r in rows]
    notes = [f"- {r.case}: {note}" for r in rows for note in r.notes]
    if notes:
        lines += ["", "Notes:", ""] + notes
    profiled = [(r.case, side, p) for r in rows for side, p in r.profile.items()]
    if profiled:
        lines += ["", "Where the time goes in the rows that missed their target (torch.profiler, one call):", ""]
        for case, side, profile in profiled:
            lines += _profile_md(case, side, profile)
    return "\n".join(lines).rstrip() + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_results_md(path: Path, device_type: str, section: str) -> None:
    """Replace the text between ``<!-- results:<device>:begin -->`` and ``...:end -->`` (appended if absent)."""
    begin, end = f"<!-- results:{device_type}:begin -->", f"<!-- results:{device_type}:end -->"
    text = path.read_text() if path.exists() else "# ssd_lib benchmarks\n"
    block = f"{begin}\n{section}{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## Recorded figures: {device_type}\n\n{block}\n"
    write_atomic(path, text)


def write_outputs(result: dict[str, Any], rows: list[Row], out_dir: Path, results_md: Optional[Path]) -> str:
    """``latest.json`` and ``latest.md`` in ``out_dir``; the device's section of ``results_md`` unless None."""
    section = render_markdown(result, rows)
    payload = {**result, "rows": [r.to_dict() for r in rows]}
    write_atomic(out_dir / "latest.json", json.dumps(payload, indent=2, default=str) + "\n")
    write_atomic(out_dir / "latest.md", "# Latest benchmark run\n\n" + section)
    if results_md is not None:
        update_results_md(results_md, result["machine"]["device"].split(":")[0], section)
    return section
