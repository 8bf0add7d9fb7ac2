"""Tests for ssd_lib.model: the SSD300/SSD512 architecture against the paper and torchvision's
ssd300_vgg16 (random weights only: nothing is downloaded), and the course's small model."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection import ssd300_vgg16 as tv_ssd300_vgg16

from ssd_lib.model import (
    SSD, L2Norm, ModelConfig, SmallBackbone, build_model, count_parameters, load_torchvision_ssd300,
    ssd300_vgg16, ssd512_vgg16, ssd_small,
)
from ssd_lib.priors import PriorConfig

PAPER_PARAMETERS_SSD300_VOC = 26_285_486  # the released SSD300 VOC model (21 classes)


@pytest.fixture(scope="module")
def tv_model() -> nn.Module:
    """torchvision's SSD300 with random weights; every parameter perturbed so that no two layers
    share values (its default init zeroes the biases, which would hide a swapped bias)."""
    torch.manual_seed(0)
    model = tv_ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


@pytest.fixture(scope="module")
def ssd300_run():
    """One SSD300 forward pass at batch 2, with the backbone's source maps captured by a hook."""
    torch.manual_seed(1)
    model = ssd300_vgg16(num_classes=21).eval()
    captured = {}
    handle = model.backbone.register_forward_hook(lambda mod, inp, out: captured.setdefault("features", out))
    with torch.no_grad():
        loc, logits = model(torch.randn(2, 3, 300, 300))
    handle.remove()
    return model, captured["features"], loc, logits


# --- SSD300 against the paper and torchvision --------------------------------------------------

def test_ssd300_parameter_count_matches_paper_and_torchvision(ssd300_run, tv_model):
    model = ssd300_run[0]
    assert count_parameters(model) == PAPER_PARAMETERS_SSD300_VOC
    assert count_parameters(tv_model) == PAPER_PARAMETERS_SSD300_VOC
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in tv_model.parameters())


def test_ssd300_output_shapes(ssd300_run):
    model, _, loc, logits = ssd300_run
    assert loc.shape == (2, 8732, 4)
    assert logits.shape == (2, 8732, 21)
    assert model.priors.shape == (8732, 4)
    assert torch.isfinite(loc).all() and torch.isfinite(logits).all()


def test_ssd300_source_feature_maps(ssd300_run):
    _, features, _, _ = ssd300_run
    assert [tuple(f.shape[-2:]) for f in features] == [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    assert [f.shape[1] for f in features] == [512, 1024, 512, 256, 256, 256]


def test_ssd300_layers_as_in_the_paper(ssd300_run):
    backbone = ssd300_run[0].backbone
    assert isinstance(backbone.l2norm, L2Norm)
    torch.testing.assert_close(backbone.l2norm.weight.detach(), torch.full((512,), 20.0))
    fc6 = [m for m in backbone.fc if isinstance(m, nn.Conv2d) and m.out_channels == 1024 and m.kernel_size == (3, 3)]
    assert len(fc6) == 1
    assert fc6[0].dilation == (6, 6) and fc6[0].padding == (6, 6)
    pools = [m for m in backbone.fc if isinstance(m, nn.MaxPool2d)]
    assert (pools[-1].kernel_size, pools[-1].stride, pools[-1].padding) == (3, 1, 1)  # pool5
    assert [m.ceil_mode for m in backbone.vgg if isinstance(m, nn.MaxPool2d)] == [False, False, True]  # pool3
    # one 3x3 predictor pair per source map, k * 4 and k * C outputs with k = 4, 6, 6, 6, 4, 4
    assert [h.out_channels for h in ssd300_run[0].loc_heads] == [16, 24, 24, 24, 16, 16]
    assert [h.out_channels for h in ssd300_run[0].conf_heads] == [84, 126, 126, 126, 84, 84]


def test_without_atrous_fc6_is_a_plain_conv():
    model = ssd300_vgg16(num_classes=21, atrous=False)
    fc6 = [m for m in model.backbone.fc if isinstance(m, nn.Conv2d) and m.out_channels == 1024 and m.kernel_size == (3, 3)]
    assert fc6[0].dilation == (1, 1) and fc6[0].padding == (1, 1)


def test_l2norm_normalises_channels_then_scales():
    torch.manual_seed(2)
    layer = L2Norm(8)
    out = layer(torch.randn(2, 8, 5, 5) * 50)
    torch.testing.assert_close(out.norm(dim=1), torch.full((2, 5, 5), 20.0))


def test_load_torchvision_weights_gives_the_same_raw_outputs(tv_model):
    torch.manual_seed(3)
    model = load_torchvision_ssd300(ssd300_vgg16(num_classes=21), tv_model.state_dict()).eval()
    images = torch.randn(1, 3, 300, 300)
    with torch.no_grad():
        loc, logits = model(images)
        features = tv_model.backbone(images)
        head = tv_model.head(list(features.values()))
    assert head["bbox_regression"].shape == loc.shape == (1, 8732, 4)
    torch.testing.assert_close(loc, head["bbox_regression"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, head["cls_logits"], atol=1e-5, rtol=1e-5)


def test_load_torchvision_with_wrong_num_classes_rejected(tv_model):
    with pytest.raises(ValueError, match="num_classes"):
        load_torchvision_ssd300(ssd300_vgg16(num_classes=5), tv_model.state_dict())


def test_load_something_else_rejected(tv_model):
    state = {k: v for k, v in tv_model.state_dict().items() if not k.startswith("head.regression_head")}
    with pytest.raises(ValueError, match="not a torchvision ssd300_vgg16"):
        load_torchvision_ssd300(ssd300_vgg16(num_classes=21), state)


# --- SSD512 ------------------------------------------------------------------------------------

def test_ssd512_output_shapes():
    torch.manual_seed(4)
    model = ssd512_vgg16(num_classes=21).eval()
    with torch.no_grad():
        loc, logits = model(torch.randn(1, 3, 512, 512))
    assert loc.shape == (1, 24564, 4)
    assert logits.shape == (1, 24564, 21)
    assert model.priors.shape == (24564, 4)


# --- the course's small model ------------------------------------------------------------------

@pytest.mark.parametrize("image_size", [128, 96, 100])
def test_ssd_small_forward_matches_its_priors(image_size):
    torch.manual_seed(5)
    model = ssd_small(num_classes=7, image_size=image_size)
    P = model.prior_config.num_priors
    assert model.priors.shape == (P, 4)
    for mode in (model.train(), model.eval()):  # one return type in both modes
        with torch.no_grad():
            loc, logits = mode(torch.randn(2, 3, image_size, image_size))
        assert loc.shape == (2, P, 4) and logits.shape == (2, P, 7)


def test_wrong_input_size_rejected(ssd300_run):
    model = ssd_small(num_classes=7, image_size=128)  # training mode, batch 1
    with pytest.raises(ValueError, match="128x128"):
        model(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match="128x128"):
        model(torch.randn(2, 3, 127, 127))  # same source map sides, but the boxes would be misplaced
    with pytest.raises(ValueError, match="300x300"):
        ssd300_run[0](torch.randn(1, 3, 128, 128))  # would otherwise fail inside conv10_2
    with pytest.raises(ValueError, match="300x300"):
        ssd300_run[0](torch.randn(1, 3, 300, 320))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 128, 128))


def test_model_config_round_trip_rebuilds_the_same_model():
    config = ModelConfig.small(num_classes=5, image_size=64)
    model = build_model(config)
    rebuilt = build_model(ModelConfig.from_dict(config.to_dict()))
    assert rebuilt.prior_config == model.prior_config
    assert count_parameters(rebuilt) == count_parameters(model)
    assert "priors" not in model.state_dict()  # derived from the config, not stored
    rebuilt.load_state_dict(model.state_dict())


def test_bad_model_configurations_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        ssd_small(num_classes=1)
    with pytest.raises(ValueError, match="source maps"):
        SSD(SmallBackbone(num_extras=3), PriorConfig.ssd300(), num_classes=3)  # 5 maps vs 6
    with pytest.raises(ValueError, match="arch"):
        build_model(ModelConfig("resnet", 21, PriorConfig.ssd300()))
    with pytest.raises(ValueError, match="ssd300 backbone does not take the options"):
        build_model(ModelConfig("ssd300", 21, PriorConfig.ssd300(), {"stride4_source": True}))


def test_stride4_layout_adds_a_fine_map_in_front_of_the_five_maps():
    five = ModelConfig.small(num_classes=7).priors
    fine = ModelConfig.small(num_classes=7, stride4_source=True).priors
    assert fine.feature_maps == (32,) + five.feature_maps and fine.steps == (4.0,) + five.steps
    assert fine.min_sizes[1:] == pytest.approx(five.min_sizes) and fine.max_sizes[1:] == pytest.approx(five.max_sizes)
    assert fine.aspect_ratios == ((),) + five.aspect_ratios
    assert (fine.min_sizes[0], fine.max_sizes[0]) == pytest.approx((0.06 * 128, 0.1 * 128))
    model, small = build_model(ModelConfig.small(7, stride4_source=True)), ssd_small(7)
    assert len(model.priors) == 32 * 32 * 2 + len(small.priors) == 3582 and len(small.priors) == 1534
    torch.testing.assert_close(model.priors[32 * 32 * 2:], small.priors)  # the same boxes after the fine map
    cell = model.priors[:2]  # the two squares of the first cell: 7.68 px and sqrt(7.68 * 12.8) px
    torch.testing.assert_close(cell[:, 2:] * 128, torch.tensor([[7.68, 7.68], [(7.68 * 12.8) ** 0.5] * 2]))
    loc, logits = model(torch.rand(2, 3, 128, 128))
    assert loc.shape == (2, 3582, 4) and logits.shape == (2, 3582, 7)


def test_the_fine_map_gives_tiny_objects_a_default_box_with_iou_above_one_half():
    # The reason for the stride-4 map (ModelConfig.small's docstring), checked with torchvision's IoU:
    # an 8 px object anywhere in the image never reaches IoU 0.5 with a box of the five maps.
    from torchvision.ops import box_convert, box_iou

    offsets = torch.arange(0, 8, 0.5)  # every sub-pixel position relative to the stride-8 grid
    x, y = torch.meshgrid(40 + offsets, 40 + offsets, indexing="ij")
    objects = torch.stack([x, y, x + 8, y + 8], -1).reshape(-1, 4) / 128
    for stride4, expected in ((False, 0.0), (True, 0.9)):  # measured: 0 and 0.92 of the positions
        priors = build_model(ModelConfig.small(7, stride4_source=stride4)).priors
        best = box_iou(objects, box_convert(priors, "cxcywh", "xyxy")).max(1).values
        assert (best >= 0.5).float().mean().item() >= expected
        if not stride4:
            assert best.max() < 0.5, best.max()


def test_background_prior_initialisation_starts_every_box_at_that_probability():
    model = ssd_small(7, 64).init_background_prior(0.99)
    for conv in model.conf_heads:
        torch.nn.init.zeros_(conv.weight)  # the biases alone: what every box starts from
    _, logits = model.eval()(torch.rand(1, 3, 64, 64))
    probs = logits.softmax(-1)
    torch.testing.assert_close(probs[..., 0], torch.full_like(probs[..., 0], 0.99))
    torch.testing.assert_close(probs[..., 1:], torch.full_like(probs[..., 1:], 0.01 / 6))
    with pytest.raises(ValueError, match="probability"):
        model.init_background_prior(1.0)
