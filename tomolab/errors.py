"""Errors that tell a user what went wrong and how to fix it.

Every error raised for bad input names *where* (a file, an HDF5 path, a
parameter), *what* (the offending value) and *the fix*. The CLI prints the
message as one line and exits non-zero; notebooks show it as it is.
"""

from __future__ import annotations

import re

__all__ = ["TomolabError", "ScanFormatError", "ParameterError", "InsufficientMemory", "OutputError",
           "Cancelled"]


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

    def renamed(self, names: dict) -> TomolabError:
        """The same error told in other names: flags for the CLI, labels for a widget.

        Parameters
        ----------
        names : dict
            ``{"center": "--center", "overwrite=True": "--overwrite", ...}``.
            A keyword is replaced where it is the error's ``where`` (or begins
            it) and where the message writes it as a keyword (``center=``),
            a name with an underscore (``n_rows``) wherever it stands;
            a key with a value (``"overwrite=True"``) replaces that exact
            spelling first. A flag (a name starting with ``-``) takes its
            value after a space (``--rows 0:8``), any other name after
            ``": "``.

        Returns
        -------
        TomolabError
            A new error of the same class; this one is left as it is.

        Examples
        --------
        >>> err = ParameterError("slice size must be positive", where="size", value=0,
        ...                      fix="omit it or pass size=512; rows='0:8' or overwrite=True")
        >>> print(err.renamed({"size": "--size", "rows": "--rows", "overwrite=True": "--overwrite"}))
        --size=0: slice size must be positive; fix: omit it or pass --size 512; --rows '0:8' or --overwrite
        >>> print(err.renamed({"size": "Slice width"}))
        Slice width=0: slice size must be positive; fix: omit it or pass Slice width: 512; rows='0:8' or overwrite=True
        """
        def keyword(text):
            if not text:
                return text
            for key in sorted(names, key=len, reverse=True):
                new = names[key]
                if "=" in key:
                    text = re.sub(rf"(?<![\w.-]){re.escape(key)}(?![\w])", new, text)
                    continue
                glue = " " if new.startswith("-") else ": "
                # `key=value` becomes `new value`; a bare `key=` (no value follows) just `new`
                text = re.sub(rf"(?<![\w.-]){re.escape(key)}=(?=[^\s,;)])", new + glue, text)
                text = re.sub(rf"(?<![\w.-]){re.escape(key)}=", new, text)
                if "_" in key:  # an identifier (n_rows), never an English word: bare mentions too
                    text = re.sub(rf"(?<![\w.'\"-]){re.escape(key)}(?![\w'\"])", new, text)
            return text

        where = self.where
        if isinstance(where, str):  # a parameter (``center``, ``centers[3]``), never a file's path
            for key in sorted(names, key=len, reverse=True):
                if "=" not in key and re.match(rf"{re.escape(key)}(?![\w/.:])", where):
                    where = names[key] + where[len(key):]
                    break
        err = type(self).__new__(type(self))
        TomolabError.__init__(err, keyword(self.what), where=where, value=self.value,
                              fix=keyword(self.fix))
        return err

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


class InsufficientMemory(ParameterError):
    """A request would not fit in the memory this process may use; refused before allocating.

    Raised by :func:`tomolab.devices.require_memory`; ``needed`` and
    ``available`` are in bytes.
    """

    def __init__(self, what: str, *, where: str | None = None, value=None,
                 fix: str | None = None, needed: int = 0, available: int = 0):
        self.needed, self.available = int(needed), int(available)
        super().__init__(what, where=where, value=value, fix=fix)


class OutputError(TomolabError):
    """An output cannot be written: disk full, read-only, no permission, or another run writes it."""


class Cancelled(RuntimeError):
    """Raised when a long computation is cancelled by the user (a button, a callback)."""
