"""Every GPU kernel launch the code makes, checked on the CPU against the kernel's CUDA signature.

CuPy passes a kernel's arguments by their own types: a numpy ``int32`` as 4 bytes, an ``int64``
or a Python ``int`` as 8, an array as its pointer, with no check against the parameters. An
argument of the wrong width or one too many or too few shifts every one after it, and that
only shows on a GPU (as garbage, or as an illegal address). So here the launches are made by
the modules' own code from numpy arrays (the projector builds its launch list itself; gridrec
runs its GPU branch with numpy in place of CuPy and a module that records each launch instead
of running it), and each is checked against the parameters parsed from the CUDA text it would
run: their number, each scalar's width and kind, each pointer's element type against the
array's dtype, the block against ``__launch_bounds__``, the grid against CUDA's limits, and the
dynamic shared memory against the kernel's ``extern __shared__`` array and the 48 KiB a launch
gets without opting in.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess

import numpy as np
import pytest

from tomolab.recon import project

# the module (``tomolab.recon.gridrec`` is also the name of the function the package exports)
gridrec_module = importlib.import_module("tomolab.recon.gridrec")

#: what a scalar parameter must be passed as
_SCALARS = {"int": np.int32, "unsigned": np.uint32, "unsigned int": np.uint32,
            "long long": np.int64, "unsigned long long": np.uint64, "size_t": np.uint64,
            "float": np.float32, "double": np.float64}
#: the dtypes an array may have for a pointer to each element type
_POINTEES = {"float": {"float32"}, "float2": {"float32", "complex64"}, "float4": {"float32"},
             "double": {"float64"}, "int": {"int32"}, "unsigned short": {"uint16", "float16"},
             "unsigned long long": {"uint64"}, "__half2": {"float16"}}
_SIGNATURE = re.compile(r'extern "C"\s+__global__\s+void\s+(?:__launch_bounds__\((\w+)\)\s+)?'
                        r'(\w+)\s*\(([^)]*)\)')
#: dynamic shared memory a launch gets without cudaFuncSetAttribute (CuPy does not set it here)
_SHARED_LIMIT = 48 * 1024


def kernel_signatures(source: str, defines: dict | None = None) -> dict:
    """``{name: (params, launch_bound, uses_dynamic_shared)}`` of the kernels in ``source``.

    ``params`` is ``[(type, is_pointer)]``; ``value_t`` and launch bounds given by macros are
    resolved from ``defines`` (``HALF_VALUES``, ``THREADS``) as the preprocessor would.
    """
    defines = dict(defines or {})
    value_t = "__half2" if "HALF_VALUES" in defines else "float2"
    kernels = {}
    for match in _SIGNATURE.finditer(source):
        bound, name, text = match.groups()
        params = []
        for param in text.split(","):
            words = param.replace("*", " * ").replace("__restrict__", " ").split()
            words = [w for w in words if w != "const"]
            pointer = "*" in words
            kind = " ".join(w for w in words[:-1] if w != "*")
            params.append((value_t if kind == "value_t" else kind, pointer))
        if bound is not None:
            bound = int(defines.get(bound, bound))
        # the body, to the brace that closes it
        start = source.index("{", match.end())
        depth, end = 0, start
        for end in range(start, len(source)):
            depth += {"{": 1, "}": -1}.get(source[end], 0)
            if depth == 0:
                break
        kernels[name] = (params, bound, "extern __shared__" in source[start:end])
    return kernels


def check_launch(signature, name, grid, block, args, shared_mem) -> list[str]:
    """What is wrong with one launch of kernel ``name`` (an empty list when nothing is)."""
    params, bound, dynamic_shared = signature
    problems = []
    if len(args) != len(params):
        return [f"{name}: {len(args)} arguments for {len(params)} parameters"]
    for i, (arg, (kind, pointer)) in enumerate(zip(args, params)):
        where = f"{name} argument {i} ({kind}{' *' if pointer else ''})"
        if pointer:
            if not isinstance(arg, np.ndarray):
                problems.append(f"{where}: {type(arg).__name__} where an array is needed")
            elif kind in _POINTEES and arg.dtype.name not in _POINTEES[kind]:
                problems.append(f"{where}: array of {arg.dtype.name}")
        elif kind not in _SCALARS:
            problems.append(f"{where}: no rule for this parameter type")
        elif type(arg) is not _SCALARS[kind]:
            # a Python int or float goes as 8 bytes; any other numpy type has its own width
            problems.append(f"{where}: passed as {type(arg).__name__}")
    grid, block = tuple(grid) + (1,) * (3 - len(grid)), tuple(block) + (1,) * (3 - len(block))
    if not (1 <= grid[0] < 2 ** 31 and 1 <= grid[1] <= 65535 and 1 <= grid[2] <= 65535):
        problems.append(f"{name}: grid {grid} outside CUDA's limits")
    threads = int(np.prod(block))
    if threads > (bound or 1024) or block[2] > 64:
        problems.append(f"{name}: block {block} over its {bound or 1024} threads")
    if shared_mem > _SHARED_LIMIT or (shared_mem > 0) != dynamic_shared:
        problems.append(f"{name}: {shared_mem} bytes of dynamic shared memory "
                        f"({'with' if dynamic_shared else 'without'} an extern __shared__ array)")
    return problems


def test_the_checker_finds_the_classic_mistakes():
    source = ('extern "C" __global__ void __launch_bounds__(THREADS) k(const float2* __restrict__ a,'
              ' int n, long long stride, float* out) { extern __shared__ float s[]; }')
    signature = kernel_signatures(source, {"THREADS": 256})["k"]
    a, out = np.zeros(4, np.complex64), np.zeros(4, np.float32)
    good = (a, np.int32(4), np.int64(16), out)
    assert check_launch(signature, "k", (1, 1), (256,), good, 64) == []
    assert check_launch(signature, "k", (1, 1), (256,), good[:3], 64)  # one short
    assert check_launch(signature, "k", (1,), (256,), (a, 4, np.int64(16), out), 64)  # Python int
    assert check_launch(signature, "k", (1,), (256,), (a, np.int32(4), np.int32(16), out), 64)
    assert check_launch(signature, "k", (1,), (256,), (out, np.int32(4), np.int64(16), a), 64)
    assert check_launch(signature, "k", (1,), (512,), good, 64)  # over __launch_bounds__
    assert check_launch(signature, "k", (1, 70000), (256,), good, 64)  # grid too high
    assert check_launch(signature, "k", (1,), (256,), good, 0)  # its shared array left empty
    assert check_launch(signature, "k", (1,), (256,), good, 64 * 1024)


# -- the projector pair (tomolab.recon.project)

_PROJECTOR_CASES = [
    # n_z, size, n_cols, n_angles, center, kernel (angles past _ADJOINT_ANGLES: several launches)
    (1, 37, 41, 30, 18.0, "z1"),
    (3, 29, 41, 2100, [13.2, 14.0, 15.9], "z1"),
    (6, 33, 26, 4500, 11.3, "z4"),
]


@pytest.mark.parametrize("n_z, size, n_cols, n_angles, center, kernel", _PROJECTOR_CASES)
@pytest.mark.parametrize("variant", project.VARIANTS)
def test_projector_launches_match_their_kernels(n_z, size, n_cols, n_angles, center, kernel,
                                                variant):
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    centers = np.broadcast_to(np.asarray(center, np.float64), (n_z,)).copy()
    slices = np.zeros((n_z, size, size), np.float32)
    sinograms = np.zeros((n_z, n_angles, n_cols), np.float32)
    launches = (project._forward_launches(np, slices, angles, centers, n_cols,
                                          np.zeros((n_z, n_angles, n_cols), np.float32), kernel,
                                          variant)
                + project._adjoint_launches(np, sinograms, angles, centers, size,
                                            np.zeros((n_z, size, size), np.float32), kernel,
                                            variant))
    assert len(launches) == 1 + -(-n_angles // project._ADJOINT_ANGLES)
    for name, source, grid, block, args, shared_mem in launches:
        signatures = kernel_signatures(source)
        assert list(signatures) == [name]
        assert check_launch(signatures[name], name, grid, block, args, shared_mem) == []


def test_the_default_projector_kernels_keep_their_names():
    """``variant=None`` runs the measured ``"v1"`` kernels (the names CuPy caches them by)."""
    angles = np.linspace(0, np.pi, 10, endpoint=False)
    for n_z, kernel in ((1, "z1"), (4, "z4")):
        centers = np.full(n_z, 4.0)
        forward = project._forward_launches(np, np.zeros((n_z, 9, 9), np.float32), angles,
                                            centers, 9, np.zeros((n_z, 10, 9), np.float32),
                                            "auto", None)
        adjoint = project._adjoint_launches(np, np.zeros((n_z, 10, 9), np.float32), angles,
                                            centers, 9, np.zeros((n_z, 9, 9), np.float32),
                                            "auto", None)
        assert [launch[0] for launch in forward + adjoint] == [f"forward_joseph_{kernel}",
                                                               f"adjoint_joseph_{kernel}"]


# -- gridrec (tomolab.recon.gridrec): its GPU branch run with numpy, each launch recorded

class _RecordingModule:
    """Stands for the ``cupy.RawModule`` of one set of ``-D`` options: records each launch."""

    def __init__(self, launches, width, pairs, half, vec=1):
        self.launches = launches
        self.defines = {"WIDTH": width, "PAIRS": pairs, "VEC": vec, "THREADS": 256,
                        **({"HALF_VALUES": 1} if half else {})}

    def get_function(self, name):
        def launch(grid, block, args, shared_mem=0):
            self.launches.append((name, self.defines, grid, block, args, shared_mem))
        return launch


def _record_gridrec(monkeypatch, sinograms, angles, **options):
    """The launches of gridrec's GPU branch for ``sinograms``, in order."""
    launches = []
    monkeypatch.setattr(gridrec_module, "_gpu_module",
                        lambda *key: _RecordingModule(launches, *key))
    monkeypatch.setattr(gridrec_module, "is_cupy", lambda array: True)
    # two pairs per step: several steps of the slab loop
    monkeypatch.setattr(gridrec_module, "batch_size", lambda *a, **k: 2)
    gridrec_module._gridrec(sinograms, angles, **options)
    return launches


@pytest.mark.parametrize("gather", gridrec_module.GATHERS)
@pytest.mark.parametrize("precision", ["single", "half"])
@pytest.mark.parametrize("n_z, n_angles, n_cols, size, pairs", [
    (1, 90, 64, 64, gridrec_module.GPU_PAIRS_PER_BLOCK),
    (5, 181, 150, 140, gridrec_module.GPU_PAIRS_PER_BLOCK),  # an odd slice, steps of 2 pairs
    (6, 400, 97, 33, 4),
])
def test_gridrec_launches_match_their_kernels(monkeypatch, gather, precision, n_z, n_angles,
                                              n_cols, size, pairs):
    rng = np.random.default_rng(n_z)
    sinograms = rng.standard_normal((n_z, n_angles, n_cols)).astype(np.float32)
    angles = np.sort(rng.uniform(0, np.pi, n_angles))
    launches = _record_gridrec(monkeypatch, sinograms, angles, center=n_cols / 2 + 0.3, size=size,
                               precision=precision, pairs=pairs, gather=gather)
    names = [launch[0] for launch in launches]
    steps = -(-((n_z + 1) // 2) // 2)
    expected = (["gridrec_pack", "gridrec_weight", "gridrec_gather", "gridrec_crop"]
                if gather == "tiles" else
                ["gridrec_pack", "gridrec_weight_nodes", "gridrec_gather_nodes", "gridrec_crop"])
    assert names == expected * steps
    for name, defines, grid, block, args, shared_mem in launches:
        signature = kernel_signatures(gridrec_module._CUDA_SOURCE, defines)[name]
        assert check_launch(signature, name, grid, block, args, shared_mem) == []


# -- gridrec's module compiles with every set of options the code can ask for

def _gridrec_options():
    """``(pairs, vec, half)`` that :func:`~tomolab.recon.gridrec._gpu_module` can be given: the
    tiles' pairs per block, and the nodes' pairs per thread with the loads that divide them."""
    fast = {(gridrec_module.GPU_PAIRS_PER_BLOCK, 1, half) for half in (False, True)}
    fast |= {(gridrec_module.GPU_NODE_PAIRS, gridrec_module._pairs_per_load(
        gridrec_module.GPU_NODE_PAIRS, gridrec_module.GPU_NODE_PAIRS, half), half)
        for half in (False, True)}
    every = {(pairs, vec, half) for half in (False, True) for pairs in range(1, 9)
             for vec in ((1, 2, 4) if half else (1, 2)) if pairs % vec == 0}
    return [pytest.param(*key, marks=() if key in fast else pytest.mark.slow)
            for key in sorted(every)]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("pairs, vec, half", _gridrec_options())
def test_the_gridrec_module_compiles_for_hopper(tmp_path, pairs, vec, half):
    """The default module (tiles) holds the nodes kernels too: they must compile for it to load."""
    source = tmp_path / "gridrec.cu"
    source.write_text(gridrec_module._CUDA_SOURCE)
    defines = [f"-DWIDTH={gridrec_module.WIDTH}", f"-DPAIRS={pairs}", f"-DVEC={vec}"]
    result = subprocess.run(["nvcc", "-arch=sm_90", "-c", str(source), "-o",
                             str(tmp_path / "g.o"), *defines,
                             *(["-DHALF_VALUES"] if half else [])],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
