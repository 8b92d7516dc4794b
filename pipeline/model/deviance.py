"""The profiled deviance of a linear mixed model as a function of theta.

Glossary (Bates et al. 2015, section 3):

- ``Lambda``: the relative covariance factor, q x q lower triangular, filled by
  ``theta``; the random effects are ``b_i = Lambda u_i`` with
  ``u_i ~ N(0, sigma^2 I)``.
- ``L_i``: Cholesky factor of ``Lambda' Z_i'Z_i Lambda + I``;
  ``log|L|^2 = sum_i log|L_i|^2``.
- ``R_X``: Cholesky factor of ``X'X - R_ZX'R_ZX`` (the Schur complement);
  ``log|R_X|^2`` enters the REML criterion.
- ``pwrss``: the penalized weighted residual sum of squares
  ``||y - X beta - Z Lambda u||^2 + ||u||^2`` at the conditional modes.
- ML deviance: ``log|L|^2 + n (1 + log(2 pi pwrss / n))``;
  REML criterion: ``log|L|^2 + log|R_X|^2 + (n-p)(1 + log(2 pi pwrss / (n-p)))``.

With the per-group statistics of :mod:`pipeline.model.stats`, the whole
penalised least-squares solve reduces to
``Omega(theta) = Omega - sum_i W_i' M_i W_i`` with ``M_i = Lambda A_i^{-1} Lambda'``,
``A_i = Lambda' Z_i'Z_i Lambda + I``; its leading p x p block is ``R_X'R_X``,
its last column gives ``beta`` and ``pwrss``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from pipeline.model.stats import SufficientStats

LOG_2PI = math.log(2.0 * math.pi)


def make_lambda(theta: np.ndarray, index: tuple[tuple[int, int], ...], q: int) -> np.ndarray:
    lam = np.zeros((q, q))
    rows = [i for i, _ in index]
    cols = [j for _, j in index]
    lam[rows, cols] = theta
    return lam


@dataclass(frozen=True, slots=True)
class PLSSolution:
    """The penalised least-squares solution at one theta."""

    theta: np.ndarray
    beta: np.ndarray
    pwrss: float
    ldL2: float  # log|L|^2
    ldRX2: float  # log|R_X|^2
    rx_cross: np.ndarray  # R_X'R_X (p x p)
    lam: np.ndarray
    rx: np.ndarray  # its Cholesky factor (lower triangular)
    a_inv: np.ndarray  # A_k^{-1} per pattern (or group)


def spd_inverse(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``A^{-1}`` and ``log|A|`` for a stack (any leading axes) of symmetric positive
    definite matrices, real or complex (the complex step of the nested gradient checks).

    For 1 x 1 and 2 x 2 matrices (a random intercept, or intercept and slope: most growth
    models) the Cholesky factor's own arithmetic is written out (``l21 = b / a``, Schur
    complement ``s = c - b l21``), which saves the per-call cost of LAPACK on tiny matrices
    and is analytic in A; larger ones, or any whose Schur complement is not positive, go
    through LAPACK (a complex A through the general inverse: it is symmetric, not Hermitian)."""
    q = A.shape[-1]
    if q == 1:
        a = A[..., 0, 0]
        if np.all(a.real > 0):
            return (1.0 / a)[..., None, None], np.log(a)
    elif q == 2:
        a, b, c = A[..., 0, 0], A[..., 1, 0], A[..., 1, 1]
        l21 = b / a
        schur = c - b * l21
        if np.all(a.real > 0) and np.all(schur.real > 0):
            inv = np.empty_like(A)
            inv[..., 1, 1] = 1.0 / schur
            inv[..., 0, 1] = inv[..., 1, 0] = -l21 * inv[..., 1, 1]
            inv[..., 0, 0] = 1.0 / a + l21 * l21 * inv[..., 1, 1]
            return inv, np.log(a) + np.log(schur)  # not log(a * schur): it can overflow
    if np.iscomplexobj(A):
        sign, logabs = np.linalg.slogdet(A)
        return np.linalg.inv(A), logabs + np.log(sign)
    L = np.linalg.cholesky(A)
    Linv = np.linalg.inv(L)  # small triangular q x q blocks
    logdet = 2.0 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(axis=-1)
    return np.swapaxes(Linv, -1, -2) @ Linv, logdet


class VarparMethods:
    """What every deviance class shares beyond its solve: sigma from a solution, and
    lmerTest's parameterisation varpar = (covariance parameters, sigma), not profiled, used
    by the Satterthwaite and Kenward-Roger steps. Needs ``solve``, ``nu`` and ``reml``."""

    def sigma(self, sol: PLSSolution) -> float:
        return math.sqrt(sol.pwrss / self.nu)

    def varpar_deviance(self, varpar: np.ndarray) -> float:
        """-2 log-likelihood (or REML) at (parameters, sigma), beta at its conditional optimum."""
        sol = self.solve(varpar[:-1])
        sigma2 = varpar[-1] ** 2
        dev = sol.ldL2 + self.nu * (LOG_2PI + math.log(sigma2)) + sol.pwrss / sigma2
        if self.reml:
            dev += sol.ldRX2
        return dev

    def covbeta(self, varpar: np.ndarray) -> np.ndarray:
        """sigma^2 (R_X'R_X)^{-1} at (parameters, sigma)."""
        sol = self.solve(varpar[:-1])
        return varpar[-1] ** 2 * np.linalg.inv(sol.rx_cross)


class ProfiledDeviance(VarparMethods):
    """``deviance(theta)``: the ML deviance or REML criterion, profiled over beta and sigma."""

    def __init__(
        self, stats: SufficientStats, theta_index: tuple[tuple[int, int], ...], *, reml: bool
    ) -> None:
        self.stats = stats
        self.theta_index = theta_index
        self.reml = reml
        self.evaluations = 0
        self._eye = np.eye(stats.q)
        self._rows = np.array([i for i, _ in theta_index], dtype=np.intp)
        self._cols = np.array([j for _, j in theta_index], dtype=np.intp)
        P = stats.p + 1
        # S as one (K q q) x (P P) matrix for <M_k, S_k>, and its transpose's layout for C_k
        self._S = None if stats.S is None else stats.S.reshape(-1, P * P)

    @property
    def nu(self) -> int:
        """Degrees of freedom of the residual: n - p for REML, n for ML."""
        return self.stats.n - self.stats.p if self.reml else self.stats.n

    def lam(self, theta: np.ndarray) -> np.ndarray:
        lam = np.zeros((self.stats.q, self.stats.q))
        lam[self._rows, self._cols] = theta
        return lam

    def solve(self, theta: np.ndarray) -> PLSSolution:
        s = self.stats
        p = s.p
        P = p + 1
        theta = np.asarray(theta, dtype=float)
        lam = self.lam(theta)
        A = lam.T @ s.ztz @ lam
        A += self._eye
        Ainv, logdet = spd_inverse(A)
        M = lam @ Ainv @ lam.T
        ldL2 = float(s.counts @ logdet)
        if self._S is not None:
            G = (M.reshape(-1) @ self._S).reshape(P, P)
        else:
            G = s.W.reshape(-1, P).T @ (M @ s.W).reshape(-1, P)
        om = s.omega - G
        AX = om[:p, :p]
        d = om[:p, p]
        # LAPACK directly (these p x p calls run hundreds of times per fit)
        RX, info = scipy.linalg.lapack.dpotrf(AX, lower=1, clean=1)
        if info != 0:
            AX = (AX + AX.T) / 2
            RX = np.linalg.cholesky(AX + np.eye(p) * 1e-12 * np.trace(AX))
        z, _ = scipy.linalg.lapack.dtrtrs(RX, d, lower=1)  # R_X'^{-1} d (lme4's convention)
        beta, _ = scipy.linalg.lapack.dtrtrs(RX, z, lower=1, trans=1)
        pwrss = float(om[p, p] - z @ z)
        ldRX2 = 2.0 * float(np.sum(np.log(np.diag(RX))))
        self.evaluations += 1
        return PLSSolution(theta, beta, max(pwrss, 1e-300), ldL2, ldRX2, AX, lam, RX, Ainv)

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The criterion and its exact gradient in theta.

        With ``A_k = Lambda'T_k Lambda + I`` (``T_k = Z'Z`` of pattern k),
        ``M_k = Lambda A_k^{-1} Lambda'`` and ``Omega(theta) = Omega - sum_k <M_k, S_k>``:
        ``d log|L|^2 = 2 sum_k c_k <E, T_k Lambda A_k^{-1}>``, and for any symmetric V,
        ``d <Omega, V> = -2 sum_k <E, C_k Lambda A_k^{-1} - T_k Lambda B_k>`` with
        ``C_k = <S_k, V>`` and ``B_k = A_k^{-1} Lambda' C_k Lambda A_k^{-1}``;
        ``d pwrss = v' dOmega v`` (``v = (-beta, 1)``) and
        ``d log|R_X|^2 = <(R_X'R_X)^{-1}, dOmega_XX>``; ``E`` is the unit matrix of theta's
        position in Lambda.
        """
        sol = self.solve(theta)
        return self.criterion(sol), self._gradient(sol, self.nu / sol.pwrss)

    def _gradient(self, sol: PLSSolution, weight: float) -> np.ndarray:
        """The gradient in theta of ``log|L|^2 + weight pwrss (+ log|R_X|^2 for REML)``:
        ``weight = nu / pwrss`` gives the profiled criterion's, ``1 / sigma^2`` the varpar one's."""
        s = self.stats
        p = s.p
        lam, Ainv = sol.lam, sol.a_inv
        v = np.append(-sol.beta, 1.0)
        V = weight * np.outer(v, v)
        if self.reml:
            RXinv, _ = scipy.linalg.lapack.dtrtri(sol.rx, lower=1)
            V[:p, :p] += RXinv.T @ RXinv
        if self._S is not None:
            C = (self._S @ V.reshape(-1)).reshape(-1, s.q, s.q)
        else:
            C = (s.W @ V) @ np.swapaxes(s.W, 1, 2)
        TL = s.ztz @ lam
        LA = lam @ Ainv
        B = np.swapaxes(LA, -1, -2) @ C @ LA
        # sum_k c_k T_k Lambda A_k^{-1} - (C_k Lambda A_k^{-1} - T_k Lambda B_k), as one product
        weighted = TL @ (s.counts[:, None, None] * Ainv + B) - C @ LA
        grad_lam = 2.0 * weighted.sum(axis=0)
        return grad_lam[self._rows, self._cols]

    def varpar_gradient(self, varpar: np.ndarray) -> np.ndarray:
        """The gradient of :meth:`varpar_deviance` in (theta, sigma), exact."""
        sol = self.solve(np.asarray(varpar[:-1], dtype=float))
        sigma = float(varpar[-1])
        g_sigma = 2.0 * self.nu / sigma - 2.0 * sol.pwrss / sigma**3
        return np.append(self._gradient(sol, 1.0 / sigma**2), g_sigma)

    def covbeta_batch(self, varpars: np.ndarray) -> np.ndarray:
        """:meth:`covbeta` at each row of ``varpars`` (B, k)."""
        return np.stack([self.covbeta(v) for v in varpars])

    def criterion(self, sol: PLSSolution) -> float:
        nu = self.nu
        dev = sol.ldL2 + nu * (1.0 + LOG_2PI + math.log(sol.pwrss / nu))
        if self.reml:
            dev += sol.ldRX2
        return dev

    def __call__(self, theta: np.ndarray) -> float:
        return self.criterion(self.solve(theta))
