"""Rows of many frames read from a file with ``pread``, in a loop that runs without the GIL.

:meth:`tomolab.io._lazy.HDF5Frames.read_into` reads the rows of a slab from each
frame with one ``os.preadv`` call per frame; each call gives the GIL up and
must take it back. Beside a thread that keeps the GIL (any pure-Python loop
in the same process), taking it back can wait for the interpreter's switch
interval (5 ms) on every frame: the read of a slab then stalls. Here the
whole loop of one reader thread is compiled by Numba with ``nogil=True`` and
calls ``pread`` itself, so a thread takes the GIL once per slab, not once
per frame.

Kept in its own module so that Numba is imported only where it is used, and
its on-disk cache is keyed to this module's function.
"""

import numba
from numba import types

# ssize_t pread(int fd, void *buf, size_t count, off_t offset); the buffer passed as an address
_pread = types.ExternalFunction("pread", types.intp(types.intc, types.uintp, types.uintp,
                                                    types.int64))


@numba.njit(nogil=True, cache=True)
def pread_frames(fd, offsets, first_byte, nbytes, address, stride):
    """Read ``nbytes`` at ``offsets[k] + first_byte`` of ``fd`` to ``address + k * stride``, each k.

    Returns -1 when all were read, else the first ``k`` that could not be
    read whole (an error or the end of the file): the caller reads that one
    again with ``os.preadv`` to learn why.
    """
    for k in range(offsets.size):
        done = 0
        while done < nbytes:
            got = _pread(fd, address + k * stride + done, nbytes - done,
                         offsets[k] + first_byte + done)
            if got <= 0:
                return k
            done += got
    return -1
