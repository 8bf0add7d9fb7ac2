"""Tests for ssd_lib.augment: properties of the whole pipeline, each step by hand, and each step
against the torchvision.transforms.v2 step with the same semantics (identical output on the
deterministic paths, same sampling distribution on the random ones)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf

from ssd_lib.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    MinIoURandomCrop,
    Normalize,
    PhotometricDistort,
    RandomHorizontalFlip,
    Resize,
    SanitizeBoxes,
    SSDAugmentation,
    SSDTransform,
    ZoomOut,
    denormalize,
)


def make_sample(height=60, width=80, boxes=((5.0, 10.0, 30.0, 40.0), (40.0, 20.0, 75.0, 55.0)), seed=0):
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    count = len(boxes)
    target = {
        "boxes": boxes,
        "labels": torch.arange(1, count + 1),
        "difficult": torch.arange(count) % 2 == 1,
        "image_id": 7,
    }
    return image, target


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    a, b = torch.as_tensor(a, dtype=torch.float64).sort().values, torch.as_tensor(b, dtype=torch.float64).sort().values
    grid = torch.cat((a, b))
    cdf_a = torch.searchsorted(a, grid, right=True) / len(a)
    cdf_b = torch.searchsorted(b, grid, right=True) / len(b)
    return (cdf_a - cdf_b).abs().max().item()


def ks_critical(n, m, alpha=1e-3):
    """Critical value of the two-sample KS test at level ``alpha`` (asymptotic formula)."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def binomial_ok(successes, n, p, sigmas=4.0):
    return abs(successes - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# ----------------------------------------------------------------------------- properties


@st.composite
def samples(draw):
    height = draw(st.integers(1, 96))
    width = draw(st.integers(1, 96))
    count = draw(st.integers(0, 6))
    rows = []
    for _ in range(count):
        xs = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2)))
        ys = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2)))
        rows.append((xs[0] * width, ys[0] * height, xs[1] * width, ys[1] * height))
    boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)  # float64 -> float32 rounding must not leave the image
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    seed = draw(st.integers(0, 2**31 - 1))
    image = torch.rand(3, height, width, generator=seeded(seed))
    labels = torch.arange(1, count + 1)
    target = {"boxes": boxes, "labels": labels, "difficult": labels % 2 == 0, "image_id": seed}
    return image, target, seed


@settings(max_examples=150, deadline=None, derandomize=True)
@given(samples())
def test_augmentation_output_is_a_valid_sample(sample):
    image, target, seed = sample
    boxes_before = target["boxes"].clone()
    out_image, out = SSDAugmentation(300)(image, target, generator=seeded(seed))
    assert out_image.shape == (3, 300, 300) and out_image.dtype == torch.float32
    assert torch.isfinite(out_image).all()
    boxes = out["boxes"]
    assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert (boxes >= 0).all() and (boxes <= 300).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()  # positive area
    assert len(out["labels"]) == len(out["difficult"]) == len(boxes) <= len(target["boxes"])
    assert torch.equal(out["difficult"], out["labels"] % 2 == 0)  # rows stayed aligned
    assert set(out["labels"].tolist()) <= set(target["labels"].tolist())
    assert out["image_id"] == seed
    assert torch.equal(target["boxes"], boxes_before)  # the input is not modified


@settings(max_examples=60, deadline=None, derandomize=True)
@given(samples())
def test_evaluation_transform_output_is_a_valid_sample(sample):
    image, target, _ = sample
    out_image, out = SSDTransform(300)(image, target)
    assert out_image.shape == (3, 300, 300)
    height, width = image.shape[-2:]
    scale = torch.tensor([300 / width, 300 / height] * 2)
    torch.testing.assert_close(out["boxes"], (target["boxes"] * scale).clamp(0, 300))
    assert torch.equal(out["labels"], target["labels"])  # evaluation drops nothing


def test_empty_target_passes_through():
    image, target = make_sample(boxes=())
    for seed in range(30):
        out_image, out = SSDAugmentation(300)(image, target, generator=seeded(seed))
        assert out_image.shape == (3, 300, 300)
        assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,) and out["difficult"].shape == (0,)


def test_no_box_crop_chooses_whole_image_or_random_patch():
    image, target = make_sample(boxes=())
    crop = MinIoURandomCrop()
    params = [crop.make_params(image, target, seeded(seed)) for seed in range(200)]
    whole = sum(not p for p in params)
    assert binomial_ok(whole, 200, 0.5)  # options None and 0.0 only


# ----------------------------------------------------------------------------- reproducibility


def test_same_seed_same_output_and_steps_one_by_one_match():
    image, target = make_sample()
    aug = SSDAugmentation(300)
    first = aug(image, target, generator=seeded(3))
    second = aug(image, target, generator=seeded(3))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1]["boxes"], second[1]["boxes"])
    others = [aug(image, target, generator=seeded(s))[0] for s in range(4, 8)]
    assert not all(torch.equal(first[0], other) for other in others)
    # A notebook applying aug.steps one at a time with the same generator gets the same result.
    generator, step_image, step_target = seeded(3), image, target
    for step in aug.steps:
        step_image, step_target = step(step_image, step_target, generator)
    assert torch.equal(step_image, first[0]) and torch.equal(step_target["boxes"], first[1]["boxes"])


def test_no_generator_uses_global_rng():
    image, target = make_sample()
    aug = SSDAugmentation(300)
    with torch.random.fork_rng():
        torch.manual_seed(11)
        first = aug(image, target)[0]
        torch.manual_seed(11)
        second = aug(image, target)[0]
    assert torch.equal(first, second)


# ----------------------------------------------------------------------------- flip, resize, normalise


def test_flip_mirrors_boxes_exactly():
    image, target = make_sample(height=60, width=80, boxes=((5.0, 10.0, 30.0, 40.0), (0.0, 0.0, 80.0, 60.0)))
    out_image, out = RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(out["boxes"], torch.tensor([[50.0, 10.0, 75.0, 40.0], [0.0, 0.0, 80.0, 60.0]]))
    assert torch.equal(out_image[:, :, 0], image[:, :, -1])
    assert torch.equal(out["labels"], target["labels"])
    same_image, same = RandomHorizontalFlip(p=0.0)(image, target)
    assert same_image is image and same is target


def test_flip_matches_torchvision():
    image, target = make_sample()
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(60, 80))
    tv_image, tv_boxes = v2.RandomHorizontalFlip(p=1.0)(tv_tensors.Image(image), boxes)
    out_image, out = RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(out_image, tv_image.as_subclass(torch.Tensor))
    assert torch.equal(out["boxes"], tv_boxes.as_subclass(torch.Tensor))


@pytest.mark.parametrize("size", [300, (120, 200)])
def test_resize_matches_torchvision(size):
    image, target = make_sample(height=75, width=130, boxes=((3.0, 4.0, 50.0, 70.0), (60.0, 0.0, 130.0, 75.0)))
    out_size = [size, size] if isinstance(size, int) else list(size)
    out_image, out = Resize(size)(image, target)
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(75, 130))
    assert torch.equal(out_image, tvf.resize(image, out_size, antialias=False))
    torch.testing.assert_close(out["boxes"], tvf.resize(boxes, out_size).as_subclass(torch.Tensor))


@pytest.mark.parametrize("antialias", [False, True])
def test_resize_to_the_same_size_is_skipped_and_still_equals_torchvision(antialias):
    # Resize returns the input unchanged when it already has the output size (the built-in data is
    # rendered at the model's size); that must be what interpolation at scale 1 would have given.
    image, target = make_sample(height=64, width=96, boxes=((3.0, 4.0, 50.0, 60.0),))
    out_image, out = Resize((64, 96), antialias=antialias)(image, target)
    assert torch.equal(out_image, tvf.resize(image, [64, 96], antialias=antialias))
    assert torch.equal(out["boxes"], target["boxes"])


def test_evaluation_transform_is_deterministic_and_scales_boxes():
    image, target = make_sample(height=400, width=200, boxes=((10.0, 20.0, 110.0, 220.0),))
    transform = SSDTransform(300)
    first_image, first = transform(image, target)
    second_image, _ = transform(image, target)
    assert torch.equal(first_image, second_image)
    assert torch.equal(first["boxes"], torch.tensor([[15.0, 15.0, 165.0, 165.0]]))
    expected = tvf.normalize(tvf.resize(image, [300, 300], antialias=False), list(IMAGENET_MEAN), list(IMAGENET_STD))
    torch.testing.assert_close(first_image, expected)


def test_normalize_matches_torchvision_and_denormalize_inverts_it():
    image, target = make_sample()
    out_image, out = Normalize()(image, target)
    torch.testing.assert_close(out_image, tvf.normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD)))
    torch.testing.assert_close(denormalize(out_image), image)
    torch.testing.assert_close(denormalize(out_image[None]), image[None])  # batches too
    assert out is target


def test_sanitize_drops_thin_boxes_with_their_labels():
    image, target = make_sample(boxes=((0.0, 0.0, 10.0, 10.0), (5.0, 5.0, 5.5, 20.0), (1.0, 1.0, 2.0, 2.0)))
    _, out = SanitizeBoxes(min_size=1.0)(image, target)
    assert torch.equal(out["boxes"], torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 2.0, 2.0]]))
    assert out["labels"].tolist() == [1, 3] and out["difficult"].tolist() == [False, False]


# ----------------------------------------------------------------------------- zoom out


def test_zoom_out_keeps_content_and_fills_with_mean():
    image, target = make_sample()
    zoom = ZoomOut(p=1.0)
    params = zoom.make_params(image, target, seeded(0))
    left, top, right, bottom = params["padding"]
    out_image, out = zoom.apply(image, target, params)
    assert out_image.shape == (3, 60 + top + bottom, 80 + left + right)
    torch.testing.assert_close(out["boxes"], target["boxes"] + torch.tensor([left, top, left, top]))
    for box, out_box in zip(target["boxes"].long(), out["boxes"].long()):  # the objects' pixels moved, unchanged
        assert torch.equal(out_image[:, out_box[1] : out_box[3], out_box[0] : out_box[2]],
                           image[:, box[1] : box[3], box[0] : box[2]])
    assert torch.equal(out_image[:, top : top + 60, left : left + 80], image)
    mask = torch.ones(out_image.shape[1:], dtype=torch.bool)
    mask[top : top + 60, left : left + 80] = False
    fill = torch.tensor(IMAGENET_MEAN).view(3, 1)
    assert torch.equal(out_image[:, mask], fill.expand(3, int(mask.sum())))


def test_zoom_out_matches_torchvision_pad():
    image, target = make_sample()
    zoom = ZoomOut(p=1.0)
    for seed in range(5):
        params = zoom.make_params(image, target, seeded(seed))
        out_image, out = zoom.apply(image, target, params)
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(60, 80))
        assert torch.equal(out_image, tvf.pad(image, params["padding"], fill=list(IMAGENET_MEAN)))
        assert torch.equal(out["boxes"], tvf.pad(boxes, params["padding"]).as_subclass(torch.Tensor))


def test_zoom_out_samples_like_torchvision():
    """Same canvas size and paste position distribution as v2.RandomZoomOut(side_range=(1, 4))."""
    image, target = make_sample(height=200, width=400)
    n = 3000
    ours = [ZoomOut(p=1.0).make_params(image, target, seeded(seed))["padding"] for seed in range(n)]
    tv_zoom = v2.RandomZoomOut(fill=list(IMAGENET_MEAN), side_range=(1.0, 4.0))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = [tv_zoom.make_params([tv_tensors.Image(image)])["padding"] for _ in range(n)]
    for pads in (ours, theirs):
        assert all(min(pad) >= 0 and 400 + pad[0] + pad[2] <= 1600 for pad in pads)
    statistics = {
        "canvas width": lambda pad: 400 + pad[0] + pad[2],
        "canvas height": lambda pad: 200 + pad[1] + pad[3],
        "left fraction": lambda pad: pad[0] / max(pad[0] + pad[2], 1),
        "top fraction": lambda pad: pad[1] / max(pad[1] + pad[3], 1),
    }
    for name, statistic in statistics.items():
        a, b = [statistic(pad) for pad in ours], [statistic(pad) for pad in theirs]
        assert ks_statistic(a, b) < ks_critical(n, n), name
    applied = sum(ZoomOut(p=0.5).make_params(image, target, seeded(seed))["padding"] is not None for seed in range(n))
    assert binomial_ok(applied, n, 0.5)


# ----------------------------------------------------------------------------- min-IoU crop


def test_crop_keeps_centre_in_patch_boxes_and_clips_them():
    boxes = (
        (0.0, 0.0, 30.0, 30.0),  # centre (15, 15): inside, clipped at the top-left
        (50.0, 50.0, 100.0, 90.0),  # centre (75, 70): outside
        (30.0, 30.0, 60.0, 45.0),  # centre (45, 37.5): inside, clipped on the right
        (10.0, 40.0, 20.0, 50.0),  # centre (15, 45): exactly on the bottom edge: dropped
    )
    image, target = make_sample(height=100, width=100, boxes=boxes)
    params = {"top": 5, "left": 10, "height": 40, "width": 40}
    out_image, out = MinIoURandomCrop().apply(image, target, params)
    assert torch.equal(out_image, image[:, 5:45, 10:50])
    assert torch.equal(out["boxes"], torch.tensor([[0.0, 0.0, 20.0, 25.0], [20.0, 25.0, 40.0, 40.0]]))
    assert out["labels"].tolist() == [1, 3] and out["difficult"].tolist() == [False, False]
    assert out["image_id"] == 7


def test_crop_apply_matches_torchvision():
    image, target = make_sample(height=100, width=100, boxes=((0.0, 0.0, 30.0, 30.0), (50.0, 50.0, 100.0, 90.0)))
    params = {"top": 5, "left": 10, "height": 40, "width": 40}
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(100, 100))
    centres = (target["boxes"][:, :2] + target["boxes"][:, 2:]) / 2
    inside = (10 < centres[:, 0]) & (centres[:, 0] < 50) & (5 < centres[:, 1]) & (centres[:, 1] < 45)
    tv_crop = v2.RandomIoUCrop()
    tv_image = tv_crop.transform(tv_tensors.Image(image), {**params, "is_within_crop_area": inside})
    tv_boxes, tv_labels = v2.SanitizeBoundingBoxes()(
        {"boxes": tv_crop.transform(boxes, {**params, "is_within_crop_area": inside}), "labels": target["labels"]}
    ).values()
    out_image, out = MinIoURandomCrop().apply(image, target, params)
    assert torch.equal(out_image, tv_image.as_subclass(torch.Tensor))
    assert torch.equal(out["boxes"], tv_boxes.as_subclass(torch.Tensor))
    assert torch.equal(out["labels"], tv_labels)


@pytest.mark.parametrize("min_iou", [0.1, 0.5, 0.7, 0.9])
def test_crop_min_iou_constraint_holds(min_iou):
    image, target = make_sample(height=100, width=120, boxes=((10.0, 10.0, 90.0, 95.0), (60.0, 5.0, 80.0, 30.0)))
    crop = MinIoURandomCrop(min_ious=(min_iou,))
    for seed in range(40):
        params = crop.make_params(image, target, seeded(seed))
        assert params, "a satisfiable constraint must give a patch"
        left, top = params["left"], params["top"]
        patch = torch.tensor([[left, top, left + params["width"], top + params["height"]]], dtype=torch.float32)
        assert 0.3 * 120 - 1 <= params["width"] <= 120 and 0.3 * 100 - 1 <= params["height"] <= 100
        assert 0.5 <= params["width"] / params["height"] <= 2.0
        assert patch[0, 2] <= 120 and patch[0, 3] <= 100
        centres = (target["boxes"][:, :2] + target["boxes"][:, 2:]) / 2
        inside = (patch[0, 0] < centres[:, 0]) & (centres[:, 0] < patch[0, 2])
        inside &= (patch[0, 1] < centres[:, 1]) & (centres[:, 1] < patch[0, 3])
        assert inside.any()
        assert box_iou(patch, target["boxes"][inside]).max() >= min_iou
        _, out = crop.apply(image, target, params)
        assert len(out["boxes"]) == int(inside.sum())


def test_crop_samples_like_torchvision():
    """Same option choice, patch size and position distribution as v2.RandomIoUCrop (trials=50)."""
    image, target = make_sample(height=100, width=100, boxes=((10.0, 10.0, 40.0, 50.0), (50.0, 40.0, 90.0, 95.0)))
    n = 800
    ours = [MinIoURandomCrop().make_params(image, target, seeded(seed)) for seed in range(n)]
    tv_crop = v2.RandomIoUCrop(trials=50)
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(100, 100))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = [tv_crop.make_params([tv_tensors.Image(image), boxes]) for _ in range(n)]
    ours_patches = [p for p in ours if p]
    tv_patches = [p for p in theirs if p]
    # P(whole image) = 1/7 per round, more after failed rounds; both must agree.
    assert abs(len(ours_patches) - len(tv_patches)) <= 4 * math.sqrt(n * 0.25)
    for key in ("width", "height", "left", "top"):
        a, b = [p[key] for p in ours_patches], [p[key] for p in tv_patches]
        assert ks_statistic(a, b) < ks_critical(len(a), len(b)), key
    areas = [[p["width"] * p["height"] for p in patches] for patches in (ours_patches, tv_patches)]
    assert ks_statistic(*areas) < ks_critical(len(areas[0]), len(areas[1]))


# ----------------------------------------------------------------------------- photometric


def test_photometric_keeps_unit_range_and_boxes():
    image, target = make_sample()
    distort = PhotometricDistort(p=1.0)
    for seed in range(10):
        out_image, out = distort(image, target, seeded(seed))
        assert out_image.shape == image.shape and out_image.dtype == image.dtype
        assert out_image.min() >= 0 and out_image.max() <= 1
        assert out is target
        assert not torch.equal(out_image, image)


def test_photometric_apply_matches_torchvision_kernels():
    """Given the same params (brightness aside), ours runs v2.RandomPhotometricDistort's kernels in its order."""
    image, target = make_sample()
    distort, tv_distort = PhotometricDistort(p=0.7), v2.RandomPhotometricDistort()
    for seed in range(20):
        params = {**distort.make_params(image, target, seeded(seed)), "brightness_delta": None}
        tv_params = {**params, "brightness_factor": None}
        del tv_params["brightness_delta"]
        expected = tv_distort.transform(image, tv_params)
        assert torch.equal(distort.apply(image, target, params)[0], expected)
    params = {"brightness_delta": 0.1, "contrast_factor": None, "saturation_factor": None, "hue_factor": None,
              "contrast_before": True, "channel_permutation": None}
    assert torch.equal(distort.apply(image, target, params)[0], (image + 0.1).clamp(0, 1))  # additive, as released


def test_photometric_samples_like_torchvision():
    image, target = make_sample()
    n = 2000
    ours = [PhotometricDistort().make_params(image, target, seeded(seed)) for seed in range(n)]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = [v2.RandomPhotometricDistort().make_params([image]) for _ in range(n)]
    for key in ("brightness_delta", "contrast_factor", "saturation_factor", "hue_factor", "channel_permutation"):
        assert binomial_ok(sum(p[key] is not None for p in ours), n, 0.5), key
    assert binomial_ok(sum(p["contrast_before"] for p in ours), n, 0.5)
    for key in ("contrast_factor", "saturation_factor", "hue_factor"):
        a = [p[key] for p in ours if p[key] is not None]
        b = [p[key] for p in theirs if p[key] is not None]
        assert ks_statistic(a, b) < ks_critical(len(a), len(b)), key
    deltas = torch.tensor([p["brightness_delta"] for p in ours if p["brightness_delta"] is not None])
    assert deltas.abs().max() <= 32 / 255 and deltas.abs().max() > 30 / 255
    perms = {tuple(p["channel_permutation"].tolist()) for p in ours if p["channel_permutation"] is not None}
    assert len(perms) == 6  # all orders of RGB, the identity included (as released)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "image, boxes, match",
    [
        (torch.rand(60, 80, 3), [[0.0, 0.0, 1.0, 1.0]], r"shape \(3, H, W\)"),
        ((torch.rand(3, 60, 80) * 255).to(torch.uint8), [[0.0, 0.0, 1.0, 1.0]], "float"),
        (torch.rand(3, 60, 80) * 255, [[0.0, 0.0, 1.0, 1.0]], r"\[0, 1\]"),
        (torch.rand(3, 60, 80), [0.0, 0.0, 1.0, 1.0], r"\(G, 4\)"),
        (torch.rand(3, 60, 80), [[10.0, 0.0, 5.0, 1.0]], "xyxy"),
        (torch.rand(3, 60, 80), [[0.0, 0.0, 81.0, 10.0]], "inside"),
    ],
)
def test_invalid_inputs_raise_clear_errors(image, boxes, match):
    target = {"boxes": torch.tensor(boxes)}
    with pytest.raises(ValueError, match=match):
        SSDAugmentation(300)(image, target)


def test_misaligned_labels_and_bad_generator_raise():
    image, target = make_sample()
    with pytest.raises(ValueError, match="labels"):
        SSDTransform(300)(image, {**target, "labels": torch.tensor([1])})
    with pytest.raises(TypeError, match="generator"):
        SSDAugmentation(300)(image, target, generator=0)
    with pytest.raises(TypeError, match="boxes"):
        RandomHorizontalFlip()(image, {"labels": target["labels"]})
    with pytest.raises(ValueError, match="min_scale"):
        MinIoURandomCrop(min_scale=0.0)


def test_compose_accepts_plain_callables():
    image, target = make_sample()
    pipeline = Compose([Resize(50), lambda im, t, g: (im * 0, t)])
    out_image, _ = pipeline(image, target)
    assert out_image.shape == (3, 50, 50) and not out_image.any()
