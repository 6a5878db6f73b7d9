"""Try 100+ bad and adversarial inputs as a new user and an adversary would; classify each outcome.

Run from the repository root::

    PYTHONPATH=$PWD python benchmarks/probe_bad_inputs.py [--write] [--only WORD]

It probes the tomolab that ``PYTHONPATH`` selects (its subprocesses too), so the same script
measures another checkout (a "before"). As root it mounts two small tmpfs for the disk cases.

Every case runs on real small files in a temporary folder, through the api, the CLI (real
subprocesses) or the widgets' Python API, and is classified automatically:

clear
    a TomolabError (or a warning where the result stays right) whose one-line message names the
    place (file, field, parameter, flag or label), the value and a fix, in the caller's
    vocabulary (flags in the CLI, labels in widgets).
weak
    refused, but the message lacks one of those, is not one line or uses the wrong vocabulary.
bad
    a traceback, a crash, a hang (time limit per case), a silently wrong result, data lost or a
    partial left behind.

It prints a Markdown table by category and the list of weak and bad cases; ``--write`` appends
it to benchmarks/RESULTS.md under a dated section.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import filecmp
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import tomolab
from tomolab.errors import TomolabError

ROOT = Path(__file__).resolve().parents[1]
CASE_SECONDS = 60  # a case taking longer is a hang
# the subprocesses import the same tomolab as this script (the checkout on PYTHONPATH)
IMPORTED_FROM = Path(importlib.util.find_spec("tomolab").origin).resolve().parents[1]
# PYTHONSAFEPATH: `python -m` would put the working folder first on sys.path, so a probe run from
# one checkout's root would send its subprocesses to that checkout whatever PYTHONPATH says
ENV = dict(os.environ, PYTHONSAFEPATH="1",
           PYTHONPATH=str(IMPORTED_FROM) + os.pathsep + os.environ.get("PYTHONPATH", ""))

CATEGORIES = ["paths and overwrite", "concurrent writers", "changed input on resume", "kills",
              "disk and permissions", "metadata physics", "dtypes", "flats and darks",
              "TIFF stacks", "bool/float/zero parameters", "huge shapes and sizes", "CLI flags",
              "limited angles", "widgets"]


@dataclass
class Case:
    category: str
    name: str
    run: object  # () -> Outcome
    place: tuple = ()  # one of these must be in the message (file, parameter, flag, label)
    value: tuple = ()  # one of these must be in the message (the offending value)
    forbid: tuple = ()  # wrong vocabulary for this caller
    expect: str = "refuse"  # "refuse", "refuse_or_warn", "ok"
    check: object = None  # () -> problem text or None, run after the case (nothing lost, ...)


@dataclass
class Outcome:
    kind: str  # "error", "warning", "ok", "crash", "timeout"
    message: str = ""
    exc_type: str = ""
    tomolab: bool = False  # a TomolabError (or a widget's/CLI's tomolab line)
    problem: str | None = None  # from the case: a wrong result
    extra: dict = field(default_factory=dict)


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def api(fn, *, verify=None):
    """Run ``fn()`` in this process; an exception, warnings or a result (checked by ``verify``)."""
    def run():
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(CASE_SECONDS)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    result = fn()
                except Timeout:
                    return Outcome("timeout", f"no answer in {CASE_SECONDS} s")
                except TomolabError as exc:
                    return Outcome("error", str(exc), type(exc).__name__, tomolab=True)
                except Exception as exc:  # noqa: BLE001 -- classified, never re-raised
                    tb = traceback.format_exc(limit=-1).strip().splitlines()
                    return Outcome("error", str(exc), type(exc).__name__,
                                   extra={"at": tb[1].strip() if len(tb) > 1 else ""})
            problem = verify(result) if verify else None
            # tomolab's warnings (they point at the caller's line, so judge by where they come
            # from: a tomolab category, or raised inside tomolab)
            ours = [w for w in caught
                    if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning,
                                                   FutureWarning, ResourceWarning))
                    and (w.category.__module__.startswith("tomolab")
                         or "/tomolab/" in (w.filename or ""))]
            if ours:
                return Outcome("warning", " | ".join(str(w.message) for w in ours),
                               ours[0].category.__name__, tomolab=True, problem=problem)
            return Outcome("ok", problem=problem)
        finally:
            signal.alarm(0)
    return run


def run_cli(*args, cwd=None, timeout=CASE_SECONDS, env=None):
    # the installed ``tomolab`` command runs tomolab.cli:main
    return subprocess.run([sys.executable, "-m", "tomolab.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env or ENV, check=False)


def cli(*args, cwd=None, verify=None):
    """Run the ``tomolab`` command in a real subprocess."""
    def run():
        try:
            done = run_cli(*args, cwd=cwd)
        except subprocess.TimeoutExpired:
            return Outcome("timeout", f"no answer in {CASE_SECONDS} s")
        return cli_outcome(done, verify)
    return run


def cli_outcome(done, verify=None) -> Outcome:
    err = done.stderr.strip()
    if done.returncode < 0 or done.returncode > 128 or "Traceback" in err:
        return Outcome("crash", err[-300:], f"exit {done.returncode}")
    if done.returncode != 0:
        # one-line warnings said before the error (a scan of less than 180°) are not the error
        err = "\n".join(line for line in err.splitlines()
                        if not re.match(r"tomolab \w+: warning: ", line)) or err
        return Outcome("error", err, f"exit {done.returncode}",
                       tomolab=bool(re.match(r"tomolab \w+: error: ", err)))
    problem = verify(done) if verify else None
    warned = [line for line in err.splitlines() if ": warning: " in line]
    if warned:
        return Outcome("warning", " | ".join(warned), "warning", tomolab=True, problem=problem)
    return Outcome("ok", problem=problem)


def widget(fn):
    """Run ``fn()`` which acts on a widget and returns the error it shows ('' for none)."""
    def run():
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(CASE_SECONDS)
        try:
            shown = fn()
        except Timeout:
            return Outcome("timeout", f"no answer in {CASE_SECONDS} s")
        except Exception as exc:  # noqa: BLE001 -- classified, never re-raised
            name = type(exc).__name__
            return Outcome("error", str(exc), name, tomolab=name == "TraitError")
        finally:
            signal.alarm(0)
        if not shown:
            return Outcome("ok")
        raw = re.match(r"^[A-Z]\w*(Error|Exception|Warning): ", shown)
        return Outcome("error", shown, raw.group(0)[:-2] if raw else "shown", tomolab=not raw)
    return run


def classify(case: Case, out: Outcome) -> tuple[str, str]:
    """('clear' | 'weak' | 'bad', why)."""
    if out.kind in ("crash", "timeout"):
        return "bad", f"{out.kind}: {out.exc_type} {out.message[:160]}"
    if out.problem:
        return "bad", out.problem
    if case.expect == "ok":
        if out.kind == "error":
            return "bad", f"refused what should work: {out.message[:160]}"
        return "clear", "worked" + (f" (said: {out.message[:100]})" if out.message else "")
    if out.kind == "ok":
        return "bad", "accepted silently"
    if out.kind == "warning" and case.expect != "refuse_or_warn":
        return "bad", f"only a warning: {out.message[:160]}"
    if not out.tomolab:
        at = f" at {out.extra['at']}" if out.extra.get("at") else ""
        if out.exc_type in ("FileNotFoundError", "PermissionError", "OSError", "IsADirectoryError",
                            "NotADirectoryError"):
            return "weak", f"raw {out.exc_type}: {out.message[:160]}"
        if out.exc_type.startswith("exit"):
            return "weak", f"not tomolab's line: {out.message[:200]!r}"
        return "bad", f"raw {out.exc_type}{at}: {out.message[:160]}"
    msg = out.message
    missing = []
    lines = [line for line in msg.splitlines() if line.strip()]
    if len(lines) > 1:
        missing.append("one line")
    low = msg.lower()
    if case.place and not any(p.lower() in low for p in case.place):
        missing.append(f"place {case.place[0]!r}")
    if case.value and not any(str(v).lower() in low for v in case.value):
        missing.append(f"value {case.value[0]!r}")
    if "fix" not in low and " pass " not in low and "use " not in low:
        missing.append("a fix")
    # a keyword where the caller knows a flag or a label ("rows=" but not "--rows=")
    wrong = [f for f in case.forbid if re.search(rf"(?<![\w-]){re.escape(f)}", msg)]
    if wrong:
        missing.append(f"vocabulary ({wrong[0]!r})")
    if missing:
        return "weak", f"lacks {', '.join(missing)}: {msg[:220]!r}"
    return "clear", msg[:160]


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------

class Fixtures:
    def __init__(self, root: Path):
        self.root = root
        self.proj, self.angles, self.flats, self.darks, self.params = \
            tomolab.data.simulate_arrays(64, 4, 90)
        self.meta = {"pixel_size": self.params.pixel_size, "energy": self.params.energy,
                         "distance": self.params.distance}
        self.master = root / "master.h5"
        tomolab.io.write_dxchange(self.master, self.proj, self.angles, self.flats, self.darks,
                                  **self.meta)
        p2, a2, f2, d2, _ = tomolab.data.simulate_arrays(64, 4, 90, center=36.0, seed=7)
        self.other = root / "other.h5"
        tomolab.io.write_dxchange(self.other, p2, a2, f2, d2, **self.meta)
        # a bigger scan for kills: long enough to be killed mid-run
        self.big = root / "big.h5"
        pb, ab, fb, db, _ = tomolab.data.simulate_arrays(128, 48, 180)
        tomolab.io.write_dxchange(self.big, pb, ab, fb, db, **self.meta)
        pb2, _, fb2, db2, _ = tomolab.data.simulate_arrays(128, 48, 180, center=70.0, seed=3)
        self.big_other = root / "big_other.h5"
        tomolab.io.write_dxchange(self.big_other, pb2, ab, fb2, db2, **self.meta)
        self.n = 0

    def folder(self, name: str) -> Path:
        self.n += 1
        path = self.root / f"{self.n:03d}_{name}"
        path.mkdir()
        return path

    def scan_file(self, name: str, source=None) -> Path:
        folder = self.folder(name)
        path = folder / "scan.h5"
        shutil.copy(source or self.master, path)
        return path

    def scan(self, **changes):
        kw = {"projections": self.proj, "angles": self.angles, "flats": self.flats, "darks": self.darks}
        kw.update(changes)
        meta = dict(self.meta)
        for key in ("pixel_size", "energy", "distance"):
            if key in kw:
                meta[key] = kw.pop(key)
        return tomolab.from_arrays(kw.pop("projections"), kw.pop("angles"), **kw, **meta)

    def volume(self):
        return tomolab.reconstruct(tomolab.open_scan(self.master), center=32.0, backend="numpy")


def intact(path: Path, reference: Path):
    def check():
        if not path.exists():
            return f"data lost: {path.name} is gone"
        if path.is_file() and not filecmp.cmp(path, reference, shallow=False):
            return f"data lost: {path.name} changed"
        return None
    return check


def no_partials(folder: Path, allowed=()):
    """Nothing half-written left in ``folder`` besides ``allowed`` names."""
    def check():
        stray = [p.name for p in folder.iterdir() if p.name not in allowed
                 and not p.name.endswith(".lock")  # an flock's file: harmless when left
                 and (".partial" in p.name or p.name.startswith(".") or p.name.endswith(".tmp")
                      or "tmp" in p.name)]
        return f"partial left behind: {stray}" if stray else None
    return check


def both(*checks):
    def check():
        for c in checks:
            problem = c()
            if problem:
                return problem
        return None
    return check


# --------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------

def build_cases(fx: Fixtures) -> list[Case]:
    cases: list[Case] = []
    master = fx.master

    def add(category, name, run, **kw):
        cases.append(Case(category, name, run, **kw))

    RECON_API = ("center=", "rows=", "overwrite=True", "size=")  # keywords in a CLI message
    # -- paths and overwrite ----------------------------------------------------------------
    cat = "paths and overwrite"
    p = fx.scan_file("out_is_input")
    add(cat, "cli recon -o SCAN --overwrite (the input)",
        cli("recon", p, "-o", p, "--overwrite", "-q", "--center", "36"),
        place=("-o/--output", "--overwrite", str(p)), value=(str(p), p.name),
        forbid=RECON_API, check=intact(p, master))
    p = fx.scan_file("out_is_folder")
    (p.parent / "logbook.txt").write_text("beamtime notes")
    add(cat, "cli recon -o FOLDER-WITH-SCAN --overwrite",
        cli("recon", p, "-o", p.parent, "--overwrite", "-q", "--center", "36"),
        place=("-o/--output", str(p.parent)), value=(str(p.parent), p.parent.name),
        forbid=RECON_API, check=both(intact(p, master), intact(p.parent / "logbook.txt",
                                                               p.parent / "logbook.txt")))
    p = fx.scan_file("out_is_cwd")
    add(cat, "cli recon -o . --overwrite (cwd holds the scan)",
        cli("recon", p.name, "-o", ".", "--overwrite", "-q", "--center", "36", cwd=p.parent),
        place=("-o/--output", "error: .:"), value=("'.'", "error: .:", str(p.parent)),
        forbid=RECON_API,
        check=intact(p, master))
    p = fx.scan_file("out_is_parent")
    inner = p.parent / "raw"
    inner.mkdir()
    shutil.move(p, inner / "scan.h5")
    p = inner / "scan.h5"
    add(cat, "cli recon -o PARENT-OF-INPUT --overwrite",
        cli("recon", p, "-o", p.parent.parent, "--overwrite", "-q", "--center", "36"),
        place=("-o/--output", str(p.parent.parent)), value=(str(p.parent.parent),),
        forbid=RECON_API,
        check=intact(p, master))
    p = fx.scan_file("out_exists")
    (p.parent / "vol.h5").write_bytes(b"old")
    add(cat, "cli recon -o EXISTING (no --overwrite)",
        cli("recon", p, "-o", p.parent / "vol.h5", "-q", "--center", "36"),
        place=("-o/--output",), value=("vol.h5",), forbid=RECON_API,
        check=intact(p.parent / "vol.h5", p.parent / "vol.h5"))
    d = fx.folder("foreign_h5")
    (d / "notes.h5").write_bytes(b"my notes, not tomolab's")
    add(cat, "api save_volume over a foreign file, overwrite=True",
        api(lambda d=d: tomolab.save_volume(fx.volume(), d / "notes.h5", overwrite=True)),
        place=("notes.h5", "path"), value=("notes.h5",), check=lambda d=d: None
        if (d / "notes.h5").read_bytes() == b"my notes, not tomolab's" else "data lost: notes.h5")
    p = fx.scan_file("recon_to_input")
    add(cat, "api reconstruct_to(path=the input scan, overwrite=True)",
        api(lambda p=p: tomolab.reconstruct_to(tomolab.open_scan(p), p, center=36.0,
                                               overwrite=True, backend="numpy")),
        place=("path", str(p)), value=(str(p), "scan.h5"), check=intact(p, master))
    d = fx.folder("bad_suffix")
    add(cat, "api save_volume to 'vol.xyz' (unknown format)",
        api(lambda d=d: tomolab.save_volume(fx.volume(), d / "vol.xyz")),
        place=("format", "path", "vol.xyz"), value=("vol.xyz", ".xyz"), check=no_partials(d))
    d = fx.folder("bad_format")
    add(cat, "api save_volume format='nope'",
        api(lambda d=d: tomolab.save_volume(fx.volume(), d / "v.zarr", format="nope")),
        place=("format",), value=("nope",))
    d = fx.folder("missing")
    add(cat, "cli info MISSING.h5", cli("info", d / "missing.h5"),
        place=("missing.h5",), value=("missing.h5",))
    d = fx.folder("empty_dir")
    add(cat, "cli info EMPTY-FOLDER", cli("info", d), place=(str(d), d.name), value=(d.name,))
    d = fx.folder("text_as_h5")
    (d / "scan.h5").write_text("this is not HDF5")
    add(cat, "cli info TEXT-FILE.h5", cli("info", d / "scan.h5"),
        place=("scan.h5",), value=("scan.h5",))
    d = fx.folder("empty_file")
    (d / "scan.h5").write_bytes(b"")
    add(cat, "api open_scan(empty file)", api(lambda d=d: tomolab.open_scan(d / "scan.h5")),
        place=("scan.h5",), value=("scan.h5",))
    d = fx.folder("truncated")
    data = master.read_bytes()
    (d / "scan.h5").write_bytes(data[: len(data) // 2])
    add(cat, "api open_scan(truncated HDF5) then compute",
        api(lambda d=d: tomolab.reconstruct(tomolab.open_scan(d / "scan.h5"), center=36.0,
                                            backend="numpy")),
        place=("scan.h5",), value=("scan.h5",))
    d = fx.folder("sim_foreign")
    (d / "thesis.h5").write_bytes(b"chapter 1")
    add(cat, "cli simulate OUT=foreign file --overwrite",
        cli("simulate", d / "thesis.h5", "--size", "32", "--overwrite", "-q"),
        place=("OUTPUT", "--overwrite", "thesis.h5"), value=("thesis.h5",),
        forbid=("overwrite=True",),
        check=lambda d=d: None if (d / "thesis.h5").read_bytes() == b"chapter 1"
        else "data lost: thesis.h5")
    d = fx.folder("zarr_is_file")
    (d / "out.zarr").write_text("a file named like a store")
    p = fx.scan_file("zarr_is_file_scan")
    add(cat, "cli recon -o FILE.zarr (a plain file) --overwrite",
        cli("recon", p, "-o", d / "out.zarr", "--overwrite", "-q", "--center", "36"),
        place=("-o/--output", "out.zarr"), value=("out.zarr",), forbid=RECON_API,
        check=lambda d=d: None if (d / "out.zarr").read_text() == "a file named like a store"
        else "data lost: out.zarr")
    add(cat, "api open_scan('~/nope/none.h5')", api(lambda: tomolab.open_scan("~/nope/none.h5")),
        place=("none.h5",), value=("none.h5",))
    d = fx.folder("file_as_dir")
    (d / "afile").write_text("x")
    add(cat, "api save_volume to 'afile/vol.zarr' (parent is a file)",
        api(lambda d=d: tomolab.save_volume(fx.volume(), d / "afile" / "vol.zarr")),
        place=("afile", "vol.zarr"), value=("afile",),
        check=lambda d=d: None if (d / "afile").read_text() == "x" else "data lost: afile")

    # -- concurrent writers -----------------------------------------------------------------
    cat = "concurrent writers"
    p = fx.scan_file("two_runs", fx.big)

    def two_cli_runs(p=p):
        out = p.parent / "vol.zarr"
        args = [sys.executable, "-m", "tomolab.cli", "recon", str(p), "-o", str(out), "-q",
                "--center", "64", "--backend", "numpy"]
        procs = [subprocess.Popen(args, env=ENV, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [(pr.wait(CASE_SECONDS), pr.stderr.read()) for pr in procs]
        ok = [r for r in results if r[0] == 0]
        refused = [r for r in results if r[0] != 0]
        if not ok:
            return Outcome("crash", " | ".join(r[1][-200:] for r in results), "both failed")
        vol = tomolab.io.open_volume(out)
        ref = tomolab.reconstruct(tomolab.open_scan(p), center=64.0, backend="numpy")
        problem = None if np.array_equal(vol.values, ref.values) else "output differs from one run"
        if refused:  # the second refused at once: right, if it says so in one clear line
            err = refused[0][1].strip()
            if err.startswith("tomolab recon: error:") and "another run" in err:
                return Outcome("ok", f"the other run: {err}", problem=problem)
            return Outcome("error", err, "exit", problem=problem)
        return Outcome("ok", problem=problem)
    add(cat, "two cli recon runs to one -o at once", two_cli_runs, expect="ok",
        check=no_partials(p.parent))

    def locked_by_other(action, out):
        def run():
            holder = subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(f"""
                    import sys, time
                    from tomolab.io import OutputLock
                    with OutputLock({str(out)!r}):
                        print("held", flush=True); time.sleep(60)
                """)], env=ENV, stdout=subprocess.PIPE, text=True)
            try:
                holder.stdout.readline()
                return api(action)()
            finally:
                holder.kill()
                holder.wait()
        return run
    p = fx.scan_file("locked_recon_to")
    add(cat, "api reconstruct_to while another process holds the output",
        locked_by_other(lambda p=p: tomolab.reconstruct_to(
            tomolab.open_scan(p), p.parent / "vol.zarr", center=36.0, backend="numpy"),
            p.parent / "vol.zarr"),
        place=("vol.zarr",), value=("vol.zarr",), check=no_partials(p.parent))
    d = fx.folder("locked_save")
    add(cat, "api save_volume while another process holds the output",
        locked_by_other(lambda d=d: tomolab.save_volume(fx.volume(), d / "vol.h5"), d / "vol.h5"),
        place=("vol.h5",), value=("vol.h5",))
    p = fx.scan_file("locked_cli")
    add(cat, "cli recon while another process holds the output",
        locked_by_other(lambda p=p: _cli_raise(run_cli("recon", p, "-o", p.parent / "v.h5", "-q",
                                                        "--center", "36")), p.parent / "v.h5"),
        place=("v.h5",), value=("v.h5",), forbid=RECON_API)

    # -- changed input on resume, kills -----------------------------------------------------
    kill_script = textwrap.dedent("""
        import sys, tomolab
        scan = tomolab.open_scan(sys.argv[1])
        tomolab.reconstruct_to(scan, sys.argv[2], center=float(sys.argv[3]), slab_rows=2,
                               backend="numpy", progress=lambda d, t: print(d, flush=True))
    """)

    def killed_then(p, out, center, *, after_rows, replace=None, resume_center=None, fmt=""):
        """Start, SIGKILL after ``after_rows`` rows are done, maybe replace the input, resume."""
        def run():
            proc = subprocess.Popen([sys.executable, "-c", kill_script, str(p), str(out),
                                     str(center)], env=ENV, stdout=subprocess.PIPE, text=True)
            start = time.monotonic()
            for line in proc.stdout:
                if int(line.split()[0]) >= after_rows or time.monotonic() - start > 60:
                    break
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            if replace:
                shutil.copy(replace, p)
            c = resume_center if resume_center is not None else center
            out_run = api(lambda: tomolab.reconstruct_to(tomolab.open_scan(p), out, center=c,
                                                         slab_rows=2, backend="numpy"))()
            if out_run.kind == "error":
                return out_run
            vol = tomolab.io.open_volume(out)
            ref = tomolab.reconstruct(tomolab.open_scan(p), center=c, backend="numpy")
            if not np.array_equal(np.asarray(vol.values), ref.values):
                out_run.problem = ("resumed volume differs from an uninterrupted run (max "
                                   f"{float(np.abs(vol.values - ref.values).max()):.3g})")
            if not np.array_equal(vol["z"].values, ref["z"].values):
                out_run.problem = "z coordinate wrong after resume"
            return out_run
        return run

    cat = "changed input on resume"
    p = fx.scan_file("replaced", fx.big)
    add(cat, "kill, replace the input by another scan, resume",
        killed_then(p, p.parent / "vol.zarr", 64.0, after_rows=10, replace=fx.big_other),
        expect="ok")
    p = fx.scan_file("touched", fx.big)
    add(cat, "kill, rewrite the input with the same bytes, resume",
        killed_then(p, p.parent / "vol.zarr", 64.0, after_rows=10, replace=fx.big), expect="ok")
    p = fx.scan_file("new_center", fx.big)
    add(cat, "kill, resume with another centre",
        killed_then(p, p.parent / "vol.zarr", 64.0, after_rows=10, resume_center=66.0),
        expect="ok")
    p = fx.scan_file("replaced_h5", fx.big)
    add(cat, "kill, replace the input, resume (HDF5 output)",
        killed_then(p, p.parent / "vol.h5", 64.0, after_rows=10, replace=fx.big_other),
        expect="ok")

    cat = "kills"
    for i, (fmt, rows) in enumerate([("zarr", 2), ("zarr", 14), ("zarr", 30), ("h5", 6),
                                     ("h5", 24), ("tiff", 8), ("tiff", 30)]):
        p = fx.scan_file(f"kill_{i}", fx.big)
        out = p.parent / ("vol" + {"zarr": ".zarr", "h5": ".h5", "tiff": "_tiffs"}[fmt])
        add(cat, f"SIGKILL reconstruct_to ({fmt}) after {rows} rows, resume",
            killed_then(p, out, 64.0, after_rows=rows), expect="ok", check=no_partials(p.parent))

    def killed_simulate(d):
        def run():
            proc = subprocess.Popen([sys.executable, "-m", "tomolab.cli", "simulate",
                                     str(d / "sim.h5"), "--size", "256", "--angles", "800"],
                                    env=ENV, stderr=subprocess.PIPE)
            time.sleep(4)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            left = sorted(x.name for x in d.iterdir())
            if (d / "sim.h5").exists():
                try:
                    tomolab.open_scan(d / "sim.h5")
                except TomolabError:
                    return Outcome("ok", problem=f"half-written sim.h5 at the output path: {left}")
            return Outcome("ok")
        return run
    d = fx.folder("kill_sim")
    add(cat, "SIGKILL cli simulate mid-write", killed_simulate(d), expect="ok")

    # -- disk and permissions ---------------------------------------------------------------
    cat = "disk and permissions"
    tmpfs = fx.folder("tmpfs")
    ro = fx.folder("ro")
    mounted = []
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(tmpfs)],
                      capture_output=True, check=False).returncode == 0:
        mounted.append(tmpfs)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                      capture_output=True, check=False).returncode == 0:
        mounted.append(ro)
    fx.mounted = mounted
    p = fx.scan_file("disk_full_scan", fx.big)
    add(cat, "api reconstruct_to onto a 600 kB tmpfs (disk full)",
        api(lambda p=p: tomolab.reconstruct_to(tomolab.open_scan(p), tmpfs / "vol.h5",
                                               center=64.0, backend="numpy")),
        place=(str(tmpfs), "vol.h5"), value=("vol.h5",), check=no_partials(tmpfs))
    add(cat, "cli recon onto a 600 kB tmpfs (disk full, zarr)",
        cli("recon", p, "-o", tmpfs / "vol.zarr", "-q", "--center", "64"),
        place=("vol.zarr",), value=("vol.zarr",), forbid=RECON_API)
    add(cat, "api save_volume onto a read-only mount",
        api(lambda: tomolab.save_volume(fx.volume(), ro / "vol.zarr")),
        place=(str(ro), "vol.zarr"), value=("vol.zarr", str(ro)))
    add(cat, "cli simulate onto a read-only mount",
        cli("simulate", ro / "sim.h5", "--size", "32", "-q"), place=("sim.h5",),
        value=("sim.h5",), forbid=("path=",))
    add(cat, "cli recon -o onto a read-only mount",
        cli("recon", master, "-o", ro / "v.h5", "-q", "--center", "36"), place=("v.h5",),
        value=("v.h5",), forbid=RECON_API)
    add(cat, "cli simulate onto a 600 kB tmpfs (disk full)",
        cli("simulate", tmpfs / "sim.h5", "--size", "256", "-q"), place=("sim.h5",),
        value=("sim.h5",), check=no_partials(tmpfs))
    d = fx.folder("dir_as_input")
    add(cat, "api open_scan(a folder of junk)",
        api(lambda d=d: (d / "a.txt").write_text("x") and tomolab.open_scan(d)),
        place=(d.name,), value=(d.name,))

    # -- metadata physics -------------------------------------------------------------------
    cat = "metadata physics"
    deg = np.degrees(fx.angles)
    add(cat, "angles in degrees given as radians",
        api(lambda: fx.scan(angles=deg)), place=("angles",), value=("178",),
        expect="refuse_or_warn")
    rep = fx.angles.copy()
    rep[10] = rep[9]
    add(cat, "a repeated angle, reconstruct", api(lambda: tomolab.reconstruct(
        fx.scan(angles=rep), center=32.0, backend="numpy")), place=("angles",),
        value=("index 10",))
    back = fx.angles.copy()
    back[[20, 21]] = back[[21, 20]]
    add(cat, "two angles swapped, reconstruct", api(lambda: tomolab.reconstruct(
        fx.scan(angles=back), center=32.0, backend="numpy")), place=("angles",),
        value=("index 21", "21"))

    def same_as_forward(v):
        ref = tomolab.reconstruct(fx.scan(), center=32.0, backend="numpy")
        return None if np.allclose(v.values, ref.values, atol=1e-3 * float(np.abs(ref).max())) \
            else "a scan turning the other way gives another volume"
    add(cat, "angles decreasing throughout (the other way round)", api(
        lambda: tomolab.reconstruct(fx.scan(projections=fx.proj[::-1], angles=fx.angles[::-1]),
                                    center=32.0, backend="numpy"), verify=same_as_forward),
        expect="ok")
    nan_angles = fx.angles.copy()
    nan_angles[3] = np.nan
    add(cat, "a NaN angle", api(lambda: fx.scan(angles=nan_angles)), place=("angles",),
        value=("nan",))
    add(cat, "angles of the wrong length", api(lambda: fx.scan(angles=fx.angles[:-5])),
        place=("angles",), value=("85",))
    for key, bad in [("pixel_size", -1e-6), ("pixel_size", 1.0), ("pixel_size", 0.0),
                     ("energy", 0.0), ("energy", 1e6), ("distance", -0.5), ("distance", 1e5),
                     ("energy", float("nan"))]:
        add(cat, f"{key}={bad}", api(lambda key=key, bad=bad: fx.scan(**{key: bad})),
            place=(key,), value=(repr(bad), str(bad)))
    p = fx.scan_file("deg_units")

    def mislabel(p=p):  # the file's theta is in degrees, labelled so; store radians instead
        import h5py
        with h5py.File(p, "r+") as f:
            f["exchange/theta"][...] = np.deg2rad(f["exchange/theta"][...])
        return tomolab.open_scan(p)
    add(cat, "file angles in radians labelled 'degree'", api(mislabel),
        place=("theta", "angles"), value=("deg",), expect="refuse_or_warn")
    p = fx.scan_file("rad_units")

    def mislabel_rad(p=p):  # degrees labelled 'rad'
        import h5py
        with h5py.File(p, "r+") as f:
            f["exchange/theta"].attrs["units"] = "rad"
        return tomolab.open_scan(p)
    add(cat, "file angles in degrees labelled 'rad'", api(mislabel_rad),
        place=("theta", "angles"), value=("rad",), expect="refuse_or_warn")
    p = fx.scan_file("str_pixel")

    def string_pixel(p=p):
        import h5py
        with h5py.File(p, "r+") as f:
            path = _find(f, "resolution")
            del f[path]
            f[path] = "six microns"
        return tomolab.open_scan(p)
    add(cat, "file pixel_size is the text 'six microns'", api(string_pixel),
        place=("pixel_size", "resolution"), value=("six microns",),
        expect="refuse_or_warn")  # file metadata that fail a check are left out, with a warning
    add(cat, "sweep_phase energy=-1",
        api(lambda: tomolab.sweep_phase(fx.scan(), center=32.0, energy=-1.0, backend="numpy")),
        place=("energy",), value=("-1",))
    add(cat, "sweep_phase on a scan without energy",
        api(lambda: tomolab.sweep_phase(fx.scan(energy=None), center=32.0, backend="numpy")),
        place=("energy",), value=("None", "no energy", "energy"))
    add(cat, "sweep_phase distance=0",
        api(lambda: tomolab.sweep_phase(fx.scan(), center=32.0, distance=0.0, backend="numpy")),
        place=("distance",), value=("0",))
    add(cat, "reconstruct phase=-5 (δ/β)",
        api(lambda: tomolab.reconstruct(fx.scan(), center=32.0, phase=-5.0, backend="numpy")),
        place=("phase",), value=("-5",))

    # -- dtypes -----------------------------------------------------------------------------
    cat = "dtypes"
    for label, arr in [("bool", fx.proj > 1000), ("complex64", fx.proj.astype(np.complex64)),
                       ("int16 with negatives", (fx.proj.astype(np.int32) - 40000)
                        .clip(-32768, 32767).astype(np.int16)),
                       ("structured", np.zeros(fx.proj.shape, dtype=[("a", "u2"), ("b", "u2")])),
                       ("object", fx.proj.astype(object)),
                       ("strings", fx.proj.astype("U5"))]:
        add(cat, f"projections of dtype {label}",
            api(lambda arr=arr: tomolab.reconstruct(fx.scan(projections=arr), center=32.0,
                                                    backend="numpy")),
            place=("projections",), value=(str(arr.dtype), "negative", "-"))
    nanproj = fx.proj.astype(np.float32)
    nanproj[5, 1, 10] = np.nan
    def near_clean(v):
        ref = tomolab.reconstruct(fx.scan(projections=fx.proj.astype(np.float32)), center=32.0,
                                  backend="numpy")
        if not np.isfinite(v.values).all():
            return "NaN in the volume"
        error = float(np.abs(v.values - ref.values).max() / np.abs(ref.values).max())
        return None if error < 0.05 else f"silently wrong: {100 * error:.0f} % off the clean volume"
    add(cat, "float projections with a NaN pixel",
        api(lambda: tomolab.reconstruct(fx.scan(projections=nanproj), center=32.0,
                                        backend="numpy"), verify=near_clean),
        place=("projections",), value=("nan", "non-finite", "1 pixel"), expect="refuse_or_warn")
    add(cat, "2-D projections (one frame)",
        api(lambda: fx.scan(projections=fx.proj[0], angles=fx.angles[:1])),
        place=("projections",), value=("(4, 64)", "2"))
    add(cat, "4-D projections", api(lambda: fx.scan(projections=fx.proj[None])),
        place=("projections",), value=("4",))
    p = fx.scan_file("h5_bool")

    def h5_dtype(p=p):
        import h5py
        with h5py.File(p, "r+") as f:
            data = f["exchange/data"][...]
            del f["exchange/data"]
            f["exchange/data"] = data > 1000
        return tomolab.reconstruct(tomolab.open_scan(p), center=32.0, backend="numpy")
    add(cat, "a file whose projections are bool", api(h5_dtype),
        place=("exchange/data", "scan.h5"), value=("bool",))
    add(cat, "flats of dtype complex",
        api(lambda: tomolab.reconstruct(fx.scan(flats=fx.flats.astype(np.complex64)),
                                        center=32.0, backend="numpy")),
        place=("flats",), value=("complex",))
    add(cat, "angles as numeric strings (read as numbers)", api(
        lambda: fx.scan(angles=fx.angles.astype(str)),
        verify=lambda s: None if np.allclose(s.angle.values, fx.angles) else "angles changed"),
        expect="ok")
    add(cat, "angles as words", api(lambda: fx.scan(angles=np.array(["a"] * 90))),
        place=("angles",), value=("a",))

    # -- flats and darks --------------------------------------------------------------------
    cat = "flats and darks"
    add(cat, "flats and darks swapped",
        api(lambda: tomolab.reconstruct(fx.scan(flats=fx.darks, darks=fx.flats), center=32.0,
                                        backend="numpy")), place=("flats", "darks"),
        value=("dark", "flat"))
    zf = fx.flats.copy()
    zf[:, 1, 20] = 0
    add(cat, "a zero flat pixel (dead)",
        api(lambda: tomolab.reconstruct(fx.scan(flats=zf), center=32.0, backend="numpy"),
            verify=lambda v: None if np.isfinite(v.values).all() else "non-finite volume"),
        place=("flats",), value=("1 pixel", "1 ", "zero"), expect="refuse_or_warn")
    nf = fx.flats.astype(np.float32)
    nf[:, :, 40] = np.nan
    true_c = float(fx.params.center)

    def nan_flat_center():
        c, _ = tomolab.find_center(fx.scan(flats=nf), backend="numpy")
        return c
    add(cat, "a NaN flat column: find_center not fooled", api(
        nan_flat_center, verify=lambda c: None if abs(c - true_c) < 1.0
        else f"centre {c:.2f}, true {true_c:.2f}"),
        place=("flats",), value=("pixel", "nan", "non-finite"), expect="refuse_or_warn")
    add(cat, "flats of the wrong width",
        api(lambda: fx.scan(flats=fx.flats[:, :, :60])), place=("flats",),
        value=("60",))
    add(cat, "darks of the wrong height",
        api(lambda: fx.scan(darks=fx.darks[:, :2])), place=("darks",), value=("2",))
    hot = fx.darks.copy()
    hot[:, 2, 30] = 65000
    add(cat, "a dark pixel brighter than its flat",
        api(lambda: tomolab.reconstruct(fx.scan(darks=hot), center=32.0, backend="numpy"),
            verify=lambda v: None if np.isfinite(v.values).all() else "non-finite volume"),
        place=("darks", "flats"), value=("1 pixel", "pixel"), expect="refuse_or_warn")
    add(cat, "no flats, normalize=True",
        api(lambda: tomolab.reconstruct(fx.scan(flats=None, darks=None), center=32.0,
                                        backend="numpy")),
        place=("flats", "normalize"), value=("normalize", "None", "no flat"))
    add(cat, "an empty flats array (0 frames), reconstruct",
        api(lambda: tomolab.reconstruct(fx.scan(flats=fx.flats[:0]), center=32.0,
                                        backend="numpy")), place=("flats",),
        value=("0", "no flat"))
    add(cat, "flats all equal to darks",
        api(lambda: tomolab.reconstruct(fx.scan(flats=fx.darks.copy()), center=32.0,
                                        backend="numpy")), place=("flats",), value=("dark",))

    # -- TIFF stacks ------------------------------------------------------------------------
    cat = "TIFF stacks"
    import tifffile

    def tiff_folder(name):
        d = fx.folder(name)
        tomolab.io.write_tiff_stack(d / "scan", fx.proj, fx.angles, fx.flats, fx.darks, **fx.meta)
        return d / "scan"
    t = tiff_folder("tiff_shape")
    one = sorted(x for x in t.rglob("*.tif*"))[5]
    tifffile.imwrite(one, np.zeros((4, 60), np.uint16))
    add(cat, "one TIFF of another shape",
        api(lambda t=t: tomolab.reconstruct(tomolab.open_scan(t), center=32.0, backend="numpy")),
        place=(one.name,), value=("(4, 60)", "60"))
    t = tiff_folder("tiff_dtype")
    one = sorted(x for x in t.rglob("*.tif*"))[7]
    tifffile.imwrite(one, np.zeros((4, 64), np.float32))
    add(cat, "one TIFF of another dtype",
        api(lambda t=t: tomolab.reconstruct(tomolab.open_scan(t), center=32.0, backend="numpy")),
        place=(one.name,), value=("float32",))
    t = tiff_folder("tiff_corrupt")
    one = sorted(x for x in t.rglob("*.tif*"))[3]
    one.write_text("not a tiff at all")
    add(cat, "one TIFF is a text file",
        api(lambda t=t: tomolab.reconstruct(tomolab.open_scan(t), center=32.0, backend="numpy")),
        place=(one.name,), value=(one.name,))
    t = tiff_folder("tiff_truncated")
    one = sorted(x for x in t.rglob("*.tif*"))[4]
    one.write_bytes(one.read_bytes()[:200])
    add(cat, "one TIFF truncated",
        api(lambda t=t: tomolab.reconstruct(tomolab.open_scan(t), center=32.0, backend="numpy")),
        place=(one.name,), value=(one.name,))
    t = tiff_folder("tiff_missing_one")
    one = [x for x in sorted(t.rglob("*.tif*")) if "proj" in x.name][6]
    one.unlink()
    add(cat, "one TIFF deleted (a gap in the numbering)",
        api(lambda t=t: tomolab.open_scan(t)), place=(t.name, "angles", one.name),
        value=(one.name, "89", "90"), expect="refuse_or_warn")
    d = fx.folder("tiff_no_angles")
    for i in range(10):
        tifffile.imwrite(d / f"proj_{i:04d}.tif", fx.proj[i])
    add(cat, "a folder of TIFFs without angles",
        api(lambda d=d: tomolab.open_scan(d)), place=("angles",), value=("angles",),
        expect="refuse_or_warn")
    d = fx.folder("tiff_no_angles_cli")
    for i in range(10):
        tifffile.imwrite(d / f"proj_{i:04d}.tif", fx.proj[i])
    add(cat, "cli info on a folder of TIFFs without angles", cli("info", d), expect="ok")
    add(cat, "open_scan(TIFF folder, angles= wrong length)",
        api(lambda d=d: tomolab.open_scan(d, angles=np.linspace(0, np.pi, 7))),
        place=("angles",), value=("7",))

    # -- bool/float/zero parameters ---------------------------------------------------------
    cat = "bool/float/zero parameters"
    scan = fx.scan()

    def rec(**kw):
        kw.setdefault("center", 32.0)
        kw.setdefault("backend", "numpy")
        return api(lambda: tomolab.reconstruct(scan, **kw))
    for label, kw, place, value in [
            ("center=True", {"center": True}, "center", "True"),
            ("center='abc'", {"center": "abc"}, "center", "abc"),
            ("center=nan", {"center": float("nan")}, "center", "nan"),
            ("center=1e9", {"center": 1e9}, "center", "1000000000"),
            ("center=-5", {"center": -5.0}, "center", "-5"),
            ("rows='3:1'", {"rows": "3:1"}, "rows", "3:1"),
            ("rows=100", {"rows": 100}, "rows", "100"),
            ("rows=2.5", {"rows": 2.5}, "rows", "2.5"),
            ("rows=True", {"rows": True}, "rows", "True"),
            ("size=0", {"size": 0}, "size", "0"),
            ("size=64.0", {"size": 64.0}, "size", "64.0"),
            ("size=True", {"size": True}, "size", "True"),
            ("filter='nope'", {"filter": "nope"}, "filter", "nope"),
            ("backend='gpu'", {"backend": "gpu"}, "backend", "gpu"),
            ("algorithm='magic'", {"algorithm": "magic"}, "algorithm", "magic"),
            ("zingers=-1", {"zingers": -1.0}, "zingers", "-1"),
            ("normalize='no'", {"normalize": "no"}, "normalize", "no"),
            ("precision='double'", {"precision": "double"}, "precision", "double"),
            ("pad_mode='wrap-around'", {"pad_mode": "wrap-around"}, "pad_mode", "wrap-around"),
            ("stripes='magic'", {"stripes": "magic"}, "stripes", "magic"),
            ("lazy=-3", {"lazy": -3}, "lazy", "-3")]:
        add(cat, f"reconstruct {label}", rec(**kw), place=(place,), value=(value,))
    for label, fn, place, value in [
            ("sweep_center centers=[]", lambda: tomolab.sweep_center(scan, centers=[],
                                                                    backend="numpy"),
             "centers", "[]"),
            ("sweep_center centers=[nan]", lambda: tomolab.sweep_center(
                scan, centers=[float("nan")], backend="numpy"), "centers", "nan"),
            ("sweep_center centers=True", lambda: tomolab.sweep_center(
                scan, centers=True, backend="numpy"), "centers", "True"),
            ("find_center row=999", lambda: tomolab.find_center(scan, row=999, backend="numpy"),
             "row", "999"),
            ("find_center row=1.5", lambda: tomolab.find_center(scan, row=1.5, backend="numpy"),
             "row", "1.5"),
            ("find_center rows_averaged=0", lambda: tomolab.find_center(
                scan, rows_averaged=0, backend="numpy"), "rows_averaged", "0"),
            ("find_center method='guess'", lambda: tomolab.find_center(
                scan, method="guess", backend="numpy"), "method", "guess"),
            ("reconstruct_to slab_rows=0", lambda: tomolab.reconstruct_to(
                scan, fx.folder("slab0") / "v.zarr", center=32.0, slab_rows=0, backend="numpy"),
             "slab_rows", "0"),
            ("reconstruct_to slab_rows=2.5", lambda: tomolab.reconstruct_to(
                scan, fx.folder("slab25") / "v.zarr", center=32.0, slab_rows=2.5,
                backend="numpy"), "slab_rows", "2.5"),
            ("reconstruct_to multiscale=-1", lambda: tomolab.reconstruct_to(
                scan, fx.folder("ms") / "v.zarr", center=32.0, multiscale=-1, backend="numpy"),
             "multiscale", "-1"),
            ("reconstruct_to overwrite='yes'", lambda: tomolab.reconstruct_to(
                scan, fx.folder("ow") / "v.zarr", center=32.0, overwrite="yes", backend="numpy"),
             "overwrite", "yes"),
            ("stitch_360 on a 180° scan", lambda: tomolab.stitch_360(scan, backend="numpy"),
             "scan", "180"),
            ("stitch_360 blend=-1", lambda: tomolab.stitch_360(
                fx.scan(angles=np.linspace(0, 2 * np.pi, 90, endpoint=False)), center=60.0,
                blend=-1.0, backend="numpy"), "blend", "-1"),
            ("sweep_phase ratios=[-1]", lambda: tomolab.sweep_phase(
                scan, center=32.0, ratios=[-1.0], backend="numpy"), "ratios", "-1"),
            ("sweep_phase ratios=[0, 10]", lambda: tomolab.sweep_phase(
                scan, center=32.0, ratios=[0.0, 10.0], backend="numpy"), "ratios", "0"),
            ("from_arrays chunks=0", lambda: tomolab.from_arrays(fx.proj, fx.angles, chunks=0),
             "chunks", "0"),
            ("save_volume overwrite=1.5", lambda: tomolab.save_volume(
                fx.volume(), fx.folder("ow15") / "v.zarr", overwrite=1.5), "overwrite", "1.5")]:
        add(cat, label, api(fn), place=(place,), value=(value,))

    # -- huge shapes and sizes --------------------------------------------------------------
    cat = "huge shapes and sizes"
    import dask.array as da
    huge = da.zeros((20000, 20000, 20000), dtype=np.uint16, chunks=(64, 256, 20000))
    huge_scan = tomolab.from_arrays(huge, np.linspace(0, np.pi, 20000, endpoint=False))
    for label, fn in [
            ("reconstruct size=10**6", lambda: tomolab.reconstruct(scan, center=32.0, size=10**6,
                                                                  backend="numpy")),
            ("sweep_center size=10**5", lambda: tomolab.sweep_center(scan, size=10**5,
                                                                    backend="numpy")),
            ("sweep_center 10**4 centres of 2048² slices", lambda: tomolab.sweep_center(
                scan, centers=np.linspace(20, 44, 10**4), size=2048, backend="numpy")),
            ("sweep_phase 10**5 ratios", lambda: tomolab.sweep_phase(
                scan, center=32.0, ratios=np.geomspace(1, 1000, 10**5), backend="numpy")),
            ("reconstruct a declared 20000³ scan (all rows)", lambda: tomolab.reconstruct(
                huge_scan, center=10000.0, normalize=False, backend="numpy")),
            ("find_center on a declared 20000³ scan", lambda: tomolab.find_center(
                huge_scan, normalize=False, backend="numpy"))]:
        add(cat, label, api(fn), place=("size", "rows", "centers", "ratios", "memory"),
            value=("GB", "GiB", "TB", "TiB", "bytes"))
    d = fx.folder("huge_cli")
    add(cat, "cli simulate --size 200000", cli("simulate", d / "s.h5", "--size", "200000", "-q"),
        place=("--size",), value=("200000",), forbid=("size=",), check=no_partials(d))
    add(cat, "cli demo --size 100000 --rows 4",
        cli("demo", "--out", d, "--size", "100000", "--rows", "4"), place=("--size",),
        value=("100000",), forbid=("size=",))
    add(cat, "cli simulate --size 4096 --angles 10000000 (84 TB)",
        cli("simulate", d / "s2.h5", "--size", "4096", "--angles", "10000000", "-q"),
        place=("--angles", "s2.h5"), value=("10000000", "TB", "TiB"), forbid=("n_angles",),
        check=no_partials(d))

    # -- CLI flags --------------------------------------------------------------------------
    cat = "CLI flags"

    def python_m_tomolab():
        done = subprocess.run([sys.executable, "-m", "tomolab", "--version"], env=ENV,
                              capture_output=True, text=True, timeout=CASE_SECONDS, check=False)
        return cli_outcome(done, verify=lambda d: None if "tomolab" in d.stdout else "no version")
    add(cat, "python -m tomolab --version", python_m_tomolab, expect="ok")
    d = fx.folder("cli_flags")
    for label, args, place, value in [
            ("recon --center abc", ["recon", master, "-o", d / "a.zarr", "--center", "abc"],
             "--center", "abc"),
            ("recon --center nan", ["recon", master, "-o", d / "b.zarr", "--center", "nan"],
             "--center", "nan"),
            ("recon --center 1e9", ["recon", master, "-o", d / "c.zarr", "--center", "1e9"],
             "--center", "1000000000"),
            ("recon --center -5", ["recon", master, "-o", d / "c2.zarr", "--center=-5"],
             "--center", "-5"),
            ("recon --rows 5:2", ["recon", master, "-o", d / "e.zarr", "--rows", "5:2",
                                  "--center", "36"], "--rows", "5:2"),
            ("recon --rows abc", ["recon", master, "-o", d / "f.zarr", "--rows", "abc",
                                  "--center", "36"], "--rows", "abc"),
            ("recon --rows 0:999", ["recon", master, "-o", d / "f2.zarr", "--rows", "0:999",
                                    "--center", "36"], "--rows", "999"),
            ("recon --filter nope", ["recon", master, "-o", d / "g.zarr", "--filter", "nope",
                                     "--center", "36"], "--filter", "nope"),
            ("recon --format jpeg", ["recon", master, "-o", d / "h.zarr", "--format", "jpeg"],
             "--format", "jpeg"),
            ("recon --workers 0", ["recon", master, "-o", d / "i.zarr", "--workers", "0"],
             "--workers", "0"),
            ("recon --no-log without --no-normalize",
             ["recon", master, "-o", d / "j.zarr", "--no-log", "--center", "36"],
             "--no-log", "--no-normalize"),
            ("recon with no -o", ["recon", master], "-o", "--output"),
            ("recon --output ''", ["recon", master, "-o", "", "--center", "36"],
             "-o/--output", "''"),
            ("info with no file", ["info"], "file", "file"),
            ("simulate --size 0", ["simulate", d / "s0.h5", "--size", "0"], "--size", "0"),
            ("simulate --size 12.5", ["simulate", d / "s1.h5", "--size", "12.5"], "--size",
             "12.5"),
            ("simulate --size -64", ["simulate", d / "s1b.h5", "--size=-64"], "--size", "-64"),
            ("simulate --photons -1", ["simulate", d / "s2.h5", "--size", "32", "--photons",
                                       "-1"], "--photons", "-1"),
            ("simulate --photons 0", ["simulate", d / "s2b.h5", "--size", "32", "--photons",
                                      "0"], "--photons", "0"),
            ("simulate --rings -0.5", ["simulate", d / "s3.h5", "--size", "32", "--rings",
                                       "-0.5"], "--rings", "-0.5"),
            ("simulate --zingers 2", ["simulate", d / "s4.h5", "--size", "32", "--zingers", "2"],
             "--zingers", "2"),
            ("simulate --center 1e6", ["simulate", d / "s5.h5", "--size", "32", "--center",
                                       "1e6"], "--center", "1000000"),
            ("simulate --rows 0", ["simulate", d / "s6.h5", "--size", "32", "--rows", "0"],
             "--rows", "0"),
            ("simulate --format tiff to an .h5 name",
             ["simulate", d / "s7.h5", "--size", "32", "--format", "tiff"], "OUTPUT", "s7.h5"),
            ("demo --angles -5", ["demo", "--out", d / "demo", "--angles", "-5"], "--angles",
             "-5"),
            ("demo --rows 0", ["demo", "--out", d / "demo2", "--rows", "0"], "--rows", "0"),
            ("demo --out onto a file", ["demo", "--out", master, "--size", "32"], "--out",
             str(master))]:
        add(cat, label, cli(*args), place=(place,), value=(value,),
            forbid=("center=", "size=", "n_angles", "n_rows", "rows=", "photons=",
                    "overwrite=True"))

    # -- limited angles: scans of less than 180° (issue 17) --------------------------------
    # accepted with one clear warning that names the range and the missing wedge, the centre
    # found on the range present (or asked for), and nothing wrong said or computed
    cat = "limited angles"
    cases += limited_angle_cases(fx, RECON_API)

    # -- widgets ----------------------------------------------------------------------------
    cat = "widgets"
    from tomolab.widgets import CenterSweep, PhaseSweep, ReconstructionPanel
    API = ("center=", "overwrite=True", "path=", "energy=", "distance=", "pixel_size=")

    def panel_with_volume():
        panel = ReconstructionPanel(backend="numpy", background=False)
        panel.open_scan(fx.scan_file("panel", master))
        return panel

    def panel_action(act):
        def fn():
            panel = panel_with_volume()
            return act(panel)
        return fn

    def set_center(panel, value):
        panel.center_input.value = value
        return panel.task.error or panel.preview_task.error or ""

    def center_trait(panel, value):
        panel.center = value
        return ""
    for label, act, place, value in [
            ("panel: type centre px 1e9, Reconstruct",
             lambda pn: (set_center(pn, 1e9), pn.reconstruct(), pn.task.error)[-1]
             or set_center(pn, 1e9), "centre px", "1000000000"),
            ("panel: centre trait = nan", lambda pn: center_trait(pn, float("nan")), "centre px",
             "nan"),
            ("panel: rows '9:2', Reconstruct",
             lambda pn: (setattr(pn.rows_input, "value", "9:2"), pn.reconstruct(),
                         pn.task.error)[-1], "rows", "9:2"),
            ("panel: rows 'all', Reconstruct",
             lambda pn: (setattr(pn.rows_input, "value", "all"), pn.reconstruct(),
                         pn.task.error)[-1], "rows", "all"),
            ("panel: output = the input scan, tick overwrite, Save",
             lambda pn: (pn.reconstruct(), pn.save(path=pn.path_input.value, format="hdf5",
                                                   overwrite=True), pn.save_task.error)[-1],
             "output", "scan.h5"),
            ("panel: Save before any volume", lambda pn: (pn.save(), pn.save_task.error)[-1],
             "volume", "reconstruct"),
            ("panel: output '' then Save",
             lambda pn: (pn.reconstruct(), pn.save(path=""), pn.save_task.error)[-1],
             "output", "''"),
            ("panel: δ/β = -1", lambda pn: setattr(pn, "delta_beta", -1.0), "δ/β", "-1"),
            ("panel: output = folder with other files, tick overwrite, Save",
             lambda pn: (pn.reconstruct(), pn.save(path=Path(pn.path_input.value).parent,
                                                   format="tiff", overwrite=True),
                         pn.save_task.error)[-1], "output", "scan"),
            ("panel: algorithm 'gridrec' with filter 'parzen'",
             lambda pn: (setattr(pn.filter_input, "value", "parzen"),
                         setattr(pn.algorithm_input, "value", "gridrec"), pn.reconstruct(),
                         pn.task.error)[-1], "filter", "parzen")]:
        kw = {"expect": "ok"} if "gridrec" in label else {}
        add(cat, label, widget(panel_action(act)), place=(place,), value=(value,), forbid=API,
            **kw)

    def open_bad(text):
        def fn():
            panel = ReconstructionPanel(backend="numpy", background=False)
            panel.path_input.value = text
            panel.open_scan()
            return panel.file_task.error
        return fn
    add(cat, "panel: Open a missing file", widget(open_bad(str(fx.root / "nope.h5"))),
        place=("nope.h5",), value=("nope.h5",), forbid=API)
    add(cat, "panel: Open with an empty path", widget(open_bad("  ")), place=("scan",),
        value=("''",), forbid=API)
    add(cat, "panel: Open a text file", widget(open_bad(str(fx.root / "master.h5") + ".txt")),
        place=("master.h5.txt",), value=("master.h5.txt",), forbid=API)

    def sweep_case(make, act):
        def fn():
            w = make()
            said = act(w)
            return w.task.error or (said if isinstance(said, str) else "")
        return fn
    cs = lambda: CenterSweep(fx.scan(), backend="numpy", compute=False, background=False)
    ps = lambda **kw: PhaseSweep(fx.scan(**kw), center=32.0, backend="numpy",
                                 compute=False, background=False)
    for label, make, act, place, value in [
            ("CenterSweep: from 40 to 30, Compute", cs,
             lambda w: (setattr(w.start_input, "value", 40), setattr(w.stop_input, "value", 30),
                        w.compute()), "to px", "30"),
            ("CenterSweep: step 0.05 over the detector, Compute", cs,
             lambda w: (setattr(w.start_input, "value", 0), setattr(w.stop_input, "value", 63),
                        setattr(w.step_input, "value", 0.05), w.compute()), "step", "0.05"),
            ("CenterSweep: row 99 (the box holds 0-3)", cs,
             lambda w: (setattr(w.row_input, "value", 99), w.compute(),
                        "" if w.row_input.value <= 3 else "row 99 taken")[-1], "row", "99"),
            ("PhaseSweep: energy keV -5, Compute", ps,
             lambda w: (setattr(w.energy_input, "value", -5.0), w.compute()), "energy keV",
             "-5"),
            ("PhaseSweep: scan without distance, distance m 0, Compute",
             lambda: ps(distance=None), lambda w: (setattr(w.distance_input, "value", 0.0),
                                                   w.compute()), "distance m", "0"),
            ("PhaseSweep: from 100 to 10, Compute", ps,
             lambda w: (setattr(w.low_input, "value", 100), setattr(w.high_input, "value", 10),
                        w.compute()), "to", "10"),
            ("PhaseSweep: pixel µm -3, Compute", ps,
             lambda w: (setattr(w.pixel_input, "value", -3.0), w.compute()), "pixel µm", "-3"),
            ("PhaseSweep: energy keV 1e7, Compute", ps,
             lambda w: (setattr(w.energy_input, "value", 1e7), w.compute()), "energy keV",
             "10000000")]:
        add(cat, label, widget(sweep_case(make, act)), place=(place,), value=(value,),
            forbid=API, expect="ok" if "row 99" in label else "refuse")
    return cases


def limited_angle_cases(fx: Fixtures, recon_api) -> list[Case]:
    """Scans that leave out a wedge of directions: a ±60° tilt series, 0°–120°, 0°–10°, a gap."""
    from tomolab.center import LimitedAngleWarning

    cases: list[Case] = []
    cat = "limited angles"

    def add(name, run, **kw):
        cases.append(Case(cat, name, run, **kw))

    # one full turn, 2° apart, cut into the ranges below: the true centre is known
    proj, angles, flats, darks, params = tomolab.data.simulate_arrays(
        64, 4, 180, angle_range=2 * np.pi, seed=5)
    true = float(params.center)
    signed = np.degrees(angles)
    signed = np.where(signed > 180 + 1e-9, signed - 360, signed)

    def part(first, last):
        keep = np.flatnonzero((signed >= first - 1e-9) & (signed <= last + 1e-9))
        keep = keep[np.argsort(signed[keep])]
        return tomolab.from_arrays(proj[keep], np.radians(signed[keep]), flats, darks, **fx.meta)

    def part_file(name, first, last):
        scan = part(first, last)
        path = fx.folder(name) / "scan.h5"
        tomolab.io.write_dxchange(path, scan.projections.values, scan.angle.values, flats, darks,
                                  **fx.meta)
        return path

    tilt, narrow = part(-60, 60), part(0, 10)
    gap = part(0, 180).isel(angle=np.r_[0:31, 61:90])  # 0°–60° and 122°–178°

    def centre_near(volume):
        c = float(volume.attrs["center"])
        return None if abs(c - true) < 0.5 else f"centre {c:.2f}, true {true:.2f}"

    def no_wedge_warning(fn):
        def run():  # a complete scan (sparse or not) must not warn of a wedge
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn()
            return [str(w.message) for w in caught if issubclass(w.category, LimitedAngleWarning)]
        return run

    wedge = ("60° of the 180°", "from 60° to 120°")
    add("reconstruct a ±60° tilt series (FBP, centre given)",
        api(lambda: tomolab.reconstruct(tilt, center=true, rows=1, backend="numpy")),
        place=("angles cover -60°–60°",), value=wedge, expect="refuse_or_warn")
    add("reconstruct a ±60° tilt series, center='auto' (the centroid fit)",
        api(lambda: tomolab.reconstruct(tilt, center="auto", rows=1, backend="numpy"),
            verify=centre_near),
        place=("angles cover -60°–60°",), value=wedge, expect="refuse_or_warn")
    add("reconstruct a ±60° tilt series with tv (no wedge warning: tv is the way out)",
        api(lambda: tomolab.reconstruct(tilt, center=true, rows=1, algorithm="tv",
                                        iterations=3, backend="numpy")), expect="ok")
    add("reconstruct 0°–60° + 122°–178° (a gap inside)",
        api(lambda: tomolab.reconstruct(gap, center=true, rows=1, backend="numpy")),
        place=("angles cover",), value=("from 60° to 122°", "62° of the 180°"),
        expect="refuse_or_warn")
    add("find_center(±60°, method='vo')",
        api(lambda: tomolab.find_center(tilt, method="vo", backend="numpy")),
        place=("method", "angles"), value=("60° of the 180°", "vo"))
    add("find_center(±60°, method='phase-correlation')",
        api(lambda: tomolab.find_center(tilt, method="phase-correlation", backend="numpy")),
        place=("angles", "method"), value=("span", "120"))
    add("find_center(0°–10°): the centroid fit cannot place it",
        api(lambda: tomolab.find_center(narrow, backend="numpy")),
        place=("row",), value=("0°–10°",))
    add("find_axis(±60°) (the centroid fit at each row)",
        api(lambda: tomolab.find_axis(tilt, backend="numpy"),
            verify=lambda fit: None if fit.method == "centroid" and abs(fit.center(1.5) - true)
            < 0.5 else f"axis {fit.method} {float(fit.center(1.5)):.2f}, true {true:.2f}"),
        expect="ok")
    add("find_axis(0°–10°)", api(lambda: tomolab.find_axis(narrow, backend="numpy")),
        place=("scan",), value=("0°–10°",))
    add("sweep_center(±60°) around the centroid fit",
        api(lambda: tomolab.sweep_center(tilt, backend="numpy"),
            verify=lambda stack: None if abs(stack.attrs["estimate"] - true) < 0.5
            else f"estimate {stack.attrs['estimate']:.2f}, true {true:.2f}"),
        place=("angles cover -60°–60°",), value=wedge, expect="refuse_or_warn")
    add("stitch_360 on a ±60° tilt series",
        api(lambda: tomolab.stitch_360(tilt, backend="numpy")), place=("angles", "scan"),
        value=("120", "360"))
    add("60 sparse angles over 180° (complete: no wedge warning)",
        api(no_wedge_warning(lambda: tomolab.reconstruct(part(0, 178).isel(angle=slice(0, 90, 1)),
                                                         center=true, rows=1, backend="numpy")),
            verify=lambda said: f"warned of a wedge: {said[0]}" if said else None), expect="ok")
    add("a full turn with a 10° gap (still complete over 180°: no wedge warning)",
        api(no_wedge_warning(lambda: tomolab.reconstruct(
            part(-180, 180).isel(angle=np.r_[0:40, 45:180]), center=true, rows=1,
            backend="numpy")),
            verify=lambda said: f"warned of a wedge: {said[0]}" if said else None), expect="ok")
    add("a ±60° tilt series given in degrees", api(lambda: tomolab.from_arrays(
        tilt.projections.values, np.degrees(tilt.angle.values), flats, darks)),
        place=("angles",), value=("deg", "60"))

    path = part_file("tilt_cli", -60, 60)

    def cli_centre(done, path=path):
        return centre_near(tomolab.io.open_volume(path.parent / "v.zarr"))
    add("cli recon a ±60° tilt series (auto centre): one warning line",
        cli("recon", path, "-o", path.parent / "v.zarr", "--rows", "1:3", "-q", "--backend",
            "numpy", verify=cli_centre),
        place=("angles cover -60°–60°",), value=wedge, forbid=recon_api + ("algorithm=",),
        expect="refuse_or_warn")
    add("cli recon a ±60° tilt series --algorithm sirt --iterations 3 (no warning)",
        cli("recon", path, "-o", path.parent / "sirt.zarr", "--rows", "1:3", "-q", "--backend",
            "numpy", "--algorithm", "sirt", "--iterations", "3", "--center", f"{true:.2f}"),
        expect="ok")
    path = part_file("narrow_cli", 0, 10)
    add("cli recon 0°–10° (auto centre): asks for --center",
        cli("recon", path, "-o", path.parent / "v.zarr", "-q", "--backend", "numpy"),
        place=("--center",), value=("0°–10°",), forbid=recon_api + ("algorithm=",),
        check=lambda p=path: "partial output" if (p.parent / "v.zarr").exists() else None)

    def panel_on(scan_path):
        from tomolab.widgets import ReconstructionPanel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LimitedAngleWarning)
            return ReconstructionPanel(scan_path, backend="numpy", background=False)

    def panel_errors(panel):
        bars = [panel.file_task, panel.preview_task, panel.center_sweep.task,
                panel.center_overlay.task, panel.task]
        return " | ".join(bar.error for bar in bars if bar.error)
    path = part_file("tilt_panel", -60, 60)
    def opened(path):
        panel = panel_on(path)
        said = panel.center_overlay.unavailable
        return panel_errors(panel) or ("" if "180° apart" in said and "-60°–60°" in said
                                       else f"the overlay does not say why it is empty: {said!r}")
    add("panel: open a ±60° tilt series (no error in any bar; the overlay says why it is empty)",
        widget(lambda path=path: opened(path)), expect="ok")
    path = part_file("narrow_panel", 0, 10)
    add("panel: open 0°–10° (the centre cannot be found: said in the centre step)",
        widget(lambda path=path: panel_on(path).center_sweep.task.error),
        place=("centre px", "row"), value=("0°–10°",), forbid=("center=",))
    return cases


def _find(f, name):
    found = []
    f.visit(lambda n: found.append(n) if n.rsplit("/", 1)[-1] == name else None)
    if not found:
        raise KeyError(name)
    return found[0]


def _cli_raise(done):
    out = cli_outcome(done)
    if out.kind == "error" and out.tomolab:
        raise TomolabError(out.message.split(": error: ", 1)[1])
    if out.kind != "ok":
        raise RuntimeError(out.message)


# --------------------------------------------------------------------------------------------

def table(results) -> str:
    lines = ["| category | tried | clear | weak | bad |", "| --- | ---: | ---: | ---: | ---: |"]
    total = [0, 0, 0, 0]
    for cat in CATEGORIES:
        rows = [r for r in results if r[0].category == cat]
        if not rows:
            continue
        counts = [len(rows)] + [sum(r[1] == k for r in rows) for k in ("clear", "weak", "bad")]
        total = [a + b for a, b in zip(total, counts)]
        lines.append(f"| {cat} | " + " | ".join(map(str, counts)) + " |")
    lines.append("| **all** | " + " | ".join(f"**{n}**" for n in total) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="append to benchmarks/RESULTS.md")
    parser.add_argument("--only", default=None, help="run only cases whose name or category has this")
    parser.add_argument("--title", default="", help="words after the section's title")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", DeprecationWarning)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unmount and clean up on a kill
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tomolab_probe_") as tmp:
        fx = Fixtures(Path(tmp))
        fx.mounted = []
        try:
            cases = build_cases(fx)
            if args.only:
                cases = [c for c in cases if args.only.lower() in (c.name + c.category).lower()]
            results = []
            for i, case in enumerate(cases, 1):
                t0 = time.perf_counter()
                try:
                    out = case.run()
                except Exception as exc:  # noqa: BLE001 -- classified, never re-raised
                    out = Outcome("crash", f"probe: {type(exc).__name__}: {exc}", "probe")
                if case.check is not None:
                    problem = case.check()
                    if problem:
                        out.problem = out.problem or problem
                verdict, why = classify(case, out)
                results.append((case, verdict, why))
                print(f"[{i:3d}/{len(cases)}] {verdict:5s} {time.perf_counter() - t0:5.1f}s "
                      f"{case.category}: {case.name} -- {why}", flush=True)
        finally:
            for m in fx.mounted:
                subprocess.run(["umount", str(m)], capture_output=True, check=False)
    report = [table(results), ""]
    for verdict in ("bad", "weak"):
        listed = [r for r in results if r[1] == verdict]
        if listed:
            report.append(f"{verdict.capitalize()} ({len(listed)}):\n")
            report += [f"- {c.category}: **{c.name}** — {why}".replace("|", "\\|")
                       for c, _, why in listed]
            report.append("")
    text = "\n".join(report)
    print()
    print(text)
    print(f"{len(results)} cases in {time.perf_counter() - started:.0f} s")
    if args.write:
        today = datetime.date.today().isoformat()
        section = (f"\n## Bad and adversarial inputs (issue 11) — `probe_bad_inputs.py`"
                   f"{' — ' + args.title if args.title else ''}\n\n"
                   f"{today}, run on this workplace's 2-core machine ({len(results)} cases, "
                   f"{time.perf_counter() - started:.0f} s).\n\n{text}\n")
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(section)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
