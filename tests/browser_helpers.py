"""Helpers of the browser test (tests/test_browser.py): a JupyterLab server of its own, the page
scripts that run a notebook in it, and the checks that judge what the page shows.

The checks are plain functions of plain data, so they are unit-tested without a browser:

* :func:`notebook_problems` reads a page snapshot (the notebook's cells, their outputs as
  JupyterLab holds them, and what each widget output shows in the DOM) and lists every error
  output, every cell that did not run and every widget that did not render.
* :func:`drawing_changed` compares the images of a cell's output before and after a control moved.

Usage::

    with JupyterLabServer(root, state_dir, env) as server:      # 127.0.0.1, a token, a free port
        page.goto(server.url("lab"))
        snapshot = page.evaluate(SNAPSHOT_JS)
        assert not notebook_problems(snapshot)
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import nbformat

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_ERROR = "Error displaying widget"
_PROMPT = re.compile(r"^\[[0-9 *]*\]:$")  # an output's "[3]:" prompt, not part of what it shows

# ---------------------------------------------------------------- what to test and with what


def widget_notebooks(directory: Path) -> list[Path]:
    """The ``NN_*.ipynb`` notebooks of ``directory`` whose code shows a widget (ipywidgets or ssd_lib.course.widgets)."""
    found = []
    for path in sorted(Path(directory).glob("[0-9][0-9]_*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        if "ipywidgets" in code or "ssd_lib.course.widgets" in code or "interact(" in code:
            found.append(path)
    return found


# How the browser tests launch Chromium (as root in a container: no sandbox, no /dev/shm, no GPU).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def require_chromium() -> str:
    """Debian's Chromium for Playwright, or a skip of the calling test that says what to install (a failure under
    ``CI=true``, tests/conftest.py)."""
    import pytest

    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright is not installed: run `bash run.sh setup` (installs the `test` extra)")
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Debian's chromium is not installed: run `bash run.sh setup` as root "
                    "(apt-get install chromium), or set SSD_CHROMIUM to a Chromium binary")
    return chromium


def find_chromium() -> Optional[str]:
    """Debian's Chromium (``SSD_CHROMIUM`` overrides): the binary itself, else the ``chromium`` wrapper."""
    override = os.environ.get("SSD_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


# ---------------------------------------------------------------- the checks (pure functions)


def notebook_problems(snapshot: dict, expect_widgets: bool = True) -> list[str]:
    """Everything wrong in a page snapshot (see ``SNAPSHOT_JS``), one line each; empty when all is well.

    Reports error outputs, code cells that never ran (Run All stops at the first error), tracebacks
    shown inside a widget (a callback of ``interact`` or an Output widget that raised), widget
    outputs that show ipywidgets' error view ("Click to show javascript error.", or "Error
    displaying widget" from the manager) or no view at all (still "Loading widget..."), and, with
    ``expect_widgets``, a notebook that displayed no widget at all. A widget output whose model id is
    empty is a widget the kernel closed, hidden by JupyterLab, and not counted.
    """
    problems: list[str] = []
    not_run: list[int] = []
    widgets_seen = 0
    for cell in snapshot.get("cells", []):
        if cell.get("type") != "code":
            continue
        index = cell["index"]
        if cell.get("execution_count") is None and cell.get("source", "").strip():
            not_run.append(index)
        for output in cell.get("outputs", []):
            text = (output.get("text") or "").strip()
            if output.get("output_type") == "error":
                problems.append(f"cell {index}: {output.get('ename')}: {output.get('evalue')}")
                continue
            model_id = output.get("widget_model_id")
            if (model_id is None or model_id == "") and WIDGET_ERROR not in text:
                continue
            widgets_seen += 1
            if output.get("widget_traceback"):
                problems.append(f"cell {index}: an error inside the widget: {output['widget_traceback']}")
            if output.get("widget_error") or WIDGET_ERROR in text:
                shown = " / ".join(ln.strip() for ln in text.splitlines() if ln.strip() and not _PROMPT.match(ln.strip()))
                problems.append(f"cell {index}: widget did not render: {WIDGET_ERROR} (the page shows {shown!r})")
            elif not output.get("widget_classes"):
                shown = text.splitlines()[0] if text else "nothing"
                problems.append(f"cell {index}: widget output has no rendered view (shows {shown!r})")
    if not_run:
        problems.append(f"code cells {not_run} did not run")
    if expect_widgets and widgets_seen == 0:
        problems.append("no widget was displayed (no widget output in any cell)")
    return problems


def widget_cells(snapshot: dict) -> list[int]:
    """Indices of the code cells that display at least one widget."""
    return [cell["index"] for cell in snapshot.get("cells", [])
            if any(o.get("widget_model_id") is not None for o in cell.get("outputs", []))]


def drawing_changed(before: Optional[list[str]], after: Optional[list[str]]) -> bool:
    """True when the images drawn in a cell's output (``IMAGES_JS`` fingerprints) differ after a
    control moved. ``None`` means "could not be read" (an image mid-update) and never counts as a
    change, nor does an output that is empty (cleared, not yet redrawn)."""
    if before is None or after is None or not after:
        return False
    return list(before) != list(after)


# ---------------------------------------------------------------- page scripts (JupyterLab 4, ipywidgets 8)

# Needs JupyterLab started with --LabApp.expose_app_in_browser=True (window.jupyterapp).
OPEN_AND_RUN_JS = """
async (path) => {
  const app = window.jupyterapp;
  await app.started;
  await app.restored;
  const panel = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  await panel.context.ready;
  await panel.sessionContext.ready;
  app.shell.activateById(panel.id);
  if (app.shell.collapseLeft) { app.shell.collapseLeft(); app.shell.collapseRight(); }  // the notebook, full width
  await panel.revealed;
  window.__ssdPanel = panel;
  window.__ssdRun = {done: false};
  // JupyterLab's own "Run All Cells" (Run menu); resolves when every cell has finished or one failed.
  app.commands.execute('notebook:run-all-cells').then(
    (ok) => { window.__ssdRun = {done: true, ok: ok}; },
    (err) => { window.__ssdRun = {done: true, ok: false, error: String(err)}; });
  return panel.id;
}
"""

RUN_DONE_JS = "() => window.__ssdRun && window.__ssdRun.done"

# Idle kernel and every widget output showing a view (or ipywidgets' error view): the page has settled.
SETTLED_JS = """
() => {
  const panel = window.__ssdPanel;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle') return false;
  for (const cell of panel.content.widgets) {
    if (cell.model.type !== 'code') continue;
    const children = cell.outputArea.widgets;
    for (let j = 0; j < cell.model.outputs.length; j++) {
      const view = (cell.model.outputs.get(j).data || {})['application/vnd.jupyter.widget-view+json'];
      if (!view || !view.model_id) continue;
      const node = children[j] && children[j].node.querySelector('.jp-OutputArea-output');
      if (!node || !(node.matches('.jupyter-widgets') || node.querySelector('.jupyter-widgets'))) return false;
    }
  }
  return true;
}
"""

# Every cell with its outputs (JupyterLab's model) and, per output, what the DOM shows; marks each
# cell node with data-ssd-cell="<index>" so that Playwright can find it.
SNAPSHOT_JS = """
() => {
  // the last line of an IPython traceback shown inside a widget (an Output widget's error output)
  const tracebackIn = (node) => {
    for (const err of node.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')) {
      const text = err.innerText || '';
      if (text.includes('Traceback (most recent call last)')) {
        const lines = text.split('\\n').map((ln) => ln.trim()).filter((ln) => ln);
        return lines[lines.length - 1].slice(0, 300);
      }
    }
    return null;
  };
  const panel = window.__ssdPanel;
  const cells = [];
  panel.content.widgets.forEach((cell, index) => {
    cell.node.dataset.ssdCell = String(index);
    const model = cell.model;
    const entry = {index, type: model.type, source: model.sharedModel.getSource().slice(0, 300),
                   execution_count: null, outputs: []};
    if (model.type === 'code') {
      entry.execution_count = model.executionCount;
      const children = cell.outputArea.widgets;
      for (let j = 0; j < model.outputs.length; j++) {
        const out = model.outputs.get(j).toJSON();
        const node = children[j] ? children[j].node : null;
        const view = (out.data || {})['application/vnd.jupyter.widget-view+json'];
        const classes = new Set();
        if (node) {
          node.querySelectorAll('[class*="widget-"]').forEach((el) => el.classList.forEach((c) => {
            if (c.startsWith('widget-')) classes.add(c);
          }));
        }
        entry.outputs.push({output_type: out.output_type, ename: out.ename || null, evalue: out.evalue || null,
                            widget_model_id: view ? view.model_id : null,
                            widget_error: node ? !!node.querySelector('.jupyter-widgets-error-widget') : false,
                            widget_traceback: view && node ? tracebackIn(node) : null,
                            text: node ? node.innerText.slice(0, 1000) : null, widget_classes: [...classes].sort()});
      }
    }
    cells.push(entry);
  });
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {path: panel.context.path, kernel_status: kernel ? kernel.status : null, cells};
}
"""

# SHA-256 and size of the bytes behind every <img> of one cell's output (data: or blob: URLs);
# null when one cannot be read yet (a blob URL revoked mid-update).
IMAGES_JS = """
async (index) => {
  const area = document.querySelector(`[data-ssd-cell="${index}"] .jp-Cell-outputArea`);
  if (!area) return [];
  const prints = [];
  for (const img of area.querySelectorAll('img')) {
    const src = img.getAttribute('src') || '';
    if (!src) return null;
    try {
      const bytes = await (await fetch(src)).arrayBuffer();
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
      prints.push(Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('') + ':' + bytes.byteLength);
    } catch (err) {
      return null;
    }
  }
  return prints;
}
"""

SHUTDOWN_KERNEL_JS = """
async () => {
  const panel = window.__ssdPanel;
  if (!panel) return;
  try { await panel.sessionContext.shutdown(); } catch (err) {}
  panel.context.model.dirty = false;
  panel.dispose();
}
"""


# ---------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with jupyter_server
        return []
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


class JupyterLabServer:
    """``jupyter lab`` on 127.0.0.1 with a random token and port, serving ``root``; its runtime,
    config, data, settings and workspace folders live under ``state_dir`` (nothing of the user's is
    read or written). Stopped on exit, even after a failure: the REST shutdown first, then the
    process group, then any kernel left (kernels run in sessions of their own)."""

    def __init__(self, root: Path, state_dir: Path, env: dict[str, str], log_path: Path,
                 settings: Optional[dict[str, dict]] = None, start_timeout: float = 120.0) -> None:
        self.root, self.state_dir, self.log_path = Path(root), Path(state_dir), Path(log_path)
        self.port, self.token = free_port(), secrets.token_hex(24)
        self.env = dict(env)
        self.settings = settings or {}
        self.start_timeout = start_timeout
        self.process: Optional[subprocess.Popen] = None
        self._log = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}?token={self.token}"

    def _request(self, method: str, path: str, timeout: float = 10.0):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/{path.lstrip('/')}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "JupyterLabServer":
        dirs = {name: self.state_dir / name for name in ("runtime", "config", "data", "ipython", "settings",
                                                         "workspaces")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        for plugin, values in self.settings.items():  # e.g. "@jupyterlab/notebook-extension/tracker"
            target = dirs["settings"] / f"{plugin}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        env = dict(self.env, JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), JUPYTER_CONFIG_DIR=str(dirs["config"]),
                   JUPYTER_DATA_DIR=str(dirs["data"]), IPYTHONDIR=str(dirs["ipython"]),
                   JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]), JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]))
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
                   "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                   "--ServerApp.terminals_enabled=False", "--LabApp.expose_app_in_browser=True",
                   "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                   "--LabApp.extension_manager=readonly",
                   # if this test is killed before its clean-up, the server still goes away on its own
                   "--ServerApp.shutdown_no_activity_timeout=900",
                   "--MappingKernelManager.cull_idle_timeout=900", "--MappingKernelManager.cull_interval=60"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI and containers run as root
            command.append("--ServerApp.allow_root=True")
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                self._request("GET", "api/status", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                time.sleep(0.3)
        raise RuntimeError(f"jupyter lab did not answer on port {self.port} within {self.start_timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def shutdown_kernels(self) -> None:
        """Shut down every kernel of the server (between notebooks)."""
        try:
            for kernel in self._request("GET", "api/kernels") or []:
                try:
                    self._request("DELETE", f"api/kernels/{kernel['id']}", timeout=20)
                except (urllib.error.URLError, OSError):
                    pass
        except (urllib.error.URLError, OSError, ValueError):
            pass

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        leftovers = _descendants(process.pid)
        if process.poll() is None:
            try:
                self._request("POST", "api/shutdown", timeout=5)
            except (urllib.error.URLError, OSError, ValueError):
                pass
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if process.poll() is not None:
                break
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        for child in leftovers:  # kernels start sessions of their own: killpg does not reach them
            try:
                if child.is_running():
                    child.kill()
            except Exception:  # psutil.NoSuchProcess and friends: already gone
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __exit__(self, *exc) -> None:
        self.stop()
