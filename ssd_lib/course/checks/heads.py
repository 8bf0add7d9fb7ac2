"""Lesson 4 (notebook 04_network), exercise 2: SSD's output layer (Sec. 2.1, Fig. 2).

``check_predict`` compares ``predict(features, loc_heads, conf_heads, num_classes) -> (loc, logits)`` with
:func:`ssd_lib.model.predict_heads` (what ``SSD.forward`` runs after the backbone): each source map's 3x3 heads
run, and their ``(B, k*4, H, W)`` and ``(B, k*C, H, W)`` outputs laid out in the order of the default boxes
(map by map, cell by cell in row-major order, then the k boxes of a cell), on seeded random maps and heads.
A wrong order gives the right shape and no error, so the check names the order it recognises.
(Its own module, next to ``network``'s ``check_out_size``, to keep each under 300 lines.)

Usage::

    from ssd_lib.course.checks import check_predict
    assert check_predict(predict)
"""
from __future__ import annotations

import random
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection.ssd import SSDHead, SSDScoringHead

from ssd_lib.model import SSD, predict_heads
from ssd_lib.priors import PriorConfig

from . import hidden
from .harness import Case, CheckResult, Mismatch, all_close, as_tensor, check_form, fmt, run, unpack
from .tripwire import Forbid

_ORDER = ("lay the rows out as the default boxes are: map by map (in the order of features), then cell by cell in "
          "row-major order (row i, then column j), then the k boxes of the cell. A head's (B, k*4, H, W) output "
          "becomes (B, H*W*k, 4) by moving the channel axis last (permute(0, 2, 3, 1)) and reshaping; torch.cat then "
          "joins the maps along dim 1")

# (a wrong way to flatten one head's output p of shape (B, k*n, H, W) to (B, H*W*k, n), the hint that names it);
# {n} is 4 for loc and num_classes for logits
_WRONG_ORDERS = (
    (lambda p, b, k, h, w, n: p.reshape(b, -1, n),
     "you reshaped (B, k*{n}, H, W) straight to (B, -1, {n}) without moving the channel axis last: a row then holds "
     "one channel of {n} neighbouring cells, not the {n} numbers of one box. Nothing crashes, and the network trains "
     "badly: permute(0, 2, 3, 1) first, to (B, H, W, k*{n}), then reshape"),
    (lambda p, b, k, h, w, n: p.permute(0, 3, 2, 1).reshape(b, -1, n),
     "you went through the cells column by column (permute(0, 3, 2, 1) puts W before H); the default boxes go row by "
     "row, cell (i, j) being row i, column j: permute(0, 2, 3, 1)"),
    (lambda p, b, k, h, w, n: p.view(b, k, n, h, w).permute(0, 1, 3, 4, 2).reshape(b, -1, n),
     "your rows go box by box over the whole map (box 0 of every cell, then box 1, ...); the k boxes of one cell "
     "are next to each other: cell by cell first, then the boxes of the cell"),
    (lambda p, b, k, h, w, n: p.view(b, n, k, h, w).permute(0, 3, 4, 2, 1).reshape(b, -1, n),
     "a cell's k*{n} channels come box by box (channels 0 to {n}-1 are box 0's, the next {n} box 1's, ...); you read "
     "them number by number, as view(B, {n}, k, H, W): permute the channel axis last, then reshape(B, -1, {n})"),
    (lambda p, b, k, h, w, n: p.reshape(b, n, -1).transpose(1, 2),
     "view(B, {n}, -1).transpose(1, 2) splits the channels into {n} blocks of k and goes through the cells box by "
     "box: move the channel axis last (permute(0, 2, 3, 1)), then reshape(B, -1, {n})"),
)
_BATCH = ("you mixed the images of the batch: reshape each map's output to (B, -1, {n}) and torch.cat along dim 1, "
          "not to (-1, {n}) along dim 0")
_SWAPPED = ("loc holds the 4 offsets of each box, from loc_heads, and logits the num_classes scores, from conf_heads; "
            "return (loc, logits) in that order")


class _Maps(list):
    """The source maps: a list of tensors whose ``==`` compares them exactly (the harness compares inputs)."""

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, list) and len(self) == len(other) and all(
            isinstance(b, Tensor) and torch.equal(a, b) for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]


class _Heads(list):
    """A list of 3x3 convolutions whose ``==`` compares their weights and biases exactly."""

    def __eq__(self, other: Any) -> bool:
        if not (isinstance(other, list) and all(isinstance(m, nn.Module) for m in other)):
            return False
        mine, theirs = [p for m in self for p in m.parameters()], [p for m in other for p in m.parameters()]
        return len(mine) == len(theirs) and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(mine, theirs))

    __hash__ = None  # type: ignore[assignment]


def _conv(g: torch.Generator, channels: int, outputs: int) -> nn.Conv2d:
    """A 3x3 head (padding 1) with seeded weights, in the dtype and on the device of the current (hidden) variant
    (the harness converts the case's tensors, not its modules)."""
    conv = torch.nn.utils.skip_init(nn.Conv2d, channels, outputs, 3, padding=1)  # no draw from the learner's RNG
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / 3)
        conv.bias.copy_(torch.randn(outputs, generator=g))
    return conv.requires_grad_(False).to(dtype=hidden.current().dtype or torch.float32, device=hidden.current().device)


def _case(name: str, g: torch.Generator, sides: list, k: list, num_classes: int, batch: int = 1,
          channels: int = 2) -> Case:
    """A case: random (batch, channels, H, W) maps of the given sides (an int: square) and their two heads."""
    sides = [(s, s) if isinstance(s, int) else s for s in sides]
    features = _Maps(torch.randn(batch, channels, h, w, generator=g) for h, w in sides)
    args = (features, _Heads(_conv(g, channels, 4 * a) for a in k),
            _Heads(_conv(g, channels, num_classes * a) for a in k), num_classes)
    maps = ", ".join(f"{tuple(f.shape)} with k={a}" for f, a in zip(features, k))
    return Case(name, args, _ORDER, f"features: {len(features)} map(s) {maps}; num_classes={num_classes}")


def _right(p: Tensor, b: int, k: int, h: int, w: int, n: int) -> Tensor:
    return p.permute(0, 2, 3, 1).reshape(b, -1, n)


def _assemble(args: tuple, what: str, flatten: Callable = _right, maps: Optional[list] = None) -> Tensor:
    """Every map's head output, flattened by ``flatten(p, B, k, H, W, n)``, joined along dim 1 in the order ``maps``."""
    features, loc_heads, conf_heads, num_classes = args
    heads, n = (loc_heads, 4) if what == "loc" else (conf_heads, num_classes)
    parts = []
    for i in range(len(features)) if maps is None else maps:
        p = heads[i](features[i])
        b, channels, h, w = p.shape
        parts.append(flatten(p, b, channels // n, h, w, n))
    return torch.cat(parts, dim=1)


def _columns(what: str) -> str:
    return "4" if what == "loc" else "num_classes"


def _diagnose_shape(got: Tensor, want: Tensor, args: tuple, what: str) -> str:
    features, loc_heads, conf_heads, _ = args
    batch, columns = want.shape[0], want.shape[-1]
    other = conf_heads if what == "loc" else loc_heads
    if got.numel() == sum(batch * f.shape[-2] * f.shape[-1] * h.out_channels for f, h in zip(features, other)):
        return f"your {what} has as many numbers as the other heads give: " + _SWAPPED
    if got.ndim == 2 and got.shape[0] == want.shape[0] * want.shape[1]:
        return ("keep the batch axis: reshape each map's output to (B, -1, columns), B = features[i].shape[0], then "
                "torch.cat on dim 1")
    rows = [f.shape[-2] * f.shape[-1] * h.out_channels // 4 for f, h in zip(features, loc_heads)]
    if got.ndim == 3 and got.shape[0] == batch and got.shape[-1] == columns and len(rows) > 1:
        if got.shape[1] == rows[-1]:
            return ("you kept the last map's rows only: collect every map's rows in one list made before the loop, "
                    "then torch.cat(rows, dim=1)")
        for i, count in enumerate(rows):
            if got.shape[1] == sum(rows) - count:
                return (f"you have the rows of every map but map {i} ({count} rows): run the heads of every map, "
                        "for f, loc_head, conf_head in zip(features, loc_heads, conf_heads)")
    return f"{what} is (B, P, {_columns(what)}) with P = the sum over the maps of H*W*k. " + _ORDER


def _diagnose_values(got: Tensor, args: tuple, what: str) -> Optional[str]:
    """The hint of the wrong order (or batch mix-up, or map order) that gives exactly ``got``; None if none does."""
    n = _columns(what)
    batch = args[0][0].shape[0]
    if batch > 1:
        rows = _assemble(args, what, lambda p, b, k, h, w, c: _right(p, b, k, h, w, c).reshape(1, -1, c))
        if all_close(got, rows.view(got.shape)):
            return _BATCH.format(n=n)
    for flatten, hint in _WRONG_ORDERS:
        if all_close(got, _assemble(args, what, flatten)):
            return hint.format(n=n)
    if len(args[0]) > 1 and all_close(got, _assemble(args, what, maps=list(range(len(args[0])))[::-1])):
        return "concatenate the maps in the order of features (largest first), the order of the default boxes"
    return None


def _where(row: int, args: tuple) -> str:
    """Row ``row`` of the output as (map, cell, box)."""
    for m, (f, head) in enumerate(zip(args[0], args[1])):
        w, k = f.shape[-1], head.out_channels // 4
        if row < f.shape[-2] * w * k:
            return f"map {m}, cell (row {row // k // w}, column {row // k % w}), box {row % k}"
        row -= f.shape[-2] * w * k
    return "past the last map"


def _compare_predict(expected: tuple, got: Any, args: tuple) -> None:
    loc, logits = unpack(got, 2, "(loc, logits)")
    if isinstance(loc, Tensor) and isinstance(logits, Tensor) and loc.shape == expected[1].shape and \
            logits.shape == expected[0].shape and (expected[0].shape != expected[1].shape or (
                all_close(loc, expected[1]) and all_close(logits, expected[0]))):
        raise Mismatch(f"your loc has the shape or values of logits, {tuple(expected[1].shape)}, and your logits those "
                       f"of loc, {tuple(expected[0].shape)}", _SWAPPED)
    for want, have, what in ((expected[0], loc, "loc"), (expected[1], logits, "logits")):
        if isinstance(have, (list, tuple)):
            raise Mismatch(f"expected {what} as one tensor, got a {type(have).__name__} of {len(have)}",
                           "join the maps' rows into one tensor: torch.cat(rows_of_each_map, dim=1)")
        have = as_tensor(have, what)
        if have.shape != want.shape:
            raise Mismatch(f"expected {what} of shape {tuple(want.shape)}, got shape {tuple(have.shape)}",
                           _diagnose_shape(have, want, args, what))
        check_form(want, have, what, "float")
        close = torch.isclose(have.double(), want.double(), rtol=1e-4, atol=1e-5).all(dim=-1)  # (B, P): rows
        if not bool(close.all()):
            b, row = torch.nonzero(~close)[0].tolist()
            raise Mismatch(f"{what}[{b}, {row}] ({_where(row, args)}) should be {fmt(want[b, row])}, got "
                           f"{fmt(have[b, row])} ({int((~close).sum())} of {close.numel()} rows differ)",
                           _diagnose_values(have, args, what))


_FORBID = Forbid("check_predict", "the flattening and concatenation of the heads' outputs", (
    predict_heads, SSD._flatten, SSD.forward, SSDHead.forward, SSDScoringHead.forward,
    SSDScoringHead._get_result_from_module_list),
    "calling the heads, permute, view/reshape, torch.cat and a Python loop over the maps")


def check_predict(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``predict(features, loc_heads, conf_heads, num_classes) -> (loc (B, P, 4), logits (B, P, C))`` against
    :func:`ssd_lib.model.predict_heads`, on seeded random maps (a few channels) and 3x3 heads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny cases: on busy shared cores, more threads made this check 10x slower
    try:
        return _check_predict(fn, seed)
    finally:
        torch.set_num_threads(threads)


def _check_predict(fn: Callable, seed: int) -> CheckResult:
    g, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    ssd300 = PriorConfig.ssd300()
    cases = [
        _case("one 3x3 map, k = 4", g, [3], [4], 3),
        _case("one map of 2 rows and 3 columns (row i, then column j)", g, [(2, 3)], [4], 3),
        _case("two maps, k = 4 and 6", g, [3, 2], [4, 6], 3),
        _case("a batch of 3 images (the batch axis stays first)", g, [3, 2], [6, 4], 5, batch=3),
        _case(f"SSD300's six maps {ssd300.feature_maps} with k = {ssd300.boxes_per_location}, 2 channels each "
              f"(P = {ssd300.num_priors})", g, list(ssd300.feature_maps), list(ssd300.boxes_per_location), 21),
    ]
    for c in range(2):
        sides = [rng.choice([(rng.randint(1, 5),) * 2, (rng.randint(1, 4), rng.randint(1, 4))])
                 for _ in range(rng.randint(1, 4))]
        k = [rng.choice((2, 4, 6)) for _ in sides]
        cases.append(_case(f"random maps and heads (seed {seed}, case {c})", g, sides, k, rng.randint(2, 7),
                           batch=rng.randint(1, 3), channels=rng.randint(1, 3)))
    return run("check_predict", fn, ("features", "loc_heads", "conf_heads", "num_classes"), cases, predict_heads,
               _compare_predict, _FORBID)
