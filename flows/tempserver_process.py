"""The temporary Prefect API server's own process.

Started as ``python -m flows.tempserver --parent PID --port N`` by
:func:`flows.tempserver.temporary_api_server` (which explains the design);
``flows.tempserver`` hands over to :func:`main` before its own imports. This
module imports nothing but the standard library before it has armed its
guards against outliving its parent (the pipeline's imports took 1-2 s, during
which a killed parent left the server running), and nothing of the pipeline
at all: the server starts sooner, which is time a run without a Prefect
server waits for.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1
_WATCH_SECONDS = 0.2


def _die_with(parent: int) -> None:
    """Exit when ``parent`` is gone: PR_SET_PDEATHSIG on Linux, and a watchdog thread."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(_WATCH_SECONDS)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """``--parent PID --port N``: serve the Prefect API on loopback while PID lives."""
    parser = argparse.ArgumentParser(prog="python -m flows.tempserver")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with(args.parent)
    import uvicorn

    uvicorn.run(
        "prefect.server.api.server:create_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        log_level="error",
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
