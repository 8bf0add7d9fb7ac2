"""The GPU half of the project in one command (issue #20): the GPU tests, then every GPU figure, in 8 minutes.

Usage::

    python -m benchmarks.gpu_suite OUT_DIR                            # on the GPU machine (or benchmarks/gpu_suite.sh)
    python -m benchmarks.gpu_suite OUT_DIR --dry-run --device cpu     # the same code on tiny sizes, on a CPU
    python -m benchmarks.gpu_suite --record-from OUT_DIR/summary.json # put a GPU run's figures into RESULTS.md here

Steps, in order. Each has its own time limit: a step past it is killed with its process, reported as
``timeout``, and the next step starts in a fresh process, so one hang cannot eat the rest.

| step | what | limit (GPU) |
|---|---|---|
| 1 | ``pytest -m gpu``: tests/test_gpu.py and every other gpu-marked test | 80 s |
| 2 | SSD300 inference end to end (decode + NMS), B=1 and 64, bf16 + channels_last, ours and torchvision's: benchmark case 3's ``run_batch`` (equality check first, then timing) | 40 s |
| 3 | SSD300 training step with data loading from the built-in dataset, B=32 and 64, bf16, ours and torchvision's: case 4's steps and check; images/s and peak GPU memory of each | 65 s |
| 4 | the course's small model, the main job's recipe (``ssd_lib.train.train``), test split evaluated every 290 steps: time to mAP@0.5 >= 0.90 (or 60 s of trying) | 75 s |
| 5 | SSD300 at 300 px on the built-in dataset, trained by ``ssd_lib.train.train`` for 3 minutes: test mAP@0.5 and images/s | 210 s |
| - | the summary (json + md) and the ``results:cuda`` section of benchmarks/RESULTS.md | 10 s |

With every step at its limit: 480 s, plus a few seconds for each process to import torch.

Goals (issue #20; H100/H200, bf16, batch 64), printed next to the figures: inference >= 4,000 images/s end
to end and >= 1.5x torchvision's; training >= 1,000 images/s including data loading. Where one is missed,
the summary adds a torch.profiler summary (device time per kernel family, and how busy the GPU was) and,
for training, the time spent waiting for the data loader and the loader's own rate.

What must travel to the GPU machine (checked at start; a missing piece is a one-line error):

- this repository: ssd_lib is imported from it (``pip install --no-deps --no-build-isolation -e .`` runs
  only when ssd_lib is not importable, or with ``--install``); the machine's torch is used as it is;
- Python with torch, torchvision, numpy, pillow, matplotlib, tqdm and pytest: the machine's image has them;
- optional, pycocotools (COCO AP in steps 4 and 5; the machine's image lacks it), as a wheel for its
  Python 3.12 in ``shared/wheels/`` (or ``--wheels DIR``), fetched beforehand where pip works::

      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
          -d shared/wheels pycocotools==2.0.11

  Without it, steps 4 and 5 say "COCO AP skipped: pycocotools missing" and report their VOC mAP.

Outputs, all in OUT_DIR (four files: the device tool brings back at most eight): ``summary.json`` (every
figure, the rows, the profiles), ``summary.md`` (the table, the goals, the profiles and the RESULTS.md
section), ``log.txt`` (everything the steps printed) and ``junit.xml`` (step 1). On a GPU, not in a dry run,
the ``results:cuda`` section of benchmarks/RESULTS.md is written by ``report.render_markdown`` and
``report.update_results_md``, the code that writes the CPU section; the device's copy of the repository does
not come back, so ``--record-from`` writes the same section from the fetched summary.json.

``--dry-run --device cpu`` runs the same steps on tiny sizes (a 64 px model in place of SSD300, with
torchvision's SSD class around a copy of it, so that cases 3 and 4 run their real code and checks; a few
steps; a 2 s training budget; target mAP 0; step 1 collects tests/test_gpu.py alone, whose tests skip
without CUDA: collecting the other gpu-marked modules costs 10 s more of CPU). It writes to OUT_DIR only,
never to RESULTS.md, and is part of the default test suite (tests/test_gpu_suite.py) so that it cannot rot
between GPU runs: 20 s of CPU in all its processes, 25 to 36 s of wall clock on the shared 2-core machine
at load average 4 to 10 (importing torch and torchvision once is about 7 s of the CPU time).

The supervising process imports no torch (only to ask, on a GPU run, whether CUDA is there): it checks the
requirements, starts one worker process for the steps (``--worker-dir``, internal), watches each step's
clock and starts a new worker after a kill.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = ["STEPS", "main", "supervise", "collect_summary", "kernel_family", "family_profile", "tiny_pair"]

REPO = Path(__file__).resolve().parents[1]
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
DEFAULT_WHEELS = REPO / "shared" / "wheels"
OUTPUT_FILES = ("summary.json", "summary.md", "log.txt", "junit.xml")


@dataclass(frozen=True)
class Step:
    number: int
    name: str
    limit_s: float  # on the GPU
    dry_limit_s: float  # in the dry run, on a loaded 2-core CPU


STEPS = (
    Step(1, "pytest -m gpu", 80, 60),
    Step(2, "SSD300 inference", 40, 60),
    Step(3, "SSD300 training + data loading", 65, 60),
    Step(4, "small model to mAP 0.90", 75, 60),
    Step(5, "SSD300 for 3 minutes", 210, 60),
)
REPORT_LIMIT_S = (10, 60)  # the summary phase, GPU and dry run
START_LIMIT_S = 120  # from a worker's start to its first step (its imports)
PER_TEST_LIMIT_S = 60  # pytest-timeout, where installed: one stuck test fails alone

INFERENCE_GOAL = 4000.0  # images/s end to end at B=64, bf16
INFERENCE_SPEEDUP_GOAL = 1.5  # against torchvision's, in the same run
TRAINING_GOAL = 1000.0  # images/s including data loading, B=64, bf16
SMALL_MODEL_TARGET = 0.90  # the course's test mAP@0.5 (README: the main job)

REQUIRED = {"torch": "everything", "torchvision": "ssd_lib and the torchvision side", "numpy": "ssd_lib",
            "PIL": "ssd_lib (pillow)", "matplotlib": "ssd_lib's plots", "tqdm": "ssd_lib's progress bars",
            "pytest": "step 1"}
OPTIONAL = {"pycocotools": "COCO AP in steps 4 and 5"}
FAILED = ("failed", "timeout", "crashed", "not run")


class SuiteError(Exception):
    """Bad input or a missing requirement: printed as one line, exit status 2."""


# ================================================================ the supervising process (no torch)

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_suite", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, help="folder for summary.json, summary.md, log.txt, junit.xml")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes: the same code in seconds (with --device cpu)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--steps", default=",".join(str(s.number) for s in STEPS), help="which steps (default: all)")
    parser.add_argument("--wheels", type=Path, default=None,
                        help="folder of wheels to install when a package is missing "
                             f"(default: {DEFAULT_WHEELS.relative_to(REPO)})")
    parser.add_argument("--install", action="store_true", help="pip install --no-deps -e . even if ssd_lib imports")
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=None,
                        help="write the results:cuda section of RESULTS.md (default: on a GPU when every step ran)")
    parser.add_argument("--record-from", type=Path, help="write RESULTS.md's results:cuda section from this summary.json")
    parser.add_argument("--worker-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-steps", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.record_from is None and args.out is None:
        parser.error("give OUT_DIR (or --record-from SUMMARY_JSON)")
    return args


def _selected_steps(text: str) -> list[Step]:
    by_number = {s.number: s for s in STEPS}
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SuiteError(f"--steps takes numbers like 2,3; got {text!r}") from None
    unknown = sorted(set(numbers) - set(by_number))
    if unknown or not numbers:
        raise SuiteError(f"--steps: choose from {sorted(by_number)}; got {text!r}")
    return [by_number[n] for n in sorted(set(numbers))]


def _pip(args: list[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        raise SuiteError(f"pip could not install {what}: {last}")


def prepare(args: argparse.Namespace) -> tuple[dict[str, str], list[str]]:
    """Check what must travel (module header); install carried wheels and the project where needed.
    Returns the environment for the workers and notes to print. Raises SuiteError (one line)."""
    if args.device == "cpu" and not args.dry_run:
        raise SuiteError("--device cpu runs only with --dry-run (the full sizes need a GPU): add --dry-run")
    if args.dry_run and args.record:
        raise SuiteError("a dry run never writes RESULTS.md: drop --record")
    if args.out.exists() and not args.out.is_dir():
        raise SuiteError(f"{args.out} is a file: OUT_DIR must be a folder (it is created if missing)")
    env, notes = dict(os.environ, PYTHONUNBUFFERED="1"), []
    wheel_dir = args.wheels or DEFAULT_WHEELS
    if args.wheels is not None and not wheel_dir.is_dir():
        raise SuiteError(f"--wheels {wheel_dir}: no such folder")
    wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    if args.wheels is not None and not wheels:
        raise SuiteError(f"--wheels {wheel_dir}: no .whl files there; put the wheels for this machine's Python "
                         f"{sys.version_info.major}.{sys.version_info.minor} in it (header of benchmarks/gpu_suite.py)")
    missing = [m for m in {**REQUIRED, **OPTIONAL} if importlib.util.find_spec(m) is None]
    if missing and wheels:
        site = Path(tempfile.mkdtemp(prefix="gpu_suite_site_"))
        _pip(["install", "-q", "--no-index", "--no-deps", "--no-compile", "--target", str(site), *map(str, wheels)],
             f"the wheels in {wheel_dir}")
        sys.path.insert(0, str(site))
        importlib.invalidate_caches()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        notes.append(f"installed {len(wheels)} wheel(s) from {wheel_dir} into {site}")
        missing = [m for m in missing if importlib.util.find_spec(m) is None]
    absent = [m for m in missing if m in REQUIRED]
    if absent:
        raise SuiteError("missing " + ", ".join(f"{m} (for {REQUIRED[m]})" for m in absent) + ": carry wheels for "
                         f"Python {sys.version_info.major}.{sys.version_info.minor} in {DEFAULT_WHEELS.relative_to(REPO)}/ "
                         "or --wheels DIR (header of benchmarks/gpu_suite.py)")
    notes += [f"{m} missing: {OPTIONAL[m]} skipped" for m in missing if m in OPTIONAL]
    if args.install or importlib.util.find_spec("ssd_lib") is None:
        _pip(["install", "-q", "--no-deps", "--no-build-isolation", "-e", str(REPO)], "the project (pip install -e .)")
        notes.append("installed the project: pip install --no-deps --no-build-isolation -e .")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SuiteError(f"no CUDA device is visible to torch {torch.__version__} here: run on the GPU machine, "
                             "or make the CPU dry run with --dry-run --device cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env, notes


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    from ssd_lib.files import write_text  # stdlib only: atomic, so the supervisor never reads half a file

    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def _step_file(work: Path, name: str) -> Path:
    return work / f"step_{name}.json"


def summarise_tests(path: Path) -> dict[str, Any]:
    """Outcomes from the lines ``_TestRecorder`` wrote (complete even when pytest was killed)."""
    rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
    worst: dict[str, dict] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    for record in map(json.loads, lines):
        old = worst.get(record["test"])
        if old is None or rank[record["outcome"]] > rank[old["outcome"]]:
            worst[record["test"]] = record
    counts: dict[str, Any] = {outcome: sorted(t for t, r in worst.items() if r["outcome"] == outcome) for outcome in rank}
    counts["reasons"] = {t: r["reason"] for t, r in worst.items() if r["reason"]}
    return counts


def tests_status(tests: dict[str, Any], exit_code: int | None = None) -> str:
    passed, skipped, bad = len(tests["passed"]), len(tests["skipped"]), tests["failed"] + tests["error"]
    total = passed + skipped + len(bad)
    if bad:
        names = ", ".join(t.split("::")[-1] for t in bad)
        return f"failed: {len(bad)} of {total} GPU tests failed ({names}); see log.txt"
    if exit_code not in (None, 0):
        return f"failed: pytest exited with status {exit_code}; see log.txt"
    if total == 0:
        return "failed: no gpu-marked test ran"
    if passed == 0:
        reason = next(iter(tests["reasons"].values()), "").removeprefix("Skipped: ")
        return f"skipped: {skipped} GPU tests skipped ({reason})"
    return "ok"


def supervise(pending: list[str], work: Path, limits: dict[str, float], launch: Callable[[list[str]], subprocess.Popen],
              say: Callable[[str], None] = print, start_limit_s: float = START_LIMIT_S) -> None:
    """Run ``pending`` (step names, in order) in worker processes, ``launch(names)`` starting one. A worker
    writes ``current.json`` (step, pid, start time) when it starts a step and ``step_<name>.json`` when it
    ends one. A step past its limit is killed with the worker's whole process group and recorded as a
    timeout; a worker that dies records its step as crashed; either way a new worker takes the next step."""
    shown: set[str] = set()  # what has been said once: the environment line
    while pending:
        proc = launch(pending)
        try:
            exit_code, pending = _watch(proc, pending, work, limits, say, start_limit_s, shown)
        except BaseException:  # Ctrl-C on the supervisor: the worker (its own session) must not run on
            _kill(proc)
            raise
        if exit_code is None:
            continue  # killed: the next worker takes the rest
        remaining = [name for name in pending if not _step_file(work, name).exists()]
        if remaining:
            name = remaining[0]
            status = f"crashed: the worker exited with status {exit_code} during this step; see log.txt"
            _write_json(_step_file(work, name), {"status": status, "seconds": 0})
            say(f"[step {name}] {status}")
            remaining = remaining[1:]
        pending = remaining


def _watch(proc: subprocess.Popen, pending: list[str], work: Path, limits: dict[str, float],
           say: Callable[[str], None], start_limit_s: float, shown: set[str]) -> tuple[int | None, list[str]]:
    """Watch one worker until it exits (its exit status, ``pending``) or is killed (None, the steps after
    the killed one)."""
    launched, announced, started = time.monotonic(), set(), set()
    while True:
        exit_code = proc.poll()
        if "environment" not in shown and (env := _read_json(work / "environment.json")) is not None:
            shown.add("environment")
            say(env["line"])  # the torch, CUDA and GPU the figures come from
        current = _read_json(work / "current.json")
        if current is not None and current.get("pid") != proc.pid:
            current = None  # left by an earlier worker
        if current is not None and current["step"] not in started:
            started.add(current["step"])
            say(f"[step {current['step']}] started (limit {limits[current['step']]:.0f} s)")
        for name in pending:
            if name not in announced and _step_file(work, name).exists():
                announced.add(name)
                result = _read_json(_step_file(work, name)) or {}
                say(f"[step {name}] {result.get('status', '?')} in {result.get('seconds', 0):.0f} s: "
                    f"{result.get('figures', '')}"[:300])
        if exit_code is not None:
            break
        running = current is not None and not _step_file(work, current["step"]).exists()
        if running and time.time() - current["started"] > limits[current["step"]]:
            name = current["step"]
            _kill(proc)
            status = f"timeout: killed after its limit of {limits[name]:.0f} s"
            extra = {}
            if (work / "pytest.jsonl").exists() and name == "1":
                extra["tests"] = summarise_tests(work / "pytest.jsonl")
                status += f" ({len(extra['tests']['passed'])} tests had passed)"
            _write_json(_step_file(work, name), {"status": status, "seconds": limits[name], **extra})
            say(f"[step {name}] {status}")
            return None, pending[pending.index(name) + 1:]
        if current is None and time.monotonic() - launched > start_limit_s:
            _kill(proc)
            status = f"timeout: the worker did not start step {pending[0]} within {start_limit_s:.0f} s"
            _write_json(_step_file(work, pending[0]), {"status": status, "seconds": 0})
            say(f"[step {pending[0]}] {status}")
            return None, pending[1:]
        time.sleep(0.2)
    return exit_code, pending


def _kill(proc: subprocess.Popen) -> None:
    """The worker and its children (data-loader workers) are one process group: it was started in a new session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def collect_summary(work: Path) -> dict[str, Any]:
    """Everything the steps left in ``work``, in step order, with the exit status: 1 if a step failed."""
    meta = _read_json(work / "meta.json") or {}
    steps = []
    for step in STEPS:
        if step.number not in meta.get("steps", []):
            continue
        result = _read_json(_step_file(work, str(step.number))) or {"status": "not run"}
        limit = step.dry_limit_s if meta.get("dry_run") else step.limit_s
        steps.append({"number": step.number, "name": step.name, "limit_s": limit, **result})
    failed = [s for s in steps if s["status"].startswith(FAILED)]
    return {"meta": meta, "environment": _read_json(work / "environment.json") or {}, "steps": steps,
            "exit_status": 1 if failed else 0}


def _met(value: bool | None) -> str:
    return {None: "-", True: "yes", False: "NO"}[value]


def summary_table(summary: dict[str, Any]) -> str:
    """The summary as a markdown table (also readable in a terminal)."""
    lines = ["| step | status | seconds (limit) | figures | goal | met |", "|---|---|---|---|---|---|"]
    for s in summary["steps"]:
        cells = [f"{s['number']} {s['name']}", s["status"], f"{s.get('seconds', 0):.0f} ({s['limit_s']:.0f})",
                 s.get("figures", ""), s.get("goal") or "-", _met(s.get("met"))]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def profiles_markdown(summary: dict[str, Any]) -> str:
    """Where the time went in the steps that missed a goal: kernel families, how busy the device was, the loader."""
    lines = []
    for s in summary["steps"]:
        for label, p in s.get("profiles", {}).items():
            lines += [f"**Step {s['number']}, {label}**: {p['calls']} calls of {p['wall_s'] * 1e3:.1f} ms; "
                      f"{p['unit']} {p['busy_s'] * 1e3:.1f} ms per call ({p['busy_share']:.0%} of the wall clock).", "",
                      "| kernel family | ms per call | share |", "|---|---|---|"]
            lines += [f"| {f['family']} | {f['seconds'] * 1e3:.2f} | {f['share']:.0%} |" for f in p["families"]]
            largest = "; ".join(f"`{t['name'][:80]}` {t['seconds'] * 1e3:.2f} ms" for t in p["top"][:5])
            lines += ["", f"Largest: {largest}", ""]
        for note in s.get("loader", []):
            lines.append(f"- Step {s['number']}, data loading: {note}")
    return "\n".join(lines).strip()


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """``summary.json`` and ``summary.md`` (atomic writes)."""
    meta, env = summary["meta"], summary["environment"]
    md = ["# GPU suite" + (" (dry run: tiny sizes, not benchmark figures)" if meta.get("dry_run") else ""), "",
          f"- Command: `{meta.get('command', '?')}`", f"- Environment: {env.get('line', 'unknown (no step ran)')}",
          f"- Started {meta.get('started', '?')}; exit status {summary['exit_status']}", ""]
    md += [f"- Note: {note}" for note in meta.get("notes", [])]
    md += ["", summary_table(summary), ""]
    profiles = profiles_markdown(summary)
    if profiles:
        md += ["## Where the time goes (goals missed)", "", profiles, ""]
    if summary.get("section"):
        md += ["## The results:cuda section of benchmarks/RESULTS.md", "", summary["section"]]
    _write_json(out / "summary.json", summary)
    from ssd_lib.files import write_text

    write_text(out / "summary.md", "\n".join(md).rstrip() + "\n")


def _worker_launcher(args: argparse.Namespace, work: Path, env: dict[str, str],
                     log) -> Callable[[list[str]], subprocess.Popen]:
    def launch(pending: list[str]) -> subprocess.Popen:
        command = [sys.executable, "-m", "benchmarks.gpu_suite", str(args.out), "--worker-dir", str(work),
                   "--worker-steps", ",".join(pending), "--device", args.device] + (["--dry-run"] if args.dry_run else [])
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return launch


def run_suite(args: argparse.Namespace, env: dict[str, str], notes: list[str], command: str) -> int:
    steps = _selected_steps(args.steps)  # checked before prepare(); cheap
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:  # a file left by an earlier run must not pass for this run's
        (out / name).unlink(missing_ok=True)
    record = args.record if args.record is not None else (not args.dry_run and len(steps) == len(STEPS))
    work = Path(tempfile.mkdtemp(prefix="gpu_suite_"))
    limits = {str(s.number): s.dry_limit_s if args.dry_run else s.limit_s for s in steps}
    limits["report"] = REPORT_LIMIT_S[args.dry_run]
    meta = {"command": command, "dry_run": args.dry_run, "device": args.device, "record": record,
            "steps": [s.number for s in steps], "notes": notes,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    _write_json(work / "meta.json", meta)
    print(f"{command}\nsteps {', '.join(limits)}; limits {limits} s; worst case {sum(limits.values()):.0f} s", flush=True)
    for note in notes:
        print(f"note: {note}", flush=True)
    with open(out / "log.txt", "a") as log:
        supervise([str(s.number) for s in steps] + ["report"], work, limits, _worker_launcher(args, work, env, log),
                  say=lambda line: print(line, flush=True))
    summary = _read_json(out / "summary.json")
    if summary is None:
        summary = collect_summary(work)  # the report phase failed: the summary without the RESULTS.md section
        summary["meta"]["notes"] = notes + ["the report phase failed (see log.txt): no RESULTS.md section"]
        write_summary(out, summary)
    print("\n" + (summary.get("environment") or {}).get("line", "") + "\n" + summary_table(summary))
    print(f"\nwrote {', '.join(str(out / n) for n in OUTPUT_FILES if (out / n).exists())}"
          + (f"; {RESULTS_MD.relative_to(REPO)} (results:cuda)" if summary.get("recorded") else ""))
    shutil.rmtree(work, ignore_errors=True)
    return summary["exit_status"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker_dir is not None:
        return _worker(args)
    command = "python -m benchmarks.gpu_suite " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        if args.record_from is not None:
            return record_from(args.record_from)
        _selected_steps(args.steps)
        env, notes = prepare(args)
        return run_suite(args, env, notes, command)
    except SuiteError as error:
        print(f"gpu_suite: {error}", file=sys.stderr)
        return 2


# ================================================================ the worker process (torch from here on)

@dataclass(frozen=True)
class Sizes:
    """The sizes of every step: :meth:`gpu` (the figures) or :meth:`dry` (the same code in seconds on a CPU)."""

    inference_batches: tuple[int, ...]
    train_batches: tuple[int, ...]
    train_timed_steps: int
    workers: int  # data-loader processes
    small_image_size: int
    small_batch: int
    small_steps_per_eval: int
    small_evals: int  # small_steps_per_eval * small_evals = the main job's 2900 steps
    small_target: float
    small_budget_s: float
    ssd300_train_s: float
    ssd300_batch: int
    test_images: int
    profile_calls: int  # calls of each profiled function (where a goal is missed)

    @classmethod
    def gpu(cls) -> "Sizes":
        workers = max(2, min((os.cpu_count() or 4) - 2, 12))  # a core each, two left for the main process
        return cls((1, 64), (32, 64), 30, workers, 128, 32, 290, 10, SMALL_MODEL_TARGET, 60.0, 180.0, 32, 500, 3)

    @classmethod
    def dry(cls) -> "Sizes":
        return cls((2,), (2,), 2, 1, 64, 8, 2, 2, 0.0, 20.0, 2.0, 4, 8, 1)


@dataclass(frozen=True)
class Context:
    device: Any  # torch.device
    dry: bool
    sizes: Sizes
    out: Path
    work: Path
    seed: int = 0

    def settings(self):
        from .row import Settings

        return Settings(device=self.device, quick=self.dry, amp=True, seed=self.seed)

    def pair(self, num_classes: int):
        """(ours, torchvision's) with the same weights: SSD300 (benchmark cases 3-4), or the dry run's tiny pair."""
        if self.dry:
            return tiny_pair(num_classes, image_size=64, seed=self.seed)
        from .torchvision_side import model_pair

        return model_pair(num_classes, seed=self.seed)


SHAPES_CLASSES = 7  # the built-in dataset's 6 shapes + background


def tiny_pair(num_classes: int, image_size: int = 64, seed: int = 0):
    """The dry run's stand-in for ``model_pair``: the course's small model at ``image_size`` px as ours, and
    torchvision's ``SSD`` class (its head layout, anchor generator, matcher, loss and post-processing) around a
    copy of the same network as theirs, so that cases 3 and 4 run their real code, checks included, in seconds."""
    import copy
    from collections import OrderedDict

    import torch
    from torch import nn
    from torchvision.models.detection.ssd import SSD as TorchvisionSSD
    from torchvision.models.detection.ssd import SSDHead

    from ssd_lib.detect import NMS_THRESHOLD, PRE_NMS_TOP_K, SCORE_THRESHOLD, TOP_K
    from ssd_lib.model import ModelConfig, build_model

    from .torchvision_side import anchor_generator_like, identity_transform

    class FeatureDict(nn.Module):  # torchvision's SSD takes a backbone that returns an OrderedDict of maps
        def __init__(self, body: nn.Module) -> None:
            super().__init__()
            self.body = body

        def forward(self, images):
            return OrderedDict((str(i), f) for i, f in enumerate(self.body(images)))

    torch.manual_seed(seed)
    ours = build_model(ModelConfig.small(num_classes, image_size=image_size))
    cfg = ours.prior_config
    head = SSDHead(list(ours.backbone.out_channels), list(cfg.boxes_per_location), num_classes)
    head.classification_head.module_list = copy.deepcopy(ours.conf_heads)
    head.regression_head.module_list = copy.deepcopy(ours.loc_heads)
    theirs = TorchvisionSSD(FeatureDict(copy.deepcopy(ours.backbone)), anchor_generator_like(cfg), (image_size,) * 2,
                            num_classes, head=head, score_thresh=SCORE_THRESHOLD, nms_thresh=NMS_THRESHOLD,
                            detections_per_img=TOP_K, topk_candidates=PRE_NMS_TOP_K)
    theirs.transform = identity_transform(image_size)
    return ours, theirs


# ---------------------------------------------------------------- profiles

_FAMILIES = [  # first match wins; names of CUDA kernels and of aten ops (the CPU dry run), lower case
    ("NMS", r"nms"),
    ("batch norm", r"batch_?norm|bn_fw|bn_bw|\bbn_"),
    ("convolution", r"conv|fprop|dgrad|wgrad|implicit_?gemm|winograd|mkldnn"),  # cuDNN's names say which pass
    ("matmul", r"gemm|cublas|cutlass|matmul|aten::mm\b|addmm|bmm"),
    ("sort / top-k", r"sort|topk|radix|scan|bitonic"),
    ("softmax / cross-entropy", r"softmax|nll|cross_entropy"),
    ("optimizer", r"multi_tensor|foreach|sgd|adam"),
    ("pooling", r"pool"),
    ("reduction", r"reduce|\bsum\b|norm|argmax|amax|\bmax\b|\bmin\b|mean"),
    ("copy / indexing", r"memcpy|memset|copy|\bcat\b|index|gather|scatter|nonzero|masked|where|fill|clone|contiguous"),
    ("elementwise", r"elementwise|vectorized|unrolled|relu|add|mul|clamp|exp|log|div|sub|threshold"),
]


def kernel_family(name: str) -> str:
    """What a CUDA kernel (or, on a CPU, an aten op) does, from its name: 'convolution', 'NMS', ... or 'other'."""
    lower = name.lower()
    return next((family for family, pattern in _FAMILIES if re.search(pattern, lower)), "other")


def family_profile(fn: Callable[[], Any], device, calls: int = 3, top: int = 8) -> dict[str, Any]:
    """Where the time of ``fn`` goes: torch.profiler over ``calls`` calls (after one untimed call). On CUDA the
    device time of each kernel, grouped by :func:`kernel_family`, and the share of the wall clock the device
    was busy (a low share means the GPU waits for the host: launches, syncs, data); on a CPU the self time of
    each op. Figures are per call."""
    import torch
    from torch.autograd import DeviceType

    from .timing import time_call

    fn()
    cuda = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        wall = sum(time_call(fn, device)[0] for _ in range(calls))
    events = prof.key_averages()
    if cuda:
        timed = [(e.key, e.self_device_time_total, e.count) for e in events if e.device_type == DeviceType.CUDA]
    else:
        timed = [(e.key, e.self_cpu_time_total, e.count) for e in events if e.device_type == DeviceType.CPU]
    total_us = sum(us for _, us, _ in timed) or 1e-9
    families: dict[str, float] = {}
    for name, us, _ in timed:
        families[kernel_family(name)] = families.get(kernel_family(name), 0.0) + us
    return {
        "calls": calls, "wall_s": wall / calls, "busy_s": total_us / 1e6 / calls,
        "busy_share": total_us / 1e6 / max(wall, 1e-9),
        "unit": "device time" if cuda else "CPU self time of the ops",
        "families": [{"family": f, "seconds": us / 1e6 / calls, "share": us / total_us}
                     for f, us in sorted(families.items(), key=lambda item: -item[1])],
        "top": [{"name": n, "seconds": us / 1e6 / calls, "calls": c // calls}
                for n, us, c in sorted(timed, key=lambda item: -item[1])[:top]],
    }


def _profiles(functions: dict[str, Callable[[], Any]], ctx: Context, result: dict) -> dict[str, Any]:
    """:func:`family_profile` of each function; a profiler that fails is a note, not a failed step (the
    figures were measured without it)."""
    profiles = {}
    for label, fn in functions.items():
        try:
            profiles[label] = family_profile(fn, ctx.device, ctx.sizes.profile_calls)
        except Exception as error:
            result.setdefault("notes", []).append(f"profile of {label} failed: {type(error).__name__}: {error}")
    return profiles


# ---------------------------------------------------------------- step 1: pytest -m gpu

class _TestRecorder:
    """A pytest plugin: one JSON line per test as it ends, so that a step killed at its limit still says
    which tests had run (``summarise_tests`` reads them)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pytest_runtest_logreport(self, report) -> None:
        if report.passed and report.when != "call":
            return
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = report.longrepr[2]
        elif report.failed:
            reason = (report.longreprtext.strip().splitlines() or [""])[-1]
        outcome = "error" if report.failed and report.when != "call" else report.outcome
        with open(self.path, "a") as f:
            f.write(json.dumps({"test": report.nodeid, "outcome": outcome, "reason": reason[:300]}) + "\n")


def _marks_gpu(source: str) -> bool:
    """Whether a test module has a gpu-marked test: a decorator, or ``pytestmark`` (not the text in a string)."""
    if "mark.gpu" not in source:
        return False
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if any("mark.gpu" in ast.unparse(d) for d in node.decorator_list):
                return True
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            if "mark.gpu" in ast.unparse(node.value):
                return True
    return False


def gpu_test_files() -> list[Path]:
    """Every test module with a gpu-marked test (tests/test_gpu.py, tests/test_doctor.py, ...)."""
    return [p for p in sorted((REPO / "tests").glob("test_*.py")) if _marks_gpu(p.read_text())]


def step_pytest(ctx: Context) -> dict[str, Any]:
    """Step 1: ``pytest -m gpu``, in the worker's own process (a process of its own would import torch and
    torchvision again: 5.5 s of the dry run's CPU); what the tests leave (a process group, compiled graphs)
    is cleared after them."""
    import pytest
    import torch

    # hypothesis's pytest plugin costs 2.5 s of CPU to load and no GPU test uses it.
    files = gpu_test_files() if not ctx.dry else [REPO / "tests" / "test_gpu.py"]
    args = ["-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-m", "gpu",
            f"--junitxml={ctx.out / 'junit.xml'}", *map(str, files)]
    if importlib.util.find_spec("pytest_timeout") and not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        args[:0] = ["--timeout", str(PER_TEST_LIMIT_S)]
    code = int(pytest.main(args, plugins=[_TestRecorder(ctx.work / "pytest.jsonl")]))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # a failed test must not leave its group to the next steps
    torch._dynamo.reset()  # the compile test's graphs
    tests = summarise_tests(ctx.work / "pytest.jsonl")
    status = tests_status(tests, code if code != 5 else None)
    failed = len(tests["failed"] + tests["error"])
    figures = f"{len(tests['passed'])} passed, {len(tests['skipped'])} skipped, {failed} failed"
    from .row import Row

    check = "ok: " + figures if not status.startswith("failed") else "ERROR: " + status.removeprefix("failed: ")
    return {"status": status, "figures": figures, "tests": tests,
            "rows": [Row(f"1 pytest -m gpu ({len(files)} file{'s' * (len(files) > 1)})", None, None,
                         check=check).to_dict()]}


# ---------------------------------------------------------------- step 2: inference

def _rows_status(rows) -> str:
    bad = [r for r in rows if r.failed]
    return "ok" if not bad else f"failed: {bad[0].case}: {bad[0].check[:200]}"


def step_inference(ctx: Context) -> dict[str, Any]:
    """Step 2: benchmark case 3 (``case_inference.run_batch``) at each batch size, bf16 + channels_last."""
    import torch

    from ssd_lib.detect import detect

    from . import case_inference
    from .inputs import random_images
    from .torchvision_side import head_forward, postprocess, torchvision_anchors

    settings, batches = ctx.settings(), ctx.sizes.inference_batches
    models = ctx.pair(case_inference.NUM_CLASSES)
    rows = [row for batch in batches for row in case_inference.run_batch(settings, batch, models)]
    for row in rows:  # "3 forward only (B=1, ...)" is case 3's name; here it is step 2
        row.case = f"2 (case 3) {row.case.split(' ', 1)[1]}"
    end_to_end = [r for r in rows if r.segment == "end_to_end"]
    parts = []
    for batch, row in zip(batches, end_to_end):
        rates, speedup = row.extra["images_per_s"], row.speedup
        parts.append(f"B={batch}: ours {rates['ours']:.0f} img/s, torchvision {rates['theirs']:.0f}"
                     + (f" ({speedup:.2f}x)" if speedup is not None else ""))
    last, batch = end_to_end[-1], batches[-1]
    met = (last.extra["images_per_s"]["ours"] >= INFERENCE_GOAL and last.speedup is not None
           and last.speedup >= INFERENCE_SPEEDUP_GOAL)
    result = {"status": _rows_status(rows), "figures": "end to end, " + "; ".join(parts),
              "goal": f">= {INFERENCE_GOAL:.0f} img/s at B={batch} and >= {INFERENCE_SPEEDUP_GOAL}x torchvision",
              "met": met, "rows": [r.to_dict() for r in rows]}
    if not met:  # where the time goes, on both sides, at the largest batch
        ours_model, theirs_model = models
        cfg, device = ours_model.prior_config, ctx.device
        images = random_images(batch, cfg.image_size).to(device).contiguous(memory_format=settings.memory_format)
        anchors = torchvision_anchors(theirs_model, cfg, batch, device)

        def ours():
            with torch.inference_mode():
                with settings.autocast():
                    loc, logits = ours_model(images)
                return detect(loc, logits, ours_model.priors)

        def theirs():
            with torch.inference_mode():
                with settings.autocast():
                    head = head_forward(theirs_model, images)
                return postprocess(theirs_model, {k: v.float() for k, v in head.items()}, anchors, cfg.image_size)

        result["profiles"] = _profiles({f"ours (B={batch})": ours, f"torchvision (B={batch})": theirs}, ctx, result)
    return result


# ---------------------------------------------------------------- step 3: training with data loading

def _train_loader(ctx: Context, image_size: int, batch: int, steps: int):
    """The built-in dataset through the trainer's seeded SSD augmentation (the released recipe's, all parts
    on), in worker processes with pinned memory on CUDA; PyTorch's default prefetch (2 batches a worker)."""
    import torch

    from ssd_lib.augment import SSDAugmentation
    from ssd_lib.data import ShapesDataset, collate
    from ssd_lib.train import EpochSampler, SeededAugmented, TrainConfig

    n = batch * steps
    data = SeededAugmented(ShapesDataset("train", size=n, image_size=image_size),
                           SSDAugmentation(size=image_size, **TrainConfig.released().augment), ctx.seed)
    return torch.utils.data.DataLoader(data, batch_size=batch, sampler=EpochSampler(n, ctx.seed), collate_fn=collate,
                                       num_workers=ctx.sizes.workers, pin_memory=ctx.device.type == "cuda",
                                       drop_last=True)


def _to_device(batch, image_size: int, device, memory_format):
    """A loaded batch as case 4 takes it: images on the device, and GroundTruth (normalised and pixel boxes)."""
    from .inputs import GroundTruth

    images, targets = batch
    images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
    boxes_px = [t["boxes"].to(device, non_blocking=True) for t in targets]
    labels = [t["labels"].to(device, non_blocking=True) for t in targets]
    return images, GroundTruth([b / image_size for b in boxes_px], boxes_px, labels)


def _timed_steps(loader, step_for: Callable, ctx: Context, image_size: int, warmup: int,
                 timed: int) -> tuple[list[float], list[float]]:
    """``warmup`` then ``timed`` steps from a fresh iterator: per timed step, the seconds spent waiting for
    the loader and the seconds of the whole step (wait + copy + training step, synchronised)."""
    from .timing import synchronize

    memory_format = ctx.settings().memory_format
    batches, waits, totals = iter(loader), [], []
    for i in range(warmup + timed):
        start = time.perf_counter()
        batch = next(batches)
        loaded = time.perf_counter()
        step_for(*_to_device(batch, image_size, ctx.device, memory_format))()
        synchronize(ctx.device)
        if i >= warmup:
            waits.append(loaded - start)
            totals.append(time.perf_counter() - start)
    del batches  # ends the loader's worker processes
    return waits, totals


def _loader_rate(loader, warmup: int, timed: int) -> float:
    """Images/s of the loader alone (no training step), after ``warmup`` batches."""
    batches = iter(loader)
    for _ in range(warmup):
        next(batches)
    start = time.perf_counter()
    images = sum(next(batches)[0].shape[0] for _ in range(timed))
    return images / (time.perf_counter() - start)


def step_training(ctx: Context) -> dict[str, Any]:
    """Step 3: case 4's training steps (``case_train.make_steps``, its float32 check first) on batches from the
    built-in dataset's loader, bf16 + channels_last; each side alone on the GPU for its peak memory."""
    import torch

    from . import case_train
    from .row import Row, run_check
    from .timing import Timing

    settings, device, sizes = ctx.settings(), ctx.device, ctx.sizes
    fmt = settings.memory_format
    ours, theirs = ctx.pair(SHAPES_CLASSES)
    ours, theirs = ours.train().to(device, memory_format=fmt), theirs.train().to(device, memory_format=fmt)
    size = ours.prior_config.image_size
    # Warm-up of more steps than the loader holds ready (2 batches per worker), so that the timed steps
    # wait for the loader as a long run does.
    warmup, timed = 2 * sizes.workers + 2, sizes.train_timed_steps
    loaders = {b: _train_loader(ctx, size, b, warmup + timed + 2) for b in sizes.train_batches}
    first = _to_device(next(iter(loaders[sizes.train_batches[0]])), size, device, fmt)
    ours_step, theirs_step = case_train.make_steps(settings, ours, theirs, *first, amp=False)
    check = run_check(lambda: case_train._check(ours_step, theirs_step, ours, theirs))
    notes = ["case 4's steps, built for each batch: every step has a new SGD (no momentum carried over; the same "
             "work per step)", "case 4's ours checks the targets on the device (match_batch(validate=True)); the "
             "trainer checks them once on the CPU"]
    theirs_amp = True
    try:
        case_train.make_steps(settings, ours, theirs, *first, amp=True)[1]()
    except Exception as error:  # as case 4: torchvision in float32 where its bf16 step fails
        theirs_amp = False
        notes.append(f"torchvision in float32: bf16 autocast failed ({type(error).__name__}: {error})")
    rows, parts, result = [], [], {"loader": []}
    for batch in sizes.train_batches:
        measured = {}
        for side, model, other in (("ours", ours, theirs), ("theirs", theirs, ours)):
            other.to("cpu")  # each side alone on the device: its own peak memory
            model.to(device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            amp = theirs_amp if side == "theirs" else True
            index = 0 if side == "ours" else 1
            waits, totals = _timed_steps(
                loaders[batch], lambda images, gt, amp=amp, index=index:
                case_train.make_steps(settings, ours, theirs, images, gt, amp=amp)[index], ctx, size, warmup, timed)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            measured[side] = {"rate": batch * len(totals) / sum(totals), "wait": sum(waits) / sum(totals),
                              "totals": totals, "peak_gib": peak}
        ours.to(device)
        o, t = measured["ours"], measured["theirs"]
        row = Row(f"3 (case 4) training step + data loading (B={batch}, bf16 + channels_last)",
                  Timing.from_seconds(o["totals"]), Timing.from_seconds(t["totals"]), target=case_train.TARGET,
                  check=check, notes=list(notes))
        row.extra.update(images_per_s={"ours": o["rate"], "theirs": t["rate"]},
                         loader_wait_share={"ours": o["wait"], "theirs": t["wait"]},
                         peak_memory_gib={"ours": o["peak_gib"], "theirs": t["peak_gib"]})
        memory = (f"; peak memory ours {o['peak_gib']:.1f} GiB, torchvision {t['peak_gib']:.1f} GiB"
                  if o["peak_gib"] is not None else "")
        row.notes.append(f"ours {o['rate']:.0f} img/s (waiting for data {o['wait']:.0%} of the time), torchvision "
                         f"{t['rate']:.0f} img/s ({t['wait']:.0%}){memory}; {warmup} warm-up + {timed} timed steps each")
        rows.append(row)
        parts.append(f"B={batch}: ours {o['rate']:.0f} img/s (data wait {o['wait']:.0%}), torchvision {t['rate']:.0f}"
                     + memory.replace("; peak memory", ", peak"))
    largest, batch = rows[-1], sizes.train_batches[-1]
    met = largest.extra["images_per_s"]["ours"] >= TRAINING_GOAL
    result.update(status=_rows_status(rows), figures="; ".join(parts), met=met, rows=[r.to_dict() for r in rows],
                  goal=f">= {TRAINING_GOAL:.0f} img/s at B={batch} with data loading")
    if not met:
        images, gt = _to_device(next(iter(loaders[batch])), size, device, fmt)
        step = case_train.make_steps(settings, ours, theirs, images, gt, amp=True)[0]
        result["profiles"] = _profiles({f"ours' training step without data loading (B={batch})": step}, ctx, result)
        rate = _loader_rate(loaders[batch], warmup, timed)
        result["loader"].append(f"the loader alone makes {rate:.0f} img/s with {sizes.workers} workers at B={batch} "
                                f"(ours waited for it {largest.extra['loader_wait_share']['ours']:.0%} of the time)")
    return result


# ---------------------------------------------------------------- steps 4 and 5: the library's trainer

class _Stopper:
    """Stops ``ssd_lib.train.train`` the way a user does, with one Ctrl-C: its SIGINT handler lets the step in
    flight finish and returns (``interrupted=True``)."""

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            signal.raise_signal(signal.SIGINT)


class _Rendered(list):
    """A dataset rendered once (items in a list), so that repeated evaluations do not draw it again."""

    def __init__(self, dataset) -> None:
        super().__init__(dataset[i] for i in range(len(dataset)))
        self.classes = list(dataset.classes)


def _evaluate(model, test, device) -> tuple[float, dict, str]:
    """VOC mAP@0.5 of ``model`` on ``test``, and COCO AP where pycocotools is installed (else the stated skip)."""
    from ssd_lib.evaluate import evaluate_model

    coco = importlib.util.find_spec("pycocotools") is not None
    result = evaluate_model(model, test, batch_size=64, device=device, coco=coco)
    if not coco:
        return result["mAP"], {}, "COCO AP skipped: pycocotools missing"
    ap = result["coco"]
    return result["mAP"], {"coco_ap": ap["AP"], "coco_ap50": ap["AP50"]}, f"COCO AP {ap['AP']:.3f} (AP50 {ap['AP50']:.3f})"


def step_small_model(ctx: Context) -> dict[str, Any]:
    """Step 4: the main job's model and recipe (``TrainConfig.small_cpu``: 2900 steps of 32, AdamW, cosine),
    the test split evaluated by the trainer every ``small_steps_per_eval`` steps, stopped at the target."""
    import torch

    from ssd_lib.data import ShapesDataset
    from ssd_lib.model import ModelConfig, build_model
    from ssd_lib.train import TrainConfig, train

    from .row import Row
    from .timing import Timing

    s, device = ctx.sizes, ctx.device
    torch.manual_seed(ctx.seed)
    model = build_model(ModelConfig.small(SHAPES_CLASSES, image_size=s.small_image_size, stride4_source=True))
    drawn = s.small_batch * s.small_steps_per_eval * s.small_evals
    # Ten times the images the run draws: each evaluation interval samples its own, nearly all new (the main
    # job sees each image once).
    train_data = ShapesDataset("train", size=10 * drawn, image_size=s.small_image_size)
    test = _Rendered(ShapesDataset("test", size=s.test_images, image_size=s.small_image_size))
    cfg = TrainConfig.small_cpu(device=str(device), num_workers=s.workers, epochs=s.small_evals, batch_size=s.small_batch,
                                max_steps_per_epoch=s.small_steps_per_eval, eval_every=1)
    trajectory, stopper, start = [], _Stopper(), time.perf_counter()

    def on_epoch(record: dict) -> None:
        elapsed = time.perf_counter() - start
        training = record["time_s"] + (trajectory[-1]["training_s"] if trajectory else 0.0)
        trajectory.append({"step": record["step"], "seconds": elapsed, "training_s": training, "mAP": record["val_mAP"]})
        if record["val_mAP"] >= s.small_target or elapsed >= s.small_budget_s:
            stopper.stop()

    def on_step(record: dict) -> None:  # the budget, also between evaluations
        if time.perf_counter() - start >= s.small_budget_s:
            stopper.stop()

    result = train(model, train_data, test, cfg, progress=False, on_epoch=on_epoch, on_step=on_step)
    reached = next((t for t in trajectory if t["mAP"] >= s.small_target), None)
    final_map, coco, coco_note = _evaluate(result.model, test, device)
    best = max(trajectory, key=lambda t: t["mAP"]) if trajectory else None
    if reached:
        figures = (f"test mAP@0.5 {reached['mAP']:.3f} at step {reached['step']}, {reached['seconds']:.1f} s after "
                   f"the start ({reached['training_s']:.1f} s of it training, the rest evaluating)")
    else:
        figures = (f"not reached in {time.perf_counter() - start:.0f} s: best test mAP@0.5 "
                   + (f"{best['mAP']:.3f} at step {best['step']}" if best else "- (no evaluation)"))
    row = Row(f"4 small model: seconds to test mAP@0.5 >= {s.small_target:.2f}",
              Timing.from_seconds([reached["seconds"]]) if reached else None, None, unit="s", check=f"ok: {figures}",
              notes=[f"{len(test)} test images evaluated every {s.small_steps_per_eval} steps of {s.small_batch}; "
                     f"the model at the stop (one step later): mAP@0.5 {final_map:.3f}, {coco_note}"])
    return {"status": "ok", "figures": f"{figures}; {coco_note}", "goal": f"test mAP@0.5 >= {s.small_target:.2f}",
            "met": reached is not None, "trajectory": trajectory, "final_mAP": final_map, **coco,
            "rows": [row.to_dict()]}


def step_ssd300(ctx: Context) -> dict[str, Any]:
    """Step 5: SSD300 (``TrainConfig.released``: SGD lr 1e-3, batch 32) on the built-in dataset at 300 px for a
    fixed time, then the test split's mAP. The dry run trains the 64 px small model for 2 s instead."""
    import torch

    from ssd_lib.data import ShapesDataset
    from ssd_lib.model import ModelConfig, build_model, ssd300_vgg16
    from ssd_lib.train import TrainConfig, train

    from .row import Row
    from .timing import Timing

    s, device = ctx.sizes, ctx.device
    torch.manual_seed(ctx.seed)
    model = build_model(ModelConfig.small(SHAPES_CLASSES, image_size=64)) if ctx.dry else ssd300_vgg16(SHAPES_CLASSES)
    size = model.prior_config.image_size
    test = _Rendered(ShapesDataset("test", size=s.test_images, image_size=size))  # drawn before the clock starts
    # More images than the time can use (3,300 img/s for 180 s), so that one epoch outlasts the clock; the
    # released schedule's lr drops (at 2/3 and 5/6 of that epoch) are then never reached.
    train_data = ShapesDataset("train", size=max(600_000, 10 * s.ssd300_batch), image_size=size)
    cfg = TrainConfig.released(device=str(device), num_workers=s.workers, epochs=1, batch_size=s.ssd300_batch,
                               eval_every=0, log_every=1 if ctx.dry else 10)
    last, stopper, start = {}, _Stopper(), time.perf_counter()

    def on_step(record: dict) -> None:
        last.update(record)
        if time.perf_counter() - start >= s.ssd300_train_s:
            stopper.stop()

    result = train(model, train_data, None, cfg, progress=False, on_step=on_step)
    seconds = time.perf_counter() - start
    test_map, coco, coco_note = _evaluate(result.model, test, device)
    figures = (f"test mAP@0.5 {test_map:.3f} after {seconds:.0f} s of training ({last.get('step', 0)} steps of "
               f"{s.ssd300_batch}, {last.get('images_per_s', 0):.0f} img/s by the trainer's count, loss "
               f"{last.get('loss', float('nan')):.2f})")
    what = "the 64 px small model (dry run)" if ctx.dry else "SSD300 at 300 px"
    row = Row(f"5 {what}, {s.ssd300_train_s:.0f} s of training: test mAP@0.5 {test_map:.3f}",
              Timing.from_seconds([seconds]), None, unit="s", check=f"ok: {figures}",
              notes=[f"{len(test)} test images; {coco_note}; the released recipe's lr drops are not reached in this time"])
    return {"status": "ok", "figures": f"{figures}; {coco_note}", "mAP": test_map, "steps": last.get("step", 0),
            "images_per_s": last.get("images_per_s"), **coco, "rows": [row.to_dict()]}


# ---------------------------------------------------------------- the report, and --record-from

def _row_from_dict(d: dict):
    from .row import Row
    from .timing import Timing

    def timing(t: dict | None):
        return None if t is None else Timing({segment: list(v["all_s"]) for segment, v in t.items()})

    return Row(d["case"], timing(d["ours"]), timing(d["theirs"]), target=d["target"], check=d["check"], unit=d["unit"],
               segment=d["segment"], notes=list(d["notes"]), extra=dict(d["extra"]))


def render_section(summary: dict[str, Any]) -> str:
    """The ``results:cuda`` section: ``report.render_markdown`` of every step's rows (as the CPU section is
    written), then the goals and, where one was missed, the profiles."""
    from .report import render_markdown

    rows = [_row_from_dict(r) for s in summary["steps"] for r in s.get("rows", [])]
    env = summary["environment"]
    lines = [render_markdown(summary["result"], rows).rstrip(), "",
             f"GPU suite: {env.get('line', '')}; step limits and statuses (issue #20's goals in the last columns):", "",
             summary_table(summary)]
    profiles = profiles_markdown(summary)
    if profiles:
        lines += ["", "Where the time goes in the steps that missed a goal (torch.profiler):", "", profiles]
    return "\n".join(lines) + "\n"


def step_report(ctx: Context) -> dict[str, Any]:
    """The last phase: summary.json and summary.md in OUT_DIR, and RESULTS.md's results:cuda section on a GPU run."""
    from .machine import is_loaded, load_average
    from .report import update_results_md

    summary = collect_summary(ctx.work)
    machine = dict(summary["environment"].get("machine", {}))
    machine["load_average_end"] = load_average()
    # Loaded or not is read at the start: at the end the suite's own data-loader workers are the load.
    summary["result"] = {"command": summary["meta"]["command"], "machine": machine,
                         "loaded": is_loaded(tuple(machine.get("load_average_start", (0, 0, 0))), machine.get("cpu_cores")),
                         "settings": {"quick": ctx.dry, "device": str(ctx.device), "amp": True, "seed": ctx.seed}}
    summary["section"] = render_section(summary)
    summary["recorded"] = bool(summary["meta"]["record"]) and not ctx.dry
    if summary["recorded"]:
        update_results_md(RESULTS_MD, "cuda", summary["section"])
    write_summary(ctx.out, summary)
    return {"status": "ok", "figures": "summary written" + ("; RESULTS.md (results:cuda)" if summary["recorded"] else "")}


def record_from(path: Path) -> int:
    """Write the results:cuda section of RESULTS.md on this machine from a GPU run's summary.json."""
    summary = _read_json(path)
    if summary is None or "result" not in summary:
        raise SuiteError(f"{path}: not a summary.json written by a complete GPU suite run")
    if summary["meta"].get("dry_run") or summary["meta"].get("device") != "cuda":
        raise SuiteError(f"{path}: a dry run's figures do not go into RESULTS.md")
    from .report import update_results_md

    update_results_md(RESULTS_MD, "cuda", render_section(summary))
    print(f"wrote the results:cuda section of {RESULTS_MD} from {path}")
    return 0


# ---------------------------------------------------------------- the worker's loop

WORKER_STEPS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "1": step_pytest, "2": step_inference, "3": step_training, "4": step_small_model, "5": step_ssd300,
    "report": step_report,
}


def _environment(device) -> dict[str, Any]:
    """What the figures ran on: versions, GPU, and ``ssd_lib.machine.machine_info`` (stored with the figures)."""
    import platform

    import torch
    import torchvision

    from .machine import machine_info

    env = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "machine": machine_info(device)}
    line = (f"torch {env['torch']} (CUDA {env['cuda']}, cuDNN {env['cudnn']}), torchvision {env['torchvision']}, "
            f"Python {env['python']}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gib=props.total_memory / 2**30,
                   multiprocessors=props.multi_processor_count)
        line += (f"; GPU {props.name} ({env['gpu_memory_gib']:.0f} GiB, {props.multi_processor_count} SMs, "
                 f"compute capability {env['capability']})")
    else:
        line += f"; device cpu ({env['machine']['cpu_model']}, {env['machine']['cpu_cores']} cores)"
    env["line"] = line
    return env


def _worker(args: argparse.Namespace) -> int:
    """Run the given steps in order in this process, recording each (``supervise`` watches the clock)."""
    import gc
    import traceback

    import torch

    print(f"worker: imported torch in {time.process_time():.1f} s of CPU", flush=True)
    work, dry = args.worker_dir, args.dry_run
    device = torch.device(args.device)
    if dry and device.type == "cpu":
        torch.set_num_threads(1)  # a shared 2-core machine: two compute threads spin against the neighbours
    ctx = Context(device, dry, Sizes.dry() if dry else Sizes.gpu(), args.out, work)
    if not (work / "environment.json").exists():
        env = _environment(device)
        _write_json(work / "environment.json", env)
        print(env["line"], flush=True)
    for name in args.worker_steps.split(","):
        _write_json(work / "current.json", {"step": name, "pid": os.getpid(), "started": time.time()})
        print(f"\n===== step {name} =====", flush=True)
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            result = WORKER_STEPS[name](ctx)
        except (Exception, KeyboardInterrupt) as error:  # recorded; the next step still runs
            traceback.print_exc()
            message = (str(error).strip().splitlines() or [""])[0][:300]
            result = {"status": f"failed: {type(error).__name__}: {message}"}
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - start, time.process_time() - start_cpu
        print(f"----- step {name}: {result['status']} ({result['seconds']:.1f} s, {result['cpu_seconds']:.1f} s of CPU "
              "in this process)", flush=True)
        _write_json(_step_file(work, name), result)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
