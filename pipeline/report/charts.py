"""The report's charts: one function per chart, a tidy table in, an Altair chart out.

Each function takes the table named in docs/CONTRACTS.md (already cut to a
bounded size by the caller where it can be large: see :mod:`.figures`) and the
axis titles, and returns a chart with a title, axis titles with units and a
``description`` (which Vega puts on the SVG as its ``aria-label``).

Chart data always uses the fixed column names of the contracts (``person``,
``time``, ``estimate`` ...), never a column name from the user's data, so no
user string is ever read as a Vega field path or expression; user strings
appear only as titles and data values.

User strings are made safe for Vega and the SVG/PNG export: :func:`chart_text`
replaces the characters that make vl-convert abort the process (C0 control
characters other than tab, DEL, U+FFFE/U+FFFF, lone surrogates) with U+FFFD and
line breaks with a space; :func:`title_text` also collapses whitespace runs, since
Vega-Lite copies axis titles into tooltip expressions that a line break breaks.
:func:`chart_spec` applies :func:`chart_text` to every string of a
spec, so chart data (group labels, person ids) is covered too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import altair as alt
import polars as pl

WIDTH = 820
HEIGHT = 320
FACET_WIDTH = 260
FACET_HEIGHT = 260
ALL_PERSONS = "All persons"


REPLACEMENT = "\ufffd"
_LINE_BREAKS = ("\n", "\r", "\u2028", "\u2029")
_CHART_TEXT = str.maketrans(
    {
        **{chr(c): REPLACEMENT for c in (*range(0x00, 0x20), 0x7F, 0xFFFE, 0xFFFF)},
        **{chr(c): REPLACEMENT for c in range(0xD800, 0xE000)},  # lone surrogates
        "\t": "\t",
        **dict.fromkeys(_LINE_BREAKS, " "),
    }
)


def chart_text(text: str) -> str:
    """``text`` with line breaks as spaces and other unsafe characters as U+FFFD.

    Unsafe: C0 control characters except tab, DEL, U+FFFE, U+FFFF and lone
    surrogates (vl-convert aborts the whole process on a control character in
    any text it draws). Character for character, so it is deterministic and
    keeps the length.
    """
    return text.translate(_CHART_TEXT)


def chart_strings(value: Any) -> Any:
    """``value`` (a spec: dicts, lists, scalars) with :func:`chart_text` on every string value."""
    if isinstance(value, str):
        return chart_text(value)
    if isinstance(value, dict):
        return {k: chart_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [chart_strings(v) for v in value]
    return value


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None`` (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def chart_spec(chart: alt.TopLevelMixin) -> dict[str, Any]:
    """The Vega-Lite spec of a chart as a plain dict (datasets named by content hash).

    NaN and infinite values become null, which Vega treats as missing; JSON has
    no NaN. Every string (titles, descriptions, data values such as group
    labels) goes through :func:`chart_text`, so no control character
    reaches Vega or vl-convert (which aborts the process on one).
    """
    return chart_strings(_finite(chart.to_dict()))


def title_text(text: str) -> str:
    """A title on one line: :func:`chart_text`, whitespace runs as one space, stripped."""
    return " ".join(chart_text(text).split())


def axis_title(label: str, unit: str = "") -> str:
    """``"Age (years)"``, or the label alone when there is no unit (on one line)."""
    return title_text(f"{label} ({unit})" if unit else label)


def require_columns(table: pl.DataFrame, columns: Sequence[str], *, chart: str) -> None:
    """Raise a ``ValueError`` naming the chart and the missing columns."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"chart {chart!r}: table lacks column(s) {missing}; it has {table.columns}"
        )


def with_group_label(table: pl.DataFrame, *, fallback: str = ALL_PERSONS) -> pl.DataFrame:
    """A ``group`` column as text, null or absent groups labelled ``fallback``."""
    if "group" not in table.columns:
        return table.with_columns(pl.lit(fallback).alias("group"))
    return table.with_columns(pl.col("group").cast(pl.String).fill_null(fallback))


def _title(text: str, subtitle: str = "") -> alt.Title:
    text, subtitle = title_text(text), title_text(subtitle)
    return alt.Title(text=text, subtitle=subtitle) if subtitle else alt.Title(text=text)


def time_x(time_title: str, ticks: Sequence[float] | None = None) -> alt.X:
    """The time axis: ticks at the observed occasions when given, else Vega's own."""
    axis = alt.Axis(values=list(ticks)) if ticks else alt.Undefined
    return alt.X("time:Q", title=time_title, scale=alt.Scale(zero=False), axis=axis)


def _color(group_title: str, sort: Sequence[str] | None = None) -> alt.Color:
    return alt.Color(
        "group:N",
        title=title_text(group_title),
        sort=list(sort) if sort is not None else "ascending",
        legend=alt.Legend(symbolOpacity=1),
    )


def occasions_chart(table: pl.DataFrame) -> alt.Chart:
    """Bar chart: how many persons have 1, 2, ... occasions."""
    require_columns(table, ["n_occasions", "persons"], chart="occasions_per_person")
    return (
        alt.Chart(table.select("n_occasions", "persons"))
        .mark_bar()
        .encode(
            x=alt.X("n_occasions:O", title="Occasions per person (count)"),
            y=alt.Y("persons:Q", title="Persons (count)"),
            tooltip=["n_occasions:O", "persons:Q"],
        )
        .properties(
            title=_title("Occasions per person"),
            width=WIDTH,
            height=HEIGHT * 2 // 3,
            description="Bar chart of the number of persons by their number of occasions.",
        )
    )


def attrition_chart(
    table: pl.DataFrame,
    *,
    time_title: str,
    ticks: Sequence[float] | None = None,
    attrition: bool = False,
) -> alt.Chart:
    """Line and points: persons observed at each time.

    ``attrition`` says that every person entered at the first time, so that
    fewer persons later means persons left (the subtitle says so); otherwise
    (persons enter at different times, as in a cohort-sequential design) the
    chart only counts observations.
    """
    require_columns(table, ["time", "persons"], chart="observations_by_time")
    time_title = title_text(time_title)
    data = table.select("time", "persons", *(["share"] if "share" in table.columns else []))
    base = alt.Chart(data).encode(
        x=time_x(time_title, ticks),
        y=alt.Y("persons:Q", title="Persons observed (count)", scale=alt.Scale(zero=True)),
        tooltip=[c for c in ("time:Q", "persons:Q", "share:Q") if c.split(":")[0] in data.columns],
    )
    subtitle = (
        "Every person entered at the first time: fewer persons later are persons who left"
        if attrition
        else "Persons with an observation at each time"
    )
    return (base.mark_line() + base.mark_point(filled=True)).properties(
        title=_title("Observations by time", subtitle),
        width=WIDTH,
        height=HEIGHT * 2 // 3,
        description=f"Line chart of persons observed against {time_title}.",
    )


def spaghetti_chart(
    sample: pl.DataFrame,
    means: pl.DataFrame,
    *,
    time_title: str,
    outcome_title: str,
    group_title: str,
    persons_total: int | None,
    ticks: Sequence[float] | None = None,
) -> alt.LayerChart:
    """Each sampled person's observed trajectory, with the mean trajectory per group.

    ``sample``: person, time, outcome, group; ``means``: group, time, mean.
    """
    require_columns(sample, ["person", "time", "outcome", "group"], chart="spaghetti")
    time_title, outcome_title = title_text(time_title), title_text(outcome_title)
    group_title = title_text(group_title)
    require_columns(means, ["group", "time", "mean"], chart="spaghetti")
    shown = sample["person"].n_unique()
    of_total = f" of {persons_total:,}" if persons_total else ""
    lines = (
        alt.Chart(sample.select("person", "time", "outcome", "group"))
        .mark_line(strokeWidth=0.8, opacity=0.35, point=False)
        .encode(
            x=time_x(time_title, ticks),
            y=alt.Y("outcome:Q", title=outcome_title, scale=alt.Scale(zero=False)),
            color=_color(group_title),
            detail="person:N",
            tooltip=["person:N", "time:Q", "outcome:Q", "group:N"],
        )
    )
    mean_lines = (
        alt.Chart(means.select("group", "time", "mean"))
        .mark_line(strokeWidth=3.5, point=alt.OverlayMarkDef(size=40, filled=True))
        .encode(
            x="time:Q",
            y="mean:Q",
            color=_color(group_title),
            tooltip=["group:N", "time:Q", "mean:Q"],
        )
    )
    return alt.layer(lines, mean_lines).properties(
        title=_title(
            "Individual trajectories",
            f"{shown:,}{of_total} persons (deterministic sample); thick lines: mean per group",
        ),
        width=WIDTH,
        height=HEIGHT,
        description=(
            f"Line chart of {outcome_title} against {time_title} for {shown:,}{of_total} "
            f"sampled persons, coloured by {group_title}, with the mean trajectory of each group."
        ),
    )


def observed_means_chart(
    table: pl.DataFrame,
    *,
    time_title: str,
    outcome_title: str,
    group_title: str,
    ticks: Sequence[float] | None = None,
) -> alt.LayerChart:
    """Observed mean per wave and group with bars of plus or minus one standard error."""
    require_columns(table, ["group", "time", "mean", "std_error"], chart="observed_means")
    time_title, outcome_title = title_text(time_title), title_text(outcome_title)
    group_title = title_text(group_title)
    data = table.select("group", "time", "mean", "std_error").with_columns(
        (pl.col("mean") - pl.col("std_error")).alias("low"),
        (pl.col("mean") + pl.col("std_error")).alias("high"),
    )
    base = alt.Chart(data).encode(x=time_x(time_title, ticks), color=_color(group_title))
    line = base.mark_line(point=alt.OverlayMarkDef(size=50, filled=True)).encode(
        y=alt.Y("mean:Q", title=outcome_title, scale=alt.Scale(zero=False)),
        tooltip=["group:N", "time:Q", "mean:Q", "std_error:Q"],
    )
    bars = base.mark_rule(strokeWidth=1.5).encode(y="low:Q", y2="high:Q")
    return alt.layer(bars, line).properties(
        title=_title("Observed means by wave", "Bars: ± 1 standard error"),
        width=WIDTH,
        height=HEIGHT,
        description=(
            f"Line chart of the observed mean {outcome_title} at each {time_title}, "
            f"per {group_title}, with error bars of one standard error."
        ),
    )


def group_trajectories_chart(
    table: pl.DataFrame,
    *,
    time_title: str,
    outcome_title: str,
    group_title: str,
    ticks: Sequence[float] | None = None,
) -> alt.LayerChart:
    """Model-implied mean trajectory per group with its 95% confidence band."""
    require_columns(
        table, ["group", "time", "estimate", "conf_low", "conf_high"], chart="group_trajectories"
    )
    time_title, outcome_title = title_text(time_title), title_text(outcome_title)
    group_title = title_text(group_title)
    data = table.select("group", "time", "estimate", "conf_low", "conf_high")
    return _trajectory_layers(
        data,
        time_title=time_title,
        outcome_title=outcome_title,
        color_title=group_title,
        ticks=ticks,
    ).properties(
        title=_title("Model-implied trajectories", "Bands: 95% confidence intervals"),
        width=WIDTH,
        height=HEIGHT,
        description=(
            f"Line chart of the model-implied mean {outcome_title} against {time_title} "
            f"per {group_title}, with shaded 95% confidence bands."
        ),
    )


def _trajectory_layers(
    data: pl.DataFrame,
    *,
    time_title: str,
    outcome_title: str,
    color_title: str,
    ticks: Sequence[float] | None,
    tooltip: Sequence[str] = ("group:N", "time:Q", "estimate:Q", "conf_low:Q", "conf_high:Q"),
    color_sort: Sequence[str] | None = None,
) -> alt.LayerChart:
    """A mean trajectory per ``group`` (line) with its confidence band (area); the legend in
    ``color_sort`` order when given, else sorted."""
    base = alt.Chart(data).encode(x=time_x(time_title, ticks))
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("conf_low:Q", title=outcome_title, scale=alt.Scale(zero=False)),
        y2="conf_high:Q",
        color=_color(color_title, color_sort),
    )
    line = base.mark_line(strokeWidth=2.5).encode(
        y="estimate:Q", color=_color(color_title, color_sort), tooltip=list(tooltip)
    )
    return alt.layer(band, line)


def predictor_trajectories_chart(
    table: pl.DataFrame,
    *,
    time_title: str,
    outcome_title: str,
    ticks: Sequence[float] | None = None,
) -> alt.LayerChart | alt.FacetChart:
    """Model-implied mean trajectories at chosen values of each continuous predictor
    (``group``: the value's label, the legend in the order of ``value``), one panel per
    predictor, with 95% confidence bands."""
    require_columns(
        table,
        ["predictor", "group", "value", "time", "estimate", "conf_low", "conf_high"],
        chart="predictor_trajectories",
    )
    time_title, outcome_title = title_text(time_title), title_text(outcome_title)
    data = table.select("predictor", "group", "time", "estimate", "conf_low", "conf_high")
    predictors = data["predictor"].unique(maintain_order=True).to_list()
    order = (
        table.select("predictor", "value", "group")
        .unique(maintain_order=True)
        .sort("predictor", "value", maintain_order=True)["group"]
        .unique(maintain_order=True)
        .to_list()
    )
    layers = _trajectory_layers(
        data,
        time_title=time_title,
        outcome_title=outcome_title,
        color_title=predictors[0] if len(predictors) == 1 else "Value",
        ticks=ticks,
        tooltip=("predictor:N", "group:N", "time:Q", "estimate:Q", "conf_low:Q", "conf_high:Q"),
        color_sort=order,
    )
    title = _title(
        "Model-implied trajectories by predictor",
        "Other predictors held fixed; bands: pointwise 95% confidence intervals",
    )
    description = (
        f"Line chart of the model-implied mean {outcome_title} against {time_title} at "
        f"chosen values of {', '.join(title_text(p) for p in predictors)}, with shaded 95% "
        "confidence bands."
    )
    if len(predictors) == 1:
        return layers.properties(title=title, width=WIDTH, height=HEIGHT, description=description)
    return (
        layers.properties(width=FACET_WIDTH, height=FACET_HEIGHT)
        .facet(facet=alt.Facet("predictor:N", title=None, sort=predictors), columns=3)
        .resolve_scale(color="independent")
        .properties(title=title, description=description)
    )


def qq_reference(table: pl.DataFrame, *, value: str, group: str | None = None) -> pl.DataFrame:
    """Add ``reference``: the line through the first and third quartiles (R's qqline)."""
    keys = [group] if group else []
    q25, q75 = pl.col(value).quantile(0.25), pl.col(value).quantile(0.75)
    z25, z75 = pl.col("qq_theoretical").quantile(0.25), pl.col("qq_theoretical").quantile(0.75)
    slope = (q75 - q25) / (z75 - z25)
    lines = (
        table.group_by(keys, maintain_order=True).agg(
            slope.alias("_slope"), (q25 - slope * z25).alias("_intercept")
        )
        if keys
        else table.select(slope.alias("_slope"), (q25 - slope * z25).alias("_intercept"))
    )
    joined = (
        table.join(lines, on=keys, how="left")
        if keys
        else table.with_columns(
            pl.lit(lines["_slope"][0]).alias("_slope"),
            pl.lit(lines["_intercept"][0]).alias("_intercept"),
        )
    )
    return joined.with_columns(
        (pl.col("_intercept") + pl.col("_slope") * pl.col("qq_theoretical")).alias("reference")
    ).drop("_slope", "_intercept")


def residual_qq_chart(table: pl.DataFrame, *, outcome_unit: str, shown_note: str) -> alt.LayerChart:
    """Normal QQ plot of the level-1 residuals with the quartile reference line."""
    require_columns(table, ["residual", "qq_theoretical"], chart="residual_qq")
    data = qq_reference(table.select("qq_theoretical", "residual"), value="residual")
    base = alt.Chart(data).encode(x=alt.X("qq_theoretical:Q", title="Normal quantile (z)"))
    points = base.mark_circle(size=18, opacity=0.6).encode(
        y=alt.Y("residual:Q", title=axis_title("Residual", outcome_unit)),
        tooltip=["qq_theoretical:Q", "residual:Q"],
    )
    line = base.mark_line(color="#b2182b", strokeDash=[5, 3]).encode(y="reference:Q")
    return alt.layer(points, line).properties(
        title=_title("Residual normal QQ plot", shown_note),
        width=FACET_WIDTH + 60,
        height=FACET_HEIGHT,
        description=(
            "Normal quantile-quantile plot of the level-1 residuals; points near the dashed "
            "line mean the residuals look normal."
        ),
    )


def residuals_fitted_chart(
    points: pl.DataFrame, binned: pl.DataFrame, *, outcome_unit: str, shown_note: str
) -> alt.LayerChart:
    """Residuals against fitted values; the line is the mean residual in bins of all rows."""
    require_columns(points, ["fitted", "residual"], chart="residuals_vs_fitted")
    require_columns(binned, ["fitted", "mean_residual"], chart="residuals_vs_fitted")
    x = alt.X(
        "fitted:Q", title=axis_title("Fitted value", outcome_unit), scale=alt.Scale(zero=False)
    )
    dots = (
        alt.Chart(points.select("fitted", "residual"))
        .mark_circle(size=14, opacity=0.4)
        .encode(
            x=x,
            y=alt.Y("residual:Q", title=axis_title("Residual", outcome_unit)),
            tooltip=["fitted:Q", "residual:Q"],
        )
    )
    zero = alt.Chart(pl.DataFrame({"zero": [0.0]})).mark_rule(color="#555555").encode(y="zero:Q")
    trend = (
        alt.Chart(binned.select("fitted", "mean_residual"))
        .mark_line(color="#b2182b", strokeWidth=2)
        .encode(x="fitted:Q", y="mean_residual:Q")
    )
    return alt.layer(dots, zero, trend).properties(
        title=_title("Residuals versus fitted values", shown_note),
        width=FACET_WIDTH + 60,
        height=FACET_HEIGHT,
        description=(
            "Scatter plot of level-1 residuals against fitted values with a line of the mean "
            "residual per bin of fitted values; a flat line near zero means no pattern."
        ),
    )


def random_effects_qq_chart(table: pl.DataFrame, *, shown_note: str) -> alt.FacetChart:
    """Normal QQ plot of the persons' random effects (BLUPs), one panel per term."""
    require_columns(table, ["term", "estimate", "qq_theoretical"], chart="random_effects_qq")
    data = qq_reference(
        table.select("term", "qq_theoretical", "estimate"), value="estimate", group="term"
    )
    base = alt.Chart().encode(x=alt.X("qq_theoretical:Q", title="Normal quantile (z)"))
    points = base.mark_circle(size=18, opacity=0.6).encode(
        y=alt.Y("estimate:Q", title="Random effect (BLUP)"),
        tooltip=["term:N", "qq_theoretical:Q", "estimate:Q"],
    )
    line = base.mark_line(color="#b2182b", strokeDash=[5, 3]).encode(y="reference:Q")
    return (
        alt.layer(points, line, data=data)
        .properties(width=FACET_WIDTH, height=FACET_HEIGHT)
        .facet(column=alt.Column("term:N", title="Random-effect term", sort="ascending"))
        .resolve_scale(y="independent")
        .properties(
            title=_title("Random effects normal QQ plot", shown_note),
            description=(
                "Normal quantile-quantile plots of the person-level random effects, one panel "
                "per term; points near the dashed line mean the random effects look normal."
            ),
        )
    )


def _ranked_effects_chart(
    data: pl.DataFrame, *, unit: str, units: str, title: str, note: str, description: str
) -> alt.FacetChart:
    """Ranked random effects (``rank``, ``estimate``, ``conf_low``, ``conf_high`` per ``term``)
    with their 95% intervals, one panel per term; ``unit`` names the id column."""
    base = alt.Chart().encode(
        y=alt.Y(
            "rank:Q", title=f"{units}, ranked by estimate", axis=alt.Axis(labels=False, ticks=False)
        )
    )
    intervals = base.mark_rule(opacity=0.6).encode(
        x=alt.X("conf_low:Q", title="Random effect (BLUP) with 95% interval"), x2="conf_high:Q"
    )
    points = base.mark_circle(size=16, color="#08306b").encode(
        x="estimate:Q", tooltip=[f"{unit}:N", "term:N", "estimate:Q", "conf_low:Q", "conf_high:Q"]
    )
    zero = alt.Chart().mark_rule(color="#b2182b", strokeDash=[4, 3]).encode(x=alt.datum(0))
    return (
        alt.layer(intervals, points, zero, data=data)
        .properties(width=FACET_WIDTH, height=FACET_HEIGHT + 60)
        .facet(column=alt.Column("term:N", title="Random-effect term", sort="ascending"))
        .resolve_scale(x="independent")
        .properties(title=_title(title, note), description=description)
    )


def caterpillar_chart(table: pl.DataFrame, *, shown_note: str) -> alt.FacetChart:
    """Each person's random effect with its 95% interval, ranked, one panel per term."""
    require_columns(
        table, ["person", "term", "estimate", "conf_low", "conf_high"], chart="caterpillar"
    )
    data = (
        table.select(pl.col("person").cast(pl.String), "term", "estimate", "conf_low", "conf_high")
        .sort("term", "estimate", "person")
        .with_columns(pl.int_range(1, pl.len() + 1).over("term").alias("rank"))
    )
    return _ranked_effects_chart(
        data,
        unit="person",
        units="Persons",
        title="Caterpillar plot of random effects",
        note=shown_note,
        description=(
            "Caterpillar plot: each person's estimated random effect with a 95% interval, "
            "sorted from lowest to highest, one panel per random-effect term."
        ),
    )


def implied_means_chart(
    table: pl.DataFrame,
    *,
    time_title: str,
    outcome_title: str,
    ticks: Sequence[float] | None = None,
) -> alt.LayerChart:
    """Observed means per occasion (points, bars of plus or minus one standard error) and
    each model's implied means (lines) on one panel.

    ``table``: ``series`` ("observed" or a model name), ``time``, ``mean``, ``low``, ``high``
    (low/high null for the model-implied rows).
    """
    require_columns(table, ["series", "time", "mean", "low", "high"], chart="implied_means")
    time_title, outcome_title = title_text(time_title), title_text(outcome_title)
    data = table.select("series", "time", "mean", "low", "high")
    color = alt.Color("series:N", title="Series", sort=None)
    x = time_x(time_title, ticks)
    y = alt.Y("mean:Q", title=outcome_title, scale=alt.Scale(zero=False))
    observed = alt.Chart(data).transform_filter(alt.datum.series == "observed")
    implied = alt.Chart(data).transform_filter(alt.datum.series != "observed")
    bars = observed.mark_rule(strokeWidth=1.5).encode(x=x, y="low:Q", y2="high:Q", color=color)
    points = observed.mark_point(size=60, filled=True).encode(
        x=x, y=y, color=color, tooltip=["series:N", "time:Q", "mean:Q"]
    )
    lines = implied.mark_line(point=True).encode(
        x=x, y=y, color=color, tooltip=["series:N", "time:Q", "mean:Q"]
    )
    return alt.layer(bars, lines, points).properties(
        title=_title("Observed and model-implied means", "Bars: ± 1 standard error"),
        width=WIDTH,
        height=HEIGHT,
        description=(
            f"Observed mean {outcome_title} at each {time_title} (points with error bars of one "
            "standard error) and the means the models imply for the same rows (lines)."
        ),
    )


def correlation_heatmaps_chart(table: pl.DataFrame, *, structure: str) -> alt.FacetChart:
    """The chosen error structure's implied correlation across occasions beside the observed one."""
    require_columns(
        table, ["source", "occasion_row", "occasion_col", "correlation"], chart="correlation"
    )
    order = list(dict.fromkeys(table["occasion_row"].to_list()))
    data = table.select(
        pl.col("source").replace_strict(
            {
                "implied": f"implied by {chart_text(structure)}",
                "observed": "observed (OLS residuals)",
            }
        ),
        "occasion_row",
        "occasion_col",
        "correlation",
        pl.col("correlation").round(2).alias("label"),
    )
    base = alt.Chart().encode(
        x=alt.X("occasion_col:O", title="Occasion", sort=order),
        y=alt.Y("occasion_row:O", title="Occasion", sort=order),
    )
    cells = base.mark_rect().encode(
        color=alt.Color(
            "correlation:Q",
            title="Correlation",
            scale=alt.Scale(domain=[-1, 1], scheme="redblue", reverse=True),
        ),
        tooltip=["occasion_row:O", "occasion_col:O", "correlation:Q"],
    )
    text = base.mark_text(fontSize=10).encode(text=alt.Text("label:Q", format=".2f"))
    return (
        alt.layer(cells, text, data=data)
        .properties(width=FACET_WIDTH, height=FACET_WIDTH)
        .facet(column=alt.Column("source:N", title=None))
        .properties(
            title=_title("Correlation of the residuals across occasions"),
            description=(
                "Two heat maps of the correlation between occasions: the one implied by the "
                "chosen level-1 error structure and the one observed in the residuals of the "
                "fixed part, so that what the structure gets wrong can be seen."
            ),
        )
    )


def variance_partition_chart(table: pl.DataFrame) -> alt.Chart:
    """The share of the outcome's variance at each level (unconditional means model)."""
    require_columns(table, ["level", "share", "conf_low", "conf_high"], chart="variance partition")
    data = table.select(
        pl.col("level").map_elements(chart_text, return_dtype=pl.String),
        "share",
        "conf_low",
        "conf_high",
    )
    order = data["level"].to_list()
    base = alt.Chart().encode(y=alt.Y("level:N", title="Level", sort=order))
    bars = base.mark_bar(color="#4292c6").encode(
        x=alt.X("share:Q", title="Share of the variance", scale=alt.Scale(domain=[0, 1]))
    )
    rules = base.mark_rule(color="#08306b").encode(x="conf_low:Q", x2="conf_high:Q")
    return alt.layer(bars, rules, data=data).properties(
        width=FACET_WIDTH * 2,
        height=40 * max(len(order), 1),
        title=_title("Variance partition"),
        description=(
            "Bar chart of the share of the outcome's variance that lies at each level "
            "(occasions within persons, persons within clusters, clusters), with 95% intervals."
        ),
    )


def cluster_caterpillar_chart(table: pl.DataFrame) -> alt.FacetChart:
    """Each cluster's random effect with its 95% interval, ranked, one panel per term."""
    require_columns(
        table, ["cluster", "term", "estimate", "conf_low", "conf_high", "rank"], chart="clusters"
    )
    data = table.select(
        pl.col("cluster").cast(pl.String), "term", "estimate", "conf_low", "conf_high", "rank"
    )
    return _ranked_effects_chart(
        data,
        unit="cluster",
        units="Clusters",
        title="Cluster intercepts and slopes",
        note="",
        description=(
            "Caterpillar plot: each cluster's estimated random effect with a 95% interval, "
            "sorted from lowest to highest, one panel per random-effect term."
        ),
    )


def cluster_trajectories_chart(
    table: pl.DataFrame, *, time_title: str, outcome_title: str
) -> alt.LayerChart:
    """Observed (points) and model-implied (lines) mean trajectories of a sample of clusters."""
    require_columns(
        table, ["cluster", "time", "observed_mean", "fitted_mean"], chart="cluster trajectories"
    )
    data = table.select(
        pl.col("cluster").cast(pl.String), "time", "observed_mean", "fitted_mean"
    ).sort("cluster", "time")
    color = alt.Color("cluster:N", title="Cluster", legend=None)
    lines = (
        alt.Chart()
        .mark_line(opacity=0.7)
        .encode(
            x=alt.X("time:Q", title=time_title),
            y=alt.Y("fitted_mean:Q", title=outcome_title),
            color=color,
        )
    )
    points = (
        alt.Chart()
        .mark_circle(size=18, opacity=0.6)
        .encode(
            x="time:Q",
            y="observed_mean:Q",
            color=color,
            tooltip=["cluster:N", "time:Q", "observed_mean:Q", "fitted_mean:Q"],
        )
    )
    return alt.layer(lines, points, data=data).properties(
        width=FACET_WIDTH * 2,
        height=FACET_HEIGHT + 80,
        title=_title(
            "Trajectories of a sample of clusters", "lines: model-implied; points: observed means"
        ),
        description=(
            "Line chart of the model-implied mean trajectory of each cluster in a deterministic "
            "sample, with the observed cluster means at each occasion as points."
        ),
    )


def outcome_comparison_chart(table: pl.DataFrame) -> alt.FacetChart:
    """The same fixed effect on each outcome: estimate and 95% interval, one panel per term.

    ``table``: ``outcome`` (the outcome's title), ``term``, ``estimate``, ``conf_low``,
    ``conf_high``. Each panel has its own scale, since the outcomes' units may differ.
    """
    require_columns(
        table, ["outcome", "term", "estimate", "conf_low", "conf_high"], chart="outcome comparison"
    )
    data = table.select(
        pl.col("outcome").cast(pl.String),
        pl.col("term").cast(pl.String),
        "estimate",
        "conf_low",
        "conf_high",
    )
    outcomes = data.get_column("outcome").unique(maintain_order=True).to_list()
    base = alt.Chart().encode(y=alt.Y("outcome:N", title=None, sort=outcomes))
    intervals = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("conf_low:Q", title="Estimate with 95% CI", scale=alt.Scale(zero=False)),
        x2="conf_high:Q",
    )
    points = base.mark_circle(size=60, color="#08306b").encode(
        x="estimate:Q", tooltip=["outcome:N", "term:N", "estimate:Q", "conf_low:Q", "conf_high:Q"]
    )
    zero = alt.Chart().mark_rule(color="#b2182b", strokeDash=[4, 3]).encode(x=alt.datum(0))
    terms = data.get_column("term").unique(maintain_order=True).to_list()
    return (
        alt.layer(intervals, points, zero, data=data)
        .properties(width=FACET_WIDTH + 60, height=28 * len(outcomes) + 20)
        .facet(facet=alt.Facet("term:N", title=None, sort=terms), columns=2)
        .resolve_scale(x="independent")
        .properties(
            title=_title("The same fixed effects on each outcome"),
            description=(
                "For each fixed effect, its estimate on each outcome with a 95% confidence "
                "interval; a dashed line marks zero; each panel has its own scale."
            ),
        )
    )
