"""Tables of a run of several outcomes: the ``outcome`` column and the comparison across outcomes.

- :func:`with_outcome`: a table with an ``outcome`` column first (every table file);
- :func:`stack_tables`: the per-outcome tables of one kind as one table, ``outcome``
  first (the files in ``tables/``);
- :func:`outcome_comparison`: the same predictors' fixed effects on each outcome side
  by side, with their intervals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from .context import ReportContext

__all__ = [
    "OUTCOME_COLUMN",
    "comparison_table",
    "outcome_comparison",
    "outcome_title",
    "stack_tables",
    "with_outcome",
]

OUTCOME_COLUMN = "outcome"
"""The column that names the outcome in every table file (the first column)."""


def with_outcome(table: pl.DataFrame, name: str | None) -> pl.DataFrame:
    """``table`` with ``outcome`` (``name``; null for the run as a whole) as its first column."""
    if OUTCOME_COLUMN in table.columns:
        return table
    return table.select(pl.lit(name, dtype=pl.String).alias(OUTCOME_COLUMN), pl.all())


def stack_tables(tables: Mapping[str, pl.DataFrame | None]) -> pl.DataFrame | None:
    """Outcome name -> table: one table, ``outcome`` first, the outcomes in the given order.

    Tables of the same kind have the same columns; where one outcome's table lacks a
    column (an optional analysis) it is null there. ``None`` when every table is absent.
    """
    parts = [with_outcome(table, name) for name, table in tables.items() if table is not None]
    if not parts:
        return None
    return pl.concat(parts, how="diagonal_relaxed")


_COMPARISON_COLUMNS = ("estimate", "std_error", "conf_low", "conf_high", "p_value")


def outcome_comparison(fixed_effects: Mapping[str, pl.DataFrame | None]) -> pl.DataFrame | None:
    """The same predictors' fixed effects on every outcome: ``outcome, model, term, estimate,
    std_error, conf_low, conf_high, p_value``, the outcomes of each term together.

    The model compared is the last of the sequence fitted on every outcome (the
    conditional growth model when there is one), and only its terms estimated on every
    outcome. ``None`` with fewer than two outcomes or no model fitted on all of them.
    The estimates are on each outcome's own scale: compare signs, intervals and
    significance, and sizes only where the units agree.
    """
    tables = {
        name: table
        for name, table in fixed_effects.items()
        if table is not None and {"model", "term"} <= set(table.columns)
    }
    if len(tables) < 2 or len(tables) < len(fixed_effects):
        return None
    order = list(tables.values())[0].get_column("model").unique(maintain_order=True).to_list()
    shared = [m for m in order if all((t["model"] == m).any() for t in tables.values())]
    if not shared:
        return None
    model = shared[-1]
    rows = {name: table.filter(pl.col("model") == model) for name, table in tables.items()}
    terms = list(rows.values())[0].get_column("term").to_list()
    for table in rows.values():
        listed = set(table.get_column("term").to_list())
        terms = [term for term in terms if term in listed]
    if not terms:
        return None
    position = {term: index for index, term in enumerate(terms)}
    parts = [
        table.filter(pl.col("term").is_in(terms)).select(
            pl.lit(name, dtype=pl.String).alias(OUTCOME_COLUMN),
            "model",
            "term",
            *[pl.col(c).cast(pl.Float64) for c in _COMPARISON_COLUMNS],
        )
        for name, table in rows.items()
    ]
    outcome_order = {name: index for index, name in enumerate(rows)}
    stacked = pl.concat(parts)
    return (
        stacked.with_columns(
            pl.col("term").replace_strict(position, return_dtype=pl.Int64).alias("__term__"),
            pl.col(OUTCOME_COLUMN)
            .replace_strict(outcome_order, return_dtype=pl.Int64)
            .alias("__outcome__"),
        )
        .sort("__term__", "__outcome__")
        .drop("__term__", "__outcome__")
    )


def outcome_title(ctx: ReportContext) -> str:
    """``Mathematics (math)``, or the column alone when it has no label of its own."""
    name = ctx.outcome_name or ""
    label = ctx.outcome_label
    return f"{label} ({name})" if label and label != name else name


def comparison_table(ctx: ReportContext) -> pl.DataFrame | None:
    """The same predictors' fixed effects on each outcome (:func:`.outcomes.outcome_comparison`)."""
    return outcome_comparison(
        {str(own.outcome_name): own.table("fixed_effects") for own in ctx.outcomes}
    )
