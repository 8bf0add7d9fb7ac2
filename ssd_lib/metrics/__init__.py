"""Detection metrics: PASCAL VOC mAP and COCO AP, the numbers of the paper's Sec. 3 (VOC 3.1-3.3, COCO 3.4).

VOC (what the paper reports on VOC2007/2012): per class, rank every detection of that class over
the whole test set by score, call each one a true or false positive, and summarise the
precision/recall curve by one number, the average precision (AP). The mean over classes is mAP.
COCO: the same idea averaged over IoU thresholds 0.50:0.05:0.95, computed by the official
``pycocotools``.

Usage::

    from ssd_lib.metrics import evaluate_voc, evaluate_coco
    result = evaluate_voc(detections, targets)      # per image: {"boxes" (D,4) xyxy, "scores", "labels"}
    print(result["mAP"], evaluate_coco(detections, targets)["AP"])

The VOC evaluation's conventions (IoU formula, ``>=`` threshold, stable ranking, exact 11-point
recall levels, NaN for classes without ground truth) are listed in :mod:`ssd_lib.metrics.voc`; the
tests pin each one. Submodules: ``inputs`` (validation), ``voc``, ``coco``.
"""
from .coco import evaluate_coco
from .voc import (VOC07_RECALL_LEVELS, average_precision, evaluate_voc, mean_average_precision, paired_iou, pr_curves,
                  precision_envelope)

__all__ = [
    "evaluate_voc",
    "evaluate_coco",
    "average_precision",
    "precision_envelope",
    "pr_curves",
    "paired_iou",
    "VOC07_RECALL_LEVELS",
    "mean_average_precision",
]
