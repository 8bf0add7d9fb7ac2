"""What enters a training step: the data order and the augmentation, seeded by (seed, epoch, index) so
that a resumed run sees the same batches, and the one check of a batch, on the CPU, before it moves to
the device (:func:`check_targets`); :func:`batch_targets` turns the checked targets into the loss's.

Usage::

    from ssd_lib.train import batch_targets
    images, targets = collate([dataset[i] for i in range(8)])
    loc_targets, labels = batch_targets(targets, images.shape[-2:], model.priors, model.num_classes)
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ..matching import match_batch

__all__ = ["SeededAugmented", "EpochSampler", "normalized_targets", "check_targets", "batch_targets",
           "library_targets"]


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


class SeededAugmented(Dataset):
    """Wraps a dataset so that item ``epoch * N + i`` is image i augmented with a generator seeded
    by (seed, epoch, i): augmentations are the same whichever worker or resume point loads them."""

    def __init__(self, dataset: Dataset, transform: Callable, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, global_index: int):
        epoch, index = divmod(global_index, len(self.dataset))
        image, target = self.dataset[index]
        gen = torch.Generator().manual_seed(_sample_seed(self.seed, epoch, index))
        return self.transform(image, target, generator=gen)


class EpochSampler(Sampler[int]):
    """Shuffled order for one epoch, seeded by (seed, epoch); sharded across ranks like
    ``DistributedSampler`` (padding by repetition); ``start`` skips the batches already done."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        order = torch.randperm(self.n, generator=gen).tolist()
        per_rank = math.ceil(self.n / self.world_size)
        order += order[: per_rank * self.world_size - self.n]
        return order[self.rank::self.world_size]

    def __iter__(self):
        offset = self.epoch * self.n
        return iter([offset + i for i in self._order()[self.start:]])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size) - self.start


def normalized_targets(targets: list[dict], image_size: tuple[int, int], device: torch.device):
    """Pixel xyxy boxes of a batch to [0, 1] (what the matcher takes), moved to ``device``.
    ``image_size = (height, width)`` of the (resized) input."""
    h, w = image_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes = [(t["boxes"].float() / scale).to(device, non_blocking=True) for t in targets]
    labels = [t["labels"].to(device, non_blocking=True) for t in targets]
    return boxes, labels


def check_targets(targets: list[dict], num_classes: int) -> None:
    """The one check of a batch, where it enters the trainer: on the CPU, before it moves to the device.

    Each target needs ``boxes (G, 4)`` finite pixel xyxy with positive width and height and
    ``labels (G,)`` int64 in 1..num_classes-1 (``num_classes`` counts background). Raises one
    ValueError naming the image and the fix. Past this point the matcher and the loss skip their
    own checks (``match_batch(validate=False)``, ``MultiBoxLoss(check_labels=False)``), which would
    read values back from the device for every image of every step.
    """
    for i, t in enumerate(targets):
        boxes, labels = t["boxes"], t["labels"]
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"image {i} of the batch has boxes of shape {tuple(boxes.shape)}; a target needs "
                             "boxes (G, 4) in pixel xyxy (an image without objects: shape (0, 4))")
        if labels.dtype != torch.long or labels.shape != (boxes.shape[0],):
            raise ValueError(f"image {i} of the batch has labels of dtype {labels.dtype} and shape {tuple(labels.shape)}; "
                             f"a target needs one int64 label per box, shape ({boxes.shape[0]},): build them with "
                             "torch.as_tensor(labels, dtype=torch.long)")
    if not targets:
        return
    # One vectorised test for the whole batch; the loop below runs only to name a bad image.
    boxes, labels = torch.cat([t["boxes"] for t in targets]), torch.cat([t["labels"] for t in targets])
    bad = ~torch.isfinite(boxes).all(1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if not (bad.any() or (labels < 1).any() or (labels >= num_classes).any()):
        return
    for i, t in enumerate(targets):
        boxes, labels = t["boxes"], t["labels"]
        if not torch.isfinite(boxes).all():
            raise ValueError(f"image {i} of the batch has a box with NaN or infinite coordinates: fix or drop it in the dataset")
        flat = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if flat.any():
            raise ValueError(
                f"image {i} of the batch has a box without area ({boxes[flat][0].tolist()}, pixel xyxy): its offsets "
                "would be log(0) and the loss NaN. Drop degenerate boxes; convert (x, y, w, h) boxes to xyxy first")
        if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"image {i} of the batch has labels {labels.tolist()} but the model has num_classes={num_classes} "
                f"(background included), so labels must be in 1..{num_classes - 1}; label 0 is background: "
                "if your labels start at 0, add 1")


def library_targets(gt_boxes: list[Tensor], gt_labels: list[Tensor], priors: Tensor) -> tuple[Tensor, Tensor]:
    """The library's targets for checked objects: :func:`ssd_lib.matching.match_batch` (matching, Sec. 2.2,
    and encoding, Eq. 2) without its own checks, which :func:`check_targets` has done."""
    return match_batch(gt_boxes, gt_labels, priors, validate=False)


def batch_targets(targets: list[dict], image_size: tuple[int, int], priors: Tensor, num_classes: int,
                  assign: Callable[[list[Tensor], list[Tensor], Tensor], tuple[Tensor, Tensor]] = library_targets):
    """A CPU batch's targets for the loss: checked once (:func:`check_targets`), scaled to [0, 1], moved
    to the device of ``priors (P, 4)`` and given to ``assign(gt_boxes, gt_labels, priors)``: B tensors
    ``(G_b, 4)`` xyxy in [0, 1], B tensors ``(G_b,)`` in 1..C-1, the model's default boxes ``(P, 4)`` cx, cy, w, h
    -> ``loc_targets (B, P, 4)`` (encoded offsets) and ``labels (B, P)`` int64, 0 = background. The default is
    the library's (:func:`library_targets`); lesson 13 plugs in the learner's own matching and encoding."""
    check_targets(targets, num_classes)
    gt_boxes, gt_labels = normalized_targets(targets, image_size, priors.device)
    with torch.no_grad():
        out = assign(gt_boxes, gt_labels, priors)
    B, P = len(targets), priors.shape[0]
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)):
        raise ValueError(f"the targets function must return two tensors, loc_targets ({B}, {P}, 4) and labels "
                         f"({B}, {P}); got {type(out).__name__}")
    loc_targets, labels = out
    if tuple(loc_targets.shape) != (B, P, 4) or tuple(labels.shape) != (B, P):
        raise ValueError(f"the targets function must return loc_targets ({B}, {P}, 4) and labels ({B}, {P}) for "
                         f"{B} images and {P} default boxes; got {tuple(loc_targets.shape)} and {tuple(labels.shape)}")
    return loc_targets, labels.long()
