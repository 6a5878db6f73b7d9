"""The allocation ledger: who holds which device, kept in a small SQLite file.

The hub keeps one ledger (a file in its data directory). Each row is one
allocation, keyed by a random ``alloc_id`` that is also stored in the
server's spawner state, so a release can only ever remove the allocation
of the server that made it, and releasing twice is harmless. Every change
runs in one ``BEGIN IMMEDIATE`` transaction, so the check "is there room
on this device?" and the insert cannot interleave with another writer.

The ledger says who uses which GPU and since when, so it is the hub's
alone: the file is created with mode 0600 (and a folder it creates with
0700); an existing ledger that others can read is made private, and the
change is reported in :attr:`Ledger.notices`. User, server and profile
names with control characters are refused; :func:`~tomolab.hub.pool.printable`
escapes whatever reaches a message, a log line or a listing.

Standard library only.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from .pool import (
    CPU,
    EXCLUSIVE,
    MULTI,
    PROFILE_TITLES,
    SHARED,
    GPUDevice,
    check_name,
    format_bytes,
    printable,
)

__all__ = ["Allocation", "Ledger", "PoolExhausted"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS allocations (
    alloc_id     TEXT PRIMARY KEY,
    user         TEXT NOT NULL,
    server       TEXT NOT NULL,
    profile      TEXT NOT NULL,
    device       TEXT NOT NULL,
    policy       TEXT NOT NULL,
    memory_limit INTEGER,
    created      REAL NOT NULL,
    hub_pid      INTEGER NOT NULL,
    UNIQUE (user, server)
)
"""

class PoolExhausted(Exception):
    """No device can take this server now; ``str(exc)`` is the message for the user."""

    def __init__(self, message: str, *, reason: str = "gpu-pool-exhausted"):
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class Allocation:
    """One row of the ledger: ``user``'s server ``server`` holds ``device``."""

    alloc_id: str
    user: str
    server: str
    profile: str
    device: str
    policy: str
    memory_limit: int | None
    created: float
    hub_pid: int

    def to_state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> Allocation:
        fields = cls.__dataclass_fields__
        return cls(**{k: state[k] for k in fields})

    @property
    def server_label(self) -> str:
        """``user/server`` (or ``user``), control characters escaped."""
        label = f"{self.user}/{self.server}" if self.server else self.user
        return printable(label)


def _row(r) -> Allocation:
    return Allocation(*r)


class Ledger:
    """Allocations of a GPU pool, persisted in the SQLite file at ``path``.

    Parameters
    ----------
    path : str
        Where the ledger lives; created on first use. Use a local disk
        (SQLite locking is unreliable on NFS).

    Examples
    --------
    >>> import tempfile, os
    >>> from tomolab.hub.pool import parse_devices
    >>> pool = parse_devices([{"id": "0", "policy": "exclusive"}])
    >>> ledger = Ledger(os.path.join(tempfile.mkdtemp(), "pool.sqlite"))
    >>> a = ledger.allocate("alice", "", "exclusive", pool)
    >>> a.device
    '0'
    >>> ledger.release(a.alloc_id), ledger.release(a.alloc_id)
    (True, False)
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        #: What was changed to make an existing ledger private (messages for the log).
        self.notices: list[str] = []
        self._make_private()
        with self._transaction():
            pass

    def _make_private(self) -> None:
        """Create the ledger readable by this user only, or make an existing one so."""
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            try:
                os.makedirs(parent, mode=0o700)
            except FileExistsError:
                pass
            else:
                os.chmod(parent, 0o700)  # makedirs' mode is filtered by the umask
        info = os.stat(parent)
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            raise PermissionError(
                f"the GPU ledger's folder {parent} is writable by other users "
                f"(mode {stat.S_IMODE(info.st_mode):04o}), who could replace the ledger; "
                f"run `chmod go-w {parent}` or set c.GPUPoolMixin.gpu_pool_db to a path in a private folder"
            )
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            return
        for path in (self.path, self.path + "-journal", self.path + "-wal", self.path + "-shm"):
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)
            except FileNotFoundError:
                continue
            if mode & 0o077:
                try:
                    os.chmod(path, 0o600)
                except PermissionError:
                    raise PermissionError(
                        f"the GPU ledger {path} is readable by other users (mode {mode:04o}) and this "
                        f"user cannot change that; as its owner run `chmod 600 {path}`"
                    ) from None
                self.notices.append(
                    f"GPU ledger {path} was readable by other users (mode {mode:04o}); made it 0600"
                )

    @contextmanager
    def _transaction(self):
        if not os.path.exists(self.path):  # removed under us: it comes back empty, and private
            self._make_private()
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(_SCHEMA)  # cheap; a ledger file removed under us comes back empty, not broken
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            else:
                db.execute("COMMIT")
        finally:
            db.close()

    # -- reading ---------------------------------------------------------
    def allocations(self) -> list[Allocation]:
        """All current allocations, oldest first."""
        with self._transaction() as db:
            return [_row(r) for r in db.execute("SELECT * FROM allocations ORDER BY created, alloc_id")]

    def get(self, alloc_id: str) -> Allocation | None:
        with self._transaction() as db:
            r = db.execute("SELECT * FROM allocations WHERE alloc_id = ?", (alloc_id,)).fetchone()
        return _row(r) if r else None

    # -- changing --------------------------------------------------------
    def allocate(
        self,
        user: str,
        server: str,
        profile: str,
        devices: tuple[GPUDevice, ...],
        *,
        max_per_user: int = 0,
        show_holders: bool = True,
        alloc_id: str | None = None,
    ) -> Allocation:
        """Give ``user``'s server a device of the ``profile``'s policy, or raise :class:`PoolExhausted`.

        A row already held by the same (user, server) is from an earlier run
        of that server (the hub only starts servers that are not running) and
        is replaced. ``max_per_user`` (0: no limit) caps the GPU servers one
        user may hold at once.
        """
        if profile not in (SHARED, EXCLUSIVE, MULTI):
            raise ValueError(f"profile '{printable(profile)}' does not use the GPU pool")
        check_name(user, what="user name")
        check_name(server, what="server name")
        with self._transaction() as db:
            db.execute("DELETE FROM allocations WHERE user = ? AND server = ?", (user, server))
            rows = [_row(r) for r in db.execute("SELECT * FROM allocations ORDER BY created")]
            if max_per_user:
                mine = [a for a in rows if a.user == user]
                if len(mine) >= max_per_user:
                    held = ", ".join(f"GPU {a.device} (server '{printable(a.server) or 'default'}')" for a in mine)
                    raise PoolExhausted(
                        f"You already hold {len(mine)} GPU server(s), the most one user may hold on this hub "
                        f"({max_per_user}): {held}. Stop one of them first, or start this server with the "
                        f"'{PROFILE_TITLES[CPU]}' profile.",
                        reason="gpu-per-user-limit",
                    )
            by_device: dict[str, list[Allocation]] = {}
            for a in rows:
                by_device.setdefault(a.device, []).append(a)
            candidates = [d for d in devices if d.profile == profile]
            if not candidates:
                raise PoolExhausted(
                    f"This hub has no {'groups of' if profile == MULTI else profile} GPUs. "
                    + _alternatives(profile, devices, by_device),
                    reason="gpu-profile-unavailable",
                )
            free = [d for d in candidates if len(by_device.get(d.id, ())) < d.max_users]
            if not free:
                raise PoolExhausted(
                    _exhausted_message(profile, candidates, devices, by_device, show_holders)
                )
            # spread shared servers over the least loaded device; config order breaks ties
            device = min(free, key=lambda d: len(by_device.get(d.id, ())))
            alloc = Allocation(
                alloc_id=alloc_id or uuid.uuid4().hex,
                user=user,
                server=server,
                profile=profile,
                device=device.id,
                policy=device.policy,
                memory_limit=device.memory_limit,
                created=time.time(),
                hub_pid=os.getpid(),
            )
            _insert(db, alloc)
            return alloc

    def release(self, alloc_id: str) -> bool:
        """Remove the allocation ``alloc_id``; True if it was there. Idempotent."""
        with self._transaction() as db:
            cur = db.execute("DELETE FROM allocations WHERE alloc_id = ?", (alloc_id,))
            return cur.rowcount > 0

    def adopt(self, alloc: Allocation) -> str:
        """Make sure the allocation of a server that is still running is in the ledger.

        Called when the hub restarts and restores a running server's state.
        Returns ``"present"`` if the row was there, ``"restored"`` if it had to be
        written back (the ledger was lost or reset); a stale row of the same
        (user, server) is replaced.
        """
        with self._transaction() as db:
            r = db.execute("SELECT alloc_id FROM allocations WHERE alloc_id = ?", (alloc.alloc_id,)).fetchone()
            if r:
                return "present"
            db.execute("DELETE FROM allocations WHERE user = ? AND server = ?", (alloc.user, alloc.server))
            _insert(db, alloc)
            return "restored"

    def reconcile(self, live_ids) -> list[Allocation]:
        """Drop every allocation whose id is not in ``live_ids``; return the dropped rows."""
        live_ids = set(live_ids)
        with self._transaction() as db:
            rows = [_row(r) for r in db.execute("SELECT * FROM allocations")]
            stale = [a for a in rows if a.alloc_id not in live_ids]
            db.executemany("DELETE FROM allocations WHERE alloc_id = ?", [(a.alloc_id,) for a in stale])
        return stale


def _insert(db, a: Allocation) -> None:
    db.execute(
        "INSERT INTO allocations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (a.alloc_id, a.user, a.server, a.profile, a.device, a.policy, a.memory_limit, a.created, a.hub_pid),
    )


def usage(devices, allocations) -> dict[str, int]:
    """Servers per device id (devices of the pool only)."""
    counts = {d.id: 0 for d in devices}
    for a in allocations:
        if a.device in counts:
            counts[a.device] += 1
    return counts


def _alternatives(profile, devices, by_device) -> str:
    tips = []
    for other in (EXCLUSIVE, SHARED, MULTI):
        if other == profile:
            continue
        devs = [d for d in devices if d.profile == other]
        if not devs:
            continue
        places = sum(d.max_users for d in devs)
        free = sum(max(0, d.max_users - len(by_device.get(d.id, ()))) for d in devs)
        if free:
            what = {EXCLUSIVE: "GPU", SHARED: "place", MULTI: "group"}[other]
            tips.append(f"the '{PROFILE_TITLES[other]}' profile ({free} of {places} {what}s free)")
    tips.append(f"the '{PROFILE_TITLES[CPU]}' profile")
    return "Try " + ", or ".join(tips) + ", or try again later when a GPU server stops."


def _exhausted_message(profile, candidates, devices, by_device, show_holders) -> str:
    places = sum(d.max_users for d in candidates)
    kind = {EXCLUSIVE: "exclusive GPUs", SHARED: "places on shared GPUs", MULTI: "groups of GPUs"}[profile]
    parts = []
    for d in candidates:
        holders = by_device.get(d.id, [])
        if show_holders:
            who = ", ".join(a.server_label for a in holders)
        else:
            who = f"{len(holders)} server(s)"
        cap = f", {format_bytes(d.memory_limit)} each" if profile == SHARED else ""
        parts.append(f"{d.display}: {who} ({len(holders)}/{d.max_users}{cap})")
    return (
        f"All {places} {kind} are in use — " + "; ".join(parts) + ". "
        + _alternatives(profile, devices, by_device)
    )
