"""The parameters of a study run, validated with pydantic, and the config they select.

The same :class:`RunParameters` checks ``growth run``'s arguments and the
parameters of a deployment run started from the Prefect UI, and
:func:`study_config` turns them into the one :class:`StudyConfig` that is
passed down (with the overrides applied and validated like the file itself).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.config import StudyConfig, load_config
from pipeline.errors import ConfigError

__all__ = ["RunParameters", "study_config"]


class RunParameters(BaseModel):
    """What a run is asked to do: which study config, where to write, what to override."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: Path = Field(description="the study config (TOML)")
    output: Path | None = Field(
        default=None, description="output folder; default: [output] dir of the config"
    )
    outcome: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="analyse this column (only) instead of [data] outcome or outcomes",
    )
    intercept_predictors: list[str] | None = Field(
        default=None,
        description="person-level predictors of status instead of [models] intercept_predictors",
    )
    slope_predictors: list[str] | None = Field(
        default=None,
        description="person-level predictors of change instead of [models] slope_predictors",
    )
    use_cache: bool = Field(default=True, description="reuse fits of an unchanged study")
    dask: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="run the per-partition work on this Dask scheduler ('tcp://host:8786'), "
        "or 'local' for a local cluster of [execution] workers processes",
    )

    @field_validator("config")
    @classmethod
    def _toml_file(cls, value: Path) -> Path:
        if value.suffix.lower() != ".toml":
            raise ValueError(f"expected a .toml study config, got '{value}'")
        return value

    @field_validator("output")
    @classmethod
    def _folder(cls, value: Path | None) -> Path | None:
        if value is not None and not str(value).strip():
            raise ValueError("expected a folder, got an empty text")
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError(f"'{value}' exists and is not a folder")
        return value

    @field_validator("outcome")
    @classmethod
    def _column_name(cls, value: str | None) -> str | None:
        if value is not None and (value.strip() != value or any(ord(c) < 32 for c in value)):
            raise ValueError(f"expected a column name without surrounding spaces, got {value!r}")
        return value

    @field_validator("intercept_predictors", "slope_predictors")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for name in value:
                if not name or name.strip() != name:
                    raise ValueError(f"expected column names, got {value!r}")
            if len(set(value)) != len(value):
                raise ValueError(f"a predictor is listed twice in {value!r}")
        return value

    @classmethod
    def parse(cls, **values: object) -> RunParameters:
        """Validate ``values``; a problem raises :class:`ConfigError` with one line."""
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problem = error.errors()[0]
            name = ".".join(str(part) for part in problem.get("loc", ())) or "parameters"
            message = str(problem.get("msg", "invalid value")).removeprefix("Value error, ")
            raise ConfigError(f"parameter '{name}': {message}") from None

    @property
    def overrides(self) -> dict[str, str]:
        """The config values this run changes, as ``{"[data] outcome": "cog"}``."""
        changed: dict[str, str] = {}
        if self.outcome is not None:
            changed["[data] outcome"] = self.outcome
        if self.intercept_predictors is not None:
            changed["[models] intercept_predictors"] = ", ".join(self.intercept_predictors)
        if self.slope_predictors is not None:
            changed["[models] slope_predictors"] = ", ".join(self.slope_predictors)
        if self.dask is not None:
            from pipeline.partitioned import without_credentials

            changed["[execution] backend"] = "dask"
            if self.dask != "local":
                changed["[execution] address"] = without_credentials(self.dask)
        return changed


def study_config(params: RunParameters) -> StudyConfig:
    """Load the study config and apply the overrides of ``params``.

    An override is checked by the same model as the file (e.g. an outcome that is
    also the person column, or a predictor that is not a declared covariate, is
    refused); a column that is not in the data is reported when the data are loaded.
    """
    cfg = load_config(params.config)
    update: dict[str, object] = {}
    if params.outcome is not None and cfg.outcomes != [params.outcome]:
        # one outcome instead of [data] outcome / outcomes; a per-outcome label table
        # gives that outcome's label (a single text is kept, as for one outcome)
        texts = {
            key: cfg.data.outcome_text(key, params.outcome)
            for key in ("outcome_label", "outcome_unit")
            if isinstance(getattr(cfg.data, key), dict)
        }
        update["data"] = cfg.data.model_copy(
            update={"outcome": params.outcome, "outcomes": [params.outcome], **texts}
        )
    models: dict[str, list[str]] = {}
    if params.intercept_predictors is not None:
        models["intercept_predictors"] = list(params.intercept_predictors)
    if params.slope_predictors is not None:
        models["slope_predictors"] = list(params.slope_predictors)
    if models:
        update["models"] = cfg.models.model_copy(update=models)
    if params.dask is not None:
        address = None if params.dask == "local" else params.dask
        update["execution"] = cfg.execution.model_copy(
            update={"backend": "dask", "address": address}
        )
    if not update:
        return cfg
    changed = cfg.model_copy(update=update)
    try:
        StudyConfig.model_validate(changed.model_dump())
    except ValidationError as error:
        message = str(error.errors()[0].get("msg", "invalid value")).removeprefix("Value error, ")
        shown = "; ".join(f"{key} = {value!r}" for key, value in params.overrides.items())
        raise ConfigError(
            f"{params.config}: the override(s) {shown} cannot be used: {message}"
        ) from None
    return changed
