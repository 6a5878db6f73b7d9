"""One CUDA MPS client: try device allocations and print one JSON line per try.

Used by ``check_mps.sh``. Allocates through the CUDA driver API (a raw
``cuMemAlloc``, what every library ends in), CuPy or PyTorch, frees each
allocation before the next try, and can hold the first one that succeeds for
a while, so that two clients are resident at once. With ``--probe`` it also
finds the largest single allocation that succeeds (to 64 MiB).

Examples
--------
``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=2G python mps_client.py --name A --lib driver --sizes 1G,3G``
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

GiB = 1 << 30
MiB = 1 << 20


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": MiB, "G": GiB}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * scale)


class Driver:
    """The CUDA driver API through ctypes: a context, cuMemAlloc/cuMemFree, cuMemGetInfo."""

    def __init__(self):
        self.cu = ctypes.CDLL("libcuda.so.1")
        self._check(self.cu.cuInit(0), "cuInit")
        dev = ctypes.c_int()
        self._check(self.cu.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
        self.ctx = ctypes.c_void_p()
        self._check(self.cu.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), dev), "cuDevicePrimaryCtxRetain")
        self._check(self.cu.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")

    def error_name(self, code: int) -> str:
        name = ctypes.c_char_p()
        self.cu.cuGetErrorName(code, ctypes.byref(name))
        return (name.value or b"?").decode()

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            raise RuntimeError(f"{what}: {self.error_name(code)} ({code})")

    def mem_info(self):
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self._check(self.cu.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "cuMemGetInfo")
        return free.value, total.value

    def alloc(self, nbytes: int):
        ptr = ctypes.c_uint64()
        code = self.cu.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(nbytes))
        if code != 0:
            raise MemoryError(self.error_name(code))
        return ptr

    def free(self, ptr) -> None:
        self._check(self.cu.cuMemFree_v2(ptr), "cuMemFree")


class CuPy:
    def __init__(self):
        import cupy

        self.cupy = cupy
        cupy.cuda.Device(0).use()

    def mem_info(self):
        return self.cupy.cuda.runtime.memGetInfo()

    def alloc(self, nbytes):
        try:
            return self.cupy.empty(nbytes, dtype=self.cupy.uint8)
        except self.cupy.cuda.memory.OutOfMemoryError as e:
            raise MemoryError(str(e).splitlines()[0]) from None
        except self.cupy.cuda.runtime.CUDARuntimeError as e:
            raise MemoryError(str(e)) from None

    def free(self, arr):
        del arr
        self.cupy.get_default_memory_pool().free_all_blocks()


class Torch:
    def __init__(self):
        import torch

        self.torch = torch
        torch.cuda.init()

    def mem_info(self):
        return self.torch.cuda.mem_get_info(0)

    def alloc(self, nbytes):
        try:
            return self.torch.empty(nbytes, dtype=self.torch.uint8, device="cuda:0")
        except self.torch.cuda.OutOfMemoryError as e:
            raise MemoryError(str(e).split(".")[0]) from None
        except RuntimeError as e:
            raise MemoryError(str(e).splitlines()[0]) from None

    def free(self, arr):
        del arr
        self.torch.cuda.empty_cache()


LIBS = {"driver": Driver, "cupy": CuPy, "torch": Torch}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--lib", choices=sorted(LIBS), default="driver")
    p.add_argument("--sizes", default="", help="comma-separated sizes to try one after the other, e.g. 1G,3G")
    p.add_argument("--hold", type=float, default=0, help="seconds to keep the first successful allocation")
    p.add_argument("--probe", action="store_true", help="find the largest single allocation (64 MiB steps)")
    args = p.parse_args(argv)
    base = {"client": args.name, "lib": args.lib, "pid": os.getpid(),
            "limit_env": os.environ.get("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"),
            "pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY")}

    def say(**kw):
        print(json.dumps({**base, "t": round(time.time(), 2), **kw}), flush=True)

    try:
        lib = LIBS[args.lib]()
        free, total = lib.mem_info()
    except (OSError, RuntimeError, ImportError, MemoryError) as e:  # no context (e.g. refused by MPS)
        say(event="context", ok=False, error=f"{type(e).__name__}: {e}")
        return 1
    say(event="context", ok=True, free_mib=free // MiB, total_mib=total // MiB)
    held = None
    for text in filter(None, args.sizes.split(",")):
        n = parse_size(text)
        try:
            buf = lib.alloc(n)
        except MemoryError as e:
            say(event="alloc", size=text, ok=False, error=str(e)[:200])
            continue
        say(event="alloc", size=text, ok=True)
        if held is None and args.hold:
            held = buf
        else:
            lib.free(buf)
    if held is not None:
        time.sleep(args.hold)
        lib.free(held)
    if args.probe:
        lo, hi = 0, 96 * GiB // (64 * MiB)  # in 64 MiB units: lo succeeds, hi fails
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                buf = lib.alloc(mid * 64 * MiB)
            except MemoryError:
                hi = mid
            else:
                lib.free(buf)
                lo = mid
        say(event="probe", largest_mib=lo * 64)
    return 0


if __name__ == "__main__":
    sys.exit(main())
