"""Checks of the model's assumptions, each with a plain-language verdict, and chart data.

Level 1 (residuals e_ti = y_ti - x_ti' beta - z_ti' b_i, the conditional residuals):

- normality: Shapiro-Wilk (scipy) on all residuals when there are at most 5000,
  otherwise on a deterministic sample of 5000 (numpy generator seeded with
  ``SAMPLE_SEED``); the verdict also weighs skewness and excess kurtosis, because
  with many observations the test flags departures too small to matter;
- spread versus fitted: Spearman correlation of |residual| with the fitted value;
- variance by occasion: Brown-Forsythe test (Levene's test about the median)
  across occasions (the distinct times, or ten quantile bins when there are more
  than 20 distinct times);
- homogeneity of the level-1 variance across persons: HLM's H statistic
  (Raudenbush & Bryk 2002, sec. 9.3): with s_j^2 each person's OLS residual
  variance on f_j = n_j - p df, d_j = (ln s_j^2 - sum f ln s^2 / sum f) / sqrt(2 / f_j)
  and H = sum d_j^2, approximately chi-square on J - 1 df (persons with f_j >= 1 and
  s_j^2 > 0).

Level 2 (random effects, the BLUPs b_i):

- normality of each random effect's BLUPs: Shapiro-Wilk. BLUPs are shrunken
  towards zero, so this is a weak check (Verbeke & Lesaffre 1996);
- link between the level-1 residuals and the random effects: Spearman correlation
  of each person's root-mean-square level-1 residual with each BLUP. The raw
  residuals are not correlated with the BLUPs directly: their estimates are tied by
  construction (Z_i' e_i = sigma^2 D^{-1} b_i exactly), so such a test would reject
  whatever the data; a link between the size of the residuals and a person's
  level or slope is the departure that matters (variance growing with the level).

QQ data: ``qq_theoretical`` is the standard normal quantile of Blom's plotting
position (r - 3/8) / (n + 1/4) of each value's rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats

from pipeline.analysis.reliability import PersonOls

__all__ = [
    "ASSUMPTIONS_SCHEMA",
    "RESIDUAL_VARIANCE_SCHEMA",
    "SAMPLE_SEED",
    "heterogeneity_check",
    "normality_check",
    "occasion_labels",
    "qq_theoretical",
    "residual_link_check",
    "spread_check",
    "variance_by_occasion",
]

ASSUMPTIONS_SCHEMA = {
    "check": pl.String,
    "statistic": pl.Float64,
    "p_value": pl.Float64,
    "verdict": pl.String,
}
RESIDUAL_VARIANCE_SCHEMA = {"time": pl.Float64, "n": pl.Int64, "variance": pl.Float64}

SAMPLE_SEED = 20240101
MAX_SHAPIRO = 5000
ALPHA = 0.05


def _row(
    check: str, statistic: float | None, p_value: float | None, verdict: str
) -> dict[str, object]:
    return {"check": check, "statistic": statistic, "p_value": p_value, "verdict": verdict}


def qq_theoretical(values: np.ndarray) -> np.ndarray:
    """Standard normal quantiles of Blom's positions, aligned with ``values`` (ties by order)."""
    values = np.asarray(values, dtype=float)
    n = values.size
    ranks = np.empty(n)
    ranks[np.argsort(values, kind="stable")] = np.arange(1, n + 1)
    return stats.norm.ppf((ranks - 0.375) / (n + 0.25))


def normality_check(values: np.ndarray, *, check: str, what: str) -> dict[str, object]:
    """Shapiro-Wilk test with a verdict that weighs the size of the departure."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = values.size
    if n < 3 or np.ptp(values) == 0:
        return _row(check, None, None, f"not tested: {n} values of {what}, fewer than 3 distinct")
    sample = values
    note = ""
    if n > MAX_SHAPIRO:
        sample = np.random.default_rng(SAMPLE_SEED).choice(values, size=MAX_SHAPIRO, replace=False)
        note = f" (tested on a fixed random sample of {MAX_SHAPIRO} of the {n} values)"
    result = stats.shapiro(sample)
    skewness = float(stats.skew(values))
    kurtosis = float(stats.kurtosis(values))
    shape = f"skewness {skewness:.2f}, excess kurtosis {kurtosis:.2f}"
    p_value = float(result.pvalue)
    if p_value >= ALPHA:
        verdict = f"consistent with a normal distribution ({shape}){note}"
    elif abs(skewness) < 0.5 and abs(kurtosis) < 1.0:
        verdict = (
            f"the test detects a departure from normality, but it is small ({shape}){note}; "
            "fixed-effect estimates and their standard errors are robust to this"
        )
    else:
        verdict = (
            f"clear departure from normality ({shape}){note}: look at the QQ plot for outliers or skew; "
            "fixed effects stay unbiased, but standard errors of the variance components may be off "
            "(a transformation of the outcome may help)"
        )
    return _row(check, float(result.statistic), p_value, f"{what}: {verdict}")


def spread_check(*, residuals: np.ndarray, fitted: np.ndarray) -> dict[str, object]:
    """Spearman correlation of |residual| with the fitted value."""
    check = "level-1 residuals: spread versus fitted (Spearman rho of |residual| and fitted)"
    if residuals.size < 3 or np.ptp(fitted) == 0:
        return _row(check, None, None, "not tested: too few observations or constant fitted values")
    result = stats.spearmanr(np.abs(residuals), fitted)
    rho, p_value = float(result.statistic), float(result.pvalue)
    if p_value >= ALPHA:
        verdict = f"no sign that the spread of the residuals changes with the fitted value (rho = {rho:.2f})"
    else:
        direction = "grows" if rho > 0 else "shrinks"
        verdict = (
            f"the spread of the residuals {direction} with the fitted value (rho = {rho:.2f}): the level-1 "
            "variance is not constant; a transformation of the outcome may help"
        )
    return _row(check, rho, p_value, verdict)


def occasion_labels(time: np.ndarray) -> np.ndarray:
    """Occasion of each observation: its time, or the mean time of its decile bin when
    there are more than 20 distinct times."""
    time = np.asarray(time, dtype=float)
    if np.unique(time).size <= 20:
        return time
    edges = np.unique(np.quantile(time, np.linspace(0, 1, 11)))
    bins = np.clip(np.searchsorted(edges, time, side="right") - 1, 0, edges.size - 2)
    means = np.bincount(bins, weights=time) / np.maximum(np.bincount(bins), 1)
    return means[bins]


def variance_by_occasion(
    *, residuals: np.ndarray, time: np.ndarray
) -> tuple[pl.DataFrame, dict[str, object]]:
    """The residual variance per occasion (chart data) and the Brown-Forsythe test across occasions."""
    labels = occasion_labels(time)
    table = (
        pl.DataFrame({"time": labels, "residual": np.asarray(residuals, dtype=float)})
        .group_by("time")
        .agg(pl.len().cast(pl.Int64).alias("n"), pl.col("residual").var(ddof=1).alias("variance"))
        .sort("time")
    )
    check = "level-1 residuals: variance across occasions (Brown-Forsythe)"
    groups = [
        np.asarray(residuals)[labels == value]
        for value, n in zip(table["time"].to_list(), table["n"].to_list(), strict=True)
        if n >= 2
    ]
    if len(groups) < 2:
        return table.select(RESIDUAL_VARIANCE_SCHEMA.keys()), _row(
            check, None, None, "not tested: fewer than two occasions with two or more observations"
        )
    result = stats.levene(*groups, center="median")
    variances = [float(np.var(g, ddof=1)) for g in groups]
    ratio = max(variances) / min(variances) if min(variances) > 0 else float("inf")
    p_value = float(result.pvalue)
    if p_value >= ALPHA:
        verdict = (
            f"the residual variance is similar at every occasion (largest / smallest = {ratio:.2f})"
        )
    else:
        verdict = (
            f"the residual variance differs across occasions (largest / smallest = {ratio:.2f}): a model with "
            "a residual variance per wave may fit better; standard errors assume a common variance"
        )
    return table.select(RESIDUAL_VARIANCE_SCHEMA.keys()), _row(
        check, float(result.statistic), p_value, verdict
    )


def heterogeneity_check(ols: PersonOls, *, parameters: int) -> dict[str, object]:
    """HLM's H statistic for the homogeneity of the level-1 variance across persons."""
    check = "level-1 variance across persons (HLM H statistic)"
    f = ols.occasions - parameters
    s2 = np.divide(ols.residual_ss, f, out=np.zeros_like(ols.residual_ss), where=f > 0)
    keep = (f >= 1) & (s2 > 1e-12 * max(float(np.max(s2, initial=0.0)), 1e-300))
    f, s2 = f[keep].astype(float), s2[keep]
    persons = int(f.size)
    if persons < 2:
        return _row(
            check,
            None,
            None,
            f"not tested: only {persons} persons have more occasions than growth parameters",
        )
    log_s2 = np.log(s2)
    pooled = float(np.sum(f * log_s2) / np.sum(f))
    d = (log_s2 - pooled) / np.sqrt(2.0 / f)
    statistic = float(np.sum(d**2))
    df = persons - 1
    p_value = float(stats.chi2.sf(statistic, df))
    basis = f"{persons} persons, median {np.median(f):.0f} residual df each"
    if p_value >= ALPHA:
        verdict = f"no evidence that the level-1 variance differs between persons (H = {statistic:.1f} on {df} df; {basis})"
    else:
        verdict = (
            f"the level-1 variance differs between persons beyond chance (H = {statistic:.1f} on {df} df; {basis}): "
            "look for outlying persons or a missing level-1 predictor"
        )
    if np.median(f) < 3:
        verdict += "; with so few residual df per person the chi-square approximation is rough"
    return _row(check, statistic, p_value, verdict)


def residual_link_check(
    *, residual_rms: np.ndarray, blups: np.ndarray, term: str
) -> dict[str, object]:
    """Spearman correlation of each person's RMS level-1 residual with a random effect."""
    check = f"level-1 residual size versus random effect {term} (Spearman rho)"
    if residual_rms.size < 3 or np.ptp(blups) == 0 or np.ptp(residual_rms) == 0:
        return _row(check, None, None, "not tested: too few persons or no variation")
    result = stats.spearmanr(residual_rms, blups)
    rho, p_value = float(result.statistic), float(result.pvalue)
    if p_value >= ALPHA:
        verdict = f"the size of a person's level-1 residuals is unrelated to their {term} effect (rho = {rho:.2f})"
    else:
        verdict = (
            f"persons with {'higher' if rho > 0 else 'lower'} {term} effects have larger level-1 residuals "
            f"(rho = {rho:.2f}): the level-1 variance depends on the person's trajectory"
        )
    return _row(check, rho, p_value, verdict)


def assumptions_table(rows: Sequence[dict[str, object]]) -> pl.DataFrame:
    """Assemble the ``assumptions`` table."""
    return pl.DataFrame(list(rows), schema=ASSUMPTIONS_SCHEMA)
