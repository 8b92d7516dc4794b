"""Profile-likelihood confidence intervals for the variance parameters (lme4's ``confint(method = "profile")``).

The parameters are lme4's ``.sig01, .sig02, ...`` (standard deviations and
correlations of the random effects, in theta's order: per block, column by
column, the SD of the column's term and then its correlations with the terms
below it) and ``.sigma`` (the residual SD). For each parameter ``psi`` the
profile deviance is

    d(psi) = min over the other parameters of deviance(psi, others) - deviance at the optimum,

and the 95 % interval is the set ``{psi : d(psi) <= chi^2_1(0.95)}`` (Wilks).
When the profile stays below the cut-off all the way to the edge of the
parameter space, the limit is the edge itself: 0 for an SD, -1 or 1 for a
correlation (lme4 does the same). An SD estimated at zero has a lower limit
of 0.

As in lme4 (its ``devfun2`` calls ``refitML``), the profile is of the **ML**
deviance even for a REML fit; the table says so (``criterion``) and gives the
ML estimates the interval is centred on. lme4 interpolates its profile with a
spline through a grid of points; here each limit is the root of
``d(psi) = cut-off`` found by Brent's method, so the two differ by lme4's
interpolation error (about 1e-4 relative).

The other parameters are re-optimised at each point (L-BFGS-B, warm-started
from the previous point) in the parameterisation (SDs, partial correlations
of each block, sigma): every value in the box gives a positive semi-definite
covariance matrix. A correlation is profiled with its block's terms reordered
so that it is a first-column (marginal = partial) correlation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.optimize
import scipy.stats

from pipeline.errors import ModelError
from pipeline.model.deviance import ProfiledDeviance
from pipeline.model.results import GrowthFit
from schemas.tables import columns

__all__ = ["COLUMNS", "profile_confint"]

COLUMNS: dict[str, pl.DataType] = {
    k: v for k, v in columns("variance_intervals").items() if k != "model"
}  # schemas/tables.py


NEW_MINIMUM_TOL = 1e-3  # deviance units


def _devfun(fit: GrowthFit) -> Callable[[np.ndarray], float]:
    """The engine's deviance at (theta, sigma) for this fit's criterion (the one place this module touches the engine)."""
    if fit.stats is None:
        raise ModelError("profile intervals need a fit from the fast engine (engine='fast')")
    dev = ProfiledDeviance(fit.stats, fit.design.theta_index, reml=fit.reml)
    return dev.varpar_deviance


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    group: str
    term1: str
    term2: str | None
    kind: str  # sd | cor | sigma
    block: int  # index into the fit's blocks (-1 for sigma)
    i: int  # row within the block (the term of an SD; the second term of a correlation)
    j: int  # column within the block (the first term of a correlation)


class _Space:
    """Maps the natural parameters (SDs, correlations, sigma) to (theta, sigma).

    The optimisation vector holds, per block, the SDs and the partial
    correlations of the block (in a chosen order of its terms), then sigma.
    """

    def __init__(self, fit: GrowthFit) -> None:
        self.blocks = fit.design.blocks
        self.theta_index = fit.design.theta_index
        self.q = fit.covariance.shape[0]
        self.params: list[_Param] = []
        n = 0
        for b_idx, b in enumerate(self.blocks):
            for j in range(b.size):
                rows = range(j, b.size) if b.correlated else (j,)
                for i in rows:
                    n += 1
                    name = f".sig{n:02d}"
                    if i == j:
                        self.params.append(
                            _Param(name, b.group_label, b.names[i], None, "sd", b_idx, i, j)
                        )
                    else:
                        self.params.append(
                            _Param(name, b.group_label, b.names[j], b.names[i], "cor", b_idx, i, j)
                        )
        self.params.append(_Param(".sigma", "Residual", "", None, "sigma", -1, 0, 0))

    # the optimisation vector: [block 0: sds (size), pcors (size*(size-1)/2 if correlated)] ... sigma
    def layout(self) -> list[tuple[int, int, int]]:
        """(start, number of SDs, number of partial correlations) per block."""
        out, pos = [], 0
        for b in self.blocks:
            k = b.size
            ncor = k * (k - 1) // 2 if b.correlated else 0
            out.append((pos, k, ncor))
            pos += k + ncor
        return out

    @property
    def size(self) -> int:
        s, k, c = self.layout()[-1]
        return s + k + c + 1

    def to_varpar(self, x: np.ndarray, orders: list[np.ndarray]) -> np.ndarray:
        """(theta, sigma) for the vector x; ``orders[b]`` is the order of block b's terms in x."""
        sigma = x[-1]
        cov = np.zeros((self.q, self.q))
        for (pos, k, ncor), b, order in zip(self.layout(), self.blocks, orders, strict=True):
            sds = x[pos : pos + k]
            L = _cpc_cholesky(x[pos + k : pos + k + ncor], k) if ncor else np.eye(k)
            C = L @ L.T  # correlations in the permuted order
            inv = np.argsort(order)
            C = C[np.ix_(inv, inv)]
            S = C * np.outer(sds, sds)
            sl = slice(b.start, b.start + k)
            cov[sl, sl] = S
        lam = _lower_factor(cov) / sigma
        theta = np.array([lam[i, j] for i, j in self.theta_index])
        return np.append(theta, sigma)

    def from_fit(
        self, covariance: np.ndarray, sigma: float, orders: list[np.ndarray]
    ) -> np.ndarray:
        x = np.empty(self.size)
        for (pos, k, ncor), b, order in zip(self.layout(), self.blocks, orders, strict=True):
            S = covariance[b.start : b.start + k, b.start : b.start + k][np.ix_(order, order)]
            sds = np.sqrt(np.maximum(np.diag(S), 0.0))
            x[pos : pos + k] = sds[np.argsort(order)]
            if ncor:
                with np.errstate(invalid="ignore", divide="ignore"):
                    C = S / np.outer(sds, sds)
                C = np.where(np.isfinite(C), C, 0.0)
                np.fill_diagonal(C, 1.0)
                x[pos + k : pos + k + ncor] = _cpc_from_corr(C)
        x[-1] = sigma
        return x

    def bounds(self) -> list[tuple[float | None, float | None]]:
        out: list[tuple[float | None, float | None]] = []
        for _, k, ncor in self.layout():
            out += [(0.0, None)] * k + [(-1.0, 1.0)] * ncor
        out.append((1e-12, None))
        return out

    def coordinate(self, p: _Param) -> tuple[int, list[np.ndarray]]:
        """Where parameter p sits in x, and the block orders that make it a coordinate."""
        orders = [np.arange(b.size) for b in self.blocks]
        if p.kind == "sigma":
            return self.size - 1, orders
        pos, k, _ = self.layout()[p.block]
        if p.kind == "sd":
            return pos + p.i, orders
        # correlation of terms j and i: put j first and i second, so it is the first partial correlation
        rest = [t for t in range(k) if t not in (p.j, p.i)]
        orders[p.block] = np.array([p.j, p.i, *rest])
        return pos + k, orders


def _cpc_cholesky(z: np.ndarray, k: int) -> np.ndarray:
    """Cholesky factor of the correlation matrix with partial correlations z (column by column).

    z fills the strict lower triangle column by column: (1,0), (2,0), ..., (2,1), ...
    Every z in [-1, 1] gives a valid (positive semi-definite) correlation matrix.
    """
    P = np.zeros((k, k))
    pos = 0
    for j in range(k):
        for i in range(j + 1, k):
            P[i, j] = z[pos]
            pos += 1
    L = np.zeros((k, k))
    for i in range(k):
        remaining = 1.0
        for j in range(i):
            L[i, j] = P[i, j] * math.sqrt(max(remaining, 0.0))
            remaining -= L[i, j] ** 2
        L[i, i] = math.sqrt(max(remaining, 0.0))
    return L


def _cpc_from_corr(C: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_cpc_cholesky` (a PSD correlation matrix -> partial correlations)."""
    k = C.shape[0]
    L = _lower_factor(C)
    z = []
    for j in range(k):
        for i in range(j + 1, k):
            remaining = 1.0 - float(np.sum(L[i, :j] ** 2))
            z.append(L[i, j] / math.sqrt(remaining) if remaining > 1e-14 else 0.0)
    return np.clip(np.array(z), -1.0, 1.0)


def _lower_factor(S: np.ndarray) -> np.ndarray:
    """A lower-triangular F with F F' = S and a non-negative diagonal, also for a singular PSD S."""
    w, v = np.linalg.eigh((S + S.T) / 2)
    root = v * np.sqrt(np.maximum(w, 0.0))  # root root' = S
    _, r = np.linalg.qr(root.T)  # root' = Q r  ->  S = r' r
    F = r.T
    signs = np.where(np.diag(F) < 0, -1.0, 1.0)
    return F * signs  # flips columns of F: F F' unchanged


def profile_confint(fit: GrowthFit, *, level: float = 0.95) -> pl.DataFrame:
    """lme4's ``confint(fit, parm = "theta_", method = "profile")``: one row per SD, correlation and sigma.

    Columns: :data:`COLUMNS`. A REML fit is refitted by ML first (as lme4 does).
    """
    if not 0 < level < 1:
        raise ModelError(f"level must be between 0 and 1, not {level}")
    ml = fit.refit(reml=False) if fit.reml else fit
    if ml.stats is None:
        raise ModelError("profile intervals need a fit from the fast engine (engine='fast')")
    devfun = _devfun(ml)
    space = _Space(ml)
    cutoff = float(scipy.stats.chi2.ppf(level, 1))
    natural = [np.arange(b.size) for b in space.blocks]
    x_hat = space.from_fit(ml.covariance, ml.sigma, natural)
    base = devfun(space.to_varpar(x_hat, natural))

    rows: dict[str, list] = {name: [] for name in COLUMNS}
    for p in space.params:
        k, orders = space.coordinate(p)
        x0 = space.from_fit(ml.covariance, ml.sigma, orders)
        estimate = float(x0[k])
        profile = _Profile(devfun, space, orders, k, x0, base)
        lo_bound, hi_bound = space.bounds()[k]
        lo, lo_edge = profile.limit(estimate, -1, lo_bound, cutoff, ml.sigma)
        hi, hi_edge = profile.limit(estimate, +1, hi_bound, cutoff, ml.sigma)
        if profile.lowest < -NEW_MINIMUM_TOL:
            raise ModelError(
                f"profiling {p.name} found a deviance {-profile.lowest:.3g} lower than the fit's: "
                f"the fit of {fit.formula!r} did not reach the optimum (as lme4: refit and profile again)"
            )
        if p.kind == "sd" and estimate <= 0.0:
            lo, lo_edge = 0.0, True
        rows["parameter"].append(p.name)
        rows["group"].append(p.group)
        rows["term1"].append(p.term1 or None)
        rows["term2"].append(p.term2)
        rows["kind"].append(p.kind)
        rows["estimate"].append(estimate)
        rows["conf_low"].append(lo)
        rows["conf_high"].append(hi)
        rows["low_at_bound"].append(lo_edge)
        rows["high_at_bound"].append(hi_edge)
        rows["level"].append(level)
        rows["criterion"].append("ML")
    return pl.DataFrame(rows, schema=COLUMNS)


class _Profile:
    """The profile deviance of coordinate k of x, the others re-optimised (warm starts)."""

    def __init__(
        self,
        devfun: Callable[[np.ndarray], float],
        space: _Space,
        orders: list[np.ndarray],
        k: int,
        x_hat: np.ndarray,
        base: float,
    ) -> None:
        self.devfun = devfun
        self.space = space
        self.orders = orders
        self.k = k
        self.x_hat = x_hat
        self.base = base
        self.free = np.array([i != k for i in range(x_hat.size)])
        all_bounds = space.bounds()
        self.bounds = [b for i, b in enumerate(all_bounds) if i != k]
        # scale of each free coordinate: SDs and sigma relative to sigma, correlations as they are
        sig = x_hat[-1]
        scale = np.ones(x_hat.size)
        for i, (_lo, hi) in enumerate(all_bounds):
            if hi is None:
                scale[i] = max(abs(x_hat[i]), 0.05 * sig)
        self.scale = scale[self.free]
        self.warm: dict[int, np.ndarray] = {}
        self.lowest = (
            0.0  # the lowest profile deviance seen (negative: the fit was not at the optimum)
        )

    def _full(self, value: float, free_x: np.ndarray) -> np.ndarray:
        x = np.empty(self.x_hat.size)
        x[self.k] = value
        x[self.free] = free_x
        return x

    def _dev(self, x: np.ndarray) -> float:
        try:
            d = self.devfun(self.space.to_varpar(x, self.orders))
        except (np.linalg.LinAlgError, ValueError, ZeroDivisionError):
            return 1e300  # far outside: a variance so large the fixed-effects system is singular
        return d if math.isfinite(d) else 1e300

    def deviance(self, value: float, direction: int) -> float:
        """d(value): re-optimised deviance minus the base."""
        start = self.warm.get(direction, self.x_hat[self.free])
        lo = np.array([b[0] if b[0] is not None else -np.inf for b in self.bounds])
        hi = np.array([b[1] if b[1] is not None else np.inf for b in self.bounds])
        start = np.clip(start, lo, hi)
        scaled_bounds = [
            (None if a is None else a / s, None if b is None else b / s)
            for (a, b), s in zip(self.bounds, self.scale, strict=True)
        ]

        def f(u: np.ndarray) -> float:
            return self._dev(self._full(value, u * self.scale))

        best_u, best_f = start / self.scale, f(start / self.scale)
        starts = [start / self.scale]
        if direction in self.warm:
            # also from the optimum: a warm start alone can stall (seen on sleepstudy's correlation)
            starts.append(self.x_hat[self.free] / self.scale)
        for u0 in starts:
            res = scipy.optimize.minimize(
                f,
                np.clip(u0, lo / self.scale, hi / self.scale),
                method="L-BFGS-B",
                bounds=scaled_bounds,
                options={"ftol": 1e-14, "gtol": 1e-9, "maxiter": 2000, "eps": 1e-7},
            )
            if res.fun < best_f:
                best_u, best_f = res.x, float(res.fun)
        self.warm[direction] = best_u * self.scale
        self.lowest = min(self.lowest, best_f - self.base)
        return best_f - self.base

    def limit(
        self,
        estimate: float,
        direction: int,
        bound: float | None,
        cutoff: float,
        sigma: float,
    ) -> tuple[float, bool]:
        """The value where the profile deviance reaches ``cutoff`` on one side; the edge if it never does."""
        if bound is not None and (estimate - bound) * direction >= 0:
            return float(bound), True
        room = math.inf if bound is None else abs(bound - estimate)
        step = min(0.25 * max(abs(estimate), 0.1 * sigma) if room == math.inf else 0.2 * room, room)
        inside, d_inside = estimate, 0.0
        self.warm.pop(direction, None)
        for _ in range(60):
            trial = estimate + direction * min(abs(inside - estimate) + step, room)
            d = self.deviance(trial, direction)
            if d >= cutoff:
                return self._root(inside, d_inside, trial, d, direction, cutoff), False
            inside, d_inside = trial, d
            if abs(inside - estimate) >= room:  # reached the edge below the cut-off
                return float(bound), True
            step *= 1.6
        return (math.inf * direction), False

    def _root(
        self, a: float, da: float, b: float, db: float, direction: int, cutoff: float
    ) -> float:
        """Where the profile's zeta = sqrt(d) crosses sqrt(cutoff) between a (below) and b (above).

        Regula falsi (Illinois) on zeta, which is close to linear in the parameter; the
        end values are never re-evaluated, so optimisation noise cannot unbracket the root.
        """
        target = math.sqrt(cutoff)
        fa = math.sqrt(max(da, 0.0)) - target
        fb = math.sqrt(max(db, 0.0)) - target
        side = 0
        c = b
        for _ in range(100):
            c = b - fb * (b - a) / (fb - fa) if fb != fa else (a + b) / 2
            if abs(b - a) <= 1e-8 * max(1.0, abs(c)):
                break
            fc = math.sqrt(max(self.deviance(c, direction), 0.0)) - target
            if abs(fc) < 1e-9:
                break
            if (fc > 0) == (fb > 0):
                b, fb = c, fc
                if side == -1:
                    fa /= 2
                side = -1
            else:
                a, fa = c, fc
                if side == 1:
                    fb /= 2
                side = 1
        return float(c)
