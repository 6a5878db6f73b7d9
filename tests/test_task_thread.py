"""Widgets built from a background task's result are built on the kernel's thread."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("ipywidgets")

from tomolab.widgets import TaskBar  # noqa: E402


class FakeLoop:
    """Stands in for the kernel's io_loop: records callbacks instead of running them."""

    def __init__(self):
        self.callbacks = []

    def add_callback(self, fn, *args):
        self.callbacks.append((fn, args))


@pytest.fixture
def kernel_loop(monkeypatch):
    loop = FakeLoop()
    kernel = type("Kernel", (), {"io_loop": loop})()
    shell = type("Shell", (), {"kernel": kernel})()
    import IPython
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    return loop


def test_on_done_goes_to_the_kernel_thread_and_wait_runs_it_once(kernel_loop):
    threads = []
    bar = TaskBar()
    bar.run(lambda progress: 7, on_done=lambda r: threads.append((threading.current_thread(), r)))
    assert bar.wait() == 7
    assert threads == [(threading.main_thread(), 7)]  # wait() ran it here, on this thread
    assert len(kernel_loop.callbacks) == 1
    fn, args = kernel_loop.callbacks[0]
    fn(*args)  # the kernel's loop gets to it later: nothing happens twice
    assert len(threads) == 1


def test_without_a_kernel_on_done_runs_in_the_task(monkeypatch):
    import IPython
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    done = threading.Event()
    bar = TaskBar()
    bar.run(lambda progress: 1, on_done=lambda r: done.set())
    bar.wait()
    assert done.is_set()
