"""Exercise checkers: compare the function a learner writes in a notebook with the library's.

Each ``check_*`` takes the learner's function (same signature as the library function it
re-implements), runs a few fixed cases named after what they test (empty inputs, disjoint boxes,
a tiny object, an image without positives, ...) and a few seeded random cases, and stops at the
first case that fails. It prints one line, either ``✅ check_iou passed: 10 cases`` or
``❌ check_iou: case 'disjoint boxes' (...): expected ..., got .... Hint: ...``, and returns a
:class:`CheckResult` that is truthy when every case passed. It never raises: an exception in the
learner's code is reported with its type and message. It also checks the shape and dtype of the
result and that the learner's function leaves its inputs unchanged.

Usage (the check cell after an exercise)::

    from ssd_lib.course.checks import check_iou
    assert check_iou(iou)      # prints the pass line, or the first failing case with a hint
"""
from __future__ import annotations

import copy
import math
import random
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou, nms

from ssd_lib.augment import RandomHorizontalFlip
from ssd_lib.boxes import cxcywh_to_xyxy, decode, encode, xyxy_to_cxcywh
from ssd_lib.loss import MultiBoxLoss, hard_negative_mask
from ssd_lib.matching import match
from ssd_lib.metrics import average_precision
from ssd_lib.priors import PriorConfig, default_boxes, paper_scales
from ssd_lib.train import TrainConfig, lr_factor

__all__ = [
    "CheckResult",
    "check_iou",
    "check_xyxy_to_cxcywh",
    "check_encode",
    "check_decode",
    "check_scales",
    "check_default_boxes",
    "check_match",
    "check_smooth_l1",
    "check_hard_negative_mining",
    "check_multibox_loss",
    "check_hflip",
    "check_nms",
    "check_average_precision",
    "check_lr_schedule",
    "check_compare_runs",
    "check_predict_with",
    "check_same_detections",
    "check_clip_priors",
    "check_labels_from_names",
    "check_num_classes",
    "check_sanitize_boxes",
    "check_mean_average_precision",
]


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
# The machinery: run cases, compare results, describe what went wrong
# ---------------------------------------------------------------------------------------------

NOT_IMPLEMENTED = "not implemented yet: replace the `raise NotImplementedError` with your code"


@dataclass
class _Case:
    """One named case: the arguments for both functions and the hint shown if it fails."""

    name: str
    args: tuple
    hint: str
    inputs: Optional[str] = None  # a short description of the inputs, instead of their values


class _Mismatch(Exception):
    """Raised by the comparisons: what differs, and a hint more specific than the case's (if any)."""

    def __init__(self, problem: str, hint: Optional[str] = None) -> None:
        super().__init__(problem)
        self.problem, self.hint = problem, hint


Compare = Callable[[Any, Any, tuple], None]  # (expected, got, case args) -> None or raise _Mismatch


def _run(name: str, fn: Any, arg_names: Sequence[str], cases: list[_Case], reference: Callable,
         compare: Compare) -> CheckResult:
    """Run ``cases`` in order; the first failure ends the check. Prints and returns the result."""
    if not callable(fn):
        message = (f"expected your function, got {type(fn).__name__}. Hint: pass the function itself, "
                   f"e.g. `{name}(my_function)`, not the result of calling it")
        return _finish(name, False, message)
    for case in cases:
        failure = _run_case(fn, arg_names, case, reference, compare)
        if failure is not None:
            return _finish(name, False, failure)
    return _finish(name, True, f"{len(cases)} cases")


def _finish(name: str, passed: bool, message: str) -> CheckResult:
    line = f"✅ {name} passed: {message}" if passed else f"❌ {name}: {message}"
    print(line)
    return CheckResult(passed, line, name)


def _run_case(fn: Callable, arg_names: Sequence[str], case: _Case, reference: Callable, compare: Compare) -> Optional[str]:
    """None if ``fn`` agrees with ``reference`` on ``case``, else the failure message."""
    with torch.no_grad():
        expected = reference(*copy.deepcopy(case.args))
    inputs = copy.deepcopy(case.args)  # the learner gets copies, so a change to them can be seen
    where = f"case {case.name!r} ({case.inputs or _describe_inputs(arg_names, case.args)})"
    try:
        got = fn(*inputs)
    except NotImplementedError:
        return NOT_IMPLEMENTED
    except Exception as error:  # the learner's bug is reported, never raised
        return f"{where}: your function raised {type(error).__name__}: {error}{_where_raised(error, fn)}. Hint: {case.hint}"
    changed = [n for n, before, after in zip(arg_names, case.args, inputs) if not _same(before, after)]
    if changed:
        return (f"{where}: your function changed its input `{changed[0]}` in place. Hint: the caller still needs it: "
                "build a new tensor (e.g. `.clone()` first) instead of assigning into the input or using `+=`")
    if got is None:
        return f"{where}: your function returned None. Hint: did you forget the `return` statement?"
    try:
        compare(expected, got, case.args)
    except _Mismatch as mismatch:
        return f"{where}: {mismatch.problem}. Hint: {mismatch.hint or case.hint}"
    except Exception as error:  # a result of an unexpected type
        return f"{where}: could not read your result ({type(error).__name__}: {error}). Hint: {case.hint}"
    return None


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


def _fmt(values: Any) -> str:
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
        return _fmt(value) if size <= 8 else f"{kind} of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _describe_inputs(arg_names: Sequence[str], args: tuple) -> str:
    return ", ".join(f"{name}={_describe(value)}" for name, value in zip(arg_names, args))


def _as_tensor(got: Any, what: str) -> Tensor:
    """The learner's result as a tensor: numpy arrays and lists are accepted (values are what count)."""
    if isinstance(got, Tensor):
        return got.detach()
    try:
        return torch.as_tensor(got)
    except (TypeError, ValueError, RuntimeError):
        raise _Mismatch(f"expected {what} as a tensor, got {type(got).__name__}",
                        "return a torch.Tensor (torch.stack turns a list of tensors into one)") from None


def _check_form(expected: Tensor, got: Tensor, what: str, kind: str, shape_hint: Optional[str] = None) -> None:
    """Same shape as ``expected``; dtype of the right kind: 'float', 'int' or 'bool'."""
    if tuple(got.shape) != tuple(expected.shape):
        raise _Mismatch(f"expected {what} of shape {tuple(expected.shape)}, got shape {tuple(got.shape)}", shape_hint)
    if kind == "float" and not got.is_floating_point():
        raise _Mismatch(f"expected floating point {what}, got dtype {got.dtype}",
                        "compute in floating point: integer tensors drop the fractions")
    if kind == "int" and (got.is_floating_point() or got.is_complex() or got.dtype == torch.bool):
        raise _Mismatch(f"expected integer {what} (int64), got dtype {got.dtype}",
                        "indices and class labels are integers: keep them int64 (torch.long)")
    if kind == "bool" and got.dtype != torch.bool:
        raise _Mismatch(f"expected a bool mask for {what}, got dtype {got.dtype}",
                        "return the result of a comparison (e.g. `rank < num_neg`), which is bool; "
                        "a 0/1 tensor does not select like a mask")


def _compare_tensor(expected: Tensor, got: Any, *, what: str = "the result", kind: str = "float",
                    atol: float = 1e-5, rtol: float = 1e-4, shape_hint: Optional[str] = None,
                    diagnose: Optional[Callable[[Tensor, Tensor], Optional[str]]] = None) -> Tensor:
    """Raise _Mismatch unless ``got`` has the shape, dtype kind and values of ``expected``."""
    got = _as_tensor(got, what)
    _check_form(expected, got, what, kind, shape_hint)
    if kind == "float":
        close = torch.isclose(got.double().cpu(), expected.double().cpu(), rtol=rtol, atol=atol)
    else:
        close = got.long().cpu() == expected.long().cpu()
    if not bool(close.all()):
        raise _Mismatch(_difference(expected, got, close, what), diagnose(expected, got) if diagnose else None)
    return got


def _difference(expected: Tensor, got: Tensor, close: Tensor, what: str) -> str:
    if expected.numel() <= 12:
        return f"expected {what} {_fmt(expected)}, got {_fmt(got)}"
    index = tuple(torch.nonzero(~close)[0].tolist())
    count = int((~close).sum())
    return (f"{what}: first difference at index {list(index)} ({count} of {close.numel()} values differ): "
            f"expected {_fmt(expected[index])}, got {_fmt(got[index])}")


def _compare_number(expected: float, got: Any, *, what: str = "the result", atol: float = 1e-6, rtol: float = 1e-6,
                    diagnose: Optional[Callable[[float], Optional[str]]] = None) -> float:
    """Raise _Mismatch unless ``got`` is one number close to ``expected`` (a float or a 1-element tensor)."""
    if isinstance(got, (Tensor, np.ndarray)) and (got.numel() if isinstance(got, Tensor) else got.size) != 1:
        raise _Mismatch(f"expected {what} as a single number, got shape {tuple(got.shape)}",
                        "return one number (a float or a 0-d tensor), not one value per element")
    try:
        value = float(got.detach() if isinstance(got, Tensor) else got)
    except (TypeError, ValueError):
        raise _Mismatch(f"expected {what} as a number, got {type(got).__name__}", "return a float") from None
    if not math.isclose(value, float(expected), rel_tol=rtol, abs_tol=atol):
        raise _Mismatch(f"expected {what} {float(expected):.6g}, got {value:.6g}", diagnose(value) if diagnose else None)
    return value


def _unpack(got: Any, n: int, what: str) -> tuple:
    if not isinstance(got, (tuple, list)) or len(got) != n:
        raise _Mismatch(f"expected a tuple {what}, got {type(got).__name__}",
                        f"return the {n} results as a tuple: `return {what[1:-1]}`")
    return tuple(got)


def _close(a: Tensor, b: Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    return a.shape == b.shape and bool(torch.isclose(a.double(), b.double(), rtol=rtol, atol=atol).all())


def _t(rows: Any, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.tensor(rows, dtype=dtype)


def _random_boxes(generator: torch.Generator, n: int, scale: float = 1.0) -> Tensor:
    """``(n, 4)`` xyxy boxes inside [0, scale], sides between 3% and 30% of it."""
    xy = torch.rand(n, 2, generator=generator) * 0.7
    wh = 0.03 + torch.rand(n, 2, generator=generator) * 0.27
    return torch.cat((xy, xy + wh), dim=1) * scale


# ---------------------------------------------------------------------------------------------
# Notebook 1: boxes
# ---------------------------------------------------------------------------------------------

_IOU_UNION = ("IoU = intersection / union with union = area_a + area_b - intersection (the overlap is counted "
              "once); a box with itself has IoU 1")
_IOU_CLAMP = ("boxes that do not overlap have IoU 0: clamp the intersection's width and height at 0 "
              "(`.clamp(min=0)`) before multiplying, or two negative sides make a positive area")
_IOU_PAIRS = ("result[i, j] is the IoU of boxes_a[i] with boxes_b[j], shape (N, M): broadcast boxes_a[:, None, :] "
              "against boxes_b[None, :, :] to get every pair")
_IOU_EMPTY = "with no boxes on one side the result is an empty (N, M) tensor; broadcasting gives it with no special case"


def check_iou(fn: Callable) -> CheckResult:
    """Check ``iou(boxes_a (N, 4), boxes_b (M, 4)) -> (N, M)`` (xyxy) against ``torchvision.ops.box_iou``."""
    g = torch.Generator().manual_seed(0)
    cases = [
        _Case("identical boxes", (_t([[0.1, 0.1, 0.5, 0.5]]), _t([[0.1, 0.1, 0.5, 0.5]])), _IOU_UNION),
        _Case("disjoint boxes", (_t([[0.0, 0.0, 0.2, 0.2]]), _t([[0.5, 0.5, 0.9, 0.9]])), _IOU_CLAMP),
        _Case("boxes apart in x only", (_t([[0.0, 0.0, 0.2, 0.5]]), _t([[0.4, 0.1, 0.6, 0.4]])), _IOU_CLAMP),
        _Case("boxes touching at an edge", (_t([[0.0, 0.0, 0.5, 0.5]]), _t([[0.5, 0.0, 1.0, 0.5]])), _IOU_CLAMP),
        _Case("a box inside another", (_t([[0.0, 0.0, 1.0, 1.0]]), _t([[0.25, 0.25, 0.75, 0.75]])),
              "the intersection runs from the larger x1, y1 to the smaller x2, y2; here it is the inner box"),
        _Case("2 x 3 pairs", (_t([[0.0, 0.0, 0.5, 0.5], [0.2, 0.3, 0.9, 0.6]]),
                              _t([[0.1, 0.1, 0.4, 0.6], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])), _IOU_PAIRS),
        _Case("no boxes in boxes_b (M = 0)", (_random_boxes(g, 2), torch.zeros(0, 4)), _IOU_EMPTY),
        _Case("no boxes in boxes_a (N = 0)", (torch.zeros(0, 4), _random_boxes(g, 3)), _IOU_EMPTY),
        _Case("random boxes in [0, 1] (seed 0)", (_random_boxes(g, 5), _random_boxes(g, 7)), _IOU_PAIRS),
        _Case("random boxes in pixels (seed 0)", (_random_boxes(g, 4, 300.0), _random_boxes(g, 6, 300.0)),
              "nothing in IoU assumes coordinates in [0, 1]: " + _IOU_PAIRS),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        _compare_tensor(expected, got, what="the IoU matrix", shape_hint=_IOU_PAIRS)

    return _run("check_iou", fn, ("boxes_a", "boxes_b"), cases, box_iou, compare)


_CXCYWH = "(cx, cy, w, h) = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)"


def _diagnose_cxcywh(expected: Tensor, got: Tensor) -> str:
    if not _close(got[..., :2], expected[..., :2]):
        return "the centre is the midpoint of the corners, cx = (x1 + x2) / 2 and cy = (y1 + y2) / 2, not a corner"
    if _close(got[..., 2:], expected[..., [3, 2]]):
        return "w and h are swapped: the order is (cx, cy, w, h) with w = x2 - x1 (along x) before h = y2 - y1"
    return "the size is w = x2 - x1 and h = y2 - y1: " + _CXCYWH


def check_xyxy_to_cxcywh(fn: Callable) -> CheckResult:
    """Check ``xyxy_to_cxcywh(boxes (N, 4)) -> (N, 4)`` against :func:`ssd_lib.boxes.xyxy_to_cxcywh`."""
    g = torch.Generator().manual_seed(0)
    cases = [
        _Case("unit square at the origin", (_t([[0.0, 0.0, 1.0, 1.0]]),), _CXCYWH),
        _Case("wide box (w != h)", (_t([[0.1, 0.2, 0.7, 0.4]]),), _CXCYWH),
        _Case("tall box and a box off the origin", (_t([[0.4, 0.1, 0.5, 0.9], [0.3, 0.5, 0.8, 0.6]]),), _CXCYWH),
        _Case("a point (zero size)", (_t([[0.3, 0.6, 0.3, 0.6]]),), _CXCYWH),
        _Case("no boxes (0, 4)", (torch.zeros(0, 4),), "no boxes in, no boxes out: an empty (0, 4) tensor"),
        _Case("random pixel boxes (seed 0)", (_random_boxes(g, 8, 300.0),), _CXCYWH),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        _compare_tensor(expected, got, what="the cxcywh boxes", diagnose=_diagnose_cxcywh,
                        shape_hint="one (cx, cy, w, h) row per box: stack the four columns with torch.stack(..., dim=-1)")

    return _run("check_xyxy_to_cxcywh", fn, ("boxes",), cases, xyxy_to_cxcywh, compare)


_ENCODE = ("tx = (g_cx - d_cx) / (d_w * variances[0]), ty likewise with cy and d_h; tw = log(g_w / d_w) / variances[1], "
           "th likewise (convert the matched xyxy boxes to cxcywh first)")


def _diagnose_encode(expected: Tensor, got: Tensor, args: tuple) -> str:
    matched_xyxy, priors, (v_centre, v_size) = args
    if not _close(got[..., :2], expected[..., :2]):
        if _close(got[..., :2], expected[..., :2] * v_centre):
            return "divide the centre offsets by the variance variances[0] (0.1 by default)"
        if _close(got[..., :2], expected[..., :2] * priors[..., 2:]):
            return "divide the centre offset by the default box's size: (g_cx - d_cx) / d_w, (g_cy - d_cy) / d_h"
        return _ENCODE
    if _close(got[..., 2:], expected[..., 2:] * v_size):
        return "divide the size offsets by the variance variances[1] (0.2 by default)"
    if _close(got[..., 2:], xyxy_to_cxcywh(matched_xyxy)[..., 2:] / priors[..., 2:] / v_size):
        return "the size offsets are the log of the size ratio: log(g_w / d_w) / variances[1]"
    return _ENCODE


def check_encode(fn: Callable) -> CheckResult:
    """Check ``encode(matched_xyxy (P, 4), priors_cxcywh (P, 4), variances) -> (P, 4)`` against
    :func:`ssd_lib.boxes.encode`."""
    g = torch.Generator().manual_seed(0)
    priors = _t([[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.3, 0.1]])
    shifted = cxcywh_to_xyxy(priors + _t([0.02, -0.04, 0.0, 0.0]))
    scaled = cxcywh_to_xyxy(priors * _t([1.0, 1.0, 2.0, 0.5]))
    both = cxcywh_to_xyxy(priors * _t([1.1, 0.9, 1.5, 0.8]))
    random_priors = xyxy_to_cxcywh(_random_boxes(g, 10))
    cases = [
        _Case("matched box = its default box", (cxcywh_to_xyxy(priors), priors, (0.1, 0.2)),
              "a default box matched to itself needs no correction: all offsets are 0 (log(1) = 0)"),
        _Case("shifted box, same size", (shifted, priors, (0.1, 0.2)), _ENCODE),
        _Case("scaled box, same centre", (scaled, priors, (0.1, 0.2)), _ENCODE),
        _Case("other variances (0.5, 0.25)", (both, priors, (0.5, 0.25)),
              "use the `variances` argument, not fixed 0.1 and 0.2"),
        _Case("random boxes (seed 0)", (_random_boxes(g, 10), random_priors, (0.1, 0.2)), _ENCODE),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        _compare_tensor(expected, got, what="the offsets", atol=1e-4, diagnose=lambda e, o: _diagnose_encode(e, o, args),
                        shape_hint="one offset row (tx, ty, tw, th) per default box: (P, 4)")

    return _run("check_encode", fn, ("matched_xyxy", "priors_cxcywh", "variances"), cases, encode, compare)


_DECODE = ("invert encode: cx = d_cx + tx * variances[0] * d_w, w = d_w * exp(tw * variances[1]) (likewise y, h), "
           "then convert (cx, cy, w, h) to corners")


def _diagnose_decode(expected: Tensor, got: Tensor, args: tuple) -> str:
    offsets, priors, (v_centre, v_size) = args
    if _close(got, xyxy_to_cxcywh(expected)):
        return "you returned (cx, cy, w, h): return corners (x1, y1, x2, y2), e.g. with cxcywh_to_xyxy"
    if _close(got, decode(offsets, priors, (v_centre**2, v_size**2))):
        return "each variance is applied once: cx = d_cx + tx * variances[0] * d_w, w = d_w * exp(tw * variances[1])"
    if _close(got, decode(offsets, priors, (1.0, 1.0))):
        return "multiply the offsets by the variances: tx * variances[0], tw * variances[1]"
    return _DECODE


def check_decode(fn: Callable) -> CheckResult:
    """Check ``decode(offsets (P, 4), priors_cxcywh (P, 4), variances) -> (P, 4) xyxy`` against
    :func:`ssd_lib.boxes.decode`."""
    g = torch.Generator().manual_seed(0)
    priors = _t([[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.3, 0.1]])
    random_priors = xyxy_to_cxcywh(_random_boxes(g, 10))
    round_trip = encode(_random_boxes(g, 10), random_priors)
    cases = [
        _Case("zero offsets give the default boxes back, as xyxy", (torch.zeros(2, 4), priors, (0.1, 0.2)), _DECODE),
        _Case("centre offsets only", (_t([[1.0, -2.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]), priors, (0.1, 0.2)), _DECODE),
        _Case("size offsets only", (_t([[0.0, 0.0, 1.0, -1.0], [0.0, 0.0, 2.0, 0.5]]), priors, (0.1, 0.2)), _DECODE),
        _Case("other variances (0.5, 0.25)", (_t([[1.0, -1.0, 0.5, -0.5], [0.2, 0.3, 1.0, 1.0]]), priors, (0.5, 0.25)),
              "use the `variances` argument, not fixed 0.1 and 0.2"),
        _Case("decode(encode(boxes)) (seed 0)", (round_trip, random_priors, (0.1, 0.2)), _DECODE),
        _Case("random offsets (seed 0)", (torch.randn(10, 4, generator=g) * 2, random_priors, (0.1, 0.2)), _DECODE),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        _compare_tensor(expected, got, what="the decoded boxes", diagnose=lambda e, o: _diagnose_decode(e, o, args),
                        shape_hint="one xyxy box per default box: (P, 4)")

    return _run("check_decode", fn, ("offsets", "priors_cxcywh", "variances"), cases, decode, compare)


# ---------------------------------------------------------------------------------------------
# Notebook 2: default boxes
# ---------------------------------------------------------------------------------------------

_SCALES = "s_k = s_min + (s_max - s_min) / (m - 1) * (k - 1) for k = 1..m: the first is s_min and the last s_max"


def check_scales(fn: Callable) -> CheckResult:
    """Check ``scales(m, s_min=0.2, s_max=0.9) -> list[float]`` against :func:`ssd_lib.priors.paper_scales`."""
    cases = [
        _Case("paper setting m = 6", (6, 0.2, 0.9), _SCALES),
        _Case("two maps m = 2", (2, 0.2, 0.9), _SCALES),
        _Case("other range m = 4, s_min = 0.1, s_max = 0.5", (4, 0.1, 0.5), "use the s_min and s_max arguments: " + _SCALES),
        _Case("one map m = 1", (1, 0.2, 0.9),
              "with a single map there is no spacing to compute (m - 1 = 0): return [s_min]"),
    ]

    def compare(expected: list, got: Any, args: tuple) -> None:
        try:
            values = _t([float(value) for value in got], torch.float64)
        except (TypeError, ValueError):
            raise _Mismatch(f"expected a list of numbers, got {type(got).__name__}", "return a list of m floats") from None
        _compare_tensor(_t(expected, torch.float64), values, what="the scales", atol=1e-6, rtol=1e-6,
                        shape_hint=f"one scale per feature map: m = {args[0]} numbers")

    return _run("check_scales", fn, ("m", "s_min", "s_max"), cases, paper_scales, compare)


_PRIOR_SIZES = ("each cell holds s_k x s_k, the extra square s'_k = sqrt(s_k * s_(k+1)) (from min_sizes[k] * max_sizes[k]), "
                "then (s_k * sqrt(r), s_k / sqrt(r)) and (s_k / sqrt(r), s_k * sqrt(r)) per ratio r, all / image_size")
_PRIOR_CENTRES = ("centres are cell centres: cx = (j + 0.5) * steps[k] / image_size, cy = (i + 0.5) * steps[k] / image_size "
                  "(the 0.5 puts the box in the middle of the cell, not at its corner)")
_PRIOR_ORDER = ("the order is map, then row i (y), then column j (x), then box; cx comes from the column j and cy from "
                "the row i (your rows and columns are swapped)")


def _diagnose_default_boxes(expected: Tensor, got: Tensor) -> str:
    if not _close(got[:, 2:], expected[:, 2:]):
        return _PRIOR_SIZES
    if _close(got[:, :2], expected[:, [1, 0]]):
        return _PRIOR_ORDER
    return _PRIOR_CENTRES


def check_default_boxes(fn: Callable) -> CheckResult:
    """Check ``default_boxes(cfg: PriorConfig) -> (P, 4) cxcywh`` against :func:`ssd_lib.priors.default_boxes`."""
    one_cell = PriorConfig(image_size=100, feature_maps=(1,), steps=(100,), min_sizes=(20,), max_sizes=(80,),
                           aspect_ratios=((2,),))
    two_by_two = PriorConfig(image_size=100, feature_maps=(2,), steps=(50,), min_sizes=(30,), max_sizes=(60,),
                             aspect_ratios=((),))
    two_maps = PriorConfig(image_size=64, feature_maps=(4, 1), steps=(16, 64), min_sizes=(12.8, 32.0),
                           max_sizes=(32.0, 64.0), aspect_ratios=((2, 3), (2,)))
    cases = [
        _Case("one 1 x 1 map", (one_cell,), _PRIOR_CENTRES),
        _Case("a 2 x 2 map, squares only (order of the cells)", (two_by_two,), _PRIOR_ORDER),
        _Case("two maps 4 x 4 and 1 x 1, ratios (2, 3) and (2,)", (two_maps,), _PRIOR_SIZES),
        _Case("the paper's recipe for 3 maps", (PriorConfig.from_paper(300, (5, 3, 1)),), _PRIOR_SIZES),
        _Case("SSD300 (8732 boxes)", (PriorConfig.ssd300(),), _PRIOR_SIZES, inputs="PriorConfig.ssd300()"),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        cfg = args[0]
        shape_hint = (f"P = sum over maps of f_k * f_k * (2 + 2 * len(aspect_ratios[k])) = {cfg.num_priors} here: "
                      f"{_PRIOR_SIZES}")
        _compare_tensor(expected, got, what="the default boxes", diagnose=_diagnose_default_boxes, shape_hint=shape_hint)

    return _run("check_default_boxes", fn, ("cfg",), cases, default_boxes, compare)


# ---------------------------------------------------------------------------------------------
# Notebook 3: matching
# ---------------------------------------------------------------------------------------------

_MATCH_FORCED = ("step 1 of the matching (Sec. 2.2): every object must first take its best default box, even below "
                 "the threshold")
_MATCH_FORCED_WINS = ("step 1 has the last word: an object's best default box stays that object's even when another "
                      "object overlaps it more (do step 2, then write the forced matches of step 1 over it)")
_MATCH_BEST = ("step 2: each default box takes the object it overlaps MOST (argmax over the objects) if that IoU > "
               "iou_threshold, and gets that object's label")
_MATCH_BOXES = ("matched_boxes[p] is the xyxy box of the object default box p is matched to (gt_boxes[best object]), "
                "not the default box and not cxcywh")


def _priors_xyxy(rows: list) -> Tensor:
    """Default boxes written as corners (easier to read), returned as cxcywh."""
    return xyxy_to_cxcywh(_t(rows))


def _diagnose_labels(expected: Tensor, got: Tensor, args: tuple) -> Optional[str]:
    gt_boxes, _, priors, threshold = args
    if len(gt_boxes) == 0:
        return None
    iou = box_iou(gt_boxes, cxcywh_to_xyxy(priors))  # (G, P)
    p = int(torch.nonzero(got.long() != expected)[0])
    if bool((iou.argmax(dim=1) == p).any()):  # default box p is some object's best: a forced match
        return _MATCH_FORCED if int(got[p]) == 0 else _MATCH_FORCED_WINS
    if int(expected[p]) > 0 and int(got[p]) > 0:
        return _MATCH_BEST
    best = float(iou[:, p].max())
    if int(expected[p]) == 0:
        return (f"default box {p} overlaps the objects at most with IoU {best:.3f}, not above iou_threshold = {threshold}, "
                "and is no object's best box: it is background (label 0). Use the iou_threshold argument")
    return (f"default box {p} has IoU {best:.3f} > iou_threshold = {threshold} with an object: it is a positive. "
            + _MATCH_BEST)


def _random_objects(generator: torch.Generator, priors: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``n`` random objects whose best default boxes all differ (which object keeps a shared one is a detail)."""
    while True:
        gt_boxes = _random_boxes(generator, n)
        if len(set(box_iou(gt_boxes, cxcywh_to_xyxy(priors)).argmax(dim=1).tolist())) == n:
            return gt_boxes, torch.randint(1, 6, (n,), generator=generator)


def _match_cases() -> list[_Case]:
    g = torch.Generator().manual_seed(0)
    long = torch.long
    small = default_boxes(PriorConfig.from_paper(60, (4, 2, 1), aspect_ratios=((2,), (2, 3), (2,))))
    ssd300 = default_boxes(PriorConfig.ssd300())
    on_box = _priors_xyxy([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9], [0.15, 0.1, 0.45, 0.4], [0.3, 0.3, 0.6, 0.6]])
    tiny = _priors_xyxy([[0.3, 0.3, 0.7, 0.7], [0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]])
    two = _priors_xyxy([[0.0, 0.0, 0.4, 0.4], [0.1, 0.0, 0.5, 0.4], [0.12, 0.0, 0.52, 0.4], [0.6, 0.6, 0.9, 0.9]])
    forced = _priors_xyxy([[0.0, 0.0, 0.4, 0.4], [0.0, 0.0, 0.4, 0.3], [0.7, 0.7, 1.0, 1.0]])
    threshold = _priors_xyxy([[0.1, 0.1, 0.4, 0.4], [0.175, 0.1, 0.475, 0.4], [0.1333, 0.1, 0.4333, 0.4]])
    seeds = [_random_objects(g, small, 3), _random_objects(g, small, 5), _random_objects(g, ssd300, 4)]
    return [
        _Case("no objects (G = 0)", (torch.zeros(0, 4), torch.zeros(0, dtype=long), small, 0.5),
              "an image without objects: every default box is background (label 0) and matched_boxes is still (P, 4); "
              "`.max()` over zero objects raises, so return early when G = 0"),
        _Case("one object exactly on a default box", (_t([[0.1, 0.1, 0.4, 0.4]]), _t([3], long), on_box, 0.5),
              "default boxes with IoU > iou_threshold take the object (label 3 here); the others are background (0)"),
        _Case("tiny object, best IoU < 0.5",
              (_t([[0.42, 0.42, 0.48, 0.48], [0.0, 0.0, 0.2, 0.2]]), _t([5, 2], long), tiny, 0.5), _MATCH_FORCED),
        _Case("two overlapping objects: each default box takes its best",
              (_t([[0.0, 0.0, 0.4, 0.4], [0.12, 0.0, 0.52, 0.4]]), _t([1, 2], long), two, 0.5), _MATCH_BEST),
        _Case("a forced match wins over a better threshold match",
              (_t([[0.0, 0.0, 0.4, 0.3], [0.2, 0.2, 0.6, 0.6]]), _t([1, 2], long), forced, 0.5), _MATCH_FORCED_WINS),
        _Case("iou_threshold = 0.7", (_t([[0.1, 0.1, 0.4, 0.4]]), _t([4], long), threshold, 0.7),
              "use the iou_threshold argument, not a fixed 0.5"),
        _Case("3 random objects, 92 default boxes (seed 0)", (*seeds[0], small, 0.5), _MATCH_BEST,
              inputs="3 random objects, 92 default boxes of a small config"),
        _Case("5 random objects, 92 default boxes (seed 0)", (*seeds[1], small, 0.5), _MATCH_BEST,
              inputs="5 random objects, 92 default boxes of a small config"),
        _Case("4 random objects, SSD300's 8732 default boxes (seed 0)", (*seeds[2], ssd300, 0.5), _MATCH_BEST,
              inputs="4 random objects, the 8732 SSD300 default boxes"),
    ]


def check_match(fn: Callable) -> CheckResult:
    """Check ``match(gt_boxes (G, 4), gt_labels (G,), priors_cxcywh (P, 4), iou_threshold=0.5) ->
    (matched_boxes (P, 4), labels (P,))`` against :func:`ssd_lib.matching.match`. Labels must agree
    exactly; matched boxes are compared where the label is > 0 (background rows are free)."""

    def compare(expected: tuple, got: Any, args: tuple) -> None:
        expected_boxes, expected_labels = expected
        boxes, labels = _unpack(got, 2, "(matched_boxes, labels)")
        _compare_tensor(expected_labels, labels, what="labels", kind="int",
                        diagnose=lambda e, o: _diagnose_labels(e, o, args),
                        shape_hint="one label per default box: (P,), 0 for background")
        boxes = _as_tensor(boxes, "matched_boxes")
        _check_form(expected_boxes, boxes, "matched_boxes", "float", _MATCH_BOXES)
        positive = expected_labels > 0
        _compare_tensor(expected_boxes[positive], boxes[positive], what="matched_boxes[labels > 0]",
                        diagnose=lambda e, o: _MATCH_BOXES)

    arg_names = ("gt_boxes", "gt_labels", "priors_cxcywh", "iou_threshold")
    return _run("check_match", fn, arg_names, _match_cases(), match, compare)


# ---------------------------------------------------------------------------------------------
# Notebook 5: the loss
# ---------------------------------------------------------------------------------------------

_SMOOTH_SMALL = "for |x| < 1 smooth L1 is 0.5 * x**2 (quadratic near 0, so the gradient fades smoothly)"
_SMOOTH_LARGE = "for |x| >= 1 smooth L1 is |x| - 0.5 (linear, so outliers do not dominate); both pieces give 0.5 at |x| = 1"


def _smooth_l1_reference(x: Tensor) -> Tensor:
    return F.smooth_l1_loss(x, torch.zeros_like(x), reduction="none", beta=1.0)


def _diagnose_smooth_l1(expected: Tensor, got: Tensor, x: Tensor) -> str:
    small = x.abs() < 1
    if not _close(got[small], expected[small]):
        return _SMOOTH_SMALL + " (plain |x| is L1)" if _close(got[small], x[small].abs()) else _SMOOTH_SMALL
    return _SMOOTH_LARGE + " (0.5 * x**2 everywhere is L2)" if _close(got[~small], 0.5 * x[~small] ** 2) else _SMOOTH_LARGE


def check_smooth_l1(fn: Callable) -> CheckResult:
    """Check ``smooth_l1(x) -> same shape`` (elementwise, beta = 1) against ``F.smooth_l1_loss(x, 0, reduction="none")``."""
    g = torch.Generator().manual_seed(0)
    cases = [
        _Case("x = 0", (_t([0.0]),), _SMOOTH_SMALL),
        _Case("small values |x| < 1", (_t([-0.5, 0.25, 0.9]),), _SMOOTH_SMALL),
        _Case("large values |x| > 1", (_t([-3.0, 1.5, 2.5]),), _SMOOTH_LARGE),
        _Case("|x| = 1, where the pieces meet", (_t([-1.0, 1.0]),), _SMOOTH_LARGE),
        _Case("2-D input (3, 4): elementwise, no sum", (torch.randn(3, 4, generator=g) * 2,),
              "smooth L1 here is elementwise: return a tensor of x's shape, no sum or mean"),
        _Case("random values (seed 0)", (torch.randn(50, generator=g) * 3,), _SMOOTH_SMALL + "; " + _SMOOTH_LARGE),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        _compare_tensor(expected, got, what="smooth L1", diagnose=lambda e, o: _diagnose_smooth_l1(e, o, args[0]),
                        shape_hint="smooth L1 here is elementwise: return a tensor of x's shape, no sum or mean")

    return _run("check_smooth_l1", fn, ("x",), cases, _smooth_l1_reference, compare)


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
    mask = _as_tensor(got, "the mask")
    _check_form(expected, mask, "the mask", "bool", "one entry per box: (B, P), like conf_loss")
    if bool((mask & positive).any()):
        b, p = torch.nonzero(mask & positive)[0].tolist()
        capped = ratio * int(positive[b].sum()) > int((~positive[b]).sum())
        raise _Mismatch(f"box [{b}, {p}] is a positive but your mask selects it", _HNM_CAP if capped else _HNM_POSITIVES)
    counts, wanted, negatives = mask.sum(dim=1), expected.sum(dim=1), (~positive).sum(dim=1)
    for b in range(len(mask)):  # a loop over the few images of a case, for a per-image message
        want, have = int(wanted[b]), int(counts[b])
        if have != want:
            raise _Mismatch(f"image {b} has {int(positive[b].sum())} positive(s) and {int(negatives[b])} negatives, so it "
                            f"needs min({ratio:g} x {int(positive[b].sum())}, {int(negatives[b])}) = {want} negatives; "
                            f"your mask selects {have}", _diagnose_negative_counts(counts, wanted, negatives))
        chosen, hardest = conf_loss[b][mask[b]].sort().values, conf_loss[b][expected[b]].sort().values
        if not torch.equal(chosen, hardest):
            raise _Mismatch(f"image {b}: your mask selects negatives with losses {_fmt(chosen)}, but the {want} hardest "
                            f"are {_fmt(hardest)}", "sort the negatives' losses in DESCENDING order and keep the first ones")


def check_hard_negative_mining(fn: Callable) -> CheckResult:
    """Check ``hard_negative_mask(conf_loss (B, P), positive (B, P) bool, neg_pos_ratio=3.0) -> (B, P) bool``
    against :func:`ssd_lib.loss.hard_negative_mask`. Any choice among tied losses is accepted."""
    g = torch.Generator().manual_seed(0)
    pos = lambda rows: torch.tensor(rows, dtype=torch.bool)  # noqa: E731
    random_positive = torch.rand(3, 40, generator=g) < 0.1
    random_positive[1] = False
    random_positive[0, 0] = random_positive[2, 5] = True
    cases = [
        _Case("no positives (zero positives)", (_t([[0.5, 2.0, 0.1, 1.5, 0.7, 0.3]]), pos([[False] * 6]), 3.0),
              "an image without positives gets no negatives either: neg_pos_ratio x 0 = 0"),
        _Case("one positive, 7 negatives", (_t([[0.1, 0.9, 0.3, 2.0, 0.5, 1.2, 0.05, 0.7]]),
                                            pos([[True] + [False] * 7]), 3.0), _HNM_COUNT),
        _Case("positives have the highest loss", (_t([[9.0, 1.0, 3.0, 8.0, 0.5, 2.0, 7.0, 4.0, 6.0, 5.0]]),
                                                  pos([[True, False, False, True] + [False] * 6]), 3.0), _HNM_POSITIVES),
        _Case("only 2 negatives for 3 x 2 positives (cap)", (_t([[1.0, 3.0, 2.0, 0.5]]),
                                                               pos([[True, False, True, False]]), 3.0), _HNM_CAP),
        _Case("two images with 1 and 2 positives (per image)",
              (_t([[10.0, 11, 12, 13, 14, 15, 16, 0.1], [0.0, 1, 2, 3, 4, 5, 9, 8]]),
               pos([[False] * 7 + [True], [False] * 6 + [True, True]]), 3.0), _HNM_PER_IMAGE),
        _Case("neg_pos_ratio = 1",
              (_t([[0.3, 0.1, 0.8, 0.2, 0.9, 0.4]]), pos([[True, False, False, True, False, False]]), 1.0),
              "use the neg_pos_ratio argument, not a fixed 3"),
        _Case("tied losses at the cut-off",
              (_t([[5.0, 3.0, 3.0, 3.0, 1.0, 0.0, 0.0, 2.0]]), pos([[False] * 7 + [True]]), 3.0),
              _HNM_COUNT + " (any of the tied boxes may be chosen)"),
        _Case("random batch of 3 images, one without positives (seed 0)",
              (torch.rand(3, 40, generator=g) * 4, random_positive, 3.0), _HNM_PER_IMAGE),
    ]
    return _run("check_hard_negative_mining", fn, ("conf_loss", "positive", "neg_pos_ratio"), cases,
                hard_negative_mask, _compare_hard_negatives)


_LOSS = ("L = (L_conf + L_loc) / N (Eq. 1): cross-entropy over positives and mined negatives, smooth L1 over positives, "
         "both summed, then divided by N, the number of positives in the whole batch")
_LOSS_NO_POSITIVES = "with N = 0 the loss is 0 (Eq. 1): divide by max(N, 1), or 0 / 0 gives NaN"


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


def _diagnose_loss(value: float, expected: float, labels: Tensor) -> Optional[str]:
    n = int((labels > 0).sum())
    if math.isnan(value):
        return _LOSS_NO_POSITIVES if n == 0 else "the loss is NaN: " + _LOSS
    if n > 1 and math.isclose(value, expected * n, rel_tol=1e-4):
        return f"divide by N = {n}, the number of positive default boxes in the batch (Eq. 1)"
    return None


def check_multibox_loss(fn: Callable) -> CheckResult:
    """Check ``multibox_loss(loc (B, P, 4), logits (B, P, C), loc_targets (B, P, 4), labels (B, P)) -> scalar``
    against ``MultiBoxLoss()(...).total`` (hard negative mining 3:1, alpha = 1)."""
    g = torch.Generator().manual_seed(0)
    differentiable = _loss_inputs(g, [3, 1], 10, 3)
    differentiable[0].requires_grad_(True)
    differentiable[1].requires_grad_(True)
    cases = [
        _Case("one image, 3 positives", _loss_inputs(g, [3], 12, 3), _LOSS),
        _Case("no positives (N = 0)", _loss_inputs(g, [0], 12, 3), _LOSS_NO_POSITIVES),
        _Case("two images, 2 and 4 positives", _loss_inputs(g, [2, 4], 16, 4), _LOSS),
        _Case("random batch of 3 images (seed 0)", _loss_inputs(g, [5, 0, 8], 40, 5), _LOSS),
        _Case("the loss is differentiable", differentiable,
              "return a tensor computed from loc and logits (no .item(), float() or numpy), so that .backward() works"),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        expected_value = float(expected)
        _compare_number(expected_value, got, what="the loss", atol=1e-5, rtol=1e-4,
                        diagnose=lambda value: _diagnose_loss(value, expected_value, args[3]))
        if args[0].requires_grad and not (isinstance(got, Tensor) and got.requires_grad):
            raise _Mismatch("your loss is not connected to loc and logits (it has no gradient)")

    return _run("check_multibox_loss", fn, ("loc", "logits", "loc_targets", "labels"), cases, _multibox_reference, compare)


# ---------------------------------------------------------------------------------------------
# Notebook 6: augmentation
# ---------------------------------------------------------------------------------------------

_FLIP = "mirror the image along its width (image.flip(-1)) and the boxes with x1' = W - x2, x2' = W - x1; y is unchanged"


def _hflip_reference(image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    image, target = RandomHorizontalFlip(p=1.0).apply(image, {"boxes": boxes}, {"flip": True})
    return image, target["boxes"]


def _diagnose_flip_image(got: Tensor, image: Tensor) -> str:
    if _close(got, image.flip(-2)):
        return "you flipped the image upside down: mirror the last dimension (width), image.flip(-1)"
    return "mirror the last dimension (width): image.flip(-1); the image is (3, H, W), channels first"


def _diagnose_flip_boxes(expected: Tensor, got: Tensor) -> str:
    if bool((got[:, 0] > got[:, 2]).any()):
        return "after mirroring, the old right edge is the new left edge: x1' = W - x2 and x2' = W - x1 (keep x1 <= x2)"
    if _close(got, expected - _t([1.0, 0.0, 1.0, 0.0])):
        return ("box coordinates are continuous: pixel column j covers [j, j + 1), so mirroring maps x to W - x, "
                "not W - 1 - x (that is for pixel indices)")
    if not _close(got[:, 1::2], expected[:, 1::2]):
        return "a horizontal flip leaves y1 and y2 unchanged"
    return _FLIP


def check_hflip(fn: Callable) -> CheckResult:
    """Check ``hflip(image (3, H, W), boxes (G, 4) pixel xyxy) -> (image, boxes)`` against
    ``ssd_lib.augment.RandomHorizontalFlip`` when it flips."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.arange(72, dtype=torch.float32).reshape(3, 4, 6) / 72
    random_boxes = _random_boxes(g, 4) * _t([8.0, 5.0, 8.0, 5.0])
    cases = [
        _Case("one box on a 4 x 6 image", (ramp, _t([[1.0, 0.0, 3.0, 2.0]])), _FLIP),
        _Case("a box touching the left edge", (ramp, _t([[0.0, 1.0, 2.0, 3.0]])), _FLIP),
        _Case("a box covering the whole image", (ramp, _t([[0.0, 0.0, 6.0, 4.0]])), _FLIP),
        _Case("no boxes (G = 0)", (ramp, torch.zeros(0, 4)),
              "no boxes: still flip the image and return an empty (0, 4) tensor"),
        _Case("5 x 8 image, random boxes (seed 0)", (torch.rand(3, 5, 8, generator=g), random_boxes), _FLIP),
    ]

    def compare(expected: tuple, got: Any, args: tuple) -> None:
        image, boxes = _unpack(got, 2, "(image, boxes)")
        _compare_tensor(expected[0], image, what="the image", atol=0.0, rtol=0.0,
                        shape_hint="the image keeps its shape (3, H, W), channels first",
                        diagnose=lambda e, o: _diagnose_flip_image(o, args[0]))
        _compare_tensor(expected[1], boxes, what="the boxes", diagnose=_diagnose_flip_boxes,
                        shape_hint="one box per input box: (G, 4)")

    return _run("check_hflip", fn, ("image", "boxes"), cases, _hflip_reference, compare)


# ---------------------------------------------------------------------------------------------
# Notebook 8: inference
# ---------------------------------------------------------------------------------------------

_NMS = ("visit the boxes by decreasing score; keep a box unless it overlaps an already KEPT box with IoU > iou_threshold; "
        "return the kept indices in that order")
_NMS_ORDER = "return the kept indices in decreasing score order (the order NMS visits them), not sorted by index"
_NMS_STRICT = ("suppress only when IoU > iou_threshold (strictly, as torchvision): a box at exactly the threshold is kept")
_NMS_CHAIN = ("only KEPT boxes suppress: a box that was itself suppressed must not suppress others "
              "(go through the boxes by score and compare each with the kept ones)")


def _diagnose_nms(expected: list[int], got: list[int], boxes: Tensor, threshold: float) -> str:
    if sorted(got) == sorted(expected):
        return _NMS_ORDER
    missing = [i for i in expected if i not in got]
    if not missing:
        return "this box overlaps a kept box with a higher score by IoU > iou_threshold: suppress it. " + _NMS
    iou = box_iou(boxes[missing[:1]], boxes[expected])[0]
    if bool((iou == threshold).any()):
        return _NMS_STRICT
    return _NMS_CHAIN


def check_nms(fn: Callable) -> CheckResult:
    """Check ``nms(boxes (N, 4), scores (N,), iou_threshold) -> kept indices (K,) int64`` (by decreasing score)
    against ``torchvision.ops.nms``."""
    g = torch.Generator().manual_seed(0)
    chain = _t([[0.0, 0.0, 2.0, 1.0], [0.5, 0.0, 2.5, 1.0], [1.0, 0.0, 3.0, 1.0]])  # IoU 0.6, 0.6 and 1/3
    chain_scores = _t([0.9, 0.8, 0.7])
    cases = [
        _Case("no boxes", (torch.zeros(0, 4), torch.zeros(0), 0.5),
              "no boxes: return an empty int64 tensor (torch.tensor([]) would be float; give dtype=torch.long)"),
        _Case("one box", (_t([[0.1, 0.1, 0.4, 0.4]]), _t([0.3]), 0.5), _NMS),
        _Case("two identical boxes: the higher score wins", (_t([[0.1, 0.1, 0.4, 0.4]] * 2), _t([0.3, 0.8]), 0.5), _NMS),
        _Case("disjoint boxes, scores not in index order",
              (_t([[0.0, 0.0, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3], [0.5, 0.5, 0.6, 0.6]]), _t([0.2, 0.9, 0.5]), 0.5),
              _NMS_ORDER),
        _Case("IoU exactly at the threshold is kept",
              (_t([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]]), _t([0.9, 0.8]), 0.5), _NMS_STRICT),
        _Case("chain A-B-C: a suppressed box suppresses nothing", (chain, chain_scores, 0.5), _NMS_CHAIN),
        _Case("iou_threshold = 0.7 keeps the whole chain", (chain, chain_scores, 0.7), "use the iou_threshold argument"),
        _Case("30 random boxes in 4 clusters (seed 0)", (*_clusters(g, 30), 0.45), _NMS),
        _Case("40 random boxes in 3 clusters (seed 0), threshold 0.3", (*_clusters(g, 40, 3), 0.3), _NMS),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        if not isinstance(got, Tensor) and len(got) == 0:
            got = torch.zeros(0, dtype=torch.long)  # an empty list is fine (torch.as_tensor([]) would be float)
        keep = _as_tensor(got, "the kept indices")
        if keep.ndim != 1:
            raise _Mismatch(f"expected a 1-D tensor of indices, got shape {tuple(keep.shape)}",
                            "return the indices of the kept boxes, e.g. torch.tensor(keep, dtype=torch.long)")
        if keep.is_floating_point() or keep.dtype == torch.bool:
            raise _Mismatch(f"expected integer indices (int64), got dtype {keep.dtype}",
                            "return the indices of the kept boxes (int64), not a mask or scores")
        if keep.tolist() != expected.tolist():
            raise _Mismatch(f"expected kept indices {_fmt(expected)}, got {_fmt(keep)}",
                            _diagnose_nms(expected.tolist(), keep.tolist(), args[0], args[2]))

    return _run("check_nms", fn, ("boxes", "scores", "iou_threshold"), cases, nms, compare)


def _clusters(generator: torch.Generator, n: int, k: int = 4) -> tuple[Tensor, Tensor]:
    """``n`` boxes jittered around ``k`` random boxes (so that many overlap), and distinct random scores."""
    cluster_boxes = _random_boxes(generator, k)[torch.randint(k, (n,), generator=generator)]
    boxes = cluster_boxes + torch.randn(n, 4, generator=generator) * 0.02
    boxes = torch.cat((torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])), dim=1)
    return boxes, torch.rand(n, generator=generator)


# ---------------------------------------------------------------------------------------------
# Notebook 9: evaluation
# ---------------------------------------------------------------------------------------------

_AP_11 = ("use_07_metric=True is VOC2007's 11-point AP: the mean over t = 0, 0.1, ..., 1 of the best precision at "
          "recall >= t (0 if recall never reaches t)")
_AP_ALL = ("use_07_metric=False is the VOC2010+ AP: the area under the precision envelope, sum over the recall steps "
           "of (r_i - r_(i-1)) * envelope_i, starting from recall 0")
_AP_ENVELOPE = ("use the precision envelope: at each recall the BEST precision at this or any higher recall "
                "(np.maximum.accumulate(precision[::-1])[::-1]), since raw precision zig-zags")
_AP_LEVELS = ("the 11 recall levels are exactly k / 10 and a level counts when recall >= t: np.arange(0, 1.1, 0.1) "
              "makes 0.3 into 0.30000000000000004, so 3 of 10 objects found misses its level; use np.arange(11) / 10")


def _pr_curve(hits: Sequence[bool], num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Ranked detections (True = true positive) to a (recall, precision) curve."""
    tp = np.cumsum(np.asarray(hits, dtype=bool))
    fp = np.cumsum(~np.asarray(hits, dtype=bool))
    return tp / num_gt, tp / np.maximum(tp + fp, 1)


def _random_pr_curve(seed: int, num_detections: int = 20, num_gt: int = 12) -> tuple[np.ndarray, np.ndarray]:
    hits = np.random.default_rng(seed).random(num_detections) < 0.5
    hits &= np.cumsum(hits) <= num_gt  # no more true positives than objects
    return _pr_curve(hits, num_gt)


def _diagnose_ap(value: float, args: tuple) -> Optional[str]:
    recall, precision, use_07_metric = args
    if math.isclose(value, average_precision(recall, precision, not use_07_metric), abs_tol=1e-9):
        return ("you computed the other AP: " + _AP_11) if use_07_metric else ("you computed the 11-point AP: " + _AP_ALL)
    return None


def check_average_precision(fn: Callable) -> CheckResult:
    """Check ``average_precision(recall (K,), precision (K,), use_07_metric=True) -> float`` (numpy inputs)
    against :func:`ssd_lib.metrics.average_precision`, with both values of ``use_07_metric``."""
    perfect = (np.array([0.5, 1.0]), np.array([1.0, 1.0]))
    zigzag = _pr_curve([True, False, True, True], num_gt=4)  # precision 1, 0.5, 0.67, 0.75
    three_of_ten = _pr_curve([True, True, True], num_gt=10)  # recall 0.1, 0.2, 0.3 exactly
    empty = (np.zeros(0), np.zeros(0))
    cases = [
        _Case("perfect detector (11-point)", (*perfect, True), _AP_11),
        _Case("perfect detector (all-point)", (*perfect, False), _AP_ALL),
        _Case("recall stops at exactly 0.3 = 3/10 (11-point)", (*three_of_ten, True), _AP_LEVELS),
        _Case("precision goes up again (11-point)", (*zigzag, True), _AP_ENVELOPE),
        _Case("precision goes up again (all-point)", (*zigzag, False), _AP_ENVELOPE + "; " + _AP_ALL),
        _Case("no detections: empty curve (11-point)", (*empty, True),
              "no detections: AP is 0 (the max of an empty array raises: handle it)"),
        _Case("no detections: empty curve (all-point)", (*empty, False), "no detections: AP is 0"),
        _Case("random ranking of 20 detections, 12 objects (seed 0, 11-point)", (*_random_pr_curve(0), True), _AP_11),
        _Case("random ranking of 20 detections, 12 objects (seed 1, all-point)", (*_random_pr_curve(1), False), _AP_ALL),
    ]

    def compare(expected: float, got: Any, args: tuple) -> None:
        _compare_number(expected, got, what="AP", atol=1e-9, rtol=1e-9, diagnose=lambda value: _diagnose_ap(value, args))

    return _run("check_average_precision", fn, ("recall", "precision", "use_07_metric"), cases, average_precision, compare)


# ---------------------------------------------------------------------------------------------
# Notebook 7: training
# ---------------------------------------------------------------------------------------------

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


def check_lr_schedule(fn: Callable) -> CheckResult:
    """Check ``lr_at(step, total_steps, base_lr, warmup_steps) -> float`` (linear warm-up, then cosine) against
    ``base_lr * ssd_lib.train.lr_factor`` with ``schedule="cosine"``."""
    cases = [
        _Case("first step of warm-up (step 0)", (0, 100, 0.1, 10), _LR_WARMUP),
        _Case("middle of warm-up", (4, 100, 0.1, 10), _LR_WARMUP),
        _Case("first step after warm-up (step = warmup_steps)", (10, 100, 0.1, 10), _LR_COSINE),
        _Case("half way through the run (cosine factor 0.5)", (50, 100, 0.1, 10), _LR_COSINE),
        _Case("last step", (99, 100, 0.1, 10), _LR_COSINE),
        _Case("no warm-up (warmup_steps = 0)", (0, 100, 0.1, 0),
              "warmup_steps = 0 means no warm-up: skip it (and do not divide by zero)"),
        *(_Case(f"random step (seed {seed})", _random_lr_case(seed), _LR_WARMUP + "; " + _LR_COSINE) for seed in range(3)),
    ]

    def compare(expected: float, got: Any, args: tuple) -> None:
        _compare_number(expected, got, what="lr", atol=1e-12, rtol=1e-6, diagnose=lambda value: _diagnose_lr(value, args))

    return _run("check_lr_schedule", fn, ("step", "total_steps", "base_lr", "warmup_steps"), cases, _lr_reference, compare)


# ---------------------------------------------------------------------------------------------
# Notebook 10: ablations
# ---------------------------------------------------------------------------------------------

_NOISE_RULE = ("difference = mean(variant) - mean(baseline); noise = 2 * sqrt(s_b**2 / n_b + s_v**2 / n_v) with s the "
               "SAMPLE standard deviation (np.std(values, ddof=1)) and n the number of seeds; within_noise = "
               "abs(difference) <= noise")


def _compare_runs_reference(baseline: list, variant: list) -> tuple:
    from ssd_lib.course.ablations import compare_runs

    return compare_runs(baseline, variant)


def _diagnose_noise(value: float, args: tuple) -> Optional[str]:
    b, v = (np.asarray(a, dtype=float) for a in args)
    population = 2 * math.sqrt(b.var() / b.size + v.var() / v.size)
    no_sqrt_n = 2 * math.sqrt(b.var(ddof=1) + v.var(ddof=1))
    if math.isclose(value, population, rel_tol=1e-6):
        return "you used the population standard deviation (ddof=0); with a few seeds use the sample one, ddof=1"
    if math.isclose(value, no_sqrt_n, rel_tol=1e-6):
        return ("the noise of a MEAN over n seeds is its standard error s / sqrt(n): divide each variance by its "
                "number of seeds before adding them")
    return None


def _random_runs(seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8)
    n_b, n_v = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    shift = rng.normal(0, 0.05)
    return ([round(float(x), 4) for x in base + rng.normal(0, 0.02, n_b)],
            [round(float(x), 4) for x in base + shift + rng.normal(0, 0.02, n_v)])


def check_compare_runs(fn: Callable) -> CheckResult:
    """Check ``compare_runs(baseline, variant) -> (difference, noise, within_noise)`` (one metric value
    per seed on each side) against ``ssd_lib.course.ablations.compare_runs`` with k = 2."""
    cases = [
        _Case("variant clearly worse (difference far beyond the spread)", ([0.50, 0.52, 0.51], [0.40, 0.41, 0.39]),
              _NOISE_RULE),
        _Case("variant better by less than the spread", ([0.50, 0.56, 0.44], [0.53, 0.47, 0.59]), _NOISE_RULE),
        _Case("variant better, beyond the noise", ([0.30, 0.31, 0.32], [0.36, 0.35, 0.37]),
              "difference is variant minus baseline, so a better variant gives a positive difference"),
        _Case("variant worse, just beyond the noise", ([0.60, 0.62, 0.61], [0.58, 0.57, 0.59]),
              "compare the SIZE of the difference with the noise: abs(difference) <= noise, a worse variant is "
              "not within the noise just because its difference is negative"),
        _Case("different numbers of seeds (3 and 5)", ([0.40, 0.45, 0.50], [0.42, 0.44, 0.46, 0.48, 0.43]), _NOISE_RULE),
        *(_Case(f"random runs (seed {seed})", _random_runs(seed), _NOISE_RULE) for seed in range(3)),
    ]

    def compare(expected: tuple, got: Any, args: tuple) -> None:
        difference, noise, within = _unpack(got, 3, "(difference, noise, within_noise)")
        _compare_number(expected[0], difference, what="difference", atol=1e-9, rtol=1e-6,
                        diagnose=lambda value: ("difference is mean(variant) - mean(baseline), you have it the other "
                                                "way round") if math.isclose(value, -expected[0], rel_tol=1e-6) else None)
        _compare_number(expected[1], noise, what="noise", atol=1e-9, rtol=1e-6,
                        diagnose=lambda value: _diagnose_noise(value, args))
        if not isinstance(within, (bool, np.bool_)) and not (isinstance(within, Tensor) and within.numel() == 1):
            raise _Mismatch(f"expected within_noise as True or False, got {type(within).__name__}",
                            "return a bool: abs(difference) <= noise")
        if bool(within) != bool(expected[2]):
            raise _Mismatch(f"expected within_noise={expected[2]}, got {bool(within)} (difference {expected[0]:+.4g}, "
                            f"noise {expected[1]:.4g})",
                            "compare the SIZE of the difference with the noise: abs(difference) <= noise"
                            if expected[0] < 0 and bool(within) else None)

    return _run("check_compare_runs", fn, ("baseline", "variant"), cases, _compare_runs_reference, compare)


# ---------------------------------------------------------------------------------------------
# Notebook 12: deployment
# ---------------------------------------------------------------------------------------------

_PREDICT_STEPS = ("the deployed path must do exactly what evaluate.predict does: resize each image to image_size "
                  "(bilinear, align_corners=False, no antialias), normalise with the ImageNet mean and std, run the "
                  "network once on the stacked batch, then detect(loc, logits, priors_cxcywh, score_threshold) and "
                  "scale_detections to each image's own (height, width)")
_PREDICT_NORMALISE = ("normalise as in training: (image - IMAGENET_MEAN) / IMAGENET_STD per channel (ssd_lib.augment); "
                      "a network fed unnormalised pixels sees inputs it was never trained on")
_PREDICT_PIXELS = ("detect returns boxes in [0, 1] of the network's input; scale them to pixels of each ORIGINAL image: "
                   "scale_detections(dets, [image.shape[-2:] for image in images]) (x by the width, y by the height)")
_PREDICT_POST = ("pass the raw loc and logits to detect unchanged: it decodes the offsets and applies the softmax "
                 "itself (doing either twice changes boxes or scores)")
_SAME_RULE = ("two detections are the same when they have the same label, scores within score_tol and every corner "
              "within box_tol of the image size (x within box_tol * width, y within box_tol * height); the lists must "
              "pair up one to one")
_SAME_ORDER = ("the order is not part of the result: two detections with nearly equal scores may come out in either "
               "order from two runtimes, so pair each detection with a partner instead of comparing index by index "
               "(sorting by score does not help when two scores are within the tolerance)")
_SAME_SCALE = ("box_tol is a fraction of the image size: on a 640-pixel-wide image 1e-3 allows 0.64 pixels in x; "
               "multiply by the width for x and by the height for y")


class _ImageList(list):
    """A list of (3, H, W) tensors whose ``==`` compares the tensors exactly (the check machinery
    compares inputs before and after the learner's call)."""

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, list) and len(self) == len(other)
                and all(torch.equal(a, b) for a, b in zip(self, other)))

    __hash__ = None  # type: ignore[assignment]


class _Detections(dict):
    """One image's detections (``boxes``, ``scores``, ``labels``) whose ``==`` compares tensors exactly."""

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, dict) and self.keys() == other.keys()
                and all(isinstance(other[k], Tensor) and self[k].shape == other[k].shape and torch.equal(self[k], other[k])
                        for k in self))

    __hash__ = None  # type: ignore[assignment]


def _checker_network(num_classes: int = 4, image_size: int = 64, seed: int = 0):
    """A small SSD with seeded random weights, run like an ONNX Runtime session: numpy float32
    ``(B, 3, S, S)`` in, numpy ``(loc, logits)`` out. Returns ``(run_network, priors_cxcywh)``."""
    from ssd_lib.model import ssd_small

    with torch.random.fork_rng(devices=[]):  # leave the learner's random state alone
        torch.manual_seed(seed)
        model = ssd_small(num_classes, image_size=image_size).eval()
        with torch.no_grad():  # a fresh network's outputs are ~0 (scores ~1/C, boxes = default boxes): scale them
            for loc_head, conf_head in zip(model.loc_heads, model.conf_heads):
                loc_head.weight.mul_(30.0)
                conf_head.weight.mul_(100.0)

    def run_network(batch: Any) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(batch, np.ndarray):
            raise TypeError(f"the network (like ONNX Runtime) takes a numpy array, got {type(batch).__name__}; "
                            "convert the batch with .numpy()")
        if batch.dtype != np.float32:
            raise TypeError(f"the network (like ONNX Runtime) takes float32, got {batch.dtype}; use .astype(np.float32)")
        if batch.ndim != 4 or batch.shape[1:] != (3, image_size, image_size):
            raise ValueError(f"the network takes a batch of shape (B, 3, {image_size}, {image_size}), got "
                             f"{tuple(batch.shape)}: resize every image to image_size and stack them")
        with torch.no_grad():
            loc, logits = model(torch.from_numpy(batch.copy()))
        return loc.numpy(), logits.numpy()

    return run_network, model.priors.clone()


def _checker_images(sizes: Sequence[tuple[int, int]], seed: int) -> _ImageList:
    """Rendered shapes images (so that the network sees structure), resized to each (height, width)."""
    from ssd_lib.data import ShapesDataset

    dataset = ShapesDataset("test", size=len(sizes), seed=seed, image_size=96)
    return _ImageList(F.interpolate(dataset[i][0][None], size=size, mode="bilinear", align_corners=False)[0].clamp(0, 1)
                      for i, size in enumerate(sizes))


def _predict_reference(run_network: Callable, images: list, priors_cxcywh: Tensor, image_size: int,
                       score_threshold: float = 0.01) -> list:
    from ssd_lib.export import predict_with

    return predict_with(run_network, images, priors_cxcywh, image_size, score_threshold)


def _diagnose_predict(expected: dict, got: dict, size: tuple[int, int]) -> Optional[str]:
    """A hint from how the learner's detections differ; None: the case's own hint."""
    from ssd_lib.export import match_detections

    height, width = size
    if not len(got["scores"]) or not len(expected["scores"]):
        return None
    if float(got["boxes"].abs().max()) <= 1.0 + 1e-6 < float(expected["boxes"].abs().max()):
        return _PREDICT_PIXELS
    swapped = {**got, "boxes": got["boxes"] * got["boxes"].new_tensor([width / height, height / width] * 2)}
    if height != width and not match_detections(expected, swapped, size)["only_a"]:
        return "you scaled x by the height and y by the width: size is (height, width) = image.shape[-2:]. " + _PREDICT_PIXELS
    best_box_error = float(((got["boxes"][0] - expected["boxes"][0]).abs() / got["boxes"].new_tensor([width, height] * 2)).max())
    best_score_error = abs(float(got["scores"][0]) - float(expected["scores"][0]))
    if best_box_error <= 1e-3 and best_score_error > 1e-2:
        return _PREDICT_POST
    if best_box_error <= 1e-3 and best_score_error <= 1e-4 and len(got["scores"]) != len(expected["scores"]):
        return (f"your best detections agree, but you have {len(got['scores'])} detections instead of "
                f"{len(expected['scores'])}: pass score_threshold on to detect and keep its other defaults")
    if best_box_error <= 1e-2:
        return ("close, but not equal: the preprocessing must be exactly the training one (SSDTransform: bilinear "
                "resize with align_corners=False and no antialias, then (image - mean) / std)")
    return None


def check_predict_with(fn: Callable) -> CheckResult:
    """Check ``predict_with(run_network, images, priors_cxcywh, image_size, score_threshold=0.01) -> list of
    {"boxes" (D, 4) pixel xyxy, "scores", "labels"}`` against :func:`ssd_lib.export.predict_with`, with a
    seeded random small SSD run like an ONNX Runtime session (numpy in, numpy out) and rendered
    images of several sizes. Detections are compared as :func:`ssd_lib.export.same_detections` does."""
    from ssd_lib.export import same_detections

    run_network, priors = _checker_network()
    cases = [
        _Case("one 64x64 image (already the input size)", (run_network, _checker_images([(64, 64)], 0), priors, 64),
              _PREDICT_NORMALISE, inputs="images: 1 of 64x64"),
        _Case("one 80x120 image (height 80, width 120)", (run_network, _checker_images([(80, 120)], 1), priors, 64),
              "resize each image to image_size for the network, then scale its boxes back to its own height and width",
              inputs="images: 1 of 80x120"),
        _Case("three images of different sizes in one batch",
              (run_network, _checker_images([(100, 70), (48, 130), (64, 64)], 2), priors, 64),
              _PREDICT_STEPS, inputs="images: 100x70, 48x130, 64x64"),
        _Case("score_threshold = 0.3", (run_network, _checker_images([(90, 90), (60, 150)], 3), priors, 64, 0.3),
              "pass score_threshold on to detect", inputs="images: 90x90, 60x150; score_threshold=0.3"),
    ]

    def compare(expected: list, got: Any, args: tuple) -> None:
        images = args[1]
        if not isinstance(got, (list, tuple)) or len(got) != len(images):
            raise _Mismatch(f"expected a list of {len(images)} dicts (one per image), got "
                            f"{type(got).__name__}{f' of length {len(got)}' if isinstance(got, (list, tuple)) else ''}",
                            "return one dict per image, as scale_detections does")
        for index, (want, have, image) in enumerate(zip(expected, got, images)):
            size = tuple(image.shape[-2:])
            if not isinstance(have, dict) or not {"boxes", "scores", "labels"} <= set(have):
                raise _Mismatch(f"image {index}: expected a dict with boxes, scores and labels, got "
                                f"{type(have).__name__}", "return the dicts that scale_detections gives")
            have = {key: _as_tensor(have[key], key) for key in ("boxes", "scores", "labels")}
            if not same_detections(want, have, size):
                raise _Mismatch(f"image {index} ({size[0]}x{size[1]}): expected {len(want['scores'])} detections "
                                f"(best: label {int(want['labels'][0]) if len(want['labels']) else '-'}, box "
                                f"{_fmt(want['boxes'][:1])}), got {len(have['scores'])} that do not match "
                                f"(best: box {_fmt(have['boxes'][:1])})", _diagnose_predict(want, have, size))

    return _run("check_predict_with", fn, ("run_network", "images", "priors_cxcywh", "image_size", "score_threshold"),
                cases, _predict_reference, compare)


def _dets(rows: list, size: tuple[int, int] = (1.0, 1.0)) -> _Detections:
    """Detections from rows (x1, y1, x2, y2, score, label) with box fractions scaled to ``size`` = (H, W) pixels."""
    height, width = size
    table = torch.tensor(rows, dtype=torch.float64).reshape(-1, 6)
    boxes = (table[:, :4] * torch.tensor([width, height, width, height], dtype=torch.float64)).float()
    return _Detections(boxes=boxes, scores=table[:, 4].float(), labels=table[:, 5].long())


def _same_reference(det_a: dict, det_b: dict, size: tuple, box_tol: float = 1e-3, score_tol: float = 1e-4) -> bool:
    from ssd_lib.export import same_detections

    return same_detections(det_a, det_b, size, box_tol, score_tol)


def check_same_detections(fn: Callable) -> CheckResult:
    """Check ``same_detections(det_a, det_b, size, box_tol=1e-3, score_tol=1e-4) -> bool`` (one image's
    detections from two paths; ``size = (height, width)``) against :func:`ssd_lib.export.same_detections`."""
    size = (480, 640)
    base = [[0.10, 0.20, 0.40, 0.60, 0.91, 1], [0.50, 0.10, 0.90, 0.50, 0.62, 3], [0.05, 0.55, 0.30, 0.95, 0.30, 2]]
    tie = [[0.10, 0.20, 0.40, 0.60, 0.800040, 1], [0.55, 0.15, 0.85, 0.45, 0.800000, 2]]
    px = lambda dx, dy: [[0.10 + dx / 640, 0.20 + dy / 480, 0.40, 0.60, 0.91, 1]] + base[1:]  # noqa: E731
    g = torch.Generator().manual_seed(0)
    random_rows = torch.cat((_random_boxes(g, 12).double(), torch.rand(12, 1, generator=g).double() * 0.9 + 0.05,
                             torch.randint(1, 7, (12, 1), generator=g).double()), dim=1).tolist()
    shuffled = [random_rows[i] for i in torch.randperm(12, generator=g).tolist()]

    def case(name: str, rows_a: list, rows_b: list, hint: str, *tolerances: float) -> _Case:
        extra = f", box_tol={tolerances[0]:g}, score_tol={tolerances[1]:g}" if tolerances else ""
        return _Case(name, (_dets(rows_a, size), _dets(rows_b, size), size, *tolerances), hint,
                     inputs=f"det_a: {len(rows_a)} detections, det_b: {len(rows_b)}, size={size}{extra}")

    cases = [
        case("identical detections", base, base, _SAME_RULE),
        case("no detections on either side", [], [], "two empty lists agree (and must not raise)"),
        case("the same detections in another order", base, base[::-1], _SAME_ORDER),
        case("two scores 4e-5 apart come out in the other order", tie,
             [[*tie[1][:4], 0.800040, 2], [*tie[0][:4], 0.800010, 1]], _SAME_ORDER),
        case("a box 0.5 pixels off in x on a 640-pixel-wide image (within 1e-3 of the width)", base, px(0.5, 0),
             _SAME_SCALE),
        case("a box 0.6 pixels off in y on a 480-pixel-high image (beyond 1e-3 of the height)", base, px(0, 0.6),
             "x is compared with box_tol * width and y with box_tol * height (size is (height, width))"),
        case("a box 3 pixels off", base, px(3, 0), _SAME_SCALE),
        case("one score 2e-4 lower", base, [base[0], [*base[1][:4], 0.6198, 3], base[2]],
             "compare the scores too, within score_tol"),
        case("one label differs", base, [base[0], [*base[1][:5], 4], base[2]], "the labels must be equal"),
        case("one detection missing", base, base[:2], "different numbers of detections are never the same"),
        case("a duplicate on one side, a different detection on the other", [base[0], base[0], base[2]], base,
             "pair each detection with ONE partner: once used, a partner cannot match another detection"),
        case("12 random detections, shuffled", random_rows, shuffled, _SAME_ORDER),
        case("looser tolerances (box_tol 0.01, score_tol 0.01)", base,
             [[0.105, 0.20, 0.40, 0.60, 0.905, 1]] + base[1:], "use the box_tol and score_tol arguments", 0.01, 0.01),
    ]

    def compare(expected: bool, got: Any, args: tuple) -> None:
        if isinstance(got, Tensor) and got.numel() == 1:
            got = bool(got)
        if not isinstance(got, (bool, np.bool_)):
            raise _Mismatch(f"expected True or False, got {type(got).__name__}", "return a bool")
        if bool(got) != expected:
            raise _Mismatch(f"expected {expected}, got {bool(got)}", None)

    return _run("check_same_detections", fn, ("det_a", "det_b", "size", "box_tol", "score_tol"), cases,
                _same_reference, compare)


# ---------------------------------------------------------------------------------------------
# Notebook 11: debugging. The lab's fixed pieces that have no checker above (its decode, smooth L1,
# hard negative mining and lr schedule exercises use check_decode, check_smooth_l1,
# check_hard_negative_mining and check_lr_schedule); references are the library's own functions.
# ---------------------------------------------------------------------------------------------

_CLIP = ("clip in corner form: convert (cx, cy, w, h) to corners (x1, y1, x2, y2), clamp each corner to [0, 1], "
         "convert back; a box that sticks out shrinks and its centre moves inwards")


def _clip_priors_reference(priors_cxcywh: Tensor) -> Tensor:
    from ssd_lib.priors import clip_priors

    return clip_priors(priors_cxcywh)


def _diagnose_clip(expected: Tensor, got: Tensor, priors: Tensor) -> str:
    if _close(got, priors.clamp(0.0, 1.0)):
        return ("you clamped (cx, cy, w, h) directly: a centre at 0.05 with width 0.2 is inside [0, 1] but the box "
                "reaches x1 = -0.05, so it still sticks out. " + _CLIP)
    if _close(got, cxcywh_to_xyxy(expected)):
        return "you returned corners (x1, y1, x2, y2): convert the clipped corners back to (cx, cy, w, h)"
    return _CLIP


def check_clip_priors(fn: Callable) -> CheckResult:
    """Check ``clip_priors(priors_cxcywh (P, 4)) -> (P, 4) cxcywh`` (clipped to the image in corner form)
    against :func:`ssd_lib.priors.clip_priors`."""
    g = torch.Generator().manual_seed(0)
    random_priors = torch.cat((torch.rand(20, 2, generator=g), 0.05 + torch.rand(20, 2, generator=g) * 0.6), dim=1)
    cases = [
        _Case("boxes inside the image stay as they are", (_t([[0.5, 0.5, 0.2, 0.4], [0.3, 0.7, 0.1, 0.1]]),),
              "a box inside the image is not changed by clipping: " + _CLIP),
        _Case("a box sticking out on the left", (_t([[0.05, 0.5, 0.2, 0.2]]),), _CLIP),
        _Case("a box in a corner, out on two sides", (_t([[0.95, 0.02, 0.3, 0.1]]),), _CLIP),
        _Case("a box wider than the image", (_t([[0.5, 0.5, 1.4, 0.5]]),), _CLIP),
        _Case("no boxes (0, 4)", (torch.zeros(0, 4),), "no boxes in, no boxes out: an empty (0, 4) tensor"),
        _Case("20 random default boxes (seed 0)", (random_priors,), _CLIP),
        _Case("SSD300's 8732 default boxes", (default_boxes(PriorConfig.ssd300()),), _CLIP,
              inputs="default_boxes(PriorConfig.ssd300())"),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        _compare_tensor(expected, got, what="the clipped default boxes", diagnose=lambda e, o: _diagnose_clip(e, o, args[0]),
                        shape_hint="one (cx, cy, w, h) row per default box: (P, 4)")

    return _run("check_clip_priors", fn, ("priors_cxcywh",), cases, _clip_priors_reference, compare)


_LABELS = ("label 0 is background, so the object classes start at 1: classes[k] (k counted from 0) gets label k + 1, "
           "e.g. classes.index(name) + 1")


def _labels_reference(names: list, classes: list) -> Tensor:
    from ssd_lib.data import labels_from_names

    return labels_from_names(names, classes)


def _diagnose_labels_from_names(expected: Tensor, got: Tensor) -> str:
    if _close(got.double(), expected.double() - 1):
        return "your labels start at 0, and 0 means background: the first class would be trained as background. " + _LABELS
    return _LABELS


def check_labels_from_names(fn: Callable) -> CheckResult:
    """Check ``labels_from_names(names: list[str], classes: list[str]) -> (G,) int64`` (SSD labels 1..C, 0 being
    background) against :func:`ssd_lib.data.labels_from_names`."""
    from ssd_lib.data import SHAPE_NAMES, VOC_CLASSES

    shapes, voc = list(SHAPE_NAMES), list(VOC_CLASSES)
    rng = random.Random(0)
    cases = [
        _Case("one object of the first class", (["circle"], shapes), _LABELS),
        _Case("several objects, the last class among them", (["star", "circle", "ring", "circle"], shapes), _LABELS),
        _Case("VOC class names", (["person", "aeroplane", "tvmonitor", "dog"], voc), _LABELS),
        _Case("no objects", ([], shapes),
              "an image without objects gives an empty int64 tensor: torch.tensor([], dtype=torch.long)"),
        _Case("12 random VOC objects (seed 0)", ([rng.choice(voc) for _ in range(12)], voc), _LABELS),
    ]

    def compare(expected: Tensor, got: Any, args: tuple) -> None:
        _compare_tensor(expected, got, what="labels", kind="int", diagnose=_diagnose_labels_from_names,
                        shape_hint="one label per object name: (G,)")

    return _run("check_labels_from_names", fn, ("names", "classes"), cases, _labels_reference, compare)


def _num_classes_reference(classes: list) -> int:
    from ssd_lib.data import num_classes_for

    return num_classes_for(classes)


def check_num_classes(fn: Callable) -> CheckResult:
    """Check ``num_classes_for(classes: list[str]) -> int`` (the model's C, background included) against
    :func:`ssd_lib.data.num_classes_for`."""
    from ssd_lib.data import SHAPE_NAMES, VOC_CLASSES

    hint = "num_classes counts background too: the logits need one column per object class plus one for class 0"
    cases = [
        _Case("the 6 shape classes", (list(SHAPE_NAMES),), hint),
        _Case("the 20 VOC classes (SSD300 on VOC has 21 outputs per box)", (list(VOC_CLASSES),), hint),
        _Case("one object class", (["defect"],), hint),
    ]

    def compare(expected: int, got: Any, args: tuple) -> None:
        diagnose = (lambda value: "you left out background: " + hint + " (len(classes) + 1)"  # noqa: E731
                    if value == len(args[0]) else None)
        _compare_number(expected, got, what="num_classes", atol=0.0, rtol=0.0, diagnose=diagnose)

    return _run("check_num_classes", fn, ("classes",), cases, _num_classes_reference, compare)


_SANITIZE = ("clip x to [0, width] and y to [0, height], then keep only the boxes with x2 > x1 and y2 > y1 (and their "
             "labels): a box without area has log(width) = -inf or NaN as its target")


def _sanitize_reference(boxes: Tensor, labels: Tensor, width: float, height: float) -> tuple[Tensor, Tensor]:
    from ssd_lib.data import sanitize_boxes

    return sanitize_boxes(boxes, labels, width, height)


def _diagnose_sanitize(expected_boxes: Tensor, got_boxes: Tensor) -> str:
    sizes = got_boxes[:, 2:] - got_boxes[:, :2] if got_boxes.ndim == 2 and got_boxes.shape[-1] == 4 else None
    if sizes is not None and len(sizes) > len(expected_boxes):
        if bool((sizes < 0).any()):
            return "you kept a box with x2 < x1 or y2 < y1 (negative size): " + _SANITIZE
        if bool((sizes == 0).any()):
            return ("you kept a box of zero width or height: keep x2 > x1 strictly (>= keeps it, and log(0) = -inf). "
                    + _SANITIZE)
    if sizes is not None and len(sizes) < len(expected_boxes):
        return "you dropped a box that has an area inside the image: drop only those with x2 <= x1 or y2 <= y1 after clipping"
    return _SANITIZE


def check_sanitize_boxes(fn: Callable) -> CheckResult:
    """Check ``sanitize_boxes(boxes (G, 4) pixel xyxy, labels (G,), width, height) -> (boxes (G', 4), labels (G',))``
    against :func:`ssd_lib.data.sanitize_boxes` (clip to the image, drop boxes without area)."""
    g = torch.Generator().manual_seed(0)
    long = torch.long
    corner = torch.rand(10, 2, generator=g) * _t([90.0, 70.0]) - _t([13.0, 11.0])  # some outside the 64 x 48 image
    random_boxes = torch.cat((corner, corner + 3 + torch.rand(10, 2, generator=g) * 25), dim=1)
    random_boxes[3, 2] = random_boxes[3, 0]  # one of zero width
    random_boxes[6, [1, 3]] = random_boxes[6, [3, 1]]  # one upside down
    cases = [
        _Case("boxes inside the image are kept as they are",
              (_t([[2.0, 3.0, 20.0, 30.0], [10.0, 10.0, 60.0, 40.0]]), _t([1, 2], long), 64, 48), _SANITIZE),
        _Case("a box partly outside is clipped", (_t([[-5.0, 10.0, 20.0, 60.0]]), _t([3], long), 64, 48), _SANITIZE),
        _Case("a box entirely outside the image (zero width once clipped)",
              (_t([[5.0, 5.0, 15.0, 15.0], [70.0, 10.0, 90.0, 20.0]]), _t([1, 4], long), 64, 48), _SANITIZE),
        _Case("a box of zero width inside the image (x1 = x2)",
              (_t([[12.0, 5.0, 12.0, 25.0], [1.0, 1.0, 9.0, 9.0]]), _t([2, 5], long), 64, 48), _SANITIZE),
        _Case("a box annotated upside down (y2 < y1)",
              (_t([[1.0, 30.0, 9.0, 9.0], [1.0, 1.0, 9.0, 9.0]]), _t([6, 1], long), 64, 48), _SANITIZE),
        _Case("no boxes", (torch.zeros(0, 4), torch.zeros(0, dtype=long), 64, 48),
              "no boxes: return an empty (0, 4) tensor and an empty int64 labels tensor"),
        _Case("10 random boxes, some outside, one flat, one upside down (seed 0)",
              (random_boxes, torch.randint(1, 7, (10,), generator=g), 64, 48), _SANITIZE),
    ]

    def compare(expected: tuple, got: Any, args: tuple) -> None:
        boxes, labels = _unpack(got, 2, "(boxes, labels)")
        boxes_t = _as_tensor(boxes, "the boxes")
        _compare_tensor(expected[0], boxes_t, what="the kept boxes", diagnose=lambda e, o: _diagnose_sanitize(e, o),
                        shape_hint=_diagnose_sanitize(expected[0], boxes_t))
        _compare_tensor(expected[1], labels, what="the kept labels", kind="int",
                        shape_hint="drop the label of each dropped box too (index labels with the same mask)")

    return _run("check_sanitize_boxes", fn, ("boxes", "labels", "width", "height"), cases, _sanitize_reference, compare)


_MEAN_AP = ("mAP is the mean of the AP over the classes that have ground truth (num_gt > 0); a class without objects "
            "has no AP (it is undefined, not 0): leave it out. With no ground truth at all, return float('nan')")


def _mean_ap_reference(ap: list, num_gt: list) -> float:
    from ssd_lib.metrics import mean_average_precision

    return mean_average_precision(ap, num_gt)


def _diagnose_mean_ap(value: float, args: tuple) -> Optional[str]:
    ap = np.asarray(args[0], dtype=np.float64)
    if math.isnan(value):
        return "a class without ground truth has AP NaN, and one NaN makes the whole mean NaN: " + _MEAN_AP
    if ap.size and math.isclose(value, float(np.nan_to_num(ap).mean()), rel_tol=1e-9):
        return "you averaged over every class, counting those without ground truth as 0: " + _MEAN_AP
    return None


def check_mean_average_precision(fn: Callable) -> CheckResult:
    """Check ``mean_average_precision(ap: list[float], num_gt: list[int]) -> float`` against
    :func:`ssd_lib.metrics.mean_average_precision` (classes without ground truth left out; NaN if none has)."""
    nan = float("nan")
    rng = np.random.default_rng(0)
    num_gt = [int(n) for n in rng.integers(0, 4, 10)]
    random_ap = [round(float(a), 4) if n else nan for a, n in zip(rng.random(10), num_gt)]
    cases = [
        _Case("every class has ground truth", ([0.5, 0.7, 0.9], [3, 1, 2]), _MEAN_AP),
        _Case("one class without ground truth, its AP given as NaN", ([0.6, nan, 0.8], [2, 0, 5]), _MEAN_AP),
        _Case("one class without ground truth, its AP given as 0", ([0.6, 0.0, 0.8], [2, 0, 5]), _MEAN_AP),
        _Case("a class WITH ground truth and AP 0 counts", ([0.0, 0.9, nan], [4, 1, 0]),
              "AP 0 of a class that has objects is a real result (nothing found): keep it in the mean; select by "
              "num_gt, not by the AP value"),
        _Case("no class has ground truth", ([nan, nan], [0, 0]), _MEAN_AP),
        _Case("10 classes, some without ground truth (seed 0)", (random_ap, num_gt), _MEAN_AP),
    ]

    def compare(expected: float, got: Any, args: tuple) -> None:
        if math.isnan(expected):
            try:
                value = float(got)
            except (TypeError, ValueError):
                raise _Mismatch(f"expected a number, got {type(got).__name__}", "return a float") from None
            if not math.isnan(value):
                raise _Mismatch(f"expected nan (no class has ground truth, so there is nothing to average), got {value:.6g}",
                                _MEAN_AP)
            return
        _compare_number(expected, got, what="mAP", atol=1e-9, rtol=1e-9, diagnose=lambda value: _diagnose_mean_ap(value, args))

    return _run("check_mean_average_precision", fn, ("ap", "num_gt"), cases, _mean_ap_reference, compare)
