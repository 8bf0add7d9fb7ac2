"""Lesson 3 (notebook 03_matching): the matching strategy (Sec. 2.2) and the offsets it trains on (Eq. 2).

``check_match`` compares ``match`` (forced best box, then IoU > threshold) with
:func:`ssd_lib.matching.match`: labels exactly, matched boxes where the label is > 0.
``check_encode`` compares the regression targets with :func:`ssd_lib.boxes.encode`.

Usage::

    from ssd_lib.course.checks import check_match
    assert check_match(my_match)
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torchvision.models.detection import _utils as tv_det_utils
from torchvision.ops import box_iou

import ssd_lib.boxes
import ssd_lib.matching
from ssd_lib.boxes import cxcywh_to_xyxy, encode, xyxy_to_cxcywh
from ssd_lib.matching import match
from ssd_lib.priors import PriorConfig, default_boxes

from .harness import (Case, CheckResult, all_close, as_tensor, check_form, compare_tensor, random_boxes, run, tensor,
                      unpack)
from .tripwire import Forbid

_MATCH_FORCED = ("step 1 of the matching (Sec. 2.2): every object must first take its best default box, even below "
                 "the threshold")
_MATCH_FORCED_WINS = ("step 1 has the last word: an object's best default box stays that object's even when another "
                      "object overlaps it more (do step 2, then write the forced matches of step 1 over it)")
_MATCH_BEST = ("step 2: each default box takes the object it overlaps MOST (argmax over the objects) if that IoU > "
               "iou_threshold, and gets that object's label")
_MATCH_BOXES = ("matched_boxes[p] is the xyxy box of the object default box p is matched to (gt_boxes[best object]), "
                "not the default box and not cxcywh")


def _priors_xyxy(rows: list) -> Tensor:
    """Default boxes written as corners (easier to read), returned as cxcywh."""
    return xyxy_to_cxcywh(tensor(rows))


def _diagnose_labels(expected: Tensor, got: Tensor, args: tuple) -> Optional[str]:
    gt_boxes, _, priors, threshold = args
    if len(gt_boxes) == 0:
        return None
    iou = box_iou(gt_boxes, cxcywh_to_xyxy(priors))  # (G, P)
    p = int(torch.nonzero(got.long() != expected)[0])
    if bool((iou.argmax(dim=1) == p).any()):  # default box p is some object's best: a forced match
        return _MATCH_FORCED if int(got[p]) == 0 else _MATCH_FORCED_WINS
    if int(expected[p]) > 0 and int(got[p]) > 0:
        return _MATCH_BEST
    best = float(iou[:, p].max())
    if int(expected[p]) == 0:
        return (f"default box {p} overlaps the objects at most with IoU {best:.3f}, not above iou_threshold = {threshold}, "
                "and is no object's best box: it is background (label 0). Use the iou_threshold argument")
    return (f"default box {p} has IoU {best:.3f} > iou_threshold = {threshold} with an object: it is a positive. "
            + _MATCH_BEST)


def _random_objects(generator: torch.Generator, priors: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``n`` random objects whose best default boxes all differ (which object keeps a shared one is a detail)."""
    while True:
        gt_boxes = random_boxes(generator, n)
        if len(set(box_iou(gt_boxes, cxcywh_to_xyxy(priors)).argmax(dim=1).tolist())) == n:
            return gt_boxes, torch.randint(1, 6, (n,), generator=generator)


def _match_cases(seed: int = 0) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    long = torch.long
    small = default_boxes(PriorConfig.from_paper(60, (4, 2, 1), aspect_ratios=((2,), (2, 3), (2,))))
    ssd300 = default_boxes(PriorConfig.ssd300())
    on_box = _priors_xyxy([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9], [0.15, 0.1, 0.45, 0.4], [0.3, 0.3, 0.6, 0.6]])
    tiny = _priors_xyxy([[0.3, 0.3, 0.7, 0.7], [0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]])
    two = _priors_xyxy([[0.0, 0.0, 0.4, 0.4], [0.1, 0.0, 0.5, 0.4], [0.12, 0.0, 0.52, 0.4], [0.6, 0.6, 0.9, 0.9]])
    forced = _priors_xyxy([[0.0, 0.0, 0.4, 0.4], [0.0, 0.0, 0.4, 0.3], [0.7, 0.7, 1.0, 1.0]])
    threshold = _priors_xyxy([[0.1, 0.1, 0.4, 0.4], [0.175, 0.1, 0.475, 0.4], [0.1333, 0.1, 0.4333, 0.4]])
    seeds = [_random_objects(g, small, 3), _random_objects(g, small, 5), _random_objects(g, ssd300, 4)]
    return [
        Case("no objects (G = 0)", (torch.zeros(0, 4), torch.zeros(0, dtype=long), small, 0.5),
             "an image without objects: every default box is background (label 0) and matched_boxes is still (P, 4); "
             "`.max()` over zero objects raises, so return early when G = 0"),
        Case("one object exactly on a default box", (tensor([[0.1, 0.1, 0.4, 0.4]]), tensor([3], long), on_box, 0.5),
             "default boxes with IoU > iou_threshold take the object (label 3 here); the others are background (0)"),
        Case("tiny object, best IoU < 0.5",
             (tensor([[0.42, 0.42, 0.48, 0.48], [0.0, 0.0, 0.2, 0.2]]), tensor([5, 2], long), tiny, 0.5), _MATCH_FORCED),
        Case("two overlapping objects: each default box takes its best",
             (tensor([[0.0, 0.0, 0.4, 0.4], [0.12, 0.0, 0.52, 0.4]]), tensor([1, 2], long), two, 0.5), _MATCH_BEST),
        Case("a forced match wins over a better threshold match",
             (tensor([[0.0, 0.0, 0.4, 0.3], [0.2, 0.2, 0.6, 0.6]]), tensor([1, 2], long), forced, 0.5), _MATCH_FORCED_WINS),
        Case("iou_threshold = 0.7", (tensor([[0.1, 0.1, 0.4, 0.4]]), tensor([4], long), threshold, 0.7),
             "use the iou_threshold argument, not a fixed 0.5"),
        Case(f"3 random objects, 92 default boxes (seed {seed})", (*seeds[0], small, 0.5), _MATCH_BEST,
             inputs="3 random objects, 92 default boxes of a small config"),
        Case(f"5 random objects, 92 default boxes (seed {seed})", (*seeds[1], small, 0.5), _MATCH_BEST,
             inputs="5 random objects, 92 default boxes of a small config"),
        Case(f"4 random objects, SSD300's 8732 default boxes (seed {seed})", (*seeds[2], ssd300, 0.5), _MATCH_BEST,
             inputs="4 random objects, the 8732 SSD300 default boxes"),
    ]


_MATCH_FORBID = Forbid("check_match", "the matching", (
    match, ssd_lib.matching.match_ious, ssd_lib.matching.match_batch, ssd_lib.matching._assign,
    tv_det_utils.Matcher.__call__, tv_det_utils.SSDMatcher.__call__),
    "torch operations (max, argmax, torch.where, indexing), an IoU (yours, ssd_lib.boxes.box_iou or "
    "torchvision.ops.box_iou) and the box conversions (ssd_lib.boxes.cxcywh_to_xyxy)")


def check_match(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``match(gt_boxes (G, 4), gt_labels (G,), priors_cxcywh (P, 4), iou_threshold=0.5) ->
    (matched_boxes (P, 4), labels (P,))`` against :func:`ssd_lib.matching.match`. Labels must agree
    exactly; matched boxes are compared where the label is > 0 (background rows are free)."""

    def compare(expected: tuple, got: Any, args: tuple) -> None:
        expected_boxes, expected_labels = expected
        boxes, labels = unpack(got, 2, "(matched_boxes, labels)")
        compare_tensor(expected_labels, labels, what="labels", kind="int",
                       diagnose=lambda e, o: _diagnose_labels(e, o, args),
                       shape_hint="one label per default box: (P,), 0 for background")
        boxes = as_tensor(boxes, "matched_boxes")
        check_form(expected_boxes, boxes, "matched_boxes", "float", _MATCH_BOXES)
        positive = expected_labels > 0
        compare_tensor(expected_boxes[positive], boxes[positive], what="matched_boxes[labels > 0]",
                       diagnose=lambda e, o: _MATCH_BOXES)

    arg_names = ("gt_boxes", "gt_labels", "priors_cxcywh", "iou_threshold")
    return run("check_match", fn, arg_names, _match_cases(seed), match, compare, _MATCH_FORBID)


_ENCODE = ("tx = (g_cx - d_cx) / (d_w * variances[0]), ty likewise with cy and d_h; tw = log(g_w / d_w) / variances[1], "
           "th likewise (convert the matched xyxy boxes to cxcywh first)")


def _diagnose_encode(expected: Tensor, got: Tensor, args: tuple) -> str:
    matched_xyxy, priors, (v_centre, v_size) = args
    if not all_close(got[..., :2], expected[..., :2]):
        if all_close(got[..., :2], expected[..., :2] * v_centre):
            return "divide the centre offsets by the variance variances[0] (0.1 by default)"
        if all_close(got[..., :2], expected[..., :2] * priors[..., 2:]):
            return "divide the centre offset by the default box's size: (g_cx - d_cx) / d_w, (g_cy - d_cy) / d_h"
        return _ENCODE
    if all_close(got[..., 2:], expected[..., 2:] * v_size):
        return "divide the size offsets by the variance variances[1] (0.2 by default)"
    if all_close(got[..., 2:], xyxy_to_cxcywh(matched_xyxy)[..., 2:] / priors[..., 2:] / v_size):
        return "the size offsets are the log of the size ratio: log(g_w / d_w) / variances[1]"
    return _ENCODE


_ENCODE_FORBID = Forbid("check_encode", "the encoding of Eq. 2", (
    ssd_lib.boxes.encode, tv_det_utils.BoxCoder.encode, tv_det_utils.BoxCoder.encode_single, tv_det_utils.encode_boxes),
    "torch operations (torch.log, torch.cat, indexing) and the box conversions (ssd_lib.boxes.xyxy_to_cxcywh)")


def check_encode(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``encode(matched_xyxy (P, 4), priors_cxcywh (P, 4), variances) -> (P, 4)`` against
    :func:`ssd_lib.boxes.encode`."""
    g = torch.Generator().manual_seed(seed)
    priors = tensor([[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.3, 0.1]])
    shifted = cxcywh_to_xyxy(priors + tensor([0.02, -0.04, 0.0, 0.0]))
    scaled = cxcywh_to_xyxy(priors * tensor([1.0, 1.0, 2.0, 0.5]))
    both = cxcywh_to_xyxy(priors * tensor([1.1, 0.9, 1.5, 0.8]))
    random_priors = xyxy_to_cxcywh(random_boxes(g, 10))
    cases = [
        Case("matched box = its default box", (cxcywh_to_xyxy(priors), priors, (0.1, 0.2)),
             "a default box matched to itself needs no correction: all offsets are 0 (log(1) = 0)"),
        Case("shifted box, same size", (shifted, priors, (0.1, 0.2)), _ENCODE),
        Case("scaled box, same centre", (scaled, priors, (0.1, 0.2)), _ENCODE),
        Case("other variances (0.5, 0.25)", (both, priors, (0.5, 0.25)),
             "use the `variances` argument, not fixed 0.1 and 0.2"),
        Case(f"random boxes (seed {seed})", (random_boxes(g, 10), random_priors, (0.1, 0.2)), _ENCODE),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        compare_tensor(expected, got, what="the offsets", atol=1e-4, diagnose=lambda e, o: _diagnose_encode(e, o, args),
                       shape_hint="one offset row (tx, ty, tw, th) per default box: (P, 4)")

    return run("check_encode", fn, ("matched_xyxy", "priors_cxcywh", "variances"), cases, encode, compare, _ENCODE_FORBID)
