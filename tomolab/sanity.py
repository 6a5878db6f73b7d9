"""Physical sanity checks of a scan, shared by the readers, the api, the CLI and the widgets.

What cannot be a synchrotron tomography scan is refused with a
:class:`tomolab.errors.ParameterError` or :class:`~tomolab.errors.ScanFormatError`
naming the file or parameter, the value and the fix; what is only suspicious
is reported with :func:`warnings.warn`. Every function here works on numbers,
dtypes and small numpy samples: the readers and the api read the samples
(a few rows of a few frames, never the whole scan) and call these.

The ranges accepted (:data:`RANGES`) are wider than any beamline's, so that
they only catch values in the wrong unit or of the wrong sign:

* pixel size 1 nm to 1 mm: nano-tomography reaches ~10 nm pixels (ptychography
  a few nm), the coarsest synchrotron detectors ~100 µm; a pixel "6.5 m" is
  µm read as metres.
* energy 0.1 to 500 keV: soft X-ray tomography in the water window (~0.3-0.5
  keV) to the hardest high-energy beamlines (~300 keV); 25000 "keV" is eV.
* distance 0 to 100 m: sample-detector distances reach a few tens of metres
  (ESRF BM18: 38 m); 650 "m" is millimetres.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from tomolab.errors import ParameterError, ScanFormatError

__all__ = ["RANGES", "quantity_problem", "check_quantity", "check_angles", "angle_order_problem",
           "check_counts_dtype", "check_counts_sample", "check_fields_sample", "check_centre_value",
           "check_whole_number"]

#: key -> (lowest, highest, unit, what it is); the bounds are inclusive
RANGES = {
    "pixel_size": (1e-9, 1e-3, "m", "effective pixel size"),
    "energy": (0.1, 500.0, "keV", "photon energy"),
    "distance": (0.0, 100.0, "m", "sample-detector distance"),
}

_SHOWN = {"pixel_size": ("1 nm", "1 mm"), "energy": ("0.1 keV", "500 keV"),
          "distance": ("0 m", "100 m")}


def _range_text(key: str) -> str:
    low, high = _SHOWN[key]
    return f"{low} to {high}"


def quantity_problem(key: str, value) -> str | None:
    """Why ``value`` cannot be the scan's ``key`` (in metres / keV), or None if it can.

    Examples
    --------
    >>> quantity_problem("pixel_size", 6.5e-6) is None
    True
    >>> quantity_problem("pixel_size", 6.5)
    'effective pixel size 6.5 m is outside 1 nm to 1 mm (synchrotron detectors; a wrong unit?)'
    >>> quantity_problem("energy", -20)
    'photon energy -20 keV is negative: it must be positive'
    """
    low, high, unit, what = RANGES[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"{what} {value!r} is not a number ({unit})"
    value = float(value)
    if not math.isfinite(value):
        return f"{what} {value} {unit} is not finite"
    if value < 0:
        return f"{what} {value:g} {unit} is negative: it must be positive"
    if not low <= value <= high:
        return f"{what} {value:g} {unit} is outside {_range_text(key)} (synchrotron " \
               f"{'detectors' if key == 'pixel_size' else 'beamlines'}; a wrong unit?)"
    return None


def check_quantity(key: str, value, *, where: str | None = None, fix: str | None = None) -> float:
    """``float(value)``, or a ParameterError unless it is a plausible ``key`` (see :data:`RANGES`).

    Examples
    --------
    >>> check_quantity("energy", 25)
    25.0
    >>> check_quantity("distance", 650.0)
    Traceback (most recent call last):
    ...
    tomolab.errors.ParameterError: distance=650.0: sample-detector distance 650 m is outside 0 m to 100 m (synchrotron beamlines; a wrong unit?); fix: pass distance in m, between 0 m and 100 m
    """
    problem = quantity_problem(key, value)
    if problem:
        low, high = _SHOWN[key]
        raise ParameterError(problem, where=where or key, value=value,
                             fix=fix or f"pass {key} in {RANGES[key][2]}, between {low} and {high}")
    return float(value)


def _indices(index: np.ndarray, limit: int = 4) -> str:
    shown = ", ".join(str(int(i)) for i in index[:limit])
    return shown + (f" ... ({index.size} in all)" if index.size > limit else "")


def check_angles(radians, *, where: str, stored_unit: str | None = None, minimum_for_unit: int = 16):
    """Refuse angles that cannot be a scan's: non-finite, all alike, or contradicting their unit.

    Parameters
    ----------
    radians : array-like
        The angles, already converted to radians.
    where : str
        The file and dataset (or parameter) they came from, for the message.
    stored_unit : {None, "rad", "deg"}
        The unit a file stored them in; None for angles the user gave (radians).
    minimum_for_unit : int
        The unit is judged only on scans of at least this many angles (a few
        test frames may span anything).

    Returns
    -------
    numpy.ndarray
        The angles, float64, 1-D.

    Notes
    -----
    Degrees taken for radians span more than four turns (a 180° scan becomes
    180 rad, 28.6 turns); radians taken for degrees span at most 2π·1.01
    degrees (a 180° scan becomes 3.1°). Scans of up to four turns, and scans
    that turn either way, are accepted.

    Examples
    --------
    >>> check_angles(np.linspace(0, np.pi, 4), where="angles").round(2)
    array([0.  , 1.05, 2.09, 3.14])
    >>> check_angles(np.arange(180.0), where="angles")
    Traceback (most recent call last):
    ...
    tomolab.errors.ParameterError: angles='0 to 179 rad': the angles span 179 rad (28.5 turns): degrees taken for radians; fix: pass angles in radians (numpy.deg2rad(angles))
    """
    values = np.asarray(radians, dtype=np.float64).ravel()
    n = values.size
    file_fix = ("set the dataset's units attribute to 'rad' or 'degree' (whichever is true), or "
                "pass angles= (radians) to open_scan")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ParameterError(
            f"angles are not finite ({bad.size} of {n}, at index {_indices(bad)})",
            where=where, value=float(values[bad[0]]),
            fix="repair the angles in the file or pass angles= (radians) to open_scan")
    if n < 2:
        return values
    span = float(values.max() - values.min())
    if span == 0.0:
        raise ParameterError(
            f"all {n} projections have the same angle: the rotation was not recorded",
            where=where, value=float(values[0]),
            fix="pass angles= (radians, one per projection) to open_scan")
    if n < minimum_for_unit:
        return values
    if span > 4 * 2 * np.pi * 1.01:
        shown = f"{np.degrees(values.min()):g} to {np.degrees(values.max()):g} deg" \
            if stored_unit == "deg" else f"{values.min():g} to {values.max():g} rad"
        raise ParameterError(
            f"the angles span {span:.3g} rad ({span / (2 * np.pi):.1f} turns): degrees taken for "
            f"radians", where=where, value=shown,
            fix=file_fix if stored_unit else "pass angles in radians (numpy.deg2rad(angles))")
    if np.degrees(span) <= 2 * np.pi * 1.01:
        raise ParameterError(
            f"the angles span only {np.degrees(span):.3g}° over {n} projections: radians taken "
            f"for degrees", where=where,
            value=f"{np.degrees(values.min()):.4g} to {np.degrees(values.max()):.4g} deg",
            fix=file_fix if stored_unit else "pass angles in radians once (not numpy.deg2rad of radians)")
    return values


def angle_order_problem(radians) -> tuple[str, str] | None:
    """``(what, fix)`` when angles repeat or go back and forth, else None.

    A scan turning the other way (angles decreasing throughout) is in order.

    Examples
    --------
    >>> angle_order_problem(np.deg2rad([0.0, 1.0, 2.0])) is None
    True
    >>> angle_order_problem(np.deg2rad([0.0, 1.0, 1.0, 2.0]))[0]
    '1 repeated angle (index 2 repeats 1°)'
    >>> angle_order_problem(np.deg2rad([0.0, 2.0, 1.0, 3.0]))[0]
    'angles are not in order: they go back at index 2 (2° then 1°)'
    """
    values = np.asarray(radians, dtype=np.float64).ravel()
    if values.size < 2:
        return None
    _, first = np.unique(values, return_index=True)
    repeats = np.setdiff1d(np.arange(values.size), first)
    if repeats.size:
        i = int(repeats[0])
        what = (f"{repeats.size} repeated angle{'s' if repeats.size > 1 else ''} (index "
                f"{_indices(repeats)} repeat{'s' if repeats.size == 1 else ''} "
                f"{np.degrees(values[i]):.4g}°)")
        return what, 'keep the first projection at each angle: scan = scan.drop_duplicates("angle")'

    steps = np.diff(values)
    direction = np.sign(np.median(steps))
    back = np.flatnonzero(np.sign(steps) != direction)
    if back.size:
        i = int(back[0]) + 1
        what = (f"angles are not in order: they go back at index {_indices(back + 1)} "
                f"({np.degrees(values[i - 1]):.4g}° then {np.degrees(values[i]):.4g}°)")
        return what, 'sort the projections by angle: scan = scan.sortby("angle")'

    return None


#: dtype kinds that cannot hold detector counts: bool, complex, structured, text, objects
_NOT_COUNTS = {"b": "boolean", "c": "complex", "V": "compound (structured)", "S": "text",
               "U": "text", "O": "object", "M": "date-time", "m": "time-delta"}


def check_counts_dtype(dtype, *, where: str, what: str = "projections"):
    """Refuse a dtype that cannot hold detector counts (bool, complex, compound, text).

    Examples
    --------
    >>> check_counts_dtype("uint16", where="scan.h5:/exchange/data")
    >>> check_counts_dtype("complex64", where="scan.h5:/exchange/data")
    Traceback (most recent call last):
    ...
    tomolab.errors.ScanFormatError: scan.h5:/exchange/data='complex64': projections are complex numbers, which cannot be detector counts; fix: store the detector's counts (unsigned integers or floats), or pass the real images to tomolab.io.from_arrays
    """
    dtype = np.dtype(dtype)
    kind = _NOT_COUNTS.get(dtype.kind)
    if dtype.fields is not None:
        kind = "compound (structured)"
    if kind:
        noun = "numbers" if kind in ("boolean", "complex") else "values"
        raise ScanFormatError(
            f"{what} are {kind} {noun}, which cannot be detector counts", where=where,
            value=str(dtype),
            fix="store the detector's counts (unsigned integers or floats), or pass the real "
                "images to tomolab.io.from_arrays")


def check_counts_sample(sample, *, where: str, what: str = "projections"):
    """Refuse signed integer counts below zero (unsigned data read as signed), from a sample.

    Examples
    --------
    >>> check_counts_sample(np.array([[0, 7]], np.int16), where="p")
    >>> check_counts_sample(np.array([[-3, 7]], np.int16), where="scan.h5:/exchange/data")
    Traceback (most recent call last):
    ...
    tomolab.errors.ParameterError: scan.h5:/exchange/data=-3: projections hold negative counts (int16; 1 of 2 sampled pixels): unsigned data stored as signed?; fix: read them as unsigned: scan["projections"] = scan["projections"].astype("uint16"), or pass normalize=False if they are already corrected
    """
    sample = np.asarray(sample)
    if sample.dtype.kind != "i" or sample.size == 0:
        return
    negative = np.count_nonzero(sample < 0)
    if negative:
        unsigned = np.dtype(sample.dtype.str.replace("i", "u"))
        raise ParameterError(
            f"{what} hold negative counts ({sample.dtype}; {negative} of {sample.size} sampled "
            f"pixels): unsigned data stored as signed?", where=where, value=int(sample.min()),
            fix=f'read them as unsigned: scan["{what}"] = scan["{what}"].astype("{unsigned}"), '
                f"or pass normalize=False if they are already corrected")


def check_fields_sample(flats, darks, *, where: str):
    """Refuse flats that are not brighter than the darks (swapped, or a closed shutter).

    ``flats`` and ``darks`` are samples (the same rows) of the two stacks.

    Examples
    --------
    >>> check_fields_sample(np.full((2, 3), 900.0), np.full((1, 3), 100.0), where="scan.h5")
    >>> check_fields_sample(np.full((2, 3), 100.0), np.full((1, 3), 900.0), where="scan.h5")
    Traceback (most recent call last):
    ...
    tomolab.errors.ParameterError: scan.h5: flats/darks='mean 100 vs 900': the flats are not brighter than the darks; fix: check which images are flats and which darks (swapped? the shutter closed?); pass flats=/darks= to open_scan, or normalize=False if the projections are already corrected
    """
    flats = np.asarray(flats, dtype=np.float64)
    darks = np.asarray(darks, dtype=np.float64)
    for name, field in (("flats", flats), ("darks", darks)):
        if not np.isfinite(field).any():
            raise ParameterError(f"the sampled {name} hold no finite value (all NaN or inf)",
                                 where=f"{where}: {name}", value=float(field.ravel()[0]),
                                 fix=f"repair or replace the {name} (pass {name}= to open_scan), "
                                     f"or normalize=False if the projections are already corrected")
    flat = float(np.mean(flats[np.isfinite(flats)]))
    dark = float(np.mean(darks[np.isfinite(darks)]))
    if not flat > dark:
        raise ParameterError(
            "the flats are not brighter than the darks", where=f"{where}: flats/darks",
            value=f"mean {flat:.4g} vs {dark:.4g}",
            fix="check which images are flats and which darks (swapped? the shutter closed?); "
                "pass flats=/darks= to open_scan, or normalize=False if the projections are "
                "already corrected")


def check_centre_value(value, *, where: str = "center"):
    """Refuse a centre that is a bool (``True`` would be column 1) or not a real number.

    Examples
    --------
    >>> check_centre_value(255.5)
    255.5
    >>> check_centre_value(True)
    Traceback (most recent call last):
    ...
    tomolab.errors.ParameterError: center=True: a centre is a detector column in pixels, not True or False; fix: pass a number, or "auto" to find it
    """
    if isinstance(value, (bool, np.bool_)):
        raise ParameterError("a centre is a detector column in pixels, not True or False",
                             where=where, value=value, fix='pass a number, or "auto" to find it')
    if isinstance(value, (str, bytes)):
        raise ParameterError("a centre is a detector column in pixels, not text", where=where,
                             value=value, fix='pass a number (float), or "auto" to find it')
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ParameterError("a centre is a detector column in pixels", where=where,
                             value=value, fix='pass a number, or "auto" to find it') from None


def check_whole_number(value, name: str, *, minimum: int = 1, fix: str | None = None) -> int:
    """``int(value)``: refuse floats (even 32.0), bools and numbers below ``minimum``.

    Examples
    --------
    >>> check_whole_number(32, "slab_rows")
    32
    >>> check_whole_number(0, "size", fix="omit it, or pass a positive number of pixels")
    Traceback (most recent call last):
    ...
    tomolab.errors.ParameterError: size=0: must be a whole number >= 1; fix: omit it, or pass a positive number of pixels
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) \
            or value < minimum:
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) \
                and float(value).is_integer() and value >= minimum:
            fix = fix or f"pass {name}={int(value)} (an int, not a float)"
        raise ParameterError(f"must be a whole number >= {minimum}", where=name, value=value,
                             fix=fix or f"pass an int >= {minimum}")
    return int(value)
