"""Tests for ssd_lib.course.lab: each broken piece of the lab really produces its symptom (boxes that
stick out or shift, a class trained as background, an out-of-bounds target, jittering offsets, the
wrong negatives, an mAP below 1 for a perfect detector, an infinite loss, a loss that jumps without
warm-up) and its fix (the library's own function) removes it.

(That each broken piece fails its checker and each fix passes is in tests/test_checks.py.)
Everything runs on the CPU with the small model at 64 pixels.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace

import matplotlib
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

from ssd_lib.course import lab  # noqa: E402
from ssd_lib.boxes import cxcywh_to_xyxy, decode  # noqa: E402
from ssd_lib.data import ShapesDataset, labels_from_names, num_classes_for, sanitize_boxes  # noqa: E402
from ssd_lib.loss import MultiBoxLoss, hard_negative_mask  # noqa: E402
from ssd_lib.matching import match, match_batch  # noqa: E402
from ssd_lib.metrics import evaluate_voc, mean_average_precision  # noqa: E402
from ssd_lib.model import ssd_small  # noqa: E402
from ssd_lib.priors import PriorConfig, clip_priors, default_boxes  # noqa: E402
from ssd_lib.train import TrainConfig, train  # noqa: E402
from ssd_lib.viz import read_metrics  # noqa: E402
from torchvision.ops import box_iou  # noqa: E402

from small_setup import CLASSES, NUM_CLASSES, SIZE, batch, model, targets_01  # noqa: E402,F401  (fixtures)


# ---------------------------------------------------------------- 1. priors clipped in (cx, cy, w, h)

def test_priors_clamped_in_centre_form_still_stick_out_and_corner_clip_fixes_it():
    priors = default_boxes(PriorConfig.ssd300())
    outside = lambda p: ((cxcywh_to_xyxy(p) < -1e-6) | (cxcywh_to_xyxy(p) > 1 + 1e-6)).any(dim=1)  # noqa: E731
    assert int(outside(priors).sum()) > 100  # the unclipped SSD300 boxes: many reach past the border

    broken = lab.clip_priors_in_cxcywh(priors)
    assert int(outside(broken).sum()) > 100, "the centre-form clamp leaves the border boxes sticking out"
    wide = priors[:, 2] > 1
    assert wide.any() and torch.allclose(broken[wide, 2], torch.ones(int(wide.sum())))  # width 1 around its centre

    fixed = clip_priors(priors)
    assert not outside(fixed).any()
    shrunk = (fixed[:, 2:] < priors[:, 2:] - 1e-6).any(dim=1)
    assert torch.equal(shrunk, outside(priors)), "exactly the boxes that stuck out shrink"
    moved = (fixed[:, :2] - priors[:, :2]).abs().max(dim=1).values > 1e-6
    assert moved.any() and not (moved & ~shrunk).any()  # ... and those out on one side move inwards
    assert torch.allclose(fixed, default_boxes(replace(PriorConfig.ssd300(), clip=True)))


# ---------------------------------------------------------------- 2. variances twice / dropped in decode

def test_broken_decode_moves_the_boxes_away_from_the_objects(batch, model):
    gt_boxes, gt_labels = targets_01(batch)
    loc_targets, labels = match_batch(gt_boxes, gt_labels, model.priors)
    mean_iou = {}
    for name, fn in (("fixed", decode), ("twice", lab.decode_variances_applied_twice),
                     ("dropped", lab.decode_without_variances)):
        ious = []
        for b in range(len(gt_boxes)):  # the exact targets of the positives, decoded: must give the objects back
            positive = labels[b] > 0
            matched, _ = match(gt_boxes[b], gt_labels[b], model.priors)
            ious.append(box_iou(fn(loc_targets[b], model.priors)[positive], matched[positive]).diagonal())
        mean_iou[name] = float(torch.cat(ious).mean())
    assert mean_iou["fixed"] > 0.999
    assert mean_iou["twice"] < 0.8, mean_iou  # the boxes snap back towards their default boxes
    assert mean_iou["dropped"] < 0.2, mean_iou  # the corrections are 5-10x too large


# ---------------------------------------------------------------- 3. labels not shifted, num_classes without background

def test_unshifted_labels_turn_the_first_class_into_background(batch, model):
    images, targets = batch
    gt_boxes, _ = targets_01(batch)
    names = [[CLASSES[int(label) - 1] for label in t["labels"]] for t in targets]
    first_class_objects = sum(n.count(CLASSES[0]) for n in names)
    assert first_class_objects > 0, "the fixture batch needs a circle"

    def positives_per_class(label_fn):
        _, labels = lab.targets_without_checks(gt_boxes, [label_fn(n, CLASSES) for n in names], model.priors)
        return torch.bincount(labels[labels > 0], minlength=NUM_CLASSES)

    fixed = positives_per_class(labels_from_names)
    broken = positives_per_class(lab.labels_not_shifted_for_background)
    assert fixed[1] > 0  # circles have positives
    assert broken[NUM_CLASSES - 1] == 0, "the last class's label is never used"
    assert broken[1:].sum() < fixed[1:].sum(), "the circles' default boxes became background"
    assert fixed[1:].sum() - broken[1:].sum() == fixed[1]
    with pytest.raises(ValueError, match="label 0 is background"):  # the library's matcher refuses them
        match_batch(gt_boxes, [lab.labels_not_shifted_for_background(n, CLASSES) for n in names], model.priors)


def test_num_classes_without_background_is_an_out_of_bounds_target(batch):
    images, targets = batch
    torch.manual_seed(0)
    small = ssd_small(lab.num_classes_without_background(CLASSES), SIZE)  # 6 outputs for labels 1..6
    gt_boxes, gt_labels = targets_01(batch)
    loc_targets, labels = match_batch(gt_boxes, gt_labels, small.priors)
    assert int(labels.max()) == small.num_classes, "the batch needs an object of the last class"
    with torch.no_grad():
        loc, logits = small(images)
    # What a device-side assert is on a GPU is an IndexError on the CPU:
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(logits.flatten(0, 1), labels.flatten())
    with pytest.raises(ValueError, match="background"):  # MultiBoxLoss says why
        MultiBoxLoss()(loc, logits, loc_targets, labels)
    fixed = ssd_small(num_classes_for(CLASSES), SIZE)
    with torch.no_grad():
        assert math.isfinite(float(MultiBoxLoss()(*fixed(images), loc_targets, labels).total))


# ---------------------------------------------------------------- 4. plain L1 called smooth L1

def _regress(loss_fn, steps=100, lr=0.3):
    """Gradient descent on one predicted offset towards its target 0; returns the errors."""
    offset = torch.tensor([2.0], requires_grad=True)
    errors = []
    for _ in range(steps):
        loss = loss_fn(offset - 0.0).sum()
        (grad,) = torch.autograd.grad(loss, offset)
        with torch.no_grad():
            offset -= lr * grad
        errors.append(abs(float(offset.detach())))
    return errors


def test_plain_l1_jitters_around_the_target_and_smooth_l1_settles():
    smooth = lambda x: F.smooth_l1_loss(x, torch.zeros_like(x), reduction="none")  # noqa: E731
    l1_errors, smooth_errors = _regress(lab.smooth_l1_that_is_plain_l1), _regress(smooth)
    assert min(l1_errors[-20:]) > 0.05, "L1's gradient stays +-1: the offset hops over the target forever"
    assert max(l1_errors[-20:]) < 0.3
    assert smooth_errors[-1] < 1e-4


# ---------------------------------------------------------------- 5. hard negative mining

def test_broken_mining_picks_the_wrong_negatives(batch, model):
    images, _ = batch
    gt_boxes, gt_labels = targets_01(batch)
    gt_boxes[3], gt_labels[3] = gt_boxes[3][:0], gt_labels[3][:0]  # image 3: no objects
    _, labels = match_batch(gt_boxes, gt_labels, model.priors)
    positive = labels > 0
    with torch.no_grad():
        _, logits = model(images)
    logits[..., 0] += 5.0  # a network that has learnt "background everywhere": the positives are the hardest boxes
    conf_loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    num_pos = positive.sum(dim=1)

    negatives = lambda mask: (mask & ~positive).sum(dim=1)  # noqa: E731
    fixed = negatives(hard_negative_mask(conf_loss, positive))
    assert torch.equal(fixed, 3 * num_pos) and fixed[3] == 0

    ranks_positives = negatives(lab.hard_negative_mask_ranks_positives(conf_loss, positive))
    assert torch.equal(ranks_positives, 2 * num_pos), "each positive took the place of a hard negative"

    per_batch = negatives(lab.hard_negative_mask_per_batch(conf_loss, positive))
    assert per_batch.sum() == fixed.sum() and not torch.equal(per_batch, fixed)
    assert per_batch[3] > 0, "the image without objects gives negatives"


# ---------------------------------------------------------------- 6. mAP over classes without ground truth

def test_map_over_classes_without_ground_truth_marks_a_perfect_detector_down():
    ds = ShapesDataset("test", size=6, image_size=SIZE)
    targets = [ds[i][1] for i in range(len(ds))]
    star = CLASSES.index("star") + 1
    targets = [{"boxes": t["boxes"][t["labels"] != star], "labels": t["labels"][t["labels"] != star]}
               for t in targets]  # a test subset without stars
    perfect = [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))} for t in targets]
    result = evaluate_voc(perfect, targets, num_classes=len(CLASSES))
    assert result["mAP"] == 1.0 and result["classes_without_gt"]
    assert mean_average_precision(result["ap"], result["num_gt"]) == 1.0
    broken = lab.mean_ap_over_classes_without_gt(result["ap"], result["num_gt"])
    with_gt = sum(n > 0 for n in result["num_gt"])
    assert broken == pytest.approx(with_gt / len(CLASSES)) and broken < 1.0


# ---------------------------------------------------------------- 7. a degenerate box

def test_a_kept_degenerate_box_makes_the_loss_infinite_or_nan(batch, model):
    images, targets = batch
    outside = torch.tensor([[70.0, 10.0, 90.0, 30.0]])  # beyond the 64-px image: zero width once clipped
    upside_down = torch.tensor([[10.0, 40.0, 30.0, 20.0]])  # annotated with y2 < y1

    def loss_and_grads(sanitize, extra_box):
        boxes = torch.cat((targets[0]["boxes"], extra_box))
        labels = torch.cat((targets[0]["labels"], torch.tensor([2])))
        kept_boxes, kept_labels = sanitize(boxes, labels, SIZE, SIZE)
        loc_targets, target_labels = lab.targets_without_checks([kept_boxes / SIZE], [kept_labels], model.priors)
        net = ssd_small(NUM_CLASSES, SIZE).eval()  # one image: batch norm on its running statistics
        loss = MultiBoxLoss()(*net(images[:1]), loc_targets, target_labels).total
        loss.backward()
        finite_grads = all(bool(torch.isfinite(p.grad).all()) for p in net.parameters() if p.grad is not None)
        return float(loss.detach()), finite_grads, len(kept_boxes)

    loss, _, kept = loss_and_grads(lab.sanitize_boxes_keeps_degenerate, outside)
    assert kept == len(targets[0]["boxes"]) + 1 and loss == math.inf  # log(0) = -inf in the target
    loss, finite_grads, _ = loss_and_grads(lab.sanitize_boxes_keeps_degenerate, upside_down)
    assert math.isnan(loss) and not finite_grads  # log of a negative height: NaN, and NaN gradients
    for extra_box in (outside, upside_down):
        loss, finite_grads, kept = loss_and_grads(sanitize_boxes, extra_box)
        assert kept == len(targets[0]["boxes"]) and math.isfinite(loss) and finite_grads
    boxes = lab.sanitize_boxes_keeps_degenerate(torch.cat((targets[0]["boxes"], outside)), torch.ones(4, dtype=torch.long),
                                              SIZE, SIZE)[0]
    with pytest.raises(ValueError, match="zero area"):  # the library's matcher names the cause instead
        match_batch([boxes / SIZE], [torch.ones(len(boxes), dtype=torch.long)], model.priors)


# ---------------------------------------------------------------- 8. no warm-up

@pytest.mark.slow
def test_a_large_lr_without_warm_up_makes_the_loss_jump_and_warm_up_prevents_it(tmp_path):
    ds = ShapesDataset("train", size=48, image_size=SIZE)
    first_steps = {}
    for warmup in (0, 20):
        config = lab.train_config_without_warmup(batch_size=8, max_steps_per_epoch=5, log_every=1, warmup_steps=warmup,
                                               cpu_threads=1, amp=False, channels_last=False)
        torch.manual_seed(0)
        out = tmp_path / f"warmup{warmup}"
        train(ssd_small(NUM_CLASSES, SIZE), ds, config=config, out_dir=out, progress=False)
        records = read_metrics(out / "metrics.jsonl")
        assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
        first_steps[warmup] = [r["loss"] for r in records]
    no_warmup, warmup = first_steps[0], first_steps[20]
    assert no_warmup[0] == pytest.approx(warmup[0], rel=1e-4)  # the same start
    assert max(no_warmup) > 3 * no_warmup[0], no_warmup  # the loss jumps several-fold
    assert max(warmup) < 1.5 * warmup[0], warmup
    assert lab.lr_at_without_warmup(0, 100, 0.1, 20) == pytest.approx(0.1)
    assert lab.lr_at(0, 100, 0.1, 20) == pytest.approx(0.1 / 20)


def test_broken_pieces_are_listed_with_their_bug_and_symptom():
    names = {p.name for p in lab.BROKEN_PIECES}
    assert len(names) == len(lab.BROKEN_PIECES) >= 8
    for piece in lab.BROKEN_PIECES:
        assert piece.function.__name__ == piece.name and piece.function.__doc__.startswith("BUG:")
        assert getattr(lab, piece.name) is piece.function and piece.name in lab.__all__
        assert piece.bug and piece.symptom and callable(piece.fixed)
    config = lab.train_config_without_warmup()
    assert config.warmup_steps == 0 and config.grad_clip is None
    assert config.lr == pytest.approx(20 * TrainConfig.small_cpu().lr)
    assert lab.train_config_without_warmup(warmup_steps=20).warmup_steps == 20
    json.dumps([p.bug for p in lab.BROKEN_PIECES])  # plain text, for the notebook's table
