"""What every explorer shares: the ``_Explorer`` base (one figure, named controls, one Image widget),
the input validators, image loading and caching, and the image-panel drawing helper.

An explorer subclasses ``_Explorer`` and fills in ``_resolve`` (check the controls' values, return
the full state) and ``_draw`` (redraw the figure's axes, return a summary dict); ``update``,
``display``, ``close`` and the control observers come from here. See the package docstring for
why the figure is rendered to PNG into an ``ipywidgets.Image``.

Usage::

    class CountExplorer(_Explorer):             # controls {"n": _slider(widgets.IntSlider, "n", 3, 0, 9)}
        def _resolve(self, state, given): return {"n": _check_int("n", state["n"], 0, 9)}
        def _draw(self, state): self._clear_axes(); ...; return {"n": state["n"]}
"""
from __future__ import annotations

import io
import operator
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Optional

import ipywidgets as widgets
import torch
from IPython.display import display as _ipython_display
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from ssd_lib.augment import denormalize
from ssd_lib.course.modes import grading_mode
from ssd_lib.viz import CLASS_COLORS, to_numpy_image


def _in_kernel() -> bool:
    """True inside a Jupyter kernel, where there is a frontend to show the figure to."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


# ----------------------------------------------------------------------------- validators


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


# ----------------------------------------------------------------------------- images and datasets


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


class _DatasetItems:
    """``items[index]``: ``dataset[index]`` loaded with ``_load_item``, then ``prepare(image, target)``
    if given (e.g. ``Resize``); the last ``maxsize`` items are kept, so moving a slider back is free."""

    def __init__(self, dataset, prepare: Optional[Callable] = None, maxsize: int = 32) -> None:
        self.dataset, self.prepare = dataset, prepare
        self._cache = _Cache(maxsize)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        return self._cache.get_or(index, lambda: self._load(index))

    def _load(self, index: int) -> tuple[Tensor, dict]:
        image, target = _load_item(self.dataset, index)
        return (image, target) if self.prepare is None else self.prepare(image, target)


# ----------------------------------------------------------------------------- the explorer


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
        # The PNG is replaced in place on every update: no new output, no Output widget (see the package doc).
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


# ----------------------------------------------------------------------------- drawing


def _color(index: int) -> str:
    """The ``index``-th of ssd_lib.viz's colours (a class label, or one object or box each), cycling."""
    return CLASS_COLORS[int(index) % len(CLASS_COLORS)]


def _class_name(class_names: list[str], label) -> str:
    """The name of class ``label`` (1-based: 0 is background), or the number when there is none."""
    label = int(label)
    return class_names[label - 1] if 1 <= label <= len(class_names) else str(label)


def _image_axes(ax, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")


def _image_panel(ax, image: Tensor, title: str, extent: Optional[tuple[float, float, float, float]] = None) -> None:
    """``image (3, H, W)`` in [0, 1] on ``ax`` with pixel axes: x in [0, W], y in [H, 0] (downwards, as in
    images), so pixel xyxy boxes drawn afterwards land where they belong. ``extent``: imshow's."""
    height, width = image.shape[-2:]
    ax.imshow(to_numpy_image(image), extent=extent)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    _image_axes(ax, title)
