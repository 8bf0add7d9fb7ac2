"""Tests for ssd_lib.matching: the two-step matching rule of the paper (Sec. 2.2), checked on
hand-built cases, against a plain loop written here, and against torchvision's SSDMatcher."""
from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import SSDMatcher
from torchvision.ops import box_iou as tv_box_iou

from ssd_lib.boxes import cxcywh_to_xyxy, encode, xyxy_to_cxcywh
from ssd_lib.matching import match, match_batch, match_ious
from ssd_lib.priors import PriorConfig, default_boxes

PROPERTY = settings(max_examples=40, derandomize=True, deadline=None)

SMALL_CFG = PriorConfig.from_paper(60, (4, 2, 1), aspect_ratios=((2,), (2, 3), (2,)))  # 64 + 24 + 4 = 92 boxes
SSD300_PRIORS = default_boxes(PriorConfig.ssd300())


def _priors_from_xyxy(rows) -> torch.Tensor:
    return xyxy_to_cxcywh(torch.tensor(rows, dtype=torch.float64))


def _random_gt(generator: torch.Generator, n: int, dtype=torch.float32) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 0.7
    wh = 0.03 + torch.rand(n, 2, generator=generator, dtype=torch.float64) * 0.27
    return torch.cat((xy, xy + wh), dim=1).to(dtype)


@st.composite
def gt_boxes(draw, max_n: int = 5) -> torch.Tensor:
    n = draw(st.integers(1, max_n))
    rows = []
    for _ in range(n):
        w = draw(st.floats(0.02, 1.0))
        h = draw(st.floats(0.02, 1.0))
        x1 = draw(st.floats(0.0, 1.0 - w))
        y1 = draw(st.floats(0.0, 1.0 - h))
        rows.append([x1, y1, x1 + w, y1 + h])
    return torch.tensor(rows, dtype=torch.float64)


def reference_match(gt_boxes, gt_labels, priors_cxcywh, threshold=0.5):
    """The paper's rule as two plain loops, on torchvision's IoU. Returns (boxes, labels) like match()."""
    priors_xyxy = cxcywh_to_xyxy(priors_cxcywh)
    iou = tv_box_iou(gt_boxes, priors_xyxy).tolist()  # (G, P)
    G, P = len(iou), priors_xyxy.shape[0]
    owner = [None] * P
    # Threshold match: every default box takes its best object if that IoU exceeds the threshold.
    for p in range(P):
        best_g, best = None, -1.0
        for g in range(G):
            if iou[g][p] > best:
                best_g, best = g, iou[g][p]
        if best > threshold:
            owner[p] = best_g
    # Forced match, applied last so it wins: every object takes its best default box.
    for g in range(G):
        best_p = max(range(P), key=lambda p: iou[g][p])
        owner[best_p] = g
    labels = torch.tensor([0 if o is None else int(gt_labels[o]) for o in owner], dtype=torch.long)
    boxes = torch.stack([priors_xyxy[p] if o is None else gt_boxes[o] for p, o in enumerate(owner)])
    return boxes, labels, iou


# --- the two steps, by hand --------------------------------------------------------------------

def test_tiny_odd_object_still_gets_a_default_box():
    gt = torch.tensor([[0.40, 0.40, 0.405, 0.47]])  # 0.005 x 0.07: no default box overlaps it well
    best_iou, best_prior = tv_box_iou(gt, cxcywh_to_xyxy(SSD300_PRIORS))[0].max(dim=0)
    assert best_iou < 0.5  # precondition: the threshold step alone would leave it unmatched
    boxes, labels = match(gt, torch.tensor([7]), SSD300_PRIORS)
    assert labels.shape == (8732,) and boxes.shape == (8732, 4)
    assert (labels > 0).sum() == 1
    assert labels[best_prior] == 7
    torch.testing.assert_close(boxes[best_prior], gt[0])


@pytest.mark.parametrize("swap", [False, True])
def test_default_box_above_threshold_for_two_objects_takes_the_better(swap):
    objects = [[0.10, 0.10, 0.50, 0.50], [0.20, 0.20, 0.60, 0.60]]
    priors_xyxy = [
        [0.10, 0.10, 0.50, 0.50],  # exactly object 0 (its forced match)
        [0.20, 0.20, 0.60, 0.60],  # exactly object 1 (its forced match)
        [0.12, 0.12, 0.54, 0.54],  # overlaps both above 0.5, object 0 more
        [0.80, 0.80, 0.95, 0.95],  # far from both
    ]
    gt = torch.tensor(objects[::-1] if swap else objects, dtype=torch.float64)
    labels_in = torch.tensor([5, 9] if swap else [9, 5])  # object 0 has label 9 either way
    priors = _priors_from_xyxy(priors_xyxy)
    iou = tv_box_iou(gt, cxcywh_to_xyxy(priors))
    assert (iou[:, 2] > 0.5).all() and iou[1 if swap else 0, 2] > iou[0 if swap else 1, 2]
    boxes, labels = match(gt, labels_in, priors)
    assert labels.tolist() == [9, 5, 9, 0]
    torch.testing.assert_close(boxes[2], torch.tensor(objects[0], dtype=torch.float64))
    torch.testing.assert_close(boxes[3], torch.tensor(priors_xyxy[3], dtype=torch.float64))  # background: itself


def test_forced_match_overrides_threshold_assignment():
    gt = torch.tensor([[0.10, 0.10, 0.55, 0.50], [0.10, 0.10, 0.30, 0.50]], dtype=torch.float64)
    priors_xyxy = [
        [0.10, 0.10, 0.50, 0.50],  # A: IoU 0.889 with object 0, 0.5 with object 1 (object 1's best)
        [0.10, 0.10, 0.55, 0.50],  # C: object 0 exactly (object 0's best)
        [0.70, 0.70, 0.90, 0.90],
    ]
    priors = _priors_from_xyxy(priors_xyxy)
    iou = tv_box_iou(gt, cxcywh_to_xyxy(priors))
    assert iou[0, 0] > 0.5 and iou[0, 0] > iou[1, 0]  # threshold step gives A to object 0 ...
    assert iou[1].argmax() == 0 and iou[1, 0] <= 0.5  # ... but A is object 1's best default box
    boxes, labels = match(gt, torch.tensor([3, 4]), priors)
    assert labels.tolist() == [4, 3, 0]
    torch.testing.assert_close(boxes[0], gt[1])
    torch.testing.assert_close(boxes[1], gt[0])


def test_threshold_is_strict_and_configurable():
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5]], dtype=torch.float64)
    priors = _priors_from_xyxy([
        [0.0, 0.0, 0.5, 0.5],  # IoU 1 (forced)
        [0.0, 0.0, 0.5, 0.25],  # IoU exactly 0.5: not "> 0.5"
        [0.0, 0.0, 0.5, 0.30],  # IoU 0.6
    ])
    _, labels = match(gt, torch.tensor([2]), priors)
    assert labels.tolist() == [2, 0, 2]
    _, labels = match(gt, torch.tensor([2]), priors, iou_threshold=0.65)
    assert labels.tolist() == [2, 0, 0]


def test_objects_sharing_a_best_default_box_later_one_keeps_it():
    """Documented behaviour (as in the released code): the forced matches are written in object order."""
    gt = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.45, 0.5]], dtype=torch.float64)
    priors = _priors_from_xyxy([[0.1, 0.1, 0.5, 0.5], [0.7, 0.7, 0.9, 0.9]])
    _, labels = match(gt, torch.tensor([1, 2]), priors)
    assert labels.tolist() == [2, 0]


@pytest.mark.parametrize("per_image", [True, False])
def test_the_tie_rule_is_defined_the_last_listed_object_keeps_a_shared_box(per_image):
    """Three objects whose best default box is box 0, in one image with padding rows (the batch path
    pads the second image's one object to three): the last listed object keeps box 0 on both paths,
    whatever their IoUs, and the others fall back to step 2 (box 0 is nobody else's)."""
    from ssd_lib.matching import _assign

    priors = _priors_from_xyxy([[0.1, 0.1, 0.5, 0.5], [0.7, 0.7, 0.9, 0.9], [0.0, 0.0, 0.2, 0.2]])
    shared = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.5], [0.1, 0.1, 0.45, 0.48]])  # IoU 1, .95, .81
    alone = torch.tensor([[0.7, 0.7, 0.9, 0.88]])
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        boxes = [shared[order], alone]
        matched_idx, positive, _, _ = _assign(boxes, [torch.tensor([1, 2, 3]), torch.tensor([4])], priors, 0.5,
                                              per_image=per_image)
        assert positive[0, 0] and matched_idx[0, 0] == 2, (order, matched_idx[0])
        assert positive[1].tolist() == [False, True, False] and matched_idx[1, 1] == 0
    iou = torch.tensor([[[0.3, 0.1], [0.2, 0.1], [0.9, 0.9]]])  # a padding row (2) must never take a box
    idx, pos = match_ious(iou, torch.tensor([[True, True, False]]))
    assert idx[0, 0] == 1 and pos.tolist() == [[True, False]]


def test_no_objects_gives_all_background():
    boxes, labels = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), SSD300_PRIORS)
    assert labels.shape == (8732,) and (labels == 0).all()
    torch.testing.assert_close(boxes, cxcywh_to_xyxy(SSD300_PRIORS))
    loc_targets, labels = match_batch([torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2, SSD300_PRIORS)
    assert loc_targets.shape == (2, 8732, 4) and labels.shape == (2, 8732)
    assert (labels == 0).all()
    torch.testing.assert_close(loc_targets, torch.zeros(2, 8732, 4), atol=1e-5, rtol=0)


def test_match_ious_ignores_padding_rows():
    iou = torch.tensor([[[0.6, 0.2, 0.1], [0.9, 0.9, 0.9]]])  # row 1 is padding with higher IoU
    matched_idx, positive = match_ious(iou, torch.tensor([[True, False]]))
    assert positive.tolist() == [[True, False, False]]
    assert matched_idx[0, 0] == 0


# --- against references ------------------------------------------------------------------------

@PROPERTY
@given(gt_boxes(), st.integers(0, 2**16))
def test_matches_loop_reference(gt, seed):
    priors = default_boxes(SMALL_CFG, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    gt_labels = torch.randint(1, 21, (len(gt),), generator=g)
    ref_boxes, ref_labels, iou = reference_match(gt, gt_labels, priors)
    # The rule is ambiguous on exact ties; keep the examples where it is not.
    for row in iou:
        assume(row.count(max(row)) == 1)
    for p in range(len(priors)):
        column = [row[p] for row in iou]
        assume(max(column) <= 0.5 or column.count(max(column)) == 1)
    boxes, labels = match(gt, gt_labels, priors)
    assert torch.equal(labels, ref_labels)
    torch.testing.assert_close(boxes, ref_boxes)


def test_matches_torchvision_ssd_matcher():
    """torchvision's SSDMatcher implements the same two steps (threshold >= 0.5, which differs
    from our > 0.5 only on exact ties, absent from random boxes)."""
    g = torch.Generator().manual_seed(5)
    anchors_xyxy = cxcywh_to_xyxy(SSD300_PRIORS)
    matcher = SSDMatcher(0.5)
    for n in (1, 3, 8, 15):
        gt = _random_gt(g, n)
        gt_labels = torch.arange(1, n + 1)  # one label per object, so labels identify objects
        _, labels = match(gt, gt_labels, SSD300_PRIORS)
        tv_idx = matcher(tv_box_iou(gt, anchors_xyxy))
        expected = torch.where(tv_idx >= 0, tv_idx + 1, 0)
        assert torch.equal(labels, expected)


def test_batched_equals_per_image():
    g = torch.Generator().manual_seed(6)
    counts = [3, 0, 7, 1, 0]
    gt = [_random_gt(g, n) for n in counts]
    gt_labels = [torch.randint(1, 21, (n,), generator=g) for n in counts]
    loc_targets, labels = match_batch(gt, gt_labels, SSD300_PRIORS)
    assert loc_targets.shape == (5, 8732, 4) and labels.shape == (5, 8732) and labels.dtype == torch.long
    for i in range(len(counts)):
        boxes_i, labels_i = match(gt[i], gt_labels[i], SSD300_PRIORS)
        assert torch.equal(labels[i], labels_i)
        torch.testing.assert_close(loc_targets[i], encode(boxes_i, SSD300_PRIORS))
        assert (labels_i > 0).sum() >= counts[i]  # every object has at least one default box
    assert (labels[1] == 0).all() and (labels[4] == 0).all()
    torch.testing.assert_close(loc_targets[labels == 0], torch.zeros(int((labels == 0).sum()), 4), atol=1e-5, rtol=0)


@PROPERTY
@given(st.lists(st.integers(0, 4), min_size=1, max_size=4), st.integers(0, 2**16))
def test_batched_equals_per_image_property(counts, seed):
    priors = default_boxes(SMALL_CFG)
    g = torch.Generator().manual_seed(seed)
    gt = [_random_gt(g, n) for n in counts]
    gt_labels = [torch.randint(1, 5, (n,), generator=g) for n in counts]
    loc_targets, labels = match_batch(gt, gt_labels, priors)
    for i in range(len(counts)):
        boxes_i, labels_i = match(gt[i], gt_labels[i], priors)
        assert torch.equal(labels[i], labels_i)
        torch.testing.assert_close(loc_targets[i], encode(boxes_i, priors))


# --- bad input ---------------------------------------------------------------------------------

GOOD_BOX = torch.tensor([[0.1, 0.1, 0.4, 0.4]])


def test_background_or_negative_labels_rejected():
    with pytest.raises(ValueError, match="background"):
        match(GOOD_BOX, torch.tensor([0]), SSD300_PRIORS)
    with pytest.raises(ValueError, match="1..C"):
        match(GOOD_BOX, torch.tensor([-3]), SSD300_PRIORS)
    with pytest.raises(ValueError, match=r"gt_labels\[1\]"):
        match_batch([GOOD_BOX, GOOD_BOX], [torch.tensor([1]), torch.tensor([0])], SSD300_PRIORS)


def test_float_labels_rejected():
    with pytest.raises(TypeError, match="integer"):
        match(GOOD_BOX, torch.tensor([1.0]), SSD300_PRIORS)


def test_label_count_must_match_boxes():
    with pytest.raises(ValueError, match="one label per box"):
        match(GOOD_BOX, torch.tensor([1, 2]), SSD300_PRIORS)
    with pytest.raises(ValueError, match="images"):
        match_batch([GOOD_BOX], [torch.tensor([1]), torch.tensor([1])], SSD300_PRIORS)


def test_zero_area_box_rejected():
    with pytest.raises(ValueError, match="zero area"):
        match(torch.tensor([[0.1, 0.1, 0.4, 0.4], [0.2, 0.3, 0.2, 0.5]]), torch.tensor([1, 2]), SSD300_PRIORS)


def test_bad_boxes_rejected():
    with pytest.raises(ValueError, match="x2 >= x1"):
        match(torch.tensor([[0.4, 0.1, 0.1, 0.4]]), torch.tensor([1]), SSD300_PRIORS)
    with pytest.raises(ValueError, match="NaN"):
        match(torch.tensor([[0.1, float("nan"), 0.4, 0.4]]), torch.tensor([1]), SSD300_PRIORS)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        match(torch.zeros(0), torch.zeros(0, dtype=torch.long), SSD300_PRIORS)  # (0,) instead of (0, 4)
    with pytest.raises(ValueError, match=r"\(G, 4\)"):
        match(GOOD_BOX.unsqueeze(0), torch.tensor([1]), SSD300_PRIORS)


def test_pairwise_iou_equals_torchvision_box_iou():
    from torchvision.ops import box_iou as tv_box_iou

    from ssd_lib.matching import pairwise_iou

    g = torch.Generator().manual_seed(3)
    corners = torch.rand(40, 2, generator=g)
    a = torch.cat([corners, corners + torch.rand(40, 2, generator=g) * 0.5], dim=1)
    corners = torch.rand(300, 2, generator=g)
    b = torch.cat([corners, corners + torch.rand(300, 2, generator=g) * 0.3], dim=1)
    assert torch.equal(pairwise_iou(a, b), tv_box_iou(a, b))


def test_per_image_and_whole_batch_assignment_agree():
    """The CPU path (IoU image by image) and the GPU path (one padded IoU call) give the same targets."""
    from ssd_lib.matching import _assign

    g = torch.Generator().manual_seed(4)
    priors = default_boxes(PriorConfig.ssd300())
    boxes, labels = [], []
    for count in (1, 7, 0, 20, 3):
        corner = torch.rand(count, 2, generator=g) * 0.6
        boxes.append(torch.cat([corner, corner + 0.05 + torch.rand(count, 2, generator=g) * 0.35], dim=1))
        labels.append(torch.randint(1, 21, (count,), generator=g))
    a = _assign(boxes, labels, priors, 0.5, per_image=True)
    b = _assign(boxes, labels, priors, 0.5, per_image=False)
    assert torch.equal(a[1], b[1]) and a[1].any()
    assert torch.equal(a[0][a[1]], b[0][b[1]])


def test_validate_false_skips_the_checks_and_gives_the_same_targets():
    """match_batch(validate=False) is for a caller that checked the batch already (the trainer):
    the same targets, and no per-image check runs (a label 0 would otherwise be refused)."""
    g = torch.Generator().manual_seed(5)
    boxes, labels = [], []
    for count in (3, 0, 9):
        corner = torch.rand(count, 2, generator=g) * 0.6
        boxes.append(torch.cat([corner, corner + 0.05 + torch.rand(count, 2, generator=g) * 0.35], dim=1))
        labels.append(torch.randint(1, 21, (count,), generator=g))
    checked = match_batch(boxes, labels, SSD300_PRIORS)
    unchecked = match_batch(boxes, labels, SSD300_PRIORS, validate=False)
    assert all(torch.equal(a, b) for a, b in zip(checked, unchecked))
    with pytest.raises(ValueError, match=r"gt_labels\[0\]"):
        match_batch([GOOD_BOX], [torch.tensor([0])], SSD300_PRIORS)
    match_batch([GOOD_BOX], [torch.tensor([0])], SSD300_PRIORS, validate=False)  # not checked: the caller's job
    with pytest.raises(ValueError, match="images"):  # the count of images is still compared (free)
        match_batch([GOOD_BOX], [torch.tensor([1]), torch.tensor([1])], SSD300_PRIORS, validate=False)
