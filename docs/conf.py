"""Sphinx configuration for the tomolab docs.

Build (as CI does, warnings are errors)::

    python -m pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

Pages that depend on files outside ``docs/`` are generated into
``docs/_generated/`` (git-ignored) at the start of every build
(:func:`generate_pages`):

- ``_generated/notebooks/``: a copy of ``../notebooks`` (Sphinx reads only
  files under its source folder). Notebooks are shown with the outputs they
  were saved with; they are never executed here (nbval runs them in the tests).
- ``_generated/notebooks.md``: the user guide's table of contents, one entry
  per notebook found, or a sentence saying there are none yet.
- ``_generated/api/``: autosummary's pages, one per documented object,
  written afresh by every build (so a name dropped from an ``__all__`` leaves
  no stale page behind).

The benchmarks page gets ``../benchmarks/RESULTS.md`` through ``{include}``
(one source), or a line saying that no results are recorded yet, appended to
``benchmarks.md`` as it is read (:func:`benchmark_results`).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
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

# .rst first: autosummary writes its pages with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
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
# Outputs that hold only HoloViews' JavaScript plumbing (the load/exec mime types, which have no
# static rendering) are skipped by myst-nb with this warning; nothing a reader sees is lost.
suppress_warnings = ["mystnb.unknown_mime_type"]
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# -- API reference (docs/api.md) -----------------------------------------------------------
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
# dropped, so every other warning still fails the build. Once a docstring is
# fixed, the build fails with a warning that says to delete its entry.
KNOWN_BAD_DOCSTRINGS: dict[str, str] = {}

# -- HTML --------------------------------------------------------------------
html_theme = "furo"
html_title = f"tomolab {release}"


# -- pages generated from files outside docs/ -------------------------------
def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless ``path`` already holds it (keeps incremental builds incremental)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


NOTEBOOK_FILES = {".ipynb", ".png", ".jpg", ".jpeg", ".gif", ".svg"}


def sync_notebooks(source: Path, target: Path) -> list[str]:
    """Mirror the notebooks under ``source`` (and the images they show) into ``target``.

    Hidden files and folders (``.ipynb_checkpoints``) are skipped; files in
    ``target`` that are no longer in ``source`` are removed. Returns the
    notebooks' paths relative to ``target``, without suffix, sorted.
    """
    wanted = {}
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            if (path.is_file() and path.suffix.lower() in NOTEBOOK_FILES
                    and not any(part.startswith(".") for part in rel.parts)):
                wanted[rel] = path
    if target.is_dir():
        for path in sorted(target.rglob("*"), reverse=True):  # files before their folders
            if path.is_file() and path.relative_to(target) not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    for rel, path in wanted.items():
        data = path.read_bytes()
        if path.suffix == ".ipynb":
            data = _with_language(data)
        copy = target / rel
        if not copy.exists() or copy.read_bytes() != data:
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(data)
    return [rel.with_suffix("").as_posix() for rel in wanted if rel.suffix == ".ipynb"]


def _with_language(data: bytes) -> bytes:
    """Say that a notebook is Python where it does not say (written by a script, not Jupyter).

    myst-nb highlights code cells in the notebook's language and warns when
    none is given; nbval runs such notebooks with the default Python kernel.
    """
    notebook = json.loads(data)
    metadata = notebook.setdefault("metadata", {})
    if metadata.get("language_info") or metadata.get("kernelspec"):
        return data
    metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    return (json.dumps(notebook, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def notebooks_toc(notebooks: list[str], folder: str = "_generated/notebooks") -> str:
    """The user guide's table of contents (MyST), or a sentence when there are no notebooks."""
    if not notebooks:
        return "No notebooks have been written yet.\n"
    entries = "\n".join(f"{folder}/{name}" for name in notebooks)
    return f"```{{toctree}}\n:maxdepth: 1\n\n{entries}\n```\n"


def benchmark_results(root: Path) -> str:
    """``{include}`` of ``benchmarks/RESULTS.md`` (MyST), or a sentence when it does not exist."""
    if not (root / "benchmarks" / "RESULTS.md").is_file():
        return "No benchmark results recorded yet.\n"
    # heading-offset: RESULTS.md's headings go under the page's own title;
    # relative-images: its image paths are relative to benchmarks/
    return ("```{include} ../benchmarks/RESULTS.md\n"
            ":heading-offset: 1\n"
            ":relative-images:\n"
            "```\n")


def _append_benchmark_results(app, docname, source) -> None:
    # Appended to docs/benchmarks.md as it is read, not written to a file that the
    # page includes: MyST resolves image paths of a nested include against the
    # folder of the file holding the {include}, which would break RESULTS.md's images.
    if docname == "benchmarks":
        source[0] = source[0].rstrip("\n") + "\n\n" + benchmark_results(ROOT)


def _benchmarks_always_outdated(app, env, added, changed, removed):
    return ["benchmarks"]  # RESULTS.md may have appeared or gone since the last build


def generate_pages(app=None, config=None) -> None:
    """Write docs/_generated/ from ../notebooks (run on config-inited)."""
    shutil.rmtree(GENERATED / "api", ignore_errors=True)  # autosummary rewrites it next
    notebooks = sync_notebooks(ROOT / "notebooks", GENERATED / "notebooks")
    _write_if_changed(GENERATED / "notebooks.md", notebooks_toc(notebooks))


# -- build-time hooks ---------------------------------------------------------
class _KnownBadDocstrings(logging.Filter):
    """Drop the docutils warnings of the docstrings in KNOWN_BAD_DOCSTRINGS, and note them."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "type", None) != "docutils":
            return True
        location = str(getattr(record, "location", ""))
        for name in KNOWN_BAD_DOCSTRINGS:
            if f"docstring of {name}:" in location:
                self.seen.add(name)
                return False
        return True


_known_bad = _KnownBadDocstrings()


def _check_known_bad(app, exception) -> None:
    # Every build re-reads the API pages (generate_pages removes them), so an
    # entry with no warnings is fixed. Parallel reads log in worker processes.
    if exception is None and app.parallel <= 1:
        for name in sorted(set(KNOWN_BAD_DOCSTRINGS) - _known_bad.seen):
            logging.getLogger("sphinx.tomolab").warning(
                "the docstring of %s builds cleanly now: delete its entry from "
                "KNOWN_BAD_DOCSTRINGS in docs/conf.py", name)


def _trait_help_as_written(app, what, name, obj, options, lines) -> None:
    """Show a trait's ``help`` text as written, not as napoleon reads it.

    traitlets gives each trait its ``help=`` string as ``__doc__``. Napoleon
    reads an attribute docstring's first line ``A: B`` as type ``A``, which
    turns help such as "The GPU pool: one dict per device" into a wrong type.
    Runs after napoleon and puts the help text back.
    """
    help_text = getattr(obj, "help", None)
    if what == "attribute" and type(obj).__module__.startswith("traitlets") and help_text:
        lines[:] = [*inspect.cleandoc(help_text).splitlines(), ""]


def setup(app):
    # ahead of Sphinx's own filters, which count warnings and raise under -W
    for handler in logging.getLogger("sphinx").handlers:
        handler.filters.insert(0, _known_bad)
    app.connect("config-inited", generate_pages, priority=100)  # before autosummary reads sources
    app.connect("source-read", _append_benchmark_results)
    app.connect("env-get-outdated", _benchmarks_always_outdated)
    app.connect("autodoc-process-docstring", _trait_help_as_written, priority=600)  # napoleon: 500
    app.connect("build-finished", _check_known_bad)
