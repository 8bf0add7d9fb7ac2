"""What every dataset shares: reading an image, the target dict, clipping boxes, batching.

An item is ``(image, target)``: image (3, H, W) float32 in [0, 1]; target a dict with
``boxes`` (G, 4) float32 pixel xyxy, ``labels`` (G,) int64 in 1..C (0 is background),
``difficult`` (G,) bool and ``image_id`` (int).

Usage::

    from ssd_lib.data import collate
    loader = DataLoader(dataset, batch_size=32, collate_fn=collate)
    images, targets = next(iter(loader))   # (B, 3, H, W), list of B target dicts
"""
from __future__ import annotations

import operator
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as F

__all__ = ["collate", "read_image", "make_target", "clip_boxes", "sanitize_boxes", "label_map", "labels_from_names",
           "num_classes_for", "require_path", "as_int"]


def as_int(value, name: str) -> int:
    """``value`` as a Python int (numpy and 0-d torch integers too); TypeError naming ``name`` otherwise."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; got {type(value).__name__}") from None


def require_path(path: str | Path, what: str, layout: str) -> Path:
    """Return ``path`` as a Path, or raise FileNotFoundError saying what was expected there."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}\nExpected layout: {layout}")
    return path


def read_image(path: str | Path) -> Tensor:
    """Read an image file as (3, H, W) float32 in [0, 1].

    Grayscale, palette, RGBA and 16-bit images are converted to RGB (alpha is dropped, as
    torchvision.io's ``ImageReadMode.RGB`` does). EXIF orientation is ignored: VOC and COCO
    annotations refer to the stored pixels. A missing file raises FileNotFoundError; an unreadable,
    truncated or corrupt one raises OSError naming the file, in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so that truncated files fail here and not later
            img = _to_rgb(img)
    except Exception as err:  # noqa: BLE001 - PIL's decoders raise many types for a damaged file
        # (OSError, SyntaxError, ValueError, EOFError, struct.error, DecompressionBombError when a damaged
        # header declares billions of pixels): every one means "this file cannot be read as an image".
        reason = " ".join(str(err).split()) or type(err).__name__
        raise OSError(f"could not read image {path}: {reason} (is the file corrupt or truncated?)") from err
    return F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit grayscale: rescale to 8 bits
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.nan_to_num(values) / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")  # uint8 (H, W) -> mode L
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL asks palette images with transparency to go through RGBA
    return img.convert("RGB")


def make_target(boxes, labels, difficult, image_id: int) -> dict:
    """The target dict with the contract's dtypes and shapes, also when there are no objects.

    boxes: (G, 4) xyxy, labels: (G,), difficult: (G,) -> float32, int64, bool tensors.
    """
    boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1))
    difficult_t = torch.as_tensor(np.asarray(difficult, dtype=bool).reshape(-1))
    assert len(boxes_t) == len(labels_t) == len(difficult_t), "boxes, labels and difficult disagree in length"
    return {"boxes": boxes_t, "labels": labels_t, "difficult": difficult_t, "image_id": int(image_id)}


def clip_boxes(boxes: np.ndarray, width, height) -> tuple[np.ndarray, np.ndarray]:
    """Clip xyxy boxes (G, 4) to the image [0, width] x [0, height]; return (clipped, keep).

    ``width``, ``height``: numbers, or (G, 1) arrays with one image size per box (``ssd_lib.data.check``
    judges a whole COCO file at once). ``keep`` (G,) bool marks the boxes that still have positive
    area and finite coordinates: a box entirely outside the image, or with x2 <= x1 or y2 <= y1, is
    dropped by the loaders (and reported by ``ssd_lib.data.check``).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    clipped = np.nan_to_num(boxes).copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    clipped = clipped.astype(np.float32)  # sides are compared in the returned precision: a 1e-167 px side is 0 in float32
    keep = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped, keep


def sanitize_boxes(boxes: Tensor, labels: Tensor, width: float, height: float) -> tuple[Tensor, Tensor]:
    """Clip pixel xyxy ``boxes (G, 4)`` to the image and drop those without area, with their labels.

    :func:`clip_boxes` on tensors: a box kept has x2 > x1 and y2 > y1 after clipping (torchvision's
    detection references filter COCO's degenerate boxes the same way). Returns
    ``(boxes (G', 4), labels (G',))``."""
    clipped, keep = clip_boxes(boxes.detach().cpu().numpy(), width, height)
    keep_t = torch.from_numpy(keep)
    return torch.from_numpy(clipped)[keep_t].to(boxes.dtype), labels[keep_t]


def label_map(classes: Sequence[str]) -> dict[str, int]:
    """Class name -> SSD label: ``classes[k]`` gets k + 1, because label 0 is background."""
    return {name: k + 1 for k, name in enumerate(classes)}


def labels_from_names(names: Sequence[str], classes: Sequence[str]) -> Tensor:
    """Class names of the objects of one image to SSD labels ``(G,) int64`` (:func:`label_map`).
    Raises ValueError for a name not in ``classes``."""
    index = label_map(classes)
    unknown = [name for name in names if name not in index]
    if unknown:
        raise ValueError(f"object class {unknown[0]!r} is not one of the {len(classes)} classes {list(classes)[:6]}...")
    return torch.tensor([index[name] for name in names], dtype=torch.long)


def num_classes_for(classes: Sequence[str]) -> int:
    """``num_classes`` of the model for these object classes: one more, for background (VOC: 21)."""
    return len(classes) + 1


def collate(batch: Sequence[tuple[Tensor, dict]]) -> tuple[Tensor, list[dict]]:
    """Batch items: images stacked to (B, 3, H, W), targets kept as a list of B dicts.

    Targets cannot be stacked because every image has its own number of objects G.
    """
    if len(batch) == 0:
        raise ValueError("collate got an empty batch")
    images = [image for image, _ in batch]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"collate needs images of one size to stack them, got sizes {sorted(shapes)}; "
            "use a transform that resizes, e.g. ssd_lib.augment.SSDTransform")
    return torch.stack(images), [target for _, target in batch]
