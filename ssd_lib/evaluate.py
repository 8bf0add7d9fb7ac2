"""Run a detector over a dataset and score its detections (paper Sec. 3: VOC mAP@0.5; COCO AP).

Glue between :mod:`ssd_lib.model`, :mod:`ssd_lib.detect` and :mod:`ssd_lib.metrics`: images are
resized with :class:`ssd_lib.augment.SSDTransform`, detections are mapped back to the pixels of
each original image, and both VOC and (optionally) COCO metrics are computed on those. The loop over
the dataset is written once, in :func:`evaluate_predictor`, for anything that maps images to
detections: a PyTorch model (:func:`evaluate_model`) or an ONNX Runtime session
(``ssd_lib.export.OnnxDetector.evaluate``).

Usage::

    from ssd_lib.evaluate import evaluate_model
    result = evaluate_model(model, ShapesDataset("test"))
    print(result["mAP"], result["ap"])
"""
from __future__ import annotations

import numbers
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset

from .augment import SSDTransform
from .detect import NMS_THRESHOLD, PRE_NMS_TOP_K, SCORE_THRESHOLD, TOP_K, detect, scale_detections
from .metrics import evaluate_coco, evaluate_voc

__all__ = ["predict", "evaluate_model", "evaluate_predictor", "Predictor"]

Predictor = Callable[[list[Tensor]], list[dict[str, Tensor]]]
"""Images (a list of ``(3, H, W)`` in [0, 1]) -> one dict per image: ``boxes (D, 4)`` pixel xyxy of that
image, ``scores (D,)``, ``labels (D,)`` in 1..C, CPU tensors (what :func:`predict` returns)."""


@torch.no_grad()
def predict(model: nn.Module, images: list[torch.Tensor], score_threshold: float = SCORE_THRESHOLD,
            nms_threshold: float = NMS_THRESHOLD, top_k: int = TOP_K, device: torch.device | str | None = None,
            pre_nms_top_k: int = PRE_NMS_TOP_K, postprocess: Callable[..., list[dict]] = detect) -> list[dict]:
    """Detections in pixel xyxy of each original image. ``images``: list of (3, H, W) in [0, 1].

    ``postprocess(loc, logits, priors, score_threshold, nms_threshold, top_k, pre_nms_top_k)`` turns the
    network's outputs into per-image detections in [0, 1] coordinates, as :func:`ssd_lib.detect.detect` (the
    default) does; lesson 13 passes the learner's own decoding + NMS."""
    base = getattr(model, "module", model)
    device = torch.device(device) if device is not None else base.priors.device
    transform = SSDTransform(size=base.prior_config.image_size)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    batch = torch.stack([transform(img, empty)[0] for img in images]).to(device)
    was_training = base.training
    base.eval()
    loc, logits = base(batch)
    base.train(was_training)
    dets = postprocess(loc, logits, base.priors, score_threshold, nms_threshold, top_k, pre_nms_top_k)
    dets = scale_detections(dets, [tuple(img.shape[-2:]) for img in images])
    return [{k: v.cpu() for k, v in d.items()} for d in dets]


def evaluate_predictor(predict: Predictor, dataset: Dataset, batch_size: int = 32, coco: bool = False,
                       use_07_metric: bool = True, distributed: bool = False, progress: bool = False,
                       limit: int | None = None, return_detections: bool = False,
                       inclusive_areas: bool = False) -> dict:
    """VOC mAP@0.5 (and COCO AP when ``coco``) of the detections ``predict`` gives on ``dataset``.

    ``predict``: a :data:`Predictor`, called on batches of ``batch_size`` images of ``dataset``
    (items ``(image, target)`` without transform). ``limit``: only the first ``limit`` items.
    Returns :func:`ssd_lib.metrics.evaluate_voc`'s dict, with ``coco`` (:func:`ssd_lib.metrics.evaluate_coco`'s
    dict) when asked, and ``detections`` / ``ground_truths`` (lists in dataset order) with ``return_detections``.
    ``inclusive_areas``: :func:`ssd_lib.metrics.evaluate_voc`'s, only for a dataset whose boxes are inclusive
    pixel indices; ``ssd_lib``'s loaders give pixel edges, whose plain IoU already is the VOC devkit's.
    With ``distributed`` (under torchrun, a process group initialised), each rank predicts its share
    of the images, the detections are gathered to every rank, and every rank returns the same,
    complete result.
    """
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (images per forward pass); got {batch_size!r}")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed and dist.is_initialized() else (0, 1)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    indices = list(range(rank, n, world))
    detections, truths = [], []
    batches = range(0, len(indices), batch_size)
    if progress and rank == 0:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="evaluate", leave=False)
    for start in batches:  # a loop over batches: bounded memory
        items = [dataset[i] for i in indices[start:start + batch_size]]
        detections += predict([image for image, _ in items])
        truths += [target for _, target in items]
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, (indices, detections, truths))
        by_index = {i: (d, g) for idx, dets, gts in gathered for i, d, g in zip(idx, dets, gts)}
        detections = [by_index[i][0] for i in range(n)]
        truths = [by_index[i][1] for i in range(n)]
    class_names = list(getattr(dataset, "classes", [])) or None
    result = evaluate_voc(detections, truths, use_07_metric=use_07_metric, class_names=class_names,
                          num_classes=len(class_names) if class_names else None, inclusive_areas=inclusive_areas)
    if coco:
        result["coco"] = evaluate_coco(detections, truths, class_names=class_names)
    if return_detections:
        result["detections"], result["ground_truths"] = detections, truths
    return result


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset: Dataset, batch_size: int = 32, device: torch.device | str | None = None,
                   coco: bool = False, use_07_metric: bool = True, distributed: bool = False, progress: bool = False,
                   limit: int | None = None, return_detections: bool = False, inclusive_areas: bool = False,
                   **detect_kwargs) -> dict:
    """VOC mAP@0.5 (and COCO AP when ``coco``) of ``model`` on ``dataset`` (items without transform).

    :func:`evaluate_predictor` with :func:`predict` (``device`` and ``detect_kwargs``, e.g.
    ``score_threshold``, go to it). With ``distributed`` (under torchrun), each rank evaluates its
    share and every rank returns the complete result (the detections are gathered to all ranks).
    """
    def predict_batch(images: list[Tensor]) -> list[dict[str, Tensor]]:
        return predict(model, images, device=device, **detect_kwargs)

    return evaluate_predictor(predict_batch, dataset, batch_size=batch_size, coco=coco, use_07_metric=use_07_metric,
                              distributed=distributed, progress=progress, limit=limit,
                              return_detections=return_detections, inclusive_areas=inclusive_areas)
