"""Slices of a volume as holoviews objects."""

from __future__ import annotations

import numpy as np

from tomolab.errors import ParameterError
from tomolab.viz._arrays import as_volume, block_downsample, contrast_limits, subsample

__all__ = [
    "SLICE_AXES",
    "datashader_available",
    "get_slice",
    "histogram",
    "in_length_unit",
    "length_unit",
    "slice_image",
    "value_label",
]

#: For each normal axis, the (horizontal, vertical) dims of the slice image.
SLICE_AXES = {"z": ("x", "y"), "y": ("x", "z"), "x": ("y", "z")}

#: Default largest side (pixels) of a slice sent to the browser without datashader.
MAX_SLICE_PIXELS = 1024


def datashader_available() -> bool:
    """True when datashader imports (enables holoviews ``rasterize``)."""
    try:
        import datashader  # noqa: F401
    except ImportError:
        return False
    return True


def _check_axis_index(vol, axis, index):
    if axis not in SLICE_AXES:
        raise ParameterError("axis must be one of 'z', 'y', 'x'", where="axis", value=axis)
    n = vol.sizes[axis]
    if not -n <= int(index) < n:
        raise ParameterError(f"index out of range for {axis} of length {n}",
                             where="index", value=index, fix=f"pass 0 <= index < {n}")
    return int(index) % n


def get_slice(volume, axis="z", index=0, *, max_pixels=MAX_SLICE_PIXELS):
    """Read one slice of ``volume`` (only that slice) as an in-memory DataArray.

    The slice has dims ``SLICE_AXES[axis][::-1]`` (rows, columns). When a
    side is longer than ``max_pixels`` the slice is block-averaged down
    (:func:`~tomolab.viz.block_downsample` in 2-D), so the browser never gets
    more than ``max_pixels**2`` values; ``attrs["block_factors"]`` then says
    by how much. ``max_pixels=None`` returns the full slice.

    Examples
    --------
    >>> import numpy as np
    >>> vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    >>> get_slice(vol, "z", 1).values.tolist()[0]
    [12, 13, 14, 15]
    """
    vol = as_volume(volume)
    index = _check_axis_index(vol, axis, index)
    hdim, vdim = SLICE_AXES[axis]
    plane = vol.isel({axis: index}).transpose(vdim, hdim)
    if max_pixels is not None and max(plane.shape) > max_pixels:
        plane = block_downsample(plane, (int(max_pixels), int(max_pixels)))
    plane = plane.compute() if plane.chunks is not None else plane
    plane.attrs.update({"slice_axis": axis, "slice_index": index})
    return plane


def with_coords(plane):
    """``plane`` with a coordinate on every dimension (voxel indices where it had none).

    HoloViews needs coordinates to place an image; this is what
    :func:`slice_image` and the slice viewer show.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> plane = with_coords(xr.DataArray(np.zeros((2, 3)), dims=("y", "x")))
    >>> plane["x"].values.tolist(), plane["y"].values.tolist()
    ([0, 1, 2], [0, 1])
    """
    for dim in plane.dims:
        if dim not in plane.coords:
            plane = plane.assign_coords({dim: np.arange(plane.sizes[dim])})
    return plane


#: display units for lengths given in metres: (name, metres per unit), smallest first
LENGTH_UNITS = (("µm", 1e-6), ("mm", 1e-3))


def length_unit(extent_m: float) -> tuple[str, float]:
    """The unit to show a length of ``extent_m`` metres in: µm below 2 mm, mm from there.

    Returns ``(name, metres per unit)``.

    Examples
    --------
    >>> length_unit(96e-6), length_unit(0.0041)
    (('µm', 1e-06), ('mm', 0.001))
    """
    return LENGTH_UNITS[1] if abs(extent_m) >= 2e-3 else LENGTH_UNITS[0]


def in_length_unit(plane, unit=None):
    """``plane`` with its metre coordinates in µm or mm (one unit for all), and that unit.

    Coordinates whose ``units`` attribute is ``"m"`` are divided by the unit
    (:func:`length_unit` of the largest extent unless ``unit`` is given) and get
    ``attrs["units"]`` of the unit; others (voxel indices) say ``"px"``. Returns
    ``(plane, {dim: unit name})``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> plane = xr.DataArray(np.zeros((2, 3)), dims=("y", "x"),
    ...                      coords={"y": ("y", [0.0, 1e-6], {"units": "m"}),
    ...                              "x": ("x", [0.0, 1e-6, 2e-6], {"units": "m"})})
    >>> shown, units = in_length_unit(plane)
    >>> shown["x"].values.round(6).tolist(), units
    ([0.0, 1.0, 2.0], {'y': 'µm', 'x': 'µm'})
    """
    plane = with_coords(plane)
    metric = [d for d in plane.dims if plane[d].attrs.get("units") == "m"]
    if unit is None:
        extent = max((float(np.ptp(plane[d].values)) for d in metric), default=0.0)
        unit = length_unit(extent)
    name, metres = unit
    units = {}
    for dim in plane.dims:
        if dim in metric:
            plane = plane.assign_coords({dim: (dim, plane[dim].values / metres, {"units": name})})
            units[dim] = name
        else:
            units[dim] = "px"
    return plane, units


def value_label(data) -> str:
    """How the values of a volume or slice are called on screen: ``"μ (1/m)"`` and the like.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> value_label(xr.DataArray(np.zeros(2), attrs={"units": "1/m"}))
    'μ (1/m)'
    >>> value_label(np.zeros(2))
    'value'
    """
    attrs = getattr(data, "attrs", {}) or {}
    units = attrs.get("units")
    name = "μ" if attrs.get("long_name") == "linear attenuation coefficient" or units == "1/m" \
        else "value"
    return f"{name} ({units})" if units else name


def slice_image(volume, axis="z", index=0, *, clim=None, cmap="gray",
                rasterize=None, max_pixels=MAX_SLICE_PIXELS, **opts):
    """One slice of a volume as a :class:`holoviews.Image` (bokeh backend).

    Parameters
    ----------
    volume : xarray.DataArray or array-like
        Volume with dims ``(z, y, x)``; lazy (dask/zarr) volumes read only
        the requested slice.
    axis : {'z', 'y', 'x'}
        Normal of the slice: ``'z'`` gives the ``xy`` plane, ``'y'`` the
        ``xz`` plane, ``'x'`` the ``yz`` plane.
    index : int
        Position along ``axis`` (voxel index).
    clim : (float, float), optional
        Display range; default: :func:`~tomolab.viz.contrast_limits` of the slice.
    cmap : str
        Colormap name.
    rasterize : bool, optional
        Wrap the image in ``holoviews.operation.datashader.rasterize`` so the
        browser only gets the pixels it shows, re-rendered on zoom (needs
        datashader and a live kernel). Default: when datashader is installed.
        Without it, slices with a side over ``max_pixels`` are block-averaged
        to fit instead (:func:`get_slice`), which keeps memory and transfer
        bounded at the cost of zoomed-in detail.
    max_pixels : int or None
        Largest side sent without rasterize.
    **opts
        More holoviews plot options (``width``, ``height``, ``title``, ...).

    Returns
    -------
    holoviews.Image, or the DynamicMap that ``rasterize`` returns.

    Examples
    --------
    >>> import numpy as np
    >>> img = slice_image(np.random.rand(4, 8, 8), "z", 2, rasterize=False)
    >>> type(img).__name__, img.kdims
    ('Image', [Dimension('x'), Dimension('y')])
    """
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401  (registers bokeh options; emits no JS)

    if rasterize is None:
        rasterize = datashader_available()
    plane = with_coords(get_slice(volume, axis, index,
                                   max_pixels=None if rasterize else max_pixels))
    hdim, vdim = SLICE_AXES[axis]
    if clim is None:
        clim = contrast_limits(plane)
    name = plane.name if plane.name is not None else "value"
    img = hv.Image(plane.rename(name), kdims=[hdim, vdim], vdims=[name])
    style = dict(cmap=cmap, clim=tuple(clim), data_aspect=1, colorbar=True,
                 invert_yaxis=True, tools=["hover"])
    style.update(opts)
    if rasterize:
        from holoviews.operation.datashader import rasterize as _rasterize
        return _rasterize(img).opts(**style)
    return img.opts(**style)


def histogram(data, *, bins=128, max_samples=1_000_000, range=None):
    """Histogram of a subsample of ``data`` as a :class:`holoviews.Histogram`.

    Examples
    --------
    >>> import numpy as np
    >>> h = histogram(np.random.rand(10, 10, 10), bins=10)
    >>> int(h.data["Frequency"].sum()) if "Frequency" in h.data else len(h.data)
    1000
    """
    import holoviews as hv

    values = subsample(data, max_samples)
    counts, edges = np.histogram(values, bins=bins, range=range)
    return hv.Histogram((edges, counts), kdims=["value"], vdims=["Frequency"])
