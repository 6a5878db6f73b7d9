#!/usr/bin/env bash
# Install what the JupyterHub tests (tests/hub, marker "hub") need besides Python packages:
# configurable-http-proxy, the proxy JupyterHub starts. Idempotent: returns at once when
# the proxy is already there. Needs node >= 20 and npm (Debian: apt-get install nodejs npm).
#
#   .ci/hub-setup.sh            # install (globally if npm's prefix is writable, else under $HOME)
#   .ci/hub-setup.sh --print    # only print the proxy path (exit 1 if missing)
#
# The tests look for the proxy on PATH, then in $TOMOLAB_CHP_PREFIX/node_modules/.bin
# (default ~/.cache/tomolab/chp), so either install place works without touching PATH.
set -euo pipefail

CHP_VERSION="${TOMOLAB_CHP_VERSION:-5}"
PREFIX="${TOMOLAB_CHP_PREFIX:-$HOME/.cache/tomolab/chp}"

find_chp() {
    local p
    for p in "$(command -v configurable-http-proxy 2>/dev/null || true)" "$PREFIX/node_modules/.bin/configurable-http-proxy"; do
        if [ -n "$p" ] && [ -x "$p" ] && "$p" --version >/dev/null 2>&1; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

if chp="$(find_chp)"; then
    echo "configurable-http-proxy $("$chp" --version) at $chp"
    exit 0
fi
if [ "${1:-}" = "--print" ]; then
    echo "configurable-http-proxy not found (run .ci/hub-setup.sh)" >&2
    exit 1
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "hub-setup: npm not found; install node >= 20 and npm (apt-get install -y nodejs npm)" >&2
    exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "hub-setup: node $(node --version) is too old for configurable-http-proxy $CHP_VERSION (needs >= 20)" >&2
    exit 1
fi

global_prefix="$(npm config get prefix)"
if [ -w "$global_prefix/lib" ] 2>/dev/null || [ -w "$global_prefix" ]; then
    npm install --global --no-audit --no-fund --loglevel=error "configurable-http-proxy@$CHP_VERSION"
else
    mkdir -p "$PREFIX"
    npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "configurable-http-proxy@$CHP_VERSION"
fi

chp="$(find_chp)" || { echo "hub-setup: installed, but configurable-http-proxy still not found" >&2; exit 1; }
echo "configurable-http-proxy $("$chp" --version) at $chp"
