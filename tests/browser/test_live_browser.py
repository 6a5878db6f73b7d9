"""LiveView in a real JupyterLab in headless Chromium: the slices change while frames arrive.

``live_smoke.ipynb`` starts a simulated detector that sends a projection every 0.1 s for about
40 s, and shows a :class:`tomolab.widgets.LiveView`. Once the cell has run and projections are
in the slices, a screenshot of the first slice is taken, and later ones (a second apart, for up
to 30 s, while frames still arrive) must come to differ from it: the view redraws as projections
go in. The stats line must count more projections by then, and no widget may fail to render.
Run with ``pytest -m browser tests/browser/test_live_browser.py``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab")
pytest.importorskip("playwright")

HERE = Path(__file__).resolve().parent
pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


def _projections_in_slices(page) -> int:
    text = page.locator(".jupyter-widgets", has_text="projections in the slices").last.inner_text()
    found = re.findall(r"(\d+) projections in the slices", text)
    return int(found[-1]) if found else -1


def test_live_view_slices_change_while_frames_arrive(lab_server):
    import harness
    from playwright.sync_api import sync_playwright

    notebook = HERE / "live_smoke.ipynb"
    harness._copy_cleared(notebook, lab_server.root_dir / notebook.name)
    artifacts = harness.ARTIFACTS
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        errors = []
        browser, page = harness.open_page(pw, viewport={"width": 1400, "height": 1000},
                                          js_errors=errors)
        harness.run_all_cells(page, 240, server=lab_server, notebook=notebook.name)
        page.wait_for_selector(harness.SEL_BOKEH, timeout=60_000)
        plot = page.locator(harness.SEL_BOKEH).first
        plot.scroll_into_view_if_needed()

        def shot():
            box = plot.bounding_box()
            clip = {"x": box["x"] + 0.2 * box["width"], "y": box["y"] + 0.2 * box["height"],
                    "width": 0.6 * box["width"], "height": 0.6 * box["height"]}
            return page.screenshot(clip=clip)

        # wait until projections are in the slices, then two shots a few seconds apart
        deadline = time.monotonic() + 60
        while _projections_in_slices(page) < 5 and time.monotonic() < deadline:
            page.wait_for_timeout(250)
        first, first_count = shot(), _projections_in_slices(page)
        # the browser draws the patches when it can (a loaded machine, a software GPU): poll
        second, deadline = first, time.monotonic() + 30
        while second == first and time.monotonic() < deadline:
            page.wait_for_timeout(1000)
            second = shot()
        second_count = _projections_in_slices(page)
        (artifacts / "live_smoke-first.png").write_bytes(first)
        (artifacts / "live_smoke-second.png").write_bytes(second)
        page.screenshot(path=str(artifacts / "live_smoke-page.png"), full_page=True)
        body = page.locator(".jp-Notebook").inner_text()
        browser.close()
    assert not [m for m in harness.WIDGET_ERROR_MARKERS if m in body], body[-2000:]
    assert not errors, errors
    assert 5 <= first_count < second_count < 400, (first_count, second_count)
    assert first != second, "the live slice did not change between the two screenshots"
