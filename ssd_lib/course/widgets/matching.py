"""Which default boxes become positives for each object (lesson 3; paper Sec. 2.2, "Matching strategy").

Pick an image and the IoU threshold; the left panel draws each ground-truth object (thick) with
the default boxes matched to it (thin, same colour; dashed where only the forced match gave the
object a box), computed with ``ssd_lib.matching.match_ious``; the right panel counts the positives
per object, smallest object first, so the learner sees that small objects get few.

Usage::

    explorer = MatchingExplorer(ShapesDataset("val", size=8), PriorConfig.ssd300())
    explorer.display()
    explorer.update(index=6, iou_threshold=0.3)   # -> {"positives": int, "per_object": [...], ...}
"""
from __future__ import annotations

import math

import ipywidgets as widgets
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from ssd_lib.augment import Resize
from ssd_lib.boxes import box_iou, cxcywh_to_xyxy
from ssd_lib.course.widgets.base import (_check_float, _check_int, _class_name, _color, _DatasetItems, _Explorer,
                                         _image_panel, _slider)
from ssd_lib.matching import match_ious
from ssd_lib.priors import PriorConfig, default_boxes
from ssd_lib.viz import draw_box_outlines

__all__ = ["MatchingExplorer"]


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
        self._items = _DatasetItems(dataset, prepare=Resize(config.image_size))  # what the network sees
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

    def _draw(self, state: dict) -> dict:
        index, threshold = state["index"], state["iou_threshold"]
        size = self.config.image_size
        image, target = self._items[index]
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
        _image_panel(ax, image, f"image {index}: {num_objects} objects, {positives} positives of {len(self.priors)} "
                                f"default boxes\n(IoU > {threshold:.2f}, plus each object's best box)",
                     extent=(0, size, size, 0))
        for g in range(num_objects):
            color = _color(g)
            mine = positive & (matched_idx == g)
            draw_box_outlines(ax, self._priors_xyxy[mine] * size, colors=color, linewidth=1.0, alpha=0.9,
                              linestyle="--" if forced_only[g] else "-")
            x1, y1, x2, y2 = gt_px[g].tolist()
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=3.0))
            ax.text(x1, y1, f"#{g} {_class_name(self.class_names, labels[g])}: {per_object[g]}", color="white",
                    fontsize=7, va="bottom", bbox=dict(facecolor=color, alpha=0.8, pad=1, edgecolor="none"))
        handles = [Line2D([], [], color="black", linewidth=3.0, label="object (ground truth)"),
                   Line2D([], [], color="black", linewidth=1.0, label="its matched default boxes"),
                   Line2D([], [], color="black", linewidth=1.0, linestyle="--", label="forced match only")]
        ax.legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.8)

        sides = [math.sqrt(max(float((b[2] - b[0]) * (b[3] - b[1])), 0.0)) for b in gt_px]
        order = sorted(range(num_objects), key=lambda g: sides[g])
        bars.bar(range(num_objects), [per_object[g] for g in order], color=[_color(g) for g in order])
        for x, g in enumerate(order):
            note = f"{per_object[g]}" + (" (forced)" if forced_only[g] else "")
            bars.text(x, per_object[g], note, ha="center", va="bottom", fontsize=8)
        bars.set_xticks(range(num_objects),
                        [f"#{g} {_class_name(self.class_names, labels[g])}\n{sides[g]:.0f} px" for g in order],
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
