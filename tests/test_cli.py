"""Tests for the command line (ssd_lib/__main__.py and ssd_lib/cli.py), run as a user runs it: ``python -m ssd_lib ...``
in a subprocess. The main job on a tiny budget writes its picture, eval.json and checkpoint;
``eval`` and ``detect`` read that checkpoint back; a user's mistake is one ``error:`` line on
stderr with exit status 2 and no traceback.

Most of the time of a run is importing torch, so the commands that do not depend on each other
are started together (the fixtures below) and each test checks the result of its own command.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow  # subprocesses that import torch

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHAPE_CLASSES = ["circle", "rectangle", "triangle", "cross", "ring", "star"]
HELP_COMMANDS = ["", "main", "train", "eval", "detect", "render", "check-data", "grade"]


def start_cli(*args, cwd: Path) -> subprocess.Popen:
    """``python -m ssd_lib ARGS`` with one thread (two cores are shared), started, not waited for."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "ssd_lib", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Runs:
    """Commands started together; ``runs[name]`` waits for one and returns its CompletedProcess."""

    def __init__(self, cwd: Path, commands: dict[str, list]) -> None:
        self.cwd, self.done = cwd, {}
        self.procs = {name: start_cli(*args, cwd=cwd) for name, args in commands.items()}

    def __getitem__(self, name: str) -> subprocess.CompletedProcess:
        if name not in self.done:
            proc = self.procs[name]
            stdout, stderr = proc.communicate(timeout=600)
            self.done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        return self.done[name]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The main job on a tiny budget (2 steps of 4 images at 64 pixels, 8 test images), rendering,
    every --help, and the mistakes, all started at once."""
    from ssd_lib.model import ssd_small
    from ssd_lib.checkpoint import save_checkpoint

    cwd = tmp_path_factory.mktemp("cli")
    (cwd / "empty").mkdir()
    (cwd / "empty" / "readme.txt").write_text("no pictures here")
    save_checkpoint(cwd / "three_classes.pt", ssd_small(4, image_size=64))  # 3 classes + background
    (cwd / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    commands = {
        "main": ["main", "--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--workers", "0",
                 "--test-size", "8", "--image-size", "64", "--out", "OUT", "--quiet"],
        "render": ["render", "--format", "voc", "--split", "test", "--n", "2", "--image-size", "64", "--out", "voc"],
        "voc_missing": ["train", "--dataset", "voc", "--data-root", cwd / "no_such_VOCdevkit", "--quiet"],
        "no_images": ["detect", cwd / "empty", "--checkpoint", cwd / "three_classes.pt"],
        "other_classes": ["eval", "--checkpoint", cwd / "three_classes.pt", "--test-size", "8", "--quiet"],
        "noise": ["eval", "--checkpoint", cwd / "noise.pt", "--test-size", "8", "--quiet"],
        **{f"help {name}": [name, "--help"] if name else ["--help"] for name in HELP_COMMANDS},
    }
    runs = Runs(cwd, commands)
    yield runs
    runs.close()


@pytest.fixture(scope="module")
def readers(runs):
    """``eval`` and ``detect`` on the main job's checkpoint, started together once it exists."""
    assert runs["main"].returncode == 0, runs["main"].stderr
    cwd, checkpoint = runs.cwd, runs.cwd / "OUT" / "last.pt"
    images = cwd / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, size=(60, 80, 3), dtype=np.uint8)  # not square, not 64
    Image.fromarray(pixels).save(images / "colour.png")
    Image.fromarray(pixels).convert("L").save(images / "gray.jpg")
    Image.fromarray(np.dstack([pixels, np.full((60, 80), 128, np.uint8)]), "RGBA").save(images / "alpha.png")
    (images / "notes.txt").write_text("not an image")
    readers = Runs(cwd, {
        "eval": ["eval", "--checkpoint", checkpoint, "--test-size", "8", "--quiet", "--out", "EVAL"],
        "detect": ["detect", images, "--checkpoint", checkpoint, "--out", "DRAWN"],
    })
    yield readers
    readers.close()


def _map_of(stdout: str) -> float:
    match = re.search(r"VOC mAP@0\.5 \(11-point, VOC2007\) on 8 images: (\d\.\d{4})", stdout)
    assert match, stdout
    return float(match.group(1))


# ---------------------------------------------------------------- what works

def test_main_trains_evaluates_and_draws(runs):
    proc, out = runs["main"], runs.cwd / "OUT"
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    mAP = _map_of(proc.stdout)
    assert re.search(rf"test-split VOC mAP@0\.5 = {mAP:.4f}", proc.stdout), proc.stdout
    assert (out / "test_detections.png").read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((out / "eval.json").read_text())
    assert summary["num_images"] == 8 and round(summary["mAP"], 4) == mAP
    assert list(summary["ap"]) == SHAPE_CLASSES
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["type"] == "step"] == [2]  # the last step of the epoch is logged

    from ssd_lib.checkpoint import load_checkpoint

    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 2)
    assert ckpt["model_config"]["num_classes"] == 7 and ckpt["model_config"]["priors"]["image_size"] == 64
    # The main job's layout: the stride-4 map in front of the five maps (64 px: a 16x16 map first).
    assert ckpt["model_config"]["backbone_kwargs"] == {"stride4_source": True}
    assert list(ckpt["model_config"]["priors"]["feature_maps"][:2]) == [16, 8]
    assert ckpt["extra"]["class_names"] == SHAPE_CLASSES
    assert not list(out.glob("*.tmp*"))


def test_eval_reads_the_checkpoint_back(runs, readers):
    proc = readers["eval"]
    assert proc.returncode == 0, proc.stderr
    # The same weights on the same 8 test images: the mAP the main job printed.
    assert _map_of(proc.stdout) == _map_of(runs["main"].stdout)
    assert json.loads((runs.cwd / "EVAL" / "eval.json").read_text())["num_images"] == 8


def test_detect_draws_png_grayscale_jpeg_and_rgba_png(readers):
    proc, drawn_dir = readers["detect"], readers.cwd / "DRAWN"
    assert proc.returncode == 0, proc.stderr
    drawn = sorted(p.name for p in drawn_dir.iterdir())
    assert drawn == ["alpha_detections.png", "colour_detections.png", "gray_detections.png"]
    assert all((drawn_dir / name).read_bytes()[:8] == PNG_MAGIC for name in drawn)
    assert len(proc.stdout.strip().splitlines()) == 3


def test_render_writes_a_voc_tree_that_reads_back(runs):
    """The README's ``render --format voc ...`` (options right after the subcommand)."""
    proc = runs["render"]
    assert proc.returncode == 0, proc.stderr
    from ssd_lib.data import VOCDataset

    voc = VOCDataset(runs.cwd / "voc", year="2007", image_set="test", classes=SHAPE_CLASSES)
    assert len(voc) == 2 and voc[0][0].shape == (3, 64, 64)


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_help(runs, command):
    proc = runs[f"help {command}"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m ssd_lib"), proc.stdout[:200]
    assert proc.stderr == ""


# ---------------------------------------------------------------- a user's mistakes

def test_voc_with_a_missing_data_root_is_one_line(runs):
    assert_one_line_error(runs["voc_missing"], str(runs.cwd / "no_such_VOCdevkit"))


def test_detect_on_a_folder_without_images_is_one_line(runs):
    assert_one_line_error(runs["no_images"], "no images found")


def test_eval_with_a_checkpoint_for_other_classes_is_one_line(runs):
    assert_one_line_error(runs["other_classes"], "4 classes", "needs 7")


def test_eval_with_an_unreadable_checkpoint_is_one_line(runs):
    assert_one_line_error(runs["noise"], "cannot read checkpoint", "noise.pt")


def test_no_stride4_map_gives_the_lessons_five_maps():
    from ssd_lib.__main__ import build_parser
    from ssd_lib.cli import model_config
    from ssd_lib.model import ModelConfig

    for command in ("main", "train"):
        default = build_parser().parse_args([command])
        assert model_config(default, 7) == ModelConfig.small(7, stride4_source=True)
        five = build_parser().parse_args([command, "--no-stride4-map"])
        assert model_config(five, 7) == ModelConfig.small(7)


@pytest.mark.parametrize("option, background", [([], 0.99), (["--background-prior", "0.9"], 0.9),
                                                (["--background-prior", "0"], None)])
def test_train_starts_the_class_logits_at_the_background_prior(monkeypatch, tmp_path, option, background):
    """``train``/``main`` start every default box at background probability 0.99 (the recipe probe that halved the
    steps to mAP 0.90: README); 0 keeps PyTorch's own random bias start."""
    import ssd_lib.train
    from ssd_lib.__main__ import build_parser
    from ssd_lib.cli import cmd_train

    class Built(Exception):
        pass

    def stop_after_building(model, *args, **kwargs):
        raise Built(model)

    monkeypatch.setattr(ssd_lib.train, "train", stop_after_building)
    args = build_parser().parse_args(["train", "--image-size", "64", "--train-size", "4", "--val-size", "2",
                                      "--batch-size", "2", "--out", str(tmp_path / "out"), "--quiet", *option])
    with pytest.raises(Built) as built:
        cmd_train(args)
    model = built.value.args[0]
    for conv in model.conf_heads:
        start = conv.bias.detach().view(-1, model.num_classes).softmax(-1)  # one row per default box of a cell
        if background is None:
            assert not torch.allclose(start[:, 0], torch.full_like(start[:, 0], 0.99), atol=0.05)
        else:
            torch.testing.assert_close(start[:, 0], torch.full_like(start[:, 0], background))
