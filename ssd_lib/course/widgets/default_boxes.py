"""The default boxes of one cell, on one source feature map (lesson 2; paper Sec. 2.2 and Fig. 1).

Pick a feature map and a cell; the left panel draws the map's grid over the image, the cell, and
its default boxes in the order ``ssd_lib.priors.default_boxes`` makes them (s_k square, s'_k
square, then each aspect ratio r and 1/r), each with a checkbox; the right panel counts the default
boxes of every map, so the learner sees where SSD300's 8732 come from.

Usage::

    explorer = DefaultBoxExplorer(PriorConfig.ssd300())   # optionally image=(3, H, W) in [0, 1]
    explorer.display()
    explorer.update(map_index=2, row=4, col=7)             # -> {"boxes_per_cell": 6, "num_boxes": 6, ...}
"""
from __future__ import annotations

from typing import Optional

import ipywidgets as widgets
import torch
from matplotlib.patches import Rectangle
from torch import Tensor

from ssd_lib.augment import Resize
from ssd_lib.boxes import cxcywh_to_xyxy
from ssd_lib.course.widgets.base import _check_bool, _check_int, _color, _Explorer, _image_axes, _slider, _unit_image
from ssd_lib.priors import PriorConfig, default_boxes
from ssd_lib.viz import draw_cell_grid, to_numpy_image

__all__ = ["DefaultBoxExplorer"]


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
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=_color(j),
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
