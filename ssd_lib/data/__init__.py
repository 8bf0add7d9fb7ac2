"""Detection data for the course: the built-in Shapes dataset, PASCAL VOC, COCO, and batching.

Every dataset yields ``(image, target)``: image (3, H, W) float32 in [0, 1]; target a dict with
``boxes`` (G, 4) float32 pixel xyxy, ``labels`` (G,) int64 in 1..C (0 is background),
``difficult`` (G,) bool and ``image_id`` (int). Each has ``.classes`` (background excluded) and an
optional ``transforms(image, target)``. Modules: ``shapes`` (the Shapes dataset and its configuration),
``drawing`` (how a Shapes image is drawn), ``voc``, ``coco``, ``check`` (the file checks behind
``check-data`` and the dropped-box warning), ``common`` (batching, target helpers),
``export`` (write a dataset as VOC or COCO files).

Usage::

    from ssd_lib.data import ShapesDataset, collate
    loader = torch.utils.data.DataLoader(ShapesDataset("train"), batch_size=32, collate_fn=collate)
    images, targets = next(iter(loader))       # (32, 3, 256, 256), list of 32 dicts
"""
from .coco import COCODataset
from .common import (clip_boxes, collate, label_map, labels_from_names, make_target, num_classes_for, read_image,
                     sanitize_boxes)
from .export import save_image, write_coco, write_voc
from .drawing import SHAPE_NAMES, ShapesSample, render_shapes
from .shapes import ShapesConfig, ShapesDataset
from .voc import VOC_CLASSES, VOCDataset, parse_voc_xml

__all__ = [
    "ShapesDataset", "ShapesConfig", "ShapesSample", "render_shapes", "SHAPE_NAMES",
    "VOCDataset", "VOC_CLASSES", "parse_voc_xml",
    "COCODataset",
    "collate", "read_image", "make_target", "clip_boxes", "sanitize_boxes", "label_map", "labels_from_names",
    "num_classes_for",
    "write_voc", "write_coco", "save_image",
]
