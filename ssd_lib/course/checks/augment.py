"""Lesson 6 (notebook 06_augmentation): the horizontal flip of an image and its boxes. (The lesson's other
checker, ``check_min_iou_crop`` for the min-IoU patch sampler, is in :mod:`.crop`: this module would outgrow
the 300 lines a checker module may have.)

``check_hflip`` compares ``hflip(image, boxes)`` with ``ssd_lib.augment.RandomHorizontalFlip`` when
it flips: the image exactly, the pixel xyxy boxes to 1e-5.

Usage::

    from ssd_lib.course.checks import check_hflip
    assert check_hflip(hflip)
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torchvision.transforms.functional as tv_F
import torchvision.transforms.v2.functional as tv_F2
from torch import Tensor
from torchvision.transforms import _functional_tensor as tv_F_tensor

import ssd_lib.augment.geometric
from ssd_lib.augment import RandomHorizontalFlip

from .harness import Case, CheckResult, all_close, compare_tensor, random_boxes, run, tensor, unpack
from .tripwire import Forbid

_FLIP = "mirror the image along its width (image.flip(-1)) and the boxes with x1' = W - x2, x2' = W - x1; y is unchanged"


def _hflip_reference(image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    image, target = RandomHorizontalFlip(p=1.0).apply(image, {"boxes": boxes}, {"flip": True})
    return image, target["boxes"]


def _diagnose_flip_image(got: Tensor, image: Tensor) -> str:
    if all_close(got, image.flip(-2)):
        return "you flipped the image upside down: mirror the last dimension (width), image.flip(-1)"
    return "mirror the last dimension (width): image.flip(-1); the image is (3, H, W), channels first"


def _diagnose_flip_boxes(expected: Tensor, got: Tensor) -> str:
    if bool((got[:, 0] > got[:, 2]).any()):
        return "after mirroring, the old right edge is the new left edge: x1' = W - x2 and x2' = W - x1 (keep x1 <= x2)"
    if all_close(got, expected - tensor([1.0, 0.0, 1.0, 0.0])):
        return ("box coordinates are continuous: pixel column j covers [j, j + 1), so mirroring maps x to W - x, "
                "not W - 1 - x (that is for pixel indices)")
    if not all_close(got[:, 1::2], expected[:, 1::2]):
        return "a horizontal flip leaves y1 and y2 unchanged"
    return _FLIP


_HFLIP_FORBID = Forbid("check_hflip", "the horizontal flip", (
    RandomHorizontalFlip.apply, RandomHorizontalFlip.forward, ssd_lib.augment.geometric._flip_boxes,
    tv_F2.horizontal_flip, tv_F2.horizontal_flip_image, tv_F2.horizontal_flip_bounding_boxes, tv_F.hflip,
    tv_F_tensor.hflip),
    "torch operations (Tensor.flip, indexing, arithmetic, clone)")


def check_hflip(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``hflip(image (3, H, W), boxes (G, 4) pixel xyxy) -> (image, boxes)`` against
    ``ssd_lib.augment.RandomHorizontalFlip`` when it flips."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.arange(72, dtype=torch.float32).reshape(3, 4, 6) / 72
    boxes_in_pixels = random_boxes(g, 4) * tensor([8.0, 5.0, 8.0, 5.0])
    cases = [
        Case("one box on a 4 x 6 image", (ramp, tensor([[1.0, 0.0, 3.0, 2.0]])), _FLIP),
        Case("a box touching the left edge", (ramp, tensor([[0.0, 1.0, 2.0, 3.0]])), _FLIP),
        Case("a box covering the whole image", (ramp, tensor([[0.0, 0.0, 6.0, 4.0]])), _FLIP),
        Case("no boxes (G = 0)", (ramp, torch.zeros(0, 4)),
             "no boxes: still flip the image and return an empty (0, 4) tensor"),
        Case(f"5 x 8 image, random boxes (seed {seed})", (torch.rand(3, 5, 8, generator=g), boxes_in_pixels), _FLIP),
    ]

    def compare(expected: tuple, got: Any, args: tuple) -> None:
        image, boxes = unpack(got, 2, "(image, boxes)")
        compare_tensor(expected[0], image, what="the image", atol=0.0, rtol=0.0,
                       shape_hint="the image keeps its shape (3, H, W), channels first",
                       diagnose=lambda e, o: _diagnose_flip_image(o, args[0]))
        compare_tensor(expected[1], boxes, what="the boxes", diagnose=_diagnose_flip_boxes,
                       shape_hint="one box per input box: (G, 4)")

    return run("check_hflip", fn, ("image", "boxes"), cases, _hflip_reference, compare, _HFLIP_FORBID)
