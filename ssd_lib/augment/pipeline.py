"""The steps composed into SSD's two pipelines: training (the released code's order, Sec. 2.2 and 3.6)
and evaluation (resize and normalise, nothing random).

Usage::

    from ssd_lib.augment.pipeline import SSDAugmentation, SSDTransform
    image, target = SSDAugmentation(size=300)(image, target, generator=torch.Generator().manual_seed(0))
    image, target = SSDTransform(size=300)(image, target)      # (3, 300, 300), no box dropped
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .base import (IMAGENET_MEAN, IMAGENET_STD, PER_BOX_KEYS, SSD_MIN_IOUS, Sample, Step, Target, _check_generator,
                   validate_sample)
from .geometric import MinIoURandomCrop, RandomHorizontalFlip, Resize, SanitizeBoxes, ZoomOut
from .photometric import Normalize, PhotometricDistort

__all__ = ["Compose", "SSDAugmentation", "SSDTransform"]


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
