"""Matching default boxes to ground truth (paper Sec. 2.2, "Matching strategy").

Two steps, both needed:
  1. forced match: every object takes the default box that overlaps it most, even when that
     IoU is below the threshold, so that no object is left without a default box;
  2. threshold match: every other default box takes the object it overlaps most, if that IoU
     exceeds the threshold (0.5). The rest are background, label 0.

Usage::

    from ssd_lib.matching import match, match_batch
    matched_boxes, labels = match(gt_boxes, gt_labels, priors_cxcywh)         # one image
    loc_targets, labels = match_batch(gt_boxes_list, gt_labels_list, priors)  # (B, P, 4), (B, P)
"""
from __future__ import annotations

import torch
from torch import Tensor

from .boxes import DEFAULT_VARIANCES, box_iou, cxcywh_to_xyxy, encode, validate_boxes

__all__ = ["match", "match_batch", "match_ious"]


def _check_gt(gt_boxes: Tensor, gt_labels: Tensor, where: str = "") -> None:
    validate_boxes(f"gt_boxes{where}", gt_boxes)
    if gt_boxes.ndim != 2:
        raise ValueError(f"gt_boxes{where} must have shape (G, 4); got {tuple(gt_boxes.shape)}")
    area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    if (area <= 0).any():
        raise ValueError(
            f"gt_boxes{where} has a box with zero area ({gt_boxes[area <= 0][0].tolist()}); its offsets would be "
            "log(0) = -inf and the loss NaN. Drop degenerate boxes before matching."
        )
    if gt_labels.ndim != 1 or gt_labels.shape[0] != gt_boxes.shape[0]:
        raise ValueError(
            f"gt_labels{where} must have shape (G,) with G = {gt_boxes.shape[0]} (one label per box); "
            f"got {tuple(gt_labels.shape)}"
        )
    if gt_labels.is_floating_point():
        raise TypeError(f"gt_labels{where} must be an integer tensor (int64), got {gt_labels.dtype}")
    if gt_labels.numel() and int(gt_labels.min()) < 1:
        raise ValueError(
            f"gt_labels{where} must be in 1..C: label 0 is background. "
            "If your labels start at 0, add 1 (datasets in ssd_lib.data already do)."
        )


def match_ious(iou: Tensor, valid: Tensor, iou_threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """The two-step rule on a precomputed IoU matrix, for a whole batch at once.

    ``iou: (B, G, P)`` IoU of each (padded) object with each default box; ``valid: (B, G)`` bool,
    False on padding rows. Returns ``matched_idx (B, P)`` int64 (the object each default box is
    assigned to; meaningless where background) and ``positive (B, P)`` bool.
    """
    B, G, P = iou.shape
    iou = iou.masked_fill(~valid.unsqueeze(-1), -1.0)  # padding rows never win
    if G == 0:
        return (torch.zeros(B, P, dtype=torch.long, device=iou.device),
                torch.zeros(B, P, dtype=torch.bool, device=iou.device))
    # Step 2 first (it is overwritten by step 1): each default box's best object.
    best_iou, matched_idx = iou.max(dim=1)  # (B, P)
    positive = best_iou > iou_threshold
    # Step 1, forced match: each real object's best default box, whatever its IoU.
    best_prior = iou.argmax(dim=2)  # (B, G)
    batch_idx = torch.arange(B, device=iou.device).unsqueeze(1).expand(B, G)
    obj_idx = torch.arange(G, device=iou.device).unsqueeze(0).expand(B, G)
    # Objects are written in increasing index, so if two objects share a best default box
    # the later one keeps it (the released code's behaviour). Padding rows are skipped.
    b, g = batch_idx[valid], obj_idx[valid]
    p = best_prior[valid]
    matched_idx = matched_idx.index_put((b, p), g)
    positive = positive.index_put((b, p), torch.ones_like(p, dtype=torch.bool))
    return matched_idx, positive


def match(
    gt_boxes: Tensor, gt_labels: Tensor, priors_cxcywh: Tensor, iou_threshold: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Assign ground truth to the default boxes of one image.

    ``gt_boxes: (G, 4) xyxy in [0, 1]``, ``gt_labels: (G,) int64 in 1..C``,
    ``priors_cxcywh: (P, 4)``. Returns ``matched_boxes (P, 4) xyxy`` (the object each default box
    regresses to; background rows hold the default box itself, so their offsets encode to 0)
    and ``labels (P,) int64`` (0 = background). An image with no objects gives all background.
    """
    _check_gt(gt_boxes, gt_labels)
    boxes, labels = _assign([gt_boxes], [gt_labels], priors_cxcywh, iou_threshold)
    return boxes[0], labels[0]


def _assign(gt_boxes: list[Tensor], gt_labels: list[Tensor], priors_cxcywh: Tensor, iou_threshold: float):
    """Batched core of :func:`match`: ``(B, P, 4)`` matched xyxy boxes and ``(B, P)`` labels."""
    device, B, P = priors_cxcywh.device, len(gt_boxes), priors_cxcywh.shape[0]
    G = max((b.shape[0] for b in gt_boxes), default=0)
    priors_xyxy = cxcywh_to_xyxy(priors_cxcywh)
    if G == 0:
        return priors_xyxy.expand(B, P, 4).clone(), torch.zeros(B, P, dtype=torch.long, device=device)
    # Pad objects to G per image; this loop over images only copies (cheap), the matching is batched.
    gt_padded = priors_cxcywh.new_zeros(B, G, 4)
    labels_padded = torch.zeros(B, G, dtype=torch.long, device=device)
    valid = torch.zeros(B, G, dtype=torch.bool, device=device)
    for i, (b, l) in enumerate(zip(gt_boxes, gt_labels)):
        n = b.shape[0]
        gt_padded[i, :n] = b.to(device=device, dtype=gt_padded.dtype)
        labels_padded[i, :n] = l.to(device)
        valid[i, :n] = True
    iou = box_iou(gt_padded.reshape(-1, 4), priors_xyxy).reshape(B, G, P)  # one call for the batch
    matched_idx, positive = match_ious(iou, valid, iou_threshold)
    boxes = torch.gather(gt_padded, 1, matched_idx.unsqueeze(-1).expand(B, P, 4))
    boxes = torch.where(positive.unsqueeze(-1), boxes, priors_xyxy.expand(B, P, 4))
    labels = torch.where(positive, torch.gather(labels_padded, 1, matched_idx), 0)
    return boxes, labels


def match_batch(
    gt_boxes: list[Tensor],
    gt_labels: list[Tensor],
    priors_cxcywh: Tensor,
    iou_threshold: float = 0.5,
    variances: tuple[float, float] = DEFAULT_VARIANCES,
) -> tuple[Tensor, Tensor]:
    """Targets for a whole batch at once: no Python loop over default boxes or objects.

    ``gt_boxes``: B tensors ``(G_b, 4) xyxy in [0, 1]``; ``gt_labels``: B tensors ``(G_b,)``;
    ``priors_cxcywh: (P, 4)`` on the device where the work should happen. Objects are padded to
    the largest G in the batch and all IoUs are computed in one call.
    Returns ``loc_targets (B, P, 4)`` (encoded offsets, :func:`ssd_lib.boxes.encode`; 0 on
    background) and ``labels (B, P)`` int64, 0 = background.
    """
    if len(gt_boxes) != len(gt_labels):
        raise ValueError(f"gt_boxes has {len(gt_boxes)} images but gt_labels has {len(gt_labels)}")
    for i, (b, l) in enumerate(zip(gt_boxes, gt_labels)):
        _check_gt(b, l, where=f"[{i}]")
    boxes, labels = _assign(gt_boxes, gt_labels, priors_cxcywh, iou_threshold)
    return encode(boxes, priors_cxcywh, variances), labels
