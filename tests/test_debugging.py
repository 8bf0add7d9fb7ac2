"""Tests for ssd_lib.debugging and the trainer's log: overfit_one_batch passes a working setup and
explains a broken one; the trainer logs the gradient norm before clipping and ssd_lib.viz draws the log.
Everything runs on the CPU with the small model at 64 pixels.
"""
from __future__ import annotations

import json
import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ssd_lib import debugging as D  # noqa: E402
from ssd_lib import viz  # noqa: E402
from ssd_lib.data import ShapesDataset  # noqa: E402
from ssd_lib.loss import MultiBoxLoss  # noqa: E402
from ssd_lib.model import ssd_small  # noqa: E402
from ssd_lib.train import TrainConfig, train  # noqa: E402

from small_setup import CLASSES, NUM_CLASSES, SIZE, batch, model, targets_01  # noqa: E402,F401  (fixtures)


# ---------------------------------------------------------------- the trainer's log

def test_trainer_logs_the_gradient_norm_before_clipping_and_the_log_is_drawn(tmp_path):
    ds = ShapesDataset("train", size=24, image_size=SIZE)
    config = TrainConfig.small_cpu(batch_size=8, max_steps_per_epoch=3, log_every=2, grad_clip=1e-3, cpu_threads=1,
                                   amp=False, augment={"photometric": False, "expand": False, "crop": False, "flip_p": 0})
    torch.manual_seed(0)
    result = train(ssd_small(NUM_CLASSES, SIZE), ds, config=config, out_dir=tmp_path, progress=False)
    records = viz.read_metrics(tmp_path)
    assert [r["step"] for r in records] == [2, 3] == [s["step"] for s in result.steps]
    for record in records:
        assert {"loss", "loc", "conf", "grad_norm", "grad_norm_max", "lr"} <= set(record)
        assert record["grad_norm"] > 1e-3, "logged before clipping: far above the clipping threshold"
        assert record["grad_norm_max"] >= record["grad_norm"]
        assert record["loss"] == pytest.approx(record["conf"] + record["loc"], rel=1e-5)
    assert (tmp_path / "curves.png").is_file()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"type": "step", "step": 9, "lo')  # a line cut off by a crash is skipped
    assert len(viz.read_metrics(tmp_path)) == 2
    fig = viz.plot_training_log(tmp_path / "metrics.jsonl", grad_clip=1e-3)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("Gradient norm" in t for t in titles) and any("Loss" in t for t in titles)
    plt.close(fig)
    with pytest.raises(ValueError, match="metrics.jsonl"):
        viz.read_metrics(tmp_path / "missing")


def test_curves_png_leaves_the_matplotlib_backend_alone(tmp_path):
    """plot_training_log(path=...) draws on a bare Figure: training in a notebook keeps its inline backend."""
    plt.switch_backend("svg")
    try:
        records = [{"step": 1, "loss": 3.0, "loc": 1.0, "conf": 2.0, "grad_norm": 5.0, "grad_norm_max": 6.0},
                   {"step": 2, "loss": 2.0, "loc": 0.5, "conf": 1.5, "grad_norm": None}]  # an old log without it
        fig = viz.plot_training_log(records, history=[{"epoch": 1, "val_mAP": 0.5}], path=tmp_path / "curves.png")
        assert matplotlib.get_backend() == "svg"
        assert fig not in map(plt.figure, plt.get_fignums()), "not a pyplot figure"
    finally:
        plt.switch_backend("Agg")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob("*.tmp*"))


def test_the_validation_panel_is_drawn_only_for_a_validated_run(tmp_path):
    records = [{"step": s, "loss": 3.0 / s, "loc": 1.0 / s, "conf": 2.0 / s, "grad_norm": 1.0, "lr": 1e-3} for s in (1, 2)]

    def titles(fig):
        return [ax.get_title() for ax in fig.axes if ax.get_title()]

    unvalidated = viz.plot_training_log(records, history=[{"epoch": 1, "val_mAP": None}], path=tmp_path / "a.png")
    assert titles(unvalidated) == ["Loss and its parts (Eq. 1)", "Gradient norm"]
    validated = viz.plot_training_log(records, history=[{"epoch": 1, "val_mAP": 0.25}, {"epoch": 2, "val_mAP": 0.5}],
                                      path=tmp_path / "b.png")
    assert titles(validated)[-1] == "Validation VOC mAP@0.5"
    assert list(validated.axes[2].get_lines()[0].get_ydata()) == [0.25, 0.5]
    # A metrics.jsonl path brings its own epoch lines.
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps(r) + "\n" for r in [{"type": "step", **records[0]}, {"type": "epoch", "epoch": 1, "val_mAP": 0.7}]))
    from_file = viz.plot_training_log(tmp_path / "metrics.jsonl")
    assert "Validation VOC mAP@0.5" in titles(from_file)
    plt.close(from_file)


def test_trainer_logs_the_gradient_norm_without_clipping_too():
    ds = ShapesDataset("train", size=8, image_size=SIZE)
    config = TrainConfig.small_cpu(batch_size=8, max_steps_per_epoch=1, log_every=1, grad_clip=None, cpu_threads=1,
                                   amp=False)
    torch.manual_seed(0)
    result = train(ssd_small(NUM_CLASSES, SIZE), ds, config=config, progress=False)
    assert result.steps[0]["grad_norm"] > 0 and math.isfinite(result.steps[0]["grad_norm"])


# ---------------------------------------------------------------- overfit one batch

def test_overfit_one_batch_reaches_near_zero_on_a_working_setup(batch, model):
    images, targets = batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = D.overfit_one_batch(model, (images[:4], targets[:4]), steps=100, lr=1e-3, verbose=False)
    assert report.passed and bool(report), report.message
    assert report.final <= 0.02 * report.initial and "near zero" in report.message
    assert len(report.losses) == len(report.grad_norms) == 100
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the caller's model is untouched"
    fig = report.plot()
    assert fig.axes[0].get_yscale() == "log"
    plt.close(fig)


def test_overfit_one_batch_reports_a_broken_setup(batch, model, capsys):
    images, targets = batch
    small_batch = (images[:4], targets[:4])
    stalled = D.overfit_one_batch(model, small_batch, steps=5, lr=0.0)
    assert not stalled.passed and "did not move" in stalled.message and "learning rate 0" in stalled.message
    assert capsys.readouterr().out.startswith("❌ the loss did not move")

    slow = D.overfit_one_batch(model, small_batch, steps=5, lr=1e-6, verbose=False)
    assert not slow.passed and slow.message.startswith("the loss fell only from")

    exploded = D.overfit_one_batch(model, small_batch, steps=30, lr=50.0, optimizer="sgd", verbose=False)
    assert not exploded.passed
    assert "became nan" in exploded.message or "became inf" in exploded.message or "exploded" in exploded.message

    frozen = D.overfit_one_batch(ssd_small(NUM_CLASSES, SIZE).requires_grad_(False), small_batch, steps=5, verbose=False)
    assert not frozen.passed and "requires_grad" in frozen.message

    detached = D.overfit_one_batch(model, small_batch, steps=3, verbose=False,
                                   criterion=lambda loc, logits, t, l: MultiBoxLoss()(loc.detach().requires_grad_(),
                                                                                     logits.detach(), t, l))
    assert not detached.passed and "no gradient reached the parameters" in detached.message

    unshifted = [{**t, "labels": t["labels"] - 1} for t in targets[:4]]
    with pytest.raises(ValueError, match="labels must be in 1.."):
        D.overfit_one_batch(model, (images[:4], unshifted), steps=3)


