"""Tests for ssd_lib.course.widgets: each explorer's summary agrees with the library, the drawing changes
with the controls, observers redraw, one figure and one Image widget are updated in place (no
figure or widget piles up over 50 control changes), and display() is a no-op in grading mode.
Runs headless (Agg) with no Jupyter kernel; the kernel path is exercised by patching ``_in_kernel`` in
``ssd_lib.course.widgets.base``, where the explorers' shared machinery looks it up."""
from __future__ import annotations

import math
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from ssd_lib.augment import Resize, SSDAugmentation, SSDTransform  # noqa: E402
from ssd_lib.boxes import cxcywh_to_xyxy  # noqa: E402
from ssd_lib.data import ShapesDataset  # noqa: E402
from ssd_lib.detect import detect  # noqa: E402
from ssd_lib.matching import match  # noqa: E402
from ssd_lib.model import ssd_small  # noqa: E402
from ssd_lib.priors import PriorConfig, default_boxes  # noqa: E402
from ssd_lib.course.widgets import (  # noqa: E402
    AugmentationExplorer,
    DefaultBoxExplorer,
    DetectionExplorer,
    MatchingExplorer,
    PlotExplorer,
)
from ssd_lib.course.widgets import base as explorer_base  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py: one torch thread


@pytest.fixture(scope="module")
def dataset():
    return ShapesDataset("val", size=8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ssd_small(7)  # untrained: every class probability is close to 1/7


def pixels(explorer) -> np.ndarray:
    """The rendered figure, (H, W, 4) uint8."""
    explorer.figure.canvas.draw()
    return np.asarray(explorer.figure.canvas.buffer_rgba()).copy()


def labelled_rectangles(ax) -> list[Rectangle]:
    """The default boxes of the DefaultBoxExplorer: rectangles with a legend label naming a shape."""
    return [p for p in ax.patches
            if isinstance(p, Rectangle) and ("square" in p.get_label() or "ratio" in p.get_label())]


def outline_count(ax) -> int:
    return sum(len(c.get_paths()) for c in ax.collections if isinstance(c, PolyCollection))


# ----------------------------------------------------------------------------- DefaultBoxExplorer


def test_default_boxes_update_changes_summary_and_drawing():
    explorer = DefaultBoxExplorer(PriorConfig.ssd300())
    first, before = dict(explorer.summary), pixels(explorer)
    assert first["feature_map"] == 38 and first["boxes_per_cell"] == 4 and first["boxes_on_map"] == 38 * 38 * 4
    assert first["total_boxes"] == 8732
    summary = explorer.update(map_index=2, row=1, col=8)
    assert summary != first
    assert (summary["feature_map"], summary["boxes_per_cell"], summary["boxes_on_map"]) == (10, 6, 600)
    assert summary["num_boxes"] == len(labelled_rectangles(explorer.axes[0])) == 6
    assert not np.array_equal(before, pixels(explorer))
    summary = explorer.update(ratio_2=False)  # hides the pair (2, 1/2)
    assert summary["num_boxes"] == len(labelled_rectangles(explorer.axes[0])) == 4
    explorer.close()


def test_default_boxes_golden_tiny_config():
    # One 2x2 map on a 100 px image, paper scales: s_k = 0.2, s'_k = sqrt(0.2 * 1), ratio 2.
    cfg = PriorConfig.from_paper(100, (2,), aspect_ratios=((2,),))
    explorer = DefaultBoxExplorer(cfg)
    summary = explorer.update(row=0, col=1)
    assert summary["boxes_per_cell"] == 4 and summary["total_boxes"] == 16
    assert summary["first_box"] == 4  # cell (0, 1) is the second cell: boxes 4..7
    drawn = [(p.get_x(), p.get_y(), p.get_x() + p.get_width(), p.get_y() + p.get_height())
             for p in labelled_rectangles(explorer.axes[0])]
    # Centre (75, 25); s_k square 20 px; s'_k square sqrt(0.2) * 100 = 44.7 px; ratio 2: 28.3 x 14.1 px.
    s_prime, wide, narrow = math.sqrt(0.2) * 100, 20 * math.sqrt(2), 20 / math.sqrt(2)
    expected = [(65, 15, 85, 35), (75 - s_prime / 2, 25 - s_prime / 2, 75 + s_prime / 2, 25 + s_prime / 2),
                (75 - wide / 2, 25 - narrow / 2, 75 + wide / 2, 25 + narrow / 2),
                (75 - narrow / 2, 25 - wide / 2, 75 + narrow / 2, 25 + wide / 2)]
    assert np.allclose(drawn, expected, atol=1e-6)
    library = cxcywh_to_xyxy(default_boxes(cfg, dtype=torch.float64)[4:8]) * 100
    assert np.allclose(drawn, library.numpy(), atol=1e-9)
    labels = [p.get_label() for p in labelled_rectangles(explorer.axes[0])]
    assert labels[0].startswith("s_k square") and labels[1].startswith("s'_k square")
    assert labels[2].startswith("ratio 2") and labels[3].startswith("ratio 1/2")
    explorer.close()


def test_default_boxes_cell_follows_map_changes_and_bad_values():
    explorer = DefaultBoxExplorer(PriorConfig.ssd300(), image=torch.rand(3, 64, 80))
    explorer.update(row=37, col=0)
    assert explorer.update(map_index=1)["row"] == 18  # same image region on the 19x19 map
    assert explorer.controls["row"].max == 18 and explorer.controls["row"].value == 18
    assert explorer.update(map_index=5)["row"] == 0 and explorer.controls["col"].max == 0
    assert explorer.controls["ratio_3"].disabled  # the 1x1 map of SSD300 has only ratio 2
    explorer.update(map_index=1)
    assert not explorer.controls["ratio_3"].disabled
    with pytest.raises(ValueError, match="row"):
        explorer.update(row=19)
    with pytest.raises(ValueError, match="map_index"):
        explorer.update(map_index=6)
    with pytest.raises(TypeError, match="the controls are"):
        explorer.update(cell=3)
    explorer.close()


def test_default_boxes_observers_redraw():
    explorer = DefaultBoxExplorer(PriorConfig.ssd300())
    before = pixels(explorer)
    explorer.controls["map_index"].value = 3
    assert explorer.summary["feature_map"] == 5 and explorer.summary["boxes_on_map"] == 150
    explorer.controls["ratio_3"].value = False
    assert explorer.summary["num_boxes"] == 4
    explorer.controls["col"].value = 0
    assert explorer.summary["col"] == 0
    assert not np.array_equal(before, pixels(explorer))
    explorer.close()


# ----------------------------------------------------------------------------- MatchingExplorer


@pytest.mark.parametrize("index, threshold", [(0, 0.5), (2, 0.5), (6, 0.3), (7, 0.7)])
def test_matching_agrees_with_library_match(dataset, index, threshold):
    cfg = PriorConfig.ssd300()
    explorer = MatchingExplorer(dataset, cfg)
    summary = explorer.update(index=index, iou_threshold=threshold)
    image, target = Resize(cfg.image_size)(*dataset[index])
    _, labels = match(target["boxes"] / cfg.image_size, target["labels"], default_boxes(cfg), threshold)
    assert summary["positives"] == int((labels > 0).sum())
    assert sum(summary["per_object"]) == summary["positives"] == sum(summary["per_map"])
    assert len(summary["per_object"]) == len(target["boxes"])
    assert min(summary["per_object"]) >= 1  # the forced match: no object is left without a default box
    assert outline_count(explorer.axes[0]) == summary["positives"]  # every positive is drawn
    explorer.close()


def test_matching_threshold_changes_summary_and_drawing(dataset):
    explorer = MatchingExplorer(dataset, PriorConfig.ssd300(), index=6)
    low = explorer.update(iou_threshold=0.3)
    low_pixels = pixels(explorer)
    high = explorer.update(iou_threshold=0.7)
    assert high["positives"] < low["positives"]
    assert all(h <= lo for h, lo in zip(high["per_object"], low["per_object"]))
    assert high["forced_only"] >= low["forced_only"]
    assert outline_count(explorer.axes[0]) == high["positives"]
    assert not np.array_equal(low_pixels, pixels(explorer))
    explorer.controls["index"].value = 3  # the observer redraws
    assert explorer.summary["index"] == 3 and len(explorer.summary["per_object"]) == len(dataset[3][1]["boxes"])
    explorer.controls["iou_threshold"].value = 0.5
    assert explorer.summary["iou_threshold"] == 0.5
    explorer.close()


# ----------------------------------------------------------------------------- AugmentationExplorer


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_augmentation_steps_reproduce_the_pipeline(dataset, seed):
    augmentation = SSDAugmentation(size=300)
    explorer = AugmentationExplorer(dataset, augmentation, index=1)
    summary = explorer.update(seed=seed, step=len(augmentation.steps))
    image, target, _ = explorer.run(1, seed, len(augmentation.steps))
    expected_image, expected_target = augmentation(*dataset[1], generator=torch.Generator().manual_seed(seed))
    assert torch.equal(image, expected_image) and torch.equal(target["boxes"], expected_target["boxes"])
    assert summary["image_size"] == (300, 300) and summary["num_boxes"] == len(expected_target["boxes"])
    assert summary["step_name"] == "Normalize"
    explorer.close()


def test_augmentation_step_slider_changes_summary_and_drawing(dataset):
    explorer = AugmentationExplorer(dataset, SSDAugmentation(size=300), index=2, seed=3, step=0)
    original = explorer.summary
    assert original["step_name"] == "original" and original["image_size"] == (256, 256)
    image, target, _ = explorer.run(2, 3, 0)
    assert torch.equal(image, dataset[2][0]) and torch.equal(target["boxes"], dataset[2][1]["boxes"])
    before = pixels(explorer)
    names = [explorer.update(step=n)["step_name"] for n in range(1, len(explorer.steps) + 1)]
    assert names == ["PhotometricDistort", "ZoomOut", "MinIoURandomCrop", "RandomHorizontalFlip", "Resize",
                     "SanitizeBoxes", "Normalize"]
    assert "[Normalize]" in explorer.figure.get_suptitle()
    assert not np.array_equal(before, pixels(explorer))
    explorer.controls["step"].value = 4  # the observer redraws
    assert explorer.summary["step_name"] == "RandomHorizontalFlip"
    explorer.controls["index"].value = 5
    assert explorer.summary["index"] == 5
    explorer.close()


# ----------------------------------------------------------------------------- DetectionExplorer


def test_detection_agrees_with_detect_and_caches_model_outputs(dataset, model):
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        model.train()
        explorer = DetectionExplorer(model, dataset, index=0, score_threshold=0.1, top_k=30)
        assert model.training  # the explorer runs in eval mode and restores the mode
        for score, nms, top_k in [(0.1, 0.45, 30), (0.1, 0.2, 200), (0.143, 0.45, 200), (0.5, 0.45, 10)]:
            summary = explorer.update(score_threshold=score, nms_threshold=nms, top_k=top_k)
            batch = SSDTransform(128)(dataset[0][0], {"boxes": torch.zeros(0, 4)})[0][None]
            model.eval()
            with torch.no_grad():
                loc, logits = model(batch)
            model.train()
            expected = detect(loc, logits, model.priors, score, nms, top_k)[0]
            assert summary["num_detections"] == len(expected["scores"])
            assert summary["num_detections"] <= summary["after_nms"] <= summary["before_nms"]
        assert len(calls) == 1 + 4  # the explorer's one forward, plus ours above
        explorer.update(index=1)
        explorer.update(score_threshold=0.12)
        explorer.update(index=0)
        assert explorer.forward_calls == 2  # one forward per image, then cached
    finally:
        handle.remove()
    explorer.close()


def test_detection_thresholds_change_summary_and_drawing(dataset, model):
    explorer = DetectionExplorer(model, dataset, index=3, score_threshold=0.1, nms_threshold=0.45, top_k=200)
    many = dict(explorer.summary)
    assert many["before_nms"] == 400 * 6  # untrained: every class passes 0.1, capped at 400 per class
    assert many["after_nms"] < many["before_nms"] and many["num_detections"] == min(200, many["after_nms"])
    before = pixels(explorer)
    few = explorer.update(top_k=5)
    assert few["num_detections"] == 5 and few["before_nms"] == many["before_nms"]
    assert explorer.update(nms_threshold=0.2)["after_nms"] < many["after_nms"]  # stricter NMS removes more
    none = explorer.update(score_threshold=0.5)
    assert none == {**none, "num_detections": 0, "before_nms": 0, "after_nms": 0}
    assert not np.array_equal(before, pixels(explorer))
    explorer.controls["score_threshold"].value = 0.1  # observers redraw
    explorer.controls["top_k"].value = 3
    assert explorer.summary["num_detections"] == 3
    explorer.close()


# ----------------------------------------------------------------------------- PlotExplorer


def line_plot(ax, slope=1.0, label="line"):
    """A plain drawing function of the kind the notebooks pass to PlotExplorer."""
    xs = np.linspace(0, 1, 11)
    ax.plot(xs, slope * xs, label=label)
    ax.legend(loc="upper left")
    ax.set(title=f"y = {slope:g} x", xlabel="x", ylabel="y")
    return {"slope": slope, "end": float(slope)}


def test_plot_explorer_calls_the_plain_function_with_every_control():
    calls = []

    def draw(ax, slope=1.0, label="line"):
        calls.append((slope, label))
        return line_plot(ax, slope, label)

    explorer = PlotExplorer(draw, {"slope": ipywidgets.FloatSlider(value=2.0, min=-3, max=3),
                                   "label": ipywidgets.Dropdown(options=["line", "ramp"], value="line")})
    assert calls == [(2.0, "line")] and explorer.summary == {"slope": 2.0, "end": 2.0}
    assert not explorer.controls["slope"].continuous_update  # redraw on release, not on every pixel
    explorer.controls["label"].value = "ramp"  # the observer passes all values, not only the changed one
    assert calls[-1] == (2.0, "ramp")
    assert explorer.update(slope=-1.5) == {"slope": -1.5, "end": -1.5}
    ax = explorer.axes[0]
    assert len(ax.lines) == 1 and ax.get_title() == "y = -1.5 x"  # the axes was cleared before the redraw
    assert np.allclose(ax.lines[0].get_ydata()[-1], -1.5)
    explorer.close()

    not_a_dict = PlotExplorer(lambda ax, n=1: n * 2, {"n": ipywidgets.IntSlider(value=3)})
    assert not_a_dict.summary == {"result": 6}
    not_a_dict.close()
    with pytest.raises(TypeError, match="draw must be a function"):
        PlotExplorer("line_plot", {"n": ipywidgets.IntSlider()})
    with pytest.raises(TypeError, match="must be an ipywidgets control"):
        PlotExplorer(line_plot, {"slope": 1.0})
    with pytest.raises(TypeError, match="non-empty dict"):
        PlotExplorer(line_plot, {})


# ----------------------------------------------------------------------------- all explorers


def _make(kind, dataset, model):
    if kind == "default_boxes":
        return DefaultBoxExplorer(PriorConfig.ssd300())
    if kind == "matching":
        return MatchingExplorer(dataset, PriorConfig.ssd300())
    if kind == "augmentation":
        return AugmentationExplorer(dataset, SSDAugmentation(size=300))
    if kind == "plot":
        return PlotExplorer(line_plot, {"slope": ipywidgets.FloatSlider(value=1.0, min=-2, max=2, step=0.5),
                                        "label": ipywidgets.Dropdown(options=["line", "ramp"])})
    return DetectionExplorer(model, dataset, score_threshold=0.1, top_k=10)


KINDS = ["default_boxes", "matching", "augmentation", "detection", "plot"]
# (control, values to cycle through) moved 50 times for each explorer
MOVES = {
    "default_boxes": [("map_index", [0, 1, 2, 3, 4, 5]), ("row", [0]), ("s_prime_k", [False, True])],
    "matching": [("index", list(range(8))), ("iou_threshold", [0.3, 0.5, 0.7])],
    "augmentation": [("index", [0, 1, 2]), ("seed", [0, 1, 2, 3]), ("step", [0, 2, 4, 7])],
    "detection": [("index", [0, 1, 2]), ("score_threshold", [0.1, 0.3]), ("nms_threshold", [0.3, 0.6]),
                  ("top_k", [5, 20])],
    "plot": [("slope", [-2.0, -0.5, 0.5, 1.5]), ("label", ["ramp", "line"])],
}


def live_widgets() -> int:
    """Widgets the kernel holds (controls, images, boxes and their layouts and styles).
    ``ipywidgets.Widget.widgets`` is deprecated in ipywidgets 8; this is the dict it returned."""
    return len(ipywidgets.widgets.widget._instances)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_one_figure_and_one_image_updated_in_place_over_50_control_changes(kind, dataset, model, monkeypatch):
    # The kernel path (every update renders a PNG into the Image) for the first moves, each control moved
    # at least twice; then no PNG (a render costs 0.3-1 s on two shared cores), counts still checked.
    rendered_moves = 2 * len(MOVES[kind])
    in_kernel = {"now": True}
    monkeypatch.setattr(explorer_base, "_in_kernel", lambda: in_kernel["now"])
    shown = []
    monkeypatch.setattr(explorer_base, "_ipython_display", shown.append)
    figures_before, widgets_before = len(plt.get_fignums()), live_widgets()
    explorer = _make(kind, dataset, model)
    figure, axes, view = explorer.figure, list(explorer.figure.axes), explorer.view
    assert view.format == "png" and bytes(view.value).startswith(b"\x89PNG")
    assert explorer.widget.children[-1] is view
    explorer.display()
    widgets_built = live_widgets()
    summaries, changed = set(), 0
    for i in range(50):
        name, values = MOVES[kind][i % len(MOVES[kind])]
        control, value = explorer.controls[name], values[(i // len(MOVES[kind])) % len(values)]
        in_kernel["now"] = i < rendered_moves
        moves, png = control.value != value, bytes(view.value)
        control.value = value  # the observer redraws (when the value really changes)
        summaries.add(repr(explorer.summary))
        changed += moves
        if in_kernel["now"] and moves:
            assert bytes(view.value) != png, f"move {i}: {name}={value!r} did not change the picture"
            assert bytes(view.value).startswith(b"\x89PNG")
        elif in_kernel["now"]:
            assert bytes(view.value) == png
        assert len(plt.get_fignums()) == figures_before, f"move {i}: a figure was opened"
        assert live_widgets() == widgets_built, f"move {i}: widgets piled up"
    assert changed >= 25 and len(summaries) > 3  # the observers did redraw
    assert explorer.figure is figure and list(figure.axes) == axes  # same figure, same axes, no colorbars
    assert explorer.view is view and explorer.widget.children[-1] is view
    assert shown == [explorer.widget]  # updates replace the PNG; they display nothing new
    for ax in axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    explorer.close()
    assert len(plt.get_fignums()) == figures_before
    assert live_widgets() == widgets_before  # close() releases every widget, layouts and styles included


@pytest.mark.parametrize("kind", KINDS)
def test_display_is_a_no_op_in_grading_mode(kind, dataset, model, monkeypatch):
    shown = []
    monkeypatch.setattr(explorer_base, "_ipython_display", shown.append)
    explorer = _make(kind, dataset, model)
    monkeypatch.setenv("SSD_COURSE_GRADING", "1")
    assert explorer.display() is None
    assert shown == []
    monkeypatch.setenv("SSD_COURSE_GRADING", "0")
    assert explorer.display() is None
    assert shown == [explorer.widget]
    explorer.close()




def test_in_a_kernel_each_update_replaces_the_png_of_one_image_widget(monkeypatch):
    pngs, shown = [], []
    monkeypatch.setattr(explorer_base, "_in_kernel", lambda: True)
    monkeypatch.setattr(explorer_base, "_ipython_display", shown.append)
    explorer = DefaultBoxExplorer(PriorConfig.from_paper(100, (4, 2, 1)))
    explorer.view.observe(lambda change: pngs.append(bytes(change["new"])), names="value")
    explorer.update(map_index=1)
    explorer.controls["row"].value = 0
    assert len(pngs) == 2 and all(png.startswith(b"\x89PNG") for png in pngs)  # update, observer
    assert pngs[0] != pngs[1] and bytes(explorer.view.value) == pngs[1]
    assert shown == []  # nothing is displayed (no Output, no clear_output): only the Image's value changes
    explorer.close()


def test_outside_a_kernel_no_png_is_rendered(monkeypatch):
    monkeypatch.setattr(explorer_base, "_in_kernel", lambda: False)
    explorer = DefaultBoxExplorer(PriorConfig.from_paper(100, (4, 2, 1)))
    explorer.update(map_index=1)
    assert bytes(explorer.view.value) == b""  # tests and scripts call update() without paying for a PNG
    assert explorer.render_png().startswith(b"\x89PNG")
    explorer.close()


def test_close_closes_controls_and_refuses_updates():
    explorer = DefaultBoxExplorer(PriorConfig.ssd300())
    explorer.close()
    assert all(control.comm is None for control in explorer.controls.values())
    assert explorer.widget.comm is None and explorer.view.comm is None
    with pytest.raises(RuntimeError, match="closed"):
        explorer.update(row=1)
    explorer.close()  # twice is fine
