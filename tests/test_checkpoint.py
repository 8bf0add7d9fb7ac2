"""Tests for ssd_lib.checkpoint: a save is atomic and complete, a failed save leaves the previous file,
a truncated or foreign file is a one-line ValueError, a file with code is refused without running it
(weights_only loading), a model is rebuilt from its checkpoint, and a resume restores every state.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from ssd_lib.checkpoint import load_checkpoint, model_from_checkpoint, restore_checkpoint, save_checkpoint, save_weights
from ssd_lib.model import ssd_small
from ssd_lib.train import TrainConfig
from small_setup import assert_same_weights, weights

IMAGE_SIZE = 64


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return ssd_small(7, image_size=IMAGE_SIZE)


def _config(**overrides) -> TrainConfig:
    return TrainConfig(batch_size=4, **overrides)


def test_checkpoint_round_trip_is_atomic_and_complete(tmp_path):
    model = _model()
    path = save_checkpoint(tmp_path / "sub" / "ck.pt", model, epoch=3, step_in_epoch=1, global_step=7,
                           train_config=_config(), extra={"class_names": ["a"]})
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["ck.pt"]  # no temporary file left
    ckpt = load_checkpoint(path)
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (3, 1, 7)
    assert ckpt["train_config"]["batch_size"] == 4 and ckpt["extra"] == {"class_names": ["a"]}
    rebuilt, _ = model_from_checkpoint(path)
    assert_same_weights(weights(rebuilt), weights(model))
    with pytest.raises(ValueError, match="trained for 7 classes"):
        model_from_checkpoint(path, num_classes=21)


def test_a_save_that_fails_halfway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", _model())
    before = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):  # writes part of the file, then fails
        Path(f).write_bytes(before[:100])
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, _model(seed=1))
    assert path.read_bytes() == before


def test_truncated_checkpoint_is_a_one_line_value_error(tmp_path):
    path = save_checkpoint(tmp_path / "ck.pt", _model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read checkpoint") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_with_code_is_refused_and_the_code_does_not_run(tmp_path):
    # The payload is live: unpickling it without weights_only creates the marker.
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_Payload(live)))
    assert live.exists()

    for name, write in [("torch_save.pt", lambda p, m: torch.save({"model_config": {}, "model": _Payload(m)}, p)),
                        ("plain_pickle.pt", lambda p, m: p.write_bytes(pickle.dumps({"model": _Payload(m)}, protocol=2)))]:
        marker = tmp_path / f"{name}.ran"
        write(tmp_path / name, marker)
        with pytest.raises(ValueError, match="cannot read checkpoint") as err:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(err.value)
        assert "weights_only" not in str(err.value)  # PyTorch's advice to unpickle it anyway is never passed on
        assert not marker.exists(), f"{name}: the payload ran"


@pytest.mark.parametrize("name, content", [
    ("notes.txt", b"some notes\nline two\n"),
    ("config.pt", b"model: 1\n"),  # torch.load reads it as pickle opcodes and refuses them (weights_only)
    ("empty.pt", b""),
])
def test_a_file_that_is_not_a_torch_file_is_named_as_such(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / name)
    message = str(err.value)
    assert f"{tmp_path / name} is not a PyTorch checkpoint written by ssd_lib" in message
    assert "\n" not in message and "weights_only" not in message


def test_a_torch_file_with_python_objects_is_refused_without_advice_to_unpickle_it(tmp_path):
    import argparse

    torch.save({"model_config": {}, "model": argparse.Namespace(weights=1)}, tmp_path / "objects.pt")
    with pytest.raises(ValueError, match="unpickling them can run code") as err:
        load_checkpoint(tmp_path / "objects.pt")
    assert "is not a PyTorch checkpoint written by ssd_lib" in str(err.value)
    assert "weights_only" not in str(err.value)


def test_a_torch_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an ssd_lib checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_restore_checkpoint_restores_weights_optimizer_schedule_and_rng(tmp_path):
    def sgd_and_schedule(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 ** s)

    model = _model()
    optimizer, scheduler = sgd_and_schedule(model)
    loc, logits = model(torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE))
    (loc.sum() + logits.sum()).backward()
    optimizer.step()
    scheduler.step()
    torch.manual_seed(123)
    path = save_checkpoint(tmp_path / "ck.pt", model, optimizer, scheduler, epoch=2, global_step=9)
    expected = torch.rand(3)

    fresh = _model(seed=1)
    fresh_optimizer, fresh_scheduler = sgd_and_schedule(fresh)
    ckpt = restore_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler)
    assert (ckpt["epoch"], ckpt["global_step"]) == (2, 9)
    assert_same_weights(weights(fresh), weights(model))
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == 0.05
    ours, theirs = fresh_optimizer.state_dict()["state"], optimizer.state_dict()["state"]
    assert ours.keys() == theirs.keys() and ours
    assert all(torch.equal(ours[k]["momentum_buffer"], theirs[k]["momentum_buffer"]) for k in ours)
    assert torch.equal(torch.rand(3), expected)  # the random-number state of the save


def test_restore_checkpoint_refuses_weights_only_files_and_other_models(tmp_path):
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    weights_file = save_weights(tmp_path / "weights.pt", model, class_names=["a"] * 6)
    with pytest.raises(ValueError, match="no optimizer state.*model_from_checkpoint"):
        restore_checkpoint(weights_file, _model(), optimizer)
    other = save_checkpoint(tmp_path / "other.pt", ssd_small(5, image_size=IMAGE_SIZE), epoch=1)
    with pytest.raises(ValueError, match="another model configuration"):
        restore_checkpoint(other, model)
