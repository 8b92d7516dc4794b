"""Prefect settings for ``growth``, applied before Prefect is imported.

Prefect reads ``prefect.toml`` from the current folder only. So that ``growth``
is equally quiet when started from elsewhere (or as a served deployment), the
same values are set here as environment defaults: a variable that is already
set wins, and when the current folder has its own ``prefect.toml`` Prefect's
own reading of it wins. ``tests/test_cli.py`` checks that these values and the
repository's ``prefect.toml`` agree.

This module must not import Prefect.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["PREFECT_DEFAULTS", "apply_prefect_defaults"]

PREFECT_DEFAULTS: dict[str, str] = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}
"""Environment names of the settings in the repository's ``prefect.toml``."""


def apply_prefect_defaults(
    environ: MutableMapping[str, str] | None = None, cwd: Path | None = None
) -> dict[str, str]:
    """Set :data:`PREFECT_DEFAULTS` in ``environ`` where not set; return what was set.

    Nothing is set when ``cwd`` holds a ``prefect.toml`` (Prefect reads it itself,
    and environment variables would override it).
    """
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    if (cwd / "prefect.toml").is_file():
        return {}
    applied = {}
    for name, value in PREFECT_DEFAULTS.items():
        if name not in environ:
            environ[name] = value
            applied[name] = value
    return applied
