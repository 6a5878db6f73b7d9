"""Reader for scans stored as TIFF files.

Accepted arrangements (checked in this order)
---------------------------------------------
1. A single TIFF file (often multi-page): its pages are the projections.
2. A folder with sub-folders: ``projections/`` (or ``projection/``, ``proj/``,
   ``tomo/``), ``flats/`` (or ``flat/``, ``white/``, ``whites/``, ``refs/``,
   ``ref/``), ``darks/`` (or ``dark/``). Each holds TIFF files, single- or
   multi-page.
3. A folder of TIFF files told apart by their names (case-insensitive):

   * darks: the name contains ``dark`` (or has the word ``background``);
   * flats: contains ``flat`` or ``white``, or has the word ``ref``, ``refs``,
     ``reference`` or ``bright`` (words are runs of letters: ``ref_001.tif``,
     ``sample_ref3.tif``, but not ``prefix.tif``);
   * projections: contains ``proj`` (``proj_0001.tif``, ``myprojection7.tif``)
     or has the word ``tomo``, ``sample``, ``image`` or ``img``. If no name
     says projection, every TIFF that is neither a dark nor a flat is one;
     otherwise the TIFFs that say nothing are ignored, with a warning.

Within a group, files are in natural order (``p2.tif`` before ``p10.tif``);
the pages of a multi-page file follow each other.

Angles come from ``angles=`` (radians), else ``angles.txt`` next to the data
(one angle in **degrees** per line, ``#`` comments allowed), else evenly spaced
over 180 degrees with a warning. ``metadata.json`` (written by
:func:`tomolab.io.write_tiff_stack`) gives ``pixel_size`` [m], ``energy``
[keV] and ``distance`` [m] when present.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from tomolab.errors import ScanFormatError
from tomolab.io._lazy import TiffFrames

__all__ = ["read_tiff", "natural_key", "classify", "TIFF_SUFFIXES"]

TIFF_SUFFIXES = (".tif", ".tiff")
# (substrings anywhere in the name, whole words of letters)
DARK_NAMES = (("dark",), frozenset({"background"}))
FLAT_NAMES = (("flat", "white"), frozenset({"ref", "refs", "reference", "bright"}))
PROJ_NAMES = (("proj",), frozenset({"tomo", "sample", "image", "img"}))
SUBFOLDERS = {
    "projections": ("projections", "projection", "proj", "tomo"),
    "flats": ("flats", "flat", "white", "whites", "refs", "ref"),
    "darks": ("darks", "dark"),
}
ANGLES_FILE = "angles.txt"
#: headers of at most this many files of a group (evenly spaced) are read when it is opened
HEADER_SAMPLE = 64
METADATA_FILE = "metadata.json"


def natural_key(name: str):
    """Sort key that orders embedded numbers by value.

    Examples
    --------
    >>> sorted(["p10.tif", "p2.tif", "p1.tif"], key=natural_key)
    ['p1.tif', 'p2.tif', 'p10.tif']
    """
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(name))]


def classify(name: str) -> str | None:
    """'darks', 'flats', 'projections' or None, from the words of a file name.

    Examples
    --------
    >>> [classify(n) for n in ("dark_0.tif", "tomo_flat_3.tif", "myproj0001.tif", "x_1.tif",
    ...                        "ref_2.tif", "prefix_2.tif")]
    ['darks', 'flats', 'projections', None, 'flats', None]
    """
    stem = Path(name).stem.lower()
    words = set(re.findall(r"[a-z]+", stem))
    for kind, (parts, whole) in (("darks", DARK_NAMES), ("flats", FLAT_NAMES),
                                 ("projections", PROJ_NAMES)):
        if any(p in stem for p in parts) or words & whole:
            return kind
    return None


def _is_tiff(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TIFF_SUFFIXES


def _tiffs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if _is_tiff(p)), key=lambda p: natural_key(p.name))


class _LogCapture:
    """Collect tifffile's logged errors (it logs, not raises, on a broken page chain)."""

    def __enter__(self):
        import logging

        self.messages = []
        self.handler = logging.Handler(logging.ERROR)
        self.handler.emit = lambda record: self.messages.append(record.getMessage())
        self.logger = logging.getLogger("tifffile")
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)


def _truncated(path: Path, why: str, size: int) -> ScanFormatError:
    return ScanFormatError(f"the TIFF is truncated or corrupt: {why}", where=str(path),
                           value=size, fix="copy the file again from its source, or remove "
                                           "it from the folder")


def _inspect(path: Path):
    """(number of pages, frame shape, dtype) of a TIFF, checking that its data are all there."""
    import tifffile

    size = path.stat().st_size
    try:
        with _LogCapture() as log, tifffile.TiffFile(path) as tif:
            pages = tif.pages
            n = len(pages)
            if n == 0:
                raise ValueError("no pages")
            first, last = pages[0], pages[n - 1]
            shape, dtype = tuple(first.shape), first.dtype
            ends = [int(o) + int(c) for o, c in zip(last.dataoffsets, last.databytecounts)]
            declared = n
            series = tif.series[0] if tif.series else None
            if series is not None and tuple(series.shape[-2:]) == shape:
                declared = int(np.prod(series.shape[:-2], dtype=np.int64))
    except Exception as exc:  # tifffile raises many kinds on broken files
        raise ScanFormatError(f"cannot read the TIFF ({type(exc).__name__}: {exc}); it is "
                              f"truncated or corrupt", where=str(path),
                              fix="copy the file again from its source, or remove it from "
                                  "the folder") from None
    if ends and max(ends) > size:
        raise _truncated(path, f"its image data end at byte {max(ends)} but the file has "
                               f"{size} bytes", size)
    if log.messages:
        raise _truncated(path, f"tifffile reports {log.messages[0]!r} after {n} pages", size)
    if declared > n:
        raise _truncated(path, f"its metadata declare {declared} images but only {n} pages "
                               f"are readable", size)
    if len(shape) != 2 or dtype is None:
        raise ScanFormatError(f"TIFF pages must be 2-D greyscale images, got shape {shape}",
                              where=str(path), value=shape,
                              fix="save projections as single-channel (greyscale) TIFFs")
    return n, shape, np.dtype(dtype)


def _group(files: list[Path], what: str):
    """Lazy frames of a group of TIFF files, checking each file's header cheaply.

    Files with the same byte size as the first are taken to have the same
    layout (uncompressed stacks); any other file has its header read and
    checked, so a truncated or odd file is caught without reading pixels.
    """
    n0, shape, dtype = _inspect(files[0])
    size0 = files[0].stat().st_size
    # same-sized files can still differ (512 x 1024 vs 1024 x 512, uint16 vs int16): the
    # headers of a sample are read here, and every page is checked again when it is read
    sample = set(np.linspace(0, len(files) - 1, min(len(files), HEADER_SAMPLE)).astype(int))
    names, pages = [], []
    for index, path in enumerate(files):
        n = n0
        if index in sample or path.stat().st_size != size0:
            n, other_shape, other_dtype = _inspect(path)
            if other_shape != shape or other_dtype != dtype:
                raise ScanFormatError(
                    f"{what} image is {other_shape} {other_dtype}, but {files[0].name} is "
                    f"{shape} {dtype}", where=str(path), value=other_shape,
                    fix=f"remove or replace the odd file so that all {what} match")
        names.extend([str(path)] * n)
        pages.extend(range(n))
    return TiffFrames(names, pages, shape=shape, dtype=dtype)


def _describe_files(files: list[Path], root: Path) -> str:
    rel = [os.path.relpath(p, root) for p in files]
    if len(rel) == 1:
        return rel[0]
    return f"{rel[0]} ... {rel[-1]} ({len(rel)} files)"


def _read_angles_file(path: Path):
    try:
        values = np.loadtxt(path, dtype=np.float64, comments="#", ndmin=1)
    except ValueError as exc:
        raise ScanFormatError(f"cannot read the angles ({exc})", where=str(path),
                              fix="write one angle in degrees per line, or pass angles= "
                                  "(radians)") from None
    return np.deg2rad(values.ravel())


def _read_metadata(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path}: cannot read ({exc}); ignoring it", UserWarning, stacklevel=4)
        return {}
    out = {}
    for key in ("pixel_size", "energy", "distance"):
        value = meta.get(key) if isinstance(meta, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def read_tiff(path, *, read_angles=True) -> dict:
    """Describe a TIFF scan (file or folder): keyword arguments for ``build_scan``."""
    path = Path(path)
    root = path if path.is_dir() else path.parent
    groups: dict[str, list[Path]] = {}
    if path.is_file():
        groups["projections"] = [path]
    else:
        subfolders = {var: next((path / n for n in names if (path / n).is_dir()), None)
                      for var, names in SUBFOLDERS.items()}
        if subfolders["projections"] is not None:
            for var, folder in subfolders.items():
                if folder is not None and (files := _tiffs(folder)):
                    groups[var] = files
            if "projections" not in groups:
                raise ScanFormatError("the projections folder holds no TIFF files",
                                      where=str(subfolders["projections"]),
                                      fix="put the projections there as .tif/.tiff files")
        else:
            files = _tiffs(path)
            if not files:
                entries = sorted(p.name for p in path.iterdir())
                shown = ", ".join(entries[:8]) + (" ..." if len(entries) > 8 else "")
                raise ScanFormatError(
                    f"folder has no TIFF files (contents: {shown or 'empty'})", where=str(path),
                    fix="point open_scan at a folder of .tif/.tiff projections (with flats and "
                        "darks beside them or in projections/ flats/ darks/), or at an HDF5 file")
            kinds = {p: classify(p.name) for p in files}
            for var in ("darks", "flats"):
                chosen = [p for p in files if kinds[p] == var]
                if chosen:
                    groups[var] = chosen
            projections = [p for p in files if kinds[p] == "projections"]
            others = [p for p in files if kinds[p] is None]
            if not projections:
                projections, others = others, []
            if others:
                warnings.warn(f"{path}: ignoring {len(others)} TIFF files whose names say neither "
                              f"projection, flat nor dark (e.g. {others[0].name})",
                              UserWarning, stacklevel=4)
            if not projections:
                raise ScanFormatError(
                    "folder has flats/darks but no projections", where=str(path),
                    fix="name projection files like proj_0001.tif (or tomo_*, *projection*), "
                        "or put them in a projections/ sub-folder")
            groups["projections"] = projections

    parts = {var: _group(files, var) for var, files in groups.items()}
    paths = {var: _describe_files(files, root) for var, files in groups.items()}
    angles, angles_source = None, None
    angles_file = root / ANGLES_FILE
    if read_angles and angles_file.is_file():
        angles = _read_angles_file(angles_file)
        angles_source = f"{angles_file} (degrees)"
        paths["angles"] = ANGLES_FILE
    metadata = {}
    if (root / METADATA_FILE).is_file():
        metadata = _read_metadata(root / METADATA_FILE)
    names = {var: str(groups[var][0].parent) for var in groups}
    names["angles"] = str(angles_file) if "angles" in paths else "angles"
    looked = {"flats": f"files named *flat*/*white*/*ref* or a flats/ folder in {root}",
              "darks": f"files named *dark* or a darks/ folder in {root}"}
    return dict(projections=parts["projections"], angles=angles,
                flats=parts.get("flats"), darks=parts.get("darks"), layout="tiff",
                paths=paths, metadata=metadata, angles_source=angles_source,
                looked_for=looked, names=names, angles_unit="deg" if angles is not None else None)
