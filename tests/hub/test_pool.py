"""The GPU pool without a hub: configuration, the ledger, the admin command, a light import.

Standard library only (the pool and the ledger need nothing else); fast. The
spawner mixin is in test_spawner_mixin.py, the real hub in test_hub_gpu_pool.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import pytest

from tomolab.hub import Ledger, PoolConfigError, PoolExhausted, format_bytes, parse_bytes, parse_devices

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


@pytest.mark.parametrize("text", ["512", "1K", "20G", "20Gi", "20GiB", "1.5M", "2 T", " 3 g "])
def test_the_hub_reads_sizes_as_the_servers_do(text):
    from tomolab.devices import parse_bytes as server_parse_bytes  # TOMOLAB_GPU_MEMORY_LIMIT

    assert parse_bytes(text) == server_parse_bytes(text)


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
        ([{"id": "0,1"}, {"id": "1"}], r"'1' is listed twice \(also in gpu_devices\[0\]\)"),
        ([{"id": "0,1", "policy": "shared", "max_users": 2, "memory_limit": "1G"}],
         "handed out whole; use policy='exclusive'"),
        ([{"id": "0,cuda:1"}], "nor a list of them"),
        ([{"id": "0", "cluster": "yes"}], "cluster must be true or false"),
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


def test_a_group_of_gpus_is_one_entry_that_starts_a_cluster(tmp_path):
    pool = parse_devices([{"id": "0, 1", "policy": "exclusive"}, {"id": "2", "policy": "exclusive"},
                          {"id": "3", "policy": "exclusive", "cluster": True},
                          {"id": "4,5", "policy": "exclusive", "cluster": False}])
    assert [(d.id, d.gpus, d.cluster) for d in pool] == [
        ("0,1", ("0", "1"), True), ("2", ("2",), False), ("3", ("3",), True), ("4,5", ("4", "5"), False)]
    assert pool[0].display == "GPUs 0,1"
    assert [d.profile for d in pool] == ["multi", "exclusive", "exclusive", "multi"]
    ledger = Ledger(str(tmp_path / "pool.sqlite"))
    # each profile hands out its own entries; a group goes to one server, whole
    assert {ledger.allocate(user, "", "multi", pool).device for user in ("ann", "bob")} == {"0,1", "4,5"}
    assert {ledger.allocate(user, "", "exclusive", pool).device for user in ("cat", "dan")} == {"2", "3"}
    with pytest.raises(PoolExhausted, match=r"All 2 groups of GPUs are in use .*GPUs 0,1: ann"):
        ledger.allocate("eve", "", "multi", pool)
    ledger.release(ledger.allocations()[-1].alloc_id)  # dan's GPU
    with pytest.raises(PoolExhausted, match=r"the 'Exclusive GPU' profile \(1 of 2 GPUs free\)"):
        ledger.allocate("eve", "", "multi", pool)


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
    missing = subprocess.run([sys.executable, "-m", "tomolab.hub", "list", "--db", str(tmp_path / "nope.sqlite")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no ledger" in missing.stderr


def test_cli_reads_the_pool_and_ledger_from_a_hub_config(tmp_path):
    pytest.importorskip("traitlets", reason="reading a jupyterhub_config.py needs traitlets (comes with jupyterhub)")
    ledger = Ledger(str(tmp_path / "pool.sqlite"))
    ledger.allocate("ann", "", "exclusive", POOL)
    ledger.allocate("bob", "big", "shared", POOL)
    cfg = tmp_path / "jupyterhub_config.py"
    cfg.write_text(f"c.GPUPoolMixin.gpu_devices = {POOL_SPEC!r}\nc.GPUPoolMixin.gpu_pool_db = 'pool.sqlite'\n")
    out = subprocess.run([sys.executable, "-m", "tomolab.hub", "list", "--config", str(cfg), "--json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    data = json.loads(out)
    assert [d["in_use"] for d in data["devices"]] == [1, 0, 1]
    assert {(a["user"], a["server"]) for a in data["allocations"]} == {("ann", ""), ("bob", "big")}


# -- the ledger is the hub's alone; names cannot forge lines ---------------------------
def _mode(path):
    return os.stat(path).st_mode & 0o777


def test_new_ledger_is_private_whatever_the_umask(tmp_path):
    db = tmp_path / "state" / "hub" / "pool.sqlite"
    code = (
        "import os, sys; os.umask(0); from tomolab.hub import Ledger, parse_devices; "
        f"Ledger(sys.argv[1]).allocate('ann', '', 'exclusive', parse_devices({POOL_SPEC!r}))"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], timeout=60, check=True)
    assert _mode(db) == 0o600
    assert _mode(db.parent) == 0o700
    assert [a.user for a in Ledger(str(db)).allocations()] == ["ann"]


def test_world_readable_ledger_is_made_private_with_a_message(tmp_path):
    db = tmp_path / "pool.sqlite"
    Ledger(str(db)).allocate("ann", "", "exclusive", POOL)
    os.chmod(db, 0o644)
    ledger = Ledger(str(db))
    assert _mode(db) == 0o600
    assert ledger.notices == [f"GPU ledger {db} was readable by other users (mode 0644); made it 0600"]
    assert [a.user for a in ledger.allocations()] == ["ann"]
    os.chmod(db, 0o640)
    out = subprocess.run([sys.executable, "-m", "tomolab.hub", "list", "--db", str(db)],
                         capture_output=True, text=True, timeout=60, check=True)
    assert "made it 0600" in out.stderr and "ann" in out.stdout
    assert _mode(db) == 0o600


def test_ledger_in_a_folder_others_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(PermissionError, match=r"writable by other users \(mode 0777\).*chmod go-w"):
        Ledger(str(shared / "pool.sqlite"))
    assert not (shared / "pool.sqlite").exists()
    out = subprocess.run([sys.executable, "-m", "tomolab.hub", "list", "--db", str(shared / "pool.sqlite")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and "no ledger" in out.stderr  # nothing created by looking
    os.chmod(shared, 0o1777)  # sticky, like /tmp: others cannot replace our file
    assert _mode(Ledger(str(shared / "pool.sqlite")).path) == 0o600


@pytest.mark.parametrize("name", ["eve\x1b[2J", "bob\nann 0 exclusive", "mallory\u202egnp", "x\x00y", "z\x85"])
def test_names_with_control_characters_are_refused(ledger, name):
    with pytest.raises(ValueError, match=r"user name '.*' holds a control character .*printable characters only"):
        ledger.allocate(name, "", "exclusive", POOL)
    with pytest.raises(ValueError, match=r"server name '.*' holds a control character"):
        ledger.allocate("ann", name, "exclusive", POOL)
    assert ledger.allocations() == []
    with pytest.raises(PoolConfigError, match=r"gpu_devices\[0\].label .* holds a control character"):
        parse_devices([{"id": "0", "policy": "exclusive", "label": name}])


def test_names_already_in_a_ledger_are_listed_escaped(tmp_path):
    from tomolab.hub import Allocation

    db = tmp_path / "pool.sqlite"
    ledger = Ledger(str(db))
    # a row the hub adopted from a server's saved state (written before names were checked)
    row = Allocation("a1b2c3d4e5f6a7b8", "eve\x1b[2J\x1b[H", "nb\r\nroot", "exclusive", "0", "exclusive", None, 0.0, 1)
    ledger.adopt(row)
    ledger.allocate("ann", "", "exclusive", POOL)
    with pytest.raises(PoolExhausted) as exc:
        ledger.allocate("bob", "", "exclusive", POOL)
    assert "eve\\x1b[2J\\x1b[H/nb\\x0d\\x0aroot" in exc.value.message and "\x1b" not in exc.value.message
    text = subprocess.run([sys.executable, "-m", "tomolab.hub", "list", "--db", str(db)],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert "eve\\x1b[2J\\x1b[H/nb\\x0d\\x0aroot" in text
    assert not any(ch in text for ch in "\x1b\r"), "raw control characters reached the listing"
    assert len(text.splitlines()) == 4  # ledger line, header, two rows: no forged line
    raw = subprocess.run([sys.executable, "-m", "tomolab.hub", "list", "--db", str(db), "--json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "\x1b" not in raw and "\r" not in raw
    assert {a["user"] for a in json.loads(raw)["allocations"]} == {"ann", "eve\x1b[2J\x1b[H"}


# -- the processes a server leaves behind ------------------------------------------------
def test_processes_found_by_tree_and_by_marker_are_ended(tmp_path):
    import signal
    import time

    from tomolab.hub import processes

    marker = "test-" + os.urandom(8).hex()
    env = dict(os.environ, **{processes.ENV_SERVER_SESSION: marker})
    # a "server" whose child ignores SIGTERM, and a detached daemon that left the tree
    code = (
        "import signal, subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)']); "
        "subprocess.run(['setsid', '-f', 'sleep', '301']); time.sleep(300)"
    )
    server = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(processes.carrying(marker)) < 3:
        time.sleep(0.05)
    marked = processes.carrying(marker)
    tree = processes.descendants(server.pid)
    assert len(marked) == 3 and len(tree) == 2, (marked, tree)  # the daemon is outside the tree
    assert {p.pid for p in tree} <= {p.pid for p in marked}
    assert processes.carrying("other-" + marker) == set()
    assert processes.has_marker(server.pid, marker) and not processes.has_marker(os.getpid(), marker)
    t0 = time.monotonic()
    assert processes.end_processes(marked | tree, grace=0.5) == []
    assert time.monotonic() - t0 < 10
    assert server.wait(5) == -signal.SIGTERM
    assert not any(processes.is_alive(p) for p in marked)
    # a pid with another start time (a reused pid) is not taken for the process
    me = processes.descendants(os.getpid())
    (mine,) = [p for p in me if p.pid == os.getpid()]
    assert not processes.is_alive(processes.Proc(mine.pid, mine.start + 1))
    assert processes.end_processes({mine}) == [] and processes.is_alive(mine)  # never signals its caller


@pytest.mark.parametrize("spawner, mps, device_line, shared_line", [
    ("tomolab.hub.GPUPoolLocalProcessSpawner", False, "device: a convention: CUDA_VISIBLE_DEVICES",
     "a convention: they bind tomolab's CuPy pool only"),
    ("tomolab.hub.GPUPoolLocalProcessSpawner", True, "device: a convention", "a wall only if the GPU is in EXCLUSIVE_PROCESS"),
    ("tomolab.hub.GPUPoolSystemdSpawner", True, "device: a wall: each unit's device cgroup", "EXCLUSIVE_PROCESS"),
    ("tomolab.hub.GPUPoolKubeSpawner", False, "device: a wall: each pod", "as the device plugin's sharing sets it"),
])
def test_admin_listing_says_what_is_a_wall(tmp_path, spawner, mps, device_line, shared_line):
    pytest.importorskip("traitlets", reason="reading a jupyterhub_config.py needs traitlets (comes with jupyterhub)")
    spec = [{"id": "0", "policy": "exclusive"}, {"id": "1", "policy": "shared", "max_users": 2, "memory_limit": "8G"},
            {"id": "MIG-aaaa-bbbb", "policy": "exclusive"}]
    cfg = tmp_path / "jupyterhub_config.py"
    cfg.write_text(f"c.JupyterHub.spawner_class = {spawner!r}\nc.GPUPoolMixin.gpu_devices = {spec!r}\n"
                   f"c.GPUPoolMixin.gpu_pool_db = 'pool.sqlite'\nc.GPUPoolMixin.gpu_mps = {mps}\n")
    Ledger(str(tmp_path / "pool.sqlite"))
    out = subprocess.run([sys.executable, "-m", "tomolab.hub", "list", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    lines = out.splitlines()
    start = lines.index(f"isolation ({spawner.rsplit('.', 1)[-1]}):")
    iso = [ln.strip() for ln in lines[start + 1:start + 4]]
    assert iso[0].startswith(device_line), iso
    assert iso[1].startswith("memory caps on GPU 1: ") and shared_line in iso[1], iso
    assert iso[2] == "memory on GPU MIG-aaaa-bbbb: a wall (a MIG instance has its own memory)"
    data = json.loads(subprocess.run([sys.executable, "-m", "tomolab.hub", "list", "--config", str(cfg), "--json"],
                                     capture_output=True, text=True, timeout=60, check=True).stdout)
    assert data["isolation"] == iso


def test_mps_setup_commands_come_from_the_pool(tmp_path):
    pytest.importorskip("traitlets", reason="reading a jupyterhub_config.py needs traitlets (comes with jupyterhub)")
    spec = [{"id": "0", "policy": "exclusive"},
            {"id": "GPU-86375ad3", "policy": "shared", "max_users": 3, "memory_limit": "1536M"},
            {"id": "MIG-aaaa-bbbb", "policy": "shared", "max_users": 2, "memory_limit": "4G"}]
    cfg = tmp_path / "jupyterhub_config.py"
    cfg.write_text(f"c.GPUPoolMixin.gpu_devices = {spec!r}\nc.GPUPoolMixin.gpu_mps = True\n"
                   "c.GPUPoolMixin.gpu_mps_pipe_directory = '/srv/mps/{device}'\n")
    out = subprocess.run([sys.executable, "-m", "tomolab.hub", "mps-setup", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, check=True)
    script = out.stdout.splitlines()
    assert "nvidia-smi -i GPU-86375ad3 -c EXCLUSIVE_PROCESS" in script
    assert ("echo 'set_default_device_pinned_mem_limit 0 1536M' | "
            "CUDA_MPS_PIPE_DIRECTORY=/srv/mps/GPU-86375ad3 nvidia-cuda-mps-control") in script
    assert not any("-i 0 " in ln for ln in script), "exclusive GPUs are left alone"
    assert "# MIG-aaaa-bbbb: a MIG instance, its memory is a wall already: no MPS" in script
    assert out.stderr == ""
    cfg.write_text(f"c.GPUPoolMixin.gpu_devices = {spec[:1]!r}\n")
    none = subprocess.run([sys.executable, "-m", "tomolab.hub", "mps-setup", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert none.returncode == 2 and "no shared whole GPU" in none.stderr and "Traceback" not in none.stderr


def test_a_group_of_gpus_reaches_every_platform_whole():
    from tomolab.hub import platforms

    group = parse_devices([{"id": "2,3", "policy": "exclusive"}])[0]
    assert platforms.systemd_properties(group)["DeviceAllow"][-2:] == ["/dev/nvidia2 rw", "/dev/nvidia3 rw"]
    assert platforms.docker_host_config(group)["device_requests"][0]["device_ids"] == ["2", "3"]
    assert platforms.kube_overrides(group)["extra_resource_limits"] == {"nvidia.com/gpu": "2"}
