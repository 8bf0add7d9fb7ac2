"""The SSD training augmentation one step at a time (lesson 6; paper Sec. 2.2, "Data augmentation").

Pick an image, a seed and how many steps of the pipeline to apply; the left panel shows the
original with its boxes, the right one the sample after that many steps (denormalised for display)
with a line on what the last step drew. Running the first n steps with one ``torch.Generator`` gives
exactly the pipeline's intermediate result for that seed, so the last step equals ``augmentation(...)``.

Usage::

    explorer = AugmentationExplorer(ShapesDataset("train", size=8), SSDAugmentation(size=300))
    explorer.display()
    explorer.update(seed=3, step=3)   # -> {"step_name": "MinIoURandomCrop", "num_boxes": int, ...}
"""
from __future__ import annotations

from typing import Optional

import ipywidgets as widgets
import torch
from torch import Tensor

from ssd_lib.augment import Normalize, SSDAugmentation, Step, denormalize, validate_sample
from ssd_lib.course.widgets.base import _check_int, _DatasetItems, _Explorer, _image_panel, _slider
from ssd_lib.viz import draw_boxes

__all__ = ["AugmentationExplorer"]


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
        self._items = _DatasetItems(dataset)
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

    def run(self, index: int, seed: int, num_steps: int) -> tuple[Tensor, dict, str]:
        """The sample after the first ``num_steps`` steps with ``torch.Generator().manual_seed(seed)``
        (the steps draw from it in order, as ``Compose`` does). Returns (image, target, description)."""
        image, target = self._items[index]
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
        original, original_target = self._items[index]
        image, target, description = self.run(index, seed, num_steps)
        name = "original" if num_steps == 0 else _step_name(self.steps[num_steps - 1])
        height, width = image.shape[-2:]

        self._clear_axes()
        left, right = self.axes
        _image_panel(left, original, f"original: {original.shape[-1]} x {original.shape[-2]} px, "
                                     f"{len(original_target['boxes'])} objects")
        draw_boxes(left, original_target["boxes"], original_target["labels"], class_names=self.class_names)
        _image_panel(right, self._display_image(image, num_steps),
                     f"after step {num_steps} of {len(self.steps)}: {name}\n{description}\n"
                     f"{width} x {height} px, {len(target['boxes'])} boxes")
        draw_boxes(right, target["boxes"], target["labels"], class_names=self.class_names)
        names = [_step_name(s) for s in self.steps]
        if num_steps:
            names[num_steps - 1] = f"[{names[num_steps - 1]}]"
        self.figure.suptitle(f"image {index}, seed {seed}:  " + " -> ".join(names), fontsize=10)
        return {"index": index, "seed": seed, "step": num_steps, "step_name": name,
                "image_size": (int(height), int(width)), "num_boxes": len(target["boxes"])}
