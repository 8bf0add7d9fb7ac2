"""Tests for ssd_lib.boxes: box formats, IoU, and the SSD offset encoding (paper Eq. 2).

References we did not write: torchvision.ops (box_convert, box_iou) and torchvision's
detection BoxCoder with weights (10, 10, 5, 5), i.e. variances (0.1, 0.2).
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_convert
from torchvision.ops import box_iou as tv_box_iou

from ssd_lib.boxes import box_iou, cxcywh_to_xyxy, decode, encode, validate_boxes, xyxy_to_cxcywh

PROPERTY = settings(max_examples=40, derandomize=True, deadline=None)


@st.composite
def xyxy_boxes(draw, min_n: int = 1, max_n: int = 6, min_side: float = 0.01) -> torch.Tensor:
    """(N, 4) float64 xyxy boxes in [0, 1] with sides >= min_side."""
    n = draw(st.integers(min_n, max_n))
    rows = []
    for _ in range(n):
        w = draw(st.floats(min_side, 1.0))
        h = draw(st.floats(min_side, 1.0))
        x1 = draw(st.floats(0.0, 1.0 - w))
        y1 = draw(st.floats(0.0, 1.0 - h))
        rows.append([x1, y1, x1 + w, y1 + h])
    return torch.tensor(rows, dtype=torch.float64)


def _random_xyxy(generator: torch.Generator, n: int, min_side: float = 0.02) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 0.8
    wh = min_side + torch.rand(n, 2, generator=generator, dtype=torch.float64) * 0.5
    return torch.cat((xy, xy + wh), dim=1)


# --- formats -----------------------------------------------------------------------------------

def test_format_conversion_hand_values():
    xyxy = torch.tensor([[0.0, 0.0, 2.0, 4.0], [1.0, 2.0, 4.0, 3.0]])
    cxcywh = torch.tensor([[1.0, 2.0, 2.0, 4.0], [2.5, 2.5, 3.0, 1.0]])
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), cxcywh)
    torch.testing.assert_close(cxcywh_to_xyxy(cxcywh), xyxy)


def test_format_conversion_matches_torchvision_box_convert():
    g = torch.Generator().manual_seed(0)
    xyxy = _random_xyxy(g, 50)
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), box_convert(xyxy, "xyxy", "cxcywh"))
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(xyxy)), xyxy)
    cxcywh = box_convert(xyxy, "xyxy", "cxcywh")
    torch.testing.assert_close(cxcywh_to_xyxy(cxcywh), box_convert(cxcywh, "cxcywh", "xyxy"))


def test_format_conversion_keeps_leading_dims():
    boxes = torch.rand(2, 3, 5, 4)
    assert xyxy_to_cxcywh(boxes).shape == (2, 3, 5, 4)
    assert cxcywh_to_xyxy(boxes).shape == (2, 3, 5, 4)


@PROPERTY
@given(xyxy_boxes())
def test_xyxy_cxcywh_round_trip(boxes):
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes, atol=1e-12, rtol=0)
    cxcywh = xyxy_to_cxcywh(boxes)
    torch.testing.assert_close(xyxy_to_cxcywh(cxcywh_to_xyxy(cxcywh)), cxcywh, atol=1e-12, rtol=0)


# --- IoU ---------------------------------------------------------------------------------------

def test_box_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 1.0, 2.0]])
    # overlap 1 / union 7; identical; disjoint; half contained (2 / 4)
    expected = torch.tensor([[1 / 7, 1.0, 0.0, 0.5]])
    torch.testing.assert_close(box_iou(a, b), expected)


def test_box_iou_matches_torchvision():
    g = torch.Generator().manual_seed(1)
    a, b = _random_xyxy(g, 7), _random_xyxy(g, 11)
    iou = box_iou(a, b)
    assert iou.shape == (7, 11)
    torch.testing.assert_close(iou, tv_box_iou(a, b))


@PROPERTY
@given(xyxy_boxes(), xyxy_boxes())
def test_box_iou_properties(a, b):
    iou = box_iou(a, b)
    assert ((iou >= 0) & (iou <= 1 + 1e-12)).all()
    torch.testing.assert_close(iou, box_iou(b, a).T)
    torch.testing.assert_close(torch.diagonal(box_iou(a, a)), torch.ones(len(a), dtype=a.dtype))


def test_box_iou_empty():
    a = torch.zeros(0, 4)
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert box_iou(a, b).shape == (0, 1)


# --- encode / decode ---------------------------------------------------------------------------

def test_encode_hand_values():
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.2]], dtype=torch.float64)
    gt = cxcywh_to_xyxy(torch.tensor([[0.52, 0.46, 0.4, 0.1]], dtype=torch.float64))
    # tx = 0.02 / (0.2 * 0.1), ty = -0.04 / (0.2 * 0.1), tw = log(2) / 0.2, th = log(1/2) / 0.2
    expected = torch.tensor([[1.0, -2.0, math.log(2) / 0.2, math.log(0.5) / 0.2]], dtype=torch.float64)
    torch.testing.assert_close(encode(gt, prior), expected)
    # A box equal to its default box encodes to zero offsets.
    torch.testing.assert_close(encode(cxcywh_to_xyxy(prior), prior), torch.zeros(1, 4, dtype=torch.float64))


def test_encode_decode_match_torchvision_box_coder():
    g = torch.Generator().manual_seed(2)
    gt_xyxy = _random_xyxy(g, 64)
    priors_xyxy = _random_xyxy(g, 64)
    priors_cxcywh = xyxy_to_cxcywh(priors_xyxy)
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))

    offsets = encode(gt_xyxy, priors_cxcywh)
    torch.testing.assert_close(offsets, coder.encode_single(reference_boxes=gt_xyxy, proposals=priors_xyxy))

    rel_codes = torch.randn(64, 4, generator=g, dtype=torch.float64)
    rel_codes[0, 2:] = 50.0  # torchvision caps the log-size at log(1000/16); so must we
    torch.testing.assert_close(decode(rel_codes, priors_cxcywh), coder.decode_single(rel_codes, priors_xyxy))


def test_encode_custom_variances_scale_offsets():
    g = torch.Generator().manual_seed(3)
    gt, priors = _random_xyxy(g, 8), xyxy_to_cxcywh(_random_xyxy(g, 8))
    unit = encode(gt, priors, variances=(1.0, 1.0))
    default = encode(gt, priors)
    torch.testing.assert_close(default[:, :2], unit[:, :2] / 0.1)
    torch.testing.assert_close(default[:, 2:], unit[:, 2:] / 0.2)


def test_encode_decode_batched_leading_dim():
    g = torch.Generator().manual_seed(4)
    priors = xyxy_to_cxcywh(_random_xyxy(g, 10))
    gt = torch.stack([_random_xyxy(g, 10), _random_xyxy(g, 10)])  # (B=2, P=10, 4)
    offsets = encode(gt, priors)
    assert offsets.shape == (2, 10, 4)
    torch.testing.assert_close(offsets[1], encode(gt[1], priors))
    torch.testing.assert_close(decode(offsets, priors), gt)


@PROPERTY
@given(xyxy_boxes(min_n=1, max_n=8), st.integers(0, 2**16))
def test_decode_inverts_encode(gt, seed):
    g = torch.Generator().manual_seed(seed)
    priors = xyxy_to_cxcywh(_random_xyxy(g, len(gt)))
    torch.testing.assert_close(decode(encode(gt, priors), priors), gt, atol=1e-9, rtol=0)


# --- bad input ---------------------------------------------------------------------------------

def test_reversed_corners_rejected():
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    bad = torch.tensor([[0.5, 0.1, 0.2, 0.4]])  # x2 < x1
    with pytest.raises(ValueError, match="x2 >= x1"):
        box_iou(bad, good)
    with pytest.raises(ValueError, match="boxes_b"):
        box_iou(good, bad)


def test_nan_coordinates_rejected():
    bad = torch.tensor([[0.0, float("nan"), 1.0, 1.0]])
    with pytest.raises(ValueError, match="NaN"):
        box_iou(bad, bad)
    with pytest.raises(ValueError, match="NaN"):
        validate_boxes("gt", torch.tensor([[0.0, 0.0, float("inf"), 1.0]]))


def test_wrong_shapes_rejected():
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        box_iou(torch.zeros(0), torch.zeros(0, 4))  # (0,) instead of (0, 4)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        xyxy_to_cxcywh(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="2-D"):
        box_iou(torch.zeros(1, 2, 4), torch.zeros(3, 4))
    with pytest.raises(TypeError, match="floating"):
        box_iou(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        xyxy_to_cxcywh([[0.0, 0.0, 1.0, 1.0]])


def test_mismatched_number_of_default_boxes_rejected():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 3)
    with pytest.raises(ValueError, match="disagree"):
        decode(torch.zeros(2, 4, 4), priors)
    with pytest.raises(ValueError, match="one matched box per default box"):
        encode(torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 5), priors)


def test_validate_boxes_cxcywh_negative_size():
    with pytest.raises(ValueError, match="negative width or height"):
        validate_boxes("priors", torch.tensor([[0.5, 0.5, -0.1, 0.2]]), fmt="cxcywh")
