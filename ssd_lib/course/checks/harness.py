"""The checkers' shared machinery: run named cases, compare a result with the reference, say what differs.

A lesson's checker builds a list of :class:`Case` (arguments, and the hint shown if the case fails),
a ``compare(expected, got, args)`` that raises :class:`Mismatch` (most use :func:`compare_tensor`,
:func:`compare_number` and :func:`unpack`), and hands both to :func:`run` with the reference
function. :func:`run` gives each case deep copies of its inputs, stops at the first failure, reports
exceptions instead of raising them, and prints and returns a :class:`CheckResult`.

Hidden tests (the part of a check cell students never see, :mod:`.hidden`) run the same checker
again on other seeds, on float64 inputs and on CUDA tensors: :func:`run` converts each case for them.

Usage (a checker of a lesson module)::

    cases = [Case("disjoint boxes", (tensor([[0, 0, 1, 1.0]]), tensor([[2, 2, 3, 3.0]])), "clamp at 0")]
    return run("check_iou", fn, ("boxes_a", "boxes_b"), cases, box_iou, lambda e, g, a: compare_tensor(e, g))
"""
from __future__ import annotations

import copy
import math
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from . import hidden
from .tripwire import Forbid, watching


@dataclass
class CheckResult:
    """What a checker returns: truthy when every case passed; ``message`` is the printed line.

    The checker prints ``message`` itself (so ``assert check_iou(iou)`` shows it), and the repr
    stays short, so a cell that ends with ``check_iou(iou)`` does not show the message twice.
    """

    passed: bool
    message: str
    name: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"CheckResult(passed={self.passed}, name={self.name!r})"


# ---------------------------------------------------------------------------------------------
# Running the cases
# ---------------------------------------------------------------------------------------------

NOT_IMPLEMENTED = "not implemented yet: replace the `raise NotImplementedError` with your code"


@dataclass
class Case:
    """One named case: the arguments for both functions and the hint shown if it fails."""

    name: str
    args: tuple
    hint: str
    inputs: Optional[str] = None  # a short description of the inputs, instead of their values


class Mismatch(Exception):
    """Raised by the comparisons: what differs, and a hint more specific than the case's (if any)."""

    def __init__(self, problem: str, hint: Optional[str] = None) -> None:
        super().__init__(problem)
        self.problem, self.hint = problem, hint


Compare = Callable[[Any, Any, tuple], None]  # (expected, got, case args) -> None or raise Mismatch


def run(name: str, fn: Any, arg_names: Sequence[str], cases: list[Case], reference: Callable,
        compare: Compare, forbid: Optional[Forbid] = None) -> CheckResult:
    """Run ``cases`` in order; the first failure ends the check. Prints and returns the result.

    ``forbid`` names the functions that would answer the exercise for the learner: calling one of
    them fails the case (see :mod:`.tripwire`)."""
    if not callable(fn):
        message = (f"expected your function, got {type(fn).__name__}. Hint: pass the function itself, "
                   f"e.g. `{name}(my_function)`, not the result of calling it")
        return _finish(name, False, message)
    for case in cases:
        failure = _run_case(fn, arg_names, case, reference, compare, forbid)
        if failure is not None:
            return _finish(name, False, failure)
    return _finish(name, True, f"{len(cases)} cases")


def _finish(name: str, passed: bool, message: str) -> CheckResult:
    if hidden.current().label:
        name = f"{name} ({hidden.current().label})"
    line = f"✅ {name} passed: {message}" if passed else f"❌ {name}: {message}"
    print(line)
    return CheckResult(passed, line, name)


def _run_case(fn: Callable, arg_names: Sequence[str], case: Case, reference: Callable, compare: Compare,
              forbid: Optional[Forbid] = None) -> Optional[str]:
    """None if ``fn`` agrees with ``reference`` on ``case``, else the failure message."""
    if hidden.current().converts:
        case = Case(case.name, hidden.convert(case.args), case.hint, case.inputs)
    with torch.no_grad():
        expected = reference(*copy.deepcopy(case.args))
    inputs = copy.deepcopy(case.args)  # the learner gets copies, so a change to them can be seen
    where = f"case {case.name!r} ({case.inputs or _describe_inputs(arg_names, case.args)})"
    error: Optional[Exception] = None
    with watching(forbid) as watch:
        try:
            got = fn(*inputs)
        except Exception as raised:  # the learner's bug is reported, never raised
            error = raised
    if watch.failure() is not None:
        return f"{where}: {watch.failure()}"
    if isinstance(error, NotImplementedError):
        return NOT_IMPLEMENTED
    if error is not None:
        return f"{where}: your function raised {type(error).__name__}: {error}{_where_raised(error, fn)}. Hint: {case.hint}"
    changed = [n for n, before, after in zip(arg_names, case.args, inputs) if not _same(before, after)]
    if changed:
        return (f"{where}: your function changed its input `{changed[0]}` in place. Hint: the caller still needs it: "
                "build a new tensor (e.g. `.clone()` first) instead of assigning into the input or using `+=`")
    if got is None:
        return f"{where}: your function returned None. Hint: did you forget the `return` statement?"
    try:
        compare(expected, got, case.args)
    except Mismatch as mismatch:
        return f"{where}: {mismatch.problem}. Hint: {mismatch.hint or case.hint}"
    except Exception as error:  # a result of an unexpected type
        return f"{where}: could not read your result ({type(error).__name__}: {error}). Hint: {case.hint}"
    return hidden.variant_problem(expected, got, where)


def _where_raised(error: Exception, fn: Callable) -> str:
    """' (line 4: `...`)' for the deepest line of the learner's own code in the traceback."""
    code = getattr(fn, "__code__", None)
    frames = [f for f in traceback.extract_tb(error.__traceback__) if code and f.filename == code.co_filename]
    return f" (line {frames[-1].lineno}: `{frames[-1].line}`)" if frames and frames[-1].line else ""


def _same(before: Any, after: Any) -> bool:
    if isinstance(before, Tensor):
        return isinstance(after, Tensor) and before.shape == after.shape and torch.equal(before, after)
    if isinstance(before, np.ndarray):
        return isinstance(after, np.ndarray) and np.array_equal(before, after)
    return before == after


# ---------------------------------------------------------------------------------------------
# Describing values, comparing results
# ---------------------------------------------------------------------------------------------

def fmt(values: Any) -> str:
    """Compact text for a tensor/array (long ones abbreviated with ...)."""
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    text = np.array2string(array, separator=", ", threshold=12, edgeitems=2, max_line_width=10**6,
                           formatter={"float_kind": lambda v: f"{round(v, 5) + 0.0:.4g}"})  # no float noise
    return " ".join(text.split())


def _describe(value: Any) -> str:
    if isinstance(value, (Tensor, np.ndarray)):
        kind, size = ("tensor", value.numel()) if isinstance(value, Tensor) else ("array", value.size)
        if size == 0:
            return f"empty {kind} of shape {tuple(value.shape)}"
        return fmt(value) if size <= 8 else f"{kind} of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _describe_inputs(arg_names: Sequence[str], args: tuple) -> str:
    return ", ".join(f"{name}={_describe(value)}" for name, value in zip(arg_names, args))


def as_tensor(got: Any, what: str) -> Tensor:
    """The learner's result as a tensor: numpy arrays and lists are accepted (values are what count)."""
    if isinstance(got, Tensor):
        return got.detach()
    try:
        return torch.as_tensor(got)
    except (TypeError, ValueError, RuntimeError):
        raise Mismatch(f"expected {what} as a tensor, got {type(got).__name__}",
                       "return a torch.Tensor (torch.stack turns a list of tensors into one)") from None


def check_form(expected: Tensor, got: Tensor, what: str, kind: str, shape_hint: Optional[str] = None) -> None:
    """Same shape as ``expected``; dtype of the right kind: 'float', 'int' or 'bool'."""
    if tuple(got.shape) != tuple(expected.shape):
        raise Mismatch(f"expected {what} of shape {tuple(expected.shape)}, got shape {tuple(got.shape)}", shape_hint)
    if kind == "float" and not got.is_floating_point():
        raise Mismatch(f"expected floating point {what}, got dtype {got.dtype}",
                       "compute in floating point: integer tensors drop the fractions")
    if kind == "int" and (got.is_floating_point() or got.is_complex() or got.dtype == torch.bool):
        raise Mismatch(f"expected integer {what} (int64), got dtype {got.dtype}",
                       "indices and class labels are integers: keep them int64 (torch.long)")
    if kind == "bool" and got.dtype != torch.bool:
        raise Mismatch(f"expected a bool mask for {what}, got dtype {got.dtype}",
                       "return the result of a comparison (e.g. `rank < num_neg`), which is bool; "
                       "a 0/1 tensor does not select like a mask")


def compare_tensor(expected: Tensor, got: Any, *, what: str = "the result", kind: str = "float",
                   atol: float = 1e-5, rtol: float = 1e-4, shape_hint: Optional[str] = None,
                   diagnose: Optional[Callable[[Tensor, Tensor], Optional[str]]] = None) -> Tensor:
    """Raise Mismatch unless ``got`` has the shape, dtype kind and values of ``expected``."""
    got = as_tensor(got, what)
    check_form(expected, got, what, kind, shape_hint)
    if kind == "float":
        close = torch.isclose(got.double().cpu(), expected.double().cpu(), rtol=rtol, atol=atol)
    else:
        close = got.long().cpu() == expected.long().cpu()
    if not bool(close.all()):
        raise Mismatch(_difference(expected, got, close, what), diagnose(expected, got) if diagnose else None)
    return got


def _difference(expected: Tensor, got: Tensor, close: Tensor, what: str) -> str:
    if expected.numel() <= 12:
        return f"expected {what} {fmt(expected)}, got {fmt(got)}"
    index = tuple(torch.nonzero(~close)[0].tolist())
    count = int((~close).sum())
    return (f"{what}: first difference at index {list(index)} ({count} of {close.numel()} values differ): "
            f"expected {fmt(expected[index])}, got {fmt(got[index])}")


def compare_number(expected: float, got: Any, *, what: str = "the result", atol: float = 1e-6, rtol: float = 1e-6,
                   diagnose: Optional[Callable[[float], Optional[str]]] = None) -> float:
    """Raise Mismatch unless ``got`` is one number close to ``expected`` (a float or a 1-element tensor)."""
    if isinstance(got, (Tensor, np.ndarray)) and (got.numel() if isinstance(got, Tensor) else got.size) != 1:
        raise Mismatch(f"expected {what} as a single number, got shape {tuple(got.shape)}",
                       "return one number (a float or a 0-d tensor), not one value per element")
    try:
        value = float(got.detach() if isinstance(got, Tensor) else got)
    except (TypeError, ValueError):
        raise Mismatch(f"expected {what} as a number, got {type(got).__name__}", "return a float") from None
    if not math.isclose(value, float(expected), rel_tol=rtol, abs_tol=atol):
        raise Mismatch(f"expected {what} {float(expected):.6g}, got {value:.6g}", diagnose(value) if diagnose else None)
    return value


def as_bool(got: Any, what: str, hint: str) -> bool:
    """The learner's result as a bool: ``True``/``False``, a numpy bool or a 1-element tensor."""
    if isinstance(got, Tensor) and got.numel() == 1:
        return bool(got)
    if not isinstance(got, (bool, np.bool_)):
        raise Mismatch(f"expected {what}, got {type(got).__name__}", hint)
    return bool(got)


def unpack(got: Any, n: int, what: str) -> tuple:
    """``got`` as a tuple of ``n`` results; ``what`` names them, e.g. ``"(boxes, labels)"``."""
    if not isinstance(got, (tuple, list)) or len(got) != n:
        raise Mismatch(f"expected a tuple {what}, got {type(got).__name__}",
                       f"return the {n} results as a tuple: `return {what[1:-1]}`")
    return tuple(got)


# ---------------------------------------------------------------------------------------------
# Building cases, and the diagnoses' test for "is it this mistake?"
# ---------------------------------------------------------------------------------------------

def all_close(a: Tensor, b: Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Same shape and close values (a diagnosis compares the learner's result with a known mistake)."""
    return a.shape == b.shape and bool(torch.isclose(a.double(), b.double(), rtol=rtol, atol=atol).all())


def tensor(rows: Any, dtype: torch.dtype = torch.float32) -> Tensor:
    """A case's input written out by hand, float32 unless told."""
    return torch.tensor(rows, dtype=dtype)


def random_boxes(generator: torch.Generator, n: int, scale: float = 1.0) -> Tensor:
    """``(n, 4)`` xyxy boxes inside [0, scale], sides between 3% and 30% of it."""
    xy = torch.rand(n, 2, generator=generator) * 0.7
    wh = 0.03 + torch.rand(n, 2, generator=generator) * 0.27
    return torch.cat((xy, xy + wh), dim=1) * scale
