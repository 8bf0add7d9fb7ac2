"""Environment doctor: can the course run here? One line per check, with the fix when it fails.

The checks are the failures learners meet before the first lesson: an old Python; a torch and a
torchvision that do not belong together (``operator torchvision::nms does not exist``); ipywidgets
and the JupyterLab widget extension upgraded out of step ("Error displaying widget"); a plotting
backend that needs a display; no GPU or no bf16 on it (an info line: the course runs on a CPU);
a results folder that cannot be written. Each check is a plain function returning a
:class:`Diagnosis`, so a test can simulate each failure.

Usage::

    python -m ssd_lib doctor                   # every line; exit status 1 when a check fails
    from ssd_lib.course.doctor import doctor
    environment = doctor()                     # in a notebook: a summary and the lines that need you
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .assets import REPO_ROOT

__all__ = ["Diagnosis", "DoctorReport", "MIN_PYTHON", "CHECKS", "check_python", "check_torch", "check_widget_versions",
           "check_widget_extension", "check_matplotlib", "check_gpu", "check_results_folder", "run_checks", "doctor",
           "main"]

MIN_PYTHON = (3, 11)
RESULTS_DIR = REPO_ROOT / "results"  # where the course caches models and writes figures
WIDGET_MANAGER = "@jupyter-widgets/jupyterlab-manager"  # the JupyterLab front end of ipywidgets
# Major versions that work together (ipywidgets' release notes): ipywidgets -> jupyterlab_widgets
# (the Python package shipping the front end) -> the labextension's own version.
JUPYTERLAB_WIDGETS_FOR = {8: 3, 7: 1}
LABEXTENSION_FOR = {3: 5, 1: 3}

_MARKS = {"ok": "✅", "info": "ℹ️ ", "warn": "⚠️ ", "fail": "❌"}


@dataclass(frozen=True)
class Diagnosis:
    """One check: ``status`` is "ok", "info" (worth knowing, nothing to fix), "warn" (works, with a
    caveat) or "fail" (the course will not work until it is fixed, see ``fix``)."""

    name: str
    status: str
    message: str
    fix: str = ""

    def __post_init__(self):
        if self.status not in _MARKS:
            raise ValueError(f"status must be one of {sorted(_MARKS)}, not {self.status!r}")

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def __str__(self) -> str:
        return f"{_MARKS[self.status]} {self.name}: {self.message}" + (f" -> fix: {self.fix}" if self.fix else "")


@dataclass(frozen=True)
class DoctorReport:
    """All diagnoses; ``ok`` is False when one failed."""

    results: tuple[Diagnosis, ...]

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.results)

    @property
    def summary(self) -> str:
        failed = sum(r.failed for r in self.results)
        warned = sum(r.status == "warn" for r in self.results)
        if not failed:
            return f"environment: {len(self.results) - warned} of {len(self.results)} checks ok" + (
                f", {warned} warning(s)" if warned else "")
        return (f"environment: {failed} of {len(self.results)} checks failed; apply the fix shown, restart the kernel "
                f"(or the terminal) and run the doctor again")

    def __str__(self) -> str:
        return "\n".join([str(r) for r in self.results] + [self.summary])

    def __repr__(self) -> str:  # a notebook shows the summary if the report is a cell's last value
        return self.summary


# ---------------------------------------------------------------- helpers (tests replace them)

def _version(distribution: str) -> str | None:
    """The installed version of a distribution, or None."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _pinned(names: tuple[str, ...]) -> str:
    """``torch==X torchvision==Y`` as ssd_lib's metadata pins them (pyproject.toml), if installed."""
    from importlib import metadata

    try:
        requirements = metadata.requires("ssd_lib") or []
    except metadata.PackageNotFoundError:
        requirements = []
    pins = [r.split(";")[0].strip() for r in requirements if r.split("=")[0].strip() in names and "==" in r]
    return " ".join(pins)


def _labextension_dirs() -> list[Path]:
    """The folders JupyterLab reads prebuilt extensions from (this environment's first)."""
    from jupyter_core.paths import jupyter_path

    return [Path(p) for p in jupyter_path("labextensions")]


def _bf16_works(device: str) -> bool:
    """Does a bf16 matrix product run on ``device`` and give finite numbers?"""
    import torch

    try:
        a = torch.randn(64, 64, device=device, dtype=torch.bfloat16)
        return bool(torch.isfinite((a @ a).float()).all())
    except RuntimeError:
        return False


# ---------------------------------------------------------------- the checks

def check_python(version_info: tuple = tuple(sys.version_info)) -> Diagnosis:
    version = ".".join(str(v) for v in version_info[:3])
    if tuple(version_info[:2]) >= MIN_PYTHON:
        return Diagnosis("python", "ok", f"{version}")
    need = ".".join(map(str, MIN_PYTHON))
    return Diagnosis("python", "fail", f"{version} is too old; the course needs {need} or newer",
                     f"create the course environment with Python {need}+ (conda env create -f environment.yml)")


def check_torch() -> Diagnosis:
    """torch and torchvision import together and torchvision's compiled NMS operator runs."""
    fix = f"reinstall the pair together: pip install {_pinned(('torch', 'torchvision')) or 'torch torchvision'}"
    try:
        import torch
        import torchvision
    except Exception as exc:  # ImportError, or a RuntimeError from a torchvision built for another torch
        return Diagnosis("torch", "fail", f"import failed: {_one_line(exc)}", fix)
    try:
        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
        keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    except Exception as exc:  # "operator torchvision::nms does not exist": a mismatched pair
        return Diagnosis("torch", "fail", f"torch {torch.__version__} with torchvision {torchvision.__version__}: "
                                          f"NMS does not run ({_one_line(exc)})", fix)
    if keep.tolist() != [0, 2]:
        return Diagnosis("torch", "fail", f"torchvision.ops.nms gave {keep.tolist()} instead of [0, 2]", fix)
    return Diagnosis("torch", "ok", f"torch {torch.__version__}, torchvision {torchvision.__version__}, NMS runs")


def check_widget_versions() -> Diagnosis:
    """ipywidgets (the kernel side) and jupyterlab_widgets (the front end) of matching majors."""
    ipywidgets, lab_widgets = _version("ipywidgets"), _version("jupyterlab_widgets")
    if ipywidgets is None:
        return Diagnosis("widgets", "fail", "ipywidgets is not installed", "pip install 'ipywidgets>=8.1,<9'")
    want = JUPYTERLAB_WIDGETS_FOR.get(_major(ipywidgets))
    if want is None:
        return Diagnosis("widgets", "fail", f"ipywidgets {ipywidgets} is a version the course does not know",
                         "pip install 'ipywidgets>=8.1,<9'")
    fix = f"pip install 'ipywidgets=={_major(ipywidgets)}.*' 'jupyterlab_widgets=={want}.*', then reload JupyterLab"
    if lab_widgets is None:
        return Diagnosis("widgets", "fail", f"ipywidgets {ipywidgets} without jupyterlab_widgets: widgets will show "
                                            f"\"Error displaying widget\"", fix)
    if _major(lab_widgets) != want:
        return Diagnosis("widgets", "fail", f"ipywidgets {ipywidgets} needs jupyterlab_widgets {want}.x, found "
                                            f"{lab_widgets}: widgets will show \"Error displaying widget\"", fix)
    return Diagnosis("widgets", "ok", f"ipywidgets {ipywidgets} with jupyterlab_widgets {lab_widgets}")


def check_widget_extension() -> Diagnosis:
    """JupyterLab's widget front end (the labextension) is installed where JupyterLab looks."""
    lab_widgets = _version("jupyterlab_widgets")
    fix = f"pip install --force-reinstall 'jupyterlab_widgets=={_major(lab_widgets)}.*'" if lab_widgets else \
        "pip install 'jupyterlab_widgets>=3,<4'"
    found = []
    for folder in _labextension_dirs():
        package = folder / WIDGET_MANAGER / "package.json"
        if package.is_file():
            try:
                found.append((folder, str(json.loads(package.read_text(encoding="utf-8"))["version"])))
            except (OSError, ValueError, KeyError):
                continue
    if not found:
        # The kernel's environment may be a different one from JupyterLab's: then it needs only ipywidgets.
        status = "fail" if _version("jupyterlab") else "warn"
        where = "" if status == "fail" else " (JupyterLab is not installed in this environment: install the " \
                                            "extension where JupyterLab runs)"
        return Diagnosis("widget extension", status, f"{WIDGET_MANAGER} not found in {_labextension_dirs()[0]}{where}",
                         fix)
    folder, version = found[0]
    want = LABEXTENSION_FOR.get(_major(lab_widgets)) if lab_widgets else None
    if want is not None and _major(version) != want:
        return Diagnosis("widget extension", "fail", f"{WIDGET_MANAGER} {version} in {folder} does not match "
                                                     f"jupyterlab_widgets {lab_widgets} (needs {want}.x)", fix)
    return Diagnosis("widget extension", "ok", f"{WIDGET_MANAGER} {version}")


def check_matplotlib() -> Diagnosis:
    """The active backend can create and draw a figure."""
    fix = "scripts: set MPLBACKEND=Agg; notebooks: run %matplotlib inline"
    try:
        import matplotlib
        import matplotlib.pyplot as plt

        backend = matplotlib.get_backend()
        fig = plt.figure(figsize=(1, 1))
        try:
            fig.add_subplot().plot([0, 1], [0, 1])
            fig.canvas.draw()
        finally:
            plt.close(fig)
    except Exception as exc:
        return Diagnosis("matplotlib", "fail", f"cannot draw a figure: {_one_line(exc)}", fix)
    return Diagnosis("matplotlib", "ok", f"matplotlib {matplotlib.__version__}, backend {backend}")


def check_gpu() -> Diagnosis:
    """A CUDA GPU, its name and whether bf16 works. No GPU is an info line: the course runs on a CPU."""
    try:
        import torch
    except Exception:
        return Diagnosis("gpu", "info", "not checked: torch does not import (see the torch line)")
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        count = torch.cuda.device_count()
        label = f"{name}" + (f" (+{count - 1} more)" if count > 1 else "")
        if _bf16_works("cuda"):
            return Diagnosis("gpu", "ok", f"{label}, bf16 works")
        return Diagnosis("gpu", "warn", f"{label}, bf16 does not work: training runs in float32 (slower, more memory)")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Diagnosis("gpu", "info", "Apple GPU (MPS); the course's commands use the CPU unless you pass --device mps")
    return Diagnosis("gpu", "info", "no GPU: the course runs on the CPU (SSD_COURSE_FAST=1 keeps each notebook to about "
                                    "a minute)")


def check_results_folder(folder: str | Path | None = None) -> Diagnosis:
    """The results folder exists (or can be created) and a file can be written in it."""
    folder = Path(folder) if folder is not None else RESULTS_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor_", delete=True) as f:
            f.write(b"ok")
            f.flush()
    except OSError as exc:
        return Diagnosis("results folder", "fail", f"cannot write in {folder}: {_one_line(exc)}",
                         f"make {folder} a writable folder (or work in a copy of the course that you own)")
    return Diagnosis("results folder", "ok", f"{folder} is writable")


CHECKS: tuple[Callable[[], Diagnosis], ...] = (
    check_python, check_torch, check_widget_versions, check_widget_extension, check_matplotlib, check_gpu,
    check_results_folder,
)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def run_checks(checks: tuple[Callable[[], Diagnosis], ...] | None = None) -> DoctorReport:
    """Run every check (default :data:`CHECKS`); a check that crashes is reported as failed."""
    results = []
    for check in CHECKS if checks is None else checks:
        try:
            results.append(check())
        except Exception as exc:
            name = getattr(check, "__name__", "check").removeprefix("check_").replace("_", " ")
            results.append(Diagnosis(name, "fail", f"the check itself crashed: {type(exc).__name__}: {_one_line(exc)}",
                                     "report this with the output of `python -m ssd_lib doctor`"))
    return DoctorReport(tuple(results))


def doctor(verbose: bool = False, file=None) -> DoctorReport:
    """Run the checks and print them: every line when ``verbose``, else the lines that are not ok
    (fixes, warnings, the GPU line) and a summary. Returns the :class:`DoctorReport`."""
    report = run_checks()
    shown = report.results if verbose else [r for r in report.results if r.status != "ok"]
    print("\n".join([str(r) for r in shown] + [report.summary]), file=file or sys.stdout)
    return report


def main(argv: list[str] | None = None) -> int:
    """Check that this environment can run the course, with the fixes.

    ``python -m ssd_lib doctor [--results DIR]``: exit status 0 when every check passes, else 1."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ssd_lib doctor",
                                     description="Check that this environment can run the course; print the fixes.")
    parser.add_argument("--results", metavar="DIR", help=f"the results folder to check (default {RESULTS_DIR})")
    args = parser.parse_args(argv)
    checks = CHECKS
    if args.results:
        def results_folder() -> Diagnosis:
            return check_results_folder(args.results)

        checks = tuple(results_folder if c is check_results_folder else c for c in CHECKS)
    report = run_checks(checks)
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
