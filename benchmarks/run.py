"""Run the benchmark suite: each case for ours and torchvision's on identical inputs, checked, then timed.

Cases: 1 match + loss, 2 post-processing, 3 inference, 4 training step, 5 augmentation,
6 VOC evaluation, 7 forward GFLOP/s vs matmul, 8 ONNX Runtime fp32/int8 vs PyTorch eager. Prints a
table, writes ``<out>/latest.json`` and ``<out>/latest.md``, and updates the device's section of
``benchmarks/RESULTS.md`` (when every case ran, or with ``--record``: a partial run does not replace
the recorded figures). Exit status 1 if any case's check found a MISMATCH or a case failed.

Usage::

    python -m benchmarks.run --quick --cases 1,2          # smoke run, < 60 s on a loaded 2-core machine
    python -m benchmarks.run                              # full CPU suite
    python -m benchmarks.run --device cuda --profile      # GPU (bf16 autocast + channels_last), profile misses
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from . import case_detect, case_flops, case_inference, case_loss, case_onnx, case_reused, case_train
from .machine import is_loaded, load_average, machine_info
from .report import smoke_label, text_table, write_outputs
from .row import Row, Settings, error_row

__all__ = ["CASES", "main", "parse_args", "run_cases", "settings_from_args"]

CASES: dict[int, tuple[str, Callable[[Settings], list[Row]]]] = {
    1: ("match + loss", case_loss.run),
    2: ("post-processing", case_detect.run),
    3: ("inference", case_inference.run),
    4: ("training step", case_train.run),
    5: ("augmentation", case_reused.run_augment),
    6: ("VOC evaluation", case_reused.run_metrics),
    7: ("forward GFLOP/s vs matmul", case_flops.run),
    8: ("ONNX Runtime fp32/int8 vs PyTorch eager", case_onnx.run),
}
RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny repeats, batch 8 on CPU for cases 3-4")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--cases", default=",".join(map(str, CASES)), help="comma-separated case numbers (default: all)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for latest.json/.md")
    parser.add_argument("--profile", action="store_true", help="torch.profiler top ops of every row missing its target")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own; --quick: 1, which a shared machine tolerates)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast + channels_last in the timed calls (default: on for cuda)")
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=None,
                        help="update benchmarks/RESULTS.md (default: only when every case ran)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> Settings:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here; run with --device cpu")
    device = torch.device(args.device)
    amp = args.amp if args.amp is not None else device.type == "cuda"
    return Settings(device=device, quick=args.quick, profile=args.profile, amp=amp, seed=args.seed)


def _parse_cases(text: str) -> list[int]:
    try:
        cases = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise SystemExit(f"--cases takes numbers like 1,2,5; got {text!r}") from None
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise SystemExit(f"--cases: unknown case(s) {unknown}; choose from {sorted(CASES)}")
    return cases


def run_cases(cases: list[int], settings: Settings) -> list[Row]:
    """Run each case, printing its rows as they come; a case that raises becomes an ERROR row."""
    rows: list[Row] = []
    for number in cases:
        name, run = CASES[number]
        start = time.perf_counter()
        print(f"[case {number}: {name}] ...", file=sys.stderr, flush=True)
        try:
            new_rows = run(settings)
        except Exception as error:  # keep going: one broken case must not hide the others
            new_rows = [error_row(f"{number} {name}", error)]
        for row in new_rows:
            print(f"  {row.case}: {row.check[:160]}", file=sys.stderr)
            for side, profile in row.profile.items():
                print(f"  profile of {side} ({profile['wall_s'] * 1e3:.0f} ms):\n{profile['table']}", file=sys.stderr)
        print(f"[case {number}: {time.perf_counter() - start:.1f} s]", file=sys.stderr, flush=True)
        rows += new_rows
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from_args(args)
    cases = _parse_cases(args.cases)
    threads = args.threads if args.threads is not None else (1 if args.quick else None)
    if threads is not None:
        torch.set_num_threads(threads)
    command = ("python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv)).strip()
    info = machine_info(settings.device)
    print(f"{command}\nload average at start: {info['load_average_start']} on {info['cpu_cores']} cores; "
          f"torch threads {info['torch_threads']}", flush=True)
    rows = run_cases(cases, settings)
    info["load_average_end"] = load_average()
    result = {"command": command, "machine": info, "cases": cases,
              "loaded": is_loaded(info["load_average_start"], info["cpu_cores"])
              or is_loaded(info["load_average_end"], info["cpu_cores"]),
              "settings": {"quick": settings.quick, "device": str(settings.device), "amp": settings.amp,
                           "profile": settings.profile, "threads": info["torch_threads"], "seed": settings.seed}}
    label = smoke_label(result)
    print(("\n" + label if label else "") + f"\nload average at end: {info['load_average_end']}\n")
    print("wall clock:\n" + text_table(rows))
    print("\nprocess CPU time (all threads):\n" + text_table([r.cpu_view() for r in rows]))
    record = args.record if args.record is not None else sorted(cases) == sorted(CASES)
    write_outputs(result, rows, args.out, RESULTS_MD if record else None)
    print(f"\nwrote {args.out / 'latest.json'}, {args.out / 'latest.md'}"
          + (f", {RESULTS_MD}" if record else f" ({RESULTS_MD.name} not updated: pass --record)"))
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
