"""Lesson 8 (notebook 08_inference): from offsets to boxes, and non-maximum suppression (Sec. 3).

``check_decode`` compares ``decode`` (the inverse of encode, Eq. 2) with :func:`ssd_lib.boxes.decode`;
``check_nms`` the kept indices, in decreasing score order, with ``torchvision.ops.nms``.

Usage::

    from ssd_lib.course.checks import check_nms
    assert check_nms(my_nms)
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torchvision.ops.boxes as tv_boxes
from torch import Tensor
from torchvision.models.detection import _utils as tv_det_utils
from torchvision.ops import box_iou, nms

import ssd_lib.boxes
import ssd_lib.detect
from ssd_lib.boxes import decode, encode, xyxy_to_cxcywh

from .harness import Case, CheckResult, Mismatch, all_close, as_tensor, compare_tensor, fmt, random_boxes, run, tensor
from .tripwire import Forbid

_DECODE = ("invert encode: cx = d_cx + tx * variances[0] * d_w, w = d_w * exp(tw * variances[1]) (likewise y, h), "
           "then convert (cx, cy, w, h) to corners")


def _diagnose_decode(expected: Tensor, got: Tensor, args: tuple) -> str:
    offsets, priors, (v_centre, v_size) = args
    if all_close(got, xyxy_to_cxcywh(expected)):
        return "you returned (cx, cy, w, h): return corners (x1, y1, x2, y2), e.g. with cxcywh_to_xyxy"
    if all_close(got, decode(offsets, priors, (v_centre**2, v_size**2))):
        return "each variance is applied once: cx = d_cx + tx * variances[0] * d_w, w = d_w * exp(tw * variances[1])"
    if all_close(got, decode(offsets, priors, (1.0, 1.0))):
        return "multiply the offsets by the variances: tx * variances[0], tw * variances[1]"
    return _DECODE


_DECODE_FORBID = Forbid("check_decode", "the decoding (Eq. 2 undone)", (
    ssd_lib.boxes.decode, tv_det_utils.BoxCoder.decode, tv_det_utils.BoxCoder.decode_single),
    "torch operations (torch.exp, torch.cat, indexing) and the box conversions (ssd_lib.boxes.cxcywh_to_xyxy)")


def check_decode(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``decode(offsets (P, 4), priors_cxcywh (P, 4), variances) -> (P, 4) xyxy`` against
    :func:`ssd_lib.boxes.decode`."""
    g = torch.Generator().manual_seed(seed)
    priors = tensor([[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.3, 0.1]])
    random_priors = xyxy_to_cxcywh(random_boxes(g, 10))
    round_trip = encode(random_boxes(g, 10), random_priors)
    cases = [
        Case("zero offsets give the default boxes back, as xyxy", (torch.zeros(2, 4), priors, (0.1, 0.2)), _DECODE),
        Case("centre offsets only", (tensor([[1.0, -2.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]), priors, (0.1, 0.2)), _DECODE),
        Case("size offsets only", (tensor([[0.0, 0.0, 1.0, -1.0], [0.0, 0.0, 2.0, 0.5]]), priors, (0.1, 0.2)), _DECODE),
        Case("other variances (0.5, 0.25)", (tensor([[1.0, -1.0, 0.5, -0.5], [0.2, 0.3, 1.0, 1.0]]), priors, (0.5, 0.25)),
             "use the `variances` argument, not fixed 0.1 and 0.2"),
        Case(f"decode(encode(boxes)) (seed {seed})", (round_trip, random_priors, (0.1, 0.2)), _DECODE),
        Case(f"random offsets (seed {seed})", (torch.randn(10, 4, generator=g) * 2, random_priors, (0.1, 0.2)), _DECODE),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        compare_tensor(expected, got, what="the decoded boxes", diagnose=lambda e, o: _diagnose_decode(e, o, args),
                       shape_hint="one xyxy box per default box: (P, 4)")

    return run("check_decode", fn, ("offsets", "priors_cxcywh", "variances"), cases, decode, compare, _DECODE_FORBID)


_NMS = ("visit the boxes by decreasing score; keep a box unless it overlaps an already KEPT box with IoU > iou_threshold; "
        "return the kept indices in that order")
_NMS_ORDER = "return the kept indices in decreasing score order (the order NMS visits them), not sorted by index"
_NMS_STRICT = ("suppress only when IoU > iou_threshold (strictly, as torchvision): a box at exactly the threshold is kept")
_NMS_CHAIN = ("only KEPT boxes suppress: a box that was itself suppressed must not suppress others "
              "(go through the boxes by score and compare each with the kept ones)")


def _diagnose_nms(expected: list[int], got: list[int], boxes: Tensor, threshold: float) -> str:
    if sorted(got) == sorted(expected):
        return _NMS_ORDER
    missing = [i for i in expected if i not in got]
    if not missing:
        return "this box overlaps a kept box with a higher score by IoU > iou_threshold: suppress it. " + _NMS
    iou = box_iou(boxes[missing[:1]], boxes[expected])[0]
    if bool((iou == threshold).any()):
        return _NMS_STRICT
    return _NMS_CHAIN


_NMS_FORBID = Forbid("check_nms", "non-maximum suppression", (
    tv_boxes.nms, tv_boxes.batched_nms, tv_boxes._batched_nms_vanilla, tv_boxes._batched_nms_coordinate_trick,
    torch.ops.torchvision.nms._op, ssd_lib.detect.detect, ssd_lib.detect.detect_decoded, ssd_lib.detect._select,
    ssd_lib.detect._nms_prefix),
    "torch operations (argsort, indexing, comparisons, a Python loop) and an IoU (yours, ssd_lib.boxes.box_iou or "
    "torchvision.ops.box_iou)")


def check_nms(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``nms(boxes (N, 4), scores (N,), iou_threshold) -> kept indices (K,) int64`` (by decreasing score)
    against ``torchvision.ops.nms``."""
    g = torch.Generator().manual_seed(seed)
    chain = tensor([[0.0, 0.0, 2.0, 1.0], [0.5, 0.0, 2.5, 1.0], [1.0, 0.0, 3.0, 1.0]])  # IoU 0.6, 0.6 and 1/3
    chain_scores = tensor([0.9, 0.8, 0.7])
    cases = [
        Case("no boxes", (torch.zeros(0, 4), torch.zeros(0), 0.5),
             "no boxes: return an empty int64 tensor (torch.tensor([]) would be float; give dtype=torch.long)"),
        Case("one box", (tensor([[0.1, 0.1, 0.4, 0.4]]), tensor([0.3]), 0.5), _NMS),
        Case("two identical boxes: the higher score wins",
             (tensor([[0.1, 0.1, 0.4, 0.4]] * 2), tensor([0.3, 0.8]), 0.5), _NMS),
        Case("disjoint boxes, scores not in index order",
             (tensor([[0.0, 0.0, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3], [0.5, 0.5, 0.6, 0.6]]), tensor([0.2, 0.9, 0.5]), 0.5),
             _NMS_ORDER),
        Case("IoU exactly at the threshold is kept",
             (tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]]), tensor([0.9, 0.8]), 0.5), _NMS_STRICT),
        Case("chain A-B-C: a suppressed box suppresses nothing", (chain, chain_scores, 0.5), _NMS_CHAIN),
        Case("iou_threshold = 0.7 keeps the whole chain", (chain, chain_scores, 0.7), "use the iou_threshold argument"),
        Case(f"30 random boxes in 4 clusters (seed {seed})", (*_clusters(g, 30), 0.45), _NMS),
        Case(f"40 random boxes in 3 clusters (seed {seed}), threshold 0.3", (*_clusters(g, 40, 3), 0.3), _NMS),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        if not isinstance(got, Tensor) and len(got) == 0:
            got = torch.zeros(0, dtype=torch.long)  # an empty list is fine (torch.as_tensor([]) would be float)
        keep = as_tensor(got, "the kept indices")
        if keep.ndim != 1:
            raise Mismatch(f"expected a 1-D tensor of indices, got shape {tuple(keep.shape)}",
                           "return the indices of the kept boxes, e.g. torch.tensor(keep, dtype=torch.long)")
        if keep.is_floating_point() or keep.dtype == torch.bool:
            raise Mismatch(f"expected integer indices (int64), got dtype {keep.dtype}",
                           "return the indices of the kept boxes (int64), not a mask or scores")
        if keep.tolist() != expected.tolist():
            raise Mismatch(f"expected kept indices {fmt(expected)}, got {fmt(keep)}",
                           _diagnose_nms(expected.tolist(), keep.tolist(), args[0], args[2]))

    return run("check_nms", fn, ("boxes", "scores", "iou_threshold"), cases, nms, compare, _NMS_FORBID)


def _clusters(generator: torch.Generator, n: int, k: int = 4) -> tuple[Tensor, Tensor]:
    """``n`` boxes jittered around ``k`` random boxes (so that many overlap), and distinct random scores."""
    cluster_boxes = random_boxes(generator, k)[torch.randint(k, (n,), generator=generator)]
    boxes = cluster_boxes + torch.randn(n, 4, generator=generator) * 0.02
    boxes = torch.cat((torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])), dim=1)
    return boxes, torch.rand(n, generator=generator)
