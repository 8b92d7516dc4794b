"""Ordinary least squares with naive and cluster-robust (CR1) inference, without statsmodels.

The part of statsmodels' ``OLS`` that :mod:`pipeline.analysis.ols` uses, with
the same call (``OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": g},
use_t=True)``) and computed in the same order of operations, so that the
numbers agree to the last bit (``tests/test_least_squares.py`` compares them
with statsmodels). Importing statsmodels took about 0.5 s of every run; this
module imports in no time.

- Coefficients: beta = X^+ y, with X^+ the pseudo-inverse of X from its
  singular value decomposition (singular values at or below 1e-15 times the
  largest are treated as zero); rank = the number of singular values kept by
  ``numpy.linalg.matrix_rank``.
- Naive covariance: s^2 (X'X)^+, with (X'X)^+ = X^+ X^+' and
  s^2 = e'e / (n - rank); t-tests on n - rank degrees of freedom.
- Cluster-robust covariance (CR1): (X'X)^+ M (X'X)^+ with the meat
  M = sum_g (X_g' e_g)(X_g' e_g)', times G / (G - 1) * (n - 1) / (n - p) (G
  clusters, p columns of X); t-tests on G - 1 degrees of freedom.

Only t-based inference (``use_t`` true or unset) is provided: it is all the
caller uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["OLS", "OLSResults", "pseudo_inverse"]

RCOND = 1e-15
"""Singular values at or below ``RCOND`` times the largest count as zero."""


def pseudo_inverse(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X^+, the singular values of X): the Moore-Penrose pseudo-inverse from the SVD."""
    X = np.asarray(X)
    u, singular, vt = np.linalg.svd(X, full_matrices=False)
    cutoff = RCOND * np.max(singular)
    inverted = np.zeros_like(singular)
    kept = singular > cutoff
    inverted[kept] = 1.0 / singular[kept]
    return np.dot(vt.T, inverted[:, None] * u.T), singular


@dataclass(frozen=True, slots=True)
class OLSResults:
    """Estimates, residuals and the chosen covariance of an OLS fit."""

    params: np.ndarray
    resid: np.ndarray
    cov: np.ndarray
    df_resid: float
    df_inference: float

    def cov_params(self) -> np.ndarray:
        """The covariance matrix of the coefficients (naive or cluster-robust)."""
        return self.cov

    @property
    def bse(self) -> np.ndarray:
        """Standard errors of the coefficients."""
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.diag(self.cov))

    @property
    def tvalues(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.params / self.bse

    @property
    def pvalues(self) -> np.ndarray:
        """Two-sided p-values of the t-tests on :attr:`df_inference` degrees of freedom."""
        from scipy import stats

        with np.errstate(divide="ignore", invalid="ignore"):
            return stats.t.sf(np.abs(self.tvalues), self.df_inference) * 2


class OLS:
    """``OLS(y, X)``: y (n,) regressed on the columns of X (n, p), no intercept added."""

    def __init__(self, endog: Any, exog: Any) -> None:
        self.endog = np.asarray(endog, dtype=float)
        self.exog = np.asarray(exog, dtype=float)
        if self.exog.ndim != 2 or self.endog.shape != (self.exog.shape[0],):
            raise ValueError(
                f"OLS: y must be (n,) and X (n, p); got {self.endog.shape} and {self.exog.shape}"
            )

    def fit(
        self,
        cov_type: Literal["nonrobust", "cluster"] = "nonrobust",
        cov_kwds: Mapping[str, Any] | None = None,
        use_t: bool | None = None,
    ) -> OLSResults:
        """The least-squares fit; ``cov_type="cluster"`` needs ``cov_kwds={"groups": codes}``."""
        if use_t is False:
            raise ValueError("OLS: only t-based inference is provided (use_t=True or None)")
        X, y = self.exog, self.endog
        pinv, singular = pseudo_inverse(X)
        bread = np.dot(pinv, pinv.T)  # (X'X)^+
        rank = np.linalg.matrix_rank(np.diag(singular))
        params = np.dot(pinv, y)
        resid = y - np.dot(X, params)
        nobs, k = X.shape
        df_resid = float(nobs - rank)
        if cov_type == "nonrobust":
            scale = np.dot(resid, resid) / df_resid
            return OLSResults(
                params=params, resid=resid, cov=bread * scale, df_resid=df_resid,
                df_inference=df_resid,
            )  # fmt: skip
        if cov_type != "cluster":
            raise ValueError(f"OLS: cov_type must be 'nonrobust' or 'cluster', not {cov_type!r}")
        if not cov_kwds or "groups" not in cov_kwds:
            raise ValueError("OLS: cov_type='cluster' needs cov_kwds={'groups': ...}")
        groups = np.asarray(cov_kwds["groups"]).squeeze()
        if groups.shape != (nobs,):
            raise ValueError(f"OLS: groups must be (n,) = ({nobs},); got {groups.shape}")
        codes = np.unique(groups, return_inverse=True)[1].ravel()
        clusters = int(codes.max()) + 1 if nobs else 0
        scores = X * resid[:, None]
        # per cluster, X_g' e_g: one bincount per column, then (G, p)
        sums = np.array([np.bincount(codes, weights=scores[:, j]) for j in range(k)]).T
        meat = np.dot(sums.T, sums)
        cov = np.dot(np.dot(bread, meat), bread.T)
        cov *= clusters / (clusters - 1.0) * ((nobs - 1.0) / float(nobs - k))
        return OLSResults(
            params=params, resid=resid, cov=cov, df_resid=df_resid,
            df_inference=float(clusters - 1),
        )  # fmt: skip
