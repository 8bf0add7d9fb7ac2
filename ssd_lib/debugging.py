"""Debugging a detector: overfit one batch (lesson 11's first tool, and a practitioner's).

:func:`overfit_one_batch` trains a copy of a model on one fixed batch. A detector that cannot drive
its loss near zero on four images has a bug (labels, encoding, learning rate, frozen weights); the
report says which part of the loss is stuck and what to check. The trainer's log (loss parts and
the gradient norm before clipping) is read and drawn by :func:`ssd_lib.viz.read_metrics` and
:func:`ssd_lib.viz.plot_training_log`.

Usage::

    from ssd_lib.debugging import overfit_one_batch
    report = overfit_one_batch(ssd_small(7, 64), collate([ds[i] for i in range(4)]), steps=100)
    print(report.message); assert report.passed
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .loss import LossParts, MultiBoxLoss
from .train import batch_targets

__all__ = ["OverfitReport", "overfit_one_batch"]


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


def _optimizer(params: list[nn.Parameter], name: str, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


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
    The batch is checked once, as the trainer checks it (:func:`ssd_lib.train.check_targets`): a bad
    target (labels outside 1..C-1, a box without area) raises a one-line ValueError before training.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2 to see the loss move; got {steps}")
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError("batch must be (images, targets) as ssd_lib.data.collate returns it")
    images, targets = batch
    net = copy.deepcopy(model) if copy_model else model
    net.train()
    # The trainer's boundary: the CPU targets are checked once, then matched and scored without checks.
    loc_targets, labels = batch_targets(targets, images.shape[-2:], net.priors, net.num_classes)
    images = images.to(net.priors.device)
    criterion = criterion or MultiBoxLoss(check_labels=False)
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
    opt = _optimizer(params, optimizer, lr)
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
