"""The canvas of a Shapes image: its textured background and clutter, and the numpy stand-ins that keep
drawing fast (``ssd_lib.data.drawing`` draws the objects on it; the module's speed rule is written there:
every random draw keeps its place in the stream and every float its operations, bit for bit).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only for the annotations: shapes.py imports drawing, which imports this module
    from .shapes import ShapesConfig


# ---------------------------------------------------------------------------------------------
# Cached, read-only arrays and the numpy calls written out
# ---------------------------------------------------------------------------------------------

def _read_only(array: np.ndarray) -> np.ndarray:
    """Mark a cached array read-only, so that no caller can change what later calls get."""
    array.flags.writeable = False
    return array


@lru_cache(maxsize=64)
def _pixel_centres(count: int) -> np.ndarray:
    """(count,) float32 0.5, 1.5, ...: pixel centres along one side of a box, cached per length."""
    return _read_only(np.arange(count, dtype=np.float32) + 0.5)


def _linspace0(stop: float, num: int) -> np.ndarray:
    """``np.linspace(0.0, stop, num)`` for num >= 2, value for value, without its overhead.

    numpy computes ``arange(num) * (stop / (num - 1))`` and then sets the last value to ``stop``.
    """
    steps = np.arange(num, dtype=np.float64)
    steps *= stop / (num - 1)
    steps[-1] = stop
    return steps


def _random_bytes(rng: np.random.Generator, count: int) -> np.ndarray:
    """``np.frombuffer(rng.bytes(count), np.int8)``, draw for draw, without two copies of the bytes.

    ``Generator.bytes`` draws ``(count - 1) // 4 + 1`` uint32 with ``integers`` and returns their
    little-endian bytes (numpy/random/_generator.pyx); this views those bytes instead of copying them.
    """
    words = rng.integers(0, 2 ** 32, size=(count - 1) // 4 + 1, dtype=np.uint32)
    return words.astype("<u4", copy=False).view(np.int8)[:count]


def _mean_rows(values: np.ndarray) -> np.ndarray:
    """``values.mean(1)`` for a (3, N) float32 array with N >= 1: numpy's own two steps, without its wrapper."""
    sums = np.add.reduce(values, axis=1)
    return np.true_divide(sums, np.intp(values.shape[1]), out=sums, casting="unsafe")


# ---------------------------------------------------------------------------------------------
# Background and clutter
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _blob_basis(size: int, k: int) -> np.ndarray:
    """(size, k) smooth Gaussian bumps on a k-point grid; basis @ G @ basis.T is a smooth field."""
    centres = (np.arange(k) + 0.5) / k
    coords = (np.arange(size) + 0.5) / size
    basis = np.exp(-(((coords[:, None] - centres[None, :]) * k) ** 2))
    return _read_only((basis / basis.sum(1, keepdims=True) * 1.5).astype(np.float32))  # * 1.5: averaging damps the grid


@lru_cache(maxsize=16)
def _image_coords(size: int) -> np.ndarray:
    """(size,) float32 pixel centres as fractions of the side, centred on 0: in (-0.5, 0.5)."""
    return _read_only((np.arange(size, dtype=np.float32) + 0.5) / size - 0.5)


@lru_cache(maxsize=128)
def _checkerboard(size: int, cell: int) -> np.ndarray:
    """(size, size) float32 +-1 checkerboard of square cells of side ``cell`` pixels."""
    idx = np.arange(size) // cell
    return _read_only((2 * ((idx[:, None] + idx[None, :]) % 2) - 1).astype(np.float32))


def _background(rng: np.random.Generator, cfg: ShapesConfig, size: int) -> np.ndarray:
    """(3, size, size) float32: base colour + gradient + soft blobs + optional stripes/checker."""
    # Scalars are cast to float: a numpy float64 scalar would promote the float32 arrays to float64.
    base = rng.uniform(*cfg.background_luminance) + rng.uniform(-cfg.background_tint, cfg.background_tint, 3)
    coords = _image_coords(size)
    xs, ys = coords[None, :], coords[:, None]
    gx, gy = (float(g) for g in rng.uniform(-cfg.gradient, cfg.gradient, 2))
    luminance = gx * xs + gy * ys  # (size, size) by broadcasting
    if rng.random() < cfg.pattern_prob:
        contrast = float(rng.uniform(*cfg.pattern_contrast))
        if rng.random() < 0.5:  # stripes at a random angle
            period = float(rng.uniform(6, 32)) / size
            theta = float(rng.uniform(0, math.pi))
            phase = (xs * (2 * math.pi * math.cos(theta) / period) + ys * (2 * math.pi * math.sin(theta) / period))
            phase += float(rng.uniform(0, 2 * math.pi))
            stripes = np.sin(phase, out=phase)
            stripes *= contrast
            luminance += stripes
        else:  # checkerboard
            luminance += np.float32(contrast) * _checkerboard(size, int(rng.integers(8, 41)))
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
    return _read_only(np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2))


def _pen(points: np.ndarray, thickness: int) -> np.ndarray:
    """Integer pixels (N * thickness^2, 2) as x, y covered by a square pen of side thickness at points (N, 2)."""
    pixels = np.rint(points).astype(np.int64)  # rint: what np.round does with no decimals
    if thickness == 1:
        return pixels
    return (pixels[:, None, :] + _pen_offsets(thickness)[None]).reshape(-1, 2)


@lru_cache(maxsize=8)
def _dot_offsets(reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer x, y offsets (M, 2) of the square [-reach, reach]^2, row by row, and their squared lengths (M,)."""
    oy, ox = np.mgrid[-reach:reach + 1, -reach:reach + 1]
    return _read_only(np.stack([ox.ravel(), oy.ravel()], 1)), _read_only((ox * ox + oy * oy).ravel())


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
            delta = end - start
            t = _linspace0(1.0, int(np.abs(delta).max()) + 2)[:, None]
            points = start + t * delta
        elif kind == 1:  # quadratic Bezier curve
            p0 = rng.uniform(0, size, 2)
            p1, p2 = p0 + rng.uniform(-0.3, 0.3, (2, 2)) * size
            length = np.abs(p1 - p0).sum() + np.abs(p2 - p1).sum()  # >= the curve's length: no gaps
            t = _linspace0(1.0, int(length) + 2)[:, None]
            rest = 1 - t
            points = rest ** 2 * p0 + 2 * rest * t * p1 + t ** 2 * p2
        elif kind == 2:  # partial arc: thin and open, unlike the ring class
            centre = rng.uniform(0, size, 2)
            radii = rng.uniform(0.02, 0.25, 2) * size
            start, span = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(math.radians(60), math.radians(200)))
            angle = start + _linspace0(span, int(span * radii.max() * 1.5) + 2)
            points = centre + radii * np.stack([np.cos(angle), np.sin(angle)], 1)
        else:  # a few small dots
            count = int(rng.integers(3, 13))
            dots = rng.uniform(0, size, 2) + rng.normal(0, 0.06 * size, (count, 2))
            radius = float(rng.uniform(0.8, 2.2))
            offsets, length2 = _dot_offsets(math.ceil(radius))
            points = (dots[:, None, :] + offsets[length2 <= radius * radius][None]).reshape(-1, 2)
            thickness = 1
        pixels.append(_pen(points, thickness))
        colours.append(colour)
    if not pixels:
        return
    colour_index = np.repeat(colours, [len(item) for item in pixels])
    xy = np.concatenate(pixels)
    inside = xy.view(np.uint64) < size  # negative coordinates wrap to huge unsigned ones
    keep = inside[:, 0] & inside[:, 1]
    xy = xy[keep]
    canvas[:, xy[:, 1], xy[:, 0]] = palette[colour_index[keep]].T  # later items paint over earlier ones
