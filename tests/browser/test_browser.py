"""Notebooks in a real JupyterLab in headless Chromium (offline: local requests only).

Run with ``pytest -m browser tests/browser``; needs Chromium (``.ci/browser-setup.sh``)
and the ``notebook`` + ``test`` extras. Screenshots land in ``tests/browser/artifacts/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("jupyterlab")
pytest.importorskip("playwright")

HERE = Path(__file__).resolve().parent

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

NB = HERE.parents[1] / "notebooks"

# each notebook with what it must show. The harness moves the first slider on the page and
# expects the first Bokeh plot to change: a slice viewer's z slider (01, 04), a centre sweep's
# trial slider (02), the segmenter's threshold (05). In 03 the first slider is the δ/β range,
# which changes no image until Compute, so there the plots and the absence of errors count.
NOTEBOOKS = [
    pytest.param(HERE / "viewer_smoke.ipynb", dict(need_slider=True, need_bokeh=True,
                                                   need_ipyvolume=True), id="viewer_smoke"),
    pytest.param(NB / "01-quickstart.ipynb", dict(need_slider=True, need_bokeh=True), id="01"),
    pytest.param(NB / "02-centre-of-rotation.ipynb", dict(need_slider=True, need_bokeh=True),
                 id="02"),
    pytest.param(NB / "03-phase-retrieval.ipynb", dict(need_slider=False, need_bokeh=True),
                 id="03"),
    pytest.param(NB / "04-full-volume.ipynb", dict(need_slider=True, need_bokeh=True,
                                                   need_ipyvolume=True), id="04"),
    pytest.param(NB / "05-segmentation.ipynb", dict(need_slider=True, need_bokeh=True), id="05"),
]


@pytest.mark.parametrize("notebook,needs", NOTEBOOKS)
def test_notebook_in_browser(lab_server, notebook, needs):
    from harness import run_notebook_in_browser

    report = run_notebook_in_browser(notebook, server=lab_server)
    problems = report.problems(**needs)
    assert not problems, f"{notebook.name}: {problems}\nscreenshots: {report.screenshots}"
    assert report.cells_run >= 1


def test_harness_flags_cdn_requests_and_errors(lab_server, tmp_path):
    """The harness itself fails a notebook that loads a script from elsewhere or raises."""
    import nbformat
    from harness import run_notebook_in_browser

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from IPython.display import HTML\n"
            "HTML('<script src=\"https://cdn.example.invalid/bokeh.min.js\"></script>')"),
        nbformat.v4.new_code_cell("1 / 0"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    path = tmp_path / "bad_notebook.ipynb"
    nbformat.write(nb, path)
    report = run_notebook_in_browser(path, server=lab_server, timeout=120)
    problems = report.problems(need_slider=False, need_bokeh=False)
    assert any("ZeroDivisionError" in e for e in report.error_outputs), report
    assert any("cdn.example.invalid" in u for u in report.external_requests), report
    assert any("non-local" in p for p in problems)
