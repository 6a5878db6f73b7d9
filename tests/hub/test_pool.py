"""The GPU pool without a hub: configuration, the ledger, the mixin over a non-local spawner, the form, the CLI.

Fast (a few seconds); the real-hub behaviour is in test_hub_gpu_pool.py.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import subprocess
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest

from hubtools import REPO, load_culler_hook
from tomolab.hub import Ledger, PoolConfigError, PoolExhausted, format_bytes, parse_bytes, parse_devices

pytestmark = pytest.mark.hub

POOL_SPEC = [
    {"id": "0", "policy": "exclusive"},
    {"id": "1", "policy": "exclusive", "memory_limit": "40G"},
    {"id": "MIG-aaaa-bbbb", "policy": "shared", "max_users": 2, "memory_limit": "10G", "label": "3g.40gb"},
]
POOL = parse_devices(POOL_SPEC)


# -- configuration -------------------------------------------------------------
@pytest.mark.parametrize(
    "value, expected",
    [(1, 1), ("512", 512), ("1K", 1024), ("20G", 20 * 1024**3), ("20Gi", 20 * 1024**3),
     ("20GiB", 20 * 1024**3), ("1.5M", 3 * 1024**2 // 2), ("2 T", 2 * 1024**4), (4.0, 4)],
)
def test_parse_bytes(value, expected):
    assert parse_bytes(value) == expected


@pytest.mark.parametrize("value", ["20X", "", "-1G", 0, -5, True, None, "G", 1.5])
def test_parse_bytes_rejects_with_the_fix(value):
    with pytest.raises(PoolConfigError, match="memory_limit"):
        parse_bytes(value)


def test_format_bytes_round_trips_parse_bytes():
    for text in ["512 B", "1 KiB", "20 GiB", "1.5 MiB", "2 TiB"]:
        assert format_bytes(parse_bytes(text)) == text


@pytest.mark.parametrize(
    "spec, message",
    [
        ([{"id": "0", "policy": "shared", "max_users": 3}], "needs a per-user memory_limit"),
        ([{"id": "0", "policy": "shared", "memory_limit": "1G"}], "needs max_users"),
        ([{"id": "0", "policy": "exclusive", "max_users": 2}], "use policy='shared'"),
        ([{"id": "0"}, {"id": 0}], "listed twice"),
        ([{"id": "cuda:0"}], "neither a device index"),
        ([{"id": "0", "policy": "fair"}], "not 'exclusive' or 'shared'"),
        ([{"id": "0", "gpus": 2}], "unknown key"),
        ([{"policy": "exclusive"}], "missing 'id'"),
        ({"id": "0"}, "list of dicts"),
        (["0"], "expected a dict"),
    ],
)
def test_bad_pool_configuration_names_entry_and_fix(spec, message):
    with pytest.raises(PoolConfigError, match=message):
        parse_devices(spec)


def test_pool_parses_indices_uuids_and_caps():
    assert [(d.id, d.policy, d.max_users, d.memory_limit) for d in POOL] == [
        ("0", "exclusive", 1, None),
        ("1", "exclusive", 1, 40 * 1024**3),
        ("MIG-aaaa-bbbb", "shared", 2, 10 * 1024**3),
    ]
    assert POOL[2].display == "GPU MIG-aaaa-bbbb (3g.40gb)"


# -- ledger --------------------------------------------------------------------
@pytest.fixture
def ledger(tmp_path):
    return Ledger(str(tmp_path / "pool.sqlite"))


def test_exclusive_devices_go_one_each_then_refuse_with_holders(ledger):
    a = ledger.allocate("ann", "", "exclusive", POOL)
    b = ledger.allocate("bob", "", "exclusive", POOL)
    assert {a.device, b.device} == {"0", "1"}
    assert b.memory_limit == (40 * 1024**3 if b.device == "1" else None)
    with pytest.raises(PoolExhausted) as err:
        ledger.allocate("cat", "", "exclusive", POOL)
    msg = str(err.value)
    assert "All 2 exclusive GPUs are in use" in msg and "ann" in msg and "bob" in msg
    assert "'Shared GPU' profile (2 of 2 places free)" in msg and "'CPU only'" in msg
    assert [x.user for x in ledger.allocations()] == ["ann", "bob"]


def test_holders_can_be_hidden(ledger):
    ledger.allocate("ann", "", "shared", POOL)
    ledger.allocate("bob", "", "shared", POOL)
    with pytest.raises(PoolExhausted) as err:
        ledger.allocate("cat", "", "shared", POOL, show_holders=False)
    assert "ann" not in str(err.value) and "2 server(s) (2/2, 10 GiB each)" in str(err.value)


def test_shared_device_takes_max_users_and_spreads_load(tmp_path):
    pool = parse_devices([{"id": str(i), "policy": "shared", "max_users": 2, "memory_limit": "1G"} for i in range(2)])
    ledger = Ledger(str(tmp_path / "l.sqlite"))
    devices = [ledger.allocate(f"u{i}", "", "shared", pool).device for i in range(4)]
    assert sorted(devices) == ["0", "0", "1", "1"] and devices[:2] == ["0", "1"]
    with pytest.raises(PoolExhausted, match="All 4 places on shared GPUs"):
        ledger.allocate("u9", "", "shared", pool)


def test_release_is_idempotent_and_only_removes_its_own_row(ledger):
    a = ledger.allocate("ann", "", "exclusive", POOL)
    b = ledger.allocate("ann", "big", "exclusive", POOL)
    assert ledger.release(a.alloc_id) is True
    assert ledger.release(a.alloc_id) is False
    assert ledger.release("not-an-id") is False
    assert ledger.allocations() == [b]


def test_same_server_starting_again_replaces_its_old_row(ledger):
    old = ledger.allocate("ann", "", "exclusive", POOL)
    new = ledger.allocate("ann", "", "shared", POOL)
    assert ledger.allocations() == [new]
    assert ledger.release(old.alloc_id) is False  # a late release of the old run cannot touch the new one
    assert ledger.allocations() == [new]


def test_per_user_limit(ledger):
    ledger.allocate("ann", "", "exclusive", POOL, max_per_user=1)
    with pytest.raises(PoolExhausted, match="You already hold 1 GPU server") as err:
        ledger.allocate("ann", "two", "shared", POOL, max_per_user=1)
    assert err.value.reason == "gpu-per-user-limit"
    ledger.allocate("ann", "two", "shared", POOL, max_per_user=2)


def test_profile_without_devices(tmp_path):
    ledger = Ledger(str(tmp_path / "l.sqlite"))
    with pytest.raises(PoolExhausted, match="This hub has no shared GPUs") as err:
        ledger.allocate("ann", "", "shared", POOL[:2])
    assert "'Exclusive GPU' profile (2 of 2 GPUs free)" in str(err.value)


def test_adopt_and_reconcile(ledger):
    a = ledger.allocate("ann", "", "exclusive", POOL)
    b = ledger.allocate("bob", "", "shared", POOL)
    assert ledger.adopt(a) == "present"
    assert ledger.reconcile({a.alloc_id}) == [b]
    assert ledger.allocations() == [a]
    ledger.release(a.alloc_id)
    assert ledger.adopt(a) == "restored"
    assert ledger.allocations() == [a]


def _grab(path, user, start, out):
    start.wait(10)
    try:
        out.put((user, Ledger(path).allocate(user, "", "exclusive", POOL).device))
    except PoolExhausted:
        out.put((user, None))


def test_processes_racing_for_two_gpus_get_two(tmp_path):
    """The check-then-insert is one transaction: 8 processes, 2 exclusive GPUs, exactly 2 winners."""
    path = str(tmp_path / "race.sqlite")
    Ledger(path)
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_grab, args=(path, f"u{i}", start, out)) for i in range(8)]
    for p in procs:
        p.start()
    start.set()
    results = dict(out.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(10)
    winners = {u: d for u, d in results.items() if d is not None}
    assert sorted(winners.values()) == ["0", "1"]
    assert {(a.user, a.device) for a in Ledger(path).allocations()} == set(winners.items())


# -- the mixin over a spawner that is not LocalProcessSpawner ---------------------
jupyterhub = pytest.importorskip("jupyterhub", reason="the spawner mixin needs jupyterhub (pip install -e '.[hub]')")
from jupyterhub.spawner import Spawner  # noqa: E402
from tornado import web  # noqa: E402

from tomolab.hub import GPUPoolMixin  # noqa: E402


class FakeBatchSpawner(Spawner):
    """A stand-in for a batch/systemd spawner: a 'job' that lives in memory, env from get_env()."""

    def get_env(self):
        return {"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3", "TOMOLAB_GPU_MEMORY_LIMIT": "1"}

    def load_state(self, state):
        super().load_state(state)
        self.job_id = state.get("job_id", "")

    def get_state(self):
        state = super().get_state()
        if getattr(self, "job_id", ""):
            state["job_id"] = self.job_id
        return state

    def clear_state(self):
        super().clear_state()
        self.job_id = ""

    async def start(self):
        if getattr(self, "fail_start", False):
            raise RuntimeError("the batch system said no")
        self.job_env = self.get_env()
        self.job_id = "job-1"
        self.job_exit = None
        return ("127.0.0.1", 8888)

    async def poll(self):
        if not getattr(self, "job_id", ""):
            return 0
        return getattr(self, "job_exit", None)

    async def stop(self, now=False):
        self.job_exit = 0


class PoolBatchSpawner(GPUPoolMixin, FakeBatchSpawner):
    pass


def make(tmp_path, user="ann", server="", options=None, running=False, **cfg):
    orm = SimpleNamespace(name=server, server=None, display_name=server)
    sp = PoolBatchSpawner(
        user=SimpleNamespace(name=user),
        orm_spawner=orm,
        gpu_devices=POOL_SPEC,
        gpu_pool_db=str(tmp_path / "pool.sqlite"),
        **cfg,
    )
    sp.user_options = options or {}
    # what load_state looks at: does the hub's database say this server is running?
    orm.server = "the hub's orm.Server row" if running else None
    return sp


def test_mixin_gives_env_and_releases_when_the_job_ends(tmp_path):
    async def go():
        sp = make(tmp_path, options={"profile": "shared"})
        await sp.start()
        assert sp.job_env["CUDA_VISIBLE_DEVICES"] == "MIG-aaaa-bbbb"
        assert sp.job_env["TOMOLAB_GPU_MEMORY_LIMIT"] == str(10 * 1024**3)
        assert sp.job_env["TOMOLAB_GPU_PROFILE"] == "shared"
        assert len(sp.gpu_ledger.allocations()) == 1
        assert await sp.poll() is None
        sp.job_exit = 137  # the job died: the next poll gives the place back
        assert await sp.poll() == 137
        assert sp.gpu_ledger.allocations() == [] and sp.gpu_allocation is None

        cpu = make(tmp_path, user="bob", options={"profile": "cpu"})
        await cpu.start()
        assert cpu.job_env["CUDA_VISIBLE_DEVICES"] == "" and "TOMOLAB_GPU_MEMORY_LIMIT" not in cpu.job_env

        ex = make(tmp_path, user="cat", options={"profile": ["exclusive"]})  # raw form data works too
        await ex.start()
        assert ex.job_env["CUDA_VISIBLE_DEVICES"] == "0" and "TOMOLAB_GPU_MEMORY_LIMIT" not in ex.job_env
        await ex.stop()
        assert ex.gpu_ledger.allocations() == []

    asyncio.run(go())


def test_no_profile_means_the_default_profile(tmp_path):
    async def go():
        for options in ({}, {"profile": None}, {"profile": ""}, {"profile": []}):
            sp = make(tmp_path, user="fay", options=options)
            await sp.start()
            assert sp.job_env["TOMOLAB_GPU_PROFILE"] == "cpu" and sp.job_env["CUDA_VISIBLE_DEVICES"] == ""
        sp = make(tmp_path, user="gus", gpu_default_profile="shared")
        await sp.start()
        assert sp.job_env["CUDA_VISIBLE_DEVICES"] == "MIG-aaaa-bbbb"

    asyncio.run(go())


def test_failed_start_gives_the_device_back(tmp_path):
    async def go():
        sp = make(tmp_path, options={"profile": "exclusive"})
        sp.fail_start = True
        with pytest.raises(RuntimeError):
            await sp.start()
        assert sp.gpu_ledger.allocations() == []

    asyncio.run(go())


def test_exhaustion_and_bad_profile_are_http_errors_with_messages(tmp_path):
    async def go():
        for user in ("ann", "bob"):
            await make(tmp_path, user=user, options={"profile": "exclusive"}).start()
        with pytest.raises(web.HTTPError) as err:
            await make(tmp_path, user="cat", options={"profile": "exclusive"}).start()
        assert err.value.status_code == 503
        assert "All 2 exclusive GPUs are in use" in getattr(err.value, "message", err.value.log_message)
        with pytest.raises(web.HTTPError) as err:
            await make(tmp_path, user="dan", options={"profile": "huge"}).start()
        assert err.value.status_code == 400 and "Unknown profile 'huge'" in str(err.value)
        only_cpu = make(tmp_path, user="eve", options={"profile": "shared"}, gpu_profiles=["cpu"])
        with pytest.raises(web.HTTPError, match="offers 'cpu'"):
            await only_cpu.start()

    asyncio.run(go())


def test_state_round_trip_adopts_running_and_releases_stopped(tmp_path):
    async def go():
        sp = make(tmp_path, options={"profile": "exclusive"})
        await sp.start()
        state = json.loads(json.dumps(sp.get_state()))  # what the hub stores in its database
        assert state["job_id"] == "job-1" and state["tomolab_gpu"]["device"] == "0"
        ledger = sp.gpu_ledger

        # hub restart, server still running, ledger lost: the row comes back from the state
        ledger.release(state["tomolab_gpu"]["alloc_id"])
        again = make(tmp_path, running=True)
        again.load_state(state)
        assert again.gpu_allocation.device == "0"
        assert [a.alloc_id for a in ledger.allocations()] == [state["tomolab_gpu"]["alloc_id"]]

        # state that outlived its server (the hub says it is not running): the row goes
        stale = make(tmp_path, running=False)
        stale.load_state(state)
        assert stale.gpu_allocation is None and ledger.allocations() == []

    asyncio.run(go())


def test_first_allocation_drops_rows_no_running_server_holds(tmp_path):
    from tomolab.hub import spawner as spawner_module

    async def go():
        ledger = Ledger(str(tmp_path / "pool.sqlite"))
        ledger.allocate("ghost1", "", "exclusive", POOL)  # rows of a hub that crashed
        ledger.allocate("ghost2", "", "exclusive", POOL)
        spawner_module._RECONCILED.discard(ledger.path)
        sp = make(tmp_path, user="ann", options={"profile": "exclusive"})
        await sp.start()
        assert [a.user for a in ledger.allocations()] == ["ann"]
        # and once reconciled, a leftover row is still dropped when it is all that blocks a spawn
        ledger.allocate("ghost3", "", "exclusive", POOL)
        bob = make(tmp_path, user="bob", options={"profile": "exclusive"})
        await bob.start()
        assert sorted(a.user for a in ledger.allocations()) == ["ann", "bob"]

    asyncio.run(go())


def test_spawn_form_lists_profiles_with_availability(tmp_path):
    async def go():
        await make(tmp_path, user="ann", options={"profile": "exclusive"}).start()
        await make(tmp_path, user="bob", options={"profile": "exclusive"}).start()
        sp = make(tmp_path, user="cat", options={"profile": "shared"})
        form = await sp.get_options_form()
        for text in ('value="cpu"', 'value="shared" checked', 'value="exclusive"', "2 of 2 places free",
                     "0 of 2 free", "all in use now", "up to 10 GiB of GPU memory"):
            assert text in form, text
        assert sp.run_options_from_form({"profile": ["exclusive"]}) == {"profile": "exclusive"}
        no_shared = make(tmp_path, user="dan", gpu_profiles=["cpu", "exclusive"])
        assert 'value="shared"' not in await no_shared.get_options_form()

    asyncio.run(go())


# -- lightness, CLI, the facility config ------------------------------------------
def test_import_is_light():
    code = (
        "import sys, tomolab.hub, tomolab.hub.__main__; "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'cupy', 'jupyterhub', 'dask', 'xarray'}); "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
    code = "import sys, tomolab.hub.spawner; print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'cupy'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_lists_who_holds_what(tmp_path):
    db = tmp_path / "pool.sqlite"
    ledger = Ledger(str(db))
    ledger.allocate("ann", "", "exclusive", POOL)
    ledger.allocate("bob", "big", "shared", POOL)
    out = subprocess.run([sys.executable, "-m", "tomolab.hub", "list", "--db", str(db)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "ann" in out and "bob/big" in out and "MIG-aaaa-bbbb" in out and "10 GiB" in out
    cfg = tmp_path / "jupyterhub_config.py"
    cfg.write_text(f"c.GPUPoolMixin.gpu_devices = {POOL_SPEC!r}\nc.GPUPoolMixin.gpu_pool_db = 'pool.sqlite'\n")
    out = subprocess.run([sys.executable, "-m", "tomolab.hub", "list", "--config", str(cfg), "--json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    data = json.loads(out)
    assert [d["in_use"] for d in data["devices"]] == [1, 0, 1]
    missing = subprocess.run([sys.executable, "-m", "tomolab.hub", "list", "--db", str(tmp_path / "nope.sqlite")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no ledger" in missing.stderr


def test_facility_config_loads_in_jupyterhub(tmp_path, monkeypatch):
    from jupyterhub.app import JupyterHub

    monkeypatch.chdir(tmp_path)
    app = JupyterHub()
    app.load_config_file(str(REPO / "deploy" / "jupyterhub_config.py"))
    cfg = app.config
    assert cfg.JupyterHub.spawner_class == "tomolab.hub.GPUPoolLocalProcessSpawner"
    parse_devices(cfg.GPUPoolMixin.gpu_devices)
    culler = [s for s in cfg.JupyterHub.services if s["name"] == "idle-culler"]
    assert culler and "jupyterhub_idle_culler" in " ".join(culler[0]["command"])
    roles = {r["name"]: r for r in cfg.JupyterHub.load_roles}
    assert "idle-culler" in roles["idle-culler"]["services"]
    assert {"list:users", "read:users:activity", "read:servers", "delete:servers", "admin:server_state"} <= set(
        roles["idle-culler"]["scopes"]
    )
    # the culler's config file is there, and stops GPU servers sooner than CPU ones
    config_arg = [a for a in culler[0]["command"] if a.startswith("--config-file=")][0]
    hook = load_culler_hook(config_arg.split("=", 1)[1], gpu_idle_seconds="60")
    gpu = {"state": {"tomolab_gpu": {"device": "0"}}}
    cpu = {"state": {"pid": 1}}
    assert hook(inactive=timedelta(seconds=61), inactive_limit=3600, server=gpu)
    assert not hook(inactive=timedelta(seconds=59), inactive_limit=3600, server=gpu)
    assert not hook(inactive=timedelta(seconds=61), inactive_limit=3600, server=cpu)
    assert hook(inactive=timedelta(seconds=3600), inactive_limit=3600, server=cpu)
    assert not hook(inactive=timedelta(seconds=61), inactive_limit=3600, server={"state": None})


def test_facility_config_with_a_bad_pool_stops_the_hub(tmp_path, monkeypatch):
    from jupyterhub.app import JupyterHub

    text = (REPO / "deploy" / "jupyterhub_config.py").read_text()
    bad = text.replace('"max_users": 4, "memory_limit": "18G", ', '"max_users": 4, ')
    assert bad != text
    (tmp_path / "jupyterhub_config.py").write_text(bad)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PoolConfigError, match=r"gpu_devices\[1\]: a shared device needs a per-user memory_limit"):
        JupyterHub().load_config_file(str(tmp_path / "jupyterhub_config.py"))
