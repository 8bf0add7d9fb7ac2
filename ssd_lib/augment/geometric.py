"""Steps that move pixels and boxes together: zoom out (Sec. 3.6), the min-IoU patch sampler (Sec. 2.2),
the horizontal flip, the resize to the network's input, and dropping boxes that shrank to nothing.

The patch sampler is SSD's most important augmentation (+8.8 mAP on VOC2007, Table 2); zoom out
adds 2.9 more by making objects smaller. Boxes stay pixel xyxy of the current image throughout.

Usage::

    from ssd_lib.augment.geometric import MinIoURandomCrop, ZoomOut
    crop = MinIoURandomCrop()
    params = crop.make_params(image, target); image, target = crop.apply(image, target, params)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as nnf
from torch import Tensor
from torchvision.ops import box_iou

from .base import IMAGENET_MEAN, PER_BOX_KEYS, SSD_MIN_IOUS, Sample, Step, Target, _keep_boxes

__all__ = ["ZoomOut", "MinIoURandomCrop", "RandomHorizontalFlip", "Resize", "SanitizeBoxes"]


@dataclass(frozen=True)
class ZoomOut(Step):
    """"Zoom out" (the released code's ``Expand``, Sec. 3.6): with probability ``p``, paste the
    image at a random place on a canvas ``r`` times its size, ``r ~ U[1, max_ratio]``, filled with
    ``fill`` (the dataset mean, so the padding normalises to ~0).

    ``image: (3, H, W) -> (3, int(r H), int(r W))``; boxes shift by the paste offset. This
    makes objects smaller, which is what lifts small-object AP. Same sampling as
    ``v2.RandomZoomOut(fill, side_range=(1, max_ratio), p)`` and, given the same padding, the
    same output as ``v2.functional.pad`` (tested).
    """

    fill: tuple[float, float, float] = IMAGENET_MEAN
    max_ratio: float = 4.0
    p: float = 0.5

    def __post_init__(self) -> None:
        if self.max_ratio < 1:
            raise ValueError(f"max_ratio must be >= 1 (a canvas at least as large as the image), got {self.max_ratio}")
        if not 0 <= self.p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {self.p}")
        if len(self.fill) != 3:
            raise ValueError(f"fill must hold one value per RGB channel, got {self.fill}")

    def make_params(self, image: Tensor, target: Target, generator: Optional[torch.Generator] = None) -> dict:
        apply_u, ratio_u, left_u, top_u = torch.rand(4, generator=generator).tolist()
        if apply_u >= self.p:
            return {"padding": None}
        height, width = image.shape[-2:]
        ratio = 1 + (self.max_ratio - 1) * ratio_u
        canvas_width, canvas_height = int(width * ratio), int(height * ratio)
        left = int((canvas_width - width) * left_u)
        top = int((canvas_height - height) * top_u)
        return {"padding": [left, top, canvas_width - width - left, canvas_height - height - top]}

    def apply(self, image: Tensor, target: Target, params: dict) -> Sample:
        if params["padding"] is None:
            return image, target
        left, top, right, bottom = params["padding"]
        channels, height, width = image.shape
        canvas = image.new_empty((channels, top + height + bottom, left + width + right))
        canvas.copy_(torch.tensor(self.fill, dtype=image.dtype, device=image.device).view(3, 1, 1).expand_as(canvas))
        canvas[:, top : top + height, left : left + width] = image
        boxes = target["boxes"]
        shift = torch.tensor([left, top, left, top], dtype=boxes.dtype, device=boxes.device)
        return canvas, {**target, "boxes": boxes + shift}


def _patches_pass(patches: Tensor, boxes: Tensor, min_iou: float) -> Tensor:
    """The sampler's overlap test (Sec. 2.2): which of ``patches (T, 4)`` pass option ``min_iou`` on
    ``boxes (G, 4)``, G >= 1, both pixel xyxy of one dtype -> ``(T,)`` bool.

    A patch passes if at least one box centre lies strictly inside it and, among those boxes, some box
    has IoU >= ``min_iou`` with the patch (0.0, the random patch, still needs a centre inside).
    """
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (G, 2)
    cx, cy = centres[:, 0], centres[:, 1]
    inside = (patches[:, 0:1] < cx) & (cx < patches[:, 2:3]) & (patches[:, 1:2] < cy) & (cy < patches[:, 3:4])  # (T, G)
    best_iou = box_iou(patches, boxes).masked_fill_(~inside, -1.0).amax(dim=1)  # (T,)
    return inside.any(dim=1) & (best_iou >= min_iou)


@dataclass(frozen=True)
class MinIoURandomCrop(Step):
    """The SSD patch sampler (Sec. 2.2): crop a random patch that overlaps the objects enough.

    Semantics are torchvision's ``v2.RandomIoUCrop`` (itself following the Caffe sampler), and
    its sampling distribution is tested to match:

    1. Pick an option of ``min_ious`` uniformly. ``None`` (or a value >= 1): keep the whole image.
    2. Otherwise draw up to ``trials`` patches: each side ``int(side * U[min_scale, max_scale])``,
       rejected unless the patch aspect ratio w/h is in [min_aspect, max_aspect]; position uniform.
       A patch is accepted if at least one box centre lies strictly inside it and, among those
       boxes, *some* box has IoU >= the option with the patch (0.0 = random patch: no IoU test).
    3. If all trials fail, go back to 1 (after ``max_rounds`` rounds: whole image).

    (The released ssd.pytorch ``RandomSampleCrop`` intends the same rule, but its test
    ``overlap.min() < min_iou and max_iou < overlap.max()`` can never pass with ``max_iou = inf``,
    so it never rejects a patch for its IoU; we follow torchvision, which enforces it.)

    The trials of one round are drawn and tested in one batch (the first accepted trial wins,
    which has the same distribution as torchvision's one-at-a-time loop). Boxes whose centre is
    inside the patch are kept, shifted and clipped to it; the others are dropped with their
    ``per_box_keys`` entries. The paper samples patches in [0.1, 1] of the image, the released
    code in [0.3, 1]: ``min_scale`` defaults to the released 0.3 (pass 0.1 for the paper's).
    ``trials`` defaults to the released code's 50 (torchvision: 40).

    An image with no boxes can satisfy no IoU or centre test, so it only chooses among the
    "whole image" and "random patch" options (torchvision can only return it whole).
    ``image: (3, H, W) -> (3, h, w)``, a view of the input (no copy).
    """

    min_ious: tuple[Optional[float], ...] = SSD_MIN_IOUS
    min_scale: float = 0.3
    max_scale: float = 1.0
    min_aspect: float = 0.5
    max_aspect: float = 2.0
    trials: int = 50
    max_rounds: int = 1000
    per_box_keys: tuple[str, ...] = PER_BOX_KEYS

    def __post_init__(self) -> None:
        if not self.min_ious:
            raise ValueError("min_ious must hold at least one option, e.g. (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {self.min_scale}, {self.max_scale}")
        if not 0 < self.min_aspect <= self.max_aspect:
            raise ValueError(f"need 0 < min_aspect <= max_aspect, got {self.min_aspect}, {self.max_aspect}")
        if self.trials < 1 or self.max_rounds < 1:
            raise ValueError(f"trials and max_rounds must be >= 1, got {self.trials}, {self.max_rounds}")

    def make_params(self, image: Tensor, target: Target, generator: Optional[torch.Generator] = None) -> dict:
        """Returns ``{}`` for the whole image, else ``{"top", "left", "height", "width"}`` of the patch."""
        height, width = image.shape[-2:]
        boxes = target["boxes"]
        options = self.min_ious
        if len(boxes) == 0:
            options = tuple(o for o in options if o is None or o <= 0)
            if not options:
                return {}
        for _ in range(self.max_rounds):
            min_iou = options[int(torch.randint(len(options), (1,), generator=generator))]
            if min_iou is None or min_iou >= 1:
                return {}
            u = torch.rand(self.trials, 4, generator=generator)  # (T, 4): scale x, scale y, left, top
            scale = self.min_scale + (self.max_scale - self.min_scale) * u[:, :2]
            patch_w = (width * scale[:, 0]).long()
            patch_h = (height * scale[:, 1]).long()
            aspect = patch_w / patch_h  # inf or nan where patch_h == 0: rejected below
            left = ((width - patch_w) * u[:, 2]).long()
            top = ((height - patch_h) * u[:, 3]).long()
            ok = (patch_w > 0) & (patch_h > 0) & (aspect >= self.min_aspect) & (aspect <= self.max_aspect)
            if len(boxes):
                patches = torch.stack((left, top, left + patch_w, top + patch_h), dim=1).to(boxes)  # (T, 4)
                ok &= _patches_pass(patches, boxes, min_iou).to(ok.device)
            hits = ok.nonzero()
            if len(hits):
                i = int(hits[0, 0])
                return {"top": int(top[i]), "left": int(left[i]), "height": int(patch_h[i]), "width": int(patch_w[i])}
        return {}

    def apply(self, image: Tensor, target: Target, params: dict) -> Sample:
        if not params:
            return image, target
        top, left, height, width = params["top"], params["left"], params["height"], params["width"]
        image = image[:, top : top + height, left : left + width]
        boxes = target["boxes"]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        keep = (
            (left < centres[:, 0]) & (centres[:, 0] < left + width) & (top < centres[:, 1]) & (centres[:, 1] < top + height)
        )
        shift = torch.tensor([left, top, left, top], dtype=boxes.dtype, device=boxes.device)
        kept = boxes[keep] - shift
        kept[:, 0::2] = kept[:, 0::2].clamp(0, width)
        kept[:, 1::2] = kept[:, 1::2].clamp(0, height)
        return image, _keep_boxes(target, keep, kept, self.per_box_keys)


def _flip_boxes(boxes: Tensor, width: int) -> Tensor:
    """Mirror ``boxes: (G, 4)`` xyxy in an image ``width`` wide: x1' = W - x2, x2' = W - x1."""
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


@dataclass(frozen=True)
class RandomHorizontalFlip(Step):
    """Mirror the image and its boxes left-right with probability ``p``.

    ``image: (3, H, W)`` -> same shape; box x1' = W - x2, x2' = W - x1. Identical output to
    ``v2.RandomHorizontalFlip(p=1)`` when it flips (tested).
    """

    p: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {self.p}")

    def make_params(self, image: Tensor, target: Target, generator: Optional[torch.Generator] = None) -> dict:
        return {"flip": torch.rand(1, generator=generator).item() < self.p}

    def apply(self, image: Tensor, target: Target, params: dict) -> Sample:
        if not params["flip"]:
            return image, target
        return image.flip(-1), {**target, "boxes": _flip_boxes(target["boxes"], image.shape[-1])}


@dataclass(frozen=True)
class Resize(Step):
    """Resize to ``size`` (an int for a square, or (height, width)) and scale the boxes to match.

    ``image: (3, H, W) -> (3, height, width)`` by bilinear interpolation (``align_corners=False``);
    boxes multiply by (width / W, height / H) and are clamped to the new image. ``antialias``
    defaults to False like the released code's ``cv2.resize`` (torchvision v2's ``Resize``
    defaults to True, which blurs when shrinking and is ~4x slower). Identical output to
    ``v2.functional.resize(..., antialias=False)`` (tested).
    """

    size: Union[int, tuple[int, int]] = 300
    antialias: bool = False

    def __post_init__(self) -> None:
        height, width = self.output_size
        if height < 1 or width < 1:
            raise ValueError(f"size must be positive, got {self.size}")

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the output image."""
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)

    def forward(self, image: Tensor, target: Target, generator: Optional[torch.Generator] = None) -> Sample:
        height, width = self.output_size
        old_height, old_width = image.shape[-2:]
        if (old_height, old_width) == (height, width):
            return image, target  # bilinear at scale 1 samples the pixel centres: the identity (tested)
        image = nnf.interpolate(
            image[None], size=(height, width), mode="bilinear", align_corners=False, antialias=self.antialias
        )[0]
        boxes = target["boxes"]
        ratios = torch.tensor(
            [width / old_width, height / old_height, width / old_width, height / old_height], device=boxes.device
        )
        boxes = boxes.mul(ratios).to(boxes.dtype)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)  # float rounding may overshoot by an ulp
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        return image, {**target, "boxes": boxes}


@dataclass(frozen=True)
class SanitizeBoxes(Step):
    """Drop boxes narrower or lower than ``min_size`` pixels (and their ``per_box_keys`` entries).

    After zoom-out and resizing some objects shrink below a pixel; like torchvision's
    ``v2.SanitizeBoundingBoxes`` (default ``min_size=1``) we drop them, which also removes
    degenerate boxes with zero width or height. ``boxes: (G, 4) -> (G', 4)``, G' <= G.
    """

    min_size: float = 1.0
    per_box_keys: tuple[str, ...] = PER_BOX_KEYS

    def __post_init__(self) -> None:
        if not self.min_size > 0:
            raise ValueError(f"min_size must be > 0 pixels (so that kept boxes have positive area), got {self.min_size}")

    def forward(self, image: Tensor, target: Target, generator: Optional[torch.Generator] = None) -> Sample:
        boxes = target["boxes"]
        sizes = boxes[:, 2:] - boxes[:, :2]  # (G, 2): width, height
        keep = (sizes >= self.min_size).all(dim=1)
        if bool(keep.all()):
            return image, target
        return image, _keep_boxes(target, keep, boxes[keep], self.per_box_keys)
