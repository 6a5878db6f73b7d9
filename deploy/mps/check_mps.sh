#!/usr/bin/env bash
# Try CUDA MPS per-client memory limits on this machine's GPU 0, and leave the GPU as it was.
#
# Starts its own MPS control daemon (own pipe and log folders, so nothing else
# on the machine is touched), runs clients with limits, prints one JSON line per
# allocation tried, and shuts the daemon down. It never changes the compute mode
# or MIG mode: run it as root (or the GPU's owner) on a GPU nobody else is using.
#
#   bash deploy/mps/check_mps.sh            # PYTHON=... to choose the interpreter
#
# What it tries:
#   1. two clients at once, limited by CUDA_MPS_PINNED_DEVICE_MEM_LIMIT (2G and 4G):
#      under-limit allocations succeed, over-limit ones fail (raw cuMemAlloc, CuPy, PyTorch);
#   2. the daemon's default (set_default_device_pinned_mem_limit 0 2G) on clients with no
#      variable, and whether a client can raise its own limit above it (variable 0=8G);
#   3. a client that does not use the daemon (other pipe folder) while it runs: in the
#      DEFAULT compute mode it gets the GPU directly, with no limit;
#   4. (as root, with MULTIUSER=1, the default) two Unix users' clients at once: does the
#      second user's client wait until the first user's have exited (one MPS server per user)?
#   5. an ordinary user sending commands to root's control daemon (to raise the default limit).
# A copy of everything printed goes to $OUT/mps.log when OUT is set.
set -u
if [ -n "${OUT:-}" ]; then exec > >(tee "$OUT/mps.log") 2>&1; fi
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
CLIENT="$PY $HERE/mps_client.py"
MPS=$(command -v nvidia-cuda-mps-control || echo /usr/local/nvidia/bin/nvidia-cuda-mps-control)

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_mode,mig.mode.current --format=csv
uname -r
$PY -c 'import cupy, torch; print("cupy", cupy.__version__, "torch", torch.__version__)' 2>&1 | tail -1

PIPE=""; LOGD=""
start_daemon() {
    PIPE=$(mktemp -d /tmp/mps-pipe.XXXXXX); LOGD=$(mktemp -d /tmp/mps-log.XXXXXX)
    export CUDA_MPS_PIPE_DIRECTORY=$PIPE CUDA_MPS_LOG_DIRECTORY=$LOGD
    if ! "$MPS" -d; then echo "could not start $MPS"; return 1; fi
    sleep 1
    echo "MPS control daemon started (pipe $PIPE)"
}
control() { echo "$*" | CUDA_MPS_PIPE_DIRECTORY=$PIPE "$MPS"; }
stop_daemon() {
    [ -n "$PIPE" ] || return 0
    echo "server list: $(control get_server_list | tr '\n' ' ')"
    control quit
    for _ in $(seq 20); do pgrep -f "nvidia-cuda-mps-(control|server)" >/dev/null || break; sleep 0.5; done
    echo "--- control.log"; tail -n 25 "$LOGD/control.log" 2>/dev/null
    echo "--- server.log";  tail -n 25 "$LOGD/server.log" 2>/dev/null
    PIPE=""
}
trap stop_daemon EXIT

echo "== 1. two clients at once, limits from CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"
start_daemon || exit 1
CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=2G $CLIENT --name A --lib driver --sizes 1G,3G --hold 6 & A=$!
CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=4G $CLIENT --name B --lib driver --sizes 3G,5G --hold 6 & B=$!
sleep 3; echo "servers while A and B run: $(control get_server_list | tr '\n' ' ')"
wait $A $B  # not a bare `wait`: that would also wait for the tee of $OUT/mps.log
for lib in cupy torch; do
    CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=2G $CLIENT --name "A-$lib" --lib $lib --sizes 1G,3G
done
CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=2G $CLIENT --name A-probe --lib driver --probe
CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=4G $CLIENT --name B-probe --lib driver --probe
stop_daemon

echo "== 2. the daemon's default limit, and a client asking for more"
start_daemon || exit 1
control set_default_device_pinned_mem_limit 0 2G
echo "default limit: $(control get_default_device_pinned_mem_limit 0)"
$CLIENT --name C-noenv --lib driver --sizes 1G,3G --probe
CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=8G $CLIENT --name D-raise --lib driver --sizes 3G,6G --probe
CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=1G $CLIENT --name E-lower --lib driver --sizes 512M,1536M --probe
SERVER=$(control get_server_list | head -1)
if [ -n "$SERVER" ]; then
    echo "server $SERVER limit: $(control get_device_pinned_mem_limit "$SERVER" 0)"
fi

echo "== 3. a client that bypasses the daemon while it runs (compute mode as found)"
CUDA_MPS_PIPE_DIRECTORY=/tmp/no-mps-here $CLIENT --name F-bypass --lib driver --sizes 6G
stop_daemon

if [ "$(id -u)" = 0 ] && [ "${MULTIUSER:-1}" = 1 ]; then
    echo "== 4. two Unix users' clients at once (one MPS server per user)"
    for u in mpsuser1 mpsuser2; do id "$u" >/dev/null 2>&1 || useradd -M -s /bin/bash "$u"; done
    cp "$HERE/mps_client.py" /tmp/mps_client.py && chmod 644 /tmp/mps_client.py
    CLIENT="$(command -v "$PY") /tmp/mps_client.py"
    start_daemon || exit 1
    chmod 755 "$PIPE" "$LOGD"
    control set_default_device_pinned_mem_limit 0 2G
    ENVS="CUDA_MPS_PIPE_DIRECTORY=$PIPE CUDA_MPS_LOG_DIRECTORY=$LOGD PATH=$PATH"
    runuser -u mpsuser1 -- env $ENVS $CLIENT --name U1 --lib driver --sizes 1G --hold 10 & U1=$!
    sleep 2
    echo "U2 asks at $(date +%s.%N | cut -c1-13)"
    runuser -u mpsuser2 -- env $ENVS timeout 40 $CLIENT --name U2 --lib driver --sizes 1G,3G & U2=$!
    sleep 3; echo "servers while U1 holds and U2 asks: $(control get_server_list | tr '\n' ' ')"
    wait $U1 $U2
    echo "== 5. an ordinary user sends commands to root's control daemon"
    echo "as mpsuser1, set_default_device_pinned_mem_limit 0 64G ->" \
        "$(echo 'set_default_device_pinned_mem_limit 0 64G' | runuser -u mpsuser1 -- env CUDA_MPS_PIPE_DIRECTORY=$PIPE "$MPS" 2>&1)"
    echo "default limit now (asked by root): $(control get_default_device_pinned_mem_limit 0)"
    runuser -u mpsuser1 -- env $ENVS CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=8G $CLIENT --name U1-raise --lib driver --probe
    stop_daemon
fi
echo "== compute mode after: $(nvidia-smi --query-gpu=compute_mode --format=csv,noheader)"
