"""A user's walk through ReconstructionPanel in a real JupyterLab, then the widgets after a reload.

No ``setup_notebook()`` anywhere: every widget that shows a Bokeh figure must bring BokehJS
itself. The walk: a wrong path (its error in step 1, and only there) → the right path →
preview → centre sweep → "Use this centre" (confirmed) → the 0°/180° overlay →
reconstruct (a scan big enough to take several seconds on the CPU: the bar must advance
within 3 s of the click, Cancel must show "cancelled" within 2 s; then a rerun to the end)
→ viewers → save. Then the page is reloaded while the kernel lives on and the
standalone widgets are displayed again. Fails on any uncaught JavaScript error, any
"Click to show javascript error" / "Error displaying widget", any error output, and any error
shown (in any cell) outside the step where its action happened. Screenshots of each step go to
``tests/browser/artifacts/panel-walk/``; with ``TOMOLAB_UPDATE_DOCS_IMAGES=1`` they replace the
documentation's (``docs/images/panel-walk/``), so an ordinary run leaves the checkout as it was.

Run with ``pytest -m browser tests/browser/test_panel_walk.py``.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab")
pytest.importorskip("playwright")

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = (ROOT / "docs" / "images" / "panel-walk" if os.environ.get("TOMOLAB_UPDATE_DOCS_IMAGES")
         else Path(__file__).resolve().parent / "artifacts" / "panel-walk")

SETUP = """\
import numpy as np
import tomolab
from tomolab.widgets import (CenterOverlay, CenterSweep, PhaseSweep, ReconstructionPanel,
                             SliceViewer)
scan = tomolab.open_scan("sample.h5")
center = float(scan.attrs["true_center"])
volume = tomolab.reconstruct(scan, center=center, rows="76:84", backend="numpy")"""

CELLS = [
    SETUP,
    'panel = ReconstructionPanel(backend="numpy", size=300)\npanel',
    "SliceViewer(volume, size=300)",
    'CenterSweep(scan, backend="numpy", size=300)',
    'CenterOverlay(scan, center=center, backend="numpy", size=300)',
    'PhaseSweep(scan, center=center, backend="numpy", size=300, compute=False)',
]


#: the sample scan (columns, rows, angles): its full reconstruction takes about 10 s on one
#: CPU core here, long enough to watch the bar move, cancel it and run it again
SAMPLE_SHAPE = (256, 160, 300)

#: seconds from pressing Reconstruct until the bar must have moved, and from Cancel until it says so
ADVANCE_WITHIN, CANCEL_WITHIN = 3.0, 2.0


def _write_sample(folder: Path):
    """A DXchange file of the analytic phantom (as ``tomolab demo`` writes it)."""
    import tomolab
    from tomolab.data import (
        iter_projection_slabs,
        simulate_flats_darks,
        simulation_attrs,
        simulation_parameters,
    )

    params = simulation_parameters(*SAMPLE_SHAPE, seed=3)
    flats, darks = simulate_flats_darks(params)
    tomolab.io.write_dxchange(folder / "sample.h5", iter_projection_slabs(params), params.angles,
                              flats, darks, pixel_size=params.pixel_size, energy=params.energy,
                              distance=params.distance, attrs=simulation_attrs(params))


def _write_notebook(path: Path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code) for code in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, path)


def _small_png(path: Path, data: bytes):
    """Save a screenshot as a small palette PNG (for the docs)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    if image.width > 900:
        image = image.resize((900, round(image.height * 900 / image.width)), Image.LANCZOS)
    image.quantize(colors=128).save(path, optimize=True)


#: for every error line shown anywhere in the notebook: where it is (the title of the panel's
#: step, or the cell) and its text
_ERROR_STEPS_JS = """(notebook) => Array.from(notebook.querySelectorAll('.tomolab-error'))
    .filter(e => e.innerText.trim())
    .map(e => {
        const step = e.closest('.jupyter-widget-Collapse');
        const cells = Array.from(notebook.querySelectorAll('.jp-CodeCell'));
        const cell = cells.indexOf(e.closest('.jp-CodeCell'));
        const title = step ? step.querySelector('.jupyter-widget-Collapse-header').innerText
                           : `cell ${cell}, outside the panel's steps`;
        return [title.trim(), e.innerText.trim()];
    })"""

#: the task bar of a panel step: (fraction shown by its bar, or null when hidden; its text)
_TASK_BAR_JS = """(step) => {
    // a step may hold several task bars (step 6: the one-slice preview's, hidden unless an
    // iterative method is chosen, and the reconstruction's): the first one shown
    for (const bar of step.querySelectorAll('.widget-hprogress .progress-bar')) {
        const row = bar.closest('.widget-hbox');
        if (row && row.offsetParent !== null)
            return [parseFloat(bar.style.width || bar.style.height || '0') / 100,
                    row.innerText.trim()];
    }
    return [null, ''];
}"""


class Walk:
    def __init__(self, page, cell):
        self.page, self.cell = page, cell
        SHOTS.mkdir(parents=True, exist_ok=True)

    def step(self, number):
        return self.cell.locator(".jupyter-widget-Collapse").nth(number - 1)

    def is_open(self, number):
        return "jupyter-widget-Collapse-open" in (self.step(number).get_attribute("class") or "")

    def open_step(self, number, timeout=30):
        """Open step ``number`` and make sure it stays open.

        The kernel may open a step itself (``show_step``) while the test clicks its header: a click
        that lands after the kernel's opening closes it again, so check that it stays open.
        """
        step, deadline = self.step(number), time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_open(number):
                step.locator(".jupyter-widget-Collapse-header").click()
            self.page.wait_for_timeout(500)
            if self.is_open(number):
                self.page.wait_for_timeout(500)
                if self.is_open(number):
                    return step
        raise AssertionError(f"step {number} did not stay open within {timeout} s")

    def errors(self):
        """Every error line shown in the notebook, as (where, text)."""
        return self.page.locator(".jp-Notebook").first.evaluate(_ERROR_STEPS_JS)

    def task_bar(self, step):
        """(fraction, text) of the task bar of ``step`` (fraction None while it is hidden)."""
        return tuple(step.evaluate(_TASK_BAR_JS))

    def until(self, check, what, timeout, *, watch=None):
        """Poll ``check()`` every 50 ms; return the seconds it took to become true, or fail.

        ``watch()`` (optional) is recorded whenever it changes, to say what was seen on failure.
        """
        began, seen = time.monotonic(), []
        while True:
            value = check()
            elapsed = time.monotonic() - began
            if watch is not None:
                now = watch()
                if not seen or seen[-1][1] != now:
                    seen.append((round(elapsed, 2), now))
            if value:
                return elapsed
            if elapsed > timeout:
                raise AssertionError(f"{what}: not within {timeout} s; seen: {seen}; "
                                     f"errors: {self.errors()}")
            self.page.wait_for_timeout(50)

    def wait_for(self, locator, what, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if locator.count() and locator.first.is_visible():
                return locator.first
            self.page.wait_for_timeout(250)
        self.shot(f"failed-{what}")
        raise AssertionError(f"{what}: not shown after {timeout} s; errors: {self.errors()}")

    def start_then_cancel(self, step, button, what):
        """Press ``button`` in ``step``; its bar must move soon; Cancel must stop it soon, part way.

        Returns the bar's text once cancelled ("cancelled (N of M ...)").
        """
        def watch():
            return self.task_bar(step)

        step.get_by_role("button", name=button).click()
        moved = self.until(lambda: (watch()[0] or 0) > 0, f"the {what}'s bar to advance",
                           ADVANCE_WITHIN, watch=watch)
        step.get_by_role("button", name="Cancel").click()
        stopped = self.until(lambda: "cancelled" in watch()[1], f"'cancelled' in the {what}'s bar",
                             CANCEL_WITHIN, watch=watch)
        fraction, text = watch()
        assert fraction < 1, (fraction, text)  # stopped part way
        print(f"{what}: the bar moved {moved:.2f} s after {button}; 'cancelled' {stopped:.2f} s "
              f"after Cancel: {text!r}")
        assert self.errors() == []  # a cancel is not an error
        return text

    def shot(self, name):
        no = self.page.locator(".Toastify").get_by_role("button", name="No")
        if no.count():  # "get notified about Jupyter news?" hides part of the picture
            no.first.click()
            self.page.wait_for_timeout(300)
        self.cell.scroll_into_view_if_needed()
        _small_png(SHOTS / f"{name}.png", self.cell.screenshot())


def _canvases_drawn(locator):
    return locator.locator(".bk-Canvas, .bk-canvas, canvas").count()


def test_walk_the_panel_then_reload(lab_server, tmp_path):
    from harness import WIDGET_ERROR_MARKERS, open_page, run_all_cells
    from playwright.sync_api import sync_playwright

    _write_sample(lab_server.root_dir)
    # no autosave: the reload must find the notebook as written, without outputs that load BokehJS
    docmanager = lab_server.root_dir / ".home" / "settings" / "@jupyterlab" / "docmanager-extension"
    docmanager.mkdir(parents=True, exist_ok=True)
    (docmanager / "plugin.jupyterlab-settings").write_text('{"autosave": false}')
    notebook = lab_server.root_dir / "panel_walk.ipynb"
    _write_notebook(notebook)
    js_errors, error_outputs = [], []

    with sync_playwright() as pw:
        browser, page = open_page(pw, viewport={"width": 1300, "height": 2600}, js_errors=js_errors)
        page.on("dialog", lambda dialog: dialog.accept())  # "leave the page?" on reload: yes

        def problems():
            found = list(js_errors)
            text = page.locator(".jp-Notebook").inner_text()
            found += [m for m in WIDGET_ERROR_MARKERS if m in text]
            found += page.locator('.jp-OutputArea-output[data-mime-type='
                                  '"application/vnd.jupyter.error"]').all_inner_texts()
            return found

        try:
            assert run_all_cells(page, 300, server=lab_server, notebook=notebook.name) == len(CELLS)
            page.wait_for_timeout(2000)
            cells = page.locator(".jp-Notebook .jp-CodeCell")
            walk = Walk(page, cells.nth(1).locator(".jp-OutputArea"))
            walk.wait_for(walk.cell.locator(".jupyter-widget-Collapse"), "the panel")
            walk.shot("0-panel")

            # 1. a wrong path: the error shows in step 1, and nowhere else
            path_box = walk.cell.get_by_placeholder("scan file: DXchange / NXtomo HDF5, or a TIFF folder")
            path_box.fill("no_such_scan.h5")
            path_box.press("Enter")
            walk.step(1).get_by_role("button", name="Open").click()
            walk.wait_for(walk.step(1).locator(".tomolab-error"), "the bad-path error")
            errors = walk.errors()
            assert errors and all(title.startswith("1.") for title, _ in errors), errors
            assert "no_such_scan.h5" in errors[0][1]
            walk.shot("1-file-error")

            # ... the right one: the description, then the preview with axes
            path_box.fill("sample.h5")
            path_box.press("Enter")
            walk.step(1).get_by_role("button", name="Open").click()
            walk.wait_for(walk.step(1).get_by_text("dxchange"), "the scan's description")
            # Open finds the centre, then opens step 2 itself and reconstructs the preview there
            walk.until(lambda: walk.is_open(2), "the panel to open step 2", 120)
            preview = walk.step(2)
            walk.wait_for(preview.get_by_text("at centre"), "the preview")
            assert _canvases_drawn(preview), "the preview has no Bokeh canvas"
            assert walk.errors() == []
            walk.shot("2-preview")

            # 3. the centre sweep: a fine one (seconds of work) cancelled, then Compute,
            # then "Use this centre", confirmed
            centre = walk.open_step(3)
            step_box = centre.get_by_label("step", exact=True)
            step_box.fill("0.1")
            step_box.press("Enter")
            text = walk.start_then_cancel(centre, "Compute", "centre sweep")
            assert "centres" in text and not centre.get_by_text("best centre").count()
            walk.shot("3-centre-sweep-cancelled")
            step_box.fill("0.5")
            step_box.press("Enter")
            centre.get_by_role("button", name="Compute").click()
            walk.wait_for(centre.get_by_text("best centre"), "the sweep", timeout=180)
            centre.get_by_role("button", name="Use this centre").first.click()
            walk.wait_for(centre.locator(".tomolab-adopted"), "the adopted centre")
            assert walk.errors() == []
            walk.shot("3-centre-sweep")
            centre.get_by_text("0°/180° overlay").click()
            page.wait_for_timeout(1500)
            assert _canvases_drawn(centre)
            walk.shot("3-centre-overlay")

            # 6. reconstruct: the bar moves soon, Cancel acts soon and says so, a rerun completes
            recon = walk.open_step(6)
            text = walk.start_then_cancel(recon, "Reconstruct", "reconstruction")
            assert "rows" in text
            assert not recon.get_by_text("slices of").count()  # no volume from a cancelled run
            walk.shot("6-reconstruction-cancelled")
            recon.get_by_role("button", name="Reconstruct").click()
            walk.until(lambda: (walk.task_bar(recon)[0] or 0) > 0,
                       "the rerun's bar to advance", ADVANCE_WITHIN,
                       watch=lambda: walk.task_bar(recon))
            walk.shot("6-reconstruction-running")
            walk.wait_for(recon.get_by_text("slices of"), "the reconstruction", timeout=300)
            print(recon.get_by_text("slices of").first.inner_text())
            assert walk.errors() == []
            walk.shot("6-reconstruction")

            # 8. the viewers (opened by the reconstruction)
            viewers = walk.step(8)
            walk.wait_for(viewers.locator(".bk-Canvas, .bk-canvas"), "the slice viewer")
            page.wait_for_timeout(3000)  # ipyvolume's first frame
            walk.shot("8-viewers")

            # 7. save
            output = walk.open_step(7)
            output.get_by_role("button", name="Save").click()
            walk.wait_for(output.get_by_text("saved"), "the save", timeout=120)
            assert (lab_server.root_dir / "sample_recon.zarr").is_dir()
            assert walk.errors() == []
            walk.shot("7-output")
            assert not problems(), problems()

            # a reload while the kernel lives on: the widgets must still draw
            page.reload()
            assert run_all_cells(page, 300) == len(CELLS)
            page.wait_for_timeout(2000)
            cells = page.locator(".jp-Notebook .jp-CodeCell")
            for i in range(2, len(CELLS) - 1):  # the viewer, the sweep, the overlay draw figures
                walk = Walk(page, cells.nth(i).locator(".jp-OutputArea"))
                walk.wait_for(walk.cell.locator(".bk-Canvas, .bk-canvas"), f"cell {i} after reload")
            phase = cells.nth(len(CELLS) - 1)
            walk = Walk(page, phase.locator(".jp-OutputArea"))
            walk.wait_for(walk.cell.locator(".tomolab-placeholder"), "the δ/β placeholder")
            # every control of the PhaseSweep ends within 750 px of its left edge
            right = walk.cell.evaluate("""c => {
                const box = c.querySelector('.widget-vbox'), left = box.getBoundingClientRect().left;
                const controls = box.querySelectorAll('.widget-inline-hbox:not(.widget-html), button');
                return Math.max(...Array.from(controls).map(e => e.getBoundingClientRect().right - left));
            }""")
            assert 300 < right <= 750, f"the PhaseSweep controls reach {right} px"
            for i, name in [(2, "reload-slices"), (3, "reload-sweep"), (4, "reload-overlay"),
                            (5, "reload-phase")]:
                Walk(page, cells.nth(i).locator(".jp-OutputArea")).shot(name)
            error_outputs = problems()
        except Exception:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)  # not in docs/
            raise
        finally:
            browser.close()
    assert not error_outputs, error_outputs
