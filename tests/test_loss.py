"""Tests for ssd_lib.loss: the MultiBox loss (paper Eq. 1-3) and hard negative mining, by hand
on tiny cases and against torchvision's SSD.compute_loss on matched SSD300 targets."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import SSDMatcher
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD as TorchvisionSSD
from torchvision.ops import box_iou

from ssd_lib.boxes import cxcywh_to_xyxy
from ssd_lib.loss import LossParts, MultiBoxLoss, hard_negative_mask
from ssd_lib.matching import match_batch
from ssd_lib.priors import PriorConfig, default_boxes


def _ce(row: list[float], label: int) -> float:
    """Softmax cross-entropy of one row, by hand."""
    return math.log(sum(math.exp(v) for v in row)) - row[label]


def _smooth_l1(d: float) -> float:
    return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5


# One image, P = 6 boxes, C = 3 classes; box 0 is the only positive (label 2).
HAND_LOGITS = [
    [0.0, 1.0, 2.0],   # positive, label 2
    [0.0, 0.0, 0.0],   # negative, CE = log 3 = 1.10
    [0.0, 2.0, 0.0],   # negative, CE = 2.24
    [1.0, 0.0, 0.0],   # negative, CE = 0.55
    [0.0, 0.0, 3.0],   # negative, CE = 3.09 (hardest)
    [0.0, -1.0, 1.0],  # negative, CE = 1.41
]
HAND_LABELS = [2, 0, 0, 0, 0, 0]
HAND_RESIDUAL = [0.5, -2.0, 0.1, 1.5]  # smooth L1: 0.125 + 1.5 + 0.005 + 1.0 = 2.63
HARDEST_3 = [4, 2, 5]


def _hand_case():
    logits = torch.tensor([HAND_LOGITS], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([HAND_LABELS])
    loc_targets = torch.zeros(1, 6, 4, dtype=torch.float64)
    loc = torch.full((1, 6, 4), 5.0, dtype=torch.float64)  # big errors on negatives must be ignored
    loc[0, 0] = torch.tensor(HAND_RESIDUAL, dtype=torch.float64)
    loc.requires_grad_(True)
    return loc, logits, loc_targets, labels


def test_hand_computed_loss():
    loc, logits, loc_targets, labels = _hand_case()
    out = MultiBoxLoss()(loc, logits, loc_targets, labels)
    assert isinstance(out, LossParts)
    expected_loc = sum(_smooth_l1(d) for d in HAND_RESIDUAL)
    assert expected_loc == pytest.approx(2.63)
    expected_conf = _ce(HAND_LOGITS[0], 2) + sum(_ce(HAND_LOGITS[i], 0) for i in HARDEST_3)
    assert int(out.num_pos) == 1
    assert out.loc.item() == pytest.approx(expected_loc, rel=1e-6)
    assert out.conf.item() == pytest.approx(expected_conf, rel=1e-6)
    assert out.total.item() == pytest.approx(expected_conf + expected_loc, rel=1e-6)


def test_hand_computed_loss_two_positives_divides_by_n():
    logits = torch.tensor([[[0.0, 2.0, 0.0], [1.0, 0.0, 1.0], [0.5, 0.0, 0.0], [0.0, 0.0, 1.5],
                            [0.0, 1.0, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([[1, 2, 0, 0, 0]])
    loc = torch.tensor([[[0.2, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, -0.4], [9.0] * 4, [9.0] * 4, [9.0] * 4]], dtype=torch.float64)
    out = MultiBoxLoss(alpha=2.0)(loc, logits, torch.zeros_like(loc), labels)
    rows = logits[0].tolist()
    expected_loc = (0.02 + 2.5 + 0.08) / 2
    expected_conf = (_ce(rows[0], 1) + _ce(rows[1], 2) + sum(_ce(rows[i], 0) for i in (2, 3, 4))) / 2
    assert int(out.num_pos) == 2
    assert out.loc.item() == pytest.approx(expected_loc, rel=1e-6)
    assert out.conf.item() == pytest.approx(expected_conf, rel=1e-6)
    assert out.total.item() == pytest.approx(expected_conf + 2.0 * expected_loc, rel=1e-6)


def test_three_to_one_keeps_the_hardest_negatives():
    loc, logits, loc_targets, labels = _hand_case()
    conf_loss = F.cross_entropy(logits[0], labels[0], reduction="none").unsqueeze(0)
    mask = hard_negative_mask(conf_loss, labels > 0)
    assert mask.sum() == 3
    assert mask[0].nonzero().flatten().tolist() == sorted(HARDEST_3)
    assert not mask[0, 0]  # a positive is never a negative


@pytest.mark.parametrize("ratio, chosen", [(0.0, []), (1.0, [4]), (2.0, [2, 4]), (3.0, [2, 4, 5]), (4.0, [1, 2, 4, 5])])
def test_neg_pos_ratio_parameter(ratio, chosen):
    loc, logits, loc_targets, labels = _hand_case()
    out = MultiBoxLoss(neg_pos_ratio=ratio)(loc, logits, loc_targets, labels)
    expected_conf = _ce(HAND_LOGITS[0], 2) + sum(_ce(HAND_LOGITS[i], 0) for i in chosen)
    assert out.conf.item() == pytest.approx(expected_conf, rel=1e-6)


def test_mining_is_per_image():
    """An image with no positives contributes no negatives, however hard they are."""
    loc, logits, loc_targets, labels = _hand_case()
    hard_background = torch.tensor([[0.0, 6.0, 6.0]] * 6, dtype=torch.float64)  # CE ~ 6.7 each
    logits2 = torch.stack([hard_background, logits[0].detach()])
    labels2 = torch.stack([torch.zeros(6, dtype=torch.long), labels[0]])
    loc2 = torch.stack([torch.zeros(6, 4, dtype=torch.float64), loc[0].detach()])
    mask = hard_negative_mask(F.cross_entropy(logits2.flatten(0, 1), labels2.flatten(), reduction="none").view(2, 6), labels2 > 0)
    assert mask[0].sum() == 0 and mask[1].sum() == 3
    out = MultiBoxLoss()(loc2, logits2, torch.zeros_like(loc2), labels2)
    single = MultiBoxLoss()(loc, logits, loc_targets, labels)
    assert out.total.item() == pytest.approx(single.total.item(), rel=1e-6)


def test_scarce_negatives():
    """2 positives ask for 6 negatives but only 3 exist: all 3 are used, and each box counts once."""
    logits = torch.tensor([[[0.0, 2.0], [1.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 0.5]]], dtype=torch.float64)
    labels = torch.tensor([[1, 1, 0, 0, 0]])
    mask = hard_negative_mask(F.cross_entropy(logits[0], labels[0], reduction="none").unsqueeze(0), labels > 0)
    assert mask[0].tolist() == [False, False, True, True, True]
    out = MultiBoxLoss()(torch.zeros(1, 5, 4, dtype=torch.float64), logits, torch.zeros(1, 5, 4, dtype=torch.float64), labels)
    rows = logits[0].tolist()
    expected = (_ce(rows[0], 1) + _ce(rows[1], 1) + sum(_ce(rows[i], 0) for i in (2, 3, 4))) / 2
    assert out.conf.item() == pytest.approx(expected, rel=1e-6)


def test_zero_positives_gives_exact_zero_and_finite_gradients():
    torch.manual_seed(0)
    loc = torch.randn(2, 10, 4, requires_grad=True)
    logits = torch.randn(2, 10, 5, requires_grad=True)
    labels = torch.zeros(2, 10, dtype=torch.long)
    out = MultiBoxLoss()(loc, logits, torch.randn(2, 10, 4), labels)
    assert out.total.item() == 0.0 and out.loc.item() == 0.0 and out.conf.item() == 0.0
    assert int(out.num_pos) == 0
    out.total.backward()
    assert loc.grad is not None and logits.grad is not None
    assert torch.isfinite(loc.grad).all() and torch.isfinite(logits.grad).all()
    assert (loc.grad == 0).all() and (logits.grad == 0).all()


def test_gradient_reaches_loc_and_logits_only_where_used():
    loc, logits, loc_targets, labels = _hand_case()
    MultiBoxLoss()(loc, logits, loc_targets, labels).total.backward()
    loc_used = loc.grad.abs().sum(-1) > 0
    logits_used = logits.grad.abs().sum(-1) > 0
    assert loc_used[0].tolist() == [True, False, False, False, False, False]  # positives only
    assert logits_used[0].tolist() == [True, False, True, False, True, True]  # positive + 3 hardest


def test_loc_part_is_smooth_l1_with_beta_1():
    torch.manual_seed(1)
    loc = torch.randn(2, 30, 4) * 2
    loc_targets = torch.randn(2, 30, 4)
    labels = torch.randint(0, 4, (2, 30))
    out = MultiBoxLoss()(loc, torch.randn(2, 30, 4), loc_targets, labels)
    pos = labels > 0
    expected = F.smooth_l1_loss(loc[pos], loc_targets[pos], beta=1.0, reduction="sum") / pos.sum()
    torch.testing.assert_close(out.loc, expected)


def test_loc_part_is_not_plain_l1():
    loc = torch.full((1, 2, 4), 0.2)
    labels = torch.tensor([[1, 0]])
    out = MultiBoxLoss()(loc, torch.zeros(1, 2, 2), torch.zeros(1, 2, 4), labels)
    assert out.loc.item() == pytest.approx(4 * 0.5 * 0.2 ** 2)  # 0.08; plain L1 would give 0.8


# --- against torchvision's SSD.compute_loss ----------------------------------------------------

def _torchvision_ssd(num_classes: int) -> TorchvisionSSD:
    """A torchvision SSD used only for its compute_loss (no backbone or head is run)."""
    return TorchvisionSSD(nn.Identity(), DefaultBoxGenerator([[2]]), (300, 300), num_classes, head=nn.Identity())


def _torchvision_loss(gt_boxes, gt_labels, loc, logits, priors_cxcywh, num_classes):
    anchors = cxcywh_to_xyxy(priors_cxcywh) * 300
    matcher = SSDMatcher(0.5)
    targets, matched_idxs = [], []
    for boxes, labels in zip(gt_boxes, gt_labels):
        boxes_px = boxes * 300
        targets.append({"boxes": boxes_px, "labels": labels})
        if boxes.numel() == 0:
            matched_idxs.append(torch.full((anchors.shape[0],), -1, dtype=torch.int64))
        else:
            matched_idxs.append(matcher(box_iou(boxes_px, anchors)))
    tv = _torchvision_ssd(num_classes)
    return tv.compute_loss(targets, {"bbox_regression": loc, "cls_logits": logits}, [anchors] * len(gt_boxes), matched_idxs)


def test_matches_torchvision_compute_loss():
    torch.manual_seed(2)
    priors = default_boxes(PriorConfig.ssd300())
    counts = [3, 0, 1]
    gt_boxes, gt_labels = [], []
    for n in counts:
        xy = torch.rand(n, 2) * 0.6
        gt_boxes.append(torch.cat((xy, xy + 0.05 + torch.rand(n, 2) * 0.35), dim=1))
        gt_labels.append(torch.randint(1, 21, (n,)))
    loc = torch.randn(3, 8732, 4)
    logits = torch.randn(3, 8732, 21) * 2
    loc_targets, labels = match_batch(gt_boxes, gt_labels, priors)
    ours = MultiBoxLoss()(loc, logits, loc_targets, labels)
    theirs = _torchvision_loss(gt_boxes, gt_labels, loc, logits, priors, 21)
    assert int(ours.num_pos) > 4
    torch.testing.assert_close(ours.loc, theirs["bbox_regression"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ours.conf, theirs["classification"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ours.total, theirs["bbox_regression"] + theirs["classification"], atol=1e-4, rtol=1e-5)


def test_torchvision_differs_only_when_negatives_are_scarce():
    """torchvision ranks positives last (-inf) but does not cap the number of negatives, so when
    3 * N exceeds the negatives available it re-selects positives and counts their loss twice.
    We cap at the number of negatives (each box counted once); the loc parts still agree."""
    priors_xyxy = torch.tensor([[0.0, 0.0, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9], [0.0, 0.6, 0.3, 0.9], [0.6, 0.0, 0.9, 0.3]])
    priors = torch.cat(((priors_xyxy[:, :2] + priors_xyxy[:, 2:]) / 2, priors_xyxy[:, 2:] - priors_xyxy[:, :2]), dim=1)
    gt_boxes = [torch.tensor([[0.0, 0.0, 0.3, 0.32], [0.5, 0.52, 0.9, 0.9]])]
    gt_labels = [torch.tensor([1, 2])]
    torch.manual_seed(3)
    loc, logits = torch.randn(1, 4, 4), torch.randn(1, 4, 3)
    loc_targets, labels = match_batch(gt_boxes, gt_labels, priors)
    assert labels.tolist() == [[1, 2, 0, 0]]
    ours = MultiBoxLoss()(loc, logits, loc_targets, labels)
    theirs = _torchvision_loss(gt_boxes, gt_labels, loc, logits, priors, 3)
    ce = F.cross_entropy(logits[0], labels[0], reduction="none")
    torch.testing.assert_close(ours.conf, ce.sum() / 2)
    torch.testing.assert_close(theirs["classification"], (ce.sum() + ce[:2].sum()) / 2)
    torch.testing.assert_close(ours.loc, theirs["bbox_regression"], atol=1e-5, rtol=1e-5)


# --- bad input ---------------------------------------------------------------------------------

def _valid_inputs(P: int = 6, C: int = 3):
    return torch.zeros(2, P, 4), torch.zeros(2, P, C), torch.zeros(2, P, 4), torch.zeros(2, P, dtype=torch.long)


def test_label_out_of_range_rejected():
    loc, logits, loc_targets, labels = _valid_inputs()
    labels[1, 2] = 3  # C = 3 -> labels must be 0..2
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2"):
        MultiBoxLoss()(loc, logits, loc_targets, labels)
    labels[1, 2] = -1
    with pytest.raises(ValueError, match="labels must be in"):
        MultiBoxLoss()(loc, logits, loc_targets, labels)


def test_float_labels_rejected():
    loc, logits, loc_targets, labels = _valid_inputs()
    with pytest.raises(TypeError, match="int64"):
        MultiBoxLoss()(loc, logits, loc_targets, labels.float())


def test_targets_for_another_number_of_default_boxes_rejected():
    loc, logits, _, labels = _valid_inputs(P=6)
    with pytest.raises(ValueError, match="loc_targets"):
        MultiBoxLoss()(loc, logits, torch.zeros(2, 8, 4), labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        MultiBoxLoss()(loc, logits, torch.zeros(2, 6, 4), torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="logits"):
        MultiBoxLoss()(loc, torch.zeros(2, 8, 3), torch.zeros(2, 6, 4), labels)
    with pytest.raises(ValueError, match=r"loc must have shape \(B, P, 4\)"):
        MultiBoxLoss()(torch.zeros(6, 4), logits, torch.zeros(6, 4), labels)


def test_negative_ratio_rejected():
    with pytest.raises(ValueError, match="neg_pos_ratio"):
        MultiBoxLoss(neg_pos_ratio=-1)


def test_check_labels_false_skips_only_the_label_range_check():
    """The trainer checks its batch once on the CPU and builds MultiBoxLoss(check_labels=False): the
    range check (a read back from the device) is skipped, the free shape and dtype checks are not."""
    loc, logits, loc_targets, labels = _valid_inputs()
    labels[0, 1] = 2
    checked, unchecked = MultiBoxLoss()(loc, logits, loc_targets, labels), MultiBoxLoss(check_labels=False)(
        loc, logits, loc_targets, labels)
    assert all(torch.equal(a, b) for a, b in zip(checked, unchecked))
    labels[1, 2] = -1
    with pytest.raises(ValueError, match="labels must be in"):
        MultiBoxLoss()(loc, logits, loc_targets, labels)
    with pytest.raises(TypeError, match="int64"):
        MultiBoxLoss(check_labels=False)(loc, logits, loc_targets, labels.float())
    with pytest.raises(ValueError, match="loc_targets"):
        MultiBoxLoss(check_labels=False)(loc, logits, torch.zeros(2, 8, 4), labels)
