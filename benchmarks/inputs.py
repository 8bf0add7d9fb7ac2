"""Seeded random inputs that both sides of a benchmark receive, in each side's units.

Ours takes boxes normalised to [0, 1]; torchvision takes pixels. Every tensor is drawn once from a
``torch.Generator`` with a fixed seed on the CPU, then moved, so both sides (and every machine) see
the same numbers.

Usage::

    gt = random_ground_truth(batch=32, seed=0)           # gt.boxes (normalised), gt.boxes_px, gt.labels
    loc, logits = random_head_outputs(32, 8732, 21, seed=1)
    anchors_px = priors_to_pixels(model.priors, 300)     # (P, 4) xyxy pixels, torchvision's anchors
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ssd_lib.boxes import cxcywh_to_xyxy

__all__ = ["GroundTruth", "random_ground_truth", "random_head_outputs", "random_images", "priors_to_pixels"]


class GroundTruth(NamedTuple):
    """B images of objects: ``boxes[b] (G_b, 4)`` xyxy in [0, 1], ``boxes_px[b]`` the same in pixels,
    ``labels[b] (G_b,)`` int64 in 1..C-1."""

    boxes: list[Tensor]
    boxes_px: list[Tensor]
    labels: list[Tensor]

    def to(self, device: torch.device) -> "GroundTruth":
        return GroundTruth(*([t.to(device) for t in field] for field in self))

    def torchvision_targets(self) -> list[dict[str, Tensor]]:
        """The list of per-image dicts that torchvision's detection models take."""
        return [{"boxes": b, "labels": l} for b, l in zip(self.boxes_px, self.labels)]


def random_ground_truth(batch: int, image_size: int = 300, max_objects: int = 20, num_classes: int = 21,
                        seed: int = 0) -> GroundTruth:
    """1 to ``max_objects`` valid boxes per image, sides 5% to 60% of the image, continuous coordinates
    (so no IoU is exactly 0.5, where torchvision's ``>=`` and our ``>`` would disagree)."""
    generator = torch.Generator().manual_seed(seed)
    boxes, labels = [], []
    for _ in range(batch):  # setup, not timed
        count = int(torch.randint(1, max_objects + 1, (1,), generator=generator))
        size = torch.rand(count, 2, generator=generator) * 0.55 + 0.05
        corner = torch.rand(count, 2, generator=generator) * (1 - size)
        boxes.append(torch.cat((corner, corner + size), dim=1))
        labels.append(torch.randint(1, num_classes, (count,), generator=generator))
    return GroundTruth(boxes, [b * image_size for b in boxes], labels)


def random_head_outputs(batch: int, num_priors: int, num_classes: int = 21, seed: int = 1,
                        logit_scale: float = 2.0, background_offset: float = 0.0) -> tuple[Tensor, Tensor]:
    """``loc (B, P, 4)`` offsets ~ N(0, 0.5^2) and ``logits (B, P, C)`` ~ N(0, logit_scale^2), plus
    ``background_offset`` on class 0. Offset 0 is an untrained network: about half of all class
    scores pass detect's 0.01, so every class fills its 400 candidates (the heavy case for NMS);
    offset 10 is closer to a trained one (~200 candidates per class and image)."""
    generator = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, num_priors, 4, generator=generator) * 0.5
    logits = torch.randn(batch, num_priors, num_classes, generator=generator) * logit_scale
    logits[..., 0] += background_offset
    return loc, logits


def random_images(batch: int, image_size: int = 300, seed: int = 2) -> Tensor:
    """``(B, 3, S, S)`` values in [0, 1] (both models see the tensor as is: no normalisation on either side)."""
    return torch.rand(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))


def priors_to_pixels(priors_cxcywh: Tensor, image_size: int) -> Tensor:
    """Our default boxes ``(P, 4)`` cxcywh in [0, 1] as torchvision's anchors: ``(P, 4)`` xyxy in pixels."""
    return cxcywh_to_xyxy(priors_cxcywh) * image_size
