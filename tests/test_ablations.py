"""Tests for ssd_lib.course.ablations: each ablation variant differs from the full model only as its
name says, the size-stratified mAP follows its rule on hand-made cases, and a tiny run of the
command line writes a well-formed JSON file."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from ssd_lib.course import ablations as ex
from ssd_lib.augment import MinIoURandomCrop, PhotometricDistort, RandomHorizontalFlip, SSDAugmentation, ZoomOut
from ssd_lib.metrics import evaluate_voc
from ssd_lib.model import count_parameters
from ssd_lib.priors import default_boxes

C = 7  # 6 shapes + background


def _model(name, size=128):
    torch.manual_seed(0)
    return ex.build_variant_model(name, C, size)


def _shapes(model):
    """The set of default-box (w, h) of a model, rounded."""
    wh = default_boxes(model.prior_config)[:, 2:]
    return sorted({(round(float(w), 5), round(float(h), 5)) for w, h in wh})


def test_box_shape_variants_change_only_the_boxes_per_location():
    full, no3, square = _model("full"), _model("no_ratio3"), _model("square_only")
    assert full.prior_config.boxes_per_location == (4, 6, 6, 6, 6)
    assert no3.prior_config.boxes_per_location == (4,) * 5
    assert square.prior_config.boxes_per_location == (2,) * 5
    for other in (no3, square):
        for key in ("feature_maps", "steps", "min_sizes", "max_sizes", "image_size"):
            assert getattr(other.prior_config, key) == getattr(full.prior_config, key)
        # Same backbone, parameter for parameter; only the predictors' output channels shrink.
        assert count_parameters(other.backbone) == count_parameters(full.backbone)
        assert count_parameters(other) < count_parameters(full)
        assert [h.out_channels for h in other.loc_heads] == [4 * k for k in other.prior_config.boxes_per_location]
    # square_only keeps exactly the two squares of each map; no_ratio3 adds 2 and 1/2 only.
    assert all(abs(w - h) < 1e-6 for w, h in _shapes(square))
    ratios = {round(w / h, 3) for w, h in _shapes(no3)}
    assert ratios == {0.5, 1.0, 2.0}
    assert {round(w / h, 3) for w, h in _shapes(full)} == {0.333, 0.5, 1.0, 2.0, 3.0}


def test_no_sampling_aug_is_the_full_model_with_less_augmentation():
    full, nosamp = ex.VARIANTS["full"], ex.VARIANTS["no_sampling_aug"]
    assert ex.variant_model_config("full", C) == ex.variant_model_config("no_sampling_aug", C)
    a, b = _model("full"), _model("no_sampling_aug")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    steps_full = {type(s) for s in SSDAugmentation(size=128, **full.augment).steps}
    steps_nosamp = {type(s) for s in SSDAugmentation(size=128, **nosamp.augment).steps}
    assert {PhotometricDistort, ZoomOut, MinIoURandomCrop, RandomHorizontalFlip} <= steps_full
    assert steps_full - steps_nosamp == {ZoomOut, MinIoURandomCrop}


def test_fewer_maps_keeps_the_three_finest_maps_and_retiles_the_scales():
    full, fewer = _model("full"), _model("fewer_maps")
    pf, pr = full.prior_config, fewer.prior_config
    assert pr.feature_maps == pf.feature_maps[:3]
    assert len(fewer.backbone.extras) == 1 and len(full.backbone.extras) == 3
    assert pr.min_sizes[0] == pytest.approx(0.1 * 128) and pr.min_sizes[-1] == pytest.approx(0.9 * 128)
    assert pf.min_sizes[-1] == pytest.approx(0.9 * 128)
    loc, logits = fewer(torch.randn(2, 3, 128, 128))
    assert loc.shape == (2, pr.num_priors, 4) and logits.shape == (2, pr.num_priors, C)


def test_single_map_puts_the_full_models_boxes_on_one_stride_16_map():
    full, single = _model("full"), _model("single_map")
    pf, ps = full.prior_config, single.prior_config
    assert len(set(ps.feature_maps)) == 1 and ps.feature_maps[0] == pf.feature_maps[1] == 128 // 16
    assert ps.boxes_per_location == pf.boxes_per_location
    assert _shapes(single) == _shapes(full)  # the same default-box sizes and ratios, only centred differently
    assert not single.backbone.base.extras  # no extra layers are computed
    loc, logits = single(torch.randn(2, 3, 128, 128))
    assert loc.shape == (2, ps.num_priors, 4) and logits.shape == (2, ps.num_priors, C)


def test_vgg_fc_networks_differ_in_fc6_as_the_paper_says():
    with torch.device("meta"):  # shapes only: building VGG16's 134M weights for real takes seconds
        nets = ex.vgg_fc_networks()
    convs = {k: [m for m in n.modules() if isinstance(m, nn.Conv2d)] for k, n in nets.items()}
    fc6 = {k: c[-2] for k, c in convs.items()}
    assert fc6["atrous"].kernel_size == (3, 3) and fc6["atrous"].dilation == (6, 6) and fc6["atrous"].out_channels == 1024
    assert fc6["no_dilation"].dilation == (1, 1) and fc6["no_dilation"].kernel_size == (3, 3)
    assert fc6["non_atrous"].kernel_size == (7, 7) and fc6["non_atrous"].out_channels == 4096
    assert count_parameters(nets["atrous"]) == count_parameters(nets["no_dilation"])
    # VGG16's fc6 + fc7 (7*7*512*4096 + 4096*4096 weights) against the subsampled 3x3x1024 and 1x1x1024.
    extra = (7 * 7 * 512 * 4096 + 4096 + 4096 * 4096 + 4096) - (3 * 3 * 512 * 1024 + 1024 + 1024 * 1024 + 1024)
    assert count_parameters(nets["non_atrous"]) - count_parameters(nets["atrous"]) == extra
    # conv4_3 of a 300x300 input is 38x38; fc7 is 19x19 (atrous) or 10x10 (VGG16's pool5).
    conv4_3 = torch.empty(1, 512, 38, 38, device="meta")
    assert nets["atrous"][1](conv4_3).shape[-2:] == (19, 19)
    assert nets["non_atrous"][1](conv4_3).shape[-2:] == (10, 10)
    # The cost differs only in fc6 and fc7, by the formula: output elements x fan-in.
    macs = {k: ex.conv_macs(n, (3, 300, 300)) for k, n in nets.items()}
    assert macs["atrous"] == macs["no_dilation"]
    assert macs["non_atrous"] - macs["atrous"] == (10 * 10 * 4096 * (512 * 49 + 4096)) - (19 * 19 * 1024 * (512 * 9 + 1024))


def test_conv_macs_counts_a_tiny_network_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1, stride=2))
    assert ex.conv_macs(net, (3, 10, 10)) == 10 * 10 * 8 * 3 * 9 + 5 * 5 * 4 * 8
    assert next(net.parameters()).device.type == "cpu"  # the model itself was not moved


def test_object_sizes_after_augmentation_are_relative_to_the_output_image():
    from ssd_lib.data import ShapesDataset

    ds = ShapesDataset("test", size=6, image_size=64)
    raw = ex.object_sizes(ds, 6)
    assert len(raw) == sum(len(ds[i][1]["boxes"]) for i in range(6))
    assert ((raw > 0) & (raw <= 1)).all()
    flipped = ex.object_sizes(ds, 6, augment={"photometric": False, "expand": False, "crop": False, "flip_p": 1.0})
    assert flipped == pytest.approx(raw, abs=1e-5)  # a flip moves boxes but keeps their sizes


def _box(cx, cy, side):
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def test_size_stratified_map_scores_each_bin_alone():
    hw = (100, 100)
    small, large = _box(20, 20, 6), _box(60, 60, 50)  # sizes 0.06 and 0.5
    gts = [{"boxes": torch.tensor([small, large]), "labels": torch.tensor([1, 2])}]
    # The large object is found, the small one missed; one false positive of large size elsewhere.
    dets = [{"boxes": torch.tensor([large, _box(30, 70, 40)]), "scores": torch.tensor([0.9, 0.95]),
             "labels": torch.tensor([2, 2])}]
    res = ex.size_stratified_map(dets, gts, [hw], ["a", "b"])
    assert res["small"]["num_objects"] == 1 and res["large"]["num_objects"] == 1 and res["medium"]["num_objects"] == 0
    assert res["small"]["mAP"] == 0.0
    assert math.isnan(res["medium"]["mAP"])  # no object of that size: undefined, as VOC's AP of an absent class
    # For the large bin it is plain VOC AP on the large object: the false positive ranks first.
    ref = evaluate_voc(dets, [{"boxes": torch.tensor([large]), "labels": torch.tensor([2])}], num_classes=2)
    assert res["large"]["mAP"] == pytest.approx(ref["mAP"]) and 0 < res["large"]["mAP"] < 1
    # A small false positive does not touch the large bin, and a perfect small detection scores 1.
    dets2 = [{"boxes": torch.tensor([large, small, _box(80, 20, 5)]), "scores": torch.tensor([0.9, 0.8, 0.99]),
              "labels": torch.tensor([2, 1, 2])}]
    res2 = ex.size_stratified_map(dets2, gts, [hw], ["a", "b"])
    assert res2["large"]["mAP"] == pytest.approx(1.0) and res2["small"]["mAP"] == pytest.approx(1.0)


def test_runner_writes_well_formed_json(tmp_path, capsys):
    out = tmp_path / "ablations.json"
    argv = ["--variants", "full", "single_map", "non_atrous", "--seeds", "0", "--steps", "2", "--batch-size", "4",
            "--image-size", "64", "--test-images", "4", "--vgg-image-size", "32", "--vgg-repeats", "1", "--out", str(out)]
    assert ex.main(argv) == 0
    text = out.read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"strict JSON has no {c}"))
    assert data["command"] == "python -m ssd_lib.course.ablations " + " ".join(argv)
    assert {"cpu_model", "cpu_cores", "torch"} <= set(data["machine"]) and data["machine"]["torch"] == torch.__version__
    assert data["date"][:4].isdigit() and data["complete"] is True
    assert [(r["variant"], r["seed"]) for r in data["runs"]] == [("full", 0), ("single_map", 0), ("non_atrous", 0)]
    for r in data["runs"][:2]:
        for key in ("mAP", "mAP_small", "mAP_medium", "mAP_large"):
            assert r[key] is None or 0.0 <= r[key] <= 1.0
        assert r["train_s"] > 0 and r["inference_images_per_s"] > 0
    speed = data["runs"][2]["speed"]
    assert set(speed) == {"atrous", "non_atrous", "no_dilation"} and all(s["images_per_s"] > 0 for s in speed.values())
    assert data["variants"]["single_map"]["num_source_maps"] == 1
    assert data["variants"]["full"]["boxes_per_location"] == [4, 6, 6, 6, 6]
    assert list(tmp_path.iterdir()) == [out]  # the temp file was renamed, none is left
    # --resume with the same settings finds every run done and trains nothing.
    assert ex.main(argv + ["--resume"]) == 0
    assert "0 to do" in capsys.readouterr().out
    assert len(json.loads(out.read_text())["runs"]) == 3
    summary = ex.summarize(data)
    assert summary["full"]["n"] == 1 and "non_atrous" not in summary


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown variant"):
        ex.build_variant_model("no_such_thing", C)
    with pytest.raises(SystemExit):
        ex.main(["--variants", "no_such_thing"])


# ------------------------------------------------------------------ compare_runs and its checker (notebook 10)

def test_compare_runs_by_hand():
    difference, noise, within = ex.compare_runs([0.50, 0.52, 0.51], [0.40, 0.41, 0.39])
    assert difference == pytest.approx(-0.11)
    assert noise == pytest.approx(2 * math.sqrt(0.0001 / 3 + 0.0001 / 3))
    assert within is False
    assert ex.compare_runs([0.5, 0.6], [0.55, 0.5])[2] is True
    with pytest.raises(ValueError, match="at least 2"):
        ex.compare_runs([0.5], [0.4, 0.6])


def _learner_compare(baseline, variant, ddof=1, use_abs=True, reverse=False, per_seed=True):
    import numpy as np

    b, v = np.asarray(baseline, float), np.asarray(variant, float)
    difference = (b.mean() - v.mean()) if reverse else (v.mean() - b.mean())
    nb, nv = (b.size, v.size) if per_seed else (1, 1)
    noise = 2 * math.sqrt(b.var(ddof=ddof) / nb + v.var(ddof=ddof) / nv)
    return difference, noise, (abs(difference) if use_abs else difference) <= noise


@pytest.mark.plumbing
def test_check_compare_runs_passes_the_library():
    from check_results import on_its_reference  # tests/check_results.py
    from ssd_lib.course.checks import check_compare_runs

    with on_its_reference():
        assert check_compare_runs(ex.compare_runs).passed


def test_check_compare_runs_passes_a_learner_solution():
    from ssd_lib.course.checks import check_compare_runs

    assert check_compare_runs(_learner_compare).passed


@pytest.mark.parametrize("kwargs, hint", [
    ({"ddof": 0}, "ddof=1"),
    ({"use_abs": False}, "abs(difference)"),
    ({"reverse": True}, "other way round"),
    ({"per_seed": False}, "s / sqrt(n)"),
])
def test_check_compare_runs_fails_plausible_wrong_versions(kwargs, hint):
    import functools

    from ssd_lib.course.checks import check_compare_runs

    result = check_compare_runs(functools.partial(_learner_compare, **kwargs))
    assert not result.passed
    assert result.message.startswith("❌ check_compare_runs: case '")
    assert hint in result.message.split("Hint: ", 1)[1], result.message


def test_check_compare_runs_reports_not_implemented():
    from ssd_lib.course.checks import check_compare_runs

    def compare_runs(baseline, variant):
        raise NotImplementedError

    result = check_compare_runs(compare_runs)
    assert not result.passed and "not implemented yet" in result.message
