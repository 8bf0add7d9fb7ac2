"""Case 1: target assignment + loss for a batch (B=32, SSD300's 8732 default boxes, 1-20 objects per image, C=21).

Ours: ``match_batch`` (one IoU call for the batch) + ``MultiBoxLoss``. Theirs: per image
``box_iou(gt, anchors)`` + ``SSDMatcher``, exactly as ``SSD.forward`` builds ``matched_idxs``, then
``SSD.compute_loss``. Both take the same random ``loc``/``logits`` (no network) and the same boxes
(ours normalised, theirs in pixels); the anchors are our default boxes in pixel xyxy at 300.

Check: same number of positives, total and both parts of the loss within 1e-3 relative. torchvision
matches at IoU >= 0.5 and we at > 0.5 (no tie with continuous random boxes); torchvision does not cap
the 3:1 negatives at the number available, so the check also asserts that negatives are plentiful.

Usage::

    rows = run(Settings(torch.device("cpu"), quick=True))
"""
from __future__ import annotations

import torch

from ssd_lib.loss import MultiBoxLoss
from ssd_lib.matching import match_batch
from ssd_lib.priors import PriorConfig, default_boxes

from .checks import Mismatch, check_relative
from .inputs import priors_to_pixels, random_ground_truth, random_head_outputs
from .row import Row, Settings, finish_row, run_check
from .timing import measure_pair
from .torchvision_side import compute_loss, match_per_image, torchvision_ssd_algorithms

__all__ = ["run", "BATCH", "NUM_CLASSES"]

BATCH, NUM_CLASSES, MAX_OBJECTS = 32, 21, 20
TARGET = {"cpu": 3.0, "cuda": 10.0}


def _check(ours_fn, theirs_fn, matched_idxs_fn, num_priors: int) -> str:
    ours, theirs = ours_fn(), theirs_fn()
    pos_per_image = torch.stack([(m >= 0).sum() for m in matched_idxs_fn()]).cpu()
    if int(ours.num_pos) != int(pos_per_image.sum()):
        raise Mismatch(f"positives: ours {int(ours.num_pos)} vs torchvision {int(pos_per_image.sum())}")
    if int((4 * pos_per_image).max()) > num_priors:  # 3 negatives per positive must exist, or the losses differ
        raise Mismatch("too few negatives for 3:1 mining in some image; the two losses then differ by design")
    theirs_total = float(theirs["bbox_regression"] + theirs["classification"])
    parts = [
        check_relative("loss", float(ours.total), theirs_total, 1e-3),
        check_relative("loc", float(ours.loc), float(theirs["bbox_regression"]), 1e-3),
        check_relative("conf", float(ours.conf), float(theirs["classification"]), 1e-3),
    ]
    return f"{int(ours.num_pos)} positives; " + "; ".join(parts)


def run(settings: Settings) -> list[Row]:
    device, cfg = settings.device, PriorConfig.ssd300()
    priors = default_boxes(cfg, device=device)
    gt = random_ground_truth(BATCH, cfg.image_size, MAX_OBJECTS, NUM_CLASSES, seed=settings.seed).to(device)
    loc, logits = (t.to(device) for t in random_head_outputs(BATCH, cfg.num_priors, NUM_CLASSES, seed=settings.seed + 1))
    anchors = [priors_to_pixels(priors, cfg.image_size)] * BATCH  # torchvision takes one tensor per image
    targets = gt.torchvision_targets()
    head_outputs = {"bbox_regression": loc, "cls_logits": logits}
    theirs_model, criterion = torchvision_ssd_algorithms(NUM_CLASSES, cfg).to(device), MultiBoxLoss()

    def ours():
        loc_targets, labels = match_batch(gt.boxes, gt.labels, priors)
        return criterion(loc, logits, loc_targets, labels)

    def theirs():
        return compute_loss(theirs_model, targets, head_outputs, anchors)

    check = run_check(lambda: _check(ours, theirs, lambda: match_per_image(theirs_model, targets, anchors),
                                     cfg.num_priors))
    warmup, repeats = (0, 3) if settings.quick else (3, 15)  # the check's calls warm up too
    ours_t, theirs_t = measure_pair(ours, theirs, device, warmup, repeats)
    row = Row(f"1 match + loss (B={BATCH}, P={cfg.num_priors}, C={NUM_CLASSES})", ours_t, theirs_t,
              target=TARGET[device.type], check=check)
    return [finish_row(row, settings, ours, theirs)]
