"""Paganin phase retrieval against a Fresnel-propagated sphere of known thickness."""

import math

import numpy as np
import pytest

from tomolab.arrays import to_numpy
from tomolab.errors import ParameterError
from tomolab.prep import fresnel_propagate, minus_log, retrieve_phase, wavelength
from tomolab.testing import gpu_test

# PMMA (C5H8O2, 1.19 g/cm^3) at 20 keV: delta from its electron density
# (r_e lambda^2 n_e / 2 pi), beta from its total attenuation (~0.6 cm^2/g).
ENERGY = 20.0        # keV
DELTA = 6.7e-7
BETA = 3.5e-10
PIXEL = 1e-6         # m
RADIUS = 50e-6       # m
DISTANCE = 0.1       # m: fringe width sqrt(lambda z) ~ 2.5 pixels


def _sphere(n=256, centre=(0.0, 0.0), radius=RADIUS):
    """Projected thickness 2 sqrt(R^2 - r^2) of a sphere, in metres."""
    y, x = (np.mgrid[:n, :n] - n / 2 + 0.5) * PIXEL
    r2 = (x - centre[1]) ** 2 + (y - centre[0]) ** 2
    return 2 * np.sqrt(np.clip(radius ** 2 - r2, 0, None)), r2 < radius ** 2


def test_wavelength_constant():
    assert math.isclose(wavelength(12.398419843320026), 1e-10, rel_tol=1e-15)


def test_paganin_recovers_sphere_thickness(xp):
    thickness, inside = _sphere()
    intensity = fresnel_propagate(xp.asarray(thickness.astype(np.float32)), delta=DELTA,
                                  beta=BETA, energy=ENERGY, distance=DISTANCE, pixel_size=PIXEL)
    assert intensity.dtype == np.float32
    intensity_np = to_numpy(intensity)
    # clear edge fringes: phase contrast dominates the ~1 % absorption
    assert intensity_np.max() > 1.3 and intensity_np.min() < 0.7
    retrieved = retrieve_phase(intensity, delta_beta=DELTA / BETA, energy=ENERGY,
                               distance=DISTANCE, pixel_size=PIXEL, beta=BETA, output="thickness")
    t = to_numpy(retrieved)
    rel_l2 = np.linalg.norm((t - thickness)[inside]) / np.linalg.norm(thickness[inside])
    assert rel_l2 < 0.05
    assert abs(t.max() / thickness.max() - 1) < 0.05
    # without phase retrieval the absorption image alone is nowhere near
    mu = 4 * math.pi * BETA / wavelength(ENERGY)
    naive = minus_log(intensity_np) / mu
    assert np.linalg.norm((naive - thickness)[inside]) / np.linalg.norm(thickness[inside]) > 0.5
    # attenuation output is mu * T
    att = to_numpy(retrieve_phase(intensity, delta_beta=DELTA / BETA, energy=ENERGY,
                                  distance=DISTANCE, pixel_size=PIXEL))
    np.testing.assert_allclose(att, t * mu, rtol=1e-4, atol=1e-7)


def test_paganin_stack_equals_single_images(xp):
    thickness = np.stack([_sphere(96, centre=(c * 1e-6, 0), radius=20e-6)[0] for c in (-10, 0, 15)])
    intensity = fresnel_propagate(xp.asarray(thickness), delta=DELTA, beta=BETA, energy=ENERGY,
                                  distance=0.05, pixel_size=PIXEL)
    for i in range(3):
        single = fresnel_propagate(xp.asarray(thickness[i]), delta=DELTA, beta=BETA,
                                   energy=ENERGY, distance=0.05, pixel_size=PIXEL)
        np.testing.assert_allclose(to_numpy(intensity[i]), to_numpy(single), rtol=1e-5)
    stack = retrieve_phase(intensity, delta_beta=DELTA / BETA, energy=ENERGY, distance=0.05,
                           pixel_size=PIXEL)
    one = retrieve_phase(intensity[1], delta_beta=DELTA / BETA, energy=ENERGY, distance=0.05,
                         pixel_size=PIXEL)
    np.testing.assert_allclose(to_numpy(stack[1]), to_numpy(one), rtol=1e-5, atol=1e-8)


def test_flat_field_gives_zero_everywhere(xp):
    flat = xp.ones((3, 40, 70), dtype=xp.float32)
    out = to_numpy(retrieve_phase(flat, delta_beta=2000, energy=ENERGY, distance=DISTANCE,
                                  pixel_size=PIXEL, beta=BETA, output="thickness"))
    assert np.isfinite(out).all()
    assert np.abs(out).max() < 1e-9  # metres; the sphere above is 1e-4 thick


def test_no_edge_artefacts_for_object_touching_the_border(xp):
    # A slab (smooth 4-pixel edge) covering the left quarter of the frame and
    # running out of it, open beam at the right border. The detector frame is a
    # crop of a wider field: propagate on a field 8x as wide, crop, retrieve.
    n, wide = 128, 1024
    x = np.arange(wide) - (wide - n) // 2
    profile = 40e-6 * 0.5 * (1 - np.tanh((x - n / 4) / 4.0))
    kwargs = dict(energy=ENERGY, distance=DISTANCE, pixel_size=PIXEL)
    field = fresnel_propagate(xp.asarray(np.tile(profile, (4, 1))), delta=DELTA, beta=BETA,
                              **kwargs)
    frame = xp.tile(field[:1, (wide - n) // 2:(wide + n) // 2], (n, 1))
    t = to_numpy(retrieve_phase(frame, delta_beta=DELTA / BETA, beta=BETA, output="thickness",
                                **kwargs))
    assert np.abs(t[:, -8:]).max() < 0.01 * 40e-6           # right border: open beam
    np.testing.assert_allclose(t[:, :8], 40e-6, rtol=0.01)   # left border: the slab
    assert np.abs(t[:, n // 2:]).max() < 0.01 * 40e-6
    # the same filter without padding wraps the slab onto the right border
    wrapped = to_numpy(retrieve_phase(frame, delta_beta=DELTA / BETA, beta=BETA,
                                      output="thickness", pad=False, **kwargs))
    assert np.abs(wrapped[:, -8:]).max() > 0.1 * 40e-6


def test_propagation_conserves_flux_and_zero_distance_is_contact(xp):
    thickness, _ = _sphere(128, radius=30e-6)
    contact = to_numpy(fresnel_propagate(xp.asarray(thickness), delta=DELTA, beta=BETA,
                                         energy=ENERGY, distance=0.0, pixel_size=PIXEL))
    mu = 4 * math.pi * BETA / wavelength(ENERGY)
    np.testing.assert_allclose(contact, np.exp(-mu * thickness), rtol=1e-5)
    far = to_numpy(fresnel_propagate(xp.asarray(thickness), delta=DELTA, beta=BETA,
                                     energy=ENERGY, distance=0.2, pixel_size=PIXEL))
    np.testing.assert_allclose(far.mean(), contact.mean(), rtol=1e-4)


@pytest.mark.parametrize("name, value", [
    ("delta_beta", 0.0), ("delta_beta", -5.0), ("energy", 0.0), ("energy", -20.0),
    ("distance", 0.0), ("distance", -0.1), ("pixel_size", 0.0), ("pixel_size", -1e-6),
])
def test_retrieve_phase_rejects_nonpositive(name, value):
    kwargs = dict(delta_beta=1000.0, energy=20.0, distance=0.1, pixel_size=1e-6)
    kwargs[name] = value
    with pytest.raises(ParameterError) as info:
        retrieve_phase(np.ones((8, 8)), **kwargs)
    assert info.value.where == name and info.value.value == value and info.value.fix
    assert f"{name}={value!r}" in str(info.value)


def test_other_bad_parameters():
    kwargs = dict(delta_beta=1000.0, energy=20.0, distance=0.1, pixel_size=1e-6)
    with pytest.raises(ParameterError, match="beta"):
        retrieve_phase(np.ones((8, 8)), output="thickness", **kwargs)
    with pytest.raises(ParameterError, match="output"):
        retrieve_phase(np.ones((8, 8)), output="phase", **kwargs)
    with pytest.raises(ParameterError, match="pad"):
        retrieve_phase(np.ones((8, 8)), pad="yes", **kwargs)
    with pytest.raises(ParameterError, match="projections"):
        retrieve_phase(np.ones(8), **kwargs)
    with pytest.raises(ParameterError, match="delta"):
        fresnel_propagate(np.ones((8, 8)), delta=-1e-7, beta=1e-10, energy=20.0, distance=0.1,
                          pixel_size=1e-6)


@gpu_test
def test_cpu_and_gpu_agree():
    import cupy
    thickness = np.stack([_sphere(192, centre=(c * 1e-6, 0))[0] for c in (-20, 0, 20)])
    thickness = thickness.astype(np.float32)
    kwargs = dict(energy=ENERGY, distance=DISTANCE, pixel_size=PIXEL)
    cpu_i = fresnel_propagate(thickness, delta=DELTA, beta=BETA, **kwargs)
    gpu_i = fresnel_propagate(cupy.asarray(thickness), delta=DELTA, beta=BETA, **kwargs)
    np.testing.assert_allclose(gpu_i.get(), cpu_i, rtol=1e-4)
    cpu = retrieve_phase(cpu_i, delta_beta=DELTA / BETA, beta=BETA, output="thickness", **kwargs)
    gpu = retrieve_phase(cupy.asarray(cpu_i), delta_beta=DELTA / BETA, beta=BETA,
                         output="thickness", **kwargs)
    scale = np.abs(cpu).max()
    np.testing.assert_allclose(gpu.get(), cpu, rtol=1e-4, atol=1e-4 * scale)
