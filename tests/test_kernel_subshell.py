"""In a real ipykernel, a slider moved from a kernel subshell redraws the figure on the kernel's thread.

JupyterLab sends widget messages to a subshell (ipykernel 7), whose thread runs
the observers of the slider that moved. A Bokeh figure changed from that thread
while the kernel's thread redraws it too is sent to the browser as interleaved
messages, and the browser then drops that figure's later updates (the live
view's ``xy`` slice froze in the browser test). Here a real kernel runs a
:class:`tomolab.widgets.SliceViewer`; a subshell moves its ``z`` slider, as the
browser's message does, and every change of the figure's Bokeh document must
happen on the kernel's main thread, and the figure must show the new slice.
"""

from __future__ import annotations

import ast
import textwrap

import pytest

pytest.importorskip("ipykernel")
pytest.importorskip("jupyter_bokeh")
jupyter_client = pytest.importorskip("jupyter_client")

pytestmark = pytest.mark.timeout(180)

SETUP = textwrap.dedent("""
    import threading
    import numpy as np
    import xarray as xr
    from tomolab.widgets import SliceViewer

    volume = xr.DataArray(np.arange(6 * 8 * 10, dtype="float32").reshape(6, 8, 10),
                          dims=("z", "y", "x"))
    viewer = SliceViewer(volume)
    changed_on = []
    viewer._plot.state.document.on_change(
        lambda event: changed_on.append(threading.current_thread().name))
""")


def _execute(client, code, subshell_id=None, timeout=60):
    """Run ``code`` in the main shell or a subshell; return the value it left in ``_out``."""
    content = {"code": code, "silent": False, "store_history": False, "allow_stdin": False,
               "stop_on_error": True, "user_expressions": {"out": "_out"}}
    msg = client.session.msg("execute_request", content)
    if subshell_id is not None:
        msg["header"]["subshell_id"] = subshell_id
    client.shell_channel.send(msg)
    while True:
        reply = client.shell_channel.get_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            break
    assert reply["content"]["status"] == "ok", reply["content"].get("traceback")
    out = reply["content"]["user_expressions"]["out"]
    assert out["status"] == "ok", out
    return ast.literal_eval(out["data"]["text/plain"])


@pytest.fixture
def kernel():
    # ipykernel's own "python3" spec: this interpreter, so the kernel imports this tomolab
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _send_from_subshell(client, msg_type, content, subshell_id):
    msg = client.session.msg(msg_type, content)
    msg["header"]["subshell_id"] = subshell_id
    client.shell_channel.send(msg)


def _subshell(client):
    msg = client.session.msg("create_subshell_request", {})
    client.control_channel.send(msg)
    reply = client.control_channel.get_msg(timeout=30)
    if reply["content"].get("status") != "ok" or "subshell_id" not in reply["content"]:
        pytest.skip(f"this ipykernel has no subshells: {reply['content']}")
    return reply["content"]["subshell_id"]


def test_a_slider_moved_from_a_subshell_redraws_on_the_kernels_thread(kernel):
    _execute(kernel, SETUP + "\n_out = None")
    subshell = _subshell(kernel)
    # what the browser's slider message does, from the subshell's thread
    on = _execute(kernel, "viewer.z = 4\n"
                          "_out = threading.current_thread().name", subshell_id=subshell)
    assert "MainThread" not in on, on  # the test means something only if that is another thread
    # the main shell's next request runs after whatever was queued on its loop
    result = _execute(kernel, textwrap.dedent("""
        _out = (sorted(set(changed_on)), int(viewer.z),
                bool(np.array_equal(viewer.displayed("z"), volume.isel(z=4).values)))
    """))
    threads, z, shows_the_new_slice = result
    assert z == 4
    assert threads == ["MainThread"], f"the figure was changed on {threads}"
    assert shows_the_new_slice


def test_the_browsers_copy_of_a_title_does_not_overwrite_the_kernels(kernel):
    """BokehJS sends back values the kernel set, late; the kernel's figure keeps its own."""
    _execute(kernel, SETUP + textwrap.dedent("""
        from holoviews.plotting.bokeh.raster import RasterPlot
        title = next(p.handles["plot"].title for p in viewer._plot.traverse(lambda p: p, [RasterPlot]))
        _out = (viewer.plot_widget.comm.comm_id, title.id, title.text)
    """))
    comm_id, title_id, text = _execute(kernel, "pass")  # _out is still the tuple
    subshell = _subshell(kernel)
    stale = {"event": "jsevent", "kind": "ModelChanged", "model": {"id": title_id}, "attr": "text",
             "new": "an older title"}
    _send_from_subshell(kernel, "comm_msg", {"comm_id": comm_id,
                                             "data": {"method": "custom", "content": stale}},
                        subshell)
    _execute(kernel, "_out = None", subshell_id=subshell)  # the subshell has handled the message
    assert _execute(kernel, "_out = (title.text, sorted(set(changed_on)))") == (text, [])


def test_ticking_phase_retrieval_from_a_subshell_builds_its_figure_on_the_kernels_thread(kernel):
    """The panel's phase checkbox builds a PhaseSweep (a Bokeh figure): not on the subshell's thread."""
    _execute(kernel, textwrap.dedent("""
        import threading
        import holoviews as hv
        from tomolab.data import simulate_phase_scan
        from tomolab.widgets import ReconstructionPanel

        scan = simulate_phase_scan(32, n_rows=4, n_angles=30, delta_beta=200.0, distance=0.1)
        panel = ReconstructionPanel(scan, backend="numpy", background=False)
        panel.center = scan.attrs["true_center"]
        rendered_on = []
        renderer = hv.renderer("bokeh")
        get_plot = renderer.get_plot
        renderer.get_plot = lambda *a, **k: (rendered_on.append(threading.current_thread().name),
                                             get_plot(*a, **k))[1]
        _out = None
    """))
    subshell = _subshell(kernel)
    _execute(kernel, "panel.phase_checkbox.value = True\n_out = None", subshell_id=subshell)
    result = _execute(kernel, "_out = (sorted(set(rendered_on)), panel.phase_sweep is not None,"
                              " panel.phase_box.children == (panel.phase_sweep,))")
    assert result == (["MainThread"], True, True), result
