"""Did both sides compute the same thing? Each check returns a one-line summary or raises :class:`Mismatch`.

A speed-up is only reported for a case whose check passed; otherwise its row says MISMATCH.

Usage::

    summary = check_detections(ours_px, theirs)         # "32 images, 6400 detections identical"
    summary = check_relative("loss", 12.31, 12.31, rtol=1e-3)
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Mismatch", "check_relative", "check_close", "check_detections", "sort_detections"]


class Mismatch(Exception):
    """Ours and torchvision's results differ beyond the stated tolerance."""


def check_relative(name: str, ours: float, theirs: float, rtol: float) -> str:
    """``|ours - theirs| <= rtol * max(|theirs|, tiny)``."""
    error = abs(ours - theirs) / max(abs(theirs), 1e-12)
    if not error <= rtol:  # also catches NaN
        raise Mismatch(f"{name}: ours {ours:.6g} vs torchvision {theirs:.6g} (relative error {error:.2e} > {rtol:g})")
    return f"{name} {ours:.6g} vs {theirs:.6g} (rel. err. {error:.1e})"


def check_close(name: str, ours: Tensor, theirs: Tensor, atol: float, rtol: float = 0.0) -> str:
    """Same shape and ``|ours - theirs| <= atol + rtol * |theirs|`` everywhere (compared in float32)."""
    if ours.shape != theirs.shape:
        raise Mismatch(f"{name}: shapes differ, ours {tuple(ours.shape)} vs torchvision {tuple(theirs.shape)}")
    ours, theirs = ours.float(), theirs.float()
    excess = ((ours - theirs).abs() - rtol * theirs.abs()).max().item() if ours.numel() else 0.0
    if not excess <= atol:
        raise Mismatch(f"{name}: differs by {excess:.2e} beyond rtol {rtol:g} (atol {atol:g})")
    return f"{name} agree to {atol:g}"


def sort_detections(det: dict[str, Tensor]) -> dict[str, Tensor]:
    """One image's detections in a canonical order: score descending, then label, then box corners."""
    keys = [det["boxes"][:, i] for i in (3, 2, 1, 0)] + [det["labels"].double(), -det["scores"].double()]
    order = torch.arange(det["scores"].numel(), device=det["scores"].device)
    for key in keys:  # least significant first; stable sorts compose into a lexicographic order
        order = order[torch.sort(key[order], stable=True).indices]
    return {k: v[order] for k, v in det.items()}


def check_detections(ours: list[dict[str, Tensor]], theirs: list[dict[str, Tensor]],
                     score_atol: float = 1e-6, box_atol: float = 1e-3) -> str:
    """Per image: the same number of detections, the same labels, scores to ``score_atol``, boxes to
    ``box_atol`` (both in pixels) after :func:`sort_detections`."""
    if len(ours) != len(theirs):
        raise Mismatch(f"detections for {len(ours)} images vs torchvision's {len(theirs)}")
    total = 0
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a["scores"].numel() != b["scores"].numel():
            raise Mismatch(f"image {i}: {a['scores'].numel()} detections vs torchvision's {b['scores'].numel()}")
        a, b = sort_detections(a), sort_detections(b)
        if not torch.equal(a["labels"].cpu(), b["labels"].cpu()):
            raise Mismatch(f"image {i}: labels differ after sorting by score")
        check_close(f"image {i} scores", a["scores"], b["scores"], atol=score_atol)
        check_close(f"image {i} boxes (px)", a["boxes"], b["boxes"], atol=box_atol)
        total += a["scores"].numel()
    return f"{len(ours)} images, {total} detections identical (scores {score_atol:g}, boxes {box_atol:g} px)"
