"""The GPU pool: devices, their sharing policy, and per-user memory caps.

Standard library and tomolab's base layer only (:mod:`tomolab.devices`,
:mod:`tomolab.errors`, which load no NumPy), so the hub process (and
``python -m tomolab.hub``) stays light. A pool is a list of :class:`GPUDevice`; it is described in the
hub's configuration as a list of dicts::

    c.GPUPoolMixin.gpu_devices = [
        {"id": "0", "policy": "exclusive"},
        {"id": "1", "policy": "shared", "max_users": 3, "memory_limit": "20G"},
        {"id": "MIG-4f0c1b5e-...", "policy": "exclusive", "label": "A100 1g.10gb"},
    ]
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from tomolab import devices
from tomolab.errors import ParameterError

__all__ = [
    "CPU",
    "EXCLUSIVE",
    "MULTI",
    "PROFILES",
    "PROFILE_TITLES",
    "SHARED",
    "GPUDevice",
    "PoolConfigError",
    "check_name",
    "format_bytes",
    "parse_bytes",
    "parse_devices",
    "printable",
]

EXCLUSIVE = "exclusive"
SHARED = "shared"
CPU = "cpu"
#: the profile of pool entries that hold several GPUs (exclusive, handed out whole)
MULTI = "multi"
#: Profile names, in the order the spawn form shows them.
PROFILES = (CPU, SHARED, EXCLUSIVE, MULTI)
#: How each profile is called to users (spawn form, "pool full" messages).
PROFILE_TITLES = {CPU: "CPU only", SHARED: "Shared GPU", EXCLUSIVE: "Exclusive GPU", MULTI: "Several GPUs"}

_SCALES = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))
_DEVICE_ID_RE = re.compile(r"^(\d+|(?:MIG|GPU)-[0-9A-Za-z/\-]+)$")
_NODE_RE = re.compile(r"^/dev/[0-9A-Za-z_./\-]+$")
_RESOURCE_RE = re.compile(r"^[a-z0-9.\-]+/[A-Za-z0-9.\-_]+$")
_KEYS = ("id", "policy", "max_users", "memory_limit", "label", "device_nodes", "k8s_resource", "node_selector",
         "cluster")


def _is_unsafe(ch: str) -> bool:
    # C0/C1 controls, DEL, and format characters (bidi overrides, zero-width, line/paragraph
    # separators): they rewrite or hide what a terminal, a log viewer or an HTML page shows
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def printable(name) -> str:
    r"""Return ``name`` with control and format characters escaped, for logs and listings.

    Examples
    --------
    >>> printable("alice")
    'alice'
    >>> printable("eve\x1b[2J\u202egnp.exe")
    'eve\\x1b[2J\\u202egnp.exe'
    """
    text = str(name)
    if not any(_is_unsafe(ch) for ch in text):
        return text
    out = []
    for ch in text:
        if _is_unsafe(ch):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def check_name(value, *, what: str) -> str:
    r"""Return ``value`` if it holds no control or format character, else raise ``ValueError``.

    The message names ``what`` and shows the value escaped.

    Examples
    --------
    >>> check_name("alice", what="user name")
    'alice'
    >>> check_name("bob\nroot 0 exclusive", what="user name")
    Traceback (most recent call last):
    ...
    ValueError: user name 'bob\x0aroot 0 exclusive' holds a control character (\x0a); use a name of printable characters only
    """
    text = str(value)
    bad = [ch for ch in text if _is_unsafe(ch)]
    if bad:
        raise ValueError(
            f"{what} '{printable(text)}' holds a control character ({printable(bad[0])}); "
            "use a name of printable characters only"
        )
    return text


class PoolConfigError(ValueError):
    """The GPU pool configuration is invalid; the message says which entry and how to fix it."""


def parse_bytes(value, *, where="memory_limit") -> int:
    """Return a byte count from an int or a string such as ``"20G"``.

    Suffixes K, M, G, T are powers of 1024, as in JupyterHub's ``mem_limit``
    (``"20G"``, ``"20Gi"`` and ``"20GiB"`` all mean 20 × 1024³ bytes). Strings
    are read by :func:`tomolab.devices.parse_bytes`, the parser the user's
    server applies to ``TOMOLAB_GPU_MEMORY_LIMIT``, so the hub accepts
    exactly the sizes the servers understand; the hub also requires a
    positive whole number of bytes and raises :class:`PoolConfigError`.

    Examples
    --------
    >>> parse_bytes("20G")
    21474836480
    >>> parse_bytes(1024)
    1024
    >>> parse_bytes("1.5M")
    1572864
    """
    if isinstance(value, bool):
        raise PoolConfigError(f"{where}: expected bytes (int) or a size like '20G', got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str):
        try:
            n = devices.parse_bytes(value, where=where)
        except ParameterError:
            raise PoolConfigError(
                f"{where}: cannot read {value!r} as a size; write bytes (21474836480) "
                "or a number with K, M, G or T (1024-based), e.g. '20G'"
            ) from None
    else:
        raise PoolConfigError(f"{where}: expected bytes (int) or a size like '20G', got {value!r}")
    if n <= 0:
        raise PoolConfigError(f"{where}: must be a positive size, got {value!r}")
    return n


def format_bytes(n: int | None) -> str:
    """Return a short human-readable size (1024-based).

    Examples
    --------
    >>> format_bytes(21474836480)
    '20 GiB'
    >>> format_bytes(None)
    'no cap'
    """
    if n is None:
        return "no cap"
    for unit, scale in _SCALES:
        if n >= scale:
            v = n / scale
            return f"{v:.0f} {unit}" if v.is_integer() else f"{v:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class GPUDevice:
    """One entry of the pool: a whole GPU (index or ``GPU-`` UUID) or a MIG instance (``MIG-`` UUID).

    Parameters
    ----------
    id : str
        What the server gets in ``CUDA_VISIBLE_DEVICES``.
    policy : {"exclusive", "shared"}
        ``exclusive``: one server at a time. ``shared``: up to ``max_users`` servers.
    max_users : int
        Servers that may share the device (1 for exclusive devices).
    memory_limit : int or None
        Per-server cap in bytes, passed as ``TOMOLAB_GPU_MEMORY_LIMIT``.
        Required for shared devices, optional for exclusive ones.
    label : str
        Shown to users and admins (e.g. ``"A100 80GB #1"``).
    device_nodes : tuple of str
        Device files of this GPU for the systemd allow-list (default
        ``/dev/nvidiaN`` for an index N; UUIDs need them listed, a MIG instance
        with its ``/dev/nvidia-caps/nvidia-capN`` files).
    k8s_resource : str
        Kubernetes extended resource a pod asks for (default ``nvidia.com/gpu``;
        ``nvidia.com/mig-<label>`` for a MIG UUID whose label is a MIG profile such
        as ``1g.10gb``; ``nvidia.com/gpu.shared`` for shared devices).
    node_selector : tuple of (str, str)
        Kubernetes node labels a pod with this device must run on.
    cluster : bool
        The server starts a dask cluster of one worker per GPU of the entry
        (:mod:`tomolab.hub.server_cluster`); default: when the entry holds
        two GPUs or more (an ``id`` such as ``"0,1"``).
    """

    id: str
    policy: str
    max_users: int = 1
    memory_limit: int | None = None
    label: str = ""
    device_nodes: tuple[str, ...] = ()
    k8s_resource: str = ""
    node_selector: tuple[tuple[str, str], ...] = ()
    cluster: bool = False

    @property
    def gpus(self) -> tuple[str, ...]:
        """The GPUs of the entry: one, or several for a group such as ``"0,1"``."""
        return tuple(self.id.split(","))

    @property
    def profile(self) -> str:
        """The profile that hands this entry out: its policy, or ``"multi"`` for a group of GPUs."""
        return MULTI if len(self.gpus) > 1 else self.policy

    @property
    def display(self) -> str:
        return ("GPUs " if len(self.gpus) > 1 else "GPU ") + self.id + (f" ({self.label})" if self.label else "")


def parse_devices(spec) -> tuple[GPUDevice, ...]:
    """Validate the ``gpu_devices`` configuration and return the pool.

    Examples
    --------
    >>> pool = parse_devices([{"id": 0, "policy": "exclusive"},
    ...                       {"id": "1", "policy": "shared", "max_users": 3, "memory_limit": "20G"}])
    >>> [(d.id, d.policy, d.max_users, d.memory_limit) for d in pool]
    [('0', 'exclusive', 1, None), ('1', 'shared', 3, 21474836480)]

    An exclusive entry may hold several GPUs, handed out together; its server
    then runs a dask cluster of one worker per GPU:

    >>> [(d.gpus, d.cluster) for d in parse_devices([{"id": "2,3", "policy": "exclusive"}])]
    [(('2', '3'), True)]
    """
    if isinstance(spec, dict):
        raise PoolConfigError("gpu_devices: expected a list of dicts, one per device, got a dict")
    devices = []
    seen: dict[str, str] = {}  # GPU -> the entry that holds it
    for i, entry in enumerate(spec or ()):
        where = f"gpu_devices[{i}]"
        if not isinstance(entry, dict):
            raise PoolConfigError(f"{where}: expected a dict like {{'id': '0', 'policy': 'exclusive'}}, got {entry!r}")
        unknown = set(entry) - set(_KEYS)
        if unknown:
            raise PoolConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(_KEYS)}")
        if "id" not in entry:
            raise PoolConfigError(f"{where}: missing 'id' (a device index such as '0', or a MIG-/GPU- UUID)")
        gpus = [part.strip() for part in str(entry["id"]).split(",")]
        dev_id = ",".join(gpus)
        if isinstance(entry["id"], bool) or not all(_DEVICE_ID_RE.match(g) for g in gpus):
            raise PoolConfigError(
                f"{where}: id {entry['id']!r} is neither a device index ('0') nor a UUID "
                "('MIG-…' or 'GPU-…' as listed by `nvidia-smi -L`), nor a list of them ('0,1')"
            )
        for gpu in gpus:
            if gpu in seen:
                raise PoolConfigError(f"{where}: device {gpu!r} is listed twice (also in {seen[gpu]}); "
                                      "list each device once")
            seen[gpu] = where
        policy = entry.get("policy", EXCLUSIVE)
        if policy not in (EXCLUSIVE, SHARED):
            raise PoolConfigError(f"{where}: policy {policy!r} is not 'exclusive' or 'shared'")
        if len(gpus) > 1 and policy != EXCLUSIVE:
            raise PoolConfigError(f"{where}: a group of GPUs ({dev_id}) is handed out whole; "
                                  "use policy='exclusive'")
        cluster = entry.get("cluster", len(gpus) > 1)
        if not isinstance(cluster, bool):
            raise PoolConfigError(f"{where}: cluster must be true or false, got {cluster!r}")
        memory_limit = entry.get("memory_limit")
        if memory_limit is not None:
            memory_limit = parse_bytes(memory_limit, where=f"{where}.memory_limit")
        if policy == EXCLUSIVE:
            max_users = entry.get("max_users", 1)
            if max_users != 1:
                raise PoolConfigError(
                    f"{where}: an exclusive device has max_users=1, got {max_users!r}; "
                    "use policy='shared' to let several servers use it"
                )
        else:
            max_users = entry.get("max_users")
            if isinstance(max_users, bool) or not isinstance(max_users, int) or max_users < 1:
                raise PoolConfigError(
                    f"{where}: a shared device needs max_users, a whole number >= 1, got {max_users!r}"
                )
            if memory_limit is None:
                raise PoolConfigError(
                    f"{where}: a shared device needs a per-user memory_limit (e.g. '20G') so that "
                    "one user cannot take the whole card"
                )
        try:
            label = check_name(entry.get("label", ""), what=f"{where}.label")
        except ValueError as e:
            raise PoolConfigError(str(e)) from None
        nodes = entry.get("device_nodes", ())
        if isinstance(nodes, str) or not all(isinstance(n, str) and _NODE_RE.match(n) for n in nodes):
            raise PoolConfigError(
                f"{where}: device_nodes must be a list of /dev paths such as ['/dev/nvidia3'], got {nodes!r}"
            )
        resource = entry.get("k8s_resource", "")
        if resource and not (isinstance(resource, str) and _RESOURCE_RE.match(resource)):
            raise PoolConfigError(
                f"{where}: k8s_resource {resource!r} is not a Kubernetes extended resource name "
                "such as 'nvidia.com/gpu' or 'nvidia.com/mig-1g.10gb'"
            )
        selector = entry.get("node_selector", {})
        if not isinstance(selector, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and not any(map(_is_unsafe, k + v)) for k, v in selector.items()
        ):
            raise PoolConfigError(
                f"{where}: node_selector must be a dict of node labels, e.g. "
                "{'nvidia.com/gpu.product': 'NVIDIA-A100-SXM4-80GB'}, got " + printable(repr(selector))
            )
        devices.append(GPUDevice(dev_id, policy, max_users, memory_limit, label, tuple(nodes), resource,
                                 tuple(sorted(selector.items())), cluster))
    return tuple(devices)
