"""ssd_lib.course.doctor: each check passes here and fails (with its fix) when its failure is simulated;
the command's exit status follows the failures; notebook 1 starts with the doctor."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from ssd_lib.course import doctor as doc
from ssd_lib.course.doctor import Diagnosis, run_checks

ROOT = Path(__file__).resolve().parents[1]


def test_python_version():
    assert doc.check_python((3, 11, 7)).status == "ok"
    too_old = doc.check_python((3, 10, 14))
    assert too_old.failed and "3.10.14" in too_old.message and "3.11" in too_old.fix


def test_torch_and_torchvision_run_nms_here():
    result = doc.check_torch()
    assert result.status == "ok", str(result)


def test_mismatched_torchvision_is_a_failure_with_the_pinned_pair_as_fix(monkeypatch):
    import torchvision

    def broken_nms(*args, **kwargs):
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(torchvision.ops, "nms", broken_nms)
    result = doc.check_torch()
    assert result.failed and "torchvision::nms does not exist" in result.message
    assert "torch==" in result.fix and "torchvision==" in result.fix  # the pins from pyproject.toml


def test_torchvision_that_does_not_import_is_a_failure(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` raises ImportError
    result = doc.check_torch()
    assert result.failed and result.message.startswith("import failed")


def _versions(monkeypatch, **versions):
    monkeypatch.setattr(doc, "_version", lambda name: versions.get(name))


@pytest.mark.parametrize("versions, status, fragment", [
    ({"ipywidgets": "8.1.5", "jupyterlab_widgets": "3.0.13"}, "ok", "ipywidgets 8.1.5"),
    ({"ipywidgets": "8.1.5", "jupyterlab_widgets": "1.1.7"}, "fail", "needs jupyterlab_widgets 3.x"),
    ({"ipywidgets": "7.8.1", "jupyterlab_widgets": "3.0.13"}, "fail", "needs jupyterlab_widgets 1.x"),
    ({"ipywidgets": "8.1.5"}, "fail", "without jupyterlab_widgets"),
    ({"jupyterlab_widgets": "3.0.13"}, "fail", "ipywidgets is not installed"),
])
def test_widget_versions(monkeypatch, versions, status, fragment):
    _versions(monkeypatch, **versions)
    result = doc.check_widget_versions()
    assert result.status == status and fragment in result.message, str(result)
    assert result.failed == bool(result.fix)


def _labextension(folder: Path, version: str) -> None:
    package = folder / doc.WIDGET_MANAGER / "package.json"
    package.parent.mkdir(parents=True)
    package.write_text(json.dumps({"name": doc.WIDGET_MANAGER, "version": version}))


def test_widget_extension(monkeypatch, tmp_path):
    monkeypatch.setattr(doc, "_labextension_dirs", lambda: [tmp_path / "env", tmp_path / "user"])
    _versions(monkeypatch, ipywidgets="8.1.5", jupyterlab_widgets="3.0.13", jupyterlab="4.2.5")
    missing = doc.check_widget_extension()
    assert missing.failed and "not found" in missing.message and "jupyterlab_widgets==3.*" in missing.fix
    _labextension(tmp_path / "user", "3.0.2")  # left over from ipywidgets 7
    stale = doc.check_widget_extension()
    assert stale.failed and "needs 5.x" in stale.message
    _labextension(tmp_path / "env", "5.0.13")
    assert doc.check_widget_extension().status == "ok"


def test_widget_extension_missing_in_a_kernel_only_environment_is_a_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(doc, "_labextension_dirs", lambda: [tmp_path])
    _versions(monkeypatch, ipywidgets="8.1.5", jupyterlab_widgets="3.0.13")  # no jupyterlab here
    result = doc.check_widget_extension()
    assert result.status == "warn" and "where JupyterLab runs" in result.message


def test_widget_checks_pass_in_this_environment():
    assert doc.check_widget_versions().status == "ok"
    assert doc.check_widget_extension().status == "ok", str(doc.check_widget_extension())


def test_matplotlib(monkeypatch):
    assert doc.check_matplotlib().status == "ok"
    import matplotlib.pyplot as plt

    def no_display(*args, **kwargs):
        raise RuntimeError("Cannot load backend 'TkAgg': no display")

    monkeypatch.setattr(plt, "figure", no_display)
    result = doc.check_matplotlib()
    assert result.failed and "no display" in result.message and "MPLBACKEND=Agg" in result.fix


def test_gpu_absent_is_information_not_a_failure(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    result = doc.check_gpu()
    assert result.status == "info" and "no GPU" in result.message and not result.failed


@pytest.mark.parametrize("bf16, status", [(True, "ok"), (False, "warn")])
def test_gpu_name_and_bf16(monkeypatch, bf16, status):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA Test GPU")
    monkeypatch.setattr(doc, "_bf16_works", lambda device: bf16)
    result = doc.check_gpu()
    assert result.status == status and result.message.startswith("NVIDIA Test GPU")
    assert ("bf16 works" in result.message) is bf16


@pytest.mark.gpu
def test_real_gpu_reports_its_name_and_bf16():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    result = doc.check_gpu()
    assert torch.cuda.get_device_name(0) in result.message
    assert result.status == ("ok" if doc._bf16_works("cuda") else "warn")


def test_results_folder(tmp_path):
    ok = doc.check_results_folder(tmp_path / "results" / "new")
    assert ok.status == "ok" and (tmp_path / "results" / "new").is_dir()
    assert list((tmp_path / "results" / "new").iterdir()) == []  # the probe file is removed
    (tmp_path / "a_file").write_text("not a folder")
    blocked = doc.check_results_folder(tmp_path / "a_file")
    assert blocked.failed and "cannot write" in blocked.message


def test_a_crashing_check_is_reported_not_raised():
    def check_broken():
        raise KeyError("surprise")

    report = run_checks((check_broken, lambda: Diagnosis("fine", "ok", "yes")))
    assert not report.ok and report.results[0].name == "broken" and "KeyError" in report.results[0].message
    assert "1 of 2 checks failed" in report.summary


def test_status_is_validated():
    with pytest.raises(ValueError, match="status"):
        Diagnosis("x", "bad", "message")


def test_exit_status_follows_failures(monkeypatch, capsys, tmp_path):
    ok = (lambda: Diagnosis("a", "ok", "fine"), lambda: Diagnosis("gpu", "info", "no GPU"))
    monkeypatch.setattr(doc, "CHECKS", ok)
    assert doc.main([]) == 0
    assert "environment: 2 of 2 checks ok" in capsys.readouterr().out
    monkeypatch.setattr(doc, "CHECKS", ok + (lambda: Diagnosis("b", "fail", "broken", "do this"),))
    assert doc.main([]) == 1
    out = capsys.readouterr().out
    assert "❌ b: broken -> fix: do this" in out and "1 of 3 checks failed" in out
    monkeypatch.setattr(doc, "CHECKS", (doc.check_results_folder,))
    (tmp_path / "file").write_text("")
    assert doc.main(["--results", str(tmp_path / "file")]) == 1  # --results replaces the default folder


def test_quiet_doctor_prints_only_what_needs_attention(monkeypatch, capsys):
    monkeypatch.setattr(doc, "CHECKS", (lambda: Diagnosis("a", "ok", "fine"),
                                        lambda: Diagnosis("gpu", "info", "no GPU")))
    report = doc.doctor()
    out = capsys.readouterr().out.splitlines()
    assert out == ["ℹ️  gpu: no GPU", "environment: 2 of 2 checks ok"]
    assert report.ok and repr(report) == "environment: 2 of 2 checks ok"


@pytest.mark.slow
def test_command_runs_in_this_environment():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "ssd_lib", "doctor"], env=env, capture_output=True, text=True,
                          timeout=300)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(doc.CHECKS) + 1, done.stdout + done.stderr
    assert lines[0].startswith("✅ python:") and lines[-1].startswith("environment:")
    failed = [ln for ln in lines if ln.startswith("❌")]
    assert all("-> fix:" in ln for ln in failed)
    assert done.returncode == (1 if failed else 0), done.stdout


def test_notebook_1_starts_with_the_doctor():
    cells = nbformat.read(ROOT / "notebooks" / "01_boxes.ipynb", as_version=4).cells
    first_code = next(c for c in cells if c.cell_type == "code")
    assert "from ssd_lib.course.doctor import doctor" in first_code.source and "doctor()" in first_code.source
