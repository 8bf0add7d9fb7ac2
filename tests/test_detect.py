"""Tests for ssd_lib.detect: decoding, score threshold, per-class NMS and top-k, against
torchvision's SSD.postprocess_detections and on a hand-built case."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD as TorchvisionSSD
from torchvision.ops import box_iou

from ssd_lib.boxes import cxcywh_to_xyxy
from ssd_lib.detect import detect, scale_detections
from ssd_lib.priors import PriorConfig, default_boxes

SSD300_PRIORS = default_boxes(PriorConfig.ssd300())

# Hand case: 3 default boxes (loc = 0 decodes to the boxes themselves), C = 3 classes.
# Boxes 0 and 1 overlap with IoU 0.905; box 2 is far away.
HAND_PRIORS = torch.tensor([[0.30, 0.30, 0.2, 0.2], [0.31, 0.30, 0.2, 0.2], [0.70, 0.70, 0.2, 0.2]])
HAND_PROBS = [
    [0.05, 0.90, 0.05],
    [0.12, 0.80, 0.08],
    [0.60, 0.10, 0.30],
]


def _hand_inputs():
    logits = torch.tensor([[[math.log(p) for p in row] for row in HAND_PROBS]])  # softmax gives back HAND_PROBS
    return torch.zeros(1, 3, 4), logits


def _as_tuples(det):
    boxes = det["boxes"]
    prior_of = [int(torch.isclose(cxcywh_to_xyxy(HAND_PRIORS), b, atol=1e-6).all(dim=1).nonzero()) for b in boxes]
    return [(p, int(l), round(float(s), 4)) for p, l, s in zip(prior_of, det["labels"], det["scores"])]


def test_hand_case_nms_per_class():
    loc, logits = _hand_inputs()
    assert box_iou(cxcywh_to_xyxy(HAND_PRIORS[:1]), cxcywh_to_xyxy(HAND_PRIORS[1:2])).item() > 0.9
    dets = detect(loc, logits, HAND_PRIORS)
    assert len(dets) == 1
    # class 1: box 0 (0.9) suppresses box 1 (0.8); class 2: box 2 (0.3), box 1 (0.08) suppresses box 0 (0.05)
    assert _as_tuples(dets[0]) == [(0, 1, 0.9), (2, 2, 0.3), (2, 1, 0.1), (1, 2, 0.08)]
    assert dets[0]["labels"].dtype == torch.int64


def test_nms_threshold_respected():
    loc, logits = _hand_inputs()
    dets = detect(loc, logits, HAND_PRIORS, nms_threshold=0.95)  # IoU 0.905 no longer suppresses
    assert len(dets[0]["scores"]) == 6
    assert _as_tuples(dets[0])[:2] == [(0, 1, 0.9), (1, 1, 0.8)]


def test_score_threshold_respected():
    loc, logits = _hand_inputs()
    dets = detect(loc, logits, HAND_PRIORS, score_threshold=0.2)
    assert _as_tuples(dets[0]) == [(0, 1, 0.9), (2, 2, 0.3)]


def test_top_k_respected():
    loc, logits = _hand_inputs()
    dets = detect(loc, logits, HAND_PRIORS, top_k=2)
    assert _as_tuples(dets[0]) == [(0, 1, 0.9), (2, 2, 0.3)]


def test_nothing_passes_gives_empty_tensors():
    logits = torch.full((2, 8732, 21), -20.0)
    logits[..., 0] = 20.0  # background everywhere
    dets = detect(torch.zeros(2, 8732, 4), logits, SSD300_PRIORS)
    assert len(dets) == 2
    for det in dets:
        assert det["boxes"].shape == (0, 4)
        assert det["scores"].shape == (0,)
        assert det["labels"].shape == (0,) and det["labels"].dtype == torch.int64


def test_empty_and_non_empty_images_in_one_batch():
    loc, logits = _hand_inputs()
    background = torch.tensor([[[10.0, -10.0, -10.0]] * 3])
    dets = detect(loc.expand(3, 3, 4), torch.cat([background, logits, background]), HAND_PRIORS)
    assert [len(d["scores"]) for d in dets] == [0, 4, 0]
    assert _as_tuples(dets[1]) == [(0, 1, 0.9), (2, 2, 0.3), (2, 1, 0.1), (1, 2, 0.08)]


def test_random_batch_properties():
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(2, 8732, 4, generator=g)
    logits = torch.randn(2, 8732, 21, generator=g) * 3
    dets = detect(loc, logits, SSD300_PRIORS, score_threshold=0.2, nms_threshold=0.3, top_k=50)
    for det in dets:
        assert 0 < len(det["scores"]) <= 50
        assert (det["scores"] > 0.2).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()  # sorted, best first
        assert ((det["labels"] >= 1) & (det["labels"] <= 20)).all()
        assert (det["boxes"] >= 0).all() and (det["boxes"] <= 1).all()
        for c in det["labels"].unique():
            boxes_c = det["boxes"][det["labels"] == c]
            iou = box_iou(boxes_c, boxes_c).fill_diagonal_(0)
            assert (iou <= 0.3 + 1e-6).all()


def _canonical(det):
    """Sort by score (best first), then label, then box: float32 scores can tie exactly, and the
    order of tied detections is arbitrary in both implementations."""
    order = torch.arange(len(det["scores"]))
    for key in (det["boxes"][:, 1], det["boxes"][:, 0], det["labels"].double(), -det["scores"].double()):
        order = order[torch.sort(key[order], stable=True).indices]
    return {k: v[order] for k, v in det.items()}


def _assert_same_detections(ours, theirs):
    ours = _canonical({**ours, "boxes": ours["boxes"] * 300})
    theirs = _canonical(theirs)
    assert torch.equal(ours["labels"], theirs["labels"])
    torch.testing.assert_close(ours["scores"], theirs["scores"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours["boxes"], theirs["boxes"], atol=1e-3, rtol=0)


@pytest.mark.parametrize("seed, num_classes, loc_scale, background, nms, expect", [
    (1, 21, 1.0, 0.0, 0.45, "full"),  # untrained: every image keeps 200
    (2, 21, 1.0, 9.0, 0.45, "fewer"),  # mostly background: the score threshold decides what is kept
    # One or two classes and a strict NMS: fewer than 200 survive the 400 pre-NMS candidates per
    # class, so the pre-NMS cap decides too (and detect has to widen its first 400 candidates).
    (3, 2, 0.5, 0.0, 0.2, "fewer"),
    (5, 3, 0.5, 0.0, 0.05, "fewer"),
])
def test_matches_torchvision_postprocess_detections(seed, num_classes, loc_scale, background, nms, expect):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(2, 8732, 4, generator=g) * loc_scale
    logits = torch.randn(2, 8732, num_classes, generator=g) * (2.0 if num_classes == 21 and not background else 1.0)
    logits[..., 0] += background
    ours = detect(loc, logits, SSD300_PRIORS, nms_threshold=nms)
    tv = TorchvisionSSD(nn.Identity(), DefaultBoxGenerator([[2]]), (300, 300), num_classes, head=nn.Identity(),
                        nms_thresh=nms)
    anchors = cxcywh_to_xyxy(SSD300_PRIORS) * 300
    theirs = tv.postprocess_detections({"bbox_regression": loc, "cls_logits": logits}, [anchors, anchors], [(300, 300)] * 2)
    for o, t in zip(ours, theirs):
        assert (len(t["scores"]) == 200) if expect == "full" else (0 < len(t["scores"]) < 200)
        assert len(o["scores"]) == len(t["scores"])
        _assert_same_detections(o, t)


def test_pre_nms_top_k_respected():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 8732, 4, generator=g)
    dets = detect(torch.zeros(2, 8732, 4), logits, SSD300_PRIORS, pre_nms_top_k=5, nms_threshold=1.0)
    for det in dets:
        assert torch.bincount(det["labels"], minlength=4).tolist() == [0, 5, 5, 5]


def test_scale_detections_to_pixels():
    loc, logits = _hand_inputs()
    dets = detect(loc, logits, HAND_PRIORS)
    scaled = scale_detections(dets, [(200, 400)])
    torch.testing.assert_close(scaled[0]["boxes"], dets[0]["boxes"] * torch.tensor([400.0, 200.0, 400.0, 200.0]))
    with pytest.raises(ValueError, match="image sizes"):
        scale_detections(dets, [(200, 400), (1, 1)])


# --- bad input ---------------------------------------------------------------------------------

def test_priors_of_another_model_rejected():
    loc, logits = _hand_inputs()
    with pytest.raises(ValueError, match="priors_cxcywh"):
        detect(loc, logits, SSD300_PRIORS)


def test_mismatched_loc_and_logits_rejected():
    with pytest.raises(ValueError, match="same B, P"):
        detect(torch.zeros(1, 3, 4), torch.zeros(1, 4, 3), HAND_PRIORS)
    with pytest.raises(ValueError, match=r"loc \(B, P, 4\)"):
        detect(torch.zeros(3, 4), torch.zeros(1, 3, 3), HAND_PRIORS)
