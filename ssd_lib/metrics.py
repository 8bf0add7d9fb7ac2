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

Conventions (each one is a choice; the tests pin them):

* **IoU** is continuous, ``inter / (area_a + area_b - inter)`` with ``area = (x2-x1)*(y2-y1)``, as in
  torchvision and pycocotools; the VOC devkit's "+1 pixel" areas are not used, so boxes may be in
  pixels or normalised to [0, 1] (only the same units for detections and ground truth matter).
* **Threshold**: a detection hits an object when ``IoU >= iou_threshold``, as in the official VOC
  devkit (``VOCevalDet.m``: ``if ovmax>=VOCopts.minoverlap``) and pycocotools. py-faster-rcnn's
  ``voc_eval`` uses ``>``; the two differ only when an IoU equals the threshold exactly.
* **Ranking** is a stable sort by descending score (ties keep image order, then detection order),
  like the devkit's MATLAB ``sort``; py-faster-rcnn's ``np.argsort`` is not stable.
* **VOC2007 11-point AP** uses the recall levels k/10 exactly. py-faster-rcnn's
  ``np.arange(0., 1.1, 0.1)`` makes 0.3, 0.6 and 0.7 one float step too large (0.30000000000000004),
  which drops a point whose recall is exactly 3/10, 6/10 or 7/10 (e.g. 3 of 10 objects found).
* **Classes without ground truth** (none, or only "difficult" ones) have no defined AP: NaN in
  ``ap`` and left out of the mean, not counted as 0.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = [
    "evaluate_voc",
    "evaluate_coco",
    "average_precision",
    "precision_envelope",
    "pr_curves",
    "paired_iou",
    "VOC07_RECALL_LEVELS",
]

# The 11 recall levels of the VOC2007 AP, 0, 0.1, ..., 1 (Everingham et al., IJCV 2010, Sec. 4.2).
# Computed as k / 10 so that each level is the double nearest to its decimal (see the module docstring).
VOC07_RECALL_LEVELS: np.ndarray = np.arange(11) / 10

# Detection/ground-truth pairs whose IoU is computed in one numpy call; bounds memory (~8 arrays of
# this many float64) when an image holds many objects of one class.
_MAX_PAIRS_PER_CHUNK = 1 << 22


# ---------------------------------------------------------------------------------------------
# Input: one flat array per field over the whole dataset, validated once at the boundary
# ---------------------------------------------------------------------------------------------


class _Dataset(NamedTuple):
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


def _to_numpy(value: Any) -> np.ndarray:
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
    boxes = _to_numpy(entry["boxes"])
    if boxes.size == 0:  # accept torch.zeros(0) as well as torch.zeros(0, 4) for an empty image
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{kind}[{index}]['boxes'] must have shape (N, 4) xyxy; got {tuple(boxes.shape)}")
    num_boxes = len(boxes)

    def per_box(key: str, value: Any) -> np.ndarray:
        array = _to_numpy(value)
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


def _flatten(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    num_classes: int | None,
    class_names: Sequence[str] | None,
) -> _Dataset:
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
    return _Dataset(
        det_boxes, det_scores, det_labels, det_images,
        gt_boxes, gt_labels, gt_difficult, gt_images,
        num_images, class_names,
    )


# ---------------------------------------------------------------------------------------------
# VOC: matching detections to objects
# ---------------------------------------------------------------------------------------------


def paired_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of row i of ``boxes_a`` with row i of ``boxes_b``: ``(P, 4), (P, 4) xyxy -> (P,)``.

    The diagonal of ``torchvision.ops.box_iou`` (same formula, float64). Evaluation needs only the
    pairs inside each (image, class) block, so the full N x M matrix would be wasted work.
    Two empty boxes at the same place have IoU 0 (the devkit needs a positive intersection too).
    """
    inter_w = np.clip(np.minimum(boxes_a[:, 2], boxes_b[:, 2]) - np.maximum(boxes_a[:, 0], boxes_b[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(boxes_a[:, 3], boxes_b[:, 3]) - np.maximum(boxes_a[:, 1], boxes_b[:, 1]), 0, None)
    inter = inter_w * inter_h
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _best_gt_per_detection(data: _Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each detection, the object of the same image and class with the highest IoU.

    Returns ``best_iou (T,)`` (-inf when the image has no object of that class), ``best_gt (T,)``
    (index into the returned order, -1 when none) and ``gt_order (G,)``: the ground truth sorted by
    (image, class), stably, so that among equal IoUs the first object in annotation order wins,
    like ``max`` in the devkit and ``np.argmax`` in py-faster-rcnn.
    """
    num_keys = len(data.class_names) + 1
    gt_keys = data.gt_images * num_keys + data.gt_labels
    gt_order = np.argsort(gt_keys, kind="stable")
    gt_keys = gt_keys[gt_order]
    gt_boxes = data.gt_boxes[gt_order]

    # Each detection's candidates are one contiguous run gt_boxes[first : first + count].
    det_keys = data.det_images * num_keys + data.det_labels
    first = np.searchsorted(gt_keys, det_keys, side="left")
    count = np.searchsorted(gt_keys, det_keys, side="right") - first

    best_iou = np.full(len(det_keys), -np.inf)
    best_gt = np.full(len(det_keys), -1, dtype=np.int64)
    with_gt = np.flatnonzero(count)
    pairs_before = np.concatenate(([0], np.cumsum(count[with_gt])))
    start = 0
    while start < len(with_gt):  # chunks of at most _MAX_PAIRS_PER_CHUNK pairs (one chunk in practice)
        stop = np.searchsorted(pairs_before, pairs_before[start] + _MAX_PAIRS_PER_CHUNK, side="right") - 1
        stop = max(stop, start + 1)
        det_idx = with_gt[start:stop]
        run_len = count[det_idx]
        run_start = np.cumsum(run_len) - run_len  # where each detection's run of pairs starts
        num_pairs = int(run_len.sum())
        pair_det = np.repeat(det_idx, run_len)
        pair_gt = np.repeat(first[det_idx] - run_start, run_len) + np.arange(num_pairs)
        iou = paired_iou(data.det_boxes[pair_det], gt_boxes[pair_gt])
        run_max = np.maximum.reduceat(iou, run_start)
        # first pair of each run that reaches the run's maximum (argmax with first-wins ties)
        pair_pos = np.where(iou == np.repeat(run_max, run_len), np.arange(num_pairs), num_pairs)
        best_iou[det_idx] = run_max
        best_gt[det_idx] = pair_gt[np.minimum.reduceat(pair_pos, run_start)]
        start = stop
    return best_iou, best_gt, gt_order


def _label_detections(data: _Dataset, iou_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """VOC's greedy matching, without a loop over detections.

    The devkit walks the detections of a class in descending score; each one looks at the object
    with the highest IoU (matched or not). IoU >= threshold: a difficult object -> ignored; an
    unmatched object -> true positive, which marks it matched; a matched one -> false positive
    (a duplicate). Otherwise: false positive.
    The object a detection looks at does not depend on what is already matched, so the walk
    reduces to: a detection is a TP iff it is the *highest-ranked* of the detections that hit the
    same non-difficult object. That is a "first occurrence" query on the ranked list (np.unique).

    Returns ``order (T,)``: detection indices sorted by (class, descending score, input order),
    ``is_tp (T,)`` and ``is_ignored (T,)`` (hits on difficult objects), indexed like the input.
    """
    best_iou, best_gt, gt_order = _best_gt_per_detection(data)
    num_dets = len(best_iou)
    hit = best_iou >= iou_threshold  # >= as in the VOC devkit (py-faster-rcnn: >)
    difficult = data.gt_difficult[gt_order]
    is_ignored = np.zeros(num_dets, dtype=bool)
    is_ignored[hit] = difficult[best_gt[hit]]  # "difficult" objects: neither TP nor FP
    # Stable ranking: lexsort's last key is the primary one; ties in score keep the input order.
    order = np.lexsort((np.arange(num_dets), -data.det_scores, data.det_labels))
    candidates = order[(hit & ~is_ignored)[order]]  # ranked hits on countable objects
    _, first_hit = np.unique(best_gt[candidates], return_index=True)  # first occurrence per object
    is_tp = np.zeros(num_dets, dtype=bool)
    is_tp[candidates[first_hit]] = True
    return order, is_tp, is_ignored


# ---------------------------------------------------------------------------------------------
# From a precision/recall curve to one number
# ---------------------------------------------------------------------------------------------


def precision_envelope(precision: np.ndarray) -> np.ndarray:
    """Monotone envelope: at each rank the best precision at this or any higher recall. ``(K,) -> (K,)``.

    This is the "interpolated precision" of VOC: precision is allowed to go up when a later
    detection is correct, and the envelope removes those wiggles.
    """
    precision = np.asarray(precision, dtype=np.float64)
    return np.maximum.accumulate(precision[::-1])[::-1]


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP of one class from its ranked PR curve, ``recall (K,)`` non-decreasing, ``precision (K,)``.

    ``use_07_metric=True``: VOC2007's 11-point AP, the mean over t in {0, 0.1, ..., 1} of the best
    precision at recall >= t (0 if recall never reaches t).
    ``use_07_metric=False``: VOC2010+, the area under the precision envelope (every recall step counts).
    An empty curve (no detections) has AP 0.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.shape != precision.shape or recall.ndim != 1:
        raise ValueError(f"recall and precision must be 1-D of equal length; got {recall.shape} and {precision.shape}")
    if use_07_metric:
        envelope = np.append(precision_envelope(precision), 0.0)  # index K: recall never reaches t
        first_at_level = np.searchsorted(recall, VOC07_RECALL_LEVELS, side="left")
        return float(envelope[first_at_level].mean())
    # Area under the envelope, with sentinels (recall 0 and 1, precision 0) as in the devkit's VOCap.m.
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = precision_envelope(np.concatenate(([0.0], precision, [0.0])))
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


# ---------------------------------------------------------------------------------------------
# Public evaluation functions
# ---------------------------------------------------------------------------------------------


def mean_average_precision(ap: Sequence[float], num_gt: Sequence[int]) -> float:
    """The mean of the per-class ``ap`` over the classes with ground truth (``num_gt > 0``); the AP of a
    class without objects is undefined, not 0. NaN when no class has ground truth."""
    with_gt = np.asarray(num_gt) > 0
    return float(np.asarray(ap, dtype=np.float64)[with_gt].mean()) if with_gt.any() else float("nan")


def evaluate_voc(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """PASCAL VOC mean average precision of a whole dataset.

    ``detections``: one dict per image with ``boxes (D, 4)`` xyxy, ``scores (D,)``, ``labels (D,)``
    int in 1..C (as returned by ``ssd_lib.detect.detect``). ``ground_truths``: one dict per image with
    ``boxes (G, 4)`` xyxy, ``labels (G,)`` in 1..C and optionally ``difficult (G,)`` bool (missing:
    all False). Torch tensors or numpy arrays; any box units, the same for both.
    ``use_07_metric``: True for VOC2007's 11-point AP (the paper's VOC2007 numbers), False for the
    VOC2010+ area under the precision envelope. ``num_classes`` / ``class_names``: C, the object
    classes without background (default: the largest label present).

    Returns a dict, per-class entries indexed by ``label - 1``:
      ``mAP``: mean AP over the classes that have (non-difficult) ground truth, NaN if none has;
      ``ap``: list of C floats, NaN for a class without ground truth;
      ``classes_without_gt``: labels of those classes;
      ``precision``, ``recall``, ``scores``: C arrays ``(K,)``, the ranked PR curve of the class and
      the score at each rank (detections on difficult objects are left out; they change no AP;
      empty for a class without ground truth);
      ``num_gt``: non-difficult objects per class; ``num_detections``: detections per class;
      ``class_names``, ``iou_threshold``, ``use_07_metric``: the settings used.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1]; got {iou_threshold} (VOC uses 0.5)")
    data = _flatten(detections, ground_truths, num_classes, class_names)
    num_classes = len(data.class_names)
    order, is_tp, is_ignored = _label_detections(data, iou_threshold)

    num_gt = np.bincount(data.gt_labels[~data.gt_difficult], minlength=num_classes + 1)[1:]
    num_dets = np.bincount(data.det_labels, minlength=num_classes + 1)[1:]
    ranked = order[~is_ignored[order]]  # the curve skips detections on difficult objects
    ranked_labels = data.det_labels[ranked]
    bounds = np.searchsorted(ranked_labels, np.arange(1, num_classes + 2))
    tp_cum = np.cumsum(is_tp[ranked])
    fp_cum = np.cumsum(~is_tp[ranked])

    ap, precision, recall, scores = [], [], [], []
    # A loop over the C classes, not hot: a few numpy calls on each class's slice of the ranking.
    for label in range(1, num_classes + 1):
        lo, hi = bounds[label - 1], bounds[label]
        if num_gt[label - 1] == 0:  # AP undefined: reported as NaN, left out of the mean
            ap.append(float("nan"))
            precision.append(np.zeros(0))
            recall.append(np.zeros(0))
            scores.append(np.zeros(0))
            continue
        before_tp = tp_cum[lo - 1] if lo > 0 else 0
        before_fp = fp_cum[lo - 1] if lo > 0 else 0
        tp = (tp_cum[lo:hi] - before_tp).astype(np.float64)
        fp = (fp_cum[lo:hi] - before_fp).astype(np.float64)
        recall.append(tp / num_gt[label - 1])
        precision.append(tp / (tp + fp))  # tp + fp >= 1: ignored detections are not in the curve
        scores.append(data.det_scores[ranked[lo:hi]])
        ap.append(average_precision(recall[-1], precision[-1], use_07_metric))

    with_gt = num_gt > 0
    return {
        "mAP": mean_average_precision(ap, num_gt),
        "ap": ap,
        "classes_without_gt": [int(label) for label in np.flatnonzero(~with_gt) + 1],
        "precision": precision,
        "recall": recall,
        "scores": scores,
        "num_gt": [int(n) for n in num_gt],
        "num_detections": [int(n) for n in num_dets],
        "class_names": list(data.class_names),
        "iou_threshold": float(iou_threshold),
        "use_07_metric": bool(use_07_metric),
    }


def pr_curves(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-class PR curves of an :func:`evaluate_voc` result, ready to plot (no plotting here).

    One dict per class that has ground truth: ``label``, ``name``, ``ap``, ``recall (K,)``,
    ``precision (K,)``, ``precision_envelope (K,)`` (the monotone curve whose area is the
    VOC2010+ AP) and ``scores (K,)`` (the score threshold at each point). A notebook draws
    ``plt.step(c["recall"], c["precision_envelope"], where="post")`` for each ``c``.
    """
    curves = []
    for k, ap in enumerate(result["ap"]):
        if np.isnan(ap):
            continue
        curves.append({
            "label": k + 1,
            "name": result["class_names"][k],
            "ap": ap,
            "recall": result["recall"][k],
            "precision": result["precision"][k],
            "precision_envelope": precision_envelope(result["precision"][k]),
            "scores": result["scores"][k],
        })
    return curves


# ---------------------------------------------------------------------------------------------
# COCO, through pycocotools
# ---------------------------------------------------------------------------------------------

_COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _coco_annotations(boxes: np.ndarray, labels: np.ndarray, images: np.ndarray, **extra: np.ndarray) -> list[dict]:
    """COCO annotation dicts: xyxy -> xywh, ids from 1, area = w * h (no masks here)."""
    xywh = np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), axis=1)
    area = xywh[:, 2] * xywh[:, 3]
    columns = {"image_id": (images + 1).tolist(), "category_id": labels.tolist(), "bbox": xywh.tolist(),
               "area": area.tolist(), **{key: value.tolist() for key, value in extra.items()}}
    keys = list(columns)
    return [dict(zip(keys, row), id=k + 1) for k, row in enumerate(zip(*columns.values()))]


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
    scaled to pixels first. AP, AP50, AP75 do not depend on the units.

    "difficult" objects become ``iscrowd=1`` regions: a detection that matches no regular object
    but covers a difficult one is ignored, however many there are, which is VOC's "neither TP nor
    FP". (A crowd region's IoU is intersection / detection area.) The ``ignore`` field would be the
    obvious choice, but ``COCOeval._prepare`` overwrites it with ``iscrowd``, so it has no effect.

    Returns ``AP`` (IoU 0.50:0.95), ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1``, ``AR10``,
    ``AR100``, ``ARs``, ``ARm``, ``ARl`` as floats (NaN where undefined, e.g. no large objects;
    pycocotools writes -1 there), ``stats`` (the raw 12 numbers of ``COCOeval.summarize``, -1 kept),
    ``ap_per_class`` (C floats, AP 0.50:0.95 per class, NaN without ground truth) and ``class_names``.
    pycocotools keeps the 100 best detections per image and class (``maxDets``).
    Prints pycocotools' report only when ``verbose``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = _flatten(detections, ground_truths, num_classes, class_names)
    det_boxes, gt_boxes = data.det_boxes, data.gt_boxes
    if image_sizes is not None:
        sizes = _to_numpy(image_sizes).astype(np.float64)
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
    gt_anns = _coco_annotations(gt_boxes, data.gt_labels, data.gt_images, iscrowd=data.gt_difficult.astype(int))
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
