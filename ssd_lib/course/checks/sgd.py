"""Lesson 7 (notebook 07_training), exercise 1: one step of SGD with momentum and weight decay, the
update SSD trains with (Sec. 3: lr 1e-3, momentum 0.9, weight decay 5e-4). A module of its own so that
the lesson's module (:mod:`.train`, the learning-rate schedule) stays short.

``check_sgd_step`` compares ``sgd_step(params, grads, buffers, lr, momentum, weight_decay) ->
(new_params, new_buffers)`` with one ``torch.optim.SGD`` step of the optimiser ``ssd_lib.train``
builds (``ssd_lib.train.loop._build_optimizer``: weight decay on the tensors with 2 or more
dimensions, none on biases and scales), started from the given momentum buffers.

Usage::

    from ssd_lib.course.checks import check_sgd_step
    assert check_sgd_step(sgd_step)
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.optim.sgd as torch_sgd
from torch import Tensor, nn

from ssd_lib.train import TrainConfig
from ssd_lib.train.loop import _build_optimizer

from .harness import Case, CheckResult, Mismatch, all_close, as_tensor, check_form, run, unpack
from .tripwire import Forbid

_SGD_RULE = ("v_new = momentum * v + grad + wd * w, then w_new = w - lr * v_new, where wd = weight_decay for tensors "
             "with 2 or more dimensions and wd = 0 for 1-D ones (biases, scales)")
_SGD_NO_DECAY_1D = ("biases and scales (1-D tensors) get no weight decay in ssd_lib.train: use wd = weight_decay only "
                    "where w.ndim >= 2 (kernels, weight matrices) and wd = 0 where w.ndim == 1")
_SGD_DECAY = ("the weight decay term wd * w goes into the gradient BEFORE the momentum: v_new = momentum * v + grad + "
              "wd * w, with wd = weight_decay for every tensor with 2 or more dimensions")
_SGD_NO_DECAY = "you left out the weight decay: " + _SGD_DECAY
_SGD_DECOUPLED = ("your buffers hold no weight decay, and your weights lose lr * wd * w outside the momentum: that is "
                  "AdamW's decoupled decay. SGD's is part of the gradient: " + _SGD_DECAY)


class _Tensors(list):
    """A list of tensors whose ``==`` compares them exactly (the check machinery compares the inputs
    before and after the learner's call)."""

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, list) and len(self) == len(other)
                and all(isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
                        for a, b in zip(self, other)))

    __hash__ = None  # type: ignore[assignment]


class _Holder(nn.Module):
    """The case's tensors as the parameters of a module, so that the library builds its optimiser for them."""

    def __init__(self, tensors: list) -> None:
        super().__init__()
        self.tensors = nn.ParameterList([nn.Parameter(t.detach().clone()) for t in tensors])


def _sgd_reference(params: list, grads: list, buffers: list, lr: float, momentum: float,
                   weight_decay: float) -> tuple[list, list]:
    """One ``torch.optim.SGD`` step of the optimiser ``ssd_lib.train`` builds (weight decay on the tensors
    with 2 or more dimensions, none on the 1-D ones), from the given momentum buffers."""
    holder = _Holder(params)
    optimizer = _build_optimizer(holder, TrainConfig(optimizer="sgd", lr=lr, momentum=momentum,
                                                     weight_decay=weight_decay))
    for p, grad, buffer in zip(holder.tensors, grads, buffers):
        p.grad = grad.detach().clone()
        optimizer.state[p]["momentum_buffer"] = buffer.detach().clone()
    optimizer.step()
    return ([p.detach().clone() for p in holder.tensors],
            [optimizer.state[p]["momentum_buffer"].clone() for p in holder.tensors])


def _sgd_mistake(args: tuple, decay: str = "ndim", decoupled: bool = False, lr_in_buffer: bool = False,
                 dampen: bool = False, sign: float = -1.0, step_with: str = "new", times_lr: bool = True,
                 decay_twice: bool = False, nesterov: bool = False) -> tuple[list, list]:
    """One step written out with one mistake switched on: what a diagnosis compares the learner's result with."""
    params, grads, buffers, lr, momentum, weight_decay = args
    new_params, new_buffers = [], []
    for w, grad, v in zip(params, grads, buffers):
        wd = {"ndim": weight_decay if w.ndim > 1 else 0.0, "all": weight_decay, "none": 0.0,
              "inverted": 0.0 if w.ndim > 1 else weight_decay}[decay]
        direction = grad + (0.0 if decoupled else wd) * w
        v_new = momentum * v + (lr if lr_in_buffer else (1 - momentum) if dampen else 1.0) * direction
        step = {"new": v_new, "old": v, "grad": direction}[step_with]
        step = direction + momentum * v_new if nesterov else step
        step = step if lr_in_buffer or not times_lr else lr * step
        if decoupled or decay_twice:
            step = step + lr * wd * w
        new_params.append(w + sign * step)
        new_buffers.append(v_new)
    return new_params, new_buffers


_SGD_MISTAKES = (  # (the mistake switched on in _sgd_mistake, the hint that names it)
    ({"decay": "all"}, _SGD_NO_DECAY_1D),
    ({"decay": "none"}, _SGD_NO_DECAY),
    ({"decay": "inverted"}, "the weight decay rule is the wrong way round: " + _SGD_NO_DECAY_1D),
    ({"decoupled": True}, _SGD_DECOUPLED),
    ({"lr_in_buffer": True}, "the buffer holds no learning rate (PyTorch's form): v_new = momentum * v + grad + wd * w, "
                             "and lr multiplies it only in w_new = w - lr * v_new"),
    ({"dampen": True}, "no (1 - momentum) factor on the gradient (that averages, as Adam does; SGD's dampening is 0): "
                       "v_new = momentum * v + grad + wd * w"),
    ({"sign": 1.0}, "step DOWN the gradient: w_new = w - lr * v_new, not w + lr * v_new"),
    ({"step_with": "old"}, "update the buffer first, then step with the NEW one: w_new = w - lr * v_new"),
    ({"step_with": "grad"}, "the step follows the momentum buffer, not this batch's gradient alone: "
                            "w_new = w - lr * v_new"),
    ({"times_lr": False}, "multiply the step by the learning rate: w_new = w - lr * v_new"),
    ({"decay_twice": True}, "the weight decay is already inside v_new: do not subtract lr * wd * w a second time"),
    ({"nesterov": True}, "no Nesterov look-ahead (torch.optim.SGD's nesterov=False, as in SSD's recipe): the step is "
                         "w_new = w - lr * v_new, not w - lr * (grad + wd * w + momentum * v_new)"),
)
_SGD_TOL = {"atol": 1e-6, "rtol": 1e-5}


def _all_match(want: list, got: list) -> bool:
    return len(want) == len(got) and all(all_close(a, b, **_SGD_TOL) for a, b in zip(want, got))


def _distance(want: list, got: list) -> float:
    return max((float((a.double() - b.double()).abs().max()) for a, b in zip(want, got) if a.numel()), default=0.0)


def _diagnose_sgd(new_params: list, new_buffers: list, args: tuple) -> Optional[str]:
    """The hint for a known mistake: the closest one that explains both results, else one that explains the
    buffers. Closest: at the paper's lr 1e-3, leaving the decay out and decoupling it differ by only lr * wd * w."""
    if _all_match(list(args[2]), new_buffers):
        return "you returned the old buffers: return the new ones, v_new = momentum * v + grad + wd * w"
    candidates = [(_sgd_mistake(args, **flags), hint) for flags, hint in _SGD_MISTAKES]
    explained = [(_distance(params, new_params) + _distance(buffers, new_buffers), hint)
                 for (params, buffers), hint in candidates
                 if _all_match(buffers, new_buffers) and _all_match(params, new_params)]
    if explained:
        return min(explained, key=lambda pair: pair[0])[1]
    reference_buffers = _sgd_mistake(args)[1]
    for (params, buffers), hint in candidates:
        if not _all_match(buffers, reference_buffers) and _all_match(buffers, new_buffers):
            return hint
    return None


def _tensor_list(expected: list, got: Any, what: str) -> list:
    """The learner's list, each tensor of the expected shape, dtype and device (or Mismatch)."""
    if not isinstance(got, (list, tuple)) or len(got) != len(expected):
        raise Mismatch(f"expected {what} as a list of {len(expected)} tensors, one per parameter, got "
                       f"{type(got).__name__}" + (f" of length {len(got)}" if isinstance(got, (list, tuple)) else ""),
                       "return a list with one new tensor for each tensor of `params`, in the same order")
    tensors = []
    for i, (want, have) in enumerate(zip(expected, got)):
        name = f"{what}[{i}]"
        have = as_tensor(have, name)
        check_form(want, have, name, "float", "each new tensor has the shape of its parameter")
        if have.dtype != want.dtype:
            raise Mismatch(f"{name}: {want.dtype} inputs gave a {have.dtype} result",
                           "keep the inputs' dtype: arithmetic of the tensors with Python floats (lr, momentum) does")
        if have.device != want.device:
            raise Mismatch(f"{name}: inputs on {want.device} gave a result on {have.device}",
                           "keep the inputs' device: arithmetic on the tensors themselves does, with no .cpu()")
        tensors.append(have)
    return tensors


def _first_difference(expected: list, got: list, what: str) -> Optional[str]:
    """Where the first tensor that differs differs, with enough digits to show a weight decay of 5e-4."""
    for i, (want, have) in enumerate(zip(expected, got)):
        want, have = want.double().cpu(), have.double().cpu()
        close = torch.isclose(have, want, **_SGD_TOL)
        if not bool(close.all()):
            index = tuple(torch.nonzero(~close)[0].tolist())
            return (f"{what}[{i}] (shape {tuple(want.shape)}): {int((~close).sum())} of {close.numel()} values differ; "
                    f"at index {list(index)} expected {float(want[index]):.7g}, got {float(have[index]):.7g}")
    return None


def _random_tensors(g: torch.Generator, shapes: list) -> _Tensors:
    return _Tensors(torch.randn(*shape, generator=g) for shape in shapes)


def _sgd_case(g: torch.Generator, shapes: list, lr: float, momentum: float, weight_decay: float,
              first_step: bool = False, zero_grad: bool = False) -> tuple:
    params = _random_tensors(g, shapes)
    grads = _Tensors(torch.zeros(s) for s in shapes) if zero_grad else _random_tensors(g, shapes)
    buffers = _Tensors(torch.zeros(s) for s in shapes) if first_step else _random_tensors(g, shapes)
    return params, grads, buffers, lr, momentum, weight_decay


def _random_sgd_case(g: torch.Generator, first_step: bool) -> tuple:
    def pick(options: tuple) -> float:
        return options[int(torch.randint(len(options), (1,), generator=g))]

    def dims(n: int) -> tuple:
        return tuple(int(d) for d in torch.randint(1, 6, (n,), generator=g))

    shapes = [dims(4), dims(1), dims(int(torch.randint(1, 4, (1,), generator=g))), dims(2)]  # a kernel, a bias, ...
    return _sgd_case(g, shapes, pick((1e-3, 1e-2, 0.1, 0.3)), pick((0.5, 0.9, 0.99)), pick((5e-4, 1e-2, 0.1)),
                     first_step=first_step)


def _describe_sgd(args: tuple) -> str:
    params, _, buffers, lr, momentum, weight_decay = args
    fresh = all(not bool(b.any()) for b in buffers)
    return (f"params of shapes {[tuple(p.shape) for p in params]}, their grads, buffers "
            f"{'all zero (first step)' if fresh else 'from earlier steps'}, lr={lr:g}, momentum={momentum:g}, "
            f"weight_decay={weight_decay:g}")


_SGD_FORBID = Forbid("check_sgd_step", "the SGD update", (
    torch.optim.SGD.step, torch_sgd.sgd, torch_sgd._single_tensor_sgd, torch_sgd._multi_tensor_sgd,
    torch_sgd._fused_sgd, torch._fused_sgd_, _build_optimizer),
    "torch arithmetic on the tensors (+, -, *), w.ndim and a Python loop over the parameters")


def check_sgd_step(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``sgd_step(params, grads, buffers, lr, momentum, weight_decay) -> (new_params, new_buffers)``
    (lists of tensors, one per parameter) against one ``torch.optim.SGD`` step of the optimiser that
    ``ssd_lib.train`` builds: weight decay on the tensors with 2 or more dimensions, none on 1-D ones."""
    g = torch.Generator().manual_seed(seed)
    ssd_like = [(4, 3, 3, 3), (4,), (6, 4)]  # a conv kernel, its bias, a weight matrix
    paper = _sgd_case(g, ssd_like + [(4,)], 1e-3, 0.9, 5e-4, first_step=True)
    paper[0][3] = paper[0][3] + 20.0  # a conv4_3 L2Norm scale near its initial 20: 1-D, so not decayed
    cases = [
        Case("the paper settings, first step (lr 1e-3, momentum 0.9, weight decay 5e-4; buffers all zero)", paper,
             _SGD_RULE),
        Case("a later step: the buffers carry momentum from earlier steps", _sgd_case(g, ssd_like, 1e-2, 0.9, 5e-4),
             _SGD_RULE),
        Case("biases and scales only (1-D tensors, weight decay 0.1): no weight decay on them",
             _sgd_case(g, [(5,), (3,)], 0.1, 0.9, 0.1), _SGD_NO_DECAY_1D),
        Case("kernels with zero gradient (weight decay 0.1): only momentum and weight decay move them",
             _sgd_case(g, [(2, 3, 3, 3), (3, 2)], 0.1, 0.9, 0.1, zero_grad=True), _SGD_DECAY),
        Case("weight_decay = 0: SGD with momentum only", _sgd_case(g, ssd_like, 0.05, 0.9, 0.0), _SGD_RULE),
        Case("a large learning rate (0.5), momentum 0.5", _sgd_case(g, ssd_like, 0.5, 0.5, 0.01), _SGD_RULE),
        *(Case(f"random parameters and settings (seed {seed}, case {k})", _random_sgd_case(g, first_step=k == 0),
               _SGD_RULE) for k in range(3)),
    ]
    for case in cases:
        case.inputs = _describe_sgd(case.args)

    def compare(expected: tuple, got: Any, args: tuple) -> None:
        new_params, new_buffers = unpack(got, 2, "(new_params, new_buffers)")
        new_buffers = _tensor_list(expected[1], new_buffers, "new_buffers")
        new_params = _tensor_list(expected[0], new_params, "new_params")
        problem = _first_difference(expected[1], new_buffers, "new_buffers") or \
            _first_difference(expected[0], new_params, "new_params")
        if problem:
            raise Mismatch(problem, _diagnose_sgd(new_params, new_buffers, args))

    return run("check_sgd_step", fn, ("params", "grads", "buffers", "lr", "momentum", "weight_decay"), cases,
               _sgd_reference, compare, _SGD_FORBID)
