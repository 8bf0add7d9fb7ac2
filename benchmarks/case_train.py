"""Case 4: one SSD300 training step (batch 32; CPU --quick: batch 8), same weights, same images and boxes.

Ours: forward, ``match_batch`` (no grad), ``MultiBoxLoss``, backward, SGD step (``ssd_lib.train``'s
recipe). Theirs: torchvision's model in train mode, ``model(images_list, targets)`` -> loss dict, sum,
backward, SGD step. Its transform is replaced by a no-op ``GeneralizedRCNNTransform`` (mean 0, std 1,
fixed 300x300, ``_skip_resize``): we chose this over calling backbone/head/compute_loss by hand so
that torchvision runs its own ``SSD.forward``; what remains of the transform (subtracting 0,
dividing by 1, copying the images into a batch) is torchvision's cost and is timed. Its anchor
generator lays out our default boxes. Both use SGD(lr 1e-3, momentum 0.9, weight decay 5e-4).

Check (first step, float32): total loss and both parts within 1e-3 relative, and the global gradient
norm within 1e-3 relative (the same gradients, not just the same loss). Target: faster than torchvision.

Usage::

    rows = run(Settings(torch.device("cpu"), quick=True))
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from ssd_lib.loss import MultiBoxLoss
from ssd_lib.matching import match_batch

from .checks import check_relative
from .inputs import random_ground_truth, random_images
from .row import Row, Settings, finish_row, run_check
from .timing import measure_pair
from .torchvision_side import model_pair

__all__ = ["run", "batch_size", "TARGET"]

NUM_CLASSES = 21
TARGET = 1.0


def batch_size(settings: Settings) -> int:
    return 8 if settings.quick and settings.device.type == "cpu" else 32


def _sgd(model: torch.nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)


def grad_norm(model: torch.nn.Module) -> float:
    """Global L2 norm of the gradients left by the last backward."""
    return float(torch.linalg.vector_norm(torch.stack([p.grad.float().norm() for p in model.parameters()
                                                        if p.grad is not None])))


def make_steps(settings: Settings, ours_model, theirs_model, images, gt, amp: bool):
    """The two timed training steps; each returns its loss parts (ours: LossParts, theirs: dict)."""
    ours_opt, theirs_opt, criterion = _sgd(ours_model), _sgd(theirs_model), MultiBoxLoss()
    images_list, targets = list(images.unbind(0)), gt.torchvision_targets()

    def autocast():
        return settings.autocast() if amp else nullcontext()

    def ours():
        with torch.no_grad():
            loc_targets, labels = match_batch(gt.boxes, gt.labels, ours_model.priors)
        with autocast():
            loc, logits = ours_model(images)
        parts = criterion(loc.float(), logits, loc_targets, labels)
        ours_opt.zero_grad(set_to_none=True)
        parts.total.backward()
        ours_opt.step()
        return parts

    def theirs():
        with autocast():
            losses = theirs_model(images_list, targets)
        total = sum(losses.values())
        theirs_opt.zero_grad(set_to_none=True)
        total.backward()
        theirs_opt.step()
        return losses

    return ours, theirs


def _check(ours_step, theirs_step, ours_model, theirs_model) -> str:
    ours, theirs = ours_step(), theirs_step()
    theirs_loc, theirs_conf = float(theirs["bbox_regression"].detach()), float(theirs["classification"].detach())
    return "; ".join([
        check_relative("loss", float(ours.total.detach()), theirs_loc + theirs_conf, 1e-3),
        check_relative("loc", float(ours.loc.detach()), theirs_loc, 1e-3),
        check_relative("conf", float(ours.conf.detach()), theirs_conf, 1e-3),
        check_relative("grad norm", grad_norm(ours_model), grad_norm(theirs_model), 1e-3),
    ])


def run(settings: Settings) -> list[Row]:
    device, batch = settings.device, batch_size(settings)
    ours_model, theirs_model = model_pair(NUM_CLASSES, seed=settings.seed)
    fmt = settings.memory_format
    ours_model = ours_model.train().to(device, memory_format=fmt)
    theirs_model = theirs_model.train().to(device, memory_format=fmt)
    size = ours_model.prior_config.image_size
    images = random_images(batch, size, seed=settings.seed + 2).to(device).contiguous(memory_format=fmt)
    gt = random_ground_truth(batch, size, num_classes=NUM_CLASSES, seed=settings.seed).to(device)

    ours, theirs = make_steps(settings, ours_model, theirs_model, images, gt, amp=False)
    check = run_check(lambda: _check(ours, theirs, ours_model, theirs_model))  # also the float32 warm-up
    notes = []
    if settings.amp:
        ours, theirs = make_steps(settings, ours_model, theirs_model, images, gt, amp=True)
        try:
            theirs()
        except Exception as error:  # "where it works": fall back to float32 for torchvision only
            _, theirs = make_steps(settings, ours_model, theirs_model, images, gt, amp=False)
            notes.append(f"torchvision in float32: bf16 autocast failed ({type(error).__name__}: {error})")
    if device.type == "cuda":
        warmup, repeats = (2, 5) if settings.quick else (3, 20)
    else:
        warmup, repeats = (int(settings.amp), 1) if settings.quick else (int(settings.amp), 3)
    ours_t, theirs_t = measure_pair(ours, theirs, device, warmup, repeats)
    amp = ", bf16 + channels_last" if settings.amp else ""
    quick = " (--quick: batch 8 on CPU)" if batch != 32 else ""
    row = Row(f"4 training step (B={batch}{amp}){quick}", ours_t, theirs_t, target=TARGET, check=check, notes=notes)
    rates = {"ours": batch / ours_t.median(), "theirs": batch / theirs_t.median()}
    row.extra["images_per_s"] = rates
    row.notes.append(f"ours {rates['ours']:.2f} img/s, torchvision {rates['theirs']:.2f} img/s")
    row.notes.append("torchvision via model(images, targets) with a no-op transform and our default boxes")
    return [finish_row(row, settings, ours, theirs)]
