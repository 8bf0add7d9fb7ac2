"""The MultiBox loss (paper Sec. 2.2, "Training objective", Eq. 1-3) with hard negative mining.

    L = (L_conf + alpha * L_loc) / N,   N = number of positive (matched) default boxes; L = 0 if N = 0

L_loc is Smooth L1 over positives only; L_conf is softmax cross-entropy over the positives and
the hardest negatives, at most ``neg_pos_ratio`` (3) negatives per positive in each image.

Usage::

    from ssd_lib.loss import MultiBoxLoss
    out = MultiBoxLoss()(loc, logits, loc_targets, labels)
    out.total.backward(); print(out.loc, out.conf, out.num_pos)
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiBoxLoss", "LossParts", "hard_negative_mask"]


class LossParts(NamedTuple):
    """What :class:`MultiBoxLoss` returns: ``total`` (scalar, differentiable), its two parts
    (already divided by N), and ``num_pos`` (N). All four are tensors on the input's device: the
    caller decides when to read them back (the trainer reads the parts only at log lines)."""

    total: Tensor
    loc: Tensor
    conf: Tensor
    num_pos: Tensor


def hard_negative_mask(conf_loss: Tensor, positive: Tensor, neg_pos_ratio: float = 3.0) -> Tensor:
    """Pick the hardest negatives of each image (paper Sec. 2.2, "Hard negative mining").

    ``conf_loss: (B, P)`` per-box cross-entropy, ``positive: (B, P)`` bool. Returns a ``(B, P)``
    bool mask of the ``min(neg_pos_ratio * num_pos_b, num_neg_b)`` negatives with the highest loss
    in each image b. Positives are never selected (their loss is set to -inf before ranking).
    """
    loss = conf_loss.detach().masked_fill(positive, float("-inf"))
    num_pos = positive.sum(dim=1, keepdim=True)  # (B, 1), per image: the ratio is per image
    num_neg = torch.clamp(neg_pos_ratio * num_pos, max=positive.shape[1] - num_pos).long()
    # The k hardest boxes of each image, k = the largest num_neg of the batch (a partial sort, much
    # cheaper than ranking all P boxes); each image keeps the first num_neg_b of its k. Reading k
    # back is a host sync on a GPU, the price of the partial sort.
    k = int(num_neg.max()) if num_neg.numel() else 0
    hardest = loss.topk(k, dim=1).indices  # (B, k), hardest first
    take = torch.arange(k, device=loss.device).unsqueeze(0) < num_neg
    return torch.zeros_like(positive).scatter_(1, hardest, take)


class MultiBoxLoss(nn.Module):
    """SSD's training loss. ``num_classes`` is not needed: it is the last dim of ``logits``
    (and counts background, as in torchvision: 21 for VOC).

    The shapes and the label dtype are always checked (free: no tensor is read). ``check_labels``
    (default True) also checks that every label is in 0..C-1, which reads the labels back from the
    device; the trainer passes False because it checked its batch once, on the CPU
    (:func:`ssd_lib.train.check_targets`).
    """

    def __init__(self, neg_pos_ratio: float = 3.0, alpha: float = 1.0, check_labels: bool = True) -> None:
        super().__init__()
        if neg_pos_ratio < 0:
            raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
        self.neg_pos_ratio = neg_pos_ratio
        self.alpha = alpha
        self.check_labels = check_labels

    def forward(self, loc: Tensor, logits: Tensor, loc_targets: Tensor, labels: Tensor) -> LossParts:
        """``loc: (B, P, 4)`` predicted offsets, ``logits: (B, P, C)``, ``loc_targets: (B, P, 4)``
        encoded offsets, ``labels: (B, P)`` int64 in 0..C-1 (0 = background)."""
        self._validate(loc, logits, loc_targets, labels, self.check_labels)
        positive = labels > 0  # (B, P)
        num_pos = positive.sum()
        # Smooth L1 on positives only (Eq. 2). Summed, then divided by N below. (Boolean-mask indexing
        # has a data-dependent size: on a GPU, it and the mining below wait for the device.)
        loc_loss = F.smooth_l1_loss(loc[positive], loc_targets[positive], reduction="sum")
        # Cross-entropy on every box (computed in float32 for stability under autocast), then mined.
        conf_all = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
        negatives = hard_negative_mask(conf_all, positive, self.neg_pos_ratio)
        conf_loss = conf_all[positive | negatives].sum()
        # L = 0 when N = 0 (Eq. 1): clamp the divisor instead of branching on N (a branch would read N back).
        n = num_pos.clamp(min=1).to(conf_loss.dtype)
        loc_part = loc_loss.float() / n
        conf_part = conf_loss / n
        return LossParts(conf_part + self.alpha * loc_part, loc_part, conf_part, num_pos)

    @staticmethod
    def _validate(loc: Tensor, logits: Tensor, loc_targets: Tensor, labels: Tensor, check_labels: bool = True) -> None:
        if loc.ndim != 3 or loc.shape[-1] != 4:
            raise ValueError(f"loc must have shape (B, P, 4); got {tuple(loc.shape)}")
        if logits.ndim != 3 or logits.shape[:2] != loc.shape[:2]:
            raise ValueError(f"logits must have shape (B, P, C) with (B, P) = {tuple(loc.shape[:2])}; got {tuple(logits.shape)}")
        if loc_targets.shape != loc.shape:
            raise ValueError(
                f"loc_targets {tuple(loc_targets.shape)} must match loc {tuple(loc.shape)}: were the targets "
                "built with the same default boxes as the model (model.priors)?"
            )
        if labels.shape != loc.shape[:2]:
            raise ValueError(f"labels must have shape (B, P) = {tuple(loc.shape[:2])}; got {tuple(labels.shape)}")
        if labels.dtype != torch.long:
            raise TypeError(f"labels must be int64 (torch.long), got {labels.dtype}")
        C = logits.shape[-1]
        if check_labels and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= C):
            raise ValueError(
                f"labels must be in 0..{C - 1} (0 = background, C = {C} counts background); "
                f"got range {int(labels.min())}..{int(labels.max())}. Did you forget the background class in num_classes?"
            )
