"""JupyterHub configuration for a facility GPU host running tomolab.

One hub, local user accounts, a pool of GPUs shared by the tomolab spawner,
idle servers culled (GPU servers sooner). Install and start::

    python -m pip install "tomolab[hub]"                 # jupyterhub, the culler, tomolab
    npm install -g configurable-http-proxy
    mkdir -p /srv/jupyterhub && cp deploy/*.py /srv/jupyterhub/
    cd /srv/jupyterhub && jupyterhub -f jupyterhub_config.py

Edit every block marked ``CHANGE ME``; docs/deployment.md explains each
setting. See who holds which GPU with::

    python -m tomolab.hub list --config /srv/jupyterhub/jupyterhub_config.py
"""

import os
import sys

from tomolab.hub import parse_devices

c = get_config()  # noqa: F821 (provided by JupyterHub's config loader)

HERE = os.path.dirname(os.path.abspath(__file__))
# Hub state: its database, cookie secret and the GPU ledger. Local disk, readable by root only.
DATA_DIR = os.environ.get("TOMOLAB_HUB_DATA_DIR", HERE)

# ---------------------------------------------------------------------------
# Network. CHANGE ME: put the hub behind your TLS-terminating proxy, or give
# it a certificate (c.JupyterHub.ssl_cert / c.JupyterHub.ssl_key).
# ---------------------------------------------------------------------------
c.JupyterHub.bind_url = "http://127.0.0.1:8000"
c.JupyterHub.db_url = f"sqlite:///{os.path.join(DATA_DIR, 'jupyterhub.sqlite')}"
c.JupyterHub.cookie_secret_file = os.path.join(DATA_DIR, "jupyterhub_cookie_secret")
# Stopping the hub (upgrade, restart) leaves users' servers and their GPUs alone;
# the GPU ledger and the servers' saved state carry the allocations across.
c.JupyterHub.cleanup_servers = False

# ---------------------------------------------------------------------------
# Authentication. CHANGE ME — this is a placeholder that lets nobody in until
# you name who may log in.
#
# PAM (local Unix accounts) is the simplest real authenticator and is what
# the local-process spawner needs: each server runs as the user's Unix
# account. Allow a group of beamline users and name the admins:
# ---------------------------------------------------------------------------
c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.allowed_groups = {"CHANGE-ME-beamline-users"}   # CHANGE ME: a Unix group
c.Authenticator.admin_users = set()  # CHANGE ME: admin usernames, e.g. {"alice"}
#
# Facility single sign-on instead (pip install oauthenticator); usernames must
# still map onto local accounts for the local-process spawner:
#
#   c.JupyterHub.authenticator_class = "generic-oauth"
#   c.GenericOAuthenticator.client_id = "CHANGE-ME"
#   c.GenericOAuthenticator.client_secret = os.environ["OAUTH_CLIENT_SECRET"]
#   c.GenericOAuthenticator.oauth_callback_url = "https://hub.example.org/hub/oauth_callback"
#   c.GenericOAuthenticator.authorize_url = "https://sso.example.org/auth"
#   c.GenericOAuthenticator.token_url = "https://sso.example.org/token"
#   c.GenericOAuthenticator.userdata_url = "https://sso.example.org/userinfo"
#   c.GenericOAuthenticator.username_claim = "preferred_username"
#   c.GenericOAuthenticator.allowed_groups = {"beamline-users"}
#   c.GenericOAuthenticator.claim_groups_key = "groups"
#
# NEVER use "dummy" (any password works) outside tests.

# ---------------------------------------------------------------------------
# The spawner and the GPU pool. CHANGE ME: list your devices (`nvidia-smi -L`).
# ---------------------------------------------------------------------------
# Local processes: the device assignment (CUDA_VISIBLE_DEVICES) is a convention a user
# can undo. For a wall use the same pool with a confining spawner (docs/deployment.md,
# "Isolation"): "tomolab.hub.GPUPoolSystemdSpawner" (pip install "tomolab[hub-systemd]"),
# "tomolab.hub.GPUPoolDockerSpawner" ("tomolab[hub-docker]") or
# "tomolab.hub.GPUPoolKubeSpawner" ("tomolab[hub-k8s]").
c.JupyterHub.spawner_class = "tomolab.hub.GPUPoolLocalProcessSpawner"

GPU_DEVICES = [
    # a whole card for one user at a time
    {"id": "0", "policy": "exclusive", "label": "A100 80GB"},
    # a card shared by up to 4 users, each capped at 18 GiB of GPU memory
    {"id": "1", "policy": "shared", "max_users": 4, "memory_limit": "18G", "label": "A100 80GB"},
    # a group of cards for one user, with a dask cluster of one worker per card in the
    # server (the "Several GPUs" profile; docs/deployment.md), e.g.
    # {"id": "2,3", "policy": "exclusive", "label": "2 x A100 80GB"},
    # MIG instances: use the MIG UUIDs from `nvidia-smi -L`, e.g.
    # {"id": "MIG-5c1d1e83-8a55-5a3b-93f1-4f0c3b0a9d2e", "policy": "exclusive", "label": "3g.40gb"},
]
# Check the list now, so that a mistake stops the hub at start-up with a message
# naming the entry and the fix, rather than failing the first GPU spawn.
parse_devices(GPU_DEVICES)
c.GPUPoolMixin.gpu_devices = GPU_DEVICES
c.GPUPoolMixin.gpu_pool_db = os.path.join(DATA_DIR, "tomolab-gpu-pool.sqlite")
c.GPUPoolMixin.gpu_profiles = ["cpu", "shared", "exclusive", "multi"]  # what the spawn form offers
c.GPUPoolMixin.gpu_default_profile = "cpu"  # for API spawns that name no profile
c.GPUPoolMixin.gpu_max_per_user = 1  # GPU servers one user may hold at once (0: no limit)
c.GPUPoolMixin.gpu_show_holders = True  # name the holders when the pool is full
# Hard memory caps on shared GPUs through CUDA MPS: only after the admin steps of
# docs/deployment.md ("Hard memory caps"); otherwise the caps bind tomolab's CuPy pool only.
c.GPUPoolMixin.gpu_mps = False
# Stopping or culling a server ends every process started from it: SIGTERM, then
# SIGKILL after this many seconds.
c.EndAllProcessesMixin.end_processes_grace = 5.0

c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
# Check every 30 s whether servers are still alive; a dead server's GPU is released then.
c.Spawner.poll_interval = 30
# Environment for every server (CHANGE ME: where the scans live, etc.)
c.Spawner.environment = {
    # "TOMOLAB_DATA": "/data/beamline",
}

# ---------------------------------------------------------------------------
# The idle culler, run by the hub. CPU-only servers stop after 8 h idle,
# GPU servers after 1 h (idle_culler_config.py), which gives their GPU back.
# ---------------------------------------------------------------------------
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "description": "Stop idle servers (and so release their GPUs)",
        "scopes": [
            "list:users",
            "read:users:activity",
            "read:servers",
            "delete:servers",
            "admin:server_state",  # lets the culler see which servers hold a GPU
        ],
        "services": ["idle-culler"],
    }
]
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            "--timeout=28800",
            "--cull-every=300",
            f"--config={os.path.join(HERE, 'idle_culler_config.py')}",  # --config, not --config-file
        ],
        "environment": {"TOMOLAB_GPU_IDLE_TIMEOUT": "3600"},
    }
]
