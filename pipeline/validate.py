"""Validate the loaded data against the schema built from the study config.

One pass of the pandera schema (``schemas/input.py``, validated lazily with data
checks switched on) finds every failure. Each failing row goes to the quarantine
with its original values, its row number and its reasons in plain words; the rest
is the valid table with time and outcome as Float64. The row accounting
``rows_in == rows_used + rows_quarantined`` always holds. A NaN outcome counts as
missing (a valid row, left out of fitting later), an infinite one is quarantined.

A control character (C0 other than tab, or DEL) inside a person id or a text
covariate (a category) quarantines the row: such a value would end up in chart
labels and files, and a data manager should fix it at the source. Reasons show
control characters escaped (``\\x01``), never raw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context
from pandera.errors import SchemaErrors

from pipeline.config import StudyConfig
from pipeline.errors import DataError, QuarantineLimitError
from pipeline.io import ROW_COLUMN, LoadedData
from schemas.input import (
    FIRST_COPY,
    MAX_MAGNITUDE,
    MAX_TIME_MAGNITUDE,
    OUTCOME_VALUE,
    RULES,
    TIME_VALUE,
    InputRoles,
    build_input_schema,
    input_roles,
    key_texts,
    numeric_value,
    prepare_input,
)

__all__ = [
    "ModelCheck",
    "StudyLimitError",
    "ValidationResult",
    "check_models",
    "enforce_limits",
    "validate_data",
]

_POSITION = "__position__"
_CONTROL_CHARACTER = "control_character"
# the control character is named first: it explains an undeclared level too
_RULE_ORDER = {_CONTROL_CHARACTER: -1} | {code: order for order, code in enumerate(RULES)}
# C0 control characters except tab, and DEL; written as \xNN in messages
_CONTROLS = [chr(code) for code in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F)]
_CONTROL_ESCAPES = [f"\\x{ord(character):02x}" for character in _CONTROLS]
_CONTROL_PATTERN = r"[\x00-\x08\x0A-\x1F\x7F]"
_SHOWN_ROWS = 5
# values and names listed in one reason
_SHOWN_VALUES = 5
# characters of a value shown in a message
_SHOWN_CHARACTERS = 40
_DECIMAL_COMMA = r"^[+-]?\d+,\d+$"


class StudyLimitError(QuarantineLimitError):
    """The valid data exceed a ``[limits]`` bound (levels, groups, fixed effects);
    ``validation`` holds what was found, as for a quarantine limit."""


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Rows that passed, rows quarantined with their reasons, and the counts."""

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int
    rows_used: int
    rows_quarantined: int
    reasons: pl.DataFrame
    missing_outcome: int
    numeric_covariates: tuple[str, ...] = ()
    file_rows: int = -1
    blank_lines: int = 0

    @property
    def invalid_fraction(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0


def validate_data(
    loaded: LoadedData,
    cfg: StudyConfig,
    *,
    limits: bool = True,
    numeric_covariates: tuple[str, ...] | None = None,
) -> ValidationResult:
    """Run the input schema over ``loaded.frame``; quarantine failing rows with reasons.

    Raises :class:`QuarantineLimitError` (carrying the result) when the share of
    quarantined rows is above ``[data] max_invalid_fraction`` or no row is valid.
    ``limits=False`` leaves those checks to the caller (:func:`enforce_limits`), for a
    partition of the data whose share alone says nothing; ``numeric_covariates`` the
    covariates decided numeric over the whole data set (:func:`schemas.input.numeric_counts`).
    """
    frame = loaded.frame
    roles = input_roles(frame, cfg, numeric=numeric_covariates)
    prepared = prepare_input(frame, roles)
    failures = pl.concat(
        [
            _run_schema(build_input_schema(roles), prepared, loaded),
            _control_failures(prepared, roles),
        ]
    )
    positioned = prepared.with_row_index(_POSITION)
    messages = _messages(positioned, failures, roles)
    per_row = (
        messages.sort(_POSITION, "order")
        .group_by(_POSITION, maintain_order=True)
        .agg(pl.col("message").unique(maintain_order=True).str.join("; ").alias("reason"))
    )
    failing = per_row.get_column(_POSITION)
    original = [column for column in frame.columns if column != ROW_COLUMN]
    quarantine = (
        positioned.join(per_row, on=_POSITION, how="inner")
        .sort(_POSITION)
        .select(
            pl.col(ROW_COLUMN),
            *[pl.col(column).cast(pl.String) for column in original],
            pl.col("reason"),
        )
    )
    valid = _valid_rows(
        positioned.filter(~pl.col(_POSITION).is_in(failing.implode())), frame, roles
    )
    reasons = (
        messages.group_by("general")
        .agg(pl.col(_POSITION).n_unique().cast(pl.Int64).alias("rows"))
        .rename({"general": "reason"})
        .sort(["rows", "reason"], descending=[True, False])
    )
    result = ValidationResult(
        valid=valid,
        quarantine=quarantine,
        rows_in=frame.height,
        rows_used=valid.height,
        rows_quarantined=quarantine.height,
        reasons=reasons,
        missing_outcome=valid.get_column(cfg.data.outcome).null_count(),
        numeric_covariates=roles.numeric_covariates,
        file_rows=loaded.rows_in,
        blank_lines=loaded.blank_lines,
    )
    assert result.rows_in == result.rows_used + result.rows_quarantined
    if limits:
        _enforce_limit(result, loaded, cfg)
        _enforce_bounds(result, loaded, cfg, roles)
    return result


def enforce_limits(result: ValidationResult, loaded: LoadedData, cfg: StudyConfig) -> None:
    """The checks of :func:`validate_data` on ``result`` (the merged result of partitions):
    the quarantined share, and the ``[limits]`` bounds on ``result.valid``."""
    _enforce_limit(result, loaded, cfg)
    roles = input_roles(loaded.frame, cfg, numeric=result.numeric_covariates)
    _enforce_bounds(result, loaded, cfg, roles)


def _run_schema(
    schema: pa.DataFrameSchema, prepared: pl.DataFrame, loaded: LoadedData
) -> pl.DataFrame:
    """Validate lazily (all failures in one pass) with data-level checks switched on."""
    with config_context(validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        try:
            schema.validate(prepared, lazy=True)
        except SchemaErrors as errors:
            failures = errors.failure_cases
        else:
            return pl.DataFrame(schema={"index": pl.Int64, "check": pl.String, "column": pl.String})
    unknown = failures.filter(~pl.col("check").is_in(list(RULES)) | pl.col("index").is_null())
    if unknown.height:
        first = unknown.row(0, named=True)
        raise DataError(
            f"{loaded.path}: column '{first['column']}' failed {first['check']}: "
            f"{first['failure_case']}"
        )
    return failures.select(pl.col("index").cast(pl.Int64), "check", "column")


def _text_columns(roles: InputRoles) -> list[str]:
    """The person id and the covariates read as text (categories)."""
    return [
        roles.person,
        *roles.clusters,
        *(column for column in roles.covariates if column not in roles.numeric_covariates),
    ]


def _control_failures(prepared: pl.DataFrame, roles: InputRoles) -> pl.DataFrame:
    """(index, check, column) for each text value with a control character inside it.

    Surrounding whitespace (a trailing ``\\r``) is stripped before the check, as it
    is from the valid values.
    """
    parts = [pl.DataFrame(schema={"index": pl.Int64, "check": pl.String, "column": pl.String})]
    for column in _text_columns(roles):
        if prepared.schema[column] != pl.String:
            continue
        positions = (
            prepared.select(
                pl.arg_where(
                    pl.col(column).str.strip_chars().str.contains(_CONTROL_PATTERN).fill_null(False)
                )
            )
            .to_series()
            .cast(pl.Int64)
        )
        parts.append(
            pl.DataFrame(
                {
                    "index": positions,
                    "check": pl.Series([_CONTROL_CHARACTER] * positions.len(), dtype=pl.String),
                    "column": pl.Series([column] * positions.len(), dtype=pl.String),
                }
            )
        )
    return pl.concat(parts)


def _escaped(expression: pl.Expr) -> pl.Expr:
    """Text with every control character written as ``\\xNN``."""
    return expression.str.replace_many(_CONTROLS, _CONTROL_ESCAPES)


def _escape_text(text: str) -> str:
    """:func:`_escaped` for a Python string."""
    for character, escape in zip(_CONTROLS, _CONTROL_ESCAPES, strict=True):
        text = text.replace(character, escape)
    return text


def _label(column: str, roles: InputRoles) -> str:
    if column in roles.person_covariates:
        return f"person-level covariate {column}"
    if column in roles.time_covariates:
        return f"time-varying covariate {column}"
    if column in roles.cluster_of:
        return f"{roles.cluster_of[column]}-level covariate {column}"
    return column


def _key_names(columns: list[str]) -> list[str]:
    """The names :func:`schemas.input.key_texts` gives the key columns."""
    return [f"__key_{index}__" for index in range(len(columns))]


def _natural(values: list[str]) -> list[str]:
    """Whole numbers in numeric order first, then the rest as text."""
    return sorted(values, key=lambda value: (not value.isdigit(), len(value), value))


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c`` (at most a few shown, then ``and N more``)."""
    if len(items) > _SHOWN_VALUES:
        return ", ".join(items[:_SHOWN_VALUES]) + f" and {len(items) - _SHOWN_VALUES:,} more"
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + f" and {items[-1]}"


def _shown(value: str | None) -> str:
    return "(missing)" if value is None else _shorten(_escape_text(value))


def _unit_name(columns: list[str], values: tuple[str, ...]) -> str:
    """A unit named by its key: ``school 3``; ``classroom 2 in school 3`` (innermost first)."""
    parts = [f"{column} {_shown(value)}" for column, value in zip(columns, values, strict=True)]
    return " in ".join(reversed(parts))


def _person_name(roles: InputRoles, values: tuple[str, ...]) -> str:
    """``17``; with ids unique within clusters, ``17 in school 3``."""
    name = _shown(values[-1])
    if len(values) == 1:
        return name
    return f"{name} in {_unit_name(roles.person_key[:-1], values[:-1])}"


def _per_key(
    rows: pl.DataFrame, all_rows: pl.DataFrame, key: list[str], value: pl.Expr, render: Any
) -> pl.Series:
    """One message per row of ``rows``: ``render(key values, distinct values found)``, the
    values taken over every row (``all_rows``) with the same key (text, spaces stripped)."""
    names = _key_names(key)
    wanted = rows.select(key_texts(key)).unique()
    found = (
        all_rows.select(*key_texts(key), value.alias("__value__"))
        .join(wanted, on=names, how="semi")
        .group_by(names)
        .agg(pl.col("__value__").drop_nulls().unique())
    )
    texts = {
        tuple(row[:-1]): render(tuple(row[:-1]), _natural([str(v) for v in row[-1]]))
        for row in found.iter_rows()
    }
    return pl.Series(
        [texts.get(tuple(row)) for row in rows.select(key_texts(key)).iter_rows()],
        dtype=pl.String,
    )


def _units_found(rows: pl.DataFrame, key: list[str]) -> list[tuple[str, ...]]:
    """The distinct keys of ``rows`` in natural order of the innermost part."""
    found = [tuple(row) for row in rows.select(key_texts(key)).unique().iter_rows()]
    return sorted(found, key=lambda row: [(not str(v).isdigit(), len(str(v)), str(v)) for v in row])


def _general(code: str, column: str, roles: InputRoles) -> str:
    """The reason as counted in the manifest: the rule, naming the column."""
    if code == _CONTROL_CHARACTER:
        name = f"person id ({column})" if column == roles.person else _label(column, roles)
        return f"{name} contains a control character"
    if code == "label_too_long":
        what = f"person id ({column})" if column == roles.person else _label(column, roles)
        return (
            f"{what} is longer than {roles.max_label_length:,} characters "
            "([limits] max_label_length)"
        )
    if code == "outcome_too_large":
        return (
            f"outcome ({column}) is larger than {MAX_MAGNITUDE:g} in absolute value: "
            "rescale the outcome (e.g. to thousands or millions of its unit)"
        )
    if code == "time_too_large":
        return (
            f"time ({column}) is larger than {MAX_TIME_MAGNITUDE:g} in absolute value: "
            "rescale time (a smaller unit, or [time] scale)"
        )
    if code == "covariate_too_large":
        return (
            f"{_label(column, roles)} is larger than {MAX_MAGNITUDE:g} in absolute value: "
            "rescale it"
        )
    base = RULES[code]
    if code.startswith("time_"):
        return base.replace("time", f"time ({column})", 1)
    if code.startswith("outcome_"):
        return base.replace("outcome", f"outcome ({column})", 1)
    if code == "person_missing":
        return f"person id ({column}) is missing"
    if code == "cluster_missing":
        return f"{column} is missing"
    if code == "cluster_mover":
        return f"person appears in more than one {column} (a mover)"
    if code == "cluster_not_nested":
        outer = roles.clusters[roles.clusters.index(column) + 1]
        return f"{column} appears in more than one {outer} (not nested)"
    if code == "cluster_covariate_varies":
        return f"{_label(column, roles)} varies within {roles.cluster_of[column]}"
    if code in {"duplicate_occasion", "exact_duplicate"}:
        return base
    return {
        "covariate_missing": f"{_label(column, roles)} is missing",
        "covariate_not_number": f"{_label(column, roles)} is not a number",
        "covariate_infinite": f"{_label(column, roles)} is infinite or NaN",
        "category_undeclared": f"{_label(column, roles)} has an undeclared level",
        "person_covariate_varies": f"person-level covariate {column} varies within person",
    }[code]


def _listed(values: list[str], *, quote: bool) -> str:
    """``'a', 'b', 'c' and 4 more`` (control characters escaped, long values cut)."""
    shown = [_shorten(_escape_text(value)) for value in values[:_SHOWN_VALUES]]
    if quote:
        shown = [f"'{value}'" for value in shown]
    more = len(values) - len(shown)
    return ", ".join(shown) + (f" and {more:,} more" if more else "")


def _shorten(text: str) -> str:
    if len(text) <= _SHOWN_CHARACTERS:
        return text
    return f"{text[:_SHOWN_CHARACTERS]}... ({len(text):,} characters)"


def _group_general(code: str, column: str, roles: InputRoles, rows: pl.DataFrame) -> str:
    """The counted reason; for some rules it names what was found in the failing rows."""
    general = _general(code, column, roles)
    if code == "category_undeclared":
        found = (
            rows.select(pl.col(column).cast(pl.String).str.strip_chars().unique().sort())
            .to_series()
            .drop_nulls()
            .to_list()
        )
        declared = ", ".join(_escape_text(level) for level in roles.categories[column])
        return (
            f"{_label(column, roles)} has undeclared level(s) {_listed(found, quote=True)} "
            f"(declared in [data.categories]: {declared})"
        )
    if code in {"person_covariate_varies", "cluster_mover"}:
        persons = [_person_name(roles, key) for key in _units_found(rows, roles.person_key)]
        hint = ""
        if code == "cluster_mover":
            hint = (
                "; crossed membership is not supported yet (if person ids are unique only "
                'within their cluster, set [data] ids = "within_cluster")'
            )
        return (
            f"{general}{hint}: every row of "
            f"{'this person' if len(persons) == 1 else 'these persons'} "
            f"is left out ({len(persons):,} person(s): {_and(persons)})"
        )
    if code in {"cluster_not_nested", "cluster_covariate_varies"}:
        cluster = column if code == "cluster_not_nested" else roles.cluster_of[column]
        key = roles.cluster_key(cluster)
        units = [_unit_name(key, unit) for unit in _units_found(rows, key)]
        hint = ""
        if code == "cluster_not_nested":
            hint = (
                f"; crossed membership is not supported yet (if {cluster} ids are unique only "
                'within the next level, set [data] ids = "within_cluster")'
            )
        return (
            f"{general}{hint}: every row of {'this' if len(units) == 1 else 'these'} "
            f"{cluster} is left out ({len(units):,} {cluster}(s): {_and(units)})"
        )
    return general


def _quoted(column: str) -> pl.Expr:
    text = _escaped(pl.col(column).cast(pl.String).str.strip_chars())
    return pl.lit("'") + _short_text(text) + pl.lit("'")


def _short_text(text: pl.Expr) -> pl.Expr:
    length = text.str.len_chars()
    return (
        pl.when(length > _SHOWN_CHARACTERS)
        .then(
            text.str.slice(0, _SHOWN_CHARACTERS)
            + pl.lit("... (")
            + length.cast(pl.String)
            + pl.lit(" characters)")
        )
        .otherwise(text)
    )


def _decimal_hint(column: str) -> pl.Expr:
    """A hint after "is not a number" when the value looks like ``12,5``."""
    looks = pl.col(column).cast(pl.String).str.strip_chars().str.contains(_DECIMAL_COMMA)
    return (
        pl.when(looks.fill_null(False))
        .then(
            pl.lit(
                " (a decimal comma? set [data] decimal_comma = true, with a csv_separator "
                'other than ",", e.g. ";")'
            )
        )
        .otherwise(pl.lit(""))
    )


def _number(expression: pl.Expr) -> pl.Expr:
    """A float as short text: 1.0 -> "1", 1.5 -> "1.5"."""
    text = expression.cast(pl.String)
    return (
        pl.when(text.str.ends_with(".0"))
        .then(text.str.slice(0, text.str.len_chars() - 2))
        .otherwise(text)
    )


def _specific(
    code: str, column: str, roles: InputRoles, rows: pl.DataFrame, all_rows: pl.DataFrame
) -> pl.Series:
    """One message per failing row, naming the value, the column, the person."""
    person = roles.person
    expression: pl.Expr
    if code == _CONTROL_CHARACTER:
        first = _escaped(pl.col(column).str.strip_chars().str.extract(f"({_CONTROL_PATTERN})", 1))
        expression = (
            pl.lit(f"{_general(code, column, roles)} (")
            + first
            + pl.lit(") in the value ")
            + _quoted(column)
            + pl.lit("; remove it from the data file (or fix the file's encoding)")
        )
    elif code == "time_not_number":
        expression = (
            pl.lit(f"time ({column}) ")
            + _quoted(column)
            + pl.lit(" is not a number")
            + _decimal_hint(column)
        )
    elif code == "time_not_wave":
        waves = ", ".join(roles.waves or {})
        expression = (
            pl.lit(f"time ({column}) ")
            + _quoted(column)
            + pl.lit(f" is not one of the waves in [time] waves ({waves})")
        )
    elif code == "time_not_finite":
        expression = (
            pl.when(pl.col(TIME_VALUE).is_nan())
            .then(pl.lit(f"time ({column}) is NaN (not a number)"))
            .otherwise(pl.lit(f"time ({column}) is infinite"))
        )
    elif code == "time_out_of_range":
        assert roles.time_range is not None
        low, high = roles.time_range
        expression = (
            pl.lit(f"time ({column}) ")
            + _number(pl.col(TIME_VALUE))
            + pl.lit(f" is outside the allowed range {low:g} to {high:g} ([data] time_range)")
        )
    elif code == "outcome_not_number":
        expression = (
            pl.lit(f"outcome ({column}) ")
            + _quoted(column)
            + pl.lit(" is not a number")
            + _decimal_hint(column)
        )
    elif code == "covariate_not_number":
        expression = (
            pl.lit(f"{_label(column, roles)} ")
            + _quoted(column)
            + pl.lit(" is not a number")
            + _decimal_hint(column)
        )
    elif code == "exact_duplicate":
        expression = pl.lit("exact duplicate of line ") + pl.col(FIRST_COPY).cast(pl.String)
    elif code == "label_too_long":
        what = f"person id ({column})" if column == roles.person else _label(column, roles)
        expression = (
            pl.lit(f"{what} ")
            + _quoted(column)
            + pl.lit(
                f" is longer than {roles.max_label_length:,} characters "
                "([limits] max_label_length; raise it in the config if the study needs longer)"
            )
        )
    elif code in {"outcome_too_large", "covariate_too_large"}:
        expression = (
            pl.lit(f"{_general(code, column, roles).split(' is larger')[0]} ")
            + _quoted(column)
            + pl.lit(
                f" is larger than {MAX_MAGNITUDE:g} in absolute value: its square would "
                "overflow in the fit; rescale it (e.g. to thousands or millions of its unit)"
            )
        )
    elif code == "time_too_large":
        expression = (
            pl.lit(f"time ({column}) ")
            + _quoted(column)
            + pl.lit(
                f" is larger than {MAX_TIME_MAGNITUDE:g} in absolute value: its powers would "
                "overflow in the fit; rescale time (a smaller unit, or [time] scale)"
            )
        )
    elif code == "covariate_infinite":
        expression = (
            pl.when(pl.col(numeric_value(column)).is_nan())
            .then(pl.lit(f"{_label(column, roles)} is NaN (not a number)"))
            .otherwise(pl.lit(f"{_label(column, roles)} is infinite"))
        )
    elif code == "category_undeclared":
        levels = ", ".join(_escape_text(level) for level in roles.categories[column])
        expression = (
            pl.lit(f"{_label(column, roles)} ")
            + _quoted(column)
            + pl.lit(f" is not one of the declared levels {levels}")
        )
    elif code == "person_covariate_varies":
        return _per_key(
            rows,
            all_rows,
            roles.person_key,
            pl.col(column).cast(pl.String).str.strip_chars(),
            lambda key, values: (
                f"person-level covariate {column} varies within person "
                f"{_person_name(roles, key)}: {', '.join(_escape_text(v) for v in sorted(values))}"
            ),
        )
    elif code == "cluster_mover":
        return _per_key(
            rows,
            all_rows,
            [person],
            pl.col(column).cast(pl.String).str.strip_chars().replace("", None),
            lambda key, values: (
                f"person {_shown(key[0])} appears in "
                f"{_and([f'{column} {_shown(value)}' for value in values])} (a mover); "
                "crossed membership is not supported yet"
            ),
        )
    elif code == "cluster_not_nested":
        outer = roles.clusters[roles.clusters.index(column) + 1]
        return _per_key(
            rows,
            all_rows,
            [column],
            pl.col(outer).cast(pl.String).str.strip_chars().replace("", None),
            lambda key, values: (
                f"{column} {_shown(key[0])} appears in "
                f"{_and([f'{outer} {_shown(value)}' for value in values])}; a {column} must lie "
                f"in one {outer} (crossed membership is not supported yet)"
            ),
        )
    elif code == "cluster_covariate_varies":
        key = roles.cluster_key(roles.cluster_of[column])
        return _per_key(
            rows,
            all_rows,
            key,
            pl.col(column).cast(pl.String).str.strip_chars(),
            lambda unit, values: (
                f"{_label(column, roles)} varies within {_unit_name(key, unit)}: "
                f"{_and([_shown(value) for value in values])}"
            ),
        )
    elif code == "duplicate_occasion":
        key = [*key_texts(roles.person_key), pl.col(TIME_VALUE)]
        groups = (
            rows.group_by(key)
            .agg(
                pl.col(ROW_COLUMN)
                .sort()
                .head(_SHOWN_ROWS)
                .cast(pl.String)
                .str.join(", ")
                .alias("__rows__"),
                pl.len().alias("__count__"),
            )
            .with_columns(
                pl.when(pl.col("__count__") > _SHOWN_ROWS)
                .then(
                    pl.col("__rows__")
                    + pl.lit(", ... (")
                    + pl.col("__count__").cast(pl.String)
                    + pl.lit(" rows)")
                )
                .otherwise(pl.col("__rows__"))
                .alias("__rows__")
            )
        )
        names = _key_names(roles.person_key)
        joined = rows.with_columns(key_texts(roles.person_key)).join(
            groups, on=[*names, TIME_VALUE], how="left", maintain_order="left"
        )
        who = _short_text(_escaped(pl.col(names[-1])))
        outer = list(zip(roles.person_key[:-1], names[:-1], strict=True))
        for cluster, name in reversed(outer):
            who = who + pl.lit(f" in {cluster} ") + _short_text(_escaped(pl.col(name)))
        return joined.select(
            pl.lit("duplicate of person ")
            + who
            + pl.lit(" at time ")
            + _number(pl.col(TIME_VALUE))
            + pl.lit(" (lines ")
            + pl.col("__rows__")
            + pl.lit(")")
        ).to_series()
    else:
        expression = pl.lit(_general(code, column, roles))
    return rows.with_columns(expression.alias("__message__")).get_column("__message__")


def _messages(positioned: pl.DataFrame, failures: pl.DataFrame, roles: InputRoles) -> pl.DataFrame:
    """(position, order, message, general) for every failing (row, rule)."""
    parts = [
        pl.DataFrame(
            schema={
                _POSITION: pl.UInt32,
                "order": pl.Int64,
                "message": pl.String,
                "general": pl.String,
            }
        )
    ]
    for (code, column), group in failures.group_by(["check", "column"], maintain_order=True):
        positions = group.get_column("index").unique().sort().cast(pl.UInt32)
        rows = positioned.filter(pl.col(_POSITION).is_in(positions.implode()))
        messages = _specific(str(code), str(column), roles, rows, positioned)
        parts.append(
            pl.DataFrame(
                {
                    _POSITION: rows.get_column(_POSITION),
                    "order": pl.Series([_RULE_ORDER[str(code)]] * rows.height, dtype=pl.Int64),
                    "message": messages.cast(pl.String),
                    "general": pl.Series(
                        [_group_general(str(code), str(column), roles, rows)] * rows.height,
                        dtype=pl.String,
                    ),
                }
            )
        )
    return pl.concat(parts)


def _valid_rows(rows: pl.DataFrame, frame: pl.DataFrame, roles: InputRoles) -> pl.DataFrame:
    """Valid rows with original columns; time, outcome and numeric covariates as Float64."""
    outcome = pl.col(OUTCOME_VALUE)
    converted: list[pl.Expr] = [
        pl.col(TIME_VALUE).alias(roles.time),
        pl.when(outcome.is_nan()).then(None).otherwise(outcome).alias(roles.outcome),
    ]
    for column in (roles.person, *roles.clusters):
        if frame.schema[column] == pl.String:
            converted.append(pl.col(column).str.strip_chars())
    for column in roles.covariates:
        if column in roles.numeric_covariates:
            converted.append(pl.col(numeric_value(column)).alias(column))
        elif frame.schema[column] == pl.String:
            converted.append(pl.col(column).str.strip_chars())
    return rows.with_columns(converted).select(frame.columns)


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _enforce_limit(result: ValidationResult, loaded: LoadedData, cfg: StudyConfig) -> None:
    limit = cfg.data.max_invalid_fraction
    top = "; ".join(
        f"{reason} ({rows} row{'' if rows == 1 else 's'})"
        for reason, rows in result.reasons.head(3).iter_rows()
    )
    if result.rows_used == 0:
        raise QuarantineLimitError(
            f"{loaded.path}: no valid rows: all {result.rows_in} rows were quarantined; "
            f"most common reasons: {top}",
            result,
        )
    if result.invalid_fraction > limit:
        raise QuarantineLimitError(
            f"{loaded.path}: {result.rows_quarantined} of {result.rows_in} rows "
            f"({_percent(result.invalid_fraction)}) are invalid, above the allowed "
            f"{_percent(limit)} ([data] max_invalid_fraction = {limit:g}); "
            f"most common reasons: {top}",
            result,
        )


def _model_formulas(cfg: StudyConfig) -> list[tuple[str, object]]:
    """(model name, parsed formula) of every model that parses; the others are reported
    by the model check (:func:`model_problems`)."""
    from pipeline.analysis.sequence import model_sequence
    from pipeline.errors import GrowthError
    from pipeline.model.formula import parse_formula

    try:
        specs = model_sequence(cfg)
    except (GrowthError, ValueError):
        return []
    parsed = []
    for spec in specs:
        try:
            parsed.append((spec.name, parse_formula(spec.formula)))
        except GrowthError:
            continue
    return parsed


def _enforce_bounds(
    result: ValidationResult, loaded: LoadedData, cfg: StudyConfig, roles: InputRoles
) -> None:
    """Refuse a study whose valid data would make the models unboundedly large.

    A categorical predictor with thousands of levels (or a comparison group with
    thousands of groups) makes the fixed-effects design as wide, and the run's time
    and memory grow with it; the bounds are ``[limits]`` keys, so a study that
    needs more can raise them.
    """
    limits = cfg.limits
    valid = result.valid

    def distinct(column: str) -> int:
        return int(valid.select(pl.col(column).drop_nulls().n_unique()).item())

    group = cfg.comparison.group
    if group is not None and group in valid.columns:
        groups = distinct(group)
        if groups > limits.max_groups:
            raise StudyLimitError(
                f"{loaded.path}: the comparison group {group} ([comparison] group) has "
                f"{groups:,} distinct values in the valid rows, more than the limit of "
                f"{limits.max_groups:,} ([limits] max_groups); compare fewer groups (a coarser "
                "grouping) or raise the limit",
                result,
            )
    categorical = {
        column: distinct(column)
        for column in roles.covariates
        if column not in roles.numeric_covariates and column in valid.columns
    }
    for name, formula in _model_formulas(cfg):
        bound = 1 if formula.intercept else 0
        for term in formula.terms:
            size = 1
            for factor in term:
                for column in factor.columns:
                    count = categorical.get(column, 1)
                    if count > limits.max_levels:
                        raise StudyLimitError(
                            f"{loaded.path}: the categorical predictor {column} has {count:,} "
                            f"levels in the valid rows, more than the limit of "
                            f"{limits.max_levels:,} ([limits] max_levels), in model '{name}'; "
                            "use a coarser grouping (or model it as a higher level) or raise "
                            "the limit",
                            result,
                        )
                    size *= count
            bound += size
        if bound > limits.max_fixed_effects:
            raise StudyLimitError(
                f"{loaded.path}: model '{name}' would have up to {bound:,} fixed effects, more "
                f"than the limit of {limits.max_fixed_effects:,} ([limits] max_fixed_effects); "
                "simplify the formula or raise the limit",
                result,
            )


@dataclass(frozen=True, slots=True)
class ModelCheck:
    """What :func:`check_models` found: ``errors`` stop the study (nothing can be
    fitted); ``warnings`` name each model that the run would leave out, and why."""

    models: tuple[str, ...]
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


def check_models(levels: Any, cfg: StudyConfig) -> ModelCheck:
    """Check every model of the sequence the way the run fits it, short of fitting.

    The models are those of :func:`pipeline.analysis.sequence.model_sequence` (the
    generated ones and ``[[models.extra]]``) with the random part capped as the
    analysis caps it; each is given to the engine's own design step
    (:func:`pipeline.model.design.build_design`: formula, columns, coding, rank,
    grouping), so whatever the engine accepts or refuses, validation agrees. A model
    the engine refuses becomes a warning worded as the run's failure record; only
    when no model can be built (or the sequence itself is invalid) is it an error.
    The group-comparison model that the analysis adds is not checked here.
    """
    from pipeline.analysis.sequence import model_sequence
    from pipeline.errors import GrowthError
    from pipeline.model.design import build_design

    frame: pl.DataFrame = levels.model_frame
    time_name = levels.time_name
    person_key = list(getattr(levels, "person_key", (cfg.data.person,)))
    distinct_times = int(
        frame.group_by(person_key).agg(pl.col(time_name).n_unique().alias("k"))["k"].max() or 0
    )
    try:
        specs = model_sequence(cfg, time_name=time_name, distinct_times=distinct_times)
    except (GrowthError, ValueError) as error:
        return ModelCheck(models=(), errors=(str(error),), warnings=())
    warnings = []
    for spec in specs:
        try:
            build_design(frame, spec.formula)
        except Exception as error:  # noqa: BLE001 - worded as the run records a failed model
            text = str(error).strip() or type(error).__name__
            if not isinstance(error, GrowthError):
                text = f"{type(error).__name__}: {text}"
            warnings.append(f"model '{spec.name}' ({spec.formula}) could not be fitted: {text}")
    errors = []
    if specs and len(warnings) == len(specs):
        errors.append(f"no model of the study can be fitted; the first: {warnings[0]}")
    return ModelCheck(
        models=tuple(spec.name for spec in specs), errors=tuple(errors), warnings=tuple(warnings)
    )
