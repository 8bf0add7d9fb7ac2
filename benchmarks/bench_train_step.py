"""Training images/s of the main job's step: the step of 2026-12-02 (frozen first renderer) against today's.

One training step of ``python -m ssd_lib main`` is: draw 32 Shapes images, flip, resize, match + encode, forward,
MultiBox loss, backward, AdamW (``TrainConfig.small_cpu``, bf16 autocast where the CPU has it). Between the issue's
measurement (2026-12-02) and now, the only change inside the step is the renderer: ``old`` draws the images with
``benchmarks/render_reference.py`` (the frozen first renderer), ``new`` with ``ssd_lib.data.drawing``. Both train
the same model (the main job's: 6 source maps with the stride-4 map) from the same weights on the same items (the
renderers draw the same pixels, bit for bit: tests/test_render_identity.py). What cut the main job's *time* is
mostly elsewhere, in fewer steps (2900 -> 1800, the background prior): that ratio is in the README's table.

Each repeat runs ``old`` then ``new`` back to back, ``steps`` steps each after a warm-up of both, so a neighbour's
load falls on both; we report the median images/s and the ratio of the medians.

Usage::

    .venv/bin/python benchmarks/bench_train_step.py --steps 30 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import render_reference  # noqa: E402
from ssd_lib.data import ShapesDataset  # noqa: E402
from ssd_lib.data.shapes import SPLIT_CODES  # noqa: E402
from ssd_lib.machine import load_average  # noqa: E402
from ssd_lib.model import ModelConfig, build_model  # noqa: E402
from ssd_lib.train import TrainConfig, train  # noqa: E402


class OldShapesDataset(ShapesDataset):
    """ShapesDataset drawing its items with the frozen first renderer (the step of 2026-12-02)."""

    def render(self, index: int):
        index = self._check_index(index)
        rng = np.random.default_rng([self.seed, SPLIT_CODES[self.split], index])
        return render_reference.render_shapes(rng, self.config, self.image_size)


DATASETS = {"old": OldShapesDataset, "new": ShapesDataset}


def _images_per_second(kind: str, steps: int, batch_size: int, state: dict, seed: int) -> float:
    data = DATASETS[kind]("train", size=steps * batch_size, seed=seed, image_size=128)
    model = build_model(ModelConfig.small(7, 128, stride4_source=True))
    model.load_state_dict(state)
    config = TrainConfig.small_cpu(seed=seed, batch_size=batch_size, warmup_steps=1, log_every=steps, device="cpu")
    start = time.perf_counter()
    train(model, data, None, config, progress=False)
    return steps * batch_size / (time.perf_counter() - start)


def run(steps: int = 30, repeats: int = 3, batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    state = build_model(ModelConfig.small(7, 128, stride4_source=True)).init_background_prior(0.99).state_dict()
    load_start = load_average()
    for kind in DATASETS:  # warm-up: allocator, oneDNN kernels, renderer caches
        _images_per_second(kind, 3, batch_size, state, seed)
    rates: dict[str, list[float]] = {kind: [] for kind in DATASETS}
    for _ in range(repeats):
        for kind in DATASETS:
            rates[kind].append(_images_per_second(kind, steps, batch_size, state, seed))
    medians = {kind: statistics.median(v) for kind, v in rates.items()}
    return {"steps": steps, "repeats": repeats, "batch_size": batch_size, "threads": torch.get_num_threads(),
            "images_per_s": medians, "all_images_per_s": rates, "ratio": medians["new"] / medians["old"],
            "load_average_start": load_start, "load_average_end": load_average()}


def format_table(result: dict[str, Any]) -> str:
    return "\n".join([
        f"Main job's training step (batch {result['batch_size']}, {result['steps']} steps x {result['repeats']} "
        f"repeats, {result['threads']} threads); load average {result['load_average_start'][0]:.1f} at start, "
        f"{result['load_average_end'][0]:.1f} at end",
        f"{'step':>5} {'images/s':>9}  all repeats",
        *(f"{kind:>5} {result['images_per_s'][kind]:>9.1f}  "
          + ", ".join(f"{v:.1f}" for v in result["all_images_per_s"][kind]) for kind in DATASETS),
        f"new/old: {result['ratio']:.2f}x",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/bench_train_step.py", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.batch_size < 1:
        print("error: --steps, --repeats and --batch-size must be >= 1", file=sys.stderr)
        return 2
    print(format_table(run(args.steps, args.repeats, args.batch_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
