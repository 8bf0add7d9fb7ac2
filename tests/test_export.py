"""Tests for ssd_lib/export.py and the ``export`` / ``detect --onnx`` commands: the exported file and
its metadata, ONNX Runtime against PyTorch (raw outputs, detections on test images and on
"photographs" of other sizes and colour modes, VOC mAP), decoding in the graph, int8, the missing
extra, bad input, and the notebook-12 checkers.

The model is the course's shipped one (assets/ssd_small_shapes.pt) when present, else a small SSD with
seeded random weights whose heads are scaled so that its scores spread out (parity does not depend
on training; a fresh network's scores are all about 1/C, which would make every comparison a tie).
Exports take a few seconds each, so each file is written once per module.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssd_lib import checkpoint as checkpoint_module
from ssd_lib.course.assets import load_course_model
from ssd_lib.data import ShapesDataset, read_image
from ssd_lib.evaluate import evaluate_model, predict
from ssd_lib.export import (
    DEPLOY_INSTALL, DecodedSSD, MissingDeployExtra, OnnxDetector, compare_detections, detect_decoded,
    match_detections, onnx_summary, predict_with, preprocess, quantize_onnx, same_detections,
)
from ssd_lib.detect import detect
from ssd_lib.model import ModelConfig, build_model
from ssd_lib.checkpoint import save_checkpoint

onnx = pytest.importorskip("onnx", reason=f"the deploy extra is not installed ({DEPLOY_INSTALL})")
pytest.importorskip("onnxruntime", reason=f"the deploy extra is not installed ({DEPLOY_INSTALL})")
pytest.importorskip("onnxscript", reason=f"the deploy extra is not installed ({DEPLOY_INSTALL})")

pytestmark = pytest.mark.slow  # exports (torch.export) take seconds

REPO = Path(__file__).resolve().parents[1]
CLASSES = list(ShapesDataset.classes)
N_TEST = 48  # test-split images for the detection and mAP comparisons


def _model_and_names():
    if checkpoint_module.SHIPPED_MODEL.is_file():
        return load_course_model()
    torch.manual_seed(0)
    model = build_model(ModelConfig.small(len(CLASSES) + 1)).eval()
    with torch.no_grad():  # a fresh network predicts ~0: spread its scores and offsets
        for loc_head, conf_head in zip(model.loc_heads, model.conf_heads):
            loc_head.weight.mul_(30.0)
            conf_head.weight.mul_(100.0)
    return model, CLASSES


def _start_cli(*args, cwd: Path) -> subprocess.Popen:
    """``python -m ssd_lib ARGS`` in a fresh process, as a user types it (started, not waited for)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "ssd_lib", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _main(argv, capsys=None):
    """``ssd_lib.__main__.main(argv)`` in this process: (status, stdout, stderr)."""
    from ssd_lib.__main__ import main

    if capsys is not None:
        status = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The model and its checkpoint; two exports made by the command line at the same time: the raw
    graph (in this process, with no --checkpoint: the shipped model, here our checkpoint, + --int8) and
    the decoded one (``python -m ssd_lib export --checkpoint ... --decode`` in a fresh process)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("export")
    model, names = _model_and_names()
    checkpoint = save_checkpoint(folder / "model.pt", model, extra={"class_names": names})
    decoded_run = _start_cli("export", "--checkpoint", checkpoint, "--output", "decoded.onnx", "--decode", cwd=folder)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(checkpoint_module, "SHIPPED_MODEL", Path(checkpoint))  # stands in for assets/ssd_small_shapes.pt
            status, out, err = _main(["export", "--output", folder / "model.onnx", "--int8", "--calibration-size", "8"])
        stdout, stderr = decoded_run.communicate(timeout=600)
    finally:
        if decoded_run.poll() is None:
            decoded_run.kill()
            decoded_run.communicate()
    assert status == 0, err
    size = model.prior_config.image_size
    test_set = ShapesDataset("test", size=N_TEST, image_size=size)
    return {"folder": folder, "model": model, "names": names, "checkpoint": checkpoint, "size": size,
            "raw": folder / "model.onnx", "int8": folder / "model.int8.onnx", "export_stdout": out,
            "decoded": folder / "decoded.onnx", "decoded_run": (decoded_run.returncode, stdout, stderr),
            "test_set": test_set, "images": [test_set[i][0] for i in range(N_TEST)]}


@pytest.fixture(scope="module")
def photographs(setup):
    """Image files as a user has them: other sizes, aspect ratios and colour modes, read back from disk."""
    folder = setup["folder"] / "photos"
    folder.mkdir()
    renders = ShapesDataset("test", size=4, seed=7, image_size=256)
    specs = [("wide_rgba.png", (90, 200), "RGBA"), ("tall_gray.jpg", (300, 120), "L"),
             ("large_rgb.jpg", (480, 640), "RGB"), ("odd_gray.png", (131, 97), "L")]
    for index, (name, (height, width), mode) in enumerate(specs):
        pixels = (renders[index][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        picture = Image.fromarray(pixels).resize((width, height), Image.BILINEAR).convert(mode)
        if mode == "RGBA":  # a real alpha channel (read_image drops it)
            alpha = np.linspace(64, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
            picture.putalpha(Image.fromarray(alpha))
        picture.save(folder / name)
    return folder, [folder / name for name, _, _ in specs]


def _sizes(images):
    return [tuple(image.shape[-2:]) for image in images]


# ---------------------------------------------------------------- the file


def test_export_writes_a_checked_file_with_named_inputs_outputs_and_dynamic_batch(setup):
    summary = onnx_summary(setup["raw"])
    size, num_priors = setup["size"], len(setup["model"].priors)
    assert summary["inputs"] == {"images": ["batch", 3, size, size]}
    assert summary["outputs"] == {"loc": ["batch", num_priors, 4], "logits": ["batch", num_priors, len(CLASSES) + 1]}
    onnx.checker.check_model(onnx.load(str(setup["raw"])), full_check=True)
    assert summary["operators"]["Conv"] >= 1 and "BatchNormalization" not in summary["operators"]  # folded
    assert summary["file_mb"] > 0 and summary["parameters"] > 0
    meta = summary["metadata"]
    assert json.loads(meta["ssd_lib.class_names"]) == setup["names"]
    assert ModelConfig.from_dict(json.loads(meta["ssd_lib.model_config"])) == setup["model"].config
    assert json.loads(meta["ssd_lib.preprocessing"])["resize"] == [size, size]
    assert setup["decoded_run"][0] == 0, setup["decoded_run"][2]
    decoded = onnx_summary(setup["decoded"])
    assert list(decoded["outputs"]) == ["boxes", "scores"] and "Softmax" in decoded["operators"]


def test_onnx_runtime_raw_outputs_match_pytorch_at_batch_1_and_8(setup):
    detector = OnnxDetector(setup["raw"])
    assert not detector.decoded and detector.class_names == setup["names"]
    assert torch.equal(detector.priors, setup["model"].priors)
    for batch_size in (1, 8):
        batch = preprocess(setup["images"][:batch_size], setup["size"])
        with torch.no_grad():
            loc, logits = setup["model"](batch)
        ort_loc, ort_logits = detector.run(batch)
        assert ort_loc.shape == loc.shape and ort_logits.shape == logits.shape
        torch.testing.assert_close(ort_loc, loc, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ort_logits, logits, atol=1e-4, rtol=1e-4)


def test_detections_agree_on_the_test_split(setup):
    images = setup["images"]
    torch_dets = predict(setup["model"], images)
    ort_dets = OnnxDetector(setup["raw"]).predict(images, batch_size=16)
    result = compare_detections(torch_dets, ort_dets, _sizes(images))
    assert result["detections_a"] > 10 * len(images)  # not a vacuous comparison
    assert result["same"], result
    assert result["max_box_error"] <= 1e-3 and result["max_score_error"] <= 1e-4


def test_detections_agree_on_photographs_of_other_sizes_and_colour_modes(setup, photographs):
    _, files = photographs
    images = [read_image(path) for path in files]
    assert _sizes(images) == [(90, 200), (300, 120), (480, 640), (131, 97)]
    detector = OnnxDetector(setup["raw"])
    for threshold in (0.01, 0.3):
        torch_dets = predict(setup["model"], images, score_threshold=threshold)
        ort_dets = detector.predict(images, score_threshold=threshold)
        result = compare_detections(torch_dets, ort_dets, _sizes(images))
        assert result["same"], (threshold, result)
    assert result["detections_a"] > 0


def test_decoding_in_the_graph_gives_the_same_detections(setup):
    images = setup["images"]
    assert setup["decoded_run"][0] == 0, setup["decoded_run"][2]
    detector = OnnxDetector(setup["decoded"])
    assert detector.decoded
    batch = preprocess(images, setup["size"])
    with torch.no_grad():
        boxes, scores = DecodedSSD(setup["model"])(batch)
    ort_boxes, ort_scores = detector.run_decoded(batch)
    torch.testing.assert_close(ort_boxes, boxes, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ort_scores, scores, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="run_decoded"):  # run means loc and logits, which this file has not
        detector.run(batch)
    raw_boxes, raw_scores = OnnxDetector(setup["raw"]).run_decoded(batch)  # decoded outside the graph: the same
    torch.testing.assert_close(raw_boxes, boxes, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(raw_scores, scores, atol=1e-5, rtol=1e-4)
    torch_dets, ort_dets = predict(setup["model"], images), detector.predict(images)
    result = compare_detections(torch_dets, ort_dets, _sizes(images))
    # Two boxes of one class whose probabilities are exactly equal (softmax saturated at 0.99990) have
    # no order, and NMS keeps whichever comes first: the only difference allowed is such a pair, the
    # same label and the same score on both sides with different boxes (seen once in 48 images).
    for index in result["images_differing"]:
        a, b = torch_dets[index], ort_dets[index]
        matched = match_detections(a, b, _sizes(images)[index])
        tied_a = sorted((int(a["labels"][j]), float(a["scores"][j])) for j in matched["only_a"])
        tied_b = sorted((int(b["labels"][j]), float(b["scores"][j])) for j in matched["only_b"])
        assert tied_a == tied_b, (index, result)
    assert result["unmatched"] <= 2 * len(result["images_differing"]) <= 4, result


def test_detect_decoded_selects_what_detect_selects(setup):
    """The same boxes from decoded outputs as detect from raw ones: on the test split, and on the random
    outputs of an untrained network (every class full: the per-class cap and the widening)."""
    from ssd_lib.boxes import decode

    priors = setup["model"].priors
    with torch.no_grad():
        loc, logits = setup["model"](preprocess(setup["images"], setup["size"]))
    generator = torch.Generator().manual_seed(0)
    random_loc = torch.randn(4, len(priors), 4, generator=generator) * 0.5
    random_logits = torch.randn(4, len(priors), len(CLASSES) + 1, generator=generator) * 2.0
    for loc_, logits_ in ((loc, logits), (random_loc, random_logits)):
        boxes, scores = decode(loc_, priors).clamp(0.0, 1.0), logits_.softmax(-1)
        for threshold, top_k in ((0.01, 200), (0.5, 200), (0.01, 5)):
            reference = detect(loc_, logits_, priors, score_threshold=threshold, top_k=top_k)
            got = detect_decoded(boxes, scores, score_threshold=threshold, top_k=top_k)
            assert compare_detections(reference, got, [(1, 1)] * len(reference), box_tol=1e-6, score_tol=1e-6)["same"]


def test_voc_map_of_both_paths_agrees(setup):
    torch_map = evaluate_model(setup["model"], setup["test_set"], batch_size=16)["mAP"]
    ort_map = OnnxDetector(setup["raw"]).evaluate(setup["test_set"], batch_size=16)["mAP"]
    assert np.isfinite(torch_map) and abs(torch_map - ort_map) <= 0.002, (torch_map, ort_map)


def test_int8_static_and_dynamic_quantisation(setup):
    static = setup["int8"]  # written by `export --int8` (static, 8 calibration images of the training split)
    dynamic = quantize_onnx(setup["raw"], setup["folder"] / "model.dyn.onnx", method="dynamic")
    fp32 = onnx_summary(setup["raw"])
    batch = preprocess(setup["images"][:8], setup["size"])
    _, fp32_logits = OnnxDetector(setup["raw"]).run(batch)
    for path, marker in ((static, "QuantizeLinear"), (dynamic, "ConvInteger")):
        summary = onnx_summary(path)
        assert marker in summary["operators"], summary["operators"]
        assert summary["file_mb"] < 0.5 * fp32["file_mb"]
        assert summary["metadata"]["ssd_lib.model_config"] == fp32["metadata"]["ssd_lib.model_config"]
        detector = OnnxDetector(path)
        _, logits = detector.run(batch)
        # int8 is an approximation: close in probability, not equal
        gap = (logits.softmax(-1) - fp32_logits.softmax(-1)).abs().mean()
        assert gap < 0.05, (path.name, float(gap))
        assert np.isfinite(detector.evaluate(setup["test_set"], limit=16)["mAP"])
    with pytest.raises(ValueError, match="calibration"):
        quantize_onnx(setup["raw"], setup["folder"] / "nothing.onnx", method="static")


# ---------------------------------------------------------------- comparing detections


def test_same_detections_pairs_up_detections_whatever_their_order():
    det = {"boxes": torch.tensor([[10.0, 20, 50, 60], [100, 100, 200, 180]]), "scores": torch.tensor([0.8, 0.79995]),
           "labels": torch.tensor([1, 2])}
    swapped = {key: value.flip(0) for key, value in det.items()}
    assert same_detections(det, swapped, (480, 640))
    moved = {**det, "boxes": det["boxes"] + torch.tensor([0.6, 0.0, 0.0, 0.0])}  # 0.6 px < 1e-3 * 640
    assert same_detections(det, moved, (480, 640)) and not same_detections(det, moved, (480, 480))
    assert not same_detections(det, {**det, "labels": torch.tensor([1, 3])}, (480, 640))
    assert not same_detections(det, {**det, "scores": torch.tensor([0.8, 0.7997])}, (480, 640))
    duplicate = {key: value[[0, 0]] for key, value in det.items()}
    assert not same_detections(duplicate, det, (480, 640))
    result = match_detections(det, swapped, (480, 640))
    assert sorted(result["pairs"]) == [(0, 1), (1, 0)] and result["max_score_error"] == 0.0


def test_predict_with_a_pytorch_network_equals_evaluate_predict(setup):
    model = setup["model"]

    def run_network(batch):
        with torch.no_grad():
            return tuple(t.numpy() for t in model(torch.from_numpy(batch)))

    images = setup["images"][:4] + [torch.rand(3, 70, 150)]
    got = predict_with(run_network, images, model.priors, setup["size"], score_threshold=0.05)
    want = predict(model, images, score_threshold=0.05)
    for a, b in zip(want, got):
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["boxes"], b["boxes"])


# ---------------------------------------------------------------- the command line


def _one_line_error(status, err, *fragments):
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_export_defaults_to_the_shipped_model_and_checks_itself(setup):
    out = setup["export_stdout"]
    assert f"exported {setup['checkpoint']} to" in out and "onnx.checker passed" in out
    assert "ONNX Runtime and PyTorch agree on 2 test images" in out and "int8 (static" in out
    assert onnx_summary(setup["raw"])["inputs"] == {"images": ["batch", 3, setup["size"], setup["size"]]}


def test_cli_detect_onnx_writes_the_same_json_as_pytorch(setup, photographs, tmp_path, capsys):
    folder, files = photographs
    reports = {}
    for name, flag in (("onnx", ["--onnx", setup["raw"]]), ("torch", ["--checkpoint", setup["checkpoint"]])):
        status, out, err = _main(["detect", folder, *flag, "--json", tmp_path / f"{name}.json", "--out",
                                  tmp_path / name, "--score-threshold", "0.2"], capsys)
        assert status == 0, err
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == sorted(f"{p.stem}_detections.png" for p in files)
    assert reports["onnx"]["runtime"] == "onnxruntime" and reports["torch"]["runtime"] == "pytorch"
    total = 0
    for a, b in zip(reports["torch"]["images"], reports["onnx"]["images"]):
        assert a["file"] == b["file"] and (a["height"], a["width"]) == (b["height"], b["width"])
        assert a["class_names"] == [setup["names"][label - 1] for label in a["labels"]]
        dets = [{"boxes": torch.tensor(r["boxes"]).reshape(-1, 4), "scores": torch.tensor(r["scores"]),
                 "labels": torch.tensor(r["labels"], dtype=torch.long)} for r in (a, b)]
        assert same_detections(*dets, (a["height"], a["width"])), a["file"]
        total += len(a["scores"])
    assert total > 0


def test_cli_detect_defaults_to_the_shipped_model(setup, photographs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checkpoint_module, "SHIPPED_MODEL", Path(setup["checkpoint"]))  # stands in for assets/ssd_small_shapes.pt
    _, files = photographs
    status, out, err = _main(["detect", files[0], "--json", tmp_path / "d.json", "--out", tmp_path / "drawn"], capsys)
    assert status == 0, err
    assert json.loads((tmp_path / "d.json").read_text())["model"] == str(setup["checkpoint"])


def test_python_m_ssd_lib_export_then_detect_onnx(setup, photographs, tmp_path):
    """The commands as a user types them, each in a fresh process (the export ran in the fixture)."""
    status, stdout, stderr = setup["decoded_run"]
    assert status == 0 and "onnx.checker passed" in stdout, stderr
    folder, _ = photographs
    proc = _start_cli("detect", folder, "--onnx", setup["decoded"], "--json", "user.json", "--out", "drawn", cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    report = json.loads((tmp_path / "user.json").read_text())
    assert len(report["images"]) == 4 and report["runtime"] == "onnxruntime"


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_without_the_deploy_extra_export_and_onnx_say_which_extra_in_one_line(setup, photographs, tmp_path,
                                                                              monkeypatch, capsys, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # `import onnxruntime` now raises ImportError
    status, _, err = _main(["export", "--checkpoint", setup["checkpoint"], "--output", tmp_path / "m.onnx"], capsys)
    _one_line_error(status, err, missing, DEPLOY_INSTALL)
    assert not (tmp_path / "m.onnx").exists()
    if missing == "onnxruntime":
        _, files = photographs
        status, _, err = _main(["detect", files[0], "--onnx", setup["raw"], "--out", tmp_path], capsys)
        _one_line_error(status, err, DEPLOY_INSTALL)
        with pytest.raises(MissingDeployExtra, match=r"\[deploy\]"):
            OnnxDetector(setup["raw"])


def _foreign_onnx(path: Path, outputs=("loc", "logits"), side=96) -> Path:
    """A valid ONNX file that is not an SSD export: Identity nodes, no ssd_lib metadata."""
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, side, side])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], [name]) for name in outputs], "foreign",
                              [image], [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3, side, side])
                                        for n in outputs])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _with_metadata(src: Path, dst: Path, **changes) -> Path:
    model = onnx.load(str(src))
    for entry in model.metadata_props:
        if entry.key in changes:
            entry.value = changes[entry.key]
    onnx.save_model(model, str(dst))
    return dst


def test_bad_onnx_files_are_one_line_errors(setup, photographs, tmp_path, capsys):
    _, files = photographs
    truncated = tmp_path / "truncated.onnx"
    data = setup["raw"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    config = json.loads(onnx_summary(setup["raw"])["metadata"]["ssd_lib.model_config"])
    config["priors"]["image_size"] = 96
    cases = {
        "missing": (tmp_path / "no_such.onnx", "does not exist"),
        "truncated": (truncated, "cannot load"),
        "other output names": (_foreign_onnx(tmp_path / "other.onnx", outputs=("output",)), "has outputs ['output']"),
        "no metadata": (_foreign_onnx(tmp_path / "nometa.onnx"), "no ssd_lib metadata"),
        "input size of another model": (_with_metadata(setup["raw"], tmp_path / "size.onnx",
                                                       **{"ssd_lib.model_config": json.dumps(config)}), "3x96x96"),
    }
    for name, (path, fragment) in cases.items():
        status, _, err = _main(["detect", files[0], "--onnx", path, "--out", tmp_path / "drawn"], capsys)
        _one_line_error(status, err, fragment)
    with pytest.raises(ValueError, match="3x128x128"):  # a foreign file with a config: its input is 96x96
        OnnxDetector(tmp_path / "nometa.onnx", config=setup["model"].config)


def test_bad_checkpoints_and_flags_are_one_line_errors(setup, photographs, tmp_path, capsys):
    _, files = photographs
    ckpt = torch.load(setup["checkpoint"], weights_only=True)
    ckpt["model_config"]["num_classes"] = 21  # the weights are for 7
    torch.save(ckpt, tmp_path / "other_classes.pt")
    ckpt["model_config"]["num_classes"] = 7
    ckpt["model_config"]["arch"] = "ssd300"
    torch.save(ckpt, tmp_path / "other_arch.pt")
    for bad in ("other_classes.pt", "other_arch.pt"):
        for command in (["export", "--output", tmp_path / "m.onnx"], ["detect", files[0], "--out", tmp_path]):
            status, _, err = _main([*command, "--checkpoint", tmp_path / bad], capsys)
            _one_line_error(status, err, bad, "do not fit" if bad == "other_classes.pt" else "cannot rebuild")
    status, _, err = _main(["detect", files[0], "--onnx", setup["raw"], "--checkpoint", setup["checkpoint"]], capsys)
    _one_line_error(status, err, "not both")
    status, _, err = _main(["export", "--checkpoint", tmp_path / "none.pt", "--output", tmp_path / "m.onnx"], capsys)
    _one_line_error(status, err, "does not exist")
    status, _, err = _main(["export", "--checkpoint", setup["checkpoint"], "--output", tmp_path / "m.txt"], capsys)
    _one_line_error(status, err, ".onnx")


# ---------------------------------------------------------------- the notebook's checkers


def _notebook_predict_with(run_network, images, priors_cxcywh, image_size, score_threshold=0.01, normalise=True,
                           to_pixels=True, softmax_first=False):
    """What a learner writes in notebook 12, with switches for the usual mistakes."""
    import torch.nn.functional as F

    from ssd_lib.augment import IMAGENET_MEAN, IMAGENET_STD
    from ssd_lib.detect import scale_detections

    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    resized = [F.interpolate(image[None], size=(image_size, image_size), mode="bilinear", align_corners=False)[0]
               for image in images]
    batch = torch.stack([(image - mean) / std if normalise else image for image in resized])
    loc, logits = (torch.from_numpy(a) for a in run_network(batch.numpy()))
    dets = detect(loc, logits.softmax(-1) if softmax_first else logits, priors_cxcywh, score_threshold)
    return scale_detections(dets, [image.shape[-2:] for image in images]) if to_pixels else dets


@pytest.mark.plumbing
def test_check_predict_with_passes_the_library():
    from check_results import on_its_reference  # tests/check_results.py
    from ssd_lib.course.checks import check_predict_with

    with on_its_reference():
        assert check_predict_with(predict_with)


def test_check_predict_with_passes_a_learner_and_catches_mistakes(capsys):
    from ssd_lib.course.checks import check_predict_with

    assert check_predict_with(_notebook_predict_with)
    no_norm = check_predict_with(lambda *a: _notebook_predict_with(*a, normalise=False))
    pixels = check_predict_with(lambda *a: _notebook_predict_with(*a, to_pixels=False))
    softmax = check_predict_with(lambda *a: _notebook_predict_with(*a, softmax_first=True))
    assert not no_norm and "normalise" in no_norm.message
    assert not pixels and "scale_detections" in pixels.message
    assert not softmax and "softmax" in softmax.message


def _learner_same(det_a, det_b, size, box_tol=1e-3, score_tol=1e-4, pair_up=True):
    if len(det_a["scores"]) != len(det_b["scores"]):
        return False
    height, width = size
    tol = box_tol * torch.tensor([width, height, width, height])
    if not pair_up:  # the usual mistake: compare index by index, as the lists came
        return bool((det_a["labels"] == det_b["labels"]).all() and ((det_a["boxes"] - det_b["boxes"]).abs() <= tol).all()
                    and ((det_a["scores"] - det_b["scores"]).abs() <= score_tol).all())
    free = list(range(len(det_b["scores"])))
    for box, score, label in zip(det_a["boxes"], det_a["scores"], det_a["labels"]):
        partner = next((j for j in free if det_b["labels"][j] == label and abs(det_b["scores"][j] - score) <= score_tol
                        and bool(((det_b["boxes"][j] - box).abs() <= tol).all())), None)
        if partner is None:
            return False
        free.remove(partner)
    return True


@pytest.mark.plumbing
def test_check_same_detections_passes_the_library():
    from check_results import on_its_reference  # tests/check_results.py
    from ssd_lib.course.checks import check_same_detections

    with on_its_reference():
        assert check_same_detections(same_detections)


def test_check_same_detections_passes_pairing_and_catches_unsorted_comparison(capsys):
    from ssd_lib.course.checks import check_same_detections

    assert check_same_detections(_learner_same)
    unsorted = check_same_detections(lambda *a: _learner_same(*a, pair_up=False))
    assert not unsorted and "order" in unsorted.message
    sorted_by_score = check_same_detections(lambda a, b, *rest: _learner_same(
        {k: v[a["scores"].argsort(descending=True)] for k, v in a.items()},
        {k: v[b["scores"].argsort(descending=True)] for k, v in b.items()}, *rest, pair_up=False))
    assert not sorted_by_score and "4e-5" in sorted_by_score.message
    absolute = check_same_detections(lambda a, b, size, *rest: _learner_same(a, b, (1, 1), *rest))
    assert not absolute and "fraction of the image size" in absolute.message
