"""The GPU-pool spawner in a real JupyterHub with configurable-http-proxy, on 127.0.0.1.

Servers are real ``jupyterhub-singleuser`` processes; their environment is read
from a kernel running inside each one. The pool (see hubtools.py): exclusive
GPUs "0" and "1", one shared MIG instance for up to 3 users with a 2 GiB cap.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from hubtools import POOL, REPO, SHARED_CAP, SHARED_ID, BrowserSession, find_proxy, free_ports, hub_requirements_missing, kill_processes_mentioning

pytestmark = [pytest.mark.hub, pytest.mark.timeout(300)]

_missing = hub_requirements_missing()
if _missing:
    pytest.skip(f"real-hub tests need: {_missing}", allow_module_level=True)

KEYS = ["CUDA_VISIBLE_DEVICES", "TOMOLAB_GPU_MEMORY_LIMIT", "TOMOLAB_GPU_PROFILE"]
EXCLUSIVE_IDS = {"0", "1"}
MAX_USERS = {d["id"]: d.get("max_users", 1) for d in POOL}


def run(coro, timeout=240):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def assert_within_policy(allocations):
    per_device = Counter(a.device for a in allocations)
    for device, n in per_device.items():
        assert device in MAX_USERS, f"allocation on unknown device {device}"
        assert n <= MAX_USERS[device], f"device {device} has {n} servers, policy allows {MAX_USERS[device]}"
    per_server = Counter((a.user, a.server) for a in allocations)
    assert max(per_server.values(), default=0) <= 1, f"a server holds two allocations: {per_server}"


def assert_env_matches(env, alloc):
    if alloc is None:
        assert env["CUDA_VISIBLE_DEVICES"] == ""
        assert env["TOMOLAB_GPU_MEMORY_LIMIT"] is None
        assert env["TOMOLAB_GPU_PROFILE"] == "cpu"
    else:
        assert env["CUDA_VISIBLE_DEVICES"] == alloc.device
        assert env["TOMOLAB_GPU_PROFILE"] == alloc.profile
        expected = str(SHARED_CAP) if alloc.device == SHARED_ID else None
        assert env["TOMOLAB_GPU_MEMORY_LIMIT"] == expected


@pytest.fixture
def clean(hub):
    """Each test starts and ends with no servers and an empty pool."""
    assert hub.allocations() == [], "a previous test left allocations behind"
    yield hub
    run(hub.stop_everything(), 120)
    assert hub.allocations() == []


def test_concurrent_spawns_respect_the_pool_then_stop_releases(clean):
    hub = clean
    profiles = {f"u{i:02d}": p for i, p in enumerate(["exclusive"] * 3 + ["shared"] * 4 + ["cpu"] * 5)}

    async def scenario():
        await hub.create_users(list(profiles))
        results = dict(zip(profiles, await asyncio.gather(*(hub.spawn(u, p) for u, p in profiles.items()))))
        allocations = hub.allocations()
        assert_within_policy(allocations)
        by_user = {a.user: a for a in allocations}

        ok = {u for u, r in results.items() if r["ok"]}
        refused = {u: r for u, r in results.items() if not r["ok"]}
        assert sorted(profiles[u] for u in refused) == ["exclusive", "shared"], results
        assert sum(profiles[u] == "exclusive" for u in ok) == 2
        assert sum(profiles[u] == "shared" for u in ok) == 3
        assert all(u in ok for u, p in profiles.items() if p == "cpu")
        # every running GPU server has exactly its allocation, every refused one none
        assert set(by_user) == {u for u in ok if profiles[u] != "cpu"}
        assert {by_user[u].device for u in ok if profiles[u] == "exclusive"} == EXCLUSIVE_IDS

        # the refusals say what is in use and what to try, as a message (not a traceback)
        (ex_user,) = [u for u in refused if profiles[u] == "exclusive"]
        msg = refused[ex_user]["message"]
        assert refused[ex_user]["code"] == 503
        assert "All 2 exclusive GPUs are in use" in msg
        for u in ok:
            if profiles[u] == "exclusive":
                assert f"GPU {by_user[u].device}: {u}" in msg
        assert "'CPU only'" in msg and "Traceback" not in msg
        (sh_user,) = [u for u in refused if profiles[u] == "shared"]
        msg = refused[sh_user]["message"]
        assert "All 3 places on shared GPUs are in use" in msg and "2 GiB each" in msg and "'CPU only'" in msg

        # each server's kernel sees its device (and only it) and its memory cap
        envs = dict(zip(sorted(ok), await asyncio.gather(*(hub.kernel_environ(u, KEYS) for u in sorted(ok)))))
        for u, env in envs.items():
            assert_env_matches(env, by_user.get(u))

        # the admin command shows the same table
        out = subprocess.run(
            [sys.executable, "-m", "tomolab.hub", "list", "--db", str(hub.ledger_path), "--json"],
            capture_output=True, text=True, timeout=60, check=True,
        )
        listed = {(a["user"], a["device"]) for a in json.loads(out.stdout)["allocations"]}
        assert listed == {(a.user, a.device) for a in allocations}

        # stopping a holder releases its GPU, and the refused user now gets exactly that one
        holder = next(u for u in sorted(ok) if profiles[u] == "exclusive")
        freed = by_user[holder].device
        await hub.stop_server(holder)
        assert holder not in hub.holders()
        retry = await hub.spawn(ex_user, "exclusive")
        assert retry["ok"], retry
        assert hub.holders()[ex_user] == freed
        env = await hub.kernel_environ(ex_user, KEYS)
        assert env["CUDA_VISIBLE_DEVICES"] == freed
        assert_within_policy(hub.allocations())

    run(scenario())


def test_unknown_profile_and_per_user_limit(clean):
    hub = clean  # stub-* servers: this is about the options, not about Jupyter

    async def scenario():
        await hub.create_users(["stub-p1"])
        bad = await hub.spawn("stub-p1", "gigantic")
        assert not bad["ok"] and bad["code"] == 400
        assert "Unknown profile 'gigantic'" in bad["message"] and "'exclusive'" in bad["message"]
        assert hub.allocations() == []

        assert (await hub.spawn("stub-p1", "exclusive"))["ok"]
        second = await hub.spawn("stub-p1", "shared", server="second")
        assert not second["ok"]
        assert "You already hold 1 GPU server" in second["message"], second
        # a CPU-only named server is always fine
        assert (await hub.spawn("stub-p1", "cpu", server="notebook"))["ok"]
        assert [(a.user, a.server) for a in hub.allocations()] == [("stub-p1", "")]
        env = await hub.stub_environ("stub-p1", server="notebook")
        assert env["CUDA_VISIBLE_DEVICES"] == "" and env["TOMOLAB_GPU_MEMORY_LIMIT"] is None

    run(scenario())


def test_spawn_form_offers_profiles_and_shows_the_refusal(clean):
    """The HTML path a user takes: log in, see the form with what is free, submit it."""
    hub = clean  # stub-* servers: this is about the pages, not about Jupyter

    async def scenario():
        await hub.create_users(["stub-f1", "stub-f2", "stub-f3"])
        assert all(r["ok"] for r in await asyncio.gather(hub.spawn("stub-f1", "exclusive"),
                                                         hub.spawn("stub-f2", "exclusive")))
        browser = BrowserSession(hub, "stub-f3")
        await browser.login()
        page = (await browser.fetch("/hub/spawn")).body.decode()
        for text in ('name="profile" value="cpu" checked', 'value="shared"', 'value="exclusive"',
                     "0 of 2 free", "3 of 3 places free", "all in use now"):
            assert text in page, text

        refused = await browser.fetch("/hub/spawn", form={"profile": "exclusive"})
        page = refused.body.decode()
        assert refused.code == 503
        assert "All 2 exclusive GPUs are in use" in page and "stub-f1" in page and "stub-f2" in page
        assert "SpawnException" not in page and "Traceback" not in page
        assert 'name="profile"' in page, "the form is shown again, to pick another profile"
        assert "stub-f3" not in hub.holders()

        accepted = await browser.fetch("/hub/spawn", form={"profile": "shared"})
        assert accepted.code == 302 and "/spawn-pending/stub-f3" in accepted.headers["Location"]
        deadline = time.monotonic() + 60
        while not (await hub.user("stub-f3"))["servers"].get("", {}).get("ready"):
            assert time.monotonic() < deadline, hub.log_tail()
            await asyncio.sleep(0.3)
        assert (await hub.stub_environ("stub-f3"))["CUDA_VISIBLE_DEVICES"] == SHARED_ID
        assert hub.holders()["stub-f3"] == SHARED_ID

    run(scenario())


def test_killed_server_process_is_noticed_and_its_gpu_released(clean):
    hub = clean  # k1 is a Jupyter server; the others only need to hold and take GPUs

    async def scenario():
        await hub.create_users(["k1", "stub-k2", "stub-k3"])
        spawned = await asyncio.gather(hub.spawn("k1", "exclusive"), hub.spawn("stub-k2", "exclusive"))
        assert all(r["ok"] for r in spawned), spawned
        device = hub.holders()["k1"]
        state = await hub.server_state("k1")
        assert state["tomolab_gpu"]["device"] == device
        assert "DETACHED" in await hub.kernel_run("k1", DETACH, until="DETACHED", shutdown=False)
        deadline = time.monotonic() + 10
        while len(sleepers := detached_sleepers(hub)) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(sleepers) == 3, sleepers
        os.kill(state["pid"], signal.SIGKILL)
        # the hub polls every second; the poll finds the process gone and the GPU comes back
        deadline = time.monotonic() + 30
        while "k1" in hub.holders() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert "k1" not in hub.holders(), hub.log_tail()
        await hub.wait_stopped("k1", timeout=30)
        # the poll that found the server gone ended what it had started (its kernel, the sleeps)
        assert await wait_gone(sleepers) == [], hub.log_tail()
        r = await hub.spawn("stub-k3", "exclusive")
        assert r["ok"], r
        assert hub.holders() == {"stub-k2": hub.holders()["stub-k2"], "stub-k3": device}
        assert (await hub.stub_environ("stub-k3"))["CUDA_VISIBLE_DEVICES"] == device

    run(scenario())


DETACH = r"""
import os, subprocess
subprocess.run("nohup sleep 1001 >/dev/null 2>&1 &", shell=True)  # the shell exits: sleep goes to init
subprocess.run(["setsid", "-f", "sleep", "1002"])  # a session of its own, forked away
pid = os.fork()  # a double-forked daemon
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "1003"])
    os._exit(0)
os.waitpid(pid, 0)
print("DETACHED")
"""


def detached_sleepers(hub) -> dict[int, int]:
    """pid -> session id of the `sleep 100x` processes started from this hub's servers."""
    found = {}
    for pid in hub.server_processes():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if cmd[:1] == [b"sleep"] and cmd[1:2] and cmd[1].startswith(b"100"):
            found[pid] = os.getsid(pid)
    return found


async def wait_gone(pids, timeout=20.0) -> list[int]:
    from tomolab.hub.processes import is_alive, lookup

    procs = [p for p in map(lookup, pids) if p is not None]
    deadline = time.monotonic() + timeout
    while procs and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        procs = [p for p in procs if is_alive(p)]
    return [p.pid for p in procs]


def test_stopping_a_server_ends_every_process_started_from_it(clean):
    """A kernel detaches three sleeps (nohup, setsid -f, double fork); stopping the server ends them all."""
    hub = clean

    async def scenario():
        await hub.create_users(["pk1"])
        assert (await hub.spawn("pk1", "exclusive"))["ok"]
        server_pid = (await hub.server_state("pk1"))["pid"]
        out = await hub.kernel_run("pk1", DETACH, until="DETACHED", shutdown=False)
        assert "DETACHED" in out
        deadline = time.monotonic() + 10
        while len(sleepers := detached_sleepers(hub)) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(sleepers) == 3, sleepers
        # none is in the server's session or process group: signalling those would miss them
        assert os.getsid(server_pid) not in sleepers.values()
        assert all(os.getpgid(p) != server_pid for p in sleepers)
        assert "pk1" in hub.holders()
        await hub.stop_server("pk1")
        assert await wait_gone(sleepers) == [], hub.log_tail()
        assert "pk1" not in hub.holders() and hub.allocations() == []
        assert "process(es) left by pk1 (server stopped)" in hub.log_tail(200)
        # the hub's ledger is its own
        assert os.stat(hub.ledger_path).st_mode & 0o777 == 0o600

    run(scenario())


def test_idle_culler_stops_servers_and_releases_their_gpus(clean):
    """The facility's culler service, as deploy/jupyterhub_config.py runs it: GPU servers go, CPU ones stay.

    Its command line is taken from the shipped config, with a 1-hour CPU limit
    and a 2-second GPU limit, pointed at the test hub.
    """
    from jupyterhub.app import JupyterHub

    hub = clean
    app = JupyterHub()
    app.load_config_file(str(REPO / "deploy" / "jupyterhub_config.py"))
    (service,) = [s for s in app.config.JupyterHub.services if s["name"] == "idle-culler"]
    command = [a for a in service["command"] if not a.startswith(("--timeout=", "--cull-every="))]
    command += ["--timeout=3600", "--cull-every=1"]
    env = dict(os.environ, **service.get("environment", {}))
    env.update(TOMOLAB_GPU_IDLE_TIMEOUT="2", JUPYTERHUB_API_TOKEN=hub.token,
               JUPYTERHUB_API_URL=f"http://127.0.0.1:{hub.port}/hub/api")

    async def scenario():
        await hub.create_users(["c1", "c2", "stub-c3"])
        results = await asyncio.gather(
            hub.spawn("c1", "exclusive"), hub.spawn("c2", "shared"), hub.spawn("stub-c3", "cpu")
        )
        assert all(r["ok"] for r in results), results
        assert set(hub.holders()) == {"c1", "c2"}
        log = open(hub.root / "culler.log", "w")
        culler = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            await asyncio.gather(hub.wait_stopped("c1", timeout=40), hub.wait_stopped("c2", timeout=40))
            assert culler.poll() is None, (hub.root / "culler.log").read_text()
        finally:
            culler.terminate()
            culler.wait(10)
            log.close()
        assert hub.allocations() == []
        assert "" in (await hub.user("stub-c3"))["servers"], "the CPU-only server is not idle long enough to cull"

    run(scenario())


def test_hub_restart_keeps_allocations_and_drops_stale_ones(clean):
    from tomolab.hub import Ledger, parse_devices

    hub = clean  # r1, r3, r5 run Jupyter (their kernels are read after the restart); stub-* run the stub
    profiles = {"r1": "exclusive", "stub-r2": "exclusive", "r3": "shared", "stub-r4": "shared", "r5": "cpu"}

    async def spawn_all():
        await hub.create_users([*profiles, "n1", "stub-n2", "stub-n3", "n4"])
        results = await asyncio.gather(*(hub.spawn(u, p) for u, p in profiles.items()))
        assert all(r["ok"] for r in results), results
        return {u: (await hub.server_state(u))["pid"] for u in profiles}

    pids = run(spawn_all())
    before = {a.user: a for a in hub.allocations()}
    assert set(before) == {"r1", "stub-r2", "r3", "stub-r4"}

    hub.stop()  # cleanup_servers=False: the servers keep running
    for pid in pids.values():
        os.kill(pid, 0)  # raises if the server died with the hub
    # while the hub is down: stub-r4's server dies, and a crashed hub's leftover row fills the shared device
    os.kill(pids["stub-r4"], signal.SIGKILL)
    ghost = Ledger(str(hub.ledger_path)).allocate("ghost", "", "shared", parse_devices(POOL))
    assert ghost.device == SHARED_ID
    hub.start()

    async def after_restart():
        await hub.wait_stopped("stub-r4", timeout=30)  # noticed at start-up
        now = {a.user: a for a in hub.allocations()}
        for u in ("r1", "stub-r2", "r3"):
            assert now[u] == before[u], f"{u}'s allocation changed across the restart"
        assert "stub-r4" not in now
        # the running servers are reachable and still see their devices
        envs = await asyncio.gather(*(hub.kernel_environ(u, KEYS) for u in ("r1", "r3", "r5")))
        for u, env in zip(("r1", "r3", "r5"), envs):
            assert_env_matches(env, now.get(u))
        assert_env_matches(await hub.stub_environ("stub-r2"), now["stub-r2"])
        # no double assignment: both exclusive GPUs are still held by r1, stub-r2
        r = await hub.spawn("n1", "exclusive")
        assert not r["ok"] and "All 2 exclusive GPUs are in use" in r["message"], r
        assert {a.user for a in hub.allocations()} == {"r1", "stub-r2", "r3"}, "the ghost row should be gone"
        # the shared device has r3 plus two free places
        r2, r3 = await asyncio.gather(hub.spawn("stub-n2", "shared"), hub.spawn("stub-n3", "shared"))
        assert r2["ok"] and r3["ok"], (r2, r3)
        for u in ("stub-n2", "stub-n3"):
            assert (await hub.stub_environ(u))["CUDA_VISIBLE_DEVICES"] == SHARED_ID
        r4 = await hub.spawn("n4", "shared")
        assert not r4["ok"] and "All 3 places on shared GPUs are in use" in r4["message"], r4
        assert_within_policy(hub.allocations())
        return {a.alloc_id: a for a in hub.allocations()}

    held = run(after_restart())

    # lose the ledger entirely: the hub rebuilds it from the running servers' saved state
    hub.stop()
    hub.ledger_path.unlink()
    hub.start()

    async def after_ledger_loss():
        assert {a.alloc_id: a for a in hub.allocations()} == held
        r = await hub.spawn("n1", "exclusive")
        assert not r["ok"] and "All 2 exclusive GPUs are in use" in r["message"], r
        r = await hub.spawn("n4", "shared")
        assert not r["ok"] and "shared GPUs are in use" in r["message"], r
        assert {a.alloc_id: a for a in hub.allocations()} == held

    run(after_ledger_loss())


def test_load_50_spawn_stop_cycles_end_with_an_empty_pool(clean):
    """50 spawn/stop cycles in batches of 1-7 at once (seeded), checking the policy every 0.1 s.

    The load users' servers are stub_server.py (real processes spawned and
    stopped by the hub, reached through the proxy, but starting in
    milliseconds), so this exercises the pool rather than Jupyter's start-up.
    """
    hub = clean
    rng = random.Random(20251125)
    users = [f"stub-load{i:02d}" for i in range(10)]
    outcomes = Counter()
    violations = []

    async def cycle(user, profile):
        r = await hub.spawn(user, profile)
        if r["ok"]:
            outcomes[profile, "ok"] += 1
            # the stub server answers with its environment, through the proxy
            env = await hub.stub_environ(user)
            alloc = {a.user: a for a in hub.allocations()}.get(user)
            assert_env_matches(env, alloc)
            await asyncio.sleep(rng.uniform(0, 0.3))
            await hub.stop_server(user)
        else:
            outcomes[profile, "refused"] += 1
            assert r["code"] == 503 and "are in use" in r["message"], r

    async def monitor(stop):
        while not stop.is_set():
            try:
                assert_within_policy(hub.allocations())
            except AssertionError as e:
                violations.append(str(e))
            await asyncio.sleep(0.1)

    async def scenario():
        await hub.create_users(users)
        stop = asyncio.Event()
        watcher = asyncio.ensure_future(monitor(stop))
        done = 0
        while done < 50:
            k = min(rng.randint(1, 7), 50 - done)
            batch = rng.sample(users, k)
            await asyncio.gather(*(cycle(u, rng.choice(["cpu", "shared", "exclusive", "exclusive"])) for u in batch))
            done += k
        stop.set()
        await watcher

    run(scenario(), timeout=280)
    assert not violations, violations[:3]
    assert sum(outcomes.values()) == 50
    assert outcomes["exclusive", "ok"] and outcomes["shared", "ok"] and outcomes["cpu", "ok"], outcomes
    assert hub.allocations() == []
    users_now = run(hub.request("GET", "/users"))
    assert all(not u["servers"] for u in users_now)
    deadline = time.monotonic() + 20
    while hub.server_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert hub.server_processes() == [], "server or kernel processes outlived their servers"


def test_facility_config_boots_a_hub_with_the_pool_and_the_culler(tmp_path):
    """deploy/jupyterhub_config.py as shipped (ports moved to free ones): PAM, the pool spawner, the culler running."""
    import shutil
    import urllib.request

    for name in ("jupyterhub_config.py", "idle_culler_config.py"):
        shutil.copy(REPO / "deploy" / name, tmp_path / name)
    port, hub_port, api_port = free_ports(3)
    env = dict(os.environ, PATH=os.path.dirname(find_proxy()) + os.pathsep + os.environ.get("PATH", ""))
    log_path = tmp_path / "hub.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(tmp_path / "jupyterhub_config.py"),
             f"--JupyterHub.bind_url=http://127.0.0.1:{port}", f"--JupyterHub.hub_port={hub_port}",
             f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{api_port}"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        culler_asked = False
        while time.monotonic() < deadline and not culler_asked:
            assert proc.poll() is None, log_path.read_text()
            text = log_path.read_text()
            culler_asked = any("GET /hub/api/users" in ln and "(idle-culler@" in ln for ln in text.splitlines())
            time.sleep(0.3)
        assert culler_asked, f"the culler service never queried the hub:\n{log_path.read_text()}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hub/login", timeout=10) as r:
            assert r.status == 200
        assert "Using Spawner: tomolab.hub.spawner.GPUPoolLocalProcessSpawner" in text
        assert "Using Authenticator: jupyterhub.auth.PAMAuthenticator" in text
        assert (tmp_path / "jupyterhub.sqlite").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        # the culler runs in a session of its own: if the hub's cleanup missed it, end it here
        kill_processes_mentioning(str(tmp_path))
