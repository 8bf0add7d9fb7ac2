"""From a model's raw predictions to detections (lesson 8; paper Sec. 3, "Inference").

Pick an image, the score threshold, the NMS IoU and top-k; the left panel draws every candidate
above the score threshold (before NMS), the right one the detections ``ssd_lib.detect.detect``
keeps after per-class NMS and top-k, with the ground truth dashed white. The model runs once per
image; moving a threshold only re-runs ``detect``.

Usage::

    explorer = DetectionExplorer(model, ShapesDataset("val", size=8), score_threshold=0.3)
    explorer.display()
    explorer.update(nms_threshold=0.2, top_k=10)   # -> {"num_detections": int, "before_nms": int, ...}
"""
from __future__ import annotations

import ipywidgets as widgets
import torch
from matplotlib.colors import to_rgba_array
from matplotlib.lines import Line2D
from torch import Tensor

from ssd_lib.augment import SSDTransform
from ssd_lib.course.widgets.base import (_Cache, _check_float, _check_int, _class_name, _color, _DatasetItems,
                                         _Explorer, _image_panel, _slider)
from ssd_lib.detect import NMS_THRESHOLD, PRE_NMS_TOP_K, detect, scale_detections
from ssd_lib.viz import CLASS_COLORS, draw_box_outlines, draw_boxes

__all__ = ["DetectionExplorer"]

_CLASS_RGBA = to_rgba_array(CLASS_COLORS)  # (10, 4): colours many candidates by label in one indexing


class DetectionExplorer(_Explorer):
    """From raw predictions to detections (paper Sec. 3 "Inference"): score threshold, per-class NMS, top-k.

    ``model``: any :class:`ssd_lib.model.SSD`; ``dataset`` items without transforms (images are
    resized for the model with ``SSDTransform``). The model runs once per image (raw outputs are
    cached); each control change only re-runs :func:`ssd_lib.detect.detect`. Left: all candidates
    above the score threshold (before NMS); right: the detections after NMS and top-k, with
    ground truth dashed white. ``update`` returns ``{"num_detections": int, "before_nms": int,
    "after_nms": int, ...}``.
    """

    def __init__(self, model, dataset, index: int = 0, score_threshold: float = 0.3, nms_threshold: float = NMS_THRESHOLD,
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
        self._items = _DatasetItems(dataset)
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

    @torch.no_grad()
    def _run_model(self, index: int) -> tuple[Tensor, Tensor]:
        image, _ = self._items[index]
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
        image, target = self._items[index]
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
        titles = (f"before NMS: {n_before} candidates with score > {score:.2f}\n"
                  f"(best {PRE_NMS_TOP_K} per class; one box per default box and class)",
                  f"after NMS (IoU > {iou:.2f} suppressed): {n_after}; top-k {top_k}: {n_kept} detections\n"
                  "ground truth dashed white")
        for ax, title in zip((left, right), titles):
            _image_panel(ax, image, title)
            draw_boxes(ax, target["boxes"], color="white", linestyle="--", linewidth=1.2)
        colors = _CLASS_RGBA[candidates["labels"].numpy() % len(CLASS_COLORS)]  # (N, 4), one per candidate
        draw_box_outlines(left, candidates["boxes"], colors=colors, linewidth=0.8, alpha=0.5)
        draw_boxes(right, kept["boxes"], kept["labels"], kept["scores"], class_names=self.class_names)
        present = sorted({int(lab) for lab in candidates["labels"]})
        handles = [Line2D([], [], color=_color(lab), label=_class_name(self.class_names, lab)) for lab in present]
        handles.append(Line2D([], [], color="0.4", linestyle="--", label="ground truth (white)"))
        right.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="class",
                     title_fontsize=8)
        self.figure.suptitle(f"image {index}: {n_before} candidates -> {n_after} after NMS -> {n_kept} detections "
                             f"(ground truth: {len(target['boxes'])} objects)", fontsize=11)
        return {"index": index, "num_detections": n_kept, "before_nms": n_before, "after_nms": n_after}
