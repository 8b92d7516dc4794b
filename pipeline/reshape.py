"""Split valid long data into the level-1 and level-2 tables, code time, describe the sample.

Level 1 holds one row per person and occasion (person, time, coded time, outcome,
time-varying covariates); level 2 one row per person (person-level covariates,
number of occasions, first and last time). Time is coded as
``(time - centre) / scale`` after an optional wave-index mapping (done in
validation). Covariates named in ``[data] centre`` are centred here:
``"grand"`` and ``{ group = "col" }`` replace the column by its centred value,
``"person"`` adds ``<x>_person_mean`` (level 2) and ``<x>_within`` (level 1).
The centring helpers are pure functions usable on their own.

With ``[data] clusters`` (higher levels, innermost first) level 1, level 2 and the
model frame keep the cluster columns, and ``Levels.clusters`` holds one table per
cluster column: one row per cluster with its key (with ``ids = "within_cluster"`` the
outer levels too, outermost first; with unique ids the outer levels as its parents),
its cluster-level covariates, ``n_persons`` (persons with a valid row), ``n_observations``
(occasions with an outcome, the rows the models use) and, above the innermost level,
``n_<inner level>``. A cluster covariate with ``centre = "grand"`` is centred on its mean
over the clusters (each cluster once), as a person covariate is over the persons. With
``ids = "within_cluster"`` a person is the tuple (outer clusters..., person id)
(``Levels.person_key``), and level 2 has one row per such tuple.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from pipeline.config import GroupCentring, StudyConfig

__all__ = [
    "Descriptives",
    "Levels",
    "MAX_PATTERN_TIMES",
    "describe",
    "grand_mean_centre",
    "group_mean_centre",
    "split_within_between",
    "split_levels",
]

# with more distinct times than this, time is treated as continuous: no wave patterns
MAX_PATTERN_TIMES = 30


@dataclass(frozen=True, slots=True)
class Levels:
    """The level-1 and level-2 tables and the frame the models are fitted on."""

    level1: pl.DataFrame
    level2: pl.DataFrame
    model_frame: pl.DataFrame
    time_name: str
    person: str
    time: str
    outcome: str
    # cluster column -> one row per cluster (see the module docstring); innermost first
    clusters: dict[str, pl.DataFrame] = field(default_factory=dict)
    ids: str = "unique"

    @property
    def cluster_names(self) -> tuple[str, ...]:
        """The cluster columns, innermost first."""
        return tuple(self.clusters)

    @property
    def person_key(self) -> tuple[str, ...]:
        """The columns that identify a person: the person id, or with ids unique only
        within clusters the clusters (outermost first) and the person id."""
        if self.ids != "within_cluster":
            return (self.person,)
        return (*reversed(self.cluster_names), self.person)


@dataclass(frozen=True, slots=True)
class Descriptives:
    """Sample description for the report."""

    summary: pl.DataFrame
    occasions_per_person: pl.DataFrame
    attrition: pl.DataFrame
    patterns: pl.DataFrame


# --- centring helpers (pure) -------------------------------------------------------------


def grand_mean_centre(frame: pl.DataFrame, column: str, *, name: str | None = None) -> pl.DataFrame:
    """``column`` minus its mean over all rows of ``frame`` (nulls ignored), as ``name``."""
    value = pl.col(column).cast(pl.Float64)
    return frame.with_columns((value - value.mean()).alias(name or column))


def group_mean_centre(
    frame: pl.DataFrame, column: str, *, group: str, name: str | None = None
) -> pl.DataFrame:
    """``column`` minus its mean within each value of ``group``, as ``name``."""
    value = pl.col(column).cast(pl.Float64)
    return frame.with_columns((value - value.mean().over(group)).alias(name or column))


def split_within_between(
    frame: pl.DataFrame,
    column: str,
    *,
    person: str | list[str],
    mean_name: str | None = None,
    within_name: str | None = None,
) -> pl.DataFrame:
    """Split a time-varying covariate into its person mean and the within-person deviation.

    Adds ``<column>_person_mean`` and ``<column>_within`` (or the given names);
    ``column == person mean + within`` on every row with a value.
    """
    value = pl.col(column).cast(pl.Float64)
    mean = value.mean().over(person)
    return frame.with_columns(
        mean.alias(mean_name or f"{column}_person_mean"),
        (value - mean).alias(within_name or f"{column}_within"),
    )


# --- level split --------------------------------------------------------------------------


def _person_order(frame: pl.DataFrame, person: str) -> list[pl.Expr]:
    """Sort persons numerically when every id is a whole number, else as text."""
    dtype = frame.schema[person]
    if dtype == pl.String:
        as_number = pl.col(person).cast(pl.Int64, strict=False)
        if frame.select(as_number.is_not_null().all()).item():
            return [as_number, pl.col(person)]
    return [pl.col(person)]


def _cluster_key(cfg: StudyConfig, cluster: str) -> list[str]:
    """The columns that identify a unit of ``cluster`` (outermost first)."""
    clusters = list(cfg.data.clusters)
    if cfg.data.ids != "within_cluster":
        return [cluster]
    return list(reversed(clusters[clusters.index(cluster) :]))


def _person_key(cfg: StudyConfig) -> list[str]:
    if cfg.data.ids != "within_cluster":
        return [cfg.data.person]
    return [*reversed(cfg.data.clusters), cfg.data.person]


def _key_order(frame: pl.DataFrame, key: list[str]) -> list[pl.Expr]:
    return [expression for column in key for expression in _person_order(frame, column)]


def split_levels(
    valid: pl.DataFrame, cfg: StudyConfig, *, means: dict[str, float] | None = None
) -> Levels:
    """Level-1, level-2 and model tables from the valid rows of :func:`validate_data`.

    ``means``: the grand means to centre on (``[data] centre = "grand"``) instead of those
    of ``valid`` (the means of all the data, for a partition of them; see
    :func:`grand_centred` and :func:`grand_sums`)."""
    data, time_config = cfg.data, cfg.time
    person, time, outcome = data.person, data.time, data.outcome
    person_covariates, time_covariates = list(data.person_covariates), list(data.time_covariates)
    clusters = list(data.clusters)
    key = _person_key(cfg)
    coded = ((pl.col(time).cast(pl.Float64) - time_config.centre) / time_config.scale).alias(
        time_config.name
    )
    order = _key_order(valid, key)
    occasion = [_occasion_column(valid, cfg)] if data.occasion else []
    level1 = valid.select(
        person,
        *clusters,
        time,
        coded,
        pl.col(outcome).cast(pl.Float64),
        *time_covariates,
        *occasion,
    ).sort([*order, pl.col(time)])
    parents = [column for column in clusters if column not in key]
    level2 = (
        valid.group_by(key)
        .agg(
            *[pl.col(column).drop_nulls().first() for column in parents],
            *[pl.col(column).drop_nulls().first() for column in person_covariates],
            pl.len().cast(pl.Int64).alias("n_occasions"),
            pl.col(time).min().alias("first_time"),
            pl.col(time).max().alias("last_time"),
        )
        .sort(order)
        .select(person, *[c for c in clusters if c != person], pl.exclude(person, *clusters))
    )
    level1, level2, added = _apply_centring(level1, level2, cfg, means)
    tables = _cluster_tables(valid, cfg)
    enum_casts = [
        pl.col(column).cast(pl.Enum(levels)) for column, levels in data.categories.items()
    ]
    level2_columns = [*key, *person_covariates, *added]
    model_frame = level1.filter(pl.col(outcome).is_not_null()).join(
        level2.select(level2_columns), on=key, how="left", maintain_order="left"
    )
    for cluster, table in tables.items():
        names = data.cluster_covariates.get(cluster, [])
        if names:
            cluster_key = _cluster_key(cfg, cluster)
            model_frame = model_frame.join(
                table.select(*cluster_key, *names),
                on=cluster_key,
                how="left",
                maintain_order="left",
            )
    model_frame = model_frame.with_columns(enum_casts)
    tables = {
        cluster: table.with_columns(
            pl.col(column).cast(pl.Enum(levels))
            for column, levels in data.categories.items()
            if column in table.columns
        )
        for cluster, table in tables.items()
    }
    return Levels(
        level1=level1,
        level2=level2,
        model_frame=model_frame,
        time_name=time_config.name,
        person=person,
        time=time,
        outcome=outcome,
        clusters=tables,
        ids=data.ids,
    )


def _cluster_tables(valid: pl.DataFrame, cfg: StudyConfig) -> dict[str, pl.DataFrame]:
    """One table per cluster column (see the module docstring), innermost first."""
    data = cfg.data
    clusters = list(data.clusters)
    person_key = _person_key(cfg)
    persons = pl.struct(person_key) if len(person_key) > 1 else pl.col(person_key[0])
    tables: dict[str, pl.DataFrame] = {}
    for position, cluster in enumerate(clusters):
        key = _cluster_key(cfg, cluster)
        parents = [column for column in clusters[position + 1 :] if column not in key]
        names = list(data.cluster_covariates.get(cluster, []))
        counts = [
            persons.n_unique().cast(pl.Int64).alias("n_persons"),
            pl.col(data.outcome).is_not_null().sum().cast(pl.Int64).alias("n_observations"),
        ]
        if position > 0:
            inner_key = _cluster_key(cfg, clusters[position - 1])
            inner = pl.struct(inner_key) if len(inner_key) > 1 else pl.col(inner_key[0])
            counts.append(inner.n_unique().cast(pl.Int64).alias(f"n_{clusters[position - 1]}"))
        table = (
            valid.group_by(key)
            .agg(
                *[pl.col(column).drop_nulls().first() for column in parents],
                *[pl.col(column).drop_nulls().first() for column in names],
                *counts,
            )
            .sort(_key_order(valid, key))
        )
        for column in names:
            if data.centre.get(column) == "grand":
                _require_numbers(table, column, cfg)
                table = grand_mean_centre(table, column)
        tables[cluster] = table
    return tables


def _occasion_column(valid: pl.DataFrame, cfg: StudyConfig) -> pl.Expr:
    """``[data] occasion`` as text; it must exist, be non-missing and unique within a person."""
    from pipeline.errors import DataError

    column, person = cfg.data.occasion, cfg.data.person
    assert column is not None
    where = f"{cfg.data_path.name}: [data] occasion"
    if column not in valid.columns:
        raise DataError(
            f"{where}: column '{column}' is not in the data (columns: {', '.join(valid.columns)})"
        )
    labels = valid.select(
        *_person_key(cfg),
        pl.col(column).cast(pl.String),
        *(["_row"] if "_row" in valid.columns else []),
    )
    missing = labels.filter(pl.col(column).is_null())
    if missing.height:
        first = missing.row(0, named=True)
        row = f"row {first['_row']}, " if "_row" in first else ""
        raise DataError(f"{where}: column '{column}' is missing ({row}person {first[person]})")
    key = _person_key(cfg)
    repeated = labels.group_by(*key, column).len().filter(pl.col("len") > 1).sort(*key, column)
    if repeated.height:
        first = repeated.row(0, named=True)
        raise DataError(
            f"{where}: person {first[person]} has occasion '{first[column]}' in {first['len']} rows; "
            "each occasion label may appear once per person"
        )
    return pl.col(column).cast(pl.String)


def grand_centred(cfg: StudyConfig) -> list[str]:
    """The person-level and time-varying covariates centred on their grand mean."""
    clustered = set(cfg.cluster_covariates)
    return [
        column
        for column, spec in cfg.data.centre.items()
        if spec == "grand" and column not in clustered
    ]


def grand_sums(levels: Levels, cfg: StudyConfig) -> dict[str, tuple[float, int]]:
    """For each :func:`grand_centred` column of uncentred ``levels`` (split with means of
    0), the sum and count of its values at its level (over persons for a person-level
    covariate, over occasions for a time-varying one): additive over partitions of whole
    persons, so the grand mean of all the data is the sum of the sums over the counts."""
    out: dict[str, tuple[float, int]] = {}
    for column in grand_centred(cfg):
        table = levels.level2 if column in cfg.data.person_covariates else levels.level1
        values = table.get_column(column).cast(pl.Float64).drop_nulls()  # as polars' mean
        out[column] = (float(values.sum()), values.len())
    return out


def _require_numbers(frame: pl.DataFrame, column: str, cfg: StudyConfig) -> None:
    """A centred covariate must hold numbers: one line naming it, else (a column of text
    that validation kept as text, not declared in ``[data.categories]``)."""
    if column not in frame.columns:
        return
    dtype = frame.schema[column]
    if dtype.is_numeric() or dtype in (pl.Boolean, pl.Null):
        return
    from pipeline.errors import DataError, show_name

    values = frame.get_column(column).drop_nulls()
    example = f" (e.g. '{show_name(str(values[0])[:40])}')" if values.len() else ""
    raise DataError(
        f"{cfg.data_path.name}: [data] centre.{column}: column '{column}' holds text{example}, "
        "not numbers; only a numeric covariate can be centred"
    )


def _apply_centring(
    level1: pl.DataFrame,
    level2: pl.DataFrame,
    cfg: StudyConfig,
    means: dict[str, float] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Centre covariates per ``[data] centre``; return the tables and added level-2 columns.
    ``means`` replace the grand means of these rows (see :func:`split_levels`)."""
    person = _person_key(cfg)
    cluster_covariates = set(cfg.cluster_covariates)
    added: list[str] = []
    for column, spec in cfg.data.centre.items():
        if column in cluster_covariates:  # centred in its cluster table
            continue
        on_level2 = column in cfg.data.person_covariates
        _require_numbers(level2 if on_level2 else level1, column, cfg)
        if spec == "grand" and means is not None and column in means:
            shifted = (pl.col(column).cast(pl.Float64) - means[column]).alias(column)
            if on_level2:
                level2 = level2.with_columns(shifted)
            else:
                level1 = level1.with_columns(shifted)
        elif spec == "grand":
            if on_level2:
                level2 = grand_mean_centre(level2, column)
            else:
                level1 = grand_mean_centre(level1, column)
        elif spec == "person":
            # not ``means``: that name holds the grand means of later columns
            split = split_within_between(level1, column, person=person)
            mean_name = f"{column}_person_mean"
            level1 = split.drop(mean_name)
            level2 = level2.join(
                split.group_by(person).agg(pl.col(mean_name).first()),
                on=person,
                how="left",
                maintain_order="left",
            )
            added.append(mean_name)
        else:
            assert isinstance(spec, GroupCentring)
            level1, level2 = _centre_in_groups(level1, level2, column, spec.group, cfg, on_level2)
    return level1, level2, added


def _centre_in_groups(
    level1: pl.DataFrame,
    level2: pl.DataFrame,
    column: str,
    group: str,
    cfg: StudyConfig,
    on_level2: bool,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    person = _person_key(cfg)
    if on_level2:
        if group not in level2.columns:
            from pipeline.errors import ConfigError

            raise ConfigError(
                f"{cfg.source_path}: [data] centre.{column}: group '{group}' is not a "
                "person-level covariate; expected one of "
                f"{[c for c in cfg.data.person_covariates if c != column]}"
            )
        return level1, group_mean_centre(level2, column, group=group)
    if group in level1.columns:
        return group_mean_centre(level1, column, group=group), level2
    if group in level2.columns:
        joined = level1.join(
            level2.select(person, group), on=person, how="left", maintain_order="left"
        )
        return group_mean_centre(joined, column, group=group).drop(group), level2
    from pipeline.errors import ConfigError

    raise ConfigError(
        f"{cfg.source_path}: [data] centre.{column}: group '{group}' is not a declared "
        "covariate; expected a column in person_covariates or time_covariates"
    )


# --- descriptives -------------------------------------------------------------------------


def _time_text(value: float) -> str:
    return f"{value:g}"


def descriptive_summary(levels: Levels) -> pl.DataFrame:
    """The one-row summary: persons, occasions (with an outcome) and occasions per person
    (also all a partition of the data needs: its rows merge by sums, minima and maxima)."""
    level1, level2 = levels.level1, levels.level2
    persons = level2.height
    counts = level2.get_column("n_occasions")
    return pl.DataFrame(
        {
            "persons": [persons],
            "occasions": [level1.height],
            "occasions_with_outcome": [
                level1.height - level1.get_column(levels.outcome).null_count()
            ],
            "mean_occasions": [float(counts.mean()) if persons else 0.0],
            "min_occasions": [int(counts.min()) if persons else 0],
            "max_occasions": [int(counts.max()) if persons else 0],
        },
        schema={
            "persons": pl.Int64,
            "occasions": pl.Int64,
            "occasions_with_outcome": pl.Int64,
            "mean_occasions": pl.Float64,
            "min_occasions": pl.Int64,
            "max_occasions": pl.Int64,
        },
    )


def describe(levels: Levels, cfg: StudyConfig) -> Descriptives:
    """Persons, occasions, occasions per person, attrition by time and missingness patterns.

    An occasion "with outcome" has a non-missing outcome; attrition and patterns
    count those. With more than ``MAX_PATTERN_TIMES`` distinct times (continuous
    time), attrition and patterns are empty tables.
    """
    level1, level2 = levels.level1, levels.level2
    person, time, outcome = levels.person, levels.time, levels.outcome
    key = list(levels.person_key)
    one_person = pl.struct(key) if len(key) > 1 else pl.col(person)
    if cfg.data.occasion is not None:  # an occasion is its label, placed at its mean time
        level1 = level1.with_columns(pl.col(time).mean().over(cfg.data.occasion))
    persons = level2.height
    summary = descriptive_summary(levels)
    occasions_per_person = (
        level2.group_by("n_occasions")
        .agg(pl.len().cast(pl.Int64).alias("persons"))
        .sort("n_occasions")
    )
    observed = level1.filter(pl.col(outcome).is_not_null())
    times = level1.get_column(time).unique().sort()
    attrition_schema = {"time": pl.Float64, "persons": pl.Int64, "share": pl.Float64}
    pattern_schema = {
        "pattern": pl.String,
        "times": pl.String,
        "persons": pl.Int64,
        "share": pl.Float64,
    }
    if times.len() > MAX_PATTERN_TIMES or persons == 0:
        return Descriptives(
            summary=summary,
            occasions_per_person=occasions_per_person,
            attrition=pl.DataFrame(schema=attrition_schema),
            patterns=pl.DataFrame(schema=pattern_schema),
        )
    attrition = (
        pl.DataFrame({"time": times.cast(pl.Float64)})
        .join(
            observed.group_by(time)
            .agg(one_person.n_unique().alias("persons"))
            .rename({time: "time"}),
            on="time",
            how="left",
        )
        .with_columns(pl.col("persons").fill_null(0).cast(pl.Int64))
        .with_columns((pl.col("persons") / persons).alias("share"))
        .sort("time")
    )
    positions = {value: index for index, value in enumerate(times.to_list())}
    masks = (
        observed.select(
            *key,
            pl.lit(2, dtype=pl.Int64)
            .pow(pl.col(time).replace_strict(positions, return_dtype=pl.Int64))
            .alias("bit"),
        )
        .group_by(key)
        .agg(pl.col("bit").sum().alias("mask"))
    )
    by_mask = (
        level2.select(key)
        .join(masks, on=key, how="left")
        .with_columns(pl.col("mask").fill_null(0))
        .group_by("mask")
        .agg(pl.len().cast(pl.Int64).alias("persons"))
    )
    time_values = times.to_list()
    rows = []
    for mask, count in by_mask.iter_rows():
        present = [bool(mask >> index & 1) for index in range(len(time_values))]
        rows.append(
            {
                "pattern": " ".join("X" if flag else "." for flag in present),
                "times": ", ".join(
                    _time_text(t) for t, flag in zip(time_values, present, strict=True) if flag
                ),
                "persons": count,
                "share": count / persons,
            }
        )
    patterns = pl.DataFrame(rows, schema=pattern_schema).sort(
        ["persons", "pattern"], descending=[True, True]
    )
    return Descriptives(
        summary=summary,
        occasions_per_person=occasions_per_person,
        attrition=attrition,
        patterns=patterns,
    )
