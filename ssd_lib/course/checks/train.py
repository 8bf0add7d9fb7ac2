"""Lesson 7 (notebook 07_training): the learning-rate schedule (linear warm-up, then cosine).

``check_lr_schedule`` compares ``lr_at(step, total_steps, base_lr, warmup_steps)`` with
``base_lr * ssd_lib.train.lr_factor`` (``schedule="cosine"``). The lesson's other exercise, one SGD
step with momentum and weight decay (``check_sgd_step``), is checked in :mod:`.sgd`.

Usage::

    from ssd_lib.course.checks import check_lr_schedule
    assert check_lr_schedule(lr_at)
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Optional

import torch.optim.lr_scheduler as lr_scheduler

from ssd_lib.train import TrainConfig, lr_factor

from .harness import Case, CheckResult, compare_number, run
from .tripwire import Forbid

_LR_WARMUP = ("during warm-up (step < warmup_steps) lr = base_lr * (step + 1) / warmup_steps * cosine factor, so step 0 "
              "already trains with base_lr / warmup_steps")
_LR_COSINE = ("the cosine factor is 0.5 * (1 + cos(pi * step / total_steps)), over the whole run from step 0; "
              "lr = base_lr * warm-up factor * cosine factor")


def _lr_reference(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    return base_lr * lr_factor(step, total_steps, TrainConfig(schedule="cosine", warmup_steps=warmup_steps))


def _diagnose_lr(value: float, args: tuple) -> Optional[str]:
    step, total_steps, base_lr, warmup_steps = args
    if step >= warmup_steps:
        return None
    if math.isclose(value, _lr_reference(step, total_steps, base_lr, 0), rel_tol=1e-6):
        return "you left out the warm-up: " + _LR_WARMUP
    if math.isclose(value, _lr_reference(step, total_steps, base_lr, warmup_steps) * step / (step + 1), rel_tol=1e-6):
        return "the warm-up factor is (step + 1) / warmup_steps, not step / warmup_steps: " + _LR_WARMUP
    return None


def _random_lr_case(seed: int) -> tuple:
    rng = random.Random(seed)
    total = rng.randint(20, 1000)
    return rng.randrange(total), total, rng.choice([0.1, 0.05, 1e-3]), rng.randint(0, total // 5)


_LR_FORBID = Forbid("check_lr_schedule", "the learning-rate schedule", (
    lr_factor, lr_scheduler.CosineAnnealingLR.get_lr, lr_scheduler.CosineAnnealingLR._get_closed_form_lr),
    "Python arithmetic and math.cos, math.pi")


def check_lr_schedule(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``lr_at(step, total_steps, base_lr, warmup_steps) -> float`` (linear warm-up, then cosine) against
    ``base_lr * ssd_lib.train.lr_factor`` with ``schedule="cosine"``."""
    cases = [
        Case("first step of warm-up (step 0)", (0, 100, 0.1, 10), _LR_WARMUP),
        Case("middle of warm-up", (4, 100, 0.1, 10), _LR_WARMUP),
        Case("first step after warm-up (step = warmup_steps)", (10, 100, 0.1, 10), _LR_COSINE),
        Case("half way through the run (cosine factor 0.5)", (50, 100, 0.1, 10), _LR_COSINE),
        Case("last step", (99, 100, 0.1, 10), _LR_COSINE),
        Case("no warm-up (warmup_steps = 0)", (0, 100, 0.1, 0),
             "warmup_steps = 0 means no warm-up: skip it (and do not divide by zero)"),
        *(Case(f"random step (seed {s})", _random_lr_case(s), _LR_WARMUP + "; " + _LR_COSINE)
          for s in range(seed, seed + 3)),
    ]

    def compare(expected: float, got: Any, args: tuple) -> None:
        compare_number(expected, got, what="lr", atol=1e-12, rtol=1e-6, diagnose=lambda value: _diagnose_lr(value, args))

    return run("check_lr_schedule", fn, ("step", "total_steps", "base_lr", "warmup_steps"), cases, _lr_reference, compare, _LR_FORBID)
