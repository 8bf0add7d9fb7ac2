"""PASCAL VOC detection data (the paper's main benchmark, Sec. 3.1), read from a VOCdevkit folder.

Layout (``root`` may be the folder holding ``VOCdevkit``, the ``VOCdevkit`` folder itself, or the
``VOC2007`` folder)::

    VOCdevkit/VOC2007/JPEGImages/000005.jpg
    VOCdevkit/VOC2007/Annotations/000005.xml
    VOCdevkit/VOC2007/ImageSets/Main/trainval.txt     (one image id per line)

Coordinates: VOC XML boxes are 1-based inclusive pixel indices (xmin = 1 is the first column,
xmax = W the last). We use continuous pixel-edge coordinates, where the image spans [0, W], so
x1 = xmin - 1, y1 = ymin - 1 and x2 = xmax, y2 = ymax (Detectron2's VOC loader does the same;
ssd.pytorch subtracts 1 from all four). Boxes reaching outside the image are clipped to it, and
dropped if nothing is left (an inverted box, ``xmax < xmin``, too): building the dataset reads every
XML once and warns once with the count (``ssd_lib.data.check``).

Usage::

    from ssd_lib.data import VOCDataset
    voc = VOCDataset("data/VOCdevkit", year="2007", image_set="test")
    image, target = voc[0]          # boxes (G, 4) pixel xyxy, labels 1..20, difficult flags
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .common import as_int, clip_boxes, label_map, make_target, read_image, require_path

__all__ = ["VOC_CLASSES", "VOCDataset", "parse_voc_xml", "read_voc_xml", "voc_corners_to_xyxy", "voc_image_path"]

# The 20 PASCAL VOC classes in the standard order; label = index + 1 (0 is background).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

_LAYOUT = ("VOCdevkit/VOC{year}/{{JPEGImages/<id>.jpg, Annotations/<id>.xml, ImageSets/Main/{image_set}.txt}} "
           "(root may be the folder holding VOCdevkit, VOCdevkit itself, or VOC{year})")


def _truthy(text: str | None) -> bool:
    return (text or "0").strip().lower() in ("1", "true", "yes")


def read_voc_xml(path: str | Path) -> dict:
    """Read one VOC annotation file as it is written, class names unchecked.

    Returns a dict with ``names`` (G strings), ``corners`` (G, 4) float64 the file's own 1-based
    inclusive (xmin, ymin, xmax, ymax), ``difficult`` (G,) bool, ``truncated`` (G,) bool,
    ``filename`` (str or None) and ``size`` ((width, height) or None). Raises FileNotFoundError for
    a missing file and ValueError naming the file on malformed XML or a missing or non-numeric bndbox.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VOC annotation file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"could not parse VOC annotation {path}: {err}") from err
    names, corners, difficult, truncated = [], [], [], []
    for obj in root.iter("object"):  # loop over a handful of XML elements
        name = (obj.findtext("name") or "").strip()
        bndbox = obj.find("bndbox")
        try:
            corners.append([float(bndbox.findtext(key)) for key in ("xmin", "ymin", "xmax", "ymax")])
        except (AttributeError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: object {name!r} has a missing or non-numeric bndbox") from err
        names.append(name)
        difficult.append(_truthy(obj.findtext("difficult")))
        truncated.append(_truthy(obj.findtext("truncated")))
    size = root.find("size")
    try:
        width_height = (int(float(size.findtext("width"))), int(float(size.findtext("height"))))
    except (AttributeError, TypeError, ValueError):
        width_height = None
    return {
        "names": names,
        "corners": np.asarray(corners, dtype=np.float64).reshape(-1, 4),
        "difficult": np.asarray(difficult, dtype=bool),
        "truncated": np.asarray(truncated, dtype=bool),
        "filename": root.findtext("filename"),
        "size": width_height,
    }


def voc_corners_to_xyxy(corners: np.ndarray) -> np.ndarray:
    """VOC's 1-based inclusive (xmin, ymin, xmax, ymax) ``(G, 4)`` -> pixel-edge xyxy: (xmin - 1, ymin - 1, xmax, ymax)."""
    return np.asarray(corners, dtype=np.float64).reshape(-1, 4) - np.array([1.0, 1.0, 0.0, 0.0])


def parse_voc_xml(path: str | Path, class_to_label: dict[str, int]) -> dict:
    """Parse one VOC annotation file (:func:`read_voc_xml`) and map its class names to labels.

    Returns a dict with ``boxes`` (G, 4) float64 xyxy in pixel-edge coordinates (1-based VOC
    corners converted with x1 - 1, y1 - 1), ``labels`` (G,) int64, ``difficult`` (G,) bool,
    ``truncated`` (G,) bool, ``filename`` (str or None) and ``size`` ((width, height) or None).
    Raises ValueError naming the file on malformed XML, unknown class names or bad coordinates.
    """
    annotation = read_voc_xml(path)
    for name in annotation["names"]:
        if name not in class_to_label:
            raise ValueError(f"{path}: unknown class name {name!r}; known classes are {list(class_to_label)} "
                             "(pass classes=[...] to VOCDataset to use your own list)")
    return {
        "boxes": voc_corners_to_xyxy(annotation.pop("corners")),
        "labels": np.asarray([class_to_label[name] for name in annotation.pop("names")], dtype=np.int64),
        **annotation,
    }


def voc_image_path(image_dir: Path, stem: str, filename: str | None) -> Path:
    """``image_dir/<stem>.jpg``, or the XML's ``<filename>`` in ``image_dir`` when only that exists."""
    path = image_dir / f"{stem}.jpg"
    if not path.exists() and filename and (image_dir / filename).exists():
        return image_dir / filename
    return path


def _find_year_dir(root: Path, year: str, image_set: str) -> Path:
    layout = _LAYOUT.format(year=year, image_set=image_set)
    require_path(root, "VOC root folder", layout)
    candidates = [root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}", root]
    for candidate in candidates:
        if (candidate / "Annotations").is_dir() or (candidate / "ImageSets").is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no VOC{year} folder with Annotations/ and ImageSets/ found under {root} "
                            f"(tried {tried})\nExpected layout: {layout}")


class VOCDataset(torch.utils.data.Dataset):
    """PASCAL VOC detection dataset: ``(image, target)`` items.

    Args:
        root: the folder holding VOCdevkit, VOCdevkit itself, or the VOC{year} folder.
        year: "2007", "2012", ...; image_set: "train", "val", "trainval" or "test".
        keep_difficult: keep objects marked difficult (flagged in ``target["difficult"]``, which
            VOC evaluation ignores); with False they are dropped.
        transforms: optional callable, ``image, target = transforms(image, target)``.
        classes: class names (label = index + 1); default ``VOC_CLASSES``. An XML object whose
            name is not in the list raises ValueError naming the file.

    Item: image (3, H, W) float32 in [0, 1]; target with boxes (G, 4) float32 pixel xyxy,
    labels (G,) int64 in 1..C, difficult (G,) bool, image_id (int: the index; ``ids[image_id]``
    is the VOC file name stem).

    Building it reads every XML of the image set once (1.3 s for 5011 files of 3 objects, the size
    of VOC2007 trainval, on 2 busy cores) to warn once, with the count and the first files, about
    the boxes it will drop (inverted, empty or outside the XML's ``<size>``); items are still parsed
    when they are read, and a malformed XML or an unknown class name is raised then.
    ``python -m ssd_lib check-data`` lists every problem.
    """

    def __init__(self, root: str | Path, year: str = "2007", image_set: str = "trainval",
                 keep_difficult: bool = True, transforms: Callable | None = None,
                 classes: Sequence[str] | None = None) -> None:
        year = str(year)
        layout = _LAYOUT.format(year=year, image_set=image_set)
        self.year_dir = _find_year_dir(Path(root), year, image_set)
        self.image_dir = require_path(self.year_dir / "JPEGImages", "VOC image folder", layout)
        self.annotation_dir = require_path(self.year_dir / "Annotations", "VOC annotation folder", layout)
        split_file = require_path(self.year_dir / "ImageSets" / "Main" / f"{image_set}.txt",
                                  f"VOC image set file for image_set={image_set!r}", layout)
        # A line may be "000005" or, in the per-class lists, "000005  1": the id is the first word.
        self.ids: list[str] = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        self.classes: list[str] = list(VOC_CLASSES if classes is None else classes)
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ValueError(f"classes must be a non-empty list of distinct names; got {self.classes}")
        self.class_to_label = label_map(self.classes)
        self.year, self.image_set = year, image_set
        self.keep_difficult, self.transforms = keep_difficult, transforms
        from .check import check_voc, warn_dropped_boxes  # check.py imports this module

        own_classes = "" if self.classes == list(VOC_CLASSES) else f" --classes {','.join(self.classes)}"
        warn_dropped_boxes(check_voc(self.year_dir, year, image_set, self.classes, read_images=False),
                           f"python -m ssd_lib check-data --dataset voc --data-root {root} --year {year} "
                           f"--split {image_set}{own_classes}")

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        """Path of the JPEG of item ``index`` (falls back to the XML's <filename> if <id>.jpg is absent)."""
        path = self.image_dir / f"{self.ids[index]}.jpg"
        if path.exists():
            return path
        filename = read_voc_xml(self.annotation_dir / f"{self.ids[index]}.xml")["filename"]
        return voc_image_path(self.image_dir, self.ids[index], filename)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        index = as_int(index, "index")
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for VOCDataset of {len(self.ids)} images")
        annotation = parse_voc_xml(self.annotation_dir / f"{self.ids[index]}.xml", self.class_to_label)
        image = read_image(self.image_path(index))
        height, width = image.shape[-2:]
        boxes, keep = clip_boxes(annotation["boxes"], width, height)
        if not self.keep_difficult:
            keep &= ~annotation["difficult"]
        target = make_target(boxes[keep], annotation["labels"][keep], annotation["difficult"][keep], index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        return (f"VOCDataset({str(self.year_dir)!r}, image_set={self.image_set!r}, {len(self)} images, "
                f"{len(self.classes)} classes, keep_difficult={self.keep_difficult})")
