"""The study config: one validated, immutable object loaded once from TOML and passed down.

``load_config(path)`` reads a study TOML file (layout in ``docs/CONTRACTS.md``) into a
:class:`StudyConfig`. Every section forbids unknown keys. Any problem raises
:class:`pipeline.errors.ConfigError` with one line that names the file, the key
(``[data] person``) and what was expected; an unknown key comes with the nearest
allowed key. Paths in the config are relative to the config file's folder.
Nothing from a config is ever evaluated.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import ConfigError

__all__ = [
    "ComparisonConfig",
    "DataConfig",
    "ExtraModel",
    "GroupCentring",
    "LimitsConfig",
    "ModelsConfig",
    "OutputConfig",
    "ReportConfig",
    "ScheduleConfig",
    "StudyConfig",
    "StudySection",
    "TimeConfig",
    "WideConfig",
    "load_config",
    "parse_config",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_line_label(value: str | None) -> str | None:
    """Refuse a label with a control character or a line break (it becomes a chart title)."""
    if value is None:
        return value
    for character in value:
        # Cc: C0 and C1 control characters, DEL; Zl, Zp: U+2028, U+2029
        if unicodedata.category(character) in {"Cc", "Zl", "Zp"}:
            kind = (
                "a line break"
                if character in "\n\r\x0b\x0c\x85\u2028\u2029"
                else "a control character"
            )
            shown = repr(character)[1:-1]
            raise ValueError(
                f"contains {kind} ({shown}); expected a label on one line without control "
                f"characters, got {_describe(value)}"
            )
    return value


class StudySection(_Section):
    """``[study]``: what the study is called."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    title: str
    description: str | None = None


class WideConfig(_Section):
    """``[data.wide]``: one column per wave, mapped to the time of that wave."""

    columns: dict[str, float] = Field(min_length=1)


class GroupCentring(_Section):
    """Centre a covariate on the mean of the group given by another column."""

    group: str = Field(min_length=1)


CentringSpec = Literal["grand", "person"] | GroupCentring


class DataConfig(_Section):
    """``[data]``: where the data are and which column plays which role."""

    path: str = Field(min_length=1)
    format: Literal["auto", "csv", "parquet"] = "auto"
    layout: Literal["long", "wide"] = "long"
    person: str = Field(min_length=1)
    time: str = Field(default="time", min_length=1)
    # one outcome (``outcome``) or several analysed in one run (``outcomes``); with
    # ``outcomes`` given, ``outcome`` is filled with its first column, and with ``outcome``
    # given, ``outcomes`` is ``[outcome]``; so both always hold the same first column
    outcome: str = Field(min_length=1)
    outcomes: list[str] = Field(default_factory=list)
    # a text for one outcome; a table { column = "text" } gives each outcome its own
    outcome_label: str | dict[str, str] | None = None
    outcome_unit: str | dict[str, str] | None = None
    person_covariates: list[str] = Field(default_factory=list)
    time_covariates: list[str] = Field(default_factory=list)
    max_invalid_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    time_range: tuple[float, float] | None = None
    csv_separator: str | None = Field(default=None, min_length=1, max_length=1)
    categories: dict[str, list[str]] = Field(default_factory=dict)
    labels: dict[str, dict[str, str]] = Field(default_factory=dict)
    wide: WideConfig | None = None
    centre: dict[str, CentringSpec] = Field(default_factory=dict)
    occasion: str | None = Field(default=None, min_length=1)  # a column of occasion labels (waves)
    decimal_comma: bool = False
    # higher levels, innermost first (["classroom", "school"]); their covariates are
    # constant within a cluster; "within_cluster": a person id is unique only within its
    # innermost cluster (the person is the tuple (school, classroom, pid), as lme4's
    # school/classroom/pid makes it; every cluster id likewise within its parent)
    clusters: list[str] = Field(default_factory=list)
    cluster_covariates: dict[str, list[str]] = Field(default_factory=dict)
    ids: Literal["unique", "within_cluster"] = "unique"

    @model_validator(mode="before")
    @classmethod
    def _one_outcome_key(cls, values: Any) -> Any:
        """``outcomes`` fills ``outcome`` (its first column) and ``outcome`` fills ``outcomes``."""
        if not isinstance(values, dict):
            return values
        outcomes = values.get("outcomes")
        if "outcome" not in values and isinstance(outcomes, list) and outcomes:
            first = outcomes[0]
            if isinstance(first, str):
                values = {**values, "outcome": first}
        elif "outcomes" not in values and isinstance(values.get("outcome"), str):
            values = {**values, "outcomes": [values["outcome"]]}
        return values

    @field_validator("outcome_label", "outcome_unit")
    @classmethod
    def _outcome_texts_on_one_line(
        cls, value: str | dict[str, str] | None
    ) -> str | dict[str, str] | None:
        if isinstance(value, dict):
            for column, text in value.items():
                try:
                    _one_line_label(text)
                except ValueError as error:
                    raise ValueError(f"'{column}' {error}") from None
            return value
        return _one_line_label(value)

    @field_validator("outcomes")
    @classmethod
    def _distinct_outcomes(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('expected at least one outcome column, e.g. ["math", "read"]')
        for column in value:
            if not column:
                raise ValueError("expected column names, got an empty text")
        duplicated = sorted({column for column in value if value.count(column) > 1})
        if duplicated:
            names = ", ".join(f"'{column}'" for column in duplicated)
            raise ValueError(f"lists {names} more than once; expected each outcome once")
        return value

    def outcome_text(
        self, key: Literal["outcome_label", "outcome_unit"], column: str
    ) -> str | None:
        """The label or unit of outcome ``column``: its entry in a table, else the one text."""
        value = getattr(self, key)
        if isinstance(value, dict):
            return value.get(column)
        return value

    @field_validator("time_range")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError(f"expected [low, high] with low <= high, got {list(value)}")
        return value

    @field_validator("categories")
    @classmethod
    def _levels_given(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for column, levels in value.items():
            if not levels:
                raise ValueError(f"'{column}' needs at least one level")
            duplicated = sorted({level for level in levels if levels.count(level) > 1})
            if duplicated:
                raise ValueError(f"'{column}' lists the level(s) {duplicated} more than once")
        return value

    @model_validator(mode="after")
    def _roles_consistent(self) -> DataConfig:
        self._outcomes_consistent()
        roles = {"person": self.person, "outcome": self.outcome}
        for column in self.outcomes[1:]:
            roles[f"outcomes ({column})"] = column
        if self.layout == "long":
            roles["time"] = self.time
        if self.occasion is not None:
            if self.layout != "long":
                raise ValueError(
                    "'occasion' needs layout = \"long\"; in the wide layout each [data.wide] "
                    "column is an occasion"
                )
            roles["occasion"] = self.occasion
        seen: dict[str, str] = {}
        for role, column in roles.items():
            if column in seen:
                raise ValueError(
                    f"'{role}' and '{seen[column]}' both name the column '{column}'; "
                    "expected different columns"
                )
            seen[column] = role
        self._clusters_consistent(seen)
        cluster_covariates = [c for names in self.cluster_covariates.values() for c in names]
        covariates = self.person_covariates + self.time_covariates + cluster_covariates
        for column in covariates:
            if covariates.count(column) > 1:
                raise ValueError(
                    f"covariate '{column}' is listed more than once in "
                    "person_covariates/time_covariates/cluster_covariates"
                )
            if column in seen:
                raise ValueError(
                    f"covariate '{column}' is also the {seen[column]} column; expected another column"
                )
        declared = "person_covariates, time_covariates or cluster_covariates"
        for column in self.categories:
            if column not in covariates:
                raise ValueError(
                    f"categories are given for '{column}', which is not in {declared} "
                    f"({covariates or 'none declared'}){_did_you_mean(column, covariates)}"
                )
        for column, labels in self.labels.items():
            if column not in covariates:
                raise ValueError(
                    f"labels are given for '{column}', which is not in "
                    f"person_covariates or time_covariates ({covariates or 'none declared'})"
                )
            for level, label in labels.items():
                try:
                    _one_line_label(label)
                except ValueError as error:
                    raise ValueError(f"label of '{column}' level '{level}' {error}") from None
        for column, spec in self.centre.items():
            if column not in covariates:
                raise ValueError(
                    f"centre names '{column}', which is not in {declared} "
                    f"({covariates or 'none declared'}){_did_you_mean(column, covariates)}"
                )
            if column in self.categories:
                raise ValueError(
                    f"centre names '{column}', a categorical covariate; expected a numeric one"
                )
            if column in cluster_covariates and spec != "grand":
                raise ValueError(
                    f"centre '{column}' is a cluster-level covariate; only \"grand\" "
                    "(grand-mean centring over the clusters) is supported for it"
                )
            if spec == "person" and column not in self.time_covariates:
                raise ValueError(
                    f"centre '{column}' = \"person\" splits a time-varying covariate; "
                    f"'{column}' is not in time_covariates"
                )
            if isinstance(spec, GroupCentring) and spec.group == column:
                raise ValueError(f"centre '{column}' cannot be centred within groups of itself")
        if self.decimal_comma and (self.csv_separator or ",") == ",":
            raise ValueError(
                "decimal_comma = true needs another column separator: set csv_separator "
                'to ";" (the usual one with decimal commas) or "\\t"'
            )
        if self.layout == "wide":
            if self.wide is None:
                raise ValueError(
                    'layout = "wide" needs a [data.wide] table: columns = { wave_column = time, ... }'
                )
            if self.time_covariates:
                raise ValueError(
                    'layout = "wide" supports person_covariates only; time_covariates must be empty'
                )
        elif self.wide is not None:
            raise ValueError('[data.wide] is given but layout is "long"; expected layout = "wide"')
        self._outcome_texts_consistent()
        return self

    def _outcomes_consistent(self) -> None:
        """``outcome`` is the first of ``outcomes``; labels and units name outcomes."""
        if self.outcomes[0] != self.outcome:
            raise ValueError(
                f"outcome = '{self.outcome}' and outcomes = {self.outcomes} are both given; "
                'expected one of them: outcome = "score" for one outcome, '
                'outcomes = ["math", "read"] for several'
            )
        if len(self.outcomes) > 1 and self.layout != "long":
            raise ValueError(
                'several outcomes need layout = "long"; a wide file holds one outcome in its '
                "[data.wide] columns"
            )

    def _outcome_texts_consistent(self) -> None:
        for key in ("outcome_label", "outcome_unit"):
            value = getattr(self, key)
            if isinstance(value, dict):
                for column in value:
                    if column not in self.outcomes:
                        raise ValueError(
                            f"{key} is given for '{column}', which is not an outcome "
                            f"({', '.join(self.outcomes)})"
                            f"{_did_you_mean(column, self.outcomes)}"
                        )
            elif value is not None and len(self.outcomes) > 1:
                pairs = ", ".join(f'{column} = "..."' for column in self.outcomes)
                raise ValueError(
                    f"{key} is one text but there are {len(self.outcomes)} outcomes; "
                    f"expected a table with one per outcome: {key} = {{ {pairs} }}"
                )

    def _clusters_consistent(self, seen: dict[str, str]) -> None:
        """Cluster columns: distinct, not another role; cluster_covariates keyed by a cluster."""
        for column in self.clusters:
            if not column:
                raise ValueError("clusters: expected column names, got an empty text")
            if self.clusters.count(column) > 1:
                raise ValueError(f"clusters lists '{column}' more than once")
            if column in seen:
                raise ValueError(
                    f"clusters names '{column}', which is also the {seen[column]} column; "
                    "expected the column of a higher level (e.g. a school id)"
                )
            if column in self.person_covariates or column in self.time_covariates:
                raise ValueError(
                    f"clusters names '{column}', which is also listed as a covariate; a cluster "
                    "id is a level, not a predictor: remove it from the covariates"
                )
        for column in self.clusters:
            seen[column] = "cluster"
        for cluster, names in self.cluster_covariates.items():
            if cluster not in self.clusters:
                raise ValueError(
                    f"cluster_covariates are given for '{cluster}', which is not in clusters "
                    f"({self.clusters or 'none declared'}){_did_you_mean(cluster, self.clusters)}"
                )
            for name in names:
                if names.count(name) > 1:
                    raise ValueError(f"cluster_covariates.{cluster} lists '{name}' more than once")
        if self.ids == "within_cluster" and not self.clusters:
            raise ValueError(
                'ids = "within_cluster" needs [data] clusters (the level within which '
                "person ids are unique)"
            )

    @property
    def cluster_of(self) -> dict[str, str]:
        """Cluster covariate -> the cluster column it belongs to."""
        return {
            name: cluster for cluster, names in self.cluster_covariates.items() for name in names
        }


class TimeConfig(_Section):
    """``[time]``: how time is coded for the models: coded = (time - centre) / scale."""

    name: str = Field(min_length=1)
    centre: float = 0.0
    scale: float = 1.0
    unit: str | None = None
    label: str | None = None
    waves: dict[str, float] | None = None
    # piecewise-linear time: a change of slope (time - k)+ after each knot k (original
    # units); in the fixed part only unless knots_random asks for random changes of slope
    knots: list[float] = Field(default_factory=list)
    knots_random: bool = False

    _labels_on_one_line = field_validator("label", "unit")(_one_line_label)

    @field_validator("knots")
    @classmethod
    def _distinct_knots(cls, value: list[float]) -> list[float]:
        if len(set(value)) < len(value):
            raise ValueError(f"a knot is listed twice, got {value}")
        if any(value[i] >= value[i + 1] for i in range(len(value) - 1)):
            raise ValueError(f"expected the knots in increasing order, got {value}")
        return value

    @field_validator("scale")
    @classmethod
    def _positive_scale(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"expected a number greater than 0, got {value}")
        return value


class ExtraModel(_Section):
    """``[[models.extra]]``: a further model as an lme4 formula on the model frame."""

    name: str = Field(min_length=1)
    formula: str = Field(min_length=1)


class ModelsConfig(_Section):
    """``[models]``: the growth model sequence."""

    polynomial: int = Field(default=1, ge=1, le=5)
    intercept_predictors: list[str] = Field(default_factory=list)
    slope_predictors: list[str] = Field(default_factory=list)
    extra: list[ExtraModel] = Field(default_factory=list)
    # per cluster column: "polynomial" (default: the time polynomial is random at that
    # level too) or "intercept" (a random intercept only)
    cluster_random: dict[str, Literal["polynomial", "intercept"]] = Field(default_factory=dict)
    # level-1 error structures to compare (mmrm's names), each fitted on the growth model's
    # fixed part; over the occasions of [data] occasion (else the distinct times)
    residual: list[Literal["us", "toep", "toeph", "ar1", "ar1h", "cs", "csh", "diag", "sp_exp"]] = (
        Field(default_factory=list)
    )

    @field_validator("residual")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) < len(value):
            raise ValueError("a structure is listed twice")
        return value


class ComparisonConfig(_Section):
    """``[comparison]``: the group to compare and the times at which to compare status."""

    group: str | None = None
    at_times: list[float] = Field(default_factory=list)
    # continuous predictor -> values at which to draw its model-implied trajectory
    # (default: its mean and the mean -+ 1 SD over persons, or over clusters)
    at_values: dict[str, list[float]] = Field(default_factory=dict)

    @field_validator("at_values")
    @classmethod
    def _values_given(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for column, values in value.items():
            if not values:
                raise ValueError(f"'{column}' has no values; expected a list such as [-1, 0, 1]")
            if len(set(values)) < len(values):
                raise ValueError(f"'{column}' lists a value twice, got {values}")
        return value


class ReportConfig(_Section):
    """``[report]``: report options."""

    sample_persons: int = Field(default=200, ge=1)
    seed: int = 0
    timestamp: str = ""
    png: bool = False


class OutputConfig(_Section):
    """``[output]``: where results go (relative to the config file)."""

    dir: str = Field(min_length=1)
    keep_runs: int | None = Field(
        default=None, ge=1, description="keep this many run folders (and the latest); all if unset"
    )

    @field_validator("dir")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected a folder name, got an empty text")
        return value


class LimitsConfig(_Section):
    """``[limits]``: bounds that keep a run's time and memory in proportion to the data.

    Each can be raised when a study really needs more; the defaults are far above
    what a growth-curve study uses.
    """

    max_label_length: int = Field(default=200, ge=1, le=100_000)
    max_levels: int = Field(default=50, ge=2, le=100_000)
    max_groups: int = Field(default=20, ge=2, le=10_000)
    max_fixed_effects: int = Field(default=200, ge=1, le=100_000)
    # the analyses that refit a model many times ([analysis] bootstrap, profile, influence)
    # run only on studies of up to this many persons
    max_persons_refits: int = Field(default=100_000, ge=1, le=1_000_000_000)


class AnalysisConfig(_Section):
    """``[analysis]``: the costlier uncertainty analyses, each off (or small) by default.

    ``bootstrap``: parametric-bootstrap replicates for the ICC, pseudo-R^2 and the
    standardized group difference (0: off); ``bootstrap_workers``: processes for it
    (the result does not depend on it); ``profile``: profile-likelihood intervals of the
    variance components of no model, the key model, or every model of the sequence;
    ``influence``: persons refitted for leave-one-person-out influence (0: off; with
    more persons, a seeded sample of this many).
    """

    bootstrap: int = Field(default=0, ge=0, le=100_000)
    bootstrap_workers: int = Field(default=1, ge=1, le=64)
    profile: Literal["none", "key", "all"] = "none"
    influence: int = Field(default=0, ge=0, le=100_000)


class ExecutionConfig(_Section):
    """``[execution]``: where and how the data are read and reduced.

    ``backend = "local"`` (default) works in this process; ``"dask"`` runs the
    per-partition work on a Dask cluster: the one at ``address`` (``tcp://host:8786``),
    or without an address a local cluster of ``workers`` processes started and stopped
    by the run. ``partitions``: how many partitions (each a set of whole persons, or of
    whole outermost clusters) the data are reduced in; 0 (default) reads a single file
    of at most ``partition_rows`` rows in memory, and a larger file, a folder, a glob or
    a Dask run in partitions of about ``partition_rows`` rows. ``sample_persons``: the analyses that need the rows
    (residual checks, per-person OLS, reliability, charts) use a deterministic sample of
    about this many persons when the data have more; the models are fitted on all of
    them. ``scratch``: the folder for the partitions (default: a private temporary
    folder; with a remote Dask cluster, a folder the workers can read and write).
    """

    backend: Literal["local", "dask"] = "local"
    address: str | None = Field(default=None, min_length=1)
    workers: int = Field(default=2, ge=1, le=512)
    partitions: int = Field(default=0, ge=0, le=100_000)
    partition_rows: int = Field(default=1_000_000, ge=1_000, le=1_000_000_000)
    sample_persons: int = Field(default=100_000, ge=100, le=100_000_000)
    scratch: str | None = Field(default=None, min_length=1)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(tcp|tls|inproc|ucx|ws|wss)://\S+", value):
            shown = re.sub(r"(://)[^/@\s]*@", r"\1", value)  # never show credentials
            raise ValueError(
                f"[execution] address = {shown!r}: expected a Dask scheduler address such as "
                "'tcp://host:8786'"
            )
        return value


class ScheduleConfig(_Section):
    """``[schedule]``: when a deployment reruns the study."""

    cron: str = Field(min_length=1)
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f'expected 5 cron fields like "0 6 * * 1", got {value!r}')
        return value


class StudyConfig(_Section):
    """A whole study config. Load it with :func:`load_config`."""

    study: StudySection
    data: DataConfig
    time: TimeConfig
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    comparison: ComparisonConfig = Field(default_factory=ComparisonConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    output: OutputConfig
    schedule: ScheduleConfig | None = None
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    _source_path: Path = PrivateAttr(default_factory=lambda: Path.cwd() / "<memory>")
    _source_text: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _cross_section(self) -> StudyConfig:
        covariates = self.covariates
        for key in ("intercept_predictors", "slope_predictors"):
            for name in getattr(self.models, key):
                if name not in covariates:
                    raise _CrossError(
                        ("models", key),
                        f"'{name}' is not a declared covariate; expected one of "
                        f"{covariates or 'the names in [data] person_covariates/time_covariates'}"
                        f"{_did_you_mean(name, covariates)}",
                    )
        for cluster in self.models.cluster_random:
            if cluster not in self.data.clusters:
                raise _CrossError(
                    ("models", "cluster_random"),
                    f"'{cluster}' is not in [data] clusters "
                    f"({self.data.clusters or 'none declared'})"
                    f"{_did_you_mean(cluster, self.data.clusters)}",
                )
        group = self.comparison.group
        if group is not None and group not in self.data.person_covariates:
            raise _CrossError(
                ("comparison", "group"),
                f"'{group}' is not in [data] person_covariates "
                f"({self.data.person_covariates or 'none declared'}); expected a person-level covariate",
            )
        self._check_at_values()
        self._check_knots()
        roles = {self.data.person, *self.data.outcomes, self.data.time, *self.data.clusters}
        if self.time.name in roles | set(covariates):
            raise _CrossError(
                ("time", "name"),
                f"'{self.time.name}' is already a column role in [data]; expected a new name "
                "for the coded time",
            )
        longest = self.limits.max_label_length
        for column, levels in self.data.categories.items():
            for level in levels:
                if len(level) > longest:
                    raise _CrossError(
                        ("data", "categories"),
                        f"'{column}': a level is {len(level):,} characters long "
                        f"({_describe(level)}), more than [limits] max_label_length = "
                        f"{longest:,}; expected a short label (or raise the limit)",
                    )
        if self.data.layout == "wide" and self.time.waves is not None:
            raise _CrossError(
                ("time", "waves"),
                'wave mapping is for a long layout; with layout = "wide" give times in [data.wide] columns',
            )
        return self

    def _check_at_values(self) -> None:
        """``[comparison] at_values``: only numeric person- or cluster-level predictors of the
        conditional model (categorical ones are compared through ``group``)."""
        predictors = list(
            dict.fromkeys([*self.models.intercept_predictors, *self.models.slope_predictors])
        )
        for column in self.comparison.at_values:
            if column in self.data.categories or column == self.comparison.group:
                reason = "it is categorical (compare its levels with [comparison] group)"
            elif column in self.data.time_covariates:
                reason = "it is time-varying; expected a person- or cluster-level predictor"
            elif column not in predictors:
                reason = (
                    "it is not a predictor of the conditional model ([models] "
                    "intercept_predictors/slope_predictors: "
                    f"{predictors or 'none'}){_did_you_mean(column, predictors)}"
                )
            else:
                continue
            raise _CrossError(
                ("comparison", "at_values"),
                f"'{column}' is not a continuous predictor: {reason}",
            )

    def _check_knots(self) -> None:
        """``[time] knots``: piecewise-linear time on a linear polynomial, inside time_range."""
        knots = self.time.knots
        if not knots:
            if self.time.knots_random:
                raise _CrossError(
                    ("time", "knots_random"), "is true but [time] knots lists no knot"
                )
            return
        if self.models.polynomial != 1:
            raise _CrossError(
                ("time", "knots"),
                f"piecewise-linear time needs [models] polynomial = 1, got {self.models.polynomial}",
            )
        allowed = self.data.time_range
        if allowed is not None:
            for knot in knots:
                if not allowed[0] < knot < allowed[1]:
                    raise _CrossError(
                        ("time", "knots"),
                        f"knot {knot:g} is outside [data] time_range ({allowed[0]:g} to "
                        f"{allowed[1]:g}); a knot must lie strictly inside the times",
                    )

    @property
    def source_path(self) -> Path:
        """Absolute path of the TOML file this config was read from."""
        return self._source_path

    @property
    def source_text(self) -> str:
        """The TOML text as read (for the report header and the manifest hash)."""
        return self._source_text

    @property
    def base_dir(self) -> Path:
        """The folder that relative paths in the config are resolved against."""
        return self._source_path.parent

    @property
    def data_path(self) -> Path:
        """Absolute path of the data file."""
        return _resolve(self.base_dir, self.data.path)

    @property
    def output_dir(self) -> Path:
        """Absolute path of the output folder."""
        return _resolve(self.base_dir, self.output.dir)

    @property
    def covariates(self) -> list[str]:
        """Person-level, time-varying, then cluster-level covariates, in declared order."""
        return [*self.data.person_covariates, *self.data.time_covariates, *self.cluster_covariates]

    @property
    def outcomes(self) -> list[str]:
        """The outcome columns analysed in this run (``[data] outcomes``, else ``[outcome]``)."""
        return list(self.data.outcomes)

    def for_outcome(self, column: str) -> StudyConfig:
        """This config as a one-outcome study of ``column`` (its own label and unit).

        Each outcome of a several-outcome study is validated, reshaped and analysed
        with such a config, so the stages see one outcome as they always do.
        """
        if column not in self.data.outcomes:
            raise ValueError(f"'{column}' is not an outcome of this study ({self.data.outcomes})")
        data = self.data.model_copy(
            update={
                "outcome": column,
                "outcomes": [column],
                "outcome_label": self.data.outcome_text("outcome_label", column),
                "outcome_unit": self.data.outcome_text("outcome_unit", column),
            }
        )
        copy = self.model_copy(update={"data": data})
        copy._source_path = self._source_path
        copy._source_text = self._source_text
        return copy

    @property
    def cluster_covariates(self) -> list[str]:
        """Cluster-level covariates, innermost cluster first, in declared order."""
        data = self.data
        return [
            name for cluster in data.clusters for name in data.cluster_covariates.get(cluster, [])
        ]


class _CrossError(ValueError):
    """A cross-section problem that knows which key it concerns."""

    def __init__(self, location: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.location = location
        self.message = message


def _did_you_mean(name: str, choices: list[str]) -> str:
    """``; did you mean 'school'?`` for the nearest of ``choices``, else ``""``."""
    nearest = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean '{nearest[0]}'?" if nearest else ""


def _resolve(base: Path, relative: str) -> Path:
    path = Path(relative).expanduser()
    if not path.is_absolute():
        path = base / path
    return Path(_normalise(path))


def _normalise(path: Path) -> str:
    import os

    return os.path.normpath(str(path))


# section path -> model of that section, used to name keys and suggest allowed ones
_SECTIONS: dict[tuple[str, ...], type[BaseModel]] = {
    (): StudyConfig,
    ("study",): StudySection,
    ("data",): DataConfig,
    ("data", "wide"): WideConfig,
    ("time",): TimeConfig,
    ("models",): ModelsConfig,
    ("models", "extra"): ExtraModel,
    ("comparison",): ComparisonConfig,
    ("report",): ReportConfig,
    ("output",): OutputConfig,
    ("schedule",): ScheduleConfig,
    ("limits",): LimitsConfig,
    ("analysis",): AnalysisConfig,
}

_EXPECTED_BY_TYPE = {
    "string_type": "text",
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "missing": "a value",
}


def _split_location(location: tuple[Any, ...]) -> tuple[str, str, tuple[str, ...]]:
    """Split a pydantic location into (section label, key label, section path)."""
    parts = [part for part in location]
    section: tuple[str, ...] = ()
    index_note = ""
    consumed = 0
    for position in range(len(parts)):
        candidate = tuple(str(part) for part in parts[: position + 1] if not isinstance(part, int))
        if candidate in _SECTIONS and candidate != section:
            section = candidate
            consumed = position + 1
            if consumed < len(parts) and isinstance(parts[consumed], int):
                index_note = f" #{parts[consumed] + 1}"
                consumed += 1
    rest = [str(part) for part in parts[consumed:] if not _is_union_tag(part)]
    if section == ("models", "extra"):
        label = f"[[models.extra]]{index_note}"
    elif section:
        label = f"[{'.'.join(section)}]"
    else:
        label = "top level"
    return label, ".".join(rest), section


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the union member to a location: "literal['grand','person']", "GroupCentring"
    text = str(part)
    return text.startswith("literal[") or text in {
        "GroupCentring",
        "LimitsConfig",
        "function-after[_five_fields(), str]",
    }


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_error(display: str, error: dict[str, Any]) -> str:
    location = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    label, key, section = _split_location(location)
    if kind == "extra_forbidden":
        bad = str(location[-1])
        model = _SECTIONS.get(section, StudyConfig)
        allowed = list(model.model_fields)
        nearest = difflib.get_close_matches(bad, allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{nearest[0]}'? " if nearest else ""
        what = f"table [{bad}]" if section == () else f"{label} key '{bad}'"
        return (
            f"{display}: {what} is not allowed; {hint}"
            f"{'E' if hint else 'e'}xpected one of: {', '.join(allowed)}"
        )
    if kind == "missing":
        if not key:
            return f"{display}: table {label} is missing; expected it with its keys"
        if not section and "." not in key:
            return f"{display}: table [{key}] is missing; expected it with its keys"
        return f"{display}: {label} key '{key}' is missing; expected {_expected(section, key)}"
    message = str(error.get("msg", "invalid value"))
    context = error.get("ctx") or {}
    if isinstance(context.get("error"), _CrossError):
        cross = context["error"]
        cross_label, cross_key, _ = _split_location(cross.location)
        return f"{display}: {cross_label} {cross_key}: {cross.message}"
    where = f"{label} {key}" if key else label
    if message.startswith("Value error, "):
        return f"{display}: {where}: {message.removeprefix('Value error, ')}"
    expected = _EXPECTED_BY_TYPE.get(kind)
    if kind == "string_pattern_mismatch":
        expected = "letters, digits, '_' or '-' only"
    elif kind in {"literal_error", "enum"}:
        expected = "one of " + str(context.get("expected", "the allowed values"))
    elif kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        expected = message.lower().replace("input should be ", "a number ")
    elif kind in {"too_short", "string_too_short"}:
        expected = "a non-empty value" if "min_length" not in context else message.lower()
        if kind == "string_too_short":
            expected = "a non-empty text"
    elif kind == "string_too_long":
        expected = message.lower().replace("string should have ", "text with ")
    if expected is None:
        expected = message[0].lower() + message[1:] if message else "a valid value"
    return f"{display}: {where}: expected {expected}, got {_describe(error.get('input'))}"


def _expected(section: tuple[str, ...], key: str) -> str:
    model = _SECTIONS.get(section)
    field = model.model_fields.get(key) if model is not None else None
    if field is None or field.description is None:
        if field is not None:
            annotation = field.annotation
            if annotation is str:
                return "text"
            if annotation in {float, int}:
                return "a number"
        return "a value"
    return field.description


def parse_config(text: str, *, path: Path | str) -> StudyConfig:
    """Validate TOML ``text`` as if read from ``path`` (which fixes relative paths)."""
    source = Path(path).expanduser()
    source = Path(_normalise(source if source.is_absolute() else Path.cwd() / source))
    display = str(path)
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{display}: not valid TOML: {error}") from None
    data = values.get("data")
    if isinstance(data, dict) and "outcome" in data and "outcomes" in data:
        raise ConfigError(
            f"{display}: [data] outcome and outcomes are both given; expected one of them: "
            'outcome = "score" for one outcome, outcomes = ["math", "read"] for several'
        )
    try:
        config = StudyConfig.model_validate(values)
    except ValidationError as error:
        # an unknown key explains a missing one (a typo), so it is reported first
        problems = sorted(error.errors(), key=lambda item: item.get("type") != "extra_forbidden")
        first = _format_error(display, problems[0])
        raise ConfigError(first + _more_problems(display, problems[1:])) from None
    config._source_path = source
    config._source_text = text
    return config


_SHOWN_PROBLEMS = 3


def _more_problems(display: str, problems: list[Any]) -> str:
    """`` (and 2 more problem(s): [data] x: ...; [time] y: ...)``, at most a few listed."""
    if not problems:
        return ""
    prefix = f"{display}: "
    shown = [
        _format_error(display, problem).removeprefix(prefix)
        for problem in problems[:_SHOWN_PROBLEMS]
    ]
    rest = len(problems) - len(shown)
    tail = f"; and {rest} more" if rest else ""
    return f" (and {len(problems)} more problem(s): {'; '.join(shown)}{tail})"


def load_config(path: Path | str) -> StudyConfig:
    """Read and validate a study config; raise :class:`ConfigError` with one clear line."""
    display = str(path)
    location = Path(path).expanduser()
    if not location.exists():
        raise ConfigError(
            f"{display}: config file not found (looked in {location.resolve().parent})"
        )
    if location.is_dir():
        raise ConfigError(f"{display}: is a folder; expected a study config TOML file")
    try:
        raw = location.read_bytes()
    except OSError as error:
        raise ConfigError(f"{display}: cannot read the config file: {error.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{display}: not UTF-8 text (byte 0x{raw[error.start]:02x} on line {line}); "
            "save the config as UTF-8"
        ) from None
    return parse_config(text, path=location)
