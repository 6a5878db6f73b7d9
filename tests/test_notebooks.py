"""The notebooks run top to bottom under nbval, and their key numbers match the saved ones.

Each notebook runs in its own ``pytest --nbval-lax`` (a fresh kernel, in a copy of the
notebook in a temporary folder, so the sample data it writes stays out of the
repository). In lax mode only the cells marked ``# NBVAL_CHECK_OUTPUT`` are compared with
their saved outputs -- the found centre, its error, the best δ/β, the volume fraction, all
printed rounded -- and any error in any cell fails the notebook.

Run one by hand with ``python -m pytest --nbval-lax notebooks/01-quickstart.ipynb``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbval", reason="install the test extra: pip install -e .[test]")
for _module in ("ipykernel", "ipywidgets", "holoviews", "panel", "ipyvolume", "jupyter_bokeh"):
    pytest.importorskip(_module, reason="the notebooks need the notebook extra: "
                                        "pip install -e .[notebook]")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + [ROOT / "tests/browser/viewer_smoke.ipynb"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_the_notebooks_are_there():
    names = [p.name for p in NOTEBOOKS]
    for expected in ("01-quickstart.ipynb", "02-centre-of-rotation.ipynb",
                     "03-phase-retrieval.ipynb", "04-full-volume.ipynb", "05-segmentation.ipynb",
                     "06-live.ipynb", "07-few-angles.ipynb"):
        assert expected in names


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_matches_its_checked_outputs(notebook, tmp_path):
    copy = tmp_path / notebook.name
    shutil.copy(notebook, copy)
    env = dict(os.environ, MPLBACKEND="Agg", BOKEH_RESOURCES="inline", PYTHONUNBUFFERED="1")
    # the CPU path everywhere unless a GPU is there: backend="auto" decides inside the notebook
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(tmp_path), "-c", os.devnull, "--nbval-cell-timeout=240", copy.name],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=290)
    assert result.returncode == 0, (f"{notebook.name} failed under nbval:\n"
                                    f"{result.stdout[-6000:]}\n{result.stderr[-2000:]}")
