"""Find and end every process a single-user server started (Linux, through ``/proc``).

A Jupyter server starts kernels and terminals in sessions of their own, and a
user can detach more (``nohup``, ``setsid``, a double fork), so signalling the
server's process, or even its process group, leaves processes behind that
keep a GPU busy after its allocation was given back. Two ways find them:

- the server's **process tree**, taken before the server is stopped (once it
  is gone its orphans belong to init);
- a **marker** in the environment: the spawner puts a random
  ``TOMOLAB_SERVER_SESSION`` into the server's environment; every process
  started from it inherits it, whatever session or parent it ends in.
  ``/proc/PID/environ`` is the environment a process was started with, which it
  cannot change afterwards.

A process that clears its environment *and* leaves the tree (``env -i setsid -f
...``) escapes both: for local processes this is a convention, not a wall. A
systemd unit or a container ends the whole cgroup instead (see
docs/deployment.md).

Standard library only. Each process is identified by its pid *and* start time,
so a pid reused by an unrelated process between the scan and the signal is
never signalled.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

__all__ = ["ENV_SERVER_SESSION", "Proc", "carrying", "descendants", "end_processes", "has_marker", "is_alive",
           "lookup"]

ENV_SERVER_SESSION = "TOMOLAB_SERVER_SESSION"


@dataclass(frozen=True)
class Proc:
    """A process: its pid and its start time (clock ticks after boot, from ``/proc/PID/stat``)."""

    pid: int
    start: int


def _stat(pid: int):
    """(state, ppid, start time) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after the command name: state (3), ppid (4), ..., starttime (22)
    return fields[0], int(fields[1]), int(fields[19])


def _pids():
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def lookup(pid: int) -> Proc | None:
    """The process ``pid`` now (with its start time), or None if there is none."""
    st = _stat(pid)
    return Proc(pid, st[2]) if st else None


def is_alive(proc: Proc) -> bool:
    """True while ``proc`` runs (same pid, same start time, not a zombie)."""
    st = _stat(proc.pid)
    return st is not None and st[2] == proc.start and st[0] not in (b"Z", b"X")


def descendants(root: int) -> set[Proc]:
    """``root`` and every process below it in the process tree now.

    Examples
    --------
    >>> me = lookup(os.getpid())
    >>> me in descendants(os.getppid())
    True
    """
    children: dict[int, list[int]] = {}
    for pid in _pids():
        st = _stat(pid)
        if st:
            children.setdefault(st[1], []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        proc = lookup(pid)
        if proc is None or proc in found:
            continue
        found.add(proc)
        todo.extend(children.get(pid, ()))
    return found


def has_marker(pid: int, marker: str, *, name: str = ENV_SERVER_SESSION) -> bool:
    """True if process ``pid`` was started with ``name=marker`` in its environment."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{name}={marker}".encode() in f.read().split(b"\0")
    except OSError:  # gone, or another user's
        return False


def carrying(marker: str, *, name: str = ENV_SERVER_SESSION) -> set[Proc]:
    """Processes whose start-up environment has ``name=marker`` (those this user may read)."""
    found = set()
    for pid in _pids():
        if has_marker(pid, marker, name=name):
            proc = lookup(pid)
            if proc is not None:
                found.add(proc)
    return found


def _signal(procs, sig) -> None:
    for p in procs:
        if is_alive(p):
            try:
                os.kill(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def end_processes(procs, *, grace: float = 5.0, poll: float = 0.05) -> list[Proc]:
    """SIGTERM ``procs``, wait up to ``grace`` seconds, SIGKILL those left; return any still alive.

    The caller's own process is never signalled.

    Examples
    --------
    >>> import subprocess, sys
    >>> child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    >>> end_processes(descendants(child.pid), grace=1)
    []
    >>> child.wait() == -15
    True
    """
    me = os.getpid()
    procs = {p for p in procs if p.pid != me and is_alive(p)}
    _signal(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while procs and time.monotonic() < deadline:
        time.sleep(poll)
        procs = {p for p in procs if is_alive(p)}
    _signal(procs, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while procs and time.monotonic() < deadline:
        time.sleep(poll)
        procs = {p for p in procs if is_alive(p)}
    return sorted(procs, key=lambda p: p.pid)
