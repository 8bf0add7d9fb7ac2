"""Tests for ssd_lib.data: the Shapes generator, the VOC and COCO loaders, export and collate.

Every fixture is written into pytest's tmp_path by the test itself (no downloads). VOC files are
written as plain XML text and COCO files as plain JSON here, independently of ssd_lib's exporter,
so that the loaders are checked against the formats and not against our own writer.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou

from ssd_lib.data import (VOC_CLASSES, COCODataset, ShapesConfig, ShapesDataset, VOCDataset, clip_boxes, collate,
                          read_image, write_coco, write_voc)
from ssd_lib.data.__main__ import main as cli_main
from ssd_lib.data.drawing import _box_iou_1n, _mask_box

REPO = Path(__file__).resolve().parents[1]


def check_item(image, target, num_classes: int, height: int | None = None, width: int | None = None) -> None:
    """The item contract shared by every dataset."""
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
    if height is not None:
        assert tuple(image.shape[1:]) == (height, width)
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    boxes, labels, difficult = target["boxes"], target["labels"], target["difficult"]
    assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert labels.dtype == torch.int64 and labels.shape == (len(boxes),)
    assert difficult.dtype == torch.bool and difficult.shape == (len(boxes),)
    assert isinstance(target["image_id"], int)
    assert torch.isfinite(boxes).all()
    if len(boxes):
        h, w = image.shape[1:]
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= w
        assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= h
        assert labels.min() >= 1 and labels.max() <= num_classes


def max_abs_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max()) if a.numel() else 0.0


def items_equal(a, b) -> bool:
    (image_a, target_a), (image_b, target_b) = a, b
    return (torch.equal(image_a, image_b) and torch.equal(target_a["boxes"], target_b["boxes"])
            and torch.equal(target_a["labels"], target_b["labels"]) and target_a["image_id"] == target_b["image_id"])


# =============================================================================================
# ShapesDataset
# =============================================================================================

@pytest.fixture(scope="module")
def shapes_stats():
    """Statistics over 300 training images, shared by the distribution tests."""
    return ShapesDataset("train", size=300).statistics(300)


def test_shapes_item_contract():
    dataset = ShapesDataset("train", size=20)
    assert dataset.classes == ["circle", "rectangle", "triangle", "cross", "ring", "star"]
    assert len(dataset) == 20
    for i in range(20):
        image, target = dataset[i]
        check_item(image, target, num_classes=6, height=256, width=256)
        assert target["image_id"] == i
        assert not target["difficult"].any()


def test_shapes_default_split_sizes():
    assert [len(ShapesDataset(split)) for split in ("train", "val", "test")] == [10_000, 500, 500]


def test_shapes_deterministic():
    a, b = ShapesDataset("train", size=50), ShapesDataset("train", size=50)
    for i in (0, 7, 49):
        assert items_equal(a[i], a[i])
        assert items_equal(a[i], b[i])


def test_shapes_splits_and_seeds_differ():
    items = [ShapesDataset(split, size=5)[3] for split in ("train", "val", "test")]
    items.append(ShapesDataset("train", size=5, seed=1)[3])
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            assert not torch.equal(items[i][0], items[j][0])


def test_shapes_order_independent():
    dataset = ShapesDataset("val", size=12)
    forward = [dataset[i] for i in range(12)]
    backward = [dataset[i] for i in reversed(range(12))][::-1]
    assert all(items_equal(f, b) for f, b in zip(forward, backward))


def test_shapes_same_in_dataloader_workers():
    dataset = ShapesDataset("test", size=8)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate)
    images, targets = zip(*loader)
    images = torch.cat(images)
    targets = [t for batch in targets for t in batch]
    for i in range(8):
        assert items_equal((images[i], targets[i]), dataset[i])


def test_shapes_index_errors():
    dataset = ShapesDataset("val", size=3)
    for bad in (-1, 3, 100):
        with pytest.raises(IndexError):
            dataset[bad]
    with pytest.raises(TypeError):
        dataset["0"]
    assert items_equal(dataset[np.int64(2)], dataset[2]) and items_equal(dataset[torch.tensor(2)], dataset[2])
    assert len(list(iter(dataset))) == 3  # the IndexError at the end stops plain iteration


def test_shapes_argument_errors():
    with pytest.raises(ValueError, match="split"):
        ShapesDataset("training")
    with pytest.raises(ValueError, match="size"):
        ShapesDataset("train", size=-1)
    with pytest.raises(ValueError, match="image_size"):
        ShapesDataset("train", image_size=8)
    with pytest.raises(TypeError, match="ShapesConfig"):
        ShapesDataset("train", config={"empty_prob": 0.1})


def test_shapes_config_validation():
    with pytest.raises(ValueError, match="size_range"):
        ShapesConfig(size_range=(0.5, 0.1))
    with pytest.raises(ValueError, match="classes"):
        ShapesConfig(classes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="empty_prob"):
        ShapesConfig(empty_prob=1.5)
    with pytest.raises(Exception):  # frozen
        ShapesConfig().empty_prob = 0.5
    assert ShapesConfig.default() == ShapesConfig()
    assert ShapesConfig().with_(empty_prob=0.2).empty_prob == 0.2


def test_shapes_stats_cover_the_spec(shapes_stats):
    size, aspect, counts = shapes_stats["box_size"], shapes_stats["aspect"], shapes_stats["objects_per_image"]
    # Object size sqrt(w h) / S: from below 8 % to above 70 %, with real shares of small and large.
    assert size.min() < 0.08 and size.max() > 0.7
    assert (size < 0.12).mean() > 0.15 and (size > 0.5).mean() > 0.05
    # Aspect ratio w / h spans at least 1:2.5 .. 2.5:1.
    assert aspect.min() <= 1 / 2.5 and aspect.max() >= 2.5
    # 0 to 8 objects per image, every count present, a few empty images (about 5 %).
    assert counts.min() == 0 and counts.max() == 8
    assert set(range(1, 9)) <= set(counts.tolist())
    assert 0.01 <= (counts == 0).mean() <= 0.12
    # All six classes, none rare.
    label_counts = np.bincount(shapes_stats["labels"], minlength=7)[1:]
    assert (label_counts > 0.1 * label_counts.sum()).all()


def test_shapes_crowded_images_have_smaller_objects(shapes_stats):
    """Large objects are rarer when there are many (area_budget): mean box size falls with the count."""
    sizes, counts = shapes_stats["box_size"], shapes_stats["objects_per_image"]
    per_box_count = np.repeat(counts, counts)  # the object count of each box's image
    few, many = sizes[per_box_count <= 2], sizes[per_box_count >= 7]
    assert few.mean() > 1.1 * many.mean()
    assert (few > 0.5).mean() > 1.3 * (many > 0.5).mean()


def test_shapes_boxes_exact_and_rules_hold():
    """Boxes are the tight extent of each object's visible pixels; IoU and visibility caps hold."""
    dataset = ShapesDataset("train", size=150)
    cfg = dataset.config
    for i in range(150):
        sample = dataset.render(i)
        for k, box in enumerate(sample.boxes):
            own = sample.instance_map == k
            assert own.any()
            np.testing.assert_array_equal(_mask_box(own, 0, 0), box)
        assert (sample.visible >= cfg.min_visible - 1e-6).all() and (sample.visible <= 1).all()
        if len(sample.boxes) > 1:
            iou = box_iou(torch.from_numpy(sample.boxes), torch.from_numpy(sample.boxes)).fill_diagonal_(0)
            assert iou.max() <= cfg.max_iou + 1e-6
        assert sample.instance_map.max() == len(sample.boxes) - 1


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 31), index=st.integers(0, 10 ** 6), image_size=st.sampled_from([64, 100, 256, 300]),
       split=st.sampled_from(["train", "val", "test"]))
def test_shapes_any_item_valid(seed, index, image_size, split):
    dataset = ShapesDataset(split, size=index + 1, seed=seed, image_size=image_size)
    image, target = dataset[index]
    check_item(image, target, num_classes=6, height=image_size, width=image_size)
    assert items_equal((image, target), dataset[index])


@settings(max_examples=30, deadline=None)
@given(box=st.lists(st.floats(-50, 300), min_size=4, max_size=4),
       others=st.lists(st.lists(st.floats(-50, 300), min_size=4, max_size=4), min_size=1, max_size=5))
def test_numpy_iou_matches_torchvision(box, others):
    def order(b):
        return [min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]) + 1, max(b[1], b[3]) + 1]
    box, others = np.array(order(box)), np.array([order(o) for o in others])
    expected = box_iou(torch.tensor(box[None]), torch.tensor(others))[0].numpy()
    np.testing.assert_allclose(_box_iou_1n(box, others), expected, rtol=1e-6, atol=1e-9)


def test_shapes_config_knobs():
    only_two = ShapesDataset("train", size=30, config=ShapesConfig(classes=("star", "ring")))
    assert only_two.classes == ["star", "ring"]
    empty = ShapesDataset("train", size=10, config=ShapesConfig(objects_per_image=(0, 0)))
    assert all(len(empty[i][1]["boxes"]) == 0 for i in range(10))
    labels = torch.cat([only_two[i][1]["labels"] for i in range(30)])
    assert set(labels.tolist()) == {1, 2}
    easy = ShapesDataset("train", size=30, config=ShapesConfig.easy())
    for i in range(30):
        sample = easy.render(i)
        assert 1 <= len(sample.boxes) <= 4 and (sample.visible == 1).all()


def test_shapes_clutter_is_never_labelled():
    # With clutter only, every image has an empty target but is not a flat background.
    config = ShapesConfig(objects_per_image=(0, 0), clutter_count=(10, 10), noise=(0, 0), pattern_prob=0)
    dataset = ShapesDataset("train", size=5, config=config)
    plain = ShapesDataset("train", size=5, config=config.with_(clutter_count=(0, 0)))
    for i in range(5):
        image, target = dataset[i]
        assert len(target["boxes"]) == 0
        assert (image - plain[i][0]).abs().amax(0).gt(0.05).sum() > 50  # clutter pixels were drawn


def test_shapes_colour_does_not_predict_class():
    """Each class is drawn in many palette colours (colour says nothing about class)."""
    dataset = ShapesDataset("train", size=150, config=ShapesConfig(noise=(0, 0), shading=0.0))
    palette = np.asarray(ShapesConfig().palette)
    colours = {c: set() for c in range(1, 7)}
    for i in range(150):
        sample = dataset.render(i)
        for k, label in enumerate(sample.labels):
            mean = sample.image[:, sample.instance_map == k].mean(1)
            colours[int(label)].add(int(np.abs(palette - mean).sum(1).argmin()))
    assert all(len(found) >= 8 for found in colours.values()), colours


def test_shapes_transforms_applied():
    def flip(image, target):
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = image.shape[-1] - target["boxes"][:, [2, 0]]
        return image.flip(-1), {**target, "boxes": boxes}

    plain, flipped = ShapesDataset("val", size=2), ShapesDataset("val", size=2, transforms=flip)
    image, target = flipped[1]
    assert torch.equal(image, plain[1][0].flip(-1))
    check_item(image, target, num_classes=6)


def test_shapes_describe():
    # Rendering speed is a benchmark, not a test: python -m benchmarks.bench_budgets
    text = ShapesDataset("train", size=100).describe(100)
    assert "ms/image" in text and "star" in text


# =============================================================================================
# Fixture writers (plain XML / JSON text, not ssd_lib's exporter)
# =============================================================================================

def write_jpeg(path: Path, width: int, height: int, mode: str = "RGB") -> None:
    """Random pixels in ``mode``; RGBA and palette images (which JPEG cannot hold) are stored as PNG
    under the given name, as some dataset mirrors do; PIL reads files by content, not by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "L":
        image = image.convert("L")
    elif mode == "RGBA":
        image = image.convert("RGBA")
    elif mode == "P":
        image = image.convert("P")
    image.save(path, format="JPEG" if mode in ("RGB", "L") else "PNG")


def voc_xml(objects: list[tuple], width: int = 64, height: int = 48) -> str:
    """objects: (name, xmin, ymin, xmax, ymax, difficult) in VOC's 1-based inclusive corners."""
    parts = [f"<annotation><folder>VOC2007</folder><filename>x.jpg</filename>"
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, xmin, ymin, xmax, ymax, difficult in objects:
        parts.append(f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
                     f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
                     f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def make_voc(root: Path, items: dict[str, list[tuple]], image_set: str = "trainval", width: int = 64,
             height: int = 48, modes: dict[str, str] | None = None) -> Path:
    """Write root/VOCdevkit/VOC2007 with one JPEG + XML per item id; return root."""
    year_dir = root / "VOCdevkit" / "VOC2007"
    (year_dir / "Annotations").mkdir(parents=True, exist_ok=True)
    (year_dir / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for stem, objects in items.items():
        write_jpeg(year_dir / "JPEGImages" / f"{stem}.jpg", width, height, (modes or {}).get(stem, "RGB"))
        (year_dir / "Annotations" / f"{stem}.xml").write_text(voc_xml(objects, width, height))
    (year_dir / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(f"{s}\n" for s in items))
    return root


# =============================================================================================
# VOCDataset
# =============================================================================================

def test_voc_classes_standard_order():
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    assert VOC_CLASSES.index("person") == 14


def test_voc_reads_boxes_labels_difficult(tmp_path):
    root = make_voc(tmp_path, {
        "000005": [("chair", 1, 1, 10, 20, 0), ("person", 5, 6, 64, 48, 1)],
        "000007": [("car", 30, 10, 40, 30, 0)],
    })
    dataset = VOCDataset(root, year="2007", image_set="trainval")
    assert len(dataset) == 2 and dataset.classes == list(VOC_CLASSES) and dataset.ids == ["000005", "000007"]
    image, target = dataset[0]
    check_item(image, target, num_classes=20, height=48, width=64)
    # 1-based inclusive corners -> pixel edges: (xmin - 1, ymin - 1, xmax, ymax)
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 0.0, 10.0, 20.0], [4.0, 5.0, 64.0, 48.0]]))
    assert target["labels"].tolist() == [VOC_CLASSES.index("chair") + 1, VOC_CLASSES.index("person") + 1]
    assert target["difficult"].tolist() == [False, True]
    assert target["image_id"] == 0 and dataset[1][1]["image_id"] == 1
    easy = VOCDataset(root, image_set="trainval", keep_difficult=False)
    assert easy[0][1]["labels"].tolist() == [VOC_CLASSES.index("chair") + 1]


@pytest.mark.parametrize("where", ["parent", "devkit", "year"])
def test_voc_root_layouts(tmp_path, where):
    make_voc(tmp_path, {"000001": [("dog", 2, 2, 20, 20, 0)]})
    root = {"parent": tmp_path, "devkit": tmp_path / "VOCdevkit", "year": tmp_path / "VOCdevkit" / "VOC2007"}[where]
    assert len(VOCDataset(root, image_set="trainval")) == 1


def test_voc_missing_paths_explain_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="Expected layout") as info:
        VOCDataset(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    make_voc(tmp_path, {"000001": [("dog", 2, 2, 20, 20, 0)]})
    with pytest.raises(FileNotFoundError, match=r"test\.txt"):
        VOCDataset(tmp_path, image_set="test")
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        VOCDataset(tmp_path / "VOCdevkit", year="2012", image_set="trainval")
    (tmp_path / "VOCdevkit/VOC2007/JPEGImages").rename(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        VOCDataset(tmp_path, image_set="trainval")
    (tmp_path / "elsewhere").rename(tmp_path / "VOCdevkit/VOC2007/JPEGImages")
    # an id listed in the image set whose JPEG is missing
    (tmp_path / "VOCdevkit/VOC2007/JPEGImages/000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000001.jpg"):
        VOCDataset(tmp_path, image_set="trainval")[0]


def test_voc_empty_annotation(tmp_path):
    root = make_voc(tmp_path, {"000001": []})
    image, target = VOCDataset(root, image_set="trainval")[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    check_item(image, target, num_classes=20)


def test_voc_boxes_clipped_or_dropped(tmp_path):
    root = make_voc(tmp_path, {"000001": [
        ("cat", -5, 10, 80, 60, 0),      # reaches out of the 64 x 48 image: clipped
        ("cow", 100, 100, 120, 120, 0),  # entirely outside: dropped
        ("dog", 10, 10, 9, 20, 0),       # xmax < xmin - 1: no area, dropped
    ]})
    with pytest.warns(UserWarning, match="2 boxes in 1 file"):  # said once, with the count (ssd_lib.data.check)
        dataset = VOCDataset(root, image_set="trainval")
    _, target = dataset[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 9.0, 64.0, 48.0]]))
    assert target["labels"].tolist() == [VOC_CLASSES.index("cat") + 1]


def test_voc_unknown_class_names_the_file(tmp_path):
    root = make_voc(tmp_path, {"000003": [("unicorn", 1, 1, 5, 5, 0)]})
    with pytest.raises(ValueError, match=r"000003\.xml.*unicorn"):
        VOCDataset(root, image_set="trainval")[0]


def test_voc_custom_classes(tmp_path):
    root = make_voc(tmp_path, {"000003": [("unicorn", 1, 1, 5, 5, 0), ("dragon", 2, 2, 9, 9, 0)]})
    dataset = VOCDataset(root, image_set="trainval", classes=["dragon", "unicorn"])
    assert dataset.classes == ["dragon", "unicorn"] and dataset[0][1]["labels"].tolist() == [2, 1]


def test_voc_malformed_xml_names_the_file(tmp_path):
    root = make_voc(tmp_path, {"000001": []})
    (root / "VOCdevkit/VOC2007/Annotations/000001.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match=r"000001\.xml"):
        VOCDataset(root, image_set="trainval")[0]
    (root / "VOCdevkit/VOC2007/Annotations/000001.xml").write_text(
        "<annotation><object><name>dog</name><bndbox><xmin>a</xmin></bndbox></object></annotation>")
    with pytest.raises(ValueError, match=r"000001\.xml.*bndbox"):
        VOCDataset(root, image_set="trainval")[0]


def test_voc_corrupt_and_truncated_images(tmp_path):
    root = make_voc(tmp_path, {"000001": [("dog", 2, 2, 20, 20, 0)], "000002": [("dog", 2, 2, 20, 20, 0)]},
                    width=128, height=128)
    images = root / "VOCdevkit/VOC2007/JPEGImages"
    (images / "000001.jpg").write_bytes(b"this is not a jpeg")
    data = (images / "000002.jpg").read_bytes()
    (images / "000002.jpg").write_bytes(data[: len(data) // 2])
    dataset = VOCDataset(root, image_set="trainval")
    for index, name in ((0, "000001.jpg"), (1, "000002.jpg")):
        with pytest.raises(OSError, match=name) as info:
            dataset[index]
        assert not isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_voc_non_rgb_images_become_rgb(tmp_path, mode):
    root = make_voc(tmp_path, {"000001": [("dog", 2, 2, 20, 20, 0)]}, modes={"000001": mode})
    image, target = VOCDataset(root, image_set="trainval")[0]
    check_item(image, target, num_classes=20, height=48, width=64)
    if mode == "L":
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_voc_negative_index(tmp_path):
    root = make_voc(tmp_path, {"000001": []})
    with pytest.raises(IndexError):
        VOCDataset(root, image_set="trainval")[-1]


@settings(max_examples=30, deadline=None)
@given(boxes=st.lists(st.lists(st.one_of(st.floats(-1e4, 1e4), st.sampled_from([np.nan, np.inf, -np.inf])),
                               min_size=4, max_size=4), max_size=6))
@example(boxes=[[0.0, 0.0, 1.0, 1.6374753479286221e-167]])  # found by hypothesis: a side that is 0 in float32
def test_clip_boxes_property(boxes):
    clipped, keep = clip_boxes(np.array(boxes, dtype=np.float64).reshape(-1, 4), width=64, height=48)
    assert clipped.shape == (len(boxes), 4) and keep.shape == (len(boxes),)
    kept = clipped[keep]
    assert np.isfinite(kept).all()
    assert (kept[:, 0::2] >= 0).all() and (kept[:, 0::2] <= 64).all()
    assert (kept[:, 1::2] >= 0).all() and (kept[:, 1::2] <= 48).all()
    assert (kept[:, 2] > kept[:, 0]).all() and (kept[:, 3] > kept[:, 1]).all()


# =============================================================================================
# COCODataset
# =============================================================================================

def make_coco(tmp_path: Path, annotations: list[dict], images: list[dict] | None = None,
              categories: list[dict] | None = None) -> tuple[Path, Path]:
    image_dir = tmp_path / "images"
    images = images or [{"id": 42, "file_name": "a.jpg", "width": 64, "height": 48},
                        {"id": 7, "file_name": "b.jpg", "width": 64, "height": 48}]
    for info in images:
        write_jpeg(image_dir / info["file_name"], info["width"], info["height"])
    categories = categories or [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"},
                                {"id": 3, "name": "car"}]
    json_path = tmp_path / "instances.json"
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return image_dir, json_path


def ann(id, image_id, category_id, bbox, iscrowd=0):
    return {"id": id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": iscrowd,
            "area": bbox[2] * bbox[3]}


def test_coco_reads_boxes_and_maps_categories(tmp_path, capsys):
    image_dir, json_path = make_coco(tmp_path, [
        ann(1, 42, 3, [10, 5, 20, 30]),
        ann(2, 42, 90, [0, 0, 64, 48]),
        ann(3, 42, 1, [30, 30, 10, 10], iscrowd=1),
        ann(4, 42, 1, [5, 5, 0, 10]),                # zero width: dropped
        ann(5, 42, 1, [50, 40, 30, 30]),             # reaches out of the image: clipped
        ann(6, 42, 1, [100, 100, 5, 5]),             # entirely outside: dropped
    ])
    with pytest.warns(UserWarning, match="2 boxes in 1 file"):  # said once, with the count (ssd_lib.data.check)
        dataset = COCODataset(image_dir, json_path)
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced
    assert dataset.classes == ["person", "car", "toothbrush"]  # sorted by category id 1, 3, 90
    assert dataset.category_id_to_label == {1: 1, 3: 2, 90: 3}
    assert dataset.label_to_category_id == {1: 1, 2: 3, 3: 90}
    assert dataset.ids == [7, 42] and len(dataset) == 2
    image, target = dataset[1]
    check_item(image, target, num_classes=3, height=48, width=64)
    assert target["image_id"] == 42
    torch.testing.assert_close(target["boxes"], torch.tensor([[10.0, 5.0, 30.0, 35.0], [0.0, 0.0, 64.0, 48.0],
                                                              [50.0, 40.0, 64.0, 48.0]]))
    assert target["labels"].tolist() == [2, 3, 1] and not target["difficult"].any()
    # skip_crowd=False keeps the crowd region, marked difficult
    with pytest.warns(UserWarning, match="2 boxes in 1 file"):
        _, target = COCODataset(image_dir, json_path, skip_crowd=False)[1]
    assert target["difficult"].tolist() == [False, False, True, False]
    # an image without annotations is kept, with an empty target
    _, empty = dataset[0]
    assert empty["boxes"].shape == (0, 4) and empty["image_id"] == 7


def test_coco_missing_paths_explain_layout(tmp_path):
    image_dir, json_path = make_coco(tmp_path, [])
    with pytest.raises(FileNotFoundError, match="missing.json") as info:
        COCODataset(image_dir, tmp_path / "missing.json")
    assert "Expected layout" in str(info.value)
    with pytest.raises(FileNotFoundError, match="no_images"):
        COCODataset(tmp_path / "no_images", json_path)
    (image_dir / "a.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="a.jpg"):
        COCODataset(image_dir, json_path)[1]


def test_coco_malformed_json(tmp_path):
    image_dir, json_path = make_coco(tmp_path, [])
    json_path.write_text("{not json")
    with pytest.raises(ValueError, match="instances.json"):
        COCODataset(image_dir, json_path)
    json_path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="categories"):
        COCODataset(image_dir, json_path)


def test_coco_corrupt_image_and_grayscale(tmp_path):
    images = [{"id": 1, "file_name": "gray.jpg", "width": 64, "height": 48},
              {"id": 2, "file_name": "broken.jpg", "width": 64, "height": 48},
              {"id": 3, "file_name": "rgba.png", "width": 64, "height": 48}]
    image_dir, json_path = make_coco(tmp_path, [ann(1, 1, 1, [1, 1, 5, 5])], images=images)
    write_jpeg(image_dir / "gray.jpg", 64, 48, "L")
    write_jpeg(image_dir / "rgba.png", 64, 48, "RGBA")
    (image_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    dataset = COCODataset(image_dir, json_path)
    for index in (0, 2):
        check_item(*dataset[index], num_classes=3, height=48, width=64)
    with pytest.raises(OSError, match="broken.jpg"):
        dataset[1]


# =============================================================================================
# read_image, collate
# =============================================================================================

def test_read_image_16_bit_grayscale(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16)).save(path)
    image = read_image(path)
    assert image.shape == (3, 4, 5) and torch.allclose(image, torch.ones_like(image))


def test_collate_stacks_images_and_lists_targets():
    dataset = ShapesDataset("val", size=4, image_size=64)
    images, targets = collate([dataset[i] for i in range(4)])
    assert images.shape == (4, 3, 64, 64) and isinstance(targets, list) and len(targets) == 4
    assert targets[2]["image_id"] == 2
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
    assert next(iter(loader))[0].shape == (2, 3, 64, 64)


def test_collate_errors():
    small, large = ShapesDataset("val", size=1, image_size=64)[0], ShapesDataset("val", size=1, image_size=96)[0]
    with pytest.raises(ValueError, match="SSDTransform"):
        collate([small, large])
    with pytest.raises(ValueError, match="empty"):
        collate([])


# =============================================================================================
# Export and round trips
# =============================================================================================

def test_voc_round_trip(tmp_path):
    shapes = ShapesDataset("test", size=20)
    year_dir = write_voc(shapes, tmp_path / "voc", image_set="test")
    assert year_dir == tmp_path / "voc" / "VOC2007"
    assert not list(tmp_path.rglob("*.tmp"))
    loaded = VOCDataset(tmp_path / "voc", image_set="test", classes=shapes.classes)
    assert len(loaded) == 20 and loaded.classes == shapes.classes
    for i in range(20):
        (image, target), (original, expected) = loaded[i], shapes[i]
        assert max_abs_difference(target["boxes"], expected["boxes"]) <= 1.0
        assert torch.equal(target["labels"], expected["labels"])
        assert image.shape == original.shape and (image - original).abs().mean() < 0.03  # JPEG q95


def test_voc_export_writes_standard_xml(tmp_path):
    shapes = ShapesDataset("val", size=3)
    write_voc(shapes, tmp_path, year="2012", image_set="val", n=2)
    year_dir = tmp_path / "VOC2012"
    assert (year_dir / "ImageSets/Main/val.txt").read_text().split() == ["val_000000", "val_000001"]
    import xml.etree.ElementTree as ET
    root = ET.parse(year_dir / "Annotations/val_000000.xml").getroot()
    assert root.findtext("filename") == "val_000000.jpg" and root.findtext("size/width") == "256"
    objects = root.findall("object")
    _, target = shapes[0]
    assert len(objects) == len(target["boxes"])
    first = objects[0].find("bndbox")
    x1, y1, x2, y2 = target["boxes"][0].tolist()
    assert [int(first.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")] == [x1 + 1, y1 + 1, x2, y2]
    assert objects[0].findtext("difficult") == "0" and objects[0].findtext("truncated") in ("0", "1")


def test_coco_round_trip_and_pycocotools(tmp_path):
    shapes = ShapesDataset("val", size=20)
    json_path = write_coco(shapes, tmp_path / "images", tmp_path / "ann" / "instances_val.json")
    assert not list(tmp_path.rglob("*.tmp"))
    loaded = COCODataset(tmp_path / "images", json_path)
    assert loaded.classes == shapes.classes and len(loaded) == 20
    for i in range(20):
        (image, target), (original, expected) = loaded[i], shapes[i]
        assert max_abs_difference(target["boxes"], expected["boxes"]) <= 1.0
        assert torch.equal(target["labels"], expected["labels"]) and target["image_id"] == expected["image_id"]
        assert (image - original).abs().mean() < 0.03
    # The file is valid for the reference evaluator: the ground truth scored as detections gives AP 1.
    document = json.loads(json_path.read_text())
    assert [c["id"] for c in document["categories"]] == [1, 2, 3, 4, 5, 6]
    assert min(a["id"] for a in document["annotations"]) == 1
    ground_truth = COCO(str(json_path))
    detections = ground_truth.loadRes([{"image_id": a["image_id"], "category_id": a["category_id"],
                                        "bbox": a["bbox"], "score": 1.0} for a in document["annotations"]])
    evaluator = COCOeval(ground_truth, detections, "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[1] == pytest.approx(1.0)  # AP at IoU 0.5


def test_write_coco_rejects_repeated_image_ids(tmp_path):
    item = ShapesDataset("val", size=1)[0]
    with pytest.raises(ValueError, match="image id"):
        write_coco(_ListDataset([item, item], ["c"] * 6), tmp_path / "img", tmp_path / "a.json")


class _ListDataset:
    def __init__(self, items, classes):
        self.items, self.classes = items, classes

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_cli_renders_voc_and_coco(tmp_path, capsys):
    assert cli_main(["--format", "voc", "--split", "test", "--n", "3", "--out", str(tmp_path / "v")]) == 0
    assert len(VOCDataset(tmp_path / "v", image_set="test", classes=ShapesConfig().classes)) == 3
    assert cli_main(["--format", "coco", "--split", "val", "--n", "2", "--out", str(tmp_path / "c")]) == 0
    assert len(COCODataset(tmp_path / "c" / "val", tmp_path / "c" / "annotations" / "instances_val.json")) == 2
    with pytest.raises(SystemExit):
        cli_main(["--format", "yolo", "--out", str(tmp_path)])


def test_cli_help_runs_as_module():
    result = subprocess.run([sys.executable, "-m", "ssd_lib.data", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--format" in result.stdout and "coco" in result.stdout
