"""Case 3: full SSD300 inference, forward + post-processing, on 300x300 tensors.

Ours: ``ssd300_vgg16`` holding torchvision's weights (``load_torchvision_ssd300``), then ``detect``.
Theirs: ``backbone`` + ``head`` + ``postprocess_detections``, the calls ``SSD.forward`` makes in eval
mode. torchvision's ``GeneralizedRCNNTransform`` (resize + normalise) is left out for both: the
images are already 300x300 and neither side normalises them. Default boxes: ours, and torchvision's
anchor generator set to the same boxes, both computed once outside the timing.

Each timed call is split into laps, so one run gives the forward-only time (target: ours within 5%,
speed-up >= 0.95) and the end-to-end time (images/s). Check (in float32): raw outputs equal to 1e-4,
detections identical. With ``amp`` (CUDA default) the timed calls use bf16 autocast and
channels_last on both sides; torchvision's head outputs are cast to float32 before its
post-processing (ours casts inside ``detect``).

Usage::

    rows = run(Settings(torch.device("cpu"), quick=True))
"""
from __future__ import annotations

import torch

from ssd_lib.detect import detect, scale_detections

from .checks import check_close, check_detections
from .inputs import priors_to_pixels, random_images
from .row import Row, Settings, finish_row, run_check
from .timing import Laps, measure_pair
from .torchvision_side import head_forward, model_pair, postprocess, torchvision_anchors

__all__ = ["run", "batches", "FORWARD_TARGET"]

NUM_CLASSES = 21
FORWARD_TARGET = 0.95  # "within 5%": ours may be at most 5% slower


def batches(settings: Settings) -> tuple[int, ...]:
    """CPU: 1 and 32 (quick: 1 and 8); CUDA adds 64."""
    if settings.device.type == "cuda":
        return (1, 64) if settings.quick else (1, 32, 64)
    return (1, 8) if settings.quick else (1, 32)


def _repeats(settings: Settings, batch: int) -> tuple[int, int]:
    """(warmup, repeats). The check's calls are a float32 warm-up; amp changes the kernels, so warm up again."""
    if settings.device.type == "cuda":
        return (3, 5) if settings.quick else (5, 30)
    if settings.quick:
        return (int(settings.amp), 2)
    return (1, 5) if batch == 1 else (int(settings.amp), 3)


def _check(ours_model, theirs_model, images, anchors, size: int) -> str:
    with torch.inference_mode():
        loc, logits = ours_model(images)
        head = head_forward(theirs_model, images)
        parts = [check_close("loc", loc, head["bbox_regression"], atol=1e-4),
                 check_close("logits", logits, head["cls_logits"], atol=1e-4)]
        ours_dets = scale_detections(detect(loc, logits, ours_model.priors), [(size, size)] * images.shape[0])
        parts.append(check_detections(ours_dets, postprocess(theirs_model, head, anchors, size)))
    return "; ".join(parts)


def run_batch(settings: Settings, batch: int, models=None) -> list[Row]:
    device = settings.device
    ours_model, theirs_model = models or model_pair(NUM_CLASSES, seed=settings.seed)
    ours_model, theirs_model = ours_model.eval().to(device), theirs_model.eval().to(device)
    cfg = ours_model.prior_config
    size = cfg.image_size
    images = random_images(batch, size, seed=settings.seed + 2).to(device)
    anchors = torchvision_anchors(theirs_model, cfg, batch, device)
    anchors_match = check_close("anchors (px)", anchors[0], priors_to_pixels(ours_model.priors, size), atol=1e-3)
    check = run_check(lambda: f"{anchors_match}; " + _check(ours_model, theirs_model, images, anchors, size))

    images = images.contiguous(memory_format=settings.memory_format)
    ours_model.to(memory_format=settings.memory_format)
    theirs_model.to(memory_format=settings.memory_format)

    def ours():
        laps = Laps(device)
        with torch.inference_mode():
            with settings.autocast():
                loc, logits = ours_model(images)
            laps.mark("forward")
            detect(loc, logits, ours_model.priors)
        laps.mark("end_to_end")
        return laps

    def theirs():
        laps = Laps(device)
        with torch.inference_mode():
            with settings.autocast():
                head = head_forward(theirs_model, images)
            laps.mark("forward")
            if settings.amp:
                head = {name: t.float() for name, t in head.items()}
            postprocess(theirs_model, head, anchors, size)
        laps.mark("end_to_end")
        return laps

    warmup, repeats = _repeats(settings, batch)
    ours_t, theirs_t = measure_pair(ours, theirs, device, warmup, repeats)
    amp = ", bf16 + channels_last" if settings.amp else ""
    forward = Row(f"3 forward only (B={batch}{amp})", ours_t, theirs_t, target=FORWARD_TARGET, check=check,
                  segment="forward")
    end_to_end = Row(f"3 forward + post-processing (B={batch}{amp})", ours_t, theirs_t, check=check,
                     segment="end_to_end")
    for row in (forward, end_to_end):
        rates = {side: batch / t.median(row.segment) for side, t in (("ours", ours_t), ("theirs", theirs_t))}
        row.extra["images_per_s"] = rates
        row.notes.append(f"ours {rates['ours']:.2f} img/s, torchvision {rates['theirs']:.2f} img/s")
    end_to_end.notes.append("no resize/normalise on either side (GeneralizedRCNNTransform excluded)")
    if settings.amp:
        end_to_end.notes.append("torchvision's bf16 head outputs cast to float32 before its post-processing")
    finish_row(forward, settings, ours, theirs)
    return [forward, end_to_end]


def run(settings: Settings) -> list[Row]:
    models = model_pair(NUM_CLASSES, seed=settings.seed)
    return [row for batch in batches(settings) for row in run_batch(settings, batch, models)]
