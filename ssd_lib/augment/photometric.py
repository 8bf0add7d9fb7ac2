"""Steps that change pixel values, never boxes: the photometric distortions of the released SSD code,
the ImageNet normalisation, and its inverse for plotting (paper Sec. 2.2, "Data augmentation").

Usage::

    from ssd_lib.augment.photometric import Normalize, PhotometricDistort, denormalize
    image, target = PhotometricDistort()(image, target)    # brightness, contrast, saturation, hue
    image, target = Normalize()(image, target); plt.imshow(denormalize(image).permute(1, 2, 0))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as tvf

from .base import IMAGENET_MEAN, IMAGENET_STD, Sample, Step, Target

__all__ = ["PhotometricDistort", "Normalize", "denormalize"]


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
