"""The set-up files agree with each other and with the README (a newcomer's two commands)."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name_and_spec(requirement: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert m, requirement
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    reqs = list(project["dependencies"])
    for extra in ("course", "test"):
        reqs += project["optional-dependencies"][extra]
    return dict(_name_and_spec(r) for r in reqs)


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    reqs: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            reqs += dep["pip"]
        else:
            reqs.append(dep.replace("=", "==", 1) if re.match(r"^[\w\-]+=[^=<>]", dep) else dep)
    out = dict(_name_and_spec(r) for r in reqs)
    out.pop("python", None)
    out.pop("pip", None)
    return out


def test_environment_yml_lists_the_same_packages_as_pyproject():
    py, env = _pyproject_requirements(), _environment_requirements()
    assert set(py) == set(env), f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"
    for name, spec in py.items():
        assert env[name] == spec, f"{name}: pyproject says {spec!r}, environment.yml says {env[name]!r}"


def test_the_course_packages_are_declared():
    names = set(_pyproject_requirements())
    for needed in ("torch", "torchvision", "jupyterlab", "matplotlib", "ipywidgets", "numpy", "pycocotools"):
        assert needed in names


def test_torch_and_torchvision_are_pinned_as_a_pair():
    py = _pyproject_requirements()
    assert py["torch"].startswith("==") and py["torchvision"].startswith("==")
    import torch
    import torchvision

    assert torch.__version__.split("+")[0] == py["torch"][2:]
    assert torchvision.__version__.split("+")[0] == py["torchvision"][2:]
    # The pair imports together: the NMS operator exists.
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash run.sh main" in readme and "bash run.sh test" in readme
    assert re.search(r"^bash run\.sh test$", ci, re.M), "CI must run the README's test command unchanged"


def test_cli_help_explains_every_command():
    out = subprocess.run([sys.executable, "-m", "ssd_lib", "--help"], capture_output=True, text=True, cwd=ROOT, check=True)
    for command in ("main", "train", "eval", "detect"):
        assert command in out.stdout
    out = subprocess.run([sys.executable, "-m", "ssd_lib", "train", "--help"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "--resume" in out.stdout and "--dataset" in out.stdout
