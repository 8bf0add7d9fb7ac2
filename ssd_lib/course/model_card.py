"""The trained small SSD that ships with the course, and its model card.

``assets/ssd_small_shapes.pt`` is the model the README's main job trains (``bash run.sh main``);
``assets/ssd_small_shapes.json`` says how it was made and what it measures: the command, the
machine, the date, the training time, and its VOC mAP@0.5 and COCO AP on the built-in test split,
all measured, plus the mAP on the first ``CARD_SUBSET`` test images, which the test suite
re-measures so that the card cannot go stale. Notebooks 8-12 and the detection explorer load the
model with :func:`ssd_lib.course.assets.load_course_model`.

Usage::

    python -m ssd_lib main                          # trains, writes results/main/{last.pt, run.json}
    python -m ssd_lib.course.model_card results/main       # copies the model to assets/ and writes the card
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from ssd_lib.checkpoint import class_names_of, model_from_checkpoint, save_weights
from ssd_lib.files import write_json

from .assets import ASSET_PATH, CARD_PATH, REPO_ROOT

__all__ = ["ASSET_PATH", "CARD_PATH", "CARD_SUBSET", "ship", "evaluate_shipped", "sha256"]

CARD_SUBSET = 100  # test images the suite re-evaluates (tests/test_model_card.py)
TEST_IMAGES = 500  # the main job's test split


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def evaluate_shipped(path: str | Path = ASSET_PATH, limit: int | None = None, coco: bool = False) -> dict:
    """VOC mAP@0.5 (and COCO AP) of the model file at ``path`` on the built-in test split, as the
    main job measures it (images rendered at the model's input size, data seed 0)."""
    from ssd_lib.data import ShapesDataset
    from ssd_lib.evaluate import evaluate_model

    model, _ = model_from_checkpoint(path)
    model.eval()
    test = ShapesDataset("test", size=TEST_IMAGES, seed=0, image_size=model.prior_config.image_size)
    return evaluate_model(model, test, batch_size=50, coco=coco, limit=limit)


def _architecture(model_config: dict) -> str:
    """One line: the ModelConfig call, the input size, the source maps and the number of default boxes."""
    from ssd_lib.model import ModelConfig
    from ssd_lib.priors import default_boxes

    config = ModelConfig.from_dict(model_config)
    options = "".join(f", {k}={v!r}" for k, v in sorted(config.backbone_kwargs.items()))
    maps = ", ".join(str(f) for f in config.priors.feature_maps)
    return (f"ssd_lib.model.ModelConfig.{config.arch}(num_classes={config.num_classes}{options}): "
            f"{config.priors.image_size} px input, source maps {maps}, {len(default_boxes(config.priors))} default boxes")


def ship(run_dir: str | Path, asset_path: str | Path = ASSET_PATH) -> dict:
    """Copy the model of a main-job run (``run_dir/last.pt`` + ``run.json``) to ``asset_path`` without
    its optimiser state, re-measure it from that file, and write the card beside it."""
    run_dir, asset_path = Path(run_dir), Path(asset_path)
    record_path = run_dir / "run.json"
    if not record_path.is_file():
        raise FileNotFoundError(f"{record_path} not found: run `python -m ssd_lib main --out {run_dir}` first")
    record = json.loads(record_path.read_text())
    model, ckpt = model_from_checkpoint(run_dir / "last.pt")
    class_names = class_names_of(ckpt, model.num_classes)
    save_weights(asset_path, model, class_names)  # without the optimiser state
    full = evaluate_shipped(asset_path, coco=True)
    subset = evaluate_shipped(asset_path, limit=CARD_SUBSET)
    card = {
        "model": asset_path.name,
        "sha256": sha256(asset_path),
        "size_bytes": asset_path.stat().st_size,
        "architecture": _architecture(ckpt["model_config"]),
        "parameters": sum(t.numel() for k, t in ckpt["model"].items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))),
        "classes": class_names,
        "trained_by": record["command"],
        "train_config": record.get("train_config"),
        "steps": record.get("steps"),
        "training_minutes": record.get("minutes_training"),
        "total_minutes": record.get("minutes_total"),
        "machine": record.get("machine"),
        "date": (record.get("machine") or {}).get("date"),
        "test_split": {"dataset": "ssd_lib.data.ShapesDataset('test', size=500, seed=0, image_size=128)",
                       "images": TEST_IMAGES, "voc_mAP50": round(float(full["mAP"]), 4),
                       "coco": {k: round(float(v), 4) for k, v in full["coco"].items() if isinstance(v, (int, float))}},
        "card_check": {"images": CARD_SUBSET, "voc_mAP50": round(float(subset["mAP"]), 4), "tolerance": 0.005,
                       "note": "tests/test_model_card.py re-measures this on the first images of the test split"},
        "written_by": f"python -m ssd_lib.course.model_card {run_dir}",
    }
    write_json(asset_path.with_suffix(".json"), card)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssd_lib.course.model_card", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a folder written by `python -m ssd_lib main` (last.pt, run.json)")
    parser.add_argument("--output", default=str(ASSET_PATH), help=f"where the model goes (default {ASSET_PATH.relative_to(REPO_ROOT)})")
    args = parser.parse_args(argv)
    try:
        card = ship(args.run_dir, args.output)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: card[k] for k in ("model", "test_split", "card_check", "training_minutes")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
