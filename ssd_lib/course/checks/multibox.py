"""Lesson 5 (notebook 05_loss), exercise 3: the whole MultiBox loss (Sec. 2.2, Eq. 1-3).

``check_multibox_loss`` compares ``multibox_loss(loc, logits, loc_targets, labels)`` with
``MultiBoxLoss()(...).total`` (hard negative mining 3:1 per image, alpha = 1, N over the batch), and its
gradient w.r.t. ``loc`` and ``logits``. A wrong value is compared with what the common mistakes give
(no division by N, division by the number of default boxes or of the boxes in L_conf, N per image, a
mean instead of a sum, L_loc over every box, no mining, mining across the batch, alpha != 1) to name
the one it matches. (Its own module: the other checkers of lesson 5 are in ``loss``.)

Usage::

    from ssd_lib.course.checks import check_multibox_loss
    assert check_multibox_loss(multibox_loss)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.ssd import SSD as TorchvisionSSD

import ssd_lib.loss
from ssd_lib.loss import MultiBoxLoss, hard_negative_mask

from .harness import Case, CheckResult, Mismatch, all_close, compare_number, fmt, run
from .tripwire import Forbid

_LOSS = ("L = (L_conf + L_loc) / N (Eq. 1): cross-entropy over positives and mined negatives, smooth L1 over positives, "
         "both summed, then divided by N, the number of positives in the whole batch")
_LOSS_NO_POSITIVES = "with N = 0 the loss is 0 (Eq. 1): divide by max(N, 1), or 0 / 0 gives NaN"
_IN_PLACE = ("If you set the positives' loss to 0 or -inf to rank the negatives, do it on a copy: ce.detach() shares "
             "ce's memory, so use masked_fill (no underscore) or .clone() before assigning")
_MEAN = ("Eq. 1 sums: L_loc and L_conf are sums (reduction='sum'; F.smooth_l1_loss and F.cross_entropy average by "
         "default), and the only division is the one by N")
_ALPHAS = (0.0, 0.1, 0.5, 2.0, 3.0, 10.0)  # weights a learner might put on L_loc instead of alpha = 1


def _loss_inputs(generator: torch.Generator, positives: list[int], num_boxes: int, num_classes: int) -> tuple:
    """Random (loc, logits, loc_targets, labels) for one image per entry of ``positives``."""
    batch = len(positives)
    loc = torch.randn(batch, num_boxes, 4, generator=generator)
    logits = torch.randn(batch, num_boxes, num_classes, generator=generator)
    loc_targets = torch.randn(batch, num_boxes, 4, generator=generator)
    labels = torch.zeros(batch, num_boxes, dtype=torch.long)
    for b, n in enumerate(positives):
        boxes = torch.randperm(num_boxes, generator=generator)[:n]
        labels[b, boxes] = torch.randint(1, num_classes, (n,), generator=generator)
    return loc, logits, loc_targets, labels


def _multibox_reference(loc: Tensor, logits: Tensor, loc_targets: Tensor, labels: Tensor) -> Tensor:
    return MultiBoxLoss()(loc, logits, loc_targets, labels).total


def _mistakes(args: tuple) -> list[tuple[float, str]]:
    """(the value a mistake gives on this case, the hint that names it), most specific first; in float64 on the CPU."""
    loc, logits, loc_targets, labels = (a.detach().cpu() for a in args)
    loc, logits, loc_targets = loc.double(), logits.double(), loc_targets.double()
    positive = labels > 0  # (B, P)
    batch, boxes = positive.shape
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)  # (B, P)
    smooth = F.smooth_l1_loss(loc, loc_targets, reduction="none").sum(dim=-1)  # (B, P): summed over the 4 offsets
    mined = hard_negative_mask(ce, positive)
    across = hard_negative_mask(ce.reshape(1, -1), positive.reshape(1, -1)).view_as(positive)
    n, chosen = int(positive.sum()), int((positive | mined).sum())
    n1 = max(n, 1)
    conf, loc_sum = float(ce[positive | mined].sum()), float(smooth[positive].sum())
    per_image = [(float(ce[b][positive[b] | mined[b]].sum()) + float(smooth[b][positive[b]].sum()))
                 / max(int(positive[b].sum()), 1) for b in range(batch)]  # a loop over the few images of a case
    mean_loc = loc_sum / (4 * n) if n else math.nan  # F.smooth_l1_loss's default: a mean over the 4 N offsets
    mean_conf = conf / chosen if chosen else math.nan  # F.cross_entropy's default: a mean over the boxes of L_conf
    found = []
    if n > 1:
        found.append((conf + loc_sum, f"divide by N = {n}, the number of positive default boxes in the batch (Eq. 1)"))
    priors = f"divide by N = {n}, the number of positives, not by the number of default boxes ({boxes} per image"
    found += [((conf + loc_sum) / boxes, priors + "): L is a loss per positive (Eq. 1)"),
              ((conf + loc_sum) / (batch * boxes), priors + f", {batch * boxes} in the batch): L is a loss per positive"),
              ((conf + loc_sum) / max(chosen, 1), f"divide by N = {n}, the number of positives, not by the {chosen} "
               "boxes in L_conf (positives and mined negatives)")]
    batch_n = (f"N is the number of positives of the whole batch (N = {n} here, as in MultiBoxLoss): sum both parts "
               "over all images, then divide once by max(N, 1), not each image by its own number of positives")
    found += [(sum(per_image), batch_n), (sum(per_image) / batch, batch_n)]
    found += [(c + lo, _MEAN) for c in (conf / n1, mean_conf, mean_conf / n1) for lo in (loc_sum / n1, mean_loc,
                                                                                           mean_loc / n1)]
    found += [
        ((conf + float(smooth.sum())) / n1, "L_loc sums smooth L1 over the positives only (Eq. 2): a negative has no "
         "object and its loc_targets mean nothing; use loc[positive] and loc_targets[positive]"),
        ((float(ce.sum()) + loc_sum) / n1, "L_conf takes the positives and only the mined negatives (at most 3 per "
         "positive, per image), not every default box: sum the cross-entropy over positive | hard_negative_mask(...)"),
        ((float(ce[positive].sum()) + loc_sum) / n1, "L_conf includes the mined negatives too (Eq. 3: Pos and Neg): "
         "sum the cross-entropy over positive | hard_negative_mask(...)"),
        ((float(ce[mined].sum()) + loc_sum) / n1, "L_conf includes the positives' cross-entropy too (Eq. 3: Pos and "
         "Neg). " + _IN_PLACE),
        ((float(ce[positive | across].sum()) + loc_sum) / n1, "mine per image: each image keeps its own min(3 x its "
         "positives, its negatives) hardest negatives (hard_negative_mask on the (B, P) losses), not the 3N hardest of "
         "the whole batch"),
    ]
    found += [((conf + a * loc_sum) / n1, "L_loc is missing: L = (L_conf + alpha L_loc) / N with alpha = 1" if a == 0
               else f"alpha = 1 (Sec. 2.2): L = (L_conf + L_loc) / N, but your value is (L_conf + {a:g} L_loc) / N")
              for a in _ALPHAS]
    found.append((loc_sum / n1, "L_conf is missing: L = (L_conf + alpha L_loc) / N with alpha = 1"))
    return found


def _diagnose_loss(value: float, args: tuple) -> Optional[str]:
    if math.isnan(value):
        return _LOSS_NO_POSITIVES if not bool((args[3] > 0).any()) else "the loss is NaN: " + _LOSS
    if math.isinf(value):
        return "the loss is infinite. " + _IN_PLACE
    return next((hint for mistake, hint in _mistakes(args)
                 if math.isclose(value, mistake, rel_tol=1e-4, abs_tol=1e-5)), None)


def _leaves(result: Tensor) -> list[Tensor]:
    """The tensors whose .grad a backward() of ``result`` would fill (the leaves of its autograd graph)."""
    found, stack, seen = [], [result.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):  # an AccumulateGrad node
            found.append(node.variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def _learner_gradients(got: Tensor, inputs: tuple[Tensor, ...]) -> list[Optional[Tensor]]:
    """The gradient of ``got`` w.r.t. the learner's copies of ``inputs`` (found by value), None where it does not depend."""
    leaves = _leaves(got)
    copies = [next((leaf for leaf in leaves if leaf.shape == x.shape and torch.equal(leaf.detach(), x.detach())), None)
              for x in inputs]
    present = [c for c in copies if c is not None]
    try:
        grads = iter(torch.autograd.grad(got.sum(), present, allow_unused=True, retain_graph=True) if present else ())
    except RuntimeError as error:  # e.g. an in-place change of a tensor that the backward pass needs
        raise Mismatch(f"the gradient of your loss cannot be computed (RuntimeError: {str(error).splitlines()[0]})",
                       "an in-place operation (+=, /=, x[...] = ..., a method ending in _) changed a tensor that "
                       "backward() needs: write p = p / s instead of p /= s") from None
    return [next(grads) if c is not None else None for c in copies]


def _compare_gradients(got: Tensor, args: tuple) -> None:
    """The learner's gradient w.r.t. loc and logits must be the reference's (where their loss has one)."""
    loc, logits = args[0], args[1]
    learner = _learner_gradients(got, (loc, logits))
    if all(g is None for g in learner):
        raise Mismatch("your loss is not connected to loc and logits (it has no gradient)", "your result is a new "
                       "tensor (torch.tensor(...), requires_grad_()), not one computed from loc and logits: build it "
                       "from them with torch operations, so that .backward() reaches the network")
    with torch.enable_grad():
        inputs = (loc.detach().clone().requires_grad_(True), logits.detach().clone().requires_grad_(True))
        wanted = torch.autograd.grad(_multibox_reference(*inputs, args[2], args[3]), inputs)
    zero = [g is None or not bool(g.ne(0).any()) for g in learner]
    if all(zero):  # a loss whose gradient is zero everywhere (a constant + 0 * loc.sum()): the values decide
        return
    names, parts = ("loc", "logits"), ("L_loc", "L_conf")
    for i, (have, want) in enumerate(zip(learner, wanted)):
        have = torch.zeros_like(want) if have is None else have
        if all_close(have.cpu(), want.cpu()):
            continue
        problem = f"your loss has the right value, but its gradient w.r.t. {names[i]} is not MultiBoxLoss's"
        if zero[i]:
            detached = ("the cross-entropy itself: rank a detached copy for the mining (hard_negative_mask(ce.detach(), "
                        "...)), but sum the original ce" if i else "the offsets: compute smooth L1 from loc itself")
            raise Mismatch(f"{problem}: it has none", f"{parts[i]} has no gradient w.r.t. {names[i]}: you detached "
                           f"{detached} (no .detach(), .item(), torch.tensor(...) or torch.no_grad() on the way)")
        index = tuple(torch.nonzero(~torch.isclose(have.double().cpu(), want.double().cpu(), 1e-4, 1e-5))[0].tolist())
        raise Mismatch(f"{problem} (at {list(index)}: expected {fmt(want[index])}, got {fmt(have[index])})",
                       f"a part of your loss is computed from a detached copy, or differently from Eq. 1-3: {_LOSS}")


_MULTIBOX_FORBID = Forbid("check_multibox_loss", "the MultiBox loss", (
    MultiBoxLoss.forward, ssd_lib.loss.hard_negative_mask, TorchvisionSSD.compute_loss),
    "torch operations, F.cross_entropy, F.smooth_l1_loss (or your smooth_l1) and your own hard negative mining")


def check_multibox_loss(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``multibox_loss(loc (B, P, 4), logits (B, P, C), loc_targets (B, P, 4), labels (B, P)) -> scalar``
    against ``MultiBoxLoss()(...).total`` (hard negative mining 3:1 per image, alpha = 1), value and gradient."""
    g = torch.Generator().manual_seed(seed)
    differentiable = _loss_inputs(g, [3, 1], 10, 3)
    differentiable[0].requires_grad_(True)
    differentiable[1].requires_grad_(True)
    cases = [
        Case("one image, 3 positives", _loss_inputs(g, [3], 20, 3), _LOSS),
        Case("no positives (N = 0)", _loss_inputs(g, [0], 12, 3), _LOSS_NO_POSITIVES),
        Case("two images, 2 and 4 positives", _loss_inputs(g, [2, 4], 16, 4), _LOSS),
        Case(f"random batch of 3 images, one without positives (seed {seed})", _loss_inputs(g, [5, 0, 8], 40, 5), _LOSS),
        Case("the loss is differentiable", differentiable,
             "return a tensor computed from loc and logits (no .item(), float() or numpy), so that .backward() works"),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        compare_number(float(expected), got, what="the loss", atol=1e-5, rtol=1e-4,
                       diagnose=lambda value: _diagnose_loss(value, args))
        if args[0].requires_grad:
            if not (isinstance(got, Tensor) and got.requires_grad):
                raise Mismatch("your loss is not connected to loc and logits (it has no gradient)")
            _compare_gradients(got, args)

    return run("check_multibox_loss", fn, ("loc", "logits", "loc_targets", "labels"), cases, _multibox_reference, compare,
               _MULTIBOX_FORBID)
