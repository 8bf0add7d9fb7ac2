"""Write any detection dataset to disk as a VOCdevkit tree or as COCO images + instances JSON.

This lets the course treat the built-in Shapes data exactly like a downloaded benchmark (and
lets a learner open the files in any annotation viewer). Boxes go out in each format's own
convention and come back unchanged through ``VOCDataset`` / ``COCODataset``:

* VOC XML: 1-based inclusive integer corners, xmin = x1 + 1, ymin = y1 + 1, xmax = x2, ymax = y2
  (the inverse of ``VOCDataset``'s conversion); ``truncated`` = 1 when the box touches the border.
* COCO JSON: bbox [x1, y1, x2 - x1, y2 - y1], area = box area, category id = label (1..C),
  iscrowd = the item's ``difficult`` flag (0 for Shapes), so that COCOeval ignores them as VOC does.

Images are written as JPEG, quality 95 with full-resolution colour (no chroma subsampling).
Every file is written to a temporary name and moved into place with ``os.replace``, so an
interrupted export never leaves a half-written JSON or XML behind.

Usage::

    from ssd_lib.data import ShapesDataset, write_voc, write_coco
    write_voc(ShapesDataset("test", size=50), "out/voc", image_set="test")        # out/voc/VOC2007/...
    write_coco(ShapesDataset("val", size=50), "out/coco/val", "out/coco/annotations/instances_val.json")
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import Tensor

from ..files import atomic_write

__all__ = ["write_voc", "write_coco", "save_image"]

JPEG_QUALITY = 95


def save_image(image: Tensor, path: str | Path) -> None:
    """Save image (3, H, W) float in [0, 1] as JPEG (quality 95) or PNG, chosen by the suffix."""
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a (3, H, W) tensor; got {getattr(image, 'shape', type(image).__name__)}")
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    pil = Image.fromarray(pixels)
    path = Path(path)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        atomic_write(path, lambda temp: pil.save(temp, format="JPEG", quality=JPEG_QUALITY, subsampling=0))
    else:
        atomic_write(path, lambda temp: pil.save(temp, format="PNG"))


def _count(dataset, n: int | None) -> int:
    if n is None:
        return len(dataset)
    if n < 0:
        raise ValueError(f"n must be >= 0 or None (all images); got {n}")
    return min(n, len(dataset))


def _voc_xml(folder: str, filename: str, width: int, height: int, target: dict, classes: Sequence[str]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "ssd_lib export"
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    difficult = target.get("difficult", torch.zeros(len(target["labels"]), dtype=torch.bool))
    for box, label, hard in zip(target["boxes"].tolist(), target["labels"].tolist(), difficult.tolist()):
        x1, y1, x2, y2 = box
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = classes[label - 1]
        ET.SubElement(obj, "pose").text = "Unspecified"
        touches_border = x1 <= 0 or y1 <= 0 or x2 >= width or y2 >= height
        ET.SubElement(obj, "truncated").text = str(int(touches_border))
        ET.SubElement(obj, "difficult").text = str(int(hard))
        # Pixel-edge xyxy -> VOC's 1-based inclusive corners; keep at least one pixel.
        xmin = min(max(round(x1) + 1, 1), width)
        ymin = min(max(round(y1) + 1, 1), height)
        xmax = min(max(round(x2), xmin), width)
        ymax = min(max(round(y2), ymin), height)
        bndbox = ET.SubElement(obj, "bndbox")
        for key, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            ET.SubElement(bndbox, key).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8")


def write_voc(dataset, root: str | Path, year: str = "2007", image_set: str = "test", n: int | None = None) -> Path:
    """Write the first ``n`` items of ``dataset`` (all if None) as a VOCdevkit-style tree.

    Creates ``root/VOC{year}/{JPEGImages, Annotations, ImageSets/Main/{image_set}.txt}`` and returns
    ``root/VOC{year}``. Image ids are ``{image_set}_{i:06d}`` so that several splits can share
    one tree. Read it back with ``VOCDataset(root, year, image_set, classes=dataset.classes)``.
    """
    classes = list(dataset.classes)
    year_dir = Path(root) / f"VOC{year}"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (year_dir / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(_count(dataset, n)):  # I/O bound: one image at a time
        image, target = dataset[i]
        stem = f"{image_set}_{i:06d}"
        height, width = image.shape[-2:]
        save_image(image, year_dir / "JPEGImages" / f"{stem}.jpg")
        xml = _voc_xml(f"VOC{year}", f"{stem}.jpg", width, height, target, classes)
        atomic_write(year_dir / "Annotations" / f"{stem}.xml", lambda temp: temp.write_bytes(xml))
        ids.append(stem)
    listing = "".join(f"{stem}\n" for stem in ids)
    atomic_write(year_dir / "ImageSets" / "Main" / f"{image_set}.txt", lambda temp: temp.write_text(listing))
    return year_dir


def write_coco(dataset, image_dir: str | Path, json_path: str | Path, n: int | None = None) -> Path:
    """Write the first ``n`` items of ``dataset`` (all if None) as COCO images + instances JSON.

    Images go to ``image_dir/{image_id:06d}.jpg`` (image ids are the items' ``image_id``, which
    must be distinct non-negative ints); annotation ids start at 1 (COCOeval treats id 0 as
    "unmatched"); category ids are the labels 1..C. Returns ``json_path``.
    Read it back with ``COCODataset(image_dir, json_path)``.
    """
    image_dir, json_path = Path(image_dir), Path(json_path)
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, seen = [], [], set()
    for i in range(_count(dataset, n)):  # I/O bound: one image at a time
        image, target = dataset[i]
        image_id = int(target.get("image_id", i))
        if image_id in seen or image_id < 0:
            raise ValueError(f"item {i} has image_id {image_id}, which is negative or repeats an earlier "
                             "item; write_coco needs distinct non-negative image ids")
        seen.add(image_id)
        height, width = image.shape[-2:]
        file_name = f"{image_id:06d}.jpg"
        save_image(image, image_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        difficult = target.get("difficult", torch.zeros(len(target["labels"]), dtype=torch.bool))
        for box, label, hard in zip(target["boxes"].tolist(), target["labels"].tolist(), difficult.tolist()):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": int(hard)})
    categories = [{"id": i + 1, "name": name, "supercategory": "none"} for i, name in enumerate(dataset.classes)]
    document = {"info": {"description": "written by ssd_lib.data.write_coco"}, "licenses": [],
                "images": images, "annotations": annotations, "categories": categories}
    text = json.dumps(document)
    atomic_write(json_path, lambda temp: temp.write_text(text))
    return json_path
