"""From raw network outputs to detections (paper Sec. 3, "Inference"): decode the offsets, turn
logits into class probabilities, drop low scores, run non-maximum suppression per class, keep the
best ``top_k`` per image.

Only the best-scoring candidates of each image go through NMS. Greedy NMS decides a box using only
the higher-scoring boxes of its class, so running it on the ``m`` best candidates of an image
(all classes together) gives exactly the decisions a full run would give for those ``m``; if that
already keeps ``top_k`` boxes, no lower-scoring box can enter the output and the rest is never
looked at. An untrained network's image has 8,000 candidates (20 classes x 400) but needs only a
few hundred of them; ``m`` doubles in the rare image where that is not enough.

Usage::

    from ssd_lib.detect import detect
    loc, logits = model(images)
    dets = detect(loc, logits, model.priors)   # list of {"boxes" (D,4) xyxy in [0,1], "scores", "labels"}
"""
from __future__ import annotations

from functools import partial

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from .boxes import DEFAULT_VARIANCES, decode

__all__ = ["detect", "detect_decoded", "scale_detections",
           "SCORE_THRESHOLD", "NMS_THRESHOLD", "TOP_K", "PRE_NMS_TOP_K"]

# The inference settings of the paper (Sec. 3.7) and its released code, defined here once and used by
# every path (detect, ssd_lib.evaluate.predict, ssd_lib.export). Released code (VOC): "Inference:
# confidence threshold 0.01, per-class NMS with IoU 0.45, keep the top 200 detections per image".
SCORE_THRESHOLD: float = 0.01  # a class score must exceed this to be a candidate
NMS_THRESHOLD: float = 0.45    # per-class NMS drops a box whose IoU with a better one exceeds this
TOP_K: int = 200               # detections kept per image
# Candidates per class and image that enter NMS: torchvision's ``SSD(topk_candidates=400)`` (its
# ssd300_vgg16); it bounds the NMS work of an untrained model whose scores all pass the threshold.
PRE_NMS_TOP_K: int = 400


def detect(
    loc: Tensor,
    logits: Tensor,
    priors_cxcywh: Tensor,
    score_threshold: float = SCORE_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    top_k: int = TOP_K,
    pre_nms_top_k: int = PRE_NMS_TOP_K,
    variances: tuple[float, float] = DEFAULT_VARIANCES,
) -> list[dict[str, Tensor]]:
    """Detections for every image of a batch.

    ``loc: (B, P, 4)`` offsets, ``logits: (B, P, C)`` (class 0 = background), ``priors_cxcywh: (P, 4)``.
    Defaults: the released VOC model's settings (:data:`SCORE_THRESHOLD` 0.01, :data:`NMS_THRESHOLD`
    0.45, :data:`TOP_K` 200 per image). ``pre_nms_top_k`` (:data:`PRE_NMS_TOP_K`, torchvision's 400)
    keeps the best candidates per class and image before NMS, which bounds the NMS work of an
    untrained model whose scores all pass the threshold.
    Returns B dicts with ``boxes (D, 4)`` xyxy clipped to [0, 1], ``scores (D,)`` and
    ``labels (D,)`` int64 in 1..C-1, sorted by descending score. The same detections as
    torchvision's ``SSD.postprocess_detections`` with the same settings.
    """
    if loc.ndim != 3 or logits.ndim != 3 or loc.shape[:2] != logits.shape[:2] or loc.shape[-1] != 4:
        raise ValueError(f"need loc (B, P, 4) and logits (B, P, C) with the same B, P; got {tuple(loc.shape)}, {tuple(logits.shape)}")
    if priors_cxcywh.shape != (loc.shape[1], 4):
        raise ValueError(
            f"priors_cxcywh must be ({loc.shape[1]}, 4) to match the predictions; got {tuple(priors_cxcywh.shape)} "
            "(use model.priors of the model that produced loc and logits)"
        )
    probs = logits.float().softmax(dim=-1)
    priors = priors_cxcywh.float()

    def boxes_of(i: int, prior_idx: Tensor) -> Tensor:  # decode only the candidates
        return decode(loc[i, prior_idx].float(), priors[prior_idx], variances).clamp(0.0, 1.0)

    return _select(probs, boxes_of, score_threshold, nms_threshold, top_k, pre_nms_top_k)


def detect_decoded(
    boxes: Tensor,
    probs: Tensor,
    score_threshold: float = SCORE_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    top_k: int = TOP_K,
    pre_nms_top_k: int = PRE_NMS_TOP_K,
) -> list[dict[str, Tensor]]:
    """:func:`detect` for outputs that are already decoded (an exported graph that decodes itself):
    ``boxes (B, P, 4)`` xyxy in [0, 1] and ``probs (B, P, C)`` softmax probabilities. The same
    selection, so both give the same detections."""
    if boxes.ndim != 3 or probs.ndim != 3 or boxes.shape[:2] != probs.shape[:2] or boxes.shape[-1] != 4:
        raise ValueError(f"need boxes (B, P, 4) and probs (B, P, C) with the same B, P; got {tuple(boxes.shape)}, {tuple(probs.shape)}")
    return _select(probs.float(), lambda i, prior_idx: boxes[i, prior_idx].float(), score_threshold, nms_threshold,
                   top_k, pre_nms_top_k)


def _select(probs: Tensor, boxes_of, score_threshold: float, nms_threshold: float, top_k: int,
            pre_nms_top_k: int) -> list[dict[str, Tensor]]:
    """Score threshold, per-class NMS and top-k of every image. ``probs (B, P, C)``; ``boxes_of(i,
    prior_idx)`` gives image i's boxes (xyxy in [0, 1]) at those default boxes."""
    B, P, C = probs.shape
    # (B, P * (C-1)) class probabilities, background dropped; entry p * (C-1) + c - 1 is class c at box p.
    scores = probs[..., 1:].reshape(B, -1)
    total = scores.shape[1]
    m = min(2 * top_k, total)  # enough for nearly every image; doubled below where not
    top_scores, top_idx = scores.topk(m, dim=1)  # (B, m), best first
    passing = (top_scores > score_threshold).sum(dim=1).tolist()
    out = []
    for i in range(B):  # a loop over images: NMS and top-k are per image
        size, n, s, idx = m, passing[i], top_scores[i], top_idx[i]
        while True:
            det, classes_full = _nms_prefix(s[:n], idx[:n], partial(boxes_of, i), C, nms_threshold, pre_nms_top_k)
            # Done when no candidate outside the prefix can enter: every one above the threshold was
            # in it, or every class already has its pre_nms_top_k best.
            seen_all = n < size or size == total or classes_full == C - 1
            if det["scores"].numel() >= top_k or seen_all:
                break
            size = min(2 * size, total)
            s, idx = scores[i].topk(size)
            n = int((s > score_threshold).sum())
        out.append({key: value[:top_k] for key, value in det.items()})
    return out


def _nms_prefix(scores: Tensor, idx: Tensor, boxes_of, C: int, nms_threshold: float,
                pre_nms_top_k: int) -> tuple[dict[str, Tensor], int]:
    """Class-wise NMS of one image's best candidates ``scores (n,)`` (descending) at flat indices
    ``idx``; also returns how many classes have their ``pre_nms_top_k`` candidates in the prefix."""
    prior_idx, labels = idx // (C - 1), idx % (C - 1) + 1
    classes_full = 0
    if scores.numel() >= pre_nms_top_k:
        # At most pre_nms_top_k candidates per class: a candidate's rank within its class counts the
        # better ones of that class, all of which are in this prefix.
        one_hot = torch.nn.functional.one_hot(labels - 1, C - 1)
        class_rank = (one_hot.cumsum(dim=0) * one_hot).sum(dim=1) - 1
        keep = class_rank < pre_nms_top_k
        classes_full = int((one_hot.sum(dim=0) >= pre_nms_top_k).sum())
        scores, prior_idx, labels = scores[keep], prior_idx[keep], labels[keep]
    boxes = boxes_of(prior_idx)
    kept = batched_nms(boxes, scores, labels, nms_threshold)  # sorted by score
    return {"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]}, classes_full


def scale_detections(detections: list[dict[str, Tensor]], sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
    """Normalised boxes to pixels: ``sizes[i] = (height, width)`` of image i. Returns new dicts."""
    if len(detections) != len(sizes):
        raise ValueError(f"got {len(detections)} detections but {len(sizes)} image sizes")
    out = []
    for det, (h, w) in zip(detections, sizes):
        scale = det["boxes"].new_tensor([w, h, w, h])
        out.append({**det, "boxes": det["boxes"] * scale})
    return out
