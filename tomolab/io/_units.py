"""Units of the metadata found in scan files, converted to metres, keV and radians."""

from __future__ import annotations

import re
import warnings

import numpy as np

__all__ = ["to_metres", "to_kev", "to_radians", "read_quantity", "units_of"]

_LENGTH = {
    "m": 1.0, "meter": 1.0, "metre": 1.0, "meters": 1.0, "metres": 1.0,
    "cm": 1e-2, "mm": 1e-3, "millimeter": 1e-3, "millimetre": 1e-3, "millimeters": 1e-3,
    "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6, "microns": 1e-6,
    "micrometer": 1e-6, "micrometre": 1e-6, "micrometers": 1e-6, "nm": 1e-9,
    "nanometer": 1e-9, "nanometre": 1e-9,
}
_ENERGY = {"kev": 1.0, "ev": 1e-3, "mev": 1e3}
_ANGLE = {
    "rad": 1.0, "radian": 1.0, "radians": 1.0,
    "deg": np.pi / 180, "degree": np.pi / 180, "degrees": np.pi / 180, "°": np.pi / 180,
}
_TABLES = {"length": _LENGTH, "energy": _ENERGY, "angle": _ANGLE}


def _key(unit: str) -> str:
    return unit.strip().replace(" ", "").lower()


def factor(unit: str, kind: str) -> float | None:
    """Factor from ``unit`` to metres / keV / radians, or None if unknown.

    Examples
    --------
    >>> factor("um", "length"), factor("eV", "energy"), factor("degree", "angle") * 180
    (1e-06, 0.001, 3.141592653589793)
    """
    return _TABLES[kind].get(_key(unit))


def _known_factor(unit: str, kind: str) -> float:
    f = factor(unit, kind)
    if f is None:
        raise ValueError(f"unknown {kind} unit {unit!r}")
    return f


def to_metres(value, unit: str) -> float:
    """Convert a length to metres.

    Examples
    --------
    >>> to_metres(650, "mm")
    0.65
    """
    return _known_factor(unit, "length") * float(value)


def to_kev(value, unit: str) -> float:
    """Convert an energy to keV.

    Examples
    --------
    >>> to_kev(25000, "eV")
    25.0
    """
    return _known_factor(unit, "energy") * float(value)


def to_radians(values, unit: str) -> np.ndarray:
    """Convert angles to radians (float64).

    Examples
    --------
    >>> to_radians([0, 90], "deg")
    array([0.        , 1.57079633])
    """
    if _key(unit) in ("deg", "degree", "degrees", "°"):
        return np.deg2rad(np.asarray(values, dtype=np.float64))
    return _known_factor(unit, "angle") * np.asarray(values, dtype=np.float64)


def _decode(value) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return _decode(value.ravel()[0]) if value.size else ""
    return str(value)


def units_of(node) -> str | None:
    """The ``units`` (or ``unit``) attribute of an HDF5 object, decoded, or None."""
    for name in ("units", "unit"):
        if name in node.attrs:
            return _decode(node.attrs[name])
    return None


_NUMBER_UNIT = re.compile(r"^\s*([-+0-9.eE]+)\s*([^\s0-9].*)?$")


def _scalar(dset):
    """First finite number of a dataset, and a unit written inside a string value."""
    raw = dset[()]
    if isinstance(raw, (bytes, str, np.bytes_)) or (
            isinstance(raw, np.ndarray) and raw.dtype.kind in "SUO"):
        match = _NUMBER_UNIT.match(_decode(raw))
        if not match:
            return None, None
        return float(match.group(1)), match.group(2)
    values = np.asarray(raw, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    return (float(values[0]), None) if values.size else (None, None)


def read_quantity(h5file, candidates, kind: str, source: str):
    """Read the first present quantity among ``candidates`` and convert it.

    Parameters
    ----------
    h5file : h5py.File or h5py.Group
    candidates : sequence of (path, default_unit)
        Tried in order; ``default_unit`` applies when the dataset has no
        ``units`` attribute.
    kind : "length" or "energy"
    source : str
        File name, for the warning about an unknown unit.

    Returns
    -------
    (value, path) : (float, str) or (None, None)
        Value in metres (length) or keV (energy).
    """
    for path, default_unit in candidates:
        node = h5file.get(path)
        if node is None or not hasattr(node, "shape"):
            continue
        try:
            value, inline_unit = _scalar(node)
        except (TypeError, ValueError, OSError):
            value = None
        if value is None:  # text that is no number ("six microns"): say so, never drop it silently
            try:
                raw = node[()]
            except (TypeError, ValueError, OSError):
                raw = "?"
            raw = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            warnings.warn(f"{source}:{node.name}={raw!r}: not a number, so the {kind} is left "
                          f"out of the scan's attrs; fix: store a number there, or set it in "
                          f"scan.attrs (or pass it to from_arrays)", UserWarning, stacklevel=3)
            continue
        unit = units_of(node) or inline_unit or default_unit
        if kind == "energy" and units_of(node) is None and inline_unit is None and value > 1000:
            unit = "eV"  # X-ray tomography runs at 5-300 keV: a bare 25000 is eV
        f = factor(unit, kind)
        if f is None:
            warnings.warn(f"{source}:{node.name}: unknown {kind} unit {unit!r}; ignoring this "
                          f"value. Pass the value to from_arrays or set it in scan.attrs.",
                          UserWarning, stacklevel=3)
            continue
        return value * f, node.name
    return None, None
