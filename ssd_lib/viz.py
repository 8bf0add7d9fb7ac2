"""Pictures: images with boxes, default boxes, detections, and the trainer's log (matplotlib).

It only draws what the other modules compute; the trainer uses it for ``curves.png``.

Usage::

    from ssd_lib import viz
    fig = viz.plot_detections(images, detections, class_names=ds.classes, targets=targets)
    fig.savefig("detections.png")
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .files import atomic_write

__all__ = ["show_image", "draw_boxes", "draw_box_outlines", "draw_cell_grid", "plot_detections", "CLASS_COLORS",
           "to_numpy_image", "read_metrics", "plot_training_log"]

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


# ---------------------------------------------------------------- the trainer's log: loss parts and gradient norm

def read_metrics(path: str | Path, kind: str = "step") -> list[dict]:
    """The records of one kind ('step' or 'epoch') from a trainer's ``metrics.jsonl``, in order.

    A last line cut off by a crash is skipped (the trainer writes one JSON object per line)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} does not exist; pass the metrics.jsonl written by ssd_lib.train.train(out_dir=...)")
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line half-written when the run was killed
        if record.get("type", "step") == kind:
            records.append(record)
    return records


def _values(records: Sequence[dict], key: str) -> list[float]:
    return [float(r[key]) if r.get(key) is not None else float("nan") for r in records]


def plot_training_log(log: str | Path | Sequence[dict], title: str | None = None, grad_clip: float | None = None,
                      axes=None, history: Sequence[dict] | None = None, path: str | Path | None = None):
    """The trainer's log in two panels: the loss and its parts (log scale), and the gradient norm before
    clipping with its maximum over each logging interval (log scale), the lr on a second axis; and a
    third panel, the validation VOC mAP@0.5 per epoch, only when the run was validated.

    ``log``: a ``metrics.jsonl`` path (or its folder), or the step records (``TrainResult.steps``).
    ``history``: the epoch records (``TrainResult.history``; default: the epoch lines of ``log``).
    Steps whose loss or gradient norm is not finite are marked with red crosses at the top.
    ``grad_clip`` draws the clipping threshold. ``axes``: 2 axes to draw on (a 3rd gets the validation panel).
    ``path``: draw on a bare :class:`matplotlib.figure.Figure` (not pyplot) and save it there as a PNG,
    atomically; saving a bare figure needs no backend, so the trainer writes ``curves.png`` from
    inside a notebook without switching the notebook's backend. Returns the figure.
    """
    if isinstance(log, (str, Path)):
        records, epochs = read_metrics(log), read_metrics(log, "epoch")
    else:
        records = [r for r in log if r.get("type", "step") == "step"]
        epochs = [r for r in log if r.get("type") == "epoch"]
    evals = [h for h in (epochs if history is None else history) if h.get("val_mAP") is not None]
    panels = 3 if evals else 2
    if axes is None:
        if path is not None:
            from matplotlib.figure import Figure

            fig = Figure(figsize=(6.5 * panels, 4.2))
            axes = fig.subplots(1, panels)
        else:
            import matplotlib.pyplot as plt

            fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2))
    else:
        fig = axes[0].figure
    _plot_steps(axes[:2], records, grad_clip)
    if evals and len(axes) > 2:
        axes[2].plot([h["epoch"] for h in evals], [h["val_mAP"] for h in evals], marker="o", color="tab:green")
        axes[2].set(title="Validation VOC mAP@0.5", xlabel="epoch", ylabel="mAP", ylim=(0, 1))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return fig


def _plot_steps(axes, records: Sequence[dict], grad_clip: float | None) -> None:
    """The two per-step panels of :func:`plot_training_log` on ``axes`` (two of them)."""
    x = [r["step"] for r in records]
    for key, color in (("loss", "black"), ("loc", "tab:blue"), ("conf", "tab:orange")):
        values = _values(records, key)
        axes[0].plot(x, [v if math.isfinite(v) else float("nan") for v in values], color=color, label=key)
    norms = _values(records, "grad_norm")
    maxima = _values(records, "grad_norm_max")
    axes[1].plot(x, [v if math.isfinite(v) else float("nan") for v in norms], color="tab:purple",
                 label="gradient norm (logged step)")
    if any(math.isfinite(m) and not (math.isfinite(n) and m <= n) for n, m in zip(norms, maxima)):  # log_every > 1
        axes[1].plot(x, [v if math.isfinite(v) else float("nan") for v in maxima], color="tab:purple", alpha=0.4,
                     linestyle=":", label="max since the previous log line")
    if grad_clip:
        axes[1].axhline(grad_clip, color="tab:red", linestyle="--", label=f"clipping at {grad_clip:g}")
    bad = [s for s, r in zip(x, records)
           if any(r.get(key) is not None and not math.isfinite(float(r[key])) for key in ("loss", "grad_norm"))]
    for ax in axes:
        if bad:
            ax.scatter(bad, [1.0] * len(bad), transform=ax.get_xaxis_transform(), marker="x", color="red",
                       label="non-finite", clip_on=False)
        plotted = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()] or [np.zeros(0)])
        if (plotted[np.isfinite(plotted)] > 0).any():
            ax.set_yscale("log")
        ax.set_xlabel("step")
    axes[0].set(ylabel="loss per positive", title="Loss and its parts (Eq. 1)")
    axes[1].set(ylabel="total gradient norm (before clipping)", title="Gradient norm")
    lrs = _values(records, "lr")
    if any(math.isfinite(v) for v in lrs):
        lr_ax = axes[1].twinx()
        lr_ax.plot(x, lrs, color="tab:green", alpha=0.6, label="learning rate")
        lr_ax.set_ylabel("learning rate", color="tab:green")
        lr_ax.legend(loc="lower right", fontsize=8)
    for ax in axes:
        ax.legend(loc="upper right", fontsize=8)
