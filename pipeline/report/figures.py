"""The report's figures: bounded chart data, the chart, and its text alternative.

:func:`build_figures` turns a :class:`ReportContext` into :class:`Figure` s.
Large tables are cut down first, deterministically, so that no chart holds more
than :data:`MAX_CHART_ROWS` rows (Altair refuses more than 5,000) and the report
stays small at any number of persons:

- spaghetti plot: at most :data:`SPAGHETTI_MAX_PERSONS` persons (seeded sample);
- QQ plots: evenly spaced order statistics (tails kept exactly);
- residuals versus fitted: a seeded sample of points, and a trend line of the
  mean residual in bins computed from *all* rows;
- caterpillar plot: a seeded sample of persons when there are many.

Each figure carries a summary table of what it shows, for the ``<details>``
text alternative in the report.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import altair as alt
import polars as pl

from . import charts
from .context import ReportContext, sample_persons, sample_rows, thin_quantiles
from .formatting import is_available

MAX_CHART_ROWS = 4_000
MAX_TICKS = 12
SPAGHETTI_MAX_PERSONS = 300
QQ_MAX_POINTS = 1_000
SCATTER_MAX_POINTS = 2_000
CATERPILLAR_MAX_PERSONS = 80
RESIDUAL_BINS = 20
DEFAULT_SEED = 20240101


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    """One chart of the report, or the reason it is not available.

    ``section`` names the report section it belongs to; ``description`` is the
    text alternative (``aria-label`` and caption); ``summary`` is a small table
    of the data shown.
    """

    key: str
    section: str
    title: str
    chart: alt.TopLevelMixin | None
    description: str
    summary: pl.DataFrame | None = None
    note: str = ""
    spec: Mapping[str, Any] | None = None
    outcome: str | None = None  # in a run of several outcomes: the outcome it shows

    @property
    def available(self) -> bool:
        return self.chart is not None


def outcome_stem(name: str, index: int) -> str:
    """The file-name stem of an outcome's charts: the column name when it is plain
    (lower-case letters and digits), else ``outcome<index>`` (1-based)."""
    return name if re.fullmatch(r"[a-z0-9]{1,40}", name) else f"outcome{index}"


def _unavailable(key: str, section: str, title: str, reason: str) -> Figure:
    return Figure(key=key, section=section, title=title, chart=None, description=reason)


def _figure(
    key: str,
    section: str,
    title: str,
    chart: alt.TopLevelMixin,
    summary: pl.DataFrame | None,
    note: str = "",
) -> Figure:
    description = getattr(chart, "description", None)
    description = description if isinstance(description, str) else title
    return Figure(
        key=key,
        section=section,
        title=title,
        chart=chart,
        description=description,
        summary=summary,
        note=note,
        spec=charts.chart_spec(chart),
    )


def _too_many(table: pl.DataFrame) -> bool:
    return table.height > MAX_CHART_ROWS


def _titles(ctx: ReportContext) -> tuple[str, str, str]:
    return (
        charts.axis_title(ctx.time_label, ctx.time_unit),
        charts.axis_title(ctx.outcome_label, ctx.outcome_unit),
        ctx.group_name or "Group",
    )


def _seed(ctx: ReportContext) -> int:
    return DEFAULT_SEED if ctx.sample_seed is None else ctx.sample_seed


def occasions_figure(ctx: ReportContext) -> Figure:
    key, section, title = "occasions_per_person", "data", "Occasions per person"
    table = ctx.occasions_per_person
    if not is_available(table) or not {"n_occasions", "persons"} <= set(table.columns):
        return _unavailable(key, section, title, "Occasions per person are not available.")
    table = table.sort("n_occasions")
    if table.height == 1:
        count = table["n_occasions"][0]
        return _unavailable(
            key,
            section,
            title,
            f"Every person has {count:,} occasion{'' if count == 1 else 's'}, so there is no "
            "distribution to draw.",
        )
    if _too_many(table):
        return _unavailable(key, section, title, "Too many distinct occasion counts to draw.")
    return _figure(key, section, title, charts.occasions_chart(table), table)


@dataclass(frozen=True, slots=True)
class Design:
    """When persons enter and leave, from the missingness patterns.

    ``same_entry``: every person's first observation is at the first time;
    ``left``: persons whose last observation is before the last time (only
    meaningful with ``same_entry``: in a cohort-sequential design persons enter
    and leave at different times by design); ``balanced``: every person is
    observed at every time.
    """

    persons: int
    times: int
    same_entry: bool
    left: int
    balanced: bool


def study_design(ctx: ReportContext) -> Design | None:
    """The :class:`Design` from ``ctx.patterns`` (``None`` when there are no patterns)."""
    patterns = ctx.patterns
    if not is_available(patterns) or not {"pattern", "persons"} <= set(patterns.columns):
        return None
    persons = same_entry = left = full = 0
    times = 0
    for pattern, count in patterns.select("pattern", "persons").iter_rows():
        marks = str(pattern).split()
        times = max(times, len(marks))
        observed = [i for i, mark in enumerate(marks) if mark == "X"]
        persons += count
        if observed and observed[0] == 0:
            same_entry += count
        if observed and observed[-1] < len(marks) - 1:
            left += count
        if observed and len(observed) == len(marks):
            full += count
    return Design(
        persons=persons,
        times=times,
        same_entry=persons > 0 and same_entry == persons,
        left=left,
        balanced=persons > 0 and full == persons,
    )


def relabel_groups(ctx: ReportContext, table: pl.DataFrame) -> pl.DataFrame:
    """``group`` values replaced by their ``[data.labels]`` labels (others kept)."""
    labels = ctx.labels.get(ctx.group_name or "", {})
    if not labels or "group" not in table.columns:
        return table
    return table.with_columns(pl.col("group").cast(pl.String).replace(dict(labels)))


def time_ticks(ctx: ReportContext) -> tuple[float, ...] | None:
    """The observed occasions (original units) as axis ticks, when there are few of them."""
    table = ctx.attrition
    if not is_available(table) or "time" not in table.columns:
        return None
    times = tuple(float(t) for t in table["time"].drop_nulls().unique().sort().to_list())
    return times if 0 < len(times) <= MAX_TICKS else None


def attrition_figure(ctx: ReportContext) -> Figure:
    key, section, title = "observations_by_time", "data", "Observations by time"
    table = ctx.attrition
    if not is_available(table) or not {"time", "persons"} <= set(table.columns):
        return _unavailable(key, section, title, "Observations by time are not available.")
    table = table.sort("time")
    if table["persons"].n_unique() == 1:
        return _unavailable(
            key,
            section,
            title,
            f"The same number of persons ({table['persons'][0]:,}) is observed at every time, "
            "so there is no change to draw.",
        )
    if _too_many(table):
        return _unavailable(key, section, title, "Too many distinct times to draw.")
    time_title, _, _ = _titles(ctx)
    design = study_design(ctx)
    dropout = design is not None and design.same_entry
    chart = charts.attrition_chart(
        table, time_title=time_title, ticks=time_ticks(ctx), attrition=dropout
    )
    return _figure(key, section, title, chart, table)


def spaghetti_data(
    sample: pl.DataFrame, means: pl.DataFrame | None, *, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The bounded line data and the mean per group and time for the spaghetti plot.

    The sample is cut to :data:`SPAGHETTI_MAX_PERSONS` persons, and further
    while it has more than :data:`MAX_CHART_ROWS` rows. Means come from the
    ``observed_means`` table when given (all persons), else from the sample.
    """
    lines = charts.with_group_label(
        sample.select(
            "person", "time", "outcome", *(["group"] if "group" in sample.columns else [])
        )
    ).drop_nulls(["time", "outcome"])
    persons = lines["person"].n_unique()
    limit = SPAGHETTI_MAX_PERSONS
    while persons > limit or lines.height > MAX_CHART_ROWS:
        per_person = max(1.0, lines.height / max(persons, 1))
        limit = min(limit, persons - 1, int(MAX_CHART_ROWS / per_person))
        lines = sample_persons(lines, person_col="person", n=limit, seed=seed)
        persons = lines["person"].n_unique()
    lines = lines.with_columns(pl.col("person").cast(pl.String)).sort("group", "person", "time")
    if means is not None and is_available(means) and {"time", "mean"} <= set(means.columns):
        mean_table = charts.with_group_label(means).select("group", "time", "mean")
    else:
        mean_table = lines.group_by("group", "time").agg(pl.col("outcome").mean().alias("mean"))
    return lines, mean_table.sort("group", "time")


def spaghetti_figure(ctx: ReportContext) -> Figure:
    key, section, title = "spaghetti", "trajectories", "Individual trajectories"
    sample = ctx.level1_sample
    required = {"person", "time", "outcome"}
    if not is_available(sample) or not required <= set(sample.columns):
        return _unavailable(key, section, title, "No level-1 data for individual trajectories.")
    lines, means = spaghetti_data(sample, ctx.table("observed_means"), seed=_seed(ctx))
    lines, means = relabel_groups(ctx, lines), relabel_groups(ctx, means)
    if lines.height == 0:
        return _unavailable(key, section, title, "No observed outcomes to draw.")
    if _too_many(means):
        means = lines.group_by("group", "time").agg(pl.col("outcome").mean().alias("mean"))
        means = means.sort("group", "time")
    time_title, outcome_title, group_title = _titles(ctx)
    chart = charts.spaghetti_chart(
        lines,
        means,
        time_title=time_title,
        outcome_title=outcome_title,
        group_title=group_title,
        persons_total=ctx.persons,
        ticks=time_ticks(ctx),
    )
    summary = (
        lines.group_by("group")
        .agg(
            pl.col("person").n_unique().alias("persons"),
            pl.len().alias("observations"),
            pl.col("time").min().alias("first_time"),
            pl.col("time").max().alias("last_time"),
            pl.col("outcome").mean().alias("mean_outcome"),
            pl.col("outcome").min().alias("min_outcome"),
            pl.col("outcome").max().alias("max_outcome"),
        )
        .sort("group")
    )
    seed_note = f"Persons drawn with seed {_seed(ctx)}" if ctx.sample_seed is not None else ""
    return _figure(key, section, title, chart, summary, seed_note)


def observed_means_figure(ctx: ReportContext) -> Figure:
    key, section, title = "observed_means", "trajectories", "Observed means by wave"
    table = ctx.table("observed_means")
    if not is_available(table) or not {"time", "mean", "std_error"} <= set(table.columns):
        return _unavailable(key, section, title, "Observed means are not available.")
    table = relabel_groups(ctx, charts.with_group_label(table).sort("group", "time"))
    if _too_many(table):
        return _unavailable(key, section, title, "Too many group-time cells to draw.")
    time_title, outcome_title, group_title = _titles(ctx)
    chart = charts.observed_means_chart(
        table,
        time_title=time_title,
        outcome_title=outcome_title,
        group_title=group_title,
        ticks=time_ticks(ctx),
    )
    columns = [c for c in ("group", "time", "mean", "std_error", "n") if c in table.columns]
    return _figure(key, section, title, chart, table.select(columns))


def implied_means_figure(ctx: ReportContext) -> Figure:
    key, section, title = "implied_means", "uncertainty", "Observed and model-implied means"
    table = ctx.table("implied_means")
    needed = {"model", "occasion", "observed_mean", "observed_std_error", "model_mean"}
    if not is_available(table) or not needed <= set(table.columns):
        return _unavailable(key, section, title, "Model-implied means are not available.")
    models = table["model"].unique(maintain_order=True).to_list()
    observed = table.filter(pl.col("model") == models[-1]).sort("occasion")
    se = pl.col("observed_std_error").fill_null(0.0)
    data = pl.concat(
        [
            observed.select(
                pl.lit("observed").alias("series"),
                pl.col("occasion").alias("time"),
                pl.col("observed_mean").alias("mean"),
                (pl.col("observed_mean") - se).alias("low"),
                (pl.col("observed_mean") + se).alias("high"),
            ),
            table.sort("occasion").select(
                pl.col("model").alias("series"),
                pl.col("occasion").alias("time"),
                pl.col("model_mean").alias("mean"),
                pl.lit(None, dtype=pl.Float64).alias("low"),
                pl.lit(None, dtype=pl.Float64).alias("high"),
            ),
        ]
    )
    if _too_many(data):
        return _unavailable(key, section, title, "Too many occasions to draw.")
    time_title, outcome_title, _ = _titles(ctx)
    chart = charts.implied_means_chart(
        data, time_title=time_title, outcome_title=outcome_title, ticks=time_ticks(ctx)
    )
    spread = table.group_by("occasion").agg(
        (pl.col("model_mean").max() - pl.col("model_mean").min()).alias("spread")
    )
    scale = max(1.0, float(table["model_mean"].abs().max() or 0.0))
    note = (
        "The models' implied means coincide here, so their lines overlap"
        if len(models) > 1 and float(spread["spread"].max() or 0.0) <= 1e-6 * scale
        else ""
    )
    return _figure(key, section, title, chart, table, note)


def group_trajectories_figure(ctx: ReportContext) -> Figure:
    key, section, title = "group_trajectories", "groups", "Model-implied trajectories"
    table = ctx.table("group_trajectories")
    required = {"time", "estimate", "conf_low", "conf_high"}
    if not is_available(table) or not required <= set(table.columns):
        return _unavailable(key, section, title, "Model-implied trajectories are not available.")
    table = charts.with_group_label(table, fallback="All").sort("group", "time")
    table = relabel_groups(ctx, table)
    if _too_many(table):
        return _unavailable(key, section, title, "Too many grid points to draw.")
    time_title, outcome_title, group_title = _titles(ctx)
    chart = charts.group_trajectories_chart(
        table,
        time_title=time_title,
        outcome_title=outcome_title,
        group_title=group_title,
        ticks=time_ticks(ctx),
    )
    first_last = pl.concat(
        [
            table.group_by("group", maintain_order=True).first(),
            table.group_by("group", maintain_order=True).last(),
        ]
    ).sort("group", "time")
    summary = first_last.select(
        [c for c in ("group", "time", "estimate", "conf_low", "conf_high") if c in table.columns]
    )
    return _figure(key, section, title, chart, summary, "Summary: first and last time of the grid")


def _distribution(table: pl.DataFrame, value: str, by: str | None = None) -> pl.DataFrame:
    aggs = [
        pl.len().alias("n"),
        pl.col(value).mean().alias("mean"),
        pl.col(value).std().alias("sd"),
        pl.col(value).min().alias("min"),
        pl.col(value).quantile(0.25).alias("q25"),
        pl.col(value).median().alias("median"),
        pl.col(value).quantile(0.75).alias("q75"),
        pl.col(value).max().alias("max"),
    ]
    if by:
        return table.group_by(by).agg(aggs).sort(by)
    return table.select(aggs)


def _shown(shown: int, total: int, what: str) -> str:
    return f"All {total:,} {what}" if shown >= total else f"{shown:,} of {total:,} {what} shown"


def residual_qq_figure(ctx: ReportContext) -> Figure:
    key, section, title = "residual_qq", "diagnostics", "Residual normal QQ plot"
    table = ctx.table("residuals")
    if not is_available(table) or not {"residual", "qq_theoretical"} <= set(table.columns):
        return _unavailable(key, section, title, "Residuals are not available.")
    table = table.drop_nulls(["residual", "qq_theoretical"])
    if table.height == 0:
        return _unavailable(key, section, title, "No finite values to draw.")
    thinned = thin_quantiles(table, by="qq_theoretical", max_rows=QQ_MAX_POINTS)
    note = _shown(thinned.height, table.height, "residuals")
    note = note if thinned.height >= table.height else f"{note} (evenly spaced quantiles)"
    chart = charts.residual_qq_chart(thinned, outcome_unit=ctx.outcome_unit, shown_note=note)
    return _figure(key, section, title, chart, _distribution(table, "residual"), note)


def residual_bins(table: pl.DataFrame, *, bins: int = RESIDUAL_BINS) -> pl.DataFrame:
    """Mean fitted value and mean residual in ``bins`` equal-count bins of the fitted values."""
    ordered = table.select("fitted", "residual").drop_nulls().sort("fitted", "residual")
    n = ordered.height
    return (
        ordered.with_columns((pl.int_range(pl.len()) * bins // max(n, 1)).alias("bin"))
        .group_by("bin")
        .agg(
            pl.col("fitted").mean(),
            pl.col("residual").mean().alias("mean_residual"),
            pl.len().alias("n"),
        )
        .sort("bin")
        .drop("bin")
    )


def residuals_fitted_figure(ctx: ReportContext) -> Figure:
    key, section, title = "residuals_vs_fitted", "diagnostics", "Residuals versus fitted values"
    table = ctx.table("residuals")
    if not is_available(table) or not {"fitted", "residual"} <= set(table.columns):
        return _unavailable(key, section, title, "Residuals are not available.")
    table = table.select("fitted", "residual").drop_nulls()
    if table.height == 0:
        return _unavailable(key, section, title, "No finite values to draw.")
    points = sample_rows(table, n=SCATTER_MAX_POINTS, seed=_seed(ctx))
    binned = residual_bins(table)
    note = _shown(points.height, table.height, "points")
    if points.height < table.height:
        note += " (seeded sample); line: mean residual by bin of all points"
    chart = charts.residuals_fitted_chart(
        points, binned, outcome_unit=ctx.outcome_unit, shown_note=note
    )
    return _figure(key, section, title, chart, binned, note)


def random_effects_qq_figure(ctx: ReportContext) -> Figure:
    key, section, title = "random_effects_qq", "diagnostics", "Random effects normal QQ plot"
    table = ctx.table("random_effects")
    required = {"term", "estimate", "qq_theoretical"}
    if not is_available(table) or not required <= set(table.columns):
        return _unavailable(key, section, title, "Random effects are not available.")
    table = table.drop_nulls(["estimate", "qq_theoretical"])
    if table.height == 0:
        return _unavailable(key, section, title, "No finite values to draw.")
    terms = max(table["term"].n_unique(), 1)
    per_term = max(2, min(QQ_MAX_POINTS, MAX_CHART_ROWS // terms))
    thinned = thin_quantiles(table, by="qq_theoretical", max_rows=per_term, group="term")
    persons = table.height // terms
    note = _shown(thinned.height // terms, persons, "persons per term")
    chart = charts.random_effects_qq_chart(thinned, shown_note=note)
    return _figure(key, section, title, chart, _distribution(table, "estimate", "term"), note)


def caterpillar_figure(ctx: ReportContext) -> Figure:
    key, section, title = "caterpillar", "diagnostics", "Caterpillar plot of random effects"
    table = ctx.table("random_effects")
    required = {"person", "term", "estimate", "conf_low", "conf_high"}
    if not is_available(table) or not required <= set(table.columns):
        return _unavailable(key, section, title, "Random effects are not available.")
    persons = table["person"].n_unique()
    terms = max(table["term"].n_unique(), 1)
    limit = min(CATERPILLAR_MAX_PERSONS, MAX_CHART_ROWS // terms)
    shown = sample_persons(table, person_col="person", n=limit, seed=_seed(ctx))
    note = _shown(shown["person"].n_unique(), persons, "persons")
    if shown["person"].n_unique() < persons:
        note += " (seeded sample)"
    chart = charts.caterpillar_chart(shown, shown_note=note)
    summary = (
        table.group_by("term")
        .agg(
            pl.len().alias("persons"),
            pl.col("estimate").std().alias("sd_of_estimates"),
            ((pl.col("conf_low") > 0) | (pl.col("conf_high") < 0))
            .mean()
            .alias("share_interval_excludes_zero"),
        )
        .sort("term")
        .rename({"share_interval_excludes_zero": "share"})
    )
    return _figure(key, section, title, chart, summary, note)


def error_structure_figure(ctx: ReportContext) -> Figure:
    key, section, title = "error_structure", "structures", "Implied and observed correlations"
    table = ctx.table("error_structure_covariance")
    if not is_available(table):
        return _unavailable(
            key, section, title, "No level-1 error structures were compared ([models] residual)."
        )
    structure = str(table["structure"][0]) if table.height else ""
    chart = charts.correlation_heatmaps_chart(table, structure=structure)
    summary = table.filter(pl.col("occasion_row") <= pl.col("occasion_col")).select(
        "source", "occasion_row", "occasion_col", "covariance", "correlation"
    )
    return _figure(key, section, title, chart, summary)


def variance_partition_figure(ctx: ReportContext) -> Figure:
    key, section, title = "variance_partition", "clusters", "Variance partition"
    table = ctx.table("cluster_variance_partition")
    if not is_available(table):
        return _unavailable(key, section, title, "The study has no clusters ([data] clusters).")
    means = table.filter(pl.col("model") == table["model"][0])
    chart = charts.variance_partition_chart(means)
    return _figure(key, section, title, chart, means.select("level", "variance", "share"))


def cluster_caterpillar_figure(ctx: ReportContext) -> Figure:
    key, section, title = "cluster_caterpillar", "clusters", "Cluster intercepts and slopes"
    table = ctx.table("cluster_caterpillar")
    if not is_available(table):
        return _unavailable(key, section, title, "The study has no clusters ([data] clusters).")
    if _too_many(table):
        return _unavailable(key, section, title, "Too many clusters to draw.")
    chart = charts.cluster_caterpillar_chart(table)
    summary = table.group_by("term", maintain_order=True).agg(
        pl.len().alias("clusters"),
        ((pl.col("conf_low") > 0) | (pl.col("conf_high") < 0)).mean().alias("share"),
    )
    note = "share: clusters whose interval excludes zero"
    return _figure(key, section, title, chart, summary, note)


def predictor_label(value: float, setting: str) -> str:
    """``"46.46 (mean - 1 SD)"``, or the value alone for one chosen in ``at_values``."""
    text = f"{value:.4g}"
    return text if setting == "at_values" else f"{text} ({setting})"


def predictor_trajectories_figure(ctx: ReportContext) -> Figure:
    key, section, title = (
        "predictor_trajectories",
        "predictions",
        "Model-implied trajectories by predictor",
    )
    table = ctx.table("predictor_trajectories")
    required = {"predictor", "setting", "value", "time", "estimate", "conf_low", "conf_high"}
    if not is_available(table) or not required <= set(table.columns):
        return _unavailable(
            key,
            section,
            title,
            "No continuous person- or cluster-level predictor in the conditional model.",
        )
    labels = [
        predictor_label(value, setting)
        for value, setting in zip(table["value"].to_list(), table["setting"].to_list(), strict=True)
    ]
    table = table.with_columns(pl.Series("group", labels, dtype=pl.String))
    if _too_many(table):
        return _unavailable(key, section, title, "Too many grid points to draw.")
    time_title, outcome_title, _ = _titles(ctx)
    chart = charts.predictor_trajectories_chart(
        table, time_title=time_title, outcome_title=outcome_title, ticks=time_ticks(ctx)
    )
    first_last = pl.concat(
        [
            table.group_by("predictor", "group", maintain_order=True).first(),
            table.group_by("predictor", "group", maintain_order=True).last(),
        ]
    ).sort("predictor", "value", "time")
    summary = first_last.select(
        "predictor", "group", "time", "estimate", "conf_low", "conf_high"
    ).rename({"group": "value"})
    return _figure(key, section, title, chart, summary, "Summary: first and last time of the grid")


def cluster_trajectories_figure(ctx: ReportContext) -> Figure:
    key, section, title = "cluster_trajectories", "clusters", "Trajectories of a sample of clusters"
    table = ctx.table("cluster_trajectories")
    if not is_available(table):
        return _unavailable(key, section, title, "The study has no clusters ([data] clusters).")
    time_title, outcome_title, _ = _titles(ctx)
    chart = charts.cluster_trajectories_chart(
        table, time_title=time_title, outcome_title=outcome_title
    )
    summary = table.group_by("cluster", maintain_order=True).agg(
        pl.col("observations").sum().alias("observations")
    )
    return _figure(key, section, title, chart, summary)


FIGURE_BUILDERS = (
    occasions_figure,
    attrition_figure,
    spaghetti_figure,
    observed_means_figure,
    group_trajectories_figure,
    predictor_trajectories_figure,
    implied_means_figure,
    residual_qq_figure,
    residuals_fitted_figure,
    random_effects_qq_figure,
    caterpillar_figure,
    error_structure_figure,
    variance_partition_figure,
    cluster_caterpillar_figure,
    cluster_trajectories_figure,
)


def outcome_comparison_figure(ctx: ReportContext) -> Figure:
    """The comparison across outcomes (a run of several outcomes) as a chart."""
    from .outcomes import comparison_table, outcome_title
    from .publication import relabel_term

    key, section, title = "outcome_comparison", "outcomes-compared", "Outcomes compared"
    table = comparison_table(ctx)
    if table is None:
        return _unavailable(
            key, section, title, "No model with the same fixed effects was fitted on every outcome."
        )
    titles = {str(own.outcome_name): outcome_title(own) for own in ctx.outcomes}
    labels = ctx.outcomes[0].labels
    data = table.with_columns(
        pl.col("outcome").replace_strict(titles, return_dtype=pl.String),
        pl.col("term").map_elements(
            lambda term: relabel_term(term, labels), return_dtype=pl.String
        ),
    )
    chart = charts.outcome_comparison_chart(data)
    summary = data.select("term", "outcome", "estimate", "conf_low", "conf_high")
    return _figure(key, section, title, chart, summary)


def build_figures(ctx: ReportContext) -> tuple[Figure, ...]:
    """Every figure of the report, in report order (unavailable ones carry the reason).

    In a run of several outcomes, each outcome's figures in turn, keyed
    ``<stem>_<key>`` (:func:`outcome_stem`) and naming their ``outcome``.
    """
    if ctx.several_outcomes:
        return (outcome_comparison_figure(ctx),) + tuple(
            dataclasses.replace(
                figure,
                key=f"{outcome_stem(str(own.outcome_name), index)}_{figure.key}",
                outcome=own.outcome_name,
            )
            for index, own in enumerate(ctx.outcomes, start=1)
            for figure in build_figures(own)
        )
    return tuple(builder(ctx) for builder in FIGURE_BUILDERS)
