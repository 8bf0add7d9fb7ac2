"""Pictures for the course: images with boxes, default boxes, detections (matplotlib).

Sits on top of the library: it only draws what the other modules compute.

Usage::

    from ssd_lib import viz
    fig = viz.plot_detections(images, detections, class_names=ds.classes, targets=targets)
    fig.savefig("detections.png")
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from .files import atomic_write

__all__ = ["show_image", "draw_boxes", "draw_box_outlines", "draw_cell_grid", "plot_detections", "CLASS_COLORS",
           "to_numpy_image"]

CLASS_COLORS = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#17becf",
                "#bcbd22", "#7f7f7f"]


def to_numpy_image(image: Tensor):
    """(3, H, W) float in [0, 1] -> (H, W, 3) numpy for imshow."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must have shape (3, H, W); got {tuple(image.shape)}")
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def show_image(ax, image: Tensor, title: str | None = None) -> None:
    ax.imshow(to_numpy_image(image))
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    if title:
        ax.set_title(title)


def draw_boxes(ax, boxes: Tensor, labels: Tensor | None = None, scores: Tensor | None = None,
               class_names: Sequence[str] | None = None, color: str | None = None, linestyle: str = "-",
               linewidth: float = 1.5, fontsize: int = 7) -> list:
    """Draw ``boxes (N, 4)`` pixel xyxy on ``ax``; colour by label unless ``color`` is given.
    Returns the artists (so widgets can remove them)."""
    from matplotlib.patches import Rectangle

    artists = []
    boxes = torch.as_tensor(boxes).detach().cpu().reshape(-1, 4)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        lab = int(labels[i]) if labels is not None else None
        c = color or CLASS_COLORS[(lab or 0) % len(CLASS_COLORS)]
        rect = Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=c, linewidth=linewidth, linestyle=linestyle)
        artists.append(ax.add_patch(rect))
        text = []
        if lab is not None:
            text.append(class_names[lab - 1] if class_names and 1 <= lab <= len(class_names) else str(lab))
        if scores is not None:
            text.append(f"{float(scores[i]):.2f}")
        if text:
            artists.append(ax.text(x1, y1, " ".join(text), color="white", fontsize=fontsize, va="bottom",
                                   bbox=dict(facecolor=c, alpha=0.7, pad=1, edgecolor="none")))
    return artists


def draw_box_outlines(ax, boxes: Tensor, colors="#e41a1c", linewidth: float = 1.0, alpha: float = 1.0,
                      linestyle: str = "-", label: str | None = None):
    """Draw many ``boxes (N, 4)`` pixel xyxy as one unfilled PolyCollection (fast for thousands of
    default boxes or candidates). ``colors``: one colour or N colours. Returns the collection."""
    from matplotlib.collections import PolyCollection

    boxes = torch.as_tensor(boxes).detach().cpu().reshape(-1, 4).double()
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = torch.stack([torch.stack(c, dim=-1) for c in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))], dim=1)
    collection = PolyCollection(corners.numpy(), facecolors="none", edgecolors=colors, linewidths=linewidth,
                                alpha=alpha, linestyles=linestyle, label=label)
    return ax.add_collection(collection, autolim=False)


def draw_cell_grid(ax, feature_map: int, step: float, color: str = "0.35", linewidth: float = 0.6,
                   alpha: float = 0.6):
    """The ``feature_map x feature_map`` cells of a source map as grid lines ``step`` pixels apart
    (cell (i, j) spans x in [j step, (j + 1) step], y in [i step, (i + 1) step]). Returns the collection."""
    from matplotlib.collections import LineCollection

    end = feature_map * step
    ticks = [i * step for i in range(feature_map + 1)]
    lines = [[(t, 0), (t, end)] for t in ticks] + [[(0, t), (end, t)] for t in ticks]
    return ax.add_collection(LineCollection(lines, colors=color, linewidths=linewidth, alpha=alpha), autolim=False)


def plot_detections(images: Sequence[Tensor], detections: Sequence[dict], class_names: Sequence[str] | None = None,
                    targets: Sequence[dict] | None = None, score_threshold: float = 0.3, ncols: int = 4,
                    title: str | None = None, path: str | Path | None = None):
    """A grid of images with detections (solid, with scores) and ground truth (dashed white).
    Saved atomically to ``path`` when given. Returns the figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for i, (ax, img, det) in enumerate(zip(axes.flat, images, detections)):
        show_image(ax, img)
        if targets is not None:
            draw_boxes(ax, targets[i]["boxes"], color="white", linestyle="--", linewidth=1.0)
        keep = det["scores"] >= score_threshold
        draw_boxes(ax, det["boxes"][keep], det["labels"][keep], det["scores"][keep], class_names)
        ax.set_title(f"image {i}: {int(keep.sum())} detections (score >= {score_threshold})", fontsize=8)
        ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png"))
    return fig
