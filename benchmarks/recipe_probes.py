"""Recipe probes for the main job (issue 17): the same model and data as ``python -m ssd_lib main``, trained
for a fixed number of steps with one change at a time, then scored on the test split. A probe's mAP does not
depend on how loaded the machine is (the run is deterministic for a seed and a thread count); its seconds do,
so compare times only between probes run back to back, and read the load average recorded with each.

Each probe appends one JSON line to ``--out`` (rewritten atomically after every probe, so an interrupted run
keeps the probes it finished): its name, the change, the command that reproduces it, steps, training seconds,
images/s, test VOC mAP@0.5, the load average. The README's table of probes quotes these lines.

Usage::

    python -m benchmarks.recipe_probes --steps 1000 --test-images 200 baseline background_prior lr_1e-2
    python -m benchmarks.recipe_probes --list
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from ssd_lib.data import SHAPE_NAMES, ShapesDataset
from ssd_lib.evaluate import evaluate_model
from ssd_lib.files import write_text
from ssd_lib.machine import load_average
from ssd_lib.model import SSD, build_model, ModelConfig
from ssd_lib.train import TrainConfig, train

# name -> (what changes, TrainConfig overrides, a change to the freshly built model)
PROBES: dict[str, tuple[str, dict, Callable[[SSD], SSD] | None]] = {
    "baseline": ("the main job's recipe (TrainConfig.small_cpu, stride-4 model)", {}, None),
    "background_prior": ("class logits start at background probability 0.99 (SSD.init_background_prior)", {},
                         lambda model: model.init_background_prior(0.99)),
    "lr_1e-2": ("AdamW lr 1e-2 instead of 5e-3", {"lr": 1e-2}, None),
    "lr_2.5e-3": ("AdamW lr 2.5e-3 instead of 5e-3", {"lr": 2.5e-3}, None),
    "warmup_30": ("30 warm-up steps instead of 100", {"warmup_steps": 30}, None),
    "batch_64": ("batch 64 instead of 32 (the same number of steps: twice the images)", {"batch_size": 64}, None),
    "prior_lr_1e-2": ("background prior 0.99 and AdamW lr 1e-2", {"lr": 1e-2},
                      lambda model: model.init_background_prior(0.99)),
    "prior_lr_7e-3": ("background prior 0.99 and AdamW lr 7e-3", {"lr": 7e-3},
                      lambda model: model.init_background_prior(0.99)),
    "prior_warmup_30": ("background prior 0.99 and 30 warm-up steps", {"warmup_steps": 30},
                        lambda model: model.init_background_prior(0.99)),
}


def run_probe(name: str, steps: int, test_images: int, seed: int = 0) -> dict:
    what, overrides, change = PROBES[name]
    num_classes = len(SHAPE_NAMES) + 1
    torch.manual_seed(seed)
    model = build_model(ModelConfig.small(num_classes, image_size=128, stride4_source=True))
    if change is not None:
        model = change(model)
    config = replace(TrainConfig.small_cpu(seed=seed), **overrides)
    train_data = ShapesDataset("train", size=steps * config.batch_size, image_size=128, seed=0)
    load_start, start = load_average(), time.perf_counter()
    result = train(model, train_data, config=config, progress=False)
    seconds = time.perf_counter() - start
    score = evaluate_model(result.model, ShapesDataset("test", size=test_images, image_size=128, seed=0))
    return {"probe": name, "change": what, "steps": steps, "batch_size": config.batch_size, "seed": seed,
            "test_images": test_images, "test_mAP50": round(float(score["mAP"]), 4),
            "train_seconds": round(seconds, 1), "images_per_s": round(steps * config.batch_size / seconds, 1),
            "load_average": [load_start, load_average()], "torch_threads": torch.get_num_threads(),
            "command": f"python -m benchmarks.recipe_probes --steps {steps} --test-images {test_images} "
                       f"--seed {seed} {shlex.quote(name)}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipe_probes", description=__doc__.splitlines()[0])
    parser.add_argument("probes", nargs="*", help=f"probe names: {', '.join(PROBES)}")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/recipe_probes.jsonl"))
    parser.add_argument("--list", action="store_true", help="print the probes and exit")
    args = parser.parse_args(argv)
    if args.list or not args.probes:
        for name, (what, _, _) in PROBES.items():
            print(f"{name:18s} {what}")
        return 0
    unknown = [name for name in args.probes if name not in PROBES]
    if unknown:
        print(f"unknown probe(s) {', '.join(unknown)}; known: {', '.join(PROBES)}", file=sys.stderr)
        return 2
    lines = args.out.read_text().splitlines() if args.out.exists() else []
    for name in args.probes:
        record = run_probe(name, args.steps, args.test_images, args.seed)
        print(json.dumps(record), flush=True)
        lines.append(json.dumps(record))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
