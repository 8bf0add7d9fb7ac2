"""Do two inference paths agree, and how fast is each? Detections of one image paired whatever their
order (PyTorch vs ONNX Runtime, fp32 vs int8, raw vs decoded graph), and a throughput measurement
(the paper compares speed in Sec. 3.7, Table 7).

Usage::

    from ssd_lib.export.compare import compare_detections, images_per_second
    compare_detections(torch_dets, onnx_dets, sizes)["same"]              # True when every image agrees
    images_per_second(lambda: detector.run(batch), batch_size=len(batch))
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

__all__ = ["match_detections", "same_detections", "compare_detections", "images_per_second"]


def match_detections(det_a: dict[str, Tensor], det_b: dict[str, Tensor], size: tuple[int, int],
                     box_tol: float = 1e-3, score_tol: float = 1e-4) -> dict[str, Any]:
    """Pair the detections of one image from two paths, whatever their order.

    Two detections pair up when they have the same label, scores within ``score_tol`` and every box
    corner within ``box_tol`` of the image size (x by the width, y by the height; ``size = (H, W)``).
    Greedy in the order of ``det_a`` (not hot: at most a few hundred detections). Returns ``pairs``
    (list of (i, j)), ``only_a``, ``only_b`` (unpaired indices), and over the pairs ``max_box_error``
    (fraction of the image size) and ``max_score_error``.
    """
    height, width = size
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    boxes_a, boxes_b = det_a["boxes"].detach().cpu().double() / scale, det_b["boxes"].detach().cpu().double() / scale
    scores_a, scores_b = det_a["scores"].detach().cpu().double(), det_b["scores"].detach().cpu().double()
    labels_a, labels_b = det_a["labels"].detach().cpu(), det_b["labels"].detach().cpu()
    box_error = (boxes_a[:, None, :] - boxes_b[None, :, :]).abs().amax(dim=-1) if len(boxes_b) else \
        torch.zeros(len(boxes_a), 0, dtype=torch.float64)  # (A, B)
    score_error = (scores_a[:, None] - scores_b[None, :]).abs()
    close = (labels_a[:, None] == labels_b[None, :]) & (box_error <= box_tol) & (score_error <= score_tol)
    pairs, taken = [], torch.zeros(len(boxes_b), dtype=torch.bool)
    for i in range(len(boxes_a)):
        candidates = torch.nonzero(close[i] & ~taken).flatten()
        if len(candidates):
            j = int(candidates[box_error[i, candidates].argmin()])
            taken[j] = True
            pairs.append((i, j))
    paired_a = {i for i, _ in pairs}
    return {
        "pairs": pairs,
        "only_a": [i for i in range(len(boxes_a)) if i not in paired_a],
        "only_b": torch.nonzero(~taken).flatten().tolist(),
        "max_box_error": max((float(box_error[i, j]) for i, j in pairs), default=0.0),
        "max_score_error": max((float(score_error[i, j]) for i, j in pairs), default=0.0),
    }


def same_detections(det_a: dict[str, Tensor], det_b: dict[str, Tensor], size: tuple[int, int],
                    box_tol: float = 1e-3, score_tol: float = 1e-4) -> bool:
    """True when the detections of one image agree one to one (see :func:`match_detections`); the
    order does not matter (two nearly equal scores may come out in either order)."""
    if len(det_a["scores"]) != len(det_b["scores"]):
        return False
    matched = match_detections(det_a, det_b, size, box_tol, score_tol)
    return not matched["only_a"] and not matched["only_b"]


def compare_detections(dets_a: Sequence[dict], dets_b: Sequence[dict], sizes: Sequence[tuple[int, int]],
                       box_tol: float = 1e-3, score_tol: float = 1e-4) -> dict[str, Any]:
    """:func:`match_detections` over many images: ``images``, ``detections_a``/``_b``, ``unmatched``
    (detections without a partner, both sides), ``images_differing`` (indices), ``max_box_error``,
    ``max_score_error``, and ``same`` (every image agrees)."""
    if not len(dets_a) == len(dets_b) == len(sizes):
        raise ValueError(f"got {len(dets_a)} and {len(dets_b)} detection lists for {len(sizes)} images")
    differing, unmatched, box_err, score_err = [], 0, 0.0, 0.0
    for index, (a, b, size) in enumerate(zip(dets_a, dets_b, sizes)):
        matched = match_detections(a, b, size, box_tol, score_tol)
        if matched["only_a"] or matched["only_b"]:
            differing.append(index)
        unmatched += len(matched["only_a"]) + len(matched["only_b"])
        box_err, score_err = max(box_err, matched["max_box_error"]), max(score_err, matched["max_score_error"])
    return {"images": len(sizes), "detections_a": sum(len(d["scores"]) for d in dets_a),
            "detections_b": sum(len(d["scores"]) for d in dets_b), "unmatched": unmatched,
            "images_differing": differing, "max_box_error": box_err, "max_score_error": score_err,
            "same": not differing}


def images_per_second(run: Callable[[], Any], batch_size: int, repeats: int = 5, warmup: int = 1,
                      clock: Callable[[], float] = time.perf_counter) -> float:
    """Throughput of ``run()`` (which processes one batch of ``batch_size`` images): ``warmup`` untimed
    calls, then the median of ``repeats`` timed ones (the median shrugs off a neighbour's burst).
    ``clock=time.process_time`` counts this process's CPU seconds instead of wall-clock seconds: on a
    shared machine a neighbour delays a long call more than a short one, while CPU time is the work done."""
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        start = clock()
        run()
        seconds.append(clock() - start)
    return batch_size / max(statistics.median(seconds), 1e-9)
