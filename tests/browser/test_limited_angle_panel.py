"""A ±60° tilt series in ReconstructionPanel, in a real JupyterLab: the wedge, TV, its λ preview.

The panel opens a DXchange file of a simulated ±60° tilt series (121 projections). Step 3's
0°/180° overlay tab says in words that it needs projections 180° apart and which range the
scan covers (no error line, no figure). Step 6 names the missing wedge; picking "tv", unticking
"λ auto" and dragging the λ slider (one release) each preview one slice: a new Bokeh figure
whose title carries the slider's λ, read from BokehJS since it is drawn on a canvas. Reconstruct
then finishes. The steps are opened with test_panel_walk's ``Walk.open_step``, which survives
the kernel opening a step at the same moment. Fails on any error line
(``.tomolab-error``) shown anywhere, any error output, any "Error displaying widget" and any
uncaught JavaScript error.

Run with ``pytest -m browser tests/browser/test_limited_angle_panel.py``.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import pytest

pytest.importorskip("jupyterlab")
pytest.importorskip("playwright")

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

CELLS = [
    "import tomolab\nfrom tomolab.widgets import ReconstructionPanel",
    'panel = ReconstructionPanel("tilt.h5", backend="numpy", size=260)\npanel',
]

#: iterations of the TV previews and reconstruction: enough to see TV, few enough to be quick
ITERATIONS = 8


#: the titles of the Bokeh figures on the page (they are drawn on a canvas, not in the DOM)
TITLES_JS = """() => Object.values(window.Bokeh ? window.Bokeh.index : {})
    .map(view => view.model && view.model.title && view.model.title.text).filter(Boolean)"""


def _write_tilt_series(folder):
    """A ±60° tilt series (1° apart) of the simulated phantom as a DXchange file."""
    import tomolab

    turn = tomolab.data.simulate_scan(96, n_rows=4, n_angles=360, angle_range=2 * np.pi, seed=1)
    degrees = np.degrees(turn["angle"].values)
    signed = np.where(degrees > 180 + 1e-9, degrees - 360, degrees)
    keep = np.flatnonzero(np.abs(signed) <= 60 + 1e-9)
    order = keep[np.argsort(signed[keep])]
    tomolab.io.write_dxchange(folder / "tilt.h5", turn.projections.values[order],
                              np.radians(signed[order]), turn.flats.values, turn.darks.values,
                              pixel_size=turn.attrs["pixel_size"])
    return len(order)


def _write_notebook(path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code) for code in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, path)


def test_a_tilt_series_previews_tv_and_reconstructs(lab_server, tmp_path):
    from harness import WIDGET_ERROR_MARKERS, open_page, run_all_cells
    from playwright.sync_api import sync_playwright
    from test_panel_walk import Walk, _canvases_drawn

    began = time.monotonic()
    assert _write_tilt_series(lab_server.root_dir) == 121
    notebook = lab_server.root_dir / "tilt_panel.ipynb"
    _write_notebook(notebook)
    js_errors = []

    with sync_playwright() as pw:
        browser, page = open_page(pw, viewport={"width": 1300, "height": 2200}, js_errors=js_errors)
        try:
            assert run_all_cells(page, 120, server=lab_server, notebook=notebook.name) == len(CELLS)
            cell = page.locator(".jp-Notebook .jp-CodeCell").nth(1).locator(".jp-OutputArea")
            walk = Walk(page, cell)
            walk.wait_for(cell.locator(".jupyter-widget-Collapse"), "the panel")
            # the panel opened the file and previews the middle row in step 2 by itself
            walk.until(lambda: walk.is_open(2), "the panel to open step 2", 60)
            walk.wait_for(walk.step(2).get_by_text("at centre"), "the preview", timeout=90)
            assert walk.errors() == []

            # 3. the overlay tab: words, not an error and not an empty figure
            centre = walk.open_step(3)
            centre.get_by_text("0°/180° overlay", exact=True).click()
            note = walk.wait_for(centre.locator(".tomolab-unavailable"), "the overlay's note")
            text = note.inner_text()
            assert "needs two projections 180° apart" in text, text
            assert "angles cover -60°–60° (121 projections)" in text, text
            assert walk.errors() == []

            # 6. the wedge is named; tv; λ by hand previews one slice, each release another
            recon = walk.open_step(6)
            wedge = recon.locator(".tomolab-limited").inner_text()
            assert "no projection from 60° to 120°, 60° of the 180° that parallel-beam needs " \
                   "are missing" in wedge, wedge
            recon.locator("select").nth(1).select_option("tv")  # filter, then algorithm
            iterations = recon.get_by_label("iterations", exact=True)
            walk.wait_for(iterations, "the iteration count")
            iterations.fill(str(ITERATIONS))
            iterations.press("Enter")
            label = recon.get_by_text("row 2 in")

            def preview_canvas():
                return recon.locator(".bk-Canvas, .bk-canvas").first

            def picture():
                return preview_canvas().screenshot()

            def settled_picture():  # the same twice in a row: Bokeh has finished drawing
                last = picture()
                for _ in range(40):
                    page.wait_for_timeout(250)
                    now = picture()
                    if now == last:
                        return now
                    last = now
                raise AssertionError("the preview keeps changing")

            recon.get_by_label("λ auto").uncheck()  # a preview with the slider's λ
            walk.wait_for(label, "the first TV preview", timeout=60)
            assert _canvases_drawn(recon) and walk.errors() == []
            first = settled_picture()
            readout = recon.locator(".widget-slider .widget-readout").first
            before = readout.inner_text()
            # drag the handle and let go, as a user does: one release, one preview
            handle = recon.locator(".widget-slider .noUi-handle").first
            handle.scroll_into_view_if_needed()
            box = handle.bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 25, y, steps=5)
            page.mouse.up()
            walk.until(lambda: readout.inner_text() != before, "the λ readout to move", 10)
            chosen = float(readout.inner_text())
            assert chosen > float(before)

            def previewed():  # λ of the TV previews on the page, as their titles say
                return [float(t.rsplit("λ ", 1)[1]) for t in page.evaluate(TITLES_JS)
                        if t.startswith("row 2: tv, λ ")]

            walk.until(lambda: any(abs(v / chosen - 1) < 0.01 for v in previewed()),
                       f"a preview at the slider's λ {chosen}", 60, watch=previewed)
            assert walk.errors() == []
            assert preview_canvas().count() and settled_picture() != first
            if os.environ.get("TOMOLAB_BROWSER_DEBUG"):
                recon.screenshot(path=str(tmp_path / "step6.png"))
                print("step 6:", tmp_path / "step6.png")

            # Reconstruct with the same settings finishes, with no error line anywhere
            recon.get_by_role("button", name="Reconstruct").click()
            done = walk.wait_for(recon.get_by_text("slices of"), "the reconstruction", timeout=60)
            assert done.inner_text().startswith("4 slices of 96 × 96"), done.inner_text()
            assert walk.errors() == []
            text = page.locator(".jp-Notebook").inner_text()
            assert not [m for m in WIDGET_ERROR_MARKERS if m in text]
            assert not page.locator('.jp-OutputArea-output[data-mime-type='
                                    '"application/vnd.jupyter.error"]').count()
            assert not js_errors, js_errors
        except Exception:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    print(f"the walk took {time.monotonic() - began:.1f} s")
