"""The model that ships with the course and its card (assets/): the card describes this file and
its numbers are re-measured here, so neither can go stale."""
from __future__ import annotations

import json

import pytest

from ssd_lib.course.model_card import ASSET_PATH, CARD_PATH, evaluate_shipped, sha256

MAX_BYTES = 20 * 1024 * 1024  # the course's limit for a shipped model


@pytest.fixture(scope="module")
def card() -> dict:
    assert ASSET_PATH.is_file(), f"{ASSET_PATH} is missing: run `python -m ssd_lib main` then `python -m ssd_lib.course.model_card results/main`"
    assert CARD_PATH.is_file(), f"{CARD_PATH} is missing: run `python -m ssd_lib.course.model_card results/main`"
    return json.loads(CARD_PATH.read_text())


def test_card_describes_this_file(card):
    assert ASSET_PATH.stat().st_size <= MAX_BYTES
    assert card["sha256"] == sha256(ASSET_PATH), "the model file changed after its card was written; re-run ssd_lib.course.model_card"
    assert card["size_bytes"] == ASSET_PATH.stat().st_size


def test_card_architecture_is_the_shipped_configuration(card):
    from ssd_lib.course.model_card import _architecture
    from ssd_lib.checkpoint import model_from_checkpoint

    model, ckpt = model_from_checkpoint(ASSET_PATH)
    assert card["architecture"] == _architecture(ckpt["model_config"])
    assert f"{len(model.priors)} default boxes" in card["architecture"]
    assert card["parameters"] == sum(p.numel() for p in model.parameters())


def test_card_records_how_the_model_was_made(card):
    assert card["trained_by"].startswith("python -m ssd_lib main")
    assert card["training_minutes"] > 0 and card["total_minutes"] >= card["training_minutes"]
    assert card["machine"]["cpu_model"] and card["machine"]["cpu_cores"] >= 1 and card["date"]
    assert 0.0 < card["test_split"]["voc_mAP50"] <= 1.0 and 0.0 < card["test_split"]["coco"]["AP"] <= 1.0


def test_shipped_model_measures_what_its_card_says(card):
    check = card["card_check"]
    measured = evaluate_shipped(limit=check["images"])["mAP"]
    assert abs(measured - check["voc_mAP50"]) <= check["tolerance"], (
        f"the shipped model measures {measured:.4f} on the first {check['images']} test images; its card says "
        f"{check['voc_mAP50']:.4f}")
