"""Shared pieces of the tests that train or overfit the small model at 64 pixels on the CPU
(test_lab, test_debugging, test_train, test_checkpoint): the sizes, the batch and model fixtures,
and weight comparisons."""
from __future__ import annotations

import pytest
import torch

from ssd_lib.augment import SSDTransform
from ssd_lib.data import SHAPE_NAMES, ShapesDataset, collate
from ssd_lib.model import ssd_small
from ssd_lib.train import normalized_targets

SIZE = 64
CLASSES = list(SHAPE_NAMES)
NUM_CLASSES = len(CLASSES) + 1


@pytest.fixture(scope="module")
def batch():
    """8 Shapes images at 64 px (resized and normalised like the trainer's evaluation input)."""
    ds = ShapesDataset("train", size=8, image_size=SIZE, transforms=SSDTransform(size=SIZE))
    return collate([ds[i] for i in range(8)])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ssd_small(NUM_CLASSES, SIZE)


def targets_01(batch):
    """The batch's boxes in [0, 1] and labels, as the matcher takes them."""
    images, targets = batch
    return normalized_targets(targets, images.shape[-2:], torch.device("cpu"))


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ in {different[:5]}"
