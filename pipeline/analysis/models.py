"""Fitting the model sequence, and the tables of every fit: fixed effects, variance
components, fit statistics with the optimizer record.

A model that fails is recorded (``Notes.fail``) and the others go on. A boundary
(singular) fit gets a warning that says what the data cannot support: which variance
is at zero or which correlation at +-1, how reliable the per-person slopes are
(the ``reliability`` table), the variance test of the random slope (the
``likelihood_ratio_tests`` table), and that Satterthwaite df on a singular fit can be
larger than the design supports. It does not recommend uncorrelated random effects
(``||``): whether intercept and slope are correlated depends on where time is centred,
so dropping the covariance changes the model with the centring.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pipeline.analysis.context import AnalysisContext, Engine, Notes
from pipeline.analysis.designs import IdCoding, fit_formula
from pipeline.analysis.sequence import ModelSpec
from pipeline.errors import ModelError
from pipeline.model.results import GrowthFit
from schemas.tables import columns

__all__ = ["boundary_message", "fit_sequence", "tables"]


def boundary_message(name: str, fit: GrowthFit) -> str:
    """The warning for a singular fit (see the module docstring)."""
    parts = []
    residual = float(fit.sigma) ** 2
    for row in fit.variance_components.filter(pl.col("group") != "Residual").iter_rows(named=True):
        if row["term2"] is None and row["variance"] <= 1e-8 * max(residual, 1e-300):
            parts.append(f"the variance of {row['term1']} is estimated at 0")
        elif row["term2"] is not None and row["sd_cor"] is not None and abs(row["sd_cor"]) > 0.999:
            parts.append(
                f"the correlation of {row['term1']} and {row['term2']} is estimated at {row['sd_cor']:+.0f}"
            )
    what = "; ".join(parts) if parts else "a random-effects covariance matrix is singular"
    return (
        f"boundary fit of '{name}': {what}. The data cannot separate all the between-person "
        "variation this random part describes: with few occasions per person, or little "
        "between-person variation in change, the person-specific slopes are estimated with low "
        "reliability (see the reliability table) and the test of the slope variance (the "
        "likelihood-ratio tests) says whether it is distinguishable from zero. The fixed effects "
        "are usable, but Satterthwaite df on a singular fit can be larger than the design "
        "supports (read p-values near 0.05 with care), and any conclusion about the variance "
        "components is limited to what the boundary estimate says"
    )


def fit_sequence(
    models: tuple[ModelSpec, ...],
    frame: pl.DataFrame,
    notes: Notes,
    *,
    engine: Engine,
    partitioned: Any = None,
    coding: IdCoding | None = None,
    coded: pl.DataFrame | None = None,
) -> dict[str, GrowthFit]:
    """REML fits of ``models`` on ``frame``; failures and fit problems go to ``notes``.

    With ``partitioned`` (:class:`pipeline.partitioned.PartitionedStatistics`) each model is
    fitted on the merged statistics of all the data; ``frame`` is a sample of its persons.

    ``coding`` and ``coded`` (``frame`` with its ids coded once, :func:`pipeline.analysis.
    designs.code_ids`) make every design on integer ids; the fits are the same."""
    if engine not in ("fast", "statsmodels"):
        raise ModelError(f"engine must be 'fast' or 'statsmodels', not {engine!r}")
    fits: dict[str, GrowthFit] = {}
    for model in models:
        try:
            if partitioned is None:
                fit = fit_formula(
                    frame, model.formula, reml=True, engine=engine, coding=coding, coded=coded
                )
            else:
                fit = _fit_partitioned(model, frame, partitioned)
        except Exception as error:  # recorded; the other models go on
            notes.fail(model=model.name, formula=model.formula, error=error)
            continue
        fits[model.name] = fit
        if fit.singular:
            notes.warn("boundary fit", boundary_message(model.name, fit))
        if not fit.converged:
            notes.warn(
                "convergence",
                f"'{model.name}' did not converge ({fit.optimization.message}); its estimates are "
                "not reliable",
            )
    return fits


def _fit_partitioned(model: ModelSpec, frame: pl.DataFrame, partitioned: Any) -> GrowthFit:
    from pipeline.errors import ModelError
    from pipeline.model.partial import fit_merged, sample_design

    formula = model.formula
    if formula not in partitioned.statistics:
        raise ModelError(f"formula {formula!r}: no partition has a complete row for this model")
    design = sample_design(frame, formula, partitioned.levels[formula])
    return fit_merged(design, partitioned.statistics[formula], reml=True)


def _with_model(name: str, table: pl.DataFrame) -> pl.DataFrame:
    return table.select(pl.lit(name, dtype=pl.String).alias("model"), pl.all())


def _model_fit_row(model: ModelSpec, fit: GrowthFit) -> dict[str, object]:
    record = fit.optimization
    return {
        "model": model.name,
        "role": model.role,
        "formula": model.formula,
        "nobs": int(fit.nobs),
        "ngroups": int(fit.ngroups),
        "npar": int(fit.npar),
        "loglik": float(fit.loglik),
        "aic": float(fit.aic),
        "bic": float(fit.bic),
        "reml": bool(fit.reml),
        "converged": bool(fit.converged),
        "singular": bool(fit.singular),
        "optimizer": str(record.optimizer),
        "evaluations": int(record.evaluations),
        "max_abs_gradient": float(max((abs(g) for g in record.gradient), default=0.0)),
    }


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """``fixed_effects``, ``variance_components`` and ``model_fit`` of every fitted model."""
    fitted = ctx.fitted_models
    if not fitted:
        return {}
    return {
        "fixed_effects": pl.concat(
            [_with_model(m.name, ctx.fits[m.name].fixed_effects) for m in fitted],
            how="vertical_relaxed",
        ),
        "variance_components": pl.concat(
            [_with_model(m.name, ctx.fits[m.name].variance_components) for m in fitted],
            how="vertical_relaxed",
        ),
        "model_fit": pl.DataFrame(
            [_model_fit_row(m, ctx.fits[m.name]) for m in fitted], schema=columns("model_fit")
        ),
    }
