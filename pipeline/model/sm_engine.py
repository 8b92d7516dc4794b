"""The second, independent engine: statsmodels' MixedLM on the same design.

Used to cross-check the fast engine, and to fit what it does not cover yet.
The fixed effects, their standard errors, the variance components, the
log-likelihood and the BLUPs are statsmodels' own; degrees of freedom are not
available (``df`` is infinite and p-values and intervals are normal-based, as
statsmodels reports them).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from pipeline.errors import ModelError
from pipeline.model.design import Design
from pipeline.model.inference import wald_test
from pipeline.model.optimize import BOUNDARY_TOL, OptimizationRecord
from pipeline.model.results import GrowthFit, assemble_fit


def fit_statsmodels(design: Design, *, reml: bool) -> GrowthFit:
    from statsmodels.regression.mixed_linear_model import MixedLM, MixedLMParams

    from pipeline.model.fit import REFITTER

    if design.nested:
        raise ModelError(
            f"formula {design.formula.text!r}: the statsmodels engine fits one grouping factor; "
            "use engine='fast' for nested factors"
        )

    q = design.Z.shape[1]
    p = design.X.shape[1]
    model = MixedLM(design.y, design.X, groups=design.group_codes, exog_re=design.Z)
    free = None
    if any(not b.correlated for b in design.blocks):
        mask = np.zeros((q, q))
        for b in design.blocks:
            mask[b.start : b.start + b.size, b.start : b.start + b.size] = 1.0
        free = MixedLMParams.from_components(fe_params=np.ones(p), cov_re=mask)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = model.fit(reml=reml, free=free)
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise ModelError(
                f"statsmodels MixedLM could not fit {design.formula.text!r}: {exc}"
            ) from exc
    messages = sorted({str(w.message).splitlines()[0] for w in caught})

    beta = np.asarray(res.fe_params, dtype=float)
    sigma2 = float(res.scale)
    sigma = math.sqrt(sigma2)
    covariance = np.asarray(res.cov_re, dtype=float)
    vcov = np.asarray(res.cov_params(), dtype=float)[:p, :p]
    rel = covariance / sigma2
    try:
        lam = np.linalg.cholesky(rel + np.eye(q) * 1e-300)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(rel)
        lam = np.linalg.cholesky(v @ np.diag(np.maximum(w, 1e-14)) @ v.T)
    theta = np.array([lam[i, j] for i, j in design.theta_index])
    diag = np.array([i == j for i, j in design.theta_index])
    singular = bool(np.any(theta[diag] < BOUNDARY_TOL))

    tests = [wald_test(float(beta[j]), math.sqrt(vcov[j, j]), math.inf) for j in range(p)]

    # BLUPs from statsmodels' estimates, written without D^{-1} so that a
    # singular covariance (a boundary fit) is fine: b_i = D Z_i' V_i^{-1} r_i
    m = design.ngroups
    blups = np.zeros((m, q))
    condvar = np.zeros((m, q, q))
    order = np.argsort(design.group_codes, kind="stable")
    bounds = np.searchsorted(design.group_codes[order], np.arange(m + 1))
    resid = design.y - design.X @ beta
    for k in range(m):
        rows = order[bounds[k] : bounds[k + 1]]
        Zi = design.Z[rows]
        Vi = Zi @ covariance @ Zi.T + sigma2 * np.eye(len(rows))
        DZt = covariance @ Zi.T
        sol = np.linalg.solve(Vi, np.column_stack([resid[rows], DZt.T]))
        blups[k] = DZt @ sol[:, 0]
        condvar[k] = covariance - DZt @ sol[:, 1:]

    loglik = float(res.llf)
    record = OptimizationRecord(
        optimizer=f"statsmodels MixedLM ({getattr(res, 'method', 'default')})",
        start=(),
        end=tuple(float(v) for v in theta),
        evaluations=-1,
        iterations=-1,
        deviance=-2 * loglik,
        gradient=(),
        newton_decrement=float("nan"),
        hessian_pd=bool(res.hessian_pd if hasattr(res, "hessian_pd") else True),
        boundary=singular,
        at_bound=tuple(bool(d and t < BOUNDARY_TOL) for d, t in zip(diag, theta, strict=True)),
        converged=bool(res.converged),
        message="converged"
        if res.converged
        else "; ".join(messages) or "statsmodels reports no convergence",
    )
    return assemble_fit(
        design,
        engine="statsmodels",
        reml=reml,
        theta=theta,
        beta=beta,
        sigma=sigma,
        vcov=vcov,
        deviance=-2 * loglik,
        loglik=loglik,
        converged=bool(res.converged),
        singular=singular,
        optimization=record,
        tests=tests,
        covariance=covariance,
        blups=blups,
        condvar=condvar,
        refitter=REFITTER,
    )
