"""Sphinx configuration for the tomolab docs.

Build (as CI does, warnings are errors)::

    python -m pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

Pages that depend on files outside ``docs/`` are generated into
``docs/_generated/`` (git-ignored) each time this file is read:

- ``_generated/notebooks/``: a copy of ``../notebooks`` (Sphinx reads only
  files under its source folder). Notebooks are shown with the outputs they
  were saved with; they are never executed here (nbval runs them in the tests).
- ``_generated/notebooks.md``: the user guide's table of contents, one entry
  per notebook found, or a sentence saying there are none yet.
- ``_generated/benchmark-results.md``: includes ``../benchmarks/RESULTS.md``
  (one source), or says that no results are recorded yet.
- ``_generated/api/``: autosummary's pages, one per documented object.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"

# the docs describe this checkout, even where another tomolab is installed
sys.path.insert(0, str(ROOT))
import tomolab  # noqa: E402

project = "tomolab"
author = "the tomolab developers"
copyright = "the tomolab developers"
release = tomolab.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",  # Markdown pages (MyST) and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # numpydoc docstrings (keeps custom sections such as "Traits")
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}  # .rst first: autosummary writes its pages in it
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "**/.ipynb_checkpoints",
    # pulled into pages with {include}, not pages of their own
    "_generated/*.md",
]

# -- notebooks ---------------------------------------------------------------
nb_execution_mode = "off"  # nbval executes the notebooks in the test suite
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# -- API reference -----------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False  # a module's __all__ says what is public
# Every documented module has an __all__ and re-exports its names from private
# submodules; say so explicitly, since autosummary looks for "__all__" in dir(module)
# and a module with its own __dir__ (tomolab.hub) need not list it.
autosummary_imported_members = True
autodoc_typehints = "none"  # the numpydoc Parameters sections carry the types
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# widgets document their traits (their API) in a "Traits" section, laid out as parameters
napoleon_custom_sections = [("Traits", "params_style")]

# Optional dependencies that a docs environment may lack. Mock only what is
# missing, so that a full environment documents the real classes (widget
# and spawner traits with their help text) and a light one still builds.
_OPTIONAL_IMPORTS = [
    "cupy", "cupyx",  # GPU only
    "jupyterhub", "tornado",  # tomolab.hub.spawner
    "ipywidgets", "traitlets",  # tomolab.widgets
    "holoviews", "hvplot", "panel", "bokeh", "jupyter_bokeh", "datashader", "ipyvolume",  # viewers
    "astra", "tomopy",  # optional peers
]
autodoc_mock_imports = [name for name in _OPTIONAL_IMPORTS if importlib.util.find_spec(name) is None]

# Docstrings in other modules that are not valid reStructuredText yet. Only
# the docutils warnings raised while parsing exactly these docstrings are
# dropped, so every other warning still fails the build; delete an entry as
# soon as its docstring is fixed (tests/test_docs.py fails on stale entries).
KNOWN_BAD_DOCSTRINGS = {
    # "Public API" lists signatures as indented plain text (wants a "::" literal block)
    "tomolab.io": "Unexpected indentation / Inline emphasis start-string without end-string",
    # a parameter-name list broken over two lines ("...attrs,\n    chunks, ... :")
    "tomolab.io._write.write_nxtomo": "Unexpected indentation / Field list ends without a blank line",
}


class _KnownBadDocstrings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "type", None) != "docutils":
            return True
        location = str(getattr(record, "location", ""))
        if any(f"docstring of {name}:" in location for name in KNOWN_BAD_DOCSTRINGS):
            DROPPED_WARNINGS.append(f"{location}: {record.getMessage()}")
            return False
        return True


DROPPED_WARNINGS: list[str] = []


def _trait_help_is_prose(app, what, name, obj, options, lines):
    """Keep napoleon from reading a trait's ``help`` text as ``type: description``.

    traitlets gives each trait its ``help=`` string as ``__doc__``. Napoleon
    parses an attribute docstring's first line ``A: B`` as type ``A``, which
    turns help such as "The GPU pool: one dict per device" into a wrong type.
    A leading blank line makes napoleon take the whole text as description.
    """
    if what == "attribute" and lines and type(obj).__module__.startswith("traitlets"):
        lines.insert(0, "")


def setup(app):
    # ahead of Sphinx's own filters, which count warnings and raise under -W
    for handler in logging.getLogger("sphinx").handlers:
        handler.filters.insert(0, _KnownBadDocstrings())
    app.connect("autodoc-process-docstring", _trait_help_is_prose, priority=400)  # napoleon: 500


# -- HTML --------------------------------------------------------------------
html_theme = "furo"
html_title = f"tomolab {release}"
html_static_path = []


# -- pages generated from files outside docs/ -------------------------------
def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless ``path`` already holds it (keeps incremental builds incremental)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


_NOTEBOOK_FILES = {".ipynb", ".png", ".jpg", ".jpeg", ".gif", ".svg"}


def _visible(path: Path, top: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(top).parts)


def _sync_notebooks() -> list[str]:
    """Mirror ../notebooks (notebooks and the images they show) into _generated/notebooks."""
    source, target = ROOT / "notebooks", GENERATED / "notebooks"
    wanted = {}
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.suffix.lower() in _NOTEBOOK_FILES and _visible(path, source):
                wanted[path.relative_to(source)] = path
    if target.is_dir():
        for path in sorted(target.rglob("*"), reverse=True):
            rel = path.relative_to(target)
            if path.is_file() and rel not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    for rel, path in wanted.items():
        copy = target / rel
        if not copy.exists() or copy.read_bytes() != path.read_bytes():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
    return [rel.with_suffix("").as_posix() for rel in wanted if rel.suffix == ".ipynb"]


def _notebooks_toc(notebooks: list[str]) -> str:
    if not notebooks:
        return "No notebooks have been written yet.\n"
    entries = "\n".join(f"_generated/notebooks/{name}" for name in notebooks)
    return f"```{{toctree}}\n:maxdepth: 1\n\n{entries}\n```\n"


def _benchmark_results() -> str:
    results = ROOT / "benchmarks" / "RESULTS.md"
    if not results.exists():
        return "No benchmark results recorded yet.\n"
    # paths in {include} are relative to the page that includes this file (docs/benchmarks.md)
    return ("```{include} ../benchmarks/RESULTS.md\n"
            ":heading-offset: 1\n"
            ":relative-images:\n"
            "```\n")


_write_if_changed(GENERATED / "notebooks.md", _notebooks_toc(_sync_notebooks()))
_write_if_changed(GENERATED / "benchmark-results.md", _benchmark_results())
