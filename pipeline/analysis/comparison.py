"""Model comparison: deviance, AIC, BIC and likelihood-ratio tests between nested models.

All quantities come from maximum-likelihood fits (REML fits are refitted by ML
first, as lme4's ``anova()`` does): REML likelihoods of models with different
fixed effects are not comparable.

Each model is tested against the latest earlier model nested in it (its fixed
and random terms are subsets, same response and observations, fewer
parameters). The reference distribution depends on what the larger model adds:

- only fixed effects, or covariance parameters not on the boundary: chi2(df)
  (``test = "LRT"``);
- one random effect (its variance is 0 under the null, on the boundary of the
  parameter space): the 50:50 mixture of chi2(df - 1) and chi2(df)
  (Self & Liang 1987; Stram & Lee 1994; Snijders & Bosker 2012, sec. 6.2), with
  chi2(0) the point mass at zero (``test = "LRT, 50:50 mixture chi2(1):chi2(2)"``);
- more than one random effect: chi2(df), which is conservative (p too large)
  and is labelled so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

__all__ = [
    "COMPARISON_SCHEMA",
    "Compared",
    "comparison_table",
    "holm",
    "is_nested",
    "mixture_p_value",
    "npar",
]

COMPARISON_SCHEMA = {
    "model": pl.String,
    "npar": pl.Int64,
    "deviance": pl.Float64,
    "aic": pl.Float64,
    "bic": pl.Float64,
    "chisq": pl.Float64,
    "df": pl.Int64,
    "p_value": pl.Float64,
    "test": pl.String,
    "against": pl.String,
}


@dataclass(frozen=True, slots=True)
class Compared:
    """A model in the comparison: its name and its maximum-likelihood fit."""

    name: str
    fit: Any


def npar(fit: Any) -> int:
    """Parameters as lme4's ``logLik`` counts them: fixed effects, theta, sigma."""
    return int(len(fit.beta) + len(fit.theta) + 1)


def mixture_p_value(chisq: float, df: int) -> float:
    """p-value of a 50:50 mixture of chi2(df - 1) and chi2(df); chi2(0) is the point mass at 0."""
    if df < 1:
        raise ValueError(f"the mixture needs df >= 1, got {df}")
    if chisq <= 0.0:
        return 1.0
    lower = float(stats.chi2.sf(chisq, df - 1)) if df > 1 else 0.0
    return 0.5 * lower + 0.5 * float(stats.chi2.sf(chisq, df))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in the input order (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return adjusted
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def is_nested(small: Any, big: Any) -> bool:
    """Whether ``small`` is a restriction of ``big`` (by term names and parameter counts)."""
    return (
        small.response == big.response
        and small.nobs == big.nobs
        and set(small.fixed_terms) <= set(big.fixed_terms)
        and set(small.random_terms) <= set(big.random_terms)
        and npar(small) < npar(big)
    )


def _test_label(small: Any, big: Any, df: int) -> tuple[str, bool]:
    added_random = len(set(big.random_terms) - set(small.random_terms))
    if added_random == 1:
        return f"LRT, 50:50 mixture chi2({df - 1}):chi2({df})", True
    if added_random > 1:
        return "LRT, chi2 (conservative: several variances tested on the boundary)", False
    return "LRT", False


def comparison_table(models: Sequence[Compared]) -> pl.DataFrame:
    """The ``model_comparison`` table for ML fits given in order (simplest first)."""
    rows: list[dict[str, Any]] = []
    for position, entry in enumerate(models):
        fit = entry.fit
        parameters = npar(fit)
        deviance = -2.0 * float(fit.loglik)
        row: dict[str, Any] = {
            "model": entry.name,
            "npar": parameters,
            "deviance": deviance,
            "aic": deviance + 2.0 * parameters,
            "bic": deviance + math.log(fit.nobs) * parameters,
            "chisq": None,
            "df": None,
            "p_value": None,
            "test": None,
            "against": None,
        }
        against = next((m for m in reversed(models[:position]) if is_nested(m.fit, fit)), None)
        if against is not None:
            df = parameters - npar(against.fit)
            chisq = max(0.0, -2.0 * float(against.fit.loglik) - deviance)
            label, mixture = _test_label(against.fit, fit, df)
            p_value = mixture_p_value(chisq, df) if mixture else float(stats.chi2.sf(chisq, df))
            row.update(chisq=chisq, df=df, p_value=p_value, test=label, against=against.name)
        rows.append(row)
    return pl.DataFrame(rows, schema=COMPARISON_SCHEMA)
