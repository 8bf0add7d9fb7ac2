"""Tests for check_sgd_step (lesson 7, one SGD step with momentum and weight decay, Sec. 3): the
library's optimiser and a learner-style solution pass it; each common mistake fails with the hint
that names it; handing the step to torch.optim.SGD or to the library fails with the tripwire's
message; memorised public answers fail another seed; the rule it teaches (no weight decay on 1-D
tensors) is what ssd_lib.train really does."""
from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.optim.sgd as torch_sgd
from torch import nn

from check_results import assert_fails_on  # tests/check_results.py
from ssd_lib.course.checks import check_sgd_step, hidden_tests
from ssd_lib.course.checks.sgd import _sgd_reference
from ssd_lib.course.checks.tripwire import reference_allowed
from check_results import on_its_reference  # tests/check_results.py
from ssd_lib.model import ssd300_vgg16
from ssd_lib.train import TrainConfig
from ssd_lib.train.loop import _build_optimizer


def sgd_step(params, grads, buffers, lr, momentum=0.9, weight_decay=5e-4, decay="ndim", decoupled=False,
             lr_in_buffer=False, dampen=False, sign=-1.0, step_with="new", times_lr=True, decay_twice=False,
             nesterov=False, old_buffers=False, in_place=False, to_float=False):
    """A learner's step; each flag switches on one mistake."""
    new_params, new_buffers = [], []
    for w, g, v in zip(params, grads, buffers):
        wd = {"ndim": weight_decay if w.ndim >= 2 else 0.0, "all": weight_decay, "none": 0.0,
              "inverted": 0.0 if w.ndim >= 2 else weight_decay}[decay]
        direction = g + (0.0 if decoupled else wd) * w
        if in_place:
            v_new = v.mul_(momentum).add_(direction)
        else:
            v_new = momentum * v + (lr if lr_in_buffer else (1 - momentum) if dampen else 1.0) * direction
        step = {"new": v_new, "old": v, "grad": direction}[step_with]
        if nesterov:
            step = direction + momentum * v_new
        step = step if lr_in_buffer or not times_lr else lr * step
        if decoupled or decay_twice:
            step = step + lr * wd * w
        w_new = w + sign * step
        if to_float:
            w_new, v_new = w_new.float(), v_new.float()
        new_params.append(w_new)
        new_buffers.append(v if old_buffers else v_new)
    return new_params, new_buffers


P = functools.partial
FIRST = "the paper settings, first step"

# (a wrong version, the case it first fails, words its hint must contain)
WRONG = [
    (P(sgd_step, decay="all"), FIRST, "biases and scales (1-D tensors) get no weight decay"),
    (P(sgd_step, decay="none"), FIRST, "you left out the weight decay"),
    (P(sgd_step, decay="inverted"), FIRST, "the wrong way round"),
    (P(sgd_step, decoupled=True), FIRST, "AdamW's decoupled decay"),
    (P(sgd_step, lr_in_buffer=True), FIRST, "the buffer holds no learning rate"),
    (P(sgd_step, dampen=True), FIRST, "no (1 - momentum) factor"),
    (P(sgd_step, sign=1.0), FIRST, "step DOWN the gradient"),
    (P(sgd_step, step_with="old"), FIRST, "step with the NEW one"),
    (P(sgd_step, step_with="grad"), "a later step", "not this batch's gradient alone"),
    (P(sgd_step, times_lr=False), FIRST, "multiply the step by the learning rate"),
    (P(sgd_step, decay_twice=True), "kernels with zero gradient", "do not subtract lr * wd * w a second time"),
    (P(sgd_step, nesterov=True), FIRST, "no Nesterov look-ahead"),
    (P(sgd_step, old_buffers=True), FIRST, "you returned the old buffers"),
    (P(sgd_step, in_place=True), FIRST, "build a new tensor"),
]


@pytest.mark.plumbing
@pytest.mark.parametrize("seed", [0, 7, 1234])
def test_the_library_passes(seed):
    with on_its_reference():
        assert check_sgd_step(_sgd_reference, seed=seed).passed
        assert hidden_tests(check_sgd_step, _sgd_reference, seeds=(4861, 8329)).passed


@pytest.mark.parametrize("seed", [0, 7, 1234])
def test_a_learner_passes(seed):
    result = check_sgd_step(sgd_step, seed=seed)
    assert result.passed, result.message


def test_hidden_tests_pass_the_learner():
    result = hidden_tests(check_sgd_step, sgd_step, seeds=(4861, 8329))
    assert result.passed, result.message


@pytest.mark.parametrize("wrong, case, hint", WRONG, ids=[h for _, _, h in WRONG])
def test_each_mistake_fails_with_its_hint(wrong, case, hint):
    assert_fails_on(check_sgd_step(wrong), "check_sgd_step", case, hint)


def test_a_float32_result_fails_the_float64_hidden_run():
    assert check_sgd_step(P(sgd_step, to_float=True)).passed  # float32 cases: nothing to see
    result = hidden_tests(check_sgd_step, P(sgd_step, to_float=True), seeds=(4861,))
    assert not result.passed and "float64" in result.message and "keep the inputs' dtype" in result.message


def test_results_of_the_wrong_form_are_reported():
    result = check_sgd_step(lambda *args: sgd_step(*args)[0])  # the new params only
    assert not result.passed and "expected a tuple (new_params, new_buffers)" in result.message, result.message
    result = check_sgd_step(lambda *args: (sgd_step(*args)[0], sgd_step(*args)[1][:-1]))
    assert not result.passed and "expected new_buffers as a list of 4 tensors" in result.message, result.message
    result = check_sgd_step(lambda *args: tuple(reversed(sgd_step(*args))))
    assert not result.passed and "new_buffers[0]" in result.message, result.message


def _torch_sgd_step(params, grads, buffers, lr, momentum, weight_decay):
    """A solution that hands the step to torch.optim.SGD (two groups, as ssd_lib.train)."""
    leaves = [nn.Parameter(p.clone()) for p in params]
    optimizer = torch.optim.SGD([{"params": [p for p in leaves if p.ndim >= 2], "weight_decay": weight_decay},
                                 {"params": [p for p in leaves if p.ndim < 2], "weight_decay": 0.0}],
                                lr=lr, momentum=momentum)
    for p, g, v in zip(leaves, grads, buffers):
        p.grad = g.clone()
        optimizer.state[p]["momentum_buffer"] = v.clone()
    optimizer.step()
    return [p.detach() for p in leaves], [optimizer.state[p]["momentum_buffer"] for p in leaves]


def _functional_sgd_step(params, grads, buffers, lr, momentum, weight_decay):
    new_params, new_buffers = [], []
    for p, g, v in zip(params, grads, buffers):
        p, v = p.clone(), v.clone()
        torch_sgd.sgd([p], [g], [v], weight_decay=weight_decay if p.ndim >= 2 else 0.0, momentum=momentum,
                            lr=lr, dampening=0.0, nesterov=False, maximize=False)
        new_params.append(p)
        new_buffers.append(v)
    return new_params, new_buffers


@pytest.mark.parametrize("delegate, called", [
    (lambda *args: _sgd_reference(*args), "_build_optimizer"),
    (_torch_sgd_step, "torch.optim.sgd.SGD.step"),
    (_functional_sgd_step, "torch.optim.sgd.sgd"),
], ids=["library", "SGD.step", "functional sgd"])
def test_handing_the_step_to_torch_or_the_library_fails(delegate, called):
    with reference_allowed():  # the delegates compute the right step
        assert check_sgd_step(delegate).passed
    result = check_sgd_step(delegate)
    assert not result.passed and "asks you to write the SGD update yourself" in result.message, result.message
    assert result.message.split("called `", 1)[1].split("`", 1)[0].endswith(called), result.message


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_memorised_public_answers_fail_another_seed():
    seen = []

    def record(*args):
        out = sgd_step(*args)
        seen.append((copy.deepcopy(args), copy.deepcopy(out)))
        return out

    assert check_sgd_step(record).passed

    def memorised(params, grads, buffers, *settings):
        for inputs, out in seen:
            if _same(inputs, (params, grads, buffers, *settings)):
                return copy.deepcopy(out)
        return [p.clone() for p in params], [b.clone() for b in buffers]

    assert check_sgd_step(memorised).passed
    assert not hidden_tests(check_sgd_step, memorised, seeds=(4861, 8329)).passed


def test_the_reference_is_the_librarys_optimiser_on_a_tiny_network():
    """Five steps of _sgd_reference, buffers carried over, equal five steps of the optimiser train() builds."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    twin = copy.deepcopy(net)
    cfg = TrainConfig.released()
    optimizer = _build_optimizer(net, cfg)
    images, targets = torch.randn(8, 3, 8, 8), torch.randn(8, 2)
    buffers = [torch.zeros_like(p) for p in twin.parameters()]
    for _ in range(5):
        for model in (net, twin):
            model.zero_grad()
            nn.functional.mse_loss(model(images), targets).backward()
        optimizer.step()
        params, buffers = _sgd_reference([p.detach() for p in twin.parameters()], [p.grad for p in twin.parameters()],
                                         buffers, cfg.lr, cfg.momentum, cfg.weight_decay)
        with torch.no_grad():
            for p, new in zip(twin.parameters(), params):
                p.copy_(new)
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b)


def test_the_library_puts_no_weight_decay_on_1d_tensors_of_ssd300():
    """What the exercise says of ssd_lib.train: kernels decay, biases and conv4_3's L2Norm scale do not (Sec. 3:
    weight decay 5e-4); the two groups hold the 26,285,486 parameters of SSD300 with 21 classes."""
    with torch.device("meta"):
        model = ssd300_vgg16(num_classes=21)
    decay, no_decay = _build_optimizer(model, TrainConfig.released()).param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {4} and {p.ndim for p in no_decay["params"]} == {1}
    assert any(p is model.backbone.l2norm.weight for p in no_decay["params"])
    assert sum(p.numel() for group in (decay, no_decay) for p in group["params"]) == 26_285_486
