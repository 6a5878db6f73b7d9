#!/usr/bin/env bash
# Install what the browser tests (tests/browser, pytest -m browser) need from the system:
# Debian's Chromium, driven by Python Playwright with executable_path=/usr/bin/chromium
# (no Playwright browser download), and a font. Idempotent: does nothing when present.
set -euo pipefail

if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi dejavu; then
    echo "browser-setup: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version
