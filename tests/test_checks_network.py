"""Tests for lesson 4's ``check_predict`` (ssd_lib.course.checks.heads): SSD's output layer, the heads'
outputs flattened in the order of the default boxes. The reference (``ssd_lib.model.predict_heads``) is
cross-checked against torchvision's ``SSDHead`` on the same convolutions; a learner-style solution passes;
each classic wrong order fails with the hint that names it; delegating to the library fails."""
from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn
from torchvision.models.detection.ssd import SSDHead

from check_results import assert_fails_on  # tests/check_results.py
from check_results import on_its_reference  # tests/check_results.py
from ssd_lib.course import checks
from ssd_lib.course.checks import check_predict, hidden_tests
from ssd_lib.course.checks.tripwire import FORBIDDEN, reference_allowed
from ssd_lib.model import SSD, predict_heads, ssd_small
from ssd_lib.priors import PriorConfig, default_boxes

SEEDS = (0, 7, 1234)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py: one torch thread


def torchvision_predict(features, loc_heads, conf_heads, num_classes):
    """torchvision's SSDHead with our convolutions put in: the same flatten order, written by others."""
    head = SSDHead([f.shape[1] for f in features], [h.out_channels // 4 for h in loc_heads], num_classes)
    head.regression_head.module_list = nn.ModuleList(loc_heads)
    head.classification_head.module_list = nn.ModuleList(conf_heads)
    out = head(list(features))
    return out["bbox_regression"], out["cls_logits"]


def flatten(p, columns, order="right"):
    """A learner's flattening of one head's (B, k*columns, H, W) output; ``order`` switches on one mistake."""
    b, channels, h, w = p.shape
    k = channels // columns
    if order == "no_permute":
        return p.reshape(b, -1, columns)
    if order == "column_major":
        return p.permute(0, 3, 2, 1).reshape(b, -1, columns)
    if order == "boxes_first":
        return p.view(b, k, columns, h, w).permute(0, 1, 3, 4, 2).reshape(b, -1, columns)
    if order == "numbers_first":
        return p.view(b, columns, k, h, w).permute(0, 3, 4, 2, 1).reshape(b, -1, columns)
    if order == "view_transpose":
        return p.view(b, columns, -1).transpose(1, 2)
    return p.permute(0, 2, 3, 1).reshape(b, -1, columns)


def predict(features, loc_heads, conf_heads, num_classes, order="right", maps="all", mix_batch=False,
            swap_heads=False, swap_outputs=False, join=True, keep_batch=True, as_float32=False):
    """A learner-style solution: a loop over the maps, permute, reshape, torch.cat. Flags switch on one mistake."""
    if swap_heads:
        loc_heads, conf_heads = conf_heads, loc_heads
    triples = list(zip(features, loc_heads, conf_heads))
    if maps == "drop_last":  # range(len(features) - 1)
        triples = triples[:-1]
    elif maps == "drop_second":
        triples = triples[:1] + triples[2:]
    elif maps == "reversed":
        triples = triples[::-1]
    loc_rows, conf_rows = [], []
    for f, loc_head, conf_head in triples:
        if maps == "last_only":
            loc_rows, conf_rows = [], []
        loc_rows.append(flatten(loc_head(f), 4, order))
        conf_rows.append(flatten(conf_head(f), num_classes, order))
    if not join:
        return loc_rows, conf_rows
    if mix_batch or not keep_batch:
        loc = torch.cat([r.reshape(-1, 4) for r in loc_rows], dim=0)
        logits = torch.cat([r.reshape(-1, num_classes) for r in conf_rows], dim=0)
        if keep_batch:
            loc, logits = loc.view(features[0].shape[0], -1, 4), logits.view(features[0].shape[0], -1, num_classes)
    else:
        loc, logits = torch.cat(loc_rows, dim=1), torch.cat(conf_rows, dim=1)
    if as_float32:
        loc, logits = loc.float(), logits.float()
    return (logits, loc) if swap_outputs else (loc, logits)


def _recorded_cases(seed):
    """The arguments of every case the checker builds for ``seed``."""
    seen = []

    def record(*args):
        seen.append(copy.deepcopy(args))
        return predict_heads(*args)

    with reference_allowed():
        assert check_predict(record, seed=seed).passed
    return seen


# ------------------------------------------------------------------ the reference, cross-checked

@pytest.mark.parametrize("seed", SEEDS)
def test_the_reference_agrees_with_torchvisions_ssd_head_on_every_case(seed):
    cases = _recorded_cases(seed)
    assert len(cases) == 7
    for args in cases:
        with torch.no_grad():
            ours, theirs = predict_heads(*args), torchvision_predict(*args)
        torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=0)
        torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=0)


@pytest.mark.plumbing
def test_the_reference_passes_the_check_and_its_hidden_tests():
    with on_its_reference():
        assert check_predict(predict_heads).passed
        result = hidden_tests(check_predict, predict_heads, seeds=(7, 1234))
    assert result.passed and "float64" in result.message, result.message


def test_torchvisions_head_passes_the_check_and_its_hidden_tests():
    """torchvision's SSDHead code, which we did not write, passes: the cases agree with an outside reference."""
    with reference_allowed():  # it is the exercise's torchvision twin, forbidden to learners
        assert check_predict(torchvision_predict).passed
        result = hidden_tests(check_predict, torchvision_predict, seeds=(7, 1234))
    assert result.passed and "float64" in result.message, result.message


def test_ssd300_case_has_the_paper_layout_and_the_default_boxes_order():
    cfg = PriorConfig.ssd300()
    args = next(a for a in _recorded_cases(0) if len(a[0]) == 6)
    assert [f.shape[-1] for f in args[0]] == list(cfg.feature_maps)
    assert [h.out_channels for h in args[1]] == [4 * k for k in cfg.boxes_per_location]
    assert [h.out_channels for h in args[2]] == [21 * k for k in cfg.boxes_per_location]
    loc, logits = predict_heads(*args)
    assert loc.shape == (1, len(default_boxes(cfg)), 4) and logits.shape == (1, cfg.num_priors, 21)
    # row (i * 38 + j) * 4 + a holds box a of conv4_3's cell (i, j), whose default box is centred there
    i, j, a = 5, 17, 3
    row = (i * 38 + j) * 4 + a
    torch.testing.assert_close(loc[0, row], args[1][0](args[0][0])[0, 4 * a:4 * a + 4, i, j])
    centre = torch.tensor([(j + 0.5) * cfg.steps[0], (i + 0.5) * cfg.steps[0]]) / cfg.image_size
    torch.testing.assert_close(default_boxes(cfg)[row, :2], centre)


def test_the_model_runs_the_same_function():
    torch.manual_seed(0)
    model = ssd_small(num_classes=5, image_size=64).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        loc, logits = model(images)
        ours = predict_heads(model.backbone(images), model.loc_heads, model.conf_heads, 5)
        learners = predict(model.backbone(images), model.loc_heads, model.conf_heads, 5)
    for got in (ours, learners):
        assert torch.equal(got[0], loc) and torch.equal(got[1], logits)


# ------------------------------------------------------------------ the learner

def test_a_learner_style_solution_passes_every_seed_and_the_hidden_tests(capsys):
    for seed in SEEDS:
        result = check_predict(predict, seed=seed)
        assert result.passed, result.message
    assert capsys.readouterr().out.count("✅ check_predict passed: 7 cases") == len(SEEDS)
    result = hidden_tests(check_predict, predict, seeds=(7, 1234))
    assert result.passed and "float64" in result.message, result.message


def test_the_check_leaves_the_learners_random_state_and_thread_count_alone():
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(2)  # the check runs on one thread and puts the learner's count back
    try:
        check_predict(predict, seed=3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(state, torch.get_rng_state())


P = functools.partial

# (wrong version, the case it must fail, a phrase its hint must contain)
WRONG = [
    (P(predict, order="no_permute"), "one 3x3 map, k = 4", "without moving the channel axis last"),
    (P(predict, order="column_major"), "one 3x3 map, k = 4", "column by column"),
    (P(predict, order="boxes_first"), "one 3x3 map, k = 4", "box by box over the whole map"),
    (P(predict, order="numbers_first"), "one 3x3 map, k = 4", "number by number"),
    (P(predict, order="view_transpose"), "one 3x3 map, k = 4", "splits the channels into 4 blocks of k"),
    (P(predict, mix_batch=True), "a batch of 3 images", "mixed the images of the batch"),
    (P(predict, keep_batch=False), "one 3x3 map, k = 4", "keep the batch axis"),
    (P(predict, swap_outputs=True), "one 3x3 map, k = 4", "return (loc, logits) in that order"),
    (P(predict, swap_heads=True), "one 3x3 map, k = 4", "as many numbers as the other heads give"),
    (P(predict, maps="drop_second"), "two maps, k = 4 and 6", "the rows of every map but map 1 (24 rows)"),
    (P(predict, maps="last_only"), "two maps, k = 4 and 6", "you kept the last map's rows only"),
    (P(predict, maps="reversed"), "two maps, k = 4 and 6", "in the order of features"),
    (P(predict, join=False), "one 3x3 map, k = 4", "torch.cat(rows_of_each_map, dim=1)"),
]


@pytest.mark.parametrize("wrong, case, hint", WRONG, ids=[str(w.keywords) for w, _, _ in WRONG])
def test_each_mistake_fails_on_its_case_with_the_hint_that_names_it(wrong, case, hint):
    assert_fails_on(check_predict(wrong), "check_predict", case, hint)


def test_a_wrong_row_is_named_by_map_cell_and_box():
    result = check_predict(P(predict, order="column_major"))
    assert "loc[0, 4] (map 0, cell (row 0, column 1), box 0) should be" in result.message, result.message


def test_the_wrong_order_of_the_logits_is_named_too():
    def wrong_logits(features, loc_heads, conf_heads, num_classes):
        loc, _ = predict(features, loc_heads, conf_heads, num_classes)
        return loc, predict(features, loc_heads, conf_heads, num_classes, order="no_permute")[1]

    result = check_predict(wrong_logits)
    assert "logits[0, 0]" in result.message and "(B, k*num_classes, H, W) straight to" in result.message, result.message


def test_float32_hardcoded_fails_the_float64_hidden_test():
    float32 = P(predict, as_float32=True)
    assert check_predict(float32).passed
    result = hidden_tests(check_predict, float32, seeds=(7, 1234))
    assert not result.passed and "torch.float64 inputs gave a torch.float32 result" in result.message, result.message


def test_changing_the_inputs_and_errors_are_reported():
    def pops(features, loc_heads, conf_heads, num_classes):
        features.append(features[0] * 2)
        return predict(features[:-1], loc_heads, conf_heads, num_classes)

    assert "changed its input `features` in place" in check_predict(pops).message

    def view_after_permute(features, loc_heads, conf_heads, num_classes):
        return (torch.cat([h(f).permute(0, 2, 3, 1).view(f.shape[0], -1, 4) for f, h in zip(features, loc_heads)], 1),
                None)

    result = check_predict(view_after_permute)
    assert "raised RuntimeError" in result.message and "Hint: lay the rows out" in result.message, result.message

    def not_yet(*args):
        raise NotImplementedError()

    assert "not implemented yet" in check_predict(not_yet).message
    result = check_predict(P(predict, maps="drop_last"))  # range(len(features) - 1) misses the only map
    assert "one 3x3 map" in result.message and "expected a non-empty list of Tensors" in result.message, result.message


# ------------------------------------------------------------------ no credit for calling the answer

def _via_torchvision_internals(features, loc_heads, conf_heads, num_classes):
    head = SSDHead([f.shape[1] for f in features], [h.out_channels // 4 for h in loc_heads], num_classes)
    head.regression_head.module_list = nn.ModuleList(loc_heads)
    head.classification_head.module_list = nn.ModuleList(conf_heads)
    loc = torch.cat([SSD._flatten(head.regression_head._get_result_from_module_list(f, i), 4)
                     for i, f in enumerate(features)], 1)
    return loc, head.classification_head(list(features))


DELEGATING = [
    (predict_heads, "ssd_lib.model.predict_heads"),
    (functools.partial(predict_heads), "ssd_lib.model.predict_heads"),
    (lambda f, lh, ch, c: (torch.cat([SSD._flatten(h(x), 4) for h, x in zip(lh, f)], 1),
                           torch.cat([SSD._flatten(h(x), c) for h, x in zip(ch, f)], 1)), "ssd_lib.model.SSD._flatten"),
    (torchvision_predict, "torchvision.models.detection.ssd.SSDHead.forward"),
    (lambda f, lh, ch, c: (SSDHead([x.shape[1] for x in f], [h.out_channels // 4 for h in lh], c).regression_head(f),
                           None), "torchvision.models.detection.ssd.SSDScoringHead.forward"),
    (_via_torchvision_internals, "SSDScoringHead._get_result_from_module_list"),
]


@pytest.mark.parametrize("solution, name", DELEGATING, ids=[n for _, n in DELEGATING])
def test_handing_the_work_to_the_library_or_torchvision_fails(solution, name):
    result = check_predict(solution)
    assert not result.passed and "asks you to write the flattening" in result.message, result.message
    assert result.message.split("your function called `", 1)[1].split("`", 1)[0].endswith(name), result.message
    assert "allowed here: calling the heads" in result.message


def test_the_checker_is_exported_and_has_a_tripwire():
    assert checks.check_predict is check_predict and "check_predict" in checks.__all__
    rule = FORBIDDEN["check_predict"].rule_text()
    assert "`ssd_lib.model.predict_heads`" in rule and "`ssd_lib.model.SSD.forward`" in rule, rule


def test_a_memorised_solution_passes_the_public_cases_and_fails_the_hidden_tests():
    seen = [(args, predict_heads(*args)) for args in _recorded_cases(0)]

    def memorised(features, *rest):
        for args, out in seen:
            if len(args[0]) == len(features) and all(a.shape == b.shape and torch.equal(a, b)
                                                      for a, b in zip(args[0], features)):
                return out
        return seen[-1][1]

    assert check_predict(memorised).passed
    result = hidden_tests(check_predict, memorised, seeds=(7, 1234))
    assert not result.passed and "(hidden, seed 7)" in result.message, result.message


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_hidden_tests_run_on_cuda():
    result = hidden_tests(check_predict, predict, seeds=(7, 1234))
    assert result.passed and "cuda" in result.message, result.message
