"""PASCAL VOC average precision (paper Sec. 3.1-3.3: mAP@0.5 on VOC2007 and 2012).

Per class, rank every detection of that class over the whole test set by score, call each one a true
or false positive by greedy matching to the objects, and summarise the precision/recall curve by one
number, the average precision (AP). The mean over the classes is mAP.

Usage::

    from ssd_lib.metrics.voc import evaluate_voc, pr_curves
    result = evaluate_voc(detections, ground_truths)     # per image: {"boxes" (D, 4) xyxy, "scores", "labels"}
    print(result["mAP"], [c["ap"] for c in pr_curves(result)])

Conventions (each one is a choice; the tests pin them):

* **IoU** is continuous, ``inter / (area_a + area_b - inter)`` with ``area = (x2-x1)*(y2-y1)``, as in
  torchvision and pycocotools, so boxes may be in pixels or normalised to [0, 1] (only the same units
  for detections and ground truth matter). On ``ssd_lib.data.VOCDataset``'s pixel-edge boxes this *is*
  the devkit's IoU: the devkit (``VOCevalDet.m``) reads the XML's 1-based inclusive pixel indices and
  adds one pixel, ``w = xmax - xmin + 1`` and ``iw = min(xmax) - max(xmin) + 1``; our loader's
  ``x1 = xmin - 1, x2 = xmax`` already turns indices into edges, so ``x2 - x1 = xmax - xmin + 1`` and
  ``min(x2) - max(x1) = min(xmax) - max(xmin) + 1``, and a detection written back as the devkit reads
  it (``xmin = x1 + 1, xmax = x2``) gets the same IoU, to the last bit on integer-pixel boxes.
* **Inclusive pixel areas** (``inclusive_areas=True``) are for boxes that hold inclusive pixel
  *indices*, ``x2`` the last column inside the box: the XML's own integers, or py-faster-rcnn's and
  ssd.pytorch's 0-based ones (``xmin - 1`` on all four, their ``voc_eval`` then uses the "+1").
  Widths, heights and intersections become ``x2 - x1 + 1``, the devkit's rule. Not for our loaders'
  boxes: there it counts each box one pixel too wide and too high (the tests show an IoU crossing 0.5
  because of it). It needs pixels; normalised boxes raise a ValueError.
* **Threshold**: a detection hits an object when ``IoU >= iou_threshold``, as in the official VOC
  devkit (``VOCevalDet.m``: ``if ovmax>=VOCopts.minoverlap``) and pycocotools. py-faster-rcnn's
  ``voc_eval`` uses ``>``; the two differ only when an IoU equals the threshold exactly.
* **Ranking** is a stable sort by descending score (ties keep image order, then detection order),
  like the devkit's MATLAB ``sort``; py-faster-rcnn's ``np.argsort`` is not stable.
* **VOC2007 11-point AP** uses the recall levels of the code whose numbers are published:
  ``np.arange(0., 1.1, 0.1)`` in py-faster-rcnn's ``voc_ap`` (copied by ssd.pytorch and most
  reproductions) and ``np.arange(0, 1 + 1e-3, 0.1)`` in mmdetection, the same 11 floats. Three of them
  are one float step above their decimal: 0.30000000000000004, 0.6000000000000001, 0.7000000000000001,
  so a recall of exactly 3/10, 6/10 or 7/10 (3 of 10 objects found) does *not* reach that level. The
  exact tenths ``np.arange(11) / 10`` would count it, an AP higher by up to 1/11 per such level.
* **Classes without ground truth** (none, or only "difficult" ones) have no defined AP: NaN in
  ``ap`` and left out of the mean, not counted as 0.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .inputs import Flattened, flatten

__all__ = ["evaluate_voc", "average_precision", "precision_envelope", "mean_average_precision", "pr_curves",
           "paired_iou", "VOC07_RECALL_LEVELS"]

# The 11 recall levels of the VOC2007 AP, 0, 0.1, ..., 1 (Everingham et al., IJCV 2010, Sec. 4.2), as the
# reference code computes them: published VOC07 numbers use these floats, whose 0.3, 0.6 and 0.7 are one
# step too large, so a recall of exactly 3/10, 6/10 or 7/10 misses its level (see the docstring above).
VOC07_RECALL_LEVELS: np.ndarray = np.arange(0.0, 1.1, 0.1)

# Detection/ground-truth pairs whose IoU is computed in one numpy call; bounds memory (~8 arrays of
# this many float64) when an image holds many objects of one class.
_MAX_PAIRS_PER_CHUNK = 1 << 22


# ---------------------------------------------------------------------------------------------
# VOC: matching detections to objects
# ---------------------------------------------------------------------------------------------


def paired_iou(boxes_a: np.ndarray, boxes_b: np.ndarray, inclusive_areas: bool = False) -> np.ndarray:
    """IoU of row i of ``boxes_a`` with row i of ``boxes_b``: ``(P, 4), (P, 4) xyxy -> (P,)``.

    The diagonal of ``torchvision.ops.box_iou`` (same formula, float64). Evaluation needs only the
    pairs inside each (image, class) block, so the full N x M matrix would be wasted work.
    Two empty boxes at the same place have IoU 0 (the devkit needs a positive intersection too).
    ``inclusive_areas``: boxes are inclusive pixel indices, every extent is ``x2 - x1 + 1`` (the VOC
    devkit's rule; see the module docstring for when it applies).
    """
    one = 1.0 if inclusive_areas else 0.0
    top_left = np.maximum(boxes_a[:, :2], boxes_b[:, :2])
    bottom_right = np.minimum(boxes_a[:, 2:], boxes_b[:, 2:])
    inter = np.clip(bottom_right - top_left + one, 0, None).prod(axis=1)
    area_a = (boxes_a[:, 2] - boxes_a[:, 0] + one) * (boxes_a[:, 3] - boxes_a[:, 1] + one)
    area_b = (boxes_b[:, 2] - boxes_b[:, 0] + one) * (boxes_b[:, 3] - boxes_b[:, 1] + one)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _best_gt_per_detection(data: Flattened, inclusive_areas: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each detection, the object of the same image and class with the highest IoU (``paired_iou``'s).

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
        iou = paired_iou(data.det_boxes[pair_det], gt_boxes[pair_gt], inclusive_areas)
        run_max = np.maximum.reduceat(iou, run_start)
        # first pair of each run that reaches the run's maximum (argmax with first-wins ties)
        pair_pos = np.where(iou == np.repeat(run_max, run_len), np.arange(num_pairs), num_pairs)
        best_iou[det_idx] = run_max
        best_gt[det_idx] = pair_gt[np.minimum.reduceat(pair_pos, run_start)]
        start = stop
    return best_iou, best_gt, gt_order


def _label_detections(data: Flattened, iou_threshold: float,
                      inclusive_areas: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    best_iou, best_gt, gt_order = _best_gt_per_detection(data, inclusive_areas)
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
    precision at recall >= t (0 if recall never reaches t), t as the reference code computes it
    (:data:`VOC07_RECALL_LEVELS`: recall 3/10 does not reach its level 0.30000000000000004).
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
    inclusive_areas: bool = False,
) -> dict[str, Any]:
    """PASCAL VOC mean average precision of a whole dataset.

    ``detections``: one dict per image with ``boxes (D, 4)`` xyxy, ``scores (D,)``, ``labels (D,)``
    int in 1..C (as returned by ``ssd_lib.detect.detect``). ``ground_truths``: one dict per image with
    ``boxes (G, 4)`` xyxy, ``labels (G,)`` in 1..C and optionally ``difficult (G,)`` bool (missing:
    all False). Torch tensors or numpy arrays; any box units, the same for both.
    ``use_07_metric``: True for VOC2007's 11-point AP (the paper's VOC2007 numbers), False for the
    VOC2010+ area under the precision envelope. ``num_classes`` / ``class_names``: C, the object
    classes without background (default: the largest label present).
    ``inclusive_areas``: the boxes are inclusive pixel indices (the XML's integers, or py-faster-rcnn's
    and ssd.pytorch's ``xmin - 1``), so every extent is ``x2 - x1 + 1`` as in the devkit. Leave it off
    for ``ssd_lib``'s loaders: their pixel-edge boxes give the devkit's IoU without it (module docstring).

    Returns a dict, per-class entries indexed by ``label - 1``:
      ``mAP``: mean AP over the classes that have (non-difficult) ground truth, NaN if none has;
      ``ap``: list of C floats, NaN for a class without ground truth;
      ``classes_without_gt``: labels of those classes;
      ``precision``, ``recall``, ``scores``: C arrays ``(K,)``, the ranked PR curve of the class and
      the score at each rank (detections on difficult objects are left out; they change no AP;
      empty for a class without ground truth);
      ``num_gt``: non-difficult objects per class; ``num_detections``: detections per class;
      ``class_names``, ``iou_threshold``, ``use_07_metric``, ``inclusive_areas``: the settings used.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1]; got {iou_threshold} (VOC uses 0.5)")
    data = flatten(detections, ground_truths, num_classes, class_names)
    if inclusive_areas:
        _require_pixels(data)
    num_classes = len(data.class_names)
    order, is_tp, is_ignored = _label_detections(data, iou_threshold, inclusive_areas)

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
            for curve in (precision, recall, scores):
                curve.append(np.zeros(0))
            continue
        before_tp, before_fp = (tp_cum[lo - 1], fp_cum[lo - 1]) if lo > 0 else (0, 0)
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
        "inclusive_areas": bool(inclusive_areas),
    }


def _require_pixels(data: Flattened) -> None:
    """``inclusive_areas`` adds one pixel to every extent: on boxes normalised to [0, 1] that would make
    every box about the size of the image, so refuse them (the same test as metrics/coco.py's warning)."""
    largest = max(data.det_boxes.max(initial=0.0), data.gt_boxes.max(initial=0.0))
    if (len(data.det_boxes) or len(data.gt_boxes)) and largest <= 1.0:
        raise ValueError(f"inclusive_areas=True needs boxes in pixels, but every coordinate is <= 1 (largest "
                         f"{largest:g}): these look normalised to [0, 1]; scale them to pixels or leave "
                         f"inclusive_areas off")


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
