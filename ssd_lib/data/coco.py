"""MS COCO-style detection data (paper Sec. 3.4), read with pycocotools.

Layout: a folder of images and one "instances" JSON with ``images`` (id, file_name),
``annotations`` (image_id, category_id, bbox [x, y, w, h] in pixels, iscrowd) and
``categories`` (id, name). Category ids (COCO's run 1..90 with gaps) are mapped to contiguous
labels 1..C in sorted id order; ``label_to_category_id`` maps back for COCO evaluation.
Crowd regions (``iscrowd``) are skipped, or kept and marked difficult: COCO's protocol makes them
ignore regions, which ``ssd_lib.metrics.evaluate_coco`` passes to COCOeval as crowd, so evaluation
keeps them and training drops them (a crowd box is no positive, as in torchvision's detection
references). Boxes are clipped to the image and zero-area boxes dropped, with one warning per
dataset counting them (``ssd_lib.data.check``). Images without annotations are kept, with empty targets.

Usage::

    from ssd_lib.data import COCODataset
    coco = COCODataset("coco/val2017", "coco/annotations/instances_val2017.json")
    image, target = coco[0]           # boxes (G, 4) pixel xyxy, labels 1..80
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor

from .common import as_int, clip_boxes, make_target, read_image, require_path

__all__ = ["COCODataset"]

_LAYOUT = ("image_dir/<file_name> for every entry of the JSON's \"images\", and an instances JSON with "
           "\"images\", \"annotations\" (bbox [x, y, w, h]) and \"categories\"")


def _load_coco(annotation_json: Path) -> COCO:
    """Load and index an instances JSON with pycocotools, without its prints."""
    try:
        dataset = json.loads(annotation_json.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"could not parse COCO annotation file {annotation_json}: {err}") from err
    if not isinstance(dataset, dict) or not all(key in dataset for key in ("images", "annotations", "categories")):
        found = sorted(dataset) if isinstance(dataset, dict) else type(dataset).__name__
        raise ValueError(f"{annotation_json} is not a COCO instances file: it needs the keys "
                         f"'images', 'annotations' and 'categories'; found {found}")
    coco = COCO()
    coco.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress messages
            coco.createIndex()
    except (KeyError, TypeError) as err:  # an entry without "id" (or an annotation without "image_id")
        raise ValueError(f"{annotation_json}: every entry of 'images', 'annotations' and 'categories' needs an "
                         f"'id', and every annotation an 'image_id' (missing {err})") from None
    return coco


def _area(value) -> float:
    """An annotation's ``area`` as a float; NaN when it is missing or not a non-negative number."""
    try:
        area = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return area if np.isfinite(area) and area >= 0 else float("nan")


class COCODataset(torch.utils.data.Dataset):
    """COCO-format detection dataset: ``(image, target)`` items, in sorted image-id order.

    Args:
        image_dir: folder holding the images named by ``file_name`` in the JSON.
        annotation_json: path of the instances JSON.
        transforms: optional callable, ``image, target = transforms(image, target)``.
        skip_crowd: drop ``iscrowd`` annotations (True: for training, where a crowd box must not be
            a positive) or keep them with ``difficult = True`` (False: for evaluation, where they
            are COCO's ignore regions; ``python -m ssd_lib eval`` does this).

    Item: image (3, H, W) float32 in [0, 1]; target with boxes (G, 4) float32 pixel xyxy,
    labels (G,) int64 in 1..C, difficult (G,) bool (True: a crowd region), area (G,) float64 (the
    annotation's ``area`` in the original image's pixels, NaN where it has none; COCOeval takes
    small/medium/large from it; a resizing transform leaves it as it is) and image_id (int: the
    COCO image id).

    Building it checks every annotation against the image sizes the file states (no image is opened;
    for a file of train2017's size 6-8 s, against 17 s for reading the JSON) and warns once when
    boxes will be dropped, naming ``python -m ssd_lib check-data`` for the list.
    Attributes: ``classes`` (category names by label), ``category_id_to_label``,
    ``label_to_category_id``, ``ids`` (image ids), ``coco`` (the pycocotools index, for COCOeval).
    """

    def __init__(self, image_dir: str | Path, annotation_json: str | Path, transforms: Callable | None = None,
                 skip_crowd: bool = True) -> None:
        self.image_dir = require_path(image_dir, "COCO image folder", _LAYOUT)
        self.annotation_json = require_path(annotation_json, "COCO annotation file", _LAYOUT)
        if not self.image_dir.is_dir():
            raise NotADirectoryError(f"COCO image_dir must be a folder of images, got a file: {self.image_dir}")
        self.coco = _load_coco(self.annotation_json)
        categories = sorted(self.coco.cats.values(), key=lambda cat: cat["id"])
        self.classes: list[str] = [str(cat.get("name", cat["id"])) for cat in categories]
        self.label_to_category_id: dict[int, int] = {i + 1: cat["id"] for i, cat in enumerate(categories)}
        self.category_id_to_label: dict[int, int] = {cat_id: label for label, cat_id in
                                                     self.label_to_category_id.items()}
        self.ids: list[int] = sorted(self.coco.imgs)
        self.transforms, self.skip_crowd = transforms, skip_crowd
        from .check import check_coco, warn_dropped_boxes  # check.py imports this module

        warn_dropped_boxes(check_coco(self.image_dir, self.annotation_json, read_images=False, coco=self.coco),
                           self._check_command())

    def _check_command(self) -> str:
        """The command that lists this dataset's problems (or the function, outside the CLI's layout)."""
        root, name = self.image_dir.parent, self.image_dir.name
        if (root / "annotations" / f"instances_{name}.json").resolve() == self.annotation_json.resolve():
            return f"python -m ssd_lib check-data --dataset coco --data-root {root} --split {name}"
        return f"ssd_lib.data.check.check_coco({str(self.image_dir)!r}, {str(self.annotation_json)!r})"

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        index = as_int(index, "index")
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for COCODataset of {len(self.ids)} images")
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        if "file_name" not in info:
            raise ValueError(f"{self.annotation_json}: image {image_id} has no 'file_name'")
        image = read_image(self.image_dir / info["file_name"])
        height, width = image.shape[-2:]

        boxes, labels, crowd, area = [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):  # loop over one image's annotations
            is_crowd = bool(ann.get("iscrowd", 0))
            if is_crowd and self.skip_crowd:
                continue
            bbox = ann.get("bbox")
            try:
                x, y, w, h = (float(v) for v in bbox)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{self.annotation_json}: annotation {ann.get('id')} of image {image_id} "
                                 f"needs a numeric bbox [x, y, w, h], got {bbox!r}") from err
            if ann.get("category_id") not in self.category_id_to_label:
                raise ValueError(f"{self.annotation_json}: annotation {ann.get('id')} has category_id "
                                 f"{ann.get('category_id')!r}, which is not in 'categories'")
            boxes.append((x, y, x + w, y + h))  # COCO [x, y, w, h] -> xyxy
            labels.append(self.category_id_to_label[ann["category_id"]])
            crowd.append(is_crowd)
            area.append(_area(ann.get("area")))
        boxes_xyxy, keep = clip_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), width, height)
        target = make_target(boxes_xyxy[keep], np.asarray(labels, dtype=np.int64)[keep],
                             np.asarray(crowd, dtype=bool)[keep], image_id)
        target["area"] = torch.as_tensor(np.asarray(area, dtype=np.float64).reshape(-1)[keep])
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        return (f"COCODataset({str(self.image_dir)!r}, {str(self.annotation_json)!r}, {len(self)} images, "
                f"{len(self.classes)} classes, skip_crowd={self.skip_crowd})")
