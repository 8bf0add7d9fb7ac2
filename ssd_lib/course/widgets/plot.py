"""Any plain drawing function ``draw(ax, **values)`` as an explorer (lessons 1, 7, 9, 10, 11 and 12).

The notebooks write a figure as a function of its parameters, draw it once statically, then hand
the same function and a few ipywidgets controls to ``PlotExplorer``, which redraws it on one
persistent axes at every change. It replaces ``ipywidgets.interact``, whose Output widget stalls
headless runs (see the package docstring).

Usage::

    def iou_playground(ax, x=100, y=80):   # also draws the static figure: iou_playground(plt.gca())
        ...; return {"iou": value}          # update() returns this dict
    PlotExplorer(iou_playground, {"x": IntSlider(100, 0, 190), "y": IntSlider(80, 0, 190)}).display()
"""
from __future__ import annotations

from typing import Any, Callable

import ipywidgets as widgets

from ssd_lib.course.widgets.base import _Explorer

__all__ = ["PlotExplorer"]


class PlotExplorer(_Explorer):
    """Any plain drawing function as an explorer: ``draw(ax, **values)`` redrawn on one persistent axes.

    Use it where ``ipywidgets.interact`` would go (``interact`` shows its figure through an Output
    widget; see the package docstring). ``controls`` maps each of ``draw``'s keyword arguments to an
    ipywidgets value widget; every change clears the axes and calls ``draw(ax, **values)`` with all
    controls' values. ``draw`` draws into ``ax`` only (no new figure, no ``plt.show()``, no colorbar)
    and may return a summary: ``update`` returns it if it is a dict, else ``{"result": value}``.
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
