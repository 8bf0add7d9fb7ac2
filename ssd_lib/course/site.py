"""The course as a static website: run the teacher notebooks headless, export each one to an HTML page.

Each notebook runs top to bottom in a fresh kernel (nbclient) with its widgets displayed (not
grading mode) and their state stored in the notebook (``store_widget_state``); nbconvert's
``HTMLExporter`` (lab template) then writes one page per lesson with that state embedded, so an
explorer shows its last figure and its controls their last values without a kernel.

The site works offline, opened from disk (file://) or served: what the pages load comes with them in
``<out>/static/``, pointed at by relative URLs (the exporter's ``mathjax_url``, ``require_js_url`` and
``widget_renderer_url``) instead of nbconvert's CDN defaults. MathJax 2 (the equations) is copied from
the ``jupyter-server-mathjax`` package (the ``course`` extra); require.js and the widgets' JavaScript
(@jupyter-widgets/html-manager's ``embed-amd.js``) are npm's files, vendored in ``site_assets/``
(its README says which versions and how they were fetched). The last picture of every widget is
also drawn as a plain image right after it, for a reader without JavaScript (hidden once the live
widget renders). ``index.html`` links the lessons. Every file is written atomically.

    python -m ssd_lib html --fast                               # all lessons -> results/course_html/
    python -m ssd_lib html --out site 02 notebooks/03_matching.ipynb   # full mode, two lessons
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ssd_lib.files import write_text

from .assets import NOTEBOOK_DIR, NOTEBOOK_GLOB, REPO_ROOT
from .modes import mode_environment

__all__ = ["DEFAULT_OUT", "find_notebooks", "execute_notebook", "notebook_html", "copy_static_assets", "build_site",
           "main"]

DEFAULT_OUT = REPO_ROOT / "results" / "course_html"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
STATIC_KEY = "ssd_course_html"  # output metadata: the static stand-in for a widget (PNGs and a caption)
STATIC_DIR = "static"  # <out>/static/: MathJax, require.js and the widget manager, shared by the pages
SITE_ASSETS = Path(__file__).with_name("site_assets")  # vendored npm files (see site_assets/README.md)
# MathJax 2's combined configuration that jupyter-server-mathjax ships (TeX and MathML in, HTML-CSS out),
# plus the Safe extension nbconvert's default URL asks for.
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"

# The lab template's widget view (nbconvert's lab/base.html.j2) with the offline stand-in inside its div,
# after the view's script. The html-manager renders a widget into a `.widget-subarea` it inserts before
# that script; once it has, the stand-in (a later sibling) is hidden.
#
# Offline: the widget manager's CSS looks for its Font Awesome fonts next to the URL require.js gives its AMD
# modules (named "@jupyter-widgets/..."; by default relative to the page, where nothing is); the require.js
# paths send those names to the folder of embed-amd.js, where the fonts are. MathJax draws with the one web
# font jupyter-server-mathjax ships (STIX-Web), as Jupyter Notebook did with that package.
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block jupyter_widgets -%}
{%- if "widgets" in nb.metadata and resources.widget_renderer_url %}
{%- set manager_dir = resources.widget_renderer_url.rsplit('/', 1)[0] %}
<script>
require.config({paths: {"@jupyter-widgets": "{{ manager_dir }}", "@jupyter-widgets/html-manager/dist": "{{ manager_dir }}"}});
</script>
{%- endif %}
{{ super() }}
{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}
{{ super() }}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null},
                    SVG: {font: "STIX-Web"}});
</script>
{%- endblock html_head_js_mathjax -%}
{%- block extra_css -%}
{{ super() }}
<style>
.ssd-static-widget { margin: 0.3em 0 0.8em 0; }
.ssd-static-widget img { max-width: 100%; height: auto; display: block; }
.ssd-static-widget figcaption { font-size: 0.85em; color: #555; }
.widget-subarea ~ .ssd-static-widget { display: none; }
</style>
{%- endblock extra_css -%}
{%- block data_widget_view scoped %}
{% set div_id = uuid4() %}
{% set datatype_list = output.data | filter_data_type %}
{% set datatype = datatype_list[0]%}
<div id="{{ div_id }}" class="jupyter-widgets jp-OutputArea-output {{ extra_class }}">
<script type="text/javascript">
var element = document.getElementById('{{ div_id }}');
</script>
<script type="{{ datatype }}">
{{ output.data[datatype] | json_dumps | escape_html_script }}
</script>
{%- set static = output.metadata.get('""" + STATIC_KEY + """') -%}
{%- if static %}
<figure class="ssd-static-widget">
{%- for png in static.pngs %}
<img src="data:image/png;base64,{{ png }}" alt="{{ static.caption | e }}">
{%- endfor %}
<figcaption>{{ static.caption | e }}</figcaption>
</figure>
{%- endif %}
</div>
{%- endblock data_widget_view -%}
"""


class HTMLBuildError(Exception):
    """A notebook could not be run or converted: the message is one line naming it."""


@dataclass
class Page:
    notebook: Path
    html: Path
    title: str
    seconds: float


@dataclass
class SiteReport:
    out_dir: Path
    fast: bool
    pages: list[Page] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def index(self) -> Path:
        return self.out_dir / "index.html"


# ---------------------------------------------------------------- notebooks


def find_notebooks(names: Optional[list[str]] = None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The teacher notebooks to build: all ``notebooks/NN_*.ipynb`` when ``names`` is empty; else each
    name is a path to a notebook, a lesson number ("03") or a stem ("03_matching")."""
    available = sorted(notebook_dir.glob(NOTEBOOK_GLOB))
    if not names:
        if not available:
            raise HTMLBuildError(f"no course notebooks ({NOTEBOOK_GLOB}) in {notebook_dir}")
        return available
    chosen = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            chosen.append(path.resolve())
            continue
        matches = [p for p in available if p.stem == name or p.stem.split("_", 1)[0] == name.zfill(2)]
        if len(matches) != 1:
            choices = ", ".join(p.stem for p in available) or "none"
            raise HTMLBuildError(f"no single course notebook matches {name!r}; give a path or one of: {choices}")
        chosen.append(matches[0])
    return list(dict.fromkeys(chosen))  # each once, in the order given


def _kernel_env(fast: bool) -> dict[str, str]:
    """Fast or full mode, widgets shown (not grading), ssd_lib importable from the repository."""
    env = dict(os.environ, **mode_environment(fast=fast, grading=False))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def execute_notebook(path: Path, fast: bool = True, timeout_per_cell: Optional[float] = None):
    """Run ``path`` top to bottom in a fresh kernel (its folder as working directory) and return the
    notebook with outputs and the widgets' state in ``nb.metadata.widgets``. Raises HTMLBuildError."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path)
    timeout = timeout_per_cell if timeout_per_cell is not None else (300 if fast else 3600)
    nb = nbformat.read(path, as_version=4)
    current = {"index": None}

    def on_cell_start(cell, cell_index, **_):
        current["index"] = cell_index

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False, store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}}, on_cell_start=on_cell_start,
                            extra_arguments=["--log-level=ERROR"])
    # No mimic of the Output widget: with it, a cell writing into an Output intermittently waits the whole
    # cell timeout (jupyter/nbclient#312; see tests/test_notebooks.py). An Output's content becomes cell output.
    client.widget_registry = {}
    try:
        client.execute(env=_kernel_env(fast))
    except CellExecutionError as exc:
        raise HTMLBuildError(f"{path.name}: cell {current['index']} failed: {exc.ename}: {exc.evalue}".strip()) from None
    except CellTimeoutError:
        raise HTMLBuildError(f"{path.name}: cell {current['index']} ran longer than {timeout:g} s; "
                             f"raise --timeout or use --fast") from None
    except DeadKernelError:
        raise HTMLBuildError(f"{path.name}: the kernel died in cell {current['index']} (out of memory?)") from None
    return nb


def _widget_models(nb) -> dict[str, dict]:
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _control_text(state: dict) -> Optional[str]:
    description = str(state.get("description", "")).strip()
    if not description:
        return None
    if "_options_labels" in state and state.get("index") is not None:
        value = state["_options_labels"][state["index"]]
    elif "value" in state:
        value = state["value"]
    else:
        return None
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{description} = {value}"


def add_static_widget_figures(nb) -> int:
    """Give each displayed widget whose tree holds an ``ipywidgets.Image`` a static stand-in: that
    Image's last PNG and a caption with the controls' last values (``output.metadata``, read by the
    page template). Returns the number of widget views that got one."""
    models = _widget_models(nb)
    found = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if not view or view.get("model_id") not in models:
                continue
            pngs, controls, stack, seen = [], [], [view["model_id"]], set()
            while stack:  # depth first, children in display order
                model_id = stack.pop()
                if model_id in seen or model_id not in models:
                    continue
                seen.add(model_id)
                model = models[model_id]
                state = model.get("state", {})
                if model.get("model_name") == "ImageModel" and state.get("format") == "png":
                    pngs += [b["data"] for b in model.get("buffers", []) if b.get("path") == ["value"] and b.get("data")]
                elif (text := _control_text(state)) is not None:
                    controls.append(text)
                children = [c[len("IPY_MODEL_"):] for c in state.get("children", []) if isinstance(c, str)
                            and c.startswith("IPY_MODEL_")]
                stack += reversed(children)
            if pngs:
                caption = "Last state of this interactive figure"
                caption += f" ({', '.join(controls)})." if controls else "."
                caption += " Run the notebook in JupyterLab to move the controls."
                output.setdefault("metadata", {})[STATIC_KEY] = {"pngs": pngs, "caption": caption}
                found += 1
    return found


# ---------------------------------------------------------------- what the pages load (offline)


@dataclass(frozen=True)
class StaticAssets:
    """The URLs a page loads its JavaScript from, relative to the site folder (the pages sit at its top)."""
    mathjax_url: str
    require_js_url: str
    widget_renderer_url: str


def vendored_version(package: str) -> str:
    """The version of a package vendored in ``site_assets/`` ("html-manager", "requirejs"), from its package.json."""
    return json.loads((SITE_ASSETS / package / "package.json").read_text(encoding="utf-8"))["version"]


def mathjax_dir() -> Path:
    """MathJax 2 as the jupyter-server-mathjax package ships it (the folder holding ``MathJax.js``)."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise HTMLBuildError("the offline pages take MathJax from the jupyter-server-mathjax package, which is not "
                             "installed: run `pip install -e \".[course]\"` (or `bash run.sh setup`)") from None
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def mathjax_version(folder: Path) -> str:
    """MathJax's own version string (``MathJax.version`` in MathJax.js), e.g. "2.7.9"."""
    match = re.search(r'MathJax\.version\s*=\s*"([^"]+)"', (folder / "MathJax.js").read_text(encoding="utf-8"))
    if match is None:
        raise HTMLBuildError(f"{folder / 'MathJax.js'} names no MathJax.version: reinstall jupyter-server-mathjax")
    return match.group(1)


def _install_folder(source: Path, target: Path) -> None:
    """Copy the folder ``source`` to ``target`` unless it is there already: into a temporary sibling first, then
    renamed in one step, so a page never meets a half-copied folder. Each target's name carries its version,
    so one that exists is complete and current."""
    if target.is_dir():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        shutil.copytree(source, temp, dirs_exist_ok=True)  # also copies the source folder's mode (not mkdtemp's 0700)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    try:
        os.rename(temp, target)
    except OSError:
        shutil.rmtree(temp, ignore_errors=True)
        if not target.is_dir():  # else another build put it there first
            raise


def copy_static_assets(out_dir: Path) -> StaticAssets:
    """Put what the pages load into ``out_dir/static/``: MathJax (from jupyter-server-mathjax, about 12 MB),
    require.js and the widget manager (vendored, about 4 MB), each in a folder named with its version.
    Returns their URLs relative to ``out_dir``. Raises HTMLBuildError when jupyter-server-mathjax is missing."""
    mathjax = mathjax_dir()
    folders = {f"mathjax-{mathjax_version(mathjax)}": mathjax,
               f"requirejs-{vendored_version('requirejs')}": SITE_ASSETS / "requirejs",
               f"html-manager-{vendored_version('html-manager')}": SITE_ASSETS / "html-manager"}
    for name, source in folders.items():
        target = Path(out_dir) / STATIC_DIR / name
        try:
            _install_folder(source, target)
        except OSError as exc:
            raise HTMLBuildError(f"could not copy {source} to {target}: {exc.strerror or exc}; "
                                 f"check the output folder (--out): free space, permissions") from None
    mathjax_name, requirejs_name, manager_name = folders
    return StaticAssets(mathjax_url=f"{STATIC_DIR}/{mathjax_name}/MathJax.js?config={MATHJAX_CONFIG}",
                        require_js_url=f"{STATIC_DIR}/{requirejs_name}/require.js",
                        widget_renderer_url=f"{STATIC_DIR}/{manager_name}/embed-amd.js")


# ---------------------------------------------------------------- pages


def notebook_html(nb, name: str = "notebook", assets: Optional[StaticAssets] = None) -> str:
    """One page: nbconvert's HTMLExporter (lab template), the widget state embedded, static stand-ins added.
    ``assets``: where the page loads MathJax, require.js and the widget manager (``copy_static_assets``);
    None keeps nbconvert's defaults, public CDNs."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    add_static_widget_figures(nb)
    urls = {} if assets is None else {"mathjax_url": assets.mathjax_url, "require_js_url": assets.require_js_url,
                                      "widget_renderer_url": assets.widget_renderer_url}
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"ssd_course.html.j2": _TEMPLATE})],
                            template_file="ssd_course.html.j2", **urls)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": name}})
    return body


def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


# ---------------------------------------------------------------- site


def _index_html(report: SiteReport) -> str:
    mode = "fast mode (SSD_COURSE_FAST=1: small data, a few training steps)" if report.fast else "full mode"
    items = "\n".join(f'<li><a href="{html.escape(p.html.name)}">{html.escape(p.title)}</a> '
                      f'<span class="meta">({html.escape(p.notebook.name)}, ran in {p.seconds:.0f} s)</span></li>'
                      for p in report.pages)
    failed = ""
    if report.failures:
        failed = "<h2>Not built</h2>\n<ul>\n" + "\n".join(f"<li>{html.escape(f)}</li>" for f in report.failures) + "\n</ul>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>SSD, step by step: the course</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 48em; margin: 2em auto; padding: 0 1em; line-height: 1.5; }}
.meta {{ color: #666; font-size: 0.9em; }}
</style>
</head>
<body>
<h1>SSD, step by step</h1>
<p>The lessons of the course as executed notebooks, built {time.strftime("%Y-%m-%d %H:%M")} in {mode}. Each page
shows the figures and every interactive figure in its last state; to move the controls, open the notebook in
JupyterLab.</p>
<ol>
{items}
</ol>
{failed}
</body>
</html>
"""


def build_site(notebooks: list[Path], out_dir: Path = DEFAULT_OUT, fast: bool = False,
               timeout_per_cell: Optional[float] = None, log: Callable[[str], None] = print) -> SiteReport:
    """Run and convert each notebook to ``out_dir/<stem>.html``, then write ``out_dir/index.html``
    linking the pages built; what the pages load goes to ``out_dir/static/`` first (``copy_static_assets``).
    A notebook that fails is reported (``report.failures``) and skipped. Raises HTMLBuildError when the
    static assets cannot be put in place."""
    report = SiteReport(Path(out_dir), fast)
    assets = copy_static_assets(report.out_dir)  # first: a missing package fails before minutes of running
    for path in notebooks:
        path = Path(path)
        started = time.perf_counter()
        log(f"running {path.name} ({'fast' if fast else 'full'} mode) ...")
        try:
            nb = execute_notebook(path, fast=fast, timeout_per_cell=timeout_per_cell)
            seconds = time.perf_counter() - started
            page = report.out_dir / f"{path.stem}.html"
            write_text(page, notebook_html(nb, path.stem, assets))
        except HTMLBuildError as exc:
            report.failures.append(str(exc))
            log(f"  failed: {exc}")
            continue
        report.pages.append(Page(path, page, _title(nb, path.stem), seconds))
        log(f"  {page} ({seconds:.0f} s to run, {page.stat().st_size / 1e6:.1f} MB)")
    write_text(report.index, _index_html(report))
    log(f"{len(report.pages)} page(s): open {report.index}")
    return report


def main(argv: Optional[list[str]] = None, prog: str = "python -m ssd_lib html") -> int:
    """Run the course notebooks headless and write them as a static HTML site."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Run the course's teacher notebooks headless and write them as a static HTML site "
                               "(figures and the widgets' last state, no kernel needed), with index.html.")
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                        help="notebook paths, lesson numbers (03) or names (03_matching); default: all lessons")
    parser.add_argument("--fast", action="store_true",
                        help="fast mode (SSD_COURSE_FAST=1): small data and a few training steps, about a minute "
                             "per lesson; without it lesson 7 trains for real")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds a cell may run (default 300 in fast mode, 3600 in full mode)")
    args = parser.parse_args(argv)
    try:
        notebooks = find_notebooks(args.notebooks)
    except HTMLBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        report = build_site(notebooks, Path(args.out), fast=args.fast, timeout_per_cell=args.timeout)
    except HTMLBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for failure in report.failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
