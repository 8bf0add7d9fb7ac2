"""Lesson 1 (notebook 01_boxes): box formats and IoU.

``check_iou`` compares a hand-written IoU with ``torchvision.ops.box_iou``; ``check_xyxy_to_cxcywh``
the corner-to-centre conversion with :func:`ssd_lib.boxes.xyxy_to_cxcywh`. (Lesson 1's encode and
decode are exercises of lessons 3 and 8: their checkers are in ``matching`` and ``detect``.)

Usage::

    from ssd_lib.course.checks import check_iou
    assert check_iou(iou)
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torchvision.ops._box_convert as tv_box_convert
import torchvision.ops.boxes as tv_boxes
from torch import Tensor
from torchvision.ops import box_iou

import ssd_lib.boxes
import ssd_lib.matching
from ssd_lib.boxes import xyxy_to_cxcywh

from .harness import Case, CheckResult, all_close, compare_tensor, random_boxes, run, tensor
from .tripwire import Forbid

_IOU_UNION = ("IoU = intersection / union with union = area_a + area_b - intersection (the overlap is counted "
              "once); a box with itself has IoU 1")
_IOU_CLAMP = ("boxes that do not overlap have IoU 0: clamp the intersection's width and height at 0 "
              "(`.clamp(min=0)`) before multiplying, or two negative sides make a positive area")
_IOU_PAIRS = ("result[i, j] is the IoU of boxes_a[i] with boxes_b[j], shape (N, M): broadcast boxes_a[:, None, :] "
              "against boxes_b[None, :, :] to get every pair")
_IOU_EMPTY = "with no boxes on one side the result is an empty (N, M) tensor; broadcasting gives it with no special case"


_IOU_FORBID = Forbid("check_iou", "the IoU", (
    ssd_lib.boxes.box_iou, ssd_lib.matching.pairwise_iou, tv_boxes.box_iou, tv_boxes._box_inter_union),
    "torch operations (torch.maximum, torch.minimum, clamp, broadcasting with None)")


def check_iou(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``iou(boxes_a (N, 4), boxes_b (M, 4)) -> (N, M)`` (xyxy) against ``torchvision.ops.box_iou``."""
    g = torch.Generator().manual_seed(seed)
    cases = [
        Case("identical boxes", (tensor([[0.1, 0.1, 0.5, 0.5]]), tensor([[0.1, 0.1, 0.5, 0.5]])), _IOU_UNION),
        Case("disjoint boxes", (tensor([[0.0, 0.0, 0.2, 0.2]]), tensor([[0.5, 0.5, 0.9, 0.9]])), _IOU_CLAMP),
        Case("boxes apart in x only", (tensor([[0.0, 0.0, 0.2, 0.5]]), tensor([[0.4, 0.1, 0.6, 0.4]])), _IOU_CLAMP),
        Case("boxes touching at an edge", (tensor([[0.0, 0.0, 0.5, 0.5]]), tensor([[0.5, 0.0, 1.0, 0.5]])), _IOU_CLAMP),
        Case("a box inside another", (tensor([[0.0, 0.0, 1.0, 1.0]]), tensor([[0.25, 0.25, 0.75, 0.75]])),
             "the intersection runs from the larger x1, y1 to the smaller x2, y2; here it is the inner box"),
        Case("2 x 3 pairs", (tensor([[0.0, 0.0, 0.5, 0.5], [0.2, 0.3, 0.9, 0.6]]),
                             tensor([[0.1, 0.1, 0.4, 0.6], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])), _IOU_PAIRS),
        Case("no boxes in boxes_b (M = 0)", (random_boxes(g, 2), torch.zeros(0, 4)), _IOU_EMPTY),
        Case("no boxes in boxes_a (N = 0)", (torch.zeros(0, 4), random_boxes(g, 3)), _IOU_EMPTY),
        Case(f"random boxes in [0, 1] (seed {seed})", (random_boxes(g, 5), random_boxes(g, 7)), _IOU_PAIRS),
        Case(f"random boxes in pixels (seed {seed})", (random_boxes(g, 4, 300.0), random_boxes(g, 6, 300.0)),
             "nothing in IoU assumes coordinates in [0, 1]: " + _IOU_PAIRS),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        compare_tensor(expected, got, what="the IoU matrix", shape_hint=_IOU_PAIRS)

    return run("check_iou", fn, ("boxes_a", "boxes_b"), cases, box_iou, compare, _IOU_FORBID)


_CXCYWH = "(cx, cy, w, h) = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)"


def _diagnose_cxcywh(expected: Tensor, got: Tensor) -> str:
    if not all_close(got[..., :2], expected[..., :2]):
        return "the centre is the midpoint of the corners, cx = (x1 + x2) / 2 and cy = (y1 + y2) / 2, not a corner"
    if all_close(got[..., 2:], expected[..., [3, 2]]):
        return "w and h are swapped: the order is (cx, cy, w, h) with w = x2 - x1 (along x) before h = y2 - y1"
    return "the size is w = x2 - x1 and h = y2 - y1: " + _CXCYWH


_CXCYWH_FORBID = Forbid("check_xyxy_to_cxcywh", "the corner-to-centre conversion", (
    ssd_lib.boxes.xyxy_to_cxcywh, tv_boxes.box_convert, tv_box_convert._box_xyxy_to_cxcywh),
    "torch operations (indexing, unbind, torch.stack, torch.cat)")


def check_xyxy_to_cxcywh(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``xyxy_to_cxcywh(boxes (N, 4)) -> (N, 4)`` against :func:`ssd_lib.boxes.xyxy_to_cxcywh`."""
    g = torch.Generator().manual_seed(seed)
    cases = [
        Case("unit square at the origin", (tensor([[0.0, 0.0, 1.0, 1.0]]),), _CXCYWH),
        Case("wide box (w != h)", (tensor([[0.1, 0.2, 0.7, 0.4]]),), _CXCYWH),
        Case("tall box and a box off the origin", (tensor([[0.4, 0.1, 0.5, 0.9], [0.3, 0.5, 0.8, 0.6]]),), _CXCYWH),
        Case("a point (zero size)", (tensor([[0.3, 0.6, 0.3, 0.6]]),), _CXCYWH),
        Case("no boxes (0, 4)", (torch.zeros(0, 4),), "no boxes in, no boxes out: an empty (0, 4) tensor"),
        Case(f"random pixel boxes (seed {seed})", (random_boxes(g, 8, 300.0),), _CXCYWH),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        compare_tensor(expected, got, what="the cxcywh boxes", diagnose=_diagnose_cxcywh,
                       shape_hint="one (cx, cy, w, h) row per box: stack the four columns with torch.stack(..., dim=-1)")

    return run("check_xyxy_to_cxcywh", fn, ("boxes",), cases, xyxy_to_cxcywh, compare, _CXCYWH_FORBID)
