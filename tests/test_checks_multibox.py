"""Tests for ``check_multibox_loss`` (lesson 5, exercise 3: the whole MultiBox loss of Eq. 1): the library's
loss and a learner's (with their own smooth L1 and hard negative mining) pass, on other seeds and in the hidden
tests too; each common mistake fails on the case that first shows it, with the hint that names it; a value that
is right with a gradient that is not fails; calling the library fails with the tripwire's message."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from check_results import assert_fails_on  # tests/check_results.py
from ssd_lib.course.checks import check_multibox_loss, hidden_tests
from ssd_lib.course.checks.tripwire import reference_allowed
from check_results import on_its_reference  # tests/check_results.py
from ssd_lib.loss import MultiBoxLoss, hard_negative_mask


def smooth_l1(x):
    absolute = x.abs()
    return torch.where(absolute < 1, 0.5 * x**2, absolute - 0.5)


def my_hard_negative_mask(conf_loss, positive, neg_pos_ratio=3.0):
    loss = conf_loss.detach().masked_fill(positive, float("-inf"))
    num_pos = positive.sum(dim=1, keepdim=True)
    num_neg = torch.clamp(neg_pos_ratio * num_pos, max=positive.shape[1] - num_pos).long()
    return loss.argsort(dim=1, descending=True).argsort(dim=1) < num_neg


def multibox_loss(loc, logits, loc_targets, labels, divide_by="N", reduction="sum", loc_over="positives",
                  conf_over="mined", mining="per image", alpha=1.0, detach="ranking"):
    """A learner's loss; the keywords make the common mistakes (the defaults are right)."""
    positive = labels > 0
    chosen_loc = torch.ones_like(positive) if loc_over == "all" else positive
    per_offset = smooth_l1(loc[chosen_loc] - loc_targets[chosen_loc])
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    if detach == "conf":
        ce = ce.detach()                             # the whole cross-entropy: no gradient w.r.t. logits
    if detach == "loc":
        per_offset = per_offset.detach()
    ranking = ce if detach == "none" else ce.detach()
    if conf_over == "negatives (in place)":
        ranking[positive] = 0.0                      # ce.detach() shares ce's memory: the positives' loss is lost
    if mining == "across the batch":
        mined = my_hard_negative_mask(ranking.reshape(1, -1), positive.reshape(1, -1)).view_as(positive)
    else:
        mined = my_hard_negative_mask(ranking, positive)
    chosen = {"mined": positive | mined, "all": torch.ones_like(positive), "positives": positive,
              "negatives (in place)": positive | mined}[conf_over]
    loc_loss = per_offset.mean() if reduction in ("mean", "mean loc") else per_offset.sum()
    conf_loss = ce[chosen].mean() if reduction in ("mean", "mean conf") else ce[chosen].sum()
    if divide_by == "N per image":
        parts = [(ce[b][chosen[b]].sum() + smooth_l1(loc[b][positive[b]] - loc_targets[b][positive[b]]).sum())
                 / positive[b].sum().clamp(min=1) for b in range(len(labels))]
        return torch.stack(parts).sum()
    total = conf_loss + alpha * loc_loss
    divisor = {"N": positive.sum().clamp(min=1), "priors": labels.shape[1], "chosen": chosen.sum(),
               "nothing": 1}[divide_by]
    return total / divisor


@pytest.mark.plumbing
@pytest.mark.parametrize("seed", [0, 7, 1234, 5821])
def test_the_library_passes(seed):
    with on_its_reference():
        assert check_multibox_loss(lambda *args: MultiBoxLoss()(*args).total, seed=seed)


def test_a_learner_passes():
    result = check_multibox_loss(multibox_loss)
    assert result.passed and "5 cases" in result.message, result.message


def test_mining_on_the_loss_itself_passes():
    """Ranking the undetached loss gives the same value and gradient (sorting passes no gradient on): accepted."""
    assert check_multibox_loss(functools.partial(multibox_loss, detach="none"))


@pytest.mark.parametrize("seed", [7, 1234, 5821])
def test_other_seeds_pass_the_learner(seed):
    result = check_multibox_loss(multibox_loss, seed=seed)
    assert result.passed, result.message


def test_hidden_tests_pass_the_learner_in_float64_and_on_cuda():
    result = hidden_tests(check_multibox_loss, multibox_loss, seeds=(8461, 2953))
    assert result.passed, result.message


def test_a_memorised_solution_fails_the_hidden_tests():
    seen = []

    def record(*args):
        out = MultiBoxLoss()(*args).total
        seen.append(([a.detach().clone() for a in args], out.detach().clone()))
        return out

    with reference_allowed():
        assert check_multibox_loss(record)

    def memorised(*args):
        for inputs, out in seen:
            if all(a.shape == b.shape and torch.equal(a.detach(), b) for a, b in zip(args, inputs)):
                return out + 0 * (args[0].sum() + args[1].sum()) if args[0].requires_grad else out
        return seen[-1][1]

    assert check_multibox_loss(memorised).passed
    assert not hidden_tests(check_multibox_loss, memorised, seeds=(8461, 2953)).passed


P = functools.partial
MISTAKES = [  # (solution, the case it fails first, a piece of the hint)
    (P(multibox_loss, divide_by="nothing"), "one image, 3 positives", "divide by N = 3"),
    (P(multibox_loss, divide_by="priors"), "one image, 3 positives", "not by the number of default boxes (20 per image"),
    (P(multibox_loss, divide_by="chosen"), "one image, 3 positives", "not by the 12 boxes in L_conf"),
    (P(multibox_loss, divide_by="N per image"), "two images, 2 and 4 positives", "positives of the whole batch"),
    (P(multibox_loss, reduction="mean"), "one image, 3 positives", "Eq. 1 sums"),
    (P(multibox_loss, reduction="mean loc"), "one image, 3 positives", "reduction='sum'"),
    (P(multibox_loss, reduction="mean conf"), "one image, 3 positives", "reduction='sum'"),
    (P(multibox_loss, loc_over="all"), "one image, 3 positives", "over the positives only (Eq. 2)"),
    (P(multibox_loss, conf_over="all"), "one image, 3 positives", "only the mined negatives"),
    (P(multibox_loss, conf_over="positives"), "one image, 3 positives", "includes the mined negatives too"),
    (P(multibox_loss, conf_over="negatives (in place)"), "one image, 3 positives", "ce.detach() shares"),
    (P(multibox_loss, mining="across the batch"), "two images, 2 and 4 positives", "mine per image"),
    (P(multibox_loss, alpha=2.0), "one image, 3 positives", "(L_conf + 2 L_loc) / N"),
    (P(multibox_loss, alpha=0.5), "one image, 3 positives", "alpha = 1 (Sec. 2.2)"),
    (P(multibox_loss, alpha=0.0), "one image, 3 positives", "L_loc is missing"),
    (P(multibox_loss, detach="conf"), "the loss is differentiable", "L_conf has no gradient w.r.t. logits"),
    (P(multibox_loss, detach="loc"), "the loss is differentiable", "L_loc has no gradient w.r.t. loc"),
    (lambda *args: multibox_loss(*args).item(), "the loss is differentiable", ".item()"),
    (lambda *args: torch.tensor(float(multibox_loss(*args).detach()), requires_grad=True),
     "the loss is differentiable", "not one computed from loc and logits"),
    (lambda loc, logits, loc_targets, labels: multibox_loss(loc, logits, loc_targets, labels, divide_by="nothing")
     / (labels > 0).sum(), "no positives", "max(N, 1)"),
]


@pytest.mark.parametrize("solution, case, hint", MISTAKES, ids=[hint for _, _, hint in MISTAKES])
def test_each_mistake_fails_on_its_case_with_its_hint(solution, case, hint):
    assert_fails_on(check_multibox_loss(solution), "check_multibox_loss", case, hint)


def test_a_right_value_with_a_wrong_gradient_fails():
    def scaled_gradient(loc, logits, loc_targets, labels):
        loss = multibox_loss(loc, logits, loc_targets, labels)
        return loss + (loss - loss.detach())         # the value of the loss, twice its gradient

    result = check_multibox_loss(scaled_gradient)
    assert not result.passed and "case 'the loss is differentiable'" in result.message, result.message
    assert "gradient w.r.t. loc is not MultiBoxLoss's" in result.message, result.message


def _with_library_mining(loc, logits, loc_targets, labels):
    positive = labels > 0
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    chosen = positive | hard_negative_mask(ce.detach(), positive)
    return (ce[chosen].sum() + smooth_l1(loc[positive] - loc_targets[positive]).sum()) / positive.sum().clamp(min=1)


def test_a_loss_whose_backward_fails_is_explained():
    def softmax_in_place(loc, logits, loc_targets, labels):
        probabilities = logits.exp()
        probabilities /= probabilities.sum(dim=-1, keepdim=True)  # exp's output, which its backward needs
        ce = -probabilities.gather(-1, labels[..., None]).squeeze(-1).log()
        positive = labels > 0
        chosen = positive | my_hard_negative_mask(ce, positive)
        loc_loss = smooth_l1(loc[positive] - loc_targets[positive]).sum()
        return (ce[chosen].sum() + loc_loss) / positive.sum().clamp(min=1)

    result = check_multibox_loss(softmax_in_place)
    assert not result.passed and "case 'the loss is differentiable'" in result.message, result.message
    assert "cannot be computed" in result.message and "in-place operation" in result.message, result.message


@pytest.mark.parametrize("solution, name", [(lambda *args: MultiBoxLoss()(*args).total, "MultiBoxLoss.forward"),
                                            (_with_library_mining, "ssd_lib.loss.hard_negative_mask")])
def test_calling_the_library_fails_with_the_tripwire(solution, name):
    result = check_multibox_loss(solution)
    assert not result.passed and "asks you to write the MultiBox loss yourself" in result.message, result.message
    assert result.message.split("your function called `", 1)[1].split("`", 1)[0].endswith(name), result.message
