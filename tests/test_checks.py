"""Tests for ssd_lib.course.checks: every checker passes a learner-style solution (and, with the
tripwire off, the library's own function), fails each plausible wrong version (naming the case and
giving a targeted hint), reports a learner's exception instead of raising it, and fails every
solution that delegates to the library function or torchvision twin it asks the learner to write."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from ssd_lib.course import checks
from ssd_lib.course.checks.tripwire import FORBIDDEN, reference_allowed

from check_results import on_its_reference  # tests/check_results.py
from ssd_lib.augment import RandomHorizontalFlip
from ssd_lib.boxes import cxcywh_to_xyxy, decode, encode, xyxy_to_cxcywh
from ssd_lib.loss import MultiBoxLoss, hard_negative_mask
from ssd_lib.matching import match
from ssd_lib.metrics import average_precision
from ssd_lib.priors import default_boxes, paper_scales
from ssd_lib.train import TrainConfig, lr_factor
from ssd_lib.course.checks.network import _torch_out_size


# ------------------------------------------------------------------ the library's functions, with the learner's signature

def lib_smooth_l1(x):
    return F.smooth_l1_loss(x, torch.zeros_like(x), reduction="none")


def lib_multibox_loss(loc, logits, loc_targets, labels):
    return MultiBoxLoss()(loc, logits, loc_targets, labels).total


def lib_hflip(image, boxes):
    image, target = RandomHorizontalFlip(p=1.0).apply(image, {"boxes": boxes}, {"flip": True})
    return image, target["boxes"]


def lib_lr_at(step, total_steps, base_lr, warmup_steps):
    return base_lr * lr_factor(step, total_steps, TrainConfig(schedule="cosine", warmup_steps=warmup_steps))


LIBRARY = {
    checks.check_iou: torchvision.ops.box_iou,
    checks.check_xyxy_to_cxcywh: xyxy_to_cxcywh,
    checks.check_encode: encode,
    checks.check_decode: decode,
    checks.check_scales: paper_scales,
    checks.check_default_boxes: default_boxes,
    checks.check_match: match,
    checks.check_smooth_l1: lib_smooth_l1,
    checks.check_hard_negative_mining: hard_negative_mask,
    checks.check_multibox_loss: lib_multibox_loss,
    checks.check_hflip: lib_hflip,
    checks.check_nms: torchvision.ops.nms,
    checks.check_average_precision: average_precision,
    checks.check_lr_schedule: lib_lr_at,
    checks.check_out_size: _torch_out_size,
}


# ------------------------------------------------------------------ learner-style solutions; flags switch on one mistake

def iou(boxes_a, boxes_b, subtract=True, clamp=True):
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    sides = bottom_right - top_left
    if clamp:
        sides = sides.clamp(min=0)
    inter = sides[..., 0] * sides[..., 1]
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    union = area_a[:, None] + area_b[None, :] - (inter if subtract else 0)
    return inter / union


def to_cxcywh(boxes, swap_wh=False, centre_is_corner=False):
    x1, y1, x2, y2 = boxes.unbind(-1)
    cx, cy = (x1, y1) if centre_is_corner else ((x1 + x2) / 2, (y1 + y2) / 2)
    w, h = (y2 - y1, x2 - x1) if swap_wh else (x2 - x1, y2 - y1)
    return torch.stack((cx, cy, w, h), dim=-1)


def my_encode(matched_xyxy, priors_cxcywh, variances=(0.1, 0.2), use_variances=True, use_log=True, divide_by_size=True):
    g, d = to_cxcywh(matched_xyxy), priors_cxcywh
    v0, v1 = variances if use_variances else (1.0, 1.0)
    centre = (g[:, :2] - d[:, :2]) / ((d[:, 2:] if divide_by_size else 1.0) * v0)
    ratio = g[:, 2:] / d[:, 2:]
    size = (torch.log(ratio) if use_log else ratio) / v1
    return torch.cat((centre, size), dim=1)


def my_decode(offsets, priors_cxcywh, variances=(0.1, 0.2), twice=False, as_xyxy=True):
    v0, v1 = (variances[0] ** 2, variances[1] ** 2) if twice else variances
    d = priors_cxcywh
    centre = d[:, :2] + offsets[:, :2] * v0 * d[:, 2:]
    size = d[:, 2:] * torch.exp(offsets[:, 2:] * v1)
    boxes = torch.cat((centre, size), dim=1)
    return cxcywh_to_xyxy(boxes) if as_xyxy else boxes


def scales(m, s_min=0.2, s_max=0.9, divide_by_m=False):
    if m == 1:
        return [s_min]
    step = (s_max - s_min) / (m if divide_by_m else m - 1)
    return [s_min + step * (k - 1) for k in range(1, m + 1)]


def my_default_boxes(cfg, offset=0.5, extra_square=True, cx_from_column=True):
    rows = []
    for k, f in enumerate(cfg.feature_maps):
        s_k = cfg.min_sizes[k] / cfg.image_size
        s_extra = math.sqrt(cfg.min_sizes[k] * cfg.max_sizes[k]) / cfg.image_size
        for i in range(f):
            for j in range(f):
                cx = (j + offset) * cfg.steps[k] / cfg.image_size
                cy = (i + offset) * cfg.steps[k] / cfg.image_size
                if not cx_from_column:
                    cx, cy = cy, cx
                rows.append([cx, cy, s_k, s_k])
                if extra_square:
                    rows.append([cx, cy, s_extra, s_extra])
                for r in cfg.aspect_ratios[k]:
                    rows += [[cx, cy, s_k * math.sqrt(r), s_k / math.sqrt(r)], [cx, cy, s_k / math.sqrt(r), s_k * math.sqrt(r)]]
    return torch.tensor(rows)


def my_match(gt_boxes, gt_labels, priors_cxcywh, iou_threshold=0.5, forced=True, best_object=True):
    priors_xyxy = cxcywh_to_xyxy(priors_cxcywh)
    num_priors = len(priors_cxcywh)
    if len(gt_boxes) == 0:
        return priors_xyxy.clone(), torch.zeros(num_priors, dtype=torch.long)
    overlaps = torchvision.ops.box_iou(gt_boxes, priors_xyxy)  # (G, P)
    best_iou, best_object_idx = overlaps.max(dim=0)
    if not best_object:  # the first object above the threshold, not the best one
        best_object_idx = (overlaps > iou_threshold).int().argmax(dim=0)
    positive = best_iou > iou_threshold
    if forced:
        best_prior = overlaps.argmax(dim=1)
        best_object_idx[best_prior] = torch.arange(len(gt_boxes))
        positive[best_prior] = True
    labels = torch.where(positive, gt_labels[best_object_idx], 0)
    boxes = torch.where(positive[:, None], gt_boxes[best_object_idx], priors_xyxy)
    return boxes, labels


def smooth_l1(x):
    return torch.where(x.abs() < 1, 0.5 * x**2, x.abs() - 0.5)


def my_hard_negative_mask(conf_loss, positive, neg_pos_ratio=3.0, cap=True, per_image=True, exclude_positives=True,
                          all_negatives=False):
    if all_negatives:
        return ~positive
    shape = conf_loss.shape
    loss, positive = conf_loss.clone(), positive.clone()
    if not per_image:
        loss, positive = loss.reshape(1, -1), positive.reshape(1, -1)
    if exclude_positives:
        loss[positive] = float("-inf")
    num_pos = positive.sum(dim=1, keepdim=True)
    num_neg = neg_pos_ratio * num_pos
    if cap:
        num_neg = num_neg.clamp(max=positive.shape[1] - num_pos)
    rank = loss.argsort(dim=1, descending=True).argsort(dim=1)
    return (rank < num_neg).reshape(shape)


def my_multibox_loss(loc, logits, loc_targets, labels, divide=True, guard=True):
    positive = labels > 0
    n = positive.sum()
    loc_loss = F.smooth_l1_loss(loc[positive], loc_targets[positive], reduction="sum")
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    conf_loss = ce[positive | my_hard_negative_mask(ce.detach(), positive)].sum()  # the learner's own mining
    total = conf_loss + loc_loss
    if divide:
        total = total / (n.clamp(min=1) if guard else n)
    return total


def hflip(image, boxes, swap=True, offset=0.0):
    width = image.shape[-1] - offset
    x1, y1, x2, y2 = boxes.unbind(-1)
    new_x1, new_x2 = (width - x2, width - x1) if swap else (width - x1, width - x2)
    return image.flip(-1), torch.stack((new_x1, y1, new_x2, y2), dim=-1)


def my_nms(boxes, scores, iou_threshold, strict=True, by_score=True, only_kept_suppress=True):
    order = scores.argsort(descending=True)
    overlaps = torchvision.ops.box_iou(boxes, boxes)
    over = overlaps > iou_threshold if strict else overlaps >= iou_threshold
    if only_kept_suppress:
        keep, suppressed = [], torch.zeros(len(boxes), dtype=torch.bool)
        for i in order.tolist():
            if not suppressed[i]:
                keep.append(i)
                suppressed |= over[i]
    else:  # every higher-scoring box suppresses, kept or not
        rank = order.argsort()
        higher = rank[None, :] < rank[:, None]  # higher[j, i]: box i scores above box j
        dead = (over & higher).any(dim=1)
        keep = [i for i in order.tolist() if not dead[i]]
    if not by_score:
        keep = sorted(keep)
    return torch.tensor(keep, dtype=torch.long)


def my_average_precision(recall, precision, use_07_metric=True, envelope=True, always=None,
                         levels=np.arange(0.0, 1.1, 0.1)):
    if always is not None:
        use_07_metric = always
    if envelope:
        precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    if use_07_metric:
        if envelope:
            return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in levels]))
        return float(np.mean([precision[np.argmax(recall >= t)] if (recall >= t).any() else 0.0 for t in levels]))
    steps = np.diff(np.concatenate(([0.0], recall)))
    return float(np.sum(steps * precision))


def lr_at(step, total_steps, base_lr, warmup_steps, warmup=True, warmup_from_zero=False):
    factor = 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0)))
    if warmup and step < warmup_steps:
        factor *= (step if warmup_from_zero else step + 1) / warmup_steps
    return base_lr * factor


def out_size(size, kernel, stride=1, padding=0, dilation=1, ceil_mode=False, dilate=True, both_sides=True,
             ceil=True, as_float=False):
    span = (dilation if dilate else 1) * (kernel - 1) + 1
    room = size + (2 if both_sides else 1) * padding - span
    if as_float:
        return room / stride + 1
    return (-(-room // stride) if ceil_mode and ceil else room // stride) + 1


LEARNER = {
    checks.check_out_size: out_size,
    checks.check_iou: iou,
    checks.check_xyxy_to_cxcywh: to_cxcywh,
    checks.check_encode: my_encode,
    checks.check_decode: my_decode,
    checks.check_scales: scales,
    checks.check_default_boxes: my_default_boxes,
    checks.check_match: my_match,
    checks.check_smooth_l1: smooth_l1,
    checks.check_hard_negative_mining: my_hard_negative_mask,
    checks.check_multibox_loss: my_multibox_loss,
    checks.check_hflip: hflip,
    checks.check_nms: my_nms,
    checks.check_average_precision: my_average_precision,
    checks.check_lr_schedule: lr_at,
}

P = functools.partial

# (checker, wrong version, the case it must fail, a word the hint must contain)
WRONG = [
    (checks.check_iou, P(iou, subtract=False), "identical boxes", "area_a + area_b - intersection"),
    (checks.check_iou, P(iou, clamp=False), "disjoint boxes", "clamp"),
    (checks.check_xyxy_to_cxcywh, P(to_cxcywh, swap_wh=True), "wide box", "swapped"),
    (checks.check_xyxy_to_cxcywh, P(to_cxcywh, centre_is_corner=True), "unit square", "midpoint"),
    (checks.check_encode, P(my_encode, use_variances=False), "shifted box", "variances[0]"),
    (checks.check_encode, P(my_encode, use_log=False), "matched box = its default box", "log"),
    (checks.check_encode, P(my_encode, divide_by_size=False), "shifted box", "d_w"),
    (checks.check_decode, P(my_decode, twice=True), "centre offsets only", "applied once"),
    (checks.check_decode, P(my_decode, as_xyxy=False), "zero offsets", "corners"),
    (checks.check_scales, P(scales, divide_by_m=True), "paper setting m = 6", "m - 1"),
    (checks.check_default_boxes, P(my_default_boxes, offset=0.0), "one 1 x 1 map", "(j + 0.5)"),
    (checks.check_default_boxes, P(my_default_boxes, extra_square=False), "one 1 x 1 map", "s'_k"),
    (checks.check_default_boxes, P(my_default_boxes, cx_from_column=False), "2 x 2 map", "swapped"),
    (checks.check_match, P(my_match, forced=False), "tiny object", "step 1 of the matching"),
    (checks.check_match, P(my_match, best_object=False), "two overlapping objects", "MOST"),
    (checks.check_smooth_l1, torch.abs, "small values", "0.5 * x**2"),
    (checks.check_smooth_l1, lambda x: 0.5 * x**2, "large values", "|x| - 0.5"),
    (checks.check_hard_negative_mining, P(my_hard_negative_mask, cap=False), "only 2 negatives", "min(neg_pos_ratio"),
    (checks.check_hard_negative_mining, P(my_hard_negative_mask, all_negatives=True), "no positives", "hardest"),
    (checks.check_hard_negative_mining, P(my_hard_negative_mask, per_image=False), "per image", "per image"),
    (checks.check_hard_negative_mining, P(my_hard_negative_mask, exclude_positives=False), "positives have the highest",
     "exclude them"),
    (checks.check_multibox_loss, P(my_multibox_loss, divide=False), "one image, 3 positives", "divide by N = 3"),
    (checks.check_multibox_loss, P(my_multibox_loss, guard=False), "no positives", "max(N, 1)"),
    (checks.check_hflip, P(hflip, swap=False), "one box", "x1' = W - x2"),
    (checks.check_hflip, P(hflip, offset=1.0), "one box", "W - 1 - x"),
    (checks.check_nms, P(my_nms, strict=False), "IoU exactly at the threshold", "strictly"),
    (checks.check_nms, P(my_nms, by_score=False), "scores not in index order", "decreasing score"),
    (checks.check_nms, P(my_nms, only_kept_suppress=False), "chain", "KEPT"),
    (checks.check_average_precision, P(my_average_precision, always=True), "precision goes up again (all-point)",
     "11-point AP"),
    (checks.check_average_precision, P(my_average_precision, always=False), "recall stops at exactly 0.3", "other AP"),
    (checks.check_average_precision, P(my_average_precision, envelope=False), "precision goes up again (11-point)",
     "envelope"),
    (checks.check_average_precision, P(my_average_precision, levels=np.arange(11) / 10), "exactly 0.3",
     "np.arange(0, 1.1, 0.1)"),
    (checks.check_lr_schedule, P(lr_at, warmup=False), "step 0", "left out the warm-up"),
    (checks.check_out_size, P(out_size, dilate=False), "fc6", "d (k - 1) + 1"),
    (checks.check_out_size, P(out_size, both_sides=False), "conv1_1", "BOTH sides"),
    (checks.check_out_size, P(out_size, ceil=False), "pool3 of SSD (ceil mode)", "round the division up"),
    (checks.check_out_size, P(out_size, as_float=True), "conv1_1", "Python int"),
    (checks.check_lr_schedule, P(lr_at, warmup_from_zero=True), "step 0", "not step / warmup_steps"),
]


def _name(fn) -> str:
    if isinstance(fn, functools.partial):
        return fn.func.__name__ + "-" + "-".join(f"{k}={v}" for k, v in fn.keywords.items())[:40]
    return getattr(fn, "__name__", "fn")


@pytest.mark.plumbing
@pytest.mark.parametrize("checker", list(LIBRARY), ids=lambda c: c.__name__)
def test_library_function_passes(checker, capsys):
    with on_its_reference():
        result = checker(LIBRARY[checker])
    assert result.passed, result.message
    assert bool(result) and result.name == checker.__name__
    assert capsys.readouterr().out == result.message + "\n"  # printed once, the same line
    assert result.message.startswith(f"✅ {checker.__name__} passed: ")


@pytest.mark.parametrize("checker", list(LEARNER), ids=lambda c: c.__name__)
def test_learner_style_solution_passes(checker):
    result = checker(LEARNER[checker])
    assert result.passed, result.message


@pytest.mark.parametrize("checker, wrong, case, hint", WRONG, ids=[f"{c.__name__}-{_name(w)}" for c, w, _, _ in WRONG])
def test_wrong_version_fails_with_case_and_hint(checker, wrong, case, hint):
    result = checker(wrong)
    assert not result.passed
    assert not bool(result)
    assert result.message.startswith(f"❌ {checker.__name__}: case '")
    assert case in result.message.split(":")[1], result.message  # the failing case is the one built for this mistake
    assert "Hint: " in result.message
    assert hint in result.message.split("Hint: ", 1)[1], result.message


def _not_implemented(*args):
    raise NotImplementedError("write your code here")


def _broken(*args):
    raise ValueError("boom")


@pytest.mark.parametrize("checker", list(LIBRARY), ids=lambda c: c.__name__)
def test_not_implemented_is_reported_not_raised(checker):
    result = checker(_not_implemented)
    assert not result.passed
    assert "not implemented yet" in result.message
    assert "raise NotImplementedError" in result.message


@pytest.mark.parametrize("checker", list(LIBRARY), ids=lambda c: c.__name__)
def test_other_exception_is_reported_with_its_type(checker):
    result = checker(_broken)
    assert not result.passed
    assert "ValueError: boom" in result.message
    assert "case '" in result.message and "Hint: " in result.message


def test_exception_message_points_at_the_learners_line():
    def iou_with_bug(boxes_a, boxes_b):
        area = boxes_a[:, 2] * boxes_a[:, 5]  # index 5 does not exist
        return area

    result = checks.check_iou(iou_with_bug)
    assert "IndexError" in result.message and "boxes_a[:, 5]" in result.message


def test_numpy_and_list_results_are_accepted():
    assert checks.check_iou(lambda a, b: iou(a, b).numpy())
    assert checks.check_nms(lambda boxes, scores, t: my_nms(boxes, scores, t).tolist())
    assert checks.check_scales(lambda m, lo=0.2, hi=0.9: np.array(scales(m, lo, hi)))
    assert checks.check_multibox_loss(lambda *args: my_multibox_loss(*args) if args[0].requires_grad
                                      else my_multibox_loss(*args).item())


def test_match_with_greater_or_equal_passes():
    """The cases avoid IoUs exactly at the threshold: >= and > are both accepted (spec)."""
    def match_ge(gt_boxes, gt_labels, priors_cxcywh, iou_threshold=0.5):
        return my_match(gt_boxes, gt_labels, priors_cxcywh, iou_threshold - 1e-6)

    assert checks.check_match(match_ge)


def test_hard_negative_ties_accept_any_choice():
    def last_among_ties(conf_loss, positive, neg_pos_ratio=3.0):  # breaks ties the other way round
        flipped = my_hard_negative_mask(conf_loss.flip(1), positive.flip(1), neg_pos_ratio)
        return flipped.flip(1)

    assert checks.check_hard_negative_mining(last_among_ties)


def test_bool_mask_dtype_matters():
    result = checks.check_hard_negative_mining(lambda *args: my_hard_negative_mask(*args).long())
    assert not result.passed and "bool" in result.message


def test_integer_labels_required():
    result = checks.check_match(lambda *args: (my_match(*args)[0], my_match(*args)[1].float()))
    assert not result.passed and "integer labels" in result.message


def test_modifying_an_input_is_reported():
    def mask_in_place(conf_loss, positive, neg_pos_ratio=3.0):
        conf_loss[positive] = float("-inf")
        return my_hard_negative_mask(conf_loss, positive, neg_pos_ratio)

    result = checks.check_hard_negative_mining(mask_in_place)
    assert not result.passed and "changed its input `conf_loss` in place" in result.message


def test_returning_none_and_wrong_shape_are_explained():
    assert "forget the `return`" in checks.check_smooth_l1(lambda x: None).message
    result = checks.check_iou(lambda a, b: iou(a, b).T)
    assert "case '2 x 3 pairs'" in result.message and "shape (2, 3), got shape (3, 2)" in result.message
    assert "boxes_a[:, None, :]" in result.message


def test_loss_must_stay_differentiable():
    result = checks.check_multibox_loss(lambda *args: my_multibox_loss(*args).item())
    assert not result.passed and "the loss is differentiable" in result.message and ".item()" in result.message


def test_passing_a_value_instead_of_a_function():
    result = checks.check_iou(torch.zeros(2, 2))
    assert not result.passed and "pass the function itself" in result.message


def test_check_result_repr_is_short_and_str_is_the_line(capsys):
    result = checks.check_smooth_l1(smooth_l1)
    assert repr(result) == "CheckResult(passed=True, name='check_smooth_l1')"
    assert str(result) == result.message
    assert not hasattr(result, "_repr_html_")  # Jupyter shows the short repr; the line was printed once
    assert capsys.readouterr().out.count("check_smooth_l1 passed") == 1


# ------------------------------------------------------------------ notebook 11: the debugging lab's checkers

from ssd_lib.course import lab  # noqa: E402  (kept with the tests of the lab)
from ssd_lib.data import labels_from_names, num_classes_for, sanitize_boxes  # noqa: E402
from ssd_lib.metrics import mean_average_precision  # noqa: E402
from ssd_lib.priors import clip_priors  # noqa: E402


def lab_clip_priors(priors_cxcywh, corner_form=True, return_corners=False):
    if not corner_form:
        return priors_cxcywh.clamp(0, 1)
    top_left = (priors_cxcywh[:, :2] - priors_cxcywh[:, 2:] / 2).clamp(0, 1)
    bottom_right = (priors_cxcywh[:, :2] + priors_cxcywh[:, 2:] / 2).clamp(0, 1)
    if return_corners:
        return torch.cat((top_left, bottom_right), dim=1)
    return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), dim=1)


def lab_labels_from_names(names, classes, shift=1, dtype=torch.long):
    return torch.tensor([list(classes).index(name) + shift for name in names], dtype=dtype)


def lab_num_classes(classes):
    return len(classes) + 1


def lab_sanitize_boxes(boxes, labels, width, height, strict=True, clip=True, filter_labels=True):
    boxes = boxes.clone()
    if clip:
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    if strict:
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    else:
        keep = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
    return boxes[keep], (labels[keep] if filter_labels else labels)


def lab_mean_ap(ap, num_gt, select_by="num_gt"):
    ap = np.asarray(ap, dtype=float)
    if select_by == "num_gt":
        keep = np.asarray(num_gt) > 0
        return float(ap[keep].mean()) if keep.any() else float("nan")
    if select_by == "nanmean":  # NaN skipped, but an AP of 0 given for a class without objects still counts
        return float(np.nanmean(ap))
    if select_by == "ap_value":  # drops classes whose AP is 0 or NaN, whether or not they have objects
        keep = np.nan_to_num(ap) > 0
        return float(ap[keep].mean()) if keep.any() else float("nan")
    return float(np.mean(ap))  # "none": NaN propagates


LAB_LIBRARY = {
    checks.check_clip_priors: clip_priors,
    checks.check_labels_from_names: labels_from_names,
    checks.check_num_classes: num_classes_for,
    checks.check_sanitize_boxes: sanitize_boxes,
    checks.check_mean_average_precision: mean_average_precision,
}

LAB_LEARNER = {
    checks.check_clip_priors: lab_clip_priors,
    checks.check_labels_from_names: lab_labels_from_names,
    checks.check_num_classes: lab_num_classes,
    checks.check_sanitize_boxes: lab_sanitize_boxes,
    checks.check_mean_average_precision: lab_mean_ap,
}

# (checker, wrong version, the case it must fail, a phrase the hint must contain)
LAB_WRONG = [
    (checks.check_clip_priors, P(lab_clip_priors, corner_form=False), "sticking out on the left", "clamped (cx, cy, w, h)"),
    (checks.check_clip_priors, P(lab_clip_priors, return_corners=True), "inside the image", "returned corners"),
    (checks.check_labels_from_names, P(lab_labels_from_names, shift=0), "first class", "start at 0"),
    (checks.check_labels_from_names, P(lab_labels_from_names, dtype=torch.float32), "first class", "integers"),
    (checks.check_num_classes, len, "6 shape classes", "left out background"),
    (checks.check_sanitize_boxes, P(lab_sanitize_boxes, strict=False), "entirely outside", ">= keeps it"),
    (checks.check_sanitize_boxes, P(lab_sanitize_boxes, clip=False), "partly outside", "clip x"),
    (checks.check_sanitize_boxes, P(lab_sanitize_boxes, filter_labels=False), "entirely outside", "drop the label"),
    (checks.check_mean_average_precision, P(lab_mean_ap, select_by="none"), "given as NaN", "one NaN"),
    (checks.check_mean_average_precision, P(lab_mean_ap, select_by="nanmean"), "given as 0", "counting those without"),
    (checks.check_mean_average_precision, P(lab_mean_ap, select_by="ap_value"), "WITH ground truth and AP 0",
     "select by num_gt"),
]


@pytest.mark.plumbing
@pytest.mark.parametrize("checker", list(LAB_LIBRARY), ids=lambda c: c.__name__)
def test_lab_reference_passes(checker, capsys):
    with on_its_reference():
        result = checker(LAB_LIBRARY[checker])
    assert result.passed, result.message
    assert capsys.readouterr().out == result.message + "\n"


@pytest.mark.parametrize("checker", list(LAB_LIBRARY), ids=lambda c: c.__name__)
def test_lab_learner_solutions_pass(checker):
    result = checker(LAB_LEARNER[checker])
    assert result.passed, result.message


@pytest.mark.parametrize("checker, wrong, case, hint", LAB_WRONG,
                         ids=[f"{c.__name__}-{_name(w)}" for c, w, _, _ in LAB_WRONG])
def test_lab_wrong_version_fails_with_case_and_hint(checker, wrong, case, hint):
    test_wrong_version_fails_with_case_and_hint(checker, wrong, case, hint)


@pytest.mark.parametrize("checker", list(LAB_LIBRARY), ids=lambda c: c.__name__)
def test_lab_checkers_report_exceptions(checker):
    test_not_implemented_is_reported_not_raised(checker)
    test_other_exception_is_reported_with_its_type(checker)


@pytest.mark.parametrize("piece", lab.BROKEN_PIECES, ids=lambda p: p.name)
def test_each_broken_piece_fails_its_checker_and_its_fix_passes(piece, capsys):
    """The lab's pieces are the course's own code (some wrap library functions), so the tripwire is off."""
    checker = getattr(checks, piece.checker)
    with reference_allowed():
        broken = checker(piece.function)
    assert not broken.passed, f"{piece.name} ({piece.bug}) passed {piece.checker}"
    assert "Hint: " in broken.message and "not implemented" not in broken.message
    assert "raised" not in broken.message, broken.message  # it fails on its values, not by crashing
    with reference_allowed():
        fixed = checker(piece.fixed)
    assert fixed.passed, fixed.message


# ------------------------------------------------------------------ the tripwire: no credit for calling the answer

from torchvision.models.detection._utils import BoxCoder  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

import ssd_lib.boxes  # noqa: E402
from ssd_lib.course.ablations import compare_runs, summarize  # noqa: E402
from ssd_lib.course.checks.sgd import _sgd_reference  # noqa: E402
from ssd_lib.course.checks.metrics import voc_tp_fp  # noqa: E402
from ssd_lib.course.checks.crop import _min_iou_crop_reference  # noqa: E402
from ssd_lib.model import predict_heads  # noqa: E402
from ssd_lib.export import predict_with, same_detections  # noqa: E402
from ssd_lib.detect import detect  # noqa: E402
from ssd_lib.train import library_targets  # noqa: E402

# Lesson 13's graded mAP takes a trained detector, not a function the library has: tests/test_capstone.py tests it
# (the shipped weights or the library's postprocess fail it, a detector replaying the test split fails new images).
TESTED_IN_CAPSTONE = {checks.check_trained_detector}
DELEGATING_LIBRARY = {**LIBRARY, **LAB_LIBRARY, checks.check_compare_runs: compare_runs,
                      checks.check_batch_targets: library_targets, checks.check_postprocess: detect,
                      checks.check_predict_with: predict_with, checks.check_same_detections: same_detections,
                      checks.check_sgd_step: _sgd_reference, checks.check_summarize: summarize,
                      checks.check_tp_fp: voc_tp_fp, checks.check_min_iou_crop: _min_iou_crop_reference,
                      checks.check_predict: predict_heads,
                      checks.check_diagnose_decode: lab.diagnose_decode, checks.check_diagnose_loc_loss: lab.diagnose_loc_loss,
                      checks.check_diagnose_mining: lab.diagnose_mining, checks.check_diagnose_warmup: lab.diagnose_warmup}


def _coder(variances):
    return BoxCoder(weights=(1 / variances[0], 1 / variances[0], 1 / variances[1], 1 / variances[1]))


# (checker, a solution that hands the work to a twin, the forbidden function its message must name)
DELEGATING_TWINS = [
    (checks.check_out_size, lambda n, k, s=1, p=0, d=1, c=False: F.conv2d(
        torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d).shape[-1], "conv2d"),
    (checks.check_out_size, lambda n, k, s=1, p=0, d=1, c=False: F.max_pool2d(
        torch.zeros(1, 1, n, n), k, s, p, d, ceil_mode=c).shape[-1], "max_pool2d"),
    (checks.check_iou, lambda a, b: ssd_lib.boxes.box_iou(a, b), "ssd_lib.boxes.box_iou"),
    (checks.check_iou, lambda a, b: torchvision.ops.box_iou(a, b), "torchvision.ops.boxes.box_iou"),
    (checks.check_xyxy_to_cxcywh, lambda b: torchvision.ops.box_convert(b, "xyxy", "cxcywh"), "box_convert"),
    (checks.check_encode, lambda m, p, v=(0.1, 0.2): _coder(v).encode_single(m, cxcywh_to_xyxy(p)), "encode_single"),
    (checks.check_decode, lambda o, p, v=(0.1, 0.2): _coder(v).decode_single(o, cxcywh_to_xyxy(p)), "decode_single"),
    (checks.check_smooth_l1, lambda x: torch.nn.SmoothL1Loss(reduction="none")(x, torch.zeros_like(x)),
     "SmoothL1Loss.forward"),
    (checks.check_smooth_l1, lambda x: F.huber_loss(x, torch.zeros_like(x), reduction="none"), "huber_loss"),
    (checks.check_smooth_l1, lambda x: torch._C._nn.smooth_l1_loss(x, torch.zeros_like(x), 0, 1.0), "smooth_l1_loss"),
    (checks.check_nms, lambda b, s, t: torchvision.ops.batched_nms(b, s, torch.zeros(len(s), dtype=torch.long), t),
     "batched_nms"),
    (checks.check_nms, lambda b, s, t: torch.ops.torchvision.nms(b, s, t), "nms"),
    (checks.check_hflip, lambda image, boxes: (TF.horizontal_flip(image), hflip(image, boxes)[1]), "horizontal_flip"),
    (checks.check_multibox_loss, lambda *args: lib_multibox_loss(*args), "MultiBoxLoss.forward"),
    (checks.check_multibox_loss, lambda *args: _loss_with_library_mining(*args), "ssd_lib.loss.hard_negative_mask"),
]


def _loss_with_library_mining(loc, logits, loc_targets, labels):
    """The full-loss exercise includes the mining: the library's hard_negative_mask is off limits there."""
    positive = labels > 0
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    chosen = positive | hard_negative_mask(ce.detach(), positive)
    loc_loss = F.smooth_l1_loss(loc[positive], loc_targets[positive], reduction="sum")
    return (ce[chosen].sum() + loc_loss) / positive.sum().clamp(min=1)


def test_every_checker_has_a_tripwire():
    assert set(FORBIDDEN) == {name for name in checks.__all__ if name.startswith("check_")}
    assert set(DELEGATING_LIBRARY) | TESTED_IN_CAPSTONE == {getattr(checks, name) for name in FORBIDDEN}
    for forbid in FORBIDDEN.values():
        assert forbid.names() and forbid.allowed and forbid.task


@pytest.mark.parametrize("checker", list(DELEGATING_LIBRARY), ids=lambda c: c.__name__)
def test_handing_in_the_library_function_fails(checker):
    """Handing in the reference itself, an alias of it, or a lambda that calls it, all fail with the tripwire's message."""
    reference = DELEGATING_LIBRARY[checker]
    for solution in (reference, functools.partial(reference), lambda *args: reference(*args)):
        result = checker(solution)
        assert not result.passed, result.message
        assert result.message.startswith(f"❌ {checker.__name__}: case '"), result.message
        assert "asks you to write" in result.message and "yourself" in result.message, result.message
        assert "allowed here: " in result.message, result.message


@pytest.mark.parametrize("checker, solution, name", DELEGATING_TWINS,
                         ids=[f"{c.__name__}-{n}" for c, _, n in DELEGATING_TWINS])
def test_handing_the_work_to_a_twin_fails_and_names_it(checker, solution, name):
    result = checker(solution)
    assert not result.passed and "asks you to write" in result.message, result.message
    called = result.message.split("your function called `", 1)[1].split("`", 1)[0]
    assert called.endswith(name), result.message


def test_catching_the_tripwire_does_not_help():
    def sneaky_iou(boxes_a, boxes_b):
        try:
            return torchvision.ops.box_iou(boxes_a, boxes_b)
        except Exception:
            return torchvision.ops.box_iou(boxes_a, boxes_b)  # the profile is off now: this call answers

    result = checks.check_iou(sneaky_iou)
    assert not result.passed and "called `torchvision.ops.boxes.box_iou`" in result.message


def test_switching_the_tracing_off_fails():
    import sys

    def unplugged_iou(boxes_a, boxes_b):
        sys.setprofile(None)
        return torchvision.ops.box_iou(boxes_a, boxes_b)

    result = checks.check_iou(unplugged_iou)
    assert not result.passed and "switched off the check's call tracing" in result.message


def test_tripwire_is_scoped_to_the_learners_call():
    import sys

    def outer_profile(frame, event, arg):
        return None

    sys.setprofile(outer_profile)
    try:
        assert not checks.check_iou(torchvision.ops.box_iou).passed
        assert sys.getprofile() is outer_profile  # put back after each case
    finally:
        sys.setprofile(None)
    assert torchvision.ops.box_iou(torch.zeros(1, 4), torch.ones(1, 4)).shape == (1, 1)  # works outside a check
    assert checks.check_iou(iou).passed  # and a check after a tripped one is not affected


# (checker, a learner-style solution that uses helpers the exercise permits)
PERMITTED = [
    (checks.check_match, my_match, "box_iou via torchvision.ops"),
    (checks.check_match, lambda g, lab, p, t=0.5: _match_with_library_iou(g, lab, p, t), "ssd_lib.boxes.box_iou"),
    (checks.check_encode, my_encode, "xyxy_to_cxcywh"),
    (checks.check_default_boxes, lambda cfg: my_default_boxes(cfg), "conversions"),
    (checks.check_nms, my_nms, "torchvision.ops.box_iou"),
    (checks.check_multibox_loss, my_multibox_loss, "F.smooth_l1_loss, F.cross_entropy, own mining"),
]


def _match_with_library_iou(gt_boxes, gt_labels, priors_cxcywh, iou_threshold=0.5):
    iou = ssd_lib.boxes.box_iou(gt_boxes, cxcywh_to_xyxy(priors_cxcywh))
    matched = torch.zeros(len(priors_cxcywh), 4)
    labels = torch.zeros(len(priors_cxcywh), dtype=torch.long)
    if len(gt_boxes) == 0:
        return matched, labels
    best_iou, best_gt = iou.max(dim=0)
    for g in range(len(gt_boxes)):
        best_iou[iou[g].argmax()] = 2.0
        best_gt[iou[g].argmax()] = g
    positive = best_iou >= iou_threshold
    matched = gt_boxes[best_gt]
    labels = torch.where(positive, gt_labels[best_gt], torch.zeros_like(labels))
    return matched, labels


@pytest.mark.parametrize("checker, solution, helpers", PERMITTED, ids=[f"{c.__name__}-{h}" for c, _, h in PERMITTED])
def test_solutions_that_use_the_permitted_helpers_pass(checker, solution, helpers):
    result = checker(solution)
    assert result.passed, result.message


# ------------------------------------------------------------------ seeds: the cases a hidden test runs are not the public ones

import copy  # noqa: E402

LEARNER_ALL = {**LEARNER, **LAB_LEARNER}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and bool((a == b).all()))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if callable(a) and callable(b):
        return True  # a network the checker rebuilds for each call
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _wrong(value):
    """A plausible wrong answer of the same kind (a memoriser's guess for inputs it has not seen)."""
    if isinstance(value, (bool, np.bool_)):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, tuple):
        return tuple(_wrong(v) for v in value)
    return copy.deepcopy(value)


def _memoriser(checker, reference):
    """A solution that passes the public check by replaying the reference's answers to its inputs."""
    seen = []

    def record(*args):
        out = reference(*args)
        stored = out.detach().clone() if isinstance(out, torch.Tensor) else copy.deepcopy(out)
        seen.append((copy.deepcopy(args), stored))
        return out

    with reference_allowed():
        assert checker(record).passed

    def memorised(*args):
        for inputs, out in seen:
            if _same(inputs, args):
                if isinstance(out, torch.Tensor) and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
                    return out + 0 * args[0].sum()  # a loss must stay differentiable
                return copy.deepcopy(out)
        return _wrong(seen[-1][1])

    return memorised


@pytest.mark.plumbing
@pytest.mark.parametrize("checker", list(DELEGATING_LIBRARY), ids=lambda c: c.__name__)
def test_other_seeds_pass_the_reference(checker):
    for seed in (7, 1234):
        with on_its_reference():
            assert checker(DELEGATING_LIBRARY[checker], seed=seed).passed


@pytest.mark.parametrize("checker", [c for c in DELEGATING_LIBRARY if c in LEARNER_ALL], ids=lambda c: c.__name__)
def test_other_seeds_pass_the_learner(checker):
    for seed in (7, 1234):
        result = checker(LEARNER_ALL[checker], seed=seed)
        assert result.passed, result.message


@pytest.mark.parametrize("checker", list(DELEGATING_LIBRARY), ids=lambda c: c.__name__)
def test_a_memorised_solution_passes_the_public_cases_and_fails_another_seed(checker):
    memorised = _memoriser(checker, DELEGATING_LIBRARY[checker])
    public = checker(memorised)
    assert public.passed, public.message
    hidden = checker(memorised, seed=7)
    assert not hidden.passed, hidden.message  # it fails on a case built from seed 7


# ------------------------------------------------------------------ hidden tests: the part of a check cell students never see

from pathlib import Path  # noqa: E402

from notebook_lines import graded_checks  # noqa: E402

from ssd_lib.course.checks import hidden_tests  # noqa: E402
from ssd_lib.course.student import read_notebook  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
GRADED = [(path.stem, *entry) for path in NOTEBOOKS for entry in graded_checks(read_notebook(path).cells)]
HIDDEN = [(stem, grade_id, *call) for stem, grade_id, _, hidden in GRADED for call in hidden]
HIDDEN_GENERIC = [h for h in HIDDEN if getattr(checks, h[2]) not in TESTED_IN_CAPSTONE]


def test_every_graded_check_has_hidden_tests_on_other_seeds():
    """Each graded code cell grades with checkers, and calls each of them again in its hidden region, with
    the same function, on seeds that are not the public one (0) and not each other."""
    assert GRADED and HIDDEN
    for stem, grade_id, public, hidden in GRADED:
        where = f"{stem}: {grade_id}"
        assert public, f"{where}: a graded code cell grades with a checker (ssd_lib.course.checks)"
        assert {(c, f) for c, f, _ in hidden} == set(public), where
        for _, _, seeds in hidden:
            assert len(seeds) >= 2 and 0 not in seeds and len(set(seeds)) == len(seeds), where
    seen = [seeds for *_, seeds in HIDDEN]
    assert len(set(seen)) == len(seen), "two hidden regions share their seeds"


@pytest.mark.plumbing
@pytest.mark.parametrize("stem, grade_id, checker_name, fn_name, seeds", HIDDEN_GENERIC,
                         ids=[f"{s}-{c}" for s, _, c, _, _ in HIDDEN_GENERIC])
def test_hidden_tests_pass_the_reference(stem, grade_id, checker_name, fn_name, seeds):
    checker = getattr(checks, checker_name)
    with on_its_reference():
        result = hidden_tests(checker, DELEGATING_LIBRARY[checker], seeds)
    assert result.passed and "(hidden, seed" in result.message and "float64" in result.message, result.message


@pytest.mark.parametrize("stem, grade_id, checker_name, fn_name, seeds", HIDDEN_GENERIC,
                         ids=[f"{s}-{c}" for s, _, c, _, _ in HIDDEN_GENERIC])
def test_hidden_tests_pass_a_learner_and_fail_a_memorised_one(stem, grade_id, checker_name, fn_name, seeds):
    checker = getattr(checks, checker_name)
    reference = DELEGATING_LIBRARY[checker]
    if checker in LEARNER_ALL:
        result = hidden_tests(checker, LEARNER_ALL[checker], seeds)
        assert result.passed, result.message
    memorised = _memoriser(checker, reference)
    result = hidden_tests(checker, memorised, seeds)
    assert not result.passed and f"(hidden, seed {seeds[0]})" in result.message, result.message


def test_a_solution_that_hardcodes_float32_fails_the_float64_hidden_test():
    def iou32(boxes_a, boxes_b):
        return iou(boxes_a.float(), boxes_b.float())

    assert checks.check_iou(iou32).passed  # the public cases are float32
    result = hidden_tests(checks.check_iou, iou32, seeds=(11, 12))
    assert not result.passed and "float64" in result.message, result.message
    assert "torch.float64 inputs gave a torch.float32 result" in result.message and "Hint: keep the inputs' dtype" \
        in result.message, result.message
    assert hidden_tests(checks.check_iou, iou32, seeds=(11, 12), float64=False).passed


def test_the_float64_variant_converts_cases_and_restores_them():
    from ssd_lib.course.checks.hidden import convert as _convert, variant

    case = (torch.zeros(2, 4), torch.zeros(3, dtype=torch.long), {"w": torch.ones(1, requires_grad=True)}, 0.5)
    with variant(torch.float64, label="x"):
        boxes, labels, weights, number = _convert(case)
    assert boxes.dtype == torch.float64 and labels.dtype == torch.long and number == 0.5
    assert weights["w"].dtype == torch.float64 and weights["w"].requires_grad and weights["w"].is_leaf
    assert _convert(case)[0].dtype == torch.float32  # outside the context nothing is converted


# ------------------------------------------------------------------ what a class is graded on: counts and points

from ssd_lib.course.student import SOLUTION_BEGIN, SOLUTION_END, nbgrader_metadata  # noqa: E402


def _graded_cells(path):
    """(check cell's grade_id, its points, lines of code of the model answer just above it) for each graded code
    cell, and the points of the manually graded (markdown) cells."""
    cells = read_notebook(path).cells
    code, manual = [], 0
    for index, cell in enumerate(cells):
        meta = nbgrader_metadata(cell)
        if not meta.get("grade"):
            continue
        if cell.cell_type != "code":
            manual += meta.get("points", 0)
            continue
        answer = next(c for c in reversed(cells[:index]) if c.cell_type == "code" and nbgrader_metadata(c).get("solution"))
        body = answer.source.split(SOLUTION_BEGIN, 1)[-1].split(SOLUTION_END, 1)[0]
        lines = [ln for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        code.append((meta["grade_id"], meta.get("points", 0), len(lines)))
    return code, manual


def test_every_lesson_has_two_graded_exercises_and_points_follow_difficulty():
    """Lessons 1-12 each have at least 2 graded exercises and the course at least 60 points; a one-line answer is
    worth 1 point, a whole function (8 or more lines in the model answer) 3 to 5."""
    total = 0
    for path in NOTEBOOKS:
        code, manual = _graded_cells(path)
        assert len(code) >= 2, f"{path.stem}: {len(code)} graded exercise(s)"
        for grade_id, points, lines in code:
            assert 1 <= points <= 5, (path.stem, grade_id, points)
            if lines <= 1:
                assert points == 1, f"{path.stem} {grade_id}: a one-line answer worth {points} points"
            if lines >= 8:
                assert points >= 3, f"{path.stem} {grade_id}: a {lines}-line answer worth {points} point(s)"
        total += sum(points for _, points, _ in code) + manual
    assert total >= 60, f"the course has {total} points"
