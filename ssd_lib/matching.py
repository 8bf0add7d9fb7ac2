"""Matching default boxes to ground truth (paper Sec. 2.2, "Matching strategy").

Two steps, both needed:
  1. forced match: every object takes the default box that overlaps it most, even when that
     IoU is below the threshold, so that no object is left without a default box (when two objects
     share their best default box, the one listed later keeps it: see :func:`match_ious`);
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

from .boxes import DEFAULT_VARIANCES, cxcywh_to_xyxy, encode, validate_boxes

__all__ = ["match", "match_batch", "match_ious", "pairwise_iou"]


def _check_gt(gt_boxes: Tensor, gt_labels: Tensor, where: str = "") -> None:
    """The public matchers' checks of one image's objects. Each ``if`` on a tensor reads it back from
    the device (on a GPU, a wait per check per image): the trainer checks its CPU batch once instead."""
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


def pairwise_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """IoU of every pair, ``(N, 4) xyxy`` x ``(M, 4) xyxy`` -> ``(N, M)``, without input checks.

    The same numbers as ``torchvision.ops.box_iou`` (tested), computed coordinate by coordinate with
    in-place steps: it allocates about a third of the temporaries, which makes it 1.6x faster on
    the (objects x 8732) matrices of matching (14 ms instead of 24 ms for 316 objects, one thread).
    """
    ax1, ay1, ax2, ay2 = boxes_a.unsqueeze(-1).unbind(-2)  # (N, 1) each
    bx1, by1, bx2, by2 = boxes_b.unbind(-1)  # (M,) each
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp_(min=0)
    inter.mul_((torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp_(min=0))
    union = ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1)).sub_(inter)
    return inter.div_(union)


def match_ious(iou: Tensor, valid: Tensor | None = None, iou_threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """The two-step rule on a precomputed IoU matrix: the one place where it is written.

    ``iou: (B, G, P)`` IoU of each (padded) object with each default box; ``valid: (B, G)`` bool,
    False on padding rows (None: every row is a real object). Returns ``matched_idx (B, P)`` int64
    (the object each default box is assigned to; meaningless where background) and
    ``positive (B, P)`` bool.
    """
    B, G, P = iou.shape
    if G == 0:
        return (torch.zeros(B, P, dtype=torch.long, device=iou.device),
                torch.zeros(B, P, dtype=torch.bool, device=iou.device))
    if valid is not None:
        iou = iou.masked_fill(~valid.unsqueeze(-1), -1.0)  # padding rows never win
    # Step 2 first (it is overwritten by step 1): each default box's best object.
    best_iou, matched_idx = iou.max(dim=1)  # (B, P)
    positive = best_iou > iou_threshold
    # Step 1, forced match: each real object's best default box, whatever its IoU.
    best_prior = iou.argmax(dim=2)  # (B, G)
    # The tie rule, defined: when several objects share a best default box, the object listed LAST
    # keeps it (the released code writes the objects in order, so its last write wins). A scatter with
    # "amax" over the object index says so exactly; writing with repeated indices (index_put) would
    # leave the winner to the backend. Padding rows scatter -1, which never wins.
    obj_idx = torch.arange(G, device=iou.device).expand(B, G)
    if valid is not None:
        obj_idx = obj_idx.masked_fill(~valid, -1)
    forced = torch.full((B, P), -1, dtype=torch.long, device=iou.device)
    forced.scatter_reduce_(1, best_prior, obj_idx, reduce="amax")
    is_forced = forced >= 0
    matched_idx = torch.where(is_forced, forced, matched_idx)
    positive = positive | is_forced
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
    matched_idx, positive, gt_padded, labels_padded = _assign([gt_boxes], [gt_labels], priors_cxcywh, iou_threshold)
    P = priors_cxcywh.shape[0]
    boxes = torch.where(positive[0].unsqueeze(-1), gt_padded[0][matched_idx[0]], cxcywh_to_xyxy(priors_cxcywh))
    labels = torch.where(positive[0], labels_padded[0][matched_idx[0]], 0)
    return boxes.reshape(P, 4), labels


def _assign(gt_boxes: list[Tensor], gt_labels: list[Tensor], priors_cxcywh: Tensor, iou_threshold: float,
            per_image: bool | None = None):
    """Batched core of :func:`match`: ``(B, P)`` index of the assigned object in each image's list,
    ``(B, P)`` positive mask, and the objects padded to ``(B, G, 4)`` boxes and ``(B, G)`` labels.
    ``per_image`` (default: on a CPU) computes the IoU image by image; both ways give the same result."""
    device, B, P = priors_cxcywh.device, len(gt_boxes), priors_cxcywh.shape[0]
    G = max((b.shape[0] for b in gt_boxes), default=0)
    priors_xyxy = cxcywh_to_xyxy(priors_cxcywh)
    # Pad objects to G per image; this loop over images only copies (cheap).
    gt_padded = priors_cxcywh.new_zeros(B, max(G, 1), 4)
    labels_padded = torch.zeros(B, max(G, 1), dtype=torch.long, device=device)
    valid = torch.zeros(B, max(G, 1), dtype=torch.bool, device=device)
    for i, (b, l) in enumerate(zip(gt_boxes, gt_labels)):
        n = b.shape[0]
        gt_padded[i, :n] = b.to(device=device, dtype=gt_padded.dtype)
        labels_padded[i, :n] = l.to(device)
        valid[i, :n] = True
    if G == 0:
        zeros = torch.zeros(B, P, dtype=torch.long, device=device)
        return zeros, zeros.bool(), gt_padded, labels_padded
    if per_image if per_image is not None else device.type == "cpu":
        # On a CPU, one image at a time: its (G_b, P) IoU matrix stays in cache for the two
        # reductions, and no work is spent on padding rows (measured: 22 ms instead of 35 ms for
        # 32 images x 8732 default boxes, 1-20 objects each; see benchmarks/RESULTS.md).
        matched_idx = torch.zeros(B, P, dtype=torch.long, device=device)
        positive = torch.zeros(B, P, dtype=torch.bool, device=device)
        for i, b in enumerate(gt_boxes):
            n = b.shape[0]
            if n:  # the same rule, on this image's objects only (no padding rows)
                iou = pairwise_iou(gt_padded[i, :n], priors_xyxy)  # (G_b, P)
                matched_idx[i], positive[i] = (t[0] for t in match_ious(iou[None], None, iou_threshold))
    else:
        # On a GPU, one IoU call and one matching call for the whole batch.
        iou = pairwise_iou(gt_padded.reshape(-1, 4), priors_xyxy).reshape(B, G, P)
        matched_idx, positive = match_ious(iou, valid, iou_threshold)
    return matched_idx, positive, gt_padded, labels_padded


def match_batch(
    gt_boxes: list[Tensor],
    gt_labels: list[Tensor],
    priors_cxcywh: Tensor,
    iou_threshold: float = 0.5,
    variances: tuple[float, float] = DEFAULT_VARIANCES,
    validate: bool = True,
) -> tuple[Tensor, Tensor]:
    """Targets for a whole batch at once: no Python loop over default boxes or objects.

    ``gt_boxes``: B tensors ``(G_b, 4) xyxy in [0, 1]``; ``gt_labels``: B tensors ``(G_b,)``;
    ``priors_cxcywh: (P, 4)`` on the device where the work should happen. Objects are padded to
    the largest G in the batch; on a GPU all IoUs are computed in one call, on a CPU image by image
    (faster there, see ``_assign``).
    Returns ``loc_targets (B, P, 4)`` (encoded offsets, :func:`ssd_lib.boxes.encode`; 0 on
    background) and ``labels (B, P)`` int64, 0 = background.
    ``validate=False`` skips the per-image checks of boxes and labels (each reads values back from
    the device): for a caller that checked the batch once already, as the trainer does with
    :func:`ssd_lib.train.check_targets` on the CPU batch.
    """
    if len(gt_boxes) != len(gt_labels):
        raise ValueError(f"gt_boxes has {len(gt_boxes)} images but gt_labels has {len(gt_labels)}")
    if validate:
        for i, (b, l) in enumerate(zip(gt_boxes, gt_labels)):
            _check_gt(b, l, where=f"[{i}]")
    matched_idx, positive, gt_padded, labels_padded = _assign(gt_boxes, gt_labels, priors_cxcywh, iou_threshold)
    # nonzero's output size depends on the data, so on a GPU this line waits for the matching to finish.
    b, p = positive.nonzero(as_tuple=True)
    obj = matched_idx[b, p]
    labels = torch.zeros_like(matched_idx)
    labels[b, p] = labels_padded[b, obj]
    # Offsets only where they are used (positives); background stays 0, as encode(prior, prior) would give.
    loc_targets = priors_cxcywh.new_zeros(positive.shape[0], priors_cxcywh.shape[0], 4)
    loc_targets[b, p] = encode(gt_padded[b, obj], priors_cxcywh[p], variances)
    return loc_targets, labels
