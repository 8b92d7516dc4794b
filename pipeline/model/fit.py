"""Fit a growth model: parse -> design -> sufficient statistics -> optimise -> assemble.

Each stage is its own function (lme4's split): ``build_design``,
``sufficient_stats``, ``ProfiledDeviance``, ``optimize_theta``,
``satterthwaite``, then :func:`assemble`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl
import scipy.stats

from pipeline.errors import ModelError
from pipeline.model.design import Design, build_design
from pipeline.model.deviance import ProfiledDeviance
from pipeline.model.inference import satterthwaite
from pipeline.model.optimize import OptimizationRecord, moment_start, optimize_theta
from pipeline.model.results import (
    Engine,
    GrowthFit,
    fixed_effects_table,
    random_effects_table,
    variance_components_table,
)
from pipeline.model.stats import SufficientStats, sufficient_stats
from pipeline.model.threads import single_threaded


def fit_growth(
    df: pl.DataFrame,
    formula: str,
    *,
    reml: bool = True,
    engine: Engine = "fast",
) -> GrowthFit:
    """Fit a two-level linear mixed model written as an lme4 formula.

    ``df`` is a polars DataFrame in long format (one row per person per occasion).
    Rows with a missing value in a column the formula uses are left out (lme4's
    ``na.omit``); ``fit.rows_dropped`` says how many.
    """
    if engine not in ("fast", "statsmodels"):
        raise ModelError(f"engine must be 'fast' or 'statsmodels', not {engine!r}")
    design = build_design(df, formula)
    return fit_design(design, reml=reml, engine=engine)


def fit_design(
    design: Design, *, reml: bool, engine: Engine = "fast", stats: SufficientStats | None = None
) -> GrowthFit:
    """Fit a built design; ``stats`` (from an earlier fit of the same design) saves the pass over the data."""
    if engine == "statsmodels":
        from pipeline.model.sm_engine import fit_statsmodels

        return fit_statsmodels(design, reml=reml)
    if stats is None:
        stats = sufficient_stats(design.X, design.Z, design.y, design.group_codes, design.ngroups)
    dev = ProfiledDeviance(stats, design.theta_index, reml=reml)
    # every matrix from here on is tiny (q x q, p x p): BLAS threads only cost time
    with single_threaded():
        theta, record = optimize_multistart(dev, design, stats)
        return assemble(design, stats, dev, theta, record)


def optimize_multistart(
    dev: ProfiledDeviance, design: Design, stats: SufficientStats
) -> tuple[np.ndarray, OptimizationRecord]:
    """Optimise from two starts and keep the lower deviance; the record lists both.

    The deviance surface of a model with several random slopes can have more
    than one local minimum on the boundary; a start from per-person OLS
    moments and the identity start (in scaled units) guard against stopping
    in the wrong one. Both results are recorded, never chosen in silence.
    """
    scale = theta_scale(design, stats)
    runs: list[tuple[str, np.ndarray, OptimizationRecord]] = []
    moment = moment_start(stats, design.theta_index)
    if moment is not None:
        theta, record = optimize_theta(dev, design.theta_lower, scale=scale, start=moment)
        runs.append(("per-person OLS moments", theta, record))
    theta, record = optimize_theta(dev, design.theta_lower, scale=scale)
    runs.append(("identity", theta, record))
    name, theta, best = min(runs, key=lambda run: run[2].deviance)
    starts = tuple((label, rec.deviance) for label, _, rec in runs)
    detail = "; ".join(f"{label}: {d:.6f}" for label, d in starts)
    return theta, replace(
        best,
        evaluations=sum(rec.evaluations for _, _, rec in runs),
        starts=starts,
        optimizer=f"{best.optimizer}; {len(runs)} starts ({detail}); kept {name}",
    )


def theta_scale(design: Design, stats: SufficientStats) -> np.ndarray:
    """Root mean square of the random-effects column that each theta multiplies (Lambda's row)."""
    diag = np.einsum("k,kii->i", stats.counts, stats.ztz)
    rms = np.sqrt(np.maximum(diag, 1e-300) / stats.n)
    return np.array([rms[i] for i, _ in design.theta_index])


def assemble(
    design: Design,
    stats: SufficientStats,
    dev: ProfiledDeviance,
    theta: np.ndarray,
    record: OptimizationRecord,
) -> GrowthFit:
    sol = dev.solve(theta)
    sigma = dev.sigma(sol)
    criterion = dev.criterion(sol)
    lam = sol.lam
    q = stats.q

    # conditional modes: b_i = Lambda A_i^{-1} Lambda' (Z_i'y_i - Z_i'X_i beta) = M_i r_i;
    # conditional variances sigma^2 M_i; M is shared by the persons of a pattern
    A = lam.T @ stats.ztz @ lam + np.eye(q)
    M = lam @ np.linalg.inv(A) @ lam.T
    if stats.S is not None:
        M = M[stats.pattern_of]
    r = stats.W[:, :, -1] - stats.W[:, :, :-1] @ sol.beta
    blups = (M @ r[:, :, None])[:, :, 0]
    condvar = sigma**2 * M
    covariance = sigma**2 * lam @ lam.T

    inference = satterthwaite(dev, theta, sigma)
    vcov = inference.vcov_beta
    p = len(sol.beta)
    tests = []
    for j in range(p):
        L = np.zeros(p)
        L[j] = 1.0
        tests.append(inference.test(L, float(sol.beta[j])))

    singular = record.boundary
    converged = record.converged
    return GrowthFit(
        formula=design.formula.text,
        engine="fast",
        reml=dev.reml,
        design=design,
        theta=np.asarray(theta, dtype=float),
        beta=sol.beta,
        sigma=sigma,
        vcov=vcov,
        deviance=criterion,
        loglik=-criterion / 2.0,
        nobs=design.nobs,
        ngroups=design.ngroups,
        converged=converged,
        singular=singular,
        optimization=record,
        fixed_effects=fixed_effects_table(design.fixed_names, sol.beta, tests),
        variance_components=variance_components_table(design, covariance, sigma),
        random_effects=random_effects_table(design, blups, condvar),
        blups=blups,
        condvar=condvar,
        covariance=covariance,
        inference=inference,
        stats=stats,
    )


def compare(fit_a: GrowthFit, fit_b: GrowthFit) -> pl.DataFrame:
    """Likelihood-ratio test of two nested models, as lme4's ``anova()``.

    REML fits are refitted by ML first (REML likelihoods of models with
    different fixed effects are not comparable). Rows are ordered by the
    number of parameters; the test is on the second row.
    """
    fits = sorted([fit_a, fit_b], key=lambda f: f.npar)
    if fits[0].nobs != fits[1].nobs:
        raise ModelError(
            f"the models were fitted to different numbers of observations ({fits[0].nobs} and {fits[1].nobs}); "
            "a likelihood-ratio test needs the same data"
        )
    refitted = [f.refit(reml=False) if f.reml else f for f in fits]
    chisq = max(0.0, 2.0 * (refitted[1].loglik - refitted[0].loglik))
    df = refitted[1].npar - refitted[0].npar
    p = float(scipy.stats.chi2.sf(chisq, df)) if df > 0 else math.nan
    return pl.DataFrame(
        {
            "model": [f.formula for f in refitted],
            "npar": [f.npar for f in refitted],
            "aic": [f.aic for f in refitted],
            "bic": [f.bic for f in refitted],
            "loglik": [f.loglik for f in refitted],
            "deviance": [-2.0 * f.loglik for f in refitted],
            "chisq": [None, chisq],
            "df": [None, df],
            "p_value": [None, p],
        },
        schema={
            "model": pl.String,
            "npar": pl.Int64,
            "aic": pl.Float64,
            "bic": pl.Float64,
            "loglik": pl.Float64,
            "deviance": pl.Float64,
            "chisq": pl.Float64,
            "df": pl.Int64,
            "p_value": pl.Float64,
        },
    )
