"""Is the polynomial in time good enough? Observed against model-implied means, and a test against the saturated means model.

``occasion_means``: per occasion (each distinct value of the time column, or of
an occasion column), the observed mean of the outcome with its standard
error, and the model-implied (marginal, fixed-part) mean of the same rows:
the two series a chart draws on one panel. Under dropout the observed means
describe the persons still present, the model-implied ones the model's
population; a gap between them is not by itself a misfit.

``saturated_means_test``: a likelihood-ratio test (ML) of the fitted
polynomial model against the saturated means model, which replaces time in
the fixed part by one mean per occasion (time as categories) crossed with
the same time-free predictors, and keeps the random part unchanged (Singer &
Willett 2003, sec. 6.3; the "means model" of MMRM). The polynomial model is
nested in it when each of its fixed-effects columns lies in the saturated
model's column space (checked numerically); df = rank(saturated) - rank(polynomial).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl
import scipy.linalg
import scipy.stats

from pipeline.analysis.designs import distinct_rows
from pipeline.errors import ModelError
from pipeline.model.fit import fit_design
from pipeline.model.results import GrowthFit
from schemas.tables import columns

__all__ = [
    "COLUMNS",
    "MEANS_COLUMNS",
    "MAX_OCCASIONS",
    "occasion_means",
    "saturated_means_test",
]

MAX_OCCASIONS = 50  # a saturated means model with more occasions is not a sensible reference

MEANS_COLUMNS: dict[str, pl.DataType] = {
    k: v for k, v in columns("implied_means").items() if k != "model"
}  # schemas/tables.py

COLUMNS: dict[str, pl.DataType] = columns("functional_form")  # schemas/tables.py


def _occasions(fit: GrowthFit, time: str, occasion: str | None) -> np.ndarray:
    column = occasion or time
    if column not in fit.frame.columns:
        raise ModelError(
            f"column {column!r} is not in the data of {fit.formula!r} (columns: {', '.join(fit.frame.columns)})"
        )
    values = fit.frame[column]
    if not values.dtype.is_numeric():
        raise ModelError(f"the occasion column {column!r} must be numeric, not {values.dtype}")
    return values.cast(pl.Float64).to_numpy()


def occasion_means(fit: GrowthFit, *, time: str, occasion: str | None = None) -> pl.DataFrame:
    """Observed and model-implied means per occasion (columns :data:`MEANS_COLUMNS`)."""
    occ = _occasions(fit, time, occasion)
    frame = pl.DataFrame(
        {"occasion": occ, "y": fit.design.y, "yhat": fit.fitted("marginal")},
        schema={"occasion": pl.Float64, "y": pl.Float64, "yhat": pl.Float64},
    )
    out = (
        frame.group_by("occasion")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("y").mean().alias("observed_mean"),
            (pl.col("y").std(ddof=1) / pl.len().sqrt()).alias("observed_std_error"),
            pl.col("yhat").mean().alias("model_mean"),
        )
        .sort("occasion")
    )
    return out.select(list(MEANS_COLUMNS)).cast(MEANS_COLUMNS)


def _rank(X: np.ndarray) -> int:
    s = np.linalg.svd(X / np.maximum(np.linalg.norm(X, axis=0), 1e-300), compute_uv=False)
    return int(np.sum(s > s[0] * 1e-10 * max(X.shape)))


def saturated_means_test(fit: GrowthFit, *, time: str, occasion: str | None = None) -> pl.DataFrame:
    """Likelihood-ratio test (ML) of the polynomial model against the saturated means model (columns :data:`COLUMNS`).

    ``time`` is the time column of the model; the time-free fixed-effects
    columns are those whose terms do not use it. ``occasion`` names a column
    of occasion values when time itself is not on a few fixed occasions.
    """
    d = fit.design
    occ = _occasions(fit, time, occasion)
    levels = np.unique(occ)
    if levels.size > MAX_OCCASIONS:
        raise ModelError(
            f"{occasion or time!r} has {levels.size} distinct values; a saturated means model needs a few "
            f"occasions (at most {MAX_OCCASIONS}): give an occasion column"
        )
    # time-free columns: those that do not change when time is shifted by one unit
    shifted = fit.design_matrix(fit.frame.with_columns(pl.col(time).cast(pl.Float64) + 1.0))
    time_free_cols = [j for j in range(d.X.shape[1]) if np.array_equal(shifted[:, j], d.X[:, j])]
    if len(time_free_cols) == d.X.shape[1]:
        raise ModelError(f"{fit.formula!r} has no fixed-effect term in {time!r}")
    # the ranks, the columns kept and the nesting check on the distinct rows of (occasion,
    # X), each weighted by the square root of its count: the same Gram matrices as on all
    # the rows (pipeline.analysis.designs.distinct_rows), for a pass over the rows
    rows, counts = distinct_rows(np.column_stack([occ, d.X]))
    weight = np.sqrt(counts)[:, None]
    X_rows = rows[:, 1:]
    width = len(time_free_cols)

    def saturated(occasions: np.ndarray, C: np.ndarray) -> np.ndarray:
        indicators = (occasions[:, None] == levels[None, :]).astype(float)
        return (indicators[:, :, None] * C[:, None, :]).reshape(len(occasions), -1)

    S_rows = saturated(rows[:, 0], X_rows[:, time_free_cols])
    kept = np.flatnonzero(np.linalg.norm(S_rows * weight, axis=0) > 0)
    S_w = S_rows[:, kept] * weight
    # drop linearly dependent columns (a cell with no rows, a covariate constant in a cell)
    rank_sat = _rank(S_w)
    _, _, piv = scipy.linalg.qr(S_w / np.linalg.norm(S_w, axis=0), pivoting=True, mode="economic")
    kept = kept[np.sort(piv[:rank_sat])]
    rank_poly = _rank(X_rows * weight)
    coefficients = np.linalg.lstsq(S_rows[:, kept] * weight, X_rows * weight, rcond=None)[0]
    residual = X_rows - S_rows[:, kept] @ coefficients
    # the saturated design of all the rows: only the columns kept
    index = np.searchsorted(levels, occ)
    X_sat = np.column_stack(
        [(index == j // width) * d.X[:, time_free_cols[j % width]] for j in kept]
    )
    if np.max(np.abs(residual)) > 1e-8 * max(1.0, float(np.max(np.abs(d.X)))):
        bad = d.fixed_names[int(np.argmax(np.max(np.abs(residual), axis=0)))]
        raise ModelError(
            f"{fit.formula!r}: the fixed-effect column {bad!r} is not a function of the occasion and the "
            "time-free predictors, so the model is not nested in the saturated means model"
        )
    df = rank_sat - rank_poly
    if df < 1:
        raise ModelError(
            f"{fit.formula!r}: the polynomial in {time!r} already has one mean per occasion "
            f"({levels.size} occasions); there is nothing to test"
        )
    names = tuple(f"occasion{k}" for k in range(X_sat.shape[1]))
    poly = fit.refit(reml=False) if fit.reml else fit
    sat = fit_design(replace(d, X=X_sat, fixed_names=names), reml=False, engine=fit.engine)
    chisq = max(0.0, 2.0 * (sat.loglik - poly.loglik))
    p = float(scipy.stats.chi2.sf(chisq, df))
    sat_formula = (
        f"{d.formula.response.label} ~ occasion ({occasion or time} as categories) x "
        f"[{', '.join(d.fixed_names[j] for j in time_free_cols)}] + the same random part"
    )
    return pl.DataFrame(
        {
            "model": ["polynomial", "saturated means"],
            "formula": [fit.formula, sat_formula],
            "npar": [poly.npar, sat.npar],
            "loglik": [poly.loglik, sat.loglik],
            "deviance": [-2 * poly.loglik, -2 * sat.loglik],
            "chisq": [None, chisq],
            "df": [None, df],
            "p_value": [None, p if math.isfinite(p) else None],
        },
        schema=COLUMNS,
    )
