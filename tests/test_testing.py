"""tomolab.testing ships in the wheel: importing it must not need pytest."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tomolab.testing


def test_import_does_not_load_pytest():
    code = "import sys, tomolab.testing; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_decorators_are_pytest_marks():
    assert isinstance(tomolab.testing.requires_gpu, pytest.MarkDecorator)

    def check():
        pass

    marked = tomolab.testing.gpu_test(check)
    assert {m.name for m in marked.pytestmark} == {"gpu", "skipif"}
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tomolab.testing.nothing  # noqa: B018
