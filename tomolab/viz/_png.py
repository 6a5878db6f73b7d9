"""The one PNG encoder: an 8-bit greyscale image of a 2D array, contrast from percentiles."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

#: the contrast stretch of every PNG tomolab writes: these percentiles map to black and white
PNG_PERCENTILES = (0.5, 99.5)


def png_bytes(image, *, percentiles=PNG_PERCENTILES) -> bytes:
    """An 8-bit greyscale PNG of a 2D array, contrast from percentiles of its finite values.

    Values at or below the lower percentile are black, at or above the upper
    one white; NaN is drawn as the lower percentile. The panel's preview and
    the CLI's ``middle_slice.png`` both come from here.

    Examples
    --------
    >>> import numpy as np
    >>> data = png_bytes(np.arange(12.0).reshape(3, 4))
    >>> data[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    from PIL import Image

    image = np.asarray(image, dtype=np.float64)
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, percentiles) if finite.size else (0.0, 1.0)
    scaled = np.clip((np.nan_to_num(image, nan=lo) - lo) / max(hi - lo, 1e-30), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray((scaled * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image, path, *, percentiles=PNG_PERCENTILES) -> None:
    """Write :func:`png_bytes` of ``image`` to ``path`` atomically (readers never see half a file).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> save_png(np.eye(4), folder / "eye.png")
    >>> (folder / "eye.png").read_bytes() == png_bytes(np.eye(4))
    True
    """
    data = png_bytes(image, percentiles=percentiles)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
