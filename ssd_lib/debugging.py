"""Debugging SSD: the tools of lesson 11 and the broken pieces its lab hands out.

Tools a practitioner keeps using:

* :func:`overfit_one_batch` trains a copy of a model on one fixed batch. A detector that cannot
  drive its loss near zero on four images has a bug (labels, encoding, learning rate, frozen
  weights); the report says which part of the loss is stuck and what to check.
* :func:`read_metrics` and :func:`plot_training_log` read the trainer's ``metrics.jsonl`` (loss
  parts and the gradient norm before clipping, logged every ``log_every`` steps) and draw them.
* The fixed pieces, which the checkers of :mod:`ssd_lib.checks` use as references:
  :func:`clip_priors`, :func:`labels_from_names`, :func:`num_classes_for`, :func:`sanitize_boxes`,
  :func:`mean_average_precision`, :func:`lr_at`.

The broken pieces (listed in :data:`BROKEN_PIECES`) are small functions named after their bug, each
a mistake that public SSD reproductions made or that their issue trackers report: priors clamped
in (cx, cy, w, h), variances applied twice or dropped in decode, labels not shifted for
background, ``num_classes`` without background, plain L1 called smooth L1, hard negative mining
that ranks positives or counts per batch, mAP averaged over classes without ground truth, boxes
of zero width kept, and a large learning rate without warm-up. Each has the signature of the
piece it breaks, so the checker of the fixed piece fails it (tested in ``tests/test_checks.py``)
and its symptom can be shown (``tests/test_debugging.py``).

Usage::

    from ssd_lib.debugging import overfit_one_batch, plot_training_log
    report = overfit_one_batch(ssd_small(7, 64), collate([ds[i] for i in range(4)]), steps=100)
    print(report.message); assert report.passed
    plot_training_log("runs/demo/metrics.jsonl")
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_iou as _tv_box_iou

from .boxes import DEFAULT_VARIANCES, cxcywh_to_xyxy, decode, xyxy_to_cxcywh
from .data.common import clip_boxes as _clip_boxes_np
from .loss import LossParts, MultiBoxLoss, hard_negative_mask
from .matching import match_batch, match_ious
from .train import TrainConfig, _check_labels, lr_factor, normalized_targets

__all__ = [
    # tools
    "OverfitReport", "overfit_one_batch", "read_metrics", "plot_training_log",
    # fixed pieces (the references of the lab's checkers)
    "clip_priors", "labels_from_names", "num_classes_for", "sanitize_boxes", "mean_average_precision", "lr_at",
    "targets_without_checks",
    # broken pieces
    "BrokenPiece", "BROKEN_PIECES",
    "clip_priors_in_cxcywh", "decode_variances_applied_twice", "decode_without_variances",
    "labels_not_shifted_for_background", "num_classes_without_background", "smooth_l1_that_is_plain_l1",
    "hard_negative_mask_ranks_positives", "hard_negative_mask_per_batch", "mean_ap_over_classes_without_gt",
    "sanitize_boxes_keeps_degenerate", "lr_at_without_warmup", "train_config_without_warmup",
]


# ---------------------------------------------------------------------------------------------
# Overfit one batch
# ---------------------------------------------------------------------------------------------


@dataclass
class OverfitReport:
    """What :func:`overfit_one_batch` measured. Truthy when the loss fell near zero.

    ``losses``, ``loc``, ``conf``: the loss and its two parts (per positive, Eq. 1) before each step;
    ``grad_norms``: the total gradient norm of each step; ``threshold``: the loss that counts as
    "near zero" (``rel_tol`` x the first loss); ``message``: one line saying what happened and,
    on failure, what to check. ``model`` is the trained copy.
    """

    losses: list[float]
    loc: list[float]
    conf: list[float]
    grad_norms: list[float]
    threshold: float
    passed: bool
    message: str
    lr: float
    seconds: float
    model: nn.Module | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message

    @property
    def initial(self) -> float:
        return self.losses[0] if self.losses else float("nan")

    @property
    def final(self) -> float:
        return self.losses[-1] if self.losses else float("nan")

    def plot(self, ax=None, title: str | None = None):
        """The loss, its parts and the threshold per step (log scale). Returns the figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4))
        steps = range(len(self.losses))
        finite = lambda values: [v if math.isfinite(v) else float("nan") for v in values]  # noqa: E731
        ax.plot(steps, finite(self.losses), label="loss", color="black")
        ax.plot(steps, finite(self.loc), label="loc (smooth L1)", color="tab:blue", alpha=0.8)
        ax.plot(steps, finite(self.conf), label="conf (cross-entropy)", color="tab:orange", alpha=0.8)
        ax.axhline(self.threshold, color="tab:green", linestyle="--", label=f"near zero: {self.threshold:.3g}")
        if any(v > 0 for v in finite(self.losses) if math.isfinite(v)):
            ax.set_yscale("log")
        ax.set(xlabel="step (the same batch every step)", ylabel="loss per positive",
               title=title or ("overfit one batch: " + ("passed" if self.passed else "FAILED")))
        ax.legend(fontsize=8)
        return ax.figure


def _grad_norm(parameters: Sequence[nn.Parameter]) -> float:
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.nn.utils.get_total_norm(grads))


def overfit_one_batch(
    model: nn.Module,
    batch: tuple[Tensor, list[dict]],
    steps: int = 100,
    lr: float = 1e-3,
    optimizer: str = "adam",
    rel_tol: float = 0.02,
    criterion: Callable[..., LossParts] | None = None,
    copy_model: bool = True,
    verbose: bool = True,
) -> OverfitReport:
    """Train ``model`` on one fixed batch for ``steps`` steps and report whether the loss fell near zero.

    ``batch = (images (B, 3, S, S), targets)`` as :func:`ssd_lib.data.collate` gives it: each target a
    dict with ``boxes (G, 4)`` pixel xyxy and ``labels (G,)`` in 1..C-1. The targets are matched once
    (:func:`ssd_lib.matching.match_batch`); the model is trained in training mode (batch norm on the
    batch's statistics) with Adam (or SGD with momentum 0.9) at ``lr``. "Near zero": the last loss is
    at most ``rel_tol`` times the first (0.02: it fell 50-fold). A working SSD gets there in about a
    hundred steps; if it does not, something between the data and the optimiser is broken, and the
    message says what the curves point at. ``criterion``: a loss returning
    :class:`ssd_lib.loss.LossParts` (default ``MultiBoxLoss()``). ``copy_model``: train a deep copy
    (default) so that the caller's model is left as it was. Prints the message when ``verbose``.
    Raises ValueError (one line, before training) for labels outside 1..C-1.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2 to see the loss move; got {steps}")
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError("batch must be (images, targets) as ssd_lib.data.collate returns it")
    images, targets = batch
    net = copy.deepcopy(model) if copy_model else model
    net.train()
    _check_labels(targets, net.num_classes)
    device = net.priors.device
    images = images.to(device)
    gt_boxes, gt_labels = normalized_targets(targets, images.shape[-2:], device)
    with torch.no_grad():
        loc_targets, labels = match_batch(gt_boxes, gt_labels, net.priors)
    criterion = criterion or MultiBoxLoss()
    params = [p for p in net.parameters() if p.requires_grad]
    start = time.perf_counter()
    losses: list[float] = []
    loc: list[float] = []
    conf: list[float] = []
    norms: list[float] = []

    def record(parts: LossParts) -> float:
        losses.append(float(parts.total.detach()))
        loc.append(float(parts.loc.detach()))
        conf.append(float(parts.conf.detach()))
        return losses[-1]

    def report(passed: bool, message: str) -> OverfitReport:
        first = losses[0] if losses else float("nan")
        result = OverfitReport(losses, loc, conf, norms, rel_tol * first, passed, message, lr,
                               time.perf_counter() - start, net)
        if verbose:
            print(("✅ " if passed else "❌ ") + message)
        return result

    if not params:
        with torch.no_grad():
            record(criterion(*net(images), loc_targets, labels))
        return report(False, "no parameter requires a gradient (a frozen model?): nothing can learn; "
                             "call model.requires_grad_(True) on the parts you mean to train")
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")

    for step in range(steps):
        parts = criterion(*net(images), loc_targets, labels)
        value = record(parts)
        if not math.isfinite(value):
            return report(False, f"the loss became {value} at step {step} (from {losses[0]:.4g}): the learning rate "
                                 f"{lr:g} is too high for this model (lower it or add warm-up), or a target is not "
                                 "finite (a box of zero width gives log(0)); see the gradient norms")
        opt.zero_grad(set_to_none=True)
        parts.total.backward()
        norms.append(_grad_norm(params))
        opt.step()
    return report(*_verdict(losses, loc, conf, norms, rel_tol, lr))


def _verdict(losses: list[float], loc: list[float], conf: list[float], norms: list[float], rel_tol: float,
             lr: float) -> tuple[bool, str]:
    """(passed, message) from the curves of a finished run."""
    first, last, steps = losses[0], losses[-1], len(losses)
    fell = f"from {first:.4g} to {last:.4g} in {steps} steps"
    if last <= rel_tol * first:
        return True, f"the loss fell near zero: {fell} (below {rel_tol:g} x the first loss)"
    if max(norms, default=0.0) == 0.0:
        return False, (f"the loss did not move ({fell}) and no gradient reached the parameters: is the loss "
                       "computed from the model's outputs (no .detach(), .item() or numpy in between)?")
    if abs(last - first) <= 1e-6 * max(abs(first), 1e-12):
        return False, (f"the loss did not move ({fell}) although gradients flow: is the learning rate 0 (lr={lr:g}), "
                       "or are the trained parameters missing from the optimizer?")
    if max(losses) > 10 * first:
        return False, (f"the loss exploded on the way (max {max(losses):.4g}; {fell}): lower the learning rate "
                       f"(lr={lr:g}) or add warm-up")
    loc_stuck = loc[-1] > rel_tol * max(loc[0], 1e-12) and loc[-1] > 0.5 * rel_tol * first
    conf_stuck = conf[-1] > rel_tol * max(conf[0], 1e-12) and conf[-1] > 0.5 * rel_tol * first
    parts = f"loc {loc[0]:.3g} -> {loc[-1]:.3g}, conf {conf[0]:.3g} -> {conf[-1]:.3g}"
    if loc_stuck and not conf_stuck:
        hint = ("the localisation part is stuck: check the box encoding (variances, log of the sizes) and that the "
                "targets were built with the model's own priors")
    elif conf_stuck and not loc_stuck:
        hint = ("the classification part is stuck: check the labels (0 = background, objects 1..C-1, num_classes "
                "counts background) and that each target belongs to its image")
    else:
        hint = f"both parts are stuck: check the learning rate (lr={lr:g}) or train longer, then labels and encoding"
    return False, f"the loss fell only {fell} (near zero is {rel_tol * first:.3g}; {parts}): {hint}"


# ---------------------------------------------------------------------------------------------
# The trainer's log: loss parts and gradient norm
# ---------------------------------------------------------------------------------------------


def read_metrics(path: str | Path, kind: str = "step") -> list[dict]:
    """The records of one kind ('step' or 'epoch') from a trainer's ``metrics.jsonl``, in order.

    A last line cut off by a crash is skipped (the trainer writes one JSON object per line)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} does not exist; pass the metrics.jsonl written by ssd_lib.train.train(out_dir=...)")
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line half-written when the run was killed
        if record.get("type", "step") == kind:
            records.append(record)
    return records


def _values(records: Sequence[dict], key: str) -> list[float]:
    return [float(r[key]) if r.get(key) is not None else float("nan") for r in records]


def plot_training_log(log: str | Path | Sequence[dict], title: str | None = None, grad_clip: float | None = None,
                      axes=None):
    """Two panels from a training log: the loss and its parts (log scale), and the gradient norm before
    clipping with its maximum over each logging interval (log scale), the lr on a second axis.

    ``log``: a ``metrics.jsonl`` path (or its folder), or the step records (``TrainResult.steps``).
    Steps whose loss or gradient norm is not finite are marked with red crosses at the top.
    ``grad_clip`` draws the clipping threshold. Returns the figure.
    """
    import matplotlib.pyplot as plt

    records = read_metrics(log) if isinstance(log, (str, Path)) else [r for r in log if r.get("type", "step") == "step"]
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    else:
        fig = axes[0].figure
    x = [r["step"] for r in records]
    for key, color in (("loss", "black"), ("loc", "tab:blue"), ("conf", "tab:orange")):
        values = _values(records, key)
        axes[0].plot(x, [v if math.isfinite(v) else float("nan") for v in values], color=color, label=key)
    norms = _values(records, "grad_norm")
    maxima = _values(records, "grad_norm_max")
    axes[1].plot(x, [v if math.isfinite(v) else float("nan") for v in norms], color="tab:purple",
                 label="gradient norm (logged step)")
    if any(math.isfinite(m) and not (math.isfinite(n) and m <= n) for n, m in zip(norms, maxima)):  # log_every > 1
        axes[1].plot(x, [v if math.isfinite(v) else float("nan") for v in maxima], color="tab:purple", alpha=0.4,
                     linestyle=":", label="max since the previous log line")
    if grad_clip:
        axes[1].axhline(grad_clip, color="tab:red", linestyle="--", label=f"clipping at {grad_clip:g}")
    bad = [s for s, r in zip(x, records)
           if any(r.get(key) is not None and not math.isfinite(float(r[key])) for key in ("loss", "grad_norm"))]
    for ax in axes:
        if bad:
            ax.scatter(bad, [1.0] * len(bad), transform=ax.get_xaxis_transform(), marker="x", color="red",
                       label="non-finite", clip_on=False)
        plotted = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()] or [np.zeros(0)])
        if (plotted[np.isfinite(plotted)] > 0).any():
            ax.set_yscale("log")
        ax.set_xlabel("step")
    axes[0].set(ylabel="loss per positive", title="Loss and its parts (Eq. 1)")
    axes[1].set(ylabel="total gradient norm (before clipping)", title="Gradient norm")
    lrs = _values(records, "lr")
    if any(math.isfinite(v) for v in lrs):
        lr_ax = axes[1].twinx()
        lr_ax.plot(x, lrs, color="tab:green", alpha=0.6, label="learning rate")
        lr_ax.set_ylabel("learning rate", color="tab:green")
        lr_ax.legend(loc="lower right", fontsize=8)
    for ax in axes:
        ax.legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The fixed pieces (references of the lab's checkers)
# ---------------------------------------------------------------------------------------------


def clip_priors(priors_cxcywh: Tensor) -> Tensor:
    """Clip default boxes to the image in corner form. ``(P, 4) cxcywh -> (P, 4) cxcywh``.

    Convert to corners, clamp x1, y1, x2, y2 to [0, 1], convert back: a box that sticks out of the
    image shrinks and its centre moves inwards (what ``PriorConfig(clip=True)`` does)."""
    return xyxy_to_cxcywh(cxcywh_to_xyxy(priors_cxcywh).clamp(0.0, 1.0))


def labels_from_names(names: Sequence[str], classes: Sequence[str]) -> Tensor:
    """Class names of the objects of one image to SSD labels ``(G,) int64``: ``classes[k]`` gets k + 1,
    because label 0 is background. Raises ValueError for a name not in ``classes``."""
    index = {name: k for k, name in enumerate(classes)}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise ValueError(f"object class {unknown[0]!r} is not one of the {len(classes)} classes {list(classes)[:6]}...")
    return torch.tensor([index[name] + 1 for name in names], dtype=torch.long)


def num_classes_for(classes: Sequence[str]) -> int:
    """``num_classes`` of the model for these object classes: one more, for background (VOC: 21)."""
    return len(classes) + 1


def sanitize_boxes(boxes: Tensor, labels: Tensor, width: float, height: float) -> tuple[Tensor, Tensor]:
    """Clip pixel xyxy ``boxes (G, 4)`` to the image and drop those without area, with their labels.

    A box kept must have x2 > x1 and y2 > y1 after clipping (torchvision's detection references
    filter COCO's degenerate boxes the same way). Returns ``(boxes (G', 4), labels (G',))``."""
    clipped, keep = _clip_boxes_np(boxes.detach().cpu().numpy(), width, height)
    keep_t = torch.from_numpy(keep)
    return torch.from_numpy(clipped)[keep_t].to(boxes.dtype), labels[keep_t]


def mean_average_precision(ap: Sequence[float], num_gt: Sequence[int]) -> float:
    """The mean of the per-class ``ap`` over the classes with ground truth (``num_gt > 0``); the AP of a
    class without objects is undefined, not 0. NaN when no class has ground truth (as evaluate_voc)."""
    ap_array = np.asarray(ap, dtype=np.float64)
    with_gt = np.asarray(num_gt) > 0
    return float(ap_array[with_gt].mean()) if with_gt.any() else float("nan")


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps`` then cosine decay (``ssd_lib.train.lr_factor``)."""
    return base_lr * lr_factor(step, total_steps, TrainConfig(schedule="cosine", warmup_steps=warmup_steps))


def targets_without_checks(gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor], priors_cxcywh: Tensor,
                           iou_threshold: float = 0.5,
                           variances: tuple[float, float] = DEFAULT_VARIANCES) -> tuple[Tensor, Tensor]:
    """Matching and encoding as many reproductions write them, with nothing checked.

    Same rule as :func:`ssd_lib.matching.match_batch`, but no validation of the boxes or labels and
    the paper's ``log(g_w / d_w)`` with no floor, so a box of zero width gives an infinite target and
    a label 0 silently becomes background. For showing symptoms; train with ``match_batch``.
    Returns ``loc_targets (B, P, 4)`` and ``labels (B, P)``.
    """
    priors_xyxy = cxcywh_to_xyxy(priors_cxcywh)
    all_offsets, all_labels = [], []
    for boxes, labels in zip(gt_boxes, gt_labels):  # a loop over images: a demonstration, not a hot path
        P = priors_cxcywh.shape[0]
        if len(boxes) == 0:
            all_offsets.append(torch.zeros(P, 4)), all_labels.append(torch.zeros(P, dtype=torch.long))
            continue
        iou = _tv_box_iou(boxes.float(), priors_xyxy)[None]  # (1, G, P)
        matched_idx, positive = match_ious(iou, torch.ones(1, len(boxes), dtype=torch.bool), iou_threshold)
        matched = xyxy_to_cxcywh(boxes.float()[matched_idx[0]])
        centre = (matched[:, :2] - priors_cxcywh[:, :2]) / (priors_cxcywh[:, 2:] * variances[0])
        size = torch.log(matched[:, 2:] / priors_cxcywh[:, 2:]) / variances[1]  # the paper's formula, no floor
        offsets = torch.cat((centre, size), dim=1)
        all_offsets.append(torch.where(positive[0, :, None], offsets, torch.zeros_like(offsets)))
        all_labels.append(torch.where(positive[0], labels.long()[matched_idx[0]], 0))
    return torch.stack(all_offsets), torch.stack(all_labels)


# ---------------------------------------------------------------------------------------------
# The broken pieces: each the signature of the piece it breaks, named after its bug
# ---------------------------------------------------------------------------------------------


def clip_priors_in_cxcywh(priors_cxcywh: Tensor) -> Tensor:
    """BUG: clamps (cx, cy, w, h) to [0, 1] instead of the corners (a popular PyTorch port's PriorBox
    did ``output.clamp_(max=1, min=0)``). Boxes at the border still stick out; boxes wider than the
    image become width 1 around an unchanged centre."""
    return priors_cxcywh.clamp(0.0, 1.0)


def decode_variances_applied_twice(offsets: Tensor, priors_cxcywh: Tensor,
                                   variances: tuple[float, float] = DEFAULT_VARIANCES) -> Tensor:
    """BUG: the offsets are scaled by the variances before a decode that scales them again (the head
    multiplied them, then the post-processing did too). Every box snaps back towards its prior."""
    scale = offsets.new_tensor([variances[0], variances[0], variances[1], variances[1]])
    return decode(offsets * scale, priors_cxcywh, variances)


def decode_without_variances(offsets: Tensor, priors_cxcywh: Tensor,
                             variances: tuple[float, float] = DEFAULT_VARIANCES) -> Tensor:
    """BUG: decodes with the paper's formula and forgets the variances that encode divided by:
    every correction is 5 to 10 times too large."""
    return decode(offsets, priors_cxcywh, (1.0, 1.0))


def labels_not_shifted_for_background(names: Sequence[str], classes: Sequence[str]) -> Tensor:
    """BUG: ``classes.index(name)`` as the label: the first class gets 0, which SSD reads as background,
    so its objects are trained to be background (and the last label C-1 is never used)."""
    return torch.tensor([list(classes).index(name) for name in names], dtype=torch.long)


def num_classes_without_background(classes: Sequence[str]) -> int:
    """BUG: ``num_classes = len(classes)``: the last class's label is out of range for the logits
    (a device-side assert on CUDA, an IndexError in cross-entropy on the CPU)."""
    return len(classes)


def smooth_l1_that_is_plain_l1(x: Tensor) -> Tensor:
    """BUG: called smooth L1, computes |x| (a popular tutorial used ``nn.L1Loss`` here): the gradient
    stays +-1 at the target, so box offsets jitter around it instead of settling."""
    return x.abs()


def hard_negative_mask_ranks_positives(conf_loss: Tensor, positive: Tensor, neg_pos_ratio: float = 3.0) -> Tensor:
    """BUG: ranks every box, positives included (the line that sets the positives' loss aside was
    lost, or applied to a tensor of another shape): when positives have the highest losses (early in
    training) they take the places of the hardest negatives."""
    loss = conf_loss.detach()
    num_pos = positive.sum(dim=1, keepdim=True)
    num_neg = torch.clamp(neg_pos_ratio * num_pos, max=positive.shape[1] - num_pos).long()
    rank = loss.argsort(dim=1, descending=True).argsort(dim=1)
    return rank < num_neg


def hard_negative_mask_per_batch(conf_loss: Tensor, positive: Tensor, neg_pos_ratio: float = 3.0) -> Tensor:
    """BUG: counts and ranks over the whole batch instead of per image: an image without objects
    still gives negatives, and the images with the hardest background take everyone's share."""
    loss = conf_loss.detach().masked_fill(positive, float("-inf")).flatten()
    num_neg = int(min(neg_pos_ratio * int(positive.sum()), int((~positive).sum())))
    rank = loss.argsort(descending=True).argsort()
    return (rank < num_neg).view_as(positive)


def mean_ap_over_classes_without_gt(ap: Sequence[float], num_gt: Sequence[int]) -> float:
    """BUG: averages over every class, counting a class without ground truth as AP 0 (NaN turned into
    0): the same detector scores lower on a test subset that lacks a class."""
    return float(np.nan_to_num(np.asarray(ap, dtype=np.float64), nan=0.0).mean())


def sanitize_boxes_keeps_degenerate(boxes: Tensor, labels: Tensor, width: float, height: float) -> tuple[Tensor, Tensor]:
    """BUG: clips the boxes to the image but keeps them all: a box outside the image (or annotated with
    x2 <= x1) is left with zero or negative width, and log(w) makes the loss infinite or NaN."""
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
    return clipped, labels.clone()


def lr_at_without_warmup(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    """BUG: ignores ``warmup_steps``: the first steps, where the gradients of a fresh network are at
    their largest, get the full learning rate."""
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(step / max(total_steps, 1), 1.0)))


def train_config_without_warmup(**overrides: Any) -> TrainConfig:
    """BUG: the course's CPU recipe with a 20x larger, constant learning rate (0.1), no warm-up and no
    gradient clipping: the loss jumps several-fold in the first steps (the fix: ``warmup_steps=20``,
    after which the same lr does no harm). ``overrides`` as for ``TrainConfig``."""
    base = TrainConfig.small_cpu(lr=0.1, warmup_steps=0, grad_clip=None, schedule="multistep", milestones=())
    return replace(base, **overrides)


@dataclass(frozen=True)
class BrokenPiece:
    """One broken piece of the lab: the function, its bug, the fixed piece and the checker that tells them apart."""

    name: str
    function: Callable
    bug: str
    symptom: str
    fixed: Callable
    checker: str  # name of the function in ssd_lib.checks


BROKEN_PIECES: tuple[BrokenPiece, ...] = (
    BrokenPiece("clip_priors_in_cxcywh", clip_priors_in_cxcywh, "priors clamped in (cx, cy, w, h) instead of corners",
                "clipped default boxes still stick out of the image", clip_priors, "check_clip_priors"),
    BrokenPiece("decode_variances_applied_twice", decode_variances_applied_twice, "variances applied twice in decode",
                "detections collapse onto their default boxes", decode, "check_decode"),
    BrokenPiece("decode_without_variances", decode_without_variances, "variances dropped in decode",
                "detections overshoot: boxes far too large and shifted", decode, "check_decode"),
    BrokenPiece("labels_not_shifted_for_background", labels_not_shifted_for_background,
                "labels not shifted for background (class 0)", "the first class is trained as background",
                labels_from_names, "check_labels_from_names"),
    BrokenPiece("num_classes_without_background", num_classes_without_background, "num_classes without background",
                "cross-entropy fails: target out of bounds (a device-side assert on CUDA)", num_classes_for,
                "check_num_classes"),
    BrokenPiece("smooth_l1_that_is_plain_l1", smooth_l1_that_is_plain_l1, "plain L1 where smooth L1 is meant",
                "offsets jitter around their target instead of settling",
                lambda x: torch.nn.functional.smooth_l1_loss(x, torch.zeros_like(x), reduction="none"),
                "check_smooth_l1"),
    BrokenPiece("hard_negative_mask_ranks_positives", hard_negative_mask_ranks_positives,
                "hard negative mining ranks the positives too", "fewer negatives than 3 per positive",
                hard_negative_mask, "check_hard_negative_mining"),
    BrokenPiece("hard_negative_mask_per_batch", hard_negative_mask_per_batch,
                "hard negatives capped per batch instead of per image", "an image without objects gives negatives",
                hard_negative_mask, "check_hard_negative_mining"),
    BrokenPiece("mean_ap_over_classes_without_gt", mean_ap_over_classes_without_gt,
                "mAP averaged over classes without ground truth", "a perfect detector scores below 1",
                mean_average_precision, "check_mean_average_precision"),
    BrokenPiece("sanitize_boxes_keeps_degenerate", sanitize_boxes_keeps_degenerate,
                "degenerate boxes (x2 <= x1) kept", "the loss is infinite or NaN", sanitize_boxes,
                "check_sanitize_boxes"),
    BrokenPiece("lr_at_without_warmup", lr_at_without_warmup, "a large learning rate without warm-up",
                "the loss jumps several-fold in the first steps", lr_at, "check_lr_schedule"),
)

