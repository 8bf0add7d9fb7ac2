"""The fast Shapes renderer (ssd_lib/data/drawing.py) draws exactly what the first one drew.

The shipped model, its card, the lessons' figures and the README's numbers were all made from
Shapes images, so a faster renderer may not change one bit of any (seed, split, index): image,
boxes, labels, instance map and visible fractions are compared with ``np.array_equal`` (and dtypes),
and the generator must end in the same state (every random draw kept, in order). The reference is
``benchmarks/render_reference.py``, a frozen copy of the renderer before it was optimised.

Besides the three presets, two configs reach the rare branches (shapes cut by the border, objects
hiding each other and re-checked with shrunk boxes, no palette colour with enough contrast, windows
with no free background pixel, smaller retries, dropped objects); the items include the first ones
that fail a placement on that re-check.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import render_reference
from ssd_lib.data import ShapesConfig, ShapesDataset
from ssd_lib.data import drawing
from ssd_lib.data.shapes import SPLIT_CODES

CONFIGS = {
    "default": ShapesConfig.default(),
    "hard": ShapesConfig.hard(),
    "easy": ShapesConfig.easy(),
    # Crowded: most objects hide others; no palette colour has the contrast asked for; some windows have
    # no free background pixel; a few placements fail only on the re-check with shrunk boxes.
    "crowded": ShapesConfig.hard().with_(objects_per_image=(10, 12), max_iou=0.2, min_visible=0.4, border_prob=0.9,
                                         min_contrast=0.45, area_budget=2.0, placement_tries=2),
    # Packed: no overlap allowed and one try per size, so objects are shrunk and some are dropped.
    "packed": ShapesConfig.hard().with_(objects_per_image=(10, 12), max_iou=0.0, area_budget=2.0, placement_tries=1),
}
# (seed, split, index): small and large indices, three seeds, all splits.
ITEMS = [(0, "train", 0), (0, "train", 17), (0, "train", 9_999), (1, "train", 5), (7, "val", 3),
         (123, "test", 31_337)]
# The items of each config; the extra train indices are the first that fail a placement on the
# re-check with shrunk boxes (211 default, 379 hard at 128 px; 39 and 100 crowded at every size).
CASES = {"default": ITEMS + [(0, "train", 211)], "hard": ITEMS + [(0, "train", 379)], "easy": ITEMS,
         "crowded": [(0, "train", 39), (0, "train", 100), (1, "val", 2)], "packed": [(0, "train", 0), (2, "test", 7)]}


def _reference(seed: int, split: str, index: int, cfg: ShapesConfig, size: int):
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    return render_reference.render_shapes(rng, cfg, size), rng.bit_generator.state


@pytest.mark.parametrize("size", [128, 256, 300])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_samples_as_the_frozen_renderer(name, size):
    cfg = CONFIGS[name]
    for seed, split, index in CASES[name]:
        expected, expected_state = _reference(seed, split, index, cfg, size)
        rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
        got = drawing.render_shapes(rng, cfg, size)
        where = f"{name} config, {size} px, seed {seed}, {split}[{index}]"
        for field, want, have in zip(expected._fields, expected, got):
            assert have.dtype == want.dtype and have.shape == want.shape, f"{field} differs in type: {where}"
            assert np.array_equal(have, want), f"{field} differs: {where}"
        assert rng.bit_generator.state == expected_state, f"the random stream was consumed differently: {where}"


def test_dataset_items_are_the_frozen_renderers():
    """ShapesDataset seeds item i with [seed, split code, i] and draws it with the fast renderer."""
    for name, cfg in CONFIGS.items():
        dataset = ShapesDataset("val", size=4, seed=3, image_size=128, config=cfg)
        expected, _ = _reference(3, "val", 3, cfg, 128)
        image, target = dataset[3]
        assert np.array_equal(image.numpy(), expected.image), name
        assert np.array_equal(target["boxes"].numpy(), expected.boxes), name
        assert np.array_equal(target["labels"].numpy(), expected.labels), name


def test_exact_replacements_of_numpy_calls():
    """The helpers that stand in for numpy calls give the same values and draws as those calls."""
    for stop, num in [(1.0, 2), (1.0, 3), (1.0, 57), (2.7, 40), (math.pi, 333), (0.3, 7)]:
        assert np.array_equal(drawing._linspace0(stop, num), np.linspace(0.0, stop, num)), (stop, num)
    for count in (1, 3, 4, 5, 3 * 128 * 128, 3 * 300 * 300):
        a, b = np.random.default_rng(count), np.random.default_rng(count)
        a.integers(5)  # leaves half a 64-bit draw buffered, as the renderer's earlier draws do
        b.integers(5)
        assert np.array_equal(drawing._random_bytes(a, count), np.frombuffer(b.bytes(count), np.int8)), count
        assert a.bit_generator.state == b.bit_generator.state
    values = np.random.default_rng(0).random((3, 1001), dtype=np.float32)
    for n in (1, 2, 7, 1001):
        assert np.array_equal(drawing._mean_rows(values[:, :n].copy()), values[:, :n].mean(1))
    luma = list(np.asarray(ShapesConfig().palette, np.float32) @ drawing._LUMA)
    for avoid in ([0.5], [0.1, 0.9], [0.45, 0.5, 0.55], [0.2]):
        for margin in (0.3, 0.6, 0.99):  # 0.99: no colour is far enough, the farthest is taken
            a, b = np.random.default_rng(1), np.random.default_rng(1)
            assert (drawing._pick_colour(a, [float(x) for x in luma], avoid, margin)
                    == render_reference._pick_colour(b, np.asarray(luma, np.float32), avoid, margin))
            assert a.bit_generator.state == b.bit_generator.state
