"""Lesson 4 (notebook 04_network): the side of a convolution's or a max-pooling's output.

``check_out_size`` compares ``out_size(size, kernel, stride, padding, dilation, ceil_mode)`` with the
side of the output of PyTorch's own layer (``nn.Conv2d``, or ``nn.MaxPool2d`` in ceil mode) run on a
``(1, 1, size, size)`` input: SSD300's layers (pool3 in ceil mode, the dilated fc6, the extra layers)
and random layers.

Usage::

    from ssd_lib.course.checks import check_out_size
    assert check_out_size(out_size)
"""
from __future__ import annotations

import random
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .harness import Case, CheckResult, Mismatch, run
from .tripwire import Forbid

_FORMULA = ("out = floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1: the kernel covers "
            "dilation (kernel - 1) + 1 input pixels and slides in steps of stride over the padded input")
_DILATION = "a kernel of size k with dilation d spans d (k - 1) + 1 input pixels (fc6: 3x3 with dilation 6 spans 13)"
_CEIL = ("in ceil mode round the division up instead of down: -(-a // b) equals ceil(a / b) for integers "
         "(SSD's pool3 turns 75 into 38, plain VGG16's into 37)")
_PADDING = "padding adds `padding` pixels on BOTH sides: the padded input is size + 2 padding wide"


def _torch_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                    ceil_mode: bool = False) -> int:
    """The reference: run PyTorch's layer on a (1, 1, size, size) tensor of zeros and read the output side
    (``nn.MaxPool2d`` in ceil mode, which a convolution does not have; ``nn.Conv2d`` otherwise)."""
    if ceil_mode:
        layer = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=True)
    else:
        layer = nn.Conv2d(1, 1, kernel, stride, padding, dilation)
    with torch.no_grad():
        return int(layer(torch.zeros(1, 1, size, size)).shape[-1])


def _formula(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool, *,
             use_dilation: bool = True, both_sides: bool = True, ceil: Optional[bool] = None, plus_one: bool = True) -> int:
    """The formula with one part switched off: what a diagnosis compares the learner's answer with."""
    span = (dilation if use_dilation else 1) * (kernel - 1) + 1
    room = size + (2 if both_sides else 1) * padding - span
    up = ceil_mode if ceil is None else ceil
    return (-(-room // stride) if up else room // stride) + (1 if plus_one else 0)


_MISTAKES = (({"use_dilation": False}, _DILATION), ({"both_sides": False}, _PADDING),
             ({"ceil": False}, _CEIL), ({"ceil": True}, "round the division up only in ceil mode: " + _FORMULA),
             ({"plus_one": False}, "count the kernel's first position too: floor(...) + 1, not floor(...)"))


def _diagnose(value: int, args: tuple) -> Optional[str]:
    for flags, hint in _MISTAKES:
        if _formula(*args, **flags) == value and _formula(*args) != value:
            return hint
    return None


def _random_case(rng: random.Random) -> tuple:
    """A random layer PyTorch accepts: a convolution, or an unpadded ceil-mode max-pooling whose stride is at
    most its kernel's span (so that its last window starts inside the input, as SSD's pool3's does: PyTorch
    drops a last window that would start in the padding, a rule the exercise leaves out)."""
    ceil_mode = rng.random() < 0.4
    kernel, dilation = rng.randint(1, 7), rng.choice((1, 1, 2, 3, 6))
    span = dilation * (kernel - 1) + 1
    stride = rng.randint(1, min(span, 4)) if ceil_mode else rng.randint(1, 4)
    padding = 0 if ceil_mode else rng.randint(0, 6)
    size = rng.randint(max(1, span - 2 * padding), 320)
    return size, kernel, stride, padding, dilation, ceil_mode


_FORBID = Forbid("check_out_size", "the output size formula", (
    nn.Conv2d.forward, nn.MaxPool2d.forward, F.conv2d, F._max_pool2d, torch.max_pool2d),
    "Python integer arithmetic (+, -, *, // and -(-a // b) for a ceiling) and math.floor, math.ceil")


def check_out_size(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``out_size(size, kernel, stride=1, padding=0, dilation=1, ceil_mode=False) -> int`` against the
    output side of PyTorch's own convolution or (ceil mode) max-pooling layer."""
    cases = [
        Case("conv1_1: 3x3, padding 1", (300, 3, 1, 1, 1, False), _FORMULA),
        Case("pool1: 2x2, stride 2", (300, 2, 2, 0, 1, False), _FORMULA),
        Case("pool3 of plain VGG16 (floor mode)", (75, 2, 2, 0, 1, False), _FORMULA),
        Case("pool3 of SSD (ceil mode)", (75, 2, 2, 0, 1, True), _CEIL),
        Case("ceil mode on an even side changes nothing", (38, 2, 2, 0, 1, True), _CEIL),
        Case("pool5 of SSD: 3x3, stride 1, padding 1", (19, 3, 1, 1, 1, False), _PADDING),
        Case("fc6: 3x3, dilation 6, padding 6", (19, 3, 1, 6, 6, False), _DILATION),
        Case("conv8_2: 3x3, stride 2, padding 1", (19, 3, 2, 1, 1, False), _FORMULA),
        Case("conv10_2: 3x3, no padding", (5, 3, 1, 0, 1, False), _FORMULA),
        Case("SSD512's conv12_2: 4x4, padding 1", (2, 4, 1, 1, 1, False), _FORMULA),
        Case("dilation 2, no padding", (20, 3, 1, 0, 2, False), _DILATION),
        Case("5x5, stride 3, padding 2, dilation 2", (50, 5, 3, 2, 2, False), _FORMULA),
        Case("3x3 ceil-mode pooling with stride 2", (10, 3, 2, 0, 1, True), _CEIL),
    ]
    rng = random.Random(seed)
    cases += [Case(f"random layer (seed {seed}, case {k})", _random_case(rng), _FORMULA) for k in range(6)]

    def compare(expected: int, got: Any, args: tuple) -> None:
        if isinstance(got, (bool, np.bool_)) or not isinstance(got, (int, np.integer)):
            raise Mismatch(f"expected the output side as an int, got {type(got).__name__}",
                           "return a Python int: use integer division // (a / b is a float)")
        if int(got) != expected:
            raise Mismatch(f"expected {expected}, got {int(got)}", _diagnose(int(got), args))

    return run("check_out_size", fn, ("size", "kernel", "stride", "padding", "dilation", "ceil_mode"), cases,
               _torch_out_size, compare, _FORBID)
