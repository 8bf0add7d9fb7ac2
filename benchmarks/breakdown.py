"""Where ours spends its time in cases 1 and 2 on the CPU, step by step, next to torchvision's total.

Each step of ``match_batch`` + ``MultiBoxLoss`` and of ``detect`` is re-run on case 1's and case 2's
inputs and timed in process CPU seconds (median of ``repeats``), so the figures hold on a shared
machine when run with one thread. Lines starting with two spaces are parts of the line above them.

Usage::

    python -m benchmarks.breakdown --threads 1
    from benchmarks.breakdown import loss_breakdown; print(loss_breakdown())
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, nms
from torchvision.ops import box_iou as tv_box_iou

from ssd_lib.boxes import cxcywh_to_xyxy, decode, encode
from ssd_lib.detect import NMS_THRESHOLD, PRE_NMS_TOP_K, SCORE_THRESHOLD, detect
from ssd_lib.loss import MultiBoxLoss, hard_negative_mask
from ssd_lib.matching import _check_gt, match_batch, match_ious, pairwise_iou
from ssd_lib.priors import PriorConfig, default_boxes

from .inputs import priors_to_pixels, random_ground_truth, random_head_outputs
from .torchvision_side import compute_loss, match_per_image, postprocess, torchvision_ssd_algorithms

__all__ = ["cpu_ms", "loss_breakdown", "detect_breakdown", "main"]


def cpu_ms(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median process CPU milliseconds of ``fn`` after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    return 1e3 * statistics.median(samples)


def loss_breakdown(batch: int = 32, seed: int = 0, repeats: int = 5) -> dict[str, float]:
    """Case 1's inputs: CPU ms of ours, its steps, and torchvision's."""
    cfg = PriorConfig.ssd300()
    priors = default_boxes(cfg)
    priors_xyxy = cxcywh_to_xyxy(priors)
    gt = random_ground_truth(batch, seed=seed)
    loc, logits = random_head_outputs(batch, cfg.num_priors, seed=seed + 1)
    B, P = len(gt.boxes), cfg.num_priors
    ious = [pairwise_iou(b, priors_xyxy) for b in gt.boxes]
    loc_targets, labels = match_batch(gt.boxes, gt.labels, priors)
    conf_all = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    criterion, theirs = MultiBoxLoss(), torchvision_ssd_algorithms()
    anchors, targets = [priors_to_pixels(priors, cfg.image_size)] * B, gt.torchvision_targets()
    steps = {
        "ours: match_batch + MultiBoxLoss": lambda: criterion(loc, logits, *match_batch(gt.boxes, gt.labels, priors)),
        "  match_batch": lambda: match_batch(gt.boxes, gt.labels, priors),
        "    input validation (_check_gt per image)": lambda: [_check_gt(b, l) for b, l in zip(gt.boxes, gt.labels)],
        # On a CPU match_batch works image by image (matching._assign): these two lines are its two parts.
        f"    pairwise_iou per image ({sum(len(b) for b in gt.boxes)} x {P} in all)":
            lambda: [pairwise_iou(b, priors_xyxy) for b in gt.boxes],
        "    match_ious per image (two-step rule)": lambda: [match_ious(i[None]) for i in ious],
        "    encode": lambda: encode(loc_targets, priors),
        "  MultiBoxLoss": lambda: criterion(loc, logits, loc_targets, labels),
        "    cross_entropy over all boxes": lambda: F.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                                                  reduction="none"),
        "    hard_negative_mask (two argsorts)": lambda: hard_negative_mask(conf_all, labels > 0),
        "torchvision: matching + compute_loss": lambda: compute_loss(theirs, targets, {"bbox_regression": loc,
                                                                                        "cls_logits": logits}, anchors),
        "  matching (per-image box_iou + SSDMatcher)": lambda: match_per_image(theirs, targets, anchors),
        f"for reference: box_iou per image, unpadded ({sum(len(b) for b in gt.boxes)} x {P} in all)":
            lambda: [tv_box_iou(b, priors_xyxy) for b in gt.boxes],
    }
    return {name: cpu_ms(fn, repeats) for name, fn in steps.items()}


def detect_breakdown(background_offset: float = 0.0, batch: int = 32, seed: int = 0,
                     repeats: int = 3) -> dict[str, float]:
    """Case 2's inputs: CPU ms of ``detect``, its steps, and torchvision's ``postprocess_detections``."""
    cfg = PriorConfig.ssd300()
    priors = default_boxes(cfg)
    loc, logits = random_head_outputs(batch, cfg.num_priors, seed=seed + 1, background_offset=background_offset)
    B, _, C = logits.shape
    boxes = decode(loc, priors).clamp(0.0, 1.0)
    top_scores, top_idx = logits.softmax(-1)[..., 1:].transpose(1, 2).topk(PRE_NMS_TOP_K, dim=2)
    keep = top_scores > SCORE_THRESHOLD  # the candidates, as detect builds them
    image_idx = torch.arange(B).view(B, 1, 1).expand_as(top_idx)[keep]
    labels = torch.arange(1, C).view(1, C - 1, 1).expand_as(top_idx)[keep]
    scores, cand_boxes, groups = top_scores[keep], boxes[image_idx, top_idx[keep]], image_idx * C + labels
    per_group = [(cand_boxes[groups == g], scores[groups == g]) for g in groups.unique()]
    theirs, anchors = torchvision_ssd_algorithms(), [priors_to_pixels(priors, cfg.image_size)] * B
    steps = {
        f"ours: detect ({scores.numel()} candidates)": lambda: detect(loc, logits, priors),
        "  decode + clamp": lambda: decode(loc, priors).clamp(0.0, 1.0),
        f"  softmax + per-class top-{PRE_NMS_TOP_K}":
            lambda: logits.softmax(-1)[..., 1:].transpose(1, 2).topk(PRE_NMS_TOP_K, dim=2),
        "  one batched_nms for the batch": lambda: batched_nms(cand_boxes, scores, groups, NMS_THRESHOLD),
        f"    of which the nms kernels ({len(per_group)} groups)":
            lambda: [nms(b, s, NMS_THRESHOLD) for b, s in per_group],
        "torchvision: postprocess_detections": lambda: postprocess(theirs, {"bbox_regression": loc,
                                                                          "cls_logits": logits}, anchors, 300),
    }
    return {name: cpu_ms(fn, repeats) for name, fn in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: CPU time ~ quiet wall time)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tables = {"case 1 (match + loss, B=32)": loss_breakdown(),
              "case 2a (post-processing, untrained logits)": detect_breakdown(0.0),
              "case 2b (post-processing, background +10)": detect_breakdown(10.0)}
    for title, table in tables.items():
        print(f"\n{title}, CPU ms, {args.threads} thread(s):")
        for name, ms in table.items():
            print(f"  {name:<66} {ms:8.1f}")


if __name__ == "__main__":
    main()
