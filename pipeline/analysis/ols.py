"""Ordinary least squares versus the multilevel model.

The same fixed effects estimated three ways, side by side:

- OLS with the usual (naive) standard errors, which treat every observation as
  independent (statsmodels ``OLS``; t-tests on n - p df);
- OLS with cluster-robust (sandwich) standard errors clustered on persons
  (statsmodels ``cov_type="cluster"`` with its small-sample correction; t-tests on
  G - 1 df, G the number of persons);
- the mixed model (REML; Satterthwaite t-tests).

``se_ratio`` is se_mlm / se_ols: how many times larger the multilevel standard
error is than the naive one. ``flag`` is true where naive OLS calls the effect
significant (p < 0.05) and the mixed model does not: the classic consequence of
ignoring the dependence of repeated measures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

__all__ = ["OLS_SCHEMA", "OlsEstimates", "ols_estimates", "ols_vs_mlm_table"]

OLS_SCHEMA = {
    "model": pl.String,
    "term": pl.String,
    "estimate_ols": pl.Float64,
    "se_ols": pl.Float64,
    "p_ols": pl.Float64,
    "se_cluster": pl.Float64,
    "p_cluster": pl.Float64,
    "estimate_mlm": pl.Float64,
    "se_mlm": pl.Float64,
    "p_mlm": pl.Float64,
    "se_ratio": pl.Float64,
    "flag": pl.Boolean,
}

SIGNIFICANCE = 0.05

OlsEstimates = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def ols_estimates(*, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> OlsEstimates:
    """(estimate, naive SE, naive p, cluster-robust SE, cluster-robust p) of OLS of y on X."""
    import statsmodels.api as sm  # ~1 s of imports, only when OLS is fitted (not for validate)

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    codes = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    naive = sm.OLS(y, X).fit()
    robust = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
    return (
        np.asarray(naive.params),
        np.asarray(naive.bse),
        np.asarray(naive.pvalues),
        np.asarray(robust.bse),
        np.asarray(robust.pvalues),
    )


def ols_vs_mlm_table(
    *,
    model: str,
    terms: Sequence[str],
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    fixed_effects: pl.DataFrame,
) -> pl.DataFrame:
    """The ``ols_vs_mlm`` rows for one model; ``fixed_effects`` is the mixed model's table."""
    estimate, se, p, se_cluster, p_cluster = ols_estimates(X=X, y=y, groups=groups)
    mixed = {row["term"]: row for row in fixed_effects.iter_rows(named=True)}
    rows = []
    for j, term in enumerate(terms):
        m = mixed[term]
        rows.append(
            {
                "model": model,
                "term": term,
                "estimate_ols": float(estimate[j]),
                "se_ols": float(se[j]),
                "p_ols": float(p[j]),
                "se_cluster": float(se_cluster[j]),
                "p_cluster": float(p_cluster[j]),
                "estimate_mlm": float(m["estimate"]),
                "se_mlm": float(m["std_error"]),
                "p_mlm": float(m["p_value"]),
                "se_ratio": float(m["std_error"]) / float(se[j]) if se[j] > 0 else None,
                "flag": bool(p[j] < SIGNIFICANCE and not m["p_value"] < SIGNIFICANCE),
            }
        )
    return pl.DataFrame(rows, schema=OLS_SCHEMA)
