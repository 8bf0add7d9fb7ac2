"""The static course site works offline (marker ``browser``): its pages opened in headless Chromium with the
network blocked draw their equations (MathJax) and their saved widgets' controls (the html-manager).

Every request of the page goes through Playwright's ``page.route``: file://, data:, blob: and 127.0.0.1 pass,
anything else is aborted and recorded, and the tests assert that nothing was even asked of a remote host and
that no local file the page asked for was missing.

* Lesson 3 (the site build of tests/test_site.py, fast mode, shared), opened from disk: the step-2 equation
  is typeset in MathJax's STIX web fonts, no raw ``\\arg\\max`` shows, and the explorer's sliders show
  their saved values next to its saved picture.
* A small page served over http://127.0.0.1 draws a dropdown, a slider and a button's Font Awesome icon
  from a state ipywidgets wrote.
* The same page with nbconvert's defaults, for comparison, asks CDNs for its scripts and draws neither.

Needs Playwright (the ``test`` extra) and Debian's ``chromium``, as tests/test_browser.py does; skips and says
why without them. About 15 s with the lesson already built, 40 s alone, on two shared cores.
"""
from __future__ import annotations

import functools
import http.server
import json
import re
import threading
import time
from urllib.parse import urlsplit

import nbformat
import pytest

from browser_helpers import CHROMIUM_ARGS, require_chromium
from ssd_lib.course import site as course_html
from test_site import STATE_SCRIPT, WIDGET_NOTEBOOK, build_widget_lesson_once

pytestmark = pytest.mark.browser

LOCAL_SCHEMES = {"file", "data", "blob", "about"}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
EQUATION = r"$$ \text{step 2: } \; g^*(p) = \arg\max_g \mathrm{IoU}_{gp} $$"
RENDER_TIMEOUT_MS = 60_000

# MathJax 2 has started up (its "End" signal posted) and typeset everything queued.
MATHJAX_DONE_JS = """
() => window.MathJax && MathJax.Hub && MathJax.Hub.Startup.signal.posted.some((m) => String(m) === 'End')
      && MathJax.Hub.queue.pending === 0 && !MathJax.Hub.queue.running
"""

# Each TeX source MathJax found that holds \\arg\\max, with the frame it drew for it; whether raw TeX shows.
EQUATIONS_JS = """
() => {
  const sources = [...document.querySelectorAll('script[type^="math/tex"]')];
  const drawn = (s) => {
    const frame = document.getElementById(s.id + '-Frame');
    const box = frame ? frame.getBoundingClientRect() : null;
    return {tex: s.textContent, display: s.type.includes('mode=display'), frame: frame ? frame.className : null,
            width: box ? box.width : 0, height: box ? box.height : 0};
  };
  return {typeset: sources.length, argmax: sources.filter((s) => s.textContent.includes('\\\\arg\\\\max')).map(drawn),
          raw_tex_visible: document.body.innerText.includes('\\\\arg\\\\max'),
          stix_fonts: [...document.fonts].filter((f) => f.family.startsWith('STIXMathJax') && f.status === 'loaded')
                                         .map((f) => f.family)};
}
"""

# What each widget area the html-manager drew holds: sliders (label, readout), dropdowns (label, choice),
# images (drawn or not), and whether the static stand-in after it is hidden.
WIDGETS_JS = """
() => [...document.querySelectorAll('.widget-subarea')].map((area) => {
  const label = (el) => { const l = el.querySelector('.widget-label'); return l ? l.innerText.trim() : ''; };
  const standIn = area.parentElement.querySelector('.ssd-static-widget');
  return {
    sliders: [...area.querySelectorAll('.widget-slider')].map((el) => {
      const readout = el.querySelector('.widget-readout');
      return [label(el), readout ? readout.innerText.trim() : null];
    }),
    dropdowns: [...area.querySelectorAll('.widget-dropdown')].map((el) => {
      const select = el.querySelector('select');
      return [label(el), select && select.selectedIndex >= 0 ? select.options[select.selectedIndex].text : null];
    }),
    images_drawn: [...area.querySelectorAll('img')].filter((img) => img.complete && img.naturalWidth > 0).length,
    stand_in: standIn ? getComputedStyle(standIn).display : null,
  };
})
"""


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or parts.hostname in LOCAL_HOSTS


@pytest.fixture(scope="module")
def browser():
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        the_browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield the_browser
        finally:
            the_browser.close()


class OfflinePage:
    """A page of ``browser`` whose every non-local request is aborted and recorded in ``remote``; ``missing``
    records the local requests that failed (a file the site lacks), ``errors`` the page's uncaught errors."""

    def __init__(self, browser) -> None:
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})
        self.page = self.context.new_page()
        self.remote: list[str] = []
        self.missing: list[str] = []
        self.errors: list[str] = []
        self.page.route("**/*", self._route)
        self.page.on("requestfailed", self._failed)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _failed(self, request) -> None:
        # MathJax 2 probes web-font support with a font at about:blank, which fails by design
        if is_local(request.url) and request.url != "about:blank":
            self.missing.append(f"{request.url} ({request.failure})")

    def _route(self, route) -> None:
        if is_local(route.request.url):
            route.continue_()
        else:
            self.remote.append(route.request.url)
            route.abort("internetdisconnected")

    def open(self, url: str, rendered: bool = True) -> "OfflinePage":
        """Load ``url``; with ``rendered``, wait until a widget is drawn and MathJax has typeset the page."""
        self.page.goto(url, wait_until="load")
        if rendered:
            self.page.wait_for_selector(".widget-subarea", timeout=RENDER_TIMEOUT_MS)
            self.page.wait_for_function(MATHJAX_DONE_JS, timeout=RENDER_TIMEOUT_MS, polling=200)
            self.page.evaluate("() => document.fonts.ready.then(() => true)")  # fonts the page uses: loaded or failed
        return self

    def loaded_fonts(self) -> set[str]:
        return set(self.page.evaluate("() => [...document.fonts].filter((f) => f.status === 'loaded').map((f) => f.family)"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def offline_page(browser):
    page = OfflinePage(browser)
    yield page
    page.close()


def small_notebook():
    """A markdown cell with lesson 3's equation and a displayed VBox(slider, dropdown, button with an icon), its
    state written by ipywidgets itself (``ipywidgets.embed.embed_data``, no kernel needed)."""
    import ipywidgets as widgets
    from ipywidgets.embed import dependency_state, embed_data

    box = widgets.VBox([widgets.FloatSlider(description="IoU threshold", value=0.7, min=0, max=1, step=0.05),
                        widgets.Dropdown(description="class", options=["circle", "star"], value="star"),
                        widgets.Button(description="redraw", icon="check")])  # an icon: Font Awesome's font
    data = embed_data(views=[box], state=dependency_state(box))  # this box's models only
    (view,) = data["view_specs"]
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell(f"# A small page\n\nIn symbols:\n\n{EQUATION}"),
        nbformat.v4.new_code_cell("box", outputs=[nbformat.v4.new_output(
            "display_data", data={"text/plain": "VBox(...)", course_html.WIDGET_VIEW: view})])])
    nb.metadata["widgets"] = {course_html.WIDGET_STATE: data["manager_state"]}
    for widget in (*box.children, box):
        widget.close()
    return nb


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path):
    """``tmp_path`` served on http://127.0.0.1:<free port>/ for the test's duration."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lesson_3_opened_from_disk_draws_its_equations_and_widgets_with_no_network(offline_page, tmp_path_factory):
    report = build_widget_lesson_once(tmp_path_factory)
    assert report.failures == [], report.failures
    page = report.out_dir / f"{WIDGET_NOTEBOOK}.html"
    started = time.perf_counter()
    offline_page.open(page.as_uri())
    seconds = time.perf_counter() - started
    assert offline_page.remote == [], f"the page asked remote hosts for {offline_page.remote}"
    assert offline_page.missing == [] and offline_page.errors == [], (offline_page.missing, offline_page.errors)

    math = offline_page.page.evaluate(EQUATIONS_JS)
    assert math["typeset"] > 10 and not math["raw_tex_visible"], math
    step2 = [eq for eq in math["argmax"] if "step 2" in eq["tex"]]
    assert len(step2) == 1 and step2[0]["display"], math["argmax"]
    assert "MathJax" in step2[0]["frame"] and step2[0]["width"] > 100 and step2[0]["height"] > 10, step2
    assert "STIXMathJax_Main" in math["stix_fonts"], math["stix_fonts"]  # drawn in the shipped web font

    # The explorer's saved state: its two sliders at their saved values, its saved picture, the stand-in hidden.
    saved = {m["state"]["description"]: m["state"]["value"]
             for m in json.loads(STATE_SCRIPT.search(page.read_text()).group(1))["state"].values()
             if m["model_name"] in ("IntSliderModel", "FloatSliderModel")}
    (explorer,) = offline_page.page.evaluate(WIDGETS_JS)
    shown = {label: float(readout) for label, readout in explorer["sliders"]}
    assert shown == pytest.approx(saved), (shown, saved)
    assert explorer["images_drawn"] == 1 and explorer["stand_in"] == "none", explorer
    print(f"lesson 3 offline: widgets and equations drawn {seconds:.1f} s after opening")


@pytest.mark.timeout(120)
def test_a_served_page_draws_a_dropdown_and_a_slider_from_saved_state_with_no_network(offline_page, tmp_path, served):
    assets = course_html.copy_static_assets(tmp_path)
    (tmp_path / "small.html").write_text(course_html.notebook_html(small_notebook(), "small", assets))
    offline_page.open(served + "small.html")
    assert offline_page.remote == [], f"the page asked remote hosts for {offline_page.remote}"
    assert offline_page.missing == [] and offline_page.errors == [], (offline_page.missing, offline_page.errors)
    (box,) = offline_page.page.evaluate(WIDGETS_JS)
    assert box["sliders"] == [["IoU threshold", "0.70"]] and box["dropdowns"] == [["class", "star"]], box
    assert offline_page.page.locator(".widget-subarea button .fa-check").count() == 1
    assert "Font Awesome 5 Free" in offline_page.loaded_fonts()  # the button's icon, from the site folder
    math = offline_page.page.evaluate(EQUATIONS_JS)
    assert len(math["argmax"]) == 1 and math["argmax"][0]["width"] > 100 and not math["raw_tex_visible"], math


@pytest.mark.timeout(120)
def test_with_nbconvert_defaults_the_page_asks_cdns_and_draws_neither(offline_page, tmp_path):
    """The comparison that shows the checks above can fail: nbconvert's CDN URLs, the network blocked."""
    page = tmp_path / "online.html"
    page.write_text(course_html.notebook_html(small_notebook(), "online"))
    offline_page.open(page.as_uri(), rendered=False)  # "load" waits for the scripts the page adds on start-up
    hosts = {urlsplit(url).hostname for url in offline_page.remote}
    assert {"cdnjs.cloudflare.com", "unpkg.com"} <= hosts, offline_page.remote
    assert offline_page.page.evaluate(WIDGETS_JS) == []
    math = offline_page.page.evaluate(EQUATIONS_JS)
    assert math["typeset"] == 0 and math["raw_tex_visible"], math
    assert re.search(r"\\arg\\max", offline_page.page.inner_text("body"))
