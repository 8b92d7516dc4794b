"""A temporary Prefect API server that dies with the ``growth`` process that started it.

Without ``PREFECT_API_URL`` (and no API URL in the Prefect profile), Prefect would
start its own temporary server as a plain child process. Killed with SIGKILL,
the ``growth`` process cannot stop that child: the server is re-parented to
PID 1, keeps listening, and keeps the caller's stdout/stderr open, so
``subprocess.communicate()``, a CI log or ``$(growth run ...)`` hang forever.

So ``growth`` starts the server itself (:func:`temporary_api_server`):

- as ``python -m flows.tempserver --parent PID --port N`` (which runs
  :mod:`flows.tempserver_process` before this module imports anything of the
  pipeline, so that it arms the guards below at once and starts quickly) in a
  session of its own
  (a Ctrl-C at the terminal reaches ``growth`` only, which can then record the
  failed run through the still-running server before it stops it);
- with stdin, stdout and stderr not inherited (stdout/stderr go to a private log
  file that is shown when the server fails to start), so even a server that
  outlived ``growth`` could not hold the caller's pipes open;
- the server asks the kernel to kill it when its parent dies
  (``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux, set in the server process and
  followed by a check that the parent is still the one that started it, which
  closes the race between fork and prctl), and a watchdog thread in the server
  exits as soon as its parent pid changes (every 0.2 s; the same guard on
  systems without prctl). Whatever ends ``growth`` (SIGKILL included), the
  server follows within a fraction of a second;
- on a normal exit, Ctrl-C or SIGTERM, ``growth`` stops the server's process
  group itself (SIGTERM, then SIGKILL after 5 s).

Waiting for the server to answer is a loop of short sleeps, so Ctrl-C and
SIGTERM end ``growth`` at once during start-up too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

if __name__ == "__main__":  # the server's own process: see flows.tempserver_process
    from flows.tempserver_process import main as _serve

    sys.exit(_serve())

# after the server's exit above: importing the pipeline takes 1-2 s
from pipeline.errors import GrowthError, one_line  # noqa: E402

__all__ = ["ServerError", "api_url_configured", "drain_prefect", "temporary_api_server"]

_STARTUP_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


class ServerError(GrowthError):
    """The temporary Prefect server could not be started."""


def api_url_configured() -> bool:
    """True when Prefect already has an API to talk to (environment, profile or a test harness)."""
    if os.environ.get("PREFECT_API_URL", "").strip():
        return True
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:  # noqa: S310 - loopback
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class _Server:
    """The server process, its log and its address."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"PREFECT_API_URL", "PREFECT_API_KEY"}
        }
        env.update(
            PREFECT_UI_ENABLED="0",
            PREFECT__SERVER_EPHEMERAL="1",
            PREFECT__SERVER_FINAL="1",
            PYTHONPATH=os.pathsep.join(
                [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
            ).rstrip(os.pathsep),
        )
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flows.tempserver",
                    "--parent",
                    str(os.getpid()),
                    "--port",
                    str(self.port),
                ],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                env=env,
                start_new_session=True,
                close_fds=True,
            )

    def log_tail(self) -> str:
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line]
        except OSError:
            return ""
        return one_line(lines[-1]) if lines else ""

    def stop(self) -> None:
        process = self.process
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _start(log: Path, timeout: float, while_starting: Callable[[], object] | None) -> _Server:
    """Start the server and wait (in short sleeps) until it answers; retry a taken port.

    ``while_starting`` is called once, right after the first server process is
    started: work that does not need the server overlaps its start-up.
    """
    for _attempt in range(3):
        server = _Server(log)
        deadline = time.monotonic() + timeout
        try:
            if while_starting is not None:
                while_starting()
                while_starting = None
            while time.monotonic() < deadline:
                if server.process.poll() is not None:
                    break
                if _healthy(server.url):
                    return server
                time.sleep(0.1)
        except BaseException:
            server.stop()
            raise
        code = server.process.poll()
        server.stop()
        if code is None:
            raise ServerError(
                f"the temporary Prefect server did not answer within {timeout:.0f} s "
                f"(set {_STARTUP_ENV} to wait longer, or PREFECT_API_URL to use a running server)"
            )
        if "address already in use" not in server.log_tail().lower():
            break
    raise ServerError(
        f"the temporary Prefect server stopped at start-up (exit code {code}): "
        f"{server.log_tail() or 'no message'}; set PREFECT_API_URL to use a running server"
    )


@contextlib.contextmanager
def temporary_api_server(
    while_starting: Callable[[], object] | None = None,
) -> Iterator[str | None]:
    """Start a temporary API server unless one is configured; yield its URL (or ``None``).

    While the context is open, Prefect talks to that server (``PREFECT_API_URL``
    is set in the environment and in Prefect's settings); on leaving it, the
    server is stopped, however the context is left. ``while_starting`` (if
    given) is called while the server starts, before its first answer is
    awaited (``growth run`` imports the flow's modules then: the two take
    seconds each and run on different cores); it is not called when a server
    is configured.
    """
    if api_url_configured():
        yield None
        return
    try:
        timeout = float(os.environ.get(_STARTUP_ENV, "90"))
    except ValueError:
        timeout = 90.0
    with tempfile.TemporaryDirectory(prefix="growth-server-") as folder:
        server = _start(Path(folder) / "server.log", timeout, while_starting)
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = server.url
        try:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: server.url}):
                yield server.url
        finally:
            drain_prefect()
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous
            server.stop()


class _QuietDrain(logging.Filter):
    """Drop a queue's "Still processing items: N items remaining..." while it is drained.

    Prefect logs it (as a warning, on the console) whenever a drain finds items
    still queued, which is the normal case when the run has just ended.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Still processing items")


def drain_prefect(timeout: float = 5) -> None:
    """Send Prefect's queued logs and events now (each queue waits at most ``timeout`` s).

    Before the temporary server stops: otherwise they are sent at exit, to a
    server that is gone, and Prefect prints "Error logging to API" after the
    run's last line. Before ``growth run`` ends its process with ``os._exit``
    (:mod:`flows.cli`): the exit handlers that would send them do not run.
    """
    services = (
        ("prefect.logging.handlers", "APILogWorker"),
        ("prefect.events.worker", "EventsWorker"),
    )
    # one drain_all may drain the other service's queues too: both loggers quiet throughout
    loggers = [logging.getLogger(name) for _, name in services]  # Prefect names them so
    quiet = _QuietDrain()
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        for module, name in services:
            if module in sys.modules:
                with contextlib.suppress(Exception):
                    getattr(sys.modules[module], name).drain_all(timeout=timeout)
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
