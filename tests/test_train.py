"""Tests for ssd_lib.train: exact resume (after an epoch, mid-epoch, with or without loader
workers), Ctrl-C (in process and on the command line), non-finite loss and the checkpoints the loop
keeps, DistributedDataParallel on CPU (gloo), the lr schedule, the one check of a batch (check_targets)
and that a tiny run learns (ssd_lib.checkpoint itself: tests/test_checkpoint.py). Everything runs on
CPU with the small model at 64 pixels and a handful of steps.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from ssd_lib.data import ShapesDataset
from ssd_lib.evaluate import evaluate_model
from ssd_lib.model import ssd_small
from ssd_lib.checkpoint import load_checkpoint, model_from_checkpoint
from ssd_lib.train import EpochSampler, NonFiniteLossError, SeededAugmented, TrainConfig, lr_factor, train
from small_setup import assert_same_weights, weights

REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 64
NO_AUGMENT_RANDOMNESS = dict(photometric=False, expand=False, crop=False, flip_p=0.0)


class ListDataset(Dataset):
    """Items rendered once and kept in memory (the trainer reads each image many times)."""

    def __init__(self, items: list, classes: list[str]) -> None:
        self.items, self.classes = items, classes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        image, target = self.items[index]
        return image, {k: (v.clone() if torch.is_tensor(v) else v) for k, v in target.items()}


def _shapes(split: str, n: int) -> ListDataset:
    ds = ShapesDataset(split, size=n, seed=0, image_size=IMAGE_SIZE)
    return ListDataset([ds[i] for i in range(n)], list(ds.classes))


TRAIN_12 = _shapes("train", 12)  # 3 steps of 4 per epoch
TEST_6 = _shapes("test", 6)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return ssd_small(7, image_size=IMAGE_SIZE)


def _config(**overrides) -> TrainConfig:
    """SGD with momentum and the full (random) SSD augmentation on purpose: resume must restore the
    optimizer state and reproduce every augmentation from (seed, epoch, index). One compute thread:
    two cores are shared, and runs compared bit for bit must use the same thread count."""
    base = TrainConfig(epochs=2, batch_size=4, optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=5e-4,
                       warmup_steps=4, schedule="cosine", grad_clip=10.0, augment={}, num_workers=0, cpu_threads=1,
                       eval_every=0, log_every=1, device="cpu", amp=False, channels_last=False)
    return replace(base, **overrides)


def _losses(steps: list[dict]) -> list[tuple[int, float]]:
    return [(s["step"], s["loss"]) for s in steps]


def _metrics(path: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["type"] == kind]


def _sigint_at(step: int):
    """An on_step callback that presses Ctrl-C once, right after global step ``step``."""
    def on_step(rec: dict) -> None:
        if rec["step"] == step:
            os.kill(os.getpid(), signal.SIGINT)
    return on_step


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py: one torch thread


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted 2-epoch run every resume test compares with (6 steps, cosine decay)."""
    result = train(_model(), TRAIN_12, None, _config(), progress=False)
    assert len(result.steps) == 6 and not result.interrupted
    return result, weights(result.model)


# ---------------------------------------------------------------- resume

@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_after_one_epoch_reproduces_the_uninterrupted_run(tmp_path, num_workers):
    # A schedule that does not depend on the number of epochs (warm-up over 4 steps, then
    # constant), so that "train 1 epoch, then resume for the 2nd" is the same run as "train 2".
    cfg = _config(schedule="multistep", milestones=(), num_workers=num_workers)
    full = train(_model(), TRAIN_12, None, replace(cfg, num_workers=0), out_dir=tmp_path / "full", progress=False)

    first = train(_model(), TRAIN_12, None, replace(cfg, epochs=1), out_dir=tmp_path / "part", progress=False)
    assert len(first.steps) == 3
    ckpt = load_checkpoint(tmp_path / "part" / "last.pt")
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (1, 0, 3)
    # A fresh model with other initial weights: everything must come from the checkpoint
    # (weights, SGD momentum, the scheduler's position inside the warm-up).
    resumed = train(_model(seed=1), TRAIN_12, None, cfg, out_dir=tmp_path / "part",
                    resume=tmp_path / "part" / "last.pt", progress=False)

    assert _losses(resumed.steps) == _losses(full.steps)
    assert [(s["step"], s["loss"]) for s in _metrics(tmp_path / "part" / "metrics.jsonl", "step")] == _losses(full.steps)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert_same_weights(weights(resumed.model), weights(full.model))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_data_and_augmentation_do_not_depend_on_loader_workers(tmp_path, reference, num_workers):
    ref_result, ref_weights = reference
    if num_workers == 0:
        result = train(_model(), TRAIN_12, None, _config(), progress=False)
    else:  # worker processes, interrupted mid-epoch and resumed: still the same stream of batches
        out = tmp_path / "run"
        first = train(_model(), TRAIN_12, None, _config(num_workers=1), out_dir=out, progress=False,
                      on_step=_sigint_at(4))
        assert first.interrupted
        result = train(_model(seed=1), TRAIN_12, None, _config(num_workers=1), out_dir=out,
                       resume=out / "last.pt", progress=False)
    assert _losses(result.steps) == _losses(ref_result.steps)
    assert_same_weights(weights(result.model), ref_weights)


@pytest.mark.parametrize("stop_after", [2, 3, 4])  # inside epoch 1, at its end, inside epoch 2
def test_resume_after_ctrl_c_mid_epoch_gives_the_same_loss_curve(tmp_path, reference, stop_after):
    ref_result, ref_weights = reference
    out = tmp_path / "run"
    first = train(_model(), TRAIN_12, None, _config(), out_dir=out, progress=False, on_step=_sigint_at(stop_after))
    assert first.interrupted
    assert [s["step"] for s in first.steps] == list(range(1, stop_after + 1))

    resumed = train(_model(seed=1), TRAIN_12, None, _config(), out_dir=out, resume=out / "last.pt", progress=False)
    assert not resumed.interrupted
    assert _losses(resumed.steps) == _losses(ref_result.steps)
    assert_same_weights(weights(resumed.model), ref_weights)
    # The log written across the two sessions is the uninterrupted run's log, epoch lines included.
    assert _losses(_metrics(out / "metrics.jsonl", "step")) == _losses(ref_result.steps)
    keys = ("epoch", "step", "loss", "loc", "conf")
    ref_epochs = [{k: h[k] for k in keys} for h in ref_result.history]
    assert [{k: h[k] for k in keys} for h in resumed.history] == ref_epochs
    assert [{k: h[k] for k in keys} for h in _metrics(out / "metrics.jsonl", "epoch")] == ref_epochs


# ---------------------------------------------------------------- Ctrl-C

def test_ctrl_c_finishes_the_step_saves_and_returns(tmp_path):
    handler_before = signal.getsignal(signal.SIGINT)
    result = train(_model(), TRAIN_12, None, _config(), out_dir=tmp_path, progress=False, on_step=_sigint_at(2))
    assert result.interrupted
    assert [s["step"] for s in result.steps] == [1, 2]
    assert signal.getsignal(signal.SIGINT) is handler_before  # the trainer's handler is removed again

    ckpt = load_checkpoint(tmp_path / "last.pt")  # weights_only
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (0, 2, 2)
    assert [s["step"] for s in ckpt["steps"]] == [1, 2]
    assert_same_weights(ckpt["model"], weights(result.model))
    model, _ = model_from_checkpoint(tmp_path / "last.pt", num_classes=7)
    assert_same_weights(weights(model), weights(result.model))
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_saves_and_exits_cleanly(tmp_path):
    """A terminal's Ctrl-C goes to the whole process group: the loader worker must ignore it."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "ssd_lib", "train", "--dataset", "shapes", "--image-size", "64", "--batch-size", "2",
           "--epochs", "1", "--max-steps", "400", "--workers", "1", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().strip()):
            assert proc.poll() is None, f"train exited early: {proc.communicate()}"
            assert time.monotonic() < deadline, "no metrics line after 120 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stdout and f"--resume {out / 'last.pt'}" in stdout
    ckpt = load_checkpoint(out / "last.pt")
    assert 10 <= ckpt["global_step"] < 400  # the first metrics line is written at step 10
    assert ckpt["step_in_epoch"] == ckpt["global_step"] and ckpt["epoch"] == 0


# ---------------------------------------------------------------- non-finite loss

def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = _config(schedule="multistep", milestones=())
    train(_model(), TRAIN_12, None, replace(cfg, epochs=1), out_dir=tmp_path, progress=False)
    last = tmp_path / "last.pt"
    good_bytes, good_mtime = last.read_bytes(), last.stat().st_mtime_ns

    model = _model()
    calls = {"n": 0}

    def nan_from_second_call(module, inputs, output):
        calls["n"] += 1
        loc, logits = output
        return (loc * float("nan"), logits) if calls["n"] >= 2 else output

    model.register_forward_hook(nan_from_second_call)
    handler_before, logged = signal.getsignal(signal.SIGINT), []
    with pytest.raises(NonFiniteLossError) as err:
        train(model, TRAIN_12, None, cfg, out_dir=tmp_path, resume=last, progress=False, on_step=logged.append)
    # Epoch 1 had steps 1-3 and step 4 went well; step 5 (epoch 2, its 2nd batch) is the bad one.
    assert [s["step"] for s in logged] == [4]
    assert "step 5" in str(err.value) and "epoch 2" in str(err.value)
    assert last.read_bytes() == good_bytes and last.stat().st_mtime_ns == good_mtime
    assert not list(tmp_path.glob("*.tmp*"))
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_huge_learning_rate_raises_non_finite_loss_error():
    logged = []
    cfg = _config(lr=1e6, warmup_steps=0, grad_clip=None, epochs=5)
    with pytest.raises(NonFiniteLossError, match=r"loss became (nan|inf|-inf) at step \d+") as err:
        train(_model(), TRAIN_12, None, cfg, progress=False, on_step=logged.append)
    assert f"at step {len(logged) + 1} " in str(err.value)  # the step after the last good one


# ---------------------------------------------------------------- distributed (CPU, gloo)

class _RecordingDataset(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.seen = dataset, []
        self.classes = dataset.classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        self.seen.append(int(index))
        return self.dataset[index]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    data = _RecordingDataset(_shapes("train", 8))
    try:
        # 8 images, 2 ranks, batch 2: 2 steps per epoch, each rank sees 4 images.
        result = train(_model(), data, None, _config(epochs=1, batch_size=2), out_dir=Path(out) / "run", progress=False)
        assert dist.is_initialized() and dist.get_world_size() == world
        distributed_eval = evaluate_model(result.model, TEST_6, batch_size=2, distributed=True)
        single_eval = evaluate_model(result.model, TEST_6, batch_size=2) if rank == 0 else None
        torch.save({"weights": weights(result.model), "seen": data.seen, "steps": len(result.steps),
                    "distributed_eval": distributed_eval, "single_eval": single_eval}, Path(out) / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_on_cpu_shards_data_keeps_ranks_in_sync_and_gathers_evaluation(tmp_path):
    # fork: the children inherit the imported modules (spawning would import torch twice more).
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="fork", join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))

    assert r0["steps"] == r1["steps"] == 2
    assert len(r0["seen"]) == len(r1["seen"]) == 4
    assert not set(r0["seen"]) & set(r1["seen"]), "ranks saw the same images"
    assert sorted(r0["seen"] + r1["seen"]) == list(range(8))
    # Each rank saw other images; the all-reduced gradients keep the weights identical anyway.
    assert_same_weights(r0["weights"], r1["weights"])
    initial = weights(_model())
    assert any(not torch.equal(initial[k], r0["weights"][k]) for k in initial), "no training happened"
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 2  # written by rank 0 only

    gathered, single = r0["distributed_eval"], r0["single_eval"]
    assert r1["distributed_eval"]["mAP"] == gathered["mAP"]  # every rank gets the gathered result (evaluate.py)
    assert gathered["mAP"] == pytest.approx(single["mAP"], abs=1e-6)
    assert torch.allclose(torch.as_tensor(gathered["ap"]), torch.as_tensor(single["ap"]), atol=1e-6)


def test_epoch_sampler_shards_pads_and_skips():
    orders = []
    for rank in range(3):
        sampler = EpochSampler(10, seed=5, rank=rank, world_size=3)
        sampler.set_epoch(2)
        orders.append(list(sampler))
        assert len(sampler) == 4 == len(orders[-1])
    flat = [i - 2 * 10 for order in orders for i in order]  # global index = epoch * n + i
    assert sorted(set(flat)) == list(range(10)) and len(flat) == 12  # padded by repeating 2 indices
    sampler = EpochSampler(10, seed=5, rank=1, world_size=3)
    sampler.set_epoch(2, start=3)
    assert list(sampler) == orders[1][3:] and len(sampler) == 1
    sampler.set_epoch(3)
    assert [i - 30 for i in sampler] != [i - 20 for i in orders[1]]  # a new order every epoch


def test_seeded_augmentation_depends_only_on_seed_epoch_and_index():
    from ssd_lib.augment import SSDAugmentation

    aug = SeededAugmented(TRAIN_12, SSDAugmentation(size=IMAGE_SIZE), seed=3)
    n = len(TRAIN_12)
    first = aug[1 * n + 5]
    aug[0], aug[7], torch.rand(3)  # other items and the global RNG in between
    again = aug[1 * n + 5]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])
    assert not torch.equal(aug[2 * n + 5][0], first[0])  # the next epoch augments image 5 differently


# ---------------------------------------------------------------- lr schedule

def test_warmup_is_linear():
    cfg = TrainConfig(warmup_steps=4, schedule="multistep", milestones=())
    assert [lr_factor(s, 100, cfg) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_multistep_drops_by_gamma_at_the_milestones():
    cfg = TrainConfig(warmup_steps=0, schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    got = {s: lr_factor(s, 100, cfg) for s in (0, 49, 50, 74, 75, 99)}
    assert got == pytest.approx({0: 1.0, 49: 1.0, 50: 0.1, 74: 0.1, 75: 0.01, 99: 0.01})
    # The released recipe: lr / 10 at 80k and 100k of 120k iterations.
    released = TrainConfig.released()
    assert [lr_factor(s, 120_000, released) for s in (79_999, 80_000, 99_999, 100_000)] == pytest.approx(
        [1.0, 0.1, 0.1, 0.01])


def test_cosine_decays_from_one_to_near_zero():
    cfg = TrainConfig(warmup_steps=0, schedule="cosine")
    factors = [lr_factor(s, 100, cfg) for s in range(100)]
    assert factors[0] == 1.0 and factors[50] == pytest.approx(0.5)
    assert factors[-1] < 1e-3
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, 100, TrainConfig(schedule="linear"))


def test_released_config_is_the_paper_recipe():
    cfg = TrainConfig.released()
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (1e-3, 0.9, 5e-4, 32)
    assert cfg.schedule == "multistep" and cfg.optimizer == "sgd" and cfg.gamma == 0.1


def test_training_loop_follows_the_schedule(tmp_path):
    """The lr logged with a step is the lr that step used: warm-up, then the drop at the milestone."""
    cfg = _config(epochs=2, warmup_steps=2, schedule="multistep", milestones=(0.5,), gamma=0.1)
    result = train(_model(), TRAIN_12, None, cfg, progress=False)
    total = 6
    assert [s["lr"] for s in result.steps] == pytest.approx(
        [cfg.lr * lr_factor(s, total, cfg) for s in range(total)])
    assert [s["lr"] / cfg.lr for s in result.steps] == pytest.approx([0.5, 1.0, 1.0, 0.1, 0.1, 0.1])


# ---------------------------------------------------------------- bad data, learning

def test_labels_outside_the_model_classes_are_a_value_error_naming_num_classes():
    image, target = TRAIN_12[0]
    target = dict(target, labels=torch.full_like(target["labels"], 9))
    bad = ListDataset([(image, target)] * 4, TRAIN_12.classes)
    with pytest.raises(ValueError, match=r"num_classes=7.*1\.\.6"):
        train(_model(), bad, None, _config(augment=NO_AUGMENT_RANDOMNESS), progress=False)


def _target(boxes, labels) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}


GOOD = _target([[2.0, 3.0, 20.0, 30.0]], [1])


@pytest.mark.parametrize("bad, message", [
    (_target([[2.0, 3.0, 2.0, 30.0]], [1]), r"image 1 of the batch has a box without area \(\[2\.0, 3\.0, 2\.0, 30\.0\]"),
    (_target([[20.0, 3.0, 2.0, 30.0]], [1]), r"image 1 .*without area.*convert \(x, y, w, h\) boxes to xyxy"),
    (_target([[2.0, float("nan"), 20.0, 30.0]], [1]), r"image 1 .*NaN or infinite"),
    (_target([[2.0, 3.0, 20.0, 30.0]], [0]), r"image 1 .*labels \[0\].*num_classes=7.*1\.\.6.*add 1"),
    (_target([[2.0, 3.0, 20.0, 30.0]], [7]), r"image 1 .*labels \[7\].*1\.\.6"),
    ({"boxes": torch.tensor([[2.0, 3.0, 20.0, 30.0]]), "labels": torch.tensor([1], dtype=torch.int32)},
     r"image 1 .*dtype torch\.int32.*int64"),
    ({"boxes": torch.tensor([[2.0, 3.0, 20.0, 30.0]]), "labels": torch.tensor([1, 2])}, r"image 1 .*one int64 label per box"),
    ({"boxes": torch.tensor([2.0, 3.0, 20.0, 30.0]), "labels": torch.tensor([1])}, r"image 1 .*\(G, 4\)"),
])
def test_check_targets_names_the_image_and_the_fix(bad, message):
    from ssd_lib.train import check_targets

    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    check_targets([GOOD, GOOD, empty], num_classes=7)  # an image without objects is fine
    with pytest.raises(ValueError, match=message) as err:
        check_targets([GOOD, bad, GOOD], num_classes=7)
    assert "\n" not in str(err.value)


def test_a_training_step_checks_its_batch_once_not_in_the_matcher_or_the_loss(monkeypatch):
    """check_targets is the boundary: the matcher's per-image checks and the loss's label-range check
    (each a read back from the device) do not run in the loop."""
    import ssd_lib.matching
    import ssd_lib.train.batches as batches
    from ssd_lib.loss import MultiBoxLoss

    calls = {"check_targets": 0}
    real = batches.check_targets

    def counting(targets, num_classes):
        calls["check_targets"] += 1
        return real(targets, num_classes)

    def forbidden(*args, **kwargs):
        raise AssertionError("validated again inside the step")

    monkeypatch.setattr(batches, "check_targets", counting)
    monkeypatch.setattr(ssd_lib.matching, "_check_gt", forbidden)
    real_validate = MultiBoxLoss._validate

    def validate(loc, logits, loc_targets, labels, check_labels=True):
        if check_labels:
            forbidden()
        real_validate(loc, logits, loc_targets, labels, check_labels)

    monkeypatch.setattr(MultiBoxLoss, "_validate", staticmethod(validate))
    result = train(_model(), TRAIN_12, None, _config(epochs=1), progress=False)
    assert len(result.steps) == 3 and calls["check_targets"] == 3


def test_a_tiny_run_learns():
    data = _shapes("train", 16)
    cfg = _config(epochs=8, batch_size=8, lr=0.05, warmup_steps=0, schedule="multistep", milestones=(),
                  augment=NO_AUGMENT_RANDOMNESS)
    result = train(_model(), data, None, cfg, progress=False)
    losses = [s["loss"] for s in result.steps]
    assert len(losses) == 16
    assert sum(losses[-2:]) < sum(losses[:2]) / 3, losses


# ---------------------------------------------------------------- bf16 gradients that overflow

def _poison_gradient(model, steps) -> None:
    """Make one weight's gradient infinite at the given (1-based) backward calls."""
    calls = {"n": 0}

    def hook(grad):
        calls["n"] += 1
        return torch.full_like(grad, float("inf")) if calls["n"] in steps else grad

    next(model.parameters()).register_hook(hook)


def test_a_non_finite_gradient_under_amp_skips_that_update():
    model = _model()
    _poison_gradient(model, steps={2})
    result = train(model, TRAIN_12, None, _config(amp=True), out_dir=None, progress=False)
    assert [s["skipped_steps"] for s in result.steps] == [0, 1, 1, 0, 0, 0]  # counted per epoch
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_non_finite_gradients_in_a_row_stop_the_run_with_a_clear_message():
    from ssd_lib.train import MAX_SKIPPED_STEPS, NonFiniteLossError

    model = _model()
    _poison_gradient(model, steps=set(range(1, 100)))
    cfg = _config(amp=True, epochs=6, batch_size=4)  # 18 steps; the count of skips in a row spans epochs
    assert MAX_SKIPPED_STEPS < 18
    with pytest.raises(NonFiniteLossError, match="in a row"):
        train(model, TRAIN_12, None, cfg, out_dir=None, progress=False)
