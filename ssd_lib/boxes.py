"""Box formats, IoU, and the SSD offset encoding (paper Sec. 2.2, "Matching strategy" and Eq. 2).

Two box formats are used throughout the course:
  * ``xyxy``   -- corners (x1, y1, x2, y2), what datasets and NMS use;
  * ``cxcywh`` -- centre and size (cx, cy, w, h), what default boxes and offsets use.

Usage::

    from ssd_lib import boxes
    offsets = boxes.encode(matched_xyxy, priors_cxcywh)        # (P, 4) regression targets
    recovered = boxes.decode(offsets, priors_cxcywh)           # == matched_xyxy (up to float error)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_iou as _tv_box_iou

__all__ = ["xyxy_to_cxcywh", "cxcywh_to_xyxy", "box_iou", "encode", "decode", "validate_boxes", "DEFAULT_VARIANCES"]

# Variances of the released Caffe code (not in the paper text): offsets are divided by
# 0.1 (centre) and 0.2 (size) so that the regression targets have roughly unit scale.
DEFAULT_VARIANCES: tuple[float, float] = (0.1, 0.2)
_MAX_LOG_SCALE = math.log(1000.0 / 16)


def _check_last_dim(name: str, boxes: Tensor) -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., 4), got {type(boxes).__name__}")
    if boxes.ndim == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4); got {tuple(boxes.shape)}")


def validate_boxes(name: str, boxes: Tensor, fmt: str = "xyxy") -> None:
    """Raise a ValueError naming ``name`` if ``boxes`` (..., 4) is not a valid box tensor.

    Checks: last dimension 4, floating dtype, finite values, and for ``xyxy`` that
    x2 >= x1 and y2 >= y1; for ``cxcywh`` that w, h >= 0.
    """
    _check_last_dim(name, boxes)
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {boxes.dtype}; call .float() first")
    if not torch.isfinite(boxes).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates; drop or fix those boxes before calling")
    if fmt == "xyxy":
        bad = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
        if bad.any():
            first = boxes.reshape(-1, 4)[bad.reshape(-1)][0].tolist()
            raise ValueError(
                f"{name} must be in xyxy order with x2 >= x1 and y2 >= y1; found {first}. "
                "If your boxes are (x, y, w, h) or (cx, cy, w, h), convert them first (see ssd_lib.boxes)."
            )
    elif fmt == "cxcywh":
        if (boxes[..., 2:] < 0).any():
            raise ValueError(f"{name} has a negative width or height; cxcywh boxes need w, h >= 0")
    else:  # internal misuse
        raise ValueError(f"unknown box format {fmt!r}; use 'xyxy' or 'cxcywh'")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """Corners to centre-size. ``boxes: (..., 4) xyxy -> (..., 4) cxcywh``."""
    _check_last_dim("boxes", boxes)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Centre-size to corners. ``boxes: (..., 4) cxcywh -> (..., 4) xyxy``."""
    _check_last_dim("boxes", boxes)
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def box_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Jaccard overlap of every pair. ``boxes_a: (N, 4) xyxy``, ``boxes_b: (M, 4) xyxy`` -> ``(N, M)``.

    A thin wrapper over ``torchvision.ops.box_iou`` that validates its inputs
    (the course writes IoU by hand once, in notebook 1, and checks it against this).
    """
    validate_boxes("boxes_a", boxes_a)
    validate_boxes("boxes_b", boxes_b)
    if boxes_a.ndim != 2 or boxes_b.ndim != 2:
        raise ValueError(
            f"box_iou takes 2-D tensors (N, 4) and (M, 4); got {tuple(boxes_a.shape)} and {tuple(boxes_b.shape)}"
        )
    return _tv_box_iou(boxes_a, boxes_b)


def encode(matched_xyxy: Tensor, priors_cxcywh: Tensor, variances: tuple[float, float] = DEFAULT_VARIANCES,
           floor_sizes: bool = True) -> Tensor:
    """Regression targets for matched ground truth (paper Eq. 2, divided by the variances).

    ``matched_xyxy: (..., P, 4)`` the box each default box is matched to, xyxy;
    ``priors_cxcywh: (P, 4)``; returns ``(..., P, 4)`` offsets (tx, ty, tw, th)::

        tx = (g_cx - d_cx) / (d_w * v0)     tw = log(g_w / d_w) / v1

    Background default boxes still get a (meaningless) target; the loss ignores them.
    Degenerate matched boxes (zero width) would give -inf, so widths are floored at a tiny epsilon;
    ``floor_sizes=False`` computes the paper's formula as written (lesson 11 shows the -inf it gives).
    """
    _check_last_dim("matched_xyxy", matched_xyxy)
    _check_last_dim("priors_cxcywh", priors_cxcywh)
    if matched_xyxy.shape[-2] != priors_cxcywh.shape[-2]:
        raise ValueError(
            f"matched_xyxy has {matched_xyxy.shape[-2]} boxes but priors_cxcywh has {priors_cxcywh.shape[-2]}; "
            "there must be one matched box per default box"
        )
    g = xyxy_to_cxcywh(matched_xyxy)
    d = priors_cxcywh
    sizes = g[..., 2:].clamp(min=torch.finfo(g.dtype).eps) if floor_sizes else g[..., 2:]
    centre = (g[..., :2] - d[..., :2]) / (d[..., 2:] * variances[0])
    size = torch.log(sizes / d[..., 2:]) / variances[1]
    return torch.cat((centre, size), dim=-1)


def decode(offsets: Tensor, priors_cxcywh: Tensor, variances: tuple[float, float] = DEFAULT_VARIANCES) -> Tensor:
    """Invert :func:`encode`. ``offsets: (..., P, 4)``, ``priors_cxcywh: (P, 4)`` -> ``(..., P, 4)`` xyxy."""
    _check_last_dim("offsets", offsets)
    _check_last_dim("priors_cxcywh", priors_cxcywh)
    if offsets.shape[-2] != priors_cxcywh.shape[-2]:
        raise ValueError(
            f"offsets has {offsets.shape[-2]} boxes but priors_cxcywh has {priors_cxcywh.shape[-2]}; "
            "the model and the default boxes disagree (was the model built with another PriorConfig?)"
        )
    d = priors_cxcywh
    centre = d[..., :2] + offsets[..., :2] * variances[0] * d[..., 2:]
    # Cap the log-size so an untrained network cannot overflow exp (torchvision caps at log(1000/16)).
    size = d[..., 2:] * torch.exp((offsets[..., 2:] * variances[1]).clamp(max=_MAX_LOG_SCALE))
    return cxcywh_to_xyxy(torch.cat((centre, size), dim=-1))

