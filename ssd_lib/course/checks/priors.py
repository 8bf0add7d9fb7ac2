"""Lesson 2 (notebook 02_default_boxes): the default boxes' scales and the boxes themselves (Sec. 2.2, Eq. 4).

``check_scales`` compares s_1..s_m with :func:`ssd_lib.priors.paper_scales`; ``check_default_boxes``
the (P, 4) cxcywh boxes of a :class:`~ssd_lib.priors.PriorConfig` with
:func:`ssd_lib.priors.default_boxes`, from a 1 x 1 map up to SSD300's 8732.

Usage::

    from ssd_lib.course.checks import check_default_boxes
    assert check_default_boxes(my_default_boxes)
"""
from __future__ import annotations

import random
from typing import Any, Callable

import torch
from torch import Tensor
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

import ssd_lib.priors
from ssd_lib.priors import PriorConfig, default_boxes, paper_scales

from .harness import Case, CheckResult, Mismatch, all_close, compare_tensor, run, tensor
from .tripwire import Forbid

_SCALES = "s_k = s_min + (s_max - s_min) / (m - 1) * (k - 1) for k = 1..m: the first is s_min and the last s_max"


_SCALES_FORBID = Forbid("check_scales", "the scales of Eq. 4", (paper_scales,),
                        "Python arithmetic, range and lists")


def _random_scales_case(seed: int) -> tuple[int, float, float]:
    rng = random.Random(seed)
    return rng.randint(3, 8), round(rng.uniform(0.05, 0.3), 3), round(rng.uniform(0.6, 0.95), 3)


def _random_prior_config(seed: int) -> PriorConfig:
    rng = random.Random(seed)
    maps = tuple(sorted((rng.randint(1, 9) for _ in range(rng.randint(1, 4))), reverse=True))
    ratios = tuple(rng.choice(((), (2,), (2, 3))) for _ in maps)
    return PriorConfig.from_paper(rng.choice((64, 96, 128, 300)), maps, aspect_ratios=ratios)


def check_scales(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``scales(m, s_min=0.2, s_max=0.9) -> list[float]`` against :func:`ssd_lib.priors.paper_scales`."""
    cases = [
        Case("paper setting m = 6", (6, 0.2, 0.9), _SCALES),
        Case("two maps m = 2", (2, 0.2, 0.9), _SCALES),
        Case("other range m = 4, s_min = 0.1, s_max = 0.5", (4, 0.1, 0.5), "use the s_min and s_max arguments: " + _SCALES),
        Case("one map m = 1", (1, 0.2, 0.9),
             "with a single map there is no spacing to compute (m - 1 = 0): return [s_min]"),
        Case(f"random m, s_min, s_max (seed {seed})", _random_scales_case(seed), _SCALES),
    ]

    def compare(expected: list, got: Any, args: tuple) -> None:
        try:
            values = tensor([float(value) for value in got], torch.float64)
        except (TypeError, ValueError):
            raise Mismatch(f"expected a list of numbers, got {type(got).__name__}", "return a list of m floats") from None
        compare_tensor(tensor(expected, torch.float64), values, what="the scales", atol=1e-6, rtol=1e-6,
                       shape_hint=f"one scale per feature map: m = {args[0]} numbers")

    return run("check_scales", fn, ("m", "s_min", "s_max"), cases, paper_scales, compare, _SCALES_FORBID)


_PRIOR_SIZES = ("each cell holds s_k x s_k, the extra square s'_k = sqrt(s_k * s_(k+1)) (from min_sizes[k] * max_sizes[k]), "
                "then (s_k * sqrt(r), s_k / sqrt(r)) and (s_k / sqrt(r), s_k * sqrt(r)) per ratio r, all / image_size")
_PRIOR_CENTRES = ("centres are cell centres: cx = (j + 0.5) * steps[k] / image_size, cy = (i + 0.5) * steps[k] / image_size "
                  "(the 0.5 puts the box in the middle of the cell, not at its corner)")
_PRIOR_ORDER = ("the order is map, then row i (y), then column j (x), then box; cx comes from the column j and cy from "
                "the row i (your rows and columns are swapped)")


def _diagnose_default_boxes(expected: Tensor, got: Tensor) -> str:
    if not all_close(got[:, 2:], expected[:, 2:]):
        return _PRIOR_SIZES
    if all_close(got[:, :2], expected[:, [1, 0]]):
        return _PRIOR_ORDER
    return _PRIOR_CENTRES


_DEFAULT_BOXES_FORBID = Forbid("check_default_boxes", "the default boxes", (
    default_boxes, ssd_lib.priors._box_shapes, DefaultBoxGenerator.forward, DefaultBoxGenerator._grid_default_boxes,
    DefaultBoxGenerator._generate_wh_pairs),
    "torch operations, math.sqrt, the scales (yours or ssd_lib.priors.paper_scales) and the box conversions "
    "(ssd_lib.boxes.cxcywh_to_xyxy, xyxy_to_cxcywh)")


def check_default_boxes(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``default_boxes(cfg: PriorConfig) -> (P, 4) cxcywh`` against :func:`ssd_lib.priors.default_boxes`."""
    one_cell = PriorConfig(image_size=100, feature_maps=(1,), steps=(100,), min_sizes=(20,), max_sizes=(80,),
                           aspect_ratios=((2,),))
    two_by_two = PriorConfig(image_size=100, feature_maps=(2,), steps=(50,), min_sizes=(30,), max_sizes=(60,),
                             aspect_ratios=((),))
    two_maps = PriorConfig(image_size=64, feature_maps=(4, 1), steps=(16, 64), min_sizes=(12.8, 32.0),
                           max_sizes=(32.0, 64.0), aspect_ratios=((2, 3), (2,)))
    cases = [
        Case("one 1 x 1 map", (one_cell,), _PRIOR_CENTRES),
        Case("a 2 x 2 map, squares only (order of the cells)", (two_by_two,), _PRIOR_ORDER),
        Case("two maps 4 x 4 and 1 x 1, ratios (2, 3) and (2,)", (two_maps,), _PRIOR_SIZES),
        Case("the paper's recipe for 3 maps", (PriorConfig.from_paper(300, (5, 3, 1)),), _PRIOR_SIZES),
        Case("SSD300 (8732 boxes)", (PriorConfig.ssd300(),), _PRIOR_SIZES, inputs="PriorConfig.ssd300()"),
        Case(f"random maps and ratios, the paper's recipe (seed {seed})", (_random_prior_config(seed),), _PRIOR_SIZES),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        cfg = args[0]
        shape_hint = (f"P = sum over maps of f_k * f_k * (2 + 2 * len(aspect_ratios[k])) = {cfg.num_priors} here: "
                      f"{_PRIOR_SIZES}")
        compare_tensor(expected, got, what="the default boxes", diagnose=_diagnose_default_boxes, shape_hint=shape_hint)

    return run("check_default_boxes", fn, ("cfg",), cases, default_boxes, compare, _DEFAULT_BOXES_FORBID)
