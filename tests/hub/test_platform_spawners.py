"""The GPU pool on SystemdSpawner, DockerSpawner and KubeSpawner: the real spawner classes, no cluster.

What each platform would be asked to do is checked where it is handed over:
the ``systemd-run`` command line (a recording ``systemd-run``/``systemctl`` on
PATH, since this machine runs no systemd), the JSON body the Docker Engine API
receives from docker-py (a small HTTP server playing the engine), and the pod
manifest KubeSpawner builds (with a kubeconfig that points nowhere).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import threading
import typing
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest

from tomolab.hub import platforms
from tomolab.hub.pool import PoolConfigError, parse_devices

pytest.importorskip("jupyterhub", reason="the spawners need jupyterhub (pip install -e '.[hub]')")

SHARED_MIG = "MIG-5e3c1f2a-0b7d-4c1e-9a6f-2d8e4b7c9a10"
POOL_SPEC = [
    {"id": "0", "policy": "exclusive", "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
    {"id": SHARED_MIG, "policy": "shared", "max_users": 2, "memory_limit": "10G", "label": "3g.40gb",
     "device_nodes": ["/dev/nvidia1", "/dev/nvidia-caps/nvidia-cap21", "/dev/nvidia-caps/nvidia-cap22"]},
]


def spawner_args(tmp_path, user="root", server="", profile="exclusive"):
    hub = SimpleNamespace(public_host="", api_url="http://127.0.0.1:8081/hub/api", base_url="/hub/", url="/hub/")
    return {
        "user": SimpleNamespace(name=user, url=f"/user/{user}/", id=1, escaped_name=user),
        "hub": hub,
        "orm_spawner": SimpleNamespace(name=server, server=None, display_name=server),
        "gpu_devices": POOL_SPEC,
        "gpu_pool_db": str(tmp_path / "pool.sqlite"),
        "cmd": ["jupyterhub-singleuser"],
    }, {"profile": profile}


# -- pure functions ---------------------------------------------------------------------
def test_platform_specs_from_the_pool():
    exclusive, shared = parse_devices(POOL_SPEC)
    assert platforms.systemd_properties(shared)["DeviceAllow"][-3:] == [
        "/dev/nvidia1 rw", "/dev/nvidia-caps/nvidia-cap21 rw", "/dev/nvidia-caps/nvidia-cap22 rw"]
    assert platforms.k8s_resource(shared) == "nvidia.com/mig-3g.40gb"
    assert platforms.kube_overrides(exclusive)["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert platforms.docker_host_config(shared)["device_requests"][0]["device_ids"] == [SHARED_MIG]
    uuid_only = parse_devices([{"id": "GPU-86375ad3-55bd", "policy": "exclusive"}])[0]
    with pytest.raises(PoolConfigError, match=r"GPU GPU-86375ad3-55bd: .* add 'device_nodes'"):
        platforms.systemd_properties(uuid_only)
    assert platforms.mps_environment(1536 * 1024**2, "/run/mps")["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=1536M"


@pytest.mark.parametrize("entry, message", [
    ({"device_nodes": "/dev/nvidia0"}, "device_nodes must be a list of /dev paths"),
    ({"device_nodes": ["/etc/passwd"]}, "device_nodes must be a list of /dev paths"),
    ({"k8s_resource": "gpu please"}, "k8s_resource 'gpu please' is not a Kubernetes extended resource name"),
    ({"node_selector": ["a=b"]}, "node_selector must be a dict of node labels"),
    ({"node_selector": {"zone": "a\nb"}}, "node_selector must be a dict of node labels"),
])
def test_bad_platform_keys_name_entry_and_fix(entry, message):
    with pytest.raises(PoolConfigError, match=rf"gpu_devices\[0\]: {message}"):
        parse_devices([{"id": "0", "policy": "exclusive", **entry}])


# -- systemd ----------------------------------------------------------------------------
@pytest.fixture
def fake_systemd(tmp_path, monkeypatch):
    """systemd-run and systemctl that record their arguments (there is no systemd on this machine)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "systemd-calls.jsonl"
    for name, code in (("systemd-run", 0), ("systemctl", 3)):  # systemctl is-active: 3 = inactive
        script = bin_dir / name
        script.write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            f"open({str(log)!r}, 'a').write(json.dumps([{name!r}, *sys.argv[1:]]) + '\\n')\n"
            "if sys.argv[1:] == ['--version']:\n    print('systemd 252 (252.22)')\n    sys.exit(0)\n"
            f"sys.exit({code})\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # the unit's environment file goes under /run/<unit>/: here, under tmp_path
    monkeypatch.setattr("systemdspawner.systemd.RUN_ROOT", str(tmp_path / "run"))
    return log


def systemd_run_args(log):
    """The --property= values of the systemd-run call, and the environment file they name."""
    import shlex

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    (run,) = [c for c in calls if c[0] == "systemd-run"]
    props = [a.split("=", 1)[1] for a in run if a.startswith("--property=")]
    (env_file,) = [p.split("=", 1)[1] for p in props if p.startswith("EnvironmentFile=")]
    with open(env_file) as f:
        env = dict(shlex.split(line)[0].split("=", 1) for line in f if line.strip())
    return props, env


def assert_systemd_accepts(tmp_path, props):
    """systemd's own parser (systemd-analyze verify, which needs no running systemd) takes every property."""
    import shutil
    import subprocess

    if shutil.which("systemd-analyze") is None:
        return  # the command line above is still checked
    unit = tmp_path / "tomolab-check.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n" + "".join(f"{p}\n" for p in props))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                         check=False)
    complaints = [ln for ln in out.stderr.splitlines() if str(unit) in ln]
    assert not complaints, complaints


@pytest.mark.parametrize("profile", ["exclusive", "shared", "cpu"])
def test_systemd_unit_allows_its_gpu_only(tmp_path, profile, request):
    pytest.importorskip("systemdspawner", reason="pip install -e '.[hub-systemd]'")
    fake_systemd = request.getfixturevalue("fake_systemd")
    from tomolab.hub import GPUPoolSystemdSpawner

    kwargs, options = spawner_args(tmp_path, profile=profile)
    sp = GPUPoolSystemdSpawner(**kwargs, start_timeout=1, mem_limit="8G",
                               unit_extra_properties={"DeviceAllow": "/dev/fuse rw", "KillMode": "process"},
                               gpu_mps=True)
    sp.user_options = options
    asyncio.run(sp.start())
    props, env = systemd_run_args(fake_systemd)
    assert "DevicePolicy=closed" in props and "MemoryMax=8589934592" in props
    assert [p for p in props if p.startswith("KillMode=")] == ["KillMode=control-group"]  # stop ends the cgroup
    allowed = sorted(p.split("=", 1)[1] for p in props if p.startswith("DeviceAllow="))
    gpu_nodes = {"exclusive": ["/dev/nvidia0 rw"], "cpu": [],
                 "shared": ["/dev/nvidia-caps/nvidia-cap21 rw", "/dev/nvidia-caps/nvidia-cap22 rw", "/dev/nvidia1 rw"]}
    control = [] if profile == "cpu" else ["/dev/nvidia-uvm rw", "/dev/nvidia-uvm-tools rw", "/dev/nvidiactl rw"]
    assert allowed == sorted(["char-pts rw", "/dev/fuse rw", *control, *gpu_nodes[profile]])
    assert sp.unit_extra_properties == {"DeviceAllow": "/dev/fuse rw", "KillMode": "process"}, "trait left as it was"
    assert_systemd_accepts(tmp_path, props)
    if profile == "shared":  # MPS on: the client environment carries the pipe and the cap
        assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=10G"
        assert env["CUDA_MPS_PIPE_DIRECTORY"] == f"/run/nvidia-mps/{SHARED_MIG}"
        assert "CUDA_VISIBLE_DEVICES" not in env  # the daemon of that pipe serves that GPU only
    else:
        assert "CUDA_MPS_PIPE_DIRECTORY" not in env
        assert env["CUDA_VISIBLE_DEVICES"] == {"exclusive": "0", "cpu": ""}[profile]
    asyncio.run(sp.stop())
    assert sp.gpu_ledger.allocations() == []


def test_systemd_private_devices_would_hide_the_gpu(tmp_path):
    pytest.importorskip("systemdspawner", reason="pip install -e '.[hub-systemd]'")
    from traitlets import TraitError

    from tomolab.hub import GPUPoolSystemdSpawner

    kwargs, _ = spawner_args(tmp_path)
    with pytest.raises(TraitError, match="PrivateDevices=yes"):
        GPUPoolSystemdSpawner(**kwargs, isolate_devices=True)


# -- Docker -----------------------------------------------------------------------------
class _Engine(BaseHTTPRequestHandler):
    """Answers POST /containers/create as the Docker Engine does, and keeps the request."""

    created: typing.ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        type(self).created.append((self.path, body))
        out = json.dumps({"Id": "c0ffee", "Warnings": []}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def engine():
    _Engine.created = []
    server = HTTPServer(("127.0.0.1", 0), _Engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}", _Engine.created
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("profile", ["exclusive", "shared", "cpu"])
def test_docker_container_gets_its_gpu_as_a_device_request(tmp_path, engine, profile):
    pytest.importorskip("dockerspawner", reason="pip install -e '.[hub-docker]'")
    from tomolab.hub import GPUPoolDockerSpawner

    url, created = engine
    GPUPoolDockerSpawner._client = None  # one client per class: point it at this engine
    kwargs, options = spawner_args(tmp_path, user="ann", profile=profile)
    sp = GPUPoolDockerSpawner(**kwargs, client_kwargs={"base_url": url, "version": "1.44"},
                              extra_host_config={"shm_size": "1g"}, image="quay.io/jupyter/base-notebook")
    sp.user_options = options

    async def go():
        if profile != "cpu":
            await sp._gpu_allocate(profile)
        await sp.create_object()

    try:
        asyncio.run(go())
    finally:
        GPUPoolDockerSpawner._client = None
    (path, body) = created[-1]
    assert path.startswith("/v1.44/containers/create")
    host = body["HostConfig"]
    env = dict(e.split("=", 1) for e in body["Env"])
    assert host["ShmSize"] == 1024**3, "the configured host config is kept"
    if profile == "cpu":
        assert "DeviceRequests" not in host
        assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and env["CUDA_VISIBLE_DEVICES"] == ""
    else:
        device = "0" if profile == "exclusive" else SHARED_MIG
        assert host["DeviceRequests"] == [
            {"Driver": "nvidia", "Count": 0, "DeviceIDs": [device], "Capabilities": [["gpu"]], "Options": {}}]
        assert "CUDA_VISIBLE_DEVICES" not in env and "NVIDIA_VISIBLE_DEVICES" not in env
    assert sp.extra_host_config == {"shm_size": "1g"}


# -- Kubernetes ---------------------------------------------------------------------------
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: jhub}}]
current-context: none
users: [{name: none, user: {token: not-a-token}}]
"""


@pytest.mark.parametrize("profile", ["exclusive", "shared", "cpu"])
def test_kube_pod_asks_the_device_plugin_for_its_gpu(tmp_path, monkeypatch, profile):
    pytest.importorskip("kubespawner", reason="pip install -e '.[hub-k8s]'")
    from kubernetes_asyncio.client import ApiClient

    from tomolab.hub import GPUPoolKubeSpawner

    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    # read when KubeSpawner starts (it reads no in-cluster config here): a cluster nobody answers for
    monkeypatch.setattr("kubernetes_asyncio.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION",
                        str(tmp_path / "kubeconfig"))
    kwargs, options = spawner_args(tmp_path, user="ann", profile=profile)
    kwargs.pop("cmd")

    async def go():  # KubeSpawner makes its API client on the running loop
        sp = GPUPoolKubeSpawner(**kwargs, _mock=True, cpu_limit=4.0,
                                node_selector={"hub.jupyter.org/node-purpose": "user"})
        sp.user_options = options
        if profile != "cpu":
            await sp._gpu_allocate(profile)
        async with ApiClient() as api:
            pod = api.sanitize_for_serialization(await sp.get_pod_manifest())
        form = await sp.get_options_form()
        return pod, form

    pod, form = asyncio.run(go())
    container = pod["spec"]["containers"][0]
    limits = container["resources"]["limits"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert limits["cpu"] == 4.0
    expected = {"exclusive": {"nvidia.com/gpu": "1"}, "shared": {"nvidia.com/mig-3g.40gb": "1"}, "cpu": {}}[profile]
    assert {k: v for k, v in limits.items() if k.startswith("nvidia.com/")} == expected
    selector = {"hub.jupyter.org/node-purpose": "user"}
    if profile == "exclusive":
        selector["nvidia.com/gpu.product"] = "NVIDIA-H100-80GB-HBM3"
    assert pod["spec"]["nodeSelector"] == selector
    if profile == "cpu":
        assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    else:
        assert "CUDA_VISIBLE_DEVICES" not in env
    assert 'name="profile" value="exclusive"' in form, "the pool's spawn form, not KubeSpawner's profile list"
