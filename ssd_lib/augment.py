"""Training-time data augmentation for SSD (paper Sec. 2.2 "Data augmentation", Sec. 3.6 "zoom out").

SSD has no proposal stage to re-sample objects at many scales, so it leans on augmentation:
the min-IoU patch sampler adds 8.8 mAP on VOC2007 (Table 2) and the "zoom out" expansion
another 2.9 (74.3 -> 77.2). The training pipeline runs the steps of the released code
(ssd.pytorch ``SSDAugmentation``) in its order::

    PhotometricDistort -> ZoomOut -> MinIoURandomCrop -> RandomHorizontalFlip -> Resize
    -> SanitizeBoxes -> Normalize

Every step is a small frozen dataclass called as ``step(image, target, generator=None)``:
``image: (3, H, W)`` float in [0, 1], ``target["boxes"]: (G, 4)`` pixel xyxy in the image,
``target["labels"]: (G,)``, ``target["difficult"]: (G,)``; any other keys ride along. The
random steps split into ``make_params`` (draw the random choices) and ``apply`` (run them),
as torchvision.transforms.v2 does, so a notebook can show what was drawn. All randomness goes
through the optional ``torch.Generator``; without one, torch's global RNG is used (so
DataLoader worker seeding works).

Usage::

    aug = SSDAugmentation(size=300)
    image, target = aug(image, target, generator=torch.Generator().manual_seed(0))
    for step in aug.steps: image, target = step(image, target)      # one step at a time
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as nnf
from torch import Tensor
from torchvision.ops import box_iou
from torchvision.transforms.v2 import functional as tvf

from ssd_lib.boxes import validate_boxes

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PER_BOX_KEYS",
    "SSD_MIN_IOUS",
    "Step",
    "PhotometricDistort",
    "ZoomOut",
    "MinIoURandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "SanitizeBoxes",
    "Normalize",
    "Compose",
    "SSDAugmentation",
    "SSDTransform",
    "denormalize",
    "validate_sample",
]

Target = dict[str, Any]
Sample = tuple[Tensor, Target]

# Per-channel RGB statistics of ImageNet for images in [0, 1]: the VGG16 base is ImageNet
# pre-trained (the released Caffe code subtracts the same mean in BGR 0-255 units).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Target keys that hold one entry per box and are dropped together with their box.
# Any other key (image_id, orig_size, ...) is passed through untouched.
PER_BOX_KEYS: tuple[str, ...] = ("labels", "difficult", "iscrowd")

# Sampler options of Sec. 2.2: None = keep the whole image; a number = the patch must overlap
# some object with at least this IoU; 0.0 = a random patch with no IoU constraint.
SSD_MIN_IOUS: tuple[Optional[float], ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)


# ----------------------------------------------------------------------------- validation


def validate_sample(
    image: Tensor, target: Target, *, unit_range: bool = False, per_box_keys: Sequence[str] = PER_BOX_KEYS
) -> None:
    """Raise a ValueError/TypeError naming the problem if ``(image, target)`` is not a valid sample.

    ``image: (3, H, W)`` floating point (in [0, 1] when ``unit_range``); ``target`` a dict with
    ``boxes: (G, 4)`` float pixel xyxy inside the image and, for every key of ``per_box_keys``
    it holds, a tensor with G rows.
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor of shape (3, H, W), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"image must have shape (3, H, W) (channels first, RGB); got {tuple(image.shape)}. "
            "For an (H, W, 3) array use image.permute(2, 0, 1)."
        )
    if not image.is_floating_point():
        raise ValueError(f"image must be a float tensor in [0, 1], got {image.dtype}; use image.float() / 255")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"image must be non-empty; got shape {tuple(image.shape)}")
    if unit_range and image.numel():
        low, high = torch.aminmax(image)
        if low < 0 or high > 1:
            raise ValueError(
                f"image values must lie in [0, 1], found [{low.item():.3g}, {high.item():.3g}]. "
                "Divide uint8 images by 255; do not normalise before augmenting (Normalize is the last step)."
            )
    if not isinstance(target, dict) or "boxes" not in target:
        raise TypeError("target must be a dict with a 'boxes' tensor of shape (G, 4) (pixel xyxy)")
    boxes = target["boxes"]
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"target['boxes'] must have shape (G, 4) in pixel xyxy; got {shape}")
    validate_boxes("target['boxes']", boxes)
    height, width = image.shape[-2:]
    if len(boxes) and (
        (boxes[:, :2] < 0).any() or (boxes[:, 2] > width).any() or (boxes[:, 3] > height).any()
    ):
        raise ValueError(
            f"target['boxes'] must lie inside the {width}x{height} image (0 <= x <= {width}, 0 <= y <= {height}), "
            "in pixel xyxy; clamp them first, and check they are not normalised to [0, 1] or (x, y, w, h)."
        )
    for key in per_box_keys:
        value = target.get(key)
        if value is not None and (not isinstance(value, Tensor) or value.ndim == 0 or len(value) != len(boxes)):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"target[{key!r}] must be a tensor with one row per box ({len(boxes)}); got {shape}")


def _check_generator(generator: Optional[torch.Generator]) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _keep_boxes(target: Target, keep: Tensor, boxes: Tensor, per_box_keys: Sequence[str]) -> Target:
    """A new target with ``boxes`` (already filtered by ``keep``) and its per-box keys filtered alike."""
    out = dict(target)
    out["boxes"] = boxes
    for key in per_box_keys:
        if key in target:
            out[key] = target[key][keep]
    return out


# ----------------------------------------------------------------------------- the steps


class Step:
    """Base of the augmentation steps: ``step(image, target, generator=None) -> (image, target)``.

    ``__call__`` validates the sample (the public boundary) and runs ``forward``; ``Compose``
    validates once and calls ``forward`` directly, so a pipeline checks its input only once.
    Random steps implement ``make_params`` + ``apply``; deterministic ones just ``forward``.
    """

    unit_range_input = False  # True where the step needs pixel values in [0, 1]

    def __call__(self, image: Tensor, target: Target, generator: Optional[torch.Generator] = None) -> Sample:
        validate_sample(image, target, unit_range=self.unit_range_input)
        _check_generator(generator)
        return self.forward(image, target, generator)

    def forward(self, image: Tensor, target: Target, generator: Optional[torch.Generator] = None) -> Sample:
        return self.apply(image, target, self.make_params(image, target, generator))

    def make_params(self, image: Tensor, target: Target, generator: Optional[torch.Generator] = None) -> dict:
        return {}

    def apply(self, image: Tensor, target: Target, params: dict) -> Sample:
        raise NotImplementedError


@dataclass(frozen=True)
class PhotometricDistort(Step):
    """Random brightness, contrast, saturation, hue and channel swap, each with probability ``p``.

    Order of the released code (ssd.pytorch ``PhotometricDistort``): brightness; then, with
    probability 1/2, contrast *before* the saturation/hue block, else *after* it; then a random
    channel permutation. ``image: (3, H, W)`` in [0, 1] -> same shape, clamped to [0, 1]; boxes
    are untouched.

    Ranges as released: brightness delta in [-32, 32] / 255 (additive, as released; torchvision
    multiplies instead), contrast and saturation factors in [0.5, 1.5], hue shift in [-18, 18]
    degrees (= torchvision's hue factor +-0.05). Contrast, saturation and hue are
    torchvision.transforms.v2.functional's kernels, so they blend with the grey image/mean (the
    released code scaled pixel values, resp. the HSV saturation, instead). Apart from the
    brightness step this is exactly ``v2.RandomPhotometricDistort``: given the same params,
    ``apply`` runs the same kernels in the same order (tested).
    """

    brightness_delta: float = 32 / 255
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue_degrees: float = 18.0
    p: float = 0.5

    unit_range_input = True

    def __post_init__(self) -> None:
        if not 0 <= self.p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {self.p}")
        for name in ("contrast", "saturation"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high, got {(low, high)}")
        if not 0 <= self.hue_degrees <= 180:
            raise ValueError(f"hue_degrees must lie in [0, 180], got {self.hue_degrees}")
        if self.brightness_delta < 0:
            raise ValueError(f"brightness_delta must be >= 0, got {self.brightness_delta}")

    def make_params(self, image: Tensor, target: Target, generator: Optional[torch.Generator] = None) -> dict:
        # A fixed number of draws per call, whichever distortions fire.
        u = torch.rand(9, generator=generator).tolist()
        permutation = torch.randperm(3, generator=generator)

        def pick(apply_u: float, value_u: float, low: float, high: float) -> Optional[float]:
            return low + (high - low) * value_u if apply_u < self.p else None

        hue = self.hue_degrees / 360  # torchvision's hue factor is a fraction of the colour circle
        return {
            "brightness_delta": pick(u[0], u[1], -self.brightness_delta, self.brightness_delta),
            "contrast_factor": pick(u[2], u[3], *self.contrast),
            "saturation_factor": pick(u[4], u[5], *self.saturation),
            "hue_factor": pick(u[6], u[7], -hue, hue),
            "contrast_before": u[8] < 0.5,
            "channel_permutation": permutation if torch.rand(1, generator=generator).item() < self.p else None,
        }

    def apply(self, image: Tensor, target: Target, params: dict) -> Sample:
        if params["brightness_delta"] is not None:
            image = (image + params["brightness_delta"]).clamp_(0, 1)
        contrast = params["contrast_factor"]
        if contrast is not None and params["contrast_before"]:
            image = tvf.adjust_contrast(image, contrast)
        if params["saturation_factor"] is not None:
            image = tvf.adjust_saturation(image, params["saturation_factor"])
        if params["hue_factor"] is not None:
            image = tvf.adjust_hue(image, params["hue_factor"])
        if contrast is not None and not params["contrast_before"]:
            image = tvf.adjust_contrast(image, contrast)
        if params["channel_permutation"] is not None:
            image = tvf.permute_channels(image, params["channel_permutation"])
        return image, target


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
        else:
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (G, 2)
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
                cx, cy = centres[:, 0], centres[:, 1]
                inside = (
                    (patches[:, 0:1] < cx) & (cx < patches[:, 2:3]) & (patches[:, 1:2] < cy) & (cy < patches[:, 3:4])
                )  # (T, G)
                best_iou = box_iou(patches, boxes).masked_fill_(~inside, -1.0).amax(dim=1)  # (T,)
                ok &= inside.any(dim=1).to(ok.device) & (best_iou >= min_iou).to(ok.device)
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


@dataclass(frozen=True)
class Normalize(Step):
    """``(image - mean) / std`` per channel, the input statistics the ImageNet-trained VGG16 expects.

    ``image: (3, H, W)`` in [0, 1] -> same shape, roughly zero mean; boxes untouched. Same as
    ``v2.functional.normalize`` (tested). Undo with ``denormalize`` for plotting.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need one value per RGB channel, got {self.mean}, {self.std}")
        if not all(s > 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def forward(self, image: Tensor, target: Target, generator: Optional[torch.Generator] = None) -> Sample:
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device).view(3, 1, 1)
        return image.sub(mean).div_(std), target


def denormalize(
    image: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
    """Undo ``Normalize`` for plotting: ``image: (..., 3, H, W)`` -> same shape, clamped to [0, 1]."""
    if not isinstance(image, Tensor) or image.ndim < 3 or image.shape[-3] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must have shape (..., 3, H, W); got {shape}")
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * std_t + mean_t).clamp_(0, 1)


# ----------------------------------------------------------------------------- pipelines


class Compose:
    """Run ``steps`` in order: ``compose(image, target, generator=None) -> (image, target)``.

    The input is validated once here (``image`` in [0, 1] if ``unit_range``); the steps then
    run unchecked. Any callable ``f(image, target, generator)`` may be a step. ``steps`` is a
    plain list, so a notebook can apply them one at a time.
    """

    def __init__(self, steps: Sequence[Callable[..., Sample]], unit_range: bool = False) -> None:
        self.steps = list(steps)
        self.unit_range = unit_range

    def __call__(self, image: Tensor, target: Target, generator: Optional[torch.Generator] = None) -> Sample:
        validate_sample(image, target, unit_range=self.unit_range)
        _check_generator(generator)
        for step in self.steps:
            if isinstance(step, Step):
                image, target = step.forward(image, target, generator)
            else:
                image, target = step(image, target, generator)
        return image, target

    def __repr__(self) -> str:
        lines = "".join(f"\n    {step!r}," for step in self.steps)
        return f"{type(self).__name__}([{lines}\n])"


class SSDAugmentation(Compose):
    """The SSD training pipeline, in the released code's order (module docstring).

    ``image: (3, H, W)`` float in [0, 1], ``target["boxes"]: (G, 4)`` pixel xyxy ->
    ``image: (3, size, size)`` normalised, boxes in pixel xyxy of the output (G' <= G rows,
    each at least ``min_box_size`` pixels wide and high; labels etc. filtered alike).
    Switch parts off with ``photometric``/``expand``/``crop``/``normalize`` = False or
    ``flip_p=0``. ``min_scale`` defaults to the released code's 0.3 (the paper says 0.1).
    """

    def __init__(
        self,
        size: int = 300,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        photometric: bool = True,
        expand: bool = True,
        max_expand_ratio: float = 4.0,
        crop: bool = True,
        min_ious: tuple[Optional[float], ...] = SSD_MIN_IOUS,
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        min_aspect: float = 0.5,
        max_aspect: float = 2.0,
        flip_p: float = 0.5,
        normalize: bool = True,
        expand_p: float = 0.5,
        min_box_size: float = 1.0,
        per_box_keys: tuple[str, ...] = PER_BOX_KEYS,
    ) -> None:
        steps: list[Step] = []
        if photometric:
            steps.append(PhotometricDistort())
        if expand:
            steps.append(ZoomOut(fill=tuple(mean), max_ratio=max_expand_ratio, p=expand_p))
        if crop:
            steps.append(
                MinIoURandomCrop(
                    min_ious=tuple(min_ious),
                    min_scale=min_scale,
                    max_scale=max_scale,
                    min_aspect=min_aspect,
                    max_aspect=max_aspect,
                    per_box_keys=tuple(per_box_keys),
                )
            )
        if flip_p > 0:
            steps.append(RandomHorizontalFlip(p=flip_p))
        steps.append(Resize(size))
        steps.append(SanitizeBoxes(min_size=min_box_size, per_box_keys=tuple(per_box_keys)))
        if normalize:
            steps.append(Normalize(tuple(mean), tuple(std)))
        super().__init__(steps, unit_range=True)


class SSDTransform(Compose):
    """The SSD evaluation pipeline: resize to ``size`` x ``size`` and normalise, nothing random.

    ``image: (3, H, W)`` in [0, 1] -> ``(3, size, size)``; boxes scaled by (size / W, size / H),
    none dropped (evaluation must see every ground-truth object).
    """

    def __init__(
        self,
        size: int = 300,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        normalize: bool = True,
    ) -> None:
        steps: list[Step] = [Resize(size)]
        if normalize:
            steps.append(Normalize(tuple(mean), tuple(std)))
        super().__init__(steps, unit_range=True)
