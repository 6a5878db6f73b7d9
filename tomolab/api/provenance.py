"""The attrs every api output carries: where it came from and what made it."""

from __future__ import annotations

import datetime as _dt

__all__ = ["provenance"]


def provenance(scan, *, backend: str, normalize: bool, log: bool = True, **parameters) -> dict:
    """The common record of an output: source file, backend, corrections, version and time.

    ``parameters`` (the call's own options) are added as given.

    Examples
    --------
    >>> import xarray as xr
    >>> attrs = provenance(xr.Dataset(attrs={"source_file": "scan.h5"}), backend="numpy",
    ...                    normalize=True, filter="ramp")
    >>> attrs["source_file"], attrs["normalize"], attrs["filter"], "tomolab_version" in attrs
    ('scan.h5', 1, 'ramp', True)
    """
    from tomolab import __version__

    return {
        **parameters,
        "backend": backend,
        "normalize": int(normalize),
        "log": int(log),
        "source_file": str(scan.attrs.get("source_file") or ""),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tomolab_version": __version__,
    }
