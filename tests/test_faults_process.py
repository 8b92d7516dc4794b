"""``growth run`` killed, terminated or interrupted (issue 15, faults 1 and 2).

Each test starts ``growth run`` in a subprocess with pipes and no ``PREFECT_API_URL``,
so that it starts its temporary Prefect server, then signals it at a chosen moment:

- SIGKILL mid-run: ``communicate()`` returns (nobody holds the pipes) and no server
  process is left;
- SIGTERM after the data were read: exit 143, one line, a failure record in
  ``runs/<id>`` (``failure.md``, manifest ``"status": "failed"``), no half output;
- SIGINT while the temporary server starts: exit 130 within seconds, no server left.

Every test kills whatever it started, also when it fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXAMPLE_CONFIG, REPO

pytestmark = [
    pytest.mark.server,
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the server"),
]

SERVER_MARKERS = ("flows.tempserver", "prefect.server.api.server:create_app")


def _servers() -> dict[int, str]:
    """Every Prefect API server process on the machine: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(marker in command for marker in SERVER_MARKERS):
            found[int(entry.name)] = command
    return found


def _home_of(pid: int) -> str | None:
    """The PREFECT_HOME in a process's environment (None when unreadable or unset)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"PREFECT_HOME="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


class _Run:
    """``growth run`` in a subprocess with pipes; stderr collected line by line."""

    def __init__(self, tmp: Path) -> None:
        env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        env["GROWTH_CACHE_DIR"] = str(tmp / "cache")
        self.home = str(tmp / "prefect-home")
        env["PREFECT_HOME"] = self.home  # a database of its own; marks this run's server
        self.out = tmp / "out"
        self.before = set(_servers())
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flows.cli",
                "run",
                str(EXAMPLE_CONFIG),
                "--output",
                str(self.out),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp,
        )

    def new_servers(self) -> dict[int, str]:
        """Servers of this run: started after it and with its PREFECT_HOME in their
        environment (another test suite or a run elsewhere on the machine is not ours)."""
        return {
            pid: command
            for pid, command in _servers().items()
            if pid not in self.before and _alive(pid) and _home_of(pid) == self.home
        }

    def wait_for_server(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.new_servers():  # ours (flows.tempserver) or, before the fix, Prefect's own
                return
            assert self.process.poll() is None, "growth run ended before its server started"
            time.sleep(0.05)
        pytest.fail("the temporary server did not start")

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        for pid in self.new_servers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def growth_run(tmp_path) -> Iterator[_Run]:
    run = _Run(tmp_path)
    try:
        yield run
    finally:
        run.cleanup()


def _no_server_left(run: _Run, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while run.new_servers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run.new_servers() == {}, "a Prefect server outlived growth run"


def test_a_killed_run_leaves_no_server_holding_its_pipes(growth_run):
    growth_run.wait_for_server()
    time.sleep(1)
    growth_run.process.send_signal(signal.SIGKILL)
    started = time.monotonic()
    try:
        growth_run.process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("communicate() hung: something still holds growth run's stdout/stderr")
    assert time.monotonic() - started < 30
    assert growth_run.process.returncode == -signal.SIGKILL
    _no_server_left(growth_run)


def _stderr_lines(process: subprocess.Popen) -> tuple[list[str], threading.Thread]:
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            lines.append(raw.decode(errors="replace").rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def _wait_for(lines: list[str], text: str, process: subprocess.Popen, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in lines):
            return
        assert process.poll() is None, f"growth run ended early: {lines}"
        time.sleep(0.02)
    pytest.fail(f"{text!r} never appeared: {lines}")


def test_sigterm_mid_run_ends_it_with_a_failure_record(growth_run):
    process = growth_run.process
    lines, reader = _stderr_lines(process)
    _wait_for(lines, "[early] load:", process)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"SIGTERM was ignored: {lines}")
    reader.join(timeout=30)
    assert not reader.is_alive(), "stderr stayed open after growth run ended"
    assert time.monotonic() - started < 60
    assert process.returncode == 128 + signal.SIGTERM, lines
    assert lines[-1] == "error: terminated (SIGTERM); nothing was published", "\n".join(lines)
    assert not any("Traceback" in line for line in lines)
    runs = [folder for folder in (growth_run.out / "runs").iterdir()]
    assert [folder.name for folder in runs if folder.name.startswith(".")] == []
    (failed,) = runs
    manifest = json.loads((failed / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "ended by SIGTERM" in manifest["error"]
    assert "ended by SIGTERM" in (failed / "failure.md").read_text()
    assert not (growth_run.out / "report.html").exists()
    assert not (growth_run.out / "latest").exists()
    _no_server_left(growth_run)


def test_ctrl_c_while_the_server_starts_ends_the_run_at_once(growth_run):
    process = growth_run.process
    growth_run.wait_for_server()
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    try:
        _, err = process.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        pytest.fail("Ctrl-C was ignored while the temporary server started")
    assert time.monotonic() - started < 40
    assert process.returncode == 130
    assert err.decode().strip().splitlines()[-1] == "error: interrupted"
    _no_server_left(growth_run)
