"""Lesson 9 (notebook 09_evaluation): VOC's true/false positives of one class, and average precision.

``check_tp_fp`` compares the greedy VOC assignment of one class's detections (true positive, false positive,
or neither: a hit on a "difficult" object) with :func:`ssd_lib.metrics.voc._label_detections`, the code
``evaluate_voc`` runs. ``check_average_precision`` compares AP from a (recall, precision) curve with
:func:`ssd_lib.metrics.average_precision`, for both values of ``use_07_metric``.

Usage::

    from ssd_lib.course.checks import check_average_precision, check_tp_fp
    assert check_tp_fp(my_tp_fp)
    assert check_average_precision(my_average_precision)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from ssd_lib.metrics import average_precision, evaluate_voc
from ssd_lib.metrics.inputs import Flattened, to_numpy
from ssd_lib.metrics.voc import _best_gt_per_detection, _label_detections, precision_envelope

from .harness import Case, CheckResult, Mismatch, as_tensor, compare_number, random_boxes, run, tensor, unpack
from .tripwire import Forbid

_AP_11 = ("use_07_metric=True is VOC2007's 11-point AP: the mean over t = 0, 0.1, ..., 1 of the best precision at "
          "recall >= t (0 if recall never reaches t)")
_AP_ALL = ("use_07_metric=False is the VOC2010+ AP: the area under the precision envelope, sum over the recall steps "
           "of (r_i - r_(i-1)) * envelope_i, starting from recall 0")
_AP_ENVELOPE = ("use the precision envelope: at each recall the BEST precision at this or any higher recall "
                "(np.maximum.accumulate(precision[::-1])[::-1]), since raw precision zig-zags")
_AP_LEVELS = ("use the reference code's 11 recall levels, np.arange(0, 1.1, 0.1) (py-faster-rcnn's voc_ap, whose "
              "numbers are published), and count a level when recall >= t: its 0.3 is 0.30000000000000004, so a "
              "recall of exactly 3/10 does NOT reach it; np.arange(11) / 10 counts it and gives another AP")


def _pr_curve(hits: Sequence[bool], num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Ranked detections (True = true positive) to a (recall, precision) curve."""
    tp = np.cumsum(np.asarray(hits, dtype=bool))
    fp = np.cumsum(~np.asarray(hits, dtype=bool))
    return tp / num_gt, tp / np.maximum(tp + fp, 1)


def _random_pr_curve(seed: int, num_detections: int = 20, num_gt: int = 12) -> tuple[np.ndarray, np.ndarray]:
    hits = np.random.default_rng(seed).random(num_detections) < 0.5
    hits &= np.cumsum(hits) <= num_gt  # no more true positives than objects
    return _pr_curve(hits, num_gt)


def _diagnose_ap(value: float, args: tuple) -> Optional[str]:
    recall, precision, use_07_metric = args
    if math.isclose(value, average_precision(recall, precision, not use_07_metric), abs_tol=1e-9):
        return ("you computed the other AP: " + _AP_11) if use_07_metric else ("you computed the 11-point AP: " + _AP_ALL)
    return None


_AP_FORBID = Forbid("check_average_precision", "the average precision", (average_precision, precision_envelope),
                    "numpy operations (np.maximum.accumulate, np.concatenate, indexing, sums)")


def check_average_precision(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``average_precision(recall (K,), precision (K,), use_07_metric=True) -> float`` (numpy inputs)
    against :func:`ssd_lib.metrics.average_precision`, with both values of ``use_07_metric``."""
    perfect = (np.array([0.5, 1.0]), np.array([1.0, 1.0]))
    zigzag = _pr_curve([True, False, True, True], num_gt=4)  # precision 1, 0.5, 0.67, 0.75
    three_of_ten = _pr_curve([True, True, True], num_gt=10)  # recall 0.1, 0.2, 0.3 exactly
    empty = (np.zeros(0), np.zeros(0))
    cases = [
        Case("perfect detector (11-point)", (*perfect, True), _AP_11),
        Case("perfect detector (all-point)", (*perfect, False), _AP_ALL),
        Case("recall stops at exactly 0.3 = 3/10 (11-point)", (*three_of_ten, True), _AP_LEVELS),
        Case("precision goes up again (11-point)", (*zigzag, True), _AP_ENVELOPE),
        Case("precision goes up again (all-point)", (*zigzag, False), _AP_ENVELOPE + "; " + _AP_ALL),
        Case("no detections: empty curve (11-point)", (*empty, True),
             "no detections: AP is 0 (the max of an empty array raises: handle it)"),
        Case("no detections: empty curve (all-point)", (*empty, False), "no detections: AP is 0"),
        Case(f"random ranking of 20 detections, 12 objects (seed {seed}, 11-point)", (*_random_pr_curve(seed), True), _AP_11),
        Case(f"random ranking of 20 detections, 12 objects (seed {seed + 1}, all-point)",
             (*_random_pr_curve(seed + 1), False), _AP_ALL),
    ]

    def compare(expected: float, got: Any, args: tuple) -> None:
        compare_number(expected, got, what="AP", atol=1e-9, rtol=1e-9, diagnose=lambda value: _diagnose_ap(value, args))

    return run("check_average_precision", fn, ("recall", "precision", "use_07_metric"), cases, average_precision, compare, _AP_FORBID)


# ---------------------------------------------------------------------------------------------
# check_tp_fp: VOC's true/false positive assignment for one class
# ---------------------------------------------------------------------------------------------

_RULE = ("walk the detections by decreasing score; each one takes the object of ITS image with the highest IoU; "
         "IoU >= iou_threshold with a non-difficult object not taken yet: TP (the object is now taken); with an "
         "object already taken: FP (a duplicate); with a difficult object: neither; otherwise: FP")
_ONCE = ("an object counts once: the first (highest-scored) detection that hits it is the TP, every later one is a "
         "duplicate, a false positive; keep a `taken` flag per object")
_IGNORE = ("a detection whose best object is difficult is ignored: is_tp and is_fp both False (is_fp is not simply "
           "~is_tp), and the difficult object is never taken")
_OWN_IMAGE = ("a detection competes only for the objects of its own image: keep the objects with "
              "gt_image_ids == det_image_ids[d]")
_BY_SCORE = ("walk the detections by decreasing score (torch.argsort(scores, descending=True, stable=True)), not in "
             "the order they are given: the best-scored detection of an object is its TP")
_TIES = ("equal scores keep their input order: a stable sort by decreasing score (torch.argsort(scores, "
         "descending=True, stable=True) or np.argsort(-scores, kind='stable')); reversing an ascending sort puts "
         "the later of two tied detections first")
_AT_LEAST = ("a hit is IoU >= iou_threshold (the VOC devkit's `ovmax >= minoverlap`), not >: an IoU of exactly 0.5 "
             "counts")
_BEST = ("take the object with the highest IoU among ALL the objects of the image, taken or difficult ones included; "
         "if that one is taken, the detection is a duplicate (FP), if it is difficult, it is ignored: looking for "
         "the best object still free is COCO's rule, not VOC's")
_EMPTY = ("an image without objects: its detections are false positives (the max over zero objects does not exist: "
          "check first); no detections: two empty bool tensors of shape (0,)")
_MISTAKES = (({"once": False}, _ONCE), ({"difficult": "fp"}, "difficult objects: " + _IGNORE),
             ({"difficult": "normal"}, "difficult objects are neither: " + _IGNORE),
             ({"free_only": True}, _BEST), ({"skip_difficult": True}, _BEST), ({"own_image": False}, _OWN_IMAGE),
             ({"rank": "input"}, _BY_SCORE), ({"rank": "ascending"}, "highest score first: " + _BY_SCORE),
             ({"rank": "reversed"}, _TIES), ({"inclusive": False}, _AT_LEAST),
             ({"threshold": 0.5}, "use the iou_threshold argument, not a fixed 0.5"),
             ({"last_max": True}, "equal IoUs: the FIRST object with the highest IoU wins (argmax returns the first)"),
             ({"ranked_output": True}, "return the flags in INPUT order: is_tp[i] describes detection i as given, "
                                       "not the i-th best"))


def voc_tp_fp(det_image_ids: Any, det_scores: Any, det_boxes: Any, gt_image_ids: Any, gt_boxes: Any,
              gt_difficult: Any, iou_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: :func:`ssd_lib.metrics.voc._label_detections` (what ``evaluate_voc`` runs) on one class.

    ``det_image_ids (D,)`` int, ``det_scores (D,)``, ``det_boxes (D, 4)`` xyxy, ``gt_image_ids (G,)`` int,
    ``gt_boxes (G, 4)`` xyxy, ``gt_difficult (G,)`` bool -> ``(is_tp (D,), is_fp (D,))`` bool, in input order
    (a detection on a difficult object is neither)."""
    num_dets, num_gt = len(to_numpy(det_scores)), len(to_numpy(gt_difficult))
    data = Flattened(to_numpy(det_boxes).astype(np.float64).reshape(-1, 4), to_numpy(det_scores).astype(np.float64),
                     np.ones(num_dets, np.int64), to_numpy(det_image_ids).astype(np.int64),
                     to_numpy(gt_boxes).astype(np.float64).reshape(-1, 4), np.ones(num_gt, np.int64),
                     to_numpy(gt_difficult).astype(bool), to_numpy(gt_image_ids).astype(np.int64), 0, ["object"])
    _, is_tp, is_ignored = _label_detections(data, iou_threshold)
    device = det_scores.device if isinstance(det_scores, torch.Tensor) else None
    return torch.as_tensor(is_tp, device=device), torch.as_tensor(~is_tp & ~is_ignored, device=device)


def _walk(args: tuple, rank: str = "stable", own_image: bool = True, once: bool = True, difficult: str = "ignore",
          inclusive: bool = True, free_only: bool = False, skip_difficult: bool = False, last_max: bool = False,
          threshold: Optional[float] = None, ranked_output: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's loop with one part changed: what a diagnosis compares the learner's answer with."""
    det_images, scores, det_boxes, gt_images, gt_boxes, gt_difficult = (to_numpy(a) for a in args[:6])
    threshold = args[6] if threshold is None else threshold
    iou = box_iou(torch.as_tensor(det_boxes, dtype=torch.float64).reshape(-1, 4),
                  torch.as_tensor(gt_boxes, dtype=torch.float64).reshape(-1, 4)).numpy()
    if own_image:
        iou = np.where(det_images[:, None] == gt_images[None, :], iou, -1.0)
    order = {"stable": np.argsort(-scores, kind="stable"), "input": np.arange(len(scores)),
             "ascending": np.argsort(scores, kind="stable"), "reversed": np.argsort(scores, kind="stable")[::-1]}[rank]
    taken = np.zeros(len(gt_difficult), dtype=bool)
    is_tp, is_fp = np.zeros(len(scores), dtype=bool), np.zeros(len(scores), dtype=bool)
    for d in order:
        row = np.where(taken, -1.0, iou[d]) if free_only else iou[d]
        normal = np.where(gt_difficult.astype(bool), -1.0, row)
        if skip_difficult and len(row) and normal.max() >= threshold:  # a normal object first, if one is hit
            row = normal
        g = -1 if not len(row) else len(row) - 1 - int(np.argmax(row[::-1])) if last_max else int(np.argmax(row))
        hit = g >= 0 and (row[g] >= threshold if inclusive else row[g] > threshold)
        if hit and gt_difficult[g] and difficult != "normal":
            is_fp[d] = difficult == "fp"
        elif hit and not (taken[g] and once):
            is_tp[d], taken[g] = True, True
        else:
            is_fp[d] = True
    return (is_tp[order], is_fp[order]) if ranked_output else (is_tp, is_fp)


def _outcomes(is_tp: torch.Tensor, is_fp: torch.Tensor) -> list[str]:
    flags = zip(is_tp.tolist(), is_fp.tolist())
    return [("TP and FP" if fp else "TP") if tp else ("FP" if fp else "ignored") for tp, fp in flags]


def _case(dets: list, gts: list, threshold: float = 0.5) -> tuple:
    """Arguments from rows (image, score, box) of detections and (image, box, difficult) of objects."""
    return (tensor([d[0] for d in dets], torch.int64), tensor([d[1] for d in dets]),
            tensor([d[2] for d in dets]).reshape(-1, 4), tensor([g[0] for g in gts], torch.int64),
            tensor([g[1] for g in gts]).reshape(-1, 4), tensor([g[2] for g in gts], torch.bool), threshold)


def _random_case(generator: torch.Generator) -> tuple:
    """4 images (image 3 has no objects), 3-8 objects in pixels, a fifth of them difficult; 0-2 jittered detections
    per object and 3 stray ones, scores in steps of 0.1 (ties); detections and objects in random order."""
    def randint(high: int, size: tuple, low: int = 0) -> torch.Tensor:
        return torch.randint(low, high, size, generator=generator)

    num_gt = int(randint(9, (), low=3))
    gt_images, gt_boxes = randint(3, (num_gt,)), random_boxes(generator, num_gt, 100.0).round()
    gt_difficult = torch.rand(num_gt, generator=generator) < 0.2
    copies = randint(3, (num_gt,))
    near = gt_boxes.repeat_interleave(copies, dim=0) + randint(3, (int(copies.sum()), 4), low=-2)
    det_boxes = torch.cat((near, random_boxes(generator, 3, 100.0).round()))
    det_boxes[:, 2:] = torch.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
    det_images = torch.cat((gt_images.repeat_interleave(copies), randint(4, (3,))))
    scores = randint(10, (len(det_boxes),), low=1).float() / 10
    order = torch.randperm(len(det_boxes), generator=generator)
    return det_images[order], scores[order], det_boxes[order], gt_images, gt_boxes, gt_difficult, 0.5


# Boxes in pixels: A, B, C disjoint objects; A1 = A shifted by 1 (IoU 0.82 with A), A2 = A shifted by 2 (IoU 0.67),
# A4 = A shifted by 4 (IoU 0.43 with A, 0.54 with A1), nowhere = far from all.
_A, _B, _C, _NOWHERE = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [100, 100, 110, 110]
_A1, _A2, _A4 = [1, 0, 11, 10], [2, 0, 12, 10], [4, 0, 14, 10]
_N, _D = False, True  # an object's difficult flag


def _cases() -> list[Case]:
    return [
        Case("one image: a hit and a miss",
             _case([(0, .9, _A1), (0, .8, _NOWHERE)], [(0, _A, _N), (0, _B, _N)]), _RULE),
        Case("duplicates: only the first detection of an object is a TP",
             _case([(0, .9, _A), (0, .8, [0, 1, 10, 11]), (0, .7, _B), (0, .6, [20, 1, 30, 11])],
                   [(0, _A, _N), (0, _B, _N)]), _ONCE),
        Case("ranked by score, not by input order",
             _case([(0, .6, [0, 0, 10, 9]), (0, .9, [1, 1, 10, 10]), (0, .3, [0, 1, 10, 10]), (0, .8, [20, 1, 30, 10])],
                   [(0, _A, _N), (0, _B, _N)]), _BY_SCORE),
        Case("several images: a detection competes only for the objects of its own image",
             _case([(1, .9, _A), (0, .8, _A), (0, .7, _B), (1, .6, _B)], [(0, _A, _N), (1, _B, _N)]), _OWN_IMAGE),
        Case("a detection on a difficult object is ignored and does not take it",
             _case([(0, .9, _A), (0, .8, [0, 1, 10, 11]), (0, .7, _B)], [(0, _A, _D), (0, _B, _N)]), _IGNORE),
        Case("the best object is difficult, a normal one also has IoU >= 0.5",
             _case([(0, .9, _A2), (0, .5, _A)], [(0, _A, _N), (0, _A2, _D)]), _BEST),
        Case("the best object is taken already: a duplicate, even with a free object at IoU >= 0.5",
             _case([(0, .9, _A), (0, .8, _A1), (0, .7, _A4)], [(0, _A, _N), (0, _A4, _N)]), _BEST),
        Case("IoU exactly 0.5 is a hit",
             _case([(0, .9, [0, 0, 10, 5]), (0, .8, [20, 0, 40, 10])], [(0, _A, _N), (0, _B, _N)]), _AT_LEAST),
        Case("iou_threshold=0.75", _case([(0, .9, _A1), (0, .8, [20, 0, 30, 13]), (0, .7, [40, 0, 50, 16])],
                                         [(0, _A, _N), (0, _B, _N), (0, _C, _N)], 0.75),
             "use the iou_threshold argument"),
        Case("equal scores: the one given first ranks first",
             _case([(0, .8, [0, 0, 10, 9]), (0, .8, _A), (0, .8, [1, 0, 10, 10])], [(0, _A, _N)]), _TIES),
        Case("equal IoUs: the first object wins",
             _case([(0, .9, _A1), (0, .8, _A1), (0, .7, _A2)], [(0, _A, _N), (0, _A2, _N)]), _RULE),
        Case("an image without objects", _case([(1, .9, _A), (0, .5, _A), (2, .4, _B)], [(0, _A, _N)]), _EMPTY),
        Case("no objects at all: every detection is a FP", _case([(0, .9, _A), (1, .6, _B)], []), _EMPTY),
        Case("no detections", _case([], [(0, _A, _N), (0, _B, _D)]), _EMPTY),
    ]


def _compare_tp_fp(expected: tuple, got: Any, args: tuple) -> None:
    got_tp, got_fp = unpack(got, 2, "(is_tp, is_fp)")
    got_tp, got_fp = as_tensor(got_tp, "is_tp").cpu(), as_tensor(got_fp, "is_fp").cpu()
    num_dets = len(args[1])
    for what, value in (("is_tp", got_tp), ("is_fp", got_fp)):
        if tuple(value.shape) != (num_dets,) or value.dtype != torch.bool:
            raise Mismatch(f"expected {what} as a bool tensor of shape ({num_dets},), got {value.dtype} of shape "
                           f"{tuple(value.shape)}", "one flag per detection: start from torch.zeros(D, "
                           "dtype=torch.bool) (also when D = 0) and set entries")
    want, have = _outcomes(*expected), _outcomes(got_tp, got_fp)
    if want == have:
        return
    if num_dets <= 8:
        problem = f"expected {want}, got {have} (in input order; ignored = neither TP nor FP)"
    else:
        d = next(i for i, (w, h) in enumerate(zip(want, have)) if w != h)
        problem = (f"detection {d} (image {int(args[0][d])}, score {float(args[1][d]):.1f}): expected {want[d]}, "
                   f"got {have[d]} ({sum(w != h for w, h in zip(want, have))} of {num_dets} detections differ)")
    mistakes = (hint for flags, hint in _MISTAKES if _outcomes(*map(torch.as_tensor, _walk(args, **flags))) == have)
    raise Mismatch(problem, next(mistakes, None))


_TP_FP_FORBID = Forbid("check_tp_fp", "the VOC true/false positive assignment",
                       (evaluate_voc, _label_detections, _best_gt_per_detection),
                       "numpy, torch, an IoU (your own, ssd_lib.boxes.box_iou or torchvision.ops.box_iou) and a "
                       "Python loop over the detections")


def check_tp_fp(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``tp_fp(det_image_ids, det_scores, det_boxes, gt_image_ids, gt_boxes, gt_difficult, iou_threshold=0.5)
    -> (is_tp (D,), is_fp (D,))`` bool, in input order, against the library's VOC matching (:func:`voc_tp_fp`)."""
    cases = _cases()
    generator = torch.Generator().manual_seed(seed)
    for k in range(3):
        args = _random_case(generator)
        cases.append(Case(f"random: 4 images, tied scores (seed {seed}, case {k})", args, _RULE,
                          f"{len(args[1])} detections, {len(args[4])} objects ({int(args[5].sum())} difficult)"))
    return run("check_tp_fp", fn, ("det_image_ids", "det_scores", "det_boxes", "gt_image_ids", "gt_boxes",
                                   "gt_difficult", "iou_threshold"), cases, voc_tp_fp, _compare_tp_fp, _TP_FP_FORBID)
