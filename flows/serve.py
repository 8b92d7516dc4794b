"""Serve scheduled studies as Prefect deployments (``growth serve [CONFIG_DIR]``).

Every study config in the folder that declares ``[schedule]`` becomes a
deployment ``growth-study/<study name>`` of :func:`flows.study.growth_study`
with its cron schedule and time zone, and the config's absolute path as the
default ``config`` parameter. The serving process polls the Prefect API for
scheduled runs and for runs started by hand (the UI's "Run" button, or
``prefect deployment run growth-study/early``) and runs each in a subprocess.
Without ``PREFECT_API_URL`` Prefect starts a temporary local server that lives
as long as the serving process; with it, the deployments are registered on that
server.
"""

from __future__ import annotations

import sys
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


def serve_studies(config_dir: Path, *, limit: int | None = None) -> None:
    """Serve the scheduled studies of ``config_dir`` until interrupted."""
    from prefect import serve

    studies = scheduled_studies(config_dir)
    if not studies:
        raise ConfigError(
            f"{config_dir}: no study config with a [schedule] table; nothing to serve"
        )
    for study in studies:
        schedule = study.config.schedule
        assert schedule is not None
        print(
            f"[{study.name}] serve: growth-study/{study.name} on '{schedule.cron}' "
            f"({schedule.timezone}) from {study.path}",
            file=sys.stderr,
            flush=True,
        )
    serve(*deployments(studies), limit=limit, print_starting_message=True)
