"""Lesson 11's lab: the broken pieces it hands out, each named after its bug.

Each broken piece is a mistake that public SSD reproductions made or that their issue trackers
report: priors clamped in (cx, cy, w, h), variances applied twice or dropped in decode, labels not
shifted for background, ``num_classes`` without background, plain L1 called smooth L1, hard
negative mining that ranks positives or counts per batch, mAP averaged over classes without ground
truth, boxes of zero width kept, and a large learning rate without warm-up. Each has the signature
of the piece it breaks, and its fixed twin is the library's own function
(:data:`BROKEN_PIECES` pairs them), so the checker of the fixed piece fails it (tested in
``tests/test_checks.py``) and its symptom can be shown (``tests/test_lab.py``).

Usage::

    from ssd_lib.course import lab
    piece = lab.BROKEN_PIECES[0]
    piece.function, piece.fixed, piece.checker     # the bug, the library's twin, its checker
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssd_lib.boxes import DEFAULT_VARIANCES, cxcywh_to_xyxy, decode, encode
from ssd_lib.data.common import labels_from_names, num_classes_for, sanitize_boxes
from ssd_lib.loss import hard_negative_mask
from ssd_lib.matching import match_ious, pairwise_iou
from ssd_lib.metrics import mean_average_precision
from ssd_lib.priors import clip_priors
from ssd_lib.train import TrainConfig, lr_factor

__all__ = [
    "lr_at", "targets_without_checks", "BrokenPiece", "BROKEN_PIECES",
    "clip_priors_in_cxcywh", "decode_variances_applied_twice", "decode_without_variances",
    "labels_not_shifted_for_background", "num_classes_without_background", "smooth_l1_that_is_plain_l1",
    "hard_negative_mask_ranks_positives", "hard_negative_mask_per_batch", "mean_ap_over_classes_without_gt",
    "sanitize_boxes_keeps_degenerate", "lr_at_without_warmup", "train_config_without_warmup",
]


# ---------------------------------------------------------------------------------------------
# The lab's own pieces: the lr schedule in the exercise's signature, targets with no checks
# ---------------------------------------------------------------------------------------------


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps`` then cosine decay (``ssd_lib.train.lr_factor``)."""
    return base_lr * lr_factor(step, total_steps, TrainConfig(schedule="cosine", warmup_steps=warmup_steps))


def targets_without_checks(gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor], priors_cxcywh: Tensor,
                           iou_threshold: float = 0.5,
                           variances: tuple[float, float] = DEFAULT_VARIANCES) -> tuple[Tensor, Tensor]:
    """Matching and encoding as many reproductions write them, with nothing checked.

    Same rule as :func:`ssd_lib.matching.match_batch`, but no validation of the boxes or labels and
    the paper's ``log(g_w / d_w)`` with no floor, so a box of zero width gives an infinite target and
    a label 0 silently becomes background. For showing symptoms; train with ``match_batch``.
    Returns ``loc_targets (B, P, 4)`` and ``labels (B, P)``.
    """
    priors_xyxy = cxcywh_to_xyxy(priors_cxcywh)
    P = priors_cxcywh.shape[0]
    all_offsets, all_labels = [], []
    for boxes, labels in zip(gt_boxes, gt_labels):  # a loop over images: a demonstration, not a hot path
        if len(boxes) == 0:
            all_offsets.append(priors_cxcywh.new_zeros(P, 4)), all_labels.append(torch.zeros(P, dtype=torch.long))
            continue
        iou = pairwise_iou(boxes.float(), priors_xyxy)[None]  # (1, G, P)
        matched_idx, positive = (t[0] for t in match_ious(iou, None, iou_threshold))  # the library's rule
        offsets = encode(boxes.float()[matched_idx], priors_cxcywh, variances, floor_sizes=False)  # log(0) = -inf
        all_offsets.append(torch.where(positive[:, None], offsets, torch.zeros_like(offsets)))
        all_labels.append(torch.where(positive, labels.long()[matched_idx], 0))
    return torch.stack(all_offsets), torch.stack(all_labels)


# ---------------------------------------------------------------------------------------------
# The broken pieces: each the signature of the piece it breaks, named after its bug
# ---------------------------------------------------------------------------------------------


def clip_priors_in_cxcywh(priors_cxcywh: Tensor) -> Tensor:
    """BUG: clamps (cx, cy, w, h) to [0, 1] instead of the corners (a popular PyTorch port's PriorBox
    did ``output.clamp_(max=1, min=0)``). Boxes at the border still stick out; boxes wider than the
    image become width 1 around an unchanged centre."""
    return priors_cxcywh.clamp(0.0, 1.0)


def decode_variances_applied_twice(offsets: Tensor, priors_cxcywh: Tensor,
                                   variances: tuple[float, float] = DEFAULT_VARIANCES) -> Tensor:
    """BUG: the offsets are scaled by the variances before a decode that scales them again (the head
    multiplied them, then the post-processing did too). Every box snaps back towards its prior."""
    scale = offsets.new_tensor([variances[0], variances[0], variances[1], variances[1]])
    return decode(offsets * scale, priors_cxcywh, variances)


def decode_without_variances(offsets: Tensor, priors_cxcywh: Tensor,
                             variances: tuple[float, float] = DEFAULT_VARIANCES) -> Tensor:
    """BUG: decodes with the paper's formula and forgets the variances that encode divided by:
    every correction is 5 to 10 times too large."""
    return decode(offsets, priors_cxcywh, (1.0, 1.0))


def labels_not_shifted_for_background(names: Sequence[str], classes: Sequence[str]) -> Tensor:
    """BUG: ``classes.index(name)`` as the label: the first class gets 0, which SSD reads as background,
    so its objects are trained to be background (and the last label C-1 is never used)."""
    return torch.tensor([list(classes).index(name) for name in names], dtype=torch.long)


def num_classes_without_background(classes: Sequence[str]) -> int:
    """BUG: ``num_classes = len(classes)``: the last class's label is out of range for the logits
    (a device-side assert on CUDA, an IndexError in cross-entropy on the CPU)."""
    return len(classes)


def smooth_l1_that_is_plain_l1(x: Tensor) -> Tensor:
    """BUG: called smooth L1, computes |x| (a popular tutorial used ``nn.L1Loss`` here): the gradient
    stays +-1 at the target, so box offsets jitter around it instead of settling."""
    return x.abs()


def hard_negative_mask_ranks_positives(conf_loss: Tensor, positive: Tensor, neg_pos_ratio: float = 3.0) -> Tensor:
    """BUG: ranks every box, positives included (the line that sets the positives' loss aside was
    lost, or applied to a tensor of another shape): when positives have the highest losses (early in
    training) they take the places of the hardest negatives."""
    loss = conf_loss.detach()
    num_pos = positive.sum(dim=1, keepdim=True)
    num_neg = torch.clamp(neg_pos_ratio * num_pos, max=positive.shape[1] - num_pos).long()
    rank = loss.argsort(dim=1, descending=True).argsort(dim=1)
    return rank < num_neg


def hard_negative_mask_per_batch(conf_loss: Tensor, positive: Tensor, neg_pos_ratio: float = 3.0) -> Tensor:
    """BUG: counts and ranks over the whole batch instead of per image: an image without objects
    still gives negatives, and the images with the hardest background take everyone's share."""
    loss = conf_loss.detach().masked_fill(positive, float("-inf")).flatten()
    num_neg = int(min(neg_pos_ratio * int(positive.sum()), int((~positive).sum())))
    rank = loss.argsort(descending=True).argsort()
    return (rank < num_neg).view_as(positive)


def mean_ap_over_classes_without_gt(ap: Sequence[float], num_gt: Sequence[int]) -> float:
    """BUG: averages over every class, counting a class without ground truth as AP 0 (NaN turned into
    0): the same detector scores lower on a test subset that lacks a class."""
    return float(np.nan_to_num(np.asarray(ap, dtype=np.float64), nan=0.0).mean())


def sanitize_boxes_keeps_degenerate(boxes: Tensor, labels: Tensor, width: float, height: float) -> tuple[Tensor, Tensor]:
    """BUG: clips the boxes to the image but keeps them all: a box outside the image (or annotated with
    x2 <= x1) is left with zero or negative width, and log(w) makes the loss infinite or NaN."""
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
    return clipped, labels.clone()


def lr_at_without_warmup(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    """BUG: ignores ``warmup_steps``: the first steps, where the gradients of a fresh network are at
    their largest, get the full learning rate."""
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(step / max(total_steps, 1), 1.0)))


def train_config_without_warmup(**overrides: Any) -> TrainConfig:
    """BUG: the course's CPU recipe with a 20x larger, constant learning rate (0.1), no warm-up and no
    gradient clipping: the loss jumps several-fold in the first steps (the fix: ``warmup_steps=20``,
    after which the same lr does no harm). ``overrides`` as for ``TrainConfig``."""
    base = TrainConfig.small_cpu(lr=0.1, warmup_steps=0, grad_clip=None, schedule="multistep", milestones=())
    return replace(base, **overrides)


@dataclass(frozen=True)
class BrokenPiece:
    """One broken piece of the lab: the function, its bug, the fixed piece and the checker that tells them apart."""

    name: str
    function: Callable
    bug: str
    symptom: str
    fixed: Callable
    checker: str  # name of the function in ssd_lib.course.checks


BROKEN_PIECES: tuple[BrokenPiece, ...] = (
    BrokenPiece("clip_priors_in_cxcywh", clip_priors_in_cxcywh, "priors clamped in (cx, cy, w, h) instead of corners",
                "clipped default boxes still stick out of the image", clip_priors, "check_clip_priors"),
    BrokenPiece("decode_variances_applied_twice", decode_variances_applied_twice, "variances applied twice in decode",
                "detections collapse onto their default boxes", decode, "check_decode"),
    BrokenPiece("decode_without_variances", decode_without_variances, "variances dropped in decode",
                "detections overshoot: boxes far too large and shifted", decode, "check_decode"),
    BrokenPiece("labels_not_shifted_for_background", labels_not_shifted_for_background,
                "labels not shifted for background (class 0)", "the first class is trained as background",
                labels_from_names, "check_labels_from_names"),
    BrokenPiece("num_classes_without_background", num_classes_without_background, "num_classes without background",
                "cross-entropy fails: target out of bounds (a device-side assert on CUDA)", num_classes_for,
                "check_num_classes"),
    BrokenPiece("smooth_l1_that_is_plain_l1", smooth_l1_that_is_plain_l1, "plain L1 where smooth L1 is meant",
                "offsets jitter around their target instead of settling",
                lambda x: F.smooth_l1_loss(x, torch.zeros_like(x), reduction="none"),
                "check_smooth_l1"),
    BrokenPiece("hard_negative_mask_ranks_positives", hard_negative_mask_ranks_positives,
                "hard negative mining ranks the positives too", "fewer negatives than 3 per positive",
                hard_negative_mask, "check_hard_negative_mining"),
    BrokenPiece("hard_negative_mask_per_batch", hard_negative_mask_per_batch,
                "hard negatives capped per batch instead of per image", "an image without objects gives negatives",
                hard_negative_mask, "check_hard_negative_mining"),
    BrokenPiece("mean_ap_over_classes_without_gt", mean_ap_over_classes_without_gt,
                "mAP averaged over classes without ground truth", "a perfect detector scores below 1",
                mean_average_precision, "check_mean_average_precision"),
    BrokenPiece("sanitize_boxes_keeps_degenerate", sanitize_boxes_keeps_degenerate,
                "degenerate boxes (x2 <= x1) kept", "the loss is infinite or NaN", sanitize_boxes,
                "check_sanitize_boxes"),
    BrokenPiece("lr_at_without_warmup", lr_at_without_warmup, "a large learning rate without warm-up",
                "the loss jumps several-fold in the first steps", lr_at, "check_lr_schedule"),
)

