"""Bad boxes are never dropped silently (issue #19): ``python -m ssd_lib check-data`` lists every problem of a
VOC or COCO folder, one ``path: problem`` line each, and exits 1; the datasets warn once with the count of
the boxes they drop and the command that lists them; training still drops them.

Every folder is written here, in tmp_path: a few tiny images. The commands run in this process through
``main(argv)``. About 2 s in all once torch is imported.
"""
from __future__ import annotations

import json
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssd_lib.__main__ import main
from ssd_lib.data import COCODataset, VOCDataset
from ssd_lib.data.check import BORDER_TOLERANCE, DATA_PROBLEMS_STATUS, box_problems, check_voc
from ssd_lib.data.common import clip_boxes


def write_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")


def voc_xml(objects: list[tuple], width: int = 64, height: int = 48) -> str:
    """objects: (name, xmin, ymin, xmax, ymax) in VOC's 1-based inclusive corners."""
    return (f"<annotation><filename>x.jpg</filename><size><width>{width}</width><height>{height}</height>"
            "<depth>3</depth></size>"
            + "".join(f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                      f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for name, x1, y1, x2, y2 in objects)
            + "</annotation>")


def write_voc(root: Path, items: dict[str, list[tuple] | str | None], image_set: str = "trainval",
              images: dict[str, bytes | tuple[int, int] | None] | None = None) -> Path:
    """root/VOCdevkit/VOC2007: per id an XML (objects, raw text, or None: no file) and a 64 x 48 JPEG
    (or ``images[id]``: raw bytes, another (width, height), or None: no file). Returns the year folder."""
    year_dir = root / "VOCdevkit" / "VOC2007"
    (year_dir / "Annotations").mkdir(parents=True, exist_ok=True)
    (year_dir / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (year_dir / "JPEGImages").mkdir(exist_ok=True)
    for stem, objects in items.items():
        image = (images or {}).get(stem, (64, 48))
        if isinstance(image, bytes):
            (year_dir / "JPEGImages" / f"{stem}.jpg").write_bytes(image)
        elif image is not None:
            write_image(year_dir / "JPEGImages" / f"{stem}.jpg", *image)
        if objects is not None:
            text = objects if isinstance(objects, str) else voc_xml(objects)
            (year_dir / "Annotations" / f"{stem}.xml").write_text(text)
    (year_dir / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(f"{stem}\n" for stem in items))
    return year_dir


# A VOC image set with one of each problem; 000001 is clean (its xmin = 0, a 0-based tool's, is rounding).
VOC_ITEMS = {
    "000001": [("dog", 1, 1, 10, 20), ("cat", 0, 5, 30, 40)],
    "000002": [("dog", 20, 5, 10, 30), ("cat", -10, 5, 30, 40), ("cow", 100, 100, 120, 120)],
    "000003": [("unicorn", 1, 1, 5, 5)],
    "000004": [("dog", 1, 1, 5, 5)],
    "000005": [("dog", 1, 1, 5, 5)],
    "000006": None,
    "000007": "<annotation><object>",
    "000008": [("dog", 1, 1, 40, 40)],
}
VOC_IMAGES = {"000004": None, "000005": b"not a jpeg", "000008": (32, 32)}


def voc_expected(year_dir: Path) -> list[str]:
    a, j = year_dir / "Annotations", year_dir / "JPEGImages"
    return [
        f"{a}/000002.xml: object 1 'dog' (xmin 20, ymin 5, xmax 10, ymax 30): inverted box (max < min) (dropped)",
        f"{a}/000002.xml: object 2 'cat' (xmin -10, ymin 5, xmax 30, ymax 40): box reaches more than 1 px past the "
        "border of the 64x48 image (clipped)",
        f"{a}/000002.xml: object 3 'cow' (xmin 100, ymin 100, xmax 120, ymax 120): box outside the 64x48 image (dropped)",
        f"{a}/000003.xml: object 1: unknown class name 'unicorn' (not one of the 20 classes)",
        f"{j}/000004.jpg: image file missing",
        f"{j}/000005.jpg: image cannot be read",  # then PIL's reason
        f"{a}/000006.xml: annotation file missing (listed in trainval.txt)",
        f"{a}/000007.xml: could not parse VOC annotation: ",  # then the XML parser's reason
        f"{j}/000008.jpg: the XML's <size> says 64x48 but the image is 32x32 (boxes are clipped to the image)",
        f"{a}/000008.xml: object 1 'dog' (xmin 1, ymin 1, xmax 40, ymax 40): box reaches more than 1 px past the "
        "border of the 32x32 image (clipped)",
    ]


def run(capsys, *argv) -> tuple[int, list[str], str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out.splitlines(), captured.err


def test_check_data_voc_lists_every_problem(tmp_path, capsys):
    year_dir = write_voc(tmp_path, VOC_ITEMS, images=VOC_IMAGES)
    status, lines, err = run(capsys, "check-data", "--dataset", "voc", "--data-root", tmp_path)
    assert status == DATA_PROBLEMS_STATUS == 1 and err == ""  # 1: what `check-data --help` says
    expected = voc_expected(year_dir)
    assert len(lines) == len(expected) + 1
    for line, start in zip(lines, expected):
        assert line.startswith(start), (line, start)
    assert lines[-1] == (f"10 problems in 8 files of VOC2007 trainval under {tmp_path} (test not found); "
                         "2 of them boxes that training and evaluation drop")


def test_check_data_voc_skip_images_judges_boxes_by_the_xml(tmp_path, capsys):
    year_dir = write_voc(tmp_path, VOC_ITEMS, images=VOC_IMAGES)
    status, lines, _ = run(capsys, "check-data", "--dataset", "voc", "--data-root", tmp_path / "VOCdevkit",
                           "--split", "trainval", "--skip-images")
    assert status == 1
    no_images = [line for line in voc_expected(year_dir) if "JPEGImages" not in line and "000008" not in line]
    assert [line[:len(start)] for line, start in zip(lines, no_images)] == no_images and len(lines) == len(no_images) + 1


def test_voc_dataset_warns_once_and_training_drops_the_boxes(tmp_path, capsys):
    write_voc(tmp_path, VOC_ITEMS, images=VOC_IMAGES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = VOCDataset(tmp_path, image_set="trainval")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("2 boxes in 1 file are inverted, empty or outside the image and were dropped, "
                              "e.g. 000002.xml; see `python -m ssd_lib check-data --dataset voc")
    assert caught[0].filename == __file__  # it points at the line that built the dataset
    # The command the warning names lists the same two dropped boxes, with the rest.
    argv = shlex.split(re.search(r"`([^`]*)`", message).group(1))
    status, lines, _ = run(capsys, *argv[3:])
    assert status == 1 and sum(line.endswith("(dropped)") for line in lines) == 2
    # Training and evaluation read 000002 without the inverted and outside boxes; the cat is clipped.
    _, target = dataset[1]
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 4.0, 30.0, 40.0]]))
    from ssd_lib.train.batches import check_targets

    check_targets([target], num_classes=21)  # the batch check training runs: no box without area


def test_the_command_line_warns_once_per_dataset(tmp_path):
    """`train --dataset voc` builds its training set twice (for the class names, then to train) and its
    validation set once: what `python -m ssd_lib` shows (each warning once per place) is one warning
    per set with dropped boxes. (Training itself is not run here: its targets are the items above.)"""
    from ssd_lib import cli
    from ssd_lib.__main__ import build_parser

    clean = [("dog", 5, 5, 40, 30)]
    write_voc(tmp_path, {"a": clean + [("cat", 30, 5, 10, 20)], "b": clean})
    write_voc(tmp_path, {"c": clean + [("cat", 1, 1, 9, 0)], "d": clean}, image_set="test")
    args = build_parser().parse_args(["train", "--dataset", "voc", "--data-root", str(tmp_path)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        cli._class_names(args)
        cli._datasets(args, "train")
        cli._datasets(args, "val")
    assert len(caught) == 2
    assert all(str(w.message).startswith("1 box in 1 file is inverted, empty or outside the image and was dropped")
               for w in caught)
    assert "e.g. a.xml;" in str(caught[0].message) and "e.g. c.xml;" in str(caught[1].message)


def test_check_data_clean_folders_exit_0(tmp_path, capsys):
    """The built-in data written by `render`, and a COCO folder without problems."""
    from ssd_lib.data import ShapesConfig

    assert main(["render", "--format", "voc", "--split", "test", "--n", "3", "--image-size", "64",
                 "--out", str(tmp_path / "voc")]) == 0
    capsys.readouterr()
    status, lines, err = run(capsys, "check-data", "--dataset", "voc", "--data-root", tmp_path / "voc", "--split",
                             "test", "--classes", ",".join(ShapesConfig().classes))
    assert (status, err) == (0, "") and lines == [f"no problems found in VOC2007 test under {tmp_path / 'voc'}"]
    # Without --classes every shape is an unknown VOC class name.
    status, lines, _ = run(capsys, "check-data", "--dataset", "voc", "--data-root", tmp_path / "voc", "--split", "test")
    assert status == 1 and all("unknown class name" in line for line in lines[:-1])
    root = write_coco(tmp_path / "coco", [ann(1, 1, [2, 2, 20, 20])])
    status, lines, err = run(capsys, "check-data", "--dataset", "coco", "--data-root", root)
    assert (status, err) == (0, "")
    assert lines == [f"no problems found in COCO val2017 under {root} (train2017 not found)"]


@pytest.mark.parametrize("argv, fragment", [
    (["--dataset", "voc", "--data-root", "{tmp}/nowhere"], "does not exist"),
    (["--dataset", "voc", "--data-root", "{tmp}", "--split", "val"], "val.txt"),
    (["--dataset", "coco", "--data-root", "{tmp}"], "COCO image folder not found"),
])
def test_check_data_usage_errors_are_one_line(tmp_path, capsys, argv, fragment):
    write_voc(tmp_path, {"000001": [("dog", 1, 1, 10, 20)]})
    status, lines, err = run(capsys, "check-data", *[a.format(tmp=tmp_path) for a in argv])
    assert status == 2 and lines == []
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and fragment in err, err


# ---------------------------------------------------------------- COCO

def ann(id, image_id, bbox, category_id=1, iscrowd=0):
    return {"id": id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": iscrowd,
            "area": 100.0}


def write_coco(root: Path, annotations: list[dict], images: list[dict] | None = None, split: str = "val2017") -> Path:
    """root/SPLIT/*.png (64 x 48, or as the image entry says with "real_size") and the instances JSON."""
    images = images or [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}]
    for info in images:
        if info.get("write", True):
            write_image(root / split / info["file_name"], *info.get("real_size", (info["width"], info["height"])))
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    stated = [{k: v for k, v in info.items() if k in ("id", "file_name", "width", "height")} for info in images]
    document = {"images": stated, "annotations": annotations, "categories": [{"id": 1, "name": "cat"}]}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(document))
    return root


COCO_IMAGES = [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
               {"id": 2, "file_name": "missing.png", "width": 64, "height": 48, "write": False},
               {"id": 3, "file_name": "broken.png", "width": 64, "height": 48},
               {"id": 4, "file_name": "small.png", "width": 64, "height": 48, "real_size": (32, 24)}]
COCO_ANNOTATIONS = [ann(1, 1, [2, 2, 20, 20]), ann(2, 1, [5, 5, 0, 10]), ann(3, 1, [30, 5, -10, 10]),
                    ann(4, 1, [100, 100, 5, 5]), ann(5, 1, [50, 40, 30, 30]), ann(6, 1, [1, 1, 5, 5], category_id=7),
                    ann(7, 1, [1, "x", 5, 5]), ann(8, 99, [1, 1, 5, 5]), ann(9, 1, [63.5, 2, 1.2, 5]),
                    ann(10, 1, [30, 5, -10, 10], iscrowd=1), ann(11, 2, [1, 1, 5, 5])]


def test_check_data_coco_lists_every_problem(tmp_path, capsys):
    root = write_coco(tmp_path / "coco", COCO_ANNOTATIONS, COCO_IMAGES)
    (root / "val2017" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    status, lines, err = run(capsys, "check-data", "--dataset", "coco", "--data-root", root)
    assert status == 1 and err == ""
    json_path, a, images = root / "annotations" / "instances_val2017.json", root / "val2017" / "a.png", root / "val2017"
    expected = [
        f"{json_path}: annotation 8: image_id 99 is not in 'images'",
        f"{a}: annotation 2 (bbox [5, 5, 0, 10]): empty box (zero width or height) (dropped)",
        f"{a}: annotation 3 (bbox [30, 5, -10, 10]): inverted box (max < min) (dropped)",
        f"{a}: annotation 4 (bbox [100, 100, 5, 5]): box outside the 64x48 image (dropped)",
        f"{a}: annotation 5 (bbox [50, 40, 30, 30]): box reaches more than 1 px past the border of the 64x48 image "
        "(clipped)",
        f"{a}: annotation 6: unknown category_id 7 (not in 'categories')",
        f"{a}: annotation 7: bbox must be 4 numbers [x, y, w, h]; got [1, 'x', 5, 5]",
        f"{a}: annotation 10 (bbox [30, 5, -10, 10]): inverted box (max < min) (dropped)",
        f"{images}/missing.png: image file missing",
        f"{images}/broken.png: image cannot be read",
        f"{images}/small.png: the file's width/height says 64x48 but the image is 32x24 (boxes are clipped to the image)",
    ]
    assert len(lines) == len(expected) + 1
    for line, start in zip(lines, expected):
        assert line.startswith(start), (line, start)
    assert lines[-1].startswith("11 problems in 5 files of COCO val2017 under")  # annotation 9: 0.7 px is rounding
    assert lines[-1].endswith("4 of them boxes that training and evaluation drop")


def test_coco_dataset_warns_once_and_drops_the_boxes(tmp_path):
    good = [ann(1, 1, [2, 2, 20, 20]), ann(2, 1, [5, 5, 0, 10]), ann(3, 1, [30, 5, -10, 10]), ann(4, 1, [50, 40, 30, 30])]
    root = write_coco(tmp_path / "coco", good)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = COCODataset(root / "val2017", root / "annotations" / "instances_val2017.json")
    assert len(caught) == 1 and str(caught[0].message).startswith(
        "2 boxes in 1 file are inverted, empty or outside the image and were dropped, e.g. a.png; see "
        f"`python -m ssd_lib check-data --dataset coco --data-root {root} --split val2017`")
    _, target = dataset[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.0, 2.0, 22.0, 22.0], [50.0, 40.0, 64.0, 48.0]]))


def test_a_clean_dataset_does_not_warn(tmp_path):
    write_voc(tmp_path, {"000001": [("dog", 1, 1, 64, 48)]})
    root = write_coco(tmp_path / "coco", [ann(1, 1, [0, 0, 64, 48])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VOCDataset(tmp_path, image_set="trainval")
        COCODataset(root / "val2017", root / "annotations" / "instances_val2017.json")


# ---------------------------------------------------------------- the box rule

def test_box_problems_agree_with_what_the_loaders_drop():
    """A box is reported "(dropped)" exactly when clip_boxes (the loaders' rule) drops it, and "(clipped)"
    exactly when it passes the border by more than the tolerance and is kept."""
    rng = np.random.default_rng(0)
    boxes = rng.uniform(-30, 90, (400, 4))
    boxes[::7, 2] = boxes[::7, 0]  # some empty ones
    _, keep = clip_boxes(boxes, 64, 48)
    found = dict(box_problems(boxes, boxes[:, 2] < boxes[:, 0], 64.0, 48.0))
    dropped = np.array([found.get(i, "").endswith("(dropped)") for i in range(len(boxes))])
    clipped = np.array([found.get(i, "").endswith("(clipped)") for i in range(len(boxes))])
    np.testing.assert_array_equal(dropped, ~keep)
    past = ((boxes[:, :2] < -BORDER_TOLERANCE).any(1) | (boxes[:, 2] > 64 + BORDER_TOLERANCE)
            | (boxes[:, 3] > 48 + BORDER_TOLERANCE))
    np.testing.assert_array_equal(clipped, keep & past)
    assert dropped.any() and clipped.any() and (keep & ~past).any()


def test_check_voc_without_sizes_still_finds_inverted_boxes(tmp_path):
    year_dir = write_voc(tmp_path, {"000001": None})
    (year_dir / "Annotations" / "000001.xml").write_text(
        "<annotation><object><name>dog</name><bndbox><xmin>9</xmin><ymin>1</ymin><xmax>3</xmax><ymax>5</ymax>"
        "</bndbox></object></annotation>")
    problems = check_voc(tmp_path, image_set="trainval", read_images=False)
    assert [p.problem for p in problems] == ["object 1 'dog' (xmin 9, ymin 1, xmax 3, ymax 5): inverted box (max < min) "
                                            "(dropped)"]
    assert problems[0].dropped
