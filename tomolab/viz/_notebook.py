"""Notebook set-up: serve Bokeh/Panel JavaScript from the Jupyter server.

Panel and holoviews load BokehJS from a CDN by default. Facility networks
(and CI) are often offline, and the plots are then blank ("Unable to run
Panel code because Bokeh or Panel library is missing"). ``inline=True``
embeds the JavaScript in the notebook output instead, served by the kernel
through the Jupyter server; widgets made by :mod:`tomolab.widgets` get theirs
from the installed JupyterLab extensions (jupyter_bokeh, ipyvolume).
"""

from __future__ import annotations

import functools
import json

__all__ = ["bokehjs_bundle", "ensure_extension", "setup_notebook"]

_loaded = False

#: the MIME type jupyter_bokeh's JupyterLab extension runs as a script (no other extension needed)
BOKEHJS_LOAD_MIME = "application/vnd.bokehjs_load.v0+json"


def setup_notebook(*, force=False):
    """Load the holoviews and Panel extensions with inline (offline) JavaScript.

    Call once at the top of a notebook, before the first plot; tomolab's
    viewers call it for you (:func:`ensure_extension`). Calling it again does
    nothing unless ``force=True``.

    Returns
    -------
    bool
        True when the extensions were loaded by this call.

    Examples
    --------
    >>> import tomolab.viz as tv
    >>> tv.setup_notebook()  # doctest: +SKIP
    True
    """
    global _loaded
    if _loaded and not force:
        return False
    import holoviews as hv
    import panel as pn

    # panel first: hv.extension would otherwise load the default (CDN) resources
    pn.extension(inline=True)
    hv.extension("bokeh", inline=True, logo=False)
    _loaded = True
    return True


def ensure_extension():
    """Make sure :func:`setup_notebook` has run in this kernel (idempotent)."""
    return setup_notebook()


@functools.lru_cache(maxsize=1)
def _bokehjs_loader() -> str:
    """JavaScript that puts BokehJS (inline, offline) into the page unless this version is there."""
    import bokeh
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    # the pieces a holoviews figure needs (BokehJS and its WebGL part), not the widget and
    # table extensions, and never Panel's (served from a path, which a page may not have)
    bundle = bundle_for_objs_and_resources([figure()], INLINE)
    pieces = [code for code in bundle.js_raw if code.lstrip().startswith("/* BEGIN")]
    return (
        "(function () {\n"
        f"  if (window.Bokeh !== undefined && window.Bokeh.version === {json.dumps(bokeh.__version__)})"
        " { return; }\n"
        f"  var pieces = {json.dumps(pieces)};\n"
        "  for (var i = 0; i < pieces.length; i++) {\n"
        "    var script = document.createElement('script');\n"
        "    script.textContent = pieces[i];\n"
        "    document.head.appendChild(script);  // runs now, before the widget views are made\n"
        "  }\n"
        "})();\n")


def bokehjs_bundle() -> dict:
    """A display bundle that loads BokehJS into the page, inline, unless the page has it.

    A notebook page loses its JavaScript when it is reloaded while the kernel
    lives on, and :func:`setup_notebook` acts once per kernel. Widgets that
    show Bokeh figures publish this bundle each time they are displayed
    (before their own view), so their plots draw without any set-up step,
    after a reload, and offline. It is rendered by jupyter_bokeh's JupyterLab
    extension (the one that draws the figures), or as plain JavaScript in
    other front ends; a page that already has this BokehJS runs nothing.

    Examples
    --------
    >>> bundle = bokehjs_bundle()
    >>> sorted(bundle)
    ['application/javascript', 'application/vnd.bokehjs_load.v0+json']
    >>> "window.Bokeh.version" in bundle["application/javascript"]
    True
    """
    code = _bokehjs_loader()
    return {"application/javascript": code, BOKEHJS_LOAD_MIME: code}
