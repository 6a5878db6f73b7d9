"""Reconstruction on a real dask cluster of processes: identical output, killed workers and clients.

A LocalCluster of two worker processes (nannies restart a killed worker);
scans are real DXchange files that every worker opens lazily; outputs are
compared bit for bit with the run of one process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tomolab
from tomolab.errors import ParameterError

distributed = pytest.importorskip("distributed")

import tomolab.cluster

CENTER = 50.3
ROOT = Path(__file__).resolve().parent.parent


def _write_scan(path, *, size=96, rows=24, angles=120):
    from tomolab.data import (
        iter_projection_slabs,
        simulate_flats_darks,
        simulation_attrs,
        simulation_parameters,
    )

    params = simulation_parameters(size, rows, angles, seed=3)
    flats, darks = simulate_flats_darks(params)
    tomolab.io.write_dxchange(path, iter_projection_slabs(params), params.angles, flats, darks,
                              pixel_size=params.pixel_size, energy=params.energy,
                              distance=params.distance, attrs=simulation_attrs(params))
    return path


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory):
    return _write_scan(tmp_path_factory.mktemp("scan") / "scan.h5")


@pytest.fixture(scope="module")
def client():
    with tomolab.cluster.start_cluster("local", workers=2, threads=1) as client:
        yield client


@pytest.fixture(scope="module")
def reference(scan_file, tmp_path_factory):
    """The volume of one process, slab_rows=2, streamed to zarr."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    return tomolab.reconstruct_to(tomolab.open_scan(scan_file), out, center=CENTER, slab_rows=2,
                                  backend="numpy").load()


def _same_volume(a, b):
    assert np.array_equal(a.values, b.values)  # bit for bit
    assert {k: v for k, v in a.attrs.items() if k != "created"} == \
        {k: v for k, v in b.attrs.items() if k != "created"}
    for name in a.coords:
        assert np.array_equal(a[name].values, b[name].values)


def test_cluster_output_is_identical_to_one_process(scan_file, client, tmp_path, caplog):
    scan = tomolab.open_scan(scan_file)
    centers = np.linspace(49.5, 51.0, 18)  # one per row: a tilted axis
    options = {"center": centers, "rows": "3:21", "slab_rows": 5, "multiscale": 1, "backend": "numpy"}
    alone = tomolab.reconstruct_to(scan, tmp_path / "alone.zarr", **options)
    seen, stats = [], {}
    with caplog.at_level(logging.INFO, logger="tomolab"):
        shared = tomolab.reconstruct_to(scan, tmp_path / "shared.zarr", client=client,
                                        slabs_per_task=1, stats=stats,
                                        progress=lambda done, total: seen.append((done, total)),
                                        **options)
    _same_volume(alone, shared)
    import xarray as xr
    level_alone = xr.open_zarr(tmp_path / "alone.zarr")["level1"].values
    assert np.array_equal(level_alone, xr.open_zarr(tmp_path / "shared.zarr")["level1"].values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.zarr", "shared.zarr"]
    assert not (tmp_path / "shared.zarr" / ".slabs_done").exists()
    # progress: one call per task, rising to all rows
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1] == (18, 18)
    assert stats["tasks"] == 4 and sum(stats["workers"].values()) == 4
    assert all(f"{os.uname().nodename}:{os.getpid()}" != w for w in stats["workers"])
    if client.dashboard_link:
        assert client.dashboard_link in caplog.text


def test_active_client_and_auto_backend_resolved_on_the_workers(scan_file, client, reference,
                                                                tmp_path):
    out = tomolab.reconstruct_to(tomolab.open_scan(scan_file), tmp_path / "v.zarr", center=CENTER,
                                 slab_rows=2, client="active")
    from tomolab.devices import resolve_backend

    backend = out.attrs["backend"]
    assert backend == resolve_backend("auto")  # the workers run on this machine: its GPU if any
    expected = reference if backend == "numpy" else tomolab.reconstruct_to(
        tomolab.open_scan(scan_file), tmp_path / "direct.zarr", center=CENTER, slab_rows=2,
        backend=backend).load()
    _same_volume(expected, out)


@pytest.mark.parametrize("name", ["vol.h5", "vol.nxs"])
def test_hdf5_is_refused_naming_zarr(scan_file, client, tmp_path, name):
    with pytest.raises(ParameterError, match="zarr"):
        tomolab.reconstruct_to(tomolab.open_scan(scan_file), tmp_path / name, center=CENTER,
                               client=client, backend="numpy")
    assert list(tmp_path.iterdir()) == []


def test_a_tiff_folder_from_many_workers_is_identical(scan_file, client, reference, tmp_path):
    out = tomolab.reconstruct_to(tomolab.open_scan(scan_file), tmp_path / "vol_tiff",
                                 center=CENTER, slab_rows=2, slabs_per_task=2, backend="numpy",
                                 client=client)
    _same_volume(reference, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol_tiff"]
    assert not [p.name for p in (tmp_path / "vol_tiff").iterdir() if p.name.startswith(".")]


def test_a_cancelled_cluster_run_resumes(scan_file, client, reference, tmp_path):
    from tomolab.errors import Cancelled

    out = tmp_path / "v.zarr"
    calls = []

    def cancel():  # after the first progress report
        return bool(calls)
    with pytest.raises(Cancelled, match="resume"):
        tomolab.reconstruct_to(tomolab.open_scan(scan_file), out, center=CENTER, slab_rows=2,
                               slabs_per_task=1, backend="numpy", client=client, cancel=cancel,
                               progress=lambda done, total: calls.append(done))
    assert not out.exists() and out.with_name(".v.zarr.partial").is_dir()
    deadline = time.monotonic() + 60  # tasks running when cancelled end on their own
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    again = tomolab.reconstruct_to(tomolab.open_scan(scan_file), out, center=CENTER, slab_rows=2,
                                   slabs_per_task=1, backend="numpy", client=client)
    _same_volume(reference, again)


def test_a_scan_in_memory_is_refused(client, tmp_path):
    rng = np.random.default_rng(0)
    projections = rng.integers(1000, 2000, (180, 40, 400), dtype=np.uint16)  # 5.8 MB
    scan = tomolab.from_arrays(projections, np.linspace(0, np.pi, 180, endpoint=False),
                               flats=np.full((2, 40, 400), 2000, np.uint16),
                               darks=np.zeros((1, 40, 400), np.uint16))
    with pytest.raises(ParameterError, match="in memory.*write_dxchange"):
        tomolab.reconstruct_to(scan, tmp_path / "v.zarr", center=200.0, client=client,
                               backend="numpy")
    assert not (tmp_path / "v.zarr").exists()


def test_bad_client_is_refused(scan_file, tmp_path):
    with pytest.raises(ParameterError, match="client"):
        tomolab.reconstruct_to(tomolab.open_scan(scan_file), tmp_path / "v.zarr", center=CENTER,
                               client="tcp://nowhere", backend="numpy")


def test_a_worker_killed_mid_run_ends_complete_and_identical(scan_file, client, reference,
                                                             tmp_path):
    before = client.run(os.getpid)  # {worker address: pid}
    killed = []

    def kill_a_busy_worker(done, total):
        if killed:
            return
        busy = [address for address, keys in client.processing().items() if keys]
        address = busy[0]
        killed.append((before[address], list(client.processing()[address])))
        os.kill(before[address], signal.SIGKILL)

    out = tomolab.reconstruct_to(tomolab.open_scan(scan_file), tmp_path / "v.zarr", center=CENTER,
                                 slab_rows=2, slabs_per_task=1, backend="numpy", client=client,
                                 progress=kill_a_busy_worker)
    _same_volume(reference, out)
    pid, tasks = killed[0]
    assert tasks, "the killed worker had a task in hand"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    client.wait_for_workers(2, timeout=60)  # the nanny started a new worker
    assert pid not in client.run(os.getpid).values()


def test_a_retried_task_skips_the_slabs_its_killed_worker_finished(scan_file, client, reference,
                                                                   tmp_path):
    import threading

    client.wait_for_workers(2, timeout=60)
    before = client.run(os.getpid)
    markers = tmp_path / ".v.zarr.partial" / ".slabs_done"
    killed, stop = [], threading.Event()

    def kill_when_two_slabs_are_done():  # the task's worker, while it is at its third slab
        while not stop.is_set():
            if markers.is_dir() and len(os.listdir(markers)) >= 2:
                busy = [address for address, keys in client.processing().items() if keys]
                if busy:
                    killed.append((before[busy[0]], len(os.listdir(markers))))
                    os.kill(before[busy[0]], signal.SIGKILL)
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=kill_when_two_slabs_are_done)
    watcher.start()
    stats = {}
    try:
        out = tomolab.reconstruct_to(tomolab.open_scan(scan_file), tmp_path / "v.zarr",
                                     center=CENTER, slab_rows=2, slabs_per_task=12,
                                     backend="numpy", client=client, stats=stats)
    finally:
        stop.set()
        watcher.join()
    _same_volume(reference, out)
    assert killed and killed[0][1] < 12 and stats["tasks"] == 1
    assert stats["slabs_skipped"] >= killed[0][1]  # done before the kill, not computed again
    assert sum(stats["workers"].values()) == 12 - stats["slabs_skipped"]
    left = [name for _, _, names in os.walk(tmp_path / "v.zarr") for name in names
            if name.endswith((".partial", ".tmp"))]
    assert left == []  # no half-written chunk of the killed worker


_CLIENT_SCRIPT = textwrap.dedent("""
    import sys, time
    import tomolab, tomolab.cluster

    def slowly(done, total):
        print("progress", done, total, flush=True)

    if __name__ == "__main__":
        client = tomolab.cluster.start_cluster("local", workers=2, dashboard=False)
        print("started", flush=True)
        tomolab.reconstruct_to(tomolab.open_scan(sys.argv[1]), sys.argv[2], center=float(sys.argv[3]),
                               slab_rows=2, slabs_per_task=1, backend="numpy", client=client,
                               progress=slowly)
        print("finished", flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("rerun_on", ["one process", "the cluster"])
def test_a_client_killed_mid_run_leaves_a_partial_that_a_rerun_completes(
        scan_file, client, reference, tmp_path, monkeypatch, rerun_on):
    out = tmp_path / "v.zarr"
    script = tmp_path / "run.py"
    script.write_text(_CLIENT_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(script), str(scan_file), str(out), str(CENTER)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own group: the client and its workers
    markers = out.with_name(".v.zarr.partial") / ".slabs_done"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if markers.is_dir() and len(os.listdir(markers)) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stdout.read()
        os.killpg(proc.pid, signal.SIGKILL)  # the client machine is gone, with its local workers
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not out.exists() and out.with_name(".v.zarr.partial").is_dir()
    marked = len(os.listdir(markers))
    assert 2 <= marked < 12

    computed = []
    if rerun_on == "one process":  # count the rows that the engine computes in this process
        from tomolab import engine

        real = engine.reconstruct_rows

        def counting(scan, rows, **kwargs):
            computed.append(len(rows))
            return real(scan, rows, **kwargs)
        monkeypatch.setattr(engine, "reconstruct_rows", counting)
    stats = {}
    again = tomolab.reconstruct_to(tomolab.open_scan(scan_file), out, center=CENTER, slab_rows=2,
                                   backend="numpy", slabs_per_task=1, stats=stats,
                                   client=client if rerun_on == "the cluster" else None)
    _same_volume(reference, again)
    assert not out.with_name(".v.zarr.partial").exists()
    redone = sum(computed) if rerun_on == "one process" else 2 * sum(stats["workers"].values())
    assert redone <= 24 - 2 * marked  # finished slabs are not computed again


def test_a_lazy_volume_computes_on_the_cluster(scan_file, client, reference):
    from distributed import get_task_stream

    lazy = tomolab.reconstruct(tomolab.open_scan(scan_file), center=CENTER, backend="numpy", lazy=4)
    with get_task_stream(client) as stream:
        part = lazy.isel(z=slice(6, 10)).values
    assert np.array_equal(part, reference.values[6:10])
    assert stream.data  # the slabs ran as tasks on the workers


def test_workers_keep_glibc_malloc_defaults(client):
    # dask's MALLOC_TRIM_THRESHOLD_ made every chunk-sized buffer a fresh mapping (slow writes)
    assert set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {None}
    assert set(client.run(os.environ.get, "OMP_NUM_THREADS").values()) == {"1"}  # the rest stays


def test_closing_the_client_stops_the_workers():
    client = tomolab.cluster.start_cluster("local", workers=2, dashboard=False)
    pids = list(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids
    client.close()
    deadline = time.monotonic() + 30
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        time.sleep(0.1)
    assert alive == []
    assert client.cluster.status.name == "closed"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child that is not reaped yet is gone too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ----------------------------------------------------------------------------- specs

def test_slurm_job_script_has_the_gpus_memory_and_walltime(tmp_path):
    pytest.importorskip("dask_jobqueue")  # in .[cluster]; CI has it
    config = tmp_path / "cluster.yaml"
    config.write_text("queue: gpu\naccount: beamline\ngpus: 2\ncores: 16\nmemory: 64GB\n"
                      "walltime: '02:00:00'\njob_script_prologue:\n  - module load cuda/12\n")
    cluster = tomolab.cluster.make_cluster("slurm", config=config, jobs=0, walltime="00:30:00",
                                           dashboard=False)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:2" in script
    assert "#SBATCH -t 00:30:00" in script  # the keyword argument wins over the file
    assert "#SBATCH -p gpu" in script and "#SBATCH -A beamline" in script
    assert "#SBATCH --cpus-per-task=16" in script
    assert "#SBATCH --mem=60G" in script  # 64 GB = 59.6 GiB, as SLURM counts
    assert "module load cuda/12" in script
    assert tomolab.cluster.JOB_MALLOC_EXPORTS in script
    assert "--nthreads 1" in script  # one slab at a time on the job's GPU


def test_pbs_job_script_and_a_kind_from_the_yaml_file(tmp_path):
    pytest.importorskip("dask_jobqueue")  # in .[cluster]; CI has it
    config = tmp_path / "pbs.yaml"
    config.write_text("kind: pbs\nqueue: gpuq\ngpus: 1\ncores: 8\nmemory: 32GB\njobs: 0\n")
    cluster = tomolab.cluster.make_cluster(config, dashboard=False)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#PBS -l select=1:ncpus=8:mem=30517mb:ngpus=1" in script
    assert "#PBS -l walltime=01:00:00" in script and "#PBS -q gpuq" in script


@pytest.mark.parametrize("spec, options, where", [
    ("kubernetes", {}, "spec"),
    ("local", {"gpus": 1}, "gpus"),
    ("local", {"workers": 0}, "workers"),
    ("slurm", {"gpus": 1}, "memory"),
    ("slurm", {"memory": "lots"}, "memory"),
    ("slurm", {"memory": "8GB", "walltime": "1 hour"}, "walltime"),
    ("pbs", {"memory": "8GB", "nodes": 3}, "nodes"),
])
def test_bad_specs_and_options_name_what_is_wrong(spec, options, where):
    with pytest.raises(ParameterError) as info:
        tomolab.cluster.make_cluster(spec, dashboard=False, **options)
    assert info.value.where == where


def test_local_cuda_follows_the_hub_environment():
    options = tomolab.cluster.local_cuda_options(
        {"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb", "TOMOLAB_GPU_MEMORY_LIMIT": "20G"})
    assert options["CUDA_VISIBLE_DEVICES"] == ["GPU-aa", "GPU-bb"] and options["n_workers"] == 2
    assert options["env"] == {"TOMOLAB_GPU_MEMORY_LIMIT": "20G"}
    assert "CUDA_VISIBLE_DEVICES" not in tomolab.cluster.local_cuda_options({})  # all GPUs
    assert tomolab.cluster.local_cuda_options({}, devices="3")["CUDA_VISIBLE_DEVICES"] == ["3"]
    with pytest.raises(ParameterError, match="no GPU"):
        tomolab.cluster.local_cuda_options({"CUDA_VISIBLE_DEVICES": ""})
    with pytest.raises(ParameterError):
        tomolab.cluster.local_cuda_options({"TOMOLAB_GPU_MEMORY_LIMIT": "a lot"})


def test_local_cuda_without_dask_cuda_names_the_extra(monkeypatch):
    import importlib.util

    if importlib.util.find_spec("dask_cuda") is not None:
        pytest.skip("dask-cuda is installed here, so the missing-extra message cannot arise")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ParameterError, match=r"cluster-gpu"):
        tomolab.cluster.start_cluster("local-cuda")


# ----------------------------------------------------------------------------- CLI

@pytest.mark.slow
def test_cli_recon_on_local_workers(scan_file, reference, tmp_path):
    out = tmp_path / "v.zarr"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "tomolab.cli", "recon", str(scan_file), "-o", str(out),
                           "--center", str(CENTER), "--backend", "numpy", "--workers", "2"],
                          env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    volume = tomolab.io.open_volume(out)
    assert np.array_equal(volume.values, reference.values)
    assert "dask dashboard: http" in done.stderr or "bokeh" not in sys.modules


def test_cli_refuses_both_scheduler_and_workers(scan_file, tmp_path):
    from tomolab.cli import main

    with pytest.raises(SystemExit) as info:
        main(["recon", str(scan_file), "-o", str(tmp_path / "v.zarr"), "--workers", "2",
              "--scheduler", "tcp://127.0.0.1:1"])
    assert info.value.code == 2


# ----------------------------------------------------------------------------- the hub server's cluster

def _serve(path, devices, **env):
    """``python -m tomolab.cluster serve`` as the hub's server extension starts it; waits for its file.

    The devices here are names only: where dask-cuda is installed, ``serve`` starts real CUDA
    workers on them, which needs that many real GPUs of those names; elsewhere (CI) one CPU
    worker per named GPU, which is what these tests check.
    """
    import importlib.util

    if importlib.util.find_spec("dask_cuda") is not None:
        pytest.skip("dask-cuda is installed: serve would start CUDA workers on the made-up "
                    f"devices {devices!r} (the CPU fallback is what runs where it is absent)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               **env)
    proc = subprocess.Popen([sys.executable, "-m", "tomolab.cluster", "serve", "--file", str(path),
                             "--devices", devices], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the cluster did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)
    return proc


def _wait_gone(pids, timeout=30):
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        time.sleep(0.1)
    return alive


def test_the_server_cluster_has_a_worker_per_gpu_behind_tls(scan_file, reference, tmp_path,
                                                           monkeypatch):
    path = tmp_path / "runtime" / "tomolab-cluster.json"
    proc = _serve(path, "0,1", TOMOLAB_GPU_MEMORY_LIMIT="1G")
    try:
        assert os.stat(path).st_mode & 0o077 == 0  # the certificate is the user's alone
        monkeypatch.setenv("TOMOLAB_CLUSTER_FILE", str(path))
        with tomolab.cluster.start_cluster("hub") as hub:
            workers = hub.run(lambda: (os.environ["CUDA_VISIBLE_DEVICES"],
                                       os.environ["TOMOLAB_GPU_MEMORY_LIMIT"]))
            assert sorted(workers.values()) == [("0", "1G"), ("1", "1G")]
            pids = list(hub.run(os.getpid).values())
            address = hub.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        # only this cluster's certificate enters: another user of the host, with a certificate
        # of their own, cannot run code as this one
        from distributed.security import Security

        with pytest.raises((OSError, TimeoutError)):
            distributed.Client(address, security=Security.temporary(), timeout=3)
        out = tomolab.reconstruct_to(tomolab.open_scan(scan_file), tmp_path / "v.zarr",
                                     center=CENTER, slab_rows=2, backend="numpy", client="hub")
        _same_volume(reference, out)
        assert _wait_gone(pids, timeout=0.5) == pids  # closing a client leaves the cluster
    finally:
        proc.terminate()
        proc.wait(60)
    assert _wait_gone(pids) == []
    assert not path.exists()


def test_killing_the_server_cluster_ends_its_workers(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    proc = _serve(path, "GPU-aa")
    monkeypatch.setenv("TOMOLAB_CLUSTER_FILE", str(path))
    try:
        with tomolab.cluster.start_cluster("hub") as hub:
            pids = list(hub.run(os.getpid).values())
        assert len(pids) == 1
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert _wait_gone(pids) == []


def test_killing_the_server_ends_its_cluster(tmp_path, monkeypatch):
    # a stand-in for the Jupyter server: starts the cluster with --parent, then is SIGKILLed
    path = tmp_path / "c.json"
    server = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, subprocess, sys, time
        cluster = subprocess.Popen([sys.executable, "-m", "tomolab.cluster", "serve", "--file",
                                    {str(path)!r}, "--devices", "0", "--parent", str(os.getpid())])
        print(cluster.pid, flush=True)
        time.sleep(600)
        """)], env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        cluster = int(server.stdout.readline())
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        monkeypatch.setenv("TOMOLAB_CLUSTER_FILE", str(path))
        with tomolab.cluster.start_cluster("hub") as hub:
            pids = list(hub.run(os.getpid).values())
    finally:
        server.kill()
        server.wait(30)
    assert _wait_gone([cluster, *pids]) == []
    assert not path.exists()  # it ended in order (SIGTERM), not killed


def test_no_server_cluster_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("TOMOLAB_CLUSTER_FILE", raising=False)
    with pytest.raises(ParameterError) as info:
        tomolab.cluster.start_cluster("hub")
    assert info.value.where == "TOMOLAB_CLUSTER_FILE" and "local" in info.value.fix
    monkeypatch.setenv("TOMOLAB_CLUSTER_FILE", str(tmp_path / "never.json"))
    with pytest.raises(ParameterError, match="did not start within 0.5 s"):
        tomolab.cluster.connect_hub(timeout=0.5)
    with pytest.raises(ParameterError, match="connect"):
        tomolab.cluster.make_cluster("hub")


def test_the_panel_reconstructs_on_a_cluster_into_its_output(scan_file, client, reference,
                                                            tmp_path):
    pytest.importorskip("ipywidgets")
    from tomolab.widgets import ReconstructionPanel

    panel = ReconstructionPanel(tomolab.open_scan(scan_file), backend="numpy", background=False,
                                client=client)
    panel.center = CENTER
    panel.output_input.value = ""
    panel.reconstruct()  # no output chosen: a cluster writes straight to it
    assert "output" in panel.task.error and panel.volume is None
    panel.output_input.value = str(tmp_path / "panel.zarr")
    seen = []
    panel.task.status.observe(lambda change: seen.append(change["new"]), "value")
    volume = panel.reconstruct()
    assert np.array_equal(volume.values, reference.values)
    assert panel.volume is volume and "on the cluster" in panel.recon_label.value
    assert seen[0] == "starting on the cluster: panel.zarr" and seen[-1] == "24 of 24 rows"
    assert panel.task.bar.value == 1.0
    assert (tmp_path / "panel.zarr").is_dir()  # written there by the workers
