"""A pool entry of several GPUs: the user's server runs a dask cluster of one worker per GPU.

A real JupyterHub on 127.0.0.1 (hubtools.py) whose pool holds a group of two
"GPUs" ("0,1": no GPU is needed, the workers are CPU processes where
dask-cuda is absent) and one single "GPU" ("2"). A kernel of the user's
server connects to the server's cluster, reconstructs through it and the
CLI, and compares with the direct run; stopping the server ends the workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time

import pytest
from hubtools import hub_requirements_missing, running_hub

pytestmark = [pytest.mark.hub, pytest.mark.slow, pytest.mark.timeout(300)]

_missing = hub_requirements_missing()
if _missing:
    pytest.skip(f"real-hub tests need: {_missing}", allow_module_level=True)
pytest.importorskip("distributed")
pytest.importorskip("cryptography")

POOL = [{"id": "0,1", "policy": "exclusive", "label": "two GPUs"}, {"id": "2", "policy": "exclusive"}]
CENTER = 40.3


def run(coro, timeout=280):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def cluster_hub(tmp_path_factory):
    with running_hub(tmp_path_factory.mktemp("hub"),
                     extra_config=f"c.GPUPoolMixin.gpu_devices = {POOL!r}\n") as h:
        yield h


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory):
    import tomolab
    from tomolab.data import (
        iter_projection_slabs,
        simulate_flats_darks,
        simulation_attrs,
        simulation_parameters,
    )

    path = tmp_path_factory.mktemp("scan") / "scan.h5"
    params = simulation_parameters(80, 12, 90, seed=5)
    flats, darks = simulate_flats_darks(params)
    tomolab.io.write_dxchange(path, iter_projection_slabs(params), params.angles, flats, darks,
                              pixel_size=params.pixel_size, energy=params.energy,
                              distance=params.distance, attrs=simulation_attrs(params))
    return path


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


KERNEL = """
import json, os, subprocess, sys
import numpy as np
import tomolab, tomolab.cluster

client = tomolab.cluster.start_cluster("hub")
devices = sorted(client.run(lambda: os.environ["CUDA_VISIBLE_DEVICES"]).values())
pids = sorted(client.run(os.getpid).values())
scan = tomolab.open_scan({scan!r})
direct = tomolab.reconstruct_to(scan, {out!r} + "/direct.zarr", center={center}, slab_rows=2, backend="numpy")
hub = tomolab.reconstruct_to(scan, {out!r} + "/hub.zarr", center={center}, slab_rows=2, backend="numpy",
                             client="hub")
cli = subprocess.run([sys.executable, "-m", "tomolab.cli", "recon", {scan!r}, "-o", {out!r} + "/cli.zarr",
                      "--center", "{center}", "--backend", "numpy", "--scheduler", "hub", "-q"],
                     capture_output=True, text=True)
same_cli = cli.returncode == 0 and bool(np.array_equal(
    tomolab.io.open_volume({out!r} + "/cli.zarr").values, direct.values))
client.close()
print("RESULT=" + json.dumps({{"devices": devices, "pids": pids, "same": bool(np.array_equal(direct.values,
      hub.values)), "same_cli": same_cli, "cli": cli.stderr[-500:], "file": os.environ["TOMOLAB_CLUSTER_FILE"],
      "workers_of": os.environ["TOMOLAB_HUB_CLUSTER"]}}))
"""


def test_a_server_of_two_gpus_runs_a_cluster_that_ends_with_it(cluster_hub, scan_file, tmp_path):
    hub = cluster_hub

    async def scenario():
        await hub.create_users(["duo", "solo"])
        assert (await hub.spawn("duo", "multi"))["ok"], hub.log_tail()
        assert hub.holders()["duo"] == "0,1"
        code = KERNEL.format(scan=str(scan_file), out=str(tmp_path), center=CENTER)
        out = await hub.kernel_run("duo", textwrap.dedent(code), until="RESULT=", timeout=240)
        result = json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT=")][-1][7:])
        assert result["devices"] == ["0", "1"] and len(result["pids"]) == 2
        assert result["workers_of"] == "2"
        assert result["same"], "the cluster's volume differs from the direct one"
        assert result["same_cli"], result["cli"]
        assert all(_alive(pid) for pid in result["pids"])  # closing the client left the cluster

        # a server of one GPU runs no cluster
        assert (await hub.spawn("solo", "exclusive"))["ok"], hub.log_tail()
        assert hub.holders()["solo"] == "2"
        env = await hub.kernel_environ("solo", ["TOMOLAB_HUB_CLUSTER", "TOMOLAB_CLUSTER_FILE"])
        assert env["TOMOLAB_HUB_CLUSTER"] is None and env["TOMOLAB_CLUSTER_FILE"] is None

        await hub.stop_server("duo")
        deadline = time.monotonic() + 30
        while any(map(_alive, result["pids"])) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not any(map(_alive, result["pids"])), hub.log_tail()
        assert not os.path.exists(result["file"])
        assert hub.holders() == {"solo": "2"}

    run(scenario())
