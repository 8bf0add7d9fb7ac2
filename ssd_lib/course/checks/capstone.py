"""Lesson 13 (notebook 13_your_ssd): the pieces that lesson 13 assembles from the learner's own functions.

``check_batch_targets`` compares the trainer's ``targets(gt_boxes, gt_labels, priors)`` built from the learner's
per-image ``match`` and ``encode`` with :func:`ssd_lib.train.library_targets` (labels exactly, offsets where the
label is > 0); ``check_postprocess`` compares ``postprocess(loc, logits, priors, ...)`` built from their ``decode``
and ``nms`` with :func:`ssd_lib.detect.detect`; ``check_trained_detector`` scores a detector (images ->
detections, :class:`ssd_lib.course.capstone.Detector`) by its VOC mAP@0.5 on test images: the built-in test split
for seed 0, freshly drawn test images for any other seed (a detector fitted to the test split fails those).

Usage::

    from ssd_lib.course.checks import check_batch_targets, check_postprocess
    assert check_batch_targets(targets) and check_postprocess(postprocess)
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torchvision.ops.boxes as tv_boxes
from torch import Tensor
from torchvision.models.detection import _utils as tv_det_utils
from torchvision.models.detection.ssd import SSD as TorchvisionSSD

import ssd_lib.boxes
import ssd_lib.checkpoint
import ssd_lib.course.assets
import ssd_lib.detect
import ssd_lib.matching
import ssd_lib.train
from ssd_lib.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from ssd_lib.data import ShapesDataset
from ssd_lib.detect import detect
from ssd_lib.metrics import evaluate_voc
from ssd_lib.model import ModelConfig
from ssd_lib.priors import PriorConfig, default_boxes
from ssd_lib.train import library_targets

from .harness import (Case, CheckResult, Mismatch, all_close, as_tensor, check_form, compare_tensor, random_boxes,
                      run, tensor, unpack)
from .matching import _random_objects
from .tripwire import Forbid


class TensorList(list):
    """A case's list of tensors (a batch's objects, test images), equal to a list holding equal tensors: the harness
    compares each input before and after the learner's call to see that it was left unchanged."""

    __hash__ = None

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, list) and len(self) == len(other)
                and all(isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b) for a, b in zip(self, other)))

    def __ne__(self, other: object) -> bool:
        return not self == other


# ------------------------------------------------------------------------------------ the batch targets

_TARGETS = ("for each image b: matched, labels_b = match(gt_boxes[b], gt_labels[b], priors); loc_b = encode(matched, "
            "priors); then torch.stack each list over the images: loc_targets (B, P, 4), labels (B, P)")
_TARGETS_SHAPE = "one row per image: torch.stack a list of B (P, 4) tensors gives (B, P, 4) (torch.cat would give (B*P, 4))"

_TARGETS_FORBID = Forbid("check_batch_targets", "the batch's targets from your match and encode", (
    ssd_lib.train.library_targets, ssd_lib.train.batch_targets, ssd_lib.matching.match, ssd_lib.matching.match_batch,
    ssd_lib.matching.match_ious, ssd_lib.matching._assign, ssd_lib.boxes.encode, tv_det_utils.Matcher.__call__,
    tv_det_utils.SSDMatcher.__call__, tv_det_utils.BoxCoder.encode, tv_det_utils.BoxCoder.encode_single),
    "your match and encode (lesson 3), torch operations (torch.stack, a loop over the images), an IoU (yours, "
    "ssd_lib.boxes.box_iou or torchvision.ops.box_iou) and the box conversions")


def _objects(generator: torch.Generator, priors: Tensor, counts: list[int]) -> tuple[TensorList, TensorList]:
    found = [_random_objects(generator, priors, n) if n else (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
             for n in counts]
    return TensorList(boxes for boxes, _ in found), TensorList(labels for _, labels in found)


def _diagnose_targets(expected: Tensor, got: Tensor, positive: Tensor) -> str:
    for v_centre, v_size in ((0.1, 0.2), (1.0, 0.2), (0.1, 1.0)):
        scale = torch.tensor([v_centre, v_centre, v_size, v_size], dtype=expected.dtype)
        if all_close(got[positive], expected[positive] * scale):
            return "divide the offsets by the variances (0.1 centre, 0.2 size): call your encode with its default variances"
    return _TARGETS


def check_batch_targets(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``targets(gt_boxes: B tensors (G_b, 4) xyxy, gt_labels: B tensors (G_b,), priors (P, 4) cxcywh) ->
    (loc_targets (B, P, 4), labels (B, P))`` against :func:`ssd_lib.train.library_targets`."""
    g = torch.Generator().manual_seed(seed)
    small = default_boxes(PriorConfig.from_paper(60, (4, 2, 1), aspect_ratios=((2,), (2, 3), (2,))))
    course = default_boxes(ModelConfig.small(7, stride4_source=True).priors)
    ssd300 = default_boxes(PriorConfig.ssd300())
    inside = ((cxcywh_to_xyxy(small) >= 0) & (cxcywh_to_xyxy(small) <= 1)).all(dim=1).nonzero().flatten()
    on_box = cxcywh_to_xyxy(small[inside[3]:inside[3] + 1].clone())
    cases = [
        Case("one image, one object exactly on a default box",
             (TensorList([on_box]), TensorList([tensor([2], torch.long)]), small), _TARGETS,
             inputs=f"one object on default box {int(inside[3])} of {len(small)}"),
        Case("three images, the second without objects", (*_objects(g, small, [2, 0, 3]), small),
             "an image without objects gives a row of labels 0 (its loc_targets are free); " + _TARGETS,
             inputs=f"3 images with 2, 0 and 3 random objects, {len(small)} default boxes"),
        Case(f"a batch of 4 images, the course model's {len(course)} default boxes (seed {seed})",
             (*_objects(g, course, [1, 4, 2, 6]), course), _TARGETS, inputs=f"4 random images, {len(course)} default boxes"),
        Case(f"2 images, SSD300's 8732 default boxes (seed {seed})", (*_objects(g, ssd300, [3, 5]), ssd300),
             _TARGETS, inputs="2 random images, the 8732 SSD300 default boxes"),
    ]

    def compare(expected: tuple, got: Any, args: tuple) -> None:
        want_loc, want_labels = expected
        loc, labels = unpack(got, 2, "(loc_targets, labels)")
        compare_tensor(want_labels, labels, what="labels", kind="int", shape_hint=_TARGETS_SHAPE,
                       diagnose=lambda e, o: "the labels are your match's, image by image, stacked: " + _TARGETS)
        loc = as_tensor(loc, "loc_targets")
        check_form(want_loc, loc, "loc_targets", "float", _TARGETS_SHAPE)
        positive = want_labels > 0
        compare_tensor(want_loc[positive], loc[positive], what="loc_targets[labels > 0]", atol=1e-4,
                       diagnose=lambda e, o: _diagnose_targets(want_loc.cpu(), loc.detach().cpu(), positive.cpu()))

    return run("check_batch_targets", fn, ("gt_boxes", "gt_labels", "priors_cxcywh"), cases, library_targets, compare,
               _TARGETS_FORBID)


# ------------------------------------------------------------------------------------ the post-processing

_POST = ("per image: decode (your decode) and clamp to [0, 1]; softmax over the C columns; for each class c >= 1: the "
         "boxes with score > score_threshold, at most pre_nms_top_k of them (the best), your nms at nms_threshold; then "
         "all classes together sorted by descending score, the first top_k")
_POST_FORBID = Forbid("check_postprocess", "the post-processing from your decode and nms", (
    ssd_lib.detect.detect, ssd_lib.detect.detect_decoded, ssd_lib.detect._select, ssd_lib.detect._nms_prefix,
    ssd_lib.boxes.decode, tv_boxes.nms, tv_boxes.batched_nms, tv_boxes._batched_nms_vanilla,
    tv_boxes._batched_nms_coordinate_trick, torch.ops.torchvision.nms._op, tv_det_utils.BoxCoder.decode,
    tv_det_utils.BoxCoder.decode_single, TorchvisionSSD.postprocess_detections),
    "your decode and nms (lesson 8), torch operations (softmax, comparisons, sorting, torch.cat, a loop over the "
    "images and classes), an IoU and the box conversions")
_SETTINGS = ("score_threshold", "nms_threshold", "top_k", "pre_nms_top_k")


def _post_inputs(g: torch.Generator, batch: int, priors: Tensor, classes: int, sharp: float = 3.0) -> tuple:
    """Random (loc, logits) for ``priors``: small offsets, logits spread so that some scores pass 0.01."""
    loc = torch.randn(batch, len(priors), 4, generator=g) * 0.5
    logits = torch.randn(batch, len(priors), classes, generator=g) * sharp
    return loc, logits, priors


def _one_hot_logits(rows: list[list[float]]) -> Tensor:
    return torch.log(tensor(rows)).unsqueeze(0)  # probabilities -> logits whose softmax gives them back


def _diagnose_post(want: dict, have: dict) -> str:
    if len(have["scores"]) > len(want["scores"]):
        return "too many detections: " + _POST
    if len(have["scores"]) < len(want["scores"]):
        return ("too few detections: NMS runs per class (a box never suppresses one of another class) and keeps boxes "
                "with IoU <= nms_threshold; " + _POST)
    if not torch.equal(have["labels"].long().cpu(), want["labels"].cpu()):
        return ("labels are the class columns c = 1..C-1 of the softmax (column 0 is background), sorted with their "
                "scores; " + _POST)
    if not all_close(have["scores"].detach().double().cpu(), want["scores"].double().cpu()):
        return "a score is the softmax probability of its class over all C columns, background included: " + _POST
    return "decode each box from its default box (your decode, variances 0.1 and 0.2), then clamp it to [0, 1]"


def check_postprocess(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``postprocess(loc (B, P, 4), logits (B, P, C), priors (P, 4), score_threshold, nms_threshold, top_k,
    pre_nms_top_k) -> B dicts {boxes (D, 4) xyxy in [0, 1], scores (D,), labels (D,)}`` against
    :func:`ssd_lib.detect.detect`: the same detections in the same order (descending score)."""
    g = torch.Generator().manual_seed(seed)
    three = xyxy_to_cxcywh(tensor([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.95, 0.95]]))
    # Probabilities without ties and none near the 0.01 threshold (a tie's order, or a score at the threshold, is
    # a detail that float32 and float64 may decide differently).
    sure = _one_hot_logits([[0.04, 0.9, 0.06], [0.98, 0.004, 0.016], [0.97, 0.023, 0.007]])
    overlap = _one_hot_logits([[0.12, 0.8, 0.08], [0.3, 0.6, 0.1], [0.9, 0.04, 0.06]])
    classes = _one_hot_logits([[0.12, 0.8, 0.08], [0.3, 0.1, 0.6], [0.9, 0.04, 0.06]])
    edge = xyxy_to_cxcywh(tensor([[0.0, 0.0, 0.3, 0.3], [0.7, 0.7, 1.0, 1.0], [0.4, 0.4, 0.6, 0.6]]))
    push = tensor([[[-3.0, -3.0, 1.0, 1.0], [3.0, 3.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
    course = default_boxes(ModelConfig.small(7, stride4_source=True).priors)
    defaults = (0.01, 0.45, 200, 400)
    cases = [
        Case("one confident box", (torch.zeros(1, 3, 4), sure, three, *defaults), _POST),
        Case("two overlapping boxes of one class: NMS keeps the better", (torch.zeros(1, 3, 4), overlap, three, *defaults),
             "per class, a box whose IoU with a better kept box is > nms_threshold goes: " + _POST),
        Case("two overlapping boxes of two classes: both stay", (torch.zeros(1, 3, 4), classes, three, *defaults),
             "NMS runs per class: a box of class 1 never suppresses one of class 2. " + _POST),
        Case("decoded boxes outside the image are clamped to [0, 1]", (push, sure.expand(1, 3, 3).clone(), edge, *defaults),
             "clamp the decoded corners to [0, 1] (torch.clamp), before NMS"),
        Case("nothing above score_threshold = 0.99", (torch.zeros(1, 3, 4), sure, three, 0.99, 0.45, 200, 400),
             "an image without a score above the threshold gets empty tensors: boxes (0, 4), scores (0,), labels (0,)"),
        Case(f"random batch of 2 images, 60 default boxes, 4 classes, top_k = 10 (seed {seed})",
             (*_post_inputs(g, 2, xyxy_to_cxcywh(random_boxes(g, 60)), 4), 0.01, 0.45, 10, 400),
             "keep the top_k best detections of each image, all classes together: " + _POST),
        Case(f"random image, pre_nms_top_k = 5 per class (seed {seed})",
             (*_post_inputs(g, 1, xyxy_to_cxcywh(random_boxes(g, 40)), 3), 0.01, 0.5, 200, 5),
             "before NMS keep only the pre_nms_top_k best candidates of each class: " + _POST),
        Case(f"random batch of 3 images, the course model's {len(course)} default boxes (seed {seed})",
             (*_post_inputs(g, 3, course, 7, sharp=2.0), *defaults), _POST,
             inputs=f"3 random images, {len(course)} default boxes, 7 classes, the default settings"),
    ]

    def compare(expected: list, got: Any, args: tuple) -> None:
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            raise Mismatch(f"expected a list of {len(expected)} dicts (one per image), got {type(got).__name__}"
                           + (f" of length {len(got)}" if isinstance(got, (list, tuple)) else ""),
                           "return one dict per image of the batch: {'boxes': ..., 'scores': ..., 'labels': ...}")
        for b, (want, have) in enumerate(zip(expected, got)):
            if not isinstance(have, dict) or not {"boxes", "scores", "labels"} <= set(have):
                raise Mismatch(f"image {b}: expected a dict with keys 'boxes', 'scores', 'labels', got {type(have).__name__}"
                               + (f" with keys {sorted(have)}" if isinstance(have, dict) else ""), _POST)
            have = {k: as_tensor(have[k], k) for k in ("boxes", "scores", "labels")}
            hint = _diagnose_post(want, have) if len(have["scores"]) == len(have["labels"]) else _POST
            check_form(want["scores"], have["scores"], f"image {b}'s scores", "float", hint)
            compare_tensor(want["labels"], have["labels"], what=f"image {b}'s labels", kind="int",
                           diagnose=lambda e, o: hint)
            compare_tensor(want["scores"], have["scores"], what=f"image {b}'s scores", diagnose=lambda e, o: hint)
            compare_tensor(want["boxes"], have["boxes"], what=f"image {b}'s boxes", atol=1e-4, diagnose=lambda e, o: hint)

    return run("check_postprocess", fn, ("loc", "logits", "priors_cxcywh", *_SETTINGS), cases, detect, compare,
               _POST_FORBID)


# ------------------------------------------------------------------------------------ the trained detector

MAP_THRESHOLD = 0.80  # the grade of lesson 13: VOC mAP@0.5 of the learner's detector
TEST_IMAGES = 200  # images per case (the first 200 of the built-in test split for seed 0)
_DETECTOR_FORBID = Forbid("check_trained_detector", "your detector (the post-processing and the weights)", (
    *_POST_FORBID.functions, ssd_lib.course.assets.load_course_model, ssd_lib.checkpoint.model_from_checkpoint,
    ssd_lib.checkpoint.load_checkpoint),
    "the model you trained with your pieces, your postprocess, ssd_lib.evaluate.predict and "
    "ssd_lib.course.capstone.Detector")
_TRAIN_MORE = ("train with all of your pieces passing their checks (a wrong piece, e.g. offsets without the "
               "variances, costs mAP: section 8), at the graded budget")


def _test_images(seed: int, image_size: int = 128) -> tuple[TensorList, list[dict], list[str]]:
    """The first TEST_IMAGES images of the built-in test split (seed 0), or of a test split drawn with ``seed``."""
    dataset = ShapesDataset("test", size=TEST_IMAGES, image_size=image_size, seed=seed)
    items = [dataset[i] for i in range(len(dataset))]
    return TensorList(image for image, _ in items), [target for _, target in items], dataset.classes


def check_trained_detector(fn: Callable, seed: int = 0, threshold: float = MAP_THRESHOLD) -> CheckResult:
    """Check a detector ``detect_images(images: list of (3, H, W) in [0, 1]) -> one dict per image {boxes (D, 4) pixel
    xyxy, scores (D,), labels (D,)}``: VOC mAP@0.5 (11-point) >= ``threshold`` on 200 test images (seed 0: the
    built-in test split's first 200; another seed: 200 new ones, drawn with that seed)."""
    images, truths, classes = _test_images(seed)
    where = ("the built-in test split's first" if seed == 0 else f"new test images (seed {seed}),")
    cases = [Case(f"{where} {len(images)} images", (images,), _TRAIN_MORE, inputs=f"{len(images)} images 128 x 128")]

    def compare(expected: list, got: Any, args: tuple) -> None:
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            raise Mismatch(f"expected {len(expected)} detection dicts (one per image), got {type(got).__name__}",
                           "hand in ssd_lib.course.capstone.Detector(model, postprocess): it calls your postprocess")
        score = evaluate_voc([{k: torch.as_tensor(d[k]).detach().cpu() for k in ("boxes", "scores", "labels")}
                              for d in got], expected, class_names=classes, num_classes=len(classes))["mAP"]
        if math.isnan(score) or score < threshold:
            raise Mismatch(f"your detector's VOC mAP@0.5 is {score:.4f}, below the {threshold:.2f} this grade asks for")
        print(f"   mAP@0.5 = {score:.4f} >= {threshold:.2f} on {len(expected)} images")

    return run("check_trained_detector", fn, ("images",), cases, lambda imgs: truths, compare, _DETECTOR_FORBID)
