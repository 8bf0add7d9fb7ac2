"""Lesson 11 (notebook 11_debugging): the debugging lab's fixed pieces that have no checker of their own lesson.

``check_clip_priors``, ``check_labels_from_names``, ``check_num_classes``, ``check_sanitize_boxes`` and
``check_mean_average_precision`` compare with the library's own functions (``ssd_lib.priors``,
``ssd_lib.data``, ``ssd_lib.metrics``). The lab's other four stations (decode, smooth L1, hard negative
mining, warm-up), whose fixed pieces earlier lessons grade, grade a diagnosis instead: the learner names the
bug from the evidence it left, checked in module ``diagnoses`` (``check_diagnose_decode``,
``check_diagnose_loc_loss``, ``check_diagnose_mining``, ``check_diagnose_warmup``).

Usage::

    from ssd_lib.course.checks import check_sanitize_boxes
    assert check_sanitize_boxes(sanitize_boxes)
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from ssd_lib.augment.geometric import SanitizeBoxes
from ssd_lib.boxes import cxcywh_to_xyxy
from ssd_lib.data import SHAPE_NAMES, VOC_CLASSES, labels_from_names, num_classes_for, sanitize_boxes
from ssd_lib.metrics import mean_average_precision
from ssd_lib.priors import PriorConfig, clip_priors, default_boxes

from .harness import (Case, CheckResult, Mismatch, all_close, as_tensor, compare_number, compare_tensor, run, tensor,
                      unpack)
from .tripwire import Forbid

_CLIP = ("clip in corner form: convert (cx, cy, w, h) to corners (x1, y1, x2, y2), clamp each corner to [0, 1], "
         "convert back; a box that sticks out shrinks and its centre moves inwards")


def _diagnose_clip(expected: Tensor, got: Tensor, priors: Tensor) -> str:
    if all_close(got, priors.clamp(0.0, 1.0)):
        return ("you clamped (cx, cy, w, h) directly: a centre at 0.05 with width 0.2 is inside [0, 1] but the box "
                "reaches x1 = -0.05, so it still sticks out. " + _CLIP)
    if all_close(got, cxcywh_to_xyxy(expected)):
        return "you returned corners (x1, y1, x2, y2): convert the clipped corners back to (cx, cy, w, h)"
    return _CLIP


_CLIP_FORBID = Forbid("check_clip_priors", "the fixed clipping", (clip_priors,),
                      "torch operations (clamp, torch.cat) and the box conversions (cxcywh_to_xyxy, xyxy_to_cxcywh)")


def check_clip_priors(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``clip_priors(priors_cxcywh (P, 4)) -> (P, 4) cxcywh`` (clipped to the image in corner form)
    against :func:`ssd_lib.priors.clip_priors`."""
    g = torch.Generator().manual_seed(seed)
    random_priors = torch.cat((torch.rand(20, 2, generator=g), 0.05 + torch.rand(20, 2, generator=g) * 0.6), dim=1)
    cases = [
        Case("boxes inside the image stay as they are", (tensor([[0.5, 0.5, 0.2, 0.4], [0.3, 0.7, 0.1, 0.1]]),),
             "a box inside the image is not changed by clipping: " + _CLIP),
        Case("a box sticking out on the left", (tensor([[0.05, 0.5, 0.2, 0.2]]),), _CLIP),
        Case("a box in a corner, out on two sides", (tensor([[0.95, 0.02, 0.3, 0.1]]),), _CLIP),
        Case("a box wider than the image", (tensor([[0.5, 0.5, 1.4, 0.5]]),), _CLIP),
        Case("no boxes (0, 4)", (torch.zeros(0, 4),), "no boxes in, no boxes out: an empty (0, 4) tensor"),
        Case(f"20 random default boxes (seed {seed})", (random_priors,), _CLIP),
        Case("SSD300's 8732 default boxes", (default_boxes(PriorConfig.ssd300()),), _CLIP,
             inputs="default_boxes(PriorConfig.ssd300())"),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        compare_tensor(expected, got, what="the clipped default boxes", diagnose=lambda e, o: _diagnose_clip(e, o, args[0]),
                       shape_hint="one (cx, cy, w, h) row per default box: (P, 4)")

    return run("check_clip_priors", fn, ("priors_cxcywh",), cases, clip_priors, compare, _CLIP_FORBID)


_LABELS = ("label 0 is background, so the object classes start at 1: classes[k] (k counted from 0) gets label k + 1, "
           "e.g. classes.index(name) + 1")


def _diagnose_labels_from_names(expected: Tensor, got: Tensor) -> str:
    if all_close(got.double(), expected.double() - 1):
        return "your labels start at 0, and 0 means background: the first class would be trained as background. " + _LABELS
    return _LABELS


_LABELS_FORBID = Forbid("check_labels_from_names", "the fixed label reader", (labels_from_names,),
                        "Python lists (list.index) and torch.tensor")


def check_labels_from_names(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``labels_from_names(names: list[str], classes: list[str]) -> (G,) int64`` (SSD labels 1..C, 0 being
    background) against :func:`ssd_lib.data.labels_from_names`."""
    shapes, voc = list(SHAPE_NAMES), list(VOC_CLASSES)
    rng = random.Random(seed)
    cases = [
        Case("one object of the first class", (["circle"], shapes), _LABELS),
        Case("several objects, the last class among them", (["star", "circle", "ring", "circle"], shapes), _LABELS),
        Case("VOC class names", (["person", "aeroplane", "tvmonitor", "dog"], voc), _LABELS),
        Case("no objects", ([], shapes),
             "an image without objects gives an empty int64 tensor: torch.tensor([], dtype=torch.long)"),
        Case(f"12 random VOC objects (seed {seed})", ([rng.choice(voc) for _ in range(12)], voc), _LABELS),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        compare_tensor(expected, got, what="labels", kind="int", diagnose=_diagnose_labels_from_names,
                       shape_hint="one label per object name: (G,)")

    return run("check_labels_from_names", fn, ("names", "classes"), cases, labels_from_names, compare, _LABELS_FORBID)


_NUM_CLASSES_FORBID = Forbid("check_num_classes", "the number of outputs", (num_classes_for,), "len and arithmetic")


def check_num_classes(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``num_classes_for(classes: list[str]) -> int`` (the model's C, background included) against
    :func:`ssd_lib.data.num_classes_for`."""
    hint = "num_classes counts background too: the logits need one column per object class plus one for class 0"
    cases = [
        Case("the 6 shape classes", (list(SHAPE_NAMES),), hint),
        Case("the 20 VOC classes (SSD300 on VOC has 21 outputs per box)", (list(VOC_CLASSES),), hint),
        Case("one object class", (["defect"],), hint),
        Case(f"random class list (seed {seed})", ([f"class_{i}" for i in range(random.Random(seed).randint(2, 40))],),
             hint, inputs="a list of 2 to 40 class names"),
    ]

    def compare(expected: int, got: Any, args: tuple) -> None:
        diagnose = (lambda value: "you left out background: " + hint + " (len(classes) + 1)"  # noqa: E731
                    if value == len(args[0]) else None)
        compare_number(expected, got, what="num_classes", atol=0.0, rtol=0.0, diagnose=diagnose)

    return run("check_num_classes", fn, ("classes",), cases, num_classes_for, compare, _NUM_CLASSES_FORBID)


_SANITIZE = ("clip x to [0, width] and y to [0, height], then keep only the boxes with x2 > x1 and y2 > y1 (and their "
             "labels): a box without area has log(width) = -inf or NaN as its target")


def _diagnose_sanitize(expected_boxes: Tensor, got_boxes: Tensor) -> str:
    sizes = got_boxes[:, 2:] - got_boxes[:, :2] if got_boxes.ndim == 2 and got_boxes.shape[-1] == 4 else None
    if sizes is not None and len(sizes) > len(expected_boxes):
        if bool((sizes < 0).any()):
            return "you kept a box with x2 < x1 or y2 < y1 (negative size): " + _SANITIZE
        if bool((sizes == 0).any()):
            return ("you kept a box of zero width or height: keep x2 > x1 strictly (>= keeps it, and log(0) = -inf). "
                    + _SANITIZE)
    if sizes is not None and len(sizes) < len(expected_boxes):
        return "you dropped a box that has an area inside the image: drop only those with x2 <= x1 or y2 <= y1 after clipping"
    return _SANITIZE


_SANITIZE_FORBID = Forbid("check_sanitize_boxes", "the fixed box filter", (sanitize_boxes, SanitizeBoxes.forward),
                          "torch operations (clamp, comparisons, boolean indexing, clone)")


def check_sanitize_boxes(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``sanitize_boxes(boxes (G, 4) pixel xyxy, labels (G,), width, height) -> (boxes (G', 4), labels (G',))``
    against :func:`ssd_lib.data.sanitize_boxes` (clip to the image, drop boxes without area)."""
    g = torch.Generator().manual_seed(seed)
    long = torch.long
    corner = torch.rand(10, 2, generator=g) * tensor([90.0, 70.0]) - tensor([13.0, 11.0])  # some outside the 64 x 48 image
    random_boxes = torch.cat((corner, corner + 3 + torch.rand(10, 2, generator=g) * 25), dim=1)
    random_boxes[3, 2] = random_boxes[3, 0]  # one of zero width
    random_boxes[6, [1, 3]] = random_boxes[6, [3, 1]]  # one upside down
    cases = [
        Case("boxes inside the image are kept as they are",
             (tensor([[2.0, 3.0, 20.0, 30.0], [10.0, 10.0, 60.0, 40.0]]), tensor([1, 2], long), 64, 48), _SANITIZE),
        Case("a box partly outside is clipped", (tensor([[-5.0, 10.0, 20.0, 60.0]]), tensor([3], long), 64, 48), _SANITIZE),
        Case("a box entirely outside the image (zero width once clipped)",
             (tensor([[5.0, 5.0, 15.0, 15.0], [70.0, 10.0, 90.0, 20.0]]), tensor([1, 4], long), 64, 48), _SANITIZE),
        Case("a box of zero width inside the image (x1 = x2)",
             (tensor([[12.0, 5.0, 12.0, 25.0], [1.0, 1.0, 9.0, 9.0]]), tensor([2, 5], long), 64, 48), _SANITIZE),
        Case("a box annotated upside down (y2 < y1)",
             (tensor([[1.0, 30.0, 9.0, 9.0], [1.0, 1.0, 9.0, 9.0]]), tensor([6, 1], long), 64, 48), _SANITIZE),
        Case("no boxes", (torch.zeros(0, 4), torch.zeros(0, dtype=long), 64, 48),
             "no boxes: return an empty (0, 4) tensor and an empty int64 labels tensor"),
        Case(f"10 random boxes, some outside, one flat, one upside down (seed {seed})",
             (random_boxes, torch.randint(1, 7, (10,), generator=g), 64, 48), _SANITIZE),
    ]

    def compare(expected: tuple, got: Any, args: tuple) -> None:
        boxes, labels = unpack(got, 2, "(boxes, labels)")
        boxes_t = as_tensor(boxes, "the boxes")
        compare_tensor(expected[0], boxes_t, what="the kept boxes", diagnose=lambda e, o: _diagnose_sanitize(e, o),
                       shape_hint=_diagnose_sanitize(expected[0], boxes_t))
        compare_tensor(expected[1], labels, what="the kept labels", kind="int",
                       shape_hint="drop the label of each dropped box too (index labels with the same mask)")

    return run("check_sanitize_boxes", fn, ("boxes", "labels", "width", "height"), cases, sanitize_boxes, compare, _SANITIZE_FORBID)


_MEAN_AP = ("mAP is the mean of the AP over the classes that have ground truth (num_gt > 0); a class without objects "
            "has no AP (it is undefined, not 0): leave it out. With no ground truth at all, return float('nan')")


def _diagnose_mean_ap(value: float, args: tuple) -> Optional[str]:
    ap = np.asarray(args[0], dtype=np.float64)
    if math.isnan(value):
        return "a class without ground truth has AP NaN, and one NaN makes the whole mean NaN: " + _MEAN_AP
    if ap.size and math.isclose(value, float(np.nan_to_num(ap).mean()), rel_tol=1e-9):
        return "you averaged over every class, counting those without ground truth as 0: " + _MEAN_AP
    return None


_MAP_FORBID = Forbid("check_mean_average_precision", "the fixed mAP", (mean_average_precision,),
                     "numpy operations (np.asarray, comparisons, boolean indexing, mean)")


def check_mean_average_precision(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``mean_average_precision(ap: list[float], num_gt: list[int]) -> float`` against
    :func:`ssd_lib.metrics.mean_average_precision` (classes without ground truth left out; NaN if none has)."""
    nan = float("nan")
    rng = np.random.default_rng(seed)
    num_gt = [int(n) for n in rng.integers(0, 4, 10)]
    random_ap = [round(float(a), 4) if n else nan for a, n in zip(rng.random(10), num_gt)]
    cases = [
        Case("every class has ground truth", ([0.5, 0.7, 0.9], [3, 1, 2]), _MEAN_AP),
        Case("one class without ground truth, its AP given as NaN", ([0.6, nan, 0.8], [2, 0, 5]), _MEAN_AP),
        Case("one class without ground truth, its AP given as 0", ([0.6, 0.0, 0.8], [2, 0, 5]), _MEAN_AP),
        Case("a class WITH ground truth and AP 0 counts", ([0.0, 0.9, nan], [4, 1, 0]),
             "AP 0 of a class that has objects is a real result (nothing found): keep it in the mean; select by "
             "num_gt, not by the AP value"),
        Case("no class has ground truth", ([nan, nan], [0, 0]), _MEAN_AP),
        Case(f"10 classes, some without ground truth (seed {seed})", (random_ap, num_gt), _MEAN_AP),
    ]

    def compare(expected: float, got: Any, args: tuple) -> None:
        if math.isnan(expected):
            try:
                value = float(got)
            except (TypeError, ValueError):
                raise Mismatch(f"expected a number, got {type(got).__name__}", "return a float") from None
            if not math.isnan(value):
                raise Mismatch(f"expected nan (no class has ground truth, so there is nothing to average), got {value:.6g}",
                               _MEAN_AP)
            return
        compare_number(expected, got, what="mAP", atol=1e-9, rtol=1e-9, diagnose=lambda value: _diagnose_mean_ap(value, args))

    return run("check_mean_average_precision", fn, ("ap", "num_gt"), cases, mean_average_precision, compare, _MAP_FORBID)
