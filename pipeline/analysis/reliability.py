"""HLM's reliability of the OLS growth parameters and chi-square tests of the
variance components (Raudenbush & Bryk 2002, sec. 3.5 and 6.2).

For each person j whose level-1 design X_j = [1, t, t^2, ...] has full column
rank, the OLS growth parameters beta_j and their sampling covariance
V_j = sigma^2 (X_j' X_j)^{-1} are computed (sigma^2 is the model's level-1
variance). For a growth parameter q with variance tau_qq:

- reliability: lambda_q = mean over j of tau_qq / (tau_qq + V_j[q, q]);
- chi-square test of tau_qq = 0: chi2 = sum over j of
  (beta_qj - gamma_q)^2 / V_j[q, q] on J - 1 df (gamma_q the fixed effect of the
  unconditional growth model, J the persons with enough data).

Only persons with enough data for OLS enter, as in HLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from scipy import stats

from pipeline.analysis.sequence import GROWTH, time_terms
from schemas.tables import columns

if TYPE_CHECKING:
    from pipeline.analysis.context import AnalysisContext

__all__ = ["RELIABILITY_SCHEMA", "PersonOls", "per_person_ols", "reliability_table", "tables"]

RELIABILITY_SCHEMA = columns("reliability")


@dataclass(frozen=True, slots=True)
class PersonOls:
    """Per-person OLS of the outcome on the polynomial in time (persons with full rank only).

    coefficients: (J, p); xtx_inverse: (J, p, p); residual_ss, occasions: (J,);
    persons: the J person ids, in sorted order.
    """

    persons: np.ndarray
    coefficients: np.ndarray
    xtx_inverse: np.ndarray
    residual_ss: np.ndarray
    occasions: np.ndarray


def per_person_ols(
    *, persons: np.ndarray, time: np.ndarray, outcome: np.ndarray, order: int
) -> PersonOls:
    """Fit y = b0 + b1 t + ... + b_order t^order by OLS within each person, in one pass."""
    time = np.asarray(time, dtype=float)
    y = np.asarray(outcome, dtype=float)
    levels, codes = np.unique(np.asarray(persons), return_inverse=True)
    codes = codes.ravel()
    m = levels.size
    p = order + 1
    X = np.vander(time, p, increasing=True)
    xtx = np.empty((m, p, p))
    xty = np.empty((m, p))
    for a in range(p):
        xty[:, a] = np.bincount(codes, weights=X[:, a] * y, minlength=m)
        for b in range(a, p):
            xtx[:, a, b] = xtx[:, b, a] = np.bincount(codes, weights=X[:, a] * X[:, b], minlength=m)
    yty = np.bincount(codes, weights=y * y, minlength=m)
    occasions = np.bincount(codes, minlength=m)
    distinct = (
        pl.DataFrame({"code": codes, "time": time}).group_by("code").agg(pl.col("time").n_unique())
    )
    distinct_times = np.zeros(m, dtype=int)
    distinct_times[distinct["code"].to_numpy()] = distinct["time"].to_numpy()
    keep = distinct_times >= p
    xtx, xty, yty, occasions = xtx[keep], xty[keep], yty[keep], occasions[keep]
    inverse = np.linalg.inv(xtx) if keep.any() else np.zeros((0, p, p))
    coefficients = np.einsum("jab,jb->ja", inverse, xty)
    residual_ss = np.maximum(yty - np.einsum("ja,ja->j", coefficients, xty), 0.0)
    return PersonOls(
        persons=levels[keep],
        coefficients=coefficients,
        xtx_inverse=inverse,
        residual_ss=residual_ss,
        occasions=occasions,
    )


def reliability_table(
    *,
    ols: PersonOls,
    coefficient_names: Sequence[str],
    tau: Sequence[float | None],
    gamma: Sequence[float],
    sigma2: float,
) -> pl.DataFrame:
    """The ``reliability`` table: one row per growth parameter with a variance (tau not None)."""
    rows = []
    persons = ols.coefficients.shape[0]
    for q, name in enumerate(coefficient_names):
        variance = tau[q]
        if variance is None:
            continue
        v = sigma2 * ols.xtx_inverse[:, q, q]
        if persons < 2:
            rows.append(
                {
                    "coefficient": name,
                    "reliability": None,
                    "chisq": None,
                    "df": None,
                    "p_value": None,
                }
            )
            continue
        reliability = float(np.mean(variance / (variance + v)))
        chisq = float(np.sum((ols.coefficients[:, q] - gamma[q]) ** 2 / v))
        df = persons - 1
        rows.append(
            {
                "coefficient": name,
                "reliability": reliability,
                "chisq": chisq,
                "df": df,
                "p_value": float(stats.chi2.sf(chisq, df)),
            }
        )
    return pl.DataFrame(rows, schema=RELIABILITY_SCHEMA)


def person_ols_of(ctx: AnalysisContext, name: str) -> PersonOls:
    """Per-person OLS on the polynomial in coded time, on the rows model ``name`` used
    (computed once for the steps that use it)."""
    fit = ctx.fits[name]
    used = fit.frame
    return ctx.cached(
        "person OLS",
        name,
        lambda: per_person_ols(
            persons=np.asarray(fit.design.group_codes),
            time=used[ctx.spec.time_name].cast(pl.Float64).to_numpy(),
            outcome=np.asarray(fit.design.y, dtype=float),
            order=ctx.spec.polynomial,
        ),
    )


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """``reliability`` of the unconditional growth model's growth parameters."""
    fit = ctx.fit(GROWTH)
    if fit is None:
        return {}
    names = ["(Intercept)", *time_terms(ctx.spec.time_name, ctx.spec.polynomial)]
    components = fit.variance_components.filter(
        (pl.col("group") != "Residual") & pl.col("term2").is_null()
    )
    tau = {row["term1"]: float(row["variance"]) for row in components.iter_rows(named=True)}
    estimates = dict(
        zip(
            fit.fixed_effects["term"].to_list(),
            fit.fixed_effects["estimate"].to_list(),
            strict=True,
        )
    )
    return {
        "reliability": reliability_table(
            ols=person_ols_of(ctx, GROWTH),
            coefficient_names=names,
            tau=[tau.get(name) for name in names],
            gamma=[float(estimates[name]) for name in names],
            sigma2=float(fit.sigma) ** 2,
        )
    }
