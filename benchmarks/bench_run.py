"""Benchmark: ``growth run`` on the bundled example, end to end, with per-stage times.

Not a test. Runs the real command line (``growth run CONFIG --no-cache``) in a
fresh process, as a user would, into a temporary output folder, and reads the
progress lines it prints on stderr as they arrive: the time of each line,
counted from the start of the process, splits the run into stages. Two set-ups:

- ``server``: a Prefect server started here on a free loopback port (its own
  temporary ``PREFECT_HOME``), ``PREFECT_API_URL`` pointing at it; the server
  is stopped at the end, also when a run fails;
- ``no-server``: no ``PREFECT_API_URL``, so ``growth run`` starts Prefect's
  temporary local server for the length of each run, as it does for a user
  without a server.

Each set-up is run ``--repeat`` times (the machine is shared: take the best);
the imports alone (``import flows.study`` in a fresh process) are timed too.
Targets (issue 14): under 5 s with a running server, under 15 s without.

    .venv/bin/python benchmarks/bench_run.py [--repeat 3] [--mode both|server|no-server]
                                             [--config config/early.toml] [--cached]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"server": 5.0, "no-server": 15.0}
STAGES = ("load", "validate", "reshape", "analyse", "report", "outputs")


def _bin(name: str) -> str:
    """``name`` from the running interpreter's environment (the project's venv)."""
    here = Path(sys.executable).parent / name
    found = here if here.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"error: {name!r} not found beside {sys.executable} or on PATH")
    return str(found)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(home: Path, cache: Path, api_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        GROWTH_CACHE_DIR=str(cache),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@dataclass
class Run:
    total: float
    marks: list[tuple[str, float]] = field(default_factory=list)
    cpu: float = 0.0

    def stages(self) -> list[tuple[str, float]]:
        """Seconds per stage: from the previous progress line (or the start) to this one."""
        out, previous = [], 0.0
        for name, at in self.marks:
            label = "start + load" if name == "load" else name
            out.append((label, at - previous))
            previous = at
        out.append(("exit (artifacts, shutdown)", self.total - previous))
        return out


def run_once(config: Path, output: Path, env: dict[str, str], *, cached: bool) -> Run:
    """One ``growth run`` in a fresh process; the time of each progress line."""
    command = [_bin("growth"), "run", str(config), "--output", str(output)]
    if not cached:
        command.append("--no-cache")
    marks: list[tuple[str, float]] = []
    lines: list[str] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None and process.stdout is not None

    def read_stderr() -> None:
        for line in process.stderr:
            at = time.perf_counter() - start
            lines.append(line.rstrip("\n"))
            if line.startswith("["):
                stage = line.split("]", 1)[1].split(":", 1)[0].strip()
                marks.append((stage, at))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout = process.stdout.read()
    code = process.wait()
    total = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    reader.join()
    if code != 0:
        raise SystemExit(f"error: growth run failed (exit {code}):\n" + "\n".join(lines[-20:]))
    if "report:" not in stdout:
        raise SystemExit(f"error: growth run printed no report path: {stdout!r}")
    return Run(total=total, marks=marks, cpu=cpu)


def import_time(env: dict[str, str]) -> float:
    """Seconds to ``import flows.study`` (Prefect, the pipeline and their libraries)."""
    code = (
        "import time; t = time.perf_counter(); import flows.study; print(time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


class Server:
    """``prefect server start`` on a free loopback port; stopped on exit."""

    def __init__(self, home: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.home, self.log = home, log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        env = _environment(self.home, self.home / "cache", None)
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [
                    _bin("prefect"),
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"error: the Prefect server exited; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__(None, None, None)
        raise SystemExit("error: the Prefect server did not answer within 120 s")

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def report(mode: str, runs: list[Run]) -> float:
    best = min(runs, key=lambda r: r.total)
    totals = ", ".join(f"{r.total:.2f}" for r in runs)
    cpus = ", ".join(f"{r.cpu:.2f}" for r in runs)
    target = TARGETS[mode]
    verdict = "meets" if best.total < target else "MISSES"
    print(
        f"\n{mode}: best {best.total:.2f} s of [{totals}] ({verdict} the target < {target:.0f} s)"
    )
    print(f"  CPU time of each run (user + system, with what it waited for): [{cpus}] s")
    print("  stages of the best run (s):")
    for label, seconds in best.stages():
        print(f"    {label:<28} {seconds:6.2f}")
    return best.total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "early.toml")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mode", choices=("both", "server", "no-server"), default="both")
    parser.add_argument("--cached", action="store_true", help="reuse cached fits (no --no-cache)")
    args = parser.parse_args(argv)
    config = args.config.resolve()
    print(
        f"growth run {config.relative_to(ROOT) if config.is_relative_to(ROOT) else config}"
        f" ({'cached' if args.cached else 'fresh'} fits), best of {args.repeat}"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    print("(the wall times depend on what else runs; the CPU times much less)")
    modes = ["server", "no-server"] if args.mode == "both" else [args.mode]
    with tempfile.TemporaryDirectory(prefix="bench_run_") as tmp:
        work = Path(tmp)
        env = _environment(work / "home", work / "cache", None)
        imports = min(import_time(env) for _ in range(args.repeat))
        print(f"imports alone (import flows.study, fresh process): {imports:.2f} s")
        for mode in modes:
            home = work / f"home-{mode}"
            home.mkdir()
            runs: list[Run] = []
            if mode == "server":
                with Server(home, work / "server.log") as server:
                    env = _environment(home, work / "cache", server.url)
                    for i in range(args.repeat):
                        runs.append(
                            run_once(config, work / f"out-{mode}-{i}", env, cached=args.cached)
                        )
            else:
                env = _environment(home, work / "cache", None)
                for i in range(args.repeat):
                    runs.append(run_once(config, work / f"out-{mode}-{i}", env, cached=args.cached))
            report(mode, runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
