"""The report's "Findings": plain sentences built from the numbers of the tables below.

Each :class:`Finding` names the table it comes from (``source``, an anchor in
the report), so every sentence can be traced. The wording never claims more
than its statistic supports:

- a difference is called a difference only when its 95% confidence interval
  excludes zero (and, for the Holm-adjusted group contrasts, when the adjusted
  p-value is below 0.05 as well); otherwise the sentence says there is *no
  evidence* of a difference and gives the interval, which shows how large a
  difference the data still allow;
- every estimate is given with its 95% interval;
- standardised effect sizes (:func:`effect_sizes`) are Feingold's (2009) d from the
  analysis table ``effect_sizes`` (:mod:`pipeline.analysis.effect_size`): the
  model-implied difference in change over the whole study, or in status at a time,
  divided by the baseline SD, which the sentence states.

Only the tables of the :class:`ReportContext` are read, so the findings are a
pure function of it, like the rest of the report.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import polars as pl

from .context import ReportContext
from .formatting import (
    MISSING,
    format_number,
    format_p_value,
    format_share,
    format_time,
    is_available,
)

__all__ = ["Finding", "build_findings", "changes_finding", "effect_sizes"]

ALPHA = 0.05
MEANS = "unconditional_means"
GROWTH = "unconditional_growth"
_CONTRAST = re.compile(r"^(?P<group>.+): (?P<a>.+) - (?P<b>.+)$")


@dataclass(frozen=True, slots=True)
class Finding:
    """One sentence of the findings and the anchor of the table it comes from."""

    text: str
    source: str
    source_label: str


def _num(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _interval(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "95% CI not available"
    return f"95% CI {format_number(low)} to {format_number(high)}"


def _excludes_zero(low: float | None, high: float | None) -> bool:
    return low is not None and high is not None and (low > 0 or high < 0)


def _p(value: float | None) -> str:
    if value is None:
        return f"p = {MISSING}"
    text = format_p_value(value)
    return f"p < {text[1:]}" if text.startswith("<") else f"p = {text}"


def _per_time(ctx: ReportContext) -> str:
    unit = ctx.time_unit.strip()
    single = unit[:-1] if unit.endswith("s") and len(unit) > 1 else unit
    if ctx.time_scale != 1.0:
        return f"per {format_time(ctx.time_scale)} {unit}".rstrip()
    return f"per {single}" if single else "per unit of time"


def _at(ctx: ReportContext, time: float) -> str:
    unit = f" {ctx.time_unit}" if ctx.time_unit else ""
    return f"{ctx.time_label} {format_time(time)}{unit}"


def _amount(ctx: ReportContext, value: float) -> str:
    unit = f" {ctx.outcome_unit}" if ctx.outcome_unit else ""
    return f"{format_number(value)}{unit}"


def _label(ctx: ReportContext, column: str | None, level: str) -> str:
    if column is None:
        return level
    return ctx.labels.get(column, {}).get(level, level)


def effect_sizes(ctx: ReportContext) -> pl.DataFrame | None:
    """Feingold's d of the analysis table ``effect_sizes`` (the one definition of the
    report's effect sizes), or ``None`` when it is missing or empty."""
    table = ctx.table("effect_sizes")
    needed = {"quantity", "time_from", "time_to", "effect_size", "es_conf_low", "es_conf_high"}
    if not is_available(table) or not needed <= set(table.columns):
        return None
    return table


def _effect_size_for(
    ctx: ReportContext, sizes: pl.DataFrame | None, row: dict, is_rate: bool
) -> dict | None:
    """The Feingold row that matches a ``group_differences`` row: the change over the
    study for a rate, the status at the same time for a status difference."""
    if sizes is None:
        return None
    match = _CONTRAST.match(str(row["contrast"]))
    rows = sizes
    if match and "group" in sizes.columns and "reference" in sizes.columns:
        rows = sizes.filter((pl.col("group") == match["a"]) & (pl.col("reference") == match["b"]))
    if is_rate:
        rows = rows.filter(pl.col("quantity") == "change over the study")
    else:
        time = _num(row.get("time"))
        if time is None:
            return None
        rows = rows.filter(
            (pl.col("quantity") == "status") & ((pl.col("time_from") - time).abs() < 1e-9)
        )
    return rows.row(0, named=True) if rows.height else None


def _effect_size_text(ctx: ReportContext, d: dict | None, is_rate: bool) -> str:
    if d is None or _num(d["effect_size"]) is None:
        return ""
    over = (
        f" over the study ({_at(ctx, d['time_from'])} to {format_time(d['time_to'])})"
        if is_rate
        else ""
    )
    sd = _num(d.get("sd"))
    per = f" of {_amount(ctx, sd)}" if sd is not None else ""
    return (
        f"; Feingold d{over} = {format_number(d['effect_size'])} baseline SD{per}, "
        f"{_interval(_num(d['es_conf_low']), _num(d['es_conf_high']))}"
    )


def _data_finding(ctx: ReportContext) -> Finding:
    persons = ctx.persons
    who = f"{persons:,} persons and " if persons is not None else ""
    text = f"The analysis uses {who}{ctx.rows_used:,} of {ctx.rows_in:,} rows"
    if ctx.missing_outcome is not None:  # one outcome of several: the rows with a value of it
        with_value = ctx.rows_used - ctx.missing_outcome
        text = (
            f"The analysis of {ctx.outcome_label} uses {who}{with_value:,} of {ctx.rows_in:,} "
            f"rows ({ctx.missing_outcome:,} valid rows have no value of it)"
        )
    if ctx.rows_quarantined:
        share = format_share(ctx.rows_quarantined / ctx.rows_in) if ctx.rows_in else MISSING
        text += f"; {ctx.rows_quarantined:,} rows ({share}) failed validation and were left out"
    return Finding(text + ".", "table-validation", "Validation")


def _growth_findings(ctx: ReportContext) -> list[Finding]:
    fixed = ctx.table("fixed_effects")
    needed = {"model", "term", "estimate", "conf_low", "conf_high"}
    if not is_available(fixed) or not needed <= set(fixed.columns) or not ctx.time_term:
        return []
    rows = {r["term"]: r for r in fixed.filter(pl.col("model") == GROWTH).iter_rows(named=True)}
    if "(Intercept)" not in rows or ctx.time_term not in rows:
        return []
    status, slope = rows["(Intercept)"], rows[ctx.time_term]
    if _num(status["estimate"]) is None or _num(slope["estimate"]) is None:
        return []
    lo, hi = _num(slope["conf_low"]), _num(slope["conf_high"])
    start = (
        f"On average (unconditional growth model), {ctx.outcome_label} was "
        f"{_amount(ctx, status['estimate'])} at {_at(ctx, ctx.time_centre)} "
        f"({_interval(_num(status['conf_low']), _num(status['conf_high']))})"
    )
    if _excludes_zero(lo, hi):
        change = "a rise" if slope["estimate"] > 0 else "a decline"
        text = (
            f"{start} and changed by {_amount(ctx, slope['estimate'])} {_per_time(ctx)} "
            f"({_interval(lo, hi)}), {change}."
        )
    else:
        text = (
            f"{start}; there is no evidence of an average change over time: "
            f"{_amount(ctx, slope['estimate'])} {_per_time(ctx)} ({_interval(lo, hi)})."
        )
    return [Finding(text, "table-model_table", "Model table")]


def _group_findings(ctx: ReportContext) -> list[Finding]:
    table = ctx.table("group_differences")
    needed = {"contrast", "quantity", "estimate", "conf_low", "conf_high"}
    if not is_available(table) or not needed <= set(table.columns):
        return []
    sizes = effect_sizes(ctx)
    out = []
    tests = table.height  # Holm adjusts across all rows of the table
    for row in table.iter_rows(named=True):
        match = _CONTRAST.match(str(row["contrast"]))
        if match and (ctx.group_name is None or match["group"] == ctx.group_name):
            a = _label(ctx, match["group"], match["a"])
            b = _label(ctx, match["group"], match["b"])
            pair = f"{a} and {b} ({match['group']})"
            signed = f"{a} − {b}"
        else:
            pair = signed = str(row["contrast"])
        estimate = _num(row["estimate"])
        if estimate is None:
            continue
        lo, hi = _num(row["conf_low"]), _num(row["conf_high"])
        p, p_holm = _num(row.get("p_value")), _num(row.get("p_holm"))
        is_rate = str(row["quantity"]).startswith("rate")
        time = _num(row.get("time"))
        what = (
            "the rate of change"
            if is_rate
            else "status" + (f" at {_at(ctx, time)}" if time is not None else "")
        )
        amount = f"{_amount(ctx, estimate)}{' ' + _per_time(ctx) if is_rate else ''}"
        size = _effect_size_text(ctx, _effect_size_for(ctx, sizes, row, is_rate), is_rate)
        detail = f"{signed} = {amount}, {_interval(lo, hi)}{size}; {_p(p)}"
        adjusted = p_holm is not None and tests > 1 and p_holm != p
        if _excludes_zero(lo, hi) and (p_holm is None or p_holm < ALPHA):
            holm = f", Holm-adjusted {_p(p_holm)}" if adjusted else ""
            text = f"{pair} differ in {what} ({detail}{holm})."
        elif _excludes_zero(lo, hi):
            text = (
                f"The 95% CI of the difference in {what} between {pair} excludes zero "
                f"({detail}), but after the Holm adjustment across the {tests} comparisons "
                f"there is no evidence of a difference ({_p(p_holm)})."
            )
        else:
            text = f"No evidence of a difference in {what} between {pair} ({detail})."
        out.append(
            Finding(text[0].upper() + text[1:], "table-group_differences", "Group comparison")
        )
    return out


def _icc_findings(ctx: ReportContext) -> list[Finding]:
    icc = ctx.table("icc")
    if not is_available(icc) or "icc" not in icc.columns:
        return []
    out = []
    for row in icc.iter_rows(named=True):
        value = _num(row["icc"])
        if value is None:
            continue
        level = row.get("level") or row.get("group")
        where = (
            f"between {level} units"
            if level and level not in {"id", "person"}
            else "between persons"
        )
        interval = _interval(_num(row.get("conf_low")), _num(row.get("conf_high")))
        text = (
            f"{format_share(value)} of the variance of {ctx.outcome_label} lies {where} "
            f"(ICC {format_number(value)}, {interval}; {str(row.get('model') or MEANS).replace('_', ' ')} model)."
        )
        out.append(Finding(text, "table-icc", "Intraclass correlation"))
    return out


def _explained_findings(ctx: ReportContext) -> list[Finding]:
    out = []
    r2 = ctx.table("r2")
    if is_available(r2) and {"model", "r2_marginal"} <= set(r2.columns) and r2.height > 1:
        last = r2.row(r2.height - 1, named=True)
        growth = r2.filter(pl.col("model") == GROWTH)
        value = _num(last["r2_marginal"])
        if value is not None and last["model"] != MEANS:
            text = (
                f"The fixed effects of the {str(last['model']).replace('_', ' ')} model account for "
                f"{format_share(value)} of the variance of {ctx.outcome_label} (marginal R²)"
            )
            if growth.height and last["model"] != GROWTH:
                base = _num(growth["r2_marginal"][0])
                if base is not None:
                    text += f", against {format_share(base)} for time alone (unconditional growth model)"
            out.append(Finding(text + ".", "table-r2", "Variance explained"))
    explained = ctx.table("variance_explained")
    needed = {"model", "component", "proportion_reduced"}
    if is_available(explained) and needed <= set(explained.columns):
        last_model = explained["model"][-1]
        rows = explained.filter(
            (pl.col("model") == last_model) & ~pl.col("component").str.starts_with("Residual")
        )
        parts = []
        for row in rows.iter_rows(named=True):
            share = _num(row["proportion_reduced"])
            if share is None:
                continue
            verb = "reduce" if share >= 0 else "increase"
            parts.append(
                f"{verb} the variance of {_component(ctx, str(row['component']))} "
                f"by {format_share(abs(share))}"
            )
        if parts:
            reference = (
                str(rows["reference"][0]).replace("_", " ")
                if "reference" in rows.columns and rows.height
                else "the previous model"
            )
            text = (
                f"The predictors of the {str(last_model).replace('_', ' ')} model "
                + ", and ".join(parts)
                + f" (proportional reduction against the {reference} model; a point estimate without an interval)."
            )
            out.append(Finding(text, "table-variance_explained", "Variance explained"))
    return out


def _component(ctx: ReportContext, component: str) -> str:
    """``id: (Intercept)`` -> ``status between persons (id: (Intercept))``."""
    group, _, term = component.partition(": ")
    between = "persons" if ctx.person_name in {None, group} else f"{group} units"
    if term == "(Intercept)":
        return f"status between {between} ({component})"
    if ctx.time_term and term == ctx.time_term:
        return f"the rate of change between {between} ({component})"
    return component


def _warning_finding(alerts: tuple[object, ...]) -> list[Finding]:
    serious = [a for a in alerts if getattr(a, "severity", "") in {"warning", "error"}]
    if not serious:
        return [Finding("No warning changes how to read these results.", "warnings", "Warnings")]
    topics: list[str] = []
    for alert in serious:
        topic = getattr(alert, "topic", "") or "warning"
        if topic not in topics:
            topics.append(topic)
    count = len(serious)
    text = (
        f"{count} warning{'s' if count > 1 else ''} change{'' if count > 1 else 's'} how to read "
        f"these results ({'; '.join(topics)}); see Warnings."
    )
    return [Finding(text, "warnings", "Warnings")]


def changes_finding(changes: pl.DataFrame | None) -> Finding:
    """What changed since the previous run, in one sentence (links to "changes")."""
    if not is_available(changes) or "change" not in changes.columns:
        return Finding(
            "Nothing changed since the previous run in this output folder, or this is its first run.",
            "changes",
            "Since the previous run",
        )
    parts = []
    for row in changes.iter_rows(named=True):
        if row["quantity"].startswith(("data file", "configuration")):
            what = "data" if row["quantity"].startswith("data") else "configuration"
            parts.append(
                f"the {what} {'changed' if row['change'] == 'changed' else 'did not change'}"
            )
    moved = changes.filter(
        ~pl.col("quantity").str.starts_with("data file")
        & ~pl.col("quantity").str.starts_with("configuration")
        & ~pl.col("change").is_in(["0", "same"])
    )
    if moved.height:
        parts.append(f"{moved.height} other quantit{'ies' if moved.height > 1 else 'y'} changed")
    return Finding(
        "Since the previous run: " + ", ".join(parts) + ".", "changes", "Since the previous run"
    )


def _prediction_findings(ctx: ReportContext) -> list[Finding]:
    from .predictions import prediction_findings  # it imports Finding from here

    return prediction_findings(ctx)


def build_findings(ctx: ReportContext, alerts: tuple[object, ...] = ()) -> tuple[Finding, ...]:
    """The findings, in the order a reader asks: the data, the average trajectory, the
    group differences, where the variance lies, what the predictors explain, the
    warnings, and what changed since the previous run."""
    return (
        _data_finding(ctx),
        *_growth_findings(ctx),
        *_group_findings(ctx),
        *_icc_findings(ctx),
        *_explained_findings(ctx),
        *_prediction_findings(ctx),
        *_warning_finding(alerts),
        changes_finding(ctx.changes),
    )
