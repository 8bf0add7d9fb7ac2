"""Lesson 6 (notebook 06_augmentation): the min-IoU patch sampler's test and crop (Sec. 2.2).

``check_min_iou_crop`` compares ``min_iou_crop(boxes, labels, patches, min_iou)`` (the first candidate
patch that passes the sampler's overlap test, and the ground truth cropped to it) with the library's own
test (``geometric._patches_pass``, what ``MinIoURandomCrop.make_params`` runs on its candidates) and
``MinIoURandomCrop.apply`` on the same candidates: the index exactly, the pixel xyxy boxes to 1e-5.
(The lesson's other checker, ``check_hflip``, is in :mod:`.augment`.)

Usage::

    from ssd_lib.course.checks import check_min_iou_crop
    assert check_min_iou_crop(min_iou_crop)
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torchvision.transforms.v2 as tv_v2
import torchvision.transforms.v2.functional as tv_F2
from torch import Tensor
from torchvision.ops import box_iou

import ssd_lib.augment.base
import ssd_lib.augment.geometric
from ssd_lib.augment import MinIoURandomCrop
from ssd_lib.augment.geometric import _patches_pass

from .harness import Case, CheckResult, Mismatch, all_close, as_tensor, compare_tensor, run, tensor, unpack
from .tripwire import Forbid

_CROP = ("a candidate passes if some object's centre lies strictly inside it and one of those objects has "
         "IoU >= min_iou with it; crop to the first that passes: keep the boxes whose centre is strictly inside, "
         "subtract (left, top, left, top), clamp x to [0, w] and y to [0, h], keep their labels")
_CROP_EDGE = ("a centre exactly on the patch border is outside: use strict comparisons, "
              "left < cx < right and top < cy < bottom (for passing and for keeping)")
_CROP_ACCEPT_CENTRE = ("only the objects whose centre lies inside the patch count: take the best IoU among those "
                       "boxes (a patch with no centre inside never passes, not even as a random patch, min_iou = 0)")
_CROP_ACCEPT_SOME = ("one object is enough: a candidate passes if the BEST IoU among the boxes whose centre is "
                     "inside is >= min_iou; the other objects in the patch may overlap it less")
_CROP_ACCEPT_GE = "an IoU exactly equal to min_iou is enough: test IoU >= min_iou, not >"
_CROP_FIRST = ("return the FIRST candidate that passes, in the order given (the sampler stops at the first), "
               "not the one with the best IoU")
_CROP_NO_OBJECTS = ("an image without objects has nothing to overlap: only the random patch (min_iou = 0) passes, "
                    "so take the first candidate there, and return -1 for min_iou > 0")
_CROP_KEEP_CENTRE = ("keep a box if its CENTRE lies in the patch, not whenever it overlaps the patch: an object "
                     "whose centre is cut off is dropped, even if much of it is inside (Sec. 2.2)")
_CROP_SHIFT = ("the cropped boxes are in the patch's own coordinates: subtract the patch's (left, top, left, top) "
               "from the kept boxes, then clamp to [0, w] x [0, h] of the patch")
_CROP_CLIP = ("clip the kept boxes to the patch: after the shift, clamp x to [0, w] and y to [0, h] with "
              "w = right - left, h = bottom - top (a box that sticks out keeps only its visible part)")
_CROP_CLIP_FRAME = ("after the shift the patch spans [0, w] x [0, h]: clamp the shifted boxes to that, not to the "
                    "patch's (left, right) x (top, bottom), which are image coordinates")
_CROP_LABELS = "drop the labels together with their boxes: select them with the same mask, labels[keep]"
_CROP_NONE_PASS = ("no candidate passes here: return (-1, boxes, labels) with the inputs unchanged "
                   "(the sampler then draws again)")


def _min_iou_crop_reference(boxes: Tensor, labels: Tensor, patches: Tensor, min_iou: float) -> tuple:
    """The library's own test and crop on the learner's candidates (whole-pixel ``patches (T, 4)``, as the
    sampler draws them): ``_patches_pass`` (what ``make_params`` tests each round) picks the first passing
    candidate, ``MinIoURandomCrop.apply`` crops to it."""
    if len(boxes):
        passes = _patches_pass(patches.to(boxes), boxes, min_iou)
    else:  # make_params leaves only the whole image and the random patch (no overlap test) for such an image
        passes = torch.full((len(patches),), min_iou <= 0, dtype=torch.bool)
    hits = passes.nonzero()
    if not len(hits):
        return -1, boxes, labels
    index = int(hits[0, 0])
    left, top, right, bottom = (int(v) for v in patches[index].tolist())
    params = {"top": top, "left": left, "height": bottom - top, "width": right - left}
    _, target = MinIoURandomCrop().apply(boxes.new_zeros(3, 0, 0), {"boxes": boxes, "labels": labels}, params)
    return index, target["boxes"], target["labels"]


def _centres_inside(boxes: Tensor, patches: Tensor, inclusive: bool = False) -> Tensor:
    """``(T, G)``: is the centre of box g inside patch t (on the border counts only if ``inclusive``)?"""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    if inclusive:
        return (patches[:, 0:1] <= cx) & (cx <= patches[:, 2:3]) & (patches[:, 1:2] <= cy) & (cy <= patches[:, 3:4])
    return (patches[:, 0:1] < cx) & (cx < patches[:, 2:3]) & (patches[:, 1:2] < cy) & (cy < patches[:, 3:4])


def _crop_variant(boxes: Tensor, patches: Tensor, min_iou: float, *, accept: str = "best_inside",
                  strict_iou: bool = False, inclusive: bool = False, last: bool = False) -> int:
    """The index the crop would choose with one rule changed (a known mistake), for the diagnoses."""
    boxes, patches = boxes.double().cpu(), patches.double().cpu()
    inside = _centres_inside(boxes, patches, inclusive)
    iou = box_iou(patches, boxes)  # (T, G)
    if accept == "best_any":  # no centre condition at all
        score, inside = iou.amax(dim=1), torch.ones_like(inside)
    elif accept == "min_inside":  # every object inside must overlap enough
        score = iou.masked_fill(~inside, 2.0).amin(dim=1)
    else:
        score = iou.masked_fill(~inside, -1.0).amax(dim=1)
    passes = inside.any(dim=1) & ((score > min_iou) if strict_iou else (score >= min_iou))
    hits = passes.nonzero()[:, 0].tolist()
    return (hits[-1] if last else hits[0]) if hits else -1


def _crop_boxes_variant(boxes: Tensor, patch: Tensor, min_iou: float, *, inclusive: bool = False,
                        keep: str = "centre", shift: bool = True, clip: str = "patch") -> Tensor:
    """The cropped boxes with one rule changed; ``clip``: "patch" (right), "none", "origin" ([0, w] x [0, h]
    even without the shift) or "image" (the patch's image coordinates even after the shift)."""
    boxes, patch = boxes.double().cpu(), patch.double().cpu()
    left, top, right, bottom = patch.tolist()
    if keep == "overlap":
        sides = torch.minimum(boxes[:, 2:], patch[2:]) - torch.maximum(boxes[:, :2], patch[:2])
        kept = (sides > 0).all(dim=1)
    elif keep == "iou":
        kept = box_iou(boxes, patch[None])[:, 0] >= min_iou
    elif keep == "all":
        kept = torch.ones(len(boxes), dtype=torch.bool)
    else:
        kept = _centres_inside(boxes, patch[None], inclusive)[0]
    out = boxes[kept]
    if shift and clip == "image":
        out, shift = out - patch[[0, 1, 0, 1]], False
    if clip != "none":  # in image coordinates, then shifted: the same as shifting first and clamping to [0, w] x [0, h]
        low_x, high_x, low_y, high_y = (0, right - left, 0, bottom - top) if clip == "origin" else (left, right, top, bottom)
        out = torch.cat((out[:, 0::2].clamp(low_x, high_x), out[:, 1::2].clamp(low_y, high_y)), dim=1)[:, [0, 2, 1, 3]]
    return out - patch[[0, 1, 0, 1]] if shift else out


def _diagnose_index(expected: int, got: int, args: tuple) -> str:
    boxes, _, patches, min_iou = args
    if len(boxes) == 0:
        return _CROP_NO_OBJECTS
    for rule, hint in (({"inclusive": True}, _CROP_EDGE), ({"accept": "best_any"}, _CROP_ACCEPT_CENTRE),
                       ({"accept": "min_inside"}, _CROP_ACCEPT_SOME), ({"strict_iou": True}, _CROP_ACCEPT_GE),
                       ({"last": True}, _CROP_FIRST)):
        if _crop_variant(boxes, patches, min_iou, **rule) == got:
            return hint
    if expected == -1:
        return _CROP_NONE_PASS
    if 0 <= got < len(patches):
        iou = box_iou(patches.double().cpu(), boxes.double().cpu())
        if float(iou[got].max()) > float(iou[expected].max()):
            return _CROP_FIRST
    return _CROP


def _diagnose_boxes(got: Tensor, args: tuple, index: int) -> str:
    boxes, _, patches, min_iou = args
    patch, got = patches[index], got.double().cpu()
    for rule, hint in (({"inclusive": True}, _CROP_EDGE), ({"keep": "overlap"}, _CROP_KEEP_CENTRE),
                       ({"keep": "iou"}, _CROP_KEEP_CENTRE), ({"keep": "all"}, _CROP_KEEP_CENTRE),
                       ({"shift": False}, _CROP_SHIFT), ({"shift": False, "clip": "none"}, _CROP_SHIFT),
                       ({"shift": False, "clip": "origin"}, _CROP_SHIFT), ({"clip": "none"}, _CROP_CLIP),
                       ({"clip": "image"}, _CROP_CLIP_FRAME)):
        if all_close(got, _crop_boxes_variant(boxes, patch, min_iou, **rule)):
            return hint
    return _CROP


def _as_index(got: Any) -> int:
    if isinstance(got, Tensor) and got.numel() == 1 and not got.is_floating_point() and got.dtype != torch.bool:
        return int(got)
    if isinstance(got, (int, np.integer)) and not isinstance(got, (bool, np.bool_)):
        return int(got)
    raise Mismatch(f"expected the index of the chosen candidate as an int, got {type(got).__name__}"
                   + (f" {got!r}" if isinstance(got, (bool, float)) else ""),
                   "return a Python int: the position of the first passing candidate in `patches`, or -1")


_CROP_FORBID = Forbid("check_min_iou_crop", "the min-IoU crop's overlap test and box cropping", (
    MinIoURandomCrop.make_params, MinIoURandomCrop.apply, ssd_lib.augment.geometric._patches_pass,
    ssd_lib.augment.base._keep_boxes, tv_v2.RandomIoUCrop.make_params, tv_v2.RandomIoUCrop.transform,
    tv_F2.crop, tv_F2.crop_bounding_boxes),
    "torch operations (comparisons, indexing, clamp, a Python loop over the candidates) and an IoU (yours, "
    "ssd_lib.boxes.box_iou or torchvision.ops.box_iou)")


def _random_crop_case(generator: torch.Generator, min_ious: tuple[float, ...]) -> tuple:
    """An image of random size, 2-8 objects (sides 5-60 % of the image's) and 30 candidates drawn as the
    library draws them (sides in [0.3, 1] of the image's, w/h in [1/2, 2], uniform whole-pixel position),
    redrawn until the first candidate fails and a later one passes."""
    for _ in range(100):
        width, height = (int(v) for v in torch.randint(150, 500, (2,), generator=generator))
        count = int(torch.randint(2, 9, (1,), generator=generator))
        size = tensor([width, height])
        sides = (0.05 + 0.55 * torch.rand(count, 2, generator=generator)) * size
        corner = torch.rand(count, 2, generator=generator) * (size - sides)
        boxes = torch.cat((corner, corner + sides), dim=1)
        labels = torch.randint(1, 21, (count,), generator=generator)
        candidates = []
        while len(candidates) < 30:
            u = torch.rand(4, generator=generator).tolist()
            patch_w, patch_h = int(width * (0.3 + 0.7 * u[0])), int(height * (0.3 + 0.7 * u[1]))
            if not 0.5 <= patch_w / patch_h <= 2.0:
                continue
            left, top = int((width - patch_w) * u[2]), int((height - patch_h) * u[3])
            candidates.append([left, top, left + patch_w, top + patch_h])
        min_iou = min_ious[int(torch.randint(len(min_ious), (1,), generator=generator))]
        patches = tensor(candidates)
        if _min_iou_crop_reference(boxes, labels, patches, min_iou)[0] > 0:
            return boxes, labels, patches, min_iou
    raise AssertionError("no random case found")  # not reached: a candidate passes within a few draws


def check_min_iou_crop(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``min_iou_crop(boxes (G, 4), labels (G,), patches (T, 4), min_iou) -> (index, boxes, labels)``
    (pixel xyxy) against the library's own overlap test and ``MinIoURandomCrop.apply`` on the same candidates."""
    g = torch.Generator().manual_seed(seed)
    long = torch.long
    cases = [
        Case("one object, one candidate: shift into the patch coordinates",
             (tensor([[20.0, 30.0, 60.0, 70.0]]), torch.tensor([3]), tensor([[10.0, 10.0, 110.0, 90.0]]), 0.1),
             _CROP_SHIFT),
        Case("objects partly outside the patch are clipped to it",
             (tensor([[10.0, 30.0, 50.0, 60.0], [60.0, 70.0, 100.0, 100.0], [120.0, 5.0, 150.0, 40.0]]),
              torch.tensor([1, 2, 5]), tensor([[20.0, 20.0, 90.0, 90.0]]), 0.1), _CROP_CLIP),
        Case("keep by centre, not by overlap: a box mostly inside with its centre outside is dropped",
             (tensor([[20.0, 20.0, 50.0, 50.0], [60.0, 10.0, 150.0, 90.0]]), torch.tensor([4, 9]),
              tensor([[0.0, 0.0, 100.0, 100.0]]), 0.0), _CROP_KEEP_CENTRE),
        Case("the IoU counts only for objects whose centre is inside",
             (tensor([[0.0, 0.0, 100.0, 100.0], [100.0, 40.0, 120.0, 60.0]]), torch.tensor([1, 2]),
              tensor([[55.0, 0.0, 155.0, 100.0], [90.0, 30.0, 130.0, 70.0]]), 0.2), _CROP_ACCEPT_CENTRE),
        Case("the random patch (min_iou 0) still needs an object centre inside",
             (tensor([[60.0, 60.0, 100.0, 100.0]]), torch.tensor([2]),
              tensor([[0.0, 0.0, 70.0, 70.0], [50.0, 50.0, 100.0, 100.0]]), 0.0), _CROP_ACCEPT_CENTRE),
        Case("a centre exactly on the patch border is outside (dropped with its label)",
             (tensor([[80.0, 20.0, 120.0, 60.0], [30.0, 30.0, 70.0, 70.0], [10.0, 40.0, 30.0, 60.0]]),
              torch.tensor([7, 8, 2]), tensor([[20.0, 0.0, 100.0, 100.0]]), 0.1), _CROP_EDGE),
        Case("the only centre on the border: that candidate fails, the next one passes",
             (tensor([[0.0, 0.0, 100.0, 80.0]]), torch.tensor([6]),
              tensor([[0.0, 0.0, 100.0, 40.0], [0.0, 0.0, 100.0, 70.0]]), 0.3), _CROP_EDGE),
        Case("one object with enough IoU is enough (the first candidate passes)",
             (tensor([[10.0, 10.0, 90.0, 90.0], [92.0, 92.0, 98.0, 98.0]]), torch.tensor([3, 4]),
              tensor([[5.0, 5.0, 96.0, 96.0], [0.0, 0.0, 94.0, 94.0], [0.0, 0.0, 92.0, 92.0]]), 0.5), _CROP_ACCEPT_SOME),
        Case("an IoU exactly equal to min_iou passes",
             (tensor([[0.0, 0.0, 40.0, 20.0]]), torch.tensor([5]), tensor([[0.0, 0.0, 40.0, 40.0]]), 0.5),
             _CROP_ACCEPT_GE),
        Case("the first passing candidate, not the best one",
             (tensor([[20.0, 20.0, 60.0, 60.0]]), torch.tensor([1]),
              tensor([[0.0, 0.0, 100.0, 100.0], [15.0, 15.0, 65.0, 65.0], [10.0, 10.0, 80.0, 80.0]]), 0.1),
             _CROP_FIRST),
        Case("no candidate passes: -1 and the inputs unchanged",
             (tensor([[10.0, 10.0, 30.0, 30.0], [200.0, 100.0, 230.0, 140.0]]), torch.tensor([1, 2]),
              tensor([[0.0, 0.0, 150.0, 150.0], [100.0, 0.0, 300.0, 200.0]]), 0.7), _CROP_NONE_PASS),
        Case("no objects, random patch (min_iou 0): the first candidate, nothing to keep",
             (torch.zeros(0, 4), torch.zeros(0, dtype=long), tensor([[10.0, 20.0, 110.0, 90.0]] * 2), 0.0),
             _CROP_NO_OBJECTS),
        Case("no objects, min_iou 0.5: no candidate passes",
             (torch.zeros(0, 4), torch.zeros(0, dtype=long), tensor([[10.0, 20.0, 110.0, 90.0]]), 0.5),
             _CROP_NO_OBJECTS),
        Case("float64 boxes in a 500 x 375 image (the result stays float64)",
             (tensor([[12.5, 40.25, 260.75, 300.5], [300.125, 10.5, 480.0, 120.75], [150.5, 200.0, 190.5, 370.0]],
                     dtype=torch.float64), torch.tensor([15, 12, 15]),
              tensor([[250.0, 0.0, 500.0, 200.0], [100.0, 30.0, 400.0, 375.0]], dtype=torch.float64), 0.3), _CROP),
        Case(f"random image, 30 candidates, min_iou 0.3 (seed {seed})", _random_crop_case(g, (0.3,)), _CROP,
             inputs="2-8 objects, 30 candidate patches of a random-size image"),
        Case(f"random image, 30 candidates, random option (seed {seed})", _random_crop_case(g, (0.0, 0.1, 0.5, 0.7)),
             _CROP, inputs="2-8 objects, 30 candidate patches of a random-size image"),
    ]

    def compare(expected: tuple, got: Any, args: tuple) -> None:
        index, boxes, labels = unpack(got, 3, "(index, boxes, labels)")
        index = _as_index(index)
        if index != expected[0]:
            raise Mismatch(f"expected index {expected[0]}, got {index}", _diagnose_index(expected[0], index, args))
        hint = _CROP_NONE_PASS if index == -1 else None
        boxes = as_tensor(boxes, "the boxes")
        try:
            compare_tensor(expected[1], boxes, what="the boxes (unchanged)" if index == -1 else "the cropped boxes")
        except Mismatch as mismatch:  # a wrong count or wrong values: which rule gives what the learner got?
            raise Mismatch(mismatch.problem, mismatch.hint or hint or _diagnose_boxes(boxes, args, index)) from None
        if boxes.dtype != args[0].dtype:
            raise Mismatch(f"{args[0].dtype} boxes gave {boxes.dtype} cropped boxes",
                           "keep the boxes' dtype: compute with the input tensors, no .float() on the way")
        labels = as_tensor(labels, "the labels")
        try:
            compare_tensor(expected[2], labels, what="the labels", kind="int")
        except Mismatch as mismatch:
            raise Mismatch(mismatch.problem, mismatch.hint or hint or _CROP_LABELS) from None

    return run("check_min_iou_crop", fn, ("boxes", "labels", "patches", "min_iou"), cases, _min_iou_crop_reference,
               compare, _CROP_FORBID)
