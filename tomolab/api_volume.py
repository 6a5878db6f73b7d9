"""Full volumes straight to disk: streamed slab by slab into zarr, resumable.

:func:`reconstruct_to` never holds the volume in memory. It writes into a
partial store next to the target (``.NAME.partial``), records each finished
slab there, and renames the store into place only when every slab is done. A
run that was killed or cancelled picks up where it stopped when it is started
again with the same parameters: finished slabs are not recomputed, and the
result is identical to an uninterrupted run. The output opens with
:func:`tomolab.io.open_volume` (the layout of :func:`tomolab.save_volume`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from tomolab.errors import ParameterError

__all__ = ["reconstruct_to"]

_DONE = "slabs_done"


def _fingerprint(scan, params: dict) -> str:
    """What makes two runs the same: the source, its shape, and every parameter."""
    source = {"source_file": str(scan.attrs.get("source_file") or ""),
              "shape": [int(scan.sizes[d]) for d in ("angle", "row", "col")]}
    text = json.dumps({"source": source, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def reconstruct_to(scan, path, *, center, rows=None, slab_rows: int = 64, overwrite: bool = False,
                   multiscale: int = 0, progress=None, cancel=None, **options):
    """Reconstruct into a zarr store on disk, slab by slab, resumably.

    Parameters
    ----------
    scan : xarray.Dataset
    path : str or os.PathLike
        Output zarr store (a folder ending in ``.zarr``).
    center : float, "auto", array_like or axis fit
        As for :func:`tomolab.reconstruct`; ``"auto"`` is resolved once, before
        the first slab, so every slab uses the same centre.
    rows : int, slice, "A:B" or (A, B), optional
        Detector rows (default: all).
    slab_rows : int
        Rows per slab: the unit of progress, of resumption and of zarr chunks.
    overwrite : bool
        Replace an existing store at ``path``.
    multiscale : int
        Add this many block-averaged levels (each half the size of the one
        before, ``level1``, ``level2``, ...) and OME-Zarr (NGFF 0.4)
        ``multiscales`` metadata, so OME-Zarr viewers open the store with a
        pyramid. The levels are computed from the stored volume in chunks.
    progress, cancel : callable, optional
        ``progress(done_rows, total_rows)`` after each slab; ``cancel()`` is
        polled between slabs. A cancelled run leaves its partial store, and the
        next call with the same parameters resumes it.
    **options
        Passed to :func:`tomolab.reconstruct` (``filter``, ``algorithm``,
        ``backend``, ``stripes``, ``phase``, ...).

    Returns
    -------
    xarray.DataArray
        The volume, opened lazily from ``path``.

    Examples
    --------
    >>> import os, tempfile, tomolab
    >>> scan = tomolab.data.simulate_scan(64, n_rows=6, n_angles=90)
    >>> out = os.path.join(tempfile.mkdtemp(), "vol.zarr")
    >>> vol = reconstruct_to(scan, out, center=scan.attrs["true_center"], slab_rows=4,
    ...                      backend="numpy")
    >>> vol.shape, vol.attrs["slab_rows"]
    ((6, 64, 64), 4)
    """
    from tomolab.api import check_center, find_center, reconstruct, resolve_rows
    from tomolab.engine.pipeline import Cancelled

    path = Path(os.fspath(path)).expanduser()
    if path.suffix != ".zarr":
        raise ParameterError("streamed output is a zarr store", where="path", value=str(path),
                             fix="name it NAME.zarr (or save other formats with tomolab.save_volume)")
    if path.exists() and not overwrite:
        raise ParameterError("output exists", where="path", value=str(path),
                             fix="choose another path or pass overwrite=True")
    if not isinstance(multiscale, (int, np.integer)) or not 0 <= multiscale <= 8:
        raise ParameterError("levels of the pyramid must be an integer from 0 to 8",
                             where="multiscale", value=multiscale, fix="pass e.g. multiscale=3")
    if not isinstance(slab_rows, (int, np.integer)) or slab_rows < 1:
        raise ParameterError("slab height must be a positive integer", where="slab_rows",
                             value=slab_rows, fix="pass e.g. slab_rows=64")
    row_range = resolve_rows(scan, rows)
    if isinstance(center, str) and center == "auto":
        middle = row_range.start + len(row_range) // 2
        center, _ = find_center(scan, row=middle, backend=options.get("backend", "auto"),
                                normalize=options.get("normalize", True))
    if not isinstance(center, str) and callable(getattr(center, "center", None)):
        center = np.asarray(center.center(np.arange(row_range.start, row_range.stop)), float)
    per_row = np.ndim(center) == 1
    center = np.asarray(center, float) if per_row else check_center(scan, center)
    if per_row and center.size != len(row_range):
        raise ParameterError("one centre per reconstructed row is needed", where="center",
                             value=f"{center.size} values for {len(row_range)} rows",
                             fix="pass a single column, or one per row of rows=")

    params = {"center": center.tolist() if per_row else center,
              "rows": [row_range.start, row_range.stop], "slab_rows": int(slab_rows),
              **{k: v for k, v in options.items() if k != "backend"}}
    fingerprint = _fingerprint(scan, params)
    partial = path.with_name(f".{path.name}.partial")
    slabs = [(s, min(s + slab_rows, len(row_range))) for s in range(0, len(row_range), slab_rows)]
    done: set[int] = set()
    if partial.exists():
        try:
            import zarr
            meta = dict(zarr.open_group(str(partial), mode="r").attrs)
        except Exception:  # noqa: BLE001  (an unreadable partial store is started afresh)
            meta = {}
        if meta.get("fingerprint") == fingerprint:
            done = set(meta.get(_DONE, []))
        else:
            warnings.warn(f"{partial}: a partial store from a run with other parameters; "
                          f"starting afresh", stacklevel=2)
            shutil.rmtree(partial)

    def slab_volume(index):
        start, stop = slabs[index]
        rows_here = (row_range.start + start, row_range.start + stop)
        return reconstruct(scan, center=center[start:stop] if per_row else center, rows=rows_here,
                           **options)

    total = len(row_range)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        for index, (start, stop) in enumerate(slabs):
            if index in done:
                continue
            if cancel is not None and cancel():
                raise Cancelled(f"cancelled after {len(done)} of {len(slabs)} slabs; run again with "
                                f"the same parameters to resume from {partial}")
            volume = slab_volume(index)
            if not partial.exists():
                _create_store(partial, volume, row_range, slab_rows, fingerprint)
            region = volume.drop_vars(["y", "x"]).to_dataset(name="volume")
            region.attrs = {}
            region.to_zarr(str(partial), region={"z": slice(start, stop)})
            done.add(index)
            _mark_done(partial, done)
            if progress is not None:
                progress(sum(b - a for i, (a, b) in enumerate(slabs) if i in done), total)
    if not partial.exists():  # nothing to do: all slabs were done, or there are none
        raise ParameterError("nothing was reconstructed", where="rows", value=rows,
                             fix="select at least one row")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        if multiscale:
            _write_pyramid(partial, int(multiscale))
        _finish(partial, path, overwrite)
    from tomolab.io import open_volume
    return open_volume(path)


def _create_store(partial: Path, first_slab, row_range: range, slab_rows: int, fingerprint: str):
    """Lay out the whole volume (coords, attrs, chunking) from the first slab computed."""
    import dask.array as da
    import xarray as xr

    from tomolab.io._write import _jsonable

    n_z = len(row_range)
    unit = float(first_slab.attrs.get("pixel_size") or 0.0) or 1.0
    rows = np.arange(row_range.start, row_range.stop)
    attrs = _jsonable(dict(first_slab.attrs))
    attrs.update(rows=f"{row_range.start}:{row_range.stop}", slab_rows=int(slab_rows))
    attrs.pop("seconds", None)
    data = da.zeros((n_z,) + first_slab.shape[1:], dtype=np.float32,
                    chunks=(slab_rows,) + first_slab.shape[1:])
    coords = {"z": ("z", rows * unit, dict(first_slab["z"].attrs)),
              "y": first_slab["y"], "x": first_slab["x"],
              "row": ("z", rows, dict(first_slab["row"].attrs))}
    if "center" in first_slab.coords:
        coords["center"] = ("z", np.full(n_z, np.nan), dict(first_slab["center"].attrs))
    skeleton = xr.DataArray(data, dims=("z", "y", "x"), coords=coords, attrs=attrs,
                            name="volume").to_dataset()
    skeleton.attrs = dict(attrs, fingerprint=fingerprint, **{_DONE: []})
    skeleton.to_zarr(str(partial), mode="w", compute=False)


def _write_pyramid(store: Path, levels: int) -> None:
    """Block-mean levels of the stored volume, and their OME-Zarr multiscales metadata."""
    import xarray as xr
    import zarr

    base = xr.open_zarr(str(store))["volume"]
    unit = float(base.attrs.get("pixel_size") or 0.0)
    datasets = [("volume", 1)]
    level = base
    for k in range(1, levels + 1):
        if min(level.shape) < 2:
            break
        level = level.coarsen(z=2, y=2, x=2, boundary="trim").mean().astype(np.float32)
        name = f"level{k}"
        level = level.chunk({"z": max(1, base.chunks[0][0] // 2 ** k)})
        level.attrs = {"downsampled": 2 ** k}
        ds = level.to_dataset(name=name).drop_vars(list(level.coords))
        ds = ds.rename_dims({"z": f"z{k}", "y": f"y{k}", "x": f"x{k}"})
        ds.to_zarr(str(store), mode="a")
        datasets.append((name, 2 ** k))
    space = {"type": "space", "unit": "meter"} if unit else {"type": "space"}
    group = zarr.open_group(str(store), mode="r+")
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": "volume",
        "axes": [{"name": axis, **space} for axis in ("z", "y", "x")],
        "datasets": [{"path": path, "coordinateTransformations": [
            {"type": "scale", "scale": [(unit or 1.0) * factor] * 3}]} for path, factor in datasets],
        "type": "mean",
    }]


def _mark_done(partial: Path, done: set[int]) -> None:
    import zarr
    group = zarr.open_group(str(partial), mode="r+")
    group.attrs[_DONE] = sorted(done)


def _finish(partial: Path, path: Path, overwrite: bool) -> None:
    import zarr
    group = zarr.open_group(str(partial), mode="r+")
    attrs = dict(group.attrs)
    for key in ("fingerprint", _DONE):
        attrs.pop(key, None)
    group.attrs.clear()
    group.attrs.update(attrs)
    zarr.consolidate_metadata(str(partial))  # readers that trust consolidated metadata see the final attrs
    if path.exists() and overwrite:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(partial, path)
