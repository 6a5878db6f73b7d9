"""Run a notebook in a real JupyterLab, in headless Chromium, and report what a user would see.

Used by ``tests/browser/test_*.py``; also runnable by hand::

    python tests/browser/harness.py notebooks/01_quickstart.ipynb

:func:`jupyter_lab` starts JupyterLab on 127.0.0.1 (random free port, random
token, a temporary root dir); :func:`run_notebook_in_browser` copies a
notebook there, opens it in Chromium (the system one, driven by Python
Playwright; WebGL through SwiftShader), runs all cells (JupyterLab's run-all command),
waits until every cell has run and the kernel is idle, looks for errors and
for the widgets, moves the first slider and checks that the first Bokeh
plot changed. Every request the page makes is recorded: a failed script
request or any request to a host other than localhost is a failure (the
facility network, like CI, is offline). Screenshots go to ``artifacts_dir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

CHROMIUM = os.environ.get("TOMOLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}

# what a user sees, as CSS selectors (Playwright's CSS pierces open shadow roots,
# which is where Bokeh 3 draws)
SEL_ERROR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'
SEL_STDERR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
SEL_SLIDER = ".widget-slider"
SEL_BOKEH = ".jp-OutputArea-output .bk-Canvas, .jp-OutputArea-output .bk-canvas"
SEL_BOKEH_WIDGET = ".jupyter-widgets .bk-Figure, .jupyter-widgets .bk-GridPlot, .jupyter-widgets .bk-GridBox"
SEL_IPYVOLUME = ".jupyter-widgets canvas"
SEL_PROMPT = ".jp-CodeCell .jp-InputArea-prompt"
# what ipywidgets / JupyterLab print in place of a widget that failed to render
WIDGET_ERROR_MARKERS = ("Error displaying widget", "Error rendering", "Failed to create view",
                        "Click to show javascript error", "Failed to load model class")


@dataclasses.dataclass
class Server:
    url: str
    token: str
    root_dir: Path
    process: subprocess.Popen
    log_path: Path


@dataclasses.dataclass
class Report:
    """What :func:`run_notebook_in_browser` saw. ``problems()`` lists what should fail a test."""

    notebook: str
    cells_run: int = 0
    error_outputs: list = dataclasses.field(default_factory=list)
    widget_errors: list = dataclasses.field(default_factory=list)
    failed_requests: list = dataclasses.field(default_factory=list)
    external_requests: list = dataclasses.field(default_factory=list)
    console_errors: list = dataclasses.field(default_factory=list)
    n_sliders: int = 0
    n_bokeh: int = 0
    n_webgl_canvases: int = 0
    slider_changed_image: bool | None = None
    screenshots: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def problems(self, *, need_slider=True, need_bokeh=True, need_ipyvolume=False):
        out = []
        if self.error_outputs:
            out.append(f"error outputs: {self.error_outputs}")
        if self.widget_errors:
            out.append(f"widget errors: {self.widget_errors}")
        failed_scripts = [r for r in self.failed_requests if r[1] == "script"]
        if failed_scripts:
            out.append(f"failed script requests: {failed_scripts}")
        if self.external_requests:
            out.append(f"requests to non-local hosts: {self.external_requests}")
        if need_slider and not self.n_sliders:
            out.append("no slider rendered")
        if need_bokeh and not self.n_bokeh:
            out.append("no Bokeh plot rendered")
        if need_ipyvolume and not self.n_webgl_canvases:
            out.append("no ipyvolume (WebGL) canvas rendered")
        if need_slider and need_bokeh and self.slider_changed_image is not True:
            out.append(f"moving the slider did not change the image ({self.slider_changed_image})")
        return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """In the child: get SIGTERM when the test process dies (Linux), so no server outlives it."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 -- not Linux: the finally: below still stops it
        pass


@contextlib.contextmanager
def jupyter_lab(root_dir=None, *, python=sys.executable, timeout=90):
    """Start JupyterLab on loopback; yield a :class:`Server`; stop it after."""
    own_root = root_dir is None
    root = Path(tempfile.mkdtemp(prefix="tomolab-lab-")) if own_root else Path(root_dir)
    port, token = free_port(), secrets.token_hex(16)
    home = root / ".home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(
        # keep the lab's settings, workspaces and runtime files inside the temp dir
        JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        IPYTHONDIR=str(home / "ipython"), MPLBACKEND="Agg",
        BOKEH_RESOURCES="inline", PYTHONUNBUFFERED="1",
    )
    # JupyterLab 4 draws only the cells on screen ("windowing"); a long notebook's later cells
    # would show empty prompts and look unrun. Draw them all, as a reader scrolling would see them.
    tracker = home / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True, exist_ok=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    log_path = root / ".home" / "jupyterlab.log"
    log = open(log_path, "wb")
    cmd = [python, "-m", "jupyter", "lab", "--no-browser",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", "--ServerApp.allow_root=True",
           # window.jupyterapp, so the tests run all cells with JupyterLab's command (_start_run_all)
           "--LabApp.expose_app_in_browser=True"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                            preexec_fn=_die_with_parent)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({proc.returncode}); log: {log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start in {timeout}s; log: {log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Server(url=url, token=token, root_dir=root, process=proc, log_path=log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if own_root:
            shutil.rmtree(root, ignore_errors=True)


def _copy_cleared(src: Path, dst: Path):
    """Copy a notebook without its outputs, so every prompt starts as ``[ ]``."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, dst)


def _error_outputs(page, saved: Path | None = None):
    """Error outputs: from the page, and (when ``saved`` is given) from the notebook as saved.

    JupyterLab renders a traceback with the stderr renderer, so the page is searched for
    error- and stderr-typed outputs that hold a traceback; saving the notebook (Ctrl+S)
    and reading its ``output_type == "error"`` outputs is the exact check.
    """
    texts = page.locator(SEL_ERROR_OUTPUT).all_inner_texts()
    texts += [t for t in page.locator(SEL_STDERR_OUTPUT).all_inner_texts() if "Traceback" in t]
    if saved is not None:
        import nbformat

        before = saved.stat().st_mtime_ns
        page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 15
        while saved.stat().st_mtime_ns == before and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        while True:  # the server may be mid-write
            try:
                nb = nbformat.read(saved, as_version=4)
                break
            except Exception:  # noqa: BLE001 -- NotJSONError, partial file
                if time.monotonic() > deadline:
                    raise
                page.wait_for_timeout(200)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    texts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return sorted(set(texts))


def _is_local(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme in ("data", "blob", "about", "chrome-extension", "chrome"):
        return True
    return (parsed.hostname or "") in LOCAL_HOSTS


def _accept_kernel_dialog(page):
    """Accept JupyterLab's "Select Kernel" dialog if it shows (keeps the notebook's kernel)."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and "Kernel" in dialog.first.inner_text():
        dialog.first.get_by_role("button", name="Select").click()
        return True
    return False


def _log(*args):
    if os.environ.get("TOMOLAB_BROWSER_DEBUG"):
        print(f"[browser {time.strftime('%H:%M:%S')}]", *args, flush=True)


def _start_run_all(page):
    """Start running every cell of the notebook the page shows, with JupyterLab's own command.

    Not through the Run menu: on a loaded machine its "Run All Cells" click sometimes ran no
    cell, or only the last one (twice in six runs of the live view's test beside two busy
    processes), as the menu is drawn again while the kernel's state changes. The server
    exposes the app (``window.jupyterapp``, ``LabApp.expose_app_in_browser``). Returns once a
    cell is queued (the caller waits for the rest).
    """
    for attempt in range(3):
        page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.commands.isEnabled('notebook:run-all-cells')", timeout=60_000)
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        # before the kernel's session is ready the command can queue nothing (every prompt
        # stays "[ ]:", once in six runs under load): only then is it given again
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(text.strip() not in ("", "[ ]:")
                   for text in page.locator(SEL_PROMPT).all_inner_texts()):
                return
            page.wait_for_timeout(250)
        _log("run-all queued no cell; attempt", attempt + 2)


def _wait_all_cells_run(page, timeout):
    """Wait until every code cell shows an execution count and the kernel is idle."""
    deadline = time.monotonic() + timeout
    texts = []
    while time.monotonic() < deadline:
        if _accept_kernel_dialog(page):
            _log("accepted kernel dialog")
        prompts = page.locator(SEL_PROMPT).all_inner_texts()
        texts = [p.strip() for p in prompts]
        _log("prompts", texts)
        done = texts and all(t.startswith("[") and t[1:-2].strip().isdigit() for t in texts)
        busy = page.locator(".jp-Notebook-ExecutionIndicator[data-status='busy']").count()
        if done and not busy:
            return len(texts)
        if not busy and page.locator(SEL_ERROR_OUTPUT).count():
            # "Run All" stops at the first error: nothing more will run
            page.wait_for_timeout(1000)
            if not page.locator(".jp-Notebook-ExecutionIndicator[data-status='busy']").count():
                return sum(t[1:-2].strip().isdigit() for t in texts)
        page.wait_for_timeout(250)
    raise TimeoutError(f"cells still running after {timeout}s: {texts}")


def dismiss_news(page, timeout_ms=2000):
    """Answer JupyterLab's "get notified about Jupyter news?" toast with No, if it shows."""
    with contextlib.suppress(Exception):
        page.locator(".Toastify").get_by_role("button", name="No").click(timeout=timeout_ms)


def open_page(pw, *, viewport: dict, js_errors: list):
    """Launch Chromium and open a page of ``viewport`` whose JavaScript errors (uncaught ones and
    console errors) are appended to ``js_errors``. Returns ``(browser, page)``."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_context(viewport=viewport).new_page()
    page.on("pageerror", lambda exc: js_errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: js_errors.append(msg.text) if msg.type == "error" else None)
    return browser, page


def run_all_cells(page, timeout, *, server: Server | None = None, notebook: str | None = None):
    """Run all cells of the notebook in ``page``; return how many ran.

    With ``server`` and ``notebook`` (a name in its root dir) the notebook is opened first;
    without them the page already shows it (after a reload, say). Waits for the kernel to be
    idle before, and for every cell to have run after (at most ``timeout`` s), then dismisses
    the news toast, which would cover part of the page.
    """
    if server is not None:
        page.goto(f"{server.url}/lab/tree/{notebook}?reset&token={server.token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_timeout(1000)
    _accept_kernel_dialog(page)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    _start_run_all(page)
    with contextlib.suppress(Exception):  # a quick notebook may be idle again already
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='busy']",
                               timeout=10_000)
    ran = _wait_all_cells_run(page, timeout)
    dismiss_news(page)
    return ran


def _set_first_slider(page, delta=1):
    """Move the first slider by ``delta`` steps with the arrow keys, like a user.

    Works for every ipywidgets slider, also those whose readout is a label and
    not an editable number (a :class:`~ipywidgets.SelectionSlider` reads out
    "54.50 px").
    """
    handle = page.locator(f"{SEL_SLIDER} .noUi-handle").first
    old = handle.get_attribute("aria-valuenow")
    handle.scroll_into_view_if_needed()
    handle.click()  # focus, without moving it: the click lands on the handle itself
    key = "ArrowRight" if delta > 0 else "ArrowLeft"
    for _ in range(abs(int(delta))):
        page.keyboard.press(key)
    return old, handle.get_attribute("aria-valuenow")


def run_notebook_in_browser(path, *, server: Server | None = None, artifacts_dir=ARTIFACTS,
                            timeout=240, slider_delta=None, headless=True) -> Report:
    """Open ``path`` in JupyterLab in headless Chromium, run all cells, report.

    Parameters
    ----------
    path : str or Path
        The notebook. It is copied, without its outputs, into the server's
        root dir and run there (other files of its folder are not copied).
    server : Server, optional
        A running :func:`jupyter_lab`; started (and stopped) here if omitted.
    artifacts_dir : Path
        Where screenshots go (``<notebook>-*.png``).
    timeout : float
        Seconds allowed for all cells to run.
    slider_delta : int, optional
        How far to move the first slider (default: a quarter of its range).

    Returns
    -------
    Report
    """
    from playwright.sync_api import sync_playwright

    path = Path(path)
    if server is None:
        with jupyter_lab() as srv:
            return run_notebook_in_browser(path, server=srv, artifacts_dir=artifacts_dir,
                                           timeout=timeout, slider_delta=slider_delta,
                                           headless=headless)
    t0 = time.monotonic()
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    _copy_cleared(path, server.root_dir / path.name)
    report = Report(notebook=str(path))
    stem = path.stem
    for old in artifacts_dir.glob(f"{stem}-*.png"):
        old.unlink()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=headless)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()

        def on_request(request):
            if not _is_local(request.url):
                report.external_requests.append(request.url)

        def on_failed(request):
            report.failed_requests.append((request.url, request.resource_type, request.failure))

        def on_console(msg):
            if msg.type == "error":
                report.console_errors.append(msg.text)

        page.on("request", on_request)
        page.on("requestfailed", on_failed)
        page.on("console", on_console)
        page.on("pageerror", lambda exc: report.console_errors.append(f"pageerror: {exc}"))

        try:
            _log('page.goto(')
            page.goto(f"{server.url}/lab/tree/{path.name}?reset&token={server.token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.wait_for_timeout(1000)
            _accept_kernel_dialog(page)
            # kernel up before we run anything
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                                   timeout=60_000)
            _start_run_all(page)
            page.wait_for_timeout(1000)
            _log('report.cells_run =')
            report.cells_run = _wait_all_cells_run(page, timeout)
            # let widget views and WebGL finish drawing
            with contextlib.suppress(Exception):
                page.wait_for_selector(SEL_BOKEH, timeout=20_000)
            page.wait_for_timeout(2000)
            shot = artifacts_dir / f"{stem}-after-run.png"
            page.screenshot(path=str(shot), full_page=True)
            report.screenshots.append(str(shot))

            _log('report.error_outputs = page')
            report.error_outputs = _error_outputs(page, server.root_dir / path.name)
            # name the cell of each error: its prompt and its first line of code
            report.widget_errors = page.locator(".jp-Notebook .jp-Cell").evaluate_all(
                """(cells, markers) => cells.flatMap(c => {
                    const text = c.innerText;
                    const hit = markers.filter(m => text.includes(m));
                    if (!hit.length) return [];
                    const prompt = (c.querySelector('.jp-InputPrompt') || {}).innerText || '';
                    const code = ((c.querySelector('.jp-InputArea-editor') || {}).innerText || '')
                        .split('\\n')[0];
                    const lines = text.split('\\n').filter(l => markers.some(m => l.includes(m)));
                    return lines.map(l => `${l} (cell ${prompt.trim()} ${code.trim()})`);
                })""", list(WIDGET_ERROR_MARKERS))
            report.widget_errors += [m for m in report.console_errors
                                     if "Could not create a view" in m]
            report.n_sliders = page.locator(SEL_SLIDER).count()
            report.n_bokeh = page.locator(SEL_BOKEH).count()
            report.n_webgl_canvases = page.locator(SEL_IPYVOLUME).evaluate_all(
                "els => els.filter(c => { try { return !!(c.getContext('webgl2') || c.getContext('webgl')) }"
                " catch (e) { return false } }).length")

            if report.n_sliders and report.n_bokeh:
                plot = page.locator(SEL_BOKEH).first
                plot.scroll_into_view_if_needed()

                def plot_shot():
                    # the middle of the first plot: the image, not its title or axes
                    box = plot.bounding_box()
                    clip = {"x": box["x"] + 0.25 * box["width"], "y": box["y"] + 0.25 * box["height"],
                            "width": 0.5 * box["width"], "height": 0.5 * box["height"]}
                    return page.screenshot(clip=clip)

                before = plot_shot()
                (artifacts_dir / f"{stem}-plot-before.png").write_bytes(before)
                if slider_delta is None:
                    lo = page.locator(f"{SEL_SLIDER} .noUi-handle").first.get_attribute("aria-valuemin")
                    hi = page.locator(f"{SEL_SLIDER} .noUi-handle").first.get_attribute("aria-valuemax")
                    try:
                        slider_delta = max(1, int((float(hi) - float(lo)) // 4))
                    except (TypeError, ValueError):
                        slider_delta = 1
                _log('_set_first_slider(page, slider')
                _set_first_slider(page, slider_delta)
                changed = False
                deadline = time.monotonic() + 20
                after = before
                while time.monotonic() < deadline:
                    page.wait_for_timeout(500)
                    after = plot_shot()
                    if after != before:
                        changed = True
                        page.wait_for_timeout(500)
                        after = plot_shot()
                        break
                (artifacts_dir / f"{stem}-plot-after.png").write_bytes(after)
                report.screenshots += [str(artifacts_dir / f"{stem}-plot-before.png"),
                                       str(artifacts_dir / f"{stem}-plot-after.png")]
                report.slider_changed_image = changed
                # and no error appeared because of it
                report.error_outputs += [t for t in _error_outputs(page)
                                         if t not in report.error_outputs]
            shot = artifacts_dir / f"{stem}-final.png"
            page.screenshot(path=str(shot), full_page=True)
            report.screenshots.append(str(shot))
        except Exception:
            with contextlib.suppress(Exception):
                shot = artifacts_dir / f"{stem}-failure.png"
                page.screenshot(path=str(shot), full_page=True)
                report.screenshots.append(str(shot))
            raise
        finally:
            context.close()
            browser.close()
    report.seconds = time.monotonic() - t0
    return report


if __name__ == "__main__":
    import json

    for nb in sys.argv[1:]:
        rep = run_notebook_in_browser(nb)
        print(json.dumps(dataclasses.asdict(rep), indent=1, default=str))
        print("problems:", rep.problems())
