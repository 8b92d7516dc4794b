"""Fit a growth model: parse -> design -> sufficient statistics -> optimise -> assemble.

Each stage is its own function (lme4's split): ``build_design``,
``sufficient_stats``, ``ProfiledDeviance``, ``optimize_theta``,
``satterthwaite``, then :func:`assemble`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import polars as pl

from pipeline.errors import ModelError
from pipeline.model.design import Design, build_design
from pipeline.model.deviance import ProfiledDeviance
from pipeline.model.inference import satterthwaite
from pipeline.model.nested import NestedDeviance, NestedStats, nested_stats
from pipeline.model.optimize import OptimizationRecord, moment_start, optimize_theta
from pipeline.model.parameters import CovarianceParameters
from pipeline.model.results import Engine, GrowthFit, assemble_fit
from pipeline.model.stats import CrossProducts, SufficientStats, compress, cross_products
from pipeline.model.structured import (
    StructuredDeviance,
    StructuredStats,
    marginal_covariance,
    natural_table,
    structure_parameters,
    structured_stats,
)
from pipeline.model.threads import single_threaded


class Refitter:
    """Refits a design by REML or ML, reusing its statistics (held by every fit; picklable)."""

    def __call__(self, fit: GrowthFit, reml: bool) -> GrowthFit:
        return fit_design(fit.design, reml=reml, engine=fit.engine, stats=fit.stats)


REFITTER = Refitter()


def design_cross_products(design: Design) -> CrossProducts:
    """The additive statistics of a design's rows (per person; outer units alongside).

    Two-level designs are read through ``group_codes`` / ``ngroups`` (code that subsets a
    design's persons replaces those), nested ones through their grouping factors."""
    block, gram, ustart = design.joined() or (None, None, None)
    if not design.nested:
        return cross_products(
            design.X,
            design.union,
            design.y,
            design.group_codes,
            m=design.ngroups,
            block=block,
            gram=gram,
            ustart=ustart,
        )
    ancestors = np.column_stack([g.codes for g in design.grouping[1:]])
    return cross_products(
        design.X,
        design.union,
        design.y,
        design.grouping[0].codes,
        m=design.grouping[0].m,
        ancestors=ancestors,
        block=block,
        gram=gram,
        ustart=ustart,
    )


def design_stats(design: Design, cp: CrossProducts | None = None) -> SufficientStats | NestedStats:
    """Compress cross-products (by default, those of all the design's rows) for the deviance."""
    cp = design_cross_products(design) if cp is None else cp
    if not design.nested:
        return compress(cp)
    g = design.grouping
    return nested_stats(
        cp,
        selects=tuple(level.select for level in g),
        slices=tuple((level.offset, level.q) for level in g),
        m=tuple(level.m for level in g),
        parents=tuple(level.parent for level in g[1:-1]),
    )


def deviance_function(
    design: Design, stats: SufficientStats | NestedStats, *, reml: bool
) -> ProfiledDeviance | NestedDeviance:
    """lme4's ``mkLmerDevfun``: the profiled criterion as a function of theta."""
    if isinstance(stats, NestedStats):
        return NestedDeviance(stats, design.theta_index, reml=reml)
    return ProfiledDeviance(stats, design.theta_index, reml=reml)


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
    if design.residual is not None:
        return fit_structured(design, reml=reml, stats=stats)
    # the cross-products are sparse products and one n x p Gram matrix, and every matrix after
    # them is tiny (q x q, p x p): BLAS threads only cost time (and spin on a busy machine)
    with single_threaded():
        if stats is None:
            stats = design_stats(design)
        dev = deviance_function(design, stats, reml=reml)
        theta, record = optimize_multistart(dev, design, stats)
        return assemble(design, stats, dev, theta, record)


def optimize_multistart(
    dev: ProfiledDeviance | NestedDeviance, design: Design, stats: SufficientStats | NestedStats
) -> tuple[np.ndarray, OptimizationRecord]:
    """Optimise from the per-person OLS moments, and from the identity (in scaled units) when
    needed; keep the lower deviance; the record lists every start tried.

    The deviance surface of a model with several random slopes can have more
    than one local minimum on the boundary: when the first start ends on a
    boundary (or does not converge), the identity start is tried too and both
    results are recorded, never chosen in silence. That is where a second
    local minimum has been seen; after a first run that converged inside the
    bounds the identity start is skipped (as for nested models and error
    structures), and the record says so.
    """
    moment = (
        nested_moment_start(stats, design)
        if isinstance(stats, NestedStats)
        else moment_start(stats, design.theta_index)
    )
    starts = [("per-person OLS moments", moment)] if moment is not None else []
    starts.append(("identity", None))
    params = CovarianceParameters.for_theta(design.theta_index)
    return run_starts(
        dev,
        params,
        theta_scale(design, stats),
        starts,
        only_if_needed=True,
    )


def _preference(runs: list) -> Callable[[tuple], tuple[float, float]]:
    """Order of the starts' results: the lower deviance; deviances within rounding of each
    other (1e-11 relative) are ties, decided by the smaller final gradient, so that which
    start is kept does not depend on the order in which the data were summed."""
    lowest = min(run[2].deviance for run in runs)
    tie = 1e-11 * max(1.0, abs(lowest))

    def key(run: tuple) -> tuple[float, float]:
        record = run[2]
        level = 0.0 if record.deviance - lowest <= tie else record.deviance
        return (level, float(np.max(np.abs(record.gradient), initial=0.0)))

    return key


def run_starts(
    dev,
    params: CovarianceParameters,
    scale: np.ndarray,
    starts: list[tuple[str, np.ndarray | None]],
    *,
    only_if_needed: bool = False,
) -> tuple[np.ndarray, OptimizationRecord]:
    """Optimise from each start (None: the identity in scaled units); keep the lowest, record all.

    ``only_if_needed`` (for the costlier nested and error-structure deviances): a later start
    is tried only when the earlier ones ended on a boundary or did not converge, which is
    where a second local minimum has been seen; the record says how many starts ran."""
    runs: list[tuple[str, np.ndarray, OptimizationRecord]] = []
    for label, start in starts:
        if only_if_needed and runs and all(r.converged and not r.boundary for *_, r in runs):
            break
        theta, record = optimize_theta(dev, params, scale=scale, start=start)
        runs.append((label, theta, record))
    name, theta, best = min(runs, key=_preference(runs))
    recorded = tuple((label, rec.deviance) for label, _, rec in runs)
    detail = "; ".join(f"{label}: {d:.6f}" for label, d in recorded)
    return theta, replace(
        best,
        evaluations=sum(rec.evaluations for _, _, rec in runs),
        starts=recorded,
        optimizer=f"{best.optimizer}; {len(runs)} start(s) ({detail}); kept {name}"
        + (
            f"; {len(starts) - len(runs)} further start(s) not needed (converged inside the bounds)"
            if len(runs) < len(starts)
            else ""
        ),
    )


def fit_structured(
    design: Design, *, reml: bool, stats: StructuredStats | None = None
) -> GrowthFit:
    """A model with a level-1 error structure (gls/mmrm without random effects, lme with them)."""
    spec = design.residual
    structure = spec.structure
    if stats is None:
        stats = structured_stats(
            design.X, design.Z, design.y, design.group_codes, design.ngroups, spec
        )
    dev = StructuredDeviance(stats, design.theta_index, structure, reml=reml)
    nrho = structure.n_params
    params = CovarianceParameters.for_theta(design.theta_index).join(
        structure_parameters(nrho, structure)
    )
    q = stats.q
    rms = np.sqrt(np.maximum((stats.Zp**2).sum(axis=(0, 1)), 1e-300) / stats.n)
    scale = np.concatenate([[rms[i] for i, _ in design.theta_index], np.ones(nrho)])
    rho0 = structure.start()
    identity = np.concatenate(
        [
            np.where(params.variance[: len(design.theta_index)], 1.0, 0.0)
            / scale[: len(design.theta_index)],
            rho0,
        ]
    )
    starts: list[tuple[str, np.ndarray | None]] = []
    if q:
        plain = compress(
            cross_products(design.X, design.Z, design.y, design.group_codes, m=design.ngroups)
        )
        moment = moment_start(plain, design.theta_index)
        if moment is not None:
            starts.append(
                ("per-person OLS moments, independent residuals", np.concatenate([moment, rho0]))
            )
    starts.append(("identity, independent residuals", identity))
    with single_threaded():
        x, record = run_starts(dev, params, scale, starts, only_if_needed=True)
        sol = dev.solve(x)
        sigma = dev.sigma(sol)
        criterion = dev.criterion(sol)
        blups, condvar = dev.conditional_modes(x, sol.beta, sigma)
        lam = sol.lam
        covariance = sigma**2 * lam @ lam.T
        inference = satterthwaite(dev, x, sigma)
        tests = inference.coefficient_tests(sol.beta)
        ntheta = len(design.theta_index)
        rho = x[ntheta:]
        vcov_rho = inference.vcov_varpar[ntheta : ntheta + nrho, ntheta : ntheta + nrho]
        table = natural_table(structure, rho, vcov_rho, boundary=record.boundary)
        marginal = marginal_covariance(dev, x, sigma, spec.labels)
    return assemble_fit(
        design,
        engine="fast",
        reml=reml,
        theta=x[:ntheta],
        beta=sol.beta,
        sigma=sigma,
        vcov=inference.vcov_beta,
        deviance=criterion,
        loglik=-criterion / 2.0,
        converged=record.converged,
        singular=record.boundary,
        optimization=record,
        tests=tests,
        covariance=covariance,
        blups=blups,
        condvar=condvar,
        inference=inference,
        stats=stats,
        refitter=REFITTER,
        rho=rho,
        residual_parameters=table,
        marginal=marginal,
    )


def theta_scale(design: Design, stats: SufficientStats | NestedStats) -> np.ndarray:
    """Root mean square of the random-effects column that each theta multiplies (Lambda's row)."""
    diag = np.einsum("k,kii->i", stats.counts, stats.ztz)
    if isinstance(stats, NestedStats):  # U's columns -> Z's columns
        diag = diag[np.concatenate(stats.selects)]
    rms = np.sqrt(np.maximum(diag, 1e-300) / stats.n)
    return np.array([rms[i] for i, _ in design.theta_index])


def nested_moment_start(stats: NestedStats, design: Design) -> np.ndarray | None:
    """A start from per-person OLS: the persons' coefficients split into between- and
    within-unit parts at the second factor (higher factors start at a tenth of the second).

    ``Var(b_i) - sigma^2 mean((U_i'U_i)^{-1}) = D_1 + D_2`` and the covariance of unit
    means of ``b_i`` is about ``D_2 + (D_1 + sampling) / n_c``; eigenvalues floored.
    """
    p, u = stats.p, stats.u
    om = stats.omega
    try:
        beta = np.linalg.solve(om[:p, :p], om[:p, p])
    except np.linalg.LinAlgError:
        return None
    rss = float(om[p, p] - 2 * beta @ om[:p, p] + beta @ om[:p, :p] @ beta)
    eig = np.linalg.eigvalsh(stats.ztz)
    ok = eig[:, 0] > 1e-8 * np.maximum(eig[:, -1], 1e-300)
    if not ok.any():
        return None
    inv = np.zeros_like(stats.ztz)
    inv[ok] = np.linalg.inv(stats.ztz[ok])
    good = ok[stats.pattern_of]
    if int(good.sum()) <= u + 1:
        return None
    W = stats.W[good]
    zinv = inv[stats.pattern_of[good]]
    r = W[:, :, p] - W[:, :, :p] @ beta
    b = (zinv @ r[:, :, None])[:, :, 0]
    dof = stats.n - p - u * int(good.sum())
    explained = float(np.vdot(b, r))
    sigma2 = (rss - explained) / dof if dof > 0 and rss > explained else rss / max(stats.n - p, 1)
    if not sigma2 > 0:
        return None
    total = np.cov(b, rowvar=False).reshape(u, u) - sigma2 * zinv.mean(axis=0)
    parent = stats.person_parent[good]
    m2 = stats.m[1]
    sizes = np.bincount(parent, minlength=m2).astype(float)
    keep = sizes >= 2
    means = np.zeros((m2, u))
    np.add.at(means, parent, b)
    means = means[keep] / sizes[keep, None]
    nbar = float(sizes[keep].mean()) if keep.any() else 1.0
    if keep.sum() > u + 1 and nbar > 1:
        between = np.cov(means, rowvar=False).reshape(u, u)
        d2 = (between - total / nbar) / (1.0 - 1.0 / nbar)
    else:
        d2 = 0.1 * total
    d1 = total - d2
    covs = [d1, d2] + [0.1 * d2] * (stats.levels - 2)
    lam_big = np.zeros((stats.q, stats.q))
    mask = np.zeros((stats.q, stats.q), dtype=bool)
    for i, j in design.theta_index:
        mask[i, j] = mask[j, i] = True
    for (off, q), sel, D in zip(stats.slices, stats.selects, covs, strict=True):
        Dl = D[np.ix_(sel, sel)] / sigma2
        Dl = np.where(mask[off : off + q, off : off + q], (Dl + Dl.T) / 2, 0.0)
        w, v = np.linalg.eigh(Dl)
        top = float(w.max()) if w.size else 0.0
        floor = max(1e-2 * top, 1e-4) if top > 0 else 1e-2
        rel = np.where(mask[off : off + q, off : off + q], (v * np.maximum(w, floor)) @ v.T, 0.0)
        try:
            lam_big[off : off + q, off : off + q] = np.linalg.cholesky(rel)
        except np.linalg.LinAlgError:
            return None
    theta = np.array([lam_big[i, j] for i, j in design.theta_index])
    return theta if np.all(np.isfinite(theta)) else None


def conditional_modes(
    dev: ProfiledDeviance | NestedDeviance, theta: np.ndarray, beta: np.ndarray, sigma: float
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """BLUPs and conditional covariances of the units in ``dev``'s statistics at (theta, beta,
    sigma): per factor (innermost first), and per person the stacked ones (see
    :meth:`NestedDeviance.conditional_modes`). Each unit's depend only on its own rows (and
    on its outer units' other persons), so they can come from a sample's statistics."""
    if isinstance(dev, NestedDeviance):
        return dev.conditional_modes(theta, beta, sigma)
    # conditional modes: b_i = Lambda A_i^{-1} Lambda' (Z_i'y_i - Z_i'X_i beta) = M_i r_i;
    # conditional variances sigma^2 M_i; M is shared by the persons of a pattern
    stats = dev.stats
    lam = dev.lam(theta)
    A = lam.T @ stats.ztz @ lam + np.eye(stats.q)
    M = lam @ np.linalg.inv(A) @ lam.T
    if stats.S is not None:  # one gather of the patterns' matrices (persons x q x q)
        M = M[stats.pattern_of]
    m, q, P = stats.W.shape
    r = (stats.W.reshape(m * q, P) @ np.append(-beta, 1.0)).reshape(m, q)
    blups = np.einsum("mij,mj->mi", M, r)
    M *= sigma**2  # M is this function's own array here: no second persons x q x q array
    return [blups], [M], blups, M


def assemble(
    design: Design,
    stats: SufficientStats | NestedStats,
    dev: ProfiledDeviance | NestedDeviance,
    theta: np.ndarray,
    record: OptimizationRecord,
    *,
    units: ProfiledDeviance | NestedDeviance | None = None,
    refitter: Callable[[GrowthFit, bool], GrowthFit] | None = None,
    counts: tuple[int, int] | None = None,
) -> GrowthFit:
    """lme4's ``mkMerMod``: everything the result holds, from the optimum.

    For a fit on the statistics of all the data whose design holds a sample of its units
    (:mod:`pipeline.model.partial`): ``units`` is the deviance of the design's own rows
    (the BLUPs are those units'), ``refitter`` refits on the same statistics and
    ``counts`` are the whole data's (observations, persons)."""
    sol = dev.solve(theta)
    sigma = dev.sigma(sol)
    criterion = dev.criterion(sol)
    lam = sol.lam
    covariance = sigma**2 * lam @ lam.T

    b_levels, v_levels, blups, condvar = conditional_modes(
        dev if units is None else units, theta, sol.beta, sigma
    )
    inference = satterthwaite(dev, theta, sigma)
    tests = inference.coefficient_tests(sol.beta)
    return assemble_fit(
        design,
        engine="fast",
        reml=dev.reml,
        theta=np.asarray(theta, dtype=float),
        beta=sol.beta,
        sigma=sigma,
        vcov=inference.vcov_beta,
        deviance=criterion,
        loglik=-criterion / 2.0,
        converged=record.converged,
        singular=record.boundary,
        optimization=record,
        tests=tests,
        covariance=covariance,
        blups=blups,
        condvar=condvar,
        level_blups=tuple(b_levels),
        level_condvar=tuple(v_levels),
        inference=inference,
        stats=stats,
        refitter=REFITTER if refitter is None else refitter,
        nobs=None if counts is None else counts[0],
        ngroups=None if counts is None else counts[1],
    )
