"""The docs site: it builds with warnings as errors, and it documents what tomolab exports.

The build test runs ``sphinx-build -W --keep-going`` exactly as CI does, in a
subprocess, into a temporary folder. The others check docs/conf.py's page
generators and that docs/api.md names every public name, without Sphinx.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tomolab

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load_conf():
    spec = importlib.util.spec_from_file_location("tomolab_docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)  # no side effects: pages are generated when a build starts
    return conf


def _documented_names() -> set[str]:
    """Names listed in the autosummary blocks of docs/api.md."""
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    names = set()
    for block in re.findall(r"\.\. autosummary::\n(.*?)```", text, flags=re.S):
        names.update(re.findall(r"^ {3}([A-Za-z_][\w.]*)\s*$", block, flags=re.M))
    return names


def test_api_page_lists_every_public_name():
    documented = _documented_names()
    assert {"open_scan", "reconstruct", "io", "hub"} <= documented, documented
    missing = []
    for name in tomolab.__all__:
        if name == "__version__":
            continue
        if importlib.util.find_spec(f"tomolab.{name}") is None:  # a function or class
            try:
                getattr(tomolab, name)
            except AttributeError:
                continue  # named in tomolab.__all__ but not defined yet: nothing to document
        if name not in documented:
            missing.append(name)
    packages = sorted(p.parent.name for p in (ROOT / "tomolab").glob("*/__init__.py")
                      if not p.parent.name.startswith("_"))
    missing += [name for name in packages if name not in documented and name not in missing]
    assert not missing, f"add these to docs/api.md: {missing}"


def _notebook(cells, metadata=None):
    return {"cells": cells, "metadata": metadata or {}, "nbformat": 4, "nbformat_minor": 5}


def test_sync_notebooks_mirrors_the_folder(tmp_path):
    conf = _load_conf()
    source, target = tmp_path / "notebooks", tmp_path / "docs" / "_generated" / "notebooks"
    (source / "advanced").mkdir(parents=True)
    (source / ".ipynb_checkpoints").mkdir()
    saved = _notebook([], {"kernelspec": {"name": "python3", "language": "python"}})
    (source / "01-start.ipynb").write_text(json.dumps(saved))
    (source / "advanced" / "02-phase.ipynb").write_text(json.dumps(_notebook([])))
    (source / "advanced" / "figure.png").write_bytes(b"\x89PNG")
    (source / "scan.h5").write_bytes(b"data, not for the docs")
    (source / ".ipynb_checkpoints" / "01-start-checkpoint.ipynb").write_text("{}")

    assert conf.sync_notebooks(source, target) == ["01-start", "advanced/02-phase"]
    copied = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert copied == ["01-start.ipynb", "advanced/02-phase.ipynb", "advanced/figure.png"]
    # a notebook saved by Jupyter is copied as it is; one written by a script is marked Python
    assert (target / "01-start.ipynb").read_bytes() == (source / "01-start.ipynb").read_bytes()
    metadata = json.loads((target / "advanced" / "02-phase.ipynb").read_text())["metadata"]
    assert metadata["language_info"]["name"] == "python"

    (source / "advanced" / "02-phase.ipynb").unlink()
    (source / "advanced" / "figure.png").unlink()
    assert conf.sync_notebooks(source, target) == ["01-start"]
    assert not (target / "advanced").exists()


def test_user_guide_toc_and_benchmark_results(tmp_path):
    conf = _load_conf()
    assert "No notebooks" in conf.notebooks_toc([])
    toc = conf.notebooks_toc(["01-start", "advanced/02-phase"])
    assert toc.startswith("```{toctree}")
    assert "\n_generated/notebooks/01-start\n_generated/notebooks/advanced/02-phase\n" in toc

    assert conf.benchmark_results(tmp_path) == "No benchmark results recorded yet.\n"
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "RESULTS.md").write_text("# Results\n")
    assert conf.benchmark_results(tmp_path).startswith("```{include} ../benchmarks/RESULTS.md\n")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_docs_build_without_warnings(tmp_path):
    out = tmp_path / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
               "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=580)
    log = result.stdout[-3000:] + result.stderr[-6000:]
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{log}"

    for page in ["index", "install", "user-guide", "api", "benchmarks",
                 "_generated/api/tomolab.reconstruct", "_generated/api/tomolab.prep"]:
        assert (out / f"{page}.html").is_file(), page
    if (DOCS / "deployment.md").is_file():
        assert (out / "deployment.html").is_file()

    notebooks = sorted(p.relative_to(ROOT / "notebooks").with_suffix("").as_posix()
                       for p in (ROOT / "notebooks").rglob("*.ipynb")
                       if not any(part.startswith(".") for part in p.parts))
    guide = (out / "user-guide.html").read_text(encoding="utf-8")
    for name in notebooks:
        assert (out / "_generated" / "notebooks" / f"{name}.html").is_file(), name
        assert f"_generated/notebooks/{name}.html" in guide, name

    benchmarks = (out / "benchmarks.html").read_text(encoding="utf-8")
    results = ROOT / "benchmarks" / "RESULTS.md"
    if results.is_file():
        words = re.findall(r"[A-Za-z]{5,}", results.read_text(encoding="utf-8"))
        assert words and all(word in benchmarks for word in words[:20])
        assert "No benchmark results recorded yet" not in benchmarks
    else:
        assert "No benchmark results recorded yet" in benchmarks
