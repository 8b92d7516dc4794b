"""Several outcomes in one run (``[data] outcomes = ["math", "read"]``): the row rule and the tables.

Each outcome is analysed as a one-outcome study (:meth:`StudyConfig.for_outcome`), so
the stages see one outcome as they always do. What is shared between the outcomes
lives here (no Prefect):

- :func:`validate_outcomes`: the rows of the run. The rule: a row is quarantined, for
  the whole run, when any check fails on it: its person, time, covariates or
  clusters, or the value of any outcome (not a number, infinite, too large to compute
  with). A *missing* outcome value (empty, ``NA``, ``NaN``) is no failure, as with one
  outcome: the row stays valid and is used by the outcomes it has; each outcome's
  models use the valid rows with a value of that outcome. So ``rows_in = rows_used +
  rows_quarantined`` holds for the run, and per outcome ``rows_used = rows with the
  outcome + rows missing it``. A row missing ``read`` is never quarantined for
  ``math``. (Each outcome's checks are run by :func:`pipeline.validate.validate_data`
  with that outcome's config; the failures are merged per row, each reason once.)

The per-outcome tables are put together by :mod:`pipeline.report.outcomes` (the
``outcome`` column of every table file, the comparison across outcomes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import polars as pl

from pipeline.config import StudyConfig
from pipeline.errors import QuarantineLimitError
from pipeline.io import ROW_COLUMN, LoadedData
from pipeline.validate import ValidationResult, validate_data

if TYPE_CHECKING:
    from pipeline.analysis import Analysis

__all__ = [
    "OUTCOME_COLUMN",
    "OutcomeValidation",
    "combined_analysis",
    "validate_outcomes",
]

OUTCOME_COLUMN = "outcome"
"""The column that names the outcome (as in :mod:`pipeline.report.outcomes`)."""


@dataclass(frozen=True, slots=True)
class OutcomeValidation:
    """The run's row accounting (``run``) and each outcome's valid rows (``per_outcome``).

    ``per_outcome[name]`` is a :class:`ValidationResult` whose ``valid`` rows are the
    run's valid rows with ``name`` as the (Float64) outcome, and whose counts are the
    run's (``missing_outcome``: the valid rows without a value of ``name``).
    """

    run: ValidationResult
    per_outcome: Mapping[str, ValidationResult]

    @property
    def outcomes(self) -> tuple[str, ...]:
        return tuple(self.per_outcome)


def _merge_quarantines(results: Sequence[ValidationResult]) -> pl.DataFrame:
    """One row per quarantined line: the original values and every reason once, in order."""
    parts = [result.quarantine for result in results]
    stacked = pl.concat(parts, how="vertical_relaxed").with_row_index("__order__")
    columns = [column for column in stacked.columns if column not in {"__order__", "reason"}]
    merged = (
        stacked.with_columns(pl.col("reason").str.split("; "))
        .explode("reason")
        .group_by(ROW_COLUMN, maintain_order=True)
        .agg(
            *[pl.col(column).first() for column in columns if column != ROW_COLUMN],
            pl.col("reason").unique(maintain_order=True).str.join("; "),
        )
        .sort(ROW_COLUMN)
    )
    return merged.select(parts[0].columns)


def _merge_reasons(results: Sequence[ValidationResult]) -> pl.DataFrame:
    """Rows per reason: a reason found by several outcomes' checks concerns the same rows."""
    stacked = pl.concat([result.reasons for result in results], how="vertical_relaxed")
    return (
        stacked.group_by("reason")
        .agg(pl.col("rows").max())
        .sort(["rows", "reason"], descending=[True, False])
        .select(results[0].reasons.columns)
    )


def validate_outcomes(loaded: LoadedData, cfg: StudyConfig) -> OutcomeValidation:
    """Validate the rows for every outcome of ``cfg`` under the rule of this module.

    With one outcome this is :func:`pipeline.validate.validate_data`, unchanged.
    Raises :class:`QuarantineLimitError` (carrying the run's result) when the run's
    share of quarantined rows is above ``[data] max_invalid_fraction``.
    """
    outcomes = cfg.outcomes
    if len(outcomes) == 1:
        only = validate_data(loaded, cfg)
        return OutcomeValidation(run=only, per_outcome={outcomes[0]: only})
    results: dict[str, ValidationResult] = {}
    for name in outcomes:
        try:
            results[name] = validate_data(loaded, cfg.for_outcome(name))
        except QuarantineLimitError as error:
            results[name] = error.validation
            run = _run_result(results)
            raise type(error)(_limit_message(loaded, cfg, run, str(error)), run) from None
    run = _run_result(results)
    if run.rows_used == 0 or run.invalid_fraction > cfg.data.max_invalid_fraction:
        raise QuarantineLimitError(_limit_message(loaded, cfg, run, ""), run)
    bad = run.quarantine.get_column(ROW_COLUMN).implode()
    per_outcome = {}
    for name, result in results.items():
        valid = result.valid.filter(~pl.col(ROW_COLUMN).is_in(bad))
        per_outcome[name] = replace(
            run, valid=valid, missing_outcome=valid.get_column(name).null_count()
        )
    return OutcomeValidation(run=run, per_outcome=per_outcome)


def _run_result(by_outcome: Mapping[str, ValidationResult]) -> ValidationResult:
    results = list(by_outcome.values())
    first = results[0]
    quarantine = _merge_quarantines(results)
    bad = quarantine.get_column(ROW_COLUMN).implode()
    valid = first.valid.filter(~pl.col(ROW_COLUMN).is_in(bad))
    result = replace(
        first,
        valid=valid,
        quarantine=quarantine,
        rows_used=valid.height,
        rows_quarantined=quarantine.height,
        reasons=_merge_reasons(results),
        missing_outcome=_missing_every_outcome(by_outcome, bad),
    )
    assert result.rows_in == result.rows_used + result.rows_quarantined
    return result


def _missing_every_outcome(results: Mapping[str, ValidationResult], bad: pl.Series) -> int:
    """Valid rows of the run with no value of any outcome (``missing_outcome`` of the run)."""
    lines: set[int] | None = None
    for column, result in results.items():
        missing = set(
            result.valid.filter(~pl.col(ROW_COLUMN).is_in(bad) & pl.col(column).is_null())
            .get_column(ROW_COLUMN)
            .to_list()
        )
        lines = missing if lines is None else lines & missing
    return len(lines or ())


def _limit_message(loaded: LoadedData, cfg: StudyConfig, run: ValidationResult, detail: str) -> str:
    if detail and run.rows_used and run.invalid_fraction <= cfg.data.max_invalid_fraction:
        return detail  # a [limits] bound, not the share of invalid rows
    top = "; ".join(
        f"{reason} ({rows} row{'' if rows == 1 else 's'})"
        for reason, rows in run.reasons.head(3).iter_rows()
    )
    if run.rows_used == 0:
        return (
            f"{loaded.path}: no valid rows: all {run.rows_in} rows were quarantined; "
            f"most common reasons: {top}"
        )
    limit = cfg.data.max_invalid_fraction
    return (
        f"{loaded.path}: {run.rows_quarantined} of {run.rows_in} rows "
        f"({100 * run.invalid_fraction:.1f}%) are invalid (checked for the outcomes "
        f"{', '.join(cfg.outcomes)}), above the allowed {100 * limit:.1f}% ([data] "
        f"max_invalid_fraction = {limit:g}); most common reasons: {top}"
    )


def combined_analysis(analyses: Mapping[str, Analysis]) -> Analysis:
    """The analyses of several outcomes as one, for the manifest and the Prefect artifacts.

    Models, fits and failures are named ``<outcome>: <model>``, and so is the ``model``
    column of every table; every table, the failures and the warnings get an
    ``outcome`` column first. The report and the table files do not use this: they
    show each outcome's own analysis.
    """
    from pipeline.report.outcomes import stack_tables

    models = tuple(
        replace(spec, name=f"{name}: {spec.name}")
        for name, analysis in analyses.items()
        for spec in analysis.models
    )
    fits = {
        f"{name}: {model}": fit
        for name, analysis in analyses.items()
        for model, fit in analysis.fits.items()
    }
    failures = pl.concat(
        [
            analysis.failures.with_columns((pl.lit(f"{name}: ") + pl.col("model")).alias("model"))
            for name, analysis in analyses.items()
        ]
    )
    warnings = stack_tables({name: analysis.warnings for name, analysis in analyses.items()})
    names: list[str] = []
    for analysis in analyses.values():
        names += [table for table in analysis.tables if table not in names]
    tables = {}
    for table in names:
        stacked = stack_tables(
            {name: analysis.tables.get(table) for name, analysis in analyses.items()}
        )
        if stacked is not None and "model" in stacked.columns:
            stacked = stacked.with_columns(
                (pl.col(OUTCOME_COLUMN) + pl.lit(": ") + pl.col("model").cast(pl.String)).alias(
                    "model"
                )
            )
        if stacked is not None:
            tables[table] = stacked
    from pipeline.analysis import Analysis

    return Analysis(
        models=models,
        fits=fits,
        failures=failures,
        warnings=warnings if warnings is not None else pl.DataFrame(),
        tables=tables,
    )
