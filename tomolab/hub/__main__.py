"""Admin command: who holds which GPU of the pool.

Usage::

    python -m tomolab.hub list --db /srv/jupyterhub/tomolab-gpu-pool.sqlite
    python -m tomolab.hub list --config /srv/jupyterhub/jupyterhub_config.py   # adds free places per device
    python -m tomolab.hub list --db PATH --json
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time

from .ledger import Ledger, usage
from .platforms import DEFAULT_MPS_PIPE_DIRECTORY, isolation_summary, mps_setup_script
from .pool import format_bytes, parse_devices, printable

_SECTIONS = ("GPUPoolMixin", "GPUPoolLocalProcessSpawner", "Spawner")


def _from_config(path):
    """(devices spec, ledger path, spawner class, MPS on, MPS pipe directory) from a jupyterhub_config.py."""
    from traitlets.config.loader import PyFileConfigLoader

    cfg = PyFileConfigLoader(os.path.basename(path), os.path.dirname(os.path.abspath(path))).load_config()
    devices = db = None
    spawner_class = cfg.JupyterHub.get("spawner_class", "") if "JupyterHub" in cfg else ""
    spawner_class = getattr(spawner_class, "__name__", spawner_class)
    sections = [cfg[s] for s in cfg if hasattr(cfg[s], "keys")]
    mps = any(sec.get("gpu_mps", False) for sec in sections)
    pipe = next((sec["gpu_mps_pipe_directory"] for sec in sections if "gpu_mps_pipe_directory" in sec),
                DEFAULT_MPS_PIPE_DIRECTORY)
    for section in cfg:
        sec = cfg[section]
        if not hasattr(sec, "keys"):
            continue
        if "gpu_devices" in sec and (devices is None or section == "GPUPoolMixin"):
            devices = sec["gpu_devices"]
        if "gpu_pool_db" in sec and (db is None or section == "GPUPoolMixin"):
            db = sec["gpu_pool_db"]
    if db is not None and not os.path.isabs(db):
        # the hub resolves it from its working directory; assume the config's folder
        db = os.path.join(os.path.dirname(os.path.abspath(path)), db)
    return devices, db, str(spawner_class), bool(mps), pipe


def _list(args) -> int:
    devices_spec, db, spawner_class, mps = (None, None, "", False)
    if args.config:
        devices_spec, db, spawner_class, mps, _ = _from_config(args.config)
    db = args.db or db
    if not db:
        print("error: give --db PATH (the hub's gpu_pool_db) or --config jupyterhub_config.py", file=sys.stderr)
        return 2
    if not os.path.exists(db):
        print(f"error: no ledger at {db}; is this the hub's gpu_pool_db? (it is created at the first GPU spawn)",
              file=sys.stderr)
        return 2
    try:
        ledger = Ledger(db)
        allocations = ledger.allocations()
    except (PermissionError, sqlite3.Error) as e:
        print(f"error: cannot read the GPU ledger {db}: {e}", file=sys.stderr)
        return 2
    for notice in ledger.notices:
        print(f"note: {notice}", file=sys.stderr)
    devices = parse_devices(devices_spec) if devices_spec else ()
    counts = usage(devices, allocations)
    if args.json:
        out = {"ledger": os.path.abspath(db), "allocations": [a.to_state() for a in allocations]}
        if spawner_class:
            out["isolation"] = isolation_summary(spawner_class, devices, mps=mps)
        if devices:
            out["devices"] = [
                {"id": d.id, "policy": d.policy, "max_users": d.max_users, "memory_limit": d.memory_limit,
                 "label": d.label, "in_use": counts[d.id]}
                for d in devices
            ]
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"ledger: {printable(os.path.abspath(db))}")
    for d in devices:
        cap = f"{format_bytes(d.memory_limit)} cap each" if d.memory_limit else "no memory cap"
        print(f"  {d.display:<28} {d.policy:<9} {counts[d.id]}/{d.max_users} in use, {cap}")
    if spawner_class:
        print(f"isolation ({spawner_class.rsplit('.', 1)[-1]}):")
        for line in isolation_summary(spawner_class, devices, mps=mps):
            print(f"  {line}")
    if not allocations:
        print("no GPU allocations")
        return 0
    header = ("DEVICE", "POLICY", "USER/SERVER", "MEMORY CAP", "SINCE", "ALLOC ID")
    rows = [
        (printable(a.device), printable(a.policy), a.server_label, format_bytes(a.memory_limit),
         time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a.created)), a.alloc_id[:12])
        for a in allocations
    ]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tomolab.hub", description="tomolab GPU pool administration")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list who holds which device")
    p.add_argument("--db", help="the ledger file (c.GPUPoolMixin.gpu_pool_db)")
    p.add_argument("--config", help="jupyterhub_config.py to read the pool (and the ledger path) from")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("mps-setup", help="print the root commands that make shared GPUs' memory caps a wall (MPS)")
    p.add_argument("--config", required=True, help="jupyterhub_config.py to read the pool from")
    args = parser.parse_args(argv)
    if args.command == "mps-setup":
        return _mps_setup(args)
    return _list(args)


def _mps_setup(args) -> int:
    devices_spec, _, _, mps, pipe = _from_config(args.config)
    try:
        devices = parse_devices(devices_spec or ())
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not any(d.policy == "shared" and not d.id.startswith("MIG-") for d in devices):
        print("error: the pool has no shared whole GPU; MPS is for those (MIG instances cap memory already)",
              file=sys.stderr)
        return 2
    if not mps:
        print("note: c.GPUPoolMixin.gpu_mps is False: servers will not use these daemons until it is True",
              file=sys.stderr)
    sys.stdout.write(mps_setup_script(devices, pipe_directory=pipe))
    return 0


if __name__ == "__main__":
    sys.exit(main())
