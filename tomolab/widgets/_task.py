"""Long work in a widget: a progress bar, a cancel button, readable errors.

:class:`TaskBar` is the one piece every tomolab widget uses for work that
takes more than a moment (a block-averaged preview, a centre sweep, a full
reconstruction). The work is a plain function that takes a
:class:`Progress` as its first argument and calls it now and then; calling
it reports progress *and* is where a cancel takes effect::

    def work(progress, volume):
        for i, slab in enumerate(slabs):
            progress(i / n, f"slab {i} of {n}")   # raises Cancelled if asked to
            ...
        return result

    bar = TaskBar()
    bar.run(work, volume, on_done=show)

Errors raised by the work (or by an observer wrapped with
:meth:`TaskBar.guard` / :func:`guarded`) are shown as one readable line in
the widget, never as a traceback in the log; the exception object stays in
``bar.exception`` for debugging.
"""

from __future__ import annotations

import functools
import html
import threading
from contextlib import contextmanager

import ipywidgets as widgets
import traitlets

from tomolab.errors import Cancelled

__all__ = ["Cancelled", "Progress", "TaskBar", "call_in_kernel_thread", "dask_progress",
           "format_error", "guarded", "on_kernel_thread"]


def format_error(exc: BaseException) -> str:
    """One readable line for ``exc``: tomolab errors as they are, others with their type.

    Examples
    --------
    >>> from tomolab.errors import ParameterError
    >>> format_error(ParameterError("too small", where="size", value=1))
    'size=1: too small'
    >>> format_error(KeyError("z"))
    "KeyError: 'z'"
    """
    from tomolab.errors import TomolabError

    if isinstance(exc, TomolabError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def call_in_kernel_thread(fn, *args):
    """Run ``fn(*args)`` on the kernel's main thread (now, if this is it or there is no kernel).

    Widgets made in a worker thread send their comm-open message from that
    thread, and the frontend can receive the parent's update that shows them
    first: "Error displaying widget: model not found". Work runs in threads;
    whatever builds widgets from its result runs here, on the kernel's loop.

    The browser's own widget messages do not come on that thread either:
    JupyterLab sends them to a kernel *subshell* (ipykernel 7), whose thread
    runs the observers of the slider that moved while the kernel's thread may
    be redrawing the same figure. Bokeh documents and holoviews plots are not
    thread-safe, and a Bokeh update travels as several comm messages that two
    threads interleave (the browser then drops that figure's later updates),
    so every change to a figure goes through here (:func:`on_kernel_thread`).
    """
    if threading.current_thread() is threading.main_thread():
        return fn(*args)
    try:
        from IPython import get_ipython
        loop = getattr(getattr(get_ipython(), "kernel", None), "io_loop", None)
    except ImportError:
        loop = None
    if loop is None:
        return fn(*args)
    loop.add_callback(fn, *args)
    return None


def on_kernel_thread(method):
    """Decorate a widget callback so that it runs on the kernel's main thread.

    For observers and button handlers that change a figure: called from the
    thread of a kernel subshell (the browser's slider), the call is queued on
    the kernel's loop and returns ``None``; from the kernel's own thread, or
    outside a kernel, it runs at once and returns what ``method`` returns.
    See :func:`call_in_kernel_thread`.
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return call_in_kernel_thread(functools.partial(method, *args, **kwargs))

    return wrapper


class _Once:
    """A callable that runs its function the first time it is called, and never again."""

    def __init__(self, fn):
        self._fn = fn
        self._lock = threading.Lock()
        self._done = False

    def __call__(self):
        with self._lock:
            if self._done:
                return
            self._done = True
        self._fn()


class Progress:
    """Handle passed to work run by :class:`TaskBar`: report progress, honour cancel.

    ``progress(fraction, message=None)`` sets the bar (``fraction`` in [0, 1])
    and raises :class:`Cancelled` when a cancel was requested. Work that
    cannot call it often can test ``progress.cancelled`` itself.
    """

    def __init__(self, bar: TaskBar | None = None):
        self._bar = bar
        self._cancel = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self):
        self._cancel.set()

    def check(self):
        """Raise :class:`Cancelled` if a cancel was requested."""
        if self._cancel.is_set():
            raise Cancelled("cancelled")

    def __call__(self, fraction: float, message: str | None = None):
        if self._bar is not None:
            self._bar.progress = min(1.0, max(0.0, float(fraction)))
            if message is not None:
                self._bar.message = str(message)
        self.check()


@contextmanager
def dask_progress(progress: Progress):
    """Report a dask computation's progress to ``progress`` (local schedulers).

    Inside the ``with`` block every finished dask task updates the bar, and a
    cancel stops the computation at the next task (the :class:`Cancelled`
    exception propagates out of ``compute()``).
    """
    from dask.callbacks import Callback

    class _Cb(Callback):
        def _start_state(self, dsk, state):
            self._total = max(1, sum(len(state[k]) for k in ("ready", "waiting", "running", "finished")))

        def _posttask(self, key, result, dsk, state, worker_id):
            progress(len(state["finished"]) / self._total)

    with _Cb():
        yield progress


class TaskBar(widgets.VBox):
    """Progress bar, cancel button, status line and error label for long work.

    Traits
    ------
    state : {'idle', 'running', 'done', 'cancelled', 'error'}
        What the last task did. A cancelled task leaves its bar in view,
        stopped, with ``message`` saying "cancelled" and where.
    progress : float
        Fraction done, in [0, 1].
    message : str
        Status text shown beside the bar.
    error : str
        Readable message of the last error ('' when none); shown in red.

    Examples
    --------
    >>> bar = TaskBar()
    >>> bar.run(lambda progress, n: n * 2, 21, background=False)
    42
    >>> bar.state, bar.progress
    ('done', 1.0)
    >>> bar.run(lambda progress: 1 / 0, background=False) is None
    True
    >>> bar.state, bar.error
    ('error', 'ZeroDivisionError: division by zero')
    """

    state = traitlets.Enum(["idle", "running", "done", "cancelled", "error"], default_value="idle",
                           help="what the last task did").tag(sync=False)
    progress = traitlets.Float(0.0, help="fraction done, in [0, 1]")
    message = traitlets.Unicode("", help="status text beside the bar")
    error = traitlets.Unicode("", help="readable message of the last error; '' when none")

    def __init__(self, **kwargs):
        self.bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="",
                                         layout=widgets.Layout(width="50%"))
        self.cancel_button = widgets.Button(description="Cancel", icon="stop",
                                            button_style="warning",
                                            layout=widgets.Layout(width="auto"))
        self.status = widgets.Label("")
        self.error_label = widgets.HTML("")
        self._row = widgets.HBox([self.bar, self.cancel_button, self.status],
                                 layout=widgets.Layout(display="none"))
        super().__init__(**kwargs)
        self.children = [self._row, self.error_label]
        self.cancel_button.on_click(lambda _: self.cancel())
        self._handle: Progress | None = None
        self._thread: threading.Thread | None = None
        self.result = None
        self.exception: BaseException | None = None
        self._pending = None  # the on_done of the last task, until it has run

    @traitlets.validate("progress")
    def _valid_progress(self, proposal):
        return min(1.0, max(0.0, float(proposal["value"])))

    @traitlets.observe("progress")
    def _on_progress(self, change):
        self.bar.value = change["new"]

    @traitlets.observe("message")
    def _on_message(self, change):
        self.status.value = change["new"]

    @traitlets.observe("error")
    def _on_error(self, change):
        text = change["new"]
        self.error_label.value = (
            f'<div class="tomolab-error" style="color:#b00020;white-space:pre-wrap">'
            f"&#9888; {html.escape(text)}</div>" if text else "")

    @traitlets.observe("state")
    def _on_state(self, change):
        state = change["new"]
        running = state == "running"
        # a cancelled task keeps its bar where it stopped, with the word "cancelled" beside it
        self._row.layout.display = "flex" if state in ("running", "cancelled") else "none"
        self.bar.bar_style = "warning" if state == "cancelled" else ""
        self.cancel_button.layout.display = None if running else "none"
        self.cancel_button.disabled = not running
        self.cancel_button.description = "Cancel"

    # -- errors ------------------------------------------------------------
    def show_error(self, exc: BaseException):
        """Show ``exc`` as a readable line (and keep it in ``self.exception``)."""
        self.exception = exc
        self.error = format_error(exc)

    def clear_error(self):
        self.exception = None
        self.error = ""

    @contextmanager
    def guard(self):
        """Context manager: any exception inside is shown in the widget, not raised."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 -- the point is to show every error
            self.show_error(exc)
        else:
            self.clear_error()

    # -- running -----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.state == "running"

    def run(self, fn, *args, on_done=None, background=True, **kwargs):
        """Run ``fn(progress, *args, **kwargs)``; show progress, errors, cancel.

        Parameters
        ----------
        fn : callable
            The work; its first argument is a :class:`Progress`.
        on_done : callable, optional
            Called with the result when the work succeeded (errors it raises
            are shown too).
        background : bool
            Run in a thread so the notebook stays responsive and the cancel
            button works (default). ``False`` runs here and returns the result.

        Returns
        -------
        The result when ``background=False`` (None on error or cancel);
        otherwise None -- use :meth:`wait` or ``on_done``.
        """
        if self.running:
            from tomolab.errors import ParameterError
            self.show_error(ParameterError("a task is already running",
                                           fix="wait for it or press Cancel"))
            return None
        handle = Progress(self)
        self._handle = handle
        self._pending = None
        self.result = None
        self.clear_error()
        self.progress = 0.0
        self.message = ""
        self.state = "running"

        def target():
            try:
                result = fn(handle, *args, **kwargs)
                handle.check()
            except Cancelled as exc:
                text = str(exc)
                if "cancelled" not in text:
                    text = "cancelled"
                if text == "cancelled" and self.message:  # say where it stopped
                    text = f"cancelled ({self.message})"
                self.message = text
                self.state = "cancelled"
                return
            except Exception as exc:  # noqa: BLE001
                self.show_error(exc)
                self.state = "error"
                return
            self.result = result
            self.progress = 1.0
            self.state = "done"
            if on_done is not None:
                self._pending = once = _Once(lambda: self._finish(on_done, result))
                call_in_kernel_thread(once)

        if background:
            self._thread = threading.Thread(target=target, daemon=True, name="tomolab-task")
            self._thread.start()
            return None
        self._thread = None
        target()
        return self.result

    def _finish(self, on_done, result):
        with self.guard():
            on_done(result)

    def cancel(self):
        """Ask the running task to stop (at its next ``progress(...)`` call).

        The button says "Cancelling…" until the work stops; then the bar stays
        where it stopped and the status line says "cancelled" and where.
        """
        if self._handle is not None:
            self._handle.cancel()
            if self.running:
                self.cancel_button.disabled = True
                self.cancel_button.description = "Cancelling…"

    def wait(self, timeout: float | None = None):
        """Block until a background task ends; return its result (None on error/cancel).

        Its ``on_done`` has run when this returns (here, if the kernel's loop
        had not got to it yet).
        """
        if self._thread is not None:
            self._thread.join(timeout)
        pending = self._pending
        if pending is not None and (self._thread is None or not self._thread.is_alive()):
            pending()
        return self.result


def guarded(method):
    """Decorate a widget method so errors go to ``self.task`` (a :class:`TaskBar`).

    Use on trait observers and button callbacks: a bad value typed by the
    user then shows as a readable line in the widget instead of a traceback
    in the log.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.task.guard():
            return method(self, *args, **kwargs)

    return wrapper
