#!/bin/bash
# What is left of issues 13, 16 and 17 on a GPU, in one device call (about 10 minutes): the GPU
# test suite, then the measurements whose results decide between the options already merged.
#
# Prepare, on the development machine, from the repository root (both folders are git-ignored):
#   .whl/        the wheels the GPU machine lacks, for its Python (3.12): dask, distributed,
#                dask-cuda, zarr, numcodecs, donfig, google-crc32c, pyzmq, tblib, zict, locket,
#                partd, tornado, algotom, pywavelets (pip download --no-deps --only-binary=:all:
#                --python-version 3.12 --platform manylinux_2_28_x86_64 ... -d .whl NAME)
#   .gpu_peers/  ASTRA for CUDA 13: ../shared/peers/README.md (the wheel in .gpu_peers/whl, the
#                libcufft.so.11 shim) and a setup.sh that puts them on PYTHONPATH/LD_LIBRARY_PATH
# then run it with `carry: [".whl", ".gpu_peers"]`: bash benchmarks/gpu_checks.sh
# Logs go to $OUT (one per step) and the benchmark rows to $OUT/rows.tgz.
#
# Decisions (write them into RESULTS.md with the card and the peers of the same run):
#   gather:      adopt gridrec(gather="nodes") as the GPU default if within 1e-5 of "tiles" and
#                no slower than 8 ms a slab of 16 slices of 2048² from 1800 angles
#   variants:    adopt the projector variant that gives FP3D >= 5x ASTRA, SIRT 100 <= 2000 ms,
#                and differs from v1 by <= 1e-6; then delete the others' kernel text
#   cluster:     issue 13's overhead: one dask-cuda worker / the direct stream <= 1.10
#   host_stream: adopt TOMOLAB_STREAM=candidate as the default if faster and bit-identical
set -u
export PYTHONUNBUFFERED=1
R=${OUT:?run on the device machine, where \$OUT is set}
ROWS=/tmp/rows; mkdir -p "$ROWS"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$R/card.txt"
pack() { tar -czf "$R/rows.tgz" -C "$ROWS" . ; }
step() {
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date +%T))"
  ( OUT=$ROWS timeout "$limit" "$@" ) > "$R/$name.log" 2>&1
  echo "rc=$? $name"; tail -n "${TAILN:-16}" "$R/$name.log"; pack
}
step tests "${T_TESTS:-200}" python3 -m pytest tests -q -p no:cacheprovider -m gpu \
  --ignore=tests/browser --ignore=tests/hub --ignore=tests/test_install.py -n 8 --timeout=100 \
  --maxfail=20
# shellcheck disable=SC1091
source .gpu_peers/setup.sh > "$R/astra.txt" 2>&1
step gather "${T_G:-70}" python3 benchmarks/bench_fourier.py --gather-compare --no-compare
step variants "${T_V:-120}" python3 benchmarks/bench_iterative.py --variants v1,v2,v3
step cluster "${T_C:-110}" python3 benchmarks/bench_cluster.py --mode gpu --rounds 3
step host_stream "${T_H:-90}" python3 benchmarks/bench_host_stream.py --settle 1
echo "=== done $(date +%T)"
