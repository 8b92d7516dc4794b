"""Ordinary least squares versus the multilevel model.

The same fixed effects estimated three ways, side by side:

- OLS with the usual (naive) standard errors, which treat every observation as
  independent (statsmodels ``OLS``; t-tests on n - p df);
- OLS with cluster-robust (sandwich) standard errors clustered on persons:
  CR1 (statsmodels ``cov_type="cluster"``: the sandwich times
  G / (G - 1) * (n - 1) / (n - p); t-tests on G - 1 df, G the number of persons) and
  CR2 (Bell & McCaffrey 2002; Pustejovsky & Tipton 2018): the residuals of person g
  are multiplied by A_g = (I - H_gg)^(-1/2), H_gg = X_g (X'X)^(-1) X_g', and the
  t-test uses Bell and McCaffrey's Satterthwaite df under a working independence
  model, df = tr(G'G)^2 / tr((G'G)^2) with (G'G)_gh = delta_gh w_g'w_g - u_g' (X'X)^(-1) u_h,
  w_g = A_g X_g (X'X)^(-1) c and u_g = X_g' w_g for the coefficient c (computed
  without forming any n x n matrix). CR2 is the better small-sample choice;
- the mixed model (REML; Satterthwaite t-tests).

``se_ratio`` is se_mlm / se_ols: how many times larger the multilevel standard
error is than the naive one. ``flag`` is true where naive OLS and the mixed model
disagree about p < 0.05, in either direction; ``disagreement`` says which way. Naive
OLS significant and the mixed model not is the classic consequence of ignoring the
dependence of repeated measures; the reverse happens for within-person effects
(time), which the mixed model estimates more precisely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from scipy import stats

from schemas.tables import columns

if TYPE_CHECKING:
    from pipeline.analysis.context import AnalysisContext

__all__ = ["OLS_SCHEMA", "OlsEstimates", "cr2", "ols_estimates", "ols_vs_mlm_table", "tables"]

OLS_SCHEMA = columns("ols_vs_mlm")

SIGNIFICANCE = 0.05


@dataclass(frozen=True, slots=True)
class OlsEstimates:
    """OLS of y on X: estimates, naive, CR1 and CR2 standard errors, p-values, CR2 df."""

    estimate: np.ndarray
    se: np.ndarray
    p: np.ndarray
    se_cr1: np.ndarray
    p_cr1: np.ndarray
    se_cr2: np.ndarray
    df_cr2: np.ndarray
    p_cr2: np.ndarray


def cr2(
    *, X: np.ndarray, residuals: np.ndarray, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(CR2 covariance of the OLS coefficients, Bell-McCaffrey df of each coefficient)."""
    X = np.asarray(X, dtype=float)
    e = np.asarray(residuals, dtype=float)
    n, p = X.shape
    bread = np.linalg.inv(X.T @ X)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, n])
    clusters = starts.size
    meat_vectors = np.zeros((clusters, p))
    # W[g] = A_g X_g (X'X)^{-1}: n_g x p per cluster, kept per size class
    u = np.zeros((p, clusters, p))  # u[j, g] = X_g' A_g X_g (X'X)^{-1} e_j
    d = np.zeros((p, clusters))  # d[j, g] = |A_g X_g (X'X)^{-1} e_j|^2
    for size in np.unique(sizes):
        which = np.flatnonzero(sizes == size)
        rows = order[starts[which][:, None] + np.arange(size)[None, :]]  # (k, size)
        Xg = X[rows]  # (k, size, p)
        eg = e[rows]
        H = np.einsum("ksa,ab,ktb->kst", Xg, bread, Xg)
        values, vectors = np.linalg.eigh(np.eye(size)[None] - H)
        inv_sqrt = np.where(values > 1e-12, 1.0 / np.sqrt(np.clip(values, 1e-12, None)), 0.0)
        A = np.einsum("ksa,ka,kta->kst", vectors, inv_sqrt, vectors)
        adjusted = np.einsum("kst,kt->ks", A, eg)
        meat_vectors[which] = np.einsum("ksa,ks->ka", Xg, adjusted)
        W = np.einsum("kst,kta,ab->ksb", A, Xg, bread)  # (k, size, p): column j is w_g for e_j
        d[:, which] = np.einsum("ksj,ksj->jk", W, W)
        u[:, which, :] = np.einsum("ksa,ksj->jka", Xg, W)
    meat = meat_vectors.T @ meat_vectors
    covariance = bread @ meat @ bread
    df = np.empty(p)
    for j in range(p):
        uj, dj = u[j], d[j]
        product = bread @ (uj.T @ uj)  # p x p
        trace = float(np.sum(dj) - np.trace(product))
        diag_b = np.einsum("ga,ab,gb->g", uj, bread, uj)
        trace_sq = float(np.sum(dj**2) - 2.0 * np.sum(dj * diag_b) + np.trace(product @ product))
        df[j] = trace**2 / trace_sq if trace_sq > 0 else float("nan")
    return covariance, df


def ols_estimates(*, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> OlsEstimates:
    """OLS of y on X with naive, CR1 and CR2 (Bell-McCaffrey df) inference, clustered on ``groups``."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    codes = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    from pipeline.analysis.least_squares import OLS  # statsmodels' numbers, not its import

    naive = OLS(y, X).fit()
    robust = OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
    covariance, df = cr2(X=X, residuals=np.asarray(naive.resid), codes=codes)
    estimate = np.asarray(naive.params)
    se_cr2 = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_cr2 = 2.0 * stats.t.sf(np.abs(estimate / se_cr2), df)
    return OlsEstimates(
        estimate=estimate,
        se=np.asarray(naive.bse),
        p=np.asarray(naive.pvalues),
        se_cr1=np.asarray(robust.bse),
        p_cr1=np.asarray(robust.pvalues),
        se_cr2=se_cr2,
        df_cr2=df,
        p_cr2=p_cr2,
    )


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


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
    ols = ols_estimates(X=X, y=y, groups=groups)
    mixed = {row["term"]: row for row in fixed_effects.iter_rows(named=True)}
    rows = []
    for j, term in enumerate(terms):
        m = mixed[term]
        ols_significant = bool(ols.p[j] < SIGNIFICANCE)
        mlm_significant = m["p_value"] is not None and bool(m["p_value"] < SIGNIFICANCE)
        disagreement = None
        if ols_significant and not mlm_significant:
            disagreement = "naive OLS: p < 0.05; multilevel model: not"
        elif mlm_significant and not ols_significant:
            disagreement = "multilevel model: p < 0.05; naive OLS: not"
        rows.append(
            {
                "model": model,
                "term": term,
                "estimate_ols": float(ols.estimate[j]),
                "se_ols": float(ols.se[j]),
                "p_ols": _finite(ols.p[j]),
                "se_cr1": _finite(ols.se_cr1[j]),
                "p_cr1": _finite(ols.p_cr1[j]),
                "se_cr2": _finite(ols.se_cr2[j]),
                "df_cr2": _finite(ols.df_cr2[j]),
                "p_cr2": _finite(ols.p_cr2[j]),
                "estimate_mlm": float(m["estimate"]),
                "se_mlm": float(m["std_error"]),
                "p_mlm": m["p_value"],
                "se_ratio": float(m["std_error"]) / float(ols.se[j]) if ols.se[j] > 0 else None,
                "flag": disagreement is not None,
                "disagreement": disagreement,
            }
        )
    return pl.DataFrame(rows, schema=OLS_SCHEMA)


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """``ols_vs_mlm`` for every fitted model."""
    pieces = []
    for model in ctx.fitted_models:
        fit = ctx.fits[model.name]
        pieces.append(
            ols_vs_mlm_table(
                model=model.name,
                terms=fit.fixed_terms,
                X=np.asarray(fit.design.X, dtype=float),
                y=np.asarray(fit.design.y, dtype=float),
                groups=np.asarray(fit.design.group_codes),
                fixed_effects=fit.fixed_effects,
            )
        )
    return {"ols_vs_mlm": pl.concat(pieces)} if pieces else {}
