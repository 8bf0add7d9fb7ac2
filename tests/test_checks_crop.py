"""Tests for check_min_iou_crop (lesson 6, the min-IoU crop of Sec. 2.2): the library's own test and crop
pass it, so does a learner-style solution; each common mistake fails with the hint that names it;
handing the work to the library fails with the tripwire's message; memorised public answers fail
another seed."""
from __future__ import annotations

import copy
import functools

import pytest
import torch

from ssd_lib.augment import MinIoURandomCrop
from ssd_lib.boxes import box_iou
from ssd_lib.course.checks import hidden_tests
from ssd_lib.course.checks.crop import _min_iou_crop_reference, check_min_iou_crop
from ssd_lib.course.checks.tripwire import reference_allowed
from check_results import on_its_reference  # tests/check_results.py


def lib_min_iou_crop(boxes, labels, patches, min_iou):
    """The library's computation with the learner's signature (what a delegating solution would hand in)."""
    return _min_iou_crop_reference(boxes, labels, patches, min_iou)


# ------------------------------------------------------------------ a learner-style solution; flags switch on one mistake

def min_iou_crop(boxes, labels, patches, min_iou, keep_by="centre", inclusive=False, accept="best_inside",
                 shift=True, clip=True, filter_labels=True, strict_iou=False, pick="first", no_objects="random ok",
                 to_float=False, no_pass="-1"):
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (G, 2)
    passing = []
    for index, patch in enumerate(patches):
        left, top, right, bottom = patch.tolist()
        if inclusive:
            inside = (left <= centres[:, 0]) & (centres[:, 0] <= right) & (top <= centres[:, 1]) & (centres[:, 1] <= bottom)
        else:
            inside = (left < centres[:, 0]) & (centres[:, 0] < right) & (top < centres[:, 1]) & (centres[:, 1] < bottom)
        if len(boxes) == 0:
            passes = min_iou <= 0 and no_objects == "random ok"
        else:
            ious = box_iou(patch[None], boxes)[0]  # (G,)
            if accept == "best_any":
                score, any_inside = ious.max(), True
            elif accept == "min_inside":
                score, any_inside = (ious[inside].min() if inside.any() else ious.max()), bool(inside.any())
            else:
                score, any_inside = (ious[inside].max() if inside.any() else ious.max()), bool(inside.any())
            passes = any_inside and bool(score > min_iou if strict_iou else score >= min_iou)
        if passes:
            passing.append((float(box_iou(patch[None], boxes).max()) if len(boxes) else 0.0, index, inside))
            if pick == "first":
                break
    if not passing and no_pass == "first":  # falls back to the first candidate
        passing.append((0.0, 0, inside))
    if not passing:
        return -1, boxes, labels
    _, index, inside = {"best": max(passing, key=lambda p: p[0]), "last": passing[-1]}.get(pick, passing[0])
    patch = patches[index]
    left, top, right, bottom = patch.tolist()
    if keep_by == "overlap":
        sides = torch.minimum(boxes[:, 2:], patch[2:]) - torch.maximum(boxes[:, :2], patch[:2])
        keep = (sides > 0).all(dim=1)
    elif keep_by == "iou":
        keep = box_iou(boxes, patch[None])[:, 0] >= min_iou
    elif keep_by == "all":
        keep = torch.ones(len(boxes), dtype=torch.bool)
    else:
        keep = inside
    kept = boxes[keep]
    if shift == "corner":  # only (x1, y1) moved
        kept = torch.cat((kept[:, :2] - patch[:2], kept[:, 2:]), dim=1)
    elif shift:
        kept = kept - patch[[0, 1, 0, 1]]
    # clip "image": the patch's image coordinates even after the shift; "origin": [0, w] x [0, h] even without it
    if (shift and clip != "image") or clip == "origin":
        x_range, y_range = (0, right - left), (0, bottom - top)
    else:
        x_range, y_range = (left, right), (top, bottom)
    if clip:
        kept[:, 0::2] = kept[:, 0::2].clamp(*x_range)
        kept[:, 1::2] = kept[:, 1::2].clamp(*y_range)
    if to_float:
        kept = kept.float()
    return index, kept, labels[keep] if filter_labels else labels


P = functools.partial

# (a wrong version, the case it first fails, words its hint must contain)
WRONG = [
    (P(min_iou_crop, keep_by="overlap"), "keep by centre, not by overlap", "CENTRE lies in the patch"),
    (P(min_iou_crop, keep_by="all"), "partly outside the patch are clipped", "CENTRE lies in the patch"),
    (P(min_iou_crop, keep_by="iou"), "keep by centre, not by overlap", "CENTRE lies in the patch"),
    (P(min_iou_crop, shift=False), "shift into the patch coordinates", "patch's own coordinates"),
    (P(min_iou_crop, shift=False, clip=False), "shift into the patch coordinates", "patch's own coordinates"),
    (P(min_iou_crop, shift=False, clip="origin"), "shift into the patch coordinates", "patch's own coordinates"),
    (P(min_iou_crop, clip="image"), "partly outside the patch are clipped", "not to the patch's (left, right)"),
    (P(min_iou_crop, clip=False), "partly outside the patch are clipped", "clip the kept boxes"),
    (P(min_iou_crop, filter_labels=False), "partly outside the patch are clipped", "labels[keep]"),
    (P(min_iou_crop, inclusive=True), "exactly on the patch border", "strict comparisons"),
    (P(min_iou_crop, accept="best_any"), "IoU counts only for objects whose centre is inside",
     "only the objects whose centre lies inside"),
    (P(min_iou_crop, accept="min_inside"), "one object with enough IoU is enough", "one object is enough"),
    (P(min_iou_crop, strict_iou=True), "exactly equal to min_iou", "IoU >= min_iou, not >"),
    (P(min_iou_crop, pick="best"), "the first passing candidate, not the best one", "FIRST candidate"),
    (P(min_iou_crop, pick="last"), "one object with enough IoU is enough", "FIRST candidate"),
    (P(min_iou_crop, no_pass="first"), "no candidate passes", "return (-1, boxes, labels)"),
    (P(min_iou_crop, shift="corner"), "shift into the patch coordinates", "subtract (left, top, left, top)"),
    (P(min_iou_crop, no_objects="never"), "no objects, random patch", "only the random patch (min_iou = 0) passes"),
    (P(min_iou_crop, to_float=True), "float64 boxes", "keep the boxes' dtype"),
]


def _no_boxes_on_failure(boxes, labels, patches, min_iou):
    index, kept, kept_labels = min_iou_crop(boxes, labels, patches, min_iou)
    return (index, boxes[:0], labels[:0]) if index == -1 else (index, kept, kept_labels)


def _index_as_tensor(boxes, labels, patches, min_iou):
    index, kept, kept_labels = min_iou_crop(boxes, labels, patches, min_iou)
    return torch.tensor(index), kept, kept_labels


def _index_as_bool_mask(boxes, labels, patches, min_iou):
    index, kept, kept_labels = min_iou_crop(boxes, labels, patches, min_iou)
    return torch.arange(len(patches)) == index, kept, kept_labels


# ------------------------------------------------------------------ the tests

@pytest.mark.plumbing
@pytest.mark.parametrize("seed", [0, 7, 1234])
def test_the_library_passes(seed):
    with on_its_reference():
        assert check_min_iou_crop(lib_min_iou_crop, seed=seed).passed
        assert hidden_tests(check_min_iou_crop, lib_min_iou_crop, seeds=(6143, 2718)).passed


@pytest.mark.parametrize("seed", [0, 7, 1234])
def test_a_learner_passes(seed):
    result = check_min_iou_crop(min_iou_crop, seed=seed)
    assert result.passed, result.message


def test_hidden_tests_pass_the_learner():
    result = hidden_tests(check_min_iou_crop, min_iou_crop, seeds=(6143, 2718))
    assert result.passed, result.message


def test_the_reference_is_the_library_sampler_on_its_own_patch():
    """The reference, handed MinIoURandomCrop's chosen patch, gives MinIoURandomCrop's crop."""
    boxes = torch.tensor([[10.0, 20.0, 90.0, 70.0], [100.0, 40.0, 180.0, 150.0], [30.0, 100.0, 60.0, 140.0]])
    image, target = torch.rand(3, 160, 200), {"boxes": boxes, "labels": torch.tensor([1, 2, 3])}
    for min_iou in (0.0, 0.1, 0.3, 0.5, 0.7):
        crop = MinIoURandomCrop(min_ious=(min_iou,))
        for seed in range(10):
            params = crop.make_params(image, target, torch.Generator().manual_seed(seed))
            assert params
            left, top = params["left"], params["top"]
            patch = torch.tensor([[left, top, left + params["width"], top + params["height"]]], dtype=torch.float32)
            _, library = crop.apply(image, target, params)
            with reference_allowed():
                index, kept, kept_labels = _min_iou_crop_reference(boxes, target["labels"], patch, min_iou)
            assert index == 0
            assert torch.equal(kept, library["boxes"]) and torch.equal(kept_labels, library["labels"])


def _candidates_as_the_sampler_draws_them(image, generator, trials=50, min_scale=0.3):
    """One round of MinIoURandomCrop.make_params's trials, those of an allowed shape, in order (as lesson 6 draws them)."""
    height, width = image.shape[-2:]
    u = torch.rand(trials, 4, generator=generator)
    scale = min_scale + (1 - min_scale) * u[:, :2]
    patch_w, patch_h = (width * scale[:, 0]).long(), (height * scale[:, 1]).long()
    left, top = ((width - patch_w) * u[:, 2]).long(), ((height - patch_h) * u[:, 3]).long()
    aspect = patch_w / patch_h
    return torch.stack((left, top, left + patch_w, top + patch_h), dim=1)[(aspect >= 0.5) & (aspect <= 2.0)].float()


@pytest.mark.parametrize("min_iou", [0.0, 0.1, 0.3, 0.5, 0.7])
def test_the_reference_in_the_samplers_loop_is_the_sampler(min_iou):
    """Round after round of the sampler's own candidates, the reference picks the patch make_params picks (the
    lesson runs the learner's function this way): _patches_pass is the sampler's test, and one per round."""
    boxes = torch.tensor([[10.0, 20.0, 90.0, 70.0], [100.0, 40.0, 180.0, 150.0], [30.0, 100.0, 60.0, 140.0]])
    image, target = torch.rand(3, 160, 200), {"boxes": boxes, "labels": torch.tensor([1, 2, 3])}
    sampler = MinIoURandomCrop(min_ious=(min_iou,))
    for seed in range(8):
        generator = torch.Generator().manual_seed(seed)
        with reference_allowed():
            for _ in range(1000):
                torch.randint(1, (1,), generator=generator)  # make_params draws the option first
                candidates = _candidates_as_the_sampler_draws_them(image, generator)
                index, kept, kept_labels = _min_iou_crop_reference(boxes, target["labels"], candidates, min_iou)
                if index >= 0:
                    break
        params = sampler.make_params(image, target, torch.Generator().manual_seed(seed))
        left, top = params["left"], params["top"]
        assert candidates[index].tolist() == [left, top, left + params["width"], top + params["height"]]
        _, library = sampler.apply(image, target, params)
        assert torch.equal(kept, library["boxes"]) and torch.equal(kept_labels, library["labels"])


@pytest.mark.parametrize("wrong, case, hint", WRONG, ids=[h for _, _, h in WRONG])
def test_each_mistake_fails_with_its_hint(wrong, case, hint):
    result = check_min_iou_crop(wrong)
    assert not result.passed
    assert case in result.message.split(" (", 1)[0], result.message
    assert hint in result.message.split("Hint: ", 1)[1], result.message


def test_no_pass_must_return_the_inputs():
    result = check_min_iou_crop(_no_boxes_on_failure)
    assert not result.passed and "no candidate passes: -1" in result.message, result.message
    assert "return (-1, boxes, labels) with the inputs unchanged" in result.message, result.message


def test_the_index_may_be_a_tensor_but_not_a_mask():
    assert check_min_iou_crop(_index_as_tensor).passed
    result = check_min_iou_crop(_index_as_bool_mask)
    assert not result.passed and "as an int" in result.message, result.message


def test_crashing_on_no_objects_is_reported():
    def crashes(boxes, labels, patches, min_iou):
        if len(boxes) == 0:
            ious = box_iou(patches[:1], boxes)[0]
            return 0, boxes, labels[ious.argmax()]  # argmax of an empty tensor raises
        return min_iou_crop(boxes, labels, patches, min_iou)

    result = check_min_iou_crop(crashes)
    assert not result.passed and "raised" in result.message and "no objects" in result.message, result.message


@pytest.mark.parametrize("delegate", [
    lambda b, l, p, t: lib_min_iou_crop(b, l, p, t),
    lambda b, l, p, t: (0, *MinIoURandomCrop().apply(torch.zeros(3, 1, 1), {"boxes": b, "labels": l},
                                                     {"left": 0, "top": 0, "width": 1, "height": 1})[1].values()),
], ids=["reference", "apply"])
def test_handing_the_work_to_the_library_fails(delegate):
    result = check_min_iou_crop(delegate)
    assert not result.passed and "asks you to write" in result.message and "yourself" in result.message, result.message


def test_memorised_public_answers_fail_another_seed():
    seen = []

    def record(*args):
        out = lib_min_iou_crop(*args)
        seen.append((copy.deepcopy(args), copy.deepcopy(out)))
        return out

    with reference_allowed():
        assert check_min_iou_crop(record).passed

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and bool((a == b).all())
        if isinstance(a, tuple):
            return isinstance(b, tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    def memorised(*args):
        for inputs, out in seen:
            if same(inputs, args):
                return copy.deepcopy(out)
        index, kept, kept_labels = seen[-1][1]
        return index + 1, kept.clone(), kept_labels.clone()

    assert check_min_iou_crop(memorised).passed
    assert not check_min_iou_crop(memorised, seed=7).passed
