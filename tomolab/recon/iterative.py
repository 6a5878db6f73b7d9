"""Iterative reconstruction: SIRT, CGLS and total variation, on numpy or cupy arrays.

For scans that FBP serves badly: few angles, a missing wedge (less than
180°), low dose. Each method solves ``A x ≈ b`` for the slices ``x`` with the
matched projector pair of :mod:`tomolab.recon.project` (``A`` and its exact
adjoint ``Aᵀ``), every slice of a slab at once and each on its own (no step
size or stopping rule couples two slices, so a volume does not depend on how
it is cut into slabs):

- :func:`sirt`: ``x ← x + C Aᵀ R (b - A x)`` with ``R`` and ``C`` the inverse
  row and column sums of ``A``; smooth and robust, slow to sharpen.
- :func:`cgls`: conjugate gradients on the normal equations; the fastest
  to a least-squares fit, and noise with it after many iterations.
- :func:`tv`: minimises ``‖A x - b‖² / (2 n_angles) + λ TV(x)`` (isotropic
  total variation) by the primal-dual method of Chambolle and Pock with
  diagonal preconditioning (Pock & Chambolle 2011), so no step size needs
  tuning; with ``x ≥ 0``. Piecewise-constant slices from few angles.

Every method starts from FBP (``initial="fbp"``, scaled to the angular range
present) or from zero, and calls ``callback(iteration, iterations)`` after
each iteration (after the GPU has finished it): the engine reports progress
there and raises :class:`tomolab.errors.Cancelled` to stop, so a cancel takes
effect within one iteration.
"""

from __future__ import annotations

import numpy as np

from tomolab.arrays import array_module
from tomolab.errors import ParameterError
from tomolab.recon.project import back_project_adjoint, forward_project

__all__ = ["DEFAULT_ITERATIONS", "ITERATIVE", "cgls", "iterative_bytes", "sirt", "tv"]

#: iterations each method runs when not told
DEFAULT_ITERATIONS = {"sirt": 100, "cgls": 20, "tv": 200}

#: rays (or voxels) whose total weight is below this, in pixels, carry no information
_EMPTY = 1e-3


def iterative_bytes(n_slices: int, *, n_angles: int, n_cols: int, size: int) -> int:
    """Working memory of :func:`tv` (the most of the three) on ``n_slices`` sinograms, input included.

    Six float32 sinograms (data, two weights, dual, projection, a temporary)
    and twelve slices (estimate, extrapolation, weights, adjoint, divergence,
    four gradient components and three temporaries), counted as if all were
    alive at once; at least the starting FBP's (:func:`tomolab.recon.fbp_bytes`).

    Examples
    --------
    >>> iterative_bytes(1, n_angles=1000, n_cols=1000, size=1000) / 1e6
    72.0
    """
    from tomolab.recon.fbp import fbp_bytes

    loop = 4 * (6 * n_angles * n_cols + 12 * size * size)
    start = fbp_bytes(1, n_angles=n_angles, n_cols=n_cols, size=size)
    return int(n_slices * max(loop, start))


def _whole(value, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ParameterError("must be a whole number of at least 1", where=name, value=value,
                             fix=f"pass e.g. {name}={default}")
    return int(value)


def _prepare(sinograms, angles, center, size, initial, filter, pad_mode, nonnegative):
    """Checked inputs: ``(xp, b, angles, centers, size, x0)``."""
    from tomolab.recon.fbp import _check_stack, _slice_centers, fbp

    xp = array_module(sinograms)
    b = xp.ascontiguousarray(xp.asarray(sinograms, dtype=xp.float32))
    angles, size = _check_stack(b, angles, size, pad_mode)
    centers = _slice_centers(center, b.shape[0])
    if initial not in ("fbp", "zero"):
        raise ParameterError("unknown starting point", where="initial", value=initial,
                             fix='use "fbp" or "zero"')
    if initial == "zero":
        x0 = xp.zeros((b.shape[0], size, size), xp.float32)
    else:
        x0 = fbp(b, angles, center=centers, filter=filter, size=size, pad_mode=pad_mode)
        # FBP weighs each angle by π / n_angles: right for 180° or 360°, too much for less
        x0 *= np.float32(min(1.0, _coverage(angles) / np.pi))
    if nonnegative:
        xp.maximum(x0, 0, out=x0)
    return xp, b, angles, centers, size, x0


def _coverage(angles: np.ndarray) -> float:
    """The angular range the projections stand for: their count times the typical step."""
    if angles.size < 2:
        return np.pi
    step = float(np.median(np.diff(np.sort(angles))))
    return angles.size * step


def _inverse(xp, sums):
    """``1 / sums`` where the sums carry weight, else 0."""
    return xp.where(sums > _EMPTY, 1 / xp.maximum(sums, _EMPTY), 0).astype(xp.float32)


def _done(xp, callback, k: int, iterations: int) -> None:
    if callback is None:
        return
    if xp is not np:  # the GPU queues work ahead: report what has really been done
        xp.cuda.get_current_stream().synchronize()
    callback(k, iterations)


def _operators(angles, centers, size, n_cols):
    def A(x, out=None):
        return forward_project(x, angles, center=centers, n_cols=n_cols, out=out)

    def At(y, out=None):
        return back_project_adjoint(y, angles, center=centers, size=size, out=out)
    return A, At


def _per_slice(xp, a, b=None):
    """``Σ a·b`` (or ``Σ a²``) over each slice, in float64, shaped to broadcast over slices."""
    b = a if b is None else b
    return xp.sum((a * b).astype(xp.float64), axis=(1, 2), keepdims=True)


def sirt(sinograms, angles, *, center, size: int | None = None, iterations: int | None = None,
         nonnegative: bool = True, initial: str = "fbp", filter: str = "ramp",
         pad_mode: str = "edge", callback=None):
    """Reconstruct slices by SIRT: ``x ← x + C Aᵀ R (b - A x)``.

    Parameters
    ----------
    sinograms : ndarray (z, angle, col), numpy or cupy
        Line integrals.
    angles : array_like (angle,)
        Radians; any range and spacing.
    center : float or array_like (z,)
        Detector column of the rotation axis, in pixels; or one per slice.
    size : int, optional
        Width of the square slices (default: the detector width).
    iterations : int, optional
        Default 100.
    nonnegative : bool
        Clip negative values after each iteration.
    initial : {"fbp", "zero"}
        Start from FBP (fewer iterations to the same fit) or from zero.
    filter, pad_mode : str
        Of the starting FBP (see :func:`tomolab.recon.fbp`).
    callback : callable(iteration, iterations), optional
        Called after each iteration; raise from it to stop.

    Returns
    -------
    ndarray (z, size, size) float32, on the device of ``sinograms``
        Attenuation per pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from tomolab.data.phantom import Cylinder, project_slice
    >>> angles = np.linspace(0, np.pi, 60, endpoint=False)
    >>> disk = [Cylinder(0, 0, -1, 1, 12, 12, 0, 0.02)]
    >>> sino = project_slice(disk, angles, np.arange(48), [0.0], center=23.5)
    >>> img = sirt(sino.transpose(1, 0, 2), angles, center=23.5, iterations=20, initial="zero")
    >>> round(float(img[0, 20:28, 20:28].mean()), 3)
    0.02
    """
    iterations = _whole(iterations, "iterations", DEFAULT_ITERATIONS["sirt"])
    xp, b, angles, centers, size, x = _prepare(sinograms, angles, center, size, initial, filter,
                                               pad_mode, nonnegative)
    n_cols = b.shape[2]
    A, At = _operators(angles, centers, size, n_cols)
    row_weights = _inverse(xp, A(xp.ones_like(x)))
    column_weights = _inverse(xp, At(xp.ones_like(b)))
    projected = xp.empty_like(b)
    update = xp.empty_like(x)
    for k in range(1, iterations + 1):
        A(x, out=projected)
        xp.subtract(b, projected, out=projected)
        projected *= row_weights
        At(projected, out=update)
        update *= column_weights
        x += update
        if nonnegative:
            xp.maximum(x, 0, out=x)
        _done(xp, callback, k, iterations)
    return x


def cgls(sinograms, angles, *, center, size: int | None = None, iterations: int | None = None,
         nonnegative: bool = False, initial: str = "fbp", filter: str = "ramp",
         pad_mode: str = "edge", callback=None):
    """Reconstruct slices by CGLS: conjugate gradients on ``Aᵀ A x = Aᵀ b``, per slice.

    The residual ``‖b - A x‖`` decreases at every iteration. The parameters
    not listed here are those of :func:`sirt`.

    Parameters
    ----------
    iterations : int, optional
        Default 20. Many more fit the noise.
    nonnegative : bool
        Clip negative values of the result (conjugate gradients take no
        constraint, so only at the end).

    Returns
    -------
    ndarray (z, size, size) float32, on the device of ``sinograms``
        Attenuation per pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from tomolab.data.phantom import Cylinder, project_slice
    >>> angles = np.linspace(0, np.pi, 60, endpoint=False)
    >>> disk = [Cylinder(0, 0, -1, 1, 12, 12, 0, 0.02)]
    >>> sino = project_slice(disk, angles, np.arange(48), [0.0], center=23.5)
    >>> img = cgls(sino.transpose(1, 0, 2), angles, center=23.5, iterations=10)
    >>> round(float(img[0, 20:28, 20:28].mean()), 3)
    0.02
    """
    iterations = _whole(iterations, "iterations", DEFAULT_ITERATIONS["cgls"])
    xp, b, angles, centers, size, x = _prepare(sinograms, angles, center, size, initial, filter,
                                               pad_mode, False)
    n_cols = b.shape[2]
    A, At = _operators(angles, centers, size, n_cols)
    residual = b - A(x)
    gradient = At(residual)
    direction = gradient.copy()
    gamma = _per_slice(xp, gradient)
    projected = xp.empty_like(b)
    for k in range(1, iterations + 1):
        A(direction, out=projected)
        curvature = _per_slice(xp, projected)
        alpha = xp.where(curvature > 0, gamma / xp.where(curvature > 0, curvature, 1), 0)
        alpha = alpha.astype(xp.float32)
        x += alpha * direction
        residual -= alpha * projected
        At(residual, out=gradient)
        gamma_next = _per_slice(xp, gradient)
        beta = xp.where(gamma > 0, gamma_next / xp.where(gamma > 0, gamma, 1), 0).astype(xp.float32)
        direction *= beta
        direction += gradient
        gamma = gamma_next
        _done(xp, callback, k, iterations)
    if nonnegative:
        xp.maximum(x, 0, out=x)
    return x


def _gradient(xp, x, out):
    """Forward differences along x and y (zero at the far edge): ``out[0]``, ``out[1]``."""
    out[0][..., :-1] = x[..., 1:] - x[..., :-1]
    out[0][..., -1] = 0
    out[1][:, :-1] = x[:, 1:] - x[:, :-1]
    out[1][:, -1] = 0
    return out


def _divergence(xp, p, out):
    """Minus the adjoint of :func:`_gradient`: ``⟨∇x, p⟩ = -⟨x, div p⟩``."""
    px, py = p
    out[...] = px
    out[..., 1:] -= px[..., :-1]
    out[..., -1] = -px[..., -2] if out.shape[-1] > 1 else 0
    out[:, 0] += py[:, 0]
    out[:, 1:-1] += py[:, 1:-1] - py[:, :-2]
    if out.shape[1] > 1:
        out[:, -1] -= py[:, -2]
    return out


def tv(sinograms, angles, *, center, size: int | None = None, iterations: int | None = None,
       regularization: float | None = None, nonnegative: bool = True, initial: str = "fbp",
       filter: str = "ramp", pad_mode: str = "edge", callback=None):
    """Reconstruct slices with total-variation regularisation (Chambolle–Pock, preconditioned).

    Minimises, per slice, ``‖A x - b‖² / (2 n_angles) + λ Σ |∇x|`` (with
    ``x ≥ 0`` when ``nonnegative``), ``|∇x|`` the length of the gradient at
    each pixel (forward differences). The parameters not listed here are
    those of :func:`sirt`.

    Parameters
    ----------
    iterations : int, optional
        Default 200.
    regularization : float, optional
        ``λ``, in the units of the slices (attenuation per pixel): edges
        whose contrast is well above it stay, texture and streaks weaker
        than it go. Default: a twentieth of the largest magnitude of each
        slice's FBP (computed for this alone with ``initial="zero"``), so
        each slice gets its own λ and a volume does not depend on its slabs.

    Returns
    -------
    ndarray (z, size, size) float32, on the device of ``sinograms``
        Attenuation per pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from tomolab.data.phantom import Cylinder, project_slice
    >>> angles = np.linspace(0, np.pi, 20, endpoint=False)
    >>> disk = [Cylinder(0, 0, -1, 1, 12, 12, 0, 0.02)]
    >>> sino = project_slice(disk, angles, np.arange(48), [0.0], center=23.5)
    >>> img = tv(sino.transpose(1, 0, 2), angles, center=23.5, iterations=100,
    ...          regularization=1e-3)
    >>> round(float(img[0, 20:28, 20:28].mean()), 3), round(float(img[0, :4, :4].max()), 3)
    (0.02, 0.0)
    """
    iterations = _whole(iterations, "iterations", DEFAULT_ITERATIONS["tv"])
    xp, b, angles, centers, size, x = _prepare(sinograms, angles, center, size, initial, filter,
                                               pad_mode, nonnegative)
    if regularization is None:
        reference = x if initial == "fbp" else _prepare(b, angles, centers, size, "fbp", filter,
                                                        pad_mode, False)[-1]
        lam = xp.abs(reference).max(axis=(1, 2), keepdims=True) / np.float32(20)
    elif (isinstance(regularization, bool) or not isinstance(regularization, (int, float, np.floating))
          or not np.isfinite(regularization) or regularization < 0):
        raise ParameterError("must be a number of at least 0", where="regularization",
                             value=regularization, fix="pass e.g. regularization=1e-3 (attenuation "
                                                       "per pixel), or None for the default")
    else:
        lam = xp.full((1, 1, 1), regularization, xp.float32)
    _, n_angles, n_cols = b.shape
    A, At = _operators(angles, centers, size, n_cols)
    # diagonal preconditioning: σ = 1 / row sums of K = [A; ∇], τ = 1 / column sums
    sigma = _inverse(xp, A(xp.ones_like(x)))
    tau = At(xp.ones_like(b))
    tau += 4  # each pixel appears in four forward differences, with weight ±1
    tau = 1 / tau
    sigma_grad = np.float32(0.5)
    denominator = 1 + sigma * np.float32(n_angles)
    dual = xp.zeros_like(b)
    dual_grad = xp.zeros((2,) + x.shape, xp.float32)
    gradient = xp.empty_like(dual_grad)
    divergence = xp.empty_like(x)
    adjoint = xp.empty_like(x)
    projected = xp.empty_like(b)
    extrapolated = x.copy()
    for k in range(1, iterations + 1):
        A(extrapolated, out=projected)
        projected -= b
        projected *= sigma
        dual += projected
        dual /= denominator
        _gradient(xp, extrapolated, gradient)
        gradient *= sigma_grad
        dual_grad += gradient
        norm = xp.sqrt(dual_grad[0] ** 2 + dual_grad[1] ** 2)
        norm /= xp.maximum(lam, 1e-30)  # λ = 0: the dual is held at 0
        xp.maximum(norm, 1, out=norm)
        dual_grad /= norm
        dual_grad *= lam > 0
        At(dual, out=adjoint)
        _divergence(xp, dual_grad, divergence)
        adjoint -= divergence
        adjoint *= tau
        # x̄ = 2 x_new - x, computed in place: extrapolated ← x_new, x ← x_new, then x̄
        xp.subtract(x, adjoint, out=extrapolated)
        if nonnegative:
            xp.maximum(extrapolated, 0, out=extrapolated)
        x, extrapolated = extrapolated, x
        xp.subtract(2 * x, extrapolated, out=extrapolated)
        _done(xp, callback, k, iterations)
    return x


def _projector_passes(default: int):
    def passes(iterations=None, **_):
        """Projections and backprojections of a slab, as multiples of one FBP backprojection."""
        return 2 * (iterations or default) + 3
    return passes


#: the iterative algorithms of :data:`tomolab.recon.ALGORITHMS`
ITERATIVE = {"sirt": sirt, "cgls": cgls, "tv": tv}

for _name, _function in ITERATIVE.items():
    _function.iterative = True  # the engine passes a per-iteration callback
    _function.passes = _projector_passes(DEFAULT_ITERATIONS[_name])  # sizes the first CPU slab
del _name, _function
