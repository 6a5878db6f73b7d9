"""Live reconstruction: slices that update while the scan is running.

Frames come from a :class:`~tomolab.live.FrameSource` (ZeroMQ, a growing
SWMR HDF5 file, or frames put by the program) as :class:`~tomolab.live.Frame`
objects; see ``docs/live.md`` for the wire protocol a detector writer implements.
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

__all__ = ["FRAME_KINDS", "LIVE_STATES", "SOURCE_STATES", "WINDOWS", "EndOfScan", "Frame",
           "FrameSource", "LiveReconstruction", "MemorySource"]
