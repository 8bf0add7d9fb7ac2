"""Tests for ``check_tp_fp`` (lesson 9): VOC's true/false positive assignment of one class's detections.

The checker's reference (:func:`ssd_lib.course.checks.metrics.voc_tp_fp`, the library's ``_label_detections``)
is cross-checked against a reference we did not write: py-faster-rcnn's ``voc_eval`` loop, transcribed
below in its own style (``class_recs``, ``ovmax``, ``jmax``, ``R['det']``). Then: a learner-style
solution passes, each common mistake fails on the case built for it with the hint that names it, a
solution that calls the library fails with the tripwire's message, other seeds pass, and a memorised
solution fails the hidden tests.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torchvision

from check_results import assert_fails_on  # tests/check_results.py
from check_results import on_its_reference  # tests/check_results.py
from voc_reference import voc_eval_tp_fp  # tests/voc_reference.py
from ssd_lib.course import checks
from ssd_lib.course.checks import check_tp_fp, hidden_tests
from ssd_lib.course.checks.metrics import _outcomes, _random_case, _walk, voc_tp_fp
from ssd_lib.course.checks.tripwire import FORBIDDEN
from ssd_lib.metrics import average_precision, evaluate_voc

P = functools.partial


def continuous_case(seed, num_images=5, num_gt=12, num_dets=30, crowded=False):
    """Random boxes with float coordinates (no IoU lands exactly on 0.5), scores with ties, some difficult;
    ``crowded``: objects packed together, so that a detection often overlaps several of them."""
    rng = np.random.default_rng(seed)
    gt_image_ids = rng.integers(0, num_images - 1, num_gt)  # the last image has no objects
    xy = rng.uniform(0, 12 if crowded else 60, (num_gt, 2))
    gt_boxes = np.concatenate((xy, xy + rng.uniform(5, 30, (num_gt, 2))), axis=1)
    gt_difficult = rng.random(num_gt) < 0.2
    source = rng.integers(0, num_gt, num_dets)
    det_boxes = gt_boxes[source] + rng.normal(0, 3, (num_dets, 4))
    det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
    det_image_ids = np.where(rng.random(num_dets) < 0.85, gt_image_ids[source], rng.integers(0, num_images, num_dets))
    det_scores = rng.integers(1, 8, num_dets) / 8  # ties
    return (torch.as_tensor(det_image_ids), torch.as_tensor(det_scores), torch.as_tensor(det_boxes),
            torch.as_tensor(gt_image_ids), torch.as_tensor(gt_boxes), torch.as_tensor(gt_difficult), 0.5)


def as_flags(tp, fp):
    return np.asarray(tp, bool).tolist(), np.asarray(fp, bool).tolist()


@pytest.mark.parametrize("crowded", (False, True))
@pytest.mark.parametrize("seed", range(20))
def test_reference_agrees_with_py_faster_rcnn_voc_eval(seed, crowded):
    args = continuous_case(seed, crowded=crowded)
    assert as_flags(*voc_tp_fp(*args)) == as_flags(*voc_eval_tp_fp(*args))


@pytest.mark.parametrize("seed", range(25))
def test_reference_agrees_with_the_inclusive_voc_eval_on_the_checkers_random_cases(seed):
    """The checker's own random cases (pixel coordinates, where IoU can be exactly 0.5) with the devkit's >=."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(3):
        args = _random_case(generator)
        assert as_flags(*voc_tp_fp(*args)) == as_flags(*voc_eval_tp_fp(*args, inclusive=True))
        assert as_flags(*voc_tp_fp(*args)) == as_flags(*_walk(args))  # the diagnoses start from the same rule


def one_image(dets, gts):
    """Arguments for one image from (score, box) detections and (box, difficult) objects."""
    return (torch.zeros(len(dets), dtype=torch.long), torch.tensor([s for s, _ in dets]),
            torch.tensor([b for _, b in dets], dtype=torch.float32).reshape(-1, 4),
            torch.zeros(len(gts), dtype=torch.long),
            torch.tensor([b for b, _ in gts], dtype=torch.float32).reshape(-1, 4),
            torch.tensor([d for _, d in gts], dtype=torch.bool), 0.5)


def test_best_overlap_decides_even_when_it_is_difficult():
    """The devkit takes the BEST overlap, then looks at whether that object is difficult: the detection is
    ignored although a normal object also overlaps it by IoU 0.67 >= 0.5. voc_eval and the library agree."""
    args = one_image([(0.9, [2, 0, 12, 10])], [([0, 0, 10, 10], False), ([2, 0, 12, 10], True)])
    assert as_flags(*voc_tp_fp(*args)) == ([False], [False])
    assert as_flags(*voc_eval_tp_fp(*args)) == ([False], [False])
    truth = [{"boxes": args[4], "labels": torch.ones(2, dtype=torch.long), "difficult": args[5]}]
    found = [{"boxes": args[2], "scores": args[1], "labels": torch.ones(1, dtype=torch.long)}]
    result = evaluate_voc(found, truth, num_classes=1)
    assert result["num_gt"] == [1] and len(result["recall"][0]) == 0  # ignored: not on the curve


def test_iou_exactly_half_is_a_hit_in_the_devkit_not_in_voc_eval():
    args = one_image([(0.9, [0, 0, 10, 5])], [([0, 0, 10, 10], False)])  # IoU 50 / 100
    assert as_flags(*voc_tp_fp(*args)) == ([True], [False])
    assert as_flags(*voc_eval_tp_fp(*args, inclusive=True)) == ([True], [False])
    assert as_flags(*voc_eval_tp_fp(*args)) == ([False], [True])  # py-faster-rcnn's ">"


def test_ties_in_score_keep_the_input_order():
    """Both library paths rank with a stable sort: of two equal scores the detection given first ranks first."""
    args = one_image([(0.8, [0, 0, 10, 9]), (0.8, [0, 0, 10, 10])], [([0, 0, 10, 10], False)])
    assert as_flags(*voc_tp_fp(*args)) == ([True, False], [False, True])
    truth = [{"boxes": args[4], "labels": torch.ones(1, dtype=torch.long)}]
    found = [{"boxes": args[2], "scores": args[1], "labels": torch.ones(2, dtype=torch.long)}]
    assert evaluate_voc(found, truth, num_classes=1)["precision"][0].tolist() == [1.0, 0.5]


@pytest.mark.parametrize("seed", range(5))
def test_reference_flags_give_evaluate_vocs_curve_and_ap(seed):
    """What the notebook does with the learner's function: the curve from the flags is evaluate_voc's."""
    args = continuous_case(seed)
    by_image = torch.argsort(args[0], stable=True)  # input order = image order, as evaluate_voc's flattening
    args = (*(a[by_image] for a in args[:3]), *args[3:])
    det_images, scores, det_boxes, gt_images, gt_boxes, difficult, _ = args
    is_tp, is_fp = voc_tp_fp(*args)
    order = torch.argsort(scores, descending=True, stable=True)
    counted = (is_tp | is_fp)[order]
    tp, fp = np.cumsum(is_tp[order][counted].numpy()), np.cumsum(is_fp[order][counted].numpy())
    recall, precision = tp / int((~difficult).sum()), tp / (tp + fp)
    images = range(5)
    found = [{"boxes": det_boxes[det_images == i], "scores": scores[det_images == i],
              "labels": torch.ones(int((det_images == i).sum()), dtype=torch.long)} for i in images]
    truth = [{"boxes": gt_boxes[gt_images == i], "difficult": difficult[gt_images == i],
              "labels": torch.ones(int((gt_images == i).sum()), dtype=torch.long)} for i in images]
    result = evaluate_voc(found, truth, num_classes=1)
    np.testing.assert_array_equal(result["recall"][0], recall)
    np.testing.assert_array_equal(result["precision"][0], precision)
    assert result["ap"][0] == average_precision(recall, precision)


# ---------------------------------------------------------------------------------------------
# A learner's solution, as the notebook's; each flag switches on one common mistake.
# ---------------------------------------------------------------------------------------------

def my_tp_fp(det_image_ids, det_scores, det_boxes, gt_image_ids, gt_boxes, gt_difficult, iou_threshold=0.5, *,
             rank="stable", once=True, difficult="ignore", own_image=True, strict=False, free_only=False,
             skip_difficult=False, fixed_threshold=False, last_max=False, ranked_output=False):
    device = det_scores.device
    is_tp = torch.zeros(len(det_scores), dtype=torch.bool, device=device)
    is_fp = torch.zeros_like(is_tp)
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool, device=device)
    threshold = 0.5 if fixed_threshold else iou_threshold
    if rank == "stable":
        order = torch.argsort(det_scores, descending=True, stable=True)
    elif rank == "reversed":
        order = torch.argsort(det_scores, stable=True).flip(0)
    else:
        order = torch.arange(len(det_scores), device=device)
    for d in order.tolist():
        candidates = torch.ones_like(taken) if not own_image else gt_image_ids == det_image_ids[d]
        if free_only:
            candidates &= ~taken
        if skip_difficult and (candidates & ~gt_difficult).any():  # a normal object first, if one is hit
            normal = torch.nonzero(candidates & ~gt_difficult).flatten()
            if torchvision.ops.box_iou(det_boxes[d:d + 1], gt_boxes[normal]).max() >= threshold:
                candidates &= ~gt_difficult
        index = torch.nonzero(candidates).flatten()
        if len(index) == 0:
            is_fp[d] = True
            continue
        iou = torchvision.ops.box_iou(det_boxes[d:d + 1], gt_boxes[index])[0]
        k = len(iou) - 1 - int(iou.flip(0).argmax()) if last_max else int(iou.argmax())
        g = index[k]
        hit = iou[k] > threshold if strict else iou[k] >= threshold
        if not hit:
            is_fp[d] = True
        elif gt_difficult[g] and difficult == "ignore":
            continue
        elif gt_difficult[g] and difficult == "fp":
            is_fp[d] = True
        elif taken[g] and once:
            is_fp[d] = True
        else:
            is_tp[d] = True
            taken[g] = True
    if ranked_output:
        return is_tp[order], is_fp[order]
    return is_tp, is_fp


# (wrong version, the case it must fail, words its hint must contain)
WRONG = [
    (P(my_tp_fp, once=False), "duplicates", "an object counts once"),
    (P(my_tp_fp, difficult="fp"), "a detection on a difficult object", "is not simply ~is_tp"),
    (P(my_tp_fp, difficult="tp"), "a detection on a difficult object", "difficult objects are neither"),
    (P(my_tp_fp, rank="input"), "ranked by score", "not in the order they are given"),
    (P(my_tp_fp, ranked_output=True), "ranked by score", "INPUT order"),
    (P(my_tp_fp, own_image=False), "several images", "its own image"),
    (P(my_tp_fp, strict=True), "IoU exactly 0.5", "not >"),
    (P(my_tp_fp, free_only=True), "the best object is taken already", "COCO's rule"),
    (P(my_tp_fp, skip_difficult=True), "the best object is difficult", "ALL the objects"),
    (P(my_tp_fp, rank="reversed"), "equal scores", "reversing an ascending sort"),
    (P(my_tp_fp, fixed_threshold=True), "iou_threshold=0.75", "not a fixed 0.5"),
    (P(my_tp_fp, last_max=True), "equal IoUs", "the FIRST object"),
]


@pytest.mark.plumbing
@pytest.mark.parametrize("seed", (0, 7, 1234))
def test_reference_passes(seed):
    with on_its_reference():
        assert check_tp_fp(voc_tp_fp, seed=seed).passed


def test_learner_passes_and_its_hidden_tests_too():
    assert check_tp_fp(my_tp_fp).passed
    assert hidden_tests(check_tp_fp, my_tp_fp, seeds=(8263, 4719)).passed


def test_numpy_results_are_accepted():
    assert check_tp_fp(lambda *args: tuple(flags.numpy() for flags in my_tp_fp(*args))).passed


@pytest.mark.parametrize("wrong, case, words", WRONG,
                         ids=[",".join(f"{k}={v}" for k, v in w.keywords.items()) for w, _, _ in WRONG])
def test_each_mistake_fails_its_case_with_its_hint(wrong, case, words):
    assert_fails_on(check_tp_fp(wrong), "check_tp_fp", case, words)


def test_a_0_1_result_and_a_missing_tuple_get_their_own_message():
    result = check_tp_fp(lambda *args: tuple(flags.long() for flags in my_tp_fp(*args)))
    assert not result.passed and "as a bool tensor of shape" in result.message, result.message
    result = check_tp_fp(lambda *args: my_tp_fp(*args)[0])
    assert not result.passed and "expected a tuple (is_tp, is_fp)" in result.message, result.message


def test_an_error_on_an_image_without_objects_is_reported_with_a_hint():
    def no_guard(det_image_ids, det_scores, det_boxes, gt_image_ids, gt_boxes, gt_difficult, iou_threshold=0.5):
        for d in range(len(det_scores)):
            torchvision.ops.box_iou(det_boxes[d:d + 1], gt_boxes[gt_image_ids == det_image_ids[d]]).max()
        return my_tp_fp(det_image_ids, det_scores, det_boxes, gt_image_ids, gt_boxes, gt_difficult, iou_threshold)

    result = check_tp_fp(no_guard)
    assert not result.passed and "case 'an image without objects'" in result.message, result.message
    assert "raised" in result.message and "the max over zero objects" in result.message, result.message


def via_evaluate_voc(det_image_ids, det_scores, det_boxes, gt_image_ids, gt_boxes, gt_difficult, iou_threshold=0.5):
    """A solution that calls evaluate_voc on the way (say, to count the objects)."""
    ones = functools.partial(torch.ones, dtype=torch.long)
    evaluate_voc([{"boxes": det_boxes, "scores": det_scores, "labels": ones(len(det_scores))}],
                 [{"boxes": gt_boxes, "labels": ones(len(gt_boxes)), "difficult": gt_difficult}], num_classes=1)
    return my_tp_fp(det_image_ids, det_scores, det_boxes, gt_image_ids, gt_boxes, gt_difficult, iou_threshold)


@pytest.mark.parametrize("solution, name", [
    (voc_tp_fp, "_label_detections"), (lambda *args: voc_tp_fp(*args), "_label_detections"),
    (via_evaluate_voc, "evaluate_voc")])
def test_calling_the_library_fails_with_the_tripwires_message(solution, name):
    result = check_tp_fp(solution)
    assert not result.passed and "asks you to write" in result.message and "yourself" in result.message, result.message
    assert result.message.split("your function called `", 1)[1].split("`", 1)[0].endswith(name), result.message


def test_the_exercise_forbids_the_library_functions_that_contain_the_assignment():
    names = FORBIDDEN["check_tp_fp"].names()
    assert {name.rsplit(".", 1)[1] for name in names} == {"evaluate_voc", "_label_detections", "_best_gt_per_detection"}
    assert "check_tp_fp" in checks.__all__ and checks.check_tp_fp is check_tp_fp


@pytest.mark.parametrize("seed", (7, 1234))
def test_other_seeds_pass_the_learner(seed):
    assert check_tp_fp(my_tp_fp, seed=seed).passed


def test_other_seeds_draw_other_random_cases():
    first, other = (_random_case(torch.Generator().manual_seed(seed)) for seed in (0, 8263))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first[:6], other[:6]))


def test_a_memorised_solution_fails_the_hidden_tests():
    """Answers learnt from the public cases (seed 0) and nothing else: the hidden seeds catch it."""
    seen = {}

    def recorder(*args):
        flags = my_tp_fp(*args)
        seen[repr(args)] = flags
        return flags

    assert check_tp_fp(recorder).passed

    def memorised(*args):
        return seen.get(repr(args), (torch.zeros(len(args[1]), dtype=torch.bool),) * 2)

    assert check_tp_fp(memorised).passed
    result = hidden_tests(check_tp_fp, memorised, seeds=(8263, 4719))
    assert not result.passed and "hidden, seed 8263" in result.message, result.message


def test_outcomes_are_named_for_the_messages():
    assert _outcomes(torch.tensor([True, False, False]), torch.tensor([False, True, False])) == ["TP", "FP", "ignored"]
