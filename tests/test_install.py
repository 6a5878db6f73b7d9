"""An install that never breaks: caches outside the package, the notebook extra named, README's order.

Numba's ``cache=True`` once wrote next to the installed modules, inside
``site-packages/tomolab``; that folder outlived ``pip uninstall`` and, as a
namespace package, shadowed a later editable install (``module 'tomolab' has
no attribute '__version__'``). These tests run real interpreters, and the slow
one real ``pip`` installs into a fresh virtual environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: compiles the FBP kernel (cache=True) of a small reconstruction
RECONSTRUCT = ("import tomolab; scan = tomolab.data.simulate_scan(32, n_rows=2, n_angles=40); "
               "tomolab.reconstruct(scan, center=16.0, backend='numpy')")


def _python(code: str, env: dict, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)


def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path / "cache"), **extra)
    return env


def _numba_files(folder: Path) -> set:
    return {p for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")}


def test_numba_caches_in_the_users_cache_folder_not_the_package(tmp_path):
    before = _numba_files(ROOT / "tomolab")
    result = _python(RECONSTRUCT + "; import os; print(os.environ['NUMBA_CACHE_DIR'])",
                     _env(tmp_path))
    assert result.returncode == 0, result.stderr
    cache = tmp_path / "cache" / "tomolab" / "numba"
    assert result.stdout.split()[-1] == str(cache)
    assert _numba_files(cache), "nothing was cached"
    assert _numba_files(ROOT / "tomolab") == before  # nothing new next to the modules


def test_a_numba_cache_dir_the_user_set_is_kept(tmp_path):
    mine = tmp_path / "mine"
    result = _python(RECONSTRUCT, _env(tmp_path, NUMBA_CACHE_DIR=str(mine)))
    assert result.returncode == 0, result.stderr
    assert _numba_files(mine) and not (tmp_path / "cache" / "tomolab" / "numba").exists()


def test_numba_imported_before_tomolab_still_caches_in_the_users_folder(tmp_path):
    result = _python("import numba; " + RECONSTRUCT + "; print(numba.config.CACHE_DIR)",
                     _env(tmp_path))
    assert result.returncode == 0, result.stderr
    cache = tmp_path / "cache" / "tomolab" / "numba"
    assert result.stdout.split()[-1] == str(cache) and _numba_files(cache)


@pytest.mark.parametrize("package", ["ipywidgets", "holoviews", "ipyvolume"])
def test_widgets_without_the_notebook_stack_name_the_extra(tmp_path, package):
    # as if the package were not installed: the import system finds nothing for it
    result = _python(f"import sys; sys.modules[{package!r}] = None; import tomolab.widgets",
                     _env(tmp_path))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError") and package in last, result.stderr
    assert 'pip install "tomolab[notebook]"' in last


def _readme_command(marker: str) -> str:
    """The command in the ```bash block after ``<!-- marker -->`` (as .ci/run reads them)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    at = lines.index(f"<!-- {marker} -->")
    assert lines[at + 1] == "```bash", f"README.md: no bash block after <!-- {marker} -->"
    return lines[at + 2]


def _source_copy(target: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored) copied to ``target``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())
    return target


@pytest.mark.slow
def test_install_as_the_readme_says_in_a_fresh_venv(tmp_path):
    """The README's main command, then its notebook command, each followed by the CLI.

    Between them a user could run the test command; it is skipped here (it
    installs the whole test stack). pip's cache is the user's, so the wheels
    are downloaded once per machine; builds are isolated, as the README's
    commands run them.
    """
    main_command = _readme_command("demo-command")
    notebook_command = _readme_command("notebook-command")
    assert main_command == "python -m pip install . && tomolab demo"
    assert "-e" in notebook_command.split() and "[notebook]" in notebook_command
    source = _source_copy(tmp_path / "checkout")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip_cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True,
                               text=True, check=False).stdout.strip()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "NUMBA_CACHE_DIR", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    if pip_cache:
        env["PIP_CACHE_DIR"] = pip_cache
    python = str(venv / "bin" / "python")
    seconds = {}

    def shell(command: str, step: str) -> str:
        started = time.perf_counter()
        result = subprocess.run(["bash", "-c", command], cwd=source, env=env, capture_output=True,
                                text=True, timeout=1800, check=False)
        seconds[step] = time.perf_counter() - started
        assert result.returncode == 0, f"{step}: {command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    def check_cli(step: str):
        assert shell("tomolab --version", f"{step}: version").strip() == "tomolab 0.1.0"
        out = shell("tomolab demo --size 64 --rows 2 --angles 100", f"{step}: demo")
        assert "error against the phantom" in out
        site = shell(f"{python} -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'",
                     f"{step}: site").strip()
        assert not _numba_files(Path(site)), "Numba cached inside site-packages"
        return out

    out = shell(main_command, "main command")
    assert str(tmp_path / "cache" / "tomolab" / "demo") in out  # the demo wrote to the cache
    check_cli("after the main command")
    no_widgets = subprocess.run([python, "-c", "import tomolab.widgets"], env=env, cwd=tmp_path,
                                capture_output=True, text=True, check=False)
    assert 'pip install "tomolab[notebook]"' in no_widgets.stderr

    shell(notebook_command, "notebook command")
    check_cli("after the notebook command")
    where = shell(f"{python} -c 'import tomolab, tomolab.widgets; print(tomolab.__file__)'",
                  "widgets")
    assert Path(where.strip()).is_relative_to(source)  # the editable install is the one imported
    print("seconds per step:", {k: round(v, 1) for k, v in seconds.items()})
