"""Interactive explorers for the notebooks: default boxes, matching, augmentation, detection.

Each explorer owns ONE matplotlib figure and a few named ipywidgets controls. Moving a control
calls ``explorer.update(name=value)``, a plain method that redraws the figure in place and
returns a small summary dict of what is drawn; the tests call it directly. The figure is a bare
``matplotlib.figure.Figure`` (Agg canvas, not registered with pyplot), so it is never shown twice
by ``%matplotlib inline`` and ``plt.close("all")`` does not touch it; inside a Jupyter kernel it
is rendered to PNG into one persistent ``ipywidgets.Image`` (``explorer.view``) after every
change, which needs no ipympl. No ``ipywidgets.Output``: headless runners (nbclient, so the tests
and the HTML build) intermittently wait a whole cell timeout on output captured into an Output
widget (jupyter/nbclient#312), and an Image's last PNG is stored with the widget state, so a
static HTML page shows it. ``PlotExplorer`` turns any plain ``draw(ax, **values)`` function into
such an explorer (instead of ``ipywidgets.interact``, which uses an Output).

Usage::

    from ssd_lib.course.widgets import DefaultBoxExplorer
    explorer = DefaultBoxExplorer()              # SSD300's 8732 default boxes
    explorer.display()                           # controls + figure (nothing in grading mode)
    explorer.update(map_index=2, row=4, col=7)   # -> {"boxes_per_cell": 6, "num_boxes": 6, ...}
"""
from __future__ import annotations

import io
import math
import operator
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Optional

import ipywidgets as widgets
import torch
from IPython.display import display as _ipython_display
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba_array
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from ssd_lib.augment import Normalize, Resize, SSDAugmentation, SSDTransform, Step, denormalize, validate_sample
from ssd_lib.boxes import box_iou, cxcywh_to_xyxy
from ssd_lib.detect import detect, scale_detections
from ssd_lib.matching import match_ious
from ssd_lib.priors import PriorConfig, default_boxes
from ssd_lib.course.modes import grading_mode
from ssd_lib.viz import CLASS_COLORS, draw_box_outlines, draw_boxes, draw_cell_grid, to_numpy_image

__all__ = ["DefaultBoxExplorer", "MatchingExplorer", "AugmentationExplorer", "DetectionExplorer", "PlotExplorer"]

# Distinct colours for "one thing each" (the boxes of a cell, the objects of an image).
PALETTE = ["#e41a1c", "#ff7f00", "#377eb8", "#4daf4a", "#984ea3", "#a65628", "#f781bf", "#17becf",
           "#bcbd22", "#7f7f7f"]
_CLASS_RGBA = to_rgba_array(CLASS_COLORS)


# ----------------------------------------------------------------------------- shared machinery


def _in_kernel() -> bool:
    """True inside a Jupyter kernel, where there is a frontend to show the figure to."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)  # ints, numpy and 0-d torch integers; not floats
    except TypeError:
        raise TypeError(f"{name} must be an int in [{low}, {high}], got {value!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _check_float(name: str, value: Any, low: float, high: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [{low}, {high}], got {value!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _unit_image(image: Tensor, name: str = "image") -> Tensor:
    """``image (3, H, W)`` as float in [0, 1] on the CPU; an ImageNet-normalised image is undone."""
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{name} must be a tensor of shape (3, H, W) with values in [0, 1]; got {shape}")
    image = image.detach().float().cpu()
    if image.numel() and (image.min() < -0.01 or image.max() > 1.01):
        image = denormalize(image)  # a dataset whose transforms normalise (ssd_lib.augment.Normalize)
    return image.clamp(0, 1)


class _Cache(OrderedDict):
    """A small least-recently-used cache: ``cache.get_or(key, compute)``."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def get_or(self, key, compute: Callable[[], Any]):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = compute()
        if len(self) > self.maxsize:
            self.popitem(last=False)
        return value


def _load_item(dataset, index: int) -> tuple[Tensor, dict]:
    """``dataset[index]`` as an image in [0, 1] and a target with float boxes and int64 labels."""
    image, target = dataset[index]
    image = _unit_image(image, f"dataset[{index}] image")
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(target.get("labels", torch.ones(len(boxes))), dtype=torch.long).reshape(-1)
    return image, {"boxes": boxes, "labels": labels}


class _Explorer:
    """One persistent figure, named controls, one persistent Image widget showing the figure (``view``);
    subclasses fill in ``_resolve`` (validate values, return the full state) and ``_draw`` (redraw,
    return summary)."""

    figsize = (11.0, 5.2)

    def __init__(self, controls: dict[str, widgets.ValueWidget], width_ratios=(1.4, 1.0)) -> None:
        self.figure = Figure(figsize=self.figsize, dpi=100, layout="constrained")
        FigureCanvasAgg(self.figure)  # an Agg canvas of its own: pyplot never sees this figure
        self.axes = list(self.figure.subplots(1, len(width_ratios), width_ratios=list(width_ratios), squeeze=False)[0])
        self.controls = controls
        # The PNG is replaced in place on every update: no new output, no Output widget (see the module doc).
        self.view = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))
        self._control_box = widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
        self.widget = widgets.VBox([self._control_box, self.view])
        self.summary: dict = {}
        self._state: dict = {}
        self._syncing = False
        self._closed = False
        for name, control in controls.items():
            control.observe(partial(self._on_control, name), names="value")

    # -- the public API
    def update(self, **values) -> dict:
        """Set any controls by name, redraw the figure in place, return the summary of what is drawn."""
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} was closed; create a new one")
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise TypeError(f"{type(self).__name__}.update() got unknown control(s) {unknown}; "
                            f"the controls are {list(self.controls)}")
        self._state = self._resolve({**self._state, **values}, values)
        self._sync_controls()
        self.summary = self._draw(self._state)
        self._show()
        return dict(self.summary)

    def display(self) -> None:
        """Show the controls and the figure (in a notebook); does nothing in grading mode."""
        if grading_mode():
            return None
        _ipython_display(self.widget)
        return None

    def _ipython_display_(self) -> None:  # `explorer` as the last line of a cell
        self.display()

    def close(self) -> None:
        """Close the controls, the image, their layouts and styles, and the figure; the explorer cannot
        be used afterwards (the kernel then holds none of its widgets)."""
        if self._closed:
            return
        self._closed = True
        for widget in [*self.controls.values(), self.view, self._control_box, self.widget]:
            for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
                if isinstance(part, widgets.Widget):
                    part.close()
            widget.close()
        self.figure.clear()

    def render_png(self) -> bytes:
        """The figure as PNG bytes (what the notebook shows)."""
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=self.figure.dpi)
        return buffer.getvalue()

    # -- machinery
    def _on_control(self, name: str, change: dict) -> None:
        if not self._syncing and not self._closed:
            self.update(**{name: change["new"]})

    def _control_attributes(self, state: dict) -> dict[str, dict]:
        """Per-control attributes that depend on the state (e.g. a slider's max); set before values."""
        return {}

    def _sync_controls(self) -> None:
        self._syncing = True
        try:
            for name, attributes in self._control_attributes(self._state).items():
                for attribute, value in attributes.items():
                    setattr(self.controls[name], attribute, value)
            for name, control in self.controls.items():
                if control.value != self._state[name]:
                    control.value = self._state[name]
        finally:
            self._syncing = False

    def _show(self) -> None:
        """Put the figure's new PNG into the one Image widget (only in a kernel: rendering costs time)."""
        if _in_kernel():
            self.view.value = self.render_png()

    def _clear_axes(self) -> None:
        """Remove what the last update drew (faster than ``ax.clear()``, which rebuilds the axis ticks)."""
        for ax in self.axes:
            for artist in [*ax.images, *ax.patches, *ax.collections, *ax.lines, *ax.texts, *ax.artists]:
                artist.remove()
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            ax.relim()

    def _resolve(self, state: dict, given: dict) -> dict:
        raise NotImplementedError

    def _draw(self, state: dict) -> dict:
        raise NotImplementedError


def _slider(cls, description: str, value, low, high, step=1, width: str = "300px", **kwargs):
    return cls(value=value, min=low, max=high, step=step, description=description, continuous_update=False,
               style={"description_width": "initial"}, layout=widgets.Layout(width=width), **kwargs)


def _image_axes(ax, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")


# ----------------------------------------------------------------------------- default boxes


def _ratio_key(ratio: float) -> str:
    return "ratio_" + f"{ratio:g}".replace(".", "_")


def _shape_names(cfg: PriorConfig, k: int) -> list[tuple[str, Optional[float]]]:
    """The A boxes of a cell on map k in ``default_boxes`` order: (legend name, ratio or None)."""
    names = [("s_k square", None), ("s'_k square", None)]
    for r in cfg.aspect_ratios[k]:
        names += [(f"ratio {r:g}", r), (f"ratio 1/{r:g}", r)]
    return names


class DefaultBoxExplorer(_Explorer):
    """The default boxes of one cell of one source feature map (paper Sec. 2.2, Fig. 1).

    Controls: ``map_index``, ``row``, ``col`` (the cell), ``s_k``, ``s_prime_k`` and one
    ``ratio_<r>`` checkbox per aspect ratio of the config (each shows the pair r and 1/r).
    Left: the image (or a blank canvas) at the input size, the map's grid of cells, the chosen cell
    highlighted and its boxes in distinct colours. Right: how many default boxes each map holds.
    ``image``: optional ``(3, H, W)`` in [0, 1], resized to ``config.image_size`` for display.
    """

    def __init__(self, config: PriorConfig = PriorConfig.ssd300(), image: Optional[Tensor] = None) -> None:
        if not isinstance(config, PriorConfig):
            raise TypeError(f"config must be a PriorConfig (e.g. PriorConfig.ssd300()), got {type(config).__name__}")
        self.config = config
        size = config.image_size
        if image is None:
            self._canvas = torch.full((size, size, 3), 0.97).numpy()
            self._image_name = "blank canvas"
        else:
            resized, _ = Resize(size)(_unit_image(image), {"boxes": torch.zeros(0, 4)})
            self._canvas = to_numpy_image(resized)
            self._image_name = "image"
        self.priors = default_boxes(config, dtype=torch.float64)  # (P, 4) cx, cy, w, h in [0, 1]
        counts = [f * f * k for f, k in zip(config.feature_maps, config.boxes_per_location)]
        self._map_start = [sum(counts[:k]) for k in range(len(counts))]
        self._ratios = sorted({r for ratios in config.aspect_ratios for r in ratios})
        k0 = 0
        f0 = config.feature_maps[k0]
        controls = {
            "map_index": widgets.Dropdown(
                options=[(f"map {k}: {f}x{f}", k) for k, f in enumerate(config.feature_maps)], value=k0,
                description="feature map", style={"description_width": "initial"},
                layout=widgets.Layout(width="220px")),
            "row": _slider(widgets.IntSlider, "cell row i", f0 // 2, 0, f0 - 1, width="260px"),
            "col": _slider(widgets.IntSlider, "cell column j", f0 // 2, 0, f0 - 1, width="260px"),
            "s_k": widgets.Checkbox(value=True, description="s_k square", indent=False,
                                    layout=widgets.Layout(width="110px")),
            "s_prime_k": widgets.Checkbox(value=True, description="s'_k square", indent=False,
                                          layout=widgets.Layout(width="110px")),
        }
        for r in self._ratios:
            controls[_ratio_key(r)] = widgets.Checkbox(value=True, description=f"ratios {r:g} and 1/{r:g}",
                                                       indent=False, layout=widgets.Layout(width="150px"))
        super().__init__(controls, width_ratios=(1.35, 1.0))
        self.update(**{name: control.value for name, control in controls.items()})

    def _resolve(self, state: dict, given: dict) -> dict:
        cfg = self.config
        k = _check_int("map_index", state["map_index"], 0, len(cfg.feature_maps) - 1)
        f = cfg.feature_maps[k]
        old_f = cfg.feature_maps[self._state["map_index"]] if self._state else f
        out = {"map_index": k}
        for name in ("row", "col"):
            if name in given:
                out[name] = _check_int(name, given[name], 0, f - 1)
            else:  # keep the cell over the same part of the image when the map changes
                out[name] = min(int((state[name] + 0.5) * f / old_f), f - 1)
        for name in self.controls:
            if name not in out:
                out[name] = _check_bool(name, state[name])
        return out

    def _control_attributes(self, state: dict) -> dict[str, dict]:
        k = state["map_index"]
        f = self.config.feature_maps[k]
        on_map = set(self.config.aspect_ratios[k])
        attributes = {"row": {"max": f - 1}, "col": {"max": f - 1}}
        for r in self._ratios:
            attributes[_ratio_key(r)] = {"disabled": r not in on_map}
        return attributes

    def _draw(self, state: dict) -> dict:
        cfg = self.config
        k, row, col = state["map_index"], state["row"], state["col"]
        f, step, size = cfg.feature_maps[k], cfg.steps[k], cfg.image_size
        per_cell = cfg.boxes_per_location[k]
        start = self._map_start[k] + (row * f + col) * per_cell  # default_boxes order: map, row, col, box
        cell_boxes = cxcywh_to_xyxy(self.priors[start:start + per_cell]) * size  # (A, 4) pixel xyxy
        names = _shape_names(cfg, k)
        shown = [state["s_k"], state["s_prime_k"]] + [state[_ratio_key(r)] for _, r in names[2:]]

        self._clear_axes()
        ax, bars = self.axes
        ax.imshow(self._canvas, extent=(0, size, size, 0), interpolation="nearest")
        draw_cell_grid(ax, f, step)
        ax.add_patch(Rectangle((col * step, row * step), step, step, facecolor="gold", alpha=0.55 if f > 3 else 0.25,
                               edgecolor="darkgoldenrod", linewidth=1.5, label=f"cell ({row}, {col})"))
        cx, cy = (col + 0.5) * step, (row + 0.5) * step
        ax.plot([cx], [cy], marker="+", color="black", markersize=9, linestyle="none")
        ax.add_patch(Rectangle((0, 0), size, size, fill=False, edgecolor="black", linewidth=1.0))
        xs, ys = [0.0, float(size)], [0.0, float(size)]
        for j, ((name, _), show, (x1, y1, x2, y2)) in enumerate(zip(names, shown, cell_boxes.tolist())):
            if not show:
                continue
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=PALETTE[j % len(PALETTE)],
                                   linewidth=2.2, label=f"{name}: {x2 - x1:.0f} x {y2 - y1:.0f} px"))
            xs += [x1, x2]
            ys += [y1, y2]
        margin = 0.03 * size
        ax.set_xlim(min(xs) - margin, max(xs) + margin)
        ax.set_ylim(max(ys) + margin, min(ys) - margin)  # y grows downwards, as in images
        ax.set_aspect("equal")
        num_shown = sum(shown)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, framealpha=0.9,
                  title=f"{num_shown} of {per_cell} boxes shown", title_fontsize=8)
        outside = min(xs) < 0 or min(ys) < 0 or max(xs) > size or max(ys) > size
        _image_axes(ax, f"map {k}: {f} x {f} cells, step {step:g} px; cell (row {row}, col {col}) "
                        f"centred at ({cx:.0f}, {cy:.0f})\n{self._image_name} {size} x {size} px (black frame)"
                        + ("; boxes stick out of the image" if outside else ""))

        counts = [fk * fk * a for fk, a in zip(cfg.feature_maps, cfg.boxes_per_location)]
        positions = range(len(counts))
        bars.bar(positions, counts, color=["#d62728" if i == k else "#9ecae1" for i in positions])
        for i, c in enumerate(counts):
            bars.text(i, c * 1.1, f"{c}", ha="center", va="bottom", fontsize=8)
        bars.set_yscale("log")
        bars.set_ylim(0.5, max(counts) * 6)
        bars.set_xticks(list(positions), [f"{fk}x{fk}\nk={a}\ns={m / size:.2f}" for fk, a, m in
                                          zip(cfg.feature_maps, cfg.boxes_per_location, cfg.min_sizes)], fontsize=8)
        bars.set_xlabel("source feature map (f x f cells, k boxes/cell, scale s_k)")
        bars.set_ylabel("default boxes on the map (log scale)")
        bars.set_title(f"where the P = {cfg.num_priors} default boxes live", fontsize=10)

        on_map = counts[k]
        self.figure.suptitle(f"{per_cell} boxes/cell, {f} x {f} cells, {on_map} boxes on this map, "
                             f"{cfg.num_priors} total  (this cell = default boxes {start}..{start + per_cell - 1})",
                             fontsize=11)
        return {"map_index": k, "row": row, "col": col, "feature_map": f, "boxes_per_cell": per_cell,
                "num_boxes": num_shown, "boxes_on_map": on_map, "total_boxes": cfg.num_priors,
                "first_box": start}


# ----------------------------------------------------------------------------- matching


class MatchingExplorer(_Explorer):
    """Which default boxes become positives for each object (paper Sec. 2.2, "Matching strategy").

    Controls: ``index`` (image of ``dataset``) and ``iou_threshold``. Images are resized to
    ``config.image_size``. Left: each ground-truth object (thick) and its matched default boxes
    (thin) in the same colour; dashed = only the forced match (best IoU not above the threshold).
    Right: positives per object, smallest object first. ``update`` returns
    ``{"positives": int, "per_object": list[int], ...}`` (per_object in the dataset's object order).
    """

    def __init__(self, dataset, config: PriorConfig = PriorConfig.ssd300(), index: int = 0,
                 iou_threshold: float = 0.5) -> None:
        if not isinstance(config, PriorConfig):
            raise TypeError(f"config must be a PriorConfig, got {type(config).__name__}")
        if len(dataset) == 0:
            raise ValueError("dataset is empty: MatchingExplorer needs at least one image")
        self.dataset, self.config = dataset, config
        self.class_names = list(getattr(dataset, "classes", []))
        self.priors = default_boxes(config)
        self._priors_xyxy = cxcywh_to_xyxy(self.priors)
        counts = [f * f * k for f, k in zip(config.feature_maps, config.boxes_per_location)]
        self._map_of_prior = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        self._items = _Cache(32)
        controls = {
            "index": _slider(widgets.IntSlider, "image index", index, 0, len(dataset) - 1),
            "iou_threshold": _slider(widgets.FloatSlider, "IoU threshold", iou_threshold, 0.05, 0.95, 0.05,
                                     readout_format=".2f"),
        }
        super().__init__(controls, width_ratios=(1.25, 1.0))
        self.update(index=index, iou_threshold=iou_threshold)

    def _resolve(self, state: dict, given: dict) -> dict:
        return {"index": _check_int("index", state["index"], 0, len(self.dataset) - 1),
                "iou_threshold": _check_float("iou_threshold", state["iou_threshold"], 0.0, 1.0)}

    def _item(self, index: int) -> tuple[Tensor, dict]:
        def load():
            image, target = _load_item(self.dataset, index)
            return Resize(self.config.image_size)(image, target)  # what the network sees
        return self._items.get_or(index, load)

    def _draw(self, state: dict) -> dict:
        index, threshold = state["index"], state["iou_threshold"]
        size = self.config.image_size
        image, target = self._item(index)
        gt_px, labels = target["boxes"], target["labels"]
        num_objects = len(gt_px)
        if num_objects:
            iou = box_iou(gt_px / size, self._priors_xyxy)  # (G, P)
            matched_idx, positive = match_ious(iou[None], torch.ones(1, num_objects, dtype=torch.bool), threshold)
            matched_idx, positive = matched_idx[0], positive[0]
            per_object = torch.bincount(matched_idx[positive], minlength=num_objects).tolist()
            forced_only = (iou.max(dim=1).values <= threshold).tolist()  # only step 1 gave it a box
        else:
            matched_idx = torch.zeros(len(self.priors), dtype=torch.long)
            positive = torch.zeros(len(self.priors), dtype=torch.bool)
            per_object, forced_only = [], []
        positives = int(positive.sum())
        per_map = torch.bincount(self._map_of_prior[positive], minlength=len(self.config.feature_maps)).tolist()

        self._clear_axes()
        ax, bars = self.axes
        ax.imshow(to_numpy_image(image), extent=(0, size, size, 0))
        for g in range(num_objects):
            color = PALETTE[g % len(PALETTE)]
            mine = positive & (matched_idx == g)
            draw_box_outlines(ax, self._priors_xyxy[mine] * size, colors=color, linewidth=1.0, alpha=0.9,
                              linestyle="--" if forced_only[g] else "-")
            x1, y1, x2, y2 = gt_px[g].tolist()
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=3.0))
            ax.text(x1, y1, f"#{g} {self._class_name(labels[g])}: {per_object[g]}", color="white", fontsize=7,
                    va="bottom", bbox=dict(facecolor=color, alpha=0.8, pad=1, edgecolor="none"))
        ax.set_xlim(0, size)
        ax.set_ylim(size, 0)
        handles = [Line2D([], [], color="black", linewidth=3.0, label="object (ground truth)"),
                   Line2D([], [], color="black", linewidth=1.0, label="its matched default boxes"),
                   Line2D([], [], color="black", linewidth=1.0, linestyle="--", label="forced match only")]
        ax.legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.8)
        _image_axes(ax, f"image {index}: {num_objects} objects, {positives} positives of {len(self.priors)} "
                        f"default boxes\n(IoU > {threshold:.2f}, plus each object's best box)")

        sides = [math.sqrt(max(float((b[2] - b[0]) * (b[3] - b[1])), 0.0)) for b in gt_px]
        order = sorted(range(num_objects), key=lambda g: sides[g])
        bars.bar(range(num_objects), [per_object[g] for g in order],
                 color=[PALETTE[g % len(PALETTE)] for g in order])
        for x, g in enumerate(order):
            note = f"{per_object[g]}" + (" (forced)" if forced_only[g] else "")
            bars.text(x, per_object[g], note, ha="center", va="bottom", fontsize=8)
        bars.set_xticks(range(num_objects), [f"#{g} {self._class_name(labels[g])}\n{sides[g]:.0f} px" for g in order],
                        fontsize=8)
        bars.set_xlim(-0.6, max(num_objects, 1) - 0.4)
        bars.set_ylim(0, max(per_object + [1]) * 1.2 + 0.5)
        bars.yaxis.set_major_locator(MaxNLocator(integer=True))
        bars.set_xlabel("object (sorted by size sqrt(w h) in pixels)")
        bars.set_ylabel("positives (matched default boxes)")
        by_map = ", ".join(f"{f}x{f}: {n}" for f, n in zip(self.config.feature_maps, per_map))
        bars.set_title(f"positives per object: small objects get few\nby map: {by_map}", fontsize=9)
        self.figure.suptitle(f"Matching at IoU > {threshold:.2f}: {positives} positives "
                             f"({', '.join(str(n) for n in per_object) or 'no objects'} per object)", fontsize=11)
        return {"index": index, "iou_threshold": threshold, "positives": positives, "per_object": per_object,
                "forced_only": sum(forced_only), "per_map": per_map}

    def _class_name(self, label) -> str:
        label = int(label)
        return self.class_names[label - 1] if 1 <= label <= len(self.class_names) else str(label)


# ----------------------------------------------------------------------------- augmentation


def _step_name(step) -> str:
    return type(step).__name__


def _describe(step, params: Optional[dict], before: tuple[Tensor, dict], after: tuple[Tensor, dict]) -> str:
    """One line on what a step did to this sample (its drawn parameters, or its effect)."""
    (image_in, target_in), (image_out, target_out) = before, after
    name = _step_name(step)
    if name == "PhotometricDistort" and params is not None:
        parts = []
        if params["brightness_delta"] is not None:
            parts.append(f"brightness {params['brightness_delta']:+.2f}")
        if params["contrast_factor"] is not None:
            parts.append(f"contrast x{params['contrast_factor']:.2f}")
        if params["saturation_factor"] is not None:
            parts.append(f"saturation x{params['saturation_factor']:.2f}")
        if params["hue_factor"] is not None:
            parts.append(f"hue {params['hue_factor'] * 360:+.0f} deg")
        if params["channel_permutation"] is not None:
            parts.append(f"channels {params['channel_permutation'].tolist()}")
        return "colours: " + (", ".join(parts) if parts else "no change drawn this time")
    if name == "ZoomOut" and params is not None:
        if params["padding"] is None:
            return "zoom out: not applied this time (probability p)"
        ratio = image_out.shape[-1] / image_in.shape[-1]
        return f"zoom out: pasted on a {ratio:.2f}x canvas (objects look smaller)"
    if name == "MinIoURandomCrop" and params is not None:
        if not params:
            return "patch sampler: whole image kept"
        kept, total = len(target_out["boxes"]), len(target_in["boxes"])
        return (f"patch sampler: {params['width']}x{params['height']} patch at ({params['left']}, {params['top']}), "
                f"{kept} of {total} boxes kept (centre inside)")
    if name == "RandomHorizontalFlip" and params is not None:
        return "mirrored left-right" if params["flip"] else "not flipped this time"
    if name == "Resize":
        return f"resized {image_in.shape[-1]}x{image_in.shape[-2]} -> {image_out.shape[-1]}x{image_out.shape[-2]}"
    if name == "SanitizeBoxes":
        dropped = len(target_in["boxes"]) - len(target_out["boxes"])
        return f"dropped {dropped} box(es) under {step.min_size:g} px"
    if name == "Normalize":
        return "normalised with the ImageNet mean/std (shown denormalised)"
    return ""


class AugmentationExplorer(_Explorer):
    """The SSD training augmentation one step at a time (paper Sec. 2.2 "Data augmentation").

    Controls: ``index`` (image), ``seed`` (the torch.Generator seed) and ``step`` (0 = original,
    n = after the first n steps of ``augmentation.steps``). Running the first n steps with one
    generator gives exactly the intermediate result of the whole pipeline for that seed. Left: the
    original; right: after step n (denormalised for display), with its boxes and what the step drew.
    ``dataset`` should have no transforms of its own.
    """

    figsize = (11.0, 5.4)

    def __init__(self, dataset, augmentation=None, index: int = 0, seed: int = 0, step: Optional[int] = None) -> None:
        if len(dataset) == 0:
            raise ValueError("dataset is empty: AugmentationExplorer needs at least one image")
        self.dataset = dataset
        self.augmentation = SSDAugmentation(size=300) if augmentation is None else augmentation
        if not hasattr(self.augmentation, "steps"):
            raise TypeError("augmentation must have a .steps list (e.g. ssd_lib.augment.SSDAugmentation)")
        self.steps = list(self.augmentation.steps)
        self.class_names = list(getattr(dataset, "classes", []))
        self._items = _Cache(32)
        step = len(self.steps) if step is None else step
        controls = {
            "index": _slider(widgets.IntSlider, "image index", index, 0, len(dataset) - 1),
            "seed": _slider(widgets.IntSlider, "seed", seed, 0, 99),
            "step": _slider(widgets.IntSlider, "steps applied", step, 0, len(self.steps)),
        }
        super().__init__(controls, width_ratios=(1.0, 1.0))
        self.update(index=index, seed=seed, step=step)

    def _resolve(self, state: dict, given: dict) -> dict:
        return {"index": _check_int("index", state["index"], 0, len(self.dataset) - 1),
                "seed": _check_int("seed", state["seed"], 0, 2**31 - 1),
                "step": _check_int("step", state["step"], 0, len(self.steps))}

    def _item(self, index: int) -> tuple[Tensor, dict]:
        return self._items.get_or(index, lambda: _load_item(self.dataset, index))

    def run(self, index: int, seed: int, num_steps: int) -> tuple[Tensor, dict, str]:
        """The sample after the first ``num_steps`` steps with ``torch.Generator().manual_seed(seed)``
        (the steps draw from it in order, as ``Compose`` does). Returns (image, target, description)."""
        image, target = self._item(index)
        validate_sample(image, target, unit_range=getattr(self.augmentation, "unit_range", False))
        generator = torch.Generator().manual_seed(seed)
        description = "original"
        for step in self.steps[:num_steps]:
            before, params = (image, target), None
            if isinstance(step, Step) and type(step).forward is Step.forward:  # random step: keep its draw
                params = step.make_params(image, target, generator)
                image, target = step.apply(image, target, params)
            elif isinstance(step, Step):
                image, target = step.forward(image, target, generator)
            else:
                image, target = step(image, target, generator)
            description = _describe(step, params, before, (image, target))
        return image, target, description

    def _display_image(self, image: Tensor, num_steps: int) -> Tensor:
        normalizers = [s for s in self.steps[:num_steps] if isinstance(s, Normalize)]
        if normalizers:
            return denormalize(image.clone(), normalizers[-1].mean, normalizers[-1].std)
        return image.clamp(0, 1)

    def _draw(self, state: dict) -> dict:
        index, seed, num_steps = state["index"], state["seed"], state["step"]
        original, original_target = self._item(index)
        image, target, description = self.run(index, seed, num_steps)
        name = "original" if num_steps == 0 else _step_name(self.steps[num_steps - 1])
        height, width = image.shape[-2:]

        self._clear_axes()
        left, right = self.axes
        left.imshow(to_numpy_image(original))
        draw_boxes(left, original_target["boxes"], original_target["labels"], class_names=self.class_names)
        _image_axes(left, f"original: {original.shape[-1]} x {original.shape[-2]} px, "
                          f"{len(original_target['boxes'])} objects")
        right.imshow(to_numpy_image(self._display_image(image, num_steps)))
        draw_boxes(right, target["boxes"], target["labels"], class_names=self.class_names)
        _image_axes(right, f"after step {num_steps} of {len(self.steps)}: {name}\n{description}\n"
                           f"{width} x {height} px, {len(target['boxes'])} boxes")
        for ax, (h, w) in ((left, original.shape[-2:]), (right, (height, width))):
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
        names = [_step_name(s) for s in self.steps]
        if num_steps:
            names[num_steps - 1] = f"[{names[num_steps - 1]}]"
        self.figure.suptitle(f"image {index}, seed {seed}:  " + " -> ".join(names), fontsize=10)
        return {"index": index, "seed": seed, "step": num_steps, "step_name": name,
                "image_size": (int(height), int(width)), "num_boxes": len(target["boxes"])}


# ----------------------------------------------------------------------------- detection


class DetectionExplorer(_Explorer):
    """From raw predictions to detections (paper Sec. 3 "Inference"): score threshold, per-class NMS, top-k.

    ``model``: any :class:`ssd_lib.model.SSD`; ``dataset`` items without transforms (images are
    resized for the model with ``SSDTransform``). The model runs once per image (raw outputs are
    cached); each control change only re-runs :func:`ssd_lib.detect.detect`. Left: all candidates
    above the score threshold (before NMS); right: the detections after NMS and top-k, with
    ground truth dashed white. ``update`` returns ``{"num_detections": int, "before_nms": int,
    "after_nms": int, ...}``.
    """

    def __init__(self, model, dataset, index: int = 0, score_threshold: float = 0.3, nms_threshold: float = 0.45,
                 top_k: int = 50) -> None:
        base = getattr(model, "module", model)
        if not hasattr(base, "priors") or not hasattr(base, "prior_config"):
            raise TypeError(f"model must be an ssd_lib.model.SSD (with .priors and .prior_config), "
                            f"got {type(model).__name__}")
        if len(dataset) == 0:
            raise ValueError("dataset is empty: DetectionExplorer needs at least one image")
        self.model, self.dataset = base, dataset
        self.class_names = list(getattr(dataset, "classes", []))
        self._transform = SSDTransform(size=base.prior_config.image_size)
        self._items = _Cache(32)
        self._raw = _Cache(256)  # index -> (loc (1, P, 4), logits (1, P, C)) on the CPU
        self._detections = _Cache(16)  # (index, score, nms) -> detect() output, shared by top-k changes
        self.forward_calls = 0
        controls = {
            "index": _slider(widgets.IntSlider, "image index", index, 0, len(dataset) - 1),
            "score_threshold": _slider(widgets.FloatSlider, "score threshold", score_threshold, 0.01, 0.99, 0.01,
                                       readout_format=".2f"),
            "nms_threshold": _slider(widgets.FloatSlider, "NMS IoU", nms_threshold, 0.05, 1.0, 0.05,
                                     readout_format=".2f"),
            "top_k": _slider(widgets.IntSlider, "top-k", top_k, 1, 200),
        }
        super().__init__(controls, width_ratios=(1.0, 1.0))
        self.update(index=index, score_threshold=score_threshold, nms_threshold=nms_threshold, top_k=top_k)

    def _resolve(self, state: dict, given: dict) -> dict:
        return {"index": _check_int("index", state["index"], 0, len(self.dataset) - 1),
                "score_threshold": _check_float("score_threshold", state["score_threshold"], 0.0, 1.0),
                "nms_threshold": _check_float("nms_threshold", state["nms_threshold"], 0.0, 1.0),
                "top_k": _check_int("top_k", state["top_k"], 1, 10**6)}

    def _item(self, index: int) -> tuple[Tensor, dict]:
        return self._items.get_or(index, lambda: _load_item(self.dataset, index))

    @torch.no_grad()
    def _run_model(self, index: int) -> tuple[Tensor, Tensor]:
        image, _ = self._item(index)
        batch = self._transform(image, {"boxes": torch.zeros(0, 4)})[0][None]
        was_training = self.model.training
        self.model.eval()
        try:
            loc, logits = self.model(batch.to(self.model.priors.device))
        finally:
            self.model.train(was_training)
        self.forward_calls += 1
        return loc.cpu(), logits.cpu()

    def raw_outputs(self, index: int) -> tuple[Tensor, Tensor]:
        """The model's ``loc (1, P, 4)`` and ``logits (1, P, C)`` for image ``index`` (cached)."""
        return self._raw.get_or(index, lambda: self._run_model(index))

    def _draw(self, state: dict) -> dict:
        index, score, iou, top_k = state["index"], state["score_threshold"], state["nms_threshold"], state["top_k"]
        image, target = self._item(index)
        loc, logits = self.raw_outputs(index)
        priors = self.model.priors.cpu()
        height, width = image.shape[-2:]
        many = priors.shape[0] * logits.shape[-1]
        # nms_threshold=1.0 suppresses nothing (IoU > 1 never happens): the candidates before NMS.
        candidates = self._detections.get_or((index, score, 1.0), lambda: detect(
            loc, logits, priors, score, nms_threshold=1.0, top_k=many))
        after_nms = self._detections.get_or((index, score, iou), lambda: detect(
            loc, logits, priors, score, nms_threshold=iou, top_k=many))
        # detect() sorts by score, so its top_k detections are the first top_k after NMS.
        kept = {key: value[:top_k] for key, value in after_nms[0].items()}
        candidates, kept = scale_detections([candidates[0], kept], [(height, width)] * 2)
        n_before, n_after, n_kept = len(candidates["scores"]), len(after_nms[0]["scores"]), len(kept["scores"])

        self._clear_axes()
        left, right = self.axes
        for ax in (left, right):
            ax.imshow(to_numpy_image(image))
            draw_boxes(ax, target["boxes"], color="white", linestyle="--", linewidth=1.2)
        colors = _CLASS_RGBA[candidates["labels"].numpy() % len(CLASS_COLORS)]  # (N, 4), one per candidate
        draw_box_outlines(left, candidates["boxes"], colors=colors, linewidth=0.8, alpha=0.5)
        _image_axes(left, f"before NMS: {n_before} candidates with score > {score:.2f}\n"
                          "(best 400 per class; one box per default box and class)")
        draw_boxes(right, kept["boxes"], kept["labels"], kept["scores"], class_names=self.class_names)
        _image_axes(right, f"after NMS (IoU > {iou:.2f} suppressed): {n_after}; top-k {top_k}: {n_kept} detections\n"
                           "ground truth dashed white")
        present = sorted({int(lab) for lab in candidates["labels"]})
        handles = [Line2D([], [], color=CLASS_COLORS[lab % len(CLASS_COLORS)], label=self._class_name(lab))
                   for lab in present]
        handles.append(Line2D([], [], color="0.4", linestyle="--", label="ground truth (white)"))
        right.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="class",
                     title_fontsize=8)
        for ax in (left, right):
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
        self.figure.suptitle(f"image {index}: {n_before} candidates -> {n_after} after NMS -> {n_kept} detections "
                             f"(ground truth: {len(target['boxes'])} objects)", fontsize=11)
        return {"index": index, "num_detections": n_kept, "before_nms": n_before, "after_nms": n_after}

    def _class_name(self, label: int) -> str:
        return self.class_names[label - 1] if 1 <= label <= len(self.class_names) else str(label)


# ----------------------------------------------------------------------------- any plain drawing function


class PlotExplorer(_Explorer):
    """Any plain drawing function as an explorer: ``draw(ax, **values)`` redrawn on one persistent axes.

    Use it where ``ipywidgets.interact`` would go (``interact`` shows its figure through an Output
    widget; see the module docstring). ``controls`` maps each of ``draw``'s keyword arguments to an
    ipywidgets value widget; every change clears the axes and calls ``draw(ax, **values)`` with all
    controls' values. ``draw`` draws into ``ax`` only (no new figure, no ``plt.show()``, no colorbar)
    and may return a summary: ``update`` returns it if it is a dict, else ``{"result": value}``.

    Usage::

        def iou_playground(ax, x=100, y=80):            # the same function draws a static figure
            ...                                           # fig, ax = plt.subplots(); iou_playground(ax)
            return {"iou": value}
        PlotExplorer(iou_playground, {"x": IntSlider(100, 0, 190), "y": IntSlider(80, 0, 190)}).display()
    """

    def __init__(self, draw: Callable[..., Any], controls: dict[str, widgets.ValueWidget],
                 figsize: tuple[float, float] = (6.5, 4.5)) -> None:
        if not callable(draw):
            raise TypeError(f"draw must be a function draw(ax, **values), got {type(draw).__name__}")
        if not isinstance(controls, dict) or not controls:
            raise TypeError("controls must be a non-empty dict {argument name: ipywidgets control}")
        for name, control in controls.items():
            if not isinstance(control, widgets.ValueWidget):
                raise TypeError(f"controls[{name!r}] must be an ipywidgets control with a .value "
                                f"(e.g. IntSlider), got {type(control).__name__}")
            if hasattr(control, "continuous_update"):
                control.continuous_update = False  # redraw when the slider is released, not at every pixel
        self.draw_function = draw
        self.figsize = tuple(figsize)
        super().__init__(dict(controls), width_ratios=(1.0,))
        self.update(**{name: control.value for name, control in controls.items()})

    def _resolve(self, state: dict, given: dict) -> dict:
        return dict(state)  # the controls bound the values; draw() checks its own arguments

    def _draw(self, state: dict) -> dict:
        ax = self.axes[0]
        ax.clear()  # a general function may set limits, scales and aspect: start from a clean axes
        result = self.draw_function(ax, **state)
        return dict(result) if isinstance(result, dict) else {"result": result}
