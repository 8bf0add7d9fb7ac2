"""VOC2007 evaluation exactly as the reference code computes it (issue #19, "Evaluation protocols").

Two conventions, each tested against a transcription of code we did not write:

* the 11-point AP's recall levels: py-faster-rcnn's ``voc_ap(rec, prec, use_07_metric=True)`` (copied by
  ssd.pytorch) loops over ``np.arange(0., 1.1, 0.1)``, whose 0.3, 0.6 and 0.7 are one float step too large;
* the devkit's inclusive pixel areas (``VOCevalDet.m``: ``iw = min(xmax) - max(xmin) + 1``) on the XML's
  1-based integer boxes, against ``evaluate_voc`` on the same boxes in our loader's pixel-edge coordinates
  (``x1 = xmin - 1, x2 = xmax``, ``ssd_lib/data/voc.py``) and on the integers with ``inclusive_areas=True``.
"""
from __future__ import annotations

import numpy as np
import pytest

from voc_reference import voc_ap  # tests/voc_reference.py
from ssd_lib.evaluate import evaluate_predictor
from ssd_lib.metrics import VOC07_RECALL_LEVELS, average_precision, evaluate_voc, paired_iou

# ---------------------------------------------------------------------------------------------
# Transcriptions of the reference code
# ---------------------------------------------------------------------------------------------


def devkit_iou(bb, bbgt):
    """VOCevalDet.m's overlap of a detection ``bb`` with an object ``bbgt``, both 1-based inclusive pixel
    indices ``(xmin, ymin, xmax, ymax)``; -inf when they do not overlap (``ovmax`` stays -inf)."""
    bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
    iw = bi[2] - bi[0] + 1
    ih = bi[3] - bi[1] + 1
    if iw > 0 and ih > 0:
        ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih
        return iw * ih / ua
    return -np.inf


def devkit_ap(detections, ground_truths, label, minoverlap=0.5):
    """VOCevalDet.m's greedy assignment of one class (detections sorted by descending confidence,
    ``ovmax >= minoverlap``, difficult objects neither TP nor FP), then py-faster-rcnn's 11-point AP.
    Boxes: 1-based inclusive pixel integers."""
    gt = [{"bb": g["boxes"][g["labels"] == label], "diff": g["difficult"][g["labels"] == label]} for g in ground_truths]
    for g in gt:
        g["det"] = np.zeros(len(g["bb"]), dtype=bool)
    npos = sum(int((~g["diff"]).sum()) for g in gt)
    ids, confidence, boxes = [], [], []
    for i, d in enumerate(detections):
        mine = d["labels"] == label
        ids += [i] * int(mine.sum())
        confidence += list(d["scores"][mine])
        boxes += list(d["boxes"][mine])
    order = np.argsort(-np.asarray(confidence), kind="stable")  # MATLAB's sort is stable
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, k in enumerate(order):
        g = gt[ids[k]]
        ovmax, jmax = -np.inf, -1
        for j, bbgt in enumerate(g["bb"]):
            ov = devkit_iou(boxes[k], bbgt)
            if ov > ovmax:
                ovmax, jmax = ov, j
        if ovmax >= minoverlap:
            if not g["diff"][jmax]:
                if not g["det"][jmax]:
                    tp[d] = 1
                    g["det"][jmax] = True
                else:
                    fp[d] = 1  # multiple detection
        else:
            fp[d] = 1
    if npos == 0:
        return float("nan")
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(rec, prec)


def to_edges(boxes):
    """Our VOC loader's conversion of XML boxes: x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax."""
    return np.asarray(boxes, dtype=np.float64) - np.array([1.0, 1.0, 0.0, 0.0])


def in_coordinates(dataset, convert):
    return [{**entry, "boxes": convert(entry["boxes"])} for entry in dataset]


# ---------------------------------------------------------------------------------------------
# 11-point AP: the reference's recall levels
# ---------------------------------------------------------------------------------------------


def pr_curve(hits, num_gt=10):
    tp = np.cumsum(np.asarray(hits, dtype=bool))
    fp = np.cumsum(~np.asarray(hits, dtype=bool))
    return tp / num_gt, tp / (tp + fp)


T, F = True, False
CURVES = {  # 10 objects each: recall passes through or stops at exactly 3/10, 6/10 or 7/10
    "stops at 3/10": [T, T, T],
    "stops at 6/10": [T, T, T, F, T, T, T, F],
    "stops at 7/10": [F, T, T, T, T, T, T, T],
    "passes 3/10 with its best precision there": [T, T, T, F, F, T, F, T, T, F, T, T, T, T],
    "passes 6/10 and 7/10": [T, F, T, T, T, T, F, T, F, T, F, F, T, F, T],
}


def test_recall_levels_are_the_reference_floats():
    np.testing.assert_array_equal(VOC07_RECALL_LEVELS, np.arange(0.0, 1.1, 0.1))
    assert [float(t) for t in VOC07_RECALL_LEVELS[[3, 6, 7]]] == [0.30000000000000004, 0.6000000000000001,
                                                                  0.7000000000000001]
    assert 3 / 10 < VOC07_RECALL_LEVELS[3] and 6 / 10 < VOC07_RECALL_LEVELS[6] and 7 / 10 < VOC07_RECALL_LEVELS[7]


@pytest.mark.parametrize("name", list(CURVES))
def test_11_point_ap_is_py_faster_rcnn_voc_ap(name):
    recall, precision = pr_curve(CURVES[name])
    reference = voc_ap(recall, precision)
    assert average_precision(recall, precision, use_07_metric=True) == pytest.approx(reference, abs=1e-12)
    # The case bites: the exact tenths k / 10 count the point at recall 3/10, 6/10 or 7/10 and give another AP.
    exact_tenths = voc_ap(recall, precision, True, levels=np.arange(11) / 10)
    assert abs(exact_tenths - reference) > 0.01


def test_evaluate_voc_with_7_of_10_objects_found():
    objects = np.array([[20.0 * i, 0, 20 * i + 10, 10] for i in range(10)])
    detections = [{"boxes": objects[:7], "scores": np.linspace(0.9, 0.3, 7), "labels": np.ones(7, dtype=np.int64)}]
    truths = [{"boxes": objects, "labels": np.ones(10, dtype=np.int64)}]
    # levels 0 .. 0.6000000000000001 reach precision 1 (seven of them); 0.7000000000000001 is never reached
    assert evaluate_voc(detections, truths)["mAP"] == pytest.approx(7 / 11, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# The devkit's inclusive pixel areas
# ---------------------------------------------------------------------------------------------

GT_XML = [1, 1, 10, 10]  # a 10 x 10 pixel object, XML corners
HIT_XML = [1, 1, 5, 10]  # devkit IoU 50 / 100 = 0.5: a hit (>=); plain IoU on the integers 36 / 81 < 0.5
MISS_XML = [5, 1, 13, 10]  # devkit IoU 60 / 130 < 0.5; with "+1" on our edges 77 / 154 = 0.5, a hit


def one_box_per_image():
    """Two images, the same object in each; detection HIT (score 0.9) in one, MISS (0.8) in the other.
    1-based inclusive XML integers."""
    def image(box, score):
        det = {"boxes": np.array([box]), "scores": np.array([score]), "labels": np.array([1])}
        return det, {"boxes": np.array([GT_XML]), "labels": np.array([1]), "difficult": np.array([False])}
    (d0, g0), (d1, g1) = image(HIT_XML, 0.9), image(MISS_XML, 0.8)
    return [d0, d1], [g0, g1]


def test_the_pair_ious_under_each_convention():
    assert devkit_iou(HIT_XML, GT_XML) == 0.5 and devkit_iou(MISS_XML, GT_XML) == 60 / 130
    boxes, gt = np.array([HIT_XML, MISS_XML], dtype=np.float64), np.array([GT_XML, GT_XML], dtype=np.float64)
    np.testing.assert_array_equal(paired_iou(to_edges(boxes), to_edges(gt)), [0.5, 60 / 130])  # = devkit
    np.testing.assert_array_equal(paired_iou(boxes, gt, inclusive_areas=True), [0.5, 60 / 130])  # = devkit
    np.testing.assert_array_equal(paired_iou(boxes, gt), [36 / 81, 45 / 108])  # plain IoU on indices: too small
    np.testing.assert_array_equal(paired_iou(to_edges(boxes), to_edges(gt), inclusive_areas=True),
                                  [66 / 121, 77 / 154])  # "+1" on edges: one pixel too many, too large


def test_devkit_map_on_a_pair_that_crosses_one_half():
    detections, truths = one_box_per_image()
    devkit = devkit_ap(detections, truths, 1)
    assert devkit == pytest.approx(6 / 11, abs=1e-12)  # HIT is a TP, MISS a FP: recall 1/2 at precision 1
    edges = evaluate_voc(in_coordinates(detections, to_edges), in_coordinates(truths, to_edges))
    assert edges["mAP"] == pytest.approx(devkit, abs=1e-12) and not edges["inclusive_areas"]
    indices = evaluate_voc(detections, truths, inclusive_areas=True)
    assert indices["mAP"] == pytest.approx(devkit, abs=1e-12) and indices["inclusive_areas"]
    # The conventions matter here: plain IoU on the indices misses both, "+1" on our edges hits both.
    assert evaluate_voc(detections, truths)["mAP"] == 0.0
    assert evaluate_voc(in_coordinates(detections, to_edges), in_coordinates(truths, to_edges),
                        inclusive_areas=True)["mAP"] == 1.0


def random_integer_dataset(seed, num_images=12, num_classes=3):
    """Integer XML boxes (1-based inclusive) in a 60 x 60 image; detections near the objects, whose IoU
    lands close to 0.5 often, plus random ones; some objects difficult."""
    rng = np.random.default_rng(seed)
    detections, truths = [], []
    for _ in range(num_images):
        g = int(rng.integers(0, 5))
        xy = rng.integers(1, 40, (g, 2))
        gt = np.concatenate((xy, xy + rng.integers(0, 20, (g, 2))), axis=1)
        labels = rng.integers(1, num_classes + 1, g)
        src = rng.integers(0, max(g, 1), 2 * g)
        near = gt[src] + rng.integers(-4, 5, (2 * g, 4)) if g else np.zeros((0, 4), int)
        far_xy = rng.integers(1, 50, (3, 2))
        boxes = np.concatenate((near, np.concatenate((far_xy, far_xy + rng.integers(0, 10, (3, 2))), axis=1)))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])  # xmax >= xmin: at least one pixel
        det_labels = np.concatenate((labels[src] if g else np.zeros(0, int), rng.integers(1, num_classes + 1, 3)))
        detections.append({"boxes": boxes.astype(np.float64), "scores": rng.random(len(boxes)), "labels": det_labels})
        truths.append({"boxes": gt.astype(np.float64), "labels": labels, "difficult": rng.random(g) < 0.15})
    return detections, truths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_devkit_on_integer_boxes_equals_evaluate_voc_on_our_edges(seed):
    detections, truths = random_integer_dataset(seed)
    edges = evaluate_voc(in_coordinates(detections, to_edges), in_coordinates(truths, to_edges), num_classes=3)
    indices = evaluate_voc(detections, truths, num_classes=3, inclusive_areas=True)
    # ssd.pytorch / py-faster-rcnn hold the same boxes 0-based (xmin - 1 on all four) and use the "+1" too.
    zero_based = evaluate_voc(in_coordinates(detections, lambda b: b - 1.0), in_coordinates(truths, lambda b: b - 1.0),
                              num_classes=3, inclusive_areas=True)
    plain = evaluate_voc(detections, truths, num_classes=3)
    for label in (1, 2, 3):
        devkit = devkit_ap(detections, truths, label)
        for result in (edges, indices, zero_based):
            assert result["ap"][label - 1] == pytest.approx(devkit, abs=1e-12, nan_ok=True)
    assert plain["ap"] != pytest.approx(edges["ap"], abs=1e-3, nan_ok=True)  # the convention changes these APs


def test_inclusive_areas_needs_pixel_boxes():
    detections, truths = one_box_per_image()
    normalised = (in_coordinates(detections, lambda b: b / 100), in_coordinates(truths, lambda b: b / 100))
    with pytest.raises(ValueError, match="inclusive_areas=True needs boxes in pixels"):
        evaluate_voc(*normalised, inclusive_areas=True)
    assert evaluate_voc(*normalised)["mAP"] == 0.0  # off, units do not matter: 36 / 81 and 45 / 108 miss


def test_evaluate_predictor_passes_inclusive_areas_through():
    detections, truths = one_box_per_image()
    dataset = [(np.zeros((3, 16, 16)), truth) for truth in truths]
    by_image = iter(detections)

    def predict(images):
        return [next(by_image) for _ in images]

    assert evaluate_predictor(predict, dataset, batch_size=1, inclusive_areas=True)["mAP"] == pytest.approx(6 / 11)
