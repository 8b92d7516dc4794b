"""Level-1 error structures: the residual covariance of one person across occasions.

The structures and their names follow R's mmrm package: ``us`` (unstructured),
``toep`` / ``toeph`` (Toeplitz, homogeneous / heterogeneous), ``ar1`` / ``ar1h``
(first-order autoregressive), ``cs`` / ``csh`` (compound symmetry), ``diag``
(independent, a variance per occasion) and ``sp_exp`` (spatial exponential: the
continuous-time AR(1) of nlme's ``corCAR1``, for unequally spaced times).

Scale. Every ``matrix`` is the residual covariance *relative to sigma^2*, so
that sigma^2 can be profiled out of the likelihood as nlme and lme4 do
(``Var(e_i) = sigma^2 R_i``):

- homogeneous structures (``ar1``, ``cs``, ``toep``, ``sp_exp``) return a
  correlation matrix: sigma^2 is the variance at every occasion;
- heterogeneous structures (``us``, ``toeph``, ``ar1h``, ``csh``, ``diag``) return
  the covariance divided by the variance at occasion 0, the reference (nlme's
  ``varIdent`` convention): sigma^2 is the variance at occasion 0 and the others
  are ``sigma^2 * sd_ratio^2``.

So ``n_params`` counts the structure's parameters *without* sigma; mmrm counts
sigma among the covariance parameters, and its count is ``n_params + 1``
(``n_params_with_sigma``), which is the number that enters AIC/BIC.

Occasions. For the indexed structures a person is described by the 0-based
indices of the occasions at which they were observed, a subset of
``0 .. n_occasions-1``, in the order of their rows. Gaps are respected: under
``ar1`` occasions 0 and 2 are ``Phi^2`` apart whether or not occasion 1 was
observed, and ``matrix(p, subset)`` is always the corresponding submatrix of
``matrix(p, all occasions)``. For ``ar1``, ``ar1h``, ``toep`` and ``toeph`` the
lag between two occasions is the difference of their indices, so the caller maps
equally spaced occasion labels to consecutive indices (waves 1, 2, 3 -> 0, 1, 2
even if nobody was seen at wave 2). ``sp_exp`` takes real times (or coordinates:
one row per observation, Euclidean distance), not indices.

Parameters. Each structure maps an unconstrained vector (for an optimiser; the
zero vector is the independent, equal-variance structure, except for ``sp_exp``
where it is Phi = 1/2, independence being its boundary Phi -> 0) to its natural
scale:

- a standard-deviation ratio is ``exp(z)``;
- ``ar1``/``ar1h``: ``Phi = tanh(z)`` in (-1, 1);
- ``sp_exp``: ``Phi = 1 / (1 + exp(-z))`` in (0, 1), the correlation at distance 1;
- ``cs``/``csh``: ``Rho = (exp(z) - 1) / (exp(z) + T - 1)`` in (-1/(T-1), 1),
  exactly the positive-definite range;
- ``toep``/``toeph``: the T-1 partial autocorrelations are ``tanh(z_k)`` and the
  lag correlations follow by the Durbin-Levinson recursion, which spans exactly
  the positive-definite Toeplitz correlation matrices (as nlme's ``corARMA``
  with p = T-1);
- ``us``: a log-Cholesky factor ``L`` of the relative covariance with
  ``L[0,0] = 1``: first ``log L[k,k]`` for k = 1..T-1, then ``L[i,j]`` (i > j) row
  by row.

Heterogeneous structures put the correlation parameters first and then the T-1
log SD ratios of occasions 1..T-1. Natural-scale names are nlme's: ``Phi``
(corAR1, corCAR1), ``Rho`` (corCompSymm), ``cor(i,j)`` (corSymm, 1-based
occasions, in nlme's order (1,2), (1,3), ..., (2,3), ...), ``cor(lag k)`` for
Toeplitz lags, and ``sd_ratio(k)`` (1-based occasion k; varIdent's ratio of SDs
to occasion 1).

``gradient`` gives d matrix / d unconstrained parameter by complex-step
differentiation, exact to rounding (every map above is analytic).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

_COMPLEX_STEP = 1e-30


class ResidualStructure(ABC):
    """Shared behaviour; the concrete structures are frozen dataclasses below."""

    __slots__ = ()
    name: ClassVar[str]
    homogeneous: ClassVar[bool]

    # --- provided by each structure -------------------------------------------------
    @property
    @abstractmethod
    def n_params(self) -> int:
        """Number of unconstrained parameters (sigma excluded)."""

    @property
    @abstractmethod
    def param_names(self) -> tuple[str, ...]:
        """Names of the natural-scale parameters, in the order of ``natural``."""

    @property
    @abstractmethod
    def unconstrained_names(self) -> tuple[str, ...]:
        """Names of the unconstrained parameters, in the optimiser's order."""

    @abstractmethod
    def _matrix(self, p: np.ndarray, occ: np.ndarray) -> np.ndarray:
        """The relative covariance for validated parameters (real or complex) and occasions."""

    @abstractmethod
    def _natural(self, p: np.ndarray) -> np.ndarray:
        """Natural-scale values, in the order of ``param_names``."""

    @abstractmethod
    def _from_natural(self, v: np.ndarray) -> np.ndarray:
        """Unconstrained values for natural-scale ones (validated)."""

    @abstractmethod
    def _occasions(self, occasions) -> np.ndarray:
        """The person's occasions, validated."""

    # --- public -----------------------------------------------------------------------
    @property
    def n_params_with_sigma(self) -> int:
        """mmrm's count of covariance parameters (sigma included)."""
        return self.n_params + 1

    def start(self) -> np.ndarray:
        """Unconstrained start: zeros (independent residuals with one variance; sp_exp: Phi = 1/2)."""
        return np.zeros(self.n_params)

    def matrix(self, params, occasions) -> np.ndarray:
        """The residual covariance relative to sigma^2 at the given occasions (k x k)."""
        return self._matrix(self._params(params), self._occasions(occasions))

    def natural(self, params) -> dict[str, float]:
        """The parameters on the natural scale, named as nlme prints them."""
        values = self._natural(self._params(params))
        return {n: float(v) for n, v in zip(self.param_names, values, strict=True)}

    def from_natural(self, values: Mapping[str, float]) -> np.ndarray:
        """The unconstrained parameters for natural-scale values (inverse of ``natural``)."""
        missing = [n for n in self.param_names if n not in values]
        extra = [n for n in values if n not in self.param_names]
        if missing or extra:
            raise ValueError(
                f"{self.name}: natural parameters must be {', '.join(self.param_names) or 'none'}"
                f" (missing: {', '.join(missing) or 'none'}; unknown: {', '.join(extra) or 'none'})"
            )
        v = np.array([float(values[n]) for n in self.param_names])
        return self._from_natural(v)

    def gradient(self, params, occasions) -> np.ndarray:
        """d matrix / d params: (n_params, k, k), by complex step."""
        p = self._params(params).real.astype(float)
        occ = self._occasions(occasions)
        out = np.empty((self.n_params, len(occ), len(occ)))
        for j in range(self.n_params):
            pc = p.astype(complex)
            pc[j] += 1j * _COMPLEX_STEP
            out[j] = self._matrix(pc, occ).imag / _COMPLEX_STEP
        return out

    def _params(self, params) -> np.ndarray:
        p = np.asarray(params)
        if p.dtype.kind != "c":
            p = p.astype(float)
        if p.ndim != 1 or p.shape[0] != self.n_params:
            raise ValueError(
                f"{self.name}: expected {self.n_params} parameters, got shape {p.shape}"
            )
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{self.name}: parameters must be finite, got {p.tolist()}")
        return p


# --- building blocks -------------------------------------------------------------------


def _pacf_to_acf(pacf: np.ndarray) -> np.ndarray:
    """Lag correlations r_0 = 1, r_1..r_n from partial autocorrelations (Durbin-Levinson)."""
    n = len(pacf)
    r = np.ones(n + 1, dtype=pacf.dtype)
    a = np.zeros(0, dtype=pacf.dtype)  # AR coefficients of order k-1
    v = np.ones((), dtype=pacf.dtype)  # innovation variance of order k-1 (r_0 = 1)
    for k in range(1, n + 1):
        phi = pacf[k - 1]
        r[k] = phi * v + np.dot(a, r[k - 1 : 0 : -1])
        a = np.concatenate([a - phi * a[::-1], [phi]])
        v = v * (1 - phi * phi)
    return r


def _acf_to_pacf(r: np.ndarray, name: str) -> np.ndarray:
    n = len(r) - 1
    pacf = np.empty(n)
    a = np.zeros(0)
    v = 1.0
    for k in range(1, n + 1):
        phi = (r[k] - np.dot(a, r[k - 1 : 0 : -1])) / v
        if not abs(phi) < 1:
            raise ValueError(
                f"{name}: the lag correlations {r[1:].tolist()} are not positive definite"
            )
        pacf[k - 1] = phi
        a = np.concatenate([a - phi * a[::-1], [phi]])
        v *= 1 - phi * phi
    return pacf


def _scale(corr: np.ndarray, log_ratios: np.ndarray, occ: np.ndarray) -> np.ndarray:
    s = np.exp(np.concatenate([np.zeros(1, dtype=log_ratios.dtype), log_ratios]))[occ]
    return corr * (s[:, None] * s[None, :])  # s_i s_j == s_j s_i: exactly symmetric


def _log_ratios(v: np.ndarray, name: str) -> np.ndarray:
    if np.any(v <= 0):
        raise ValueError(f"{name}: SD ratios must be positive, got {v.tolist()}")
    return np.log(v)


def _ratio_names(t: int) -> tuple[str, ...]:
    return tuple(f"sd_ratio({k})" for k in range(2, t + 1))


def _log_ratio_names(t: int) -> tuple[str, ...]:
    return tuple(f"log sd_ratio({k})" for k in range(2, t + 1))


def _lags(occ: np.ndarray) -> np.ndarray:
    return np.abs(occ[:, None] - occ[None, :])


def _check_n_occasions(name: str, n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"{name}: the number of occasions must be a positive integer, got {n!r}")


class _Indexed(ResidualStructure):
    """Structures over a fixed set of occasions 0..n_occasions-1."""

    __slots__ = ()
    n_occasions: int

    def __post_init__(self) -> None:
        _check_n_occasions(self.name, self.n_occasions)

    def full(self, params) -> np.ndarray:
        """The matrix over every occasion (T x T)."""
        return self.matrix(params, np.arange(self.n_occasions))

    def _occasions(self, occasions) -> np.ndarray:
        occ = np.asarray(occasions)
        if occ.ndim != 1 or occ.size == 0:
            raise ValueError(
                f"{self.name}: occasions must be a non-empty list of occasion indices, "
                f"got shape {occ.shape}"
            )
        if occ.dtype.kind == "f":
            bad = occ[~np.isfinite(occ) | (occ != np.round(occ))]
            if bad.size:
                raise ValueError(f"{self.name}: occasion indices must be integers, got {bad[0]}")
            occ = occ.astype(np.int64)
        elif occ.dtype.kind not in "iu":
            raise ValueError(
                f"{self.name}: occasion indices must be integers, got {occ.dtype} values"
            )
        occ = occ.astype(np.int64)
        out = occ[(occ < 0) | (occ >= self.n_occasions)]
        if out.size:
            raise ValueError(
                f"{self.name}: occasion index {int(out[0])} is outside 0..{self.n_occasions - 1}"
            )
        values, counts = np.unique(occ, return_counts=True)
        if np.any(counts > 1):
            raise ValueError(
                f"{self.name}: occasion index {int(values[counts > 1][0])} appears more than "
                "once for one person"
            )
        return occ


# --- homogeneous correlation structures, with their heterogeneous variants ----------


def _ar1_corr(z: np.ndarray, occ: np.ndarray) -> np.ndarray:
    return np.tanh(z) ** _lags(occ)


def _cs_corr(z: np.ndarray, occ: np.ndarray, t: int) -> np.ndarray:
    e = np.exp(z)
    rho = (e - 1) / (e + t - 1)
    same = occ[:, None] == occ[None, :]
    return np.where(same, np.ones((), dtype=rho.dtype), rho)


def _cs_from_rho(rho: float, t: int, name: str) -> float:
    low = -1.0 / (t - 1) if t > 1 else -np.inf
    if not low < rho < 1:
        raise ValueError(f"{name}: Rho must lie in ({low:g}, 1) for {t} occasions, got {rho}")
    return float(np.log((1 + rho * (t - 1)) / (1 - rho)))


def _ar1_from_phi(phi: float, name: str) -> float:
    if not -1 < phi < 1:
        raise ValueError(f"{name}: Phi must lie in (-1, 1), got {phi}")
    return float(np.arctanh(phi))


def _toep_corr(z: np.ndarray, occ: np.ndarray) -> np.ndarray:
    r = _pacf_to_acf(np.tanh(z))
    return r[_lags(occ)]


def _toep_natural(z: np.ndarray) -> np.ndarray:
    return _pacf_to_acf(np.tanh(z))[1:]


def _toep_from_lags(lags: np.ndarray, name: str) -> np.ndarray:
    if np.any(np.abs(lags) >= 1):
        raise ValueError(f"{name}: lag correlations must lie in (-1, 1), got {lags.tolist()}")
    return np.arctanh(_acf_to_pacf(np.concatenate([[1.0], lags]), name))


def _lag_names(t: int) -> tuple[str, ...]:
    return tuple(f"cor(lag {k})" for k in range(1, t))


@dataclass(frozen=True, slots=True)
class AR1(_Indexed):
    """``ar1``: corr = Phi^|lag|, one variance (nlme ``corAR1``)."""

    n_occasions: int
    name: ClassVar[str] = "ar1"
    homogeneous: ClassVar[bool] = True

    n_params = property(lambda self: 1)
    param_names = property(lambda self: ("Phi",))
    unconstrained_names = property(lambda self: ("atanh(Phi)",))

    def _matrix(self, p, occ):
        return _ar1_corr(p[0], occ)

    def _natural(self, p):
        return np.tanh(p)

    def _from_natural(self, v):
        return np.array([_ar1_from_phi(v[0], self.name)])


@dataclass(frozen=True, slots=True)
class AR1Het(_Indexed):
    """``ar1h``: Phi^|lag| with a variance per occasion (corAR1 + varIdent)."""

    n_occasions: int
    name: ClassVar[str] = "ar1h"
    homogeneous: ClassVar[bool] = False

    n_params = property(lambda self: self.n_occasions)
    param_names = property(lambda self: ("Phi", *_ratio_names(self.n_occasions)))
    unconstrained_names = property(lambda self: ("atanh(Phi)", *_log_ratio_names(self.n_occasions)))

    def _matrix(self, p, occ):
        return _scale(_ar1_corr(p[0], occ), p[1:], occ)

    def _natural(self, p):
        return np.concatenate([np.tanh(p[:1]), np.exp(p[1:])])

    def _from_natural(self, v):
        return np.concatenate([[_ar1_from_phi(v[0], self.name)], _log_ratios(v[1:], self.name)])


@dataclass(frozen=True, slots=True)
class CompoundSymmetry(_Indexed):
    """``cs``: one correlation Rho between any two occasions, one variance (corCompSymm)."""

    n_occasions: int
    name: ClassVar[str] = "cs"
    homogeneous: ClassVar[bool] = True

    n_params = property(lambda self: 1)
    param_names = property(lambda self: ("Rho",))
    unconstrained_names = property(lambda self: ("log((1+(T-1)Rho)/(1-Rho))",))

    def _matrix(self, p, occ):
        return _cs_corr(p[0], occ, self.n_occasions)

    def _natural(self, p):
        e = np.exp(p)
        return (e - 1) / (e + self.n_occasions - 1)

    def _from_natural(self, v):
        return np.array([_cs_from_rho(v[0], self.n_occasions, self.name)])


@dataclass(frozen=True, slots=True)
class CompoundSymmetryHet(_Indexed):
    """``csh``: one correlation Rho with a variance per occasion (corCompSymm + varIdent)."""

    n_occasions: int
    name: ClassVar[str] = "csh"
    homogeneous: ClassVar[bool] = False

    n_params = property(lambda self: self.n_occasions)
    param_names = property(lambda self: ("Rho", *_ratio_names(self.n_occasions)))
    unconstrained_names = property(
        lambda self: ("log((1+(T-1)Rho)/(1-Rho))", *_log_ratio_names(self.n_occasions))
    )

    def _matrix(self, p, occ):
        return _scale(_cs_corr(p[0], occ, self.n_occasions), p[1:], occ)

    def _natural(self, p):
        e = np.exp(p[:1])
        return np.concatenate([(e - 1) / (e + self.n_occasions - 1), np.exp(p[1:])])

    def _from_natural(self, v):
        rho = _cs_from_rho(v[0], self.n_occasions, self.name)
        return np.concatenate([[rho], _log_ratios(v[1:], self.name)])


@dataclass(frozen=True, slots=True)
class Toeplitz(_Indexed):
    """``toep``: a correlation per lag, one variance (nlme ``corARMA(p = T-1)``)."""

    n_occasions: int
    name: ClassVar[str] = "toep"
    homogeneous: ClassVar[bool] = True

    n_params = property(lambda self: self.n_occasions - 1)
    param_names = property(lambda self: _lag_names(self.n_occasions))
    unconstrained_names = property(
        lambda self: tuple(f"atanh(pacf(lag {k}))" for k in range(1, self.n_occasions))
    )

    def _matrix(self, p, occ):
        return _toep_corr(p, occ)

    def _natural(self, p):
        return _toep_natural(p)

    def _from_natural(self, v):
        return _toep_from_lags(v, self.name)


@dataclass(frozen=True, slots=True)
class ToeplitzHet(_Indexed):
    """``toeph``: a correlation per lag with a variance per occasion."""

    n_occasions: int
    name: ClassVar[str] = "toeph"
    homogeneous: ClassVar[bool] = False

    n_params = property(lambda self: 2 * (self.n_occasions - 1))
    param_names = property(
        lambda self: (*_lag_names(self.n_occasions), *_ratio_names(self.n_occasions))
    )
    unconstrained_names = property(
        lambda self: (
            *(f"atanh(pacf(lag {k}))" for k in range(1, self.n_occasions)),
            *_log_ratio_names(self.n_occasions),
        )
    )

    def _matrix(self, p, occ):
        m = self.n_occasions - 1
        return _scale(_toep_corr(p[:m], occ), p[m:], occ)

    def _natural(self, p):
        m = self.n_occasions - 1
        return np.concatenate([_toep_natural(p[:m]), np.exp(p[m:])])

    def _from_natural(self, v):
        m = self.n_occasions - 1
        return np.concatenate([_toep_from_lags(v[:m], self.name), _log_ratios(v[m:], self.name)])


@dataclass(frozen=True, slots=True)
class Diagonal(_Indexed):
    """``diag``: independent residuals with a variance per occasion (varIdent alone)."""

    n_occasions: int
    name: ClassVar[str] = "diag"
    homogeneous: ClassVar[bool] = False

    n_params = property(lambda self: self.n_occasions - 1)
    param_names = property(lambda self: _ratio_names(self.n_occasions))
    unconstrained_names = property(lambda self: _log_ratio_names(self.n_occasions))

    def _matrix(self, p, occ):
        same = occ[:, None] == occ[None, :]
        corr = np.where(same, 1.0, 0.0).astype(p.dtype)
        return _scale(corr, p, occ)

    def _natural(self, p):
        return np.exp(p)

    def _from_natural(self, v):
        return _log_ratios(v, self.name)


@dataclass(frozen=True, slots=True)
class Unstructured(_Indexed):
    """``us``: any positive-definite covariance across occasions (corSymm + varIdent)."""

    n_occasions: int
    name: ClassVar[str] = "us"
    homogeneous: ClassVar[bool] = False

    n_params = property(lambda self: self.n_occasions * (self.n_occasions + 1) // 2 - 1)

    @property
    def _pairs(self) -> list[tuple[int, int]]:
        t = self.n_occasions
        return [(i, j) for i in range(t) for j in range(i + 1, t)]  # nlme's corSymm order

    @property
    def _lower(self) -> list[tuple[int, int]]:
        t = self.n_occasions
        return [(i, j) for i in range(1, t) for j in range(i)]  # row by row

    @property
    def param_names(self) -> tuple[str, ...]:
        cors = tuple(f"cor({i + 1},{j + 1})" for i, j in self._pairs)
        return (*cors, *_ratio_names(self.n_occasions))

    @property
    def unconstrained_names(self) -> tuple[str, ...]:
        logs = tuple(f"log L({k + 1},{k + 1})" for k in range(1, self.n_occasions))
        return (*logs, *(f"L({i + 1},{j + 1})" for i, j in self._lower))

    def _cholesky(self, p: np.ndarray) -> np.ndarray:
        t = self.n_occasions
        lower = np.zeros((t, t), dtype=p.dtype)
        lower[0, 0] = 1.0
        k = np.arange(1, t)
        lower[k, k] = np.exp(p[: t - 1])
        if self._lower:
            rows, cols = zip(*self._lower, strict=True)
            lower[list(rows), list(cols)] = p[t - 1 :]
        return lower

    def _matrix(self, p, occ):
        lower = self._cholesky(p)[occ]
        m = lower @ lower.T  # not conjugated: analytic for the complex step
        return (m + m.T) / 2  # exactly symmetric whatever the summation order

    def _natural(self, p):
        cov = self._matrix(p, np.arange(self.n_occasions)).real
        sd = np.sqrt(np.diag(cov))
        cors = [cov[i, j] / (sd[i] * sd[j]) for i, j in self._pairs]
        return np.concatenate([cors, sd[1:]])

    def _from_natural(self, v):
        t = self.n_occasions
        npairs = len(self._pairs)
        corr = np.eye(t)
        for (i, j), c in zip(self._pairs, v[:npairs], strict=True):
            corr[i, j] = corr[j, i] = c
        sd = np.concatenate([[1.0], v[npairs:]])
        if np.any(sd <= 0):
            raise ValueError(f"{self.name}: SD ratios must be positive, got {v[npairs:].tolist()}")
        try:
            lower = np.linalg.cholesky(corr * sd[:, None] * sd[None, :])
        except np.linalg.LinAlgError:
            raise ValueError(
                f"{self.name}: the correlations {v[:npairs].tolist()} are not positive definite"
            ) from None
        logs = np.log(np.diag(lower)[1:])
        return np.concatenate([logs, [lower[i, j] for i, j in self._lower]])


@dataclass(frozen=True, slots=True)
class SpatialExponential(ResidualStructure):
    """``sp_exp``: corr = Phi^distance at real times or coordinates (nlme ``corCAR1``)."""

    name: ClassVar[str] = "sp_exp"
    homogeneous: ClassVar[bool] = True

    n_params = property(lambda self: 1)
    param_names = property(lambda self: ("Phi",))
    unconstrained_names = property(lambda self: ("logit(Phi)",))

    def _occasions(self, occasions) -> np.ndarray:
        t = np.asarray(occasions)
        if t.dtype.kind not in "iuf" or t.ndim not in (1, 2) or t.shape[0] == 0:
            raise ValueError(
                f"{self.name}: times must be a non-empty list of numbers "
                f"(or one row of coordinates per observation), got shape {t.shape}"
            )
        t = t.astype(float)
        if not np.all(np.isfinite(t)):
            raise ValueError(f"{self.name}: times must be finite, got {t.tolist()}")
        coords = t[:, None] if t.ndim == 1 else t
        _, first, counts = np.unique(coords, axis=0, return_index=True, return_counts=True)
        if np.any(counts > 1):
            where = coords[first[counts > 1][0]]
            raise ValueError(
                f"{self.name}: two observations of one person at the same time {where.tolist()}"
            )
        return coords

    def _matrix(self, p, coords):
        diff = coords[:, None, :] - coords[None, :, :]
        dist = np.sqrt(np.sum(diff * diff, axis=-1))
        phi = (1 + np.tanh(p[0] / 2)) / 2  # the logistic, without overflow
        return phi**dist

    def _natural(self, p):
        return (1 + np.tanh(p / 2)) / 2

    def _from_natural(self, v):
        if not 0 < v[0] < 1:
            raise ValueError(f"{self.name}: Phi must lie in (0, 1), got {v[0]}")
        return np.array([np.log(v[0] / (1 - v[0]))])


STRUCTURES: dict[str, type[ResidualStructure]] = {
    c.name: c
    for c in (
        Unstructured,
        Toeplitz,
        ToeplitzHet,
        AR1,
        AR1Het,
        CompoundSymmetry,
        CompoundSymmetryHet,
        Diagonal,
        SpatialExponential,
    )
}


def make_structure(name: str, n_occasions: int | None = None) -> ResidualStructure:
    """The structure called ``name`` (mmrm's names) over ``n_occasions`` occasions."""
    cls = STRUCTURES.get(name)
    if cls is None:
        raise ValueError(
            f"unknown residual structure {name!r}: expected one of {', '.join(STRUCTURES)}"
        )
    if cls is SpatialExponential:
        return cls()
    if n_occasions is None:
        raise ValueError(f"{name}: needs the number of occasions")
    return cls(n_occasions)
