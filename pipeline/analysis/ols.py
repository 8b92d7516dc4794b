"""Ordinary least squares versus the multilevel model.

The same fixed effects estimated three ways, side by side:

- OLS with the usual (naive) standard errors, which treat every observation as
  independent (as statsmodels ``OLS``; t-tests on n - p df);
- OLS with cluster-robust (sandwich) standard errors clustered on persons:
  CR1 (as statsmodels ``cov_type="cluster"``: the sandwich times
  G / (G - 1) * (n - 1) / (n - p); t-tests on G - 1 df, G the number of persons) and
  CR2 (Bell & McCaffrey 2002; Pustejovsky & Tipton 2018): the residuals of person g
  are multiplied by A_g = (I - H_gg)^(-1/2), H_gg = X_g (X'X)^(-1) X_g', and the
  t-test uses Bell and McCaffrey's Satterthwaite df under a working independence
  model, df = tr(G'G)^2 / tr((G'G)^2) with (G'G)_gh = delta_gh w_g'w_g - u_g' (X'X)^(-1) u_h,
  w_g = A_g X_g (X'X)^(-1) c and u_g = X_g' w_g for the coefficient c (computed
  without forming any n x n matrix). CR2 is the better small-sample choice;
- the mixed model (REML; Satterthwaite t-tests).

The OLS numbers come from cross-products and sums per person, in passes over the rows
without sorting ids (:func:`ols_estimates`); the rows are sorted by person once for all
the models that share them (:class:`Clusters`, for CR2). The tests check them against
statsmodels to 1e-10 and against R's clubSandwich.

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
import scipy.linalg
from scipy import stats

from schemas.tables import columns

if TYPE_CHECKING:
    from pipeline.analysis.context import AnalysisContext

__all__ = [
    "OLS_SCHEMA",
    "Clusters",
    "OlsEstimates",
    "cr2",
    "ols_estimates",
    "ols_vs_mlm_table",
    "per_cluster_sums",
    "tables",
]

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


@dataclass(frozen=True, slots=True)
class Clusters:
    """The rows of each cluster: ``order`` sorts the rows by cluster, ``starts`` and ``sizes``
    locate each cluster's rows in that order; ``codes`` each row's cluster (0..G-1)."""

    codes: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    @property
    def count(self) -> int:
        return int(self.starts.size)

    @classmethod
    def of(cls, groups: np.ndarray) -> Clusters:
        """From any per-row labels; integer codes 0..G-1 (a design's ``group_codes``) are
        used as they are, other labels are coded first."""
        groups = np.asarray(groups)
        if groups.dtype.kind in "iu" and groups.size and groups.min() >= 0:
            counts = np.bincount(groups)
            if np.all(counts > 0):
                codes = groups.astype(np.int64, copy=False)
            else:  # gaps: renumber the clusters present
                codes = (np.cumsum(counts > 0) - 1)[groups]
        else:
            codes = np.unique(groups, return_inverse=True)[1].ravel()
        order = np.argsort(codes, kind="stable")
        sizes = np.bincount(codes)
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        return cls(codes=codes, order=order, starts=starts, sizes=sizes)


def _blocks(Xg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first cluster of each distinct X_g, each cluster's distinct X_g) for (k, size, p)."""
    k = Xg.shape[0]
    flat = Xg.reshape(k, -1)
    names = [f"c{j}" for j in range(flat.shape[1])]
    frame = pl.DataFrame(flat, schema=names, orient="row").with_row_index("_row")
    firsts = frame.unique(subset=names, keep="first", maintain_order=True).select("_row", *names)
    block = (
        frame.join(
            firsts.with_row_index("_block").drop("_row"),
            on=names,
            how="left",
            maintain_order="left",
            nulls_equal=True,
        )["_block"]
        .cast(pl.Int64)
        .to_numpy()
    )
    return firsts["_row"].cast(pl.Int64).to_numpy(), block


def cr2(
    *,
    X: np.ndarray,
    residuals: np.ndarray,
    codes: np.ndarray,
    clusters: Clusters | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(CR2 covariance of the OLS coefficients, Bell-McCaffrey df of each coefficient).

    A_g depends on X_g only, so it is computed once per distinct X_g (persons with the same
    occasions and the same covariates share it: a handful of blocks in a growth design);
    the df sums over persons are sums over blocks weighted by their counts. ``clusters``
    (:meth:`Clusters.of` ``codes``) saves sorting the rows again when models share them."""
    X = np.asarray(X, dtype=float)
    e = np.asarray(residuals, dtype=float)
    n, p = X.shape
    bread = np.linalg.inv(X.T @ X)
    layout = Clusters.of(codes) if clusters is None else clusters
    order, starts, sizes = layout.order, layout.starts, layout.sizes
    meat_vectors = np.zeros((layout.count, p))
    # per distinct block b: d[j, b] = |A_b X_b (X'X)^{-1} e_j|^2 and
    # u[j, b] = X_b' A_b X_b (X'X)^{-1} e_j, with its number of clusters
    d_parts, u_parts, counts = [], [], []
    for size in np.unique(sizes):
        which = np.flatnonzero(sizes == size)
        rows = order[starts[which][:, None] + np.arange(size)[None, :]]  # (k, size)
        Xg = X[rows]  # (k, size, p)
        firsts, block = _blocks(Xg)
        Xb = Xg[firsts]  # (B, size, p)
        H = np.einsum("ksa,ab,ktb->kst", Xb, bread, Xb)
        values, vectors = np.linalg.eigh(np.eye(size)[None] - H)
        inv_sqrt = np.where(values > 1e-12, 1.0 / np.sqrt(np.clip(values, 1e-12, None)), 0.0)
        A = np.einsum("ksa,ka,kta->kst", vectors, inv_sqrt, vectors)
        M = np.einsum("kst,kta->ksa", A, Xb)  # A_b X_b
        meat_vectors[which] = np.einsum("ksa,ks->ka", M[block], e[rows])  # X_g' A_g e_g
        W = M @ bread  # (B, size, p): column j is w_b for e_j
        d_parts.append(np.einsum("ksj,ksj->jk", W, W))
        u_parts.append(np.einsum("ksa,ksj->jka", Xb, W))
        counts.append(np.bincount(block, minlength=firsts.size).astype(float))
    meat = meat_vectors.T @ meat_vectors
    covariance = bread @ meat @ bread
    d = np.concatenate(d_parts, axis=1)
    u = np.concatenate(u_parts, axis=1)
    c = np.concatenate(counts)
    df = np.empty(p)
    for j in range(p):
        uj, dj = u[j], d[j]
        product = bread @ ((uj.T * c) @ uj)  # p x p: bread times the sum over clusters
        trace = float(c @ dj - np.trace(product))
        diag_b = np.einsum("ga,ab,gb->g", uj, bread, uj)
        trace_sq = float(c @ dj**2 - 2.0 * (c @ (dj * diag_b)) + np.trace(product @ product))
        df[j] = trace**2 / trace_sq if trace_sq > 0 else float("nan")
    return covariance, df


def per_cluster_sums(values: np.ndarray, codes: np.ndarray, count: int) -> np.ndarray:
    """(G, k): the sum of each column of ``values`` (n, k) over the rows of each cluster."""
    return np.column_stack(
        [np.bincount(codes, weights=values[:, j], minlength=count) for j in range(values.shape[1])]
    )


def ols_estimates(
    *, X: np.ndarray, y: np.ndarray, groups: np.ndarray, clusters: Clusters | None = None
) -> OlsEstimates:
    """OLS of y on X with naive, CR1 and CR2 (Bell-McCaffrey df) inference, clustered on ``groups``.

    Everything comes from cross-products: beta from X'X = R'R and X'y (the columns centred
    when X has an intercept, R from a QR of the rows, and one step of refinement with the
    residuals, so a badly conditioned X loses no accuracy), the naive
    covariance from the residual sum of squares, and the cluster-robust (CR1) sandwich
    from the per-person sums s_g = X_g' e_g: meat = sum_g s_g s_g', times
    G / (G - 1) * (n - 1) / (n - p) as statsmodels' ``cov_type="cluster"`` (t on G - 1
    df). ``clusters`` (:meth:`Clusters.of` ``groups``) is shared by models on the same rows.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    layout = Clusters.of(groups) if clusters is None else clusters
    n, p = X.shape
    # with an intercept column, the other columns are centred (X_c = X T, beta = T beta_c,
    # cov = T cov_c T'): a time far from 0 then costs no accuracy in X'X
    T = np.eye(p)
    ones = [j for j in range(p) if np.all(X[:, j] == 1.0)]
    if ones:
        T[ones[0], :] = -X.mean(axis=0)
        T[ones[0], ones[0]] = 1.0
        T[ones[0], ones[1:]] = 0.0
        Xc = X + X[:, [ones[0]]] * T[ones[0]][None, :]
        Xc[:, ones] = X[:, ones]
    else:
        Xc = X
    scale = np.sqrt(np.einsum("ij,ij->j", Xc, Xc))
    scale[scale == 0] = 1.0
    # R'R = X'X (columns scaled), R from a QR of the rows: as accurate as statsmodels' pinv
    # where forming X'X would square the condition number; R is p x p and, like X'X,
    # can be merged over chunks of rows (stack the chunks' R and factor again)
    R = np.linalg.qr(Xc / scale, mode="r")
    R_inv = scipy.linalg.solve_triangular(R, np.eye(p))

    def solve(b: np.ndarray) -> np.ndarray:
        return (R_inv @ (R_inv.T @ (b / scale))) / scale

    beta_c = solve(Xc.T @ y)
    residuals = y - Xc @ beta_c
    beta_c = beta_c + solve(Xc.T @ residuals)  # one step of refinement (Bjorck's CSNE)
    residuals = y - Xc @ beta_c
    bread_c = (R_inv @ R_inv.T) / np.outer(scale, scale)
    beta = T @ beta_c
    bread = T @ bread_c @ T.T
    df_resid = n - p
    sigma2 = float(residuals @ residuals) / df_resid if df_resid > 0 else float("nan")
    se = np.sqrt(np.maximum(np.diag(bread), 0.0) * sigma2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_naive = 2.0 * stats.t.sf(np.abs(beta / se), df_resid)
    G = layout.count
    sums = per_cluster_sums(Xc * residuals[:, None], layout.codes, G)  # s_g = X_g' e_g
    meat = sums.T @ sums
    correction = G / (G - 1) * (n - 1) / df_resid if G > 1 and df_resid > 0 else float("nan")
    cov_cr1 = T @ (correction * bread_c @ meat @ bread_c) @ T.T
    se_cr1 = np.sqrt(np.maximum(np.diag(cov_cr1), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_cr1 = 2.0 * stats.t.sf(np.abs(beta / se_cr1), G - 1)
    covariance, df = cr2(X=X, residuals=residuals, codes=layout.codes, clusters=layout)
    se_cr2 = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_cr2 = 2.0 * stats.t.sf(np.abs(beta / se_cr2), df)
    return OlsEstimates(
        estimate=beta,
        se=se,
        p=p_naive,
        se_cr1=se_cr1,
        p_cr1=p_cr1,
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
    clusters: Clusters | None = None,
) -> pl.DataFrame:
    """The ``ols_vs_mlm`` rows for one model; ``fixed_effects`` is the mixed model's table."""
    ols = ols_estimates(X=X, y=y, groups=groups, clusters=clusters)
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
    layouts: dict[int, Clusters] = {}  # the persons' rows, sorted once for models that share them
    for model in ctx.fitted_models:
        fit = ctx.fits[model.name]
        codes = np.asarray(fit.design.group_codes)
        layout = next(
            (
                known
                for known in layouts.values()
                if known.codes.shape == codes.shape and np.array_equal(known.codes, codes)
            ),
            None,
        )
        if layout is None:
            layout = layouts.setdefault(len(layouts), Clusters.of(codes))
        pieces.append(
            ols_vs_mlm_table(
                model=model.name,
                terms=fit.fixed_terms,
                X=np.asarray(fit.design.X, dtype=float),
                y=np.asarray(fit.design.y, dtype=float),
                groups=codes,
                fixed_effects=fit.fixed_effects,
                clusters=layout,
            )
        )
    return {"ols_vs_mlm": pl.concat(pieces)} if pieces else {}
