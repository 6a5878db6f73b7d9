"""Show holoviews plots inside ipywidgets containers.

A holoviews object is rendered to a Bokeh model (``hv.renderer('bokeh')``)
and wrapped in :class:`jupyter_bokeh.BokehModel`, an ipywidget (the same
bridge ``panel.ipywidget`` uses). The plot then lives in ``children`` like
any other widget, in JupyterLab and in saved widget state, and updates
travel as Bokeh model diffs over the widget comm: a holoviews stream event
(a new slice index) re-renders only the plots that listen to it, in place,
keeping zoom and pan. BokehJS itself is put into the page by every widget
that shows such plots, each time it is displayed (:class:`LoadsBokehJS`).

Chosen over ``hv.render`` into an ``ipywidgets.Output`` (which re-sends the
whole figure, flickers, resets zoom, and leaves nothing to test in Python)
and over panel's server-side layout (an extra layer for no gain here).
"""

from __future__ import annotations

import functools

from tomolab.widgets._task import call_in_kernel_thread

__all__ = ["HoloViewsWidget", "LoadsBokehJS"]


def HoloViewsWidget(obj):
    """Render holoviews ``obj`` and return ``(widget, plot)``.

    ``widget`` is a :class:`jupyter_bokeh.BokehModel`; ``plot`` is the
    holoviews plot, whose ``.state`` is the live Bokeh model (what the
    browser shows; tests read it).
    """
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401
    from jupyter_bokeh import BokehModel

    from tomolab.viz import ensure_extension

    ensure_extension()
    plot = hv.renderer("bokeh").get_plot(obj)
    widget = BokehModel(plot.state)
    widget.on_msg(widget._sync_model, remove=True)
    widget.on_msg(functools.partial(call_in_kernel_thread, functools.partial(_browser_event,
                                                                             widget)))
    return widget, plot


def _browser_event(widget, model, content, buffers):
    """Apply what the browser sends to a figure: its events, not its copies of our values.

    Runs on the kernel's thread (the message arrives on a kernel subshell's,
    see :func:`~tomolab.widgets._task.call_in_kernel_thread`). BokehJS under
    jupyter_bokeh sends back values the kernel set (the images, titles and
    colour ranges of each update, seen in the live view's browser test), late:
    applied, they put an older image back into the kernel's figure while the
    browser shows the newer one, and a 2048² plane travels back each redraw.
    tomolab's figures take no edits from the browser (no editing tools, no
    streams on ranges), so only its events (``MessageSent``: reset, tap) are
    applied; zoom and pan stay in the browser.
    """
    if content.get("kind") == "MessageSent":
        widget._sync_model(model, content, buffers)


class LoadsBokehJS:
    """Mixin for widgets that show Bokeh figures: load BokehJS before each display.

    jupyter_bokeh's views need ``window.Bokeh``. A page that was reloaded (the
    kernel lives on) or a notebook that never ran :func:`tomolab.viz.setup_notebook`
    has none, and the figures show "Click to show javascript error". Displaying
    such a widget therefore first publishes :func:`tomolab.viz.bokehjs_bundle`
    (inline, offline; it runs nothing when the page already has BokehJS), then
    the widget itself.
    """

    def _ipython_display_(self, **kwargs):
        from IPython.display import publish_display_data

        from tomolab.viz import bokehjs_bundle

        publish_display_data(bokehjs_bundle())
        publish_display_data(self._repr_mimebundle_(**kwargs))
