"""Checkpoints: save, load, rebuild a model, and the random-number state that makes a resume exact.

A checkpoint is one ``torch.save`` dict of tensors and plain Python values, written atomically
(temp file + rename: a reader sees the old file or the new one, never half of one) and read with
``torch.load(..., weights_only=True)``, so a checkpoint from a stranger cannot run code. It holds
the model configuration next to the weights, so :func:`model_from_checkpoint` rebuilds the model
without being told its architecture.

Usage::

    from ssd_lib.checkpoint import save_checkpoint, model_from_checkpoint
    save_checkpoint("runs/demo/last.pt", model, optimizer, epoch=3)
    model, ckpt = model_from_checkpoint("runs/demo/last.pt")     # or restore_checkpoint(path, model, optimizer)
"""
from __future__ import annotations

import dataclasses
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .files import atomic_write
from .model import SSD, ModelConfig, build_model

__all__ = [
    "FORMAT", "SHIPPED_MODEL", "save_checkpoint", "save_weights", "load_checkpoint", "model_from_checkpoint",
    "restore_checkpoint", "class_names_of", "rng_state", "set_rng_state", "unwrap",
]

FORMAT = "ssd_lib.checkpoint/1"
# The small SSD that `python -m ssd_lib main` trained, shipped with the repository (its card is
# beside it): the default model of `python -m ssd_lib detect` and `export`, and of the course.
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "ssd_small_shapes.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside ``torch.compile`` and DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def rng_state() -> dict:
    """The torch, numpy, Python (and CUDA) random states, as tensors and plain numbers."""
    # numpy's state is stored as a tensor and plain numbers: weights_only loading rejects numpy arrays.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(config: Any) -> dict | None:
    """A config dataclass as a dict of plain values (tuples become lists), or None."""
    if config is None:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def _model_entries(model: nn.Module) -> dict:
    model = unwrap(model)
    if not isinstance(model, SSD) or model.config is None:
        raise TypeError("a checkpoint needs an ssd_lib SSD built by build_model (it stores the model config)")
    return {"format": FORMAT, "model_config": model.config.to_dict(), "model": model.state_dict()}


def save_checkpoint(path: str | Path, model: nn.Module, optimizer=None, scheduler=None, scaler=None,
                    epoch: int = 0, step_in_epoch: int = 0, global_step: int = 0, train_config: Any = None,
                    history: list | None = None, steps_log: list | None = None, extra: dict | None = None) -> Path:
    """Write everything needed to continue training, atomically (temp file + rename).

    Only tensors and plain Python types are stored, so :func:`load_checkpoint` can read it with
    ``weights_only=True``. ``train_config``: the run's :class:`ssd_lib.train.TrainConfig`.
    """
    ckpt = {
        **_model_entries(model),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": global_step,
        "train_config": _plain(train_config),
        "rng": rng_state(),
        "history": history or [],
        "steps": steps_log or [],
        "extra": extra or {},
    }
    return atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def save_weights(path: str | Path, model: nn.Module, class_names: Sequence[str], **extra: Any) -> Path:
    """A checkpoint for inference only: configuration, weights and class names (no optimiser or RNG
    state), written atomically; :func:`model_from_checkpoint` reads it like any other."""
    ckpt = {**_model_entries(model), "extra": {"class_names": list(class_names), **extra}}
    return atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely (``weights_only=True``). Raises ValueError with a one-line reason
    for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist; pass the path of a .pt file written by ssd_lib")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code, a text file, not a torch file...
        # PyTorch's own message for a refused pickle suggests re-running with weights_only=False, which
        # would let the file run code: it is never shown. The reason is told from the file instead.
        raise ValueError(f"cannot read checkpoint: {path} is not a PyTorch checkpoint written by ssd_lib "
                         f"({_unreadable_reason(path, exc)})") from None
    if not isinstance(ckpt, dict) or "model_config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path} is not an ssd_lib checkpoint (no model_config/model entries)")
    return ckpt


def _unreadable_reason(path: Path, exc: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words that advise nothing unsafe."""
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a truncated one loses its directory
        return "not a complete torch.save file: a truncated download or copy, or another kind of file"
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
        return ("it stores Python objects besides tensors and plain values, which ssd_lib never loads "
                "because unpickling them can run code")
    first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
    return f"a torch.save archive that cannot be read: {first}"


def restore_checkpoint(path: str | Path, model: nn.Module, optimizer=None, scheduler=None, scaler=None,
                       map_location: str | torch.device = "cpu") -> dict:
    """The inverse of :func:`save_checkpoint`, for a resume: load the weights into ``model`` (which must
    have the stored configuration), the optimiser, scheduler and scaler states, and the random-number
    state. Returns the checkpoint dict (epoch, step_in_epoch, global_step, history, steps, extra)."""
    ckpt = load_checkpoint(path, map_location=map_location)
    if ModelConfig.from_dict(ckpt["model_config"]) != unwrap(model).config:
        raise ValueError(f"checkpoint {path} holds another model configuration; resume with the same --model and dataset")
    missing = [key for key, part in (("optimizer", optimizer), ("scheduler", scheduler)) if part is not None and not ckpt.get(key)]
    if missing or "rng" not in ckpt:
        raise ValueError(f"checkpoint {path} has no {' or '.join(missing) or 'random-number'} state, so it cannot resume "
                         "training; it holds weights: load them with model_from_checkpoint")
    unwrap(model).load_state_dict(ckpt["model"])
    for part, key in ((optimizer, "optimizer"), (scheduler, "scheduler"), (scaler, "scaler")):
        if part is not None and ckpt.get(key):  # a run without loss scaling stores an empty scaler state
            part.load_state_dict(ckpt[key])
    set_rng_state(ckpt["rng"])
    return ckpt


def model_from_checkpoint(path: str | Path, num_classes: int | None = None, map_location="cpu") -> tuple[SSD, dict]:
    """Rebuild the model stored in a checkpoint: ``(model, checkpoint dict)``. ``num_classes``, when
    given, must agree."""
    ckpt = load_checkpoint(path, map_location)
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    if num_classes is not None and cfg.num_classes != num_classes:
        raise ValueError(
            f"checkpoint {path} was trained for {cfg.num_classes} classes (with background) but this dataset "
            f"needs {num_classes}; train a new model or pick the matching checkpoint"
        )
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    return model, ckpt


def class_names_of(ckpt: dict, num_classes: int) -> list[str]:
    """The object class names stored with a checkpoint (``num_classes - 1`` of them; label k is
    ``names[k - 1]``). A checkpoint without them gets the built-in dataset's names when the count
    fits, else "class 1", "class 2", ..."""
    names = list(ckpt.get("extra", {}).get("class_names") or [])
    if len(names) == num_classes - 1:
        return names
    from .data import ShapesDataset

    default = list(ShapesDataset.classes)
    return default if len(default) == num_classes - 1 else [f"class {i}" for i in range(1, num_classes)]
