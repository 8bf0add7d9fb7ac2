"""Case 2: post-processing of a batch (B=32, 8732 default boxes, C=21): decode, softmax, per-class
top-400, score > 0.01, NMS 0.45, 200 per image.

Ours: ``ssd_lib.detect.detect`` (one ``batched_nms`` for the batch). Theirs:
``SSD.postprocess_detections`` (a loop over images and classes). Same random ``loc``/``logits`` and
the same default boxes; image size 300. Two kinds of logits (N(0, 2^2)): 2a an untrained network's,
where every class fills its 400 candidates (NMS-heavy); 2b with the background logit raised by 10,
closer to a trained network (~200 candidates per class). ``--quick`` runs 2a only.

Check: per image the same count and labels, scores to 1e-6, boxes to 1e-3 px after sorting (ours
are normalised and scaled by 300 for the comparison, outside the timing).

Usage::

    rows = run(Settings(torch.device("cpu"), quick=True))
"""
from __future__ import annotations

from ssd_lib.detect import detect, scale_detections
from ssd_lib.priors import PriorConfig, default_boxes

from .checks import check_detections
from .inputs import priors_to_pixels, random_head_outputs
from .row import Row, Settings, finish_row, run_check
from .timing import measure_pair
from .torchvision_side import postprocess, torchvision_ssd_algorithms

__all__ = ["run", "run_regime", "REGIMES", "BATCH", "NUM_CLASSES", "TARGET"]

BATCH, NUM_CLASSES = 32, 21
TARGET = {"cpu": 3.0, "cuda": 3.0}
REGIMES = (("2a", "untrained logits", 0.0), ("2b", "background +10", 10.0))  # (label, name, background offset)


def run(settings: Settings) -> list[Row]:
    """Both kinds of logits; --quick runs 2a only (the heavier)."""
    regimes = REGIMES[:1] if settings.quick else REGIMES
    return [run_regime(settings, label, name, offset) for label, name, offset in regimes]


def run_regime(settings: Settings, label: str, name: str, background_offset: float) -> Row:
    device, cfg = settings.device, PriorConfig.ssd300()
    size = cfg.image_size
    priors = default_boxes(cfg, device=device)
    loc, logits = random_head_outputs(BATCH, cfg.num_priors, NUM_CLASSES, seed=settings.seed + 1,
                                      background_offset=background_offset)
    loc, logits = loc.to(device), logits.to(device)
    anchors = [priors_to_pixels(priors, size)] * BATCH
    head_outputs = {"bbox_regression": loc, "cls_logits": logits}
    theirs_model = torchvision_ssd_algorithms(NUM_CLASSES, cfg).to(device)

    def ours():
        return detect(loc, logits, priors)

    def theirs():
        return postprocess(theirs_model, head_outputs, anchors, size)

    check = run_check(lambda: check_detections(scale_detections(ours(), [(size, size)] * BATCH), theirs()))
    warmup, repeats = (0, 1) if settings.quick else (2, 11)  # the check's calls warm up too
    ours_t, theirs_t = measure_pair(ours, theirs, device, warmup, repeats)
    row = Row(f"{label} post-processing, {name} (B={BATCH}, C={NUM_CLASSES})", ours_t, theirs_t,
              target=TARGET[device.type], check=check)
    return finish_row(row, settings, ours, theirs)
