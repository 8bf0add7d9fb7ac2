# FROZEN COPY: the pre-optimisation Shapes renderer (ssd_lib/data/drawing.py as of issue #17, before the
# speed-up), kept verbatim for benchmarks/bench_render.py (old against new images/s) and for
# tests/test_render_identity.py (the new renderer must equal this one bit for bit). Do not edit or "fix" it:
# only its one relative import was made absolute.
"""Drawing one Shapes image: analytic shape masks, a textured background, clutter, and objects placed
in painter's order with their exact boxes (the built-in dataset of lesson 6; sizes and aspect ratios
span the range of SSD's default boxes, paper Sec. 2.2).

Every shape is a closed-form test on pixel centres in box coordinates, so a box is the tight extent of
the object's *visible* pixels, computed, never guessed. ``render_shapes`` is pure: the same generator
state gives the same sample.

Usage::

    from ssd_lib.data.drawing import render_shapes
    sample = render_shapes(np.random.default_rng(0), ShapesConfig(), image_size=128)
    sample.image.shape, sample.boxes          # (3, 128, 128) float32 in [0, 1]; (G, 4) pixel xyxy
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:  # only for the annotations: shapes.py imports this module
    from ssd_lib.data.shapes import ShapesConfig

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
# Shape masks. (u, v) are pixel centres in box coordinates: the box spans [-1, 1] on both axes,
# so a stretched box draws a stretched shape and every shape touches all four box sides.
# ---------------------------------------------------------------------------------------------

def _box_grid(width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates u: (1, ceil(width)), v: (ceil(height), 1) in [-1, 1]."""
    cols, rows = math.ceil(width), math.ceil(height)
    u = (np.arange(cols, dtype=np.float32) + 0.5 - cols / 2) / (width / 2)
    v = (np.arange(rows, dtype=np.float32) + 0.5 - rows / 2) / (height / 2)
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


def _shape_mask(name: str, width: float, height: float, rng: np.random.Generator, cfg: ShapesConfig) -> np.ndarray:
    """Boolean mask (ceil(height), ceil(width)) of one shape filling a width x height box."""
    u, v = _box_grid(width, height)
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
# Background and clutter
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _blob_basis(size: int, k: int) -> np.ndarray:
    """(size, k) smooth Gaussian bumps on a k-point grid; basis @ G @ basis.T is a smooth field."""
    centres = (np.arange(k) + 0.5) / k
    coords = (np.arange(size) + 0.5) / size
    basis = np.exp(-(((coords[:, None] - centres[None, :]) * k) ** 2))
    return (basis / basis.sum(1, keepdims=True) * 1.5).astype(np.float32)  # * 1.5: averaging damps the grid


def _background(rng: np.random.Generator, cfg: ShapesConfig, size: int) -> np.ndarray:
    """(3, size, size) float32: base colour + gradient + soft blobs + optional stripes/checker."""
    # Scalars are cast to float: a numpy float64 scalar would promote the float32 arrays to float64.
    base = rng.uniform(*cfg.background_luminance) + rng.uniform(-cfg.background_tint, cfg.background_tint, 3)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    xs, ys = coords[None, :], coords[:, None]
    gx, gy = (float(g) for g in rng.uniform(-cfg.gradient, cfg.gradient, 2))
    luminance = gx * xs + gy * ys  # (size, size) by broadcasting
    if rng.random() < cfg.pattern_prob:
        contrast = float(rng.uniform(*cfg.pattern_contrast))
        if rng.random() < 0.5:  # stripes at a random angle
            period = float(rng.uniform(6, 32)) / size
            theta = float(rng.uniform(0, math.pi))
            phase = (xs * (2 * math.pi * math.cos(theta) / period) + ys * (2 * math.pi * math.sin(theta) / period))
            luminance += contrast * np.sin(phase + float(rng.uniform(0, 2 * math.pi)))
        else:  # checkerboard
            cell = int(rng.integers(8, 41))
            idx = np.arange(size) // cell
            luminance += np.float32(contrast) * (2 * ((idx[:, None] + idx[None, :]) % 2) - 1).astype(np.float32)
    # Soft blobs: mostly brightness, a little colour, so that backgrounds stay calm.
    k = int(rng.integers(cfg.blob_grid[0], cfg.blob_grid[1] + 1))
    basis = _blob_basis(size, k)
    amplitude = float(rng.uniform(0, cfg.blobs))
    grid = rng.uniform(-1, 1, (1, k, k)) + 0.4 * rng.uniform(-1, 1, (3, k, k))
    canvas = basis @ (amplitude * grid).astype(np.float32) @ basis.T  # (3, size, size)
    canvas += luminance
    canvas += base.astype(np.float32)[:, None, None]
    return canvas


@lru_cache(maxsize=8)
def _pen_offsets(thickness: int) -> np.ndarray:
    """(thickness^2, 2) integer x, y offsets of a square pen."""
    grid = np.arange(thickness) - (thickness - 1) // 2
    return np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)


def _pen(points: np.ndarray, thickness: int) -> np.ndarray:
    """Integer pixels (N * thickness^2, 2) as x, y covered by a square pen of side thickness at points (N, 2)."""
    return (np.round(points).astype(np.int64)[:, None, :] + _pen_offsets(thickness)[None]).reshape(-1, 2)


def _clutter(rng: np.random.Generator, cfg: ShapesConfig, canvas: np.ndarray, palette: np.ndarray) -> None:
    """Draw thin lines, curves, partial arcs and dot clusters on canvas (3, S, S): never labelled objects."""
    size = canvas.shape[-1]
    pixels, colours = [], []
    for _ in range(int(rng.integers(cfg.clutter_count[0], cfg.clutter_count[1] + 1))):  # a few items
        colour = int(rng.integers(len(palette)))
        thickness = int(rng.integers(cfg.clutter_thickness[0], cfg.clutter_thickness[1] + 1))
        kind = int(rng.integers(4))
        if kind == 0:  # straight line
            start = rng.uniform(0, size, 2)
            direction = float(rng.uniform(0, 2 * math.pi))
            end = start + float(rng.uniform(0.1, 0.5)) * size * np.array([math.cos(direction), math.sin(direction)])
            t = np.linspace(0.0, 1.0, int(np.abs(end - start).max()) + 2)[:, None]
            points = start + t * (end - start)
        elif kind == 1:  # quadratic Bezier curve
            p0 = rng.uniform(0, size, 2)
            p1, p2 = p0 + rng.uniform(-0.3, 0.3, (2, 2)) * size
            length = np.abs(p1 - p0).sum() + np.abs(p2 - p1).sum()  # >= the curve's length: no gaps
            t = np.linspace(0.0, 1.0, int(length) + 2)[:, None]
            points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
        elif kind == 2:  # partial arc: thin and open, unlike the ring class
            centre = rng.uniform(0, size, 2)
            radii = rng.uniform(0.02, 0.25, 2) * size
            start, span = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(math.radians(60), math.radians(200)))
            angle = start + np.linspace(0.0, span, int(span * radii.max() * 1.5) + 2)
            points = centre + radii * np.stack([np.cos(angle), np.sin(angle)], 1)
        else:  # a few small dots
            count = int(rng.integers(3, 13))
            dots = rng.uniform(0, size, 2) + rng.normal(0, 0.06 * size, (count, 2))
            radius = float(rng.uniform(0.8, 2.2))
            r = math.ceil(radius)
            oy, ox = np.mgrid[-r:r + 1, -r:r + 1]
            disc = ox * ox + oy * oy <= radius * radius
            points = (dots[:, None, :] + np.stack([ox[disc], oy[disc]], 1)[None]).reshape(-1, 2)
            thickness = 1
        pixels.append(_pen(points, thickness))
        colours.append(np.full(len(pixels[-1]), colour))
    if not pixels:
        return
    xy, colour_index = np.concatenate(pixels), np.concatenate(colours)
    keep = (xy[:, 0] >= 0) & (xy[:, 0] < size) & (xy[:, 1] >= 0) & (xy[:, 1] < size)
    canvas[:, xy[keep, 1], xy[keep, 0]] = palette[colour_index[keep]].T  # later items paint over earlier ones


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


def _box_iou_1n(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box (4,) with others (N, 4). (torchvision.ops.box_iou does this for tensors;
    plain numpy keeps the generator free of torch overhead in this hot loop; the tests compare them.)"""
    wh = np.clip(np.minimum(box[2:], others[:, 2:]) - np.maximum(box[:2], others[:, :2]), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    union = (box[2] - box[0]) * (box[3] - box[1]) + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(union - inter, 1e-9)


def _mask_box(mask: np.ndarray, x0: int, y0: int) -> np.ndarray | None:
    """Tight xyxy box (4,) of the True pixels of ``mask`` whose top-left pixel is (x0, y0); None if empty.

    Pixel (x, y) covers [x, x + 1) x [y, y + 1), so a single pixel has a 1 x 1 box.
    """
    rows = np.flatnonzero(mask.any(1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(mask.any(0))
    return np.array([x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1], dtype=np.float64)


def _pick_colour(rng: np.random.Generator, palette_luma: np.ndarray, avoid_luma: list[float], margin: float) -> int:
    """A random palette index whose luminance differs by >= margin from every value in avoid_luma."""
    gap = np.min(np.abs(palette_luma[:, None] - np.array(avoid_luma)[None, :]), axis=1)
    ok = np.flatnonzero(gap >= margin)
    return int(rng.choice(ok)) if len(ok) else int(np.argmax(gap))


class _Placement(NamedTuple):
    window: tuple[int, int, int, int]  # (y0, y1, x0, x1): the part of the shape's box inside the image
    pixels: np.ndarray                 # (y1 - y0, x1 - x0) bool: the shape's pixels in that window
    box: np.ndarray                    # (4,) tight xyxy of those pixels
    count: int                         # number of those pixels
    hidden: dict[int, int]             # earlier object -> how many of its pixels this one hides
    shrunk: dict[int, np.ndarray]      # earlier object -> its visible box once partly hidden


class _Scene:
    """The objects placed so far in one image: who owns each pixel, and each object's visible box."""

    def __init__(self, size: int, capacity: int) -> None:
        self.owner = np.full((size, size), -1, dtype=np.int16)  # object index per pixel, -1 = none
        self.boxes = np.zeros((capacity, 4))                    # visible xyxy box of each object
        self.windows: list[tuple[int, int, int, int]] = []
        self.visible: list[int] = []    # pixels still visible
        self.total: list[int] = []      # all of the object's pixels, also those outside the image
        self.luma: list[float] = []
        self.labels: list[int] = []

    def try_place(self, mask: np.ndarray, total: int, x0: int, y0: int, cfg: ShapesConfig) -> _Placement | None:
        """Check the rules for ``mask`` (h, w) with its top-left at (x0, y0); None if one is broken.

        Rules: >= min_visible of the shape inside the image; box IoU <= max_iou with every object,
        also after earlier objects' visible boxes shrink because this one hides part of them; every
        earlier object keeps >= min_visible of its pixels.
        """
        size = self.owner.shape[0]
        rows, cols = mask.shape
        ya, yb, xa, xb = max(y0, 0), min(y0 + rows, size), max(x0, 0), min(x0 + cols, size)
        pixels = mask[ya - y0:yb - y0, xa - x0:xb - x0]
        count = int(pixels.sum()) if (ya, yb, xa, xb) != (y0, y0 + rows, x0, x0 + cols) else total
        if count == 0 or count < cfg.min_visible * total:
            return None
        box = _mask_box(pixels, xa, ya)
        n = len(self.labels)
        iou = _box_iou_1n(box, self.boxes[:n])
        if n and iou.max() > cfg.max_iou:
            return None
        hidden, shrunk = {}, {}
        if iou.any():  # the boxes overlap: does the shape hide pixels of earlier objects?
            owners = self.owner[ya:yb, xa:xb][pixels]
            counts = np.bincount(owners[owners >= 0], minlength=n)
            for j in np.flatnonzero(counts):  # the few objects it overlaps
                if self.visible[j] - counts[j] < cfg.min_visible * self.total[j]:
                    return None
                hidden[int(j)] = int(counts[j])
                shrunk[int(j)] = self._box_after_hiding(int(j), (ya, yb, xa, xb), pixels)
            if shrunk:  # a partly hidden object has a smaller visible box: re-check its IoUs
                boxes = np.concatenate([self.boxes[:n], box[None]])
                for j, new_box in shrunk.items():
                    boxes[j] = new_box
                for j in shrunk:
                    others = np.delete(boxes, j, axis=0)
                    if _box_iou_1n(boxes[j], others).max() > cfg.max_iou:
                        return None
        return _Placement((ya, yb, xa, xb), pixels, box, count, hidden, shrunk)

    def _box_after_hiding(self, j: int, window: tuple[int, int, int, int], pixels: np.ndarray) -> np.ndarray:
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
        self.owner[ya:yb, xa:xb][placement.pixels] = len(self.labels)
        self.boxes[len(self.labels)] = placement.box
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
    palette = np.asarray(cfg.palette, dtype=np.float32)
    palette_luma = palette @ _LUMA
    canvas = _background(rng, cfg, size)
    _clutter(rng, cfg, canvas, palette)  # drawn first: objects are never hidden by clutter

    count = 0 if rng.random() < cfg.empty_prob else int(rng.integers(cfg.objects_per_image[0],
                                                                     cfg.objects_per_image[1] + 1))
    scene = _Scene(size, count)
    # Largest first, so small objects are drawn on top and stay visible (painter's order).
    for side in _sample_sizes(rng, cfg, count):  # loop over <= 8 objects; each is drawn with array ops
        class_index = int(rng.integers(len(cfg.classes)))
        side_px = max(float(side) * size, cfg.min_side_px)
        placement = None
        for _attempt in range(4):
            aspect = _random_aspect(rng, cfg, side_px, size)
            width, height = side_px * math.sqrt(aspect), side_px / math.sqrt(aspect)
            mask = _shape_mask(cfg.classes[class_index], width, height, rng, cfg)
            rows, cols = mask.shape
            total = int(mask.sum())
            across = rng.random() < cfg.border_prob or cols > size or rows > size
            for _try in range(cfg.placement_tries):
                if across:  # centre anywhere in the image: the shape may be cut by the border
                    x0 = int(rng.integers(-(cols // 2), size - cols // 2))
                    y0 = int(rng.integers(-(rows // 2), size - rows // 2))
                else:
                    x0 = int(rng.integers(0, size - cols + 1))
                    y0 = int(rng.integers(0, size - rows + 1))
                placement = scene.try_place(mask, total, x0, y0, cfg)
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
        avoid = [float(background.mean(1) @ _LUMA)] + [scene.luma[j] for j in placement.hidden]
        colour = palette[_pick_colour(rng, palette_luma, avoid, cfg.min_contrast)]
        # Gentle shading (a brightness ramp) so that objects are not flat stickers.
        u, v = _box_grid(width, height)
        ramp = 1.0 + cfg.shading * (float(rng.uniform(-1, 1)) * u + float(rng.uniform(-1, 1)) * v)
        ramp = ramp[ya - y0:yb - y0, xa - x0:xb - x0]
        np.copyto(window, colour[:, None, None] * ramp[None], where=placement.pixels[None])
        scene.add(placement, total, class_index + 1, float(colour @ _LUMA))

    noise = float(rng.uniform(*cfg.noise))
    if noise > 0:  # uniform noise in [-noise, noise]; raw random bytes are 3x faster than rng.random
        canvas += np.frombuffer(rng.bytes(canvas.size), np.int8).reshape(canvas.shape) * np.float32(noise / 128)
    np.clip(canvas, 0.0, 1.0, out=canvas)
    n = len(scene.labels)
    # scene.boxes are exact: the tight extent of each object's visible pixels within the image.
    visible = np.asarray(scene.visible, dtype=np.float32) / np.maximum(np.asarray(scene.total, np.float32), 1)
    return ShapesSample(canvas, scene.boxes[:n].astype(np.float32), np.asarray(scene.labels, dtype=np.int64),
                        scene.owner, visible)
