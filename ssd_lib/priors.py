"""Default boxes ("priors"): a fixed set of boxes tiled over several feature maps (paper Sec. 2.2).

For feature map k of size f_k, every cell (i, j) holds boxes centred at
((j + 0.5) * step_k / image_size, (i + 0.5) * step_k / image_size): one square of scale
s_k, one square of scale s'_k = sqrt(s_k * s_{k+1}), and for each extra aspect ratio r a
pair (r, 1/r) of size (s_k * sqrt(r), s_k / sqrt(r)).

Usage::

    from ssd_lib.priors import PriorConfig, default_boxes
    priors = default_boxes(PriorConfig.ssd300())   # (8732, 4) cx, cy, w, h in [0, 1]
    print(PriorConfig.ssd300().num_priors)         # 8732
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

__all__ = ["PriorConfig", "default_boxes"]


@dataclass(frozen=True)
class PriorConfig:
    """Where the default boxes go and how big they are. Sizes and steps are in pixels of the input.

    ``feature_maps[k]`` is the side of source map k; ``steps[k]`` the pixel distance between
    neighbouring centres on it; ``min_sizes[k]`` the side of the small square (s_k * image_size);
    ``max_sizes[k]`` defines the extra square sqrt(min * max); ``aspect_ratios[k]`` the extra
    ratios r (each adds r and 1/r). ``clip`` clamps the boxes to the image in *corner* form.
    """

    image_size: int
    feature_maps: tuple[int, ...]
    steps: tuple[float, ...]
    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    clip: bool = False

    def __post_init__(self) -> None:
        m = len(self.feature_maps)
        for name in ("steps", "min_sizes", "max_sizes", "aspect_ratios"):
            if len(getattr(self, name)) != m:
                raise ValueError(
                    f"PriorConfig.{name} has {len(getattr(self, name))} entries but feature_maps has {m}; "
                    "give one entry per source feature map"
                )
        if self.image_size <= 0 or any(f <= 0 for f in self.feature_maps):
            raise ValueError("PriorConfig.image_size and feature_maps must be positive")
        if any(lo <= 0 or hi < lo for lo, hi in zip(self.min_sizes, self.max_sizes)):
            raise ValueError("PriorConfig needs 0 < min_sizes[k] <= max_sizes[k] for every map")
        if any(r <= 0 for ratios in self.aspect_ratios for r in ratios):
            raise ValueError("PriorConfig.aspect_ratios must be positive numbers such as 2 or 3")

    @property
    def boxes_per_location(self) -> tuple[int, ...]:
        """k in the paper: 2 squares plus 2 boxes per extra ratio (4 or 6 for SSD300)."""
        return tuple(2 + 2 * len(r) for r in self.aspect_ratios)

    @property
    def num_priors(self) -> int:
        """Total number of default boxes, derived from the config (8732 for SSD300)."""
        return sum(f * f * k for f, k in zip(self.feature_maps, self.boxes_per_location))

    @classmethod
    def ssd300(cls) -> "PriorConfig":
        """SSD300 as the paper sets it up (Sec. 3.1), in the pixel sizes of the released VOC configuration: 8732 boxes."""
        return cls(
            image_size=300,
            feature_maps=(38, 19, 10, 5, 3, 1),  # conv4_3, fc7, conv8_2 .. conv11_2
            steps=(8, 16, 32, 64, 100, 300),
            # conv4_3 gets 30 px (scale 0.1), below s_min = 0.2: Sec. 3.1 of the paper says so, as does the released code.
            min_sizes=(30, 60, 111, 162, 213, 264),
            max_sizes=(60, 111, 162, 213, 264, 315),
            aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),  # 4, 6, 6, 6, 4, 4 boxes per cell
        )

    @classmethod
    def ssd512(cls) -> "PriorConfig":
        """The released SSD512 VOC configuration: 7 source maps, 24564 boxes."""
        return cls(
            image_size=512,
            feature_maps=(64, 32, 16, 8, 4, 2, 1),
            steps=(8, 16, 32, 64, 128, 256, 512),
            min_sizes=(35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
            max_sizes=(76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
            aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
        )

    @classmethod
    def from_paper(
        cls,
        image_size: int,
        feature_maps: tuple[int, ...],
        s_min: float = 0.2,
        s_max: float = 0.9,
        aspect_ratios: tuple[tuple[float, ...], ...] | None = None,
        clip: bool = False,
    ) -> "PriorConfig":
        """The paper's recipe (Sec. 2.2, Eq. 4): s_k = s_min + (s_max - s_min) / (m - 1) * (k - 1).

        The extra square of the last map needs s_{m+1}, which the paper leaves open; like
        torchvision's ``DefaultBoxGenerator`` we take s_{m+1} = 1. Centres are
        ((j + 0.5) / f_k, (i + 0.5) / f_k), i.e. step = image_size / f_k.
        ``aspect_ratios`` defaults to (2, 3) on every map (6 boxes per location).
        """
        m = len(feature_maps)
        if m < 1:
            raise ValueError("from_paper needs at least one feature map")
        if not 0 < s_min <= s_max <= 1:
            raise ValueError(f"need 0 < s_min <= s_max <= 1, got s_min={s_min}, s_max={s_max}")
        scales = paper_scales(m, s_min, s_max) + [1.0]
        if aspect_ratios is None:
            aspect_ratios = ((2, 3),) * m
        return cls(
            image_size=image_size,
            feature_maps=tuple(feature_maps),
            steps=tuple(image_size / f for f in feature_maps),
            min_sizes=tuple(s * image_size for s in scales[:-1]),
            max_sizes=tuple(s * image_size for s in scales[1:]),
            aspect_ratios=tuple(tuple(r) for r in aspect_ratios),
            clip=clip,
        )


def paper_scales(m: int, s_min: float = 0.2, s_max: float = 0.9) -> list[float]:
    """The paper's Eq. 4: m scales evenly spaced from s_min to s_max (a single map gets s_min)."""
    if m == 1:
        return [s_min]
    return [s_min + (s_max - s_min) * (k - 1) / (m - 1) for k in range(1, m + 1)]


def _box_shapes(cfg: PriorConfig, k: int) -> Tensor:
    """(A, 2) widths and heights (fractions of the image) of the A boxes of one cell on map k."""
    s_k = cfg.min_sizes[k] / cfg.image_size
    s_extra = math.sqrt(cfg.min_sizes[k] * cfg.max_sizes[k]) / cfg.image_size  # s'_k
    shapes = [(s_k, s_k), (s_extra, s_extra)]
    for r in cfg.aspect_ratios[k]:
        root = math.sqrt(r)
        shapes += [(s_k * root, s_k / root), (s_k / root, s_k * root)]  # ratio r, then 1/r
    return torch.tensor(shapes, dtype=torch.float64)


def default_boxes(cfg: PriorConfig, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """All default boxes of ``cfg`` as ``(P, 4)`` cx, cy, w, h, fractions of the image.

    Order: feature map, then row (i), then column (j), then box (s_k, s'_k, then r, 1/r per
    ratio): torchvision's ``DefaultBoxGenerator`` order, so weights can move between them.
    Computed in float64 and cast, so the numbers do not depend on the device.
    """
    per_map = []
    for k, f in enumerate(cfg.feature_maps):
        centres_1d = (torch.arange(f, dtype=torch.float64) + 0.5) * cfg.steps[k] / cfg.image_size
        cy, cx = torch.meshgrid(centres_1d, centres_1d, indexing="ij")  # row-major: i then j
        centres = torch.stack((cx, cy), dim=-1).reshape(-1, 1, 2)  # (f*f, 1, 2)
        shapes = _box_shapes(cfg, k).unsqueeze(0)  # (1, A, 2)
        boxes = torch.cat(torch.broadcast_tensors(centres, shapes), dim=-1)  # (f*f, A, 4)
        per_map.append(boxes.reshape(-1, 4))
    priors = torch.cat(per_map, dim=0)
    if cfg.clip:
        priors = clip_priors(priors)
    return priors.to(dtype=dtype, device=device)


def clip_priors(priors_cxcywh: Tensor) -> Tensor:
    """Clip default boxes to the image in corner form. ``(P, 4) cxcywh -> (P, 4) cxcywh``.

    Convert to corners, clamp x1, y1, x2, y2 to [0, 1], convert back: a box that sticks out of the
    image shrinks and its centre moves inwards (what ``PriorConfig(clip=True)`` does). Clamping
    (cx, cy, w, h) directly would leave boxes sticking out (a classic bug; lesson 11)."""
    return xyxy_to_cxcywh(cxcywh_to_xyxy(priors_cxcywh).clamp(0.0, 1.0))
