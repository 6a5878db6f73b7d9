#!/usr/bin/env bash
# System packages the tests need beyond Python: each part is idempotent and quick when present.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for part in "$here"/browser-setup.sh "$here"/hub-setup.sh; do
  if [ -f "$part" ]; then bash "$part"; fi
done
