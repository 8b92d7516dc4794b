"""Serve scheduled studies as Prefect deployments (``growth serve [CONFIG_DIR]``).

Every study config in the folder that declares ``[schedule]`` becomes a
deployment ``growth-study/<study name>`` of :func:`flows.study.growth_study`
with its cron schedule and time zone, and the config's absolute path as the
default ``config`` parameter. The serving process polls the Prefect API for
scheduled runs and for runs started by hand (the UI's "Run" button, or
``prefect deployment run growth-study/early``) and runs each in a subprocess.
Without ``PREFECT_API_URL`` a temporary local server is started
(:mod:`flows.tempserver`) that lives as long as the serving process and dies with
it; with it, the deployments are registered on that server.

The runner works in a thread of its own; the main thread only waits, so Ctrl-C
and SIGTERM are handled at once, whatever the runner is doing. On either, the
runner is asked to stop; if it has not stopped after ``stop_timeout`` seconds (it
may be retrying a server that is gone), ``growth serve`` exits anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import StudyConfig, load_config
from pipeline.errors import ConfigError

__all__ = ["ScheduledStudy", "deployments", "scheduled_studies", "serve_studies"]


@dataclass(frozen=True, slots=True)
class ScheduledStudy:
    """A study config with a schedule."""

    path: Path
    config: StudyConfig

    @property
    def name(self) -> str:
        return self.config.study.name


def scheduled_studies(config_dir: Path) -> list[ScheduledStudy]:
    """The study configs in ``config_dir`` (``*.toml``, sorted) that declare ``[schedule]``.

    Every config must be valid (a broken one is reported, not skipped); two
    scheduled studies with the same name are refused.
    """
    folder = Path(config_dir)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder; expected a folder of study configs (*.toml)")
    studies: list[ScheduledStudy] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.toml")):
        config = load_config(path)
        if config.schedule is None:
            continue
        name = config.study.name
        if name in seen:
            raise ConfigError(
                f"{path}: [study] name '{name}' is also used by {seen[name]}; "
                "expected one scheduled config per study"
            )
        seen[name] = path
        studies.append(ScheduledStudy(path=path.resolve(), config=config))
    return studies


def deployments(studies: list[ScheduledStudy]) -> list[Any]:
    """One Prefect ``RunnerDeployment`` per study, on its cron schedule."""
    from prefect.schedules import Cron

    from flows.study import growth_study

    made = []
    for study in studies:
        schedule = study.config.schedule
        assert schedule is not None
        made.append(
            growth_study.to_deployment(
                name=study.name,
                schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
                parameters={"config": str(study.path)},
                description=study.config.study.title,
                tags=["growth", study.name],
            )
        )
    return made


def serve_studies(
    config_dir: Path, *, limit: int | None = None, stop_timeout: float = 10.0
) -> None:
    """Serve the scheduled studies of ``config_dir`` until interrupted.

    Ctrl-C and SIGTERM (turned into :class:`KeyboardInterrupt` by the command
    line) stop the runner; when it does not stop within ``stop_timeout`` seconds,
    the process exits (``os._exit``) with 130 (Ctrl-C) or 143 (SIGTERM).
    """
    from flows.tempserver import temporary_api_server

    studies = scheduled_studies(config_dir)
    if not studies:
        raise ConfigError(
            f"{config_dir}: no study config with a [schedule] table; nothing to serve"
        )
    with temporary_api_server() as url:
        from prefect.runner import Runner

        runner = Runner(limit=limit)
        for deployment in deployments(studies):
            runner.add_deployment(deployment)
        for study in studies:
            schedule = study.config.schedule
            assert schedule is not None
            print(
                f"[{study.name}] serve: growth-study/{study.name} on '{schedule.cron}' "
                f"({schedule.timezone}) from {study.path}",
                file=sys.stderr,
                flush=True,
            )
        where = "a temporary local server" if url else "the Prefect API"
        print(
            f"serve: {len(studies)} deployment(s) on {where}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        _run_until_signal(runner, stop_timeout)


def _run_until_signal(runner: Any, stop_timeout: float) -> None:
    """Run ``runner`` in a thread; the main thread waits and handles Ctrl-C and SIGTERM."""
    failures: list[BaseException] = []

    def work() -> None:
        try:
            asyncio.run(runner.start())
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            failures.append(error)

    thread = threading.Thread(target=work, name="growth-serve-runner", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except BaseException as interruption:
        _stop(runner, thread, stop_timeout, interruption)
        raise
    if failures:
        raise failures[0]


def _stop(runner: Any, thread: threading.Thread, timeout: float, why: BaseException) -> None:
    loop = getattr(runner, "_loop", None)
    if loop is not None and loop.is_running():
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(runner.astop(), loop)
    thread.join(timeout)
    if not thread.is_alive():
        return
    number = getattr(why, "signal", None)
    code = 128 + number if isinstance(number, int) else 130
    print(
        f"error: interrupted; the runner did not stop within {timeout:.0f} s "
        "(is the Prefect server gone?), exiting",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    os._exit(code)
