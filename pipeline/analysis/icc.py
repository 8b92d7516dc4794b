"""The intraclass correlation of the unconditional means model.

ICC = tau00 / (tau00 + sigma^2): the share of the outcome's variance that lies
between persons (Raudenbush & Bryk 2002, eq. 4.5; Singer & Willett 2003, sec. 4.4).
The point estimate comes from the REML variance components of
``y ~ 1 + (1 | person)``.

Confidence interval: Searle's F-based interval from the one-way analysis of
variance (Searle 1971; Searle, Casella & McCulloch 1992, sec. 3.5). With
F = MSB / MSW on (k - 1, N - k) df and the effective group size
n0 = (N - sum(n_i^2) / N) / (k - 1),

    lower = (F / F_hi - 1) / (F / F_hi + n0 - 1),
    upper = (F / F_lo - 1) / (F / F_lo + n0 - 1),

with F_hi, F_lo the upper and lower alpha/2 quantiles of F(k - 1, N - k); both
limits are clipped to [0, 1]. The interval is exact for balanced data and uses
n0 as the common group size otherwise (the usual approximation for mildly
unbalanced data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

__all__ = ["IccInterval", "icc_interval", "icc_table", "interpret_icc"]


@dataclass(frozen=True, slots=True)
class IccInterval:
    """The one-way ANOVA behind Searle's interval."""

    f_statistic: float
    df_between: int
    df_within: int
    n0: float
    conf_low: float
    conf_high: float


def icc_interval(*, values: np.ndarray, groups: np.ndarray, level: float = 0.95) -> IccInterval:
    """Searle's F-based confidence interval for the ICC of ``values`` grouped by ``groups``."""
    values = np.asarray(values, dtype=float)
    codes = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    sizes = np.bincount(codes)
    k = sizes.size
    n = values.size
    if k < 2 or n - k < 1:
        return IccInterval(float("nan"), k - 1, n - k, float("nan"), float("nan"), float("nan"))
    means = np.bincount(codes, weights=values) / sizes
    grand = values.mean()
    ss_between = float(np.sum(sizes * (means - grand) ** 2))
    ss_within = float(np.sum((values - means[codes]) ** 2))
    df_between, df_within = k - 1, n - k
    ms_within = ss_within / df_within
    f_statistic = (ss_between / df_between) / ms_within if ms_within > 0 else float("inf")
    n0 = (n - float(np.sum(sizes.astype(float) ** 2)) / n) / df_between
    alpha = 1.0 - level
    f_hi = stats.f.ppf(1.0 - alpha / 2.0, df_between, df_within)
    f_lo = stats.f.ppf(alpha / 2.0, df_between, df_within)

    def limit(ratio: float) -> float:
        if not np.isfinite(ratio):
            return 1.0
        return float(np.clip((ratio - 1.0) / (ratio + n0 - 1.0), 0.0, 1.0))

    return IccInterval(
        f_statistic=float(f_statistic),
        df_between=df_between,
        df_within=df_within,
        n0=float(n0),
        conf_low=limit(f_statistic / f_hi),
        conf_high=limit(f_statistic / f_lo),
    )


def interpret_icc(icc: float, *, conf_low: float, conf_high: float, outcome: str) -> str:
    """A plain-language reading of the ICC."""
    if not np.isfinite(icc):
        return "The ICC could not be estimated."
    share = 100.0 * icc
    if icc < 0.05:
        size = "very little of the variation lies between persons; most of it is change or noise within persons"
    elif icc < 0.25:
        size = "a modest part of the variation lies between persons"
    elif icc < 0.5:
        size = "a substantial part of the variation lies between persons"
    else:
        size = "most of the variation lies between persons (stable individual differences)"
    return (
        f"{share:.1f}% of the total variance of {outcome} lies between persons "
        f"(95% CI {100 * conf_low:.1f}% to {100 * conf_high:.1f}%) and {100 - share:.1f}% within persons "
        f"over time: {size}. It is also the expected correlation of two measurements of the same person "
        "under the unconditional means model."
    )


def icc_table(
    *,
    model: str,
    variance_components: pl.DataFrame,
    values: np.ndarray,
    groups: np.ndarray,
    outcome: str,
) -> pl.DataFrame:
    """The ``icc`` table (one row) from a random-intercept model's variance components
    (lme4 layout: one person-level ``(Intercept)`` row and the ``Residual`` row)."""
    between_rows = variance_components.filter(
        (pl.col("group") != "Residual")
        & (pl.col("term1") == "(Intercept)")
        & pl.col("term2").is_null()
    )
    within_rows = variance_components.filter(pl.col("group") == "Residual")
    if between_rows.height != 1 or within_rows.height != 1:
        raise ValueError(
            "the ICC needs a model with exactly one random intercept and a residual variance"
        )
    between = float(between_rows["variance"][0])
    within = float(within_rows["variance"][0])
    icc = between / (between + within) if between + within > 0 else float("nan")
    interval = icc_interval(values=values, groups=groups)
    return pl.DataFrame(
        {
            "model": [model],
            "between_variance": [between],
            "within_variance": [within],
            "icc": [icc],
            "conf_low": [interval.conf_low],
            "conf_high": [interval.conf_high],
            "interpretation": [
                interpret_icc(
                    icc, conf_low=interval.conf_low, conf_high=interval.conf_high, outcome=outcome
                )
            ],
        },
        schema={
            "model": pl.String,
            "between_variance": pl.Float64,
            "within_variance": pl.Float64,
            "icc": pl.Float64,
            "conf_low": pl.Float64,
            "conf_high": pl.Float64,
            "interpretation": pl.String,
        },
    )
