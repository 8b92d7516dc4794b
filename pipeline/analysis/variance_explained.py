"""Variance explained: Raudenbush & Bryk's pseudo-R2 and Nakagawa's R2.

Pseudo-R2 (Raudenbush & Bryk 2002, eq. 4.24 and 4.27; Singer & Willett 2003,
sec. 4.4.3): the proportional reduction of a variance component between a
reference model and a model that adds fixed effects,

    (variance_reference - variance_model) / variance_reference.

It is computed only between models with the same random part (the same variances
and covariances), one nested in the other by its fixed part: between models whose
random parts differ, a component changes because the random part changed (dropping a
random slope moves its variance into the intercept and the residual), not because of
a predictor. Which components: the level-1 residual variance when the added terms
include a purely level-1 term (time, a time-varying covariate); each level-2
variance when the added terms include a person-level predictor. Time's share of the
within-person variance therefore compares the unconditional means model with the
random-intercept growth model. A variance of the intercept is the between-person
variance of status at the time where time is centred (coded time 0). A negative
value is possible and is reported as it is.

Nakagawa & Schielzeth (2013) marginal and conditional R2 with Johnson's (2014)
extension to random slopes:

    var_fixed  = sample variance (n - 1) of the fixed-effects predictions X beta,
    var_random = mean over observations of z_ti' Sigma z_ti,
    R2_marginal    = var_fixed / (var_fixed + var_random + sigma^2),
    R2_conditional = (var_fixed + var_random) / (var_fixed + var_random + sigma^2),

as R's ``performance::r2_nakagawa`` and ``MuMIn::r.squaredGLMM`` compute them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from pipeline.analysis.comparison import same_random_part
from pipeline.analysis.sequence import knot_terms, time_terms
from pipeline.model.results import GrowthFit
from schemas.tables import columns

if TYPE_CHECKING:
    from pipeline.analysis.context import AnalysisContext

__all__ = [
    "R2_SCHEMA",
    "VARIANCE_EXPLAINED_SCHEMA",
    "nakagawa_r2",
    "pseudo_r2_rows",
    "r2_row",
    "tables",
]

VARIANCE_EXPLAINED_SCHEMA = columns("variance_explained")
R2_SCHEMA = columns("r2")


def _component_name(group: str, term: str | None) -> str:
    if group == "Residual":
        return "Residual (within-person)"
    return f"{group}: {term}"


def _variances(variance_components: pl.DataFrame) -> dict[str, tuple[str, str | None]]:
    rows = variance_components.filter(pl.col("term2").is_null())
    return {
        _component_name(row["group"], row["term1"]): (row["group"], row["term1"])
        for row in rows.iter_rows(named=True)
    }


def _variance_values(variance_components: pl.DataFrame) -> dict[str, float]:
    rows = variance_components.filter(pl.col("term2").is_null())
    return {
        _component_name(row["group"], row["term1"]): float(row["variance"])
        for row in rows.iter_rows(named=True)
    }


def _note(group: str, term: str | None, status_at: str) -> str:
    if group == "Residual":
        return "within-person (level-1) residual variance"
    if term == "(Intercept)":
        return f"between-person variance of status at {status_at} (where time is centred)"
    return f"between-person variance of the coefficient of {term}"


def pseudo_r2_rows(
    *,
    model: str,
    reference: str,
    model_components: pl.DataFrame,
    reference_components: pl.DataFrame,
    level1: bool,
    level2: bool,
    status_at: str,
) -> pl.DataFrame:
    """Rows of the ``variance_explained`` table for two models with the same random part:
    the residual variance when ``level1``, the level-2 variances when ``level2``."""
    current = _variance_values(model_components)
    before = _variance_values(reference_components)
    names = _variances(reference_components)
    if set(current) != set(before):
        raise ValueError(
            f"'{model}' and '{reference}' have different random parts; their variance "
            "components are not comparable"
        )
    rows = []
    for component, reference_variance in before.items():
        group, term = names[component]
        residual = group == "Residual"
        if (residual and not level1) or (not residual and not level2):
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
                "note": _note(group, term, status_at),
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


def _level1_factors(ctx: AnalysisContext) -> set[str]:
    """Names of level-1 factors of a term: the time terms and the time-varying covariates
    (with their category levels)."""
    names = set(time_terms(ctx.spec.time_name, max(ctx.spec.polynomial, 1) + 3))
    names.update(knot_terms(ctx.spec))  # piecewise-linear time: the pmax terms are level 1
    for column in ctx.spec.time_covariates:
        names.add(column)
        names.update(f"{column}{level}" for level in ctx.spec.categories.get(column, ()))
    return names


def _added_levels(reference: GrowthFit, model: GrowthFit, level1: set[str]) -> tuple[bool, bool]:
    """(a purely level-1 term is added, a term with a person-level factor is added)."""
    added = [t for t in model.design.fixed_names if t not in set(reference.design.fixed_names)]
    factors = [term.split(":") for term in added]
    return (
        any(all(f in level1 for f in fs) for fs in factors),
        any(any(f not in level1 for f in fs) for fs in factors),
    )


def _r2(name: str, fit: GrowthFit) -> pl.DataFrame:
    marginal, conditional = nakagawa_r2(
        fixed_prediction=fit.fitted(kind="marginal"),
        random_design=np.asarray(fit.design.Z, dtype=float),
        covariance=np.asarray(fit.covariance, dtype=float),
        sigma2=float(fit.sigma) ** 2,
    )
    return r2_row(model=name, marginal=marginal, conditional=conditional)


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """``variance_explained`` between every fitted model and the largest fitted model with
    the same random part whose fixed part it extends; ``r2`` of every fitted model."""
    from pipeline.analysis.comparison import nesting

    fitted = ctx.fitted_models
    level1 = _level1_factors(ctx)
    status_at = ctx.spec.time_text(ctx.spec.centre)
    pieces = []
    for model in fitted:
        fit = ctx.fits[model.name]
        candidates = [
            other
            for other in fitted
            if other.name != model.name
            and same_random_part(ctx.fits[other.name], fit)
            and nesting(ctx.fits[other.name], fit) is not None
        ]
        if not candidates:
            continue
        # the closest reference: the one nested in no other candidate's place (most parameters)
        reference = max(candidates, key=lambda other: ctx.fits[other.name].npar)
        ref_fit = ctx.fits[reference.name]
        adds_level1, adds_level2 = _added_levels(ref_fit, fit, level1)
        rows = pseudo_r2_rows(
            model=model.name,
            reference=reference.name,
            model_components=fit.variance_components,
            reference_components=ref_fit.variance_components,
            level1=adds_level1,
            level2=adds_level2,
            status_at=status_at,
        )
        if rows.height:
            pieces.append(rows)
    r2_rows = []
    for model in fitted:
        row = ctx.notes.attempt(
            f"R2 of {model.name}", lambda m=model: _r2(m.name, ctx.fits[m.name])
        )
        if row is not None:
            r2_rows.append(row)
    out: dict[str, pl.DataFrame] = {}
    if pieces:
        out["variance_explained"] = pl.concat(pieces)
    if r2_rows:
        out["r2"] = pl.concat(r2_rows)
    return out
