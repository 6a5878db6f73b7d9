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

import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass

from tomolab.errors import ParameterError

__all__ = ["BACKENDS", "resolve_backend", "gpu_memory_limit", "apply_gpu_memory_limit",
           "free_memory", "host_memory_available", "parse_bytes", "backend_of", "batch_size",
           "MEMORY_MARGIN", "MemoryBound", "cgroup_memory", "rlimit_memory", "host_memory_bounds",
           "gpu_memory_bounds", "memory_bounds", "require_memory", "human_bytes",
           "user_cache_dir", "use_user_numba_cache", "TimedBatches", "usable_cpus"]

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
        return gpu_memory_bounds()[0].available  # cached pool blocks count as free
    return host_memory_available()


def backend_of(xp) -> str:
    """The backend name of an array module: ``"cupy"`` or ``"numpy"``."""
    return "cupy" if getattr(xp, "__name__", "") == "cupy" else "numpy"


def batch_size(bytes_per_item: int, *, backend: str, count: int | None = None,
               fraction: float = 0.25, ceiling: int | None = None, reserved: int = 0) -> int:
    """How many items of ``bytes_per_item`` fit in ``fraction`` of :func:`free_memory`.

    The one memory-budget rule of the package: every batch (slice pairs,
    trial centres, angles, slab rows) is sized here, from free memory on the
    backend (within the hub's GPU cap or the container's memory limit), never
    from a constant. ``ceiling`` caps the budget in bytes; ``reserved`` bytes
    (an output the caller is about to hold, say) are taken off the free
    memory first. The answer is at least 1 and at most ``count``.

    Examples
    --------
    >>> batch_size(1 << 20, backend="numpy", count=3)
    3
    >>> batch_size(1 << 60, backend="numpy")
    1
    """
    budget = fraction * max(free_memory(backend) - int(reserved), 0)
    if ceiling is not None:
        budget = min(budget, ceiling)
    items = max(1, int(budget // max(int(bytes_per_item), 1)))
    return items if count is None else min(items, max(1, int(count)))


# ---------------------------------------------------------------------------- memory limits

#: share of the available memory a request may not use: room for other processes, allocator
#: fragmentation and the error of the estimate (see :func:`require_memory`)
MEMORY_MARGIN = 0.10

_NO_LIMIT = 1 << 60  # cgroup v1 writes 2**63 - 4096 for "no limit"


@dataclass(frozen=True)
class MemoryBound:
    """One thing that bounds the memory a process may use, and what it leaves.

    ``name`` says what it is (``"MemAvailable"``, ``"cgroup memory.max"``,
    ``"RLIMIT_AS"``, ...), ``limit`` is the limit itself in bytes (None where
    there is none, as for the kernel's ``MemAvailable``) and ``available`` the
    bytes it still leaves this process.
    """

    name: str
    limit: int | None
    available: int

    def describe(self) -> str:
        """``"cgroup memory.max 16.0 GB"``, or the name alone when there is no limit."""
        return self.name if self.limit is None else f"{self.name} {human_bytes(self.limit)}"


def human_bytes(count: float) -> str:
    """Bytes for a message, in decimal units.

    Examples
    --------
    >>> human_bytes(38.2e9), human_bytes(131072), human_bytes(512)
    ('38.2 GB', '0.1 MB', '512 B')
    """
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if abs(count) >= size or unit == "MB" and abs(count) >= 1e5:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"


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


def _read_stat(path: str, key: str) -> int:
    """A counter of a cgroup's ``memory.stat`` (0 when absent)."""
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key and value.strip().isdigit():
                    return int(value)
    except OSError:
        pass
    return 0


def _cgroup_paths(membership: str, controller: str = "memory") -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and v1 ``controller`` path, from ``/proc/self/cgroup``."""
    v2 = v1 = None
    try:
        with open(membership) as f:
            lines = f.read().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif controller in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _ancestors(root: str, path: str) -> list[str]:
    """``root/path`` and each folder above it up to ``root`` (``root`` alone if it is not there)."""
    root = os.path.normpath(root)
    here = os.path.normpath(os.path.join(root, path.lstrip("/"))) if path else root
    if not here.startswith(root) or not os.path.isdir(here):
        here = root  # a cgroup namespace shows "/" or a path that is not mounted here: its root
    folders = [here]
    while here != root:
        here = os.path.dirname(here)
        folders.append(here)
    return folders


def cgroup_memory(*, root: str = "/sys/fs/cgroup",
                  membership: str = "/proc/self/cgroup") -> MemoryBound | None:
    """The tightest cgroup memory limit on this process, and what it leaves; None without one.

    The process's cgroup is read from ``membership`` (``/proc/self/cgroup``),
    and every cgroup from it up to ``root`` counts (a limit on a parent binds
    its children). What a limit leaves is the limit minus the cgroup's usage,
    less the inactive file cache that the kernel reclaims before it kills (as
    the kubelet counts a container's working set). cgroup v2 (``memory.max``,
    ``memory.current``) is tried first, then v1 (``memory/…/memory.limit_in_bytes``).

    Examples
    --------
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> for name, text in [("memory.max", "1000000"), ("memory.current", "300000"),
    ...                    ("memory.stat", "anon 250000\\ninactive_file 50000\\n")]:
    ...     _ = open(os.path.join(root, name), "w").write(text)
    >>> cgroup_memory(root=root, membership="/nonexistent")
    MemoryBound(name='cgroup memory.max', limit=1000000, available=750000)
    """
    v2, v1 = _cgroup_paths(membership)
    candidates = [(folder, "memory.max", "memory.current", "inactive_file")
                  for folder in _ancestors(root, v2 or "")]
    v1_root = os.path.join(root, "memory")
    if os.path.isdir(v1_root):
        candidates += [(folder, "memory.limit_in_bytes", "memory.usage_in_bytes",
                        "total_inactive_file") for folder in _ancestors(v1_root, v1 or "")]
    best = None
    for folder, limit_name, usage_name, inactive_name in candidates:
        limit = _read_int(os.path.join(folder, limit_name))
        usage = _read_int(os.path.join(folder, usage_name))
        if limit is None or usage is None or limit >= _NO_LIMIT:
            continue
        working_set = max(usage - _read_stat(os.path.join(folder, "memory.stat"), inactive_name), 0)
        bound = MemoryBound(f"cgroup {limit_name}", limit, max(limit - working_set, 0))
        if best is None or bound.available < best.available:
            best = bound
    return best


def _cpu_quota(folder: str, v1: bool) -> float | None:
    """CPUs' worth of time a cgroup folder allows (quota / period); None without a quota."""
    if v1:
        quota = _read_int(os.path.join(folder, "cpu.cfs_quota_us"))  # -1 (no quota) reads as None
        period = _read_int(os.path.join(folder, "cpu.cfs_period_us"))
    else:
        try:
            with open(os.path.join(folder, "cpu.max")) as f:
                text = f.read().split()
        except OSError:
            return None
        quota, period = (int(t) if t.isdigit() else None for t in (text + ["", ""])[:2])
    return quota / period if quota and period else None


def usable_cpus(*, root: str = "/sys/fs/cgroup", membership: str = "/proc/self/cgroup") -> int:
    """How many CPUs this process can keep busy: its CPU affinity, capped by a cgroup CPU quota.

    ``os.cpu_count()`` counts the machine's. A JupyterHub server limited to
    4 CPUs on a 128-core node (a spawner's ``cpu_limit`` is a cgroup quota,
    not an affinity) would size its thread pools for 128. Every cgroup from
    this process's (``membership``) up to ``root`` counts: cgroup v2
    ``cpu.max`` ("quota period", or "max"), then v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``; a fractional quota is rounded up.

    Examples
    --------
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = open(os.path.join(root, "cpu.max"), "w").write("150000 100000")
    >>> usable_cpus(root=root, membership="/nonexistent") == min(2, usable_cpus(root="/nonexistent"))
    True
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    v2, v1 = _cgroup_paths(membership, "cpu")
    folders = [(folder, False) for folder in _ancestors(root, v2 or "")]
    for name in ("cpu", "cpu,cpuacct"):
        if os.path.isdir(os.path.join(root, name)):
            folders += [(folder, True) for folder in _ancestors(os.path.join(root, name), v1 or "")]
            break
    for folder, is_v1 in folders:
        quota = _cpu_quota(folder, is_v1)
        if quota is not None:
            cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def _status_bytes(key: str, status: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmSize``, ``VmData``) in bytes."""
    try:
        with open(status) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rlimit_memory(*, status: str = "/proc/self/status") -> list[MemoryBound]:
    """This process's address-space and data limits (``ulimit -v``, ``-d``) and what they leave.

    ``RLIMIT_AS`` bounds the virtual size (``VmSize``: every mapping, also
    thread stacks and allocator arenas that are reserved but not touched),
    ``RLIMIT_DATA`` the private writable mappings (``VmData``); a request
    beyond either fails in ``malloc`` however much memory the machine has free.
    """
    try:
        import resource
    except ImportError:  # not on Windows
        return []
    bounds = []
    for name, key in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        soft, _hard = resource.getrlimit(getattr(resource, name))
        if soft == resource.RLIM_INFINITY or soft < 0:
            continue
        used = _status_bytes(key, status) or 0
        bounds.append(MemoryBound(name, int(soft), max(int(soft) - used, 0)))
    return bounds


def _mem_available(meminfo: str) -> int:
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def host_memory_bounds(*, cgroup_root: str = "/sys/fs/cgroup",
                       membership: str = "/proc/self/cgroup",
                       meminfo: str = "/proc/meminfo",
                       status: str = "/proc/self/status") -> list[MemoryBound]:
    """Everything that bounds this process's host memory, tightest first.

    The kernel's ``MemAvailable`` (free plus reclaimable cache), the cgroup
    limit of the container (:func:`cgroup_memory`: Binder, JupyterHub
    spawners, SLURM and Kubernetes cap memory this way; the machine's total
    says nothing about it) and the process's own ``RLIMIT_AS`` /
    ``RLIMIT_DATA`` (:func:`rlimit_memory`). The paths are keywords so that
    tests can point them at files of their own.
    """
    bounds = [MemoryBound("MemAvailable", None, _mem_available(meminfo))]
    cgroup = cgroup_memory(root=cgroup_root, membership=membership)
    if cgroup is not None:
        bounds.append(cgroup)
    bounds += rlimit_memory(status=status)
    return sorted(bounds, key=lambda b: b.available)


def host_memory_available(**paths) -> int:
    """Bytes of host memory this process may still use: the tightest :func:`host_memory_bounds`."""
    return int(host_memory_bounds(**paths)[0].available)


def gpu_memory_bounds() -> list[MemoryBound]:
    """What bounds this process's GPU memory, tightest first: the device's free memory
    (plus the blocks CuPy's pool holds for reuse) and the per-user cap
    ``TOMOLAB_GPU_MEMORY_LIMIT`` (less what the pool has in use)."""
    import cupy

    apply_gpu_memory_limit()
    pool = cupy.get_default_memory_pool()
    free, _total = cupy.cuda.runtime.memGetInfo()
    bounds = [MemoryBound("free device memory", None, int(free + pool.free_bytes()))]
    limit = pool.get_limit()
    if limit:
        bounds.append(MemoryBound("TOMOLAB_GPU_MEMORY_LIMIT", int(limit),
                                  max(int(limit - pool.used_bytes()), 0)))
    return sorted(bounds, key=lambda b: b.available)


def memory_bounds(backend: str) -> list[MemoryBound]:
    """:func:`gpu_memory_bounds` for ``"cupy"``, else :func:`host_memory_bounds`."""
    return gpu_memory_bounds() if backend == "cupy" else host_memory_bounds()


def require_memory(nbytes: float, *, backend: str, what: str, fix: str, where: str | None = None,
                   value=None, margin: float = MEMORY_MARGIN) -> int:
    """Refuse, before allocating, a request of ``nbytes`` that ``backend``'s memory cannot hold.

    A request fits when it needs at most ``1 - margin`` of the memory
    available on the backend (:func:`free_memory`: for the host the tightest
    of ``MemAvailable``, the cgroup limit and the process's ``RLIMIT_AS`` /
    ``RLIMIT_DATA``; for the GPU its free memory within
    ``TOMOLAB_GPU_MEMORY_LIMIT``). Otherwise :class:`~tomolab.errors.InsufficientMemory`
    says how much is needed and available, what bounds it, the margin kept,
    and the way out in ``fix``. Nothing is allocated either way.

    Parameters
    ----------
    nbytes : number
        The estimate of the request (count every intermediate that is alive at once).
    backend : {"numpy", "cupy"}
    what : str
        What needs it, e.g. ``"a volume of 2000 × 2560 × 2560"``.
    fix : str
        The ways out, e.g. ``"reconstruct fewer rows (rows='A:B')"``.
    where, value : optional
        The parameter (or file) and value that made the request big.

    Returns
    -------
    int
        The bytes available on the backend.

    Examples
    --------
    >>> require_memory(1 << 20, backend="numpy", what="a test", fix="none") > 1 << 20
    True
    >>> require_memory(1 << 62, backend="numpy", what="a volume", where="size", value=10**9,
    ...                fix="pass a smaller size=")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tomolab.errors.InsufficientMemory: size=1000000000: a volume needs 4611686.0 TB of host ...
    """
    from tomolab.errors import InsufficientMemory

    available = free_memory(backend)
    if nbytes <= (1.0 - margin) * available:
        return available
    kind = "GPU" if backend == "cupy" else "host"
    bounds = memory_bounds(backend)
    binding = next((b for b in bounds if b.available == available), None)
    limits = [b.describe() for b in bounds if b.limit is not None and b is not binding]
    context = "; ".join(([binding.describe()] if binding is not None else [])
                        + ([f"other limits: {', '.join(limits)}"] if limits else [])
                        + [f"keeping a {margin * 100:.0f} % margin"])
    raise InsufficientMemory(
        f"{what} needs {human_bytes(nbytes)} of {kind} memory, {human_bytes(available)} "
        f"available ({context})",
        where=where, value=value, fix=fix, needed=int(nbytes), available=int(available))


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
