"""Tests for ssd_lib.course.checks.diagnoses (lesson 11's graded diagnoses) and the evidence they read.

The evidence (assets/lab_evidence.json, written by ``python -m ssd_lib.course.lab``) shows each bug: the lab's
own diagnosis reads every item as the bug that was switched on. Each checker passes the lab's diagnosis (tripwire
off) and a learner-style one written differently, also on other seeds and in the hidden tests; it fails a constant
answer, each plausible mistake (on the case expected, with a hint that names what to measure), an answer that is
not one of lab.DIAGNOSES, a solution that calls the lab's diagnosis, and a solution memorised from the public cases.
"""
from __future__ import annotations

import functools
import math

import pytest
import torch

from check_results import assert_fails_on  # tests/check_results.py
from check_results import on_its_reference  # tests/check_results.py
from ssd_lib import debugging
from ssd_lib.boxes import xyxy_to_cxcywh
from ssd_lib.course import checks, lab
from ssd_lib.course.checks import diagnoses
from ssd_lib.course.checks.tripwire import reference_allowed
from ssd_lib.loss import MultiBoxLoss

P = functools.partial
EVIDENCE = lab.load_evidence()
NOTEBOOK_SEEDS = {checks.check_diagnose_decode: (2741, 6187), checks.check_diagnose_loc_loss: (3194, 2573),
                  checks.check_diagnose_mining: (8126, 4339), checks.check_diagnose_warmup: (4653, 3928)}
REFERENCE = {checks.check_diagnose_decode: lab.diagnose_decode, checks.check_diagnose_loc_loss: lab.diagnose_loc_loss,
             checks.check_diagnose_mining: lab.diagnose_mining, checks.check_diagnose_warmup: lab.diagnose_warmup}
KIND = {checks.check_diagnose_decode: "decode", checks.check_diagnose_loc_loss: "loc_loss",
        checks.check_diagnose_mining: "mining", checks.check_diagnose_warmup: "warmup"}


# ------------------------------------------------------------------ the evidence shows its bugs

def _decode_items():
    for item in EVIDENCE["decode"]["images"]:
        yield tuple(torch.tensor(item[k]) for k in ("priors_cxcywh", "offsets", "objects"))


def test_the_evidence_file_is_the_labs_and_says_how_it_was_made():
    assert EVIDENCE["format"] == lab.EVIDENCE_FORMAT and EVIDENCE["command"] == lab.EVIDENCE_COMMAND
    assert lab.EVIDENCE_COMMAND.startswith("python -m ssd_lib.course.lab")
    assert lab.EVIDENCE_PATH.stat().st_size < 300_000, "keep the evidence small"


def test_every_decode_item_is_read_as_the_decoder_that_made_it():
    items = list(_decode_items())
    assert len(items) >= 10
    for priors, offsets, objects in items:
        assert len(priors) >= 2
        for verdict, decoder in lab.DECODERS.items():
            assert lab.diagnose_decode(decoder(offsets, priors), priors, objects) == verdict
        # the shipped model's boxes, decoded right, are closer to their objects than the default boxes are
        assert diagnoses._decode_gain(lab.DECODERS["correct"](offsets, priors), priors, objects) > 0.5


def test_every_mining_batch_is_read_as_the_miner_that_chose_its_negatives():
    batches = EVIDENCE["mining"]["batches"]
    assert len(batches) >= 6
    for batch in batches:
        num_pos = torch.tensor(batch["num_pos"])
        assert int((4 * num_pos).max()) < batch["num_boxes"], "the cap P - num_pos never binds"
        for verdict, counts in batch["num_neg"].items():
            assert lab.diagnose_mining(num_pos, torch.tensor(counts)) == verdict
        assert batch["num_neg"]["per image"] == [3 * n for n in batch["num_pos"]]
    assert any(0 in batch["num_pos"] for batch in batches), "some batch has an image without objects"


def test_every_overfit_run_is_read_as_the_loss_it_was_trained_with():
    runs = EVIDENCE["loc_loss"]["runs"]
    for verdict in lab.DIAGNOSES["loc_loss"]:
        mine = [r for r in runs if r["loss"] == verdict]
        assert len(mine) >= 4 and {r["optimizer"] for r in mine} == {"sgd", "adam"}
        assert all(lab.diagnose_loc_loss(r["loc"], r["conf"]) == verdict for r in mine)
    for run in runs:  # the symptom: plain L1's loc part stalls far above smooth L1's
        assert (run["loc"][-1] > 0.1) == (run["loss"] == "plain L1"), run["loc"][-1]


def test_every_training_log_shows_what_its_configuration_predicts():
    runs = EVIDENCE["warmup"]["runs"]
    for verdict in lab.DIAGNOSES["warmup"]:
        assert len([r for r in runs if r["shows"] == verdict]) >= 3, verdict
    for run in runs:
        records = run["records"]
        assert [r["step"] for r in records] == list(range(1, len(records) + 1))
        assert lab.diagnose_warmup(records) == run["shows"]
        rates = [r["lr"] for r in records]
        assert (run["warmup_steps"] == 0) == (rates[0] == max(rates))
        peak = max(r["loss"] for r in records) / records[0]["loss"]
        assert peak <= 1.5 if run["shows"] == "no jump" else peak >= 3.0  # no borderline case
    assert any(r["shows"] == "no jump" and r["warmup_steps"] == 0 for r in runs), "a small lr needs no warm-up"


def test_plain_l1_loss_keeps_the_library_conf_part_and_computes_l1():
    torch.manual_seed(0)
    loc, targets = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    logits, labels = torch.randn(2, 5, 3), torch.tensor([[1, 0, 0, 2, 0], [0, 0, 1, 0, 0]])
    broken, fixed = lab.MultiBoxLossWithPlainL1()(loc, logits, targets, labels), MultiBoxLoss()(loc, logits, targets, labels)
    positive = labels > 0
    assert torch.isclose(broken.loc, (loc[positive] - targets[positive]).abs().sum() / 3)
    assert torch.equal(broken.conf, fixed.conf) and torch.isclose(broken.total, broken.conf + broken.loc)


def test_load_evidence_names_the_command_when_the_file_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m ssd_lib.course.lab"):
        lab.load_evidence(tmp_path / "nothing.json")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not the lab's evidence"):
        lab.load_evidence(tmp_path / "other.json")


# ------------------------------------------------------------------ learner-style diagnoses; flags switch on one mistake

def learner_decode(boxes, priors_cxcywh, objects, swap=False):
    """Ratio of the summed centre moves to the summed distances to the objects, on a log scale."""
    moved = (xyxy_to_cxcywh(boxes)[:, :2] - priors_cxcywh[:, :2]).abs() / priors_cxcywh[:, 2:]
    needed = (xyxy_to_cxcywh(objects)[:, :2] - priors_cxcywh[:, :2]).abs() / priors_cxcywh[:, 2:]
    factor = math.log10(float(moved.sum() / needed.sum()))
    small, large = ("variances dropped", "variances applied twice") if swap else ("variances applied twice",
                                                                                 "variances dropped")
    return small if factor < -0.5 else large if factor > 0.5 else "correct"


def learner_loc_loss(loc, conf, inverted=False):
    stalled = loc[-1] / max(loc) > conf[-1] / max(conf)
    return "plain L1" if stalled != inverted else "smooth L1"


def learner_mining(num_pos, num_neg, check_split=True, knows_per_batch=True):
    if check_split and num_neg.tolist() == (3 * num_pos).tolist():
        return "per image"
    if num_neg.sum().item() == 3 * num_pos.sum().item():  # the right total
        return "per batch" if knows_per_batch else "per image"
    return "ranks positives"


def learner_warmup(records, read_the_loss=True, threshold=2.0):
    first = records[0]["loss"]
    if read_the_loss and all(r["loss"] <= threshold * first for r in records):
        return "no jump"
    if records[0]["lr"] < max(r["lr"] for r in records):
        return "lr too high"
    return "no warm-up" if read_the_loss or records[0]["lr"] > 0.01 else "no jump"


LEARNER = {checks.check_diagnose_decode: learner_decode, checks.check_diagnose_loc_loss: learner_loc_loss,
           checks.check_diagnose_mining: learner_mining, checks.check_diagnose_warmup: learner_warmup}
CHECKERS = list(LEARNER)
NAME = lambda c: c.__name__  # noqa: E731


@pytest.mark.plumbing
@pytest.mark.parametrize("checker", CHECKERS, ids=NAME)
def test_the_labs_diagnosis_passes_on_several_seeds(checker):
    for seed in (0, 1, 2, 7, 123):
        with on_its_reference():
            assert checker(REFERENCE[checker], seed=seed).passed


@pytest.mark.parametrize("checker", CHECKERS, ids=NAME)
def test_a_learners_diagnosis_passes_on_several_seeds(checker, capsys):
    for seed in (0, 1, 2, 7, 123):
        result = checker(LEARNER[checker], seed=seed)
        assert result.passed, result.message
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("checker", CHECKERS, ids=NAME)
def test_the_hidden_tests_pass_a_learner(checker):
    assert checks.hidden_tests(checker, LEARNER[checker], seeds=NOTEBOOK_SEEDS[checker]).passed


@pytest.mark.parametrize("checker", CHECKERS, ids=NAME)
def test_one_constant_answer_fails(checker):
    for answer in lab.DIAGNOSES[KIND[checker]]:
        result = checker(lambda *args, answer=answer: answer)
        assert not result.passed and f"got {answer!r}" in result.message and "Hint: " in result.message


@pytest.mark.parametrize("checker", CHECKERS, ids=NAME)
def test_the_cases_change_with_the_seed_but_each_seed_shows_every_answer(checker):
    seen = {}
    for seed in (0, 1, 2, 3):
        answers = []
        with reference_allowed():
            checker(lambda *args: answers.append(REFERENCE[checker](*args)) or answers[-1], seed=seed)
        assert set(answers) == set(lab.DIAGNOSES[KIND[checker]]), answers
        seen[seed] = answers
    assert len({tuple(a) for a in seen.values()}) > 1, "other seeds, other cases"


def case_name(checker, number):
    """The name of the checker's case ``number`` (1-based, public seed): a probe answers right until then."""
    calls = []

    def probe(*args):
        calls.append(args)
        return REFERENCE[checker](*args) if len(calls) < number else 42

    with reference_allowed():
        message = checker(probe).message
    return message.split("case '", 1)[1].split("' (", 1)[0]


# (checker, wrong version, the number of the case it must fail, a phrase the hint must contain)
WRONG = [
    (checks.check_diagnose_decode, P(learner_decode, swap=True), 1, "wrong way round"),
    (checks.check_diagnose_decode, lambda *args: "correct", 1, "times the way from their default boxes"),
    (checks.check_diagnose_decode, lambda *args: "twice", 1, "spell the answer"),
    (checks.check_diagnose_decode, lambda *args: 0.1, 1, "as a str"),
    (checks.check_diagnose_loc_loss, P(learner_loc_loss, inverted=True), 1, "loc fell from"),
    (checks.check_diagnose_mining, P(learner_mining, knows_per_batch=False), 2, "the batch's total right"),
    (checks.check_diagnose_mining, P(learner_mining, check_split=False), 3, "exactly 3 * num_pos in every image"),
    (checks.check_diagnose_warmup, P(learner_warmup, read_the_loss=False), 2, "whatever the schedule"),
    (checks.check_diagnose_warmup, P(learner_warmup, threshold=20.0), 1, "more than twice the first"),
]


@pytest.mark.parametrize("checker, wrong, number, hint", WRONG,
                         ids=[f"{NAME(c)}-{k}" for k, (c, *_) in enumerate(WRONG)])
def test_a_wrong_diagnosis_fails_with_case_and_hint(checker, wrong, number, hint):
    assert_fails_on(checker(wrong), checker.__name__, case_name(checker, number), hint, whole_name=True)


@pytest.mark.parametrize("checker", CHECKERS, ids=NAME)
def test_exceptions_are_reported_not_raised(checker):
    def unfinished(*args):
        raise NotImplementedError()

    def broken(*args):
        return {}["missing"]

    assert "not implemented" in checker(unfinished).message
    result = checker(broken)
    assert not result.passed and "raised KeyError" in result.message


@pytest.mark.parametrize("checker", CHECKERS, ids=NAME)
def test_calling_the_labs_diagnosis_fails_with_the_tripwire(checker):
    reference = REFERENCE[checker]
    for solution in (reference, lambda *args: reference(*args)):
        result = checker(solution)
        assert not result.passed and "asks you to write" in result.message, result.message


@pytest.mark.parametrize("checker", [checks.check_diagnose_loc_loss, checks.check_diagnose_warmup], ids=NAME)
def test_reading_the_overfit_verdict_fails_too(checker):
    def via_verdict(*args):
        loc, conf = (args if len(args) == 2 else ([r["loc"] for r in args[0]], [r["conf"] for r in args[0]]))
        debugging._verdict([a + b for a, b in zip(loc, conf)], loc, conf, [1.0] * len(loc), 0.02, 1e-3)
        return "smooth L1"

    result = checker(via_verdict)
    assert not result.passed and "called `ssd_lib.debugging._verdict`" in result.message, result.message


@pytest.mark.parametrize("checker", CHECKERS, ids=NAME)
def test_a_solution_memorised_from_the_public_cases_fails_the_hidden_tests(checker):
    answers = {}

    def fingerprint(args):
        return repr(args)[:2000]

    def recorder(*args):
        answers[fingerprint(args)] = REFERENCE[checker](*args)
        return answers[fingerprint(args)]

    with reference_allowed():
        assert checker(recorder).passed
    memorised = lambda *args: answers.get(fingerprint(args), lab.DIAGNOSES[KIND[checker]][0])  # noqa: E731
    assert checker(memorised).passed
    assert not checks.hidden_tests(checker, memorised, seeds=NOTEBOOK_SEEDS[checker]).passed


def test_a_missing_evidence_file_fails_the_check_with_the_command(monkeypatch, capsys):
    def missing():
        raise FileNotFoundError(f"assets/lab_evidence.json is missing: run `{lab.EVIDENCE_COMMAND}`")

    monkeypatch.setattr(lab, "load_evidence", missing)
    for checker in CHECKERS:
        result = checker(LEARNER[checker])
        assert not result.passed and lab.EVIDENCE_COMMAND in result.message
