"""Timing of ssd_lib.metrics on a synthetic test set the size of VOC2007 test (~5,000 images).

Each image (500 x 375 pixels) has 1-10 objects of 20 classes; its detections are jittered copies
of the objects (mostly with the right label, higher scores) plus random boxes (lower scores),
``dets_per_image`` in all, as an SSD with ``top_k`` would return them.

Usage::

    .venv/bin/python -m benchmarks.bench_metrics                 # 5000 images x 100 detections
    .venv/bin/python -m benchmarks.bench_metrics --images 500 --no-coco
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssd_lib.metrics import evaluate_coco, evaluate_voc  # noqa: E402

IMAGE_WIDTH, IMAGE_HEIGHT = 500.0, 375.0  # a typical VOC image


def _clip_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Reorder corners and clip ``(N, 4)`` boxes to the image, keeping at least 1 pixel of size."""
    low = np.minimum(boxes[:, :2], boxes[:, 2:])
    high = np.maximum(boxes[:, :2], boxes[:, 2:])
    limit = np.array([IMAGE_WIDTH, IMAGE_HEIGHT])
    low = np.clip(low, 0, limit - 1)
    high = np.clip(high, low + 1, limit)
    return np.concatenate((low, high), axis=1)


def make_dataset(num_images: int, dets_per_image: int, num_classes: int, seed: int = 0):
    """Random but plausible ``(detections, ground_truths)`` lists of per-image dicts of tensors."""
    rng = np.random.default_rng(seed)
    detections, ground_truths = [], []
    # A loop over images, not timed: it builds the per-image dicts the evaluators take.
    for _ in range(num_images):
        num_gt = int(rng.integers(1, 11))
        size = rng.uniform(15, 300, (num_gt, 1)) * rng.uniform(0.6, 1.4, (num_gt, 2))  # small to large
        corner = rng.uniform(0, 1, (num_gt, 2)) * np.maximum([IMAGE_WIDTH, IMAGE_HEIGHT] - size, 1)
        gt_boxes = _clip_xyxy(np.concatenate((corner, corner + size), axis=1))
        gt_labels = rng.integers(1, num_classes + 1, num_gt)
        difficult = rng.random(num_gt) < 0.1  # about the share of "difficult" objects in VOC2007

        num_jittered = min(dets_per_image, int(rng.integers(num_gt, 4 * num_gt + 1)))
        source = rng.integers(0, num_gt, num_jittered)
        widths = np.repeat(gt_boxes[source, 2:] - gt_boxes[source, :2], 2, axis=0).reshape(-1, 4)
        jittered = gt_boxes[source] + rng.normal(0, 0.12, (num_jittered, 4)) * widths
        jittered_labels = np.where(rng.random(num_jittered) < 0.85, gt_labels[source],
                                   rng.integers(1, num_classes + 1, num_jittered))
        num_random = dets_per_image - num_jittered
        size = rng.uniform(10, 250, (num_random, 2))
        corner = rng.uniform(0, 1, (num_random, 2)) * np.maximum([IMAGE_WIDTH, IMAGE_HEIGHT] - size, 1)
        random_boxes = np.concatenate((corner, corner + size), axis=1)

        boxes = _clip_xyxy(np.concatenate((jittered, random_boxes)))
        labels = np.concatenate((jittered_labels, rng.integers(1, num_classes + 1, num_random)))
        scores = np.concatenate((rng.beta(5, 2, num_jittered), rng.beta(1, 5, num_random)))
        order = np.argsort(-scores)  # ssd_lib.detect returns detections sorted by score
        detections.append({
            "boxes": torch.from_numpy(boxes[order]).float(),
            "scores": torch.from_numpy(scores[order]).float(),
            "labels": torch.from_numpy(labels[order]),
        })
        ground_truths.append({
            "boxes": torch.from_numpy(gt_boxes).float(),
            "labels": torch.from_numpy(gt_labels),
            "difficult": torch.from_numpy(difficult),
        })
    return detections, ground_truths


def run(num_images: int = 5000, dets_per_image: int = 100, num_classes: int = 20, seed: int = 0,
        coco: bool = True) -> dict:
    """Time ``evaluate_voc`` (VOC2007 and VOC2010+ AP) and ``evaluate_coco`` on one synthetic set.

    Returns the wall-clock seconds of each call (``voc07_s``, ``voc10_s``, ``coco_s``), the metrics
    they computed and the dataset size.
    """
    detections, ground_truths = make_dataset(num_images, dets_per_image, num_classes, seed)
    result = {
        "num_images": num_images,
        "num_detections": sum(len(d["scores"]) for d in detections),
        "num_objects": sum(len(g["labels"]) for g in ground_truths),
    }
    for name, use_07_metric in (("voc07", True), ("voc10", False)):
        start = time.perf_counter()
        voc = evaluate_voc(detections, ground_truths, use_07_metric=use_07_metric, num_classes=num_classes)
        result[f"{name}_s"] = time.perf_counter() - start
        result[f"{name}_mAP"] = voc["mAP"]
    if coco:
        start = time.perf_counter()
        coco_result = evaluate_coco(detections, ground_truths, num_classes=num_classes)
        result["coco_s"] = time.perf_counter() - start
        result["coco_AP"] = coco_result["AP"]
        result["coco_AP50"] = coco_result["AP50"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-coco", action="store_true", help="skip pycocotools (the slow part)")
    args = parser.parse_args()
    result = run(args.images, args.dets, args.classes, args.seed, coco=not args.no_coco)
    print(f"{result['num_images']} images, {result['num_detections']} detections, {result['num_objects']} objects")
    print(f"evaluate_voc  (VOC2007 11-point): {result['voc07_s']:7.2f} s   mAP {result['voc07_mAP']:.4f}")
    print(f"evaluate_voc  (VOC2010 all-point): {result['voc10_s']:6.2f} s   mAP {result['voc10_mAP']:.4f}")
    if "coco_s" in result:
        print(f"evaluate_coco (pycocotools):      {result['coco_s']:7.2f} s   AP {result['coco_AP']:.4f}  "
              f"AP50 {result['coco_AP50']:.4f}")


if __name__ == "__main__":
    main()
