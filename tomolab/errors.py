"""Errors that tell a user what went wrong and how to fix it.

Every error raised for bad input names *where* (a file, an HDF5 path, a
parameter), *what* (the offending value) and *the fix*. The CLI prints the
message as one line and exits non-zero; notebooks show it as it is.
"""

from __future__ import annotations

__all__ = ["TomolabError", "ScanFormatError", "ParameterError", "OutputError", "Cancelled"]


class TomolabError(ValueError):
    """Base class for every error tomolab raises on bad input.

    Parameters
    ----------
    what : str
        What is wrong, in one sentence.
    where : str, optional
        The file, HDF5 path or parameter name involved.
    value : object, optional
        The offending value (shown with ``repr``).
    fix : str, optional
        What the user can do about it.

    Examples
    --------
    >>> err = TomolabError("centre is outside the detector", where="center",
    ...                    value=900.0, fix="pass a column in [0, 511]")
    >>> print(err)
    center=900.0: centre is outside the detector; fix: pass a column in [0, 511]
    """

    def __init__(self, what: str, *, where: str | None = None, value=None,
                 fix: str | None = None):
        self.what = what
        self.where = where
        self.value = value
        self.fix = fix
        super().__init__(self._format())

    def _format(self) -> str:
        head = ""
        if self.where is not None:
            head = str(self.where)
            if self.value is not None:
                head += f"={self.value!r}"
            head += ": "
        elif self.value is not None:
            head = f"{self.value!r}: "
        message = head + self.what
        if self.fix:
            message += f"; fix: {self.fix}"
        return message


class ScanFormatError(TomolabError):
    """A file or folder is missing, unreadable, or in no layout tomolab knows."""


class ParameterError(TomolabError):
    """A parameter is out of range or inconsistent with the data."""


class OutputError(TomolabError):
    """An output cannot be written: disk full, read-only, no permission, or another run writes it."""


class Cancelled(RuntimeError):
    """Raised when a long computation is cancelled by the user (a button, a callback)."""
