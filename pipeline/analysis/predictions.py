"""Predictions for any predictor, and the pieces of piecewise-linear time.

From the conditional growth model (the last model of the sequence with the
configured predictors):

- ``predictor_values``: for each continuous person-level or cluster-level predictor
  of the model, the values at which its trajectory is drawn. By default its mean and
  the mean -+ 1 SD, taken over *persons* (one value per person, however many rows
  the person has) or, for a cluster-level predictor, over the units of its cluster
  (one value per school), never over rows. ``[comparison] at_values`` replaces the
  default by chosen values, and then only the predictors it names are drawn. A
  predictor is *continuous* when its column is numeric, not categorical, and takes
  more than two distinct values over its units; a 0/1 indicator gets no default
  trajectories (``at_values`` may still ask for them);
- ``predictor_trajectories``: the model-implied mean trajectory x(t, v)' beta at each
  of those values over an even grid of ``GRID_POINTS`` times spanning the observed
  range, with a pointwise 95% confidence band L'beta -+ t(0.975, df) sqrt(L' V L),
  df by Satterthwaite (``fit.contrast``, as lmerTest's ``contest1D``). Every other
  numeric covariate is held at its mean over persons (time-varying: over rows) and
  every categorical one is averaged over its levels with equal weights, as the group
  comparison and estimated marginal means do; interactions with time enter through
  the fixed-effects row, built by the fit's own coding (``GrowthFit.design_matrix``:
  the same term expressions and category levels as the fit's model matrices);
- ``time_pieces`` (with ``[time] knots``): for the unconditional growth model and
  the model that compares the groups (per group), the slope in each segment between
  knots, per unit of time in original units, and the change of slope at each knot
  (the coefficient of ``pmax(t - k, 0)``, or with predictors of change its contrast),
  each as a contrast of the fixed effects with its Satterthwaite t-test. The slope
  after a knot is the sum of the slope before and the change, so its standard
  error comes from that contrast, not from adding standard errors.

:func:`check_against_data` refuses, with one line naming the key, a knot outside the
observed times and an ``at_values`` column that is not numeric in the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from pipeline.analysis.groups import (
    GRID_POINTS,
    Predictor,
    group_levels,
    predictor_for,
    time_range_of,
)
from pipeline.analysis.sequence import CONDITIONAL, GROUP_COMPARISON, GROWTH
from pipeline.errors import ConfigError
from schemas.tables import columns

if TYPE_CHECKING:
    from pipeline.analysis.context import AnalysisContext
    from pipeline.analysis.spec import AnalysisSpec
    from pipeline.model.results import GrowthFit

__all__ = [
    "DEFAULT_SETTINGS",
    "PREDICTOR_TRAJECTORIES_SCHEMA",
    "PREDICTOR_VALUES_SCHEMA",
    "TIME_PIECES_SCHEMA",
    "check_against_data",
    "continuous_predictors",
    "predictor_values",
    "tables",
    "time_pieces",
    "trajectories",
]

PREDICTOR_VALUES_SCHEMA = columns("predictor_values")
PREDICTOR_TRAJECTORIES_SCHEMA = columns("predictor_trajectories")
TIME_PIECES_SCHEMA = columns("time_pieces")
DEFAULT_SETTINGS = (("mean - 1 SD", -1.0), ("mean", 0.0), ("mean + 1 SD", 1.0))


def check_against_data(spec: AnalysisSpec, frame: pl.DataFrame, *, source: str = "") -> None:
    """Raise :class:`ConfigError` (one line, naming the key) for a knot outside the observed
    times or an ``at_values`` column that is not numeric in ``frame``."""
    prefix = f"{source}: " if source else ""
    if spec.knots:
        if spec.time in frame.columns:
            times = frame[spec.time].cast(pl.Float64).drop_nulls()
        else:
            times = pl.Series(spec.original_time(frame[spec.time_name].cast(pl.Float64).to_numpy()))
        low, high = float(times.min()), float(times.max())  # type: ignore[arg-type]
        for knot in spec.knots:
            if not low < knot < high:
                raise ConfigError(
                    f"{prefix}[time] knots: knot {knot:g} is outside the observed times of "
                    f"'{spec.time}' ({low:g} to {high:g}); a knot must lie strictly inside them"
                )
    for column in spec.at_values:
        if column not in frame.columns:
            raise ConfigError(
                f"{prefix}[comparison] at_values: '{column}' is not a column of the data"
            )
        dtype = frame.schema[column]
        if not dtype.is_numeric() or dtype == pl.Boolean:
            raise ConfigError(
                f"{prefix}[comparison] at_values: '{column}' is not a continuous predictor: "
                f"its column is {dtype}, not numeric"
            )


def _level_of(spec: AnalysisSpec, column: str) -> str | None:
    """``"person"``, the cluster column of a cluster-level covariate, or None (time-varying)."""
    if column in spec.person_covariates:
        return "person"
    for cluster in spec.clusters:
        if column in spec.cluster_covariates.get(cluster, ()):
            return cluster
    return None


def _unit_values(spec: AnalysisSpec, frame: pl.DataFrame, column: str, level: str) -> np.ndarray:
    """One value of ``column`` per person (or per unit of the cluster ``level``): the mean of
    the unit's rows (constant within a unit for a person- or cluster-level covariate)."""
    key = list(spec.person_key if level == "person" else spec.cluster_key(level))
    per_unit = frame.group_by(key).agg(pl.col(column).cast(pl.Float64).mean())
    return per_unit[column].drop_nulls().to_numpy()


def continuous_predictors(ctx: AnalysisContext, fit: GrowthFit) -> list[tuple[str, str]]:
    """(column, level) of the predictors drawn: those of ``at_values``, else every numeric,
    non-categorical person- or cluster-level predictor of the model with more than two
    distinct values over its units."""
    spec = ctx.spec
    used = fit.frame
    if spec.at_values:
        out = []
        for column in spec.at_values:
            level = _level_of(spec, column)
            if level is not None and column in used.columns:
                out.append((column, level))
        return out
    categories = ctx.categories(used)
    predictors = dict.fromkeys([*spec.intercept_predictors, *spec.slope_predictors])
    out = []
    for column in predictors:
        level = _level_of(spec, column)
        if level is None or column in categories or column not in used.columns:
            continue
        if not used.schema[column].is_numeric():
            continue
        if np.unique(_unit_values(spec, used, column, level)).size > 2:
            out.append((column, level))
    return out


def predictor_values(ctx: AnalysisContext, fit: GrowthFit) -> pl.DataFrame:
    """The ``predictor_values`` table (see the module docstring)."""
    spec = ctx.spec
    rows = []
    for column, level in continuous_predictors(ctx, fit):
        values = _unit_values(spec, fit.frame, column, level)
        mean = float(values.mean())
        sd = float(values.std(ddof=1)) if values.size > 1 else None
        if column in spec.at_values:
            settings = [("at_values", float(v)) for v in spec.at_values[column]]
        else:
            if sd is None:
                continue
            settings = [(name, mean + k * sd) for name, k in DEFAULT_SETTINGS]
        low, high = float(values.min()), float(values.max())
        outside = [(name, v) for name, v in settings if not low <= v <= high]
        if outside:
            shown = ", ".join(
                f"{v:.4g}" if name == "at_values" else f"{v:.4g} ({name})" for name, v in outside
            )
            ctx.notes.warn(
                "predictions",
                f"{column} = {shown} lies outside the observed values ({low:.4g} to "
                f"{high:.4g}); its trajectory is an extrapolation",
                severity="note",
            )
        for setting, value in settings:
            rows.append(
                {
                    "predictor": column,
                    "level": level,
                    "units": int(values.size),
                    "mean": mean,
                    "sd": sd,
                    "setting": setting,
                    "value": value,
                }
            )
    return pl.DataFrame(rows, schema=PREDICTOR_VALUES_SCHEMA)


def trajectories(
    *,
    model: str,
    predictor: Predictor,
    contrast: Any,
    values: pl.DataFrame,
    time_range: tuple[float, float],
    grid_points: int = GRID_POINTS,
) -> pl.DataFrame:
    """The ``predictor_trajectories`` table: one trajectory per row of ``values``, on
    ``grid_points`` evenly spaced times spanning ``time_range``."""
    grid = np.linspace(time_range[0], time_range[1], grid_points)
    rows = []
    for setting in values.iter_rows(named=True):
        at = {setting["predictor"]: setting["value"]}
        for time in grid:
            result = contrast(predictor.row(time=float(time), at=at))
            rows.append(
                {
                    "model": model,
                    "predictor": setting["predictor"],
                    "setting": setting["setting"],
                    "value": setting["value"],
                    "time": float(time),
                    **{
                        key: result[key]
                        for key in ("estimate", "std_error", "df", "conf_low", "conf_high")
                    },
                }
            )
    return pl.DataFrame(rows, schema=PREDICTOR_TRAJECTORIES_SCHEMA)


def _segments(knots: Sequence[float], time_range: tuple[float, float]) -> list[tuple[float, float]]:
    edges = [time_range[0], *knots, time_range[1]]
    return list(zip(edges[:-1], edges[1:], strict=True))


def time_pieces(
    *,
    model: str,
    predictor: Predictor,
    contrast: Any,
    levels: Sequence[Any],
    knots: Sequence[float],
    time_range: tuple[float, float],
) -> pl.DataFrame:
    """The ``time_pieces`` rows of one model: per group level, the slope of each segment and
    the change of slope at each knot (slope after minus slope before, one contrast)."""
    rows = []
    segments = _segments(knots, time_range)
    for level in levels:
        slopes = [
            predictor.slope_row(time=0.5 * (start + stop), level=level) for start, stop in segments
        ]
        pieces: list[tuple[str, float, float, np.ndarray]] = []
        for i, (start, stop) in enumerate(segments):
            pieces.append(("slope", start, stop, slopes[i]))
            if i + 1 < len(segments):
                pieces.append(("change of slope", stop, stop, slopes[i + 1] - slopes[i]))
        for piece, start, stop, vector in pieces:
            result = contrast(vector)
            rows.append(
                {
                    "model": model,
                    "group": "all" if level is None else str(level),
                    "piece": piece,
                    "time_from": float(start),
                    "time_to": float(stop),
                    **{
                        key: result[key]
                        for key in (
                            "estimate",
                            "std_error",
                            "df",
                            "p_value",
                            "conf_low",
                            "conf_high",
                        )
                    },
                }
            )
    return pl.DataFrame(rows, schema=TIME_PIECES_SCHEMA)


def _pieces_table(ctx: AnalysisContext) -> pl.DataFrame:
    spec = ctx.spec
    parts = []
    group_model = (
        (CONDITIONAL if spec.group_in_conditional else GROUP_COMPARISON)
        if spec.group is not None
        else None
    )
    for name, group in ((GROWTH, None), (group_model, spec.group)):
        fit = ctx.fit(name) if name is not None else None
        if fit is None:
            continue
        time_range = time_range_of(ctx, fit)
        parts.append(
            time_pieces(
                model=name,  # type: ignore[arg-type]
                predictor=predictor_for(ctx, fit, group=group),
                contrast=fit.contrast,
                levels=group_levels(ctx, fit, group),
                knots=spec.knots,
                time_range=time_range,
            )
        )
    if not parts:
        raise ValueError("neither the growth model nor the group comparison model was fitted")
    return pl.concat(parts)


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """``predictor_values`` and ``predictor_trajectories`` from the conditional model (when it
    has a continuous predictor or ``at_values`` asks), ``time_pieces`` with ``[time] knots``."""
    out: dict[str, pl.DataFrame] = {}
    fit = ctx.fit(CONDITIONAL)
    if fit is not None:
        values = predictor_values(ctx, fit)
        if values.height:
            out["predictor_values"] = values
            out["predictor_trajectories"] = trajectories(
                model=CONDITIONAL,
                predictor=predictor_for(ctx, fit, group=None),
                contrast=fit.contrast,
                values=values,
                time_range=time_range_of(ctx, fit),
            )
    elif ctx.spec.at_values:
        ctx.notes.warn(
            "predictions",
            "[comparison] at_values: the conditional model was not fitted, so no trajectories "
            "are drawn at these values",
        )
    if ctx.spec.knots:
        pieces = ctx.notes.attempt("piecewise-linear time", lambda: _pieces_table(ctx))
        if pieces is not None:
            out["time_pieces"] = pieces
    return out
