"""Tests for ssd_lib.course.site: the static HTML site of the course (``python -m ssd_lib html``).

The slow test builds one widget notebook in fast mode (about 25 s on two shared cores) and checks that
its page embeds the widget state, with the explorer's last PNG, and shows that PNG without JavaScript.
That build is made once per session (``build_widget_lesson_once``): tests/test_site_offline.py opens the
same page in Chromium with the network blocked. The vendored JavaScript (``site_assets/``) is checked
against its provenance note and checksums, and against the widget manager version ipywidgets asks for.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

from ssd_lib.course import site as course_html
from ssd_lib.course.site import (
    SITE_ASSETS, HTMLBuildError, add_static_widget_figures, build_site, copy_static_assets, find_notebooks,
    vendored_version,
)

WIDGET_NOTEBOOK = "03_matching"  # a MatchingExplorer: sliders and one Image widget
STATE_SCRIPT = re.compile(r'<script type="application/vnd\.jupyter\.widget-state\+json">\s*(.*?)\s*</script>', re.S)
VIEW_SCRIPT = re.compile(r'<script type="application/vnd\.jupyter\.widget-view\+json">\s*(.*?)\s*</script>', re.S)
STATIC_FIGURE = re.compile(r'<figure class="ssd-static-widget">(.*?)</figure>', re.S)
PNG = b"\x89PNG\r\n\x1a\n"


def static_figures(page: str) -> list[tuple[list[bytes], str]]:
    """(PNGs, caption) of each static stand-in drawn after a widget."""
    out = []
    for figure in STATIC_FIGURE.findall(page):
        pngs = [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', figure)]
        caption = re.search(r"<figcaption>(.*?)</figcaption>", figure, re.S)
        out.append((pngs, caption.group(1) if caption else ""))
    return out


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


def script_urls(page: str) -> list[str]:
    """Every script a page loads: its <script src> and the widget renderer it adds on load."""
    return re.findall(r'<script[^>]*\ssrc="([^"]+)"', page) + re.findall(r"var widgetRendererSrc = '([^']+)'", page)


_BUILT: dict = {}


def build_widget_lesson_once(tmp_path_factory):
    """The site of WIDGET_NOTEBOOK built in fast mode, once per test session (about 25 s), for this module and
    tests/test_site_offline.py."""
    if "report" not in _BUILT:
        out = tmp_path_factory.mktemp("widget_lesson") / "site"
        _BUILT["report"] = build_site(find_notebooks([WIDGET_NOTEBOOK]), out, fast=True, log=lambda line: None)
    return _BUILT["report"]


# ---------------------------------------------------------------- without a kernel


def test_find_notebooks_by_number_name_or_path():
    everything = find_notebooks([])
    assert everything and all(p.suffix == ".ipynb" and p.parent.name == "notebooks" for p in everything)
    by_number, by_name = find_notebooks(["3"]), find_notebooks([WIDGET_NOTEBOOK])
    assert by_number == by_name and by_name[0].stem == WIDGET_NOTEBOOK
    assert find_notebooks([str(by_name[0]), "03"]) == by_name  # each once
    with pytest.raises(HTMLBuildError, match="no single course notebook matches '99'.*03_matching"):
        find_notebooks(["99"])


def test_cli_reports_a_bad_notebook_name_in_one_line(capsys):
    assert course_html.main(["no_such_lesson"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no single course notebook matches 'no_such_lesson'") and "\n" not in err


def notebook_with_widget_state(png: bytes):
    """A notebook as nbclient leaves it: a VBox(HBox(slider, dropdown), Image) displayed, with its state."""
    def model(name, state, buffers=None):
        out = {"model_name": name, "model_module": "@jupyter-widgets/controls", "model_module_version": "2.0.0",
               "state": state}
        if buffers:
            out["buffers"] = buffers
        return out

    state = {
        "vbox": model("VBoxModel", {"children": ["IPY_MODEL_hbox", "IPY_MODEL_image"]}),
        "hbox": model("HBoxModel", {"children": ["IPY_MODEL_slider", "IPY_MODEL_dropdown"]}),
        "slider": model("FloatSliderModel", {"description": "IoU threshold", "value": 0.7}),
        "dropdown": model("DropdownModel", {"description": "class", "index": 1, "_options_labels": ["circle", "star"]}),
        "image": model("ImageModel", {"format": "png"},
                       [{"data": base64.b64encode(png).decode(), "encoding": "base64", "path": ["value"]}]),
    }
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("explorer.display()", outputs=[
        nbformat.v4.new_output("display_data", data={
            "text/plain": "VBox(...)",
            course_html.WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": "vbox"}})])])
    nb.metadata["widgets"] = {course_html.WIDGET_STATE: {"version_major": 2, "version_minor": 0, "state": state}}
    return nb


def test_static_stand_in_is_the_images_last_png_with_the_controls_values():
    png = PNG + b"last picture"
    nb = notebook_with_widget_state(png)
    assert add_static_widget_figures(nb) == 1
    static = nb.cells[0].outputs[0].metadata[course_html.STATIC_KEY]
    assert [base64.b64decode(p) for p in static["pngs"]] == [png]
    assert "IoU threshold = 0.7, class = star" in static["caption"]

    page = course_html.notebook_html(notebook_with_widget_state(png), "synthetic")
    assert static_figures(page) == [([png], static["caption"])]
    state = json.loads(STATE_SCRIPT.search(page).group(1))
    assert state["state"]["image"]["buffers"][0]["path"] == ["value"]  # nbconvert embeds the state as it is
    assert json.loads(VIEW_SCRIPT.search(page).group(1))["model_id"] == "vbox"


def test_a_widget_without_state_gets_no_stand_in():
    nb = notebook_with_widget_state(PNG)
    del nb.metadata["widgets"]
    assert add_static_widget_figures(nb) == 0


# ---------------------------------------------------------------- what the pages load (offline)


def test_the_vendored_files_are_those_their_note_names():
    lines = (SITE_ASSETS / "SHA256SUMS").read_text().splitlines()  # sha256sum's "<digest>  <path>"
    listed = {name: digest for digest, name in (line.split(maxsplit=1) for line in lines)}
    vendored = sorted(str(p.relative_to(SITE_ASSETS)) for p in SITE_ASSETS.glob("*/*") if p.is_file())
    assert sorted(listed) == vendored and "html-manager/embed-amd.js" in listed and "requirejs/require.js" in listed
    for name, digest in listed.items():
        assert hashlib.sha256((SITE_ASSETS / name).read_bytes()).hexdigest() == digest, f"{name} differs from SHA256SUMS"
    fetch, note = (SITE_ASSETS / "fetch.sh").read_text(), (SITE_ASSETS / "README.md").read_text()
    for folder, package, variable in (("html-manager", "@jupyter-widgets/html-manager", "HTML_MANAGER"),
                                      ("requirejs", "requirejs", "REQUIREJS")):
        version = vendored_version(folder)
        assert json.loads((SITE_ASSETS / folder / "package.json").read_text())["name"] == package
        assert re.search(rf"^{variable}={re.escape(version)}\s", fetch, re.M), f"fetch.sh does not fetch {package}@{version}"
        assert f"{package}@{version}" in note and f"| {version} |" in note, f"README.md does not name {package}@{version}"


def test_the_widget_manager_is_the_one_ipywidgets_asks_for():
    from ipywidgets._version import __html_manager_version__ as wanted  # "^1.0.1" in ipywidgets 8.1
    from jupyter_core.paths import jupyter_path

    have = tuple(int(n) for n in vendored_version("html-manager").split("."))
    assert wanted.startswith("^")
    lowest = tuple(int(n) for n in wanted[1:].split("."))
    assert have[0] == lowest[0] and have >= lowest, f"html-manager {have} does not satisfy ipywidgets' {wanted}"
    # It draws the models JupyterLab's widget extension draws: the same majors of controls and base.
    lab = next(Path(d, "@jupyter-widgets/jupyterlab-manager/package.json") for d in jupyter_path("labextensions")
               if Path(d, "@jupyter-widgets/jupyterlab-manager/package.json").is_file())
    lab_deps = json.loads(lab.read_text())["dependencies"]
    manager_deps = json.loads((SITE_ASSETS / "html-manager" / "package.json").read_text())["dependencies"]
    for package in ("@jupyter-widgets/controls", "@jupyter-widgets/base"):
        assert manager_deps[package].lstrip("^~").split(".")[0] == lab_deps[package].lstrip("^~").split(".")[0], package


def test_static_assets_are_copied_once_and_the_pages_load_only_them(tmp_path):
    assets = copy_static_assets(tmp_path)
    assert assets.mathjax_url.startswith("static/mathjax-2.")  # nbconvert's MathJax macro configures MathJax 2
    manager = tmp_path / assets.widget_renderer_url
    assert manager.read_bytes() == (SITE_ASSETS / "html-manager" / "embed-amd.js").read_bytes()
    inode = manager.stat().st_ino
    assert copy_static_assets(tmp_path) == assets and manager.stat().st_ino == inode  # already there: not copied again
    assert leftovers(tmp_path / "static") == [] and leftovers(tmp_path) == []

    page = course_html.notebook_html(notebook_with_widget_state(PNG), "synthetic", assets)
    urls = script_urls(page)
    assert sorted(urls) == sorted([assets.require_js_url, assets.mathjax_url] + [assets.widget_renderer_url] * 2)
    assert all((tmp_path / url.split("?")[0]).is_file() for url in urls)
    # nbconvert's defaults, for comparison: the same page loads from public CDNs
    online = script_urls(course_html.notebook_html(notebook_with_widget_state(PNG), "synthetic"))
    assert online and all(url.startswith("https://") for url in online)


def test_a_missing_mathjax_package_is_reported_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "jupyter_server_mathjax", None)  # import fails as if not installed
    with pytest.raises(HTMLBuildError, match=r"jupyter-server-mathjax.*pip install -e"):
        copy_static_assets(tmp_path)
    assert course_html.main(["03", "--fast", "--out", str(tmp_path / "site")]) == 2  # before running anything
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the offline pages take MathJax from the jupyter-server-mathjax package") and "\n" not in err
    assert not (tmp_path / "site" / "index.html").exists()


# ---------------------------------------------------------------- with a kernel


def test_a_failing_notebook_is_reported_and_the_index_still_written(tmp_path):
    broken = tmp_path / "src" / "98_broken.ipynb"
    broken.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Broken"),
                                                    nbformat.v4.new_code_cell("x = 1"),
                                                    nbformat.v4.new_code_cell("1 / 0")]), broken)
    out = tmp_path / "site"
    report = build_site([broken], out, fast=True, timeout_per_cell=60, log=lambda line: None)
    assert report.pages == [] and len(report.failures) == 1
    assert report.failures[0] == "98_broken.ipynb: cell 2 failed: ZeroDivisionError: division by zero"
    assert not (out / "98_broken.html").exists()
    index = (out / "index.html").read_text()
    assert "Not built" in index and "ZeroDivisionError" in index
    assert leftovers(out) == []
    assert course_html.main([str(broken), "--fast", "--out", str(out), "--timeout", "60"]) == 1


@pytest.mark.slow
def test_fast_build_of_a_widget_notebook_embeds_the_widget_state_and_its_picture(tmp_path_factory):
    report = build_widget_lesson_once(tmp_path_factory)
    out = report.out_dir
    assert report.failures == [] and len(report.pages) == 1
    page = out / f"{WIDGET_NOTEBOOK}.html"
    assert report.pages[0].html == page and page.is_file()
    text = page.read_text()

    index = (out / "index.html").read_text()
    assert f'href="{page.name}"' in index and "Lesson 3" in index and "fast mode" in index

    # The widget state as the kernel left it: the explorer's Image holds its last PNG, the sliders their values.
    state = json.loads(STATE_SCRIPT.search(text).group(1))["state"]
    images = [m for m in state.values() if m["model_name"] == "ImageModel"]
    assert len(images) == 1
    last_png = base64.b64decode(next(b["data"] for b in images[0]["buffers"] if b["path"] == ["value"]))
    assert last_png.startswith(PNG) and len(last_png) > 10_000
    sliders = {m["state"]["description"]: m["state"]["value"] for m in state.values()
               if m["model_name"] in ("IntSliderModel", "FloatSliderModel")}
    assert set(sliders) == {"image index", "IoU threshold"}

    # Each displayed widget refers to a model of that state, and the same PNG is drawn without JavaScript.
    views = [json.loads(v)["model_id"] for v in VIEW_SCRIPT.findall(text)]
    assert views and all(v in state for v in views)
    (pngs, caption), = static_figures(text)
    assert pngs == [last_png] and f"image index = {sliders['image index']}" in caption
    # The lesson's static matplotlib figures are in the page too.
    assert text.count("data:image/png;base64,") > 2
    # Everything the page loads is in the site folder (tests/test_site_offline.py opens it offline).
    assert script_urls(text) and all((out / url.split("?")[0]).is_file() for url in script_urls(text))
    assert leftovers(out) == [] and leftovers(out / "static") == []
