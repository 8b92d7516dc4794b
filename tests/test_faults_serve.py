"""``growth serve`` on its first day (issue 15): one-line errors, and it stops when told.

- A run started from the UI with a bad parameter logs one line (``error: ...``), not
  two 80-line tracebacks (the flow run and its task run).
- SIGINT and SIGTERM end ``growth serve`` promptly, also once its server is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"outcome": "nope"}, "column 'nope'"),
        ({"output": "FILE"}, "parameter 'output': "),
        ({"intercept_predictors": ["trt", "trt"]}, "a predictor is listed twice"),
    ],
)
def test_a_bad_parameter_from_the_ui_is_one_line(make_study, tmp_path, parameters, message):
    import logging

    from flows.study import growth_study
    from pipeline.errors import GrowthError

    config = make_study()
    if parameters.get("output") == "FILE":
        (tmp_path / "a-file").write_text("x")
        parameters = {"output": str(tmp_path / "a-file")}

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.ERROR)
            self.setFormatter(logging.Formatter("%(message)s"))
            self.shown: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.shown.append(self.format(record))

    keep = Keep()
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addHandler(keep)
    try:
        with pytest.raises(GrowthError):
            growth_study(config=str(config), **parameters)
    finally:
        for logger in loggers:
            logger.removeHandler(keep)
    assert keep.shown, "the failure was not logged"
    for text in keep.shown:  # "error: ..." and Prefect's "Finished in state Failed(...)"
        assert "Traceback" not in text and "\n" not in text, text
        assert message in text, text
    assert any(text.startswith("error: ") for text in keep.shown), keep.shown


# ------------------------------------------------------------------ signals


def _servers_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"flows.tempserver" in command and str(pid).encode() in command:
                found.append(int(entry.name))
    return found


class _Serve:
    def __init__(self, config_dir: Path, tmp: Path) -> None:
        env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        env["PREFECT_HOME"] = str(tmp / "prefect-home")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", str(config_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp,
        )
        self.lines: list[str] = []
        self.servers: list[int] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def wait_until_serving(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.servers = _servers_of(self.process.pid) or self.servers
            if any("Ctrl-C to stop" in line for line in self.lines):
                return
            assert self.process.poll() is None, "\n".join(self.lines)
            time.sleep(0.1)
        pytest.fail("growth serve did not start serving:\n" + "\n".join(self.lines))

    def ended_within(self, seconds: float) -> bool:
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        for pid in set(self.servers) | set(_servers_of(self.process.pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.reader.join(timeout=10)


@pytest.fixture
def serving(make_study, tmp_path):
    config = make_study(name="early.toml")
    started: list[_Serve] = []

    def start() -> _Serve:
        serve = _Serve(config.parent, tmp_path)
        started.append(serve)
        return serve

    try:
        yield start
    finally:
        for serve in started:
            serve.cleanup()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, waiting for its parent to reap it


def _gone(pids: list[int], within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_ctrl_c_ends_serve_promptly(serving):
    serve = serving()
    serve.wait_until_serving()
    assert serve.servers, "serve started no temporary server"
    serve.process.send_signal(signal.SIGINT)
    assert serve.ended_within(40), "SIGINT was ignored:\n" + "\n".join(serve.lines)
    assert serve.process.returncode == 130
    assert _gone(serve.servers)


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_sigterm_ends_serve_also_after_its_server_is_gone(serving):
    serve = serving()
    serve.wait_until_serving()
    for pid in serve.servers:
        os.kill(pid, signal.SIGKILL)
    assert _gone(serve.servers)
    time.sleep(3)  # the runner now polls a server that is gone
    serve.process.send_signal(signal.SIGTERM)
    assert serve.ended_within(60), "SIGTERM was ignored:\n" + "\n".join(serve.lines)
    assert serve.process.returncode == 128 + signal.SIGTERM
    assert serve.lines[-1].startswith("error: "), serve.lines
