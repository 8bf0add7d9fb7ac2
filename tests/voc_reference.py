"""py-faster-rcnn's VOC evaluation (lib/datasets/voc_eval.py), transcribed once for the tests that check ours
against it: ``voc_eval_tp_fp`` (its loop that marks TPs and FPs), ``voc_ap`` (its AP of a curve) and ``voc_eval``
(one class of per-image dicts, the two together). tests/test_metrics.py, tests/test_checks_tp_fp.py and
tests/test_metrics_voc_protocol.py use them; the VOC devkit's own MATLAB loop, with its integer "+1" pixels, is
transcribed apart in tests/test_metrics_voc_protocol.py.
"""
from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------------------------------------
# py-faster-rcnn's voc_eval (lib/datasets/voc_eval.py), the loop that marks TPs and FPs, transcribed.
# Deliberate differences: no "+ 1." in widths and areas (continuous boxes, as ssd_lib.metrics.voc);
# a stable sort (np.argsort(-confidence) is quicksort; the devkit's MATLAB sort is stable). Its
# threshold is the original's strict ">" unless ``inclusive`` (the devkit's ">=", VOCevalDet.m).
# ---------------------------------------------------------------------------------------------

def voc_eval_tp_fp(det_image_ids, det_scores, det_boxes, gt_image_ids, gt_boxes, gt_difficult, ovthresh=0.5,
                   inclusive=False):
    """(tp, fp) as float arrays in the INPUT order of the detections (voc_eval's are in ranked order)."""
    det_image_ids, gt_image_ids = np.asarray(det_image_ids).tolist(), np.asarray(gt_image_ids).tolist()
    gt_boxes, gt_difficult = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4), np.asarray(gt_difficult, bool)
    class_recs = {}
    npos = 0
    for imagename in set(det_image_ids) | set(gt_image_ids):
        R = [j for j, image in enumerate(gt_image_ids) if image == imagename]
        bbox = gt_boxes[R]
        difficult = gt_difficult[R]
        det = [False] * len(R)
        npos = npos + sum(~difficult)
        class_recs[imagename] = {'bbox': bbox, 'difficult': difficult, 'det': det}

    image_ids = det_image_ids
    confidence = np.asarray(det_scores, dtype=np.float64)
    BB = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)

    # sort by confidence
    sorted_ind = np.argsort(-confidence, kind="stable")  # py-faster-rcnn: np.argsort(-confidence)
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]

    # go down dets and mark TPs and FPs
    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R['bbox'].astype(float)

        if BBGT.size > 0:
            # compute overlaps
            # intersection
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin, 0.)  # py-faster-rcnn: ixmax - ixmin + 1.
            ih = np.maximum(iymax - iymin, 0.)
            inters = iw * ih

            # union
            uni = ((bb[2] - bb[0]) * (bb[3] - bb[1]) +
                   (BBGT[:, 2] - BBGT[:, 0]) *
                   (BBGT[:, 3] - BBGT[:, 1]) - inters)

            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)

        if ovmax >= ovthresh if inclusive else ovmax > ovthresh:
            if not R['difficult'][jmax]:
                if not R['det'][jmax]:
                    tp[d] = 1.
                    R['det'][jmax] = 1
                else:
                    fp[d] = 1.
        else:
            fp[d] = 1.

    in_input_order = np.empty(nd, dtype=np.int64)
    in_input_order[sorted_ind] = np.arange(nd)
    return tp[in_input_order], fp[in_input_order]


def voc_ap(rec, prec, use_07_metric=True, levels=None):
    """``voc_ap(rec, prec, use_07_metric)``, line for line; ``levels`` replaces the 11 recall levels."""
    if use_07_metric:
        ap = 0.0
        for t in (np.arange(0.0, 1.1, 0.1) if levels is None else levels):  # as in py-faster-rcnn
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def voc_eval(detections, ground_truths, label, iou_threshold=0.5, use_07_metric=True, strict=False, levels=None):
    """One class of per-image dicts (``boxes``, ``scores``, ``labels``; ``difficult`` optional). Returns
    ``(recall, precision, ap, counted)`` in ranked order; ``counted`` marks the ranks that are TP or FP (the others
    hit a difficult object: the reference keeps them as tp = fp = 0 steps). ``strict``: py-faster-rcnn's ">"
    threshold; by default the devkit's ">=", as ``ssd_lib.metrics.voc``."""
    gt_ids, gt_boxes, gt_difficult = [], [np.zeros((0, 4))], [np.zeros(0, bool)]
    for i, target in enumerate(ground_truths):
        keep = np.asarray(target["labels"]) == label
        gt_ids += [i] * int(keep.sum())
        gt_boxes.append(np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4)[keep])
        gt_difficult.append(np.asarray(target.get("difficult", np.zeros(len(keep), bool)), dtype=bool)[keep])
    det_ids, scores, boxes = [], [np.zeros(0)], [np.zeros((0, 4))]
    for i, d in enumerate(detections):
        mine = np.asarray(d["labels"]) == label
        det_ids += [i] * int(mine.sum())
        scores.append(np.asarray(d["scores"], dtype=np.float64)[mine])
        boxes.append(np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 4)[mine])
    scores, difficult = np.concatenate(scores), np.concatenate(gt_difficult)
    tp, fp = voc_eval_tp_fp(det_ids, scores, np.concatenate(boxes), gt_ids, np.concatenate(gt_boxes), difficult,
                            iou_threshold, inclusive=not strict)
    ranked = np.argsort(-scores, kind="stable")
    tp, fp = tp[ranked], fp[ranked]
    counted = (tp + fp) > 0
    npos = int(np.sum(~difficult))
    if npos == 0:
        return np.zeros(0), np.zeros(0), float("nan"), counted
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec, voc_ap(rec, prec, use_07_metric, levels), counted
