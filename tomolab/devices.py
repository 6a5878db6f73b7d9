"""Backends, memory and time budgets, the cache folder: which device runs the work, what fits, where.

Chunk sizes come from free memory, never from a constant. On a shared GPU the
hub sets ``TOMOLAB_GPU_MEMORY_LIMIT`` (bytes, or with a K/M/G/T suffix), and
tomolab caps CuPy's memory pool at it before the first allocation.

Standard library only at import: the hub process reads its pool's memory
limits with :func:`parse_bytes` from here (one parser for both sides of
``TOMOLAB_GPU_MEMORY_LIMIT``) and must not load NumPy; array helpers are
imported where they are used.

Numba's compiled kernels are cached in the user's cache folder
(:func:`use_user_numba_cache`), never next to the installed package: files
written into ``site-packages/tomolab`` outlive an uninstall and then shadow a
later editable install.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

from tomolab.errors import ParameterError

__all__ = ["BACKENDS", "resolve_backend", "gpu_memory_limit", "apply_gpu_memory_limit",
           "free_memory", "host_memory_available", "parse_bytes", "backend_of", "batch_size",
           "user_cache_dir", "use_user_numba_cache", "TimedBatches"]

BACKENDS = ("auto", "numpy", "cupy")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str | int, *, where: str = "TOMOLAB_GPU_MEMORY_LIMIT") -> int:
    """``"20G"`` → 21474836480; plain integers are bytes.

    Examples
    --------
    >>> parse_bytes("1.5K"), parse_bytes(4096)
    (1536, 4096)
    """
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", str(text), flags=re.I)
    if not match:
        raise ParameterError("not a memory size", where=where, value=text,
                             fix='use bytes or a size like "20G" or "512M"')
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def gpu_memory_limit() -> int | None:
    """The per-user GPU memory cap from ``TOMOLAB_GPU_MEMORY_LIMIT``, or None."""
    value = os.environ.get("TOMOLAB_GPU_MEMORY_LIMIT", "").strip()
    return parse_bytes(value) if value else None


def apply_gpu_memory_limit() -> int | None:
    """Cap CuPy's default memory pool at the per-user limit (idempotent)."""
    limit = gpu_memory_limit()
    if limit is not None:
        import cupy
        cupy.get_default_memory_pool().set_limit(size=limit)
    return limit


def resolve_backend(backend: str) -> str:
    """``"auto"`` → ``"cupy"`` when a GPU is usable, else ``"numpy"``."""
    from tomolab.arrays import cupy_available

    if backend not in BACKENDS:
        raise ParameterError("unknown backend", where="backend", value=backend,
                             fix=f"use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "cupy" if cupy_available() else "numpy"
    elif backend == "cupy" and not cupy_available():
        raise ParameterError("CuPy or a CUDA GPU is not available", where="backend", value=backend,
                             fix='install tomolab[gpu-cuda12] or [gpu-cuda13] on a GPU machine, '
                                 'or use backend="numpy"')
    if backend == "cupy":
        apply_gpu_memory_limit()  # every GPU path starts here: the hub's per-user cap holds
    return backend


def free_memory(backend: str) -> int:
    """Bytes that a computation on ``backend`` may use now."""
    if backend == "cupy":
        import cupy
        apply_gpu_memory_limit()
        pool = cupy.get_default_memory_pool()
        free, _total = cupy.cuda.runtime.memGetInfo()
        free += pool.free_bytes()  # cached blocks are reusable
        limit = pool.get_limit()
        if limit:
            free = min(free, limit - pool.used_bytes())
        return max(int(free), 0)
    return host_memory_available()


def backend_of(xp) -> str:
    """The backend name of an array module: ``"cupy"`` or ``"numpy"``."""
    return "cupy" if getattr(xp, "__name__", "") == "cupy" else "numpy"


def batch_size(bytes_per_item: int, *, backend: str, count: int | None = None,
               fraction: float = 0.25, ceiling: int | None = None) -> int:
    """How many items of ``bytes_per_item`` fit in ``fraction`` of :func:`free_memory`.

    The one memory-budget rule of the package: every batch (slice pairs,
    trial centres, angles, slab rows) is sized here, from free memory on the
    backend (within the hub's GPU cap or the container's memory limit), never
    from a constant. ``ceiling`` caps the budget in bytes; the answer is at
    least 1 and at most ``count``.

    Examples
    --------
    >>> batch_size(1 << 20, backend="numpy", count=3)
    3
    >>> batch_size(1 << 60, backend="numpy")
    1
    """
    budget = fraction * free_memory(backend)
    if ceiling is not None:
        budget = min(budget, ceiling)
    items = max(1, int(budget // max(int(bytes_per_item), 1)))
    return items if count is None else min(items, max(1, int(count)))


class TimedBatches:
    """Sizes of batches (slab rows, trial centres) that each take about ``seconds`` of work.

    Between batches, progress is reported and a cancel is polled, so both
    act about every ``seconds``. The first batch has ``first`` items (from a
    cost estimate); each later one as many as the previous batch's time per
    item fits in ``seconds``, at least 1 and at most ``ceiling`` (the memory
    budget, :func:`batch_size`), growing at most twofold a batch so that one
    fast batch does not make the next one long. The first batch's time
    includes one-off costs (Numba compiling on a cold cache, threads
    starting), so it may make the next batch larger, not smaller. With
    ``seconds=math.inf`` memory alone decides (``ceiling`` every time).

    Examples
    --------
    >>> batches = TimedBatches(first=2, ceiling=64, seconds=0.5)
    >>> batches.next()
    2
    >>> batches.record(2, 3.0)  # the first batch: compiling, perhaps; no smaller for it
    >>> batches.next()
    2
    >>> batches.record(2, 0.1)  # 0.05 s an item: 10 would fill 0.5 s, twice 2 is the most
    >>> batches.next()
    4
    >>> batches.record(4, 4.0)  # 1 s an item (a busy machine): one at a time
    >>> batches.next()
    1
    """

    def __init__(self, *, first: int, ceiling: int, seconds: float = 0.5):
        self.ceiling = max(1, int(ceiling))
        self.seconds = float(seconds)
        self._next = min(max(1, int(first)), self.ceiling)
        self._measured = 0  # batches recorded

    def next(self) -> int:
        """Items in the next batch."""
        return self._next

    def record(self, items: int, seconds: float) -> None:
        """A batch of ``items`` took ``seconds``: size the next one."""
        per_item = max(seconds, 1e-9) / max(items, 1)
        fits = min(int(min(self.seconds / per_item, self.ceiling)), 2 * items, self.ceiling)
        fits = max(1, fits)
        self._next = max(fits, self._next) if self._measured == 0 else fits
        self._measured += 1


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) is None


def host_memory_available() -> int:
    """Bytes of host memory this process may still use.

    The kernel's ``MemAvailable`` (free plus reclaimable cache), lowered to
    what the container's cgroup limit leaves (Binder and JupyterHub spawners
    cap memory this way; the machine's total says nothing about it).
    """
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 2 << 30
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            available = min(available, max(limit - usage, 0))
            break
    return int(available)


def user_cache_dir(*parts: str) -> str:
    """The user's cache folder for tomolab, or a folder in it (not created).

    ``$XDG_CACHE_HOME/tomolab`` (``~/.cache/tomolab`` when unset) on Linux,
    ``~/Library/Caches/tomolab`` on macOS, ``%LOCALAPPDATA%\\tomolab\\Cache``
    on Windows.

    Examples
    --------
    >>> import os
    >>> os.path.basename(user_cache_dir("numba"))
    'numba'
    """
    if sys.platform == "win32":
        root = os.path.join(os.environ.get("LOCALAPPDATA") or os.path.expanduser("~"), "tomolab",
                            "Cache")
    elif sys.platform == "darwin":
        root = os.path.join(os.path.expanduser("~/Library/Caches"), "tomolab")
    else:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                            "tomolab")
    return os.path.join(root, *parts)


def use_user_numba_cache() -> str | None:
    """Point Numba's cache at :func:`user_cache_dir` ``("numba")`` unless ``NUMBA_CACHE_DIR`` is set.

    Called when ``tomolab`` is imported, before Numba is. Caching saves the
    first call of each CPU kernel its compile time in every new process
    (gridrec 3.7 s, FBP 0.6 s on 2 cores). A folder that cannot be created
    falls back to one in the temporary directory. Returns the folder used
    (``None`` when neither can be made: Numba then caches as it would).
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    for folder in (user_cache_dir("numba"),
                   os.path.join(tempfile.gettempdir(), f"tomolab-numba-{_user_id()}")):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            break
    else:
        return None
    os.environ["NUMBA_CACHE_DIR"] = folder
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba came first: its config is read at import, so read it again
        config.reload_config()
    return folder


def _user_id() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid is not None else os.environ.get("USERNAME", "user")
