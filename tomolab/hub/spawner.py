"""A JupyterHub spawner mixin that hands out GPUs from a pool.

``GPUPoolMixin`` goes in front of any spawner class whose ``start`` calls
``get_env()`` to build the server's environment (LocalProcessSpawner,
SystemdSpawner, the batchspawner family)::

    class MySpawner(GPUPoolMixin, SystemdSpawner):
        pass

It only overrides ``start``, ``stop``, ``poll``, ``get_env``,
``get_state``, ``load_state`` and ``clear_state`` and reads ``user_options``.

Lifecycle of an allocation
--------------------------
- ``start``: the profile (``user_options["profile"]``) decides; ``shared``
  and ``exclusive`` take a device from the ledger (or fail with a message
  saying what is in use and what to try). If the wrapped ``start`` fails,
  the device is given back at once.
- ``get_env``: ``CUDA_VISIBLE_DEVICES`` (index or UUID, or a list of them for
  a group of GPUs; ``""`` for CPU only), ``TOMOLAB_GPU_MEMORY_LIMIT`` (bytes,
  when the device has a cap) and ``TOMOLAB_GPU_PROFILE``; for a pool entry
  with ``cluster`` (a group of GPUs, by default) also ``TOMOLAB_HUB_CLUSTER``
  (its number of GPUs), and ``get_args`` enables the server extension
  :mod:`tomolab.hub.server_cluster`, which starts a dask cluster of one
  worker per GPU inside the server.
- ``stop``, ``poll`` finding the process gone, ``clear_state`` (the hub calls
  it after every stop, including the idle culler's): the allocation is
  released, by its own id, so only this server's row can go, and twice is
  harmless.
- ``get_state``/``load_state``: the allocation rides in the spawner state
  that the hub keeps in its database. When the hub restarts, every running
  server's spawner is re-created with ``load_state`` before the hub serves
  requests; each one re-adopts its row (writing it back if the ledger was
  lost). The first allocation of the new hub process then drops every row
  that no running server adopted — servers that went away while the hub
  was down, or rows of a crashed hub — so a restart neither leaks nor
  double-assigns.
"""

from __future__ import annotations

import asyncio
import html
import os
import uuid

from tornado import web
from traitlets import Bool, Float, Int, List, Unicode, default, validate
from traitlets.config import LoggingConfigurable
from traitlets import TraitError

from . import platforms, processes
from .ledger import Allocation, Ledger, PoolExhausted, usage
from .pool import (
    CPU,
    MULTI,
    PROFILE_TITLES,
    PROFILES,
    SHARED,
    GPUDevice,
    PoolConfigError,
    format_bytes,
    parse_devices,
    printable,
)

try:  # JupyterHub >= 6
    from jupyterhub.spawner import SpawnException
except ImportError:  # pragma: no cover - older hubs
    SpawnException = None
from jupyterhub.spawner import LocalProcessSpawner

__all__ = [
    "CLUSTER_EXTENSION",
    "ENV_CLUSTER",
    "ENV_DEVICES",
    "ENV_MEMORY_LIMIT",
    "ENV_PROFILE",
    "STATE_KEY",
    "EndAllProcessesMixin",
    "GPUPoolLocalProcessSpawner",
    "GPUPoolMixin",
]

STATE_KEY = "tomolab_gpu"
ENV_DEVICES = "CUDA_VISIBLE_DEVICES"
ENV_MEMORY_LIMIT = "TOMOLAB_GPU_MEMORY_LIMIT"
ENV_PROFILE = "TOMOLAB_GPU_PROFILE"
#: GPUs of a server whose pool entry starts a cluster (the Jupyter server extension reads it)
ENV_CLUSTER = "TOMOLAB_HUB_CLUSTER"
#: the Jupyter server extension that starts the server's dask cluster
CLUSTER_EXTENSION = "tomolab.hub.server_cluster"

# Process-wide view (the hub is one process): per ledger path, the ids of the
# allocations that a spawner object of this process holds, and whether the
# ledger has been reconciled against them since this process started.
_LIVE: dict[str, dict[str, str]] = {}
_RECONCILED: set[str] = set()
_LOCKS: dict[str, asyncio.Lock] = {}
_LEDGERS: dict[str, Ledger] = {}


def _ledger(path: str) -> Ledger:
    path = os.path.abspath(path)
    if path not in _LEDGERS:
        _LEDGERS[path] = Ledger(path)
    return _LEDGERS[path]


def _pool_error(message: str, *, reason: str, status: int = 503) -> web.HTTPError:
    """An error the hub relays to the user as a message, without a traceback or a failure count."""
    if SpawnException is not None:
        err = SpawnException(message, reason=reason, status_code=status)
    else:  # older hubs: an HTTPError < 500 is a "handled rejection" too
        err = web.HTTPError(409 if status >= 500 else status, log_message=message, reason=reason)
    # what the spawn form page and the progress stream show (instead of str(err),
    # which carries the status code and class name)
    err.jupyterhub_message = message
    return err


class GPUPoolMixin(LoggingConfigurable):
    """Give each single-user server a CPU-only, shared-GPU or exclusive-GPU profile from a pool.

    Mix in front of a spawner class: ``class S(GPUPoolMixin, LocalProcessSpawner)``.
    Configure on the hub, e.g.::

        c.GPUPoolMixin.gpu_devices = [
            {"id": "0", "policy": "exclusive"},
            {"id": "1", "policy": "shared", "max_users": 3, "memory_limit": "20G"},
        ]
        c.GPUPoolMixin.gpu_pool_db = "/srv/jupyterhub/tomolab-gpu-pool.sqlite"
    """

    gpu_devices = List(
        help="""The GPU pool: one dict per device or MIG instance.

        Keys: ``id`` (index such as "0", or a "MIG-…"/"GPU-…" UUID from
        ``nvidia-smi -L``; goes into CUDA_VISIBLE_DEVICES), ``policy``
        ("exclusive" or "shared"), ``max_users`` (shared only),
        ``memory_limit`` (bytes or "20G"; per server; required for shared
        devices), ``label`` (optional, shown to users).
        """,
    ).tag(config=True)

    gpu_pool_db = Unicode(
        "tomolab-gpu-pool.sqlite",
        help="""SQLite file that records who holds which device (relative paths
        are taken from the hub's working directory). Keep it on a local disk,
        next to jupyterhub.sqlite, and give each hub its own file.""",
    ).tag(config=True)

    gpu_profiles = List(
        list(PROFILES),
        help="""Profiles offered in the spawn form, in order: any of 'cpu', 'shared', 'exclusive',
        'multi' (pool entries of several GPUs, such as {"id": "0,1"}). A profile with no
        device in the pool is not shown.""",
    ).tag(config=True)

    gpu_default_profile = Unicode(
        CPU,
        help="Profile used when a spawn request names none (REST API without options, first visit).",
    ).tag(config=True)

    gpu_max_per_user = Int(
        1,
        help="How many GPU servers (shared or exclusive) one user may hold at once; 0 for no limit.",
    ).tag(config=True)

    gpu_mps = Bool(
        False,
        help="""Servers on shared GPUs are clients of CUDA MPS: their environment
        gets CUDA_MPS_PIPE_DIRECTORY (gpu_mps_pipe_directory) and
        CUDA_MPS_PINNED_DEVICE_MEM_LIMIT (the device's memory_limit), and no
        CUDA_VISIBLE_DEVICES (the daemon of that directory serves that GPU only).
        A hard cap only once the admin has set the GPU to EXCLUSIVE_PROCESS,
        started its MPS control daemon and set the daemon's default limit
        (docs/deployment.md, "Hard memory caps"). Local and systemd spawners.""",
    ).tag(config=True)

    gpu_mps_pipe_directory = Unicode(
        platforms.DEFAULT_MPS_PIPE_DIRECTORY,
        help="""CUDA_MPS_PIPE_DIRECTORY of the MPS control daemon of each shared GPU,
        as the daemon was started with; {device} is the device id ('/' becomes '_').""",
    ).tag(config=True)

    gpu_show_holders = Bool(
        True,
        help="""Name the users holding the devices when the pool is full. Set False
        if user names should not be shown to other users.""",
    ).tag(config=True)

    @validate("gpu_devices")
    def _validate_gpu_devices(self, proposal):
        try:
            parse_devices(proposal.value)
        except PoolConfigError as e:
            raise TraitError(str(e)) from None
        return proposal.value

    @validate("gpu_profiles")
    def _validate_gpu_profiles(self, proposal):
        bad = [p for p in proposal.value if p not in PROFILES]
        if bad or not proposal.value:
            raise TraitError(f"gpu_profiles: {bad or '[]'} not allowed; use a non-empty subset of {list(PROFILES)}")
        return list(proposal.value)

    @validate("gpu_default_profile")
    def _validate_gpu_default_profile(self, proposal):
        if proposal.value not in PROFILES:
            raise TraitError(f"gpu_default_profile: {proposal.value!r} is not one of {list(PROFILES)}")
        return proposal.value

    # -- helpers -----------------------------------------------------------
    @property
    def gpu_pool(self):
        """The parsed pool (tuple of :class:`~tomolab.hub.pool.GPUDevice`)."""
        return parse_devices(self.gpu_devices)

    @property
    def gpu_ledger(self) -> Ledger:
        ledger = _ledger(self.gpu_pool_db)
        while ledger.notices:
            self.log.warning("GPU pool: %s", ledger.notices.pop(0))
        return ledger

    @property
    def gpu_allocation(self) -> Allocation | None:
        """The allocation this server holds now, or None (CPU only / not running)."""
        return getattr(self, "_gpu_alloc", None)

    @property
    def _gpu_key(self) -> str:
        return self.gpu_ledger.path

    @property
    def _gpu_server_label(self) -> str:
        return printable(f"{self.user.name}/{self.name}" if self.name else self.user.name)

    def gpu_profile(self) -> str:
        """The profile asked for in ``user_options`` (``"profile"``), or the default."""
        options = self.user_options or {}
        profile = options.get("profile")
        if isinstance(profile, (list, tuple)):  # raw form data
            profile = profile[0] if profile else None
        profile = str(profile).strip().lower() if profile is not None else ""
        profile = profile or self.gpu_default_profile
        if profile not in self.gpu_profiles:
            usable = {CPU, *(d.profile for d in self.gpu_pool)}  # profiles with devices to hand out
            offered = ", ".join(f"'{p}' ({PROFILE_TITLES[p]})" for p in self.gpu_profiles if p in usable)
            raise _pool_error(
                f"Unknown profile {profile!r}. This hub offers {offered}.",
                reason="gpu-profile-invalid",
                status=400,
            )
        return profile

    def _gpu_hold(self, alloc: Allocation) -> None:
        self._gpu_alloc = alloc
        _LIVE.setdefault(self._gpu_key, {})[alloc.alloc_id] = alloc.server_label

    def _gpu_release(self, why: str) -> None:
        alloc = self.gpu_allocation
        if alloc is None:
            return
        self._gpu_alloc = None
        _LIVE.get(self._gpu_key, {}).pop(alloc.alloc_id, None)
        try:
            released = self.gpu_ledger.release(alloc.alloc_id)
        except Exception:
            # the row stays; reconciliation drops it (its id is no longer live)
            self.log.exception("GPU pool: could not release GPU %s of %s", alloc.device, self._gpu_server_label)
            return
        if released:
            self.log.info("GPU pool: released GPU %s of %s (%s)", alloc.device, self._gpu_server_label, why)

    def _gpu_reconcile(self, live_ids) -> None:
        for stale in self.gpu_ledger.reconcile(live_ids):
            self.log.warning(
                "GPU pool: dropped stale allocation of GPU %s by %s (no running server holds it)",
                stale.device,
                stale.server_label,
            )
        _RECONCILED.add(self._gpu_key)

    async def _gpu_allocate(self, profile: str) -> Allocation:
        key = self._gpu_key
        lock = _LOCKS.setdefault(key, asyncio.Lock())
        pool = self.gpu_pool
        args = (self.user.name, self.name or "", profile, pool)
        kwargs = dict(max_per_user=self.gpu_max_per_user, show_holders=self.gpu_show_holders)
        async with lock:
            # snapshot the live ids here, on the event loop that changes them
            if key not in _RECONCILED:
                await asyncio.to_thread(self._gpu_reconcile, set(_LIVE.get(key, {})))
            try:
                alloc = await asyncio.to_thread(self.gpu_ledger.allocate, *args, **kwargs)
            except ValueError as e:  # a name the ledger refuses (control characters)
                self.log.warning("GPU pool: refused %s: %s", self._gpu_server_label, e)
                raise _pool_error(f"Cannot start this server with a GPU: {e}.", reason="gpu-name-invalid",
                                  status=400) from None
            except PoolExhausted:
                # rows left by something that did not clean up count as "in use";
                # drop those no running server holds, then try once more
                await asyncio.to_thread(self._gpu_reconcile, set(_LIVE.get(key, {})))
                try:
                    alloc = await asyncio.to_thread(self.gpu_ledger.allocate, *args, **kwargs)
                except PoolExhausted as e:
                    self.log.warning("GPU pool: %s asked for %s: %s", self._gpu_server_label, profile, e.message)
                    raise _pool_error(e.message, reason=e.reason) from None
            self._gpu_hold(alloc)
        self.log.info(
            "GPU pool: %s holds GPU %s (%s, memory cap %s)",
            self._gpu_server_label,
            alloc.device,
            alloc.policy,
            format_bytes(alloc.memory_limit),
        )
        return alloc

    # -- the spawner hooks -------------------------------------------------
    async def start(self):
        profile = self.gpu_profile()
        # leftovers of an earlier run of this server (the hub has cleared state; be sure)
        self._gpu_release("server is starting again")
        self._gpu_start_pending = True
        try:
            if profile != CPU:
                await self._gpu_allocate(profile)
            return await super().start()
        except BaseException:
            self._gpu_release("start failed")
            raise
        finally:
            self._gpu_start_pending = False

    async def stop(self, now=False):
        await super().stop(now=now)
        self._gpu_release("server stopped")

    async def poll(self):
        status = await super().poll()
        if status is not None and not getattr(self, "_gpu_start_pending", False):
            self._gpu_release(f"server process is gone (exit status {status})")
        return status

    def clear_state(self):
        super().clear_state()
        if not getattr(self, "_gpu_start_pending", False):
            self._gpu_release("state cleared")

    def get_env(self):
        env = super().get_env()
        alloc = self.gpu_allocation
        if alloc is None:
            env[ENV_DEVICES] = ""
            env.pop(ENV_MEMORY_LIMIT, None)
            env.pop(ENV_CLUSTER, None)
            env[ENV_PROFILE] = CPU
        else:
            env[ENV_DEVICES] = alloc.device
            if alloc.memory_limit:
                env[ENV_MEMORY_LIMIT] = str(alloc.memory_limit)
            else:
                env.pop(ENV_MEMORY_LIMIT, None)
            env[ENV_PROFILE] = alloc.profile
            device = self.gpu_device()
            if device.cluster:
                env[ENV_CLUSTER] = str(len(device.gpus))
            else:
                env.pop(ENV_CLUSTER, None)
            if self.gpu_mps and alloc.policy == SHARED:
                pipe = self.gpu_mps_pipe_directory.format(device=alloc.device.replace("/", "_"))
                env.update(platforms.mps_environment(alloc.memory_limit, pipe))
                env.pop(ENV_DEVICES, None)
        return env

    def get_args(self):
        args = super().get_args()
        device = self.gpu_device()
        if device is not None and device.cluster:
            # added to the extensions of the server's own configuration, not replacing them
            args.append(f"--ServerApp.jpserver_extensions={CLUSTER_EXTENSION}=True")
        return args

    def gpu_device(self):
        """The pool entry of the device this server holds, or None (CPU only)."""
        alloc = self.gpu_allocation
        if alloc is None:
            return None
        for device in self.gpu_pool:
            if device.id == alloc.device:
                return device
        # the pool changed while the server held the device: what the ledger recorded
        return GPUDevice(alloc.device, alloc.policy, memory_limit=alloc.memory_limit,
                         cluster="," in alloc.device)

    def get_state(self):
        state = super().get_state()
        alloc = self.gpu_allocation
        if alloc is not None:
            state[STATE_KEY] = alloc.to_state()
        return state

    def load_state(self, state):
        super().load_state(state)
        saved = (state or {}).get(STATE_KEY)
        if not saved:
            return
        try:
            alloc = Allocation.from_state(saved)
        except (KeyError, TypeError):
            self.log.warning("GPU pool: ignoring unreadable allocation in the state of %s", self._gpu_server_label)
            return
        orm_spawner = getattr(self, "orm_spawner", None)
        running = orm_spawner is not None and orm_spawner.server is not None
        if running:
            self._gpu_hold(alloc)
            if self.gpu_ledger.adopt(alloc) == "restored":
                self.log.warning(
                    "GPU pool: GPU %s of running server %s was missing from the ledger; restored it",
                    alloc.device,
                    self._gpu_server_label,
                )
        else:
            # state outlived its server (e.g. the hub stopped mid-way): give the row back
            self._gpu_alloc = alloc
            self._gpu_release("server is not running")

    # -- the spawn form ------------------------------------------------------
    @default("options_form")
    def _gpu_default_options_form(self):
        return GPUPoolMixin._gpu_options_form

    @default("options_from_form")
    def _gpu_default_options_from_form(self):
        return GPUPoolMixin._gpu_options_from_form

    @default("apply_user_options")
    def _gpu_default_apply_user_options(self):
        # JupyterHub >= 5.3 applies user_options before start: reject an unknown profile early
        return GPUPoolMixin._gpu_apply_user_options

    @staticmethod
    def _gpu_apply_user_options(spawner, user_options):
        spawner.gpu_profile()

    @staticmethod
    def _gpu_options_from_form(form_data):
        profile = form_data.get("profile", [""])
        return {"profile": (profile[0] if isinstance(profile, list) else profile) or ""}

    def _gpu_options_form(self):
        pool = self.gpu_pool
        try:
            counts = usage(pool, self.gpu_ledger.allocations())
        except Exception:  # the form must render even if the ledger cannot be read
            self.log.exception("GPU pool: could not read the ledger for the spawn form")
            counts = {d.id: 0 for d in pool}
        try:
            current = self.gpu_profile()
        except web.HTTPError:
            current = self.gpu_default_profile
        items = []
        for profile in self.gpu_profiles:
            devs = [d for d in pool if d.profile == profile]
            if profile == CPU:
                detail = "No GPU. For notebooks on small data, tutorials and CPU work."
                full = False
            elif not devs:
                continue
            else:
                places = sum(d.max_users for d in devs)
                free = sum(max(0, d.max_users - counts[d.id]) for d in devs)
                caps = sorted({d.memory_limit for d in devs if d.memory_limit})
                cap = (" with up to " + " / ".join(format_bytes(c) for c in caps) + " of GPU memory") if caps else ""
                if profile == SHARED:
                    detail = f"A share of a GPU{cap}, alongside other users. {free} of {places} places free."
                elif profile == MULTI:
                    sizes = " / ".join(str(n) for n in sorted({len(d.gpus) for d in devs}))
                    detail = (f"{sizes} whole GPUs to yourself{cap}, with a dask cluster of one worker per "
                              f'GPU (tomolab.cluster.start_cluster("hub")). {free} of {places} free.')
                else:
                    detail = f"A whole GPU (or MIG slice) to yourself{cap}. {free} of {places} free."
                full = free == 0
            checked = " checked" if profile == current else ""
            note = " — all in use now" if full else ""
            items.append(
                f'<div class="radio"><label>'
                f'<input type="radio" name="profile" value="{profile}"{checked}> '
                f"<strong>{html.escape(PROFILE_TITLES[profile])}</strong>{html.escape(note)}<br>"
                f'<span class="help-block">{html.escape(detail)}</span></label></div>'
            )
        return '<fieldset class="form-group"><legend>Resources</legend>' + "".join(items) + "</fieldset>"


SESSION_STATE_KEY = "tomolab_session"


class ContainerGPUMixin:
    """The env of a server whose platform hands it only its GPU (a container, a pod).

    No ``CUDA_VISIBLE_DEVICES``: the container sees its GPU alone, numbered 0
    (the device request or the device plugin chose it); a server without a GPU
    gets ``NVIDIA_VISIBLE_DEVICES=void``, so a host whose default runtime is
    nvidia gives it none either. Mixed in before :class:`GPUPoolMixin`.
    """

    def get_env(self):
        env = super().get_env()
        if self.gpu_allocation is None:
            env.update(platforms.NO_GPU_ENV)
        else:
            env.pop(ENV_DEVICES, None)
        return env


class EndAllProcessesMixin(LoggingConfigurable):
    """Stopping a local server ends every process started from it, not only the server.

    Mix in front of :class:`~jupyterhub.spawner.LocalProcessSpawner` (after
    :class:`GPUPoolMixin`, so that a GPU goes back to the pool only once
    nothing of the server runs on it). Each start puts a random
    ``TOMOLAB_SERVER_SESSION`` into the server's environment; on stop, and
    when a poll finds the server gone, every process that carries it or was
    below the server in the process tree gets SIGTERM, then SIGKILL after
    :attr:`end_processes_grace` seconds (see :mod:`tomolab.hub.processes`).
    This catches kernels and terminals (which run in sessions of their own)
    and what users detach from them with ``nohup``, ``setsid`` or a double
    fork; a process that also clears its environment escapes, so for local
    processes this stays a convention (systemd units and containers end the
    whole cgroup).
    """

    end_processes_grace = Float(
        5.0,
        help="""Seconds between SIGTERM and SIGKILL for the processes a server
        leaves behind once the server itself has stopped.""",
    ).tag(config=True)

    _server_session = None

    def _leftover_label(self) -> str:
        name = getattr(self, "name", "")
        return printable(f"{self.user.name}/{name}" if name else self.user.name)

    async def _end_leftovers(self, session, tree, why: str) -> None:
        found = set(tree)
        if session:
            found |= await asyncio.to_thread(processes.carrying, session)
        found = {p for p in found if p.pid != os.getpid() and processes.is_alive(p)}
        if not found:
            return
        self.log.info(
            "Ending %d process(es) left by %s (%s): pids %s",
            len(found), self._leftover_label(), why, " ".join(str(p.pid) for p in sorted(found, key=lambda p: p.pid)),
        )
        survivors = await asyncio.to_thread(processes.end_processes, found, grace=self.end_processes_grace)
        if session:  # started while we were ending the others
            late = await asyncio.to_thread(processes.carrying, session)
            survivors += await asyncio.to_thread(processes.end_processes, late, grace=0)
        if survivors:
            self.log.warning(
                "Processes left by %s survived SIGKILL: pids %s",
                self._leftover_label(), " ".join(str(p.pid) for p in survivors),
            )

    def get_env(self):
        env = super().get_env()
        if self._server_session is None:
            self._server_session = uuid.uuid4().hex
        env[processes.ENV_SERVER_SESSION] = self._server_session
        return env

    async def start(self):
        self._server_session = uuid.uuid4().hex
        return await super().start()

    async def stop(self, now=False):
        session = self._server_session
        pid = getattr(self, "pid", 0)
        # the tree before the server goes (afterwards its orphans belong to init), and only
        # if that pid is still this server's (a pid saved in the state can have been reused)
        tree = set()
        if pid and session and processes.has_marker(pid, session):
            tree = await asyncio.to_thread(processes.descendants, pid)
        self._stopping = True
        try:
            await super().stop(now=now)  # its poll may find the server gone and end the rest first
        finally:
            self._stopping = False
        await self._end_leftovers(session, tree, "server stopped")

    async def poll(self):
        session = self._server_session  # super().poll() clears the state when the server is gone
        status = await super().poll()
        if status is not None and session:
            self._server_session = None
            why = "server stopped" if getattr(self, "_stopping", False) else f"server process gone, exit status {status}"
            await self._end_leftovers(session, set(), why)
        return status

    def get_state(self):
        state = super().get_state()
        if self._server_session:
            state[SESSION_STATE_KEY] = self._server_session
        return state

    def load_state(self, state):
        super().load_state(state)
        self._server_session = (state or {}).get(SESSION_STATE_KEY) or self._server_session

    def clear_state(self):
        super().clear_state()
        self._server_session = None


class GPUPoolLocalProcessSpawner(GPUPoolMixin, EndAllProcessesMixin, LocalProcessSpawner):
    """:class:`~jupyterhub.spawner.LocalProcessSpawner` with the GPU pool of :class:`GPUPoolMixin`.

    Each server runs as a local process of its (system) user; it sees the
    devices in ``CUDA_VISIBLE_DEVICES`` only — a convention the user can
    override (see docs/deployment.md, "Isolation"). Stopping or culling the
    server ends every process started from it (:class:`EndAllProcessesMixin`)
    before its GPU goes back to the pool. Use it with
    ``c.JupyterHub.spawner_class = "tomolab.hub.GPUPoolLocalProcessSpawner"``.
    """
