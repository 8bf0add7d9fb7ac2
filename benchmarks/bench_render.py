"""Shapes images rendered per second: the frozen first renderer against ssd_lib's, on the same items.

Both renderers draw the same items, ``render_shapes(np.random.default_rng([seed, 0, i]), config, size)``
for i < n (what ``ShapesDataset("train", seed=seed)`` draws), in one process, back to back: each repeat
times the old renderer then the new one, so that a neighbour's load falls on both. The first pass
also checks that they drew the same thing (image, boxes, labels, instance map, visible fractions,
bit for bit); a speed is only worth comparing if it did. We report the median images/s over repeats
and the ratio of the medians. ``benchmarks/render_reference.py`` is the frozen renderer.

Usage::

    .venv/bin/python benchmarks/bench_render.py --n 200 --repeats 7 --sizes 128,300
    from benchmarks.bench_render import run; result = run(n=200, repeats=7)   # a dict
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

# Run as a script from anywhere without installing the package: put the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import render_reference  # noqa: E402
from ssd_lib.data import ShapesConfig  # noqa: E402
from ssd_lib.data import drawing  # noqa: E402
from ssd_lib.machine import load_average  # noqa: E402

RENDERERS: dict[str, Callable] = {"old": render_reference.render_shapes, "new": drawing.render_shapes}
CONFIGS = {"default": ShapesConfig.default, "hard": ShapesConfig.hard, "easy": ShapesConfig.easy}


def _render_all(render: Callable, config: ShapesConfig, size: int, n: int, seed: int) -> list:
    return [render(np.random.default_rng([seed, 0, i]), config, size) for i in range(n)]


def _images_per_second(render: Callable, config: ShapesConfig, size: int, n: int, seed: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        render(np.random.default_rng([seed, 0, i]), config, size)
    return n / (time.perf_counter() - start)


def identical(old: list, new: list) -> bool:
    """Every field of every sample equal, bit for bit and in dtype."""
    return all(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
               for old_sample, new_sample in zip(old, new, strict=True) for a, b in zip(old_sample, new_sample))


def run(n: int = 200, repeats: int = 7, sizes: tuple[int, ...] = (128, 300), config: str = "default",
        seed: int = 0) -> dict[str, Any]:
    """Median images/s of the old and the new renderer per image size, their ratio, and the identity check."""
    cfg = CONFIGS[config]()
    load_start = load_average()
    by_size = {}
    for size in sizes:
        samples = {name: _render_all(render, cfg, size, n, seed) for name, render in RENDERERS.items()}  # + warm-up
        rates: dict[str, list[float]] = {name: [] for name in RENDERERS}
        for _ in range(repeats):
            for name, render in RENDERERS.items():
                rates[name].append(_images_per_second(render, cfg, size, n, seed))
        medians = {name: statistics.median(values) for name, values in rates.items()}
        by_size[size] = {"images_per_s": medians, "all_images_per_s": rates, "ratio": medians["new"] / medians["old"],
                         "identical": identical(samples["old"], samples["new"])}
    return {"n": n, "repeats": repeats, "config": config, "seed": seed, "numpy": np.__version__,
            "load_average_start": load_start, "load_average_end": load_average(), "sizes": by_size}


def format_table(result: dict[str, Any]) -> str:
    lines = [f"Shapes rendering ({result['config']} config), {result['n']} images x {result['repeats']} repeats, "
             f"numpy {result['numpy']}; load average {result['load_average_start'][0]:.1f} at start, "
             f"{result['load_average_end'][0]:.1f} at end",
             f"{'size':>5} {'old img/s':>10} {'new img/s':>10} {'new/old':>8}  {'old min-max':>13} {'new min-max':>13}  same?"]
    for size, row in result["sizes"].items():
        old, new = row["all_images_per_s"]["old"], row["all_images_per_s"]["new"]
        lines.append(f"{size:>5} {row['images_per_s']['old']:>10.1f} {row['images_per_s']['new']:>10.1f} "
                     f"{row['ratio']:>7.2f}x  {min(old):>6.0f}-{max(old):<6.0f} {min(new):>6.0f}-{max(new):<6.0f}  "
                     f"{'identical' if row['identical'] else 'MISMATCH'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images per pass")
    parser.add_argument("--repeats", type=int, default=7, help="timed passes of each renderer; the median is reported")
    parser.add_argument("--sizes", default="128,300", help="comma-separated image sides")
    parser.add_argument("--config", choices=list(CONFIGS), default="default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        sizes = tuple(int(size) for size in args.sizes.split(","))
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers such as 128,300; got {args.sizes!r}")
    if args.n < 1 or args.repeats < 1 or min(sizes) < 16:
        parser.error("--n and --repeats must be >= 1 and every size >= 16")
    result = run(args.n, args.repeats, sizes, args.config, args.seed)
    print(format_table(result))
    return 0 if all(row["identical"] for row in result["sizes"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
