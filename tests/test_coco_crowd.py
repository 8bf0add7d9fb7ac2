"""COCO's protocol through ``python -m ssd_lib eval --dataset coco --coco`` (issue #19): crowd regions are
ignore regions, and small/medium/large come from the annotation's ``area`` field, as COCOeval does.

The reference is pycocotools' COCOeval run directly on the original instances file with the same
detections: all 12 numbers must be equal. The command runs in this process with a fake model whose
detections are fixed (one on a crowd region, one on an object whose ``area`` field makes it small
although its box is medium); the old path (crowd dropped, w * h areas) is shown to give other numbers.
Training drops crowd boxes from its targets (a crowd box must not be a positive). About 1 s in all.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssd_lib import cli
from ssd_lib.__main__ import build_parser, main

COCO_STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
CAT, DOG = 1, 3  # category ids with a gap, as COCO's have

# image id -> (file name, width, height)
IMAGES = {5: ("a.png", 160, 120), 9: ("b.png", 200, 150), 12: ("c.png", 128, 128)}
# (image id, category id, bbox [x, y, w, h], area, iscrowd): every box inside its image
ANNOTATIONS = [
    (5, CAT, [10, 10, 40, 30], 1150.5, 0),   # medium both ways (w * h = 1200)
    (5, DOG, [80, 40, 70, 70], 3000.0, 1),   # a crowd region
    (5, DOG, [20, 60, 40, 30], 900.0, 0),    # w * h = 1200 is medium, its area field 900 small
    (9, CAT, [50, 50, 100, 90], 9500.0, 0),  # w * h = 9000 is medium, its area field 9500 large
    (9, DOG, [5, 5, 30, 30], 900.0, 0),      # small both ways
    (12, CAT, [0, 0, 64, 64], 2500.0, 1),    # a crowd region
    (12, CAT, [70, 70, 40, 40], 1600.0, 0),
]
# image id -> detections (category id, bbox [x, y, w, h], score): distinct scores, so no tie to break
DETECTIONS = {
    5: [(CAT, [11, 10, 40, 31], 0.9), (DOG, [85, 45, 50, 50], 0.8),  # the second lies on the crowd region
        (DOG, [20, 61, 40, 29], 0.7), (CAT, [100, 5, 30, 20], 0.3)],
    9: [(CAT, [52, 48, 98, 92], 0.95), (DOG, [6, 5, 29, 31], 0.6), (DOG, [150, 100, 30, 30], 0.5)],
    12: [(CAT, [5, 5, 50, 50], 0.85), (CAT, [70, 72, 40, 38], 0.75)],  # the first on the crowd region
}


def write_coco_folder(root: Path, split: str) -> Path:
    """``root/SPLIT/*.png`` and ``root/annotations/instances_SPLIT.json``; returns the JSON's path."""
    (root / split).mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name, width, height in IMAGES.values():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / split / name)
    document = {
        "images": [{"id": i, "file_name": name, "width": w, "height": h} for i, (name, w, h) in IMAGES.items()],
        "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": a, "iscrowd": crowd}
                        for k, (i, c, b, a, crowd) in enumerate(ANNOTATIONS)],
        "categories": [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"}],
    }
    json_path = root / "annotations" / f"instances_{split}.json"
    json_path.write_text(json.dumps(document))
    return json_path


def fake_predict(label_of: dict[int, int]):
    """A stand-in for ``ssd_lib.evaluate.predict``: DETECTIONS in pixel xyxy, image after image in id
    order (the dataset's), checked against each image's size."""
    queue = iter(sorted(DETECTIONS))

    def predict(model, images, **kwargs):
        out = []
        for image in images:
            image_id = next(queue)
            assert tuple(image.shape[-2:]) == (IMAGES[image_id][2], IMAGES[image_id][1])
            dets = DETECTIONS[image_id]
            out.append({"boxes": torch.tensor([[x, y, x + w, y + h] for _, (x, y, w, h), _ in dets], dtype=torch.float32),
                        "scores": torch.tensor([s for *_, s in dets]),
                        "labels": torch.tensor([label_of[c] for c, *_ in dets])})
        return out

    return predict


def pycocotools_stats(json_path: Path) -> list[float]:
    """COCOeval on the original file and DETECTIONS, as pycocotools' own example runs it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, dets in DETECTIONS.items()
               for c, b, s in dets]
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(json_path))
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


@pytest.fixture
def coco_root(tmp_path):
    root = tmp_path / "coco"
    write_coco_folder(root, "val2017")
    return root


def test_eval_coco_equals_cocoeval_on_the_original_file(coco_root, tmp_path, monkeypatch, capsys):
    """`eval --dataset coco --coco --out`: the 12 numbers in eval.json are COCOeval's on the original file."""
    monkeypatch.setattr(cli, "_load_model", lambda *args, **kwargs: (object(), ["cat", "dog"], Path("fake.pt")))
    monkeypatch.setattr("ssd_lib.evaluate.predict", fake_predict({CAT: 1, DOG: 2}))
    status = main(["eval", "--dataset", "coco", "--data-root", str(coco_root), "--checkpoint", "fake.pt", "--coco",
                   "--out", str(tmp_path / "EVAL"), "--quiet"])
    captured = capsys.readouterr()
    assert status == 0 and captured.err == "", captured.err
    ours = json.loads((tmp_path / "EVAL" / "eval.json").read_text())["coco"]
    reference = pycocotools_stats(coco_root / "annotations" / "instances_val2017.json")
    assert [ours[name] for name in COCO_STATS] == [None if v == -1 else pytest.approx(v, abs=1e-12) for v in reference]
    assert all(v != -1 for v in reference)  # every size class has objects: all 12 numbers are compared


def test_the_old_path_gives_other_numbers(coco_root):
    """Crowd regions dropped (a detection on one is a false positive) or w * h areas instead of the file's
    change the numbers: the cross-check above would catch either."""
    from ssd_lib.data import COCODataset
    from ssd_lib.metrics import evaluate_coco

    json_path = coco_root / "annotations" / "instances_val2017.json"
    reference = pycocotools_stats(json_path)

    def stats(skip_crowd: bool, file_areas: bool) -> list[float]:
        dataset = COCODataset(coco_root / "val2017", json_path, skip_crowd=skip_crowd)
        items = [dataset[i] for i in range(len(dataset))]
        truths = [t if file_areas else {k: v for k, v in t.items() if k != "area"} for _, t in items]
        detections = fake_predict({CAT: 1, DOG: 2})(None, [image for image, _ in items])
        return evaluate_coco(detections, truths, class_names=dataset.classes)["stats"].tolist()

    assert stats(skip_crowd=False, file_areas=True) == pytest.approx(reference, abs=1e-12)
    crowd_dropped = stats(skip_crowd=True, file_areas=True)
    assert crowd_dropped[0] < reference[0] - 0.05  # AP: the two detections on crowd regions became false positives
    wh_areas = stats(skip_crowd=False, file_areas=False)
    assert wh_areas[:3] == pytest.approx(reference[:3], abs=1e-12)  # AP, AP50, AP75 do not depend on areas
    assert wh_areas[3:6] != pytest.approx(reference[3:6], abs=1e-3)  # APs, APm, APl do


def test_the_dataset_carries_crowd_and_area(coco_root):
    from ssd_lib.data import COCODataset

    dataset = COCODataset(coco_root / "val2017", coco_root / "annotations" / "instances_val2017.json",
                          skip_crowd=False)
    _, target = dataset[0]  # image 5
    assert target["difficult"].tolist() == [False, True, False]
    assert target["area"].dtype == torch.float64 and target["area"].tolist() == [1150.5, 3000.0, 900.0]


def test_training_drops_crowd_boxes_evaluation_keeps_them(tmp_path):
    """The command line's datasets: train2017 without crowd boxes (no positive on a crowd region),
    val2017 with them, marked difficult (ignore regions)."""
    root = tmp_path / "coco"
    write_coco_folder(root, "train2017")
    write_coco_folder(root, "val2017")
    args = build_parser().parse_args(["train", "--dataset", "coco", "--data-root", str(root)])
    train, val = cli._datasets(args, "train"), cli._datasets(args, "val")
    crowd = sum(a[4] for a in ANNOTATIONS)
    train_boxes = sum(len(train[i][1]["boxes"]) for i in range(len(train)))
    val_targets = [val[i][1] for i in range(len(val))]
    assert train_boxes == len(ANNOTATIONS) - crowd
    assert not any(train[i][1]["difficult"].any() for i in range(len(train)))
    assert sum(len(t["boxes"]) for t in val_targets) == len(ANNOTATIONS)
    assert sum(int(t["difficult"].sum()) for t in val_targets) == crowd


def test_a_wrong_area_entry_is_named():
    from ssd_lib.metrics import evaluate_coco

    truth = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1]), "area": torch.zeros(2)}
    det = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"ground_truths\[0\]\['area'\] must have shape \(1,\)"):
        evaluate_coco([det], [truth], num_classes=1)
