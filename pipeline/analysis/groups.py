"""Group comparison: model-implied trajectories, differences between groups, observed means.

For a categorical person-level covariate (``cfg.comparison.group``), from a fitted
growth model that uses it:

- ``group_trajectories``: the model-implied mean trajectory of each group,
  x(t, g)' beta, over an even grid of ``GRID_POINTS`` times spanning the observed
  range, with 95% confidence bands from ``fit.contrast`` (t with Satterthwaite df,
  as lmerTest). Other covariates of the model are held at their person-level mean
  (numeric) or averaged with equal weights over their levels (categorical), as
  estimated marginal means do;
- ``group_differences``: for every pair of groups (later level minus earlier
  level, e.g. "trt: Y - N"), the difference in status at each of
  ``cfg.comparison.at_times`` and in the rate of change (the derivative of the
  trajectory with respect to time in original units, per unit of time; one row
  with time null when it does not depend on time, else one row per time), each
  with its Satterthwaite t-test and CI. ``p_holm``: Holm's adjustment over every
  row of the table (all pairs, quantities and times: the family is the table); the
  confidence intervals are not adjusted;
- ``observed_means``: the observed mean of the outcome per group and occasion
  (:func:`pipeline.analysis.spec.occasions_of`), with its standard error sd / sqrt(n).

Times in these tables are in original units: coded = (time - centre) / scale.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from pipeline.analysis.comparison import holm
from pipeline.analysis.sequence import CONDITIONAL, GROUP_COMPARISON, GROWTH
from pipeline.analysis.spec import Occasions, occasions_of
from schemas.tables import columns

if TYPE_CHECKING:
    from pipeline.analysis.context import AnalysisContext
    from pipeline.model.results import GrowthFit

__all__ = [
    "GROUP_DIFFERENCES_SCHEMA",
    "GROUP_TRAJECTORIES_SCHEMA",
    "GRID_POINTS",
    "OBSERVED_MEANS_SCHEMA",
    "Predictor",
    "group_differences",
    "group_levels",
    "group_trajectories",
    "observed_means",
    "predictor_for",
    "tables",
    "time_range_of",
]

GRID_POINTS = 25
DERIVATIVE_STEP = 1e-3  # coded time units; central difference, error O(step^2) relative

GROUP_TRAJECTORIES_SCHEMA = columns("group_trajectories")
GROUP_DIFFERENCES_SCHEMA = columns("group_differences")
OBSERVED_MEANS_SCHEMA = columns("observed_means")


@dataclass(frozen=True, slots=True)
class Predictor:
    """Builds fixed-effects rows x(t, g) for a fit.

    ``design_row`` is the fit's ``design_row``; ``time_name`` the coded time column;
    ``centre``/``scale`` the time coding; ``group`` the comparison column (or None);
    ``numeric`` covariate -> value held fixed; ``categorical`` covariate -> levels
    averaged over with equal weights.
    """

    design_row: Callable[[dict[str, Any]], np.ndarray]
    time_name: str
    centre: float
    scale: float
    group: str | None
    numeric: Mapping[str, float]
    categorical: Mapping[str, Sequence[Any]]

    def coded(self, time: float) -> float:
        return (time - self.centre) / self.scale

    def row(
        self, *, time: float, level: Any = None, at: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """x(t, g) at ``time`` in original units, averaged over the other categorical covariates;
        ``at`` sets numeric covariates to other values than the held ones (predictions at
        chosen values of a predictor, :mod:`pipeline.analysis.predictions`)."""
        base: dict[str, Any] = {self.time_name: self.coded(time), **self.numeric, **(at or {})}
        if self.group is not None:
            base[self.group] = level
        names = list(self.categorical)
        combinations = list(itertools.product(*(self.categorical[name] for name in names))) or [()]
        rows = [
            self.design_row({**base, **dict(zip(names, combo, strict=True))})
            for combo in combinations
        ]
        return np.mean(np.asarray(rows, dtype=float), axis=0)

    def slope_row(
        self, *, time: float, level: Any = None, at: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """Derivative of x(t, g) with respect to time in original units (central difference)."""
        step = DERIVATIVE_STEP * self.scale
        return (
            self.row(time=time + step, level=level, at=at)
            - self.row(time=time - step, level=level, at=at)
        ) / (2.0 * step)


def group_trajectories(
    *,
    predictor: Predictor,
    contrast: Callable[[np.ndarray], Mapping[str, float]],
    levels: Sequence[Any],
    time_range: tuple[float, float],
) -> pl.DataFrame:
    """The ``group_trajectories`` table (``levels`` = [None] and group "all" without a group)."""
    grid = np.linspace(time_range[0], time_range[1], GRID_POINTS)
    rows = []
    for level in levels:
        for time in grid:
            result = contrast(predictor.row(time=float(time), level=level))
            rows.append(
                {
                    "group": "all" if level is None else str(level),
                    "time": float(time),
                    "estimate": result["estimate"],
                    "std_error": result["std_error"],
                    "conf_low": result["conf_low"],
                    "conf_high": result["conf_high"],
                }
            )
    return pl.DataFrame(rows, schema=GROUP_TRAJECTORIES_SCHEMA)


def group_differences(
    *,
    predictor: Predictor,
    contrast: Callable[[np.ndarray], Mapping[str, float]],
    levels: Sequence[Any],
    at_times: Sequence[float],
) -> pl.DataFrame:
    """The ``group_differences`` table over all pairs of ``levels``."""
    pairs = list(itertools.combinations(levels, 2))
    label = predictor.group or "group"
    families: list[tuple[str, float | None, list[tuple[str, np.ndarray]]]] = []
    for time in at_times:
        families.append(
            (
                "status at t",
                float(time),
                [
                    (
                        f"{label}: {b} - {a}",
                        predictor.row(time=time, level=b) - predictor.row(time=time, level=a),
                    )
                    for a, b in pairs
                ],
            )
        )
    slope_times = list(at_times) or [0.0]
    slopes = {
        time: [
            (
                f"{label}: {b} - {a}",
                predictor.slope_row(time=time, level=b) - predictor.slope_row(time=time, level=a),
            )
            for a, b in pairs
        ]
        for time in slope_times
    }
    first = slopes[slope_times[0]]
    constant = all(
        np.allclose(vector, first[i][1], rtol=1e-6, atol=1e-9)
        for time in slope_times
        for i, (_, vector) in enumerate(slopes[time])
    )
    if constant:
        families.append(("rate of change", None, first))
    else:
        families += [("rate of change", float(time), slopes[time]) for time in slope_times]

    rows = []
    for quantity, time, family in families:
        for name, vector in family:
            result = contrast(vector)
            rows.append(
                {
                    "contrast": name,
                    "quantity": quantity,
                    "time": time,
                    "estimate": result["estimate"],
                    "std_error": result["std_error"],
                    "df": result["df"],
                    "p_value": result["p_value"],
                    "p_holm": None,
                    "conf_low": result["conf_low"],
                    "conf_high": result["conf_high"],
                }
            )
    adjusted = holm([row["p_value"] for row in rows])
    for row, p_holm in zip(rows, adjusted, strict=True):
        row["p_holm"] = float(p_holm)
    return pl.DataFrame(rows, schema=GROUP_DIFFERENCES_SCHEMA)


def observed_means(
    *, frame: pl.DataFrame, outcome: str, occasions: Occasions, group: str | None
) -> pl.DataFrame:
    """The ``observed_means`` table: mean, sd / sqrt(n) and n per group and occasion
    (``occasions`` of the rows of ``frame``; time: the occasion's mean time, original units)."""
    present = frame[outcome].is_not_null().to_numpy()
    data = frame.filter(pl.Series(present))
    group_values = (
        data[group].cast(pl.String) if group is not None else pl.Series(["all"] * data.height)
    )
    table = (
        pl.DataFrame(
            {
                "group": group_values,
                "occasion": occasions.labels[present],
                "value": data[outcome].cast(pl.Float64),
            }
        )
        .group_by("group", "occasion")
        .agg(
            pl.col("value").mean().alias("mean"),
            (pl.col("value").std(ddof=1) / pl.len().sqrt()).alias("std_error"),
            pl.len().cast(pl.Int64).alias("n"),
        )
        .with_columns(
            pl.col("occasion")
            .replace_strict(occasions.mean_time, return_dtype=pl.Float64)
            .alias("time")
        )
        .sort("group", "time", "occasion")
    )
    return table.select(OBSERVED_MEANS_SCHEMA.keys()).cast(OBSERVED_MEANS_SCHEMA)


def _person_level_mean(frame: pl.DataFrame, person: str, column: str) -> float:
    """Mean of a covariate over persons (a time-varying one: over rows)."""
    per_person = frame.group_by(person).agg(pl.col(column).n_unique().alias("k"))
    if int(per_person["k"].max() or 0) <= 1:
        values = frame.group_by(person).agg(pl.col(column).first())[column]
    else:
        values = frame[column]
    return float(values.cast(pl.Float64).mean())


def predictor_for(ctx: AnalysisContext, fit: GrowthFit, *, group: str | None) -> Predictor:
    """The :class:`Predictor` of ``fit``: numeric covariates held at their mean over persons
    (a time-varying one: over rows), categorical ones averaged over their levels, ``group``
    left free."""
    spec = ctx.spec
    used = fit.frame
    categories = ctx.categories(used)
    return Predictor(
        design_row=fit.design_row,
        time_name=spec.time_name,
        centre=spec.centre,
        scale=spec.scale,
        group=group,
        numeric={
            column: _person_level_mean(used, spec.person, column)
            for column in spec.covariates
            if column in used.columns and column not in categories and column != group
        },
        categorical={column: levels for column, levels in categories.items() if column != group},
    )


def time_range_of(ctx: AnalysisContext, fit: GrowthFit) -> tuple[float, float]:
    """The observed range of time (original units) in the rows ``fit`` used."""
    coded = fit.frame[ctx.spec.time_name].cast(pl.Float64).to_numpy()
    original = ctx.spec.original_time(coded)
    return (float(original.min()), float(original.max()))


def group_levels(ctx: AnalysisContext, fit: GrowthFit, group: str | None) -> list[Any]:
    """The levels of ``group`` present in the rows ``fit`` used (declared order), [None] without."""
    if group is None:
        return [None]
    used = fit.frame
    present = set(used[group].drop_nulls().cast(pl.String).unique().to_list())
    declared = ctx.categories(used).get(group, sorted(present))
    return [level for level in declared if level in present]


def _trajectory_tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    spec = ctx.spec
    group = spec.group
    name = (
        GROWTH
        if group is None
        else (CONDITIONAL if spec.group_in_conditional else GROUP_COMPARISON)
    )
    fit = ctx.fit(name)
    if fit is None:
        raise ValueError(f"the model '{name}' that the group comparison uses was not fitted")
    used = fit.frame
    predictor = predictor_for(ctx, fit, group=group)
    time_range = time_range_of(ctx, fit)
    levels = group_levels(ctx, fit, group)
    out = {
        "group_trajectories": group_trajectories(
            predictor=predictor, contrast=fit.contrast, levels=levels, time_range=time_range
        )
    }
    if group is not None and len(levels) >= 2:
        original = spec.original_time(used[spec.time_name].cast(pl.Float64).to_numpy())
        at_times = list(spec.at_times) or sorted(
            {time_range[0], float(np.median(original)), time_range[1]}
        )
        out["group_differences"] = group_differences(
            predictor=predictor, contrast=fit.contrast, levels=levels, at_times=at_times
        )
    return out


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """``observed_means`` of the model frame; ``group_trajectories`` and
    ``group_differences`` from the model that compares the groups (without a group: the
    unconditional growth model's trajectory)."""
    frame = ctx.frame
    out = {
        "observed_means": observed_means(
            frame=frame,
            outcome=ctx.spec.outcome,
            occasions=occasions_of(frame, ctx.spec),
            group=ctx.spec.group,
        )
    }
    trajectories = ctx.notes.attempt("group comparison", lambda: _trajectory_tables(ctx))
    if trajectories is not None:
        out.update(trajectories)
    return out
