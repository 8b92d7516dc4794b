"""Shared fixtures (kept minimal).

- ``REPO``, ``EXAMPLE_CONFIG``, ``EXAMPLE_DATA``: paths of the bundled example.
- ``prefect_harness`` (session): a temporary Prefect server and database for
  tests that run flows (``prefect.testing.utilities.prefect_test_harness``);
  started once, on first use.
- ``private_fit_cache`` (session, autouse): points ``GROWTH_CACHE_DIR`` at a
  temporary folder, so no test reads or writes the user's own fit cache.
- ``make_study`` (function): writes a copy of the example study into ``tmp_path``
  (config, data, output folder all inside it) with text replacements in the
  config and optionally other data; returns the config's path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "config" / "early.toml"
EXAMPLE_DATA = REPO / "data" / "early.csv"


@pytest.fixture(scope="session", autouse=True)
def private_fit_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``GROWTH_CACHE_DIR`` in a temporary folder for the whole session (cached fits go there)."""
    folder = tmp_path_factory.mktemp("fit-cache") / "growthcurves"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GROWTH_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server with its own database for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


MakeStudy = Callable[..., Path]


@pytest.fixture
def make_study(tmp_path: Path) -> MakeStudy:
    """``make_study(replace={"old": "new"}, data="id,cog,...", name="study.toml") -> Path``.

    The copy reads ``tmp_path/data/early.csv`` and writes to ``tmp_path/outputs/early``.
    """

    def make(
        replace: Mapping[str, str] | None = None,
        data: str | None = None,
        name: str = "study.toml",
    ) -> Path:
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "data").mkdir(exist_ok=True)
        data_file = tmp_path / "data" / "early.csv"
        data_file.write_text(
            EXAMPLE_DATA.read_text(encoding="utf-8") if data is None else data, encoding="utf-8"
        )
        text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
        for old, new in (replace or {}).items():
            assert old in text, f"{old!r} is not in the example config"
            text = text.replace(old, new)
        path = tmp_path / "config" / name
        path.write_text(text, encoding="utf-8")
        return path

    return make
