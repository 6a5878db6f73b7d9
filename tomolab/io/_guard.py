"""Guards around every output tomolab writes: its own marker, a lock, free space, OS errors.

* **Marker.** Every output (volume or scan, and the partial output of a
  resumable write) carries ``tomolab_output``: a root attribute of an HDF5
  file, a group attribute of a zarr store, a key of a TIFF folder's
  ``metadata.json``. ``overwrite`` replaces only an output that carries it and
  holds nothing else (:func:`check_overwritable`).
* **Lock.** A run that writes an output holds ``.NAME.lock`` next to it
  (:class:`OutputLock`, ``fcntl.flock``: the kernel releases it when the
  holder dies, even by SIGKILL); a second run refuses at once, naming the
  holder.
* **Space.** :func:`check_free_space` refuses before writing what would not fit.
* **OS errors.** :func:`storage_errors` turns a full disk, a read-only file
  system or a missing permission into one :class:`~tomolab.errors.OutputError`
  line that names the path and the fix.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path

from tomolab.errors import OutputError, ParameterError, TomolabError

MARKER = "tomolab_output"

# names that tomolab's TIFF folders hold (volumes: slices; scans: frames, angles)
_TIFF_NAMES = re.compile(r"^((slice|proj|flat|dark)_\d{5,}\.tif|metadata\.json|angles\.txt"
                         r"|\.progress\.json|\.slice_\d{5,}\.tif\.[0-9a-f]{8}\.tmp"
                         r"|\.\.progress\.json\.[0-9a-f]{8}\.tmp|\.slabs_done)$")
_ZARR_META = {"zarr.json", ".zgroup", ".zattrs", ".zarray", ".zmetadata"}
_CHUNK_KEY = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # zarr v2 "0.1.2", v3 "c/0/1/2" parts
_ZARR_TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.partial$")  # zarr's atomic writes, if killed


# ----------------------------------------------------------------------------- own outputs

def _zarr_attrs(folder: Path) -> dict | None:
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        meta = folder / name
        if meta.is_file():
            try:
                data = json.loads(meta.read_text())
            except (OSError, ValueError):
                return None
            data = data.get(key, {}) if key else data
            return data if isinstance(data, dict) else None
    return None


def _foreign_in_zarr(folder: Path) -> list[str]:
    """Files in a zarr store that are neither zarr metadata nor chunks."""
    foreign = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        for name in files:
            if name in _ZARR_META or _CHUNK_KEY.match(name) or _ZARR_TEMPORARY.search(name):
                continue
            foreign.append(str((here / name).relative_to(folder)))
        for name in list(dirs):
            sub = here / name
            is_node = any((sub / meta).is_file() for meta in _ZARR_META)
            if not (is_node or name == "c" or _CHUNK_KEY.match(name) or name == ".slabs_done"):
                foreign.append(str(sub.relative_to(folder)) + "/")
                dirs.remove(name)
    return foreign


def foreign_files(folder: Path) -> list[str]:
    """Files in a zarr store or TIFF folder that tomolab would not have written there."""
    if any((folder / name).is_file() for name in ("zarr.json", ".zgroup")):
        return _foreign_in_zarr(folder)
    return [p.name for p in sorted(folder.iterdir()) if not _TIFF_NAMES.match(p.name)]


_NOT_OURS = "{} that tomolab did not write (no tomolab_output attribute)"


def _kind(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(path: Path) -> tuple[bool, str, str | None]:
    """Whether ``path`` is an output tomolab wrote and holds nothing else, what it is, and its
    kind (the marker's value: "volume" or "scan"; None for an empty folder or not ours)."""
    if path.is_symlink():
        return False, "a symbolic link", None
    if path.is_dir():
        entries = sorted(p.name for p in path.iterdir())
        if not entries:
            return True, "an empty folder", None
        attrs = _zarr_attrs(path)
        if attrs is not None:
            if MARKER not in attrs:
                return False, _NOT_OURS.format("a zarr store"), None
            foreign = _foreign_in_zarr(path)
            if foreign:
                return False, (f"a zarr store that also holds {len(foreign)} other file(s), e.g. "
                               f"{foreign[0]}"), None
            kind = _kind(attrs[MARKER])
            return True, f"a zarr {kind} that tomolab wrote", kind
        foreign = [name for name in entries if not _TIFF_NAMES.match(name)]
        if foreign:
            return False, (f"a folder that holds files tomolab did not write, e.g. {foreign[0]} "
                           f"({len(foreign)} of {len(entries)})"), None
        try:
            meta = json.loads((path / "metadata.json").read_text())
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict) or MARKER not in meta:
            return False, ("a TIFF folder that tomolab did not write (no tomolab_output in "
                           "metadata.json)"), None
        kind = _kind(meta[MARKER])
        return True, f"a TIFF {kind} that tomolab wrote", kind
    if path.is_file():
        import h5py

        try:
            if h5py.is_hdf5(path):
                with h5py.File(path, "r", locking=False) as f:
                    if MARKER in f.attrs:
                        kind = _kind(f.attrs[MARKER])
                        return True, f"an HDF5 {kind} that tomolab wrote", kind
                return False, _NOT_OURS.format("an HDF5 file"), None
        except OSError:
            pass
        return False, "a file that tomolab did not write", None
    return False, "something that is neither a file nor a folder", None


def check_overwritable(path, *, kind=None, flag="overwrite=True") -> None:
    """Refuse to replace ``path`` unless it is an output tomolab wrote, with nothing else in it.

    An HDF5 file with the ``tomolab_output`` root attribute, a zarr store with
    that group attribute holding only zarr metadata and chunks, a TIFF folder
    whose ``metadata.json`` has that key and which holds only the files
    tomolab writes, or an empty folder. Anything else -- the user's files, a
    folder with a logbook in it -- is refused even with ``overwrite``. With
    ``kind`` ("volume" or "scan"), only an output of that kind: a volume never
    replaces a scan (tomolab may have converted the user's only copy).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> notes = pathlib.Path(tempfile.mkdtemp()) / "notes.h5"
    >>> _ = notes.write_text("my notes")
    >>> check_overwritable(notes)
    Traceback (most recent call last):
    ...
    tomolab.errors.ParameterError: ...notes.h5: overwrite=True replaces only an output that tomolab wrote, and this is a file that tomolab did not write; fix: choose another output path, or remove it yourself if it may go
    """
    path = Path(os.fspath(path))
    if not (path.exists() or path.is_symlink()):
        return
    ours, what, found = _describe(path)
    if not ours:
        raise ParameterError(f"{flag} replaces only an output that tomolab wrote, and this is "
                             f"{what}", where=str(path),
                             fix="choose another output path, or remove it yourself if it may go")
    if kind is not None and found is not None and found != kind:
        raise ParameterError(f"{flag} replaces only a {kind} that tomolab wrote, and this is "
                             f"{what}", where=str(path),
                             fix="choose another output path, or remove it yourself if it may go")


def refuse_existing(path, overwrite: bool, *, kind=None, flag="overwrite=True") -> None:
    """Refuse an existing ``path`` unless ``overwrite`` and it is tomolab's own output."""
    path = Path(os.fspath(path))
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise ParameterError("the output already exists", where=str(path),
                             fix=f"choose another path or pass {flag}")
    check_overwritable(path, kind=kind, flag=flag)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def make_parent(path: Path) -> None:
    """Create the folder of ``path``; a file in the way or a full disk is an OutputError."""
    try:
        with storage_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError("cannot make the output's folder: a part of the path above it is a "
                          "file, not a folder", where=str(path),
                          fix="name the output in a folder") from None


def remove_stale_temporaries(path: Path) -> None:
    """Delete ``.NAME.partial-*`` left next to ``path`` by killed runs (call with the lock held).

    Every writer makes those under the output's lock, so while this run holds it
    none of them is in use.
    """
    prefix = f".{path.name}.partial-"
    for item in path.parent.glob(f".{glob_escape(path.name)}.partial-*"):
        if item.name.startswith(prefix):
            _remove(item)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


# ----------------------------------------------------------------------------- lock

class OutputLock:
    """An exclusive lock on an output: ``.NAME.lock`` next to it, held with ``fcntl.flock``.

    The lock file records the holder (pid, host, start time, command) for the
    message another run gets. The kernel drops the lock when the holder's
    process ends in any way, so a killed run never blocks the next one; the
    file itself is removed on :meth:`release` (a killed holder leaves it, and
    the next run takes it over). On a file system that cannot lock (Lustre
    mounted without ``flock``), it warns and writes without a lock.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "vol.zarr"
    >>> with OutputLock(out):
    ...     OutputLock(out).acquire()
    Traceback (most recent call last):
    ...
    tomolab.errors.OutputError: ...vol.zarr: another run is writing this output (pid ...); fix: wait until it has finished, or write to another path
    """

    def __init__(self, path):
        self.path = Path(os.fspath(path))
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._file = None

    def acquire(self) -> OutputLock:
        import fcntl

        for _ in range(20):  # another run may remove the file between our open and lock
            with storage_errors(self.path, partial=None):
                handle = open(self.lock_path, "a+")  # noqa: SIM115  (held until release)
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip()
                live = self._same_file(handle)  # else the holder removed it as it finished
                handle.close()
                if live:
                    raise OutputError(f"another run is writing this output ({_holder(holder)})",
                                      where=str(self.path),
                                      fix="wait until it has finished, or write to another path"
                                      ) from None
                continue
            except OSError as exc:
                if exc.errno not in _NO_LOCKS:
                    handle.close()
                    raise
                # e.g. Lustre mounted without -o flock: write, as before locks, and say so
                import warnings

                warnings.warn(f"{self.path}: this file system cannot lock files ({exc.strerror}); "
                              f"make sure that no other run writes this output", stacklevel=3)
            if not self._same_file(handle):
                handle.close()
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": datetime.datetime.now(datetime.timezone.utc).strftime(
                        "%Y-%m-%d %H:%M:%S UTC"),
                    "command": " ".join(sys.argv)[:200]}
            self._file = handle
            try:
                with storage_errors(self.path, partial=None):
                    handle.seek(0)
                    handle.truncate()
                    handle.write(json.dumps(info))
                    handle.flush()
            except BaseException:
                self.release()
                raise
            return self
        raise OutputError("could not take the output's lock", where=str(self.lock_path),
                          fix="check that nothing keeps replacing that file")

    def _same_file(self, handle) -> bool:
        try:
            return os.stat(self.lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file and drop the lock. Idempotent."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self.lock_path.unlink()
            self._file.close()
            self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


_NO_LOCKS = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL}


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return (f"pid {info['pid']} on {info['host']}, started {info['started']}: "
                f"{info.get('command') or '?'}")
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


# ----------------------------------------------------------------------------- space, errors

def _size_text(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


SPACE_MARGIN = 2 ** 20  # kept free beyond an output's data, for its metadata


def check_free_space(path, needed: int) -> None:
    """Refuse, before anything is written, an output of ``needed`` bytes that would not fit.

    ``needed`` plus 1 % and 1 MiB (metadata, file system overhead) must be
    free on the file system of ``path``'s folder (the nearest that exists).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> check_free_space(pathlib.Path(tempfile.mkdtemp()) / "vol.zarr", 1000)
    >>> check_free_space(pathlib.Path(tempfile.mkdtemp()) / "vol.zarr", 2 ** 70)
    Traceback (most recent call last):
    ...
    tomolab.errors.OutputError: ...vol.zarr: the output needs 1073741824.0 TiB but only ... are free on the disk of ...; fix: free space there, or write the output to another disk
    """
    path = Path(os.fspath(path))
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    needed = int(needed)
    if needed <= 0:
        return
    free = shutil.disk_usage(folder).free
    if needed + needed // 100 + SPACE_MARGIN > free:
        raise OutputError(f"the output needs {_size_text(needed)} but only {_size_text(free)} are "
                          f"free on the disk of {folder}", where=str(path),
                          fix="free space there, or write the output to another disk")


_STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file grew past the size this process may write",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
    errno.ENOTDIR: "a part of the path above it is a file, not a folder",
    errno.ENAMETOOLONG: "the name is too long for the file system",
}
# h5py reports the errno of a failed write in its message text only
_MESSAGE_ERRNOS = [(re.compile(pattern, re.IGNORECASE), code) for pattern, code in (
    (r"errno = 28\b|no space left", errno.ENOSPC), (r"errno = 122\b|quota", errno.EDQUOT),
    (r"errno = 27\b|file too large", errno.EFBIG), (r"errno = 30\b|read-only file", errno.EROFS),
    (r"errno = 13\b|permission denied", errno.EACCES))]


def storage_errno(exc: BaseException) -> int | None:
    """The errno of a full disk, quota, read-only or permission error in ``exc`` (or its causes)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
            return exc.errno
        if isinstance(exc, (OSError, RuntimeError)):
            for pattern, code in _MESSAGE_ERRNOS:
                if pattern.search(str(exc)):
                    return code
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


@contextlib.contextmanager
def storage_errors(path, *, partial=None):
    """Turn a full disk, a read-only file system or a missing permission into an OutputError.

    Parameters
    ----------
    path : path-like
        The output named in the message.
    partial : path-like, optional
        A partial output that stays for resuming (the message says so);
        ``None``: nothing of this write is kept.
    """
    try:
        yield
    except TomolabError:
        raise
    except Exception as exc:
        code = storage_errno(exc)
        if code is None:
            raise
        path = Path(os.fspath(path))
        what = _STORAGE_ERRNOS[code]
        limit = file_size_limit() if code == errno.EFBIG else None
        if limit is not None:  # the process's own limit (ulimit -f), not the disk
            what += f" (RLIMIT_FSIZE: {_size_text(limit)})"
            fix = ("raise the limit (ulimit -f unlimited, or the batch system's file size limit), "
                   "or write zarr or TIFF (one file per chunk or slice)")
        elif code == errno.EFBIG:
            fix = ("write to a file system that takes larger files, or zarr or TIFF (one file "
                   "per chunk or slice)")
        elif code in (errno.ENOSPC, errno.EDQUOT):
            folder = path.parent if path.parent.exists() else Path.cwd()
            with contextlib.suppress(OSError):
                what += f" ({_size_text(shutil.disk_usage(folder).free)} free)"
            fix = "free space there (or write to another disk)"
        elif code in (errno.ENOTDIR, errno.ENAMETOOLONG):
            fix = "name the output in a folder, with a shorter name"
        else:
            fix = "write the output to a folder you can write to"
        if partial is not None:
            fix += f", then run again: the finished part in {Path(partial).name} is kept and resumed"
        else:
            fix += "; nothing of this output was kept"
        raise OutputError(f"cannot write the output: {what}", where=str(path), fix=fix) from exc


# ----------------------------------------------------------------------------- reserving space

_KEEP_SIZE, _PUNCH_HOLE = 0x01, 0x02  # fallocate(2) modes (Linux)


def _libc_fallocate():
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = libc.fallocate
    except (OSError, AttributeError):
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    fallocate.restype = ctypes.c_int
    return fallocate


def file_size_limit() -> int | None:
    """The process's largest file size in bytes (``RLIMIT_FSIZE``), or None when unlimited."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


class SpaceReservation:
    """Disk blocks reserved ahead of an HDF5 file's writes, so that the library never meets a full disk.

    HDF5 (through h5py) does not survive a write that fails for lack of space:
    closing the file afterwards crashed the process (a segfault, seen on a full
    tmpfs). So before each block of data goes to the file, :meth:`ensure`
    reserves the blocks it and the file's metadata will take (Linux
    ``fallocate`` with ``FALLOC_FL_KEEP_SIZE``: the file's size is unchanged);
    a full disk then fails here, as an ``OSError`` that HDF5 never sees, and the
    file still closes cleanly. A write past the process's file size limit
    (``RLIMIT_FSIZE``, e.g. ``ulimit -f`` in a batch job) fails here the same
    way. :meth:`release` gives back what was reserved past
    the end of the file. Where the file system cannot reserve (no
    ``fallocate``), it does nothing.

    Parameters
    ----------
    path : path-like
        The HDF5 file, once the library has created it.
    headroom : int
        Bytes reserved beyond the data, for metadata; 1/8 of the data is added.
    """

    def __init__(self, path, *, headroom: int = 2 ** 20):
        self.path = os.fspath(path)
        self.headroom = int(headroom)
        self.data = 0
        self.reserved = 0
        self._fd = None
        self._fallocate = _libc_fallocate()

    def ensure(self, nbytes: int) -> None:
        """Reserve room for ``nbytes`` more of data (and their metadata) before they are written."""
        import ctypes

        limit = file_size_limit()
        if limit is not None:  # RLIMIT_FSIZE: the write would fail (EFBIG) with no reservation
            size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
            if size + 2 * int(nbytes) + self.headroom > limit:
                raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), self.path)
        self.data += int(nbytes)
        want = self.data + self.data // 8 + self.headroom
        if self._fallocate is None or want <= self.reserved:
            return
        want = max(want, self.reserved + self.reserved // 4)  # grow in steps, not per block
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR)
        if self._fallocate(self._fd, _KEEP_SIZE, 0, want) != 0:
            code = ctypes.get_errno()
            if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                self._fallocate = None  # this file system cannot: write without a reservation
                return
            raise OSError(code, os.strerror(code), self.path)
        self.reserved = want

    def release(self) -> None:
        """Give back the blocks reserved past the end of the file. Idempotent."""
        if self._fd is None:
            return
        try:
            end = os.fstat(self._fd).st_size
            if self._fallocate is not None and self.reserved > end:
                self._fallocate(self._fd, _PUNCH_HOLE | _KEEP_SIZE, end, self.reserved - end)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
