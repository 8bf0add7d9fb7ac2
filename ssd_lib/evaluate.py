"""Run a model over a dataset and score its detections (paper Sec. 3: VOC mAP@0.5; COCO AP).

Glue between :mod:`ssd_lib.model`, :mod:`ssd_lib.detect` and :mod:`ssd_lib.metrics`: images are
resized with :class:`ssd_lib.augment.SSDTransform`, detections are mapped back to the pixels of
each original image, and both VOC and (optionally) COCO metrics are computed on those.

Usage::

    from ssd_lib.evaluate import evaluate_model
    result = evaluate_model(model, ShapesDataset("test"))
    print(result["mAP"], result["ap"])
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from .augment import SSDTransform
from .detect import detect, scale_detections
from .metrics import evaluate_coco, evaluate_voc

__all__ = ["predict", "evaluate_model"]


@torch.no_grad()
def predict(model: nn.Module, images: list[torch.Tensor], score_threshold: float = 0.01, nms_threshold: float = 0.45,
            top_k: int = 200, device: torch.device | str | None = None) -> list[dict]:
    """Detections in pixel xyxy of each original image. ``images``: list of (3, H, W) in [0, 1]."""
    base = getattr(model, "module", model)
    device = torch.device(device) if device is not None else base.priors.device
    transform = SSDTransform(size=base.prior_config.image_size)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    batch = torch.stack([transform(img, empty)[0] for img in images]).to(device)
    was_training = base.training
    base.eval()
    loc, logits = base(batch)
    base.train(was_training)
    dets = detect(loc, logits, base.priors, score_threshold, nms_threshold, top_k)
    dets = scale_detections(dets, [tuple(img.shape[-2:]) for img in images])
    return [{k: v.cpu() for k, v in d.items()} for d in dets]


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset: Dataset, batch_size: int = 32, device: torch.device | str | None = None,
                   coco: bool = False, use_07_metric: bool = True, distributed: bool = False, progress: bool = False,
                   limit: int | None = None, return_detections: bool = False, **detect_kwargs) -> dict | None:
    """VOC mAP@0.5 (and COCO AP when ``coco``) of ``model`` on ``dataset`` (items without transform).

    With ``distributed`` (under torchrun), each rank evaluates its share and rank 0 gathers all
    detections and returns the result; other ranks return None.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed and dist.is_initialized() else (0, 1)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    indices = list(range(rank, n, world))
    detections, truths = [], []
    batches = range(0, len(indices), batch_size)
    if progress and rank == 0:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="evaluate", leave=False)
    for start in batches:
        items = [dataset[i] for i in indices[start:start + batch_size]]
        detections += predict(model, [img for img, _ in items], device=device, **detect_kwargs)
        truths += [t for _, t in items]
    if world > 1:
        gathered = [None] * world if rank == 0 else None
        dist.gather_object((indices, detections, truths), gathered, dst=0)
        if rank != 0:
            return None
        order = {}
        for idx, dets, gts in gathered:
            for i, d, g in zip(idx, dets, gts):
                order[i] = (d, g)
        detections = [order[i][0] for i in sorted(order)]
        truths = [order[i][1] for i in sorted(order)]
    class_names = list(getattr(dataset, "classes", [])) or None
    result = evaluate_voc(detections, truths, use_07_metric=use_07_metric, class_names=class_names,
                          num_classes=len(class_names) if class_names else None)
    if coco:
        result["coco"] = evaluate_coco(detections, truths, class_names=class_names)
    if return_detections:
        result["detections"], result["ground_truths"] = detections, truths
    return result
