"""The command line as a newcomer meets it: help for every flag, where the demo writes, progress."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest

from tomolab.cli import build_parser


def run_cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "tomolab.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _options():
    parser = build_parser()
    yield "tomolab", parser
    yield from ((f"tomolab {name}", sub) for name, sub in _subparsers(parser).items())


@pytest.mark.parametrize("command, parser", list(_options()), ids=lambda v: getattr(v, "prog", v))
def test_every_option_says_what_it_does_and_its_default(command, parser):
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{command} {name}: no help text"
        if action.option_strings and not isinstance(action, argparse._VersionAction):
            assert "default" in action.help or action.required, f"{command} {name}: no default"


@pytest.mark.parametrize("args", [[], ["demo"], ["info"], ["recon"], ["simulate"], ["stream-sim"]])
def test_help_is_plain_text(args):
    result = run_cli(*args, "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "``" not in text and ":func:" not in text and "%(" not in text, text
    assert "default" in text or args == ["info"] or not args


def test_demo_writes_to_the_user_cache_and_says_so(tmp_path):
    work = tmp_path / "checkout"
    work.mkdir()
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    result = run_cli("demo", "--size", 64, "--rows", 2, "--angles", 100, "--backend", "numpy",
                     cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    demo = tmp_path / "cache" / "tomolab" / "demo"
    assert (demo / "volume.zarr").is_dir() and (demo / "middle_slice.png").is_file()
    assert str(demo / "volume.zarr") in result.stdout
    assert list(work.iterdir()) == []  # the folder it ran in (a checkout: git status) is untouched


@pytest.fixture
def scan_file(tmp_path):
    path = tmp_path / "scan.h5"
    result = run_cli("simulate", path, "--size", 64, "--rows", 8, "--angles", 100)
    assert result.returncode == 0, result.stderr
    return path, result


def test_simulate_shows_progress_unless_quiet(tmp_path, scan_file):
    _, shown = scan_file
    assert "simulate" in shown.stderr and "100/100" in shown.stderr
    quiet = run_cli("simulate", tmp_path / "quiet.h5", "--size", 64, "--rows", 8, "--angles", 100,
                    "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_recon_bar_and_summary_give_the_same_time(tmp_path, scan_file):
    path, _ = scan_file
    result = run_cli("recon", path, "-o", tmp_path / "vol.zarr", "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    bar = result.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert "8/8" in bar
    minutes, seconds = map(int, re.search(r"\[(\d+):(\d+)<", bar).groups())
    summary = float(re.search(r"reconstructed in ([0-9.]+) s", result.stdout).group(1))
    # the bar shows whole seconds, the summary tenths: the same clock read at the same end
    assert int(summary) - 1 <= 60 * minutes + seconds <= int(summary) + 1, (bar, result.stdout)
