"""ZeroMQ ingest on loopback: how fast frames reach a ZmqSource, and what each costs the receiver.

A publisher process (:func:`tomolab.live.run_publisher`: one random frame sent over and
over, as fast as the socket takes it, PUSH → PULL) and a :class:`tomolab.live.ZmqSource`
in this process that receives every frame into a :class:`~tomolab.live.Frame`. Reported:
frames/s and GB/s from the first frame to the end message, frames lost (must be 0), and
the receiver's CPU time per frame (its process, ZeroMQ's I/O thread included) against
one ``memcpy`` of a frame on this machine.

    python benchmarks/bench_live_ingest.py [--widths 256 2048] [--frames 4000 400] [--pattern pull]

Importable: ``measure_ingest(shape, n)`` and ``start_publisher(address, shape, n, rate)``
(a publisher process) are what the live reconstruction's benchmarks reuse.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import card_name, wall_time, write_rows

ROOT = Path(__file__).resolve().parents[1]

_PUBLISHER = (
    "import sys, json\n"
    "from tomolab.live import run_publisher\n"
    "address, rows, cols, n, rate, pattern = sys.argv[1:7]\n"
    "stats = run_publisher(address, (int(rows), int(cols)), int(n), float(rate) or None,\n"
    "                      bind=False, pattern=pattern)\n"
    "print(json.dumps(stats))\n"
)


def start_publisher(address: str, shape, n: int, rate: float | None = None, *,
                    pattern: str = "push") -> subprocess.Popen:
    """A publisher process that connects to ``address`` and sends ``n`` frames, then the end.

    Its stdout is the JSON of :func:`tomolab.live.run_publisher`'s stats.
    """
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.Popen([sys.executable, "-c", _PUBLISHER, address, str(shape[0]),
                             str(shape[1]), str(n), str(rate or 0), pattern],
                            stdout=subprocess.PIPE, text=True, env=env)


def measure_ingest(shape, n: int, *, pattern: str = "pull", rate: float | None = None,
                   high_water_mark: int = 256) -> dict:
    """Receive ``n`` frames of ``shape`` uint16 from a publisher process; rates and costs."""
    import json

    from tomolab.live import EndOfScan, ZmqSource

    source = ZmqSource("tcp://127.0.0.1:*", bind=True, pattern="pull" if pattern == "pull" else "sub",
                       timeout_lost=60, high_water_mark=high_water_mark)
    publisher = start_publisher(source.address, shape, n, rate,
                                pattern="push" if pattern == "pull" else "pub")
    indices, first, nbytes = [], None, 0
    cpu_start = None
    try:
        while True:
            try:
                frame = source.receive(1.0)
            except EndOfScan:
                break
            if frame is None:
                continue
            if first is None:
                first, cpu_start = frame.arrival, time.process_time()
            indices.append(frame.index)
            nbytes += frame.nbytes
    finally:
        source.close()
    end = time.perf_counter()
    cpu = time.process_time() - cpu_start
    sent = json.loads(publisher.communicate(timeout=120)[0])
    seconds = end - first
    one = np.zeros(shape, np.uint16)
    copy = wall_time(lambda: one.copy(), repeat=21)
    return {"frames": len(indices), "lost": n - len(set(indices)),
            "in order": indices == sorted(indices), "seconds": seconds,
            "frames/s": len(indices) / seconds, "GB/s": nbytes / seconds / 1e9,
            "publisher GB/s": sent["gb_per_s"], "receiver CPU ms/frame": 1e3 * cpu / len(indices),
            "memcpy ms/frame": 1e3 * copy}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--frames", type=int, nargs="+", default=[4000, 400])
    parser.add_argument("--pattern", default="pull", choices=["pull", "sub"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    card = card_name()
    date = datetime.date.today().isoformat()
    rows = []
    for width, n in zip(args.widths, args.frames):
        for _ in range(args.repeat):
            load = os.getloadavg()[0]
            result = measure_ingest((width, width), n, pattern=args.pattern)
            rows.append({"date": date, "machine": card, "frame": f"{width}x{width} uint16",
                         "pattern": args.pattern, "frames": result["frames"],
                         "lost": result["lost"], "in order": result["in order"],
                         "frames/s": round(result["frames/s"]),
                         "GB/s": round(result["GB/s"], 2),
                         "rx CPU ms/frame": round(result["receiver CPU ms/frame"], 3),
                         "memcpy ms/frame": round(result["memcpy ms/frame"], 3),
                         "load (1 min)": round(load, 1)})
    write_rows(rows, "live_ingest")


if __name__ == "__main__":
    main()
