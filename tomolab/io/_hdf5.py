"""Readers for scans in HDF5: DXchange, NXtomo (ESRF / Bliss) and Diamond's NXtomo.

Only metadata is read here (shapes, dtypes, image keys, angles, units); the
pixels stay on disk behind :class:`tomolab.io._lazy.HDF5Frames`.
"""

from __future__ import annotations

import re

import numpy as np

from tomolab.errors import ScanFormatError
from tomolab.io._lazy import HDF5Frames, frame_runs
from tomolab.io._units import _decode, factor, read_quantity, to_radians, units_of

__all__ = ["HDF5_LAYOUTS", "detect_layout", "layout_paths", "read_hdf5"]

#: layout -> what identifies it (shown when no layout matches)
HDF5_LAYOUTS = {
    "dxchange": "/exchange/data",
    "nxtomo": "/entryNNNN/instrument/detector/data + image_key (NXtomo)",
    "nxtomo-diamond": "/entry1/tomo_entry/data/data + instrument/detector/image_key",
}

_DXCHANGE_PIXEL = [
    ("/measurement/instrument/detection_system/objective/resolution", "um"),
    ("/measurement/instrument/detector/actual_pixel_size_x", "um"),
]
_DXCHANGE_CAMERA_PIXEL = [
    ("/measurement/instrument/detector/pixel_size_x", "um"),
    ("/measurement/instrument/detector/pixel_size", "um"),
    ("/measurement/instrument/camera/pixel_size", "um"),
]
_DXCHANGE_ENERGY = [
    ("/measurement/instrument/monochromator/energy", "keV"),
    ("/measurement/instrument/source/energy", "keV"),
]
_DXCHANGE_DISTANCE = [
    ("/measurement/instrument/detector/distance", "mm"),
    ("/measurement/instrument/sample/distance", "mm"),
    ("/measurement/instrument/camera_motor_stack/setup/camera_distance", "mm"),
]
_DXCHANGE_MAGNIFICATION = "/measurement/instrument/detection_system/objective/magnification"

_ENTRY_NAME = re.compile(r"^entry\d*$")


def _is_dataset(group, path) -> bool:
    import h5py

    try:
        node = group.get(path)
    except (KeyError, OSError, ValueError):
        return False
    return isinstance(node, h5py.Dataset)


def _first(group, paths):
    return next((p for p in paths if _is_dataset(group, p)), None)


def _nxtomo_entries(f):
    """NXtomo entries: (entry path, layout) in file order."""
    import h5py

    found = []
    for name, node in f.items():
        if not isinstance(node, h5py.Group):
            continue
        sub = node.get("tomo_entry")
        if isinstance(sub, h5py.Group) and _first(sub, ("data/data", "instrument/detector/data")):
            found.append((f"/{name}/tomo_entry", "nxtomo-diamond"))
            continue
        nx_class = _decode(node.attrs.get("NX_class", b""))
        definition = _decode(node["definition"][()]) if _is_dataset(node, "definition") else ""
        named = _ENTRY_NAME.match(name) is not None
        if (named or (nx_class == "NXentry" and definition == "NXtomo")) and \
                _is_dataset(node, "instrument/detector/data") and \
                _is_dataset(node, "instrument/detector/image_key"):
            found.append((f"/{name}", "nxtomo"))
    return found


def detect_layout(f) -> str | None:
    """The layout of an open HDF5 file, or None if it is none tomolab knows."""
    if _is_dataset(f, "/exchange/data"):
        return "dxchange"
    entries = _nxtomo_entries(f)
    return entries[0][1] if entries else None


def _no_layout_error(filename, f, tried):
    groups = sorted(f.keys())
    listed = ", ".join(f"/{g}" for g in groups[:12]) + (" ..." if len(groups) > 12 else "")
    layouts = "; ".join(f"{name} ({HDF5_LAYOUTS[name]})" for name in tried)
    return ScanFormatError(
        f"no known scan layout found (tried {layouts}; top-level groups: {listed or 'none'})",
        where=filename,
        fix="pass layout= if the file is one of these, or read the arrays with h5py and "
            "call tomolab.io.from_arrays(projections, angles, flats, darks)")


def _frames(filename, dset, runs=None):
    return HDF5Frames(filename, dset.name, shape=dset.shape, dtype=dset.dtype, runs=runs)


def _check_3d(filename, dset):
    if dset.ndim != 3:
        raise ScanFormatError(f"dataset has {dset.ndim} dimensions, expected 3 (n, row, col)",
                              where=f"{filename}:{dset.name}", value=tuple(dset.shape),
                              fix="point open_scan at a file whose images are stored as "
                                  "(n, row, col), or use tomolab.io.from_arrays")


def _stored_chunk(dset):
    return dset.chunks[0] if dset.chunks else None


def _read_angles(filename, f, path):
    """Angles in radians and the unit they were stored in ("rad" or "deg")."""
    dset = f[path]
    unit = units_of(dset) or "degree"
    try:
        radians = to_radians(np.asarray(dset[()], dtype=np.float64).ravel(), unit)
        return radians, "rad" if factor(unit, "angle") == 1.0 else "deg"
    except ValueError:
        raise ScanFormatError(f"rotation angles have an unknown unit {unit!r}",
                              where=f"{filename}:{dset.name}", value=unit,
                              fix="pass angles= (radians) to open_scan") from None


def _open_dxchange(filename, f, *, read_angles):
    data = f["/exchange/data"]
    _check_3d(filename, data)
    parts = {"projections": data}
    paths = {"projections": data.name}
    looked = {"flats": "/exchange/data_white", "darks": "/exchange/data_dark"}
    for var, path in looked.items():
        if _is_dataset(f, path) and f[path].shape and f[path].shape[0] > 0:
            _check_3d(filename, f[path])
            parts[var] = f[path]
            paths[var] = path

    angles, angles_source, angles_unit = None, None, None
    if read_angles and _is_dataset(f, "/exchange/theta"):
        paths["angles"] = "/exchange/theta"
        angles, angles_unit = _read_angles(filename, f, "/exchange/theta")
        angles_source = f"{filename}:/exchange/theta"

    metadata = {}
    pixel, pixel_path = read_quantity(f, _DXCHANGE_PIXEL, "length", filename)
    if pixel is None:
        camera, pixel_path = read_quantity(f, _DXCHANGE_CAMERA_PIXEL, "length", filename)
        if camera is not None and _is_dataset(f, _DXCHANGE_MAGNIFICATION):
            mag = float(np.ravel(f[_DXCHANGE_MAGNIFICATION][()])[0])
            pixel = camera / mag if mag > 0 else camera
        else:
            pixel = camera
    metadata["pixel_size"] = pixel
    metadata["energy"], energy_path = read_quantity(f, _DXCHANGE_ENERGY, "energy", filename)
    metadata["distance"], distance_path = read_quantity(f, _DXCHANGE_DISTANCE, "length", filename)
    for key, p in (("pixel_size_path", pixel_path), ("energy_path", energy_path),
                   ("distance_path", distance_path)):
        metadata[key] = p

    return dict(
        projections=_frames(filename, data), angles=angles,
        flats=_frames(filename, parts["flats"]) if "flats" in parts else None,
        darks=_frames(filename, parts["darks"]) if "darks" in parts else None,
        layout="dxchange", stored_chunks={v: _stored_chunk(d) for v, d in parts.items()},
        paths=paths, metadata=metadata, angles_source=angles_source, looked_for=looked,
        angles_unit=angles_unit)


def _open_nxtomo(filename, f, entry, layout, *, read_angles):
    grp = f[entry]
    if layout == "nxtomo-diamond":
        data_path = _first(grp, ("data/data", "instrument/detector/data"))
        angle_paths = ("data/rotation_angle", "sample/rotation_angle")
    else:
        data_path = _first(grp, ("instrument/detector/data", "data/data"))
        angle_paths = ("sample/rotation_angle", "data/rotation_angle")
    # image_key_control also marks alignment projections (-1) that image_key calls 0
    key_path = _first(grp, ("instrument/detector/image_key_control",
                            "instrument/detector/image_key", "data/image_key"))
    if data_path is None or key_path is None:
        raise ScanFormatError(
            "NXtomo entry lacks detector data or image_key", where=f"{filename}:{entry}",
            fix="check the entry= name (the file's entries are listed by h5ls), or use "
                "tomolab.io.from_arrays")
    data = grp[data_path]
    _check_3d(filename, data)
    n_frames = data.shape[0]
    keys = np.asarray(grp[key_path][()]).ravel()
    if keys.size != n_frames:
        raise ScanFormatError(
            f"image_key has {keys.size} entries but the detector data has {n_frames} frames",
            where=f"{filename}:{grp[key_path].name}", value=keys.size,
            fix="repair the file (image_key needs one entry per frame)")
    index = {var: np.flatnonzero(keys == k) for var, k in
             (("projections", 0), ("flats", 1), ("darks", 2))}
    if index["projections"].size == 0:
        raise ScanFormatError("image_key marks no frame as a projection (key 0)",
                              where=f"{filename}:{grp[key_path].name}",
                              value=np.unique(keys).tolist(),
                              fix="check the file: NXtomo uses 0=projection, 1=flat, 2=dark")
    n_alignment = int(np.count_nonzero(keys == -1))
    parts = {var: _frames(filename, data, frame_runs(idx))
             for var, idx in index.items() if idx.size}
    paths = {var: data.name for var in parts}
    paths["image_key"] = grp[key_path].name

    angles, angles_source, angles_unit = None, None, None
    angle_path = _first(grp, angle_paths)
    if read_angles and angle_path is not None:
        all_angles, angles_unit = _read_angles(filename, f, grp[angle_path].name)
        paths["angles"] = grp[angle_path].name
        if all_angles.size == n_frames:
            angles = all_angles[index["projections"]]
        elif all_angles.size == index["projections"].size:
            angles = all_angles
        else:
            raise ScanFormatError(
                f"{all_angles.size} rotation angles for {n_frames} frames "
                f"({index['projections'].size} projections)",
                where=f"{filename}:{grp[angle_path].name}", value=all_angles.size,
                fix="pass angles= (radians, one per projection) to open_scan")
        angles_source = f"{filename}:{grp[angle_path].name}"

    pixel, pixel_path = read_quantity(grp, [("sample/x_pixel_size", "m"),
                                            ("instrument/detector/x_pixel_size", "m")],
                                      "length", filename)
    energy, energy_path = read_quantity(grp, [("instrument/beam/incident_energy", "keV"),
                                              ("beam/incident_energy", "keV"),
                                              ("instrument/source/energy", "keV")],
                                        "energy", filename)
    distance, distance_path = read_quantity(grp, [("instrument/detector/distance", "m"),
                                                  ("sample/propagation_distance", "m")],
                                            "length", filename)
    metadata = {"pixel_size": pixel, "energy": energy, "distance": distance,
                "pixel_size_path": pixel_path, "energy_path": energy_path,
                "distance_path": distance_path, "entry": entry,
                "alignment_frames": n_alignment or None}
    frames = {"angle": index["projections"], "flat": index["flats"], "dark": index["darks"]}
    looked = {"flats": f"{grp[key_path].name} == 1", "darks": f"{grp[key_path].name} == 2"}
    return dict(
        projections=parts["projections"], angles=angles,
        flats=parts.get("flats"), darks=parts.get("darks"),
        layout=layout, stored_chunks={v: _stored_chunk(data) for v in parts}, frames=frames,
        paths=paths, metadata=metadata, angles_source=angles_source, looked_for=looked,
        angles_unit=angles_unit)


def read_hdf5(filename, *, layout="auto", entry=None, read_angles=True) -> dict:
    """Describe a scan in one of the HDF5 layouts: keyword arguments for ``build_scan``.

    Reads metadata only; see :func:`tomolab.io.open_scan`.
    """
    import warnings

    import h5py

    try:
        f = h5py.File(filename, "r", locking=False)
    except OSError as exc:
        reason = str(exc).splitlines()[0]
        raise ScanFormatError(
            f"h5py cannot open the file ({reason}); it is truncated or corrupt",
            where=filename,
            fix="copy the file again from its source (compare sizes), or wait until the "
                "acquisition has finished writing it") from None
    with f:
        if layout == "auto":
            layout = detect_layout(f)
            if layout is None:
                raise _no_layout_error(filename, f, list(HDF5_LAYOUTS))
        if layout == "dxchange":
            if not _is_dataset(f, "/exchange/data"):
                raise _no_layout_error(filename, f, ["dxchange"])
            return _with_root_attrs(f, _open_dxchange(filename, f, read_angles=read_angles))
        entries = [e for e, kind in _nxtomo_entries(f) if kind == layout]
        if entry is not None:
            wanted = "/" + entry.strip("/")
            match = [e for e in entries if e == wanted or e.startswith(wanted + "/")]
            if not match:
                raise ScanFormatError(
                    f"no {layout} entry of that name (found: {', '.join(entries) or 'none'})",
                    where=f"{filename}:entry", value=entry,
                    fix="pass one of the entries found" if entries else
                        "open the file without entry=, or pass layout=")
            chosen = match[0]
        elif not entries:
            raise _no_layout_error(filename, f, [layout])
        else:
            chosen = entries[0]
            if len(entries) > 1:
                warnings.warn(f"{filename}: {len(entries)} scans in this file "
                              f"({', '.join(entries)}); opened {chosen}. Pass entry= to open "
                              f"another.", UserWarning, stacklevel=3)
        return _with_root_attrs(f, _open_nxtomo(filename, f, chosen, layout, read_angles=read_angles))


def _with_root_attrs(f, spec: dict) -> dict:
    """Carry the file's root attributes (numbers and text) into the scan's attrs.

    They hold what the writer knew (tomolab's simulator stores its true centre
    and phantom there); attributes the layout already defines are not replaced.
    """
    metadata = spec.setdefault("metadata", {})
    for key, value in f.attrs.items():
        if key in metadata or key in ("NX_class", "default", "tomolab_output"):
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        if isinstance(value, (str, int, float, np.integer, np.floating)):
            metadata[key] = value
    return spec


def layout_paths(f, *, layout="auto", entry=None) -> dict:
    """Where a scan's frames live in an open HDF5 file, for readers that follow it as it grows.

    Reads no pixels and accepts empty datasets (a file whose acquisition has
    not started), unlike :func:`read_hdf5`.

    Parameters
    ----------
    f : h5py.File
        An open file (also one opened for SWMR reading).
    layout : {"auto", "dxchange", "nxtomo", "nxtomo-diamond"}
    entry : str, optional
        NXtomo entry (the first one by default).

    Returns
    -------
    dict
        ``layout``; ``entry`` (NXtomo) or None; HDF5 paths ``projections``,
        ``flats``, ``darks`` (DXchange: three datasets, flats or darks None
        when absent; NXtomo: the one detector dataset, with ``image_key``
        telling the frames apart), ``image_key`` (NXtomo) or None, ``angles``
        or None; ``angle_factor``: multiply the stored angles by it for
        radians.

    Examples
    --------
    >>> import h5py, io
    >>> f = h5py.File(io.BytesIO(), "w")
    >>> _ = f.create_dataset("/exchange/data", (0, 2, 3), "u2", maxshape=(None, 2, 3))
    >>> _ = f.create_dataset("/exchange/theta", (0,), "f8", maxshape=(None,))
    >>> paths = layout_paths(f)
    >>> paths["layout"], paths["projections"], paths["flats"], paths["angles"]
    ('dxchange', '/exchange/data', None, '/exchange/theta')
    >>> round(paths["angle_factor"] * 180, 6)  # no units attribute: degrees, as DXchange writes
    3.141593
    """
    where = getattr(f, "filename", "the file")
    if layout == "auto":
        layout = detect_layout(f)
        if layout is None:
            raise _no_layout_error(where, f, list(HDF5_LAYOUTS))
    if layout == "dxchange":
        if not _is_dataset(f, "/exchange/data"):
            raise _no_layout_error(where, f, ["dxchange"])
        found = {name: path if _is_dataset(f, path) else None for name, path in
                 (("flats", "/exchange/data_white"), ("darks", "/exchange/data_dark"),
                  ("angles", "/exchange/theta"))}
        paths = {"layout": layout, "entry": None, "projections": "/exchange/data",
                 "image_key": None, **found}
    elif layout in ("nxtomo", "nxtomo-diamond"):
        entries = [e for e, kind in _nxtomo_entries(f) if kind == layout]
        if entry is not None:
            wanted = "/" + entry.strip("/")
            entries = [e for e in entries if e == wanted or e.startswith(wanted + "/")]
        if not entries:
            raise _no_layout_error(where, f, [layout])
        grp = f[entries[0]]
        diamond = layout == "nxtomo-diamond"
        data = _first(grp, ("data/data", "instrument/detector/data") if diamond else
                      ("instrument/detector/data", "data/data"))
        key = _first(grp, ("instrument/detector/image_key_control",
                           "instrument/detector/image_key", "data/image_key"))
        angles = _first(grp, ("data/rotation_angle", "sample/rotation_angle") if diamond else
                        ("sample/rotation_angle", "data/rotation_angle"))
        if data is None or key is None:
            raise ScanFormatError("NXtomo entry lacks detector data or image_key",
                                  where=f"{where}:{entries[0]}",
                                  fix="check the entry= name, or pass layout=")
        full = grp[data].name
        paths = {"layout": layout, "entry": entries[0], "projections": full, "flats": full,
                 "darks": full, "image_key": grp[key].name,
                 "angles": grp[angles].name if angles else None}
    else:
        raise ScanFormatError("not an HDF5 scan layout", where="layout", value=layout,
                              fix=f"pass one of: auto, {', '.join(HDF5_LAYOUTS)}")
    paths["angle_factor"] = 1.0
    if paths["angles"] is not None:
        unit = units_of(f[paths["angles"]]) or "degree"
        try:
            paths["angle_factor"] = float(to_radians(1.0, unit))
        except ValueError:
            raise ScanFormatError(f"rotation angles have an unknown unit {unit!r}",
                                  where=f"{where}:{paths['angles']}", value=unit,
                                  fix="write the angles in degrees or radians (units "
                                      "attribute 'degree' or 'rad')") from None
    return paths
