"""Minimise the profiled deviance over theta, and say honestly how it went.

One optimizer, always the same: L-BFGS-B (bounds from the
:class:`~pipeline.model.parameters.CovarianceParameters`: diagonal elements of
Lambda are >= 0) with the exact gradient of the profiled deviance, then
Newton polishing on the parameters that are not at a bound (Hessian by
forward differences of the exact gradient). The deviance and its gradient are
cheap (O(patterns)), so accurate derivatives cost little. The polish goes on while
the criterion falls by more than its rounding (1e-12 relative: it is a sum over all
the data) or, within rounding, while each step halves the exact gradient; a point
asked for again (L-BFGS-B's last one, a step's landing point) is not evaluated again.

At the end, a diagonal element close to zero is set to exactly zero when the
deviance does not get worse (a boundary, "singular" fit). Convergence is
judged by the Newton decrement ``g' H^{-1} g / 2`` on the free parameters, in
deviance units: the most the deviance could still fall by a Newton step. That
is unit-free and does not raise false alarms on large samples the way a raw
gradient threshold does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.optimize

from pipeline.model.deviance import ProfiledDeviance
from pipeline.model.parameters import CovarianceParameters

BOUNDARY_TOL = 1e-4  # lme4's isSingular() tolerance, here on the scaled diagonal theta
DECREMENT_TOL = 1e-6  # deviance units
ZERO_TRY = 1e-2  # scaled diagonal theta below this is tried at zero (kept only if no worse)
# L-BFGS-B stops when an iteration lowers the deviance by less than this fraction of it: near
# 1e-14 the changes are rounding noise, where its line search only fails (dozens of wasted
# evaluations on large data); the Newton polish that follows finishes the job
FTOL = 1e-11
HESSIAN_REUSE = 1e-3  # relative distance within which the Newton Hessian is reused
CACHE_SIZE = 4  # points whose deviance (and gradient) the optimizer remembers
# relative changes of the criterion below this are rounding (a sum over all the data): there
# only the exact gradient tells the Newton steps apart
ROUNDING = 1e-12


@dataclass(frozen=True, slots=True)
class OptimizationRecord:
    optimizer: str
    start: tuple[float, ...]
    end: tuple[float, ...]
    evaluations: int
    iterations: int
    deviance: float
    gradient: tuple[
        float, ...
    ]  # at the end, in the scaled parameters; zero for parameters fixed at a bound
    newton_decrement: float
    hessian_pd: bool
    boundary: bool  # some diagonal theta is zero
    at_bound: tuple[bool, ...]
    converged: bool
    message: str
    starts: tuple[tuple[str, float], ...] = ()  # (start, deviance reached) for every start tried

    @property
    def max_abs_gradient(self) -> float:
        return float(max((abs(g) for g in self.gradient), default=0.0))


def _steps(x: np.ndarray, rel: float) -> np.ndarray:
    return rel * np.maximum(1.0, np.abs(x))


def _escape_boundary(
    fun: Callable[[np.ndarray], float],
    x: np.ndarray,
    fx: float,
    even: np.ndarray,
    lower: np.ndarray,
) -> np.ndarray | None:
    """A point inside the bounds with a lower deviance than ``x``, if moving a zero diagonal off zero gives one."""
    best, best_f = None, fx
    for j in np.flatnonzero(even & (x <= lower)):
        for delta in (1e-3, 1e-2, 1e-1, 0.5):
            xt = x.copy()
            xt[j] = lower[j] + delta
            ft = fun(xt)
            if ft < best_f - 1e-10 * max(1.0, abs(fx)):
                best, best_f = xt, ft
    return best


def moment_start(stats, theta_index: tuple[tuple[int, int], ...]) -> np.ndarray | None:
    """A start near the answer, from per-person OLS (as HLM's starting values).

    beta from pooled OLS; each person's random-effects coefficients by OLS of
    the residuals on Z_i (persons whose Z_i'Z_i is well conditioned); the
    covariance of those estimates minus their average sampling covariance
    estimates sigma^2 Lambda Lambda'; eigenvalues floored so the start is inside.
    Returns None when too few persons allow it.
    """
    p, q = stats.p, stats.q
    om = stats.omega
    try:
        beta = np.linalg.solve(om[:p, :p], om[:p, p])
    except np.linalg.LinAlgError:
        return None
    rss = float(om[p, p] - 2 * beta @ om[:p, p] + beta @ om[:p, :p] @ beta)
    # per pattern (or per person on the per-person path): conditioning and inverse of Z_i'Z_i
    eig = np.linalg.eigvalsh(stats.ztz)
    ok = eig[:, 0] > 1e-8 * np.maximum(eig[:, -1], 1e-300)
    inv = np.zeros_like(stats.ztz)
    inv[ok] = np.linalg.inv(stats.ztz[ok])
    good = ok[stats.pattern_of]
    # persons with a well-conditioned Z_i'Z_i (counted per pattern: statistics merged from
    # partitions keep per-pattern sums only, see pipeline.model.partial)
    m_good = int(stats.counts[ok].sum()) if stats.S is not None else int(good.sum())
    if m_good <= q + 1:
        return None
    v = np.append(-beta, 1.0)
    if stats.S is not None:
        # per pattern k, from S_k = sum_i W_i (x) W_i: R_k = sum_i r_i r_i' (r_i = W_i v), so
        # sum_i b_i b_i' = inv_k R_k inv_k and sum_i b_i' r_i = <inv_k, R_k>; O(patterns)
        K = stats.ztz.shape[0]
        P = p + 1
        R = (stats.S.reshape(-1, P * P) @ np.outer(v, v).reshape(-1)).reshape(K, q, q)
        W_sum = np.stack(
            [
                np.bincount(stats.pattern_of, weights=col, minlength=K)
                for col in (stats.W.reshape(-1, p + 1) @ v).reshape(-1, q).T
            ],
            axis=1,
        )  # (K, q): sum of r_i per pattern
        c = np.where(ok, stats.counts, 0.0)
        Rk = R[ok]
        invk = inv[ok]
        explained = float(np.sum(invk * Rk))
        bb = (invk @ Rk @ invk).sum(axis=0)
        b_sum = (invk @ W_sum[ok][:, :, None])[:, :, 0].sum(axis=0)
        inv_mean = np.einsum("k,kij->ij", c, inv) / m_good
        cov_b = (bb - np.outer(b_sum, b_sum) / m_good) / (m_good - 1)
    else:
        ztz_inv = inv[stats.pattern_of[good]] if m_good < stats.m else inv[stats.pattern_of]
        W = stats.W[good] if m_good < stats.m else stats.W
        r = W @ v
        b = (ztz_inv @ r[:, :, None])[:, :, 0]
        explained = float(np.vdot(b, r))
        inv_mean = ztz_inv.mean(axis=0)
        cov_b = np.cov(b, rowvar=False).reshape(q, q)
    dof = stats.n - p - q * m_good
    sigma2 = (rss - explained) / dof if dof > 0 and rss > explained else rss / max(stats.n - p, 1)
    if not sigma2 > 0:
        return None
    D = cov_b - sigma2 * inv_mean
    mask = np.zeros((q, q), dtype=bool)
    for i, j in theta_index:
        mask[i, j] = mask[j, i] = True
    D = np.where(mask, (D + D.T) / 2, 0.0)
    w, v = np.linalg.eigh(D / sigma2)
    floor = max(1e-2 * float(w.max()), 1e-4) if w.max() > 0 else 1e-2
    rel = (v * np.maximum(w, floor)) @ v.T
    rel = np.where(mask, rel, 0.0)
    try:
        lam = np.linalg.cholesky(rel)
    except np.linalg.LinAlgError:
        return None
    theta = np.array([lam[i, j] for i, j in theta_index])
    return theta if np.all(np.isfinite(theta)) else None


def optimize_theta(
    dev: ProfiledDeviance,
    params: CovarianceParameters | np.ndarray,
    *,
    scale: np.ndarray | None = None,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, OptimizationRecord]:
    """Minimise ``dev`` over theta >= lower.

    The search runs in the scaled parameters ``theta * scale``, where ``scale``
    is the root mean square of the random-effects column each theta multiplies:
    then the start (identity), the step sizes and the boundary tolerance mean the
    same whatever the units of time (days or years) -- lme4's do not.
    """
    if not isinstance(params, CovarianceParameters):  # a vector of lower bounds on theta
        lower = np.asarray(params, dtype=float)
        diag = np.isfinite(lower) & (lower == 0)
        params = CovarianceParameters(
            tuple(f".sig{j + 1:02d}" for j in range(lower.size)),
            lower,
            np.full(lower.size, np.inf),
            diag,
            diag.copy(),
        )
    scale = np.ones(params.size) if scale is None else np.asarray(scale, dtype=float)
    # the identity start is in scaled units (1 = one RMS of the column); a given start is in theta
    x0 = params.start() if start is None else np.asarray(start, dtype=float) * scale
    lower = params.lower * scale  # bounds of 0 or +-inf are unchanged by the scale
    upper = params.upper * scale
    bounded = params.bounded
    variance = params.variance
    even = params.even
    bounds = [
        (lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None)
        for lo, hi in zip(lower, upper, strict=True)
    ]
    evals_before = dev.evaluations

    # the last few points evaluated, with the value and (when computed) the gradient: the
    # optimizer's phases often ask again for a point just evaluated (L-BFGS-B's last point,
    # a Newton step's landing point, the final check), and the deviance is deterministic
    cache: list[tuple[bytes, float, np.ndarray | None]] = []

    def lookup(x: np.ndarray) -> tuple[float, np.ndarray | None] | None:
        key = x.tobytes()
        for k, value, grad in cache:
            if k == key:
                return value, grad
        return None

    def remember(x: np.ndarray, value: float, grad: np.ndarray | None) -> None:
        key = x.tobytes()
        cache[:] = [entry for entry in cache if entry[0] != key][-(CACHE_SIZE - 1) :]
        cache.append((key, value, grad))

    def fun(x: np.ndarray) -> float:
        x = np.asarray(x, dtype=float)
        hit = lookup(x)
        if hit is not None:
            return hit[0]
        value = dev(x / scale)
        remember(x, value, None)
        return value

    def fun_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.asarray(x, dtype=float)
        hit = lookup(x)
        if hit is not None and hit[1] is not None:
            return hit[0], hit[1].copy()
        value, grad = dev.value_and_gradient(x / scale)
        grad = grad / scale
        remember(x, value, grad)
        return value, grad.copy()

    def jac(x: np.ndarray) -> np.ndarray:
        return fun_grad(x)[1]

    last: list[tuple[np.ndarray, np.ndarray]] = []  # (x, H) of the last Hessian computed

    def hess(x: np.ndarray, g: np.ndarray | None = None) -> np.ndarray:
        """Forward differences of the exact gradient (one gradient per parameter; ``g`` is
        the gradient at x when known). Accurate to about the step (1e-5 relative), which is
        all a Newton step and the decrement need.

        The last one is reused while x stays within 1e-3 (relative) of where it was computed:
        the Hessian changes by that order there, which a Newton step near the optimum (a
        quasi-Newton step then) and the decrement's judgement tolerate."""
        step = _steps(x, 1e-5)
        if last and np.all(np.abs(x - last[0][0]) <= _steps(x, HESSIAN_REUSE)):
            return last[0][1]
        g0 = jac(x) if g is None else g
        points = x[None, :] + np.diag(step)
        batch = getattr(dev, "gradient_batch", None)
        if batch is not None:  # all the points in one batched evaluation
            grads = batch(points / scale) / scale
        else:
            grads = np.stack([jac(point) for point in points])
        H = ((grads - g0) / step[:, None]).T
        H = (H + H.T) / 2
        last[:] = [(x.copy(), H)]
        return H

    def run(x_start: np.ndarray) -> scipy.optimize.OptimizeResult:
        return scipy.optimize.minimize(
            fun_grad,
            x_start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 2000, "ftol": FTOL, "gtol": 1e-9, "maxcor": 20},
        )

    res = run(x0)
    x = np.array(res.x, dtype=float)
    x = np.clip(x, lower, upper)
    fx = fun(x)
    iterations = int(res.nit)
    ok = bool(res.success) or "ABNORMAL" in str(res.message).upper()
    message = str(res.message)
    restarts = 0
    # The deviance is even in each diagonal element of Lambda, so a diagonal at
    # zero always has a zero derivative: a stop there may be a saddle, not a
    # minimum. Look into the interior; if the deviance falls, go on from there.
    while restarts < 5:
        escape = _escape_boundary(fun, x, fx, even, lower)
        if escape is None:
            break
        restarts += 1
        res = run(escape)
        xn = np.array(res.x, dtype=float)
        xn = np.clip(xn, lower, upper)
        fn = fun(xn)
        iterations += int(res.nit)
        if fn >= fx:
            break
        x, fx = xn, fn
        ok = bool(res.success) or "ABNORMAL" in str(res.message).upper()
        message = str(res.message)

    # boundary: a diagonal element near zero may sit on a flat, even slope the
    # optimizer crawls down; set it to zero if the deviance does not get worse
    for j in np.flatnonzero(variance):
        if 0 < x[j] < ZERO_TRY:
            xz = x.copy()
            xz[j] = lower[j]
            fz = fun(xz)
            if fz <= fx:
                x, fx = xz, fz

    # Newton polishing on the free parameters
    previous_norm = np.inf
    small_gain = False
    rounding = ROUNDING * max(1.0, abs(fx))
    for _ in range(20):
        free = ~(bounded & ((x <= lower) | (x >= upper)))
        if not free.any():
            break
        g = jac(x)
        free &= ~((x <= lower) & (g >= 0)) & ~((x >= upper) & (g <= 0))
        if not free.any():
            break
        norm = float(np.linalg.norm(g[free]))
        if small_gain and not norm < 0.5 * previous_norm:
            break  # the criterion no longer moves and neither does the gradient: done
        previous_norm = norm
        H = hess(x, g)
        Hf = H[np.ix_(free, free)]
        gf = g[free]
        try:
            step = np.linalg.solve(Hf, gf)
        except np.linalg.LinAlgError:
            break
        if gf @ step <= 0:  # not a descent direction: Hessian not PD here
            break
        t = 1.0
        gain = None
        while t > 1e-4:
            xn = x.copy()
            xn[free] -= t * step
            xn = np.clip(xn, lower, upper)
            # the full step with its gradient: where it is taken (nearly always, this close),
            # the next iteration or the test below needs the gradient there
            fn = fun_grad(xn)[0] if t == 1.0 else fun(xn)
            if fn < fx:
                gain = fx - fn
                x, fx = xn, fn
                break
            if fn <= fx + rounding:
                # at the criterion's rounding level only the exact gradient still tells
                # the steps apart: a Newton step that halves it is taken, so that the
                # optimum does not depend on the order in which the data were summed;
                # one that does not ends the polish (shorter steps are tried only while
                # the criterion tells them apart: at this level it no longer does)
                if np.linalg.norm(jac(xn)[free]) < 0.5 * np.linalg.norm(gf):
                    gain = 0.0
                    x, fx = xn, fn
                break
            t /= 2
        iterations += 1
        if gain is None:
            break
        # a gain within rounding is no evidence of progress: go on only while the gradient halves
        small_gain = gain <= rounding

    at_lower = bounded & (x <= lower)
    at_upper = bounded & (x >= upper)
    at_bound = at_lower | at_upper
    g = jac(x)
    free = ~((at_lower & (g >= 0)) | (at_upper & (g <= 0)))
    gfree = np.where(free, g, 0.0)
    H = hess(x, g) if free.any() else np.zeros((0, 0))
    if free.any():
        Hf = H[np.ix_(free, free)]
        eig = np.linalg.eigvalsh((Hf + Hf.T) / 2)
        hessian_pd = bool(eig.min() > 0)
        try:
            decrement = float(gfree[free] @ np.linalg.solve(Hf, gfree[free]) / 2)
        except np.linalg.LinAlgError:
            decrement = float("inf")
    else:
        hessian_pd, decrement = True, 0.0
    boundary = bool(np.any(variance & (x < BOUNDARY_TOL)))
    converged = ok and hessian_pd and abs(decrement) < DECREMENT_TOL
    if not converged:
        reasons = []
        if not ok:
            reasons.append(f"the optimizer stopped: {message}")
        if not hessian_pd:
            reasons.append("the Hessian of the deviance is not positive definite at the end")
        if not abs(decrement) < DECREMENT_TOL:
            reasons.append(f"the deviance could still fall by {decrement:.2g}")
        message = "; ".join(reasons)
    else:
        message = "converged" + (" (boundary fit: a variance is zero)" if boundary else "")
    if restarts:
        message += f" (restarted {restarts} time(s) from inside the boundary)"
    record = OptimizationRecord(
        optimizer="L-BFGS-B + Newton polish (exact gradient)",
        start=tuple(float(v) for v in x0 / scale),
        end=tuple(float(v) for v in x / scale),
        evaluations=dev.evaluations - evals_before,
        iterations=iterations,
        deviance=float(fx),
        gradient=tuple(float(v) for v in gfree),
        newton_decrement=float(decrement),
        hessian_pd=hessian_pd,
        boundary=boundary,
        at_bound=tuple(bool(v) for v in at_bound),
        converged=bool(converged),
        message=message,
    )
    return x / scale, record
