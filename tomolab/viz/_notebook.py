"""Notebook set-up: serve Bokeh/Panel JavaScript from the Jupyter server.

Panel and holoviews load BokehJS from a CDN by default. Facility networks
(and CI) are often offline, and the plots are then blank ("Unable to run
Panel code because Bokeh or Panel library is missing"). ``inline=True``
embeds the JavaScript in the notebook output instead, served by the kernel
through the Jupyter server; widgets made by :mod:`tomolab.widgets` get theirs
from the installed JupyterLab extensions (jupyter_bokeh, ipyvolume).
"""

from __future__ import annotations

__all__ = ["setup_notebook", "ensure_extension"]

_loaded = False


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
