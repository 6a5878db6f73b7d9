"""The ``.tomo`` accessor: the api's functions as methods of a scan Dataset.

>>> import tomolab
>>> scan = tomolab.data.simulate_scan(64, n_rows=4, n_angles=90)
>>> volume = scan.tomo.reconstruct(center=scan.attrs["true_center"], backend="numpy")
>>> volume.dims
('z', 'y', 'x')

The accessor holds nothing but the Dataset: each call goes to the function of
the same name in :mod:`tomolab.api`, whose docstring applies.
"""

from __future__ import annotations

import xarray as xr


@xr.register_dataset_accessor("tomo")
class TomoAccessor:
    """``scan.tomo.reconstruct(...)`` is ``tomolab.reconstruct(scan, ...)``, and so on."""

    def __init__(self, scan: xr.Dataset):
        self._scan = scan

    def reconstruct(self, **options):
        """See :func:`tomolab.reconstruct`."""
        from tomolab.api.reconstruct import reconstruct
        return reconstruct(self._scan, **options)

    def find_center(self, **options):
        """See :func:`tomolab.find_center`."""
        from tomolab.api.center import find_center
        return find_center(self._scan, **options)

    def sweep_center(self, **options):
        """See :func:`tomolab.sweep_center`."""
        from tomolab.api.center import sweep_center
        return sweep_center(self._scan, **options)

    def describe(self) -> str:
        """See :func:`tomolab.io.describe`."""
        from tomolab.io import describe
        return describe(self._scan)
