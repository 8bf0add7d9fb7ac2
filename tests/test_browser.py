"""The course in a real JupyterLab (marker ``browser``): every notebook that shows a widget is
opened in headless Chromium, run with JupyterLab's own "Run All Cells", and checked: no cell
produced an error, every widget rendered (a view, not "Error displaying widget"), and moving one
control of each widget changes what it draws. One screenshot per notebook goes to results/browser/.

    bash run.sh test -m browser        # the same check a teacher runs before class

The server listens on 127.0.0.1 only, with a token, a free port and state folders of its own; the
kernels run in fast mode (SSD_COURSE_FAST=1). Needs Playwright (the ``test`` extra) and Debian's
``chromium`` (``bash run.sh setup`` installs it as root); without them the browser tests skip and
say why. The checking functions are unit-tested below without a browser, and a small notebook
broken on purpose shows that the browser check catches a broken widget.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import nbformat
import pytest

from browser_helpers import (
    IMAGES_JS, OPEN_AND_RUN_JS, RUN_DONE_JS, SETTLED_JS, SHUTDOWN_KERNEL_JS, SNAPSHOT_JS, WIDGET_ERROR,
    CHROMIUM_ARGS, JupyterLabServer, drawing_changed, notebook_problems, require_chromium, widget_cells,
    widget_notebooks,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
SHOTS = ROOT / "results" / "browser"
ALL_NOTEBOOKS = widget_notebooks(NOTEBOOK_DIR)


def _widget_kinds(path: Path) -> set[str]:
    """The kinds of widget a notebook shows: each explorer class of ssd_lib.course.widgets, and a figure the
    notebook assembles itself from ipywidgets (an ``Image`` it redraws)."""
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    hand_built = re.search(r"\bwidgets\.Image\(", code) is not None
    return set(re.findall(r"\b([A-Z]\w*Explorer)\(", code)) | ({"hand-built ipywidgets"} if hand_built else set())


def _one_per_kind(paths: list[Path]) -> list[Path]:
    """In lesson order, each notebook that shows a kind of widget no earlier chosen one shows."""
    chosen, seen = [], set()
    for path in paths:
        if _widget_kinds(path) - seen:
            chosen.append(path)
            seen |= _widget_kinds(path)
    return chosen


# The default suite opens one notebook per kind of widget (the widgets' Python side is driven in every
# notebook by tests/test_widgets.py and the headless runs); SSD_TEST_BROWSER_ALL=1 opens all of them, as a
# teacher's check before class does: `SSD_TEST_BROWSER_ALL=1 bash run.sh test -m browser`.
NOTEBOOKS = (ALL_NOTEBOOKS if os.environ.get("SSD_TEST_BROWSER_ALL", "").strip() == "1"
             else _one_per_kind(ALL_NOTEBOOKS))
BROKEN = "broken_widgets.ipynb"
RUN_TIMEOUT_S = 300      # Run All of one notebook (fast mode: under a minute each on 2 cores)
CHANGE_TIMEOUT_S = 45    # one control moved -> the kernel redraws -> the page shows it
# Every cell attached to the DOM (JupyterLab 4 may otherwise leave off-screen cells out), no autosave
# into the copies, no news or update checks (no network needed).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


# ---------------------------------------------------------------- the checking functions (no browser)

def _cell(index, outputs, execution_count=1, source="x = 1"):
    return {"index": index, "type": "code", "source": source, "execution_count": execution_count, "outputs": outputs}


def _widget(text="", classes=("widget-hslider", "widget-vbox"), model_id="abc"):
    return {"output_type": "display_data", "widget_model_id": model_id, "text": text, "widget_classes": list(classes)}


def test_a_good_snapshot_has_no_problem():
    snapshot = {"cells": [_cell(0, [{"output_type": "stream", "text": "hello"}]), _cell(1, [_widget("B: x1 100")]),
                          {"index": 2, "type": "markdown", "source": "# title", "outputs": []}]}
    assert notebook_problems(snapshot) == []
    assert widget_cells(snapshot) == [1]


def test_a_widget_that_failed_to_display_is_reported():
    # ipywidgets 8's error view (a broken-file icon), and the text the widget manager writes itself
    error_view = {**_widget("[4]:\nClick to show javascript error.", classes=()), "widget_error": True}
    not_found = _widget("Error displaying widget: model not found", classes=())
    problems = notebook_problems({"cells": [_cell(0, [_widget()]), _cell(3, [error_view]), _cell(5, [not_found])]})
    assert problems == [
        f"cell 3: widget did not render: {WIDGET_ERROR} (the page shows 'Click to show javascript error.')",
        f"cell 5: widget did not render: {WIDGET_ERROR} (the page shows '{WIDGET_ERROR}: model not found')"]


def test_a_traceback_inside_a_widget_is_reported():
    raised = {**_widget("n = 6\nValueError  Traceback (most recent call last)\nValueError: n must be 5"),
              "widget_traceback": "ValueError: n must be 5"}
    assert notebook_problems({"cells": [_cell(4, [raised])]}) == ["cell 4: an error inside the widget: ValueError: n must be 5"]


def test_a_widget_that_never_rendered_is_reported():
    problems = notebook_problems({"cells": [_cell(2, [_widget("Loading widget...", classes=())])]})
    assert problems == ["cell 2: widget output has no rendered view (shows 'Loading widget...')"]


def test_errors_and_cells_that_did_not_run_are_reported():
    error = {"output_type": "error", "ename": "ValueError", "evalue": "bad box", "text": "ValueError: bad box"}
    snapshot = {"cells": [_cell(0, [_widget()]), _cell(1, [error]), _cell(2, [], execution_count=None),
                          _cell(3, [], execution_count=None, source="  ")]}  # an empty cell never counts
    assert notebook_problems(snapshot) == ["cell 1: ValueError: bad box", "code cells [2] did not run"]


def test_a_widget_notebook_without_any_widget_is_reported():
    snapshot = {"cells": [_cell(0, [{"output_type": "execute_result", "text": "IntSlider(value=3)"}])]}
    assert notebook_problems(snapshot) == ["no widget was displayed (no widget output in any cell)"]
    assert notebook_problems(snapshot, expect_widgets=False) == []
    closed = _cell(1, [_widget(classes=(), model_id="")])  # a widget the kernel closed: JupyterLab hides it
    assert notebook_problems({"cells": [closed]}, expect_widgets=False) == []


def test_drawing_changed_needs_new_readable_images():
    assert drawing_changed(["aa:10"], ["bb:12"])
    assert drawing_changed(["aa:10", "cc:5"], ["aa:10", "dd:5"])
    assert not drawing_changed(["aa:10"], ["aa:10"])       # same bytes, even behind a new blob: URL
    assert not drawing_changed(["aa:10"], [])              # cleared, not yet redrawn
    assert not drawing_changed(["aa:10"], None)            # an image that could not be read yet
    assert not drawing_changed(None, ["aa:10"])


def test_the_notebooks_with_a_widget_are_found(tmp_path):
    sources = {"01_plain.ipynb": "import torch\nprint(torch.zeros(2))",
               "02_slider.ipynb": "from ipywidgets import IntSlider, interact",
               "03_explorer.ipynb": "from ssd_lib.course.widgets import DetectionExplorer",
               "notes.ipynb": "import ipywidgets"}  # not a lesson (no NN_ prefix)
    for name, source in sources.items():
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]), tmp_path / name)
    assert [p.name for p in widget_notebooks(tmp_path)] == ["02_slider.ipynb", "03_explorer.ipynb"]


# ---------------------------------------------------------------- JupyterLab in Chromium

@dataclass
class Move:
    cell: int
    controls_tried: list[str] = field(default_factory=list)
    changed: Optional[bool] = None  # None: nothing to compare (no control, or a widget that draws no image)
    draws: bool = True              # False: an input-only widget (menus to answer in): moved, not compared


@dataclass
class NotebookRun:
    name: str
    problems: list[str]
    moves: list[Move]
    seconds: dict[str, float]  # load (JupyterLab in the page), run (Run All), widgets (moving controls), total
    screenshot: str
    run_all_ok: Optional[bool] = None


def _kernel_env() -> dict[str, str]:
    """Fast mode, not grading (widgets are shown), ssd_lib importable from the copied notebooks."""
    env = dict(os.environ, SSD_COURSE_FAST="1")
    env.pop("SSD_COURSE_GRADING", None)
    env.pop("MPLBACKEND", None)  # the notebooks choose %matplotlib inline
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _write_broken_notebook(path: Path) -> None:
    """A widget whose model does not exist, a slider that redraws nothing, one that does, a callback
    that raises once its slider moves, an error."""
    cells = [
        "import io\nimport ipywidgets as widgets\nfrom PIL import Image as PILImage\nfrom traitlets import Unicode\n\n"
        "def png(color):\n    buffer = io.BytesIO()\n    PILImage.new('RGB', (60, 40), color).save(buffer, format='png')\n"
        "    return buffer.getvalue()",
        "class NoSuchWidget(widgets.DOMWidget):\n"
        "    _model_name = Unicode('NoSuchModel').tag(sync=True)\n"
        "    _model_module = Unicode('@jupyter-widgets/controls').tag(sync=True)\n"
        "    _model_module_version = Unicode(widgets.IntSlider()._model_module_version).tag(sync=True)\n"
        "    _view_name = Unicode('NoSuchView').tag(sync=True)\n"
        "    _view_module = Unicode('@jupyter-widgets/controls').tag(sync=True)\n\n"
        "NoSuchWidget()",
        "still = widgets.IntSlider(value=5, min=0, max=10, description='draws nothing', continuous_update=False)\n"
        "widgets.VBox([still, widgets.Image(value=png('teal'), format='png')])",
        "live = widgets.IntSlider(value=5, min=0, max=10, description='redraws', continuous_update=False)\n"
        "view = widgets.Image(value=png((0, 0, 0)), format='png')\n"
        "live.observe(lambda change: setattr(view, 'value', png((25 * change['new'], 0, 0))), names='value')\n"
        "widgets.VBox([live, view])",
        "def fails_when_moved(n=5):\n    print(f'n = {n}')\n    if n != 5:\n"
        "        raise ValueError(f'broken on purpose when moved (n = {n})')\n\n"
        "widgets.interact(fails_when_moved, n=widgets.IntSlider(value=5, min=0, max=10, continuous_update=False));",
        "raise RuntimeError('broken on purpose')",
        "print('never runs')",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


class Lab:
    """One JupyterLab server and one Chromium; :meth:`check` runs and checks one notebook in a fresh page."""

    def __init__(self, server: JupyterLabServer, context) -> None:
        self.server, self.context = server, context
        self.runs: dict[str, NotebookRun] = {}

    def check(self, name: str, change_timeout: float = CHANGE_TIMEOUT_S) -> NotebookRun:
        started = time.perf_counter()
        seconds = {}
        stem = Path(name).stem
        page = self.context.new_page()
        page.set_default_timeout(60_000)
        try:
            # a workspace of its own: JupyterLab restores no tab (and starts no kernel) of an earlier notebook
            page.goto(self.server.url(f"lab/workspaces/ssd-{stem}"), wait_until="domcontentloaded")
            page.wait_for_function("() => window.jupyterapp !== undefined", timeout=120_000)
            seconds["load"] = round(time.perf_counter() - started, 1)
            page.evaluate(OPEN_AND_RUN_JS, name)
            page.wait_for_function(RUN_DONE_JS, timeout=RUN_TIMEOUT_S * 1000, polling=500)
            run_all_ok = page.evaluate("() => window.__ssdRun.ok")
            self._settle(page)
            seconds["run"] = round(time.perf_counter() - started - seconds["load"], 1)
            snapshot = page.evaluate(SNAPSHOT_JS)
            problems = notebook_problems(snapshot)
            cells = widget_cells(snapshot)
            moves = [self._move_one_control(page, index, change_timeout) for index in cells]
            seconds["widgets"] = round(time.perf_counter() - started - seconds["load"] - seconds["run"], 1)
            # moving the controls must not break anything either (an exception in a callback, a lost view)
            self._settle(page)
            problems += [p for p in notebook_problems(page.evaluate(SNAPSHOT_JS)) if p not in problems]
            shot = SHOTS / f"{stem}.png"
            if cells:
                page.locator(f'[data-ssd-cell="{cells[0]}"] .jp-Cell-outputArea').scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
        except Exception:
            try:
                page.screenshot(path=str(SHOTS / f"{stem}-failed.png"))
            except Exception:
                pass
            raise
        finally:
            try:
                page.evaluate(SHUTDOWN_KERNEL_JS)
            except Exception:
                pass
            page.close()
            self.server.shutdown_kernels()
        seconds["total"] = round(time.perf_counter() - started, 1)
        run = NotebookRun(name, problems, moves, seconds, str(shot.relative_to(ROOT)), run_all_ok)
        self.runs[name] = run
        return run

    @staticmethod
    def _settle(page, timeout: float = 30.0) -> None:
        """Wait for an idle kernel and no widget still loading (a widget that never loads is reported
        by the snapshot check, so a timeout here is not an error)."""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline and calm < 2:
            calm = calm + 1 if page.evaluate(SETTLED_JS) else 0
            time.sleep(0.25)

    def _move_one_control(self, page, index: int, timeout: float) -> Move:
        """Move the cell's controls one at a time (sliders by keyboard, then dropdowns, then checkboxes)
        until one changes the images the cell shows."""
        area = page.locator(f'[data-ssd-cell="{index}"] .jp-Cell-outputArea')
        controls = ([("slider", c) for c in area.locator(".widget-slider .noUi-handle").all()]
                    + [("dropdown", c) for c in area.locator(".widget-dropdown select").all()]
                    + [("checkbox", c) for c in area.locator(".widget-checkbox input[type=checkbox]").all()])
        before = self._images(page, index)
        move = Move(index, draws=before != [])
        if not controls:
            return move
        for kind, control in controls:
            label = control.evaluate(
                "el => ((el.closest('.widget-inline-hbox, .widget-checkbox') || el).innerText || '').trim()")
            control.scroll_into_view_if_needed()
            if kind == "slider":
                at_max = float(control.get_attribute("aria-valuenow")) >= float(control.get_attribute("aria-valuemax"))
                control.focus()
                page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")
            elif kind == "dropdown":
                count, current = control.evaluate("s => [s.options.length, s.selectedIndex]")
                if count < 2:
                    continue
                control.select_option(index=(current + 1) % count)
            else:
                control.click()
            move.controls_tried.append(f"{kind} {label.splitlines()[0] if label else '?'}")
            if not move.draws:  # nothing to compare: the snapshot after the moves still checks for errors
                self._settle(page)
                return move
            changed, after = self._wait_for_change(page, index, before, timeout)
            if changed:
                move.changed = True
                return move
            before = after if after is not None else before
        move.changed = False
        return move

    def _images(self, page, index: int, tries: int = 10):
        """The cell's image fingerprints; retried while an image is mid-update (None if it stays so)."""
        for _ in range(tries):
            prints = page.evaluate(IMAGES_JS, index)
            if prints is not None:
                return prints
            time.sleep(0.3)
        return None

    def _wait_for_change(self, page, index: int, before, timeout: float):
        deadline = time.monotonic() + timeout
        after = None
        while time.monotonic() < deadline:
            time.sleep(0.3)
            after = self._images(page, index, tries=1)
            if drawing_changed(before, after) and page.evaluate(SETTLED_JS):
                time.sleep(0.3)  # the same images twice: the redraw is finished
                again = self._images(page, index, tries=1)
                if again == after:
                    return True, after
        return False, after


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "root"
    root.mkdir()
    for path in NOTEBOOKS:  # copies: the committed notebooks never get outputs
        shutil.copy(path, root / path.name)
    _write_broken_notebook(root / BROKEN)
    SHOTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with JupyterLabServer(root, base / "state", _kernel_env(), SHOTS / "jupyterlab.log", LAB_SETTINGS) as server:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                the_lab = Lab(server, context)
                yield the_lab
            finally:
                browser.close()
    report = {"seconds_total": round(time.perf_counter() - started, 1), "cpu_count": os.cpu_count(),
              "notebooks": {name: asdict(run) for name, run in sorted(the_lab.runs.items())}}
    tmp = SHOTS / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, SHOTS / "report.json")


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_the_browser_check_catches_broken_widgets(lab):
    run = lab.check(BROKEN, change_timeout=8)
    assert run.run_all_ok is False  # Run All reports the failing cell
    assert any(p.startswith("cell 1: widget did not render") and WIDGET_ERROR in p for p in run.problems), run.problems
    assert any(p.startswith("cell 4: an error inside the widget: ValueError: broken on purpose when moved")
               for p in run.problems), run.problems
    assert "cell 5: RuntimeError: broken on purpose" in run.problems
    assert "code cells [6] did not run" in run.problems
    assert len(run.problems) == 4, run.problems
    moves = {m.cell: m for m in run.moves}
    assert moves[2].changed is False and moves[2].controls_tried == ["slider draws nothing"], moves[2]
    assert moves[3].changed is True, moves[3]  # the same check sees a real redraw
    assert moves[4].draws is False and moves[4].controls_tried == ["slider n"], moves[4]  # prints, draws no image


@pytest.mark.browser
@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_its_widgets_work_in_jupyterlab(lab, path):
    run = lab.check(path.name)
    problems = list(run.problems)
    for move in run.moves:
        if move.draws and move.changed is False:
            problems.append(f"cell {move.cell}: moving {move.controls_tried} did not change what the widget draws")
    assert any(m.changed for m in run.moves), f"{path.name}: no widget with a control that could be moved"
    assert not problems, (f"{path.name} in JupyterLab (screenshot {run.screenshot}):\n  " + "\n  ".join(problems))


def test_the_default_selection_opens_every_kind_of_widget():
    kinds = set().union(*(_widget_kinds(p) for p in ALL_NOTEBOOKS))
    assert {"PlotExplorer", "hand-built ipywidgets"} <= kinds and len(kinds) >= 4, kinds
    chosen = _one_per_kind(ALL_NOTEBOOKS)
    assert set().union(*(_widget_kinds(p) for p in chosen)) == kinds and len(chosen) < len(ALL_NOTEBOOKS)
