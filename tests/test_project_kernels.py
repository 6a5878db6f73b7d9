"""The projector pair's CUDA kernels, run on the CPU: their index logic against the Numba twins.

There is no GPU here, so the kernels' own CUDA source is compiled as C++ (a
few lines define ``blockIdx``, ``float4``, ``__ldg`` and so on) and every
thread of every block is run in turn, with the launches (grids, padded and
interleaved arrays, strides, angle chunks) that :mod:`tomolab.recon.project`
would send to the GPU, made by its own code from numpy arrays. Each variant
must give the numbers of the Numba twin to float rounding, and the newer
kernels exactly those of ``"v1"`` (the same sums in the same order; a voxel or
bin off the edge adds a zero where ``"v1"`` skips it). On the GPU machine the
same comparisons run on the card (``test_gpu_variants_agree``).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from tomolab.errors import ParameterError
from tomolab.recon import back_project_adjoint, forward_project, project
from tomolab.testing import gpu_test

_PRELUDE = r"""
#include <math.h>
#include <string.h>
#include <stddef.h>
#include <limits.h>
// CUDA's float-to-int conversion saturates (C++'s is undefined out of range): the kernels rely on
// it for the line range of a ray parallel to the grid, so every (int) cast below is this one
struct F2I {
    int v;
    F2I(float f) : v(f != f ? 0 : f >= 2147483648.f ? INT_MAX : f <= -2147483648.f ? INT_MIN : (int)f) {}
    F2I(unsigned u) : v((int)u) {}
    F2I(int i) : v(i) {}
    operator int() const { return v; }
};
// __fadd_rd: the sum of two floats, rounded down (exact in double first)
static float __fadd_rd(float a, float b) {
    double exact = (double)a + (double)b;
    float rounded = (float)exact;
    return (double)rounded > exact ? nextafterf(rounded, -INFINITY) : rounded;
}
static int __float_as_int(float f) { int i; memcpy(&i, &f, sizeof i); return i; }
static int min(int a, int b) { return a < b ? a : b; }
static int max(int a, int b) { return a > b ? a : b; }
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct dim3 { unsigned x, y, z; };
static dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __restrict__
template <class T> static T __ldg(const T* p) { return *p; }
static float4 make_float4(float a, float b, float c, float d) { float4 v = {a, b, c, d}; return v; }
static void __syncthreads() {}
static float4 g_shared[1 << 16];
#define LAUNCH(call)                                                                      \
    gridDim = dim3{gx, gy, gz}; blockDim = dim3{bx, by, bz};                              \
    for (unsigned z = 0; z < gz; ++z) for (unsigned y = 0; y < gy; ++y)                   \
    for (unsigned x = 0; x < gx; ++x) for (unsigned ty = 0; ty < by; ++ty)                \
    for (unsigned tx = 0; tx < bx; ++tx) {                                                \
        blockIdx = dim3{x, y, z}; threadIdx = dim3{tx, ty, 0}; call;                      \
    }
"""

_FORWARD_WRAPPER = r"""
extern "C" void run_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                           unsigned bz, const void* img, const void* img_t, const void* trig,
                           const void* centers, int n, int n_angles, int n_cols, int n_z, void* out)
{{
    LAUNCH({name}((const {vec}*)img, (const {vec}*)img_t, (const float2*)trig,
                  (const float*)centers, n, n_angles, n_cols, n_z, (float*)out))
}}
"""

_ADJOINT_WRAPPER = r"""
extern "C" void run_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                           unsigned bz, const void* q, const void* table, const void* centers,
                           int n, int n_angles, int n_cols, long long group_stride, int n_z,
                           void* out)
{{
    // the block's copy of the angle table into shared memory, done before its threads run
    memcpy(g_shared, table, sizeof(float4) * n_angles);
    LAUNCH({name}((const {vec}*)q, (const float4*)table, (const float*)centers, n, n_angles,
                  n_cols, group_stride, n_z, (float*)out))
}}
"""

_PIXELS = (1, 2, 4)


def _all_sources():
    """``[(name, kind, vec, source)]`` of every kernel the module can make."""
    sources = []
    for width in (1, 4):
        vec = "float" if width == 1 else "float4"
        for variant in project.VARIANTS:
            sources.append(("forward", vec, project._forward_source(width, variant)))
            for pixels in (_PIXELS if variant != "v1" else (1,)):
                sources.append(("adjoint", vec, project._adjoint_source(width, variant, pixels)))
    return [(src.split("void ", 1)[1].split("(", 1)[0], kind, vec, src) for kind, vec, src in sources]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to run the CUDA kernels' source on the CPU")
    folder = tmp_path_factory.mktemp("kernels")
    text = [_PRELUDE]
    for name, kind, vec, source in _all_sources():
        text.append(source.replace("extern __shared__ float4 s_table[];",
                                   "float4* s_table = g_shared;").replace("(int)", "(F2I)"))
        text.append((_FORWARD_WRAPPER if kind == "forward" else _ADJOINT_WRAPPER)
                    .format(name=name, vec=vec))
    (folder / "kernels.cpp").write_text("\n".join(text))
    # no contraction into FMAs: both variants are rounded the same way, so they must match exactly
    subprocess.run([compiler, "-O1", "-ffp-contract=off", "-Wno-unknown-pragmas", "-shared",
                    "-fPIC", "-o", str(folder / "kernels.so"), str(folder / "kernels.cpp")],
                   check=True, capture_output=True, text=True)
    library = ctypes.CDLL(str(folder / "kernels.so"))

    def run(launches):
        for name, _, grid, block, args, _ in launches:
            c_args = [ctypes.c_uint(int(v)) for v in (*grid, *block)]
            for arg in args:
                if isinstance(arg, np.ndarray):
                    c_args.append(ctypes.c_void_p(arg.ctypes.data))
                elif isinstance(arg, np.int64):
                    c_args.append(ctypes.c_longlong(int(arg)))
                else:
                    c_args.append(ctypes.c_int(int(arg)))
            getattr(library, f"run_{name}")(*c_args)
    return run


_CASES = [
    # n_z, size, n_cols, center, kernel: sizes that no block divides, detectors wider and
    # narrower than the slice, an axis off the middle (rays leave the slice on one side)
    (1, 37, 37, 18.0, "z1"),
    (3, 29, 41, [13.2, 14.0, 15.9], "z1"),   # a centre per slice
    (6, 33, 26, 11.3, "z4"),                 # two groups of four, the second completed with zeros
]


def _angles():
    rng = np.random.default_rng(3)
    # the grid's own directions (a ray along a line, m = 1 and m = √½) and any others, a full turn
    return np.concatenate([[0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4, np.pi, 1.5 * np.pi],
                           rng.uniform(0, 2 * np.pi, 31)])


@pytest.mark.parametrize("n_z, size, n_cols, center, kernel", _CASES)
@pytest.mark.parametrize("variant", project.VARIANTS)
@pytest.mark.parametrize("block", [None, (4, 32, 1)])  # the default, and few bins × many angles
def test_forward_kernels_emulated_match_the_numba_twin(emulator, monkeypatch, n_z, size, n_cols,
                                                       center, kernel, variant, block):
    if block is not None:
        monkeypatch.setattr(project, "_FORWARD_BLOCK", block)
    angles = _angles()
    rng = np.random.default_rng(n_z)
    x = rng.standard_normal((n_z, size, size)).astype(np.float32)
    centers = np.broadcast_to(np.asarray(center, np.float64), (n_z,)).copy()
    out = np.full((n_z, angles.size, n_cols), np.nan, np.float32)  # every bin must be written
    emulator(project._forward_launches(np, x, angles, centers, n_cols, out, kernel, variant))
    twin = forward_project(x, angles, center=center, n_cols=n_cols)
    assert np.isfinite(out).all()
    assert np.abs(out - twin).max() <= 2e-5 * np.abs(twin).max()
    if variant != "v1":
        reference = np.empty_like(out)
        emulator(project._forward_launches(np, x, angles, centers, n_cols, reference, kernel, "v1"))
        np.testing.assert_array_equal(out, reference)


@pytest.mark.parametrize("n_z, size, n_cols, center, kernel", _CASES)
@pytest.mark.parametrize("variant, pixels", [("v1", 1)] + [(v, p) for v in project.VARIANTS[1:]
                                                             for p in _PIXELS])
@pytest.mark.parametrize("block", [None, (8, 16, 1)])  # the default, and a squarer tile
def test_adjoint_kernels_emulated_match_the_numba_twin(emulator, monkeypatch, n_z, size, n_cols,
                                                       center, kernel, variant, pixels, block):
    if block is not None:
        monkeypatch.setattr(project, "_ADJOINT_BLOCK", block)
    monkeypatch.setattr(project, "_ADJOINT_PIXELS", pixels)
    monkeypatch.setattr(project, "_ADJOINT_ANGLES", 16)  # several launches of the angle chunks
    angles = _angles()
    rng = np.random.default_rng(n_z)
    y = rng.standard_normal((n_z, angles.size, n_cols)).astype(np.float32)
    centers = np.broadcast_to(np.asarray(center, np.float64), (n_z,)).copy()
    out = np.zeros((n_z, size, size), np.float32)
    launches = project._adjoint_launches(np, y, angles, centers, size, out, kernel, variant)
    assert len(launches) == 3
    emulator(launches)
    twin = back_project_adjoint(y, angles, center=center, size=size)
    assert np.abs(out - twin).max() <= 2e-5 * np.abs(twin).max()
    if variant != "v1":
        reference = np.zeros_like(out)
        emulator(project._adjoint_launches(np, y, angles, centers, size, reference, kernel, "v1"))
        np.testing.assert_array_equal(out, reference)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_every_kernel_compiles_for_hopper(tmp_path):
    source = tmp_path / "project.cu"
    source.write_text("\n".join(src for _, _, _, src in _all_sources()))
    result = subprocess.run(["nvcc", "-arch=sm_90", "-c", str(source), "-o", str(tmp_path / "p.o")],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("function, args", [
    (forward_project, {"center": 2.0, "n_cols": 5}),
    (back_project_adjoint, {"center": 2.0, "size": 5}),
])
def test_an_unknown_variant_is_refused(function, args):
    with pytest.raises(ParameterError, match="variant.*v9.*v1, v2"):
        function(np.zeros((1, 5, 5), np.float32), np.zeros(5), variant="v9", **args)


@gpu_test
@pytest.mark.parametrize("variant", project.VARIANTS[1:])
@pytest.mark.parametrize("n_z, center", [(1, 1000.3), (16, 1023.5), (3, [1020.0, 1023.5, 1025.2])])
def test_gpu_variants_agree(variant, n_z, center):
    """On the card, each variant gives ``"v1"``'s numbers, forward and adjoint (2048² from 300 angles)."""
    import cupy

    rng = np.random.default_rng(1)
    angles = np.linspace(0, np.pi, 300, endpoint=False)
    x = cupy.asarray(rng.random((n_z, 2048, 2048), np.float32))
    y = cupy.asarray(rng.random((n_z, 300, 2048), np.float32))
    old = back_project_adjoint(y, angles, center=center, size=2048, variant="v1")
    for pixels in _PIXELS:
        project._ADJOINT_PIXELS, default = pixels, project._ADJOINT_PIXELS
        try:
            new = back_project_adjoint(y, angles, center=center, size=2048, variant=variant)
        finally:
            project._ADJOINT_PIXELS = default
        assert float(cupy.abs(new - old).max()) <= 1e-6 * float(cupy.abs(old).max())
    new = forward_project(x, angles, center=center, n_cols=2048, variant=variant)
    old = forward_project(x, angles, center=center, n_cols=2048, variant="v1")
    assert float(cupy.abs(new - old).max()) <= 1e-6 * float(cupy.abs(old).max())


@gpu_test
@pytest.mark.parametrize("variant", project.VARIANTS[1:])
def test_gpu_sirt_is_the_same_with_each_variant(monkeypatch, variant):
    import cupy

    from tomolab.recon import sirt

    rng = np.random.default_rng(2)
    angles = np.linspace(0, np.pi, 180, endpoint=False)
    sinograms = cupy.asarray(rng.random((2, 180, 256), np.float32))
    old = sirt(sinograms, angles, center=[127.5, 128.2], iterations=20, initial="zero")
    monkeypatch.setattr(project, "_VARIANT", variant)
    new = sirt(sinograms, angles, center=[127.5, 128.2], iterations=20, initial="zero")
    assert float(cupy.abs(new - old).max()) <= 1e-5 * float(cupy.abs(old).max())
