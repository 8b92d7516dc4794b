"""Standardized group differences for growth models (Feingold 2009).

Feingold (2009, Psychological Methods 14, 43-53) puts the group difference of
a growth model in the metric of Cohen's d of a classical analysis:

    d = (model-implied group difference in change over the study's duration) / SD_raw,

where the change over the duration is the difference between the groups'
model-implied means at the end and at baseline (for linear time,
``b_time:group x duration``), and SD_raw is the standard deviation of the
**observed** outcome at baseline: by default the pooled within-group SD
(``sd="pooled"``, the SD of Cohen's d), or the SD of all persons at baseline
(``sd="total"``). The table states which. The same SD standardises the
model-implied difference in status at any chosen time.

Intervals: the model-implied difference's Satterthwaite t interval (from
the fit's covariance of beta) divided by the SD, i.e. the delta method
**treating the SD as fixed**; the SD's own sampling error is not included, so
the interval is somewhat too narrow. :class:`FeingoldD` is the same effect size
as a statistic for :mod:`pipeline.analysis.bootstrap`: each replicate
recomputes the baseline SD from its simulated outcome, so the parametric
bootstrap's interval includes the SD's uncertainty.

Other predictors in the model are held at ``at`` (default: the mean of a
numeric column, the reference level of a categorical one, over the rows used);
they cancel from the differences unless they interact with the group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from pipeline.errors import ModelError
from pipeline.model.results import GrowthFit
from schemas.tables import columns

__all__ = ["COLUMNS", "FeingoldD", "feingold_effect_sizes"]

SdKind = Literal["pooled", "total"]

COLUMNS: dict[str, pl.DataType] = {
    k: v for k, v in columns("effect_sizes").items() if k != "model"
}  # schemas/tables.py

INTERVAL_METHOD = "t interval of the difference (Satterthwaite df) / SD; the SD treated as fixed"


def _baseline_sd(
    frame: pl.DataFrame, y: np.ndarray, group: str, time: str, baseline: float, kind: SdKind
):
    at_base = frame.select(pl.col(time).cast(pl.Float64) == baseline).to_series().to_numpy()
    if at_base.sum() < 2:
        raise ModelError(f"fewer than 2 observed outcomes at baseline ({time} = {baseline:g})")
    values = y[at_base]
    groups = frame[group].cast(pl.String).to_numpy()[at_base]
    if kind == "total":
        return float(np.std(values, ddof=1)), (
            f"SD of the observed outcome of all persons at baseline ({time} = {baseline:g}; n = {values.size})"
        )
    ss, dof = 0.0, 0
    for g in np.unique(groups):
        v = values[groups == g]
        if v.size >= 2:
            ss += float(np.sum((v - v.mean()) ** 2))
            dof += v.size - 1
    if dof < 1:
        raise ModelError(f"no group has 2 observed outcomes at baseline ({time} = {baseline:g})")
    return math.sqrt(ss / dof), (
        f"pooled within-group SD of the observed outcome at baseline ({time} = {baseline:g}; "
        f"n = {values.size}, df = {dof})"
    )


def feingold_effect_sizes(
    fit: GrowthFit,
    *,
    group: str,
    time: str,
    status_times: Sequence[float] = (),
    baseline: float | None = None,
    end: float | None = None,
    sd: SdKind = "pooled",
    at: Mapping[str, float | str] | None = None,
    level: float = 0.95,
) -> pl.DataFrame:
    """Feingold's d for the change over the study and for status at ``status_times`` (columns :data:`COLUMNS`).

    ``baseline`` and ``end`` default to the first and last value of ``time`` in
    the rows used; the study's duration is ``end - baseline``.
    """
    if sd not in ("pooled", "total"):
        raise ModelError(f"sd must be 'pooled' or 'total', not {sd!r}")
    d = fit.design
    fixed_columns = {c for term in d.formula.terms for f in term for c in f.columns}
    categorical = [c for c in d.levels if c in fixed_columns]
    if group not in categorical:
        raise ModelError(
            f"{group!r} is not a categorical predictor of {fit.formula!r} "
            f"(categorical: {', '.join(categorical) or 'none'})"
        )
    if time not in fit.frame.columns or not fit.frame.schema[time].is_numeric():
        raise ModelError(f"{time!r} is not a numeric column of the data of {fit.formula!r}")
    times = fit.frame[time].cast(pl.Float64)
    baseline = float(times.min()) if baseline is None else float(baseline)
    end = float(times.max()) if end is None else float(end)
    if not end > baseline:
        raise ModelError(f"the end of the study ({end:g}) must be after baseline ({baseline:g})")
    values: dict[str, float | str] = {}
    for c in sorted(fixed_columns - {group, time}):
        if at is not None and c in at:
            values[c] = at[c]
        elif c in d.levels:
            values[c] = d.levels[c][0]
        else:
            values[c] = float(fit.frame[c].cast(pl.Float64).mean())
    sd_value, sd_text = _baseline_sd(fit.frame, d.y, group, time, baseline, sd)

    def row(level_name: str, t: float) -> np.ndarray:
        return fit.design_row({**values, group: level_name, time: t})

    reference = d.levels[group][0]
    rows: dict[str, list] = {c: [] for c in COLUMNS}

    def add(quantity: str, g: str, t0: float, t1: float, L: np.ndarray) -> None:
        result = fit.contrast(L, level=level)
        rows["quantity"].append(quantity)
        rows["group"].append(g)
        rows["reference"].append(reference)
        rows["time_from"].append(t0)
        rows["time_to"].append(t1)
        for c in ("std_error", "df", "conf_low", "conf_high"):
            rows[c].append(float(result[c]))
        rows["difference"].append(float(result["estimate"]))
        rows["sd"].append(sd_value)
        rows["sd_definition"].append(sd_text)
        rows["effect_size"].append(float(result["estimate"]) / sd_value)
        rows["es_conf_low"].append(float(result["conf_low"]) / sd_value)
        rows["es_conf_high"].append(float(result["conf_high"]) / sd_value)
        rows["interval_method"].append(INTERVAL_METHOD)

    for g in d.levels[group][1:]:
        change = (row(g, end) - row(g, baseline)) - (row(reference, end) - row(reference, baseline))
        add("change over the study", g, baseline, end, change)
        for t in status_times:
            add("status", g, float(t), float(t), row(g, float(t)) - row(reference, float(t)))
    return pl.DataFrame(rows, schema=COLUMNS)


@dataclass(frozen=True, slots=True)
class FeingoldD:
    """Feingold's d as a bootstrap statistic: row ``row`` of :func:`feingold_effect_sizes` of ``fits[model]``.

    Row 0 is the change over the study for the first non-reference group; with
    ``status_times`` the status rows follow it.
    """

    group: str
    time: str
    status_times: tuple[float, ...] = ()
    row: int = 0
    sd: SdKind = "pooled"
    model: str = "model"

    def __call__(self, fits: Mapping[str, GrowthFit]) -> float:
        table = feingold_effect_sizes(
            fits[self.model],
            group=self.group,
            time=self.time,
            status_times=self.status_times,
            sd=self.sd,
        )
        return float(table["effect_size"][self.row])
