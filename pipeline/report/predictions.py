"""The report's "Predictions" section: table views and the words that explain them.

Reads only the tables of the :class:`ReportContext` made by
:mod:`pipeline.analysis.predictions` (``predictor_values``, ``predictor_trajectories``,
``time_pieces``); every number in a sentence here is a cell of one of those tables.
"""

from __future__ import annotations

import polars as pl

from .context import ReportContext
from .findings import Finding
from .formatting import TableView, format_number, format_time, is_available, table_view

__all__ = ["pieces_sentences", "prediction_findings", "prediction_views", "values_note"]


def values_note(ctx: ReportContext) -> str:
    """How the values were chosen and what the other predictors are held at."""
    table = ctx.table("predictor_values")
    if not is_available(table):
        return ""
    return (
        "Mean and SD over persons (one value per person, however many occasions; a "
        "cluster-level predictor: one value per cluster), not over rows. While one "
        "predictor varies, every other numeric predictor is held at its mean over persons "
        "and every categorical one is averaged over its levels with equal weights. Bands: "
        "pointwise 95% confidence intervals of the mean, t with Satterthwaite df."
    )


def _time(ctx: ReportContext, value: float) -> str:
    return f"{format_number(value)}{f' {ctx.time_unit}' if ctx.time_unit else ''}"


def pieces_sentences(ctx: ReportContext) -> tuple[str, ...]:
    """Per model and group: the slope before the first knot, the change at each knot and the
    slope after it, from the ``time_pieces`` table."""
    table = ctx.table("time_pieces")
    if not is_available(table):
        return ()
    per = f"per {ctx.time_unit.removesuffix('s')}" if ctx.time_unit else "per unit of time"
    unit = f" {ctx.outcome_unit} {per}" if ctx.outcome_unit else f" {per}"
    out = []
    for (model, group), rows in table.group_by(["model", "group"], maintain_order=True):
        parts = []
        for row in rows.iter_rows(named=True):
            interval = (
                f"95% CI {format_number(row['conf_low'])} to {format_number(row['conf_high'])}"
            )
            if row["piece"] == "slope":
                parts.append(
                    f"from {_time(ctx, row['time_from'])} to {_time(ctx, row['time_to'])} the "
                    f"mean changes by {format_number(row['estimate'])}{unit} "
                    f"(SE {format_number(row['std_error'])}, {interval})"
                )
            else:
                parts.append(
                    f"at {_time(ctx, row['time_from'])} the slope changes by "
                    f"{format_number(row['estimate'])} ({interval}, p = "
                    f"{format_number(row['p_value'])})"
                )
        who = (
            ""
            if group == "all"
            else f", group {ctx.labels.get(ctx.group_name or '', {}).get(group, group)}"
        )
        out.append(f"{model}{who}: " + "; ".join(parts) + ".")
    return tuple(out)


def prediction_views(ctx: ReportContext) -> dict[str, TableView]:
    """The section's tables."""
    pieces = ctx.table("time_pieces")
    if is_available(pieces):
        pieces = pieces.with_columns(
            pl.col("group")
            .cast(pl.String)
            .replace(dict(ctx.labels.get(ctx.group_name or "", {})))
            .alias("group")
        )
    return {
        "predictor_values": table_view(
            ctx.table("predictor_values"), key="predictor_values", note=values_note(ctx)
        ),
        "time_pieces": table_view(
            pieces,
            key="time_pieces",
            note=(
                "The slope after a knot is the slope before it plus the change of slope (the "
                "coefficient of the pmax term); its SE is that of the sum as one contrast of "
                "the fixed effects, which takes their covariance into account, not the sum "
                "of the two SEs."
            ),
        ),
    }


def prediction_findings(ctx: ReportContext) -> list[Finding]:
    """Per predictor: the model-implied outcome at the last time of the grid at its lowest and
    highest value drawn (the first and last rows of the chart's data summary). No difference
    is claimed: the table holds the two means and their intervals, not their contrast."""
    table = ctx.table("predictor_trajectories")
    if not is_available(table):
        return []
    from .figures import predictor_label

    unit = f" {ctx.outcome_unit}" if ctx.outcome_unit else ""
    last = table.filter(pl.col("time") == pl.col("time").max())
    out = []
    for (predictor,), rows in last.group_by(["predictor"], maintain_order=True):
        rows = rows.sort("value")
        if rows.height < 2:
            continue
        low, high = rows.row(0, named=True), rows.row(rows.height - 1, named=True)

        def mean(row: dict) -> str:
            return (
                f"{format_number(row['estimate'])}{unit} (95% CI {format_number(row['conf_low'])}"
                f" to {format_number(row['conf_high'])}) at {predictor_label(row['value'], row['setting'])}"
            )

        time = f"{format_time(high['time'])}{f' {ctx.time_unit}' if ctx.time_unit else ''}"
        text = (
            f"At {ctx.time_label} {time} the model-implied mean {ctx.outcome_label} is "
            f"{mean(high)} of {predictor}, and {mean(low)}, other predictors held fixed."
        )
        out.append(Finding(text, "figure-predictor_trajectories", "Predictions"))
    return out
