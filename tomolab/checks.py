"""Parameter checks shared by the preprocessing functions.

Each check raises :class:`tomolab.errors.ParameterError` naming the
parameter, the offending value and the fix.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from tomolab.errors import ParameterError

__all__ = ["check_ndim", "check_positive", "check_nonnegative", "check_int", "check_bool",
           "check_choice", "float_dtype_for"]


def check_ndim(x, name: str, allowed: tuple[int, ...], dims: str):
    """Raise unless ``x`` has one of the ``allowed`` numbers of dimensions."""
    ndim = getattr(x, "ndim", None)
    if ndim not in allowed:
        shape = getattr(x, "shape", None)
        raise ParameterError(
            f"expected an array with {' or '.join(map(str, allowed))} dimensions ({dims}), "
            f"got shape {shape}", where=name, value=type(x).__name__,
            fix=f"pass a numpy or cupy array shaped {dims}")


def _is_real_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive(value, name: str, fix: str) -> float:
    """Return ``float(value)``; raise unless it is a finite number > 0."""
    if not _is_real_number(value) or not math.isfinite(value) or value <= 0:
        raise ParameterError("must be a finite number > 0", where=name, value=value, fix=fix)
    return float(value)


def check_nonnegative(value, name: str, fix: str) -> float:
    """Return ``float(value)``; raise unless it is a finite number >= 0."""
    if not _is_real_number(value) or not math.isfinite(value) or value < 0:
        raise ParameterError("must be a finite number >= 0", where=name, value=value, fix=fix)
    return float(value)


def check_int(value, name: str, minimum: int, fix: str) -> int:
    """Return ``int(value)``; raise unless it is an integer >= ``minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ParameterError(f"must be an integer >= {minimum}", where=name, value=value, fix=fix)
    return int(value)


def check_bool(value, name: str, fix: str) -> bool:
    """Return ``bool(value)``; raise unless it is ``True`` or ``False`` (numpy's too)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError("must be True or False", where=name, value=value, fix=fix)
    return bool(value)


def check_choice(value, choices, *, where: str, what: str | None = None):
    """Return ``value``; raise unless it names one of ``choices`` (a registry or a tuple).

    Examples
    --------
    >>> check_choice("ramp", ("ramp", "hann"), where="filter")
    'ramp'
    >>> check_choice("nope", ("ramp", "hann"), where="filter", what="reconstruction filter")
    Traceback (most recent call last):
    ...
    tomolab.errors.ParameterError: filter='nope': unknown reconstruction filter; fix: use one of 'hann', 'ramp'
    """
    if value not in choices:
        raise ParameterError(f"unknown {what or where}", where=where, value=value,
                             fix=f"use one of {', '.join(repr(c) for c in sorted(map(str, choices)))}")
    return value


def float_dtype_for(dtype) -> np.dtype:
    """float64 for float64 (and wider) input, float32 for everything else."""
    dtype = np.dtype(dtype)
    if dtype == np.float64 or dtype == np.complex128:
        return np.dtype(np.float64)
    return np.dtype(np.float32)
