"""open_scan: find the layout of a file or folder and build a lazy scan Dataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tomolab.errors import ParameterError, ScanFormatError
from tomolab.io._build import build_scan

__all__ = ["open_scan", "describe", "LAYOUTS", "sniff"]

LAYOUTS = ("auto", "dxchange", "nxtomo", "nxtomo-diamond", "tiff")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def sniff(path: Path) -> str:
    """'hdf5', 'tiff' or 'folder' for an existing path; a ScanFormatError otherwise."""
    if path.is_dir():
        return "folder"
    size = path.stat().st_size
    if size == 0:
        raise ScanFormatError("the file is empty (0 bytes)", where=str(path),
                              fix="copy the file again from its source")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    import h5py

    if head == _HDF5_MAGIC or h5py.is_hdf5(path):
        return "hdf5"
    raise ScanFormatError(
        f"not an HDF5 or TIFF file (it starts with {head!r}); if it should be one, it is "
        f"truncated or corrupt", where=str(path),
        fix="pass a DXchange/NXtomo HDF5 file, a TIFF file or a folder of TIFFs; "
            "for other data use tomolab.io.from_arrays")


def open_scan(path, *, layout="auto", angles=None, chunks="auto", entry=None,
              flats=None, darks=None):
    """Open a tomography scan lazily: metadata now, pixels when computed.

    Parameters
    ----------
    path : str or os.PathLike
        An HDF5 file (DXchange, NXtomo from ESRF/Bliss, Diamond NXtomo), a TIFF
        file (pages = projections) or a folder of TIFFs (see Notes).
    layout : {"auto", "dxchange", "nxtomo", "nxtomo-diamond", "tiff"}
        "auto" detects it.
    angles : array-like, optional
        Rotation angles in **radians**, one per projection; replaces the
        file's angles (use it when the file has none or wrong ones).
    chunks : "auto", int, tuple or dict
        Dask chunks. "auto": slabs of whole projections of about 64 MiB,
        aligned with the file's chunking; an int: that many projections per
        chunk; a tuple/dict: passed to dask (dims ``angle, row, col``).
    entry : str, optional
        NXtomo entry to open (e.g. ``"entry0001"``) when a file holds several.
    flats, darks : array-like, optional
        Flat and dark fields ``(n, row, col)`` replacing (or supplying) the
        file's.

    Returns
    -------
    xarray.Dataset
        ``projections(angle, row, col)`` in the file's dtype, ``flats(flat,
        row, col)``, ``darks(dark, row, col)`` (absent, with a warning, when
        the file has none), all dask arrays. Coords ``angle`` [rad],
        ``row``, ``col``, ``flat``, ``dark`` and ``*_frame`` (index of each
        image in the acquisition). Attrs ``layout``, ``source_file``,
        ``projections_path`` (etc.), ``angles_source``, ``frame_order``,
        ``units`` and, where the file has them, ``pixel_size`` [m],
        ``energy`` [keV], ``distance`` [m].

    Raises
    ------
    tomolab.errors.ScanFormatError
        Missing, unreadable, truncated or unknown files; inconsistent shapes.
    tomolab.errors.ParameterError
        Wrong ``layout``, ``chunks`` or angles (count, non-finite values).

    Notes
    -----
    Layouts, as detected (``layout="auto"``):

    * ``dxchange``: ``/exchange/data``, ``data_white``, ``data_dark``,
      ``theta`` [degrees; evenly spaced over 180 degrees with a warning when
      absent]; ``/measurement/instrument/detection_system/objective/resolution``
      [um], ``detector/actual_pixel_size_x``, or ``detector/pixel_size(_x)``
      divided by ``objective/magnification``; ``monochromator/energy`` [keV; a
      bare value > 1000 is eV]; ``detector/distance`` or
      ``camera_motor_stack/setup/camera_distance`` [mm]. A ``units``
      attribute, where present, wins over these defaults.
    * ``nxtomo``: a top-level ``entryNNNN`` (or NXentry with definition
      NXtomo) with ``instrument/detector/data`` and ``image_key`` (0
      projection, 1 flat, 2 dark; ``image_key_control`` is preferred, and its
      alignment frames, -1, are left out); ``sample/rotation_angle``
      [degrees unless its ``units`` say otherwise];
      ``sample/x_pixel_size`` or ``instrument/detector/x_pixel_size`` [m],
      ``instrument/beam/incident_energy`` [keV], ``instrument/detector/distance``
      [m], each converted from its ``units`` attribute.
    * ``nxtomo-diamond``: the same under ``/entry1/tomo_entry``, data from
      ``data/data`` and angles from ``data/rotation_angle``.
    * ``tiff``: a TIFF file (its pages are the projections), a folder with
      sub-folders ``projections/``, ``flats/``, ``darks/`` (also ``proj/``,
      ``tomo/``, ``flat/``, ``white/``, ``refs/``, ``dark/``...), or a folder
      of files told apart by name: ``*dark*`` are darks; ``*flat*``,
      ``*white*`` and the words ``ref``/``reference``/``bright`` are flats;
      ``*proj*`` and the words ``tomo``/``sample``/``image``/``img`` are
      projections (if no name says projection, all other TIFFs are). Files are
      in natural order (``p2`` before ``p10``). Angles from ``angles.txt``
      beside them (degrees, one per line); ``metadata.json`` (from
      :func:`write_tiff_stack`) gives pixel size, energy, distance.

    Flats and darks keep their acquisition order, so flats taken before and
    after the projections can be interpolated (``flat_frame`` vs
    ``angle_frame``). Selection by ``image_key`` is lazy: each variable reads
    contiguous runs of stored frames.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from tomolab.io import write_dxchange
    >>> fn = os.path.join(tempfile.mkdtemp(), "scan.h5")
    >>> proj = np.random.default_rng(0).integers(0, 4000, (6, 4, 5), dtype=np.uint16)
    >>> write_dxchange(fn, proj, np.linspace(0, np.pi, 6, endpoint=False),
    ...                flats=np.full((2, 4, 5), 4000, np.uint16), darks=np.zeros((1, 4, 5), np.uint16))
    >>> scan = open_scan(fn)
    >>> scan.projections.dtype, dict(scan.sizes)
    (dtype('uint16'), {'angle': 6, 'row': 4, 'col': 5, 'flat': 2, 'dark': 1})
    >>> bool((scan.projections.values == proj).all())
    True
    """
    if layout not in LAYOUTS:
        raise ParameterError("unknown layout", where="layout", value=layout,
                             fix=f"pass one of {', '.join(repr(x) for x in LAYOUTS)}")
    try:
        path = Path(os.fspath(path)).expanduser()
    except TypeError:
        raise ParameterError("path is not a file name", where="path", value=path,
                             fix="pass a str or pathlib.Path") from None
    if not path.exists():
        raise ScanFormatError("no such file or folder", where=str(path),
                              fix=f"check the path (relative paths start at {os.getcwd()})")
    path = path.resolve()
    kind = sniff(path)
    if layout == "tiff" and kind == "hdf5":
        raise ScanFormatError("layout='tiff' but this is an HDF5 file", where=str(path),
                              value=layout, fix="pass layout='auto'")
    if layout not in ("auto", "tiff") and kind != "hdf5":
        raise ScanFormatError(f"layout={layout!r} needs an HDF5 file, this is a {kind}",
                              where=str(path), value=layout, fix="pass layout='auto'")
    if kind == "hdf5":
        from tomolab.io._hdf5 import read_hdf5
        spec = read_hdf5(str(path), layout=layout, entry=entry, read_angles=angles is None)
    else:
        from tomolab.io._tiff import read_tiff
        spec = read_tiff(path, read_angles=angles is None)

    paths = spec.setdefault("paths", {})
    frames = spec.setdefault("frames", {})
    names = spec.setdefault("names", {})
    for var, given, dim in (("flats", flats, "flat"), ("darks", darks, "dark")):
        if given is not None:
            spec[var] = given
            paths.pop(var, None)
            frames.pop(dim, None)
            names[var] = var
    if angles is not None:
        spec["angles"] = angles
        spec["angles_source"] = "given (radians)"
        spec["angles_unit"] = None
        paths.pop("angles", None)
        names["angles"] = "angles"
    return build_scan(source=str(path), source_file=str(path), chunks=chunks, **spec)


def _size_text(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""


def _disk_size(path: str) -> int | None:
    p = Path(path)
    try:
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return p.stat().st_size
    except OSError:
        return None


def describe(scan) -> str:
    """A one-paragraph summary of a scan (or of the file at a path).

    Examples
    --------
    >>> import numpy as np
    >>> from tomolab.io import from_arrays
    >>> scan = from_arrays(np.zeros((180, 8, 16), np.uint16), np.deg2rad(np.arange(180.0)),
    ...                    flats=np.ones((4, 8, 16), np.uint16), darks=np.zeros((8, 16), np.uint16),
    ...                    pixel_size=6.5e-6, energy=20)
    >>> print(describe(scan))  # doctest: +NORMALIZE_WHITESPACE
    arrays scan: projections 180 x 8 x 16 (angle x row x col) uint16, 46.1 kB; 4 flats;
    1 darks; angles 0.000 to 179.000 deg, step 1.0000 deg (given (radians)); pixel size
    6.5 um, energy 20 keV; dask chunks (180, 8, 16).
    """
    if not hasattr(scan, "data_vars"):
        scan = open_scan(scan)
    attrs = scan.attrs
    proj = scan["projections"]
    head = f"{attrs.get('layout', 'unknown')} scan"
    if attrs.get("source_file"):
        size = _disk_size(attrs["source_file"])
        head += f" {attrs['source_file']}" + (f" ({_size_text(size)} on disk)" if size else "")
    parts = [f"projections {' x '.join(str(s) for s in proj.shape)} (angle x row x col) "
             f"{proj.dtype}, {_size_text(proj.nbytes)}"]
    for var, dim in (("flats", "flat"), ("darks", "dark")):
        parts.append(f"{scan.sizes[dim]} {var}" if var in scan else f"no {var}")
    angles = np.rad2deg(scan["angle"].values)
    text = f"angles {angles.min():.3f} to {angles.max():.3f} deg"
    if angles.size > 1:
        steps = np.diff(angles)
        text += (f", step {steps.mean():.4f} deg" if np.allclose(steps, steps.mean(), atol=1e-6)
                 else ", uneven steps")
    text += f" ({attrs.get('angles_source', 'given')})"
    parts.append(text)
    meta = []
    if "pixel_size" in attrs:
        meta.append(f"pixel size {attrs['pixel_size'] * 1e6:.4g} um")
    if "energy" in attrs:
        meta.append(f"energy {attrs['energy']:.4g} keV")
    if "distance" in attrs:
        meta.append(f"distance {attrs['distance'] * 1e3:.4g} mm")
    parts.append(", ".join(meta) if meta else "no pixel size, energy or distance recorded")
    chunks = proj.data.chunksize if hasattr(proj.data, "chunksize") else proj.shape
    parts.append(f"dask chunks {chunks}")
    return head + ": " + "; ".join(parts) + "."
