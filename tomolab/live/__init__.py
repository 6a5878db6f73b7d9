"""Live reconstruction: slices that update while the scan is running.

Frames come from a :class:`~tomolab.live.FrameSource` (ZeroMQ, a growing
SWMR HDF5 file, or frames put by the program) as :class:`~tomolab.live.Frame`
objects; see ``docs/live.md`` for the wire protocol a detector writer implements.

Sources::

    ZmqSource(address, *, pattern="pull"|"sub", bind=False, topic=b"", timeout_lost=30.0,
              high_water_mark=256, monitor=True)
    SwmrSource(path, *, layout="auto", entry=None, timeout_lost=30.0)
    MemorySource(frames=())
    parse_message([header, pixels]) -> Frame            # the wire protocol, checked

Simulated acquisitions (tests, teaching, commissioning; ``tomolab stream-sim``)::

    simulate_stream(target, *, scan=None, rate=100.0, transport="zmq"|"swmr", ...) -> stats
    run_publisher(address, shape, n, rate=None) -> stats   # one frame, as fast as it goes
"""

from __future__ import annotations

from tomolab.live._frames import (
    FRAME_KINDS,
    SOURCE_STATES,
    EndOfScan,
    Frame,
    FrameSource,
    MemorySource,
)
from tomolab.live.reconstruction import LIVE_STATES, WINDOWS, LiveReconstruction
from tomolab.live.simulate import (
    SwmrWriter,
    frame_message,
    run_publisher,
    simulate_stream,
)
from tomolab.live.swmr import SwmrSource
from tomolab.live.zmq import MESSAGE_TYPES, ZmqSource, parse_header, parse_message

__all__ = ["FRAME_KINDS", "LIVE_STATES", "MESSAGE_TYPES", "SOURCE_STATES", "WINDOWS", "EndOfScan",
           "Frame", "FrameSource", "LiveReconstruction", "MemorySource", "SwmrSource", "SwmrWriter",
           "ZmqSource", "frame_message", "parse_header", "parse_message", "run_publisher",
           "simulate_stream"]
