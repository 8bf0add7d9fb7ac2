"""Tests for ssd_lib.priors: default boxes against the paper's numbers, hand-written golden
configurations, and torchvision's DefaultBoxGenerator."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from ssd_lib.boxes import cxcywh_to_xyxy
from ssd_lib.priors import PriorConfig, default_boxes, paper_scales

PROPERTY = settings(max_examples=30, derandomize=True, deadline=None)

R2, R3 = math.sqrt(2.0), math.sqrt(3.0)


def _torchvision_priors_xyxy(cfg: PriorConfig, generator: DefaultBoxGenerator) -> torch.Tensor:
    """Run torchvision's generator on dummy feature maps of cfg's sizes: (P, 4) pixel xyxy."""
    size = cfg.image_size
    images = ImageList(torch.zeros(1, 3, size, size, dtype=torch.float64), [(size, size)])
    features = [torch.zeros(1, 1, f, f, dtype=torch.float64) for f in cfg.feature_maps]
    return generator(images, features)[0]


def _ours_xyxy_pixels(cfg: PriorConfig) -> torch.Tensor:
    return cxcywh_to_xyxy(default_boxes(cfg, dtype=torch.float64)) * cfg.image_size


def _released_generator(cfg: PriorConfig) -> DefaultBoxGenerator:
    """The generator torchvision would need to reproduce a min/max-size config."""
    scales = [s / cfg.image_size for s in cfg.min_sizes] + [cfg.max_sizes[-1] / cfg.image_size]
    return DefaultBoxGenerator([list(r) for r in cfg.aspect_ratios], scales=scales, steps=list(cfg.steps), clip=False)


# --- the paper's numbers -----------------------------------------------------------------------

def test_ssd300_has_8732_default_boxes():
    cfg = PriorConfig.ssd300()
    assert cfg.num_priors == 8732
    priors = default_boxes(cfg)
    assert priors.shape == (8732, 4)
    assert priors.dtype == torch.float32


def test_ssd512_has_24564_default_boxes():
    cfg = PriorConfig.ssd512()
    assert cfg.num_priors == 24564
    assert default_boxes(cfg).shape == (24564, 4)


# The released Caffe configurations as literal numbers (ssd_pascal.py / ssd_pascal_512.py; paper Sec. 3.1 and its
# footnote 3), written here and not read from the presets, so that a wrong number in a preset fails.
RELEASED = {
    "ssd300": dict(image_size=300, feature_maps=(38, 19, 10, 5, 3, 1), steps=(8, 16, 32, 64, 100, 300),
                   min_sizes=(30, 60, 111, 162, 213, 264), max_sizes=(60, 111, 162, 213, 264, 315),
                   ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)), total=8732),
    "ssd512": dict(image_size=512, feature_maps=(64, 32, 16, 8, 4, 2, 1), steps=(8, 16, 32, 64, 128, 256, 512),
                   min_sizes=(35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
                   max_sizes=(76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
                   ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)), total=24564),
}


def _caffe_prior_boxes(image_size, feature_maps, steps, min_sizes, max_sizes, ratios, **_) -> torch.Tensor:
    """The released PriorBox layer's loop, transcribed: per cell, the min square, the sqrt(min * max) square,
    then each ratio and its inverse; centres (j + 0.5) * step. (P, 4) pixel cx, cy, w, h, float64."""
    rows = []
    for f, step, lo, hi, rs in zip(feature_maps, steps, min_sizes, max_sizes, ratios):
        for i in range(f):
            for j in range(f):
                cx, cy = (j + 0.5) * step, (i + 0.5) * step
                rows += [(cx, cy, lo, lo), (cx, cy, math.sqrt(lo * hi), math.sqrt(lo * hi))]
                for r in rs:
                    rows += [(cx, cy, lo * math.sqrt(r), lo / math.sqrt(r)), (cx, cy, lo / math.sqrt(r), lo * math.sqrt(r))]
    return torch.tensor(rows, dtype=torch.float64)


def _sorted_rows(boxes: torch.Tensor) -> torch.Tensor:
    rounded = (boxes * 1e6).round()
    for column in reversed(range(rounded.shape[1])):  # lexicographic sort, last key first (stable sorts)
        rounded = rounded[torch.sort(rounded[:, column], stable=True).indices]
    return rounded


@pytest.mark.parametrize("name", ["ssd300", "ssd512"])
def test_presets_are_the_released_numbers(name):
    released = RELEASED[name]
    cfg = getattr(PriorConfig, name)()
    assert cfg.image_size == released["image_size"] and cfg.feature_maps == released["feature_maps"]
    assert cfg.steps == released["steps"]
    assert cfg.min_sizes == pytest.approx(released["min_sizes"]) and cfg.max_sizes == pytest.approx(released["max_sizes"])
    assert tuple(tuple(r) for r in cfg.aspect_ratios) == released["ratios"]
    expected = _caffe_prior_boxes(**released)
    assert len(expected) == released["total"] == cfg.num_priors
    ours = default_boxes(cfg, dtype=torch.float64) * cfg.image_size  # normalised cx, cy, w, h -> pixels
    torch.testing.assert_close(_sorted_rows(ours), _sorted_rows(expected), rtol=0, atol=1)  # 1e-6 px


def test_ssd300_boxes_per_location():
    assert PriorConfig.ssd300().boxes_per_location == (4, 6, 6, 6, 4, 4)
    assert PriorConfig.ssd300().feature_maps == (38, 19, 10, 5, 3, 1)


def test_from_paper_scales_follow_the_paper_formula():
    # s_k = s_min + (s_max - s_min) / (m - 1) * (k - 1), m = 6, s_min = 0.2, s_max = 0.9
    cfg = PriorConfig.from_paper(300, (38, 19, 10, 5, 3, 1))
    expected = [0.2, 0.34, 0.48, 0.62, 0.76, 0.9]
    assert [s / 300 for s in cfg.min_sizes] == pytest.approx(expected, abs=1e-12)
    assert paper_scales(6) == pytest.approx(expected, abs=1e-12)
    # m = 4, s_min = 0.1, s_max = 0.7: step (0.7 - 0.1) / 3 = 0.2
    cfg4 = PriorConfig.from_paper(100, (8, 4, 2, 1), s_min=0.1, s_max=0.7)
    assert [s / 100 for s in cfg4.min_sizes] == pytest.approx([0.1, 0.3, 0.5, 0.7], abs=1e-12)


def test_from_paper_boxes_have_the_paper_sizes():
    """First box of each map is the s_k square, the second the s'_k = sqrt(s_k s_{k+1}) square
    (s_{m+1} = 1 as in torchvision), then (s_k sqrt(r), s_k / sqrt(r)) and its transpose."""
    maps = (6, 3, 2, 1)
    cfg = PriorConfig.from_paper(120, maps, aspect_ratios=((2, 3),) * 4)
    s = [0.2 + 0.7 / 3 * k for k in range(4)] + [1.0]
    priors = default_boxes(cfg, dtype=torch.float64)
    start = 0
    for k, f in enumerate(maps):
        cell = priors[start:start + 6, 2:]  # the 6 boxes of cell (0, 0)
        s_k, s_prime = s[k], math.sqrt(s[k] * s[k + 1])
        expected = torch.tensor([
            [s_k, s_k], [s_prime, s_prime],
            [s_k * R2, s_k / R2], [s_k / R2, s_k * R2],
            [s_k * R3, s_k / R3], [s_k / R3, s_k * R3],
        ], dtype=torch.float64)
        torch.testing.assert_close(cell, expected)
        start += f * f * 6
    assert start == priors.shape[0]


def test_ssd300_extra_square_is_geometric_mean_of_min_and_max():
    cfg = PriorConfig.ssd300()
    priors = default_boxes(cfg, dtype=torch.float64)
    start = 0
    for f, k, lo, hi in zip(cfg.feature_maps, cfg.boxes_per_location, cfg.min_sizes, cfg.max_sizes):
        assert priors[start, 2].item() == pytest.approx(lo / 300)
        assert priors[start + 1, 2].item() == pytest.approx(math.sqrt(lo * hi) / 300)
        start += f * f * k


def test_centres_are_cell_centres():
    """Box centres at ((j + 0.5) / f, (i + 0.5) / f): cx follows the column j, cy the row i."""
    cfg = PriorConfig.from_paper(300, (5, 3, 1), aspect_ratios=((2,), (2, 3), (2,)))
    priors = default_boxes(cfg, dtype=torch.float64)
    start = 0
    for f, a in zip(cfg.feature_maps, cfg.boxes_per_location):
        block = priors[start:start + f * f * a].reshape(f, f, a, 4)  # (i, j, box, 4)
        centre_1d = (torch.arange(f, dtype=torch.float64) + 0.5) / f
        torch.testing.assert_close(block[..., 0], centre_1d.view(1, f, 1).expand(f, f, a))  # cx by column j
        torch.testing.assert_close(block[..., 1], centre_1d.view(f, 1, 1).expand(f, f, a))  # cy by row i
        start += f * f * a


def test_ssd300_centres_use_steps():
    cfg = PriorConfig.ssd300()
    priors = default_boxes(cfg, dtype=torch.float64)
    # conv10_2 (3x3, step 100): cell (i=0, j=2) is the 3rd location of map 5; 4 boxes per location
    offset = 38 * 38 * 4 + 19 * 19 * 6 + 10 * 10 * 6 + 5 * 5 * 6
    torch.testing.assert_close(priors[offset + 2 * 4, :2], torch.tensor([2.5 * 100 / 300, 0.5 * 100 / 300], dtype=torch.float64))
    # conv4_3 (38x38, step 8): cell (i=1, j=0) is location 38
    torch.testing.assert_close(priors[38 * 4, :2], torch.tensor([0.5 * 8 / 300, 1.5 * 8 / 300], dtype=torch.float64))


# --- golden tests on tiny configurations (written out by hand) ---------------------------------

TINY_1x1 = PriorConfig(image_size=100, feature_maps=(1,), steps=(100,), min_sizes=(20,), max_sizes=(80,),
                       aspect_ratios=((2,),))
# s = 0.2, s' = sqrt(0.2 * 0.8) = 0.4, r = 2: (0.2 * sqrt 2, 0.2 / sqrt 2), then 1/r
GOLDEN_1x1 = [
    [0.5, 0.5, 0.2, 0.2],
    [0.5, 0.5, 0.4, 0.4],
    [0.5, 0.5, 0.28284271247, 0.14142135624],
    [0.5, 0.5, 0.14142135624, 0.28284271247],
]

TINY_2x2 = PriorConfig(image_size=100, feature_maps=(2,), steps=(50,), min_sizes=(30,), max_sizes=(120,),
                       aspect_ratios=((3,),))
# s = 0.3, s' = sqrt(0.3 * 1.2) = 0.6, r = 3: (0.3 * sqrt 3, 0.3 / sqrt 3) = (0.51961524, 0.17320508)
# cells in row-major order: (i, j) = (0, 0), (0, 1), (1, 0), (1, 1) -> (cx, cy) = (.25,.25), (.75,.25), (.25,.75), (.75,.75)
GOLDEN_2x2 = [
    [0.25, 0.25, 0.3, 0.3], [0.25, 0.25, 0.6, 0.6], [0.25, 0.25, 0.51961524227, 0.17320508076], [0.25, 0.25, 0.17320508076, 0.51961524227],
    [0.75, 0.25, 0.3, 0.3], [0.75, 0.25, 0.6, 0.6], [0.75, 0.25, 0.51961524227, 0.17320508076], [0.75, 0.25, 0.17320508076, 0.51961524227],
    [0.25, 0.75, 0.3, 0.3], [0.25, 0.75, 0.6, 0.6], [0.25, 0.75, 0.51961524227, 0.17320508076], [0.25, 0.75, 0.17320508076, 0.51961524227],
    [0.75, 0.75, 0.3, 0.3], [0.75, 0.75, 0.6, 0.6], [0.75, 0.75, 0.51961524227, 0.17320508076], [0.75, 0.75, 0.17320508076, 0.51961524227],
]


def test_golden_1x1():
    assert TINY_1x1.num_priors == 4
    torch.testing.assert_close(default_boxes(TINY_1x1, dtype=torch.float64), torch.tensor(GOLDEN_1x1, dtype=torch.float64))


def test_golden_2x2():
    assert TINY_2x2.num_priors == 16
    torch.testing.assert_close(default_boxes(TINY_2x2, dtype=torch.float64), torch.tensor(GOLDEN_2x2, dtype=torch.float64))


def test_golden_two_maps_in_order():
    """Maps are concatenated largest first: the 2x2 map's 16 boxes, then the 1x1 map's 4."""
    cfg = PriorConfig(image_size=100, feature_maps=(2, 1), steps=(50, 100), min_sizes=(30, 20),
                      max_sizes=(120, 80), aspect_ratios=((3,), (2,)))
    expected = torch.tensor(GOLDEN_2x2 + GOLDEN_1x1, dtype=torch.float64)
    torch.testing.assert_close(default_boxes(cfg, dtype=torch.float64), expected)


def test_clip_happens_in_corner_form():
    cfg = PriorConfig(image_size=100, feature_maps=(2,), steps=(50,), min_sizes=(60,), max_sizes=(60,),
                      aspect_ratios=((),), clip=True)
    unclipped_cfg = dataclasses.replace(cfg, clip=False)
    raw = default_boxes(unclipped_cfg, dtype=torch.float64)
    clipped = default_boxes(cfg, dtype=torch.float64)
    # Cell (0, 0), square 0.6 at centre 0.25: corners (-0.05, -0.05, 0.55, 0.55) -> (0, 0, 0.55, 0.55)
    torch.testing.assert_close(clipped[0], torch.tensor([0.275, 0.275, 0.55, 0.55], dtype=torch.float64))
    corners = cxcywh_to_xyxy(clipped)
    assert (corners >= -1e-12).all() and (corners <= 1 + 1e-12).all()
    torch.testing.assert_close(corners, cxcywh_to_xyxy(raw).clamp(0, 1))
    # Clamping (cx, cy, w, h) instead would leave this box untouched, sticking out of the image.
    naive = raw.clamp(0, 1)
    torch.testing.assert_close(naive[0], raw[0])
    assert cxcywh_to_xyxy(naive)[0, 0] < 0
    assert not torch.allclose(naive, clipped)


@PROPERTY
@given(
    maps=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    s_min=st.floats(0.05, 0.5),
    spread=st.floats(0.0, 0.5),
)
def test_clipped_priors_inside_image(maps, s_min, spread):
    cfg = PriorConfig.from_paper(64, tuple(sorted(maps, reverse=True)), s_min=s_min, s_max=s_min + spread, clip=True)
    priors = default_boxes(cfg, dtype=torch.float64)
    corners = cxcywh_to_xyxy(priors)
    assert priors.shape == (cfg.num_priors, 4)
    assert (corners >= -1e-12).all() and (corners <= 1 + 1e-12).all()
    assert (priors[:, 2:] > 0).all()


# --- against torchvision -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "cfg",
    [PriorConfig.ssd300(), PriorConfig.ssd512(), PriorConfig.from_paper(300, (38, 19, 10, 5, 3, 1))],
    ids=["ssd300", "ssd512", "from_paper"],
)
def test_released_configs_match_torchvision_generator(cfg):
    ours = _ours_xyxy_pixels(cfg)
    theirs = _torchvision_priors_xyxy(cfg, _released_generator(cfg))
    assert ours.shape == theirs.shape == (cfg.num_priors, 4)
    torch.testing.assert_close(ours, theirs.to(torch.float64), atol=1e-4, rtol=0)


def test_from_paper_matches_torchvision_paper_scales():
    """torchvision's generator, left to estimate scales itself from min_ratio/max_ratio and steps
    from the feature maps, implements the paper's Eq. 4 (with s_{m+1} = 1): an independent reference."""
    maps = (38, 19, 10, 5, 3, 1)
    ratios = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    cfg = PriorConfig.from_paper(300, maps, s_min=0.2, s_max=0.9, aspect_ratios=tuple(tuple(r) for r in ratios))
    generator = DefaultBoxGenerator(ratios, min_ratio=0.2, max_ratio=0.9, steps=None, clip=False)
    ours = _ours_xyxy_pixels(cfg)
    theirs = _torchvision_priors_xyxy(cfg, generator)
    assert ours.shape == theirs.shape == (8732, 4)
    torch.testing.assert_close(ours, theirs.to(torch.float64), atol=1e-4, rtol=0)


def test_device_and_dtype_follow_arguments():
    priors = default_boxes(TINY_1x1, dtype=torch.float16, device="cpu")
    assert priors.dtype == torch.float16 and priors.device.type == "cpu"


# --- bad configurations ------------------------------------------------------------------------

def test_lists_of_different_lengths_rejected():
    with pytest.raises(ValueError, match="steps has 2 entries but feature_maps has 3"):
        PriorConfig(image_size=100, feature_maps=(4, 2, 1), steps=(25, 50), min_sizes=(10, 20, 30),
                    max_sizes=(20, 30, 40), aspect_ratios=((2,), (2,), (2,)))
    with pytest.raises(ValueError, match="aspect_ratios"):
        PriorConfig(image_size=100, feature_maps=(4, 2), steps=(25, 50), min_sizes=(10, 20),
                    max_sizes=(20, 30), aspect_ratios=((2,),))


def test_bad_sizes_rejected():
    with pytest.raises(ValueError, match="min_sizes"):
        PriorConfig(image_size=100, feature_maps=(1,), steps=(100,), min_sizes=(50,), max_sizes=(40,),
                    aspect_ratios=((2,),))
    with pytest.raises(ValueError, match="aspect_ratios"):
        PriorConfig(image_size=100, feature_maps=(1,), steps=(100,), min_sizes=(50,), max_sizes=(60,),
                    aspect_ratios=((0,),))
    with pytest.raises(ValueError, match="s_min"):
        PriorConfig.from_paper(300, (10, 5), s_min=0.9, s_max=0.2)


def test_config_is_frozen():
    cfg = PriorConfig.ssd300()
    with pytest.raises(AttributeError):
        cfg.image_size = 512  # type: ignore[misc]
