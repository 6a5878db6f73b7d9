"""GPUPoolMixin without a hub: over a batch-like spawner, its state, its form; the facility config.

Fast; the real hub is in test_hub_gpu_pool.py.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from types import SimpleNamespace

import pytest

from hubtools import REPO, load_culler_hook
from tomolab.hub import Ledger, PoolConfigError, parse_devices

jupyterhub = pytest.importorskip("jupyterhub", reason="the spawner mixin needs jupyterhub (pip install -e '.[hub]')")
from jupyterhub.spawner import Spawner  # noqa: E402
from tornado import web  # noqa: E402

from tomolab.hub import GPUPoolMixin  # noqa: E402

POOL_SPEC = [
    {"id": "0", "policy": "exclusive"},
    {"id": "1", "policy": "exclusive", "memory_limit": "40G"},
    {"id": "MIG-aaaa-bbbb", "policy": "shared", "max_users": 2, "memory_limit": "10G", "label": "3g.40gb"},
]
POOL = parse_devices(POOL_SPEC)

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


def test_a_group_of_gpus_gets_its_cluster_variable_and_the_server_extension(tmp_path):
    async def go():
        group = [{"id": "2,3", "policy": "exclusive"}]
        sp = make(tmp_path, options={"profile": "multi"})
        sp.gpu_devices = group
        await sp.start()
        assert sp.job_env["CUDA_VISIBLE_DEVICES"] == "2,3" and sp.job_env["TOMOLAB_HUB_CLUSTER"] == "2"
        assert "--ServerApp.jpserver_extensions=tomolab.hub.server_cluster=True" in sp.get_args()
        assert sp.job_env["TOMOLAB_GPU_PROFILE"] == "multi"
        form = sp._gpu_options_form()
        assert "Several GPUs" in form and "2 whole GPUs to yourself" in form and "Exclusive GPU" not in form
        await sp.stop()
        assert await sp.poll() == 0 and sp.gpu_ledger.allocations() == []
        # one GPU: no cluster, unless its entry asks for one
        one = make(tmp_path, user="bob", options={"profile": "exclusive"})
        await one.start()
        assert "TOMOLAB_HUB_CLUSTER" not in one.job_env
        assert not any("jpserver_extensions" in a for a in one.get_args())
        cpu = make(tmp_path, user="cat", options={"profile": "cpu"})
        cpu.gpu_devices = group
        await cpu.start()
        assert "TOMOLAB_HUB_CLUSTER" not in cpu.job_env

    asyncio.run(go())


def test_the_server_extension_starts_nothing_without_its_variable(tmp_path):
    from tomolab.hub.server_cluster import start_server_cluster

    environ = {"CUDA_VISIBLE_DEVICES": "0"}
    assert start_server_cluster(str(tmp_path), environ=environ) is None
    assert start_server_cluster(str(tmp_path), environ={"TOMOLAB_HUB_CLUSTER": "none"}) is None
    assert "TOMOLAB_CLUSTER_FILE" not in environ and list(tmp_path.iterdir()) == []


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
    config_arg = [a for a in culler[0]["command"] if a.startswith("--config=")][0]
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


def test_names_with_control_characters_get_a_message_not_a_gpu(tmp_path):
    async def go():
        for user, server in (("eve\x1b[2J", ""), ("ann", "nb\r\nroot")):
            sp = make(tmp_path, user=user, server=server, options={"profile": "exclusive"})
            with pytest.raises(web.HTTPError) as err:
                await sp.start()
            assert err.value.status_code == 400
            message = getattr(err.value, "jupyterhub_message", "")
            assert "holds a control character" in message and "printable characters only" in message
            assert "\x1b" not in message and "\r" not in message
        assert Ledger(str(tmp_path / "pool.sqlite")).allocations() == []

    asyncio.run(go())
