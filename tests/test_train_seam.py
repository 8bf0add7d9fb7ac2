"""The trainer's and the evaluator's seam: targets, loss and post-processing are arguments with the library's as
defaults (lesson 13 trains and evaluates with the learner's own pieces). Independent pieces that compute the same
thing train the same; a wrong piece changes the run; a piece with the wrong output shape is a one-line error."""
from __future__ import annotations

import math

import pytest
import torch

from ssd_lib.boxes import encode
from ssd_lib.data import SHAPE_NAMES, ShapesDataset
from ssd_lib.detect import detect
from ssd_lib.evaluate import evaluate_model
from ssd_lib.loss import MultiBoxLoss
from ssd_lib.matching import match
from ssd_lib.model import ssd_small
from ssd_lib.train import TrainConfig, train

SIZE, STEPS = 64, 3


def _run(**pieces):
    config = TrainConfig.small_cpu(batch_size=4, max_steps_per_epoch=STEPS, log_every=1, amp=False,
                                   channels_last=False, cpu_threads=1, seed=0)
    torch.manual_seed(0)
    model = ssd_small(len(SHAPE_NAMES) + 1, SIZE)
    result = train(model, ShapesDataset("train", size=4 * STEPS, image_size=SIZE), config=config, progress=False,
                   **pieces)
    return result


def per_image_targets(gt_boxes, gt_labels, priors, variances=(0.1, 0.2)):
    """A learner's way: match each image on its own (the per-image `match`), then encode (Eq. 2)."""
    loc, labels = [], []
    for boxes, classes in zip(gt_boxes, gt_labels):
        matched, lab = match(boxes, classes, priors)
        loc.append(torch.where((lab > 0)[:, None], encode(matched, priors, variances), torch.zeros_like(priors)))
        labels.append(lab)
    return torch.stack(loc), torch.stack(labels)


@pytest.fixture(scope="module")
def library_run():
    return _run()


def test_pieces_that_compute_the_same_train_the_same(library_run):
    expected = [r["loss"] for r in library_run.steps]
    mine = _run(targets=per_image_targets, loss=lambda *args: MultiBoxLoss()(*args).total)
    assert [r["loss"] for r in mine.steps] == pytest.approx(expected, rel=1e-4)
    # A loss that returns only its total: the parts are unknown, not invented.
    assert all(math.isnan(r["loc"]) and math.isnan(r["conf"]) for r in mine.steps)
    assert all(math.isfinite(r["loc"]) for r in library_run.steps)


def test_a_wrong_piece_changes_the_run(library_run):
    variances_dropped = _run(targets=lambda b, l, p: per_image_targets(b, l, p, variances=(1.0, 1.0)))
    first = [r["loss"] for r in library_run.steps][0]
    assert variances_dropped.steps[0]["loss"] != pytest.approx(first, rel=1e-3)


def test_a_targets_function_with_the_wrong_shape_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"the targets function must return loc_targets \(4, \d+, 4\)"):
        _run(targets=lambda b, l, p: tuple(t[0] for t in per_image_targets(b, l, p)))  # one image's, not stacked
    with pytest.raises(ValueError, match="must return two tensors"):
        _run(targets=lambda b, l, p: per_image_targets(b, l, p)[0])
    with pytest.raises(TypeError, match="scalar tensor or LossParts"):
        _run(loss=lambda *args: MultiBoxLoss()(*args).total.reshape(1))


def test_evaluation_takes_the_post_processing_as_an_argument(library_run):
    model, test = library_run.model, ShapesDataset("test", size=8, image_size=SIZE)
    default = evaluate_model(model, test, return_detections=True)
    same = evaluate_model(model, test, return_detections=True, postprocess=detect)
    assert same["mAP"] == default["mAP"]
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(same["detections"], default["detections"]))

    def variances_dropped(loc, logits, priors, *settings):
        return detect(loc * torch.tensor([10.0, 10.0, 5.0, 5.0]), logits, priors, *settings)

    moved = evaluate_model(model, test, return_detections=True, postprocess=variances_dropped)
    assert any(not torch.equal(a["boxes"], b["boxes"]) for a, b in zip(moved["detections"], default["detections"])
               if len(a["boxes"]) and len(a["boxes"]) == len(b["boxes"])) or moved["mAP"] != default["mAP"]
