"""Lesson 12 (notebook 12_deployment): the deployed prediction path, and when two paths agree.

``check_predict_with`` compares ``predict_with`` with :func:`ssd_lib.export.predict_with`, on a
seeded random small SSD run like an ONNX Runtime session (numpy in, numpy out) and rendered
images of several sizes; ``check_same_detections`` compares the order-free comparison of one
image's detections with :func:`ssd_lib.export.same_detections`.

Usage::

    from ssd_lib.course.checks import check_same_detections
    assert check_same_detections(same_detections)
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import ssd_lib.export.compare
from ssd_lib.data import ShapesDataset
from ssd_lib.export import match_detections, predict_with, same_detections
from ssd_lib.model import ssd_small

from .harness import Case, CheckResult, Mismatch, as_bool, as_tensor, fmt, random_boxes, run
from .tripwire import Forbid

_PREDICT_STEPS = ("the deployed path must do exactly what evaluate.predict does: resize each image to image_size "
                  "(bilinear, align_corners=False, no antialias), normalise with the ImageNet mean and std, run the "
                  "network once on the stacked batch, then detect(loc, logits, priors_cxcywh, score_threshold) and "
                  "scale_detections to each image's own (height, width)")
_PREDICT_NORMALISE = ("normalise as in training: (image - IMAGENET_MEAN) / IMAGENET_STD per channel (ssd_lib.augment); "
                      "a network fed unnormalised pixels sees inputs it was never trained on")
_PREDICT_PIXELS = ("detect returns boxes in [0, 1] of the network's input; scale them to pixels of each ORIGINAL image: "
                   "scale_detections(dets, [image.shape[-2:] for image in images]) (x by the width, y by the height)")
_PREDICT_POST = ("pass the raw loc and logits to detect unchanged: it decodes the offsets and applies the softmax "
                 "itself (doing either twice changes boxes or scores)")
_SAME_RULE = ("two detections are the same when they have the same label, scores within score_tol and every corner "
              "within box_tol of the image size (x within box_tol * width, y within box_tol * height); the lists must "
              "pair up one to one")
_SAME_ORDER = ("the order is not part of the result: two detections with nearly equal scores may come out in either "
               "order from two runtimes, so pair each detection with a partner instead of comparing index by index "
               "(sorting by score does not help when two scores are within the tolerance)")
_SAME_SCALE = ("box_tol is a fraction of the image size: on a 640-pixel-wide image 1e-3 allows 0.64 pixels in x; "
               "multiply by the width for x and by the height for y")


class _ImageList(list):
    """A list of (3, H, W) tensors whose ``==`` compares the tensors exactly (the check machinery
    compares inputs before and after the learner's call)."""

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, list) and len(self) == len(other)
                and all(torch.equal(a, b) for a, b in zip(self, other)))

    __hash__ = None  # type: ignore[assignment]


class _Detections(dict):
    """One image's detections (``boxes``, ``scores``, ``labels``) whose ``==`` compares tensors exactly."""

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, dict) and self.keys() == other.keys()
                and all(isinstance(other[k], Tensor) and self[k].shape == other[k].shape and torch.equal(self[k], other[k])
                        for k in self))

    __hash__ = None  # type: ignore[assignment]


def _checker_network(num_classes: int = 4, image_size: int = 64, seed: int = 0):
    """A small SSD with seeded random weights, run like an ONNX Runtime session: numpy float32
    ``(B, 3, S, S)`` in, numpy ``(loc, logits)`` out. Returns ``(run_network, priors_cxcywh)``."""
    with torch.random.fork_rng(devices=[]):  # leave the learner's random state alone
        torch.manual_seed(seed)
        model = ssd_small(num_classes, image_size=image_size).eval()
        with torch.no_grad():  # a fresh network's outputs are ~0 (scores ~1/C, boxes = default boxes): scale them
            for loc_head, conf_head in zip(model.loc_heads, model.conf_heads):
                loc_head.weight.mul_(30.0)
                conf_head.weight.mul_(100.0)

    def run_network(batch: Any) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(batch, np.ndarray):
            raise TypeError(f"the network (like ONNX Runtime) takes a numpy array, got {type(batch).__name__}; "
                            "convert the batch with .numpy()")
        if batch.dtype != np.float32:
            raise TypeError(f"the network (like ONNX Runtime) takes float32, got {batch.dtype}; use .astype(np.float32)")
        if batch.ndim != 4 or batch.shape[1:] != (3, image_size, image_size):
            raise ValueError(f"the network takes a batch of shape (B, 3, {image_size}, {image_size}), got "
                             f"{tuple(batch.shape)}: resize every image to image_size and stack them")
        with torch.no_grad():
            loc, logits = model(torch.from_numpy(batch.copy()))
        return loc.numpy(), logits.numpy()

    return run_network, model.priors.clone()


def _checker_images(sizes: Sequence[tuple[int, int]], seed: int) -> _ImageList:
    """Rendered shapes images (so that the network sees structure), resized to each (height, width)."""
    dataset = ShapesDataset("test", size=len(sizes), seed=seed, image_size=96)
    return _ImageList(F.interpolate(dataset[i][0][None], size=size, mode="bilinear", align_corners=False)[0].clamp(0, 1)
                      for i, size in enumerate(sizes))


def _diagnose_predict(expected: dict, got: dict, size: tuple[int, int]) -> Optional[str]:
    """A hint from how the learner's detections differ; None: the case's own hint."""
    height, width = size
    if not len(got["scores"]) or not len(expected["scores"]):
        return None
    if float(got["boxes"].abs().max()) <= 1.0 + 1e-6 < float(expected["boxes"].abs().max()):
        return _PREDICT_PIXELS
    swapped = {**got, "boxes": got["boxes"] * got["boxes"].new_tensor([width / height, height / width] * 2)}
    if height != width and not match_detections(expected, swapped, size)["only_a"]:
        return "you scaled x by the height and y by the width: size is (height, width) = image.shape[-2:]. " + _PREDICT_PIXELS
    best_box_error = float(((got["boxes"][0] - expected["boxes"][0]).abs() / got["boxes"].new_tensor([width, height] * 2)).max())
    best_score_error = abs(float(got["scores"][0]) - float(expected["scores"][0]))
    if best_box_error <= 1e-3 and best_score_error > 1e-2:
        return _PREDICT_POST
    if best_box_error <= 1e-3 and best_score_error <= 1e-4 and len(got["scores"]) != len(expected["scores"]):
        return (f"your best detections agree, but you have {len(got['scores'])} detections instead of "
                f"{len(expected['scores'])}: pass score_threshold on to detect and keep its other defaults")
    if best_box_error <= 1e-2:
        return ("close, but not equal: the preprocessing must be exactly the training one (SSDTransform: bilinear "
                "resize with align_corners=False and no antialias, then (image - mean) / std)")
    return None


_PREDICT_WITH_FORBID = Forbid("check_predict_with", "the prediction loop", (predict_with,),
                              "torch operations, F.interpolate, ssd_lib.detect.detect and scale_detections")


def check_predict_with(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``predict_with(run_network, images, priors_cxcywh, image_size, score_threshold=0.01) -> list of
    {"boxes" (D, 4) pixel xyxy, "scores", "labels"}`` against :func:`ssd_lib.export.predict_with`, with a
    seeded random small SSD run like an ONNX Runtime session (numpy in, numpy out) and rendered
    images of several sizes. Detections are compared as :func:`ssd_lib.export.same_detections` does."""
    run_network, priors = _checker_network(seed=seed)
    cases = [
        Case("one 64x64 image (already the input size)", (run_network, _checker_images([(64, 64)], 4 * seed + 0), priors, 64),
             _PREDICT_NORMALISE, inputs="images: 1 of 64x64"),
        Case("one 80x120 image (height 80, width 120)", (run_network, _checker_images([(80, 120)], 4 * seed + 1), priors, 64),
             "resize each image to image_size for the network, then scale its boxes back to its own height and width",
             inputs="images: 1 of 80x120"),
        Case("three images of different sizes in one batch",
             (run_network, _checker_images([(100, 70), (48, 130), (64, 64)], 4 * seed + 2), priors, 64),
             _PREDICT_STEPS, inputs="images: 100x70, 48x130, 64x64"),
        Case("score_threshold = 0.3", (run_network, _checker_images([(90, 90), (60, 150)], 4 * seed + 3), priors, 64, 0.3),
             "pass score_threshold on to detect", inputs="images: 90x90, 60x150; score_threshold=0.3"),
    ]

    def compare(expected: list, got: Any, args: tuple) -> None:
        images = args[1]
        if not isinstance(got, (list, tuple)) or len(got) != len(images):
            raise Mismatch(f"expected a list of {len(images)} dicts (one per image), got "
                           f"{type(got).__name__}{f' of length {len(got)}' if isinstance(got, (list, tuple)) else ''}",
                           "return one dict per image, as scale_detections does")
        for index, (want, have, image) in enumerate(zip(expected, got, images)):
            size = tuple(image.shape[-2:])
            if not isinstance(have, dict) or not {"boxes", "scores", "labels"} <= set(have):
                raise Mismatch(f"image {index}: expected a dict with boxes, scores and labels, got "
                               f"{type(have).__name__}", "return the dicts that scale_detections gives")
            have = {key: as_tensor(have[key], key) for key in ("boxes", "scores", "labels")}
            if not same_detections(want, have, size):
                raise Mismatch(f"image {index} ({size[0]}x{size[1]}): expected {len(want['scores'])} detections "
                               f"(best: label {int(want['labels'][0]) if len(want['labels']) else '-'}, box "
                               f"{fmt(want['boxes'][:1])}), got {len(have['scores'])} that do not match "
                               f"(best: box {fmt(have['boxes'][:1])})", _diagnose_predict(want, have, size))

    return run("check_predict_with", fn, ("run_network", "images", "priors_cxcywh", "image_size", "score_threshold"),
               cases, predict_with, compare, _PREDICT_WITH_FORBID)


def _dets(rows: list, size: tuple[int, int] = (1.0, 1.0)) -> _Detections:
    """Detections from rows (x1, y1, x2, y2, score, label) with box fractions scaled to ``size`` = (H, W) pixels."""
    height, width = size
    table = torch.tensor(rows, dtype=torch.float64).reshape(-1, 6)
    boxes = (table[:, :4] * torch.tensor([width, height, width, height], dtype=torch.float64)).float()
    return _Detections(boxes=boxes, scores=table[:, 4].float(), labels=table[:, 5].long())


_SAME_DETECTIONS_FORBID = Forbid("check_same_detections", "the comparison of two detection sets", (
    same_detections, match_detections, ssd_lib.export.compare.compare_detections),
    "torch operations, an IoU (yours, ssd_lib.boxes.box_iou or torchvision.ops.box_iou) and Python loops")


def check_same_detections(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``same_detections(det_a, det_b, size, box_tol=1e-3, score_tol=1e-4) -> bool`` (one image's
    detections from two paths; ``size = (height, width)``) against :func:`ssd_lib.export.same_detections`."""
    size = (480, 640)
    base = [[0.10, 0.20, 0.40, 0.60, 0.91, 1], [0.50, 0.10, 0.90, 0.50, 0.62, 3], [0.05, 0.55, 0.30, 0.95, 0.30, 2]]
    tie = [[0.10, 0.20, 0.40, 0.60, 0.800040, 1], [0.55, 0.15, 0.85, 0.45, 0.800000, 2]]
    px = lambda dx, dy: [[0.10 + dx / 640, 0.20 + dy / 480, 0.40, 0.60, 0.91, 1]] + base[1:]  # noqa: E731
    g = torch.Generator().manual_seed(seed)
    random_rows = torch.cat((random_boxes(g, 12).double(), torch.rand(12, 1, generator=g).double() * 0.9 + 0.05,
                             torch.randint(1, 7, (12, 1), generator=g).double()), dim=1).tolist()
    shuffled = [random_rows[i] for i in torch.randperm(12, generator=g).tolist()]

    def case(name: str, rows_a: list, rows_b: list, hint: str, *tolerances: float) -> Case:
        extra = f", box_tol={tolerances[0]:g}, score_tol={tolerances[1]:g}" if tolerances else ""
        return Case(name, (_dets(rows_a, size), _dets(rows_b, size), size, *tolerances), hint,
                    inputs=f"det_a: {len(rows_a)} detections, det_b: {len(rows_b)}, size={size}{extra}")

    cases = [
        case("identical detections", base, base, _SAME_RULE),
        case("no detections on either side", [], [], "two empty lists agree (and must not raise)"),
        case("the same detections in another order", base, base[::-1], _SAME_ORDER),
        case("two scores 4e-5 apart come out in the other order", tie,
             [[*tie[1][:4], 0.800040, 2], [*tie[0][:4], 0.800010, 1]], _SAME_ORDER),
        case("a box 0.5 pixels off in x on a 640-pixel-wide image (within 1e-3 of the width)", base, px(0.5, 0),
             _SAME_SCALE),
        case("a box 0.6 pixels off in y on a 480-pixel-high image (beyond 1e-3 of the height)", base, px(0, 0.6),
             "x is compared with box_tol * width and y with box_tol * height (size is (height, width))"),
        case("a box 3 pixels off", base, px(3, 0), _SAME_SCALE),
        case("one score 2e-4 lower", base, [base[0], [*base[1][:4], 0.6198, 3], base[2]],
             "compare the scores too, within score_tol"),
        case("one label differs", base, [base[0], [*base[1][:5], 4], base[2]], "the labels must be equal"),
        case("one detection missing", base, base[:2], "different numbers of detections are never the same"),
        case("a duplicate on one side, a different detection on the other", [base[0], base[0], base[2]], base,
             "pair each detection with ONE partner: once used, a partner cannot match another detection"),
        case("12 random detections, shuffled", random_rows, shuffled, _SAME_ORDER),
        case("looser tolerances (box_tol 0.01, score_tol 0.01)", base,
             [[0.105, 0.20, 0.40, 0.60, 0.905, 1]] + base[1:], "use the box_tol and score_tol arguments", 0.01, 0.01),
    ]

    def compare(expected: bool, got: Any, args: tuple) -> None:
        same = as_bool(got, "True or False", "return a bool")
        if same != expected:
            raise Mismatch(f"expected {expected}, got {same}", None)

    return run("check_same_detections", fn, ("det_a", "det_b", "size", "box_tol", "score_tol"), cases,
               same_detections, compare, _SAME_DETECTIONS_FORBID)
