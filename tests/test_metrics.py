"""Tests for ssd_lib.metrics: hand-computed APs, a loop-based re-implementation of the reference
``voc_eval`` (py-faster-rcnn, after the VOC devkit), and pycocotools for COCO."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from voc_reference import voc_eval  # tests/voc_reference.py
from ssd_lib.metrics import voc as voc_metrics  # the module that holds the chunk size
from ssd_lib.metrics import (
    average_precision,
    evaluate_coco,
    evaluate_voc,
    paired_iou,
    pr_curves,
    precision_envelope,
)

BOTH_METRICS = pytest.mark.parametrize("use_07_metric", [True, False], ids=["voc07", "voc10"])


def det(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float64),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def gt(boxes, labels, difficult=None):
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if difficult is not None:
        target["difficult"] = torch.tensor(difficult, dtype=torch.bool)
    return target


# Three disjoint objects and a spot with nothing on it.
A, B, C = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]
NOWHERE = [100, 100, 110, 110]


# ---------------------------------------------------------------------------------------------
# Reference: py-faster-rcnn's voc_eval / voc_ap written out with loops, as in the original.
# Deliberate differences, each matching the VOC devkit or the module's documented conventions:
# IoU without "+1" (continuous boxes), ">=" threshold (VOCevalDet.m), stable sort by score
# (MATLAB sort), NaN AP for a class without positives. The 11 recall levels are py-faster-rcnn's own.
# ---------------------------------------------------------------------------------------------




def assert_matches_reference(detections, ground_truths, num_classes, iou_threshold=0.5, use_07_metric=True):
    result = evaluate_voc(detections, ground_truths, iou_threshold, use_07_metric, num_classes=num_classes)
    for label in range(1, num_classes + 1):
        rec, prec, ap, counted = voc_eval(detections, ground_truths, label, iou_threshold, use_07_metric)
        if math.isnan(ap):
            assert math.isnan(result["ap"][label - 1])
            continue
        assert result["ap"][label - 1] == pytest.approx(ap, abs=1e-9)
        np.testing.assert_allclose(result["recall"][label - 1], rec[counted], rtol=0, atol=1e-12)
        np.testing.assert_allclose(result["precision"][label - 1], prec[counted], rtol=0, atol=1e-12)
    valid = [ap for ap in result["ap"] if not math.isnan(ap)]
    if valid:
        assert result["mAP"] == pytest.approx(np.mean(valid), abs=1e-12)
    else:
        assert math.isnan(result["mAP"])
    return result


def random_dataset(seed, num_images=30, num_classes=4, max_gt=6, max_dets=25, difficult_rate=0.1, jitter=4.0):
    """Pixel boxes in a 200 x 200 image: detections are jittered copies of objects (sometimes with
    the wrong label) plus random boxes, scores uniform. Torch tensors, as the model would give."""
    rng = np.random.default_rng(seed)
    detections, ground_truths = [], []
    for _ in range(num_images):
        g = int(rng.integers(0, max_gt + 1))
        xy = rng.uniform(0, 150, (g, 2))
        gt_boxes = np.concatenate((xy, xy + rng.uniform(5, 50, (g, 2))), axis=1)
        gt_labels = rng.integers(1, num_classes + 1, g)
        n_jit = int(rng.integers(0, max_dets + 1)) if g else 0
        src = rng.integers(0, max(g, 1), n_jit)
        jit_boxes = gt_boxes[src] + rng.normal(0, jitter, (n_jit, 4)) if g else np.zeros((0, 4))
        wrong_labels = rng.integers(1, num_classes + 1, n_jit)
        jit_labels = np.where(rng.random(n_jit) < 0.8, gt_labels[src] if g else wrong_labels, wrong_labels)
        n_rand = int(rng.integers(0, max_dets - n_jit + 1))
        xy = rng.uniform(0, 150, (n_rand, 2))
        rand_boxes = np.concatenate((xy, xy + rng.uniform(5, 50, (n_rand, 2))), axis=1)
        boxes = np.concatenate((jit_boxes, rand_boxes))
        boxes = np.concatenate((np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])), 1)
        labels = np.concatenate((jit_labels, rng.integers(1, num_classes + 1, n_rand))).astype(np.int64)
        detections.append({"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(rng.random(len(boxes))),
                           "labels": torch.from_numpy(labels)})
        ground_truths.append({"boxes": torch.from_numpy(gt_boxes), "labels": torch.from_numpy(gt_labels),
                              "difficult": torch.from_numpy(rng.random(g) < difficult_rate)})
    return detections, ground_truths


# ---------------------------------------------------------------------------------------------
# Hand-made cases with exactly known AP
# ---------------------------------------------------------------------------------------------


@BOTH_METRICS
def test_perfect_detector_has_ap_one(use_07_metric):
    targets = [gt([A, B], [1, 2]), gt([C], [1])]
    dets = [det([A, B], [0.9, 0.8], [1, 2]), det([C], [0.7], [1])]
    result = evaluate_voc(dets, targets, use_07_metric=use_07_metric)
    assert result["ap"] == [1.0, 1.0] and result["mAP"] == 1.0
    assert result["num_gt"] == [2, 1] and result["num_detections"] == [2, 1]
    np.testing.assert_array_equal(result["recall"][0], [0.5, 1.0])
    np.testing.assert_array_equal(result["precision"][0], [1.0, 1.0])


def test_one_missed_object_caps_voc07_ap_at_ten_elevenths():
    # Lesson 9's remark: 19 of 20 objects found with perfect precision; recall stops at 0.95, so the
    # 11th level (recall 1) scores 0 and AP11 = 10/11, while the all-point area is 0.95.
    boxes = [np.array([[10.0 * i, 0, 10.0 * i + 8, 8]]) for i in range(20)]
    targets = [gt(b, [1]) for b in boxes]
    dets = [det(b, [0.9 - 0.01 * i], [1]) for i, b in enumerate(boxes[:19])] + [det([], [], [])]
    assert evaluate_voc(dets, targets, use_07_metric=True)["mAP"] == pytest.approx(10 / 11)
    assert evaluate_voc(dets, targets, use_07_metric=False)["mAP"] == pytest.approx(0.95)


@BOTH_METRICS
def test_only_false_positives_has_ap_zero(use_07_metric):
    targets = [gt([A], [1]), gt([B], [1])]
    dets = [det([NOWHERE, B], [0.9, 0.8], [1, 1]), det([], [], [])]  # B is in the other image
    result = evaluate_voc(dets, targets, use_07_metric=use_07_metric)
    assert result["ap"] == [0.0] and result["mAP"] == 0.0


@BOTH_METRICS
def test_no_detections_at_all_has_ap_zero(use_07_metric):
    result = evaluate_voc([det([], [], [])], [gt([A], [1])], use_07_metric=use_07_metric)
    assert result["ap"] == [0.0] and result["precision"][0].size == 0


@pytest.mark.parametrize("use_07_metric, expected", [(True, 28 / 33), (False, 5 / 6)], ids=["voc07", "voc10"])
def test_duplicate_detection_is_a_false_positive(use_07_metric, expected):
    # Ranked: TP (A), duplicate of A -> FP, TP (B). recall 1/2, 1/2, 1; precision 1, 1/2, 2/3.
    # voc07: levels 0..0.5 -> 1 (6 levels), 0.6..1 -> 2/3 (5 levels): (6 + 10/3) / 11 = 28/33.
    # voc10: 1/2 * 1 + 1/2 * 2/3 = 5/6.
    result = evaluate_voc([det([A, A, B], [0.9, 0.8, 0.7], [1, 1, 1])], [gt([A, B], [1, 1])],
                          use_07_metric=use_07_metric)
    assert result["mAP"] == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(result["precision"][0], [1, 0.5, 2 / 3])
    np.testing.assert_allclose(result["recall"][0], [0.5, 0.5, 1])


@pytest.mark.parametrize("use_07_metric, expected", [(True, 0.5), (False, 0.5)], ids=["voc07", "voc10"])
def test_detections_on_difficult_objects_change_nothing(use_07_metric, expected):
    # Object D is difficult. Two detections on it (a duplicate too) are neither TP nor FP, so the
    # class is scored as if D and those detections were absent: FP then TP, recall 0 then 1,
    # precision 0 then 1/2 -> AP 1/2 for both metrics.
    D = [60, 0, 70, 10]
    with_difficult = evaluate_voc(
        [det([NOWHERE, D, D, A], [0.95, 0.9, 0.88, 0.85], [1, 1, 1, 1])],
        [gt([A, D], [1, 1], difficult=[False, True])], use_07_metric=use_07_metric)
    absent = evaluate_voc([det([NOWHERE, A], [0.95, 0.85], [1, 1])], [gt([A], [1])], use_07_metric=use_07_metric)
    assert with_difficult["mAP"] == absent["mAP"] == pytest.approx(expected, abs=1e-12)
    assert with_difficult["num_gt"] == [1] and with_difficult["num_detections"] == [4]
    np.testing.assert_array_equal(with_difficult["precision"][0], absent["precision"][0])
    np.testing.assert_array_equal(with_difficult["recall"][0], absent["recall"][0])


def test_difficult_object_not_marked_and_missing_flag_means_not_difficult():
    dets = [det([A, NOWHERE], [0.9, 0.8], [1, 1])]
    missing = evaluate_voc(dets, [gt([A], [1])])
    explicit = evaluate_voc(dets, [gt([A], [1], difficult=[False])])
    as_numpy = evaluate_voc([{k: v.numpy() for k, v in dets[0].items()}], [{"boxes": np.array([A], float),
                                                                             "labels": np.array([1])}])
    assert missing["ap"] == explicit["ap"] == as_numpy["ap"] == [1.0]


def test_class_without_ground_truth_is_excluded_from_the_mean():
    # Class 1 perfect; class 2 has detections but no objects; class 3 nothing; class 4 only a
    # difficult object. Counting the empty classes as 0 would give mAP 1/4 (the tutorial bug).
    targets = [gt([A, C], [1, 4], difficult=[False, True])]
    dets = [det([A, B], [0.9, 0.8], [1, 2])]
    result = evaluate_voc(dets, targets, num_classes=4)
    assert result["ap"][0] == 1.0 and all(math.isnan(ap) for ap in result["ap"][1:])
    assert result["mAP"] == 1.0
    assert result["classes_without_gt"] == [2, 3, 4]
    assert result["num_gt"] == [1, 0, 0, 0] and result["num_detections"] == [1, 1, 0, 0]
    assert result["recall"][1].size == 0 and result["precision"][1].size == 0
    assert [c["label"] for c in pr_curves(result)] == [1]


def test_no_ground_truth_at_all_gives_nan_map():
    result = evaluate_voc([det([A], [0.9], [1])], [gt([], [])])
    assert math.isnan(result["mAP"]) and result["classes_without_gt"] == [1]


@pytest.mark.parametrize("use_07_metric", [True, False], ids=["voc07", "voc10"])
@pytest.mark.parametrize("height, expected", [(5.0, 1.0), (5.001, 1.0), (4.999, 0.0)],
                         ids=["iou_exactly_0.5", "just_above", "just_below"])
def test_iou_threshold_is_inclusive(height, expected, use_07_metric):
    # GT A has area 100; [0, 0, 10, h] lies inside it: IoU = 10 h / 100 (exactly 0.5 for h = 5).
    dets = [det([[0, 0, 10, height]], [0.9], [1])]
    result = evaluate_voc(dets, [gt([A], [1])], use_07_metric=use_07_metric)
    assert result["mAP"] == expected
    # py-faster-rcnn's strict ">" would reject IoU exactly 0.5; the VOC devkit (and we) accept it.
    _, _, strict_ap, _ = voc_eval(dets, [gt([A], [1])], 1, 0.5, use_07_metric, strict=True)
    assert strict_ap == pytest.approx(0.0 if height == 5.0 else expected, abs=1e-12)


def test_iou_threshold_argument():
    dets = [det([[0, 0, 10, 6]], [0.9], [1])]  # IoU 0.6
    assert evaluate_voc(dets, [gt([A], [1])], iou_threshold=0.6)["mAP"] == 1.0
    assert evaluate_voc(dets, [gt([A], [1])], iou_threshold=0.7)["mAP"] == 0.0


@pytest.mark.parametrize("use_07_metric, expected", [(True, 41 / 55), (False, 11 / 15)], ids=["voc07", "voc10"])
def test_a_low_scored_true_positive_after_false_positives(use_07_metric, expected):
    # Ranked: TP A (.9), FP (.8), FP (.7), TP B (.6), TP C (.5), with 3 objects.
    # recall 1/3 1/3 1/3 2/3 1; precision 1 1/2 1/3 1/2 3/5; envelope 1 3/5 3/5 3/5 3/5.
    # voc07: levels 0, .1, .2, .3 (<= 1/3) -> 1; .4 ... 1 (7 levels) -> 3/5: (4 + 4.2) / 11 = 41/55.
    # voc10: 1/3 * 1 + 1/3 * 3/5 + 1/3 * 3/5 = 11/15.
    dets = [det([A, NOWHERE, NOWHERE, B, C], [0.9, 0.8, 0.7, 0.6, 0.5], [1] * 5)]
    result = evaluate_voc(dets, [gt([A, B, C], [1, 1, 1])], use_07_metric=use_07_metric)
    assert result["mAP"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("use_07_metric, expected", [(True, 47 / 55), (False, 13 / 15)], ids=["voc07", "voc10"])
def test_ranking_by_score_matters(use_07_metric, expected):
    # The same five detections, but B now outscores the two false positives.
    # recall 1/3 2/3 2/3 2/3 1; precision 1 1 2/3 1/2 3/5; envelope 1 1 3/5 3/5 3/5.
    # voc07: levels 0 ... .6 -> 1 (7), .7 ... 1 -> 3/5 (4): 9.4 / 11 = 47/55. voc10: 2/3 + 1/3 * 3/5 = 13/15.
    dets = [det([A, NOWHERE, NOWHERE, B, C], [0.9, 0.8, 0.7, 0.85, 0.5], [1] * 5)]
    result = evaluate_voc(dets, [gt([A, B, C], [1, 1, 1])], use_07_metric=use_07_metric)
    assert result["mAP"] == pytest.approx(expected, abs=1e-12)


def test_ranking_is_over_the_whole_dataset_not_per_image():
    # Image 0's FP outscores image 1's TP: ranked TP (.9), FP (.8), TP (.7) -> voc10 AP 5/6.
    dets = [det([A, NOWHERE], [0.9, 0.8], [1, 1]), det([A], [0.7], [1])]
    result = evaluate_voc(dets, [gt([A], [1]), gt([A], [1])], use_07_metric=False)
    assert result["mAP"] == pytest.approx(5 / 6, abs=1e-12)
    np.testing.assert_array_equal(result["scores"][0], [0.9, 0.8, 0.7])


def test_equal_scores_keep_input_order():
    # Stable ranking: with equal scores the FP (listed first) ranks before the TP.
    dets = [det([NOWHERE, A], [0.5, 0.5], [1, 1])]
    result = evaluate_voc(dets, [gt([A], [1])], use_07_metric=False)
    np.testing.assert_array_equal(result["precision"][0], [0.0, 0.5])


def test_detection_takes_the_best_overlap_even_if_already_matched():
    # VOC rule: a detection looks only at its highest-IoU object. The second detection overlaps A
    # (IoU 0.905) more than the unmatched A2 (IoU 0.739), so it is a duplicate of A -> FP.
    A2 = [2, 0, 12, 10]
    dets = [det([A, [0.5, 0, 10.5, 10]], [0.9, 0.8], [1, 1])]
    result = evaluate_voc(dets, [gt([A, A2], [1, 1])], use_07_metric=False)
    np.testing.assert_array_equal(result["precision"][0], [1.0, 0.5])
    assert result["mAP"] == pytest.approx(0.5, abs=1e-12)


def test_equal_overlaps_go_to_the_first_object_in_annotation_order():
    # The detection overlaps both objects with IoU 9/11. Like the devkit's max (and np.argmax), it
    # takes the first one listed: listed first, the difficult object absorbs it (ignored, AP 0);
    # listed second, the detection is a TP on the other object (AP 1).
    A2 = [2, 0, 12, 10]
    dets = [det([[1, 0, 11, 10]], [0.9], [1])]
    difficult_first = evaluate_voc(dets, [gt([A, A2], [1, 1], difficult=[True, False])])
    difficult_second = evaluate_voc(dets, [gt([A2, A], [1, 1], difficult=[False, True])])
    assert difficult_first["mAP"] == 0.0 and difficult_first["precision"][0].size == 0
    assert difficult_second["mAP"] == 1.0


def test_voc07_recall_levels_are_the_reference_floats():
    # 10 objects, 3 found: recall reaches exactly 3/10. py-faster-rcnn's np.arange(0., 1.1, 0.1) has
    # 0.30000000000000004 > 0.3, so that level is not reached: AP = 3/11, as the published code gives.
    # The exact tenths k / 10 would count it: 4/11 (tests/test_metrics_voc_protocol.py has more cases).
    objects = [[20 * i, 0, 20 * i + 10, 10] for i in range(10)]
    dets = [det(objects[:3], [0.9, 0.8, 0.7], [1, 1, 1])]
    targets = [gt(objects, [1] * 10)]
    assert evaluate_voc(dets, targets)["mAP"] == pytest.approx(3 / 11, abs=1e-12)
    _, _, exact_tenths_ap, _ = voc_eval(dets, targets, 1, levels=np.arange(11) / 10)
    assert exact_tenths_ap == pytest.approx(4 / 11, abs=1e-12)


def test_average_precision_of_simple_curves():
    assert average_precision(np.zeros(0), np.zeros(0), True) == 0.0
    assert average_precision(np.zeros(0), np.zeros(0), False) == 0.0
    # a single TP finding half the objects
    assert average_precision(np.array([0.5]), np.array([1.0]), False) == 0.5
    assert average_precision(np.array([0.5]), np.array([1.0]), True) == pytest.approx(6 / 11)
    np.testing.assert_array_equal(precision_envelope(np.array([0.5, 1.0, 0.2, 0.4])), [1.0, 1.0, 0.4, 0.4])
    with pytest.raises(ValueError, match="1-D of equal length"):
        average_precision(np.zeros(2), np.zeros(3))


def test_pr_curves_for_plotting():
    dets = [det([A, NOWHERE, B], [0.9, 0.8, 0.7], [1, 1, 1])]
    result = evaluate_voc(dets, [gt([A, B], [1, 1])], class_names=["cat"])
    (curve,) = pr_curves(result)
    assert curve["name"] == "cat" and curve["label"] == 1 and curve["ap"] == result["ap"][0]
    np.testing.assert_allclose(curve["precision_envelope"], [1, 2 / 3, 2 / 3])
    np.testing.assert_allclose(curve["scores"], [0.9, 0.8, 0.7])
    assert np.all(np.diff(curve["precision_envelope"]) <= 0)


# ---------------------------------------------------------------------------------------------
# Against the loop-based reference
# ---------------------------------------------------------------------------------------------


@st.composite
def tiny_datasets(draw):
    """Integer boxes on a 12 x 12 grid and scores from a few values: many exact IoU and score ties,
    duplicates, difficult objects and images without objects."""
    coord = st.integers(0, 8)
    size = st.integers(1, 5)

    def boxes(n):
        return [[x, y, x + w, y + h] for x, y, w, h in
                (draw(st.tuples(coord, coord, size, size)) for _ in range(n))]

    num_classes = 3
    detections, ground_truths = [], []
    for _ in range(draw(st.integers(1, 4))):
        g = draw(st.integers(0, 4))
        ground_truths.append(gt(boxes(g), draw(st.lists(st.integers(1, num_classes), min_size=g, max_size=g)),
                                draw(st.lists(st.booleans(), min_size=g, max_size=g))))
        d = draw(st.integers(0, 6))
        scores = draw(st.lists(st.sampled_from([0.2, 0.5, 0.7, 0.9]), min_size=d, max_size=d))
        detections.append(det(boxes(d), scores, draw(st.lists(st.integers(1, num_classes), min_size=d, max_size=d))))
    return detections, ground_truths, num_classes


@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=tiny_datasets(), iou_threshold=st.sampled_from([0.3, 0.5, 0.7]), use_07_metric=st.booleans())
def test_matches_reference_on_tiny_datasets_with_ties(data, iou_threshold, use_07_metric):
    detections, ground_truths, num_classes = data
    assert_matches_reference(detections, ground_truths, num_classes, iou_threshold, use_07_metric)


@pytest.mark.parametrize("seed", [0, 1, 2])
@BOTH_METRICS
def test_matches_reference_on_random_datasets(seed, use_07_metric):
    detections, ground_truths = random_dataset(seed, num_images=40)
    assert_matches_reference(detections, ground_truths, 4, 0.5, use_07_metric)


def test_chunked_iou_gives_the_same_answer(monkeypatch):
    # Force many small chunks in the pairwise IoU step (normally one chunk).
    detections, ground_truths = random_dataset(7, num_images=20, max_gt=10, max_dets=40)
    expected = evaluate_voc(detections, ground_truths, num_classes=4)
    monkeypatch.setattr(voc_metrics, "_MAX_PAIRS_PER_CHUNK", 5)
    chunked = evaluate_voc(detections, ground_truths, num_classes=4)
    assert chunked["ap"] == expected["ap"]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.tuples(*[st.floats(0, 50, allow_nan=False)] * 4, *[st.floats(0, 50, allow_nan=False)] * 4),
                min_size=1, max_size=20))
def test_paired_iou_is_the_diagonal_of_torchvision_box_iou(rows):
    rows = np.array(rows)
    a = np.concatenate((np.minimum(rows[:, 0:2], rows[:, 2:4]), np.maximum(rows[:, 0:2], rows[:, 2:4])), 1)
    b = np.concatenate((np.minimum(rows[:, 4:6], rows[:, 6:8]), np.maximum(rows[:, 4:6], rows[:, 6:8])), 1)
    expected = torch.diagonal(box_iou(torch.from_numpy(a), torch.from_numpy(b))).numpy()
    expected = np.nan_to_num(expected, nan=0.0)  # two empty boxes: torchvision 0/0, ours 0
    np.testing.assert_allclose(paired_iou(a, b), expected, rtol=1e-12, atol=1e-12)



# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------


def test_background_detections_are_rejected_with_a_hint():
    with pytest.raises(ValueError, match=r"detections\[0\] has label 0, the background class; drop"):
        evaluate_voc([det([A], [0.9], [0])], [gt([A], [1])])
    with pytest.raises(ValueError, match="object labels start at 1"):
        evaluate_voc([det([A], [0.9], [1])], [gt([A], [0])])


@pytest.mark.parametrize("detections, ground_truths, error, match", [
    ([det([A], [0.9], [1])], [], ValueError, "1 detections but 0 ground_truths"),
    ([{"boxes": torch.zeros(1, 5), "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.long)}],
     [gt([A], [1])], ValueError, r"detections\[0\]\['boxes'\] must have shape \(N, 4\)"),
    ([det([A], [0.9, 0.8], [1])], [gt([A], [1])], ValueError, r"'scores'\] must have shape \(1,\)"),
    ([det([[10, 0, 0, 10]], [0.9], [1])], [gt([A], [1])], ValueError, "x2 >= x1"),
    ([det([A], [0.9], [1])], [gt([A], [1])], None, None),
    ([{"boxes": torch.tensor([A], dtype=torch.float), "scores": torch.ones(1), "labels": torch.ones(1)}],
     [gt([A], [1])], TypeError, r"must hold integers .* \.long\(\)"),
    ([{"boxes": torch.tensor([A], dtype=torch.float), "labels": torch.ones(1, dtype=torch.long)}],
     [gt([A], [1])], ValueError, "has no 'scores' entry"),
    ([det([A], [float("nan")], [1])], [gt([A], [1])], ValueError, "NaN or inf"),
    ([det([A], [0.9], [3])], [gt([A], [1])], ValueError, "label 3 but there are only 2 classes"),
    (det([A], [0.9], [1]), [gt([A], [1])], TypeError, "one dict per image"),
])
def test_invalid_inputs_get_clear_errors(detections, ground_truths, error, match):
    if error is None:
        evaluate_voc(detections, ground_truths, num_classes=2)
        return
    with pytest.raises(error, match=match):
        evaluate_voc(detections, ground_truths, num_classes=2)


def test_bad_settings():
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        evaluate_voc([det([A], [0.9], [1])], [gt([A], [1])], iou_threshold=0.0)
    with pytest.raises(ValueError, match="class_names has 2 names"):
        evaluate_voc([det([A], [0.9], [1])], [gt([A], [1])], num_classes=3, class_names=["a", "b"])


def test_empty_images_in_any_shape_are_accepted():
    empty_det = {"boxes": torch.zeros(0), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    result = evaluate_voc([empty_det, det([A], [0.9], [1])], [{"boxes": [], "labels": []}, gt([A], [1])])
    assert result["ap"] == [1.0]


# ---------------------------------------------------------------------------------------------
# COCO (pycocotools)
# ---------------------------------------------------------------------------------------------


def coco_101_point_ap(recall, precision):
    """pycocotools' AP at one IoU: precision envelope at the 101 recall levels 0:.01:1 (0 beyond the curve)."""
    levels = np.linspace(0.0, 1.0, 101)  # as COCOeval's Params.recThrs
    envelope = np.append(precision_envelope(precision), 0.0)
    return float(envelope[np.searchsorted(recall, levels, side="left")].mean())


def test_coco_perfect_detector():
    targets = [gt([A, [0, 0, 100, 100]], [1, 2]), gt([C], [1])]
    dets = [det([A, [0, 0, 100, 100]], [0.9, 0.8], [1, 2]), det([C], [0.7], [1])]
    result = evaluate_coco(dets, targets)
    for key in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100", "APs", "APl"):
        assert result[key] == pytest.approx(1.0), key
    assert math.isnan(result["APm"]) and result["stats"][4] == -1  # no medium object: undefined
    assert result["ap_per_class"] == pytest.approx([1.0, 1.0])
    assert evaluate_voc(dets, targets)["mAP"] == 1.0


def test_coco_zero_detections_gives_zeros():
    result = evaluate_coco([det([], [], [])] * 2, [gt([A], [1]), gt([B], [2])])
    for key in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100"):
        assert result[key] == 0.0, key
    assert result["ap_per_class"] == [0.0, 0.0]


def test_coco_is_quiet_unless_verbose(capsys):
    evaluate_coco([det([A], [0.9], [1])], [gt([A], [1])])
    assert capsys.readouterr().out == ""
    evaluate_coco([det([A], [0.9], [1])], [gt([A], [1])], verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_coco_difficult_objects_are_crowd_regions():
    # Detections on the difficult object D (two of them) are ignored, as in VOC.
    D = [60, 0, 70, 10]
    targets = [gt([A, D], [1, 1], difficult=[False, True])]
    dets = [det([D, A, D], [0.95, 0.9, 0.85], [1, 1, 1])]
    result = evaluate_coco(dets, targets)
    assert result["AP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)
    assert evaluate_voc(dets, targets)["mAP"] == 1.0


def test_coco_normalised_boxes_with_image_sizes_equal_pixel_boxes():
    detections, ground_truths = random_dataset(11, num_images=10)
    sizes = [(200, 400)] * 5 + [(300, 250)] * 5
    scale = [torch.tensor([w, h, w, h], dtype=torch.float64) for h, w in sizes]
    norm_dets = [{**d, "boxes": d["boxes"] / s} for d, s in zip(detections, scale)]
    norm_gts = [{**g, "boxes": g["boxes"] / s} for g, s in zip(ground_truths, scale)]
    pixel_dets = [{**d, "boxes": d["boxes"] / s * s} for d, s in zip(detections, scale)]  # same rounding
    pixel_gts = [{**g, "boxes": g["boxes"] / s * s} for g, s in zip(ground_truths, scale)]
    from_norm = evaluate_coco(norm_dets, norm_gts, image_sizes=sizes)
    from_pixels = evaluate_coco(pixel_dets, pixel_gts)
    np.testing.assert_allclose(from_norm["stats"], from_pixels["stats"], atol=1e-12)
    with pytest.warns(UserWarning, match="pass image_sizes"):
        evaluate_coco(norm_dets, norm_gts)


def grid_dataset(seed, num_images=60, num_classes=5, dets_per_image=100):
    """Objects in distinct cells of a 4 x 4 grid of 100-pixel cells, so no two overlap; each
    detection overlaps at most one object of its class, and VOC and COCO match it the same way."""
    rng = np.random.default_rng(seed)
    detections, ground_truths = [], []
    for _ in range(num_images):
        g = int(rng.integers(1, 9))
        cells = rng.choice(16, g, replace=False)
        corner = np.stack((cells % 4, cells // 4), 1) * 100.0 + rng.uniform(0, 30, (g, 2))
        gt_boxes = np.concatenate((corner, corner + rng.uniform(20, 70, (g, 2))), 1)
        gt_labels = rng.integers(1, num_classes + 1, g)
        n_jit = int(rng.integers(0, dets_per_image // 2))
        src = rng.integers(0, g, n_jit)
        jit = gt_boxes[src] + rng.normal(0, 8, (n_jit, 4))
        xy = rng.uniform(0, 350, (dets_per_image - n_jit, 2))
        rand = np.concatenate((xy, xy + rng.uniform(10, 60, xy.shape)), 1)
        boxes = np.concatenate((jit, rand))
        boxes = np.concatenate((np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])), 1)
        jit_labels = np.where(rng.random(n_jit) < 0.9, gt_labels[src], rng.integers(1, num_classes + 1, n_jit))
        labels = np.concatenate((jit_labels, rng.integers(1, num_classes + 1, len(rand))))
        detections.append(det(boxes, rng.random(len(boxes)), labels))
        ground_truths.append(gt(gt_boxes, gt_labels))
    return detections, ground_truths


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_ap50_is_the_101_point_ap_of_the_voc_curve(seed):
    # Where the definitions agree -- IoU 0.5, no difficult/crowd objects, <= 100 detections per
    # image (no maxDets truncation), objects of a class never overlapping -- pycocotools' AP50 is
    # the VOC PR curve summarised at 101 recall levels (not VOC's 11 levels or all points).
    # Remaining differences: pycocotools divides by tp + fp + 2.2e-16, far below the tolerance.
    detections, ground_truths = grid_dataset(seed)
    voc = evaluate_voc(detections, ground_truths, num_classes=5)
    per_class = [coco_101_point_ap(r, p) for r, p in zip(voc["recall"], voc["precision"])]
    coco = evaluate_coco(detections, ground_truths, num_classes=5)
    assert coco["AP50"] == pytest.approx(np.mean(per_class), abs=1e-6)
    assert abs(coco["AP50"] - voc["mAP"]) < 0.05  # 11-point AP is close to, but not, the 101-point one


def test_coco_and_voc_differ_when_objects_overlap():
    # COCO lets a detection skip an already-matched object and take the next best (IoU >= 0.5);
    # VOC looks only at the best-overlapping object and calls the detection a duplicate.
    # See test_detection_takes_the_best_overlap_even_if_already_matched: VOC (all-point) AP 0.5.
    A2 = [2, 0, 12, 10]
    dets = [det([A, [0.5, 0, 10.5, 10]], [0.9, 0.8], [1, 1])]
    targets = [gt([A, A2], [1, 1])]
    voc = evaluate_voc(dets, targets, use_07_metric=False)
    assert coco_101_point_ap(voc["recall"][0], voc["precision"][0]) == pytest.approx(51 / 101)
    assert evaluate_coco(dets, targets)["AP50"] == pytest.approx(1.0)


def test_coco_excludes_classes_without_ground_truth():
    result = evaluate_coco([det([A, B], [0.9, 0.8], [1, 2])], [gt([A], [1])], class_names=["cat", "dog"])
    assert result["AP"] == pytest.approx(1.0)
    assert result["ap_per_class"][0] == pytest.approx(1.0) and math.isnan(result["ap_per_class"][1])
    assert result["class_names"] == ["cat", "dog"]


def test_coco_validates_like_voc():
    with pytest.raises(ValueError, match="background class"):
        evaluate_coco([det([A], [0.9], [0])], [gt([A], [1])])
    with pytest.raises(ValueError, match="one \\(height, width\\) per image"):
        evaluate_coco([det([A], [0.9], [1])], [gt([A], [1])], image_sizes=[(1, 2), (3, 4)])
