"""Commands that crashed or misled (issue #19), run as a user runs them: each mistake is a non-zero exit
with at most a few lines on stderr, no traceback, a message that names the fix, and nothing lost.

* ``--coco`` with an output folder writes the COCO numbers to eval.json (they were a TypeError), equal
  to pycocotools' COCOeval on the dataset's own instances file; ``main`` and ``train`` too.
* ``eval --dataset coco`` reads its class names from the split it evaluates (val2017 only is enough).
* ``--batch-size 0`` / ``1`` / a last batch of one image: one line (BatchNorm needs 2 images per batch).
* ``detect`` skips an image file it cannot read with a one-line warning, draws the others, and exits 3.
* A file that is not a checkpoint is named as such, and unpickling it is never advised.
* Thresholds outside [0, 1] are refused.

The commands that train or evaluate are started together in subprocesses (most of their time is
importing torch); ``detect`` and the ones that stop at an option run in this process through ``main(argv)``.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssd_lib.checkpoint import SHIPPED_MODEL
from test_cli import PNG_MAGIC, SHAPE_CLASSES, Runs

pytestmark = pytest.mark.slow  # subprocesses that import torch

COCO_STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
TINY = ["--epochs", "1", "--max-steps", "1", "--batch-size", "2", "--workers", "0", "--image-size", "64", "--quiet"]


def write_tiny_coco(root: Path, n: int = 4) -> Path:
    """``root/val2017/*.png`` and ``root/annotations/instances_val2017.json`` (no train2017): n built-in
    test images at the shipped model's 128 px, category ids 1..6 named as its classes."""
    from ssd_lib.data import ShapesDataset, save_image

    dataset = ShapesDataset("test", size=n, image_size=128)
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, annotations = [], []
    for index in range(n):
        image, target = dataset[index]
        name = f"{index:012d}.png"
        save_image(image, root / "val2017" / name)
        images.append({"id": 100 + index, "file_name": name, "height": 128, "width": 128})
        for (x1, y1, x2, y2), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + index, "category_id": label,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(SHAPE_CLASSES)]
    json_path = root / "annotations" / "instances_val2017.json"
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return json_path


def write_damaged_images(folder: Path) -> None:
    """good.png and a real GIF named .jpg (both readable), a truncated PNG, and a GIF whose damaged header
    declares 1.8 billion pixels (PIL's DecompressionBombError, once a traceback), named .jpg."""
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "good.png")
    Image.fromarray(pixels).save(folder / "really_a_gif.jpg", format="GIF")
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    (folder / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (folder / "damaged_gif.jpg").write_bytes(b"GIF89a" + np.random.default_rng(1).bytes(200))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli_errors")
    write_tiny_coco(cwd / "coco")
    runs = Runs(cwd, {
        "eval_coco": ["eval", "--checkpoint", SHIPPED_MODEL, "--dataset", "coco", "--data-root", "coco", "--coco",
                      "--out", "EVAL", "--quiet"],
        "main_coco": ["main", *TINY, "--test-size", "4", "--coco", "--out", "MAIN"],
        "train_coco": ["train", *TINY, "--val-size", "4", "--coco", "--out", "TRAIN"],
    })
    yield runs
    runs.close()


def run_main(argv, capsys) -> tuple[int, str, str]:
    """``python -m ssd_lib ARGV`` through ``main(argv)`` in this process: (status, stdout, stderr)."""
    from ssd_lib.__main__ import main

    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_error(status: int, err: str, *fragments: str, expected_status: int = 2) -> str:
    assert status == expected_status, (status, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_clean(proc) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------- --coco with an output folder

def test_eval_coco_writes_the_coco_numbers_of_pycocotools(runs):
    """`eval --dataset coco` on a folder with val2017 only (the class names come from the split evaluated),
    `--coco --out`: eval.json holds the 12 COCOeval numbers, equal to pycocotools' own COCOeval of the
    same model's detections against the instances file itself."""
    import torch
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from ssd_lib.checkpoint import model_from_checkpoint
    from ssd_lib.data import COCODataset
    from ssd_lib.evaluate import predict

    assert_clean(runs["eval_coco"])
    summary = json.loads((runs.cwd / "EVAL" / "eval.json").read_text())
    assert summary["num_images"] == 4 and list(summary["ap"]) == SHAPE_CLASSES
    coco = summary["coco"]
    assert list(coco) == [*COCO_STATS, "ap_per_class"] and list(coco["ap_per_class"]) == SHAPE_CLASSES
    assert 0.3 < coco["AP"] < 1 and coco["APl"] is None  # 128 px images have no large objects: null, not NaN

    annotations = runs.cwd / "coco" / "annotations" / "instances_val2017.json"
    dataset = COCODataset(runs.cwd / "coco" / "val2017", annotations)
    model = model_from_checkpoint(SHIPPED_MODEL)[0].eval()
    results = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        with torch.no_grad():
            det = predict(model, [image])[0]
        for (x1, y1, x2, y2), score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            results.append({"image_id": target["image_id"], "category_id": dataset.label_to_category_id[label],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its report
        ground_truth = COCO(str(annotations))
        reference = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    for name, value in zip(COCO_STATS, reference.stats):
        assert coco[name] == (None if value == -1 else pytest.approx(value, abs=1e-4)), name


def test_main_coco_writes_eval_json_and_run_json(runs):
    assert_clean(runs["main_coco"])
    out = runs.cwd / "MAIN"
    coco = json.loads((out / "eval.json").read_text())["coco"]
    assert list(coco) == [*COCO_STATS, "ap_per_class"]
    record = json.loads((out / "run.json").read_text())
    assert record["test_coco"] == coco and record["test_images"] == 4
    assert (out / "test_detections.png").read_bytes()[:8] == PNG_MAGIC  # 4 test images, fewer than the 8 drawn


def test_train_coco_evaluates_the_validation_split(runs):
    proc = runs["train_coco"]
    assert_clean(proc)
    assert "validation split (4 images)" in proc.stdout and "COCO AP" in proc.stdout
    summary = json.loads((runs.cwd / "TRAIN" / "eval.json").read_text())
    assert summary["num_images"] == 4 and list(summary["coco"])[:12] == COCO_STATS
    assert (runs.cwd / "TRAIN" / "last.pt").is_file()


# ---------------------------------------------------------------- unreadable images

def test_detect_skips_unreadable_images_draws_the_others_and_exits_3(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_damaged_images(tmp_path / "photos")
    status, out, err = run_main(["detect", "photos", "--out", "DRAWN", "--json", "DRAWN/detections.json"], capsys)
    drawn = tmp_path / "DRAWN"
    assert status == 3, (out, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 3, err  # one warning per skipped file, one summary
    assert lines[0].startswith("warning: could not read image photos/damaged_gif.jpg: ") and lines[0].endswith("; skipped")
    assert lines[1].startswith("warning: could not read image photos/truncated.png: image file is truncated")
    assert lines[2] == "warning: 2 of 4 image files could not be read and were skipped (exit status 3)"
    assert sorted(p.name for p in drawn.glob("*.png")) == ["good_detections.png", "really_a_gif_detections.png"]
    report = json.loads((drawn / "detections.json").read_text())
    assert [Path(r["file"]).name for r in report["images"]] == ["good.png", "really_a_gif.jpg"]
    assert [Path(s["file"]).name for s in report["skipped"]] == ["damaged_gif.jpg", "truncated.png"]


def test_detect_on_one_truncated_png_is_a_warning_and_status_3(tmp_path, capsys):
    write_damaged_images(tmp_path / "photos")
    status, _, err = run_main(["detect", tmp_path / "photos" / "truncated.png", "--out", tmp_path / "drawn"], capsys)
    assert status == 3 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "image file is truncated" in lines[0] and "1 of 1" in lines[1], err


def test_read_image_names_a_damaged_header_in_one_line(tmp_path):
    from ssd_lib.data import read_image

    write_damaged_images(tmp_path / "photos")
    with pytest.raises(OSError, match="could not read image .*damaged_gif.jpg") as err:
        read_image(tmp_path / "photos" / "damaged_gif.jpg")
    assert "\n" not in str(err.value)
    assert read_image(tmp_path / "photos" / "really_a_gif.jpg").shape == (3, 60, 80)


def test_detect_help_documents_the_exit_statuses(capsys):
    from ssd_lib.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["detect", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    assert "exit status: 0 when every image was drawn; 2 for a usage error" in help_text
    assert "3 when some image files could not be read" in help_text


# ---------------------------------------------------------------- options and files

@pytest.mark.parametrize("argv, fragments", [
    (["train", "--batch-size", "0"], ["--batch-size must be at least 1; got 0"]),
    (["train", "--batch-size", "1"], ["BatchNorm", "at least 2 images per batch", "use --batch-size 2 or more"]),
    (["train", "--batch-size", "2", "--train-size", "5"], ["last batch", "would hold 1 image", "BatchNorm"]),
    (["eval", "--checkpoint", SHIPPED_MODEL, "--eval-batch-size", "0"], ["--eval-batch-size must be at least 1"]),
    (["detect", "photos", "--score-threshold", "2"], ["--score-threshold must be between 0 and 1", "got 2.0"]),
    (["detect", "photos", "--score-threshold", "-0.1"], ["--score-threshold must be between 0 and 1"]),
    (["detect", "photos", "--score-threshold", "nan"], ["--score-threshold must be between 0 and 1"]),
    (["train", "--background-prior", "1.5"], ["--background-prior must be between 0 and 1", "got 1.5"]),
    (["train", "--background-prior", "1"], ["background must be a probability in (0, 1)", "got 1.0"]),
], ids=["batch-0", "batch-1", "last-batch-1", "eval-batch-0", "score-2", "score-negative", "score-nan", "prior-1.5",
        "prior-1"])
def test_an_option_out_of_range_is_one_line(tmp_path, capsys, monkeypatch, argv, fragments):
    monkeypatch.chdir(tmp_path)
    write_damaged_images(tmp_path / "photos")
    status, out, err = run_main([*argv, "--out", tmp_path / "out"], capsys)
    assert_error(status, err, *fragments)
    assert not (tmp_path / "out").exists()  # stopped before any work


@pytest.mark.parametrize("command", ["eval", "detect"])
def test_a_text_file_as_checkpoint_is_named_not_unpickled(tmp_path, capsys, command):
    notes = tmp_path / "notes.txt"
    notes.write_text("model: 1\nthese are my notes\n")  # torch.load reads text like this as pickle opcodes
    write_damaged_images(tmp_path / "photos")
    argv = ["eval", "--test-size", "2", "--quiet"] if command == "eval" else ["detect", tmp_path / "photos", "--out",
                                                                               tmp_path / "drawn"]
    status, _, err = run_main([*argv, "--checkpoint", notes], capsys)
    line = assert_error(status, err, f"{notes} is not a PyTorch checkpoint written by ssd_lib")
    assert "weights_only" not in line and "False" not in line
