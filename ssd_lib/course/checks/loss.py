"""Lesson 5 (notebook 05_loss): the MultiBox loss (Sec. 2.2, Eq. 1-3).

``check_smooth_l1`` compares elementwise smooth L1 with ``F.smooth_l1_loss``;
``check_hard_negative_mining`` the 3:1 negative mask with :func:`ssd_lib.loss.hard_negative_mask`
(any choice among tied losses passes). The lesson's third checker, ``check_multibox_loss`` (the whole loss,
compared with ``MultiBoxLoss``), has a module of its own, ``multibox``: its diagnoses of the common mistakes
would take this one past 300 lines.

Usage::

    from ssd_lib.course.checks import check_hard_negative_mining
    assert check_hard_negative_mining(my_hard_negative_mask)
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ssd_lib.loss import hard_negative_mask

from .harness import Case, CheckResult, Mismatch, all_close, as_tensor, check_form, compare_tensor, fmt, run, tensor
from .tripwire import Forbid

_SMOOTH_SMALL = "for |x| < 1 smooth L1 is 0.5 * x**2 (quadratic near 0, so the gradient fades smoothly)"
_SMOOTH_LARGE = "for |x| >= 1 smooth L1 is |x| - 0.5 (linear, so outliers do not dominate); both pieces give 0.5 at |x| = 1"


def _smooth_l1_reference(x: Tensor) -> Tensor:
    return F.smooth_l1_loss(x, torch.zeros_like(x), reduction="none", beta=1.0)


def _diagnose_smooth_l1(expected: Tensor, got: Tensor, x: Tensor) -> str:
    small = x.abs() < 1
    if not all_close(got[small], expected[small]):
        return _SMOOTH_SMALL + " (plain |x| is L1)" if all_close(got[small], x[small].abs()) else _SMOOTH_SMALL
    return _SMOOTH_LARGE + " (0.5 * x**2 everywhere is L2)" if all_close(got[~small], 0.5 * x[~small] ** 2) else _SMOOTH_LARGE


_SMOOTH_L1_FORBID = Forbid("check_smooth_l1", "the smooth L1 function", (
    F.smooth_l1_loss, F.huber_loss, torch.nn.SmoothL1Loss.forward, torch.nn.HuberLoss.forward,
    torch._C._nn.smooth_l1_loss, torch._C._nn.huber_loss),
    "torch operations (abs, torch.where, arithmetic)")


def check_smooth_l1(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``smooth_l1(x) -> same shape`` (elementwise, beta = 1) against ``F.smooth_l1_loss(x, 0, reduction="none")``."""
    g = torch.Generator().manual_seed(seed)
    cases = [
        Case("x = 0", (tensor([0.0]),), _SMOOTH_SMALL),
        Case("small values |x| < 1", (tensor([-0.5, 0.25, 0.9]),), _SMOOTH_SMALL),
        Case("large values |x| > 1", (tensor([-3.0, 1.5, 2.5]),), _SMOOTH_LARGE),
        Case("|x| = 1, where the pieces meet", (tensor([-1.0, 1.0]),), _SMOOTH_LARGE),
        Case("2-D input (3, 4): elementwise, no sum", (torch.randn(3, 4, generator=g) * 2,),
             "smooth L1 here is elementwise: return a tensor of x's shape, no sum or mean"),
        Case(f"random values (seed {seed})", (torch.randn(50, generator=g) * 3,), _SMOOTH_SMALL + "; " + _SMOOTH_LARGE),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        compare_tensor(expected, got, what="smooth L1", diagnose=lambda e, o: _diagnose_smooth_l1(e, o, args[0]),
                       shape_hint="smooth L1 here is elementwise: return a tensor of x's shape, no sum or mean")

    return run("check_smooth_l1", fn, ("x",), cases, _smooth_l1_reference, compare, _SMOOTH_L1_FORBID)


_HNM_POSITIVES = ("positives are never negatives: exclude them before ranking (e.g. set their loss to -inf on a copy), "
                  "or they take places among the hardest")
_HNM_CAP = ("an image cannot give more negatives than it has: take min(neg_pos_ratio * num_pos, num_neg) and never "
            "fill up the count with positives")
_HNM_PER_IMAGE = ("count positives and rank the losses per image (along dim 1): each image gets neg_pos_ratio x its "
                  "own positives, not a share of the batch's")
_HNM_COUNT = "each image selects min(neg_pos_ratio * num_pos, num_neg) negatives, those with the highest loss"


def _diagnose_negative_counts(counts: Tensor, wanted: Tensor, negatives: Tensor) -> Optional[str]:
    if torch.equal(counts, negatives):
        return "select only the hardest negatives, not all of them: " + _HNM_COUNT
    if len(counts) > 1 and int(counts.sum()) == int(wanted.sum()):
        return _HNM_PER_IMAGE
    return None


def _compare_hard_negatives(expected: Tensor, got: Any, args: tuple) -> None:
    """Tie-proof comparison: per image the same count, the same losses selected, and no positive."""
    conf_loss, positive, ratio = args
    mask = as_tensor(got, "the mask")
    check_form(expected, mask, "the mask", "bool", "one entry per box: (B, P), like conf_loss")
    if bool((mask & positive).any()):
        b, p = torch.nonzero(mask & positive)[0].tolist()
        capped = ratio * int(positive[b].sum()) > int((~positive[b]).sum())
        raise Mismatch(f"box [{b}, {p}] is a positive but your mask selects it", _HNM_CAP if capped else _HNM_POSITIVES)
    counts, wanted, negatives = mask.sum(dim=1), expected.sum(dim=1), (~positive).sum(dim=1)
    for b in range(len(mask)):  # a loop over the few images of a case, for a per-image message
        want, have = int(wanted[b]), int(counts[b])
        if have != want:
            raise Mismatch(f"image {b} has {int(positive[b].sum())} positive(s) and {int(negatives[b])} negatives, so it "
                           f"needs min({ratio:g} x {int(positive[b].sum())}, {int(negatives[b])}) = {want} negatives; "
                           f"your mask selects {have}", _diagnose_negative_counts(counts, wanted, negatives))
        chosen, hardest = conf_loss[b][mask[b]].sort().values, conf_loss[b][expected[b]].sort().values
        if not torch.equal(chosen, hardest):
            raise Mismatch(f"image {b}: your mask selects negatives with losses {fmt(chosen)}, but the {want} hardest "
                           f"are {fmt(hardest)}", "sort the negatives' losses in DESCENDING order and keep the first ones")


_MINING_FORBID = Forbid("check_hard_negative_mining", "the hard negative mining", (hard_negative_mask,),
    "torch operations (sort, argsort, masked_fill, sum, clamp, comparisons)")


def check_hard_negative_mining(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``hard_negative_mask(conf_loss (B, P), positive (B, P) bool, neg_pos_ratio=3.0) -> (B, P) bool``
    against :func:`ssd_lib.loss.hard_negative_mask`. Any choice among tied losses is accepted."""
    g = torch.Generator().manual_seed(seed)
    pos = lambda rows: torch.tensor(rows, dtype=torch.bool)  # noqa: E731
    random_positive = torch.rand(3, 40, generator=g) < 0.1
    random_positive[1] = False
    random_positive[0, 0] = random_positive[2, 5] = True
    cases = [
        Case("no positives (zero positives)", (tensor([[0.5, 2.0, 0.1, 1.5, 0.7, 0.3]]), pos([[False] * 6]), 3.0),
             "an image without positives gets no negatives either: neg_pos_ratio x 0 = 0"),
        Case("one positive, 7 negatives", (tensor([[0.1, 0.9, 0.3, 2.0, 0.5, 1.2, 0.05, 0.7]]),
                                           pos([[True] + [False] * 7]), 3.0), _HNM_COUNT),
        Case("positives have the highest loss", (tensor([[9.0, 1.0, 3.0, 8.0, 0.5, 2.0, 7.0, 4.0, 6.0, 5.0]]),
                                                 pos([[True, False, False, True] + [False] * 6]), 3.0), _HNM_POSITIVES),
        Case("only 2 negatives for 3 x 2 positives (cap)", (tensor([[1.0, 3.0, 2.0, 0.5]]),
                                                               pos([[True, False, True, False]]), 3.0), _HNM_CAP),
        Case("two images with 1 and 2 positives (per image)",
             (tensor([[10.0, 11, 12, 13, 14, 15, 16, 0.1], [0.0, 1, 2, 3, 4, 5, 9, 8]]),
              pos([[False] * 7 + [True], [False] * 6 + [True, True]]), 3.0), _HNM_PER_IMAGE),
        Case("neg_pos_ratio = 1",
             (tensor([[0.3, 0.1, 0.8, 0.2, 0.9, 0.4]]), pos([[True, False, False, True, False, False]]), 1.0),
             "use the neg_pos_ratio argument, not a fixed 3"),
        Case("tied losses at the cut-off",
             (tensor([[5.0, 3.0, 3.0, 3.0, 1.0, 0.0, 0.0, 2.0]]), pos([[False] * 7 + [True]]), 3.0),
             _HNM_COUNT + " (any of the tied boxes may be chosen)"),
        Case(f"random batch of 3 images, one without positives (seed {seed})",
             (torch.rand(3, 40, generator=g) * 4, random_positive, 3.0), _HNM_PER_IMAGE),
    ]
    return run("check_hard_negative_mining", fn, ("conf_loss", "positive", "neg_pos_ratio"), cases,
               hard_negative_mask, _compare_hard_negatives, _MINING_FORBID)
