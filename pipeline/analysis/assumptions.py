"""Checks of the model's assumptions, each with a plain-language verdict, and chart data.

Level 1 (residuals e_ti = y_ti - x_ti' beta - z_ti' b_i, the conditional residuals):

- normality: Shapiro-Wilk (scipy) on all residuals when there are at most 5000,
  otherwise on a deterministic sample of 5000 (numpy generator seeded with
  ``SAMPLE_SEED``); the verdict also weighs skewness and excess kurtosis, because
  with many observations the test flags departures too small to matter;
- spread versus fitted: Spearman correlation of |residual| with the fitted value;
- variance by occasion: Brown-Forsythe test (Levene's test about the median)
  across occasions (``[data] occasion`` labels, else the distinct times, else ten
  quantile bins of time: :func:`pipeline.analysis.spec.occasions_of`);
- homogeneity of the level-1 variance across persons: HLM's H statistic
  (Raudenbush & Bryk 2002, sec. 9.3) with the exact moments of ln s^2 and a
  simulated null distribution (see :func:`heterogeneity_check`).

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
from scipy import special, stats

from pipeline.analysis.reliability import PersonOls
from pipeline.analysis.spec import Occasions
from schemas.tables import columns

__all__ = [
    "ASSUMPTIONS_SCHEMA",
    "SAMPLE_SEED",
    "h_statistic",
    "heterogeneity_check",
    "normality_check",
    "qq_theoretical",
    "residual_link_check",
    "spread_check",
    "variance_by_occasion",
]

ASSUMPTIONS_SCHEMA = columns("assumptions")

SAMPLE_SEED = 20240101
MAX_SHAPIRO = 5000
ALPHA = 0.05
HETEROGENEITY_DRAWS = 999
HETEROGENEITY_MAX_VALUES = 20_000_000
MIN_HETEROGENEITY_PERSONS = 2
LOW_POWER_DF = 3


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


def variance_by_occasion(
    *, residuals: np.ndarray, occasions: Occasions
) -> tuple[pl.DataFrame, dict[str, object]]:
    """The residual variance per occasion (chart data) and the Brown-Forsythe test across occasions."""
    residuals = np.asarray(residuals, dtype=float)
    table = (
        pl.DataFrame({"occasion": occasions.labels, "residual": residuals})
        .group_by("occasion")
        .agg(pl.len().cast(pl.Int64).alias("n"), pl.col("residual").var(ddof=1).alias("variance"))
        .with_columns(
            pl.col("occasion")
            .replace_strict(occasions.mean_time, return_dtype=pl.Float64)
            .alias("time")
        )
        .sort("time", "occasion")
        .select(columns("residual_variance_by_time").keys())
    )
    check = f"level-1 residuals: variance across occasions (Brown-Forsythe; occasions: {occasions.source})"
    groups = [
        residuals[occasions.labels == label]
        for label, n in zip(table["occasion"].to_list(), table["n"].to_list(), strict=True)
        if n >= 2
    ]
    if len(groups) < 2:
        return table, _row(
            check, None, None, "not tested: fewer than two occasions with two or more observations"
        )
    result = stats.levene(*groups, center="median")
    variances = [float(np.var(g, ddof=1)) for g in groups]
    ratio = max(variances) / min(variances) if min(variances) > 0 else float("inf")
    p_value = float(result.pvalue)
    if p_value >= ALPHA:
        verdict = (
            f"no evidence that the residual variance differs across the {len(groups)} occasions "
            f"(largest / smallest = {ratio:.2f})"
        )
    else:
        verdict = (
            f"the residual variance differs across occasions (largest / smallest = {ratio:.2f}): a model with "
            "a residual variance per wave may fit better; standard errors assume a common variance"
        )
    return table, _row(check, float(result.statistic), p_value, verdict)


def _log_variance_moments(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bias, variance and excess kurtosis of ln(s^2 / sigma^2) with s^2 ~ sigma^2 chi2(f) / f."""
    half = f / 2.0
    bias = special.digamma(half) - np.log(half)
    variance = special.polygamma(1, half)
    kurtosis = special.polygamma(3, half) / variance**2
    return bias, variance, kurtosis


def h_statistic(s2: np.ndarray, f: np.ndarray) -> float:
    """HLM's H with the exact moments of ln s^2: sum of squared standardised deviations of
    the bias-corrected log variances from their precision-weighted mean."""
    bias, variance, _ = _log_variance_moments(f)
    x = np.log(s2) - bias
    w = 1.0 / variance
    centre = float(np.sum(w * x) / np.sum(w))
    return float(np.sum(w * (x - centre) ** 2))


def _h_statistics(s2: np.ndarray, f: np.ndarray) -> np.ndarray:
    """H of each row of ``s2`` (draws x persons)."""
    bias, variance, _ = _log_variance_moments(f)
    x = np.log(s2) - bias
    w = 1.0 / variance
    centre = (x @ w) / np.sum(w)
    return ((x - centre[:, None]) ** 2) @ w


def heterogeneity_check(
    ols: PersonOls,
    *,
    parameters: int,
    seed: int = SAMPLE_SEED,
    draws: int = HETEROGENEITY_DRAWS,
) -> dict[str, object]:
    """HLM's H statistic for the homogeneity of the level-1 variance across persons.

    With s_j^2 person j's OLS residual variance on f_j = n_j - p df, ln s_j^2 has mean
    ln sigma^2 + digamma(f_j / 2) - ln(f_j / 2) and variance trigamma(f_j / 2) when the
    variance is common and the residuals normal. H sums the squared standardised
    deviations of the bias-corrected ln s_j^2 from their precision-weighted mean.
    With few df per person ln s^2 is far from normal (f = 1: excess kurtosis 4), so H is
    not chi-square on J - 1 df; its p-value comes from its exact null distribution under
    normality, simulated (s_j^2 = chi2(f_j) / f_j; H does not depend on sigma^2) with a
    seeded generator. With more than ``HETEROGENEITY_MAX_VALUES`` simulated values the
    null distribution is a scaled chi-square with H's exact mean J - 1 and variance
    sum(2 + kurtosis_j) (a normal limit with so many persons).
    """
    check = "level-1 variance across persons (HLM H statistic, exact moments)"
    f = ols.occasions - parameters
    s2 = np.divide(ols.residual_ss, f, out=np.zeros_like(ols.residual_ss), where=f > 0)
    keep = (f >= 1) & (s2 > 1e-12 * max(float(np.max(s2, initial=0.0)), 1e-300))
    f, s2 = f[keep].astype(float), s2[keep]
    persons = int(f.size)
    if persons < MIN_HETEROGENEITY_PERSONS:
        return _row(
            check,
            None,
            None,
            f"not tested: only {persons} persons have more occasions than growth parameters "
            f"(at least {MIN_HETEROGENEITY_PERSONS} are needed)",
        )
    statistic = h_statistic(s2, f)
    df = persons - 1
    if persons * draws <= HETEROGENEITY_MAX_VALUES:
        rng = np.random.default_rng(seed)
        chunk = max(1, 2_000_000 // persons)
        null = np.concatenate(
            [
                _h_statistics(rng.chisquare(f, size=(min(chunk, draws - start), persons)) / f, f)
                for start in range(0, draws, chunk)
            ]
        )
        p_value = float((1 + np.sum(null >= statistic)) / (draws + 1))
        method = f"p from {draws} simulated data sets under a common variance (seed {seed})"
    else:
        _, _, kurtosis = _log_variance_moments(f)
        mean, variance = float(df), float(np.sum(2.0 + kurtosis))
        scale = variance / (2.0 * mean)
        p_value = float(stats.chi2.sf(statistic / scale, 2.0 * mean**2 / variance))
        method = "p from a scaled chi-square with H's exact null mean and variance"
    basis = f"{persons} persons, median {np.median(f):.0f} residual df each; {method}"
    if p_value >= ALPHA:
        verdict = (
            f"no evidence that the level-1 variance differs between persons (H = {statistic:.1f}, "
            f"null mean {df}; {basis})"
        )
    else:
        verdict = (
            f"the level-1 residual variances of the persons are more dispersed than a common "
            f"variance with normal residuals would give (H = {statistic:.1f}, null mean {df}; {basis}). "
            "Heavy-tailed residuals or outlying persons give the same signal as a variance that "
            "differs between persons: look at the QQ plot and at the persons with the largest residuals"
        )
    if np.median(f) < LOW_POWER_DF:
        verdict += (
            f"; with a median of {np.median(f):.0f} residual df per person each person's variance is "
            "estimated very roughly, so the test has little power"
        )
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
