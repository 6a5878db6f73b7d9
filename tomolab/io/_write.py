"""Writers: scans in DXchange, NXtomo (ESRF or Diamond) and TIFF; volumes in zarr, TIFF, HDF5.

Every writer builds its output under a temporary name next to the target
(``.NAME.partial-*``) and renames it into place only when everything is
written, so an interrupted write never leaves a half-written file at the
output path. While it writes, it holds the output's lock (``.NAME.lock``): a
second run writing the same output refuses at once. Each output carries the
``tomolab_output`` marker, and ``overwrite=True`` replaces only such an output
(see :mod:`tomolab.io._guard`). Space is checked before writing; a full disk,
a read-only folder or a missing permission ends in one
:class:`~tomolab.errors.OutputError` line.

Big scans in bounded memory
---------------------------
``projections`` (and ``flats``/``darks``) may be

* an array: numpy, dask (written block by block), h5py or zarr -- anything
  with ``shape``, ``dtype`` and slicing along the first axis; it is written in
  slabs of about 64 MiB; or
* an iterable (e.g. a generator) of blocks in angle order, each either a
  ``(k, row, col)`` array (a 2-D array counts as one frame) or a tuple
  ``(start, stop, block)``; only one block is held at a time. The total
  must equal ``len(angles)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from tomolab.arrays import to_numpy
from tomolab.checks import check_bool
from tomolab.errors import ParameterError, ScanFormatError
from tomolab.io._build import _check_positive, auto_angle_chunk, to_dask
from tomolab.io._guard import (
    MARKER,
    OutputLock,
    SpaceReservation,
    check_free_space,
    make_parent,
    refuse_existing,
    remove_stale_temporaries,
    storage_errors,
)

__all__ = ["write_dxchange", "write_nxtomo", "write_tiff_stack", "save_volume", "open_volume",
           "iter_blocks"]


# ----------------------------------------------------------------------------- helpers

def check_replaceable(path, *, protect=()) -> Path:
    """Refuse an output path whose replacement could destroy data tomolab did not write.

    Never the current folder or a folder above it, the home folder or a file
    system root; never a path in ``protect`` (the input scan) or a folder that
    holds one. Checked before anything is written, whether or not the path
    exists (``overwrite`` decides only whether an earlier output may go).

    Examples
    --------
    >>> check_replaceable("volume.zarr").name
    'volume.zarr'
    >>> check_replaceable(".")
    Traceback (most recent call last):
    ...
    tomolab.errors.ParameterError: .: the output would replace the current folder or a folder above it; fix: name a new file or folder for the output, e.g. ./volume.zarr
    """
    path = Path(os.fspath(path)).expanduser()
    try:
        path.exists()
    except OSError as exc:  # e.g. a name too long for the file system
        raise ParameterError(f"not a usable path ({exc.strerror})", where=str(path)[:80],
                             fix="name the output with a shorter name, in a folder") from None
    target = path.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents or target == Path.home().resolve() \
            or target == Path(target.anchor):
        raise ParameterError("the output would replace the current folder or a folder above it",
                             where=str(path),
                             fix="name a new file or folder for the output, e.g. ./volume.zarr")
    for item in protect:
        if not item:
            continue
        source = Path(os.fspath(item)).expanduser().resolve()
        if target == source or target in source.parents:
            what = "the input scan" if target == source else "a folder that holds the input scan"
            raise ParameterError(f"the output would replace {what} ({source})", where=str(path),
                                 fix="write the output to a new path beside the scan, e.g. "
                                     f"{source.with_suffix('')}_volume.zarr")
    return path


@contextlib.contextmanager
def _atomic(path, *, overwrite: bool, kind: str, protect=(), needed: int = 0):
    """Yield a temporary path next to ``path``; move it to ``path`` on success.

    Holds the output's lock throughout; refuses an existing output unless
    ``overwrite`` and it is tomolab's own, and ``needed`` bytes that would not
    fit; turns a full disk or a read-only folder into an OutputError.
    """
    check_bool(overwrite, "overwrite", "pass overwrite=True or overwrite=False")
    path = check_replaceable(path, protect=protect)
    refuse_existing(path, overwrite, kind=kind)
    make_parent(path)
    with OutputLock(path):
        refuse_existing(path, overwrite, kind=kind)  # checked again under the lock
        check_free_space(path, needed)
        remove_stale_temporaries(path)
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = path.parent / f".{path.name}.partial-{tag}"
        try:
            with storage_errors(path):
                yield tmp
            refuse_existing(path, overwrite, kind=kind)  # something may have appeared there
            with storage_errors(path):
                _move_into_place(tmp, path)
        except BaseException:
            _remove(tmp)
            raise


def _nbytes(*arrays) -> int:
    """Bytes of the arrays among ``arrays`` (iterables of blocks count as 0: unknown)."""
    total = 0
    for data in arrays:
        if hasattr(data, "shape") and hasattr(data, "dtype"):
            total += int(np.prod(data.shape, dtype=np.int64)) * np.dtype(data.dtype).itemsize
    return total


def _move_into_place(partial: Path, path: Path) -> None:
    """Rename ``partial`` to ``path``; an existing ``path`` is replaced as late as possible."""
    if path.exists() and (path.is_dir() or partial.is_dir()):
        trash = path.with_name(f".{path.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(path, trash)
        os.replace(partial, path)
        _remove(trash)
    else:
        os.replace(partial, path)  # a file over a file: atomic


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def iter_blocks(data, what="projections"):
    """Yield ``(k, row, col)`` numpy blocks, in order, from an array or an iterable of blocks.

    Examples
    --------
    >>> [b.shape for b in iter_blocks(np.zeros((3, 2, 2)))]
    [(3, 2, 2)]
    >>> [b.shape for b in iter_blocks(((i, i + 1, np.ones((1, 2, 2))) for i in range(2)))]
    [(1, 2, 2), (1, 2, 2)]
    """
    if data is None:
        return
    if hasattr(data, "shape") and hasattr(data, "dtype"):
        if len(data.shape) == 2:
            data = data[None]
        if len(data.shape) != 3:
            raise ParameterError(f"{what} must be 3-D (n, row, col)", where=what,
                                 value=tuple(data.shape), fix="pass an array (n, row, col)")
        if hasattr(data, "numblocks") and hasattr(data, "blocks"):  # dask: one chunk row at a time
            data = data.rechunk({1: -1, 2: -1})
            for i in range(data.numblocks[0]):
                yield np.asarray(data.blocks[i].compute())
            return
        step = auto_angle_chunk(data.shape, data.dtype)
        for start in range(0, data.shape[0], step):
            yield np.asarray(data[start:start + step])
        return
    try:
        iterator = iter(data)
    except TypeError:
        raise ParameterError(f"{what} is neither an array nor an iterable of blocks",
                             where=what, value=type(data).__name__,
                             fix="pass an array (n, row, col) or a generator of blocks") from None
    done = 0
    for item in iterator:
        if isinstance(item, tuple) and len(item) == 3:
            start, stop, block = item
            block = np.asarray(block)
            block = block[None] if block.ndim == 2 else block
            if int(start) != done or int(stop) - int(start) != block.shape[0]:
                raise ParameterError(
                    f"slab ({start}, {stop}) with {block.shape[0]} frames does not follow "
                    f"the {done} frames written so far", where=what, value=(start, stop),
                    fix="yield slabs in order, without gaps, with stop - start == len(block)")
        else:
            block = np.asarray(item)
            block = block[None] if block.ndim == 2 else block
        if block.ndim != 3:
            raise ParameterError(f"{what} blocks must be 2-D or 3-D", where=what,
                                 value=block.shape, fix="yield (k, row, col) arrays")
        done += block.shape[0]
        yield block


class _Appender:
    """Append blocks to a resizable HDF5 dataset, created at the first block."""

    def __init__(self, group, name, *, chunks=None, compression=None, reserve=None):
        self.group, self.name = group, name
        self.reserve = reserve  # a SpaceReservation of the file, or None
        self.chunks, self.compression = chunks, compression
        self.dset = None
        self.count = 0

    def append(self, block, what):
        if self.dset is None:
            frame = block.shape[1:]
            chunks = self.chunks or (1, *frame)
            self.dset = self.group.create_dataset(
                self.name, shape=(0, *frame), maxshape=(None, *frame), dtype=block.dtype,
                chunks=tuple(chunks), compression=self.compression)
        elif block.shape[1:] != self.dset.shape[1:]:
            raise ParameterError(
                f"{what} frames are {block.shape[1:]} but earlier frames are "
                f"{self.dset.shape[1:]}", where=what, value=block.shape,
                fix="give every block (and flats/darks) the same (row, col) shape")
        n = block.shape[0]
        if self.reserve is not None:
            self.reserve.ensure(block.nbytes)
        self.dset.resize(self.count + n, axis=0)
        self.dset[self.count:self.count + n] = block
        self.count += n
        return n


def _check_angles(angles):
    values = np.asarray(angles, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ParameterError("angles must be a non-empty array of finite numbers (radians)",
                             where="angles", value=values[:5].tolist(),
                             fix="pass one finite angle in radians per projection")
    return values


def _check_count(count, angles):
    if count != angles.size:
        raise ParameterError(f"{count} projections written for {angles.size} angles",
                             where="projections", value=count,
                             fix="give exactly one projection per angle")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _h5_attr(value):
    """An attribute value h5py can store (dicts and None become JSON text)."""
    value = _jsonable(value)
    if isinstance(value, (dict, type(None))) or (
            isinstance(value, list) and not all(isinstance(v, (int, float)) for v in value)):
        return json.dumps(value)
    return value


def _set_attrs(node, attrs):
    for key, value in (attrs or {}).items():
        node.attrs[str(key)] = _h5_attr(value)


def _quantity(group, path, value, units):
    dset = group.create_dataset(path, data=np.float64(value))
    dset.attrs["units"] = units
    return dset


def _check_meta(pixel_size, energy, distance):
    return (_check_positive(pixel_size, "pixel_size"), _check_positive(energy, "energy"),
            _check_positive(distance, "distance"))


# ----------------------------------------------------------------------------- scans

def write_dxchange(path, projections, angles, flats=None, darks=None, *, pixel_size=None,
                   energy=None, distance=None, attrs=None, chunks=None, compression=None,
                   overwrite=False):
    """Write a scan as a DXchange HDF5 file.

    Layout: ``/exchange/data``, ``/exchange/data_white``,
    ``/exchange/data_dark`` ``(n, row, col)``, ``/exchange/theta`` (degrees);
    metadata under ``/measurement/instrument``: ``detection_system/objective/
    resolution`` [um], ``monochromator/energy`` [keV],
    ``detector/distance`` [mm], each with a ``units`` attribute.

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    projections : array or iterable of blocks
        See the module notes: whole arrays or slabs, for bounded memory.
    angles : array-like
        Radians, one per projection.
    flats, darks : array or iterable of blocks, optional
    pixel_size, distance : float, optional
        Metres.
    energy : float, optional
        keV.
    attrs : dict, optional
        Extra attributes for the file's root (e.g. the simulation parameters).
    chunks : tuple, optional
        HDF5 chunk shape; default one frame ``(1, row, col)``.
    compression : str, optional
        h5py compression, e.g. "gzip"; default none.
    overwrite : bool
        Replace an existing file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> fn = os.path.join(tempfile.mkdtemp(), "scan.h5")
    >>> slabs = (np.full((2, 3, 4), i, np.uint16) for i in range(5))   # 10 projections
    >>> write_dxchange(fn, slabs, np.linspace(0, np.pi, 10, endpoint=False), energy=25)
    >>> import h5py
    >>> with h5py.File(fn) as f:
    ...     f["/exchange/data"].shape, float(f["/exchange/theta"][1])
    ((10, 3, 4), 18.0)
    """
    import h5py

    angles = _check_angles(angles)
    pixel_size, energy, distance = _check_meta(pixel_size, energy, distance)
    # the reservation is released after the file is closed: its metadata go into it
    with _atomic(path, overwrite=overwrite, kind="scan",
                 needed=_nbytes(projections, flats, darks)) as tmp, \
            SpaceReservation(tmp) as reserve, h5py.File(tmp, "w") as f:
        f.attrs[MARKER] = "scan"
        f.create_dataset("implements", data="exchange:measurement")
        exchange = f.create_group("exchange")
        for name, data, what in (("data", projections, "projections"),
                                 ("data_white", flats, "flats"), ("data_dark", darks, "darks")):
            out = _Appender(exchange, name, chunks=chunks, compression=compression,
                            reserve=reserve)
            for block in iter_blocks(data, what):
                out.append(block, what)
            if name == "data":
                _check_count(out.count, angles)
                shape = out.dset.shape
            elif out.dset is not None and out.dset.shape[1:] != shape[1:]:
                raise ParameterError(f"{what} frames are {out.dset.shape[1:]} but projections "
                                     f"are {shape[1:]}", where=what, value=out.dset.shape,
                                     fix=f"give {what} the projections' (row, col) shape")
        theta = exchange.create_dataset("theta", data=np.rad2deg(angles))
        theta.attrs["units"] = "degree"
        inst = f.create_group("measurement/instrument")
        if pixel_size is not None:
            _quantity(inst, "detection_system/objective/resolution", pixel_size * 1e6, "um")
        if energy is not None:
            _quantity(inst, "monochromator/energy", energy, "keV")
        if distance is not None:
            _quantity(inst, "detector/distance", distance * 1e3, "mm")
        _set_attrs(f, attrs)


def _nx_group(parent, name, nx_class):
    group = parent.create_group(name)
    group.attrs["NX_class"] = nx_class
    return group


def write_nxtomo(path, projections, angles, flats=None, darks=None, *, pixel_size=None,
                 energy=None, distance=None, attrs=None, variant="esrf", flats_after=True,
                 chunks=None, compression=None, overwrite=False):
    """Write a scan as an NXtomo HDF5 file, as ESRF (Bliss/nxtomomill) or Diamond write them.

    All frames go into one dataset in acquisition order -- darks, flats,
    projections, then the second half of the flats when ``flats_after`` --
    with ``image_key`` 2 (dark), 1 (flat), 0 (projection) and
    ``rotation_angle`` in degrees for every frame.

    * ``variant="esrf"``: entry ``/entry0000`` (NXentry, definition NXtomo):
      ``instrument/detector/data``, ``instrument/detector/image_key``
      (and ``image_key_control``), ``sample/rotation_angle``,
      ``instrument/detector/x_pixel_size`` [m], ``instrument/detector/distance``
      [m], ``instrument/beam/incident_energy`` [keV]; ``data`` (NXdata) links.
    * ``variant="diamond"``: the same under ``/entry1/tomo_entry`` (NXsubentry),
      with ``data/data`` and ``data/rotation_angle`` linking to them.

    Parameters
    ----------
    path, projections, angles, flats, darks, pixel_size, energy, distance, attrs, chunks, compression, overwrite :
        As for :func:`write_dxchange`.
    variant : {"esrf", "diamond"}
    flats_after : bool
        True: the first ``ceil(n/2)`` flats are written before the projections,
        the rest after (as for drift correction). False: all before.

    Examples
    --------
    >>> import numpy as np, tempfile, os, h5py
    >>> fn = os.path.join(tempfile.mkdtemp(), "scan.nx")
    >>> proj = np.ones((4, 2, 3), np.uint16)
    >>> write_nxtomo(fn, proj, np.linspace(0, np.pi, 4, endpoint=False),
    ...              flats=2 * proj[:2], darks=0 * proj[:1])
    >>> with h5py.File(fn) as f:
    ...     f["/entry0000/instrument/detector/image_key"][:].tolist()
    [2, 1, 0, 0, 0, 0, 1]
    """
    import h5py

    if variant not in ("esrf", "diamond"):
        raise ParameterError("unknown NXtomo variant", where="variant", value=variant,
                             fix="pass variant='esrf' or variant='diamond'")
    angles = _check_angles(angles)
    pixel_size, energy, distance = _check_meta(pixel_size, energy, distance)
    degrees = np.rad2deg(angles)
    with _atomic(path, overwrite=overwrite, kind="scan",
                 needed=_nbytes(projections, flats, darks)) as tmp, \
            SpaceReservation(tmp) as reserve, h5py.File(tmp, "w") as f:
        f.attrs[MARKER] = "scan"
        if variant == "esrf":
            entry = _nx_group(f, "entry0000", "NXentry")
        else:
            entry = _nx_group(_nx_group(f, "entry1", "NXentry"), "tomo_entry", "NXsubentry")
        entry.create_dataset("definition", data="NXtomo")
        instrument = _nx_group(entry, "instrument", "NXinstrument")
        detector = _nx_group(instrument, "detector", "NXdetector")
        sample = _nx_group(entry, "sample", "NXsample")
        out = _Appender(detector, "data", chunks=chunks, compression=compression, reserve=reserve)
        keys, rot = [], []

        def put(blocks, key, what, angle):
            for block in iter_blocks(blocks, what):
                n = out.append(block, what)
                keys.extend([key] * n)
                rot.extend([angle] * n if angle is not None else [])

        # flats go in memory only when they must be split before/after
        if flats is not None and flats_after:
            flats = np.concatenate(list(iter_blocks(flats, "flats")))
            half = (flats.shape[0] + 1) // 2
            flats_pre, flats_post = flats[:half], flats[half:]
        else:
            flats_pre, flats_post = flats, None
        put(darks, 2, "darks", degrees[0])
        put(flats_pre, 1, "flats", degrees[0])
        start = out.count
        for block in iter_blocks(projections, "projections"):
            n = out.append(block, "projections")
            keys.extend([0] * n)
        _check_count(out.count - start, angles)
        rot.extend(degrees.tolist())
        if flats_post is not None and len(flats_post):
            put(flats_post, 1, "flats", degrees[-1])

        image_key = detector.create_dataset("image_key", data=np.asarray(keys, np.int32))
        detector.create_dataset("image_key_control", data=np.asarray(keys, np.int32))
        rotation = sample.create_dataset("rotation_angle", data=np.asarray(rot, np.float64))
        rotation.attrs["units"] = "degree"
        if pixel_size is not None:
            _quantity(detector, "x_pixel_size", pixel_size, "m")
            _quantity(detector, "y_pixel_size", pixel_size, "m")
        if distance is not None:
            _quantity(detector, "distance", distance, "m")
        if energy is not None:
            beam = _nx_group(instrument, "beam", "NXbeam")
            _quantity(beam, "incident_energy", energy, "keV")
        data = _nx_group(entry, "data", "NXdata")
        data["data"] = out.dset
        data["rotation_angle"] = rotation
        data["image_key"] = image_key
        data.attrs["signal"] = "data"
        _set_attrs(f, attrs)


def write_tiff_stack(folder, projections, angles, flats=None, darks=None, *, pixel_size=None,
                     energy=None, distance=None, attrs=None, overwrite=False):
    """Write a scan as a folder of single-page TIFFs that :func:`open_scan` reads back.

    Files: ``proj_00000.tif`` ..., ``flat_00000.tif`` ..., ``dark_00000.tif`` ...,
    ``angles.txt`` (degrees, one per line) and ``metadata.json``
    (``pixel_size`` [m], ``energy`` [keV], ``distance`` [m], ``attrs``).

    Parameters
    ----------
    folder : str or os.PathLike
        Output folder (created; must not exist unless ``overwrite``).
    projections, angles, flats, darks, pixel_size, energy, distance, attrs, overwrite :
        As for :func:`write_dxchange`.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "scan")
    >>> write_tiff_stack(out, np.zeros((3, 2, 2), np.float32), [0, 1, 2])
    >>> sorted(os.listdir(out))
    ['angles.txt', 'metadata.json', 'proj_00000.tif', 'proj_00001.tif', 'proj_00002.tif']
    """
    import tifffile

    angles = _check_angles(angles)
    pixel_size, energy, distance = _check_meta(pixel_size, energy, distance)
    with _atomic(folder, overwrite=overwrite, kind="scan",
                 needed=_nbytes(projections, flats, darks)) as tmp:
        tmp.mkdir()
        shapes = {}
        for prefix, data, what in (("proj", projections, "projections"),
                                   ("flat", flats, "flats"), ("dark", darks, "darks")):
            count = 0
            for block in iter_blocks(data, what):
                if shapes and block.shape[1:] != shapes["projections"]:
                    raise ParameterError(
                        f"{what} frames are {block.shape[1:]} but projections are "
                        f"{shapes['projections']}", where=what, value=block.shape,
                        fix=f"give {what} the projections' (row, col) shape")
                shapes.setdefault(what, block.shape[1:])
                for frame in block:
                    tifffile.imwrite(tmp / f"{prefix}_{count:05d}.tif", frame)
                    count += 1
            if what == "projections":
                _check_count(count, angles)
        np.savetxt(tmp / "angles.txt", np.rad2deg(angles), fmt="%.17g",
                   header="rotation angle in degrees, one per projection")
        meta = {MARKER: "scan", "pixel_size": pixel_size, "energy": energy,
                "distance": distance, "units": "pixel_size: m, distance: m, energy: keV",
                "attrs": _jsonable(attrs or {})}
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1))


# ----------------------------------------------------------------------------- volumes

_VOLUME_FORMATS = ("auto", "zarr", "tiff", "hdf5")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx")


def _volume_format(path: Path, fmt: str) -> str:
    if fmt not in _VOLUME_FORMATS:
        raise ParameterError("unknown volume format", where="format", value=fmt,
                             fix=f"pass one of {', '.join(repr(x) for x in _VOLUME_FORMATS)}")
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix == ".zarr":
        return "zarr"
    if suffix in _HDF5_SUFFIXES:
        return "hdf5"
    if suffix in ("", ".tif", ".tiff"):
        return "tiff"
    raise ParameterError("cannot tell the format from the file name", where="path",
                         value=str(path),
                         fix="end the name with .zarr, .h5 (or .hdf5), or no suffix for a TIFF "
                             "folder, or pass format='zarr'|'tiff'|'hdf5'")


def _as_volume(volume):
    import xarray as xr

    if isinstance(volume, xr.DataArray):
        if volume.ndim != 3:
            raise ParameterError("the volume must be 3-D (z, y, x)", where="volume",
                                 value=volume.dims, fix="pass a DataArray with dims (z, y, x)")
        return volume
    if hasattr(volume, "shape") and len(volume.shape) == 3:
        return xr.DataArray(volume, dims=("z", "y", "x"), name="volume")
    raise ParameterError("the volume must be a 3-D xarray.DataArray (z, y, x)", where="volume",
                         value=type(volume).__name__, fix="pass the DataArray that reconstruct returns")


def _z_slabs(volume):
    """Yield (z0, z1, numpy block) over whole-(y, x) slabs of about 64 MiB."""
    import dask.array as da

    data = volume.data
    step = auto_angle_chunk(volume.shape, volume.dtype)
    if isinstance(data, da.Array):
        data = data.rechunk({0: step, 1: -1, 2: -1})
        z0 = 0
        for i in range(data.numblocks[0]):
            block = np.asarray(data.blocks[i].compute())
            yield z0, z0 + block.shape[0], block
            z0 += block.shape[0]
        return
    for z0 in range(0, volume.shape[0], step):
        block = to_numpy(data[z0:z0 + step])
        yield z0, z0 + block.shape[0], block


def save_volume(volume, path, *, format="auto", overwrite=False):
    """Save a reconstructed volume ``(z, y, x)`` with its attrs, slab by slab, atomically.

    Parameters
    ----------
    volume : xarray.DataArray
        Dims ``(z, y, x)``; numpy, dask (streamed: bounded memory) or cupy data.
        Its attrs (the parameters that made it) and coords are saved.
    path : str or os.PathLike
        Output path.
    format : {"auto", "zarr", "tiff", "hdf5"}
        "auto": ``*.zarr`` -> zarr; ``*.h5``, ``*.hdf5``, ``*.hdf``, ``*.nxs`` -> HDF5;
        no suffix, ``*.tif`` or ``*.tiff`` -> a folder of TIFFs.

        * zarr: an xarray zarr store, variable ``volume``, chunked by z slab;
        * tiff: a folder with ``slice_00000.tif`` (one per z) and
          ``metadata.json`` (attrs, dims, coords, dtype);
        * hdf5: dataset ``/volume`` chunked by z slice, attrs on it (dicts as
          JSON text), coords as ``/z``, ``/y``, ``/x``.
    overwrite : bool
        Replace an existing output.

    Examples
    --------
    >>> import numpy as np, xarray as xr, tempfile, os
    >>> vol = xr.DataArray(np.random.rand(4, 5, 6).astype(np.float32), dims=("z", "y", "x"),
    ...                    attrs={"center": 2.5, "units": "1/m"})
    >>> out = os.path.join(tempfile.mkdtemp(), "vol.zarr")
    >>> save_volume(vol, out)
    >>> back = open_volume(out)
    >>> bool((back.values == vol.values).all()), back.attrs["center"]
    (True, 2.5)
    """
    path = Path(os.fspath(path)).expanduser()
    fmt = _volume_format(path, format)
    volume = _as_volume(volume)
    attrs = _jsonable(dict(volume.attrs))
    # never over the scan the volume came from, nor a folder that holds it
    with _atomic(path, overwrite=overwrite, kind="volume", protect=[attrs.get("source_file")],
                 needed=_nbytes(volume)) as tmp:
        if fmt == "zarr":
            _save_zarr(volume, tmp, attrs)
        elif fmt == "hdf5":
            _save_hdf5(volume, tmp, attrs)
        else:
            _save_tiff(volume, tmp, attrs)


@contextlib.contextmanager
def _quiet_consolidated():
    """Silence zarr 3's warning that consolidated metadata is not in the v3 spec yet."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        yield


def _save_zarr(volume, tmp, attrs):
    import dask.array as da

    step = auto_angle_chunk(volume.shape, volume.dtype)
    data = volume.data
    if not isinstance(data, da.Array):
        data = da.from_array(to_numpy(data), chunks=(step, -1, -1))
    else:
        data = data.rechunk((step, -1, -1)).map_blocks(to_numpy, dtype=volume.dtype)
    out = volume.copy(data=data)
    out.encoding = {}
    out.attrs = attrs
    ds = out.to_dataset(name="volume")
    ds.attrs = {**attrs, MARKER: "volume"}
    for name in ds.coords:
        ds[name].encoding = {}
    with _quiet_consolidated():
        ds.to_zarr(tmp, mode="w")


def _dim_coords(volume):
    """The volume's dimension coords as ``name -> (dim, values, attrs)``."""
    return {name: (name, to_numpy(volume[name].values), dict(volume[name].attrs))
            for name in volume.dims if name in volume.coords}


def _save_hdf5(volume, tmp, attrs):
    import h5py

    with SpaceReservation(tmp) as reserve, h5py.File(tmp, "w") as f:
        dset = _h5_volume_layout(f, volume.shape, volume.dtype, volume.dims,
                                 _dim_coords(volume), attrs)
        for z0, z1, block in _z_slabs(volume):
            reserve.ensure(block.nbytes)
            dset[z0:z1] = block


def _save_tiff(volume, tmp, attrs):
    import tifffile

    tmp.mkdir()
    for z0, _, block in _z_slabs(volume):
        for i, plane in enumerate(block):
            tifffile.imwrite(tmp / f"slice_{z0 + i:05d}.tif", plane)
    _write_tiff_metadata(tmp, volume.shape, volume.dtype, volume.dims, _dim_coords(volume),
                         attrs)


# The volume layouts, shared by save_volume and the slab sinks (tomolab.io._sinks);
# coords are ``name -> (dim, values, attrs)``, those not named in ``dims`` lie along ``dim``.

def _h5_volume_layout(f, shape, dtype, dims, coords, attrs, **create):
    """Create dataset ``/volume`` chunked ``(1, y, x)`` with attrs and ``dims``, and the coords.

    Coords that are not dimensions get a ``dims`` attribute (JSON list).
    ``create`` goes to ``create_dataset`` for ``/volume``. Returns that dataset.
    """
    f.attrs[MARKER] = "volume"
    dset = f.create_dataset("volume", shape=shape, dtype=dtype, chunks=(1, *shape[1:]), **create)
    _set_attrs(dset, attrs)
    dset.attrs["dims"] = json.dumps(list(dims))
    for name, (dim, values, coord_attrs) in coords.items():
        coord = f.create_dataset(name, data=values)
        _set_attrs(coord, _jsonable(coord_attrs))
        if name not in dims:
            coord.attrs["dims"] = json.dumps([dim])
    return dset


def _write_tiff_metadata(folder, shape, dtype, dims, coords, attrs):
    """Write ``metadata.json`` of a TIFF volume folder: attrs, dims, dtype, shape, coords.

    Coords that are not dimensions go under ``aux_coords`` (absent when there are none).
    """
    def entry(values, coord_attrs):
        return {"values": _jsonable(np.asarray(values)), "attrs": _jsonable(coord_attrs)}

    meta = {MARKER: "volume", "attrs": attrs, "dims": list(dims), "dtype": str(np.dtype(dtype)),
            "shape": list(shape),
            "coords": {name: entry(values, a) for name, (_, values, a) in coords.items()
                       if name in dims}}
    aux = {name: {"dims": [dim], **entry(values, a)} for name, (dim, values, a) in coords.items()
           if name not in dims}
    if aux:
        meta["aux_coords"] = aux
    (folder / "metadata.json").write_text(json.dumps(meta, indent=1))


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def open_volume(path, *, format="auto"):
    """Open a volume written by :func:`save_volume` or :func:`tomolab.reconstruct_to`, lazily.

    A volume stored in 16 bits (``reconstruct_to(..., dtype="float16"|"uint16")``)
    comes back in float32 in the volume's units (1/m): uint16 as ``stored *
    scale_factor + add_offset``, whose values are recorded in its attrs (they
    move to the result's ``encoding``, with the stored dtype).

    Parameters
    ----------
    path : str or os.PathLike
    format : {"auto", "zarr", "tiff", "hdf5"}

    Returns
    -------
    xarray.DataArray
        Dims ``(z, y, x)``, float32 for tomolab's outputs, dask-backed.
    """
    from tomolab.io._encode import decode

    return decode(_open_stored_volume(path, format=format))


def _open_stored_volume(path, *, format="auto"):
    """The volume at ``path`` as stored (uint16 and float16 not decoded)."""
    import xarray as xr

    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise ScanFormatError("no such file or folder", where=str(path),
                              fix="check the path")
    fmt = _volume_format(path, format)
    if fmt == "zarr":
        volume = xr.open_zarr(path)["volume"]
        if np.dtype(volume.encoding.get("dtype", volume.dtype)) != np.float32:
            # 16 bits: as stored, decoded by tomolab.io._encode.decode in float32
            volume = xr.open_zarr(path, mask_and_scale=False)["volume"]
        return volume
    if fmt == "hdf5":
        import h5py

        from tomolab.io._lazy import HDF5Frames
        with h5py.File(path, "r", locking=False) as f:
            dset = f["volume"]
            frames = HDF5Frames(str(path), "/volume", shape=dset.shape, dtype=dset.dtype)
            attrs = {k: _text(v) for k, v in dset.attrs.items()}
            dims = tuple(json.loads(attrs.pop("dims", '["z", "y", "x"]')))
            coords = {name: (name, f[name][()], dict(f[name].attrs))
                      for name in dims if name in f}
            # non-dimension coordinates (detector row, centre per row) carry their dims
            for name, node in f.items():
                if name not in coords and name != "volume" and "dims" in node.attrs:
                    extra = dict(node.attrs)
                    coord_dims = tuple(json.loads(_text(extra.pop("dims"))))
                    coords[name] = (coord_dims, node[()], extra)
        return xr.DataArray(to_dask(frames, name=f"volume-{path}"), dims=dims, coords=coords,
                            attrs=attrs, name="volume")
    from tomolab.io._lazy import TiffFrames
    meta = json.loads((path / "metadata.json").read_text())
    files = sorted(path.glob("slice_*.tif"))
    frames = TiffFrames([str(p) for p in files], [0] * len(files), shape=meta["shape"][1:],
                        dtype=meta["dtype"])
    coords = {name: (name, np.asarray(c["values"]), c["attrs"])
              for name, c in meta.get("coords", {}).items()}
    coords.update({name: (tuple(c["dims"]), np.asarray(c["values"]), c["attrs"])
                   for name, c in meta.get("aux_coords", {}).items()})
    return xr.DataArray(to_dask(frames, name=f"volume-{path}"), dims=tuple(meta["dims"]),
                        coords=coords, attrs=meta["attrs"], name="volume")
