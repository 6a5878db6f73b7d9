"""The CPU kernels of gridrec (Numba), twins of the CUDA kernels in tomolab.recon.gridrec.

Kept in their own module so that Numba is imported only when the CPU path
runs, and so that the on-disk cache is keyed to module-level functions.

The spreading kernel is a gather over bands of grid rows: each parallel task
owns a band of rows of the frequency grid (of every slice pair in the batch)
and visits, angle by angle, only the radial samples whose kernel footprint
reaches its band, computing each sample's position and weights once for the
whole batch. No two tasks write the same grid row, so there are no races and
no private grids to sum.
"""

import math

import numba
import numpy as np


@numba.njit(fastmath=True, cache=True)
def weight_spectra(spectra, weights, alpha_re, alpha_im, hermitian, values):
    """Filter, scale and phase-shift the projection spectra onto signed frequencies.

    ``S`` is the FFT (length ``n_pad``) of a complex sinogram ``p_re + i p_im``,
    or, when ``hermitian``, the ``rfft`` of a real one (negative ``k`` are then
    the conjugates). Each part is shifted by its own ``alpha`` (samples):

        values[b, a, i] = weights[|k|] * (S(k) (e_re + e_im) + conj(S(-k)) (e_re - e_im)) / 2,
        e = exp(2πi k alpha[b, a] / n_pad),  k = i - n_pad / 2,

    since ``(S(k) ± conj(S(-k))) / 2`` are the spectra of ``p_re`` and ``i p_im``.
    Serial on purpose: it is a few ms, less than waking the threads costs on a busy machine.
    """
    n_b, n_a, n_k = values.shape
    half = (n_k - 1) // 2
    n_pad = 2 * half
    for t in range(n_b * n_a):
        b = t // n_a
        a = t - b * n_a
        # phases by recurrence (complex128: ~1e-13 after n_pad steps), not one exp per sample
        step_re = np.exp(2j * np.pi * alpha_re[b, a] / n_pad)
        step_im = np.exp(2j * np.pi * alpha_im[b, a] / n_pad)
        e_re = np.exp(-2j * np.pi * alpha_re[b, a] * half / n_pad)
        e_im = np.exp(-2j * np.pi * alpha_im[b, a] * half / n_pad)
        for i in range(n_k):
            k = i - half
            if hermitian:
                s = np.conj(spectra[b, a, -k]) if k < 0 else spectra[b, a, k]
                values[b, a, i] = s * (weights[abs(k)] * e_re)
            else:
                s = spectra[b, a, k + n_pad if k < 0 else k]
                r = spectra[b, a, -k + n_pad if k > 0 else -k].conjugate()
                values[b, a, i] = (0.5 * weights[abs(k)]) * (s * (e_re + e_im) + r * (e_re - e_im))
            e_re *= step_re
            e_im *= step_im


@numba.njit(inline="always")
def _k_interval(lo, hi, k_max):
    """Integer ``k`` in ``[lo, hi] ∩ [-k_max, k_max]``, as ``(first, last)`` (empty: first > last).

    The float bounds come from divisions by ``cos θ`` or ``sin θ``, which are
    ~1e-16 at 90° or 180°: ±1e19 and beyond, past what an int64 holds. Clamping
    before the conversion keeps them exact where they matter and finite where
    they do not (an unclamped conversion is undefined and made the loops over
    ``k`` run for ever).
    """
    lo = min(max(lo, -k_max - 1.0), k_max + 1.0)
    hi = min(max(hi, -k_max - 1.0), k_max + 1.0)
    return int(math.ceil(lo)), int(math.floor(hi))


@numba.njit(parallel=True, fastmath=True, cache=True)
def spread_bands(values, ux_step, uy_step, table, table_scale, width, band, grid):
    """Spread radial samples onto the frequency grid with a separable kernel.

    Sample ``(b, a, i)`` (signed ``k = i - n_k // 2``) sits at grid position
    ``(uy, ux) = k * (uy_step[a], ux_step[a])``; it adds ``value * φ(row - uy)
    * φ(col - ux)`` to the ``width × width`` nodes around it, rows and columns
    taken modulo ``M`` (FFT order). ``grid`` is ``(n_b, M, n_store)``: with
    ``n_store == M // 2 + 1`` only the columns ``kx = 0 .. M/2`` are kept (the
    half plane of a real slice; the other half is its Hermitian mirror).
    ``φ`` is read from ``table`` (samples ``1 / table_scale`` apart, linear
    interpolation). ``grid`` is overwritten.
    """
    n_b, n_a, n_k = values.shape
    m = grid.shape[1]
    n_store = grid.shape[2]
    half_plane = n_store < m
    k_max = (n_k - 1) // 2
    hw = 0.5 * width
    n_bands = (m + band - 1) // band
    for task in numba.prange(n_bands):
        r0 = task * band
        r1 = min(r0 + band, m)
        for b in range(n_b):
            for r in range(r0, r1):
                for c in range(n_store):
                    grid[b, r, c] = 0
        wx = np.empty(width, np.float32)
        wys = np.empty(width, np.float32)
        cols = np.empty(width, np.int64)
        for a in range(n_a):
            cx = ux_step[a]
            cy = uy_step[a]
            # x ranges of k whose footprint reaches a stored column: everything, or for a
            # half plane: ux >= -hw - 1 and (wrapping past Nyquist) ux <= -m/2 + hw + 1
            p0_lo, p0_hi = -float(k_max), float(k_max)
            p1_lo, p1_hi = 1.0, 0.0
            if half_plane:
                e0 = -hw - 1.0
                e1 = -0.5 * m + hw + 1.0
                if cx > 0:
                    p0_lo = max(p0_lo, e0 / cx)
                    p1_lo, p1_hi = -float(k_max), min(float(k_max), e1 / cx)
                elif cx < 0:
                    p0_hi = min(p0_hi, e0 / cx)
                    p1_lo, p1_hi = max(-float(k_max), e1 / cx), float(k_max)
            for image in range(2):  # node rows below 0 wrap to the bottom of the grid
                off = image * m
                y_lo = r0 - hw - 1.0 - off
                y_hi = r1 + hw - off
                if cy > 0:
                    k_lo, k_hi = y_lo / cy, y_hi / cy
                elif cy < 0:
                    k_lo, k_hi = y_hi / cy, y_lo / cy
                elif y_lo <= 0.0 <= y_hi:
                    k_lo, k_hi = -float(k_max), float(k_max)
                else:
                    continue
                # integer intervals: y range ∩ each x range, merged where they touch
                a0, b0 = _k_interval(max(k_lo, p0_lo), min(k_hi, p0_hi), float(k_max))
                a1, b1 = _k_interval(max(k_lo, p1_lo), min(k_hi, p1_hi), float(k_max))
                if a1 <= b1 and a0 <= b0 and max(a0, a1) <= min(b0, b1) + 1:
                    a0, b0 = min(a0, a1), max(b0, b1)
                    a1, b1 = 1, 0
                for part in range(2):
                    lo, hi = (a0, b0) if part == 0 else (a1, b1)
                    for k in range(lo, hi + 1):
                        ux = k * cx
                        uy = k * cy + off
                        iy0 = int(math.floor(uy - hw)) + 1
                        y0 = max(iy0, r0)
                        y1 = min(iy0 + width, r1)
                        if y0 >= y1:
                            continue
                        ix0 = int(math.floor(ux - hw)) + 1
                        for j in range(width):
                            col = ix0 + j
                            d = abs(col - ux) * table_scale
                            t = int(d)
                            w = table[t] + (d - t) * (table[t + 1] - table[t])
                            if col < 0:
                                col += m
                            elif col >= m:
                                col -= m
                            if col >= n_store:
                                w = 0.0
                                col = 0
                            wx[j] = w
                            cols[j] = col
                        for row in range(y0, y1):
                            d = abs(row - uy) * table_scale
                            t = int(d)
                            wys[row - y0] = np.float32(table[t] + (d - t) * (table[t + 1] - table[t]))
                        # the same positions and weights serve every slice (pair) of the batch
                        for b in range(n_b):
                            v = values[b, a, k + k_max]
                            g = grid[b]
                            for row in range(y0, y1):
                                wy = wys[row - y0]
                                vr = v.real * wy
                                vi = v.imag * wy
                                grow = g[row]
                                for j in range(width):
                                    grow[cols[j]] += complex(vr * wx[j], vi * wx[j])
