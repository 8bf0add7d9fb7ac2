"""The contract every augmentation step keeps: the sample format, its validation, and the ``Step`` base.

A sample is ``(image, target)``: ``image (3, H, W)`` float in [0, 1], ``target["boxes"] (G, 4)`` pixel
xyxy inside the image plus per-box keys (``labels``, ``difficult``, ...) that are dropped together with
their box (paper Sec. 2.2, "Data augmentation", crops and filters boxes). Also the ImageNet statistics
the VGG16 base expects and the sampler options of Sec. 2.2.

Usage::

    from ssd_lib.augment.base import Step, validate_sample
    validate_sample(image, target, unit_range=True)      # a ValueError naming the problem, or None
    class Identity(Step): ...                             # implement forward, or make_params + apply
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from ssd_lib.boxes import validate_boxes

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PER_BOX_KEYS", "SSD_MIN_IOUS", "Sample", "Step", "Target",
           "validate_sample"]

Target = dict[str, Any]
Sample = tuple[Tensor, Target]

# Per-channel RGB statistics of ImageNet for images in [0, 1]: the VGG16 base is ImageNet
# pre-trained (the released Caffe code subtracts the same mean in BGR 0-255 units).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Target keys that hold one entry per box and are dropped together with their box.
# Any other key (image_id, orig_size, ...) is passed through untouched. ``area`` (COCO's annotation area, used
# only by evaluation) keeps each kept box's original value: no step rescales it.
PER_BOX_KEYS: tuple[str, ...] = ("labels", "difficult", "iscrowd", "area")

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
