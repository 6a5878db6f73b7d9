"""Binder, checked as CI checks it: ``.ci/binder-check.sh`` run for real, as one test.

The script builds a fresh environment from ``binder/`` alone (as repo2docker does), then runs
every notebook of ``notebooks/`` in it, CPU only, with the whole process tree under 2 GB. As a
test it runs on one pytest worker while the others go on (``pytest -n 2``): most of its time is
pip and the notebooks' kernels, which would otherwise hold up the whole run before pytest
started. It needs the network (or pip's cache) for the environment, like ``.ci/run``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "binder-check.sh"
LIMIT_MB = 2048


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_binder_environment_runs_every_notebook_within_two_gb():
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    # the environment's own install of this checkout, not the test environment's path
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "NUMBA_CACHE_DIR", "PYTHONHOME")}
    result = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=1750, check=False)
    out = result.stdout
    assert result.returncode == 0, f"{SCRIPT} failed:\n{out[-4000:]}\n{result.stderr[-4000:]}"
    assert out.rstrip().endswith("binder-check: all notebooks ran in the Binder environment"), out
    ran = re.findall(r"^binder-check: (\S+\.ipynb)$", out, flags=re.MULTILINE)
    assert sorted(ran) == notebooks, out
    peaks = [float(mb) for mb in re.findall(r"peak memory of the process tree: (\d+) MB", out)]
    assert len(peaks) == len(notebooks) and max(peaks) <= LIMIT_MB, out
    print("peak MB per notebook:", dict(zip(ran, peaks)))
