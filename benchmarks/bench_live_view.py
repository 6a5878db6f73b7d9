"""The live view's own redraw: what one ``LiveView.refresh`` costs the kernel, and what it sends.

Issue 15 asks what bounds each figure of the live path; ``bench_live.py`` times the
reconstruction (ingest, latency, recompute from the buffer). This times the widget on top of
it: a refresh takes the snapshot, sets the sliders and the contrast, renders the three
holoviews images into their Bokeh figures and serialises the Bokeh patch that travels to the
browser (the bytes handed to the widget's comm are counted). Frames are random uint16 of
``--cols`` × ``--rows`` pushed through a ``MemorySource`` into a numpy ``LiveReconstruction``
(the planes' size is what matters here, not their content); each refresh follows one new
projection. Run with and without block-averaging for the browser (``max_pixels``)::

    python benchmarks/bench_live_view.py --cols 2048 --rows 256
    python benchmarks/bench_live_view.py --cols 2048 --rows 256 --max-pixels none
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def measure(cols: int, rows: int, n: int, max_pixels):
    from tomolab.live import Frame, LiveReconstruction, MemorySource
    from tomolab.widgets import LiveView

    rng = np.random.default_rng(0)
    source = MemorySource()
    source.put(Frame("dark", 0, None, np.full((rows, cols), 100, np.uint16)))
    source.put(Frame("flat", 0, None, np.full((rows, cols), 40000, np.uint16)))
    live = LiveReconstruction(source, center=cols / 2, backend="numpy")
    view = LiveView(live, start=False,
                    **({} if max_pixels == "default" else {"max_pixels": max_pixels}))
    live.start()
    sent, times = [], []
    try:
        for i in range(n):
            frame = rng.integers(20000, 39000, (rows, cols), dtype=np.uint16)
            source.put(Frame("projection", i, np.pi * i / n, frame))
            deadline = time.monotonic() + 120
            while live.stats["in_slices"] <= i and time.monotonic() < deadline:
                time.sleep(0.002)
            if view._draw is not None and not hasattr(view.plot_widget, "_counted"):
                send = view.plot_widget.send

                def counted(content, buffers=None, send=send):
                    sent.append(len(json.dumps(content)) + sum(len(b) for b in buffers or []))
                    return send(content, buffers)

                view.plot_widget.send, view.plot_widget._counted = counted, True
            before = len(sent)
            start = time.perf_counter()
            view.refresh()
            elapsed = time.perf_counter() - start
            if i >= 2:  # the first draws build the figures
                times.append((elapsed, sum(sent[before:])))
    finally:
        live.stop()
        view.close()
    shown = view.displayed("xy").shape
    return {"cols": cols, "rows": rows, "max_pixels": max_pixels, "xy shown": list(shown),
            "refresh ms": round(1e3 * statistics.median(t for t, _ in times), 1),
            "MB a refresh": round(statistics.median(b for _, b in times) / 1e6, 2),
            "refreshes": len(times)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cols", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--refreshes", type=int, default=12)
    parser.add_argument("--max-pixels", default="default",
                        help="largest side sent to the browser, 'none', or 'default' (the "
                             "view's own; also what runs a tomolab that predates the option)")
    args = parser.parse_args(argv)
    max_pixels = {"none": None, "default": "default"}.get(args.max_pixels.lower()) \
        if not args.max_pixels.isdigit() else int(args.max_pixels)
    print(json.dumps(measure(args.cols, args.rows, args.refreshes + 2, max_pixels)))


if __name__ == "__main__":
    main()
