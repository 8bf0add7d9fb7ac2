"""Lesson 13, "Your SSD" (ssd_lib.course.capstone and ssd_lib.course.checks.capstone), tested cheaply: the teacher's
pieces (run from the teacher notebook) pass the new checkers, a delegating piece fails with the tripwire's message and
a wrong one with its hint, the hidden seeds catch a memorised solution; the model refuses default boxes in another
order; the tripwire stops a delegating piece at the first training step; ``assets/capstone.json`` has what the measure
command writes, and the lesson prints its numbers. That the teacher's pieces train to the grade is nbgrader's
autograde of the lesson (tests/test_nbgrader.py)."""
from __future__ import annotations

import contextlib
import copy
import io
import json

import nbformat
import pytest
import torch
import torchvision

import ssd_lib.boxes
import ssd_lib.detect
import ssd_lib.matching
from ssd_lib.course import capstone
from ssd_lib.course.checks import check_batch_targets, check_postprocess, check_trained_detector, hidden_tests
from ssd_lib.course.checks.tripwire import reference_allowed
from ssd_lib.loss import MultiBoxLoss
from ssd_lib.train import library_targets

from check_results import assert_fails_on

TINY = capstone.Budget("tiny", 3, 4, 8, False, "a test")


@pytest.fixture(scope="module")
def pieces():
    return capstone.teacher_pieces()


def _replayer(checker, reference):
    """A solution that passes the public cases by replaying the reference's answers (a guess elsewhere)."""
    seen = []

    def record(*args):
        out = reference(*args)
        seen.append((copy.deepcopy(args), copy.deepcopy(out)))
        return out

    with reference_allowed():
        assert checker(record).passed

    def replay(*args):
        for inputs, out in seen:
            if all(a == b if not isinstance(a, torch.Tensor) else torch.equal(a, b) for a, b in zip(inputs, args)):
                return copy.deepcopy(out)
        return copy.deepcopy(seen[-1][1])

    return replay


# ---------------------------------------------------------------- the batch targets

def test_the_teachers_targets_pass_with_the_hidden_tests(pieces):
    result = hidden_tests(check_batch_targets, pieces["targets"], seeds=(31, 32))
    assert result.passed and "float64" in result.message, result.message


@pytest.mark.parametrize("solution", [library_targets, lambda b, l, p: ssd_lib.matching.match_batch(b, l, p)],
                         ids=["library_targets", "match_batch"])
def test_targets_that_hand_the_work_to_the_library_fail(solution):
    result = check_batch_targets(solution)
    assert not result.passed and "asks you to write the batch's targets from your match and encode yourself" \
        in result.message, result.message


def test_targets_without_the_variances_fail_with_their_hint(pieces):
    result = check_batch_targets(pieces["targets_without_variances"])
    assert_fails_on(result, "check_batch_targets", "one image, one object", "divide the offsets by the variances")


def test_targets_concatenated_instead_of_stacked_fail_on_the_shape(pieces):
    def concatenated(gt_boxes, gt_labels, priors):
        loc, labels = pieces["targets"](gt_boxes, gt_labels, priors)
        return loc.flatten(0, 1), labels.flatten()

    assert_fails_on(check_batch_targets(concatenated), "check_batch_targets", "one image", "torch.stack")


def test_memorised_targets_pass_the_public_cases_and_fail_a_hidden_seed():
    replay = _replayer(check_batch_targets, library_targets)
    assert check_batch_targets(replay).passed
    result = hidden_tests(check_batch_targets, replay, seeds=(7, 8))
    assert not result.passed and "(hidden, seed 7)" in result.message, result.message


# ---------------------------------------------------------------- the post-processing

def test_the_teachers_postprocess_passes_with_the_hidden_tests(pieces):
    result = hidden_tests(check_postprocess, pieces["postprocess"], seeds=(41, 42))
    assert result.passed and "float64" in result.message, result.message


def _teachers_postprocess_with(pieces, source_change=lambda source: source, **names):
    """The teacher's postprocess, its source changed by ``source_change`` and run with ``names`` replacing pieces."""
    namespace = {**pieces, **names}
    exec(source_change(capstone_source("postprocess")), namespace)
    return namespace["postprocess"]


@pytest.mark.parametrize("solution, name", [
    (lambda pieces: ssd_lib.detect.detect, "ssd_lib.detect.detect"),
    (lambda pieces: _teachers_postprocess_with(pieces, nms=torchvision.ops.nms), "torchvision.ops.boxes.nms"),
    (lambda pieces: _teachers_postprocess_with(pieces, decode=ssd_lib.boxes.decode), "ssd_lib.boxes.decode"),
], ids=["detect", "torchvision-nms", "library-decode"])
def test_a_postprocess_that_hands_the_work_to_the_library_fails(pieces, solution, name):
    result = check_postprocess(solution(pieces))
    assert not result.passed and "asks you to write the post-processing from your decode and nms yourself" \
        in result.message, result.message
    assert result.message.split("your function called `", 1)[1].split("`", 1)[0].endswith(name), result.message


def _postprocess_with(pieces, *, per_class=True, clamp=True):
    """The teacher's postprocess with one mistake: NMS over all classes at once, or boxes not clamped."""
    def change(source):
        if not clamp:
            source = source.replace(".clamp(0.0, 1.0)", "")
        if not per_class:
            source = source.replace("for c in range(1, probs.shape[-1]):", "for c in [None]:").replace(
                "scores = probs[b, :, c]", "scores, best = probs[b, :, 1:].max(dim=1)").replace(
                "torch.full_like(keep, c)", "best[keep] + 1")
        return source
    return _teachers_postprocess_with(pieces, change)


def capstone_source(name: str) -> str:
    """The teacher notebook's solution cell that defines ``name``, markers dropped."""
    nb = nbformat.read(capstone.TEACHER_NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if f"def {name}(" in c.source and (c.metadata.get("nbgrader") or {}).get("solution"))
    return "\n".join(ln for ln in cell.source.split("\n") if "### " not in ln)


@pytest.mark.parametrize("mistake, case, hint", [
    ({"per_class": False}, "one confident box", "too few detections: NMS runs per class"),
    ({"clamp": False}, "decoded boxes outside the image", "clamp it to [0, 1]"),
], ids=["class-agnostic-nms", "no-clamp"])
def test_a_wrong_postprocess_fails_with_its_hint(pieces, mistake, case, hint):
    assert_fails_on(check_postprocess(_postprocess_with(pieces, **mistake)), "check_postprocess", case, hint)


def test_memorised_postprocess_fails_a_hidden_seed():
    replay = _replayer(check_postprocess, ssd_lib.detect.detect)
    assert check_postprocess(replay).passed
    result = hidden_tests(check_postprocess, replay, seeds=(7, 8))
    assert not result.passed and "(hidden, seed 7)" in result.message, result.message


# ---------------------------------------------------------------- the trained detector (the shipped model stands in)

@pytest.fixture(scope="module")
def shipped_model():
    from ssd_lib.course.assets import load_course_model

    return load_course_model()[0]


@pytest.mark.slow
def test_a_trained_detector_with_the_teachers_postprocess_passes_and_a_broken_one_fails(shipped_model, pieces):
    good = check_trained_detector(capstone.Detector(shipped_model, pieces["postprocess"]))
    assert good.passed, good.message

    def without_variances(loc, logits, priors, *settings):  # decode by (1, 1): boxes move 5-10 times too far
        return pieces["postprocess"](loc * torch.tensor([10.0, 10.0, 5.0, 5.0]), logits, priors, *settings)

    bad = check_trained_detector(capstone.Detector(shipped_model, without_variances))
    assert not bad.passed and "your detector's VOC mAP@0.5 is" in bad.message and "below the 0.80" in bad.message, \
        bad.message


@pytest.mark.slow
def test_a_detector_with_the_librarys_postprocess_or_the_shipped_weights_fails(shipped_model):
    from ssd_lib.course.assets import load_course_model

    result = check_trained_detector(capstone.Detector(shipped_model))  # the library's detect
    assert not result.passed and "called `ssd_lib.detect.detect`" in result.message, result.message

    def loads_the_shipped_model(images):
        return capstone.Detector(load_course_model()[0], lambda *a: [])(images)

    result = check_trained_detector(loads_the_shipped_model)
    assert not result.passed and "load_course_model" in result.message, result.message


@pytest.mark.slow
def test_a_detector_that_replays_the_test_splits_answers_fails_on_new_images(shipped_model):
    from ssd_lib.course.checks.capstone import _test_images

    images, targets, _ = _test_images(0)
    answers = [{"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"])), "labels": t["labels"]} for t in targets]

    def replay(batch):
        return answers if batch == images else answers[:len(batch)]

    assert check_trained_detector(replay).passed  # the test split's own boxes: mAP 1
    result = check_trained_detector(replay, seed=7)
    assert not result.passed and "new test images (seed 7)" in result.message, result.message


# ---------------------------------------------------------------- the model, the trainer, the tripwire while training

def test_default_boxes_in_another_order_or_count_are_refused(pieces):
    model = capstone.build_model()
    with pytest.raises(ValueError, match=r"the order is map, row i, column j"):
        capstone.use_your_default_boxes(model, lambda cfg: pieces["default_boxes"](cfg)[:, [1, 0, 2, 3]])
    with pytest.raises(ValueError, match=r"heads predict for \(1534, 4\) default boxes"):
        capstone.use_your_default_boxes(model, lambda cfg: pieces["default_boxes"](cfg)[:-6])
    yours = capstone.use_your_default_boxes(model, pieces["default_boxes"])
    assert model.priors is yours and yours.shape == (1534, 4)


def test_default_boxes_that_call_the_library_are_refused():
    from ssd_lib.priors import default_boxes

    with pytest.raises(capstone.DelegatedPiece, match=r"your default_boxes \(call 1\): your function called "
                                                      r"`ssd_lib.priors.default_boxes`"):
        capstone.use_your_default_boxes(capstone.build_model(), lambda cfg: default_boxes(cfg))


@pytest.mark.parametrize("piece", ["targets", "loss"])
def test_the_tripwire_stops_a_delegating_piece_at_the_first_training_step(pieces, piece):
    delegating = {"targets": lambda b, l, p: library_targets(b, l, p),
                  "loss": lambda *args: MultiBoxLoss()(*args).total}[piece]
    targets = delegating if piece == "targets" else pieces["targets"]
    loss = delegating if piece == "loss" else pieces["multibox_loss"]
    name = {"targets": "targets", "loss": "multibox_loss"}[piece]
    with pytest.raises(capstone.DelegatedPiece, match=rf"your {name} \(call 1\): your function called .* asks you to "
                                                      "write .* yourself"):
        capstone.train_your_ssd(capstone.build_model(), targets, loss, TINY)


def test_the_teachers_pieces_train_under_the_tripwire_and_the_postprocess_evaluates(pieces):
    model = capstone.build_model()
    capstone.use_your_default_boxes(model, pieces["default_boxes"])
    run = capstone.train_your_ssd(model, pieces["targets"], pieces["multibox_loss"], TINY)
    assert run.steps == TINY.steps and all(map(lambda v: v == v and v > 0, run.losses)), run.losses
    result = capstone.test_map(run.model, pieces["postprocess"], TINY)
    assert result["images"] == TINY.test_images and 0.0 <= result["mAP"] <= 1.0
    with pytest.raises(capstone.DelegatedPiece, match="your postprocess"):
        capstone.test_map(run.model, lambda *args: ssd_lib.detect.detect(*args), TINY)


def test_budgets_follow_the_modes():
    assert capstone.budget_for(fast=True, grading=True).mode == "graded"  # nbgrader's autograde sets both
    assert capstone.budget_for(fast=False, grading=True).mode == "graded"
    assert capstone.budget_for(fast=True, grading=False) == capstone.BUDGETS["fast"]
    assert capstone.budget_for(fast=False, grading=False) == capstone.BUDGETS["full"]
    assert not capstone.BUDGETS["fast"].graded and capstone.BUDGETS["graded"].graded
    assert capstone.BUDGETS["graded"].steps == capstone.GRADED_STEPS < capstone.BUDGETS["full"].steps


# ---------------------------------------------------------------- the measurements and the lesson that prints them

@pytest.fixture(scope="module")
def asset():
    return capstone.load_measurements()


def test_the_asset_is_what_the_measure_command_writes(tmp_path, asset):
    out = tmp_path / "capstone.json"
    assert capstone.main(["measure", "--steps", "2", "--timing-steps", "1", "--runs", "right", "wrong",
                          "--test-images", "4", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["command"].startswith("python -m ssd_lib.course.capstone measure --steps 2 --timing-steps 1 ")
    assert set(written) == set(asset) and set(written["budget"]) == set(asset["budget"])
    assert set(written["step_time_ms"]) == set(asset["step_time_ms"])
    for name in ("right", "wrong"):
        assert set(written["runs"][name]) == set(asset["runs"][name]), name
        assert written["runs"][name]["steps"] == 2 and written["runs"][name]["test_images"] == 4


def test_the_asset_measured_the_graded_budget_and_the_wrong_piece_costs_map(asset):
    assert asset["command"] == ("python -m ssd_lib.course.capstone measure --steps "
                                f"{capstone.GRADED_STEPS} --timing-steps 30 --runs right wrong stride4")
    right, wrong = asset["runs"]["right"], asset["runs"]["wrong"]
    for run in asset["runs"].values():
        assert run["steps"] == capstone.GRADED_STEPS and run["batch_size"] == 32 and run["test_images"] == 500
    assert right["model"] == "five_map" and right["default_boxes"] == 1534
    assert right["test_mAP"] >= 0.83 and right["train_seconds"] <= 200, right  # the graded budget's target
    assert right["test_mAP"] == right["test_mAP_library_detect"]  # the teacher's postprocess is detect's
    assert right["test_mAP"] - wrong["test_mAP"] >= 0.05, (right["test_mAP"], wrong["test_mAP"])
    timing = asset["step_time_ms"]  # the learner-style pieces, traced or not, cost little next to the network
    assert max(timing["learner"], timing["learner_tripwire"]) < 1.5 * timing["library"], timing


def test_the_lesson_prints_the_assets_numbers(asset):
    nb = nbformat.read(capstone.TEACHER_NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "describe_measurements()" in c.source)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(cell.source, {"capstone": capstone})
    text = printed.getvalue()
    assert asset["command"] in text
    for run in asset["runs"].values():
        assert f"{run['test_mAP']:.4f}" in text and f"{run['train_seconds']:.0f} s" in text
    cost = asset["runs"]["right"]["test_mAP"] - asset["runs"]["wrong"]["test_mAP"]
    assert f"the wrong piece costs {cost:.4f} mAP" in text
    assert f"library pieces {asset['step_time_ms']['library']:.0f} ms" in text
