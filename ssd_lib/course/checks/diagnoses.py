"""Lesson 11 (notebook 11_debugging): the lab's graded diagnoses, from the evidence a broken run left to its bug.

Each checker hands the learner's function real evidence of the lab (``assets/lab_evidence.json``, written by
``python -m ssd_lib.course.lab``: the lab's broken pieces, run once), a different bug or none in each case, and
compares the answer, one of :data:`ssd_lib.course.lab.DIAGNOSES`, with the lab's own diagnosis:

* ``check_diagnose_decode``: ``diagnose_decode(boxes, priors_cxcywh, objects)``, the shipped model's offsets
  decoded by the library's decode or by a broken one (variances applied twice, dropped);
* ``check_diagnose_loc_loss``: ``diagnose_loc_loss(loc, conf)``, overfit-one-batch loss parts with smooth L1 or
  plain L1;
* ``check_diagnose_mining``: ``diagnose_mining(num_pos, num_neg)``, negatives per image chosen per image, by a
  miner that ranks the positives too, or per batch;
* ``check_diagnose_warmup``: ``diagnose_warmup(records)``, training logs without a jump, with a jump and no
  warm-up, with a jump despite the warm-up.

The first cases are fixed, the others drawn from the evidence by ``seed``. A wrong answer is told what the
evidence measures (the numbers the diagnosis should have computed).

Usage::

    from ssd_lib.course.checks import check_diagnose_warmup
    assert check_diagnose_warmup(diagnose_warmup)
"""
from __future__ import annotations

import random
from typing import Any, Callable, Sequence

import torch

from ssd_lib import debugging
from ssd_lib.boxes import xyxy_to_cxcywh
from ssd_lib.course import lab

from .harness import Case, CheckResult, Mismatch, run
from .tripwire import Forbid


def _evidence(kind: str) -> Any:
    return lab.load_evidence()[kind]


def _no_evidence(name: str, error: Exception) -> CheckResult:
    line = f"❌ {name}: cannot read the lab's evidence: {error}"
    print(line)
    return CheckResult(False, line, name)


def _answer(got: Any, choices: Sequence[str]) -> str:
    """The learner's answer, one of ``choices`` (case and surrounding spaces do not count)."""
    listed = ", ".join(repr(c) for c in choices)
    if not isinstance(got, str):
        raise Mismatch(f"expected one of {listed}, got {type(got).__name__}",
                       f"return the name of the bug as a str, one of lab.DIAGNOSES: {listed}")
    for choice in choices:
        if got.strip().lower() == choice.lower():
            return choice
    raise Mismatch(f"expected one of {listed}, got {got!r}", f"spell the answer as lab.DIAGNOSES does: {listed}")


def _compare(choices: Sequence[str], explain: Callable[[str, str, tuple], str]) -> Callable:
    def compare(expected: str, got: Any, args: tuple) -> None:
        answer = _answer(got, choices)
        if answer != expected:
            raise Mismatch(f"expected {expected!r}, got {answer!r}", explain(expected, answer, args))
    return compare


def _draw(rng: random.Random, pool: Sequence, n: int) -> list:
    """``n`` items of ``pool`` (without repeats while the pool lasts)."""
    items = list(pool)
    rng.shuffle(items)
    return [items[k % len(items)] for k in range(n)]


def _verdicts(rng: random.Random, choices: Sequence[str], n: int) -> list[str]:
    """``n`` answers in a random order, every choice at least once when ``n`` allows (one constant answer fails)."""
    chosen = [choices[k % len(choices)] for k in range(n)]
    rng.shuffle(chosen)
    return chosen


# ---------------------------------------------------------------------------------------------
# Decode: how far the boxes moved from their default boxes, against how far their objects are
# ---------------------------------------------------------------------------------------------

_DECODE = ("Measure, for each box, how far its centre moved from its default box and how far its object's centre "
           "is, both in default-box sizes ((cx - d_cx) / d_w, (cy - d_cy) / d_h); a trained model moves the boxes "
           "about the whole way (ratio about 1), the variances applied twice scale the centre correction by 0.1 "
           "once more (about 0.1), dropped they make it 10 times too large (about 10)")


def _decode_gain(boxes: torch.Tensor, priors: torch.Tensor, objects: torch.Tensor) -> float:
    moved = (xyxy_to_cxcywh(boxes)[:, :2] - priors[:, :2]) / priors[:, 2:]
    needed = (xyxy_to_cxcywh(objects)[:, :2] - priors[:, :2]) / priors[:, 2:]
    return float((moved * needed).sum()) / max(float((needed * needed).sum()), 1e-12)


def _explain_decode(expected: str, answer: str, args: tuple) -> str:
    measured = (f"on this evidence the centres moved {_decode_gain(*args):.3g} times the way from their default boxes "
                f"to their objects (least squares over the {len(args[0])} boxes). ")
    if {expected, answer} == {"variances applied twice", "variances dropped"}:
        return measured + ("you have the two bugs the wrong way round: the variances (0.1, 0.2) multiply the "
                           "offsets, so applying them twice SHRINKS each correction and dropping them makes it "
                           "larger. " + _DECODE)
    return measured + _DECODE


def _decode_case(item: dict, verdict: str) -> Case:
    priors, offsets, objects = (torch.tensor(item[k], dtype=torch.float32)
                                for k in ("priors_cxcywh", "offsets", "objects"))
    boxes = lab.DECODERS[verdict](offsets, priors)
    return Case(f"test image {item['image']}", (boxes, priors, objects), _DECODE,
                inputs=f"boxes, priors_cxcywh, objects: {len(boxes)} positive default boxes of the shipped model")


_DECODE_FORBID = Forbid("check_diagnose_decode", "the decode diagnosis", (lab.diagnose_decode,),
                        "torch operations (indexing, arithmetic, sum, mean, median) and the box functions of "
                        "ssd_lib.boxes (xyxy_to_cxcywh, box_iou, encode)")


def check_diagnose_decode(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``diagnose_decode(boxes (N, 4) xyxy, priors_cxcywh (N, 4), objects (N, 4) xyxy) -> str`` (which
    decoder of ``lab.DECODERS`` made the boxes from the shipped model's offsets) against
    :func:`ssd_lib.course.lab.diagnose_decode`."""
    try:
        pool = _evidence("decode")["images"]
    except (OSError, ValueError, KeyError) as error:
        return _no_evidence("check_diagnose_decode", error)
    choices = lab.DIAGNOSES["decode"]
    fixed = [_decode_case(pool[0], "variances applied twice"), _decode_case(pool[1], "correct"),
             _decode_case(pool[2], "variances dropped")]
    rng = random.Random(seed)
    drawn = [_decode_case(item, verdict) for item, verdict in zip(_draw(rng, pool[3:], 4), _verdicts(rng, choices, 4))]
    return run("check_diagnose_decode", fn, ("boxes", "priors_cxcywh", "objects"), fixed + drawn, lab.diagnose_decode,
               _compare(choices, _explain_decode), _DECODE_FORBID)


# ---------------------------------------------------------------------------------------------
# The localisation loss: does the loc part of an overfit run fall, or stall while conf falls?
# ---------------------------------------------------------------------------------------------

_LOC = ("Compare by how much each part fell over the run, loc[-1] / loc[0] against conf[-1] / conf[0]: with smooth "
        "L1 both fall by orders of magnitude on one batch; with plain L1 the gradient stays +-1 at the target, the "
        "offsets hop around it and the loc part stalls while the conf part keeps falling")


def _explain_loc(expected: str, answer: str, args: tuple) -> str:
    loc, conf = args
    return (f"on this run loc fell from {loc[0]:.3g} to {loc[-1]:.3g} (x{loc[-1] / loc[0]:.2g}) and conf from "
            f"{conf[0]:.3g} to {conf[-1]:.3g} (x{conf[-1] / conf[0]:.2g}) in {len(loc)} steps. " + _LOC)


def _loc_case(runs: list, run_: dict) -> Case:
    return Case(f"overfit run {runs.index(run_)} ({run_['optimizer']}, lr {run_['lr']:g}, seed {run_['seed']})",
                (list(run_["loc"]), list(run_["conf"])), _LOC,
                inputs=f"loc, conf: the loss parts of {len(run_['loc'])} steps on one batch")


_LOC_FORBID = Forbid("check_diagnose_loc_loss", "the loc-loss diagnosis", (lab.diagnose_loc_loss, debugging._verdict),
                     "Python arithmetic, indexing, min and max (or numpy on the lists)")


def check_diagnose_loc_loss(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``diagnose_loc_loss(loc: list[float], conf: list[float]) -> str`` ("smooth L1" or "plain L1" for an
    overfit-one-batch run) against :func:`ssd_lib.course.lab.diagnose_loc_loss`."""
    try:
        runs = _evidence("loc_loss")["runs"]
    except (OSError, ValueError, KeyError) as error:
        return _no_evidence("check_diagnose_loc_loss", error)
    by_loss = {verdict: [r for r in runs if r["loss"] == verdict] for verdict in lab.DIAGNOSES["loc_loss"]}
    fixed = [_loc_case(runs, by_loss["plain L1"][0]), _loc_case(runs, by_loss["smooth L1"][0])]
    rng = random.Random(seed)
    drawn = [_loc_case(runs, rng.choice(by_loss[verdict][1:]))
             for verdict in _verdicts(rng, lab.DIAGNOSES["loc_loss"], 4)]
    return run("check_diagnose_loc_loss", fn, ("loc", "conf"), fixed + drawn, lab.diagnose_loc_loss,
               _compare(lab.DIAGNOSES["loc_loss"], _explain_loc), _LOC_FORBID)


# ---------------------------------------------------------------------------------------------
# Hard negative mining: the negatives per image against 3 x the positives, and the batch's total
# ---------------------------------------------------------------------------------------------

_MINING = ("Compare num_neg with 3 * num_pos image by image, then the totals: mining per image gives exactly 3 * "
           "num_pos in every image; mining per batch gets the batch's total right but splits it wrongly (an image "
           "without objects can get negatives); a miner that ranks the positives too falls short, because "
           "positives took places meant for negatives")


def _explain_mining(expected: str, answer: str, args: tuple) -> str:
    num_pos, num_neg = args
    wanted = (3 * num_pos).tolist()
    return (f"on this batch 3 x num_pos is {wanted} (total {sum(wanted)}) and the miner chose {num_neg.tolist()} "
            f"(total {int(num_neg.sum())}). " + _MINING)


def _mining_case(batch: dict, verdict: str, rng: random.Random | None = None) -> Case:
    """The batch's counts; with ``rng``, its images in a random order (each miner treats a batch as a set)."""
    order = rng.sample(range(len(batch["num_pos"])), len(batch["num_pos"])) if rng else range(len(batch["num_pos"]))
    num_pos = torch.tensor([batch["num_pos"][i] for i in order], dtype=torch.long)
    num_neg = torch.tensor([batch["num_neg"][verdict][i] for i in order], dtype=torch.long)
    images = f"test images {batch['images'][0]}-{batch['images'][-1]}"
    return Case(images + (", in another order" if rng else ""), (num_pos, num_neg), _MINING)


_MINING_FORBID = Forbid("check_diagnose_mining", "the mining diagnosis", (lab.diagnose_mining,),
                        "torch operations (arithmetic, comparisons, sum, torch.equal) and Python")


def check_diagnose_mining(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``diagnose_mining(num_pos (B,) int64, num_neg (B,) int64) -> str`` (which miner of ``lab.MINERS`` chose
    the negatives) against :func:`ssd_lib.course.lab.diagnose_mining`."""
    try:
        batches = _evidence("mining")["batches"]
    except (OSError, ValueError, KeyError) as error:
        return _no_evidence("check_diagnose_mining", error)
    choices = lab.DIAGNOSES["mining"]
    fixed = [_mining_case(batches[0], "ranks positives"), _mining_case(batches[1], "per batch"),
             _mining_case(batches[2], "per image")]
    rng = random.Random(seed)
    drawn = [_mining_case(b, verdict, rng)
             for b, verdict in zip(_draw(rng, batches[3:], 4), _verdicts(rng, choices, 4))]
    return run("check_diagnose_mining", fn, ("num_pos", "num_neg"), fixed + drawn, lab.diagnose_mining,
               _compare(choices, _explain_mining), _MINING_FORBID)


# ---------------------------------------------------------------------------------------------
# Warm-up: does the loss jump, and was the learning rate at its peak from the first step?
# ---------------------------------------------------------------------------------------------

_WARMUP = ("First the symptom: the loss jumps if some logged loss is more than twice the first one; if it never "
           "does, the answer is 'no jump', whatever the schedule. Then the cause: 'no warm-up' if the first step "
           "already had the run's highest lr, 'lr too high' if the lr was still rising (warm-up) when it jumped")


def _explain_warmup(expected: str, answer: str, args: tuple) -> str:
    (records,) = args
    losses, rates = [r["loss"] for r in records], [r["lr"] for r in records]
    top = max(range(len(losses)), key=losses.__getitem__)
    return (f"in this log the highest loss is {losses[top] / losses[0]:.3g} x the first (step {records[top]['step']}); "
            f"the first step's lr is {rates[0]:.3g}, the highest {max(rates):.3g}. " + _WARMUP)


def _warmup_case(runs: list, run_: dict) -> Case:
    return Case(f"training log {runs.index(run_)} (seed {run_['seed']})", ([dict(r) for r in run_["records"]],),
                _WARMUP, inputs=f"records: {len(run_['records'])} log lines (step, loss, loc, conf, lr, grad_norm)")


_WARMUP_FORBID = Forbid("check_diagnose_warmup", "the warm-up diagnosis", (lab.diagnose_warmup, debugging._verdict),
                        "Python loops, comprehensions, max and arithmetic")


def check_diagnose_warmup(fn: Callable, seed: int = 0) -> CheckResult:
    """Check ``diagnose_warmup(records: list[dict]) -> str`` ("no jump", "no warm-up" or "lr too high" for a training
    log of the trainer) against :func:`ssd_lib.course.lab.diagnose_warmup`."""
    try:
        runs = _evidence("warmup")["runs"]
    except (OSError, ValueError, KeyError) as error:
        return _no_evidence("check_diagnose_warmup", error)
    choices = lab.DIAGNOSES["warmup"]
    by_verdict = {verdict: [r for r in runs if r["shows"] == verdict] for verdict in choices}
    quiet_without_warmup = [r for r in by_verdict["no jump"] if r["warmup_steps"] == 0]
    fixed = [_warmup_case(runs, run_) for run_ in (by_verdict["no warm-up"][0], by_verdict["no jump"][0],
                                                   by_verdict["lr too high"][0], quiet_without_warmup[0])]
    rng = random.Random(seed)
    used = {id(quiet_without_warmup[0])} | {id(by_verdict[v][0]) for v in choices}
    drawn = [_warmup_case(runs, rng.choice([r for r in by_verdict[verdict] if id(r) not in used]))
             for verdict in _verdicts(rng, choices, 3)]
    return run("check_diagnose_warmup", fn, ("records",), fixed + drawn, lab.diagnose_warmup,
               _compare(choices, _explain_warmup), _WARMUP_FORBID)
