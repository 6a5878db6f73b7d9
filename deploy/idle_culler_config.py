"""Config for jupyterhub-idle-culler: GPU servers are stopped sooner than CPU-only ones.

The hub runs the culler as a service (see jupyterhub_config.py) with
``--timeout`` set to the CPU-only idle limit and
``--config=idle_culler_config.py``. A server that holds a GPU from the
tomolab pool (its spawner state has ``tomolab_gpu``; the culler sees the
state because its role has the ``admin:server_state`` scope) is stopped
after ``TOMOLAB_GPU_IDLE_TIMEOUT`` seconds instead, so that idle sessions
do not sit on GPUs. Stopping the server releases its GPU.
"""

import os

c = get_config()  # noqa: F821 (provided by the config loader)

GPU_IDLE_SECONDS = int(os.environ.get("TOMOLAB_GPU_IDLE_TIMEOUT", "3600"))


def release_gpus_sooner(inactive, inactive_limit, server):
    """Cull a GPU server after GPU_IDLE_SECONDS, any other after the culler's --timeout."""
    holds_gpu = bool((server.get("state") or {}).get("tomolab_gpu"))
    limit = min(inactive_limit, GPU_IDLE_SECONDS) if holds_gpu else inactive_limit
    return inactive.total_seconds() >= limit


c.IdleCuller.cull_arbiter_hook = release_gpus_sooner
