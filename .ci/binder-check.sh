#!/usr/bin/env bash
# Binder, as CI can check it: a fresh environment from exactly binder/requirements.txt and
# binder/postBuild (as repo2docker runs them, from the repository root), then every notebook
# executed top to bottom there, CPU only, with the peak memory of all processes under 2 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
python3 -m venv "$work/binder-venv"
# shellcheck disable=SC1091
source "$work/binder-venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -r binder/requirements.txt
bash binder/postBuild
shopt -s nullglob
notebooks=(notebooks/*.ipynb)
if [ ${#notebooks[@]} -eq 0 ]; then
  echo "binder-check: no notebooks" >&2
  exit 1
fi
cd "$work"  # the notebooks write their sample data beside where they run
cp "${notebooks[@]/#/$root/}" "$work/"
for nb in "${notebooks[@]}"; do
  name=$(basename "$nb")
  echo "binder-check: $name"
  CUDA_VISIBLE_DEVICES="" python "$root/.ci/peak_memory.py" --limit-mb 2048 -- \
    jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=600 \
    --output "executed-$name" "$name"
done
echo "binder-check: all notebooks ran in the Binder environment"
