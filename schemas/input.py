"""The pandera (polars backend) schema of the long-format input, built from a study config.

Validation runs on a *prepared* frame: the loaded columns as read, plus typed copies
of time (``__time__``), outcome (``__outcome__``) and numeric covariates
(``__num__<name>``) parsed by :func:`prepare_input`. Every rule is a pandera
``Check`` whose function is one vectorised polars expression over the whole frame,
so that a million rows validate in well under a second. Each check's ``name`` is a
stable code; ``RULES`` gives the general reason shown in counts and the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from pipeline.config import StudyConfig

__all__ = [
    "FIRST_COPY",
    "MAX_MAGNITUDE",
    "MAX_TIME_MAGNITUDE",
    "OUTCOME_VALUE",
    "RULES",
    "TIME_VALUE",
    "InputRoles",
    "build_input_schema",
    "input_roles",
    "key_texts",
    "numeric_value",
    "prepare_input",
]

TIME_VALUE = "__time__"
OUTCOME_VALUE = "__outcome__"
# line of the first copy when a row repeats an earlier row exactly (null otherwise)
FIRST_COPY = "__first_copy__"
_NUMERIC_PREFIX = "__num__"
# a larger outcome or covariate overflows when squared and summed (cross-products of
# the fit); time is raised to powers up to 5 and squared, so its bound is lower
MAX_MAGNITUDE = 1e100
MAX_TIME_MAGNITUDE = 1e30


def numeric_value(column: str) -> str:
    """Name of the parsed numeric copy of a covariate in the prepared frame."""
    return f"{_NUMERIC_PREFIX}{column}"


@dataclass(frozen=True, slots=True)
class InputRoles:
    """Which column plays which role, and which covariates are numeric."""

    person: str
    time: str
    outcome: str
    person_covariates: tuple[str, ...]
    time_covariates: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    numeric_covariates: tuple[str, ...]
    time_range: tuple[float, float] | None
    waves: dict[str, float] | None
    decimal_comma: bool = False
    max_label_length: int = 200
    row_column: str = "_line"
    clusters: tuple[str, ...] = ()  # higher levels, innermost first
    cluster_covariates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ids: str = "unique"  # or "within_cluster": a person id is unique only within its cluster
    # the loaded columns' types: a number's text is never empty, and integer keys group as
    # their text does, so the rules skip converting such columns to text (empty: always text)
    dtypes: dict[str, pl.DataType] = field(default_factory=dict)

    @property
    def covariates(self) -> tuple[str, ...]:
        """Person-level, time-varying and cluster-level covariates."""
        flat = (
            name for cluster in self.clusters for name in self.cluster_covariates.get(cluster, ())
        )
        return (*self.person_covariates, *self.time_covariates, *flat)

    @property
    def cluster_of(self) -> dict[str, str]:
        """Cluster covariate -> its cluster column."""
        return {
            name: cluster for cluster, names in self.cluster_covariates.items() for name in names
        }

    def cluster_key(self, cluster: str) -> list[str]:
        """The columns that identify a unit of ``cluster``: the cluster itself with unique
        ids, else every level above it too (outermost first)."""
        if self.ids != "within_cluster":
            return [cluster]
        position = self.clusters.index(cluster)
        return list(reversed(self.clusters[position:]))

    @property
    def person_key(self) -> list[str]:
        """The columns that identify a person (outermost first, the person id last)."""
        if self.ids != "within_cluster":
            return [self.person]
        return [*reversed(self.clusters), self.person]


# check code -> the general reason (counted per reason in the manifest)
RULES: dict[str, str] = {
    "exact_duplicate": "exact duplicate of an earlier row",
    "person_missing": "person id is missing",
    "label_too_long": "person id or category label is too long",
    "cluster_missing": "cluster id is missing",
    "cluster_mover": "person appears in two clusters (a mover)",
    "cluster_not_nested": "cluster appears in two outer clusters",
    "time_missing": "time is missing",
    "time_not_number": "time is not a number",
    "time_not_wave": "time is not one of the configured waves",
    "time_not_finite": "time is infinite or NaN",
    "time_out_of_range": "time is outside the configured time range",
    "time_too_large": "time is too large to compute with",
    "outcome_not_number": "outcome is not a number",
    "outcome_infinite": "outcome is infinite",
    "outcome_too_large": "outcome is too large to compute with",
    "covariate_missing": "covariate is missing",
    "covariate_not_number": "numeric covariate is not a number",
    "covariate_infinite": "numeric covariate is infinite or NaN",
    "covariate_too_large": "numeric covariate is too large to compute with",
    "category_undeclared": "categorical covariate has an undeclared level",
    "person_covariate_varies": "person-level covariate varies within person",
    "duplicate_occasion": "duplicate occasion (same person and time)",
    "cluster_covariate_varies": "cluster-level covariate varies within cluster",
}


def _parse_number(column: str, dtype: pl.DataType, decimal_comma: bool = False) -> pl.Expr:
    if dtype.is_numeric() or dtype == pl.Boolean:
        return pl.col(column).cast(pl.Float64, strict=False)
    text = pl.col(column).cast(pl.String).str.strip_chars()
    if decimal_comma:
        text = text.str.replace(",", ".", literal=True)
    return text.cast(pl.Float64, strict=False)


def _text(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).str.strip_chars()


def _numeric_share(frame: pl.DataFrame, column: str, decimal_comma: bool = False) -> float:
    dtype = frame.schema[column]
    if dtype.is_numeric():
        return 1.0
    if dtype != pl.String:
        return 0.0
    counts = frame.select(
        present=_text(column).is_not_null().sum(),
        numbers=_parse_number(column, dtype, decimal_comma).is_not_null().sum(),
    ).row(0)
    return counts[1] / counts[0] if counts[0] else 0.0


def numeric_counts(frame: pl.DataFrame, cfg: StudyConfig) -> dict[str, tuple[int, int]]:
    """Per covariate without declared levels: (non-missing values, of which numbers).

    Summed over the partitions of a data set, they decide as :func:`input_roles` decides
    on one frame (``numeric`` in :func:`input_roles`), so every partition agrees."""
    counts: dict[str, tuple[int, int]] = {}
    for column in cfg.covariates:
        if column in cfg.data.categories or column not in frame.columns:
            continue
        dtype = frame.schema[column]
        present = int(frame.height - frame[column].null_count())
        if dtype.is_numeric():
            counts[column] = (max(present, 1), max(present, 1))
        elif dtype != pl.String:
            counts[column] = (present, 0)
        else:
            row = frame.select(
                present=_text(column).is_not_null().sum(),
                numbers=_parse_number(column, dtype, cfg.data.decimal_comma).is_not_null().sum(),
            ).row(0)
            counts[column] = (int(row[0]), int(row[1]))
    return counts


def input_roles(
    frame: pl.DataFrame, cfg: StudyConfig, *, numeric: tuple[str, ...] | None = None
) -> InputRoles:
    """Roles from the config; a covariate without declared levels is numeric when
    its column is numeric, or when most of its non-missing values are numbers
    (``numeric``, when given, is that decision made over the whole data set)."""
    data = cfg.data
    covariates = cfg.covariates
    if numeric is None:
        numeric = tuple(
            column
            for column in covariates
            if column not in data.categories
            and _numeric_share(frame, column, data.decimal_comma) > 0.5
        )
    return InputRoles(
        person=data.person,
        time=data.time,
        outcome=data.outcome,
        person_covariates=tuple(data.person_covariates),
        time_covariates=tuple(data.time_covariates),
        categories={column: tuple(levels) for column, levels in data.categories.items()},
        numeric_covariates=numeric,
        time_range=data.time_range,
        waves=cfg.time.waves,
        decimal_comma=data.decimal_comma,
        max_label_length=cfg.limits.max_label_length,
        clusters=tuple(data.clusters),
        cluster_covariates={
            cluster: tuple(names) for cluster, names in data.cluster_covariates.items()
        },
        ids=data.ids,
        dtypes=dict(frame.schema),
    )


def _wave_expression(roles: InputRoles, dtype: pl.DataType) -> pl.Expr:
    assert roles.waves is not None
    try:
        numeric_keys = {float(key): value for key, value in roles.waves.items()}
    except ValueError:
        numeric_keys = None
    if numeric_keys is not None:
        return _parse_number(roles.time, dtype, roles.decimal_comma).replace_strict(
            numeric_keys, default=None, return_dtype=pl.Float64
        )
    return _text(roles.time).replace_strict(roles.waves, default=None, return_dtype=pl.Float64)


def prepare_input(frame: pl.DataFrame, roles: InputRoles) -> pl.DataFrame:
    """The loaded frame plus parsed numeric copies of time, outcome and numeric covariates,
    and, for a row that repeats an earlier row exactly (every column but the line), the
    line of the first copy (``FIRST_COPY``)."""
    schema = frame.schema
    comma = roles.decimal_comma
    if roles.waves is not None:
        time = _wave_expression(roles, schema[roles.time])
    else:
        time = _parse_number(roles.time, schema[roles.time], comma)
    parsed = [
        time.alias(TIME_VALUE),
        _parse_number(roles.outcome, schema[roles.outcome], comma).alias(OUTCOME_VALUE),
    ]
    parsed += [
        _parse_number(column, schema[column], comma).alias(numeric_value(column))
        for column in roles.numeric_covariates
    ]
    return _mark_copies(frame.with_columns(parsed), frame.columns, roles)


def _mark_copies(prepared: pl.DataFrame, columns: list[str], roles: InputRoles) -> pl.DataFrame:
    """Add ``FIRST_COPY``. Only rows whose (person, time) repeats can be exact copies
    (a row without them is quarantined anyway), so only those are compared whole."""
    content = [column for column in columns if column != roles.row_column]
    empty = prepared.with_columns(pl.lit(None, dtype=pl.Int64).alias(FIRST_COPY))
    if roles.row_column not in columns or not content:
        return empty
    key = pl.struct(*group_keys(roles.person_key, roles), pl.col(TIME_VALUE))
    candidates = prepared.select(key.is_duplicated()).to_series()
    if not candidates.any():
        return empty
    position = "__copy_position__"
    positioned = prepared.with_row_index(position)
    whole = pl.struct(content)
    copies = (
        positioned.filter(candidates)
        .select(
            position,
            pl.when(whole.is_first_distinct())
            .then(None)
            .otherwise(pl.col(roles.row_column).min().over(whole))
            .cast(pl.Int64)
            .alias(FIRST_COPY),
        )
        .filter(pl.col(FIRST_COPY).is_not_null())
    )
    return positioned.join(copies, on=position, how="left", maintain_order="left").drop(position)


# --- row rules: each returns a boolean expression, True where the row passes ---------------


def _present(column: str, roles: InputRoles | None = None) -> pl.Expr:
    """True where the column has a value whose text (stripped) is not empty."""
    dtype = None if roles is None else roles.dtypes.get(column)
    if dtype is not None and (dtype.is_numeric() or dtype == pl.Boolean):
        return pl.col(column).is_not_null()  # the text of a number or a boolean is never empty
    return _text(column).is_not_null() & (_text(column) != "")


# the longest text of a 64-bit integer ("-9223372036854775808"); 128-bit ones are longer
INTEGER_TEXT_LENGTH = 20
_INTEGERS_UP_TO_64_BITS = (
    pl.Int8,
    pl.Int16,
    pl.Int32,
    pl.Int64,
    pl.UInt8,
    pl.UInt16,
    pl.UInt32,
    pl.UInt64,
)


def _short(column: str, limit: int, roles: InputRoles | None = None) -> pl.Expr:
    """True where the text (spaces around it stripped) has at most ``limit`` characters."""
    dtype = None if roles is None else roles.dtypes.get(column)
    if dtype in _INTEGERS_UP_TO_64_BITS and limit >= INTEGER_TEXT_LENGTH:
        return pl.repeat(True, pl.len())
    return (_text(column).str.len_chars() <= limit).fill_null(True)


def group_keys(columns: list[str], roles: InputRoles) -> list[pl.Expr]:
    """The key columns for grouping rows (``over``, ``is_duplicated``): an integer column as
    it is (integers group exactly as their texts do, without making 5 million strings), any
    other as its stripped text, like :func:`key_texts`."""
    return [
        (
            pl.col(column) if roles.dtypes.get(column, pl.String).is_integer() else _text(column)
        ).alias(f"__key_{index}__")
        for index, column in enumerate(columns)
    ]


def key_texts(columns: list[str]) -> list[pl.Expr]:
    """The key columns as stripped text (a person or cluster key), for ``over`` and structs."""
    return [_text(column).alias(f"__key_{index}__") for index, column in enumerate(columns)]


def _constant_within(value: pl.Expr, key: list[str], roles: InputRoles) -> pl.Expr:
    """True where ``value`` has at most one distinct non-missing value within ``key``."""
    return (value.drop_nulls().n_unique().over(group_keys(key, roles)) <= 1).fill_null(True)


def _not_huge(value: pl.Expr, limit: float) -> pl.Expr:
    """True where a finite number is within +-limit (missing and infinite pass: other rules)."""
    return ~(value.is_finite() & (value.abs() > limit)).fill_null(False)


def _rule_expressions(roles: InputRoles) -> dict[str, list[tuple[str, pl.Expr]]]:
    """Column -> [(code, passes)] for every rule that applies to it."""
    person, time, outcome = roles.person, roles.time, roles.outcome
    time_value, outcome_value = pl.col(TIME_VALUE), pl.col(OUTCOME_VALUE)
    time_given = _present(time, roles)
    time_number = time_value.is_not_null()
    copy = pl.col(FIRST_COPY)
    rules: dict[str, list[tuple[str, pl.Expr]]] = {
        person: [
            ("exact_duplicate", copy.is_null()),
            ("person_missing", _present(person, roles)),
            ("label_too_long", _short(person, roles.max_label_length, roles)),
        ],
        time: [("time_missing", time_given)],
        outcome: [
            ("outcome_not_number", ~_present(outcome, roles) | outcome_value.is_not_null()),
            ("outcome_infinite", ~outcome_value.is_infinite().fill_null(False)),
            ("outcome_too_large", _not_huge(outcome_value, MAX_MAGNITUDE)),
        ],
    }
    if roles.waves is not None:
        rules[time].append(("time_not_wave", ~time_given | time_number))
    else:
        rules[time].append(("time_not_number", ~time_given | time_number))
        rules[time].append(("time_not_finite", ~time_number | time_value.is_finite()))
    rules[time].append(("time_too_large", _not_huge(time_value, MAX_TIME_MAGNITUDE)))
    if roles.time_range is not None:
        low, high = roles.time_range
        rules[time].append(
            (
                "time_out_of_range",
                ~time_value.is_finite().fill_null(False) | time_value.is_between(low, high),
            )
        )
    # an exact copy of an earlier row is quarantined as such and does not make the
    # first copy a duplicate occasion; rows that differ (conflicting duplicates) do
    keyed = pl.when(copy.is_null()).then(
        pl.struct(*group_keys(roles.person_key, roles), time_value)
    )
    rules[person].append(
        (
            "duplicate_occasion",
            ~(
                keyed.is_duplicated()
                & copy.is_null()
                & _present(person, roles)
                & time_value.is_not_null()
            ),
        )
    )
    _cluster_rules(roles, rules)
    for column in roles.covariates:
        column_rules = [("covariate_missing", _present(column, roles))]
        if column in roles.numeric_covariates:
            value = pl.col(numeric_value(column))
            column_rules.append(
                ("covariate_not_number", ~_present(column, roles) | value.is_not_null())
            )
            column_rules.append(("covariate_infinite", ~value.is_not_null() | value.is_finite()))
            column_rules.append(("covariate_too_large", _not_huge(value, MAX_MAGNITUDE)))
        else:
            column_rules.append(("label_too_long", _short(column, roles.max_label_length, roles)))
        if column in roles.categories:
            levels = pl.Series(list(roles.categories[column]), dtype=pl.String)
            column_rules.append(
                (
                    "category_undeclared",
                    ~_present(column, roles) | _text(column).is_in(levels.implode()),
                )
            )
        if column in roles.person_covariates:
            comparable = (
                pl.col(numeric_value(column))
                if column in roles.numeric_covariates
                else _text(column)
            )
            over = group_keys(roles.person_key, roles)
            within = comparable.min().over(over) == comparable.max().over(over)
            unkeyed = pl.any_horizontal([~_present(part, roles) for part in roles.person_key])
            column_rules.append(("person_covariate_varies", within.fill_null(True) | unkeyed))
        if column in roles.cluster_of:
            comparable = (
                pl.col(numeric_value(column))
                if column in roles.numeric_covariates
                else _text(column)
            )
            key = roles.cluster_key(roles.cluster_of[column])
            unkeyed = pl.any_horizontal([~_present(part, roles) for part in key])
            column_rules.append(
                ("cluster_covariate_varies", _constant_within(comparable, key, roles) | unkeyed)
            )
        rules[column] = column_rules
    return rules


def _cluster_rules(roles: InputRoles, rules: dict[str, list[tuple[str, pl.Expr]]]) -> None:
    """Rules of the cluster columns: present, short; with unique ids, a person in one
    cluster (no movers) and a cluster in one outer cluster (nested). A missing cluster id
    does not count as another cluster."""
    for position, cluster in enumerate(roles.clusters):
        column_rules = [
            ("cluster_missing", _present(cluster, roles)),
            ("label_too_long", _short(cluster, roles.max_label_length, roles)),
        ]
        if roles.ids != "within_cluster":
            present = pl.when(_present(cluster, roles)).then(_text(cluster))
            if position == 0:
                one = _constant_within(present, [roles.person], roles) | ~_present(
                    roles.person, roles
                )
                column_rules.append(("cluster_mover", one))
            if position + 1 < len(roles.clusters):
                outer = roles.clusters[position + 1]
                outer_present = pl.when(_present(outer, roles)).then(_text(outer))
                one = _constant_within(outer_present, [cluster], roles) | ~_present(cluster, roles)
                column_rules.append(("cluster_not_nested", one))
        rules[cluster] = column_rules


def _check(code: str, passes: pl.Expr) -> pa.Check:
    def check_function(data: PolarsData, expression: pl.Expr = passes) -> pl.LazyFrame:
        return data.lazyframe.select(expression.fill_null(False).alias("passes"))

    return pa.Check(check_function, name=code)


def build_input_schema(roles: InputRoles) -> pa.DataFrameSchema:
    """The pandera schema for a prepared input frame (see :func:`prepare_input`)."""
    columns: dict[str, pa.Column] = {}
    for column, rules in _rule_expressions(roles).items():
        columns[column] = pa.Column(
            checks=[_check(code, passes) for code, passes in rules],
            nullable=True,
            required=True,
        )
    columns[TIME_VALUE] = pa.Column(pl.Float64, nullable=True)
    columns[OUTCOME_VALUE] = pa.Column(pl.Float64, nullable=True)
    for column in roles.numeric_covariates:
        columns[numeric_value(column)] = pa.Column(pl.Float64, nullable=True)
    return pa.DataFrameSchema(columns, strict=False, name="long-format input")
