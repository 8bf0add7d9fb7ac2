"""Hidden tests: the part of a check cell that students never see, and that the grader and nbgrader's
autograde run. :func:`hidden_tests` runs a checker again on other seeds (other random cases), then
with every float tensor of every case in float64 (a float result must come back in float64), then on
CUDA tensors when the grading machine has a GPU (a result must come back on the GPU).

:func:`variant` is the switch :func:`harness.run` reads for each case (:func:`convert` its inputs,
:func:`variant_problem` its result). The student versions strip the hidden region
(``### BEGIN HIDDEN TESTS`` .. ``### END HIDDEN TESTS``, see :mod:`ssd_lib.course.student`).

Usage (the end of a check cell)::

    ### BEGIN HIDDEN TESTS
    from ssd_lib.course.checks import hidden_tests
    assert hidden_tests(check_iou, iou, seeds=(5081, 77))
    ### END HIDDEN TESTS
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .harness import CheckResult


@dataclass(frozen=True)
class Variant:
    """How the cases of a checker run: ``dtype`` for their float tensors and ``device`` for all their
    tensors (None: as built), and ``label``, added to the checker's printed name."""

    dtype: Optional[torch.dtype] = None
    device: Optional[str] = None
    label: str = ""

    @property
    def converts(self) -> bool:
        return self.dtype is not None or self.device is not None


_current = Variant()


def current() -> Variant:
    return _current


@contextlib.contextmanager
def variant(dtype: Optional[torch.dtype] = None, device: Optional[str] = None, label: str = "") -> Iterator[None]:
    """While inside, every case's float tensors become ``dtype`` and all its tensors move to ``device``;
    a float result must then come back in that dtype, on that device."""
    global _current
    previous, _current = _current, Variant(dtype, device, label)
    try:
        yield
    finally:
        _current = previous


def convert(value: Any) -> Any:
    """``value`` (a case's arguments: tensors, possibly inside tuples, lists and dicts) under the current variant."""
    if isinstance(value, Tensor):
        grad, converted = value.requires_grad, value.detach()
        if _current.dtype is not None and converted.is_floating_point():
            converted = converted.to(_current.dtype)
        if _current.device is not None:
            converted = converted.to(_current.device)
        return converted.requires_grad_(grad)  # still a leaf, as the case's own tensor was
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        return type(value)(convert(v) for v in value)
    if isinstance(value, dict):  # a dict subclass keeps its class (and its ==)
        converted = copy.copy(value)
        converted.update((k, convert(v)) for k, v in value.items())
        return converted
    return value


def variant_problem(expected: Any, got: Any, where: str) -> Optional[str]:
    """Under a dtype/device variant: the failure message if a float tensor of the reference's result comes
    back from the learner in another dtype, or on another device; else None."""
    if not _current.converts:
        return None
    pairs = list(zip(expected, got)) if isinstance(expected, (tuple, list)) and isinstance(got, (tuple, list)) \
        else [(expected, got)]
    for want, have in pairs:
        if not (isinstance(want, Tensor) and isinstance(have, Tensor) and want.is_floating_point()):
            continue
        if _current.dtype is not None and want.dtype == _current.dtype and have.dtype != want.dtype:
            return (f"{where}: {_current.dtype} inputs gave a {have.dtype} result. Hint: keep the inputs' dtype: "
                    "no .float() on the way, and new tensors made with dtype=x.dtype (torch.zeros_like, "
                    "x.new_zeros, ...)")
        if _current.device is not None and have.device != want.device:
            return (f"{where}: inputs on {want.device} gave a result on {have.device}. Hint: make new tensors on "
                    "the inputs' device (device=x.device, x.new_zeros, torch.zeros_like) and do not call .cpu()")
    return None


def hidden_tests(checker: Callable[..., "CheckResult"], fn: Any, seeds: Sequence[int], float64: bool = True,
                 cuda: bool = True) -> "CheckResult":
    """The hidden part of a check cell: ``checker`` on every seed of ``seeds`` (other random cases),
    then on float64 inputs (if ``float64``) and on CUDA tensors (if ``cuda`` and this machine has a
    GPU), each with the first seed. Stops at the first failure; returns its CheckResult."""
    if not seeds:
        raise ValueError("hidden_tests needs at least one seed, e.g. seeds=(5081, 77)")
    runs = [(seed, None, None, f"hidden, seed {seed}") for seed in seeds]
    if float64:
        runs.append((seeds[0], torch.float64, None, f"hidden, seed {seeds[0]}, float64"))
    if cuda and torch.cuda.is_available():
        runs.append((seeds[0], None, "cuda", f"hidden, seed {seeds[0]}, cuda"))
    for seed, dtype, device, label in runs:
        with variant(dtype, device, label):
            result = checker(fn, seed=seed)
        if not result:
            break
    return result
