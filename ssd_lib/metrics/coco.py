"""COCO box AP and AR (paper Sec. 3.4: AP at IoU 0.50:0.05:0.95, AP50, AP75, and by object size),
computed by the official ``pycocotools`` on in-memory COCO objects.

Usage::

    from ssd_lib.metrics.coco import evaluate_coco
    result = evaluate_coco(detections, ground_truths)          # boxes in pixels
    print(result["AP"], result["AP50"], result["APs"])          # NaN where undefined
"""
from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .inputs import flatten, to_numpy

__all__ = ["evaluate_coco"]

_COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _coco_annotations(boxes: np.ndarray, labels: np.ndarray, images: np.ndarray, area: np.ndarray | None = None,
                      **extra: np.ndarray) -> list[dict]:
    """COCO annotation dicts: xyxy -> xywh, ids from 1; ``area`` (N,) where it is finite, else w * h
    (what pycocotools' ``loadRes`` gives a detection box)."""
    xywh = np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), axis=1)
    box_area = xywh[:, 2] * xywh[:, 3]
    area = box_area if area is None else np.where(np.isfinite(area), area, box_area)
    columns = {"image_id": (images + 1).tolist(), "category_id": labels.tolist(), "bbox": xywh.tolist(),
               "area": area.tolist(), **{key: value.tolist() for key, value in extra.items()}}
    keys = list(columns)
    return [dict(zip(keys, row), id=k + 1) for k, row in enumerate(zip(*columns.values()))]


def _given_areas(ground_truths: Sequence[Mapping[str, Any]], gt_images: np.ndarray, num_images: int) -> np.ndarray:
    """The ground truths' optional ``area`` entries, concatenated like their boxes: ``(G,)`` float64,
    NaN for an image without one (there w * h of the box is used). ``COCODataset``'s targets carry the
    annotation's ``area``, from which COCOeval takes small/medium/large (for a crowd or segmented
    object it is the mask's area, not w * h); it is in pixels of the original image and never scaled.
    A ValueError names an image whose ``area`` does not fit its boxes."""
    counts = np.bincount(gt_images, minlength=num_images)
    parts = []
    for i, (truth, count) in enumerate(zip(ground_truths, counts)):  # a loop over images, at the boundary
        area = truth.get("area")
        if area is None:
            parts.append(np.full(count, np.nan))
            continue
        area = to_numpy(area).astype(np.float64).reshape(-1)
        if area.shape != (count,):
            raise ValueError(f"ground_truths[{i}]['area'] must have shape ({count},), one area per box; "
                             f"got {tuple(area.shape)}")
        parts.append(area)
    return np.concatenate(parts) if parts else np.zeros(0)


def evaluate_coco(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    image_sizes: Sequence[tuple[int, int]] | None = None,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """COCO box AP/AR by the official ``pycocotools.cocoeval.COCOeval``, on in-memory COCO objects.

    Inputs as in :func:`evaluate_voc`. COCO's small/medium/large split uses areas in *pixels*
    (32^2, 96^2): leave ``image_sizes`` None when boxes are in pixels; when boxes are normalised to
    [0, 1] (as ``ssd_lib.detect`` returns them) pass ``image_sizes[i] = (height, width)`` and they are
    scaled to pixels first. AP, AP50, AP75 do not depend on the units. A ground truth's optional
    ``area`` (G,) gives its size class instead of w * h, as the file's does in COCOeval (:func:`_given_areas`).

    "difficult" objects become ``iscrowd=1`` regions: a detection that matches no regular object
    but covers a difficult one is ignored, however many there are, which is VOC's "neither TP nor
    FP" (and how ``COCODataset(skip_crowd=False)``'s crowd regions reach COCOeval). A crowd region's IoU
    is intersection / detection area. (``ignore`` would be no use: ``COCOeval._prepare`` overwrites it.)

    Returns ``AP`` (IoU 0.50:0.95), ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1``, ``AR10``,
    ``AR100``, ``ARs``, ``ARm``, ``ARl`` as floats (NaN where undefined, e.g. no large objects;
    pycocotools writes -1 there), ``stats`` (the raw 12 numbers of ``COCOeval.summarize``, -1 kept),
    ``ap_per_class`` (C floats, AP 0.50:0.95 per class, NaN without ground truth) and ``class_names``.
    pycocotools keeps the 100 best detections per image and class (``maxDets``).
    Prints pycocotools' report only when ``verbose``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = flatten(detections, ground_truths, num_classes, class_names)
    det_boxes, gt_boxes = data.det_boxes, data.gt_boxes
    if image_sizes is not None:
        sizes = to_numpy(image_sizes).astype(np.float64)
        if sizes.shape != (data.num_images, 2):
            raise ValueError(f"image_sizes must hold one (height, width) per image, shape ({data.num_images}, 2); "
                             f"got {sizes.shape}")
        if max(det_boxes.max(initial=0.0), gt_boxes.max(initial=0.0)) > 2.0:
            warnings.warn("image_sizes was given but some boxes have coordinates > 2: are they already in pixels? "
                          "image_sizes is for boxes normalised to [0, 1]", stacklevel=2)
        scale = sizes[:, [1, 0, 1, 0]]  # (height, width) -> (w, h, w, h)
        det_boxes = det_boxes * scale[data.det_images]
        gt_boxes = gt_boxes * scale[data.gt_images]
    elif len(gt_boxes) and gt_boxes.max() <= 1.0:
        warnings.warn("boxes look normalised to [0, 1]; APs/APm/APl use pixel areas, so pass image_sizes "
                      "(height, width per image) to get them right", stacklevel=2)

    images = [{"id": i + 1} for i in range(data.num_images)]
    if image_sizes is not None:
        for image, (height, width) in zip(images, sizes.tolist()):
            image.update(height=height, width=width)
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(data.class_names)]
    gt_anns = _coco_annotations(gt_boxes, data.gt_labels, data.gt_images, iscrowd=data.gt_difficult.astype(int),
                                area=_given_areas(ground_truths, data.gt_images, data.num_images))
    det_anns = _coco_annotations(det_boxes, data.det_labels, data.det_images, score=data.det_scores,
                                 iscrowd=np.zeros(len(det_boxes), dtype=int))

    output = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with output:
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": gt_anns}
        coco_dt.dataset = {"images": images, "categories": categories, "annotations": det_anns}
        coco_gt.createIndex()
        coco_dt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()

    stats = np.asarray(coco_eval.stats, dtype=np.float64)
    result: dict[str, Any] = {name: (float(v) if v > -1 else float("nan")) for name, v in zip(_COCO_STAT_NAMES, stats)}
    # precision: (IoU thresholds, recall levels, classes, area ranges, maxDets); -1 = undefined.
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # area "all", 100 detections
    per_class = []
    for k in range(len(data.class_names)):
        defined = precision[:, :, k][precision[:, :, k] > -1]
        per_class.append(float(defined.mean()) if defined.size else float("nan"))
    result.update(stats=stats, ap_per_class=per_class, class_names=list(data.class_names))
    return result
