"""The course's files: the shipped model and its card, the notebooks, and where results go.

* ``ASSET_PATH``: ``assets/ssd_small_shapes.pt``, the small SSD that the README's main job trained
  (``bash run.sh main``), with its card ``CARD_PATH`` beside it (:mod:`ssd_lib.course.model_card`).
* :func:`load_course_model`: that model for notebooks 8-12 and the detection explorer. Without the
  file (a partial checkout), a quick stand-in is trained once and cached under ``results/``.
* ``NOTEBOOK_DIR``, ``NOTEBOOK_GLOB``: the teacher notebooks; their student versions are in
  ``NOTEBOOK_DIR / "student"``.

Usage::

    from ssd_lib.course.assets import load_course_model
    model, class_names = load_course_model()      # eval mode, on the CPU
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ssd_lib.checkpoint import SHIPPED_MODEL, class_names_of, model_from_checkpoint, save_weights

from .modes import fast_mode, grading_mode

__all__ = ["REPO_ROOT", "ASSET_PATH", "CARD_PATH", "CACHE_DIR", "NOTEBOOK_DIR", "NOTEBOOK_GLOB", "load_course_model",
           "short_path"]

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSET_PATH = SHIPPED_MODEL  # the shipped model (its card is beside it)
CARD_PATH = ASSET_PATH.with_suffix(".json")
CACHE_DIR = REPO_ROOT / "results" / "course_model"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"

# Used only when the shipped checkpoint is missing (keyed by fast mode). On two busy CPU cores the
# small SSD trains at about 6 images/s (the augmentation dominates): fast mode (384 images) takes
# about a minute, the full run (1920 images) about five. Enough to see boxes, not a good mAP.
FALLBACK_TRAINING: dict[bool, dict[str, Any]] = {
    True: dict(epochs=1, max_steps_per_epoch=24, batch_size=16, warmup_steps=5),
    False: dict(epochs=2, max_steps_per_epoch=60, batch_size=16, warmup_steps=20),
}


def load_course_model(path: str | Path | None = None, device: str = "cpu"):
    """The trained small SSD of notebooks 8 and 9: ``(model, class_names)``, model in eval mode.

    ``path=None`` loads the shipped ``assets/ssd_small_shapes.pt``; if that file is missing, a quick
    model is trained on ``ShapesDataset`` (fast mode: about a minute; otherwise a few minutes) and
    cached under ``results/course_model/`` so the next call loads it. An explicit ``path`` must
    exist. Checkpoints are read with ``weights_only=True``; a truncated or foreign file raises
    ValueError with a one-line reason.
    """
    if path is None and ASSET_PATH.is_file():
        path = ASSET_PATH
    if path is None:
        try:
            model, ckpt = model_from_checkpoint(_cached_or_trained_model(), map_location=device)
        except (ValueError, RuntimeError):  # a cache from an older version of the model: train it again
            for stale in (CACHE_DIR / "last.pt", CACHE_DIR / "fast" / "last.pt"):
                stale.unlink(missing_ok=True)
            model, ckpt = model_from_checkpoint(_cached_or_trained_model(), map_location=device)
    else:
        model, ckpt = model_from_checkpoint(path, map_location=device)
    return model.to(device).eval(), class_names_of(ckpt, model.num_classes)


def _cached_or_trained_model() -> Path:
    """The cached fallback model, trained now if absent. A full-mode cache serves both modes; a
    fast-mode one (``fast/last.pt``) only fast mode."""
    fast = fast_mode()
    full_cache = CACHE_DIR / "last.pt"
    fast_cache = CACHE_DIR / "fast" / "last.pt"
    if full_cache.is_file():
        return full_cache
    if fast and fast_cache.is_file():
        return fast_cache
    if grading_mode():
        raise FileNotFoundError(f"{short_path(ASSET_PATH)} is missing and grading never trains a model: restore it "
                                "(git checkout -- assets/) or run `python -m ssd_lib main` and `python -m ssd_lib.course.model_card results/main`")
    out_dir = fast_cache.parent if fast else full_cache.parent
    _train_fallback_model(out_dir, fast)
    return out_dir / "last.pt"


def _train_fallback_model(out_dir: Path, fast: bool) -> None:
    import torch

    from ssd_lib.data import ShapesDataset
    from ssd_lib.model import ModelConfig, build_model
    from ssd_lib.train import TrainConfig, train

    settings = FALLBACK_TRAINING[fast]
    steps = settings["epochs"] * settings["max_steps_per_epoch"]
    print(f"ssd_lib.course: {short_path(ASSET_PATH)} not found; training a quick model "
          f"({steps} steps{', fast mode' if fast else ''}) and caching it as {short_path(out_dir / 'last.pt')}", flush=True)
    dataset = ShapesDataset("train")
    torch.manual_seed(0)
    model = build_model(ModelConfig.small(len(dataset.classes) + 1))
    train(model, dataset, None, TrainConfig.small_cpu(**settings), out_dir=None, progress=False)
    # Model only (no optimizer or RNG state): the cache is for inference.
    save_weights(out_dir / "last.pt", model, dataset.classes, trained_by="ssd_lib.course fallback", fast=fast)


def short_path(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (for messages)."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
