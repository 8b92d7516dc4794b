"""Variance explained: Raudenbush & Bryk's pseudo-R2 and Nakagawa's R2.

Pseudo-R2 (Raudenbush & Bryk 2002, eq. 4.24 and 4.27; Singer & Willett 2003,
sec. 4.4.3): the proportional reduction of a variance component between a
reference model and a model that adds predictors,

    (variance_reference - variance_model) / variance_reference.

Time's share of the within-person variance compares the residual variance of the
unconditional growth model with that of the unconditional means model; the
level-2 predictors' share of each level-2 variance compares the conditional model
with the unconditional growth model. A negative value is possible (adding terms
can move variance between components) and is reported as it is.

Nakagawa & Schielzeth (2013) marginal and conditional R2 with Johnson's (2014)
extension to random slopes:

    var_fixed  = sample variance (n - 1) of the fixed-effects predictions X beta,
    var_random = mean over observations of z_ti' Sigma z_ti,
    R2_marginal    = var_fixed / (var_fixed + var_random + sigma^2),
    R2_conditional = (var_fixed + var_random) / (var_fixed + var_random + sigma^2),

as R's ``performance::r2_nakagawa`` and ``MuMIn::r.squaredGLMM`` compute them.
"""

from __future__ import annotations

import numpy as np
import polars as pl

__all__ = ["R2_SCHEMA", "VARIANCE_EXPLAINED_SCHEMA", "nakagawa_r2", "pseudo_r2_rows", "r2_row"]

VARIANCE_EXPLAINED_SCHEMA = {
    "model": pl.String,
    "reference": pl.String,
    "component": pl.String,
    "reference_variance": pl.Float64,
    "variance": pl.Float64,
    "proportion_reduced": pl.Float64,
}
R2_SCHEMA = {"model": pl.String, "r2_marginal": pl.Float64, "r2_conditional": pl.Float64}


def _component_name(group: str, term: str | None) -> str:
    if group == "Residual":
        return "Residual (within-person)"
    return f"{group}: {term}"


def _variances(variance_components: pl.DataFrame) -> dict[str, float]:
    rows = variance_components.filter(pl.col("term2").is_null())
    return {
        _component_name(row["group"], row["term1"]): float(row["variance"])
        for row in rows.iter_rows(named=True)
    }


def pseudo_r2_rows(
    *,
    model: str,
    reference: str,
    model_components: pl.DataFrame,
    reference_components: pl.DataFrame,
    residual_only: bool = False,
) -> pl.DataFrame:
    """Rows of the ``variance_explained`` table: every variance present in both models
    (or only the residual variance when ``residual_only``)."""
    current = _variances(model_components)
    before = _variances(reference_components)
    rows = []
    for component, reference_variance in before.items():
        if component not in current:
            continue
        if residual_only and not component.startswith("Residual"):
            continue
        variance = current[component]
        proportion = (
            (reference_variance - variance) / reference_variance if reference_variance > 0 else None
        )
        rows.append(
            {
                "model": model,
                "reference": reference,
                "component": component,
                "reference_variance": reference_variance,
                "variance": variance,
                "proportion_reduced": proportion,
            }
        )
    return pl.DataFrame(rows, schema=VARIANCE_EXPLAINED_SCHEMA)


def nakagawa_r2(
    *,
    fixed_prediction: np.ndarray,
    random_design: np.ndarray,
    covariance: np.ndarray,
    sigma2: float,
) -> tuple[float, float]:
    """(marginal, conditional) R2 from X beta, the random-effects design Z (n x q),
    the random-effects covariance Sigma (q x q) and the residual variance."""
    fixed_prediction = np.asarray(fixed_prediction, dtype=float)
    Z = np.asarray(random_design, dtype=float)
    var_fixed = float(np.var(fixed_prediction, ddof=1)) if np.ptp(fixed_prediction) > 0 else 0.0
    var_random = float(np.mean(np.einsum("ia,ab,ib->i", Z, np.asarray(covariance, dtype=float), Z)))
    total = var_fixed + var_random + float(sigma2)
    return var_fixed / total, (var_fixed + var_random) / total


def r2_row(*, model: str, marginal: float, conditional: float) -> pl.DataFrame:
    """One row of the ``r2`` table."""
    return pl.DataFrame(
        {"model": [model], "r2_marginal": [marginal], "r2_conditional": [conditional]},
        schema=R2_SCHEMA,
    )
