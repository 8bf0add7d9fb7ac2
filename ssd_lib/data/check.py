"""Problems in a VOC or COCO dataset's files, listed instead of dropped in silence.

A box with ``xmax < xmin`` (a common labelling-tool bug) has no area, so the loaders drop it (an
SSD trained on it would get log(0) offsets, Sec. 2.2, and a NaN loss); a box past the border is
clipped to the image. Both used to happen without a word. One function per format lists every
problem as ``Problem(file, problem)``: inverted or empty boxes, boxes outside the image, unknown
class names, missing images and images that cannot be read. The datasets call it on their
annotations when they are built and warn once with the count of dropped boxes
(:func:`warn_dropped_boxes`); ``python -m ssd_lib check-data`` prints the whole list.

Usage::

    from ssd_lib.data.check import check_voc
    for file, problem in check_voc("data/VOCdevkit", year="2007", image_set="trainval"):
        print(f"{file}: {problem}")
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from .coco import _load_coco
from .common import clip_boxes, read_image, require_path
from .voc import _LAYOUT as _VOC_LAYOUT
from .voc import VOC_CLASSES, _find_year_dir, read_voc_xml, voc_corners_to_xyxy, voc_image_path

__all__ = ["Problem", "BORDER_TOLERANCE", "DATA_PROBLEMS_STATUS", "box_problems", "check_voc", "check_coco",
           "warn_dropped_boxes", "report"]

# A box may pass the image border by this many pixels before it is reported: rounding (COCO's float
# boxes, VOC's 0-based xmin = 0 written into a 1-based format) is not a labelling mistake.
BORDER_TOLERANCE = 1.0

_DROPPED, _CLIPPED = "(dropped)", "(clipped)"

# `python -m ssd_lib check-data`'s exit status when it lists problems (0: none; 2: a usage error).
DATA_PROBLEMS_STATUS = 1
# The splits `train` and `eval` read (ssd_lib.cli._datasets), checked when none is named.
_DEFAULT_SPLITS = {"voc": ("trainval", "test"), "coco": ("train2017", "val2017")}


class Problem(NamedTuple):
    """One problem: ``file`` (the annotation or image file it is in) and ``problem`` (what is wrong).
    A box the loaders drop ends with "(dropped)", one they clip to the image with "(clipped)"."""

    file: str
    problem: str

    @property
    def dropped(self) -> bool:
        """True for a box the dataset drops (no area once clipped to the image)."""
        return self.problem.endswith(_DROPPED)


def _number(value: float) -> str:
    return f"{value:g}"


def box_problems(boxes, inverted, width, height) -> list[tuple[int, str]]:
    """What is wrong with each box, judged exactly as the loaders treat it (:func:`clip_boxes`).

    boxes: (N, 4) pixel-edge xyxy; inverted: (N,) bool, True where the file's own numbers have
    max < min (VOC's xmax < xmin, COCO's negative w or h); width, height: scalars or (N,) image
    sizes in pixels, NaN where unknown (then only boxes left or above the image count as outside).
    Returns ``(index, text)`` for the boxes with a problem, in order; ``text`` ends with "(dropped)"
    for a box the loaders drop and "(clipped)" for one past the border by more than
    :data:`BORDER_TOLERANCE` pixels, which they clip.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    inverted = np.broadcast_to(np.asarray(inverted, dtype=bool), (len(boxes),))
    width = np.broadcast_to(np.asarray(width, dtype=np.float64), (len(boxes),))
    height = np.broadcast_to(np.asarray(height, dtype=np.float64), (len(boxes),))
    known = np.isfinite(width) & np.isfinite(height)
    _, keep = clip_boxes(boxes, np.where(known, width, np.inf)[:, None], np.where(known, height, np.inf)[:, None])
    finite = np.isfinite(boxes).all(axis=1)
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    # A NaN size compares False: an unknown border is never passed.
    past = finite & ((boxes[:, :2] < -BORDER_TOLERANCE).any(axis=1) | (boxes[:, 2] > width + BORDER_TOLERANCE)
                     | (boxes[:, 3] > height + BORDER_TOLERANCE))
    found = []
    for i in np.flatnonzero(~keep | past | inverted):  # a loop over the boxes with a problem only
        size = f"the {_number(width[i])}x{_number(height[i])} image" if known[i] else "the image"
        if not finite[i]:
            text = "box with NaN or infinite coordinates"
        elif inverted[i]:
            text = "inverted box (max < min)"
        elif empty[i]:
            text = "empty box (zero width or height)"
        elif not keep[i]:
            text = f"box outside {size}"
        else:
            text = f"box reaches more than {_number(BORDER_TOLERANCE)} px past the border of {size}"
        found.append((int(i), f"{text} {_DROPPED if not keep[i] else _CLIPPED if past[i] else '(kept)'}"))
    return found


def _image_size(path: Path, stated: tuple[float, float] | None, read_images: bool,
                problems: list[Problem], what: str) -> tuple[float, float] | None:
    """(width, height) to judge boxes against: the image's own when it is read, else ``stated``.
    Appends the missing, unreadable or mis-sized image to ``problems``."""
    if not read_images:
        return stated
    if not path.is_file():
        problems.append(Problem(str(path), "image file missing"))
        return stated
    try:
        height, width = read_image(path).shape[-2:]
    except OSError as err:
        reason = str(err).replace(f"could not read image {path}: ", "")
        problems.append(Problem(str(path), f"image cannot be read: {reason}"))
        return stated
    if stated is not None and tuple(stated) != (width, height):
        problems.append(Problem(str(path), f"{what} says {_number(stated[0])}x{_number(stated[1])} but the image is "
                                           f"{width}x{height} (boxes are clipped to the image)"))
    return float(width), float(height)


def check_voc(root: str | Path, year: str = "2007", image_set: str = "trainval", classes: Sequence[str] | None = None,
              read_images: bool = True) -> list[Problem]:
    """Every problem of a VOC image set, file by file, in the image set's order.

    ``root``, ``year``, ``image_set``, ``classes``: as :class:`ssd_lib.data.VOCDataset` takes them
    (a missing folder raises FileNotFoundError as it does). Per listed id: a missing or malformed
    XML, unknown class names, boxes :func:`box_problems` reports (VOC's corners as written in the
    message), and with ``read_images`` a missing or unreadable image, or one whose size is not the
    XML's ``<size>``. ``read_images=False`` checks the XML only (what VOCDataset does when built),
    judging boxes against ``<size>``.
    """
    layout = _VOC_LAYOUT.format(year=year, image_set=image_set)
    year_dir = _find_year_dir(Path(root), str(year), image_set)
    image_dir = year_dir / "JPEGImages"
    if read_images:
        require_path(image_dir, "VOC image folder", layout)
    annotation_dir = require_path(year_dir / "Annotations", "VOC annotation folder", layout)
    split_file = require_path(year_dir / "ImageSets" / "Main" / f"{image_set}.txt",
                              f"VOC image set file for image_set={image_set!r}", layout)
    known = set(VOC_CLASSES if classes is None else classes)
    found: list[tuple[tuple[int, int], Problem]] = []  # ((file position, 0 or object number), problem)
    corners, sizes, objects = [], [], []  # every box of the image set, checked at once below
    for position, stem in enumerate(line.split()[0] for line in split_file.read_text().splitlines() if line.strip()):
        xml = annotation_dir / f"{stem}.xml"  # a loop over files: each is read from disk anyway
        try:
            annotation = read_voc_xml(xml)
        except FileNotFoundError:
            found.append(((position, 0), Problem(str(xml), f"annotation file missing (listed in {split_file.name})")))
            continue
        except ValueError as err:
            message = str(err).replace(f" {xml}:", ":").replace(f"{xml}: ", "")
            found.append(((position, 0), Problem(str(xml), message)))
            continue
        for k, name in enumerate(annotation["names"]):
            if name not in known:
                found.append(((position, 0), Problem(str(xml), f"object {k + 1}: unknown class name {name!r} "
                                                               f"(not one of the {len(known)} classes)")))
        image_problems: list[Problem] = []
        size = _image_size(voc_image_path(image_dir, stem, annotation["filename"]), annotation["size"],
                           read_images, image_problems, "the XML's <size>")
        found += [((position, 0), problem) for problem in image_problems]
        corners.append(annotation["corners"])
        sizes += [size if size is not None else (np.nan, np.nan)] * len(annotation["corners"])
        objects += [(position, xml, k, name) for k, name in enumerate(annotation["names"])]
    corners = np.concatenate(corners) if corners else np.zeros((0, 4))
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    inverted = (corners[:, 2] < corners[:, 0]) | (corners[:, 3] < corners[:, 1])
    for i, text in box_problems(voc_corners_to_xyxy(corners), inverted, sizes[:, 0], sizes[:, 1]):
        position, xml, k, name = objects[i]
        xmin, ymin, xmax, ymax = map(_number, corners[i])
        found.append(((position, k + 1), Problem(str(xml), f"object {k + 1} {name!r} (xmin {xmin}, ymin {ymin}, "
                                                           f"xmax {xmax}, ymax {ymax}): {text}")))
    found.sort(key=lambda item: item[0])  # file by file; each file's own problems, then its boxes'
    return [problem for _, problem in found]


def check_coco(image_dir: str | Path, annotation_json: str | Path, read_images: bool = True,
               coco=None) -> list[Problem]:
    """Every problem of a COCO instances file and its images, image by image in id order.

    A malformed file is one problem; per image: no ``file_name``, with ``read_images`` a missing
    or unreadable image or one whose size is not the file's width/height; per annotation: an
    ``image_id`` not in "images", an unknown ``category_id``, a non-numeric bbox, and the boxes
    :func:`box_problems` reports (COCO's [x, y, w, h] in the message). ``read_images=False`` checks
    the JSON only (what COCODataset does when built), judging boxes against the stated sizes.
    ``coco``: the file's pycocotools index when the caller has it already.
    """
    image_dir, annotation_json = Path(image_dir), Path(annotation_json)
    if read_images:
        require_path(image_dir, "COCO image folder", "image_dir/<file_name> for every entry of the JSON's 'images'")
    if coco is None:
        try:
            coco = _load_coco(require_path(annotation_json, "COCO annotation file", "an instances JSON"))
        except ValueError as err:
            return [Problem(str(annotation_json), str(err).replace(f"{annotation_json}: ", ""))]
    position = {image_id: k for k, image_id in enumerate(sorted(coco.imgs))}  # the order of the listing
    head: list[Problem] = []  # problems of the file itself, listed first
    found: list[tuple[tuple[int, int], Problem]] = []  # ((image position, annotation index + 1), problem)
    sizes: dict = {}  # image id -> (width, height) to judge its boxes by, None where unknown
    for image_id, info in coco.imgs.items():  # a loop over images: their files are opened one by one anyway
        try:
            sizes[image_id] = (float(info["width"]), float(info["height"]))
        except (KeyError, TypeError, ValueError):
            sizes[image_id] = None
        if "file_name" not in info:
            head.append(Problem(str(annotation_json), f"image {image_id} has no 'file_name'"))
        elif read_images:
            image_problems: list[Problem] = []
            sizes[image_id] = _image_size(image_dir / info["file_name"], sizes[image_id], True, image_problems,
                                          "the file's width/height")
            found += [((position[image_id], 0), problem) for problem in image_problems]
    # The annotations in a few list passes and one vectorised box check: for a file of train2017's size
    # (860k annotations) 6-8 s, against 17 s for json.loads of that file (2 loaded cores).
    annotations = coco.dataset["annotations"]
    where = [position.get(ann["image_id"]) for ann in annotations]
    for ann, pos in zip(annotations, where):
        if pos is None:
            head.append(Problem(str(annotation_json), f"annotation {ann.get('id')}: image_id {ann['image_id']!r} "
                                                      "is not in 'images'"))
    valid = np.array([pos is not None for pos in where], dtype=bool)
    xywh, numeric = _bboxes([ann.get("bbox") for ann in annotations])
    known = np.array([ann.get("category_id") in coco.cats for ann in annotations], dtype=bool)
    by_position = np.array([sizes[image_id] or (np.nan, np.nan) for image_id in sorted(coco.imgs)],
                           dtype=np.float64).reshape(-1, 2)
    size = by_position[np.array([0 if pos is None else pos for pos in where], dtype=np.int64)].reshape(-1, 2)

    def image_file(k: int) -> str:
        info = coco.imgs[annotations[k]["image_id"]]
        return str(image_dir / info["file_name"]) if "file_name" in info else str(annotation_json)

    def add(k: int, text: str) -> None:
        found.append(((where[k], k + 1), Problem(image_file(k), f"annotation {annotations[k].get('id')}{text}")))

    for k in np.flatnonzero(valid & ~known):
        add(k, f": unknown category_id {annotations[k].get('category_id')!r} (not in 'categories')")
    for k in np.flatnonzero(valid & ~numeric):
        add(k, f": bbox must be 4 numbers [x, y, w, h]; got {annotations[k].get('bbox')!r}")
    checked = np.flatnonzero(valid & numeric)
    boxes = np.concatenate((xywh[checked, :2], xywh[checked, :2] + xywh[checked, 2:]), axis=1)
    inverted = (xywh[checked, 2:] < 0).any(axis=1)
    for i, text in box_problems(boxes, inverted, size[checked, 0], size[checked, 1]):
        k = checked[i]
        add(k, f" (bbox [{', '.join(map(_number, xywh[k]))}]): {text}")
    found.sort(key=lambda item: item[0])  # image by image; each image's own problems, then its annotations'
    return head + [problem for _, problem in found]


def _bboxes(bboxes: list) -> tuple[np.ndarray, np.ndarray]:
    """COCO bboxes as ``(N, 4)`` float64 and ``(N,)`` bool, False for one that is not 4 numbers (row NaN)."""
    try:
        xywh = np.asarray(bboxes, dtype=np.float64)
        if xywh.shape == (len(bboxes), 4):
            return xywh, np.ones(len(bboxes), dtype=bool)
    except (TypeError, ValueError):  # a ragged or non-numeric bbox somewhere: sort them out one by one
        pass
    xywh, numeric = np.full((len(bboxes), 4), np.nan), np.zeros(len(bboxes), dtype=bool)
    for k, bbox in enumerate(bboxes):
        try:
            values = [float(v) for v in bbox]
        except (TypeError, ValueError):
            continue
        if len(values) == 4:
            xywh[k], numeric[k] = values, True
    return xywh, numeric


def warn_dropped_boxes(problems: Sequence[Problem], command: str) -> None:
    """One warning naming the count of dropped boxes, the first files and ``command`` (the full list);
    nothing when no box was dropped."""
    dropped = [p for p in problems if p.dropped]
    if not dropped:
        return
    files = list(dict.fromkeys(Path(p.file).name for p in dropped))
    examples = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
    boxes = f"{len(dropped)} box{'es' if len(dropped) > 1 else ''}"
    in_files = f"{len(files)} file{'s' if len(files) > 1 else ''}"
    warnings.warn(f"{boxes} in {in_files} {'are' if len(dropped) > 1 else 'is'} inverted, empty or outside the "
                  f"image and {'were' if len(dropped) > 1 else 'was'} dropped, e.g. {examples}; see `{command}` "
                  "for the full list", stacklevel=3)


def report(dataset: str, root: str | Path, year: str = "2007", split: str | None = None, classes: str | None = None,
           read_images: bool = True) -> int:
    """``python -m ssd_lib check-data``: print every problem of a data root's files as ``path: problem``,
    then a summary; return 0 when there is none, :data:`DATA_PROBLEMS_STATUS` when there is any.

    ``dataset``: "voc" or "coco"; ``split``: a VOC image set or COCO folder, default those of
    ``_DEFAULT_SPLITS`` that exist; ``classes``: VOC class names, comma-separated (default VOC's 20).
    A root or a named split that does not exist raises FileNotFoundError (the command line's exit 2).
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data root {root} does not exist; pass the VOCdevkit folder (--dataset voc) or the "
                                "folder holding train2017/, val2017/ and annotations/ (--dataset coco)")
    names = [name.strip() for name in classes.split(",") if name.strip()] if classes else None
    problems, checked, absent = [], [], []
    for name in [split] if split else _DEFAULT_SPLITS[dataset]:
        try:
            if dataset == "voc":
                problems += check_voc(root, year, name, names, read_images=read_images)
            else:
                problems += check_coco(root / name, root / "annotations" / f"instances_{name}.json", read_images)
        except FileNotFoundError as exc:  # a split that is not there: an error only when it was named
            if split:
                raise
            absent.append((name, str(exc).splitlines()[0]))
            continue
        checked.append(name)
    if not checked:
        raise FileNotFoundError(f"nothing to check: {'; '.join(message for _, message in absent)}")
    for file, problem in problems:
        print(f"{file}: {problem}")
    what = (f"VOC{year}" if dataset == "voc" else "COCO") + f" {', '.join(checked)} under {root}"
    what += f" ({', '.join(name for name, _ in absent)} not found)" if absent else ""
    if not problems:
        print(f"no problems found in {what}")
        return 0
    files, dropped = len({file for file, _ in problems}), sum(problem.dropped for problem in problems)
    print(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in {files} file{'s' if files > 1 else ''} of "
          f"{what}; {dropped} of them boxes that training and evaluation drop")
    return DATA_PROBLEMS_STATUS
