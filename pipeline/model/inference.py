"""Satterthwaite degrees of freedom for fixed-effect contrasts, as lmerTest computes them.

lmerTest (Kuznetsova, Brockhoff & Christensen 2017) works in the variance
parameters ``varpar = (theta, sigma)``:

- ``A = 2 H^{-1}``, the asymptotic covariance of varpar, from the Hessian ``H``
  of the (REML or ML) deviance at the optimum (Moore-Penrose inverse over the
  eigenvalues above a tolerance, so a variance at the boundary drops out);
- ``J_k = d vcov(beta) / d varpar_k``, the Jacobian of ``sigma^2 (R_X'R_X)^{-1}``;
- for a contrast ``L``: ``df = 2 (L'VL)^2 / (g' A g)`` with ``g_k = L' J_k L``.

Derivatives are central differences with Richardson extrapolation over four
halvings of the step, from numDeriv's default first steps (0.1 x |x| for the
Hessian, 1e-4 x |x| for the Jacobian; 1e-4 where x is zero), which is what
makes the degrees of freedom agree with lmerTest's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.special

from pipeline.model.deviance import ProfiledDeviance

EIGEN_TOL = 1e-8


def _richardson(estimates: list[np.ndarray]) -> np.ndarray:
    """Combine estimates at steps h, h/2, h/4, ... (error O(h^2))."""
    table = list(estimates)
    factor = 4.0
    while len(table) > 1:
        table = [(factor * table[i + 1] - table[i]) / (factor - 1) for i in range(len(table) - 1)]
        factor *= 4.0
    return table[0]


ZERO_TOL = float(np.sqrt(np.finfo(float).eps / 7e-7))


def _base_steps(x: np.ndarray, relative: float) -> np.ndarray:
    """numDeriv's steps: ``relative * |x|``, or 1e-4 where x is (nearly) zero."""
    return np.where(np.abs(x) < ZERO_TOL, 1e-4, relative * np.abs(x))


def central_hessian(
    f: Callable[[np.ndarray], float], x: np.ndarray, step: np.ndarray, f0: float | None = None
) -> np.ndarray:
    """Central second differences with steps ``step`` (error O(step^2))."""
    k = x.size
    f0 = f(x) if f0 is None else f0
    H = np.empty((k, k))
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = step[i]
        H[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / step[i] ** 2
        for j in range(i):
            ej = np.zeros(k)
            ej[j] = step[j]
            H[i, j] = H[j, i] = (
                f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)
            ) / (4 * step[i] * step[j])
    return H


def richardson_hessian(
    f: Callable[[np.ndarray], float], x: np.ndarray, halvings: int = 4
) -> np.ndarray:
    h0 = _base_steps(x, 0.1)
    f0 = f(x)
    return _richardson([central_hessian(f, x, h0 / 2**r, f0) for r in range(halvings)])


def richardson_jacobian(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, halvings: int = 4
) -> np.ndarray:
    """d f / d x_k for an array-valued f; result has the shape f(x).shape + (k,)."""
    k = x.size
    h0 = _base_steps(x, 1e-4)
    out = []
    for j in range(k):
        estimates = []
        for r in range(halvings):
            h = h0[j] / 2**r
            e = np.zeros(k)
            e[j] = h
            estimates.append((f(x + e) - f(x - e)) / (2 * h))
        out.append(_richardson(estimates))
    return np.stack(out, axis=-1)


def richardson_jacobian_batch(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, halvings: int = 4
) -> np.ndarray:
    """:func:`richardson_jacobian` with every stencil point evaluated in one call:
    ``f`` maps a (B, k) array of points to a (B, ...) array of values."""
    k = x.size
    h0 = _base_steps(x, 1e-4)
    steps = h0[:, None] / 2.0 ** np.arange(halvings)[None, :]  # (k, halvings)
    points = np.repeat(x[None, :], 2 * k * halvings, axis=0).reshape(k, halvings, 2, k)
    for j in range(k):
        points[j, :, 0, j] += steps[j]
        points[j, :, 1, j] -= steps[j]
    values = f(points.reshape(-1, k))
    values = values.reshape(k, halvings, 2, *values.shape[1:])
    out = []
    for j in range(k):
        estimates = [
            (values[j, r, 0] - values[j, r, 1]) / (2 * steps[j, r]) for r in range(halvings)
        ]
        out.append(_richardson(estimates))
    return np.stack(out, axis=-1)


@dataclass(frozen=True, slots=True)
class Satterthwaite:
    varpar: np.ndarray  # (theta, sigma)
    hessian: np.ndarray
    vcov_varpar: np.ndarray  # A
    jacobian: np.ndarray  # (p, p, k)
    vcov_beta: np.ndarray
    negative_eigenvalues: int
    zero_eigenvalues: int

    def df(self, L: np.ndarray) -> float:
        L = np.asarray(L, dtype=float)
        var = float(L @ self.vcov_beta @ L)
        g = np.einsum("i,ijk,j->k", L, self.jacobian, L)
        denom = float(g @ self.vcov_varpar @ g)
        if denom <= 0 or not np.isfinite(denom):
            return float("inf")
        return 2.0 * var**2 / denom

    def coefficient_tests(self, beta: np.ndarray) -> list[dict[str, float]]:
        """The test of every fixed effect on its own (the rows of ``fixed_effects``)."""
        return [self.test(e, float(b)) for e, b in zip(np.eye(len(beta)), beta, strict=True)]

    def test(self, L: np.ndarray, estimate: float, level: float = 0.95) -> dict[str, float]:
        L = np.asarray(L, dtype=float)
        se = float(np.sqrt(L @ self.vcov_beta @ L))
        return wald_test(estimate, se, self.df(L), level=level)


def wald_test(estimate: float, se: float, df: float, *, level: float = 0.95) -> dict[str, float]:
    """t test and interval with ``df`` degrees of freedom (normal when df is infinite)."""
    stat = estimate / se if se > 0 else float("nan")
    # scipy.stats.t's own functions, without building a frozen distribution (milliseconds each)
    if np.isfinite(df):
        p = float(2 * scipy.special.stdtr(df, -abs(stat)))
        crit = float(scipy.special.stdtrit(df, 0.5 + level / 2))
    else:
        p = float(2 * scipy.special.ndtr(-abs(stat)))
        crit = float(scipy.special.ndtri(0.5 + level / 2))
    return {
        "estimate": float(estimate),
        "std_error": se,
        "df": df,
        "statistic": stat,
        "p_value": p,
        "conf_low": estimate - crit * se,
        "conf_high": estimate + crit * se,
    }


def satterthwaite(dev: ProfiledDeviance, theta: np.ndarray, sigma: float) -> Satterthwaite:
    varpar = np.concatenate([np.asarray(theta, dtype=float), [sigma]])
    gradient = getattr(dev, "varpar_gradient", None)
    gradient_batch = getattr(dev, "varpar_gradient_batch", None)
    halvings = getattr(dev, "stencil_halvings", 2)
    stencil = getattr(dev, "varpar_stencil_batch", None)
    if stencil is not None:
        return _satterthwaite_stencil(stencil, varpar, halvings)
    if gradient_batch is not None:
        # the stencil below, every point in one batched evaluation
        H = richardson_jacobian_batch(gradient_batch, varpar, halvings=halvings)
    elif gradient is not None:
        # an exact gradient: central differences of it, extrapolated over two step sizes,
        # are accurate to rounding (steps 1e-4 |x|: truncation ~1e-16, rounding ~1e-12)
        H = richardson_jacobian(gradient, varpar, halvings=2)
    else:
        H = richardson_hessian(dev.varpar_deviance, varpar)
    H = (H + H.T) / 2
    batch = getattr(dev, "covbeta_batch", None)
    if batch is not None:
        # all stencil points in one batched solve; two step sizes are accurate to rounding,
        # one (a deviance whose solve is costly says so) to ~1e-8 relative
        jac = richardson_jacobian_batch(batch, varpar, halvings=halvings)
    else:
        jac = richardson_jacobian(dev.covbeta, varpar)
    vcov_beta = dev.covbeta(varpar)
    return _satterthwaite_from(varpar, H, jac, vcov_beta)


def _satterthwaite_stencil(
    stencil: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    varpar: np.ndarray,
    halvings: int,
) -> Satterthwaite:
    """The Hessian (differences of the exact gradient) and the Jacobian of vcov(beta) from one
    batched evaluation of ``stencil`` (gradient and vcov(beta) at each row) over the stencil's
    points and the centre."""
    k = varpar.size
    centre: dict[str, np.ndarray] = {}

    def both(points: np.ndarray) -> np.ndarray:
        grads, covbeta = stencil(np.vstack([varpar[None, :], points]))
        centre["covbeta"] = covbeta[0]
        return np.concatenate([grads[1:], covbeta[1:].reshape(points.shape[0], -1)], axis=1)

    out = richardson_jacobian_batch(both, varpar, halvings=halvings)  # (k + p * p, k)
    p = centre["covbeta"].shape[0]
    return _satterthwaite_from(
        varpar, (out[:k] + out[:k].T) / 2, out[k:].reshape(p, p, k), centre["covbeta"]
    )


def _satterthwaite_from(
    varpar: np.ndarray, H: np.ndarray, jac: np.ndarray, vcov_beta: np.ndarray
) -> Satterthwaite:
    """A (pseudo-)inverse of the Hessian ``H`` over its eigenvalues above the tolerance."""
    values, vectors = np.linalg.eigh(H)
    pos = values > EIGEN_TOL
    h_inv = (vectors[:, pos] / values[pos]) @ vectors[:, pos].T
    return Satterthwaite(
        varpar=varpar,
        hessian=H,
        vcov_varpar=2.0 * h_inv,
        jacobian=jac,
        vcov_beta=vcov_beta,
        negative_eigenvalues=int(np.sum(values < -EIGEN_TOL)),
        zero_eigenvalues=int(np.sum(np.abs(values) <= EIGEN_TOL)),
    )
