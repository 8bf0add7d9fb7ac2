"""Drawing one Shapes image: analytic shape masks, a textured background, clutter, and objects placed
in painter's order with their exact boxes (the built-in dataset of lesson 6; sizes and aspect ratios
span the range of SSD's default boxes, paper Sec. 2.2).

Every shape is a closed-form test on pixel centres in box coordinates, so a box is the tight extent of
the object's *visible* pixels, computed, never guessed. ``render_shapes`` is pure: the same generator
state gives the same sample. The background and the clutter are drawn by ``ssd_lib.data.canvas``.

Usage::

    from ssd_lib.data.drawing import render_shapes
    sample = render_shapes(np.random.default_rng(0), ShapesConfig(), image_size=128)
    sample.image.shape, sample.boxes          # (3, 128, 128) float32 in [0, 1]; (G, 4) pixel xyxy
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np

from .canvas import _background, _clutter, _linspace0, _mean_rows, _pixel_centres, _random_bytes, _read_only  # noqa: F401

if TYPE_CHECKING:  # only for the annotations: shapes.py imports this module
    from .shapes import ShapesConfig

__all__ = ["SHAPE_NAMES", "PALETTE", "ShapesSample", "render_shapes"]

SHAPE_NAMES: tuple[str, ...] = ("circle", "rectangle", "triangle", "cross", "ring", "star")

# One palette for every class: the colour of an object says nothing about its class.
# Luminances run from near 0 (black, navy) to near 1 (white, yellow) so that a colour with good
# contrast exists on any background.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.10, 0.10),  # red
    (0.10, 0.65, 0.15),  # green
    (0.15, 0.25, 0.90),  # blue
    (0.98, 0.90, 0.10),  # yellow
    (0.10, 0.85, 0.90),  # cyan
    (0.85, 0.15, 0.85),  # magenta
    (1.00, 0.55, 0.05),  # orange
    (0.45, 0.10, 0.60),  # purple
    (0.97, 0.97, 0.97),  # white
    (0.05, 0.05, 0.05),  # black
    (0.50, 0.50, 0.50),  # grey
    (0.50, 0.28, 0.10),  # brown
    (1.00, 0.60, 0.75),  # pink
    (0.05, 0.35, 0.15),  # dark green
    (0.05, 0.08, 0.40),  # navy
    (0.60, 0.80, 1.00),  # light blue
)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma weights


class ShapesSample(NamedTuple):
    """One rendered image with its exact annotation.

    image: (3, S, S) float32 in [0, 1]; boxes: (G, 4) float32 pixel xyxy, tight around the
    visible pixels; labels: (G,) int64 in 1..C; instance_map: (S, S) int16, the index of the
    object that owns each pixel, -1 for background and clutter; visible: (G,) float32, the
    fraction of each object's pixels that is visible (not hidden, not outside the image).
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    instance_map: np.ndarray
    visible: np.ndarray


# ---------------------------------------------------------------------------------------------
# Speed without changing a single value. Shapes images are drawn on the fly in every training step,
# so this module is written for speed, under one rule: every (seed, index) must give the same image,
# boxes and instance map, bit for bit, as the first version (benchmarks/render_reference.py; the shipped
# model, its card and the lessons' figures depend on them; tests/test_render_identity.py checks).
# So every random draw keeps its place in the stream and every float keeps its operations; what
# changed is overhead: what depends only on sizes is cached, the tries of one mask reuse its count and
# box, the few boxes of an image are compared in plain Python, a shading ramp is computed for the
# visible window only, and a few numpy wrappers are replaced by the calls they make.
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Shape masks. (u, v) are pixel centres in box coordinates: the box spans [-1, 1] on both axes,
# so a stretched box draws a stretched shape and every shape touches all four box sides.
# ---------------------------------------------------------------------------------------------

def _box_grid(width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates u: (1, ceil(width)), v: (ceil(height), 1) in [-1, 1]."""
    cols, rows = math.ceil(width), math.ceil(height)
    u = (_pixel_centres(cols) - cols / 2) / (width / 2)
    v = (_pixel_centres(rows) - rows / 2) / (height / 2)
    return u[None, :], v[:, None]


def _star_mask(u: np.ndarray, v: np.ndarray, inner: float, upright: bool) -> np.ndarray:
    """A filled 5-point star whose bounding box is the [-1, 1] box."""
    # A regular star with outer radius 1 spans x in [-sin 72, sin 72] and y in [-1, cos 36]:
    # stretch it to fill the box.
    if not upright:  # mirror top to bottom
        v = -v
    x = u * math.sin(math.radians(72))
    y = -1.0 + (v + 1.0) * (1.0 + math.cos(math.radians(36))) / 2
    angle = np.arctan2(x, -y)                     # 0 at the top point, clockwise
    sector = 2 * math.pi / 5
    folded = np.mod(angle, sector)
    folded = np.minimum(folded, sector - folded)  # symmetry: fold into [0, 36 deg]
    radius = np.hypot(x, y)
    px, py = radius * np.cos(folded), radius * np.sin(folded)
    # Inside = on the centre's side of the edge from the outer point (1, 0) to the inner point.
    dx = inner * math.cos(sector / 2) - 1.0
    dy = inner * math.sin(sector / 2)
    return dx * py - dy * (px - 1.0) >= 0


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator, cfg: ShapesConfig) -> np.ndarray:
    """Boolean mask (rows, cols) of one shape filling its box, on the box grid u: (1, cols), v: (rows, 1)."""
    if name == "circle":
        return u * u + v * v <= 1.0
    if name == "rectangle":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if name == "triangle":  # isosceles, pointing up, down, left or right
        direction = rng.integers(4)
        along, across = (v, u) if direction < 2 else (u, v)
        if direction % 2:
            along = -along
        return (np.abs(across) * 2 <= along + 1.0) & (along <= 1.0)
    if name == "cross":  # plus sign
        arm = rng.uniform(*cfg.cross_arm)
        inside = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
        return inside & ((np.abs(u) <= arm) | (np.abs(v) <= arm))
    if name == "ring":  # annulus
        inner = rng.uniform(*cfg.ring_inner)
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= inner * inner)
    if name == "star":
        return _star_mask(u, v, rng.uniform(*cfg.star_inner), upright=bool(rng.random() < 0.75))
    raise AssertionError(f"unknown shape {name}")


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------

def _sample_sizes(rng: np.random.Generator, cfg: ShapesConfig, count: int) -> np.ndarray:
    """Box sizes sqrt(w h) as fractions of the side, largest first, with sum(size^2) <= area_budget."""
    log_low, log_high = math.log(cfg.size_range[0]), math.log(cfg.size_range[1])
    c = cfg.size_concentration
    sizes = np.exp(log_low + rng.beta(c, c, count) * (log_high - log_low))
    # The budget is spent in draw order, so in a crowded image a late large draw is redrawn smaller:
    # large objects become rarer as the count grows (and everything still fits).
    budget = cfg.area_budget
    for i in range(count):  # loop over <= 8 objects, not hot
        if sizes[i] ** 2 > budget:  # too big for what is left: redraw from the truncated range
            top = min(max(0.5 * math.log(max(budget, 1e-12)), log_low), log_high)
            sizes[i] = math.exp(log_low + rng.beta(c, c) * (top - log_low))
        budget -= sizes[i] ** 2
    return np.sort(sizes)[::-1]


Box = tuple[int, int, int, int]  # pixel xyxy; pixel (x, y) covers [x, x + 1) x [y, y + 1)


def _box_iou_1n(box: Sequence[float], others: Sequence[Sequence[float]]) -> list[float]:
    """IoU of one xyxy box (4,) with each of others (N, 4), as a list (torchvision.ops.box_iou does this for
    tensors; an image has a handful of boxes, so plain Python beats numpy's per-call cost here; the tests
    compare them). On the renderer's integer boxes every step is exact but the one division."""
    x0, y0, x1, y1 = box
    area = (x1 - x0) * (y1 - y0)
    ious = []
    for a0, b0, a1, b1 in others:  # a handful of boxes
        inter = max(min(x1, a1) - max(x0, a0), 0) * max(min(y1, b1) - max(y0, b0), 0)
        ious.append(inter / max(area + (a1 - a0) * (b1 - b0) - inter, 1e-9))
    return ious


def _mask_box(mask: np.ndarray, x0: int, y0: int) -> Box | None:
    """Tight xyxy box of the True pixels of ``mask`` whose top-left pixel is (x0, y0); None if empty.

    Pixel (x, y) covers [x, x + 1) x [y, y + 1), so a single pixel has a 1 x 1 box.
    """
    rows = mask.any(1).nonzero()[0]
    if len(rows) == 0:
        return None
    cols = mask.any(0).nonzero()[0]
    return (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)


def _pick_colour(rng: np.random.Generator, palette_luma: list[float], avoid_luma: list[float], margin: float) -> int:
    """A random palette index whose luminance differs by >= margin from every value in avoid_luma."""
    gap = [abs(luma - avoid_luma[0]) for luma in palette_luma]
    for avoid in avoid_luma[1:]:  # the objects it partly hides, usually none
        gap = [min(g, abs(luma - avoid)) for g, luma in zip(gap, palette_luma)]
    ok = [i for i, g in enumerate(gap) if g >= margin]
    return ok[int(rng.integers(len(ok)))] if ok else gap.index(max(gap))  # = rng.choice(ok), draw for draw


@lru_cache(maxsize=8)
def _palette_tables(colours: tuple[tuple[float, float, float], ...]) -> tuple[np.ndarray, list[float], list[float]]:
    """The palette (K, 3) float32 and two luminance lists (K,): as ``palette @ luma`` and row by row.

    The two agree to float32 rounding only (one matrix-vector product against K dot products), and each
    is used where the first version used it: the first to pick colours, the second for painted objects.
    """
    palette = _read_only(np.asarray(colours, dtype=np.float32))
    return palette, [float(luma) for luma in palette @ _LUMA], [float(colour @ _LUMA) for colour in palette]


class _Placement(NamedTuple):
    window: tuple[int, int, int, int]  # (y0, y1, x0, x1): the part of the shape's box inside the image
    pixels: np.ndarray                 # (y1 - y0, x1 - x0) bool: the shape's pixels in that window
    box: Box                           # tight xyxy of those pixels
    count: int                         # number of those pixels
    hidden: dict[int, int]             # earlier object -> how many of its pixels this one hides
    shrunk: dict[int, Box]             # earlier object -> its visible box once partly hidden


class _Scene:
    """The objects placed so far in one image: who owns each pixel, and each object's visible box."""

    def __init__(self, size: int) -> None:
        self.owner = np.full((size, size), -1, dtype=np.int16)  # object index per pixel, -1 = none
        self.boxes: list[Box] = []      # visible xyxy box of each object
        self.windows: list[tuple[int, int, int, int]] = []
        self.visible: list[int] = []    # pixels still visible
        self.total: list[int] = []      # all of the object's pixels, also those outside the image
        self.luma: list[float] = []
        self.labels: list[int] = []

    def try_place(self, mask: np.ndarray, total: int, mask_box: Box, x0: int, y0: int,
                  cfg: ShapesConfig) -> _Placement | None:
        """Check the rules for ``mask`` (h, w) with its top-left at (x0, y0); None if one is broken.

        ``total`` and ``mask_box`` are the mask's pixel count and tight box at (0, 0), computed once
        for all the tries of one mask. Rules: >= min_visible of the shape inside the image; box IoU
        <= max_iou with every object, also after earlier objects' visible boxes shrink because this
        one hides part of them; every earlier object keeps >= min_visible of its pixels.
        """
        size = self.owner.shape[0]
        rows, cols = mask.shape
        ya, yb, xa, xb = max(y0, 0), min(y0 + rows, size), max(x0, 0), min(x0 + cols, size)
        if (ya, yb, xa, xb) == (y0, y0 + rows, x0, x0 + cols):  # all inside: the mask's own count and box
            pixels, count = mask, total
            box = (x0 + mask_box[0], y0 + mask_box[1], x0 + mask_box[2], y0 + mask_box[3]) if total else None
        else:
            pixels = mask[ya - y0:yb - y0, xa - x0:xb - x0]
            count = int(np.count_nonzero(pixels))
            box = _mask_box(pixels, xa, ya) if count else None
        if count == 0 or count < cfg.min_visible * total:
            return None
        iou = _box_iou_1n(box, self.boxes)
        if iou and max(iou) > cfg.max_iou:
            return None
        hidden, shrunk = {}, {}
        if any(iou):  # the boxes overlap: does the shape hide pixels of earlier objects?
            owners = self.owner[ya:yb, xa:xb][pixels]
            counts = np.bincount(owners + 1, minlength=len(self.boxes) + 1)[1:]  # + 1: -1 (nobody) -> bin 0
            for j in counts.nonzero()[0].tolist():  # the few objects it overlaps
                if self.visible[j] - int(counts[j]) < cfg.min_visible * self.total[j]:
                    return None
                hidden[j] = int(counts[j])
                shrunk[j] = self._box_after_hiding(j, (ya, yb, xa, xb), pixels)
            if shrunk:  # a partly hidden object has a smaller visible box: re-check its IoUs
                boxes = self.boxes + [box]
                for j, new_box in shrunk.items():
                    boxes[j] = new_box
                for j in shrunk:
                    if max(_box_iou_1n(boxes[j], boxes[:j] + boxes[j + 1:])) > cfg.max_iou:
                        return None
        return _Placement((ya, yb, xa, xb), pixels, box, count, hidden, shrunk)

    def _box_after_hiding(self, j: int, window: tuple[int, int, int, int], pixels: np.ndarray) -> Box:
        ya, yb, xa, xb = window
        ja, jb, ia, ib = self.windows[j]
        own = self.owner[ja:jb, ia:ib] == j
        oy0, oy1, ox0, ox1 = max(ja, ya), min(jb, yb), max(ia, xa), min(ib, xb)
        own[oy0 - ja:oy1 - ja, ox0 - ia:ox1 - ia] &= ~pixels[oy0 - ya:oy1 - ya, ox0 - xa:ox1 - xa]
        new_box = _mask_box(own, ia, ja)
        assert new_box is not None, "min_visible > 0 keeps some of every object visible"
        return new_box

    def add(self, placement: _Placement, total: int, label: int, luma: float) -> None:
        ya, yb, xa, xb = placement.window
        for j, count in placement.hidden.items():
            self.visible[j] -= count
        for j, new_box in placement.shrunk.items():
            self.boxes[j] = new_box
        np.copyto(self.owner[ya:yb, xa:xb], len(self.labels), where=placement.pixels)
        self.boxes.append(placement.box)
        self.windows.append(placement.window)
        self.visible.append(placement.count)
        self.total.append(total)
        self.luma.append(luma)
        self.labels.append(label)


def _random_aspect(rng: np.random.Generator, cfg: ShapesConfig, side_px: float, image_size: int) -> float:
    """w / h, log-uniform in aspect_range but narrowed so both sides lie in [min_side_px, max_side * S]."""
    limit = 2 * math.log(cfg.max_side * image_size / side_px)
    thin = 2 * math.log(max(side_px / cfg.min_side_px, 1.0))
    low = max(math.log(cfg.aspect_range[0]), -limit, -thin)
    high = min(math.log(cfg.aspect_range[1]), limit, thin)
    return math.exp(rng.uniform(low, high)) if low < high else 1.0


def render_shapes(rng: np.random.Generator, cfg: ShapesConfig, image_size: int = 256) -> ShapesSample:
    """Draw one image and its annotation from ``rng``. Pure: the same generator state gives the same sample."""
    size = image_size
    palette, palette_luma, colour_luma = _palette_tables(cfg.palette)
    canvas = _background(rng, cfg, size)
    _clutter(rng, cfg, canvas, palette)  # drawn first: objects are never hidden by clutter

    count = 0 if rng.random() < cfg.empty_prob else int(rng.integers(cfg.objects_per_image[0],
                                                                     cfg.objects_per_image[1] + 1))
    scene = _Scene(size)
    # Largest first, so small objects are drawn on top and stay visible (painter's order).
    for side in _sample_sizes(rng, cfg, count):  # loop over <= 8 objects; each is drawn with array ops
        class_index = int(rng.integers(len(cfg.classes)))
        side_px = max(float(side) * size, cfg.min_side_px)
        placement = None
        for _attempt in range(4):
            aspect = _random_aspect(rng, cfg, side_px, size)
            width, height = side_px * math.sqrt(aspect), side_px / math.sqrt(aspect)
            u, v = _box_grid(width, height)
            mask = _shape_mask(cfg.classes[class_index], u, v, rng, cfg)
            rows, cols = mask.shape
            total = int(np.count_nonzero(mask))
            mask_box = _mask_box(mask, 0, 0)
            across = rng.random() < cfg.border_prob or cols > size or rows > size
            for _try in range(cfg.placement_tries):
                if across:  # centre anywhere in the image: the shape may be cut by the border
                    x0 = int(rng.integers(-(cols // 2), size - cols // 2))
                    y0 = int(rng.integers(-(rows // 2), size - rows // 2))
                else:
                    x0 = int(rng.integers(0, size - cols + 1))
                    y0 = int(rng.integers(0, size - rows + 1))
                placement = scene.try_place(mask, total, mask_box, x0, y0, cfg)
                if placement is not None:
                    break
            if placement is not None:
                break
            side_px = max(side_px * 0.75, cfg.min_side_px)  # crowded: try a smaller object
        if placement is None:
            continue

        # Colour: contrast with the local background and with every object it partly hides.
        ya, yb, xa, xb = placement.window
        window = canvas[:, ya:yb, xa:xb]
        step = max(1, min(yb - ya, xb - xa) // 16)  # a subsample is enough for a mean
        free = placement.pixels[::step, ::step] & (scene.owner[ya:yb:step, xa:xb:step] < 0)
        sample = window[:, ::step, ::step]
        background = sample[:, free] if free.any() else sample.reshape(3, -1)
        avoid = [float(_mean_rows(background) @ _LUMA)] + [scene.luma[j] for j in placement.hidden]
        colour_index = _pick_colour(rng, palette_luma, avoid, cfg.min_contrast)
        # Gentle shading (a brightness ramp) so that objects are not flat stickers; only the window's part.
        ramp = float(rng.uniform(-1, 1)) * u[:, xa - x0:xb - x0] + float(rng.uniform(-1, 1)) * v[ya - y0:yb - y0]
        ramp *= cfg.shading
        ramp += 1.0  # = 1 + shading * (a u + b v), in place
        np.copyto(window, palette[colour_index][:, None, None] * ramp, where=placement.pixels)
        scene.add(placement, total, class_index + 1, colour_luma[colour_index])

    noise = float(rng.uniform(*cfg.noise))
    if noise > 0:  # uniform noise in [-noise, noise]; raw random bytes are 3x faster than rng.random
        canvas += _random_bytes(rng, canvas.size).reshape(canvas.shape) * np.float32(noise / 128)
    np.clip(canvas, 0.0, 1.0, out=canvas)
    # scene.boxes are exact: the tight extent of each object's visible pixels within the image.
    visible = np.asarray(scene.visible, dtype=np.float32) / np.maximum(np.asarray(scene.total, np.float32), 1)
    return ShapesSample(canvas, np.asarray(scene.boxes, dtype=np.float32).reshape(-1, 4),
                        np.asarray(scene.labels, dtype=np.int64), scene.owner, visible)
