"""Level-1 error structures (AR(1), Toeplitz, unstructured ...): statistics, deviance and fit.

The model is ``y_i = X_i beta + Z_i b_i + e_i`` with ``b_i ~ N(0, sigma^2 Lambda Lambda')``
and ``e_i ~ N(0, sigma^2 R_i(rho))``, where ``R_i`` is the structure's matrix
(:mod:`pipeline.model.residual`) at the occasions person i was observed
(gls / mmrm when there are no random effects). Whitening each person by
``R_i^{-1}`` turns it into the model of :mod:`pipeline.model.deviance` plus
``sum_i log|R_i|``, so the criterion needs, per person, only

    Z_i'R_i^{-1}Z_i,  Z_i'R_i^{-1}[X_i | y_i],  [X_i | y_i]'R_i^{-1}[X_i | y_i].

``R_i`` is shared by the persons with the same pattern (the same observed
occasions, the same Z rows, for ``sp_exp`` the same times), so per pattern k the
unprojected moments ``Q_k = sum_i vec(D_i) vec(D_i)'`` of ``D_i = [X_i | y_i]``
(padded to every occasion, zero rows where unobserved) are kept, and every
evaluation projects them through ``R_k^{-1}``: O(patterns), not O(rows). With
many patterns (continuous times) it works per person instead.

The parameters are theta (Lambda) followed by the structure's unconstrained
parameters; the gradient is the complex-step derivative (every step is
analytic), exact to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.errors import FormulaError, ModelError
from pipeline.model.deviance import LOG_2PI, PLSSolution, VarparMethods
from pipeline.model.formula import ResidualTerm
from pipeline.model.residual import ResidualStructure, SpatialExponential, make_structure
from pipeline.model.stats import MAX_PATTERNS, _pattern_codes, pattern_moments

COMPLEX_STEP = 1e-30
LAGGED = ("ar1", "ar1h", "toep", "toeph")  # the lag between occasions matters
MAX_OCCASIONS = 40


@dataclass(frozen=True, slots=True)
class ResidualSpec:
    """A level-1 structure and where each row sits in its person's vector of occasions."""

    term: ResidualTerm
    structure: ResidualStructure
    position: np.ndarray  # (n,) slot of each row: its occasion index (sp_exp: rank of its time)
    times: np.ndarray | None  # (n,) real times (sp_exp only)
    labels: tuple[str, ...]  # occasion labels in index order (sp_exp: empty)
    T: int  # slots per person

    @property
    def continuous(self) -> bool:
        return isinstance(self.structure, SpatialExponential)


def _fmt(v: float) -> str:
    return f"{v:g}"


def residual_spec(
    frame: pl.DataFrame, term: ResidualTerm, codes: np.ndarray, m: int, text: str
) -> ResidualSpec:
    """Code the occasions of ``term`` for the rows of ``frame`` (persons ``codes``)."""
    col = term.occasion
    dtype = frame.schema[col]
    values = frame[col]
    if term.structure == "sp_exp":
        if not dtype.is_numeric():
            raise FormulaError(
                f"formula {text!r}: sp_exp({col} | {term.group}) needs numeric times; "
                f"{col!r} is {dtype}"
            )
        times = values.cast(pl.Float64).to_numpy()
        order = np.lexsort((times, codes))
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        counts = np.diff(np.r_[starts, sorted_codes.size])
        rank = np.arange(sorted_codes.size) - np.repeat(starts, counts)
        position = np.empty_like(rank)
        position[order] = rank
        st = times[order]
        same = (sorted_codes[1:] == sorted_codes[:-1]) & (st[1:] == st[:-1])
        if same.any():
            row = int(order[int(np.flatnonzero(same)[0]) + 1])
            _duplicate(frame, term, row, text, _fmt(times[row]))
        T = int(counts.max())
        return ResidualSpec(term, make_structure("sp_exp"), position, times, (), T)

    if dtype.is_numeric():
        v = values.cast(pl.Float64).to_numpy()
        distinct = np.unique(v)
        if term.structure in LAGGED and distinct.size > 1:
            step = float(np.min(np.diff(distinct)))
            grid = (distinct - distinct[0]) / step
            if not np.allclose(grid, np.round(grid), rtol=0, atol=1e-8):
                raise FormulaError(
                    f"formula {text!r}: the occasions of {col!r} are not equally spaced "
                    f"({', '.join(_fmt(x) for x in distinct[:8])}{', ...' if distinct.size > 8 else ''}); "
                    f"{term.structure} needs a lag between occasions: use sp_exp({col} | {term.group}) "
                    "for continuous time, or a column of occasion labels"
                )
            T = int(round(grid[-1])) + 1
            position = np.round((v - distinct[0]) / step).astype(np.int64)
            labels = tuple(_fmt(distinct[0] + k * step) for k in range(T))
        else:
            position = np.searchsorted(distinct, v).astype(np.int64)
            labels = tuple(_fmt(x) for x in distinct)
            T = int(distinct.size)
    else:
        if isinstance(dtype, pl.Enum):
            cats = [c for c in dtype.categories.to_list() if c in set(values.cast(pl.String))]
        else:
            cats = sorted(values.cast(pl.String).unique().to_list())
        lookup = {c: i for i, c in enumerate(cats)}
        position = np.array([lookup[c] for c in values.cast(pl.String).to_list()], dtype=np.int64)
        labels = tuple(cats)
        T = len(cats)
    if T < 2:
        raise FormulaError(
            f"formula {text!r}: {term.text} needs at least 2 occasions; {col!r} has {T}"
        )
    if T > MAX_OCCASIONS:
        raise FormulaError(
            f"formula {text!r}: {term.text} spans {T} occasions; the limit is {MAX_OCCASIONS} "
            f"(use sp_exp({col} | {term.group}) for many or continuous times)"
        )
    key = codes.astype(np.int64) * T + position
    uniq, first, counts = np.unique(key, return_index=True, return_counts=True)
    if np.any(counts > 1):
        dup_key = uniq[counts > 1][0]
        rows = np.flatnonzero(key == dup_key)
        _duplicate(frame, term, int(rows[1]), text, labels[int(position[rows[1]])])
    return ResidualSpec(term, make_structure(term.structure, T), position, None, labels, T)


def _duplicate(frame: pl.DataFrame, term: ResidualTerm, row: int, text: str, where: str) -> None:
    person = frame[term.group][row]
    raise ModelError(
        f"formula {text!r}: person {person!r} has two rows at occasion {where} of "
        f"{term.occasion!r}; an error structure needs one row per person and occasion"
    )


@dataclass(frozen=True, slots=True)
class StructuredStats:
    n: int
    p: int
    q: int
    m: int
    T: int
    D: np.ndarray  # (m, T, P) [X | y] per person, zero rows where unobserved
    Zp: np.ndarray  # (m, T, q)
    mask: np.ndarray  # (m, T)
    times: np.ndarray | None  # (m, T) sp_exp times
    pattern_of: np.ndarray  # (m,)
    counts: np.ndarray  # (K,)
    pmask: np.ndarray  # (K, T)
    pZ: np.ndarray  # (K, T, q)
    pdist: np.ndarray | None  # (K, T, T) sp_exp distances
    Q: np.ndarray | None  # (K, T, T, P, P) per-pattern moments of D, or None (per person)

    @property
    def patterns(self) -> int:
        return int(self.counts.shape[0])


def structured_stats(
    X: np.ndarray, Z: np.ndarray, y: np.ndarray, codes: np.ndarray, m: int, spec: ResidualSpec
) -> StructuredStats:
    n, p = X.shape
    q = Z.shape[1]
    T = spec.T
    P = p + 1
    D = np.zeros((m, T, P))
    D[codes, spec.position, :p] = X
    D[codes, spec.position, p] = y
    Zp = np.zeros((m, T, q))
    Zp[codes, spec.position] = Z
    mask = np.zeros((m, T), dtype=bool)
    mask[codes, spec.position] = True
    times = None
    keys = [mask.astype(float), Zp.reshape(m, -1)]
    if spec.continuous:
        times = np.zeros((m, T))
        times[codes, spec.position] = spec.times
        keys.append(times)
    first, inverse, counts = _pattern_codes(np.hstack(keys))
    K = first.shape[0]
    Q = None
    if K <= MAX_PATTERNS and K < m:
        Q = pattern_moments(D, inverse, counts)  # (K, T, T, P, P)
        pattern_of = inverse
    else:
        first, pattern_of, counts = np.arange(m), np.arange(m), np.ones(m, dtype=np.int64)
    pdist = None
    if times is not None:
        pt = times[first]
        pdist = np.abs(pt[:, :, None] - pt[:, None, :])
    return StructuredStats(
        n=n,
        p=p,
        q=q,
        m=m,
        T=T,
        D=D,
        Zp=Zp,
        mask=mask,
        times=times,
        pattern_of=pattern_of,
        counts=counts.astype(float),
        pmask=mask[first],
        pZ=Zp[first],
        pdist=pdist,
        Q=Q,
    )


def _real_right(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a real ``b``: a complex ``a`` is split into one real product (numpy's
    complex-by-real product converts ``b`` and is many times slower)."""
    if not np.iscomplexobj(a):
        return a @ b
    n = a.shape[0]
    out = np.concatenate([a.real, a.imag]) @ b
    return out[:n] + 1j * out[n:]


def _logdet(A: np.ndarray) -> np.ndarray:
    sign, logabs = np.linalg.slogdet(A)
    return logabs + np.log(sign) if np.iscomplexobj(A) else logabs


class StructuredDeviance(VarparMethods):
    """The profiled criterion over ``x = (theta, rho)``, with the interface of
    :class:`pipeline.model.deviance.ProfiledDeviance`."""

    def __init__(
        self,
        stats: StructuredStats,
        theta_index: tuple[tuple[int, int], ...],
        structure: ResidualStructure,
        *,
        reml: bool,
    ) -> None:
        self.stats = stats
        self.theta_index = theta_index
        self.structure = structure
        self.reml = reml
        self.evaluations = 0
        self.ntheta = len(theta_index)
        self._rows = np.array([i for i, _ in theta_index], dtype=np.int64)
        self._cols = np.array([j for _, j in theta_index], dtype=np.int64)

    @property
    def nu(self) -> int:
        return self.stats.n - self.stats.p if self.reml else self.stats.n

    def lam(self, x: np.ndarray) -> np.ndarray:
        q = self.stats.q
        lam = np.zeros((q, q))
        lam[self._rows, self._cols] = np.asarray(x, dtype=float)[: self.ntheta]
        return lam

    def residual_matrices(self, rho: np.ndarray, *, per_person: bool = False) -> np.ndarray:
        """``R`` per pattern (or per person), padded with the identity where unobserved: (B, K, T, T)."""
        s = self.stats
        rho = np.atleast_2d(rho)
        mask = s.mask if per_person else s.pmask
        mm = mask[:, :, None] & mask[:, None, :]
        eye = np.eye(s.T)
        if s.pdist is not None:
            dist = s.pdist if not per_person else self._person_dist()
            phi = (1 + np.tanh(rho[:, 0] / 2)) / 2
            R = phi[:, None, None, None] ** dist[None]
        else:
            occ = np.arange(s.T)  # the structure's own matrix over every occasion, unchecked
            full = np.stack([self.structure._matrix(r, occ) for r in rho])  # (B, T, T)
            R = np.broadcast_to(full[:, None], (rho.shape[0], mask.shape[0], s.T, s.T))
        return np.where(mm[None], R, eye)

    def _person_dist(self) -> np.ndarray:
        t = self.stats.times
        return np.abs(t[:, :, None] - t[:, None, :])

    def _solve(self, x: np.ndarray, keep: bool = False):
        """Batched over the rows of x (B, ntheta + nrho), real or complex."""
        s = self.stats
        p, q = s.p, s.q
        P = p + 1
        B = x.shape[0]
        theta, rho = x[:, : self.ntheta], x[:, self.ntheta :]
        R = self.residual_matrices(rho)
        Rinv = np.linalg.inv(R)
        ldR = _logdet(R) @ s.counts  # (B,)
        ldL2 = np.zeros(B, dtype=x.dtype)
        M = None
        if q:
            Zs = s.pZ if s.Q is not None else s.Zp  # (K or m, T, q)
            A = np.swapaxes(Zs, 1, 2)[None] @ Rinv  # Z'R^{-1}: (B, K, q, T)
            Tt = A @ Zs[None]
            lam = np.zeros((B, q, q), dtype=x.dtype)
            lam[:, self._rows, self._cols] = theta
            lamT = np.swapaxes(lam, 1, 2)[:, None]
            Al = lamT @ Tt @ lam[:, None] + np.eye(q)
            M = lam[:, None] @ np.linalg.inv(Al) @ lamT  # (B, K, q, q)
            ldL2 = _logdet(Al) @ s.counts
            # the whitened, absorbed projection of each pattern: R^{-1} - R^{-1} Z M Z' R^{-1}
            H = Rinv - np.swapaxes(A, 2, 3) @ M @ A
        else:
            H = Rinv
        K, T = H.shape[1], s.T
        if s.Q is not None:  # <H_k, Q_k> summed over patterns: one matrix product
            Om = _real_right(H.reshape(B, K * T * T), s.Q.reshape(K * T * T, P * P)).reshape(
                B, P, P
            )
        else:
            Om = np.einsum("mtp,bmts,msr->bpr", s.D, H, s.D, optimize=True)
        AX = Om[:, :p, :p]
        d = Om[:, :p, p]
        beta = np.linalg.solve(AX, d[..., None])[..., 0]
        pwrss = Om[:, p, p] - np.einsum("bi,bi->b", d, beta)
        ldRX2 = _logdet(AX)
        self.evaluations += 1
        extra = (M, Rinv) if keep else None
        return beta, pwrss, ldL2 + ldR, ldRX2, AX, extra

    def _criterion(self, pwrss, ld, ldRX2):
        nu = self.nu
        dev = ld + nu * (1.0 + LOG_2PI + np.log(pwrss / nu))
        if self.reml:
            dev = dev + ldRX2
        return dev

    def solve(self, x: np.ndarray) -> PLSSolution:
        """``ldL2`` of the result holds ``log|L|^2 + sum_i log|R_i|``."""
        x = np.asarray(x, dtype=float)
        beta, pwrss, ld, ldRX2, AX, _ = self._solve(x[None, :])
        AX = (AX[0] + AX[0].T) / 2
        RX = np.linalg.cholesky(AX)
        return PLSSolution(
            x,
            beta[0],
            max(float(pwrss[0]), 1e-300),
            float(ld[0]),
            float(ldRX2[0]),
            AX,
            self.lam(x),
            RX,
            np.empty((0, 0, 0)),
        )

    def criterion(self, sol: PLSSolution) -> float:
        return float(self._criterion(sol.pwrss, sol.ldL2, sol.ldRX2))

    def __call__(self, x: np.ndarray) -> float:
        x = np.asarray(x, dtype=float)
        _, pwrss, ld, ldRX2, *_ = self._solve(x[None, :])
        return float(self._criterion(max(float(pwrss[0]), 1e-300), ld[0], ldRX2[0]))

    def _complex_step(self, f, x: np.ndarray) -> tuple[float, np.ndarray]:
        k = x.size
        batch = np.tile(x.astype(complex), (k, 1))
        batch[np.arange(k), np.arange(k)] += 1j * COMPLEX_STEP
        values = f(batch)
        return float(values[0].real), values.imag / COMPLEX_STEP

    def value_and_gradient(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The criterion and its gradient by the complex step (exact to rounding)."""

        def f(batch):
            _, pwrss, ld, ldRX2, *_ = self._solve(batch)
            return self._criterion(pwrss, ld, ldRX2)

        return self._complex_step(f, np.asarray(x, dtype=float))

    # --- varpar = (theta, rho, sigma), not profiled
    def _varpar_batch(self, varpar: np.ndarray) -> np.ndarray:
        _, pwrss, ld, ldRX2, *_ = self._solve(varpar[:, :-1])
        sigma2 = varpar[:, -1] ** 2
        dev = ld + self.nu * (LOG_2PI + np.log(sigma2)) + pwrss / sigma2
        return dev + ldRX2 if self.reml else dev

    def varpar_deviance(self, varpar: np.ndarray) -> float:
        return float(self._varpar_batch(np.asarray(varpar, dtype=float)[None, :])[0].real)

    def varpar_gradient(self, varpar: np.ndarray) -> np.ndarray:
        return self._complex_step(self._varpar_batch, np.asarray(varpar, dtype=float))[1]

    # --- BLUPs
    def conditional_modes(
        self, x: np.ndarray, beta: np.ndarray, sigma: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """``b_i = M_i Z_i'R_i^{-1}(y_i - X_i beta)`` and ``sigma^2 M_i``, per person."""
        s = self.stats
        q = s.q
        if not q:
            return np.zeros((s.m, 0)), np.zeros((s.m, 0, 0))
        x = np.asarray(x, dtype=float)
        _, _, _, _, _, (M, Rinv) = self._solve(x[None, :], keep=True)
        M, Rinv = M[0], Rinv[0]
        v = np.append(-np.asarray(beta, dtype=float), 1.0)
        r = s.D @ v  # (m, T) residuals, zero where unobserved
        if s.Q is not None:
            Rinv_i, M_i = Rinv[s.pattern_of], M[s.pattern_of]
        else:
            Rinv_i, M_i = Rinv, M
        w = (np.swapaxes(s.Zp, 1, 2) @ (Rinv_i @ r[:, :, None]))[:, :, 0]
        b = (M_i @ w[:, :, None])[:, :, 0]
        return b, sigma**2 * M_i


def structure_parameters(nrho: int, structure: ResidualStructure):
    """The structure's unconstrained parameters for :class:`CovarianceParameters`."""
    from pipeline.model.parameters import CovarianceParameters

    return CovarianceParameters(
        names=tuple(structure.unconstrained_names),
        lower=np.full(nrho, -np.inf),
        upper=np.full(nrho, np.inf),
        variance=np.zeros(nrho, dtype=bool),
        even=np.zeros(nrho, dtype=bool),
    )


def _scale_of(name: str, structure: ResidualStructure) -> str:
    """The scale on which a natural parameter's Wald interval is formed (as nlme's intervals):
    log for SD ratios, logit for sp_exp's Phi in (0, 1), Fisher's z for correlations."""
    if name.startswith("sd_ratio"):
        return "log"
    if isinstance(structure, SpatialExponential):
        return "logit"
    return "atanh"


_TO = {"log": np.log, "logit": lambda v: np.log(v / (1 - v)), "atanh": np.arctanh}
_FROM = {"log": np.exp, "logit": lambda v: 1 / (1 + np.exp(-v)), "atanh": np.tanh}
_SLOPE = {
    "log": lambda v: 1 / v,
    "logit": lambda v: 1 / (v * (1 - v)),
    "atanh": lambda v: 1 / (1 - v * v),
}


BOUNDARY_NOTE = (
    "the fit is on a boundary (a variance is zero): this interval treats that variance as "
    "known and is too narrow (in simulation it covered a third of the time)"
)


def natural_table(
    structure: ResidualStructure, rho: np.ndarray, vcov_rho: np.ndarray, *, boundary: bool = False
):
    """The structure's parameters on the natural scale: delta-method SEs, and 95% Wald
    intervals formed on the log / logit / Fisher-z scale and transformed back (so they stay
    inside the parameter's range)."""
    est = structure.natural(rho)
    names = list(est)
    k = rho.size
    J = np.zeros((len(names), k))
    for j in range(k):
        h = 1e-6 * max(1.0, abs(rho[j]))
        up, down = rho.copy(), rho.copy()
        up[j] += h
        down[j] -= h
        a, b = structure.natural(up), structure.natural(down)
        J[:, j] = [(a[n] - b[n]) / (2 * h) for n in names]
    cov = J @ vcov_rho @ J.T
    se = np.sqrt(np.maximum(np.diag(cov), 0.0))
    values = np.array([est[n] for n in names])
    low, high, scales = [], [], []
    z = 1.959963984540054
    for name, v, e in zip(names, values, se, strict=True):
        scale = _scale_of(name, structure)
        with np.errstate(all="ignore"):
            centre, width = _TO[scale](v), z * e * abs(_SLOPE[scale](v))
            lo, hi = _FROM[scale](centre - width), _FROM[scale](centre + width)
        ok = np.isfinite(lo) and np.isfinite(hi)
        low.append(float(lo) if ok else math.nan)
        high.append(float(hi) if ok else math.nan)
        scales.append(scale)
    return pl.DataFrame(
        {
            "parameter": names,
            "estimate": values,
            "std_error": se,
            "conf_low": low,
            "conf_high": high,
            "interval_scale": scales,
            "note": [BOUNDARY_NOTE if boundary else ""] * len(names),
        },
        schema={
            "parameter": pl.String,
            "estimate": pl.Float64,
            "std_error": pl.Float64,
            "conf_low": pl.Float64,
            "conf_high": pl.Float64,
            "interval_scale": pl.String,
            "note": pl.String,
        },
    )


def marginal_covariance(
    dev: StructuredDeviance, x: np.ndarray, sigma: float, labels: tuple[str, ...]
) -> tuple[list[str], np.ndarray]:
    """``sigma^2 (Z Lambda Lambda' Z' + R)`` over the occasions of the most complete pattern."""
    s = dev.stats
    k = int(np.argmax(s.pmask.sum(axis=1)))
    obs = np.flatnonzero(s.pmask[k])
    R = dev.residual_matrices(np.asarray(x[dev.ntheta :], dtype=float))[0, k]
    lam = dev.lam(x)
    Z = s.pZ[k]
    V = sigma**2 * (Z @ lam @ lam.T @ Z.T + R)
    if labels:
        names = [labels[i] for i in obs]
    else:  # sp_exp: the times of the first person of the pattern
        person = int(np.flatnonzero(s.pattern_of == k)[0])
        names = [_fmt(t) for t in s.times[person][obs]]
    return names, V[np.ix_(obs, obs)]
