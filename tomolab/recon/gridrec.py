"""Gridrec: Fourier-domain reconstruction for parallel-beam scans, on numpy or cupy arrays.

The method of Dowd et al. (1999) and Marone & Stampanoni (2012). By the
Fourier slice theorem the 1D Fourier transform of a projection is a radial
line of the slice's 2D spectrum. Gridrec filters those lines (the same
filters as FBP, from :func:`tomolab.recon.filters.fourier_filter`), spreads
them onto a Cartesian grid twice as fine as the slice with a small separable
Kaiser–Bessel kernel, takes one 2D inverse FFT, and divides by the kernel's
transform (deapodization). The result is FBP's sum over angles with exact
(band-limited) interpolation along the detector instead of linear.

Discretely, with ``s = X cos θ + Y sin θ`` (``X, Y`` relative to the grid's
middle ``(size - 1) / 2``, as in :func:`tomolab.recon.backproject`),

    f(X, Y) = π / (n_angles · n_pad) · Σ_a Σ_k H(k) P_a(k) exp(2πi k s / n_pad),

where ``P_a`` is the FFT of projection ``a`` padded to ``n_pad`` columns and
shifted so that the rotation axis is at ``s = 0`` (a phase ramp), and ``H`` is
the filter. The sum over ``(a, k)`` is a type-1 non-uniform FFT, which the
gridding evaluates.

Two slices travel as one complex sinogram (real and imaginary parts): the
operator is real, so their slices come back as the real and imaginary parts
of one complex image. An odd slice left over uses the Hermitian symmetry of a
real slice's spectrum instead on the CPU (half the grid and a real inverse
FFT); the GPU pairs it with a zero slice.

``precision="half"`` stores the radial samples (the filtered, shifted
projection spectra) in half precision after dividing them by a bound on
their magnitude; positions, weights, sums and FFTs stay in single precision.

The CPU spreads with Numba (:mod:`tomolab.recon._gridrec_cpu`, a race-free
gather over bands of grid rows). The GPU gathers too, with no atomics: one
CUDA block per 32 × 32 tile of the frequency grid lists the angles whose
line reaches the tile, and each thread sums in registers the samples near
its four nodes, for two slice pairs at once (they share positions and
weights). With ``gather="nodes"`` each grid node instead finds, from its
polar angle and a table of the angles sorted modulo π, the few angles whose
line passes within half a kernel width of it, and sums their samples for up
to eight pairs at once (stored pair-innermost): the work follows the samples
that reach a node, not the angles times a tile. Both use the same samples, weights and positions; FFTs come from
``scipy.fft`` or ``cupyx.scipy.fft`` (batched, plans cached by CuPy).
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from itertools import pairwise

import numpy as np

from tomolab.arrays import array_module, fft_module, is_cupy
from tomolab.devices import batch_size
from tomolab.recon.fbp import _check_stack, _slice_centers
from tomolab.recon.filters import fourier_filter, padded_width

__all__ = ["gridrec", "kaiser_bessel"]

#: kernel width in grid samples and grid oversampling (grid width / slice width)
WIDTH = 5
OVERSAMPLING = 2
#: kernel table samples per grid sample (linear interpolation between them)
_TABLE_DENSITY = 512
#: grid rows per CPU task
_BAND = 16
#: at most this much memory for one batch of slice pairs on the CPU
CPU_BATCH_BYTES = 512 << 20
#: at most this much for one batch of unpaired slices (``pair_slices=False``): small slices
#: gain from batches (64²: 0.34 ms a slice in batches of 8 against 0.99 alone), but past
#: what the caches hold a batch is slower than one slice at a time (512²: 20 MB a slice)
CPU_UNPAIRED_BATCH_BYTES = 16 << 20

_kernels: dict = {}


def kaiser_bessel(width: int = WIDTH, oversampling: float = OVERSAMPLING):
    """The spreading kernel: ``(φ(t), Φ(ξ))`` for a Kaiser–Bessel of ``width`` grid samples.

    ``φ(t) = I0(β √(1 - (2t / width)²)) / I0(β)`` for ``|t| ≤ width / 2`` (grid
    samples), with ``β`` from Beatty et al. (2005) for the given oversampling;
    ``Φ`` is its continuous Fourier transform (``ξ`` in cycles per grid sample),
    by which the gridded image is divided.

    Examples
    --------
    >>> phi, Phi = kaiser_bessel(6, 2)
    >>> float(phi(0.0)), bool(phi(3.0) < 1e-4), bool(abs(Phi(0.0) - 2.0) < 0.01)
    (1.0, True, True)
    """
    beta = math.pi * math.sqrt((width / oversampling) ** 2 * (oversampling - 0.5) ** 2 - 0.8)
    norm = float(np.i0(beta))

    def phi(t):
        t = np.asarray(t, float)
        inside = np.abs(t) <= width / 2
        arg = np.sqrt(np.clip(1.0 - (2.0 * t / width) ** 2, 0.0, None))
        return np.where(inside, np.i0(beta * arg) / norm, 0.0)

    def Phi(xi):
        z = np.sqrt((beta ** 2 - (np.pi * width * np.asarray(xi, float)) ** 2).astype(complex))
        z = np.where(z == 0, 1e-300, z)
        return np.real(width * np.sinh(z) / z) / norm

    return phi, Phi


@lru_cache(maxsize=8)
def _table(width: int, oversampling: float) -> np.ndarray:
    """``φ`` every ``1 / _TABLE_DENSITY`` grid samples over ``[0, width/2]``, then zeros."""
    phi, _ = kaiser_bessel(width, oversampling)
    points = int(_TABLE_DENSITY * width / 2)
    table = np.zeros(points + 3, np.float32)
    table[:points + 1] = phi(np.arange(points + 1) / _TABLE_DENSITY)
    return table


def _grid_size(n: int, oversampling: float) -> int:
    """An even FFT-friendly grid width ≥ ``oversampling × n``."""
    from scipy.fft import next_fast_len

    m = next_fast_len(math.ceil(oversampling * n))
    while m % 2:
        m = next_fast_len(m + 1)
    return m


def _cpu_kernels():
    from tomolab.recon import _gridrec_cpu  # imports numba on first use
    return _gridrec_cpu


_CUDA_SOURCE = r"""
#include <cuda_fp16.h>
// Compiled with -D WIDTH=<kernel width> -D PAIRS=<slice pairs per block> and, for half
// precision, -D HALF_VALUES. Signed frequencies: node (v, u) of the m x m grid sits at
// u, v in [-m/2, m/2) and is stored at (v mod m, u mod m) (FFT order).
#ifdef HALF_VALUES
typedef __half2 value_t;
__device__ __forceinline__ float2 load_value(const value_t* p) { return __half22float2(__ldg(p)); }
__device__ __forceinline__ void store_value(value_t* p, float2 v) { *p = __floats2half2_rn(v.x, v.y); }
__device__ __forceinline__ float2 half2_bits(unsigned bits)
{
    return __half22float2(*reinterpret_cast<const __half2*>(&bits));
}
// VEC consecutive values in one load (the address aligned to VEC values)
__device__ __forceinline__ void load_vec(const value_t* p, float2* v)
{
#if VEC == 4
    uint4 q = __ldg(reinterpret_cast<const uint4*>(p));
    v[0] = half2_bits(q.x); v[1] = half2_bits(q.y); v[2] = half2_bits(q.z); v[3] = half2_bits(q.w);
#elif VEC == 2
    uint2 q = __ldg(reinterpret_cast<const uint2*>(p));
    v[0] = half2_bits(q.x); v[1] = half2_bits(q.y);
#else
    v[0] = load_value(p);
#endif
}
#else
typedef float2 value_t;
__device__ __forceinline__ float2 load_value(const value_t* p) { return __ldg(p); }
__device__ __forceinline__ void store_value(value_t* p, float2 v) { *p = v; }
__device__ __forceinline__ void load_vec(const value_t* p, float2* v)
{
#if VEC == 2
    float4 q = __ldg(reinterpret_cast<const float4*>(p));
    v[0] = make_float2(q.x, q.y); v[1] = make_float2(q.z, q.w);
#else
    v[0] = load_value(p);
#endif
}
#endif
#ifndef VEC
#define VEC 1
#endif
#define HW (0.5f * WIDTH)
#define TILE 32
#define THREADS 256

// Pairs of slices as complex rows, padded to n_pad columns (edge or zero padding): row b
// of the output is slice 2b + i * slice 2b+1 (a missing partner is zero).
extern "C" __global__ void gridrec_pack(
    const float* __restrict__ sino, int n_z, int n_a, int n_cols, int n_pad, int left,
    int edge, float2* __restrict__ out)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int a = blockIdx.y, b = blockIdx.z;
    if (j >= n_pad) return;
    int c = j - left;
    bool inside = c >= 0 && c < n_cols;
    c = min(max(c, 0), n_cols - 1);
    float re = 0.f, im = 0.f;
    if (inside || edge) {
        re = sino[((size_t)(2 * b) * n_a + a) * n_cols + c];
        if (2 * b + 1 < n_z) im = sino[((size_t)(2 * b + 1) * n_a + a) * n_cols + c];
    }
    out[((size_t)b * n_a + a) * n_pad + j] = make_float2(re, im);
}

// The twin of _gridrec_cpu.weight_spectra (complex case): filter, scale, split the pair's
// spectrum into its two slices and shift each by its own alpha (a phase ramp), on signed k.
extern "C" __global__ void gridrec_weight(
    const float2* __restrict__ spectra, const float* __restrict__ weights,
    const double* __restrict__ alpha, int n_a, int n_pad, const float* __restrict__ norm,
    value_t* __restrict__ values)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int a = blockIdx.y, b = blockIdx.z;
    int half = n_pad / 2, n_k = n_pad + 1;
    if (i >= n_k) return;
    int k = i - half;
    const float2* s = spectra + ((size_t)b * n_a + a) * n_pad;
    float2 sp = s[k < 0 ? k + n_pad : k];
    float2 sm = s[k > 0 ? n_pad - k : -k];
    double tr = (double)k * alpha[(size_t)(2 * b) * n_a + a] / n_pad;
    double ti = (double)k * alpha[(size_t)(2 * b + 1) * n_a + a] / n_pad;
    float sr, cr, si, ci;
    sincospif((float)(2.0 * (tr - rint(tr))), &sr, &cr);
    sincospif((float)(2.0 * (ti - rint(ti))), &si, &ci);
    float w = 0.5f * weights[k < 0 ? -k : k] / norm[b];
    // S (e_re + e_im) + conj(S(-k)) (e_re - e_im)
    float pr = cr + ci, pi = sr + si, mr = cr - ci, mi = sr - si;
    float2 v;
    v.x = w * (sp.x * pr - sp.y * pi + sm.x * mr + sm.y * mi);
    v.y = w * (sp.x * pi + sp.y * pr + sm.x * mi - sm.y * mr);
    store_value(values + ((size_t)b * n_a + a) * n_k + i, v);
}

// k with k * c in [lo, hi], intersected with [*k0, *k1] (floats: a generous range; the taps
// are checked exactly). c is given with its reciprocal.
__device__ __forceinline__ void k_range(float c, float inv, float lo, float hi, float* k0, float* k1)
{
    if (c > 0.f) { *k0 = fmaxf(*k0, lo * inv); *k1 = fminf(*k1, hi * inv); }
    else if (c < 0.f) { *k0 = fmaxf(*k0, hi * inv); *k1 = fminf(*k1, lo * inv); }
    else if (lo > 0.f || hi < 0.f) { *k0 = 1.f; *k1 = 0.f; }
}

__device__ __forceinline__ float kernel_weight(const float* table, float d, float scale)
{
    float t = d * scale;
    int i = (int)t;
    float lo = table[i];
    return fmaf(t - (float)i, table[i + 1] - lo, lo);
}

// Gridding as a gather: one block per 32 x 32 tile of the frequency grid and PAIRS slice
// pairs; each thread owns a column of 4 nodes and sums, in registers, every radial sample
// within half a kernel width of them: no atomics, every node written once. The angles
// whose line reaches the tile are listed first (in order, so the sums are deterministic).
// dirs: per angle (cx_hi, cx_lo, cy_hi, cy_lo), cx = rho cos(theta) as a float pair, and
// inv: (1 / cx, 1 / cy). A sample (a, k) sits at (uy, ux) = k (cy, cx), |k| <= half, so
// |ux|, |uy| <= reach (rho half, with a margin).
extern "C" __global__ void __launch_bounds__(THREADS) gridrec_gather(
    const value_t* __restrict__ values, const float4* __restrict__ dirs,
    const float2* __restrict__ inv, const float* __restrict__ table, int table_len,
    float table_scale, int n_a, int half, float reach, int m, int n_b,
    const int* __restrict__ tile_order, int tiles_per_row, float2* __restrict__ grid)
{
    extern __shared__ float s_table[];
    __shared__ float4 s_dir[THREADS];
    __shared__ float2 s_inv[THREADS];
    __shared__ int s_angle[THREADS];
    __shared__ int s_count[THREADS / 32];
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    for (int i = tid; i < table_len; i += THREADS) s_table[i] = table[i];
    int tile = tile_order[blockIdx.x];
    int u0 = (tile % tiles_per_row) * TILE - m / 2, v0 = (tile / tiles_per_row) * TILE - m / 2;
    // each warp covers 8 x 16 nodes, each thread 1 x 4: compact footprints for any direction
    int u = u0 + 8 * (warp & 3) + (lane & 7);
    int vb = v0 + 16 * (warp >> 2) + 4 * (lane >> 3);
    int b0 = blockIdx.y * PAIRS;
    int n_k = 2 * half + 1;
    float2 acc[PAIRS][4];
    #pragma unroll
    for (int p = 0; p < PAIRS; ++p)
        #pragma unroll
        for (int r = 0; r < 4; ++r) acc[p][r] = make_float2(0.f, 0.f);
    __syncthreads();
    float kmax = (float)half;
    // periodic images: node u also gathers the samples near u - m and u + m
    for (int su = -m; su <= m; su += m) {
        for (int sv = -m; sv <= m; sv += m) {
            float U0 = u0 + su - HW, U1 = u0 + su + (TILE - 1) + HW;
            float V0 = v0 + sv - HW, V1 = v0 + sv + (TILE - 1) + HW;
            if (U0 > reach || U1 < -reach || V0 > reach || V1 < -reach) continue;
            float uf = (float)(u + su), vf = (float)(vb + sv);
            for (int a0 = 0; a0 < n_a; a0 += THREADS) {
                int a = a0 + tid;
                bool hit = false;
                float4 d = make_float4(0.f, 0.f, 0.f, 0.f);
                float2 iv = make_float2(0.f, 0.f);
                if (a < n_a) {
                    d = dirs[a];
                    iv = inv[a];
                    float k0 = -kmax, k1 = kmax;
                    k_range(d.x, iv.x, U0 - 0.01f, U1 + 0.01f, &k0, &k1);
                    k_range(d.z, iv.y, V0 - 0.01f, V1 + 0.01f, &k0, &k1);
                    hit = ceilf(k0 - 0.01f) <= floorf(k1 + 0.01f);
                }
                unsigned ballot = __ballot_sync(0xffffffffu, hit);
                if (lane == 0) s_count[warp] = __popc(ballot);
                __syncthreads();
                int before = 0, total = 0;
                #pragma unroll
                for (int w = 0; w < THREADS / 32; ++w) {
                    int c = s_count[w];
                    before += w < warp ? c : 0;
                    total += c;
                }
                if (hit) {
                    int at = before + __popc(ballot & ((1u << lane) - 1u));
                    s_dir[at] = d;
                    s_inv[at] = iv;
                    s_angle[at] = a;
                }
                __syncthreads();
                for (int j = 0; j < total; ++j) {
                    float4 c = s_dir[j];
                    float2 ic = s_inv[j];
                    float k0 = -kmax, k1 = kmax;
                    k_range(c.x, ic.x, uf - HW - 0.01f, uf + HW + 0.01f, &k0, &k1);
                    k_range(c.z, ic.y, vf - HW - 0.01f, vf + 3.f + HW + 0.01f, &k0, &k1);
                    int first = (int)ceilf(k0 - 0.01f), last = (int)floorf(k1 + 0.01f);
                    if (first > last) continue;
                    size_t row = (size_t)s_angle[j] * n_k + half;
                    for (int k = first; k <= last; ++k) {
                        float kf = (float)k;
                        float dx = fmaf(-kf, c.y, fmaf(-kf, c.x, uf));  // u - k cx, to ~1e-7
                        if (!(dx > -HW && dx <= HW)) continue;
                        float dy = fmaf(-kf, c.w, fmaf(-kf, c.z, vf));
                        float wx = kernel_weight(s_table, fabsf(dx), table_scale);
                        float2 val[PAIRS];
                        #pragma unroll
                        for (int p = 0; p < PAIRS; ++p)
                            val[p] = b0 + p < n_b
                                ? load_value(values + (size_t)(b0 + p) * n_a * n_k + row + k)
                                : make_float2(0.f, 0.f);
                        #pragma unroll
                        for (int r = 0; r < 4; ++r) {
                            float e = dy + (float)r;
                            if (e > -HW && e <= HW) {
                                float w = wx * kernel_weight(s_table, fabsf(e), table_scale);
                                #pragma unroll
                                for (int p = 0; p < PAIRS; ++p) {
                                    acc[p][r].x = fmaf(w, val[p].x, acc[p][r].x);
                                    acc[p][r].y = fmaf(w, val[p].y, acc[p][r].y);
                                }
                            }
                        }
                    }
                }
                __syncthreads();
            }
        }
    }
    if (u >= m / 2) return;  // past the grid (m not a multiple of the tile)
    int col = u < 0 ? u + m : u;
    #pragma unroll
    for (int r = 0; r < 4; ++r) {
        int v = vb + r;
        if (v >= m / 2) break;
        int rowi = v < 0 ? v + m : v;
        #pragma unroll
        for (int p = 0; p < PAIRS; ++p)
            if (b0 + p < n_b) grid[((size_t)(b0 + p) * m + rowi) * m + col] = acc[p][r];
    }
}

// gather="nodes": the twin of gridrec_weight writing values (n_a, n_k, n_b), the pair index
// innermost, so that a node reads every pair of a sample in one run of bytes. The phase ramp
// in float arithmetic: steps (pair, angle) hold alpha / n_pad mod 1 of both slices split as
// hi + lo, hi with few enough bits that k * hi is exact, so frac(k * hi) is exact too.
extern "C" __global__ void gridrec_weight_nodes(
    const float2* __restrict__ spectra, const float* __restrict__ weights,
    const float4* __restrict__ steps, int n_a, int n_pad, int n_b,
    const float* __restrict__ norm, value_t* __restrict__ values)
{
    int n_k = n_pad + 1, half = n_pad / 2;
    int per_angle = n_k * n_b;
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    int a = blockIdx.y;
    if (t >= per_angle) return;
    int b = t % n_b, k = t / n_b - half;
    const float2* s = spectra + ((size_t)b * n_a + a) * n_pad;
    float2 sp = s[k < 0 ? k + n_pad : k];
    float2 sm = s[k > 0 ? n_pad - k : -k];
    float4 st = steps[(size_t)b * n_a + a];
    float kf = (float)k;
    float hr = kf * st.x, hi = kf * st.z;
    float tr = (hr - rintf(hr)) + kf * st.y;
    float ti = (hi - rintf(hi)) + kf * st.w;
    float sr, cr, si, ci;
    sincospif(2.f * tr, &sr, &cr);
    sincospif(2.f * ti, &si, &ci);
    float w = 0.5f * weights[k < 0 ? -k : k] / norm[b];
    float pr = cr + ci, pi = sr + si, mr = cr - ci, mi = sr - si;
    float2 v;
    v.x = w * (sp.x * pr - sp.y * pi + sm.x * mr + sm.y * mi);
    v.y = w * (sp.x * pi + sp.y * pr + sm.x * mi - sm.y * mr);
    store_value(values + (size_t)a * per_angle + t, v);
}

// gather="nodes": one thread per node of the grid, a block of 16 x 16 nodes (each warp 8 x 4).
// A node finds the few angles whose line passes within half a kernel width of it from its
// own polar angle: the angles are sorted modulo pi (dirs, extra), and buckets[i] is the first
// sorted position at or past i * pi / n_buckets. For each, the samples k within its box are
// summed in registers for PAIRS pairs at once (values (n_a, n_k, n_b)): no atomics, no shared
// staging, every node written once, in a fixed order (deterministic). The cost follows the
// samples that reach the node, not the angles times the tile.
// extra: per sorted angle (1 / cx, 1 / cy, original angle index as int bits, 0).
extern "C" __global__ void __launch_bounds__(256) gridrec_gather_nodes(
    const value_t* __restrict__ values, const float4* __restrict__ dirs,
    const float4* __restrict__ extra, const int* __restrict__ buckets, int n_buckets,
    const float* __restrict__ table, int table_len, float table_scale, int n_a, int half,
    float reach, int m, int n_b, const int* __restrict__ block_order, int blocks_per_row,
    float2* __restrict__ grid)
{
    extern __shared__ float s_table[];
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    for (int i = tid; i < table_len; i += blockDim.x) s_table[i] = table[i];
    __syncthreads();
    int blk = block_order[blockIdx.x];
    int u = (blk % blocks_per_row) * 16 + 8 * (warp & 1) + (lane & 7) - m / 2;
    int v = (blk / blocks_per_row) * 16 + 4 * (warp >> 1) + (lane >> 3) - m / 2;
    if (u >= m / 2 || v >= m / 2) return;  // past the grid (m not a multiple of 16)
    int b0 = blockIdx.y * PAIRS;
    int n_k = 2 * half + 1;
    float2 acc[PAIRS];
    #pragma unroll
    for (int p = 0; p < PAIRS; ++p) acc[p] = make_float2(0.f, 0.f);
    const float kmax = (float)half;
    const float per_radian = (float)n_buckets * 0.318309886f;
    const float box = HW * 1.41421356f + 0.05f;  // the box's corners lie within this radius
    const float limit = reach + HW + 0.05f;
    // periodic images: node u also gathers the samples near u - m and u + m
    for (int su = -m; su <= m; su += m) {
        float uf = (float)(u + su);
        if (fabsf(uf) > limit) continue;
        for (int sv = -m; sv <= m; sv += m) {
            float vf = (float)(v + sv);
            if (fabsf(vf) > limit) continue;
            float r = sqrtf(uf * uf + vf * vf);
            if (r > reach + box) continue;
            // sorted positions [i0, i1) then [i2, i3): every angle within delta of phi, mod pi
            int i0 = 0, i1 = n_a, i2 = 0, i3 = 0;
            if (r > box) {
                float delta = asinf(box / r) + 1e-4f;
                float phi = atan2f(vf, uf);
                if (phi < 0.f) phi += 3.14159265f;
                int lo = (int)floorf((phi - delta) * per_radian) - 1;
                int hi = (int)floorf((phi + delta) * per_radian) + 2;
                if (hi - lo < n_buckets) {
                    if (lo < 0) {
                        i0 = buckets[lo + n_buckets]; i1 = n_a; i3 = buckets[hi];
                    } else if (hi > n_buckets) {
                        i0 = buckets[lo]; i1 = n_a; i3 = buckets[hi - n_buckets];
                    } else {
                        i0 = buckets[lo]; i1 = buckets[hi];
                    }
                }
            }
            for (int part = 0; part < 2; ++part) {
                int ib = part ? i2 : i0, ie = part ? i3 : i1;
                for (int i = ib; i < ie; ++i) {
                    float4 c = __ldg(dirs + i);
                    float4 e = __ldg(extra + i);
                    float k0 = -kmax, k1 = kmax;
                    k_range(c.x, e.x, uf - HW - 0.01f, uf + HW + 0.01f, &k0, &k1);
                    k_range(c.z, e.y, vf - HW - 0.01f, vf + HW + 0.01f, &k0, &k1);
                    int first = (int)ceilf(k0 - 0.01f), last = (int)floorf(k1 + 0.01f);
                    const value_t* row =
                        values + ((size_t)__float_as_int(e.z) * n_k + half) * n_b + b0;
                    for (int k = first; k <= last; ++k) {
                        float kf = (float)k;
                        float dx = fmaf(-kf, c.y, fmaf(-kf, c.x, uf));  // u - k cx, to ~1e-7
                        float dy = fmaf(-kf, c.w, fmaf(-kf, c.z, vf));
                        if (!(dx > -HW && dx <= HW && dy > -HW && dy <= HW)) continue;
                        float w = kernel_weight(s_table, fabsf(dx), table_scale)
                                  * kernel_weight(s_table, fabsf(dy), table_scale);
                        const value_t* at = row + (long long)k * n_b;
                        // VEC pairs per load (PAIRS, n_b and so b0 multiples of VEC): the
                        // cost in L1 is per load and lane, so wide loads are what pays
                        #pragma unroll
                        for (int p = 0; p < PAIRS; p += VEC) {
                            if (b0 + p < n_b) {
                                float2 val[VEC];
                                load_vec(at + p, val);
                                #pragma unroll
                                for (int q = 0; q < VEC; ++q) {
                                    acc[p + q].x = fmaf(w, val[q].x, acc[p + q].x);
                                    acc[p + q].y = fmaf(w, val[q].y, acc[p + q].y);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    int col = u < 0 ? u + m : u, rowi = v < 0 ? v + m : v;
    #pragma unroll
    for (int p = 0; p < PAIRS; ++p)
        if (b0 + p < n_b) grid[((size_t)(b0 + p) * m + rowi) * m + col] = acc[p];
}

// Keep the size x size middle of each inverse-transformed grid, divide by the kernel's
// transform, and split the pair: real part slice 2b, imaginary part slice 2b + 1.
extern "C" __global__ void gridrec_crop(
    const float2* __restrict__ grid, const float* __restrict__ deapod, int size, int m,
    int n_z, const float* __restrict__ norm, float* __restrict__ out)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y, b = blockIdx.z;
    if (x >= size) return;
    int ix = x - size / 2, iy = y - size / 2;
    ix += ix < 0 ? m : 0;
    iy += iy < 0 ? m : 0;
    float2 g = grid[((size_t)b * m + iy) * m + ix];
    float f = deapod[x] * deapod[y] * norm[b];
    size_t plane = (size_t)size * size, at = (size_t)y * size + x;
    out[(size_t)(2 * b) * plane + at] = g.x * f;
    if (2 * b + 1 < n_z) out[(size_t)(2 * b + 1) * plane + at] = g.y * f;
}
"""


def _gpu_module(width: int, pairs: int, half: bool, vec: int = 1):
    """The CUDA kernels for one kernel width, slice pairs per block (or per thread, for
    ``gather="nodes"``), value precision, and pairs per load (``gather="nodes"``)."""
    import cupy

    key = (cupy.cuda.runtime.getDevice(), width, pairs, half, vec)
    if key not in _kernels:
        options = (f"-DWIDTH={width}", f"-DPAIRS={pairs}") + (("-DHALF_VALUES",) if half else ())
        options += (f"-DVEC={vec}",)
        _kernels[key] = cupy.RawModule(code=_CUDA_SOURCE, options=options)
    return _kernels[key]


@lru_cache(maxsize=8)
def _tile_order(m: int, tile: int = 32) -> np.ndarray:
    """Tiles of the gather, nearest the grid's origin first: those gather the most samples,
    so they start first and the launch does not end waiting for one of them."""
    per_row = -(-m // tile)
    middle = np.arange(per_row) * tile - m // 2 + (tile - 1) / 2
    distance = np.hypot(middle[:, None], middle[None, :]).ravel()  # tile = row * per_row + col
    return np.argsort(distance, kind="stable").astype(np.int32)


#: the gather kernels: "tiles" (one block per 32 x 32 tile lists the angles that reach it) and
#: "nodes" (each node finds its own few angles; with it the samples' pair-innermost layout)
GATHERS = ("tiles", "nodes")
#: slice pairs summed per thread by gather="nodes" (they share positions and weights)
GPU_NODE_PAIRS = 8


def _angle_buckets(angles, n_buckets: int | None = None):
    """Angles sorted modulo π, and where each of ``n_buckets`` equal parts of [0, π) starts.

    Returns ``(order, buckets)``: ``order[i]`` is the index (into ``angles``) of the ``i``-th
    smallest ``angle mod π``; ``buckets[j]`` the first ``i`` whose angle mod π is at least
    ``j π / n_buckets`` (``n_buckets + 1`` entries, the last ``len(angles)``). A line through
    the origin is the same for ``θ`` and ``θ + π``, so a grid node at polar angle ``φ`` needs
    only the sorted positions of the buckets around ``φ`` (the ``gather="nodes"`` kernel).

    Examples
    --------
    >>> order, buckets = _angle_buckets(np.array([0.1, 3.5, 1.0]), n_buckets=4)
    >>> order.tolist(), buckets.tolist()
    ([0, 1, 2], [0, 2, 3, 3, 3])
    """
    angles = np.asarray(angles, float)
    if n_buckets is None:
        n_buckets = max(64, 1 << math.ceil(math.log2(2 * max(len(angles), 1))))
    folded = np.mod(angles, np.pi)
    folded[folded >= np.pi] -= np.pi  # mod can round up to π
    order = np.argsort(folded, kind="stable")
    edges = np.arange(n_buckets + 1) * (np.pi / n_buckets)
    buckets = np.searchsorted(folded[order], edges, side="left")
    buckets[-1] = len(angles)
    return order.astype(np.int32), buckets.astype(np.int32)


def _phase_steps(alpha, n_pad: int) -> np.ndarray:
    """Per (pair, angle) ``alpha / n_pad mod 1`` of both slices, each split as ``hi + lo``
    (float32) with ``hi`` a multiple of ``2**-p`` so that ``k * hi`` is exact in float32 for
    every ``|k| <= n_pad / 2``: then ``frac(k * hi) + k * lo`` is the phase ``k alpha / n_pad``
    (in turns) to ~1e-7 without double precision. ``alpha``: ``(pairs, 2, angle)``.

    Examples
    --------
    >>> steps = _phase_steps(np.array([[[1234.567], [3.25]]]), 4096)
    >>> k = np.float32(2048)
    >>> turns = (k * steps[0, 0, 0] - np.rint(k * steps[0, 0, 0])) + k * steps[0, 0, 1]
    >>> exact = (2048 * 1234.567 / 4096) % 1
    >>> bool(abs(turns - exact) < 1e-6 or abs(abs(turns - exact) - 1) < 1e-6)
    True
    """
    bits = 24 - int(n_pad // 2).bit_length()
    step = np.mod(np.asarray(alpha, float) / n_pad, 1.0)
    hi = np.round(step * 2.0 ** bits) / 2.0 ** bits
    lo = step - hi
    out = np.stack([hi[:, 0], lo[:, 0], hi[:, 1], lo[:, 1]], axis=-1)  # (pair, angle, 4)
    return np.ascontiguousarray(out, dtype=np.float32)


def _directions(angles, rho: float):
    """Per angle ``(cx_hi, cx_lo, cy_hi, cy_lo)``, ``c = rho (cos θ, sin θ)`` as float pairs
    (positions ``k c`` to ~1e-7 of a grid sample in float arithmetic), and ``(1/cx, 1/cy)``."""
    c = rho * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    hi = c.astype(np.float32)
    lo = (c - hi).astype(np.float32)
    dirs = np.stack([hi[:, 0], lo[:, 0], hi[:, 1], lo[:, 1]], axis=-1)
    with np.errstate(divide="ignore"):
        inv = np.where(hi != 0, 1.0 / np.where(hi != 0, hi, 1), 0).astype(np.float32)
    return dirs, inv


#: slice pairs per block of the gather kernel: they share every position and weight
GPU_PAIRS_PER_BLOCK = 2


def _mark(marks, name: str) -> None:
    """Note that stage ``name`` ends here: a CUDA event, or the time on the CPU."""
    if marks is None:
        return
    if marks.gpu:
        import cupy
        event = cupy.cuda.Event()
        event.record()
        marks.append((name, event))
    else:
        marks.append((name, time.perf_counter()))


class _Marks(list):
    """Stage ends, summed into a ``stats`` dict of seconds per stage by :meth:`add_to`."""

    def __init__(self, gpu: bool):
        super().__init__()
        self.gpu = gpu
        _mark(self, "start")

    def add_to(self, stats: dict) -> None:
        if self.gpu:
            import cupy
            self[-1][1].synchronize()
            seconds = [cupy.cuda.get_elapsed_time(a, b) / 1e3 for (_, a), (_, b) in pairwise(self)]
        else:
            seconds = [b - a for (_, a), (_, b) in pairwise(self)]
        for (name, _), t in zip(self[1:], seconds):
            stats[name] = stats.get(name, 0.0) + t


def _gpu_values(xp, sinograms, alpha, weights, n_pad: int, left: int, pad_mode: str, half: bool,
                pairs: int, width: int, oversampling: float, marks=None, gather: str = "tiles"):
    """Pack slice pairs as complex rows, FFT them, and weight and phase-shift the spectra.

    Returns ``(values, norm)``: the radial samples ``(pairs, angle, n_pad + 1)`` (complex64,
    or for ``half`` complex half as float16 pairs, each pair's divided by its ``norm``, a
    device array of one float32 per pair), ready for :func:`_gpu_slices`; for
    ``gather="nodes"`` laid out ``(angle, n_pad + 1, pairs)`` instead.
    """
    from tomolab.arrays import fft_module

    fft = fft_module(xp)
    n_z, n_angles, n_cols = sinograms.shape
    n_b = (n_z + 1) // 2
    module = _gpu_module(width, pairs, half)
    packed = xp.empty((n_b, n_angles, n_pad), xp.complex64)
    module.get_function("gridrec_pack")(
        ((n_pad + 255) // 256, n_angles, n_b), (256,),
        (sinograms, np.int32(n_z), np.int32(n_angles), np.int32(n_cols), np.int32(n_pad),
         np.int32(left), np.int32(pad_mode == "edge"), packed))
    _mark(marks, "pack pairs")
    spectra = fft.fft(packed, axis=-1, overwrite_x=True)
    _mark(marks, "FFT of the pairs")
    alpha2 = np.empty((n_b, 2, n_angles))
    alpha2[:, 0] = alpha[0::2]
    alpha2[:n_z // 2, 1] = alpha[1::2]
    alpha2[n_z // 2:, 1] = alpha[-1]  # an odd slice's missing partner: any shift will do
    if half:
        # each pair's samples at most 1 in magnitude: no overflow whatever the data's units
        norm = xp.abs(spectra).reshape(n_b, -1).max(axis=1) * np.float32(2 * weights.max())
        norm = xp.maximum(norm, np.float32(1e-30)).astype(xp.float32)
    else:
        norm = xp.ones(n_b, xp.float32)
    if gather == "nodes":
        shape = (n_angles, n_pad + 1, 2 * n_b) if half else (n_angles, n_pad + 1, n_b)
        values = xp.empty(shape, xp.float16 if half else xp.complex64)
        per_angle = (n_pad + 1) * n_b
        module.get_function("gridrec_weight_nodes")(
            ((per_angle + 255) // 256, n_angles), (256,),
            (spectra, xp.asarray(weights.astype(np.float32)),
             xp.asarray(_phase_steps(alpha2, n_pad)), np.int32(n_angles), np.int32(n_pad),
             np.int32(n_b), norm, values))
        _mark(marks, "filter and shift the spectra")
        return values, norm
    if half:
        values = xp.empty((n_b, n_angles, 2 * (n_pad + 1)), xp.float16)
    else:
        values = xp.empty((n_b, n_angles, n_pad + 1), xp.complex64)
    module.get_function("gridrec_weight")(
        ((n_pad + 1 + 255) // 256, n_angles, n_b), (256,),
        (spectra, xp.asarray(weights.astype(np.float32)), xp.asarray(alpha2), np.int32(n_angles),
         np.int32(n_pad), norm, values))
    _mark(marks, "filter and shift the spectra")
    return values, norm


def _gpu_slices(xp, values, norm, angles, *, n_z: int, n_pad: int, m: int, size: int,
                deapod, table, width: int, pairs: int, half: bool, out, marks=None,
                gather: str = "tiles"):
    """Gather the radial samples onto the grid, inverse-FFT it and write the slices to ``out``."""
    from tomolab.arrays import fft_module

    fft = fft_module(xp)
    if gather == "nodes":
        n_b = norm.size
        grid = _gpu_gather_nodes(xp, values, angles, n_b=n_b, n_pad=n_pad, m=m, table=table,
                                 width=width, half=half)
        module = _gpu_module(width, pairs, half)
    else:
        n_b, n_angles = values.shape[:2]
        module = _gpu_module(width, pairs, half)
        grid = _gpu_gather_tiles(xp, module, values, angles, n_b=n_b, n_angles=n_angles,
                                 n_pad=n_pad, m=m, table=table, pairs=pairs)
    _mark(marks, "gather onto the grid")
    grid = fft.ifft2(grid, norm="forward", overwrite_x=True)
    _mark(marks, "2D inverse FFT")
    module.get_function("gridrec_crop")(
        ((size + 127) // 128, size, n_b), (128,),
        (grid, xp.asarray(deapod), np.int32(size), np.int32(m), np.int32(n_z), norm, out))
    _mark(marks, "crop and split")
    return out


def _reach(m: int, n_pad: int) -> float:
    """A bound on ``|ux|, |uy|`` of every sample, ``m / n_pad * n_pad / 2``, with a margin."""
    return m / n_pad * (n_pad // 2) * 1.0001 + 0.01


def _gpu_gather_nodes(xp, values, angles, *, n_b: int, n_pad: int, m: int, table, width: int,
                      half: bool):
    """``gather="nodes"``: one thread per grid node; ``values`` is ``(angle, k, pair)``."""
    pairs = min(n_b, GPU_NODE_PAIRS)
    module = _gpu_module(width, pairs, half, _pairs_per_load(pairs, n_b, half))
    order, buckets = _angle_buckets(angles)
    dirs, inv = _directions(np.asarray(angles, float)[order], m / n_pad)
    extra = np.zeros((len(order), 4), np.float32)
    extra[:, :2] = inv
    extra[:, 2] = order.view(np.float32)  # the angle's index, as int bits
    blocks = _tile_order(m, 16)
    grid = xp.empty((n_b, m, m), xp.complex64)
    module.get_function("gridrec_gather_nodes")(
        (blocks.size, (n_b + pairs - 1) // pairs), (256,),
        (values, xp.asarray(dirs), xp.asarray(extra), xp.asarray(buckets),
         np.int32(buckets.size - 1), xp.asarray(table), np.int32(table.size),
         np.float32(_TABLE_DENSITY), np.int32(len(order)), np.int32(n_pad // 2),
         np.float32(_reach(m, n_pad)), np.int32(m), np.int32(n_b), xp.asarray(blocks),
         np.int32(-(-m // 16)), grid),
        shared_mem=4 * table.size)
    return grid


def _pairs_per_load(pairs: int, n_b: int, half: bool) -> int:
    """The widest load (16 bytes at most) whose pairs divide both ``pairs`` and ``n_b``, so
    that every load of the ``gather="nodes"`` kernel is aligned and whole.

    >>> _pairs_per_load(8, 8, False), _pairs_per_load(8, 8, True), _pairs_per_load(6, 6, True)
    (2, 4, 2)
    """
    for vec in ((4, 2) if half else (2,)):
        if pairs % vec == 0 and n_b % vec == 0:
            return vec
    return 1


def _gpu_gather_tiles(xp, module, values, angles, *, n_b, n_angles, n_pad, m, table, pairs):
    """``gather="tiles"``: one block per 32 x 32 tile; ``values`` is ``(pair, angle, k)``."""
    dirs, inv = _directions(angles, m / n_pad)
    order = _tile_order(m)
    grid = xp.empty((n_b, m, m), xp.complex64)
    module.get_function("gridrec_gather")(
        (order.size, (n_b + pairs - 1) // pairs), (256,),
        (values, xp.asarray(dirs), xp.asarray(inv), xp.asarray(table), np.int32(table.size),
         np.float32(_TABLE_DENSITY), np.int32(n_angles), np.int32(n_pad // 2),
         np.float32(_reach(m, n_pad)), np.int32(m),
         np.int32(n_b), xp.asarray(order), np.int32(-(-m // 32)), grid),
        shared_mem=4 * table.size)
    return grid


def _round_to_half(values: np.ndarray, spectra: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The CPU twin of the GPU's half-precision samples ``(pair, angle, k)``: each pair's
    divided by the GPU's bound on their magnitude, rounded to float16, and multiplied back."""
    norm = np.abs(spectra).reshape(len(spectra), -1).max(axis=1) * np.float32(2 * weights.max())
    norm = np.maximum(norm, np.float32(1e-30)).astype(np.float32)[:, None, None]
    scaled = values / norm
    return (scaled.real.astype(np.float16).astype(np.float32)
            + 1j * scaled.imag.astype(np.float16).astype(np.float32)).astype(np.complex64) * norm


class _Scratch:
    """The CPU path's large work arrays, reused from one batch of a call to the next.

    A fresh large array costs a page fault per page on every batch (the kernel
    zeroes each page; with transparent huge pages it may compact memory
    first): benchmarks/RESULTS.md, "CPU gridrec's work arrays".
    """

    def __init__(self):
        self._arrays: dict = {}

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape``: ``name``'s memory, grown if needed."""
        count = math.prod(shape)
        flat = self._arrays.get(name)
        if flat is None or flat.dtype != np.dtype(dtype) or flat.size < count:
            self._arrays.pop(name, None)  # freed before the larger one is taken
            flat = self._arrays[name] = np.empty(count, dtype)
        return flat[:count].reshape(shape)


def _pad_into(target, chunk, left: int, pad_mode: str) -> np.ndarray:
    """``numpy.pad(chunk, ...)`` along the last axis into ``target`` (``edge`` or ``constant``)."""
    n_cols = chunk.shape[-1]
    target[..., left:left + n_cols] = chunk
    if pad_mode == "edge":
        target[..., :left] = chunk[..., :1]
        target[..., left + n_cols:] = chunk[..., -1:]
    else:
        target[..., :left] = 0
        target[..., left + n_cols:] = 0
    return target


def _spread(values, ux_step, uy_step, table, table_scale, width, m, n_store, grid=None):
    if grid is None:
        grid = np.empty((values.shape[0], m, n_store), np.complex64)
    _cpu_kernels().spread_bands(values, ux_step, uy_step, table, float(table_scale), int(width),
                                _BAND, grid)
    return grid


def _workers(xp):
    return {} if xp is not np else {"workers": -1}


def gridrec(sinograms, angles, *, center: float, filter: str = "ramp", size: int | None = None,
            pad_mode: str = "edge", precision: str = "single", stats: dict | None = None,
            gather: str = "tiles", pair_slices: bool = True):
    """Reconstruct slices from line-integral sinograms by gridding (Fourier) reconstruction.

    Same parameters and result as :func:`tomolab.recon.fbp`; several times
    faster on the CPU (on a GPU, benchmarks/bench_fourier.py compares the
    two). Differences from FBP are those of
    interpolation: FBP interpolates the filtered projections linearly along
    the detector, gridrec evaluates them band-limited (and, outside the
    detector's field of view, uses the padded projections instead of zeros).

    Parameters
    ----------
    sinograms : ndarray (z, angle, col), numpy or cupy
        Line integrals (after flat-field correction and ``-log``).
    angles : array_like (angle,)
        Radians, uniformly covering 180° or 360°.
    center : float or array_like (z,)
        Detector column of the rotation axis, in pixels; or one per slice (a
        tilted axis), each folded into that slice's phase ramp at no cost.
    filter : str
        ``ramp``, ``shepp-logan``, ``cosine``, ``hamming``, ``hann`` or ``parzen``.
    size : int, optional
        Output grid width (default: the detector width). The axis is at the
        grid's middle, ``(size - 1) / 2``.
    pad_mode : {"edge", "constant"}
        Detector padding before filtering.
    precision : {"single", "half"}
        ``"half"``: the filtered, phase-shifted projection spectra (the
        radial samples that are gridded) are divided by their largest
        possible magnitude and stored in half precision; positions, kernel
        weights, the sums on the grid and the FFTs stay in single precision.
        Within a relative difference of 1e-3 of ``"single"``; on the CPU the
        samples are rounded the same way (same result, no speed-up).
    stats : dict, optional
        Where the time goes: seconds per stage are added to it (on a GPU
        from CUDA events, waiting for the last one at the end).
    gather : {"tiles", "nodes"}
        The GPU's gridding kernel (the CPU ignores it: same result). ``"tiles"``:
        one block per 32 × 32 tile of the frequency grid lists the angles that
        reach it. ``"nodes"``: each grid node finds from its polar angle the
        few angles whose line passes near it and sums their samples for up to
        8 slice pairs at once, the samples stored pair-innermost and filtered
        and shifted in single-precision arithmetic. Both are deterministic
        (no atomics) and agree to about 1e-7; benchmarks/bench_fourier.py
        ``--gather-compare`` times the two.
    pair_slices : bool
        ``True``: slices ``2b`` and ``2b + 1`` are reconstructed as one complex
        sinogram (the real and imaginary parts of one gridding), so a slice's
        rounding depends on its partner. ``False`` (CPU only): every slice is
        reconstructed on its own through its real half-plane, in batches, and
        its bits are the same whatever the other slices of the call -- what a
        resumed or clustered volume needs to match an uninterrupted one.

    Returns
    -------
    ndarray (z, size, size) float32
        Attenuation per pixel of path, on the same device as ``sinograms``.

    Examples
    --------
    >>> import numpy as np
    >>> from tomolab.data.phantom import Cylinder, project_slice
    >>> angles = np.linspace(0, np.pi, 180, endpoint=False)
    >>> disk = [Cylinder(0, 0, -1, 1, 20, 20, 0, 0.01)]
    >>> sino = project_slice(disk, angles, np.arange(64), [0.0], center=31.5)
    >>> img = gridrec(sino.transpose(1, 0, 2).astype(np.float32), angles, center=31.5)
    >>> round(float(img[0, 28:36, 28:36].mean()), 3)
    0.01
    """
    return _gridrec(sinograms, angles, center=center, filter=filter, size=size, pad_mode=pad_mode,
                    precision=precision, stats=stats, gather=gather, pair_slices=pair_slices)


def _gridrec(sinograms, angles, *, center, filter="ramp", size=None, pad_mode="edge",
             precision="single", stats=None, width: int = WIDTH,
             oversampling: float = OVERSAMPLING, pairs: int = GPU_PAIRS_PER_BLOCK,
             gather: str = "tiles", pair_slices: bool = True):
    from tomolab.errors import ParameterError

    xp = array_module(sinograms)
    fft = fft_module(xp)
    angles, size = _check_stack(sinograms, angles, size, pad_mode)
    if precision not in ("single", "half"):
        raise ParameterError("unknown precision", where="precision", value=precision,
                             fix='use "single" or "half"')
    if gather not in GATHERS:
        raise ParameterError("unknown gather kernel", where="gather", value=gather,
                             fix=f"use one of {', '.join(map(repr, GATHERS))}")
    half_values = precision == "half"
    n_z, n_angles, n_cols = sinograms.shape
    centers = _slice_centers(center, n_z)
    # pad enough that the slice's corners (|s| ≤ size/√2) do not wrap around the period
    n_pad = padded_width(max(n_cols, math.ceil(0.75 * size)))
    left = (n_pad - n_cols) // 2
    m = _grid_size(size, oversampling)
    half = n_pad // 2

    # filter × FBP's scale × 1/n_pad of the inverse DFT, Nyquist shared between ±n_pad/2
    weights = fourier_filter(n_pad, filter) * (np.pi / (n_angles * n_pad))
    weights[half] *= 0.5
    # output pixel p sits at X = p - (size-1)/2 = x' + delta with integer x' = p - size//2
    delta = size // 2 - (size - 1) / 2.0
    cos_t, sin_t = np.cos(angles), np.sin(angles)
    alpha = left + centers[:, None] + delta * (cos_t + sin_t)[None, :]  # (z, angle)
    rho = m / n_pad
    table = _table(width, oversampling)
    _, Phi = kaiser_bessel(width, oversampling)
    xprime = np.arange(size) - size // 2
    deapod = (1.0 / Phi(xprime / m)).astype(np.float32)

    sinograms = xp.ascontiguousarray(sinograms, dtype=xp.float32)
    out = xp.empty((n_z, size, size), dtype=xp.float32)
    if not n_z:
        return out
    marks = None if stats is None else _Marks(gpu=is_cupy(sinograms))
    if is_cupy(sinograms):
        if not pair_slices:
            raise ParameterError("the GPU always reconstructs slices in pairs",
                                 where="pair_slices", value=pair_slices,
                                 fix="leave pair_slices=True on the GPU (the engine keeps GPU "
                                     "slabs even, so a slice's partner does not depend on them)")
        n_b = (n_z + 1) // 2
        # packed spectra, samples, grid and the FFT's work area, per pair
        per_pair = 8 * n_angles * (2 * n_pad + 1) + 16 * m * m
        step = batch_size(per_pair, backend="cupy", count=n_b)
        for b0 in range(0, n_b, step):
            z0, z1 = 2 * b0, min(2 * (b0 + step), n_z)
            values, norm = _gpu_values(xp, sinograms[z0:z1], alpha[z0:z1], weights, n_pad, left,
                                       pad_mode, half_values, pairs, width, oversampling, marks,
                                       gather=gather)
            _gpu_slices(xp, values, norm, angles, n_z=z1 - z0, n_pad=n_pad, m=m, size=size,
                        deapod=deapod, table=table, width=width, pairs=pairs, half=half_values,
                        out=out[z0:z1], marks=marks, gather=gather)
        if marks is not None:
            marks.add_to(stats)
        return out

    ux_step, uy_step = rho * cos_t, rho * sin_t
    table_scale = float(_TABLE_DENSITY)
    deapod2d = np.outer(deapod, deapod)
    idx = xprime % m
    n_pairs = n_z // 2 if pair_slices else 0
    per_pair = 8 * (n_angles * (2 * n_pad + 2) + 3 * m * m) + 8 * n_angles * n_cols
    # the CPU gains nothing from batches past a few pairs (each is gridded on its own): cap them
    step = batch_size(per_pair, backend="numpy", count=n_pairs, ceiling=CPU_BATCH_BYTES) \
        if n_pairs else 0
    scratch = _Scratch()
    half_size = size // 2  # output column p is grid column (p - size // 2) mod m

    def prepare(z0, z1, hermitian):
        chunk = sinograms[z0:z1]
        if hermitian:
            a_re = a_im = alpha[z0:z1]
        else:
            a_re, a_im = alpha[z0:z1:2], alpha[z0 + 1:z1:2]
        padded = _pad_into(scratch.get("padded", (z1 - z0, n_angles, n_pad), np.float32),
                           chunk, left, pad_mode)
        if hermitian:
            spectra = fft.rfft(padded, axis=-1, **_workers(xp))
        else:
            pair = (padded[0::2] + 1j * padded[1::2]).astype(np.complex64, copy=False)
            spectra = fft.fft(pair, axis=-1, overwrite_x=True, **_workers(xp))
        spectra = spectra.astype(np.complex64, copy=False)
        values = scratch.get("values", spectra.shape[:2] + (n_pad + 1,), np.complex64)
        _cpu_kernels().weight_spectra(spectra, weights, np.ascontiguousarray(a_re),
                                      np.ascontiguousarray(a_im), hermitian, values)
        if half_values:
            values = _round_to_half(values, spectra, weights)
        _mark(marks, "pad, FFT, filter and shift the spectra")
        return values

    def spread(values, n_store):
        grid = scratch.get("grid", (values.shape[0], m, n_store), np.complex64)
        return _spread(values, ux_step, uy_step, table, table_scale, width, m, n_store, grid)

    def rows_of_the_slice(g):  # the size rows of the image, after the inverse FFT over ky
        # mode="clip" (every index is valid): numpy buffers out= in its default mode
        return np.take(g, idx, axis=1, mode="clip",
                       out=scratch.get("rows", (g.shape[0], size, g.shape[2]), g.dtype))

    def crop_into(g, target):  # (b, rows of the image, cols) after the inverse FFT over kx
        np.multiply(g[:, :, m - half_size:], deapod2d[:, :half_size],
                    out=target[:, :, :half_size])
        np.multiply(g[:, :, :size - half_size], deapod2d[:, half_size:],
                    out=target[:, :, half_size:])

    for z0 in range(0, 2 * n_pairs, 2 * max(step, 1)):
        z1 = min(z0 + 2 * step, 2 * n_pairs)
        grid = spread(prepare(z0, z1, False), m)
        _mark(marks, "spread onto the grid")
        # inverse FFT over ky for every column (in place), keep the size rows of the slice,
        # then over kx
        g = fft.ifft(grid, axis=-2, norm="forward", overwrite_x=True, **_workers(xp))
        g = fft.ifft(rows_of_the_slice(g), axis=-1, norm="forward", overwrite_x=True,
                     **_workers(xp))
        _mark(marks, "2D inverse FFT")
        img = scratch.get("image", ((z1 - z0) // 2, size, size), np.complex64)
        crop_into(g, img)
        out[z0:z1:2] = img.real
        out[z0 + 1:z1:2] = img.imag
        _mark(marks, "crop and split")
    # the slices left alone (the last of an odd count, or all of them without pairs), each
    # through its real half-plane: every step works on each slice on its own, so a slice's
    # bits do not depend on the batch
    first_alone = 2 * n_pairs
    n_alone = n_z - first_alone
    step = batch_size(per_pair // 2, backend="numpy", count=n_alone,
                      ceiling=CPU_UNPAIRED_BATCH_BYTES) if n_alone else 0
    for z0 in range(first_alone, n_z, max(step, 1)):
        z1 = min(z0 + step, n_z)
        grid = spread(prepare(z0, z1, True), m // 2 + 1)
        _mark(marks, "spread onto the grid")
        g = fft.ifft(grid, axis=-2, norm="forward", overwrite_x=True, **_workers(xp))
        g = fft.irfft(rows_of_the_slice(g), n=m, axis=-1, norm="forward", **_workers(xp))
        _mark(marks, "2D inverse FFT")
        crop_into(g, out[z0:z1])
        _mark(marks, "crop and split")
    if marks is not None:
        marks.add_to(stats)
    return out


#: on the GPU, slices 2b and 2b + 1 of a slab are reconstructed as one complex sinogram, so the
#: engine keeps slabs even: a slice's partner, and so its rounding, do not depend on the slabs
gridrec.pairs_slices = True
