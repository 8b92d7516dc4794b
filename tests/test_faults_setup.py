"""Set-up noise (issue 15): ``make run`` installs quietly, and shows everything when it fails.

The Makefile's install step is run with a stand-in ``python`` in a throw-away venv
folder: one that succeeds after printing setuptools' editable-install warning, and
one whose pip fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

WARNING = """\
!!

        ********************************************************************************
        Editable install will be performed using a meta path finder.

        Options like `package-data`, `include/exclude-package-data` or
        `packages.find.exclude/include` may have no effect.
        ********************************************************************************

!!"""


def _fake_venv(tmp_path: Path, *, fail: bool) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "python"
    body = f"import sys\nsys.stderr.write({WARNING!r} + '\\n')\n" + (
        "if '-e' in sys.argv: sys.stderr.write('ERROR: boom, no such package\\n'); sys.exit(1)\n"
        if fail
        else ""
    )
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(0o755)
    return venv


def _make(venv: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), f"{venv}/.installed", f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MAKEFLAGS": ""},
    )


def test_a_successful_install_prints_no_setuptools_warning(tmp_path):
    venv = _fake_venv(tmp_path, fail=False)
    done = _make(venv)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "Editable install" not in output and "!!" not in output
    assert output.strip() == f"installing the project into {venv} (log: {venv}/install.log)"
    assert (venv / ".installed").exists()
    assert "Editable install" in (venv / "install.log").read_text()


def test_a_failed_install_shows_the_whole_log(tmp_path):
    venv = _fake_venv(tmp_path, fail=True)
    done = _make(venv)
    assert done.returncode != 0
    assert "ERROR: boom, no such package" in done.stderr
    assert f"error: installing into {venv} failed" in done.stderr
    assert not (venv / ".installed").exists()
