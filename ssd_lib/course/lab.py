"""Lesson 11's lab: the broken pieces it hands out, each named after its bug.

Each broken piece is a mistake that public SSD reproductions made or that their issue trackers
report: priors clamped in (cx, cy, w, h), variances applied twice or dropped in decode, labels not
shifted for background, ``num_classes`` without background, plain L1 called smooth L1, hard
negative mining that ranks positives or counts per batch, mAP averaged over classes without ground
truth, boxes of zero width kept, and a large learning rate without warm-up. Each has the signature
of the piece it breaks, and its fixed twin is the library's own function
(:data:`BROKEN_PIECES` pairs them), so the checker of the fixed piece fails it (tested in
``tests/test_checks.py``) and its symptom can be shown (``tests/test_lab.py``).

The lab's diagnoses go the other way, from the evidence a broken run left to the bug: the boxes a
decoder made of the shipped model's predictions, the loss parts of an overfit-one-batch run, the
negatives per image that a miner chose, a training log. :data:`DIAGNOSES` lists what each may
answer, :func:`diagnose_decode`, :func:`diagnose_loc_loss`, :func:`diagnose_mining` and
:func:`diagnose_warmup` are the answers the checkers compare with, and :func:`make_evidence` runs
the lab's broken pieces once (a few minutes on a CPU) to write ``assets/lab_evidence.json``::

    python -m ssd_lib.course.lab --out assets/lab_evidence.json

Usage::

    from ssd_lib.course import lab
    piece = lab.BROKEN_PIECES[0]
    piece.function, piece.fixed, piece.checker     # the bug, the library's twin, its checker
    lab.load_evidence()["warmup"]["runs"][0]       # a training log of the lab, with the bug it shows
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssd_lib.boxes import DEFAULT_VARIANCES, cxcywh_to_xyxy, decode, encode, xyxy_to_cxcywh
from ssd_lib.data.common import labels_from_names, num_classes_for, sanitize_boxes
from ssd_lib.loss import LossParts, MultiBoxLoss, hard_negative_mask
from ssd_lib.matching import match, match_ious, pairwise_iou
from ssd_lib.metrics import mean_average_precision
from ssd_lib.priors import clip_priors
from ssd_lib.train import TrainConfig, lr_factor

__all__ = [
    "lr_at", "targets_without_checks", "BrokenPiece", "BROKEN_PIECES",
    "clip_priors_in_cxcywh", "decode_variances_applied_twice", "decode_without_variances",
    "labels_not_shifted_for_background", "num_classes_without_background", "smooth_l1_that_is_plain_l1",
    "hard_negative_mask_ranks_positives", "hard_negative_mask_per_batch", "mean_ap_over_classes_without_gt",
    "sanitize_boxes_keeps_degenerate", "lr_at_without_warmup", "train_config_without_warmup",
    "MultiBoxLossWithPlainL1", "DIAGNOSES", "DECODERS", "MINERS", "diagnose_decode", "diagnose_loc_loss",
    "diagnose_mining", "diagnose_warmup", "EVIDENCE_PATH", "make_evidence", "load_evidence",
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



class MultiBoxLossWithPlainL1(MultiBoxLoss):
    """BUG (station 4's piece inside the loss): :class:`ssd_lib.loss.MultiBoxLoss` whose L_loc is
    :func:`smooth_l1_that_is_plain_l1`, as in the tutorial that used ``nn.L1Loss``. The conf part and
    the mining are the library's. For :func:`ssd_lib.debugging.overfit_one_batch`'s ``criterion``."""

    def forward(self, loc: Tensor, logits: Tensor, loc_targets: Tensor, labels: Tensor) -> LossParts:
        parts = super().forward(loc, logits, loc_targets, labels)
        positive = labels > 0
        plain_l1 = smooth_l1_that_is_plain_l1(loc[positive] - loc_targets[positive]).sum().float()
        loc_part = plain_l1 / parts.num_pos.clamp(min=1).to(plain_l1.dtype)
        return LossParts(parts.conf + self.alpha * loc_part, loc_part, parts.conf, parts.num_pos)


# ---------------------------------------------------------------------------------------------
# Diagnoses: from the evidence a broken run leaves (boxes, loss curves, counts, a log) to its bug
# ---------------------------------------------------------------------------------------------

DIAGNOSES: dict[str, tuple[str, ...]] = {
    "decode": ("correct", "variances applied twice", "variances dropped"),
    "loc_loss": ("smooth L1", "plain L1"),
    "mining": ("per image", "ranks positives", "per batch"),
    "warmup": ("no jump", "no warm-up", "lr too high"),
}
"""What each diagnosis may answer; the first answer is the healthy one."""

DECODERS: dict[str, Callable] = {"correct": decode, "variances applied twice": decode_variances_applied_twice,
                                 "variances dropped": decode_without_variances}
MINERS: dict[str, Callable] = {"per image": hard_negative_mask, "ranks positives": hard_negative_mask_ranks_positives,
                               "per batch": hard_negative_mask_per_batch}


def diagnose_decode(boxes: Tensor, priors_cxcywh: Tensor, objects: Tensor) -> str:
    """Which decoder of :data:`DECODERS` made ``boxes (N, 4) xyxy`` from a model's offsets for the default
    boxes ``priors_cxcywh (N, 4)``, each matched to the object ``objects (N, 4) xyxy``.

    How far each box's centre moved from its default box, against how far its object is (both in
    default-box sizes), fitted over all boxes by least squares: a trained model's boxes move about the
    whole way (gain 1); with the variances applied twice the centre correction is multiplied by 0.1
    once more (gain 0.1), without them it is 10 times too large (gain 10). Split at sqrt(0.1), sqrt(10).
    """
    moved = (xyxy_to_cxcywh(boxes)[:, :2] - priors_cxcywh[:, :2]) / priors_cxcywh[:, 2:]
    needed = (xyxy_to_cxcywh(objects)[:, :2] - priors_cxcywh[:, :2]) / priors_cxcywh[:, 2:]
    gain = float((moved * needed).sum()) / max(float((needed * needed).sum()), 1e-12)
    if gain < math.sqrt(0.1):
        return "variances applied twice"
    return "variances dropped" if gain > math.sqrt(10.0) else "correct"


def diagnose_loc_loss(loc: Sequence[float], conf: Sequence[float]) -> str:
    """The localisation loss of an overfit-one-batch run, "smooth L1" or "plain L1", from its loss parts
    per step (``loc``, ``conf``, as :class:`ssd_lib.debugging.OverfitReport` holds them). On one batch both parts fall
    by orders of magnitude with smooth L1; with plain L1 the offsets hop around their targets, so the
    loc part stalls while the conf part keeps falling: it falls by a smaller factor than conf does."""
    loc_fell, conf_fell = float(loc[-1]) / float(loc[0]), float(conf[-1]) / float(conf[0])
    return "plain L1" if loc_fell > conf_fell else "smooth L1"


def diagnose_mining(num_pos: Tensor, num_neg: Tensor, neg_pos_ratio: float = 3.0) -> str:
    """Which miner of :data:`MINERS` chose ``num_neg (B,)`` negatives for images with ``num_pos (B,)``
    positives (every image of the evidence has more than 4 x num_pos default boxes, so the cap
    ``P - num_pos`` never binds). Per image: exactly 3 x num_pos in every image. Per batch: the batch's
    total is right, its split over the images is not. Ranking the positives too: some positives took
    places meant for negatives, so the total falls short."""
    wanted = (neg_pos_ratio * num_pos).long()
    if torch.equal(num_neg.long(), wanted):
        return "per image"
    return "per batch" if int(num_neg.sum()) == int(wanted.sum()) else "ranks positives"


def diagnose_warmup(records: Sequence[dict]) -> str:
    """What a training log (the trainer's records: ``loss`` and ``lr`` per logged step) shows: "no jump"
    when no loss exceeds twice the first one; else "no warm-up" when the first step already trained
    at the run's highest learning rate, "lr too high" when the rate was still warming up."""
    losses, rates = [float(r["loss"]) for r in records], [float(r["lr"]) for r in records]
    if max(losses) <= 2 * losses[0]:
        return "no jump"
    return "no warm-up" if rates[0] >= 0.999 * max(rates) else "lr too high"


# ---------------------------------------------------------------------------------------------
# The evidence: the lab's broken pieces run once, written to assets/lab_evidence.json
# ---------------------------------------------------------------------------------------------

EVIDENCE_PATH = Path(__file__).resolve().parents[2] / "assets" / "lab_evidence.json"
EVIDENCE_COMMAND = "python -m ssd_lib.course.lab --out assets/lab_evidence.json"
EVIDENCE_FORMAT = "ssd_lib.lab_evidence/1"
# (what the log should show, peak lr, warm-up steps) of the trainer's runs; the course's recipe is 5e-3
WARMUP_RUNS = (("no warm-up", 0.1, 0), ("no warm-up", 0.2, 0), ("no jump", 0.1, 20), ("no jump", 0.05, 20),
               ("no jump", 0.005, 0), ("lr too high", 0.5, 5), ("lr too high", 1.0, 10))


def _rounded(values: Any) -> Any:
    """Nested lists of numbers with 6 significant digits (a small, readable JSON file)."""
    if isinstance(values, (list, tuple)):
        return [_rounded(v) for v in values]
    return float(f"{float(values):.6g}")


def _shipped_model_evidence(test_images: int, decode_images: int, batch_size: int = 8) -> tuple[list, list]:
    """The shipped model on the test split: decode evidence of (at most) ``decode_images`` images,
    mining counts per batch."""
    from ssd_lib.augment import SSDTransform
    from ssd_lib.data import ShapesDataset, collate

    from .assets import load_course_model

    model, _ = load_course_model()
    size = model.prior_config.image_size
    dataset = ShapesDataset("test", size=test_images, image_size=size, transforms=SSDTransform(size=size))
    decode_items, mining_items = [], []
    for start in range(0, test_images - batch_size + 1, batch_size):  # a loop over batches: made once, not hot
        indices = list(range(start, start + batch_size))
        pictures, targets = collate([dataset[i] for i in indices])
        scale = torch.tensor([size, size, size, size], dtype=torch.float32)
        matched = [match(t["boxes"].float() / scale, t["labels"], model.priors) for t in targets]
        labels = torch.stack([m[1] for m in matched])
        with torch.no_grad():
            loc, logits = model(pictures)
        positive = labels > 0
        for b, (objects, _) in enumerate(matched):
            rows = positive[b]
            item = {"image": indices[b], "priors_cxcywh": model.priors[rows], "offsets": loc[b][rows],
                    "objects": objects[rows]}
            readable = all(diagnose_decode(fn(item["offsets"], item["priors_cxcywh"]), item["priors_cxcywh"],
                                           item["objects"]) == verdict for verdict, fn in DECODERS.items())
            # Left out: images with too few positives, or predictions too poor to tell the decoders apart.
            if int(rows.sum()) >= 2 and readable and len(decode_items) < decode_images:
                decode_items.append({k: v if k == "image" else _rounded(v.tolist()) for k, v in item.items()})
        conf_loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
        num_pos = positive.sum(dim=1)
        num_neg = {verdict: (miner(conf_loss, positive) & ~positive).sum(dim=1) for verdict, miner in MINERS.items()}
        assert int((4 * num_pos).max()) < positive.shape[1], "the cap P - num_pos would bind"
        if all(diagnose_mining(num_pos, n) == verdict for verdict, n in num_neg.items()):
            mining_items.append({"images": indices, "num_boxes": positive.shape[1], "num_pos": num_pos.tolist(),
                                 "num_neg": {verdict: n.tolist() for verdict, n in num_neg.items()}})
    return decode_items, mining_items


def _overfit_runs(seeds: Sequence[int], steps: int, image_size: int) -> list:
    """Overfit-one-batch runs (4 training images each) with the library's loss and with plain L1."""
    from ssd_lib.augment import SSDTransform
    from ssd_lib.data import SHAPE_NAMES, ShapesDataset, collate
    from ssd_lib.debugging import overfit_one_batch
    from ssd_lib.model import ssd_small

    dataset = ShapesDataset("train", size=4 * len(seeds), image_size=image_size, transforms=SSDTransform(size=image_size))
    runs = []
    for k, seed in enumerate(seeds):
        batch = collate([dataset[i] for i in range(4 * k, 4 * k + 4)])
        for optimizer, lr in (("sgd", 0.01), ("adam", 1e-3)):
            torch.manual_seed(seed)
            model = ssd_small(len(SHAPE_NAMES) + 1, image_size)  # both losses start from these weights
            for verdict, criterion in (("smooth L1", MultiBoxLoss(check_labels=False)),
                                       ("plain L1", MultiBoxLossWithPlainL1(check_labels=False))):
                report = overfit_one_batch(model, batch, steps=steps, lr=lr, optimizer=optimizer, criterion=criterion,
                                           verbose=False)
                if diagnose_loc_loss(report.loc, report.conf) == verdict:
                    runs.append({"loss": verdict, "optimizer": optimizer, "lr": lr, "seed": seed,
                                 "loc": _rounded(report.loc), "conf": _rounded(report.conf)})
    return runs


def _warmup_runs(seeds: Sequence[int], steps: int, image_size: int) -> list:
    """The trainer's logs of :func:`train_config_without_warmup` at the lrs and warm-ups of WARMUP_RUNS."""
    from ssd_lib.data import SHAPE_NAMES, ShapesDataset
    from ssd_lib.model import ssd_small
    from ssd_lib.train import train

    runs = []
    for seed in seeds:
        dataset = ShapesDataset("train", size=8 * steps, image_size=image_size, seed=seed)
        for verdict, lr, warmup in WARMUP_RUNS:
            config = train_config_without_warmup(batch_size=8, max_steps_per_epoch=steps, log_every=1, lr=lr,
                                                 warmup_steps=warmup, seed=seed, amp=False, channels_last=False,
                                                 cpu_threads=torch.get_num_threads())  # the caller's choice
            torch.manual_seed(seed)
            result = train(ssd_small(len(SHAPE_NAMES) + 1, image_size), dataset, config=config, progress=False)
            records = [{"step": r["step"], **{k: _rounded(r[k]) for k in ("loss", "loc", "conf", "lr", "grad_norm")}}
                       for r in result.steps]
            peak = max(r["loss"] for r in records) / records[0]["loss"]
            clear = peak <= 1.5 if verdict == "no jump" else peak >= 3.0  # no borderline jumps
            if diagnose_warmup(records) == verdict and clear:
                runs.append({"shows": verdict, "lr": lr, "warmup_steps": warmup, "seed": seed, "records": records})
    return runs


def make_evidence(seeds: Sequence[int] = (0, 1, 2), test_images: int = 64, decode_images: int = 24,
                  overfit_steps: int = 60, train_steps: int = 20, image_size: int = 64,
                  log: Callable[[str], None] = print) -> dict:
    """Run the lab's broken pieces and collect what they leave behind (a few minutes on a CPU).

    * ``decode``: the shipped model's offsets for the positive default boxes of test images, with the
      default boxes and their objects; a decoder of :data:`DECODERS` turns them into evidence.
    * ``mining``: per batch of 8 test images, the positives per image and the negatives each miner of
      :data:`MINERS` chose (from the shipped model's cross-entropy).
    * ``loc_loss``: the loss parts of :func:`ssd_lib.debugging.overfit_one_batch` runs (SGD and Adam,
      one batch per seed) with the library's loss and with :class:`MultiBoxLossWithPlainL1`.
    * ``warmup``: the trainer's logs of :func:`train_config_without_warmup` runs (:data:`WARMUP_RUNS`).

    Only evidence that shows its bug clearly is kept (each diagnosis of this module reads it right).
    """
    decode_items, mining_items = _shipped_model_evidence(test_images, decode_images)
    log(f"decode: {len(decode_items)} test images, mining: {len(mining_items)} batches")
    loc_runs = _overfit_runs(seeds, overfit_steps, image_size)
    log(f"loc_loss: {len(loc_runs)} overfit runs")
    warmup_runs = _warmup_runs(seeds, train_steps, image_size)
    log(f"warmup: {len(warmup_runs)} training logs")
    return {"format": EVIDENCE_FORMAT, "command": EVIDENCE_COMMAND, "torch": torch.__version__,
            "decode": {"model": "assets/ssd_small_shapes.pt", "images": decode_items},
            "mining": {"model": "assets/ssd_small_shapes.pt", "batches": mining_items},
            "loc_loss": {"image_size": image_size, "steps": overfit_steps, "runs": loc_runs},
            "warmup": {"image_size": image_size, "steps": train_steps, "runs": warmup_runs}}


@functools.lru_cache(maxsize=4)
def load_evidence(path: str | Path | None = None) -> dict:
    """The lab's evidence (``assets/lab_evidence.json`` unless ``path``), read once. Treat it as read-only."""
    path = Path(path) if path is not None else EVIDENCE_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: restore it (git checkout -- assets/) or write it with "
                                f"`{EVIDENCE_COMMAND}` (a few minutes)")
    data = json.loads(path.read_text())
    if data.get("format") != EVIDENCE_FORMAT:
        raise ValueError(f"{path} is not the lab's evidence (format {data.get('format')!r}); rewrite it with "
                         f"`{EVIDENCE_COMMAND}`")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssd_lib.course.lab",
                                description="Run the debugging lab's broken pieces and write their evidence.")
    p.add_argument("--out", default=str(EVIDENCE_PATH), help="JSON file to write (default: assets/lab_evidence.json)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of the training runs")
    p.add_argument("--threads", type=int, default=None, help="compute threads (default: OMP_NUM_THREADS or 1)")
    args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    torch.set_num_threads(args.threads or int(os.environ.get("OMP_NUM_THREADS", "1") or 1))  # small runs: 1 is fastest
    data = make_evidence(seeds=args.seeds)
    Path(args.out).write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
