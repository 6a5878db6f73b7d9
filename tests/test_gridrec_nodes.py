"""gridrec's ``gather="nodes"`` GPU path: its index logic emulated on the CPU, and on a GPU the
kernels themselves against the CPU and against ``gather="tiles"``.

The emulations below are line-by-line twins of the CUDA kernels ``gridrec_gather_nodes`` and
``gridrec_weight_nodes`` (tomolab/recon/gridrec.py) in float32 arithmetic: the block and warp
mapping of nodes, the periodic images, the window of angles from the bucket table (with its
wrap around π), the per-angle k range and the tap test, and the pair-innermost layout. They are
checked against the CPU's spreader (an independent scatter over samples), tap for tap.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from tomolab.recon import _gridrec_cpu, gridrec
from tomolab.recon.gridrec import (
    _TABLE_DENSITY,
    GPU_NODE_PAIRS,
    WIDTH,
    _angle_buckets,
    _directions,
    _gridrec,
    _pairs_per_load,
    _phase_steps,
    _reach,
    _spread,
    _table,
    _tile_order,
)
from tomolab.testing import gpu_test

HW = np.float32(0.5 * WIDTH)


@numba.njit(inline="always")
def _fmaf(a, b, c):
    # the float64 product of two float32 is exact; one rounding of the sum (as fmaf, bar ties)
    return np.float32(np.float64(a) * np.float64(b) + np.float64(c))


@numba.njit(inline="always")
def _k_range(c, inv, lo, hi, k0, k1):
    if c > 0:
        k0 = max(k0, np.float32(lo * inv))
        k1 = min(k1, np.float32(hi * inv))
    elif c < 0:
        k0 = max(k0, np.float32(hi * inv))
        k1 = min(k1, np.float32(lo * inv))
    elif lo > 0 or hi < 0:
        k0, k1 = np.float32(1), np.float32(0)
    return k0, k1


@numba.njit(inline="always")
def _kernel_weight(table, d, scale):
    t = np.float32(d * scale)
    i = int(t)
    lo = table[i]
    return _fmaf(np.float32(t - np.float32(i)), np.float32(table[i + 1] - lo), lo)


@numba.njit
def emulate_gather_nodes(values, dirs, extra_inv, extra_angle, buckets, table, table_scale,
                         half, reach, m, block_order, blocks_per_row, pairs):
    """The CUDA kernel, thread by thread. ``values`` (n_a, n_k, n_b) complex64.

    Returns the grid ``(n_b, m, m)``, how often each node was written (must be once), and the
    taps per node."""
    n_a = dirs.shape[0]
    n_b = values.shape[2]
    n_buckets = buckets.size - 1
    grid = np.zeros((n_b, m, m), np.complex64)
    writes = np.zeros((m, m), np.int64)
    taps = np.zeros((m, m), np.int64)
    hw = np.float32(2.5)
    kmax = np.float32(half)
    per_radian = np.float32(np.float32(n_buckets) * np.float32(0.318309886))
    box = np.float32(np.float32(hw * np.float32(1.41421356)) + np.float32(0.05))
    limit = np.float32(np.float32(reach + hw) + np.float32(0.05))
    acc = np.zeros(pairs, np.complex64)
    for by in range((n_b + pairs - 1) // pairs):
        for bx in range(block_order.size):
            blk = block_order[bx]
            for tid in range(256):
                warp, lane = tid >> 5, tid & 31
                u = (blk % blocks_per_row) * 16 + 8 * (warp & 1) + (lane & 7) - m // 2
                v = (blk // blocks_per_row) * 16 + 4 * (warp >> 1) + (lane >> 3) - m // 2
                if u >= m // 2 or v >= m // 2:
                    continue
                b0 = by * pairs
                acc[:] = 0
                for su in (-m, 0, m):
                    uf = np.float32(u + su)
                    if abs(uf) > limit:
                        continue
                    for sv in (-m, 0, m):
                        vf = np.float32(v + sv)
                        if abs(vf) > limit:
                            continue
                        r = np.float32(math.sqrt(np.float32(uf * uf) + np.float32(vf * vf)))
                        if r > np.float32(reach + box):
                            continue
                        i0, i1, i2, i3 = 0, n_a, 0, 0
                        if r > box:
                            delta = np.float32(np.float32(math.asin(np.float32(box / r)))
                                               + np.float32(1e-4))
                            phi = np.float32(math.atan2(vf, uf))
                            if phi < 0:
                                phi = np.float32(phi + np.float32(3.14159265))
                            lo = math.floor(np.float32(np.float32(phi - delta) * per_radian)) - 1
                            hi = math.floor(np.float32(np.float32(phi + delta) * per_radian)) + 2
                            if hi - lo < n_buckets:
                                if lo < 0:
                                    i0, i1, i3 = buckets[lo + n_buckets], n_a, buckets[hi]
                                elif hi > n_buckets:
                                    i0, i1, i3 = buckets[lo], n_a, buckets[hi - n_buckets]
                                else:
                                    i0, i1 = buckets[lo], buckets[hi]
                        for part in range(2):
                            ib, ie = (i2, i3) if part else (i0, i1)
                            for i in range(ib, ie):
                                cxh, cxl, cyh, cyl = dirs[i, 0], dirs[i, 1], dirs[i, 2], dirs[i, 3]
                                k0, k1 = -kmax, kmax
                                k0, k1 = _k_range(cxh, extra_inv[i, 0],
                                                  np.float32(np.float32(uf - hw) - np.float32(0.01)),
                                                  np.float32(np.float32(uf + hw) + np.float32(0.01)),
                                                  k0, k1)
                                k0, k1 = _k_range(cyh, extra_inv[i, 1],
                                                  np.float32(np.float32(vf - hw) - np.float32(0.01)),
                                                  np.float32(np.float32(vf + hw) + np.float32(0.01)),
                                                  k0, k1)
                                first = math.ceil(np.float32(k0 - np.float32(0.01)))
                                last = math.floor(np.float32(k1 + np.float32(0.01)))
                                a = extra_angle[i]
                                for k in range(first, last + 1):
                                    kf = np.float32(k)
                                    dx = _fmaf(-kf, cxl, _fmaf(-kf, cxh, uf))
                                    dy = _fmaf(-kf, cyl, _fmaf(-kf, cyh, vf))
                                    if not (dx > -hw and dx <= hw and dy > -hw and dy <= hw):
                                        continue
                                    w = np.float32(_kernel_weight(table, abs(dx), table_scale)
                                                   * _kernel_weight(table, abs(dy), table_scale))
                                    if by == 0:
                                        taps[v % m, u % m] += 1
                                    for p in range(pairs):
                                        if b0 + p < n_b:
                                            val = values[a, half + k, b0 + p]
                                            acc[p] = complex(_fmaf(w, val.real, acc[p].real),
                                                             _fmaf(w, val.imag, acc[p].imag))
                col = u + m if u < 0 else u
                row = v + m if v < 0 else v
                if by == 0:
                    writes[row, col] += 1
                for p in range(pairs):
                    if b0 + p < n_b:
                        grid[b0 + p, row, col] = acc[p]
    return grid, writes, taps


def _gather_like_the_gpu(values_pak, angles, m, n_pad, pairs):
    """Run the emulation with the host-side tables the GPU path builds."""
    order, buckets = _angle_buckets(angles)
    dirs, inv = _directions(np.asarray(angles, float)[order], m / n_pad)
    table = _table(WIDTH, 2)
    return emulate_gather_nodes(values_pak, dirs, inv, order, buckets, table,
                                np.float32(_TABLE_DENSITY), n_pad // 2,
                                np.float32(_reach(m, n_pad)), m, _tile_order(m, 16),
                                -(-m // 16), pairs)


def _brute_force_taps(angles, m, n_pad):
    """Taps per node, counted from the samples' side in float64 (the CPU spreader's rule:
    node - sample in (-w/2, w/2] along both axes, rows and columns modulo m)."""
    half = n_pad // 2
    rho = m / n_pad
    k = np.arange(-half, half + 1)
    ux = (rho * np.cos(angles))[:, None] * k
    uy = (rho * np.sin(angles))[:, None] * k
    counts = np.zeros((m, m), np.int64)
    for j in range(WIDTH):
        for i in range(WIDTH):
            cols = np.floor(ux - 0.5 * WIDTH).astype(int) + 1 + j
            rows = np.floor(uy - 0.5 * WIDTH).astype(int) + 1 + i
            np.add.at(counts, (rows % m, cols % m), 1)
    return counts


CASES = {
    # m, n_pad, angles
    "rho 1, half turn": (64, 64, "half"),
    "rho 1/2, full turn shuffled": (72, 144, "full"),
    "rho 1.41, m not a multiple of 16": (90, 64, "half"),
    "exact 0, pi/2, pi and tiny negative angles": (48, 64, "special"),
}


def _angles(kind, rng):
    if kind == "half":
        return np.sort(rng.uniform(0, np.pi, 57))
    if kind == "full":
        return rng.permutation(np.linspace(0, 2 * np.pi, 80, endpoint=False) + 0.013)
    return np.array([0.0, np.pi / 2, np.pi, 1.5 * np.pi, -1e-17, -1e-9, 0.3, np.pi - 1e-12,
                     2.2, np.pi / 4, 3 * np.pi / 4])


@pytest.mark.parametrize("case", list(CASES))
def test_node_gather_emulation_equals_the_cpu_spreader(case):
    """Every node is written once, gathers exactly the taps that the samples spread onto it,
    and sums them to the CPU's grid (float32 rounding apart)."""
    m, n_pad, kind = CASES[case]
    rng = np.random.default_rng(len(case))
    angles = _angles(kind, rng)
    n_a, n_k, n_b = angles.size, n_pad + 1, 3
    values = (rng.standard_normal((n_b, n_a, n_k))
              + 1j * rng.standard_normal((n_b, n_a, n_k))).astype(np.complex64)
    reference = _spread(values, m / n_pad * np.cos(angles), m / n_pad * np.sin(angles),
                        _table(WIDTH, 2), float(_TABLE_DENSITY), WIDTH, m, m)
    packed = np.ascontiguousarray(values.transpose(1, 2, 0))  # (angle, k, pair)
    for pairs in (1, 2, 3):
        grid, writes, taps = _gather_like_the_gpu(packed, angles, m, n_pad, pairs)
        assert (writes == 1).all()
        if kind != "special":  # (exact angles put samples on the box's edges: float ties)
            np.testing.assert_array_equal(taps, _brute_force_taps(angles, m, n_pad))
        scale = np.abs(reference).max()
        assert np.abs(grid - reference).max() < 2e-6 * scale


def test_bucket_windows_never_miss_an_angle():
    """For nodes at every radius and polar angle, the sorted positions the kernel visits hold
    every angle whose line passes within the node's box (exact, in float64)."""
    rng = np.random.default_rng(5)
    for angles in (np.sort(rng.uniform(0, np.pi, 1800)), rng.uniform(-1, 7, 300),
                   np.linspace(0, np.pi, 1800, endpoint=False)):
        order, buckets = _angle_buckets(angles)
        n_buckets = buckets.size - 1
        folded = np.mod(angles, np.pi)
        box = np.float32(2.5 * 1.41421356 + 0.05)
        for r in (3.6, 4.0, 7.5, 40.0, 700.0, 2047.0):
            for phi in np.concatenate([rng.uniform(0, np.pi, 50), [0.0, np.pi - 1e-7]]):
                u, v = np.float32(r * np.cos(phi)), np.float32(r * np.sin(phi))
                rf = np.float32(math.sqrt(u * u + v * v))
                delta = np.float32(math.asin(box / rf)) + np.float32(1e-4)
                p = np.float32(math.atan2(v, u))
                p = p + np.float32(np.pi) if p < 0 else p
                per_radian = np.float32(n_buckets) * np.float32(0.318309886)
                lo = math.floor(np.float32(p - delta) * per_radian) - 1
                hi = math.floor(np.float32(p + delta) * per_radian) + 2
                if hi - lo >= n_buckets:
                    continue  # all angles
                if lo < 0:
                    visit = [*range(buckets[lo + n_buckets], len(angles)), *range(buckets[hi])]
                elif hi > n_buckets:
                    visit = [*range(buckets[lo], len(angles)), *range(buckets[hi - n_buckets])]
                else:
                    visit = list(range(buckets[lo], buckets[hi]))
                assert len(set(visit)) == len(visit)  # no angle twice
                # needed: the line at the angle passes within the box's circumscribed circle
                distance = np.abs(float(u) * np.sin(folded) - float(v) * np.cos(folded))
                needed = set(np.flatnonzero(distance <= 2.5 * math.sqrt(2)))
                assert needed <= set(order[visit].tolist())


def _emulate_weight_nodes(spectra, weights, steps, norm):
    """``gridrec_weight_nodes`` in float32, vectorised over its threads (the same index map:
    thread t of angle a is pair ``t % n_b`` and ``k = t // n_b - n_pad / 2``)."""
    n_b, n_a, n_pad = spectra.shape
    half = n_pad // 2
    t = np.arange((n_pad + 1) * n_b)
    b, k = t % n_b, t // n_b - half
    out = np.empty((n_a, t.size), np.complex64)
    kf = k.astype(np.float32)
    for a in range(n_a):
        s = spectra[b, a]
        sp = s[np.arange(t.size), np.where(k < 0, k + n_pad, k)]
        sm = s[np.arange(t.size), np.where(k > 0, n_pad - k, -k)]
        st = steps[b, a]
        hr, hi = kf * st[:, 0], kf * st[:, 2]
        tr = (hr - np.rint(hr)) + kf * st[:, 1]
        ti = (hi - np.rint(hi)) + kf * st[:, 3]
        e_re = np.exp(2j * np.pi * tr.astype(np.float64))
        e_im = np.exp(2j * np.pi * ti.astype(np.float64))
        w = 0.5 * weights[np.abs(k)] / norm[b]
        out[a] = w * (sp * (e_re + e_im) + np.conj(sm) * (e_re - e_im))
    return out.reshape(n_a, n_pad + 1, n_b)


def test_weight_nodes_emulation_equals_the_cpu_twin():
    """The pair-innermost filter-and-shift (float phases) equals the CPU's ``weight_spectra``
    (double-precision phases) to float32 rounding, for centres far from the middle."""
    rng = np.random.default_rng(3)
    n_b, n_a, n_pad = 3, 20, 256
    spectra = (rng.standard_normal((n_b, n_a, n_pad))
               + 1j * rng.standard_normal((n_b, n_a, n_pad))).astype(np.complex64)
    weights = rng.random(n_pad // 2 + 1).astype(np.float32)
    alpha = rng.uniform(0, 3 * n_pad, (n_b, 2, n_a))
    ref = np.empty((n_b, n_a, n_pad + 1), np.complex64)
    _gridrec_cpu.weight_spectra(spectra, weights, np.ascontiguousarray(alpha[:, 0]),
                                np.ascontiguousarray(alpha[:, 1]), False, ref)
    ours = _emulate_weight_nodes(spectra, weights, _phase_steps(alpha, n_pad), np.ones(n_b))
    ref = ref.transpose(1, 2, 0)
    assert np.abs(ours - ref).max() < 2e-6 * np.abs(ref).max()


@pytest.mark.parametrize("n_pad", [64, 4096, 8192, 65536])
def test_phase_steps_are_exact_to_1e_6_turns(n_pad):
    """``frac(k hi) + k lo`` in float32 against ``k alpha / n_pad mod 1`` in float64."""
    rng = np.random.default_rng(n_pad)
    alpha = rng.uniform(-10, 2 * n_pad, (4, 2, 50))
    steps = _phase_steps(alpha, n_pad)
    k = np.arange(-(n_pad // 2), n_pad // 2 + 1)
    kf = k.astype(np.float32)[:, None]
    for part in (0, 1):
        hi, lo = steps[0, :, 2 * part], steps[0, :, 2 * part + 1]
        np.testing.assert_array_equal(kf * hi, k[:, None] * hi.astype(np.float64))  # exact
        turns = (kf * hi - np.rint(kf * hi)) + kf * lo
        exact = np.mod(k[:, None] * alpha[0, part] / n_pad, 1.0)
        error = np.abs(turns - exact)
        assert np.minimum(error, 1 - error).max() < 1e-6


def test_unknown_gather_names_the_parameter():
    from tomolab.errors import ParameterError

    with pytest.raises(ParameterError, match="gather"):
        gridrec(np.zeros((1, 8, 16), np.float32), np.linspace(0, np.pi, 8), center=8.0,
                gather="atomics")


def test_the_cpu_ignores_gather():
    rng = np.random.default_rng(2)
    sino = rng.random((3, 40, 32)).astype(np.float32)
    angles = np.linspace(0, np.pi, 40, endpoint=False)
    np.testing.assert_array_equal(gridrec(sino, angles, center=16.2, gather="nodes"),
                                  gridrec(sino, angles, center=16.2))


@gpu_test
@pytest.mark.parametrize("precision", ["single", "half"])
@pytest.mark.parametrize("shape, size, pad_mode", [((3, 90, 64), 64, "edge"),
                                                   ((4, 120, 97), 33, "constant"),
                                                   ((2, 64, 40), 97, "edge"),
                                                   ((6, 400, 256), 256, "constant"),
                                                   ((20, 181, 150), 140, "edge")])
def test_gpu_nodes_match_the_cpu_and_the_tiles(shape, size, pad_mode, precision):
    """Grids that are not whole blocks, periodic images, a full turn of shuffled angles, one
    centre per slice, more pairs than one thread sums (20 slices: 10 pairs, 8 per thread)."""
    import cupy

    rng = np.random.default_rng(shape[0])
    sino = rng.standard_normal(shape).astype(np.float32)
    angles = rng.permutation(np.linspace(0, 2 * np.pi, shape[1], endpoint=False))
    centers = shape[2] / 2 + rng.uniform(-3, 3, shape[0])
    cpu = gridrec(sino, angles, center=centers, size=size, pad_mode=pad_mode, precision=precision)
    d_sino = cupy.asarray(sino)
    nodes = _gridrec(d_sino, angles, center=centers, size=size, pad_mode=pad_mode,
                     precision=precision, gather="nodes")
    tiles = _gridrec(d_sino, angles, center=centers, size=size, pad_mode=pad_mode,
                     precision=precision, gather="tiles").get()
    again = _gridrec(d_sino, angles, center=centers, size=size, pad_mode=pad_mode,
                     precision=precision, gather="nodes")
    assert bool((nodes == again).all())  # deterministic: no atomics
    nodes = nodes.get()
    assert np.isfinite(nodes).all()
    bound = 1e-5 if precision == "single" else 1e-4
    for a, b, c in zip(nodes, cpu, tiles):
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < bound
        assert np.linalg.norm(a - c) / np.linalg.norm(c) < bound


@gpu_test
@pytest.mark.parametrize("precision", ["single", "half"])
def test_gpu_nodes_pair_counts(precision):
    """Slice-pair counts up to past ``GPU_NODE_PAIRS``: every width of load (1, 2 or 4 pairs,
    ``_pairs_per_load``) and a last group of pairs smaller than the others."""
    import cupy

    rng = np.random.default_rng(9)
    angles = np.linspace(0, np.pi, 100, endpoint=False)
    seen = set()
    for n_z in (1, 2, 3, 4, 7, 16, 2 * GPU_NODE_PAIRS + 3):
        n_b = (n_z + 1) // 2
        seen.add(_pairs_per_load(min(n_b, GPU_NODE_PAIRS), n_b, precision == "half"))
        sino = rng.random((n_z, 100, 70)).astype(np.float32)
        cpu = gridrec(sino, angles, center=35.4, precision=precision)
        gpu = gridrec(cupy.asarray(sino), angles, center=35.4, precision=precision,
                      gather="nodes").get()
        for a, b in zip(gpu, cpu):
            assert np.linalg.norm(a - b) / np.linalg.norm(b) < (1e-5 if precision == "single"
                                                                else 1e-4)
    assert seen == ({1, 2, 4} if precision == "half" else {1, 2})
