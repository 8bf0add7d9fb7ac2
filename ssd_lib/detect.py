"""From raw network outputs to detections (paper Sec. 3, "Inference"): decode the offsets, turn
logits into class probabilities, drop low scores, run non-maximum suppression per class, keep the
best ``top_k`` per image. The whole batch goes through one ``torchvision.ops.batched_nms`` call.

Usage::

    from ssd_lib.detect import detect
    loc, logits = model(images)
    dets = detect(loc, logits, model.priors)   # list of {"boxes" (D,4) xyxy in [0,1], "scores", "labels"}
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from .boxes import DEFAULT_VARIANCES, decode

__all__ = ["detect", "scale_detections"]


def detect(
    loc: Tensor,
    logits: Tensor,
    priors_cxcywh: Tensor,
    score_threshold: float = 0.01,
    nms_threshold: float = 0.45,
    top_k: int = 200,
    pre_nms_top_k: int = 400,
    variances: tuple[float, float] = DEFAULT_VARIANCES,
) -> list[dict[str, Tensor]]:
    """Detections for every image of a batch.

    ``loc: (B, P, 4)`` offsets, ``logits: (B, P, C)`` (class 0 = background), ``priors_cxcywh: (P, 4)``.
    Settings of the released VOC model: score > 0.01, NMS IoU 0.45, 200 per image. ``pre_nms_top_k``
    keeps the best candidates per class and image before NMS (torchvision: 400), which bounds the
    NMS work of an untrained model whose scores all pass the threshold.
    Returns B dicts with ``boxes (D, 4)`` xyxy clipped to [0, 1], ``scores (D,)`` and
    ``labels (D,)`` int64 in 1..C-1, sorted by descending score.
    """
    if loc.ndim != 3 or logits.ndim != 3 or loc.shape[:2] != logits.shape[:2] or loc.shape[-1] != 4:
        raise ValueError(f"need loc (B, P, 4) and logits (B, P, C) with the same B, P; got {tuple(loc.shape)}, {tuple(logits.shape)}")
    if priors_cxcywh.shape != (loc.shape[1], 4):
        raise ValueError(
            f"priors_cxcywh must be ({loc.shape[1]}, 4) to match the predictions; got {tuple(priors_cxcywh.shape)} "
            "(use model.priors of the model that produced loc and logits)"
        )
    B, P, C = logits.shape
    boxes = decode(loc.float(), priors_cxcywh.float(), variances).clamp(0.0, 1.0)  # (B, P, 4)
    scores = logits.float().softmax(dim=-1)[..., 1:].transpose(1, 2)  # (B, C-1, P), background dropped
    k = min(pre_nms_top_k, P)
    top_scores, top_idx = scores.topk(k, dim=2)  # (B, C-1, k), sorted per (image, class)
    keep = top_scores > score_threshold
    image_idx = torch.arange(B, device=loc.device).view(B, 1, 1).expand_as(top_idx)[keep]
    labels = torch.arange(1, C, device=loc.device).view(1, C - 1, 1).expand_as(top_idx)[keep]
    cand_scores = top_scores[keep]
    cand_boxes = boxes[image_idx, top_idx[keep]]
    # One NMS for the whole batch: a box only suppresses boxes of the same image and class.
    kept = batched_nms(cand_boxes, cand_scores, image_idx * C + labels, nms_threshold)  # sorted by score
    # top_k per image: stable sort by image keeps the score order inside each image.
    kept = kept[torch.sort(image_idx[kept], stable=True).indices]
    img_of_kept = image_idx[kept]
    counts = torch.bincount(img_of_kept, minlength=B)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(kept.numel(), device=loc.device) - starts[img_of_kept]
    kept = kept[rank < top_k]
    sizes = torch.bincount(image_idx[kept], minlength=B).tolist()
    return [
        {"boxes": b, "scores": s, "labels": l}
        for b, s, l in zip(cand_boxes[kept].split(sizes), cand_scores[kept].split(sizes), labels[kept].split(sizes))
    ]


def scale_detections(detections: list[dict[str, Tensor]], sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
    """Normalised boxes to pixels: ``sizes[i] = (height, width)`` of image i. Returns new dicts."""
    if len(detections) != len(sizes):
        raise ValueError(f"got {len(detections)} detections but {len(sizes)} image sizes")
    out = []
    for det, (h, w) in zip(detections, sizes):
        scale = det["boxes"].new_tensor([w, h, w, h])
        out.append({**det, "boxes": det["boxes"] * scale})
    return out
