"""The input of every metric, checked once at the public boundary: per-image dicts of detections and
ground truth flattened into one array per field over the whole dataset (paper Sec. 3: the VOC and COCO
metrics rank detections over the whole test set, not per image).

Usage::

    from ssd_lib.metrics.inputs import flatten
    data = flatten(detections, ground_truths, num_classes=None, class_names=None)   # a ValueError if malformed
    data.det_boxes, data.det_images      # (T, 4) float64 xyxy, (T,) image index of each detection
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["Flattened", "flatten", "to_numpy"]


class Flattened(NamedTuple):
    """All detections and ground truth of a dataset, concatenated image after image."""

    det_boxes: np.ndarray  # (T, 4) float64 xyxy
    det_scores: np.ndarray  # (T,) float64
    det_labels: np.ndarray  # (T,) int64 in 1..C
    det_images: np.ndarray  # (T,) int64 image index
    gt_boxes: np.ndarray  # (G, 4) float64 xyxy
    gt_labels: np.ndarray  # (G,) int64 in 1..C
    gt_difficult: np.ndarray  # (G,) bool
    gt_images: np.ndarray  # (G,) int64 image index
    num_images: int
    class_names: list[str]  # C names, class k has label k + 1


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _image_fields(kind: str, index: int, entry: Any, with_scores: bool) -> tuple[np.ndarray, ...]:
    """Shape checks for one image's dict; returns (boxes (N,4) float64, labels (N,), scores or difficult (N,))."""
    if not isinstance(entry, Mapping):
        raise TypeError(f"{kind}[{index}] must be a dict with 'boxes' and 'labels'; got {type(entry).__name__}")
    keys = ("boxes", "scores", "labels") if with_scores else ("boxes", "labels")
    for key in keys:
        if key not in entry:
            raise ValueError(f"{kind}[{index}] has no {key!r} entry; each image needs {', '.join(map(repr, keys))}")
    boxes = to_numpy(entry["boxes"])
    if boxes.size == 0:  # accept torch.zeros(0) as well as torch.zeros(0, 4) for an empty image
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{kind}[{index}]['boxes'] must have shape (N, 4) xyxy; got {tuple(boxes.shape)}")
    num_boxes = len(boxes)

    def per_box(key: str, value: Any) -> np.ndarray:
        array = to_numpy(value)
        if num_boxes == 0 and array.size == 0:
            array = array.reshape(0)
        if array.shape != (num_boxes,):
            raise ValueError(f"{kind}[{index}][{key!r}] must have shape ({num_boxes},) to match its boxes; "
                             f"got {tuple(array.shape)}")
        return array

    labels = per_box("labels", entry["labels"])
    if num_boxes and not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{kind}[{index}]['labels'] must hold integers (1..C); got {labels.dtype}; call .long() first")
    if with_scores:
        extra = per_box("scores", entry["scores"])
    elif entry.get("difficult") is None:  # VOC's "difficult" flag is optional: missing means none
        extra = np.zeros(num_boxes, dtype=bool)
    else:
        extra = per_box("difficult", entry["difficult"])
    return boxes.astype(np.float64), labels.astype(np.int64), extra.astype(np.float64 if with_scores else bool)


def _check_values(kind: str, boxes: np.ndarray, labels: np.ndarray, images: np.ndarray, num_classes: int) -> None:
    """Value checks on the concatenated arrays; the message names the first offending image."""
    bad = ~np.isfinite(boxes).all(axis=1)
    if bad.any():
        raise ValueError(f"{kind}[{images[bad.argmax()]}]['boxes'] contains NaN or infinite coordinates")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        i = bad.argmax()
        raise ValueError(
            f"{kind}[{images[i]}]['boxes'] must be xyxy with x2 >= x1 and y2 >= y1; found {boxes[i].tolist()}. "
            "If your boxes are (x, y, w, h) or (cx, cy, w, h), convert them first (see ssd_lib.boxes)."
        )
    if (labels == 0).any():
        i = images[(labels == 0).argmax()]
        if kind == "detections":
            raise ValueError(
                f"detections[{i}] has label 0, the background class; drop background detections before "
                "evaluating (keep = labels > 0) -- ssd_lib.detect never returns them"
            )
        raise ValueError(f"ground_truths[{i}] has label 0, the background class; object labels start at 1")
    if (labels < 0).any():
        raise ValueError(f"{kind}[{images[(labels < 0).argmax()]}]['labels'] has a negative label; labels are 1..C")
    if (labels > num_classes).any():
        i = (labels > num_classes).argmax()
        raise ValueError(
            f"{kind}[{images[i]}]['labels'] has label {labels[i]} but there are only {num_classes} classes; "
            "pass num_classes / class_names that cover every label (labels are 1..C, 0 is background)"
        )


def flatten(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    num_classes: int | None,
    class_names: Sequence[str] | None,
) -> Flattened:
    for name, value in (("detections", detections), ("ground_truths", ground_truths)):
        if isinstance(value, Mapping) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a list with one dict per image; got {type(value).__name__}")
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"got {len(detections)} detections but {len(ground_truths)} ground_truths; "
            "there must be one entry per image, in the same order (an image without detections gets empty tensors)"
        )
    # A loop over images, at the boundary only: a few shape checks and conversions per image.
    dets = [_image_fields("detections", i, d, with_scores=True) for i, d in enumerate(detections)]
    gts = [_image_fields("ground_truths", i, g, with_scores=False) for i, g in enumerate(ground_truths)]
    num_images = len(dets)

    def concat(parts: list[tuple[np.ndarray, ...]], field: int, empty: np.ndarray) -> np.ndarray:
        return np.concatenate([p[field] for p in parts]) if parts else empty

    det_boxes = concat(dets, 0, np.zeros((0, 4)))
    det_labels = concat(dets, 1, np.zeros(0, np.int64))
    det_scores = concat(dets, 2, np.zeros(0))
    gt_boxes = concat(gts, 0, np.zeros((0, 4)))
    gt_labels = concat(gts, 1, np.zeros(0, np.int64))
    gt_difficult = concat(gts, 2, np.zeros(0, bool))
    det_images = np.repeat(np.arange(num_images), [len(d[0]) for d in dets])
    gt_images = np.repeat(np.arange(num_images), [len(g[0]) for g in gts])

    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(f"num_classes={num_classes} but class_names has {len(class_names)} names")
        num_classes = len(class_names)
    elif num_classes is None:  # infer C from the largest label present
        num_classes = int(max(det_labels.max(initial=0), gt_labels.max(initial=0)))
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (object classes, background not counted); got {num_classes}")
    if class_names is None:
        class_names = [str(label) for label in range(1, num_classes + 1)]

    _check_values("detections", det_boxes, det_labels, det_images, num_classes)
    _check_values("ground_truths", gt_boxes, gt_labels, gt_images, num_classes)
    if not np.isfinite(det_scores).all():
        raise ValueError(f"detections[{det_images[(~np.isfinite(det_scores)).argmax()]}]['scores'] has NaN or inf")
    return Flattened(
        det_boxes, det_scores, det_labels, det_images,
        gt_boxes, gt_labels, gt_difficult, gt_images,
        num_images, class_names,
    )
