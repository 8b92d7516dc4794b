"""Nested grouping factors (persons in classrooms in schools): statistics and profiled deviance.

The penalised least-squares system of a nested model is block-arrow shaped, so
it is solved by absorbing one level at a time, innermost first (a blocked
Cholesky, as MixedModels.jl does). Everything is written in the space of
``U``, the distinct random-effects columns of all factors; factor ``l`` uses the
columns ``E_l`` of ``U`` (``Z_l = U E_l``) and the block ``Lambda_l`` of Lambda.

For a unit ``c`` of factor ``l`` with accumulated cross-products
``F_c = [F_UU, F_UX]`` (its persons' ``U'U`` and ``U'[X|y]``, already absorbed
below):

- ``A_c = Lambda_l' E_l' F_UU E_l Lambda_l + I`` and ``M_c = Lambda_l A_c^{-1} Lambda_l'``;
- ``log|L|^2`` gains ``log|A_c|``; the global ``[X|y]'[X|y]`` loses ``F_UX' E_l M_c E_l' F_UX``;
- the unit passes ``(I - N_c) F_UU`` and ``(I - N_c) F_UX`` to its parent, with
  ``N_c = F_UU E_l M_c E_l'``.

At the innermost factor (persons) ``F_UU = T_k`` depends only on the person's
time pattern ``k``, so ``A``, ``M`` and ``N`` are computed once per pattern, the
loss of ``[X|y]'[X|y]`` uses the per-pattern moments ``S_k`` and a parent needs
only, per (parent, pattern) pair, the number of persons and the sum of their
``U'[X|y]``. A deviance evaluation therefore costs O(patterns + pairs + units
above the persons), never O(rows).

The gradient is exact: a reverse pass through the same blocked solve
(:meth:`NestedDeviance._reverse`), about the cost of one more evaluation. It is
checked against the complex-step derivative (the same code evaluated at complex
``theta + i h e_k``, exact to rounding, kept as :meth:`complex_step_gradient`)
and against finite differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from pipeline.model.deviance import LOG_2PI, PLSSolution, VarparMethods, spd_inverse
from pipeline.model.stats import (
    MAX_PATTERNS,
    CrossProducts,
    _pattern_codes,
    pattern_moments,
)

COMPLEX_STEP = 1e-30
# the (unit, pattern) sums are held dense (BLAS) only when nearly all pairs occur: sparse
# products read a quarter of the bytes at a quarter's fill and are memory-bound either way
# (1,000,000 pupils in 10,000 schools, 25 % filled: 2.6 ms against 12.5 ms forward)
DENSE_FILL = 0.6


@dataclass(frozen=True, slots=True)
class NestedStats:
    n: int
    p: int
    u: int  # distinct random-effects columns
    omega: np.ndarray  # (P, P)
    selects: tuple[np.ndarray, ...]  # per factor, innermost first: its columns of U
    slices: tuple[tuple[int, int], ...]  # per factor: (offset, q) in Lambda
    m: tuple[int, ...]  # units per factor
    W: np.ndarray  # (m1, u, P) per person
    pattern_of: np.ndarray  # (m1,)
    ztz: np.ndarray  # (K, u, u)
    counts: np.ndarray  # (K,)
    S: np.ndarray | None  # (K, u, u, P, P) or None: per-person path
    # dense where small (BLAS), else sparse: both are only used through ``@``
    unit_counts: np.ndarray | scipy.sparse.csr_matrix  # (m2, K) persons per (unit, pattern)
    unit_W: np.ndarray  # (m2, u, P) sum of the persons' W per unit of the second factor
    unit_pattern_W: np.ndarray | scipy.sparse.csr_matrix  # (m2 * P, K * u) sum of W per pair
    # the same, by columns (CSC): ``@`` a dense matrix runs faster from it, ``.T @`` from CSR
    unit_pattern_Wc: np.ndarray | scipy.sparse.csc_matrix
    up: tuple[scipy.sparse.csr_matrix, ...]  # level l+1 units x level l units, for l >= 2
    person_parent: np.ndarray  # (m1,) unit of the second factor
    person_pair: np.ndarray  # (m1,) the person's (unit, pattern) pair
    pair_unit: np.ndarray  # (pairs,) the pair's unit of the second factor
    pair_pattern: np.ndarray  # (pairs,) the pair's time pattern
    parents: tuple[np.ndarray, ...]  # per factor l >= 2 (except the outermost): its parent unit

    @property
    def q(self) -> int:
        return sum(q for _, q in self.slices)

    @property
    def levels(self) -> int:
        return len(self.selects)


def nested_stats(
    cp: CrossProducts,
    selects: tuple[tuple[int, ...], ...],
    slices: tuple[tuple[int, int], ...],
    m: tuple[int, ...],
    parents: tuple[np.ndarray, ...],
) -> NestedStats:
    """Compress merged cross-products for a nested model.

    ``parents[j]`` maps the units of factor ``j + 1`` (0 = persons) to factor
    ``j + 2``; ``cp.ancestors[:, 0]`` is each person's unit of factor 2.
    """
    W, utu = cp.W, cp.utu
    m1, u, P = W.shape
    iu = np.triu_indices(u)
    first, inverse, counts, order = _pattern_codes(utu[:, iu[0], iu[1]], with_order=True)
    K = first.shape[0]
    if K <= MAX_PATTERNS and K < m1:
        ztz = utu[first]
        S = pattern_moments(W, inverse, counts, order)
        pattern_of = inverse
    else:  # every person its own pattern
        ztz, S, pattern_of, counts = utu, None, np.arange(m1), np.ones(m1, dtype=np.int64)
    parent = cp.ancestors[:, 0]
    # (unit, pattern) pairs: the persons' count and the sum of their W, as sparse matrices
    K = int(ztz.shape[0])
    m2 = m[1]
    key = parent.astype(np.int64) * K + pattern_of
    pair_key, pair_of, pair_count = _distinct_keys(key, m2 * K)
    npairs = pair_key.shape[0]
    person_to_pair = scipy.sparse.csr_matrix(
        (np.ones(m1), (pair_of, np.arange(m1))), shape=(npairs, m1)
    )
    pair_W = (person_to_pair @ W.reshape(m1, -1)).reshape(npairs, u, P)
    pair_pattern = (pair_key % K).astype(np.int64)
    pair_unit = (pair_key // K).astype(np.int64)
    unit_counts = scipy.sparse.csr_matrix(
        (pair_count.astype(float), (pair_unit, pair_pattern)), shape=(m2, K)
    )
    unit_W = (
        scipy.sparse.csr_matrix(
            (np.ones(npairs), (pair_unit, np.arange(npairs))), shape=(m2, npairs)
        )
        @ pair_W.reshape(npairs, -1)
    ).reshape(m2, u, P)
    # rows (unit, p), columns (pattern, j): W summed over the unit's persons of the pattern
    rows = (pair_unit[:, None, None] * P + np.arange(P)[None, None, :]).repeat(u, axis=1)
    cols = (pair_pattern[:, None, None] * u + np.arange(u)[None, :, None]).repeat(P, axis=2)
    unit_pattern_W = scipy.sparse.csr_matrix(
        (pair_W.reshape(-1), (rows.reshape(-1), cols.reshape(-1))), shape=(m2 * P, K * u)
    )
    if npairs * u * P >= DENSE_FILL * (m2 * P * K * u):  # (nearly) every unit has every pattern
        unit_counts = unit_counts.toarray()
        unit_pattern_W = unit_pattern_W.toarray()
        unit_pattern_Wc = unit_pattern_W
    else:
        unit_pattern_Wc = unit_pattern_W.tocsc()
    up = tuple(
        scipy.sparse.csr_matrix(
            (np.ones(m[j + 1]), (parents[j], np.arange(m[j + 1]))), shape=(m[j + 2], m[j + 1])
        )
        for j in range(len(m) - 2)
    )
    return NestedStats(
        n=cp.n,
        p=P - 1,
        u=u,
        omega=cp.omega,
        selects=tuple(np.asarray(s, dtype=np.int64) for s in selects),
        slices=slices,
        m=m,
        W=W,
        pattern_of=pattern_of,
        ztz=ztz,
        counts=counts.astype(float),
        S=S,
        unit_counts=unit_counts,
        unit_W=unit_W,
        unit_pattern_W=unit_pattern_W,
        unit_pattern_Wc=unit_pattern_Wc,
        up=up,
        person_parent=parent,
        person_pair=pair_of,
        pair_unit=pair_unit,
        pair_pattern=pair_pattern,
        parents=tuple(parents),
    )


def _distinct_keys(
    key: np.ndarray, span: int, *, count_limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(key, return_inverse=True, return_counts=True)`` for integer keys in
    ``[0, span)``: counted over all possible keys (no sort) when ``span`` is at most
    ``count_limit`` (default: a few times the number of keys)."""
    limit = 4 * key.size + 1_000_000 if count_limit is None else count_limit
    if span <= limit:
        count_of_key = np.bincount(key, minlength=span)
        distinct = np.flatnonzero(count_of_key)
        code = np.empty(span, dtype=np.int64)
        code[distinct] = np.arange(distinct.size)
        return distinct, code[key], count_of_key[distinct]
    distinct, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return distinct, inverse.reshape(-1), counts


def _embed(M: np.ndarray, select: np.ndarray, u: int) -> np.ndarray:
    """``E M E'``: a (..., q, q) matrix placed at rows/columns ``select`` of a (..., u, u) zero matrix."""
    out = np.zeros((*M.shape[:-2], u, u), dtype=M.dtype)
    out[..., select[:, None], select[None, :]] = M
    return out


def _logdet(A: np.ndarray) -> np.ndarray:
    """log|A| for a stack of (complex or real) matrices, analytic in A (for the complex step)."""
    sign, logabs = np.linalg.slogdet(A)
    if np.iscomplexobj(A):
        return logabs + np.log(sign)
    return logabs


def _times(X: np.ndarray, L: np.ndarray) -> np.ndarray:
    """``X @ L`` for a stack X (B, m, r, q) of the units' matrices and L (B, q, c) shared by
    the units: one (m r x q) product per row of the batch (BLAS), not m tiny ones."""
    B, m, r, q = X.shape
    return (X.reshape(B, m * r, q) @ L).reshape(B, m, r, L.shape[-1])


def _by(L: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``L @ X`` for L (B, r, q) shared by the units and a stack X (B, m, q, c)."""
    return np.swapaxes(_times(np.swapaxes(X, -1, -2), np.swapaxes(L, -1, -2)), -1, -2)


def _unit_sum(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``sum_c X_c @ Y_c`` over the units of stacks X (B, m, i, j) and Y (B, m, j, k), as one
    product [X_1 ... X_m] [Y_1; ...; Y_m] per row of the batch."""
    B, m, i, j = X.shape
    return np.swapaxes(X, 1, 2).reshape(B, i, m * j) @ Y.reshape(B, m * j, Y.shape[-1])


def _sparse_rows(mat: scipy.sparse.csr_matrix, x: np.ndarray) -> np.ndarray:
    """``mat @ x`` over the second axis of a (B, rows, ...) array."""
    B, r = x.shape[:2]
    rest = x.shape[2:]
    flat = np.moveaxis(x, 1, 0).reshape(r, -1)
    out = mat @ flat
    return np.moveaxis(out.reshape(mat.shape[0], B, *rest), 0, 1)


@dataclass(frozen=True, slots=True)
class NestedSolution:
    """What the BLUPs need beyond the PLS solution: per factor, M and the absorbed F."""

    M: tuple[np.ndarray, ...]  # per factor: (K or m_l, q_l, q_l)
    F_UU: tuple[np.ndarray, ...]  # per factor l >= 2: (m_l, u, u) before its own absorption
    F_UX: tuple[np.ndarray, ...]  # per factor l >= 2: (m_l, u, P)
    tape: tuple[tuple[np.ndarray, ...], ...] = ()  # what the reverse pass needs, per factor


class NestedDeviance(VarparMethods):
    """The profiled deviance (ML) or REML criterion of a nested model, with the interface of
    :class:`pipeline.model.deviance.ProfiledDeviance`."""

    # Satterthwaite's derivatives by central differences at one step size (1e-4 |x|) instead
    # of two extrapolated ones: truncation ~1e-8 relative, far below the digits the degrees of
    # freedom are reported to; each stencil point costs a pass over the (unit, pattern) sums
    stencil_halvings = 1

    def __init__(
        self, stats: NestedStats, theta_index: tuple[tuple[int, int], ...], *, reml: bool
    ) -> None:
        self.stats = stats
        self.theta_index = theta_index
        self.reml = reml
        self.evaluations = 0
        self._rows = np.array([i for i, _ in theta_index], dtype=np.int64)
        self._cols = np.array([j for _, j in theta_index], dtype=np.int64)

    @property
    def nu(self) -> int:
        return self.stats.n - self.stats.p if self.reml else self.stats.n

    def lam(self, theta: np.ndarray) -> np.ndarray:
        """The block-diagonal Lambda (q x q) at a real theta."""
        return self._lambdas(np.asarray(theta, dtype=float)[None, :])[0]

    def _lambdas(self, theta: np.ndarray) -> np.ndarray:
        q = self.stats.q
        lam = np.zeros((theta.shape[0], q, q), dtype=theta.dtype)
        lam[:, self._rows, self._cols] = theta
        return lam

    # ------------------------------------------------------------------ the solve
    def _solve(self, theta: np.ndarray, keep: bool = False):
        """Batched over the rows of ``theta`` (B, ntheta), real or complex."""
        s = self.stats
        u, p = s.u, s.p
        P = p + 1
        B = theta.shape[0]
        lam_all = self._lambdas(theta)
        Ms: list[np.ndarray] = []
        FUUs: list[np.ndarray] = []
        FUXs: list[np.ndarray] = []

        # persons, per pattern
        off, q1 = s.slices[0]
        sel = s.selects[0]
        lam = lam_all[:, off : off + q1, off : off + q1]  # (B, q1, q1)
        T = s.ztz  # (K, u, u)
        T11 = T[:, sel[:, None], sel[None, :]]
        lamT = np.swapaxes(lam, -1, -2)[:, None]
        A = lamT @ T11[None] @ lam[:, None] + np.eye(q1)
        Ainv = np.linalg.inv(A)
        M = lam[:, None] @ Ainv @ lamT  # (B, K, q1, q1)
        ldL2 = _logdet(A) @ s.counts  # (B,)
        Mu = _embed(M, sel, u)  # (B, K, u, u)
        if s.S is not None:
            G = (Mu.reshape(B, -1) @ s.S.reshape(-1, P * P)).reshape(B, P, P)
        else:
            MW = (Mu @ s.W[None]).reshape(B, -1, P)  # (B, m1 * u, P)
            G = s.W.reshape(-1, P).T[None] @ MW
        if keep:  # batched (leading axis B): the reverse pass runs on all rows at once
            Ms.append(M)
            tape: list[tuple[np.ndarray, ...]] = [(lam, Ainv, T11)]
        N = T[None] @ Mu  # (B, K, u, u)
        TT = T[None] - N @ T[None]  # absorbed U'U per pattern
        # units of the second factor: F_UU = sum_k n_ck TT_k, F_UX = W_c - sum_k N_k W_ck,
        # as sparse products over the (unit, pattern) pairs
        K = T.shape[0]
        m2 = s.m[1]
        F_UU = (
            (s.unit_counts @ np.moveaxis(TT, 1, 0).reshape(K, -1))
            .reshape(m2, B, u, u)
            .transpose(1, 0, 2, 3)
        )
        Nmat = N.transpose(1, 3, 0, 2).reshape(K * u, B * u)  # [(k, j), (b, a)] = N[b, k, a, j]
        corr = (s.unit_pattern_Wc @ Nmat).reshape(m2, P, B, u).transpose(2, 0, 3, 1)
        F_UX = s.unit_W[None] - corr

        for level in range(1, s.levels):
            off, ql = s.slices[level]
            sel = s.selects[level]
            lam = lam_all[:, off : off + ql, off : off + ql]
            lamT = np.swapaxes(lam, -1, -2)
            Fsel = F_UU[:, :, sel[:, None], sel[None, :]]
            A = _by(lamT, _times(Fsel, lam)) + np.eye(ql)
            Ainv, logdet = spd_inverse(A)
            M = _by(lam, _times(Ainv, lamT))  # (B, m_l, ql, ql)
            ldL2 = ldL2 + logdet.sum(axis=1)
            Mu = _embed(M, sel, u)
            MF = Mu @ F_UX  # (B, m, u, P)
            mu = F_UX.shape[1] * u
            G = G + np.swapaxes(F_UX.reshape(B, mu, P), 1, 2) @ MF.reshape(B, mu, P)
            if keep:
                Ms.append(M)
                FUUs.append(F_UU)
                FUXs.append(F_UX)
                tape.append((lam, Ainv, Fsel, Mu))
            if level + 1 < s.levels:
                N = F_UU @ Mu
                F_UU = _sparse_rows(s.up[level - 1], F_UU - N @ F_UU)
                F_UX = _sparse_rows(s.up[level - 1], F_UX - N @ F_UX)

        om = s.omega[None] - G
        AX = om[:, :p, :p]
        d = om[:, :p, p]
        beta = np.linalg.solve(AX, d[..., None])[..., 0]
        pwrss = om[:, p, p] - np.einsum("bi,bi->b", d, beta)
        ldRX2 = _logdet(AX)
        self.evaluations += B
        nested = NestedSolution(tuple(Ms), tuple(FUUs), tuple(FUXs), tuple(tape)) if keep else None
        return beta, pwrss, ldL2, ldRX2, AX, lam_all, nested

    def _criterion(self, pwrss, ldL2, ldRX2):
        nu = self.nu
        dev = ldL2 + nu * (1.0 + LOG_2PI + np.log(pwrss / nu))
        if self.reml:
            dev = dev + ldRX2
        return dev

    def solve(self, theta: np.ndarray) -> PLSSolution:
        return self.solve_nested(theta, keep=False)[0]

    def solve_nested(
        self, theta: np.ndarray, *, keep: bool = True
    ) -> tuple[PLSSolution, NestedSolution | None]:
        """The PLS solution and (``keep``) what the BLUPs and the reverse pass need, in one solve."""
        theta = np.asarray(theta, dtype=float)
        beta, pwrss, ldL2, ldRX2, AX, lam, nested = self._solve(theta[None, :], keep=keep)
        AX = (AX[0] + AX[0].T) / 2
        try:
            RX = np.linalg.cholesky(AX)
        except np.linalg.LinAlgError:
            RX = np.linalg.cholesky(AX + np.eye(AX.shape[0]) * 1e-12 * np.trace(AX))
        if nested is not None:  # the one row asked for
            nested = NestedSolution(
                tuple(x[0] for x in nested.M),
                tuple(x[0] for x in nested.F_UU),
                tuple(x[0] for x in nested.F_UX),
            )
        sol = PLSSolution(
            theta,
            beta[0],
            max(float(pwrss[0]), 1e-300),
            float(ldL2[0]),
            float(ldRX2[0]),
            AX,
            lam[0],
            RX,
            np.empty((0, 0, 0)),
        )
        return sol, nested

    def criterion(self, sol: PLSSolution) -> float:
        return float(self._criterion(sol.pwrss, sol.ldL2, sol.ldRX2))

    def __call__(self, theta: np.ndarray) -> float:
        theta = np.asarray(theta, dtype=float)
        _, pwrss, ldL2, ldRX2, *_ = self._solve(theta[None, :])
        return float(self._criterion(max(float(pwrss[0]), 1e-300), ldL2[0], ldRX2[0]))

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The criterion and its exact gradient (reverse pass through the blocked solve)."""
        theta = np.asarray(theta, dtype=float)
        beta, pwrss, ldL2, ldRX2, AX, _, nested = self._solve(theta[None, :], keep=True)
        pw = max(float(pwrss[0]), 1e-300)
        value = float(self._criterion(pw, ldL2[0], ldRX2[0]))
        return value, self._reverse(beta, np.array([self.nu / pw]), AX, nested)[0]

    def gradient_batch(self, thetas: np.ndarray) -> np.ndarray:
        """The exact gradient of the criterion at each row of ``thetas`` (B, ntheta), in one
        batched solve and reverse pass."""
        thetas = np.asarray(thetas, dtype=float)
        beta, pwrss, _, _, AX, _, nested = self._solve(thetas, keep=True)
        return self._reverse(beta, self.nu / np.maximum(pwrss, 1e-300), AX, nested)

    def complex_step_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The criterion and its gradient by the complex step: an independent check of
        :meth:`value_and_gradient` (slower: one complex solve per parameter)."""
        theta = np.asarray(theta, dtype=float)
        k = theta.size
        batch = np.tile(theta.astype(complex), (k, 1))
        batch[np.arange(k), np.arange(k)] += 1j * COMPLEX_STEP
        _, pwrss, ldL2, ldRX2, *_ = self._solve(batch)
        values = self._criterion(pwrss, ldL2, ldRX2)
        return float(values[0].real), values.imag / COMPLEX_STEP

    def _reverse(
        self, beta: np.ndarray, weight: np.ndarray, AX: np.ndarray, nested: NestedSolution
    ) -> np.ndarray:
        """Adjoints of the blocked solve, from the top factor down to the persons, batched
        over the rows of ``beta`` (B, p), ``weight`` (B,) and ``AX`` (B, p, p); returns (B, ntheta).

        With ``Gbar = -V`` (``V = weight v v'`` plus ``(R_X'R_X)^{-1}`` for REML,
        ``v = (-beta, 1)``; ``weight`` is ``nu / pwrss`` for the profiled criterion and
        ``1 / sigma^2`` at a given sigma), each factor's contribution ``sum_c F_UX' Mu F_UX`` gives
        ``Mubar_c = F_UX Gbar F_UX'`` and ``F_UXbar_c = 2 Mu F_UX Gbar``; the absorption
        ``F - F Mu F`` passes the parent's adjoints down; ``M = Lambda A^{-1} Lambda'`` and
        ``A = Lambda' F_sel Lambda + I`` (with ``log|A|`` in the criterion) give
        ``Abar = A^{-1} - A^{-1} Lambda' Mbar Lambda A^{-1}``,
        ``Lambdabar += 2 sym(Mbar) Lambda A^{-1} + 2 F_sel Lambda sym(Abar)`` and
        ``F_selbar = Lambda Abar Lambda'``.
        """
        s = self.stats
        u, p = s.u, s.p
        P = p + 1
        B = beta.shape[0]
        v = np.concatenate([-beta, np.ones((B, 1))], axis=1)
        V = weight[:, None, None] * v[:, :, None] * v[:, None, :]
        if self.reml:
            V[:, :p, :p] += np.linalg.inv(AX)
        Gbar = -V[:, None]  # (B, 1, P, P): broadcast over units
        lam_bar = np.zeros((B, s.q, s.q))
        up_UU: np.ndarray | None = None  # adjoints of the inputs of the factor above
        up_UX: np.ndarray | None = None

        def T_(x: np.ndarray) -> np.ndarray:
            return np.swapaxes(x, -1, -2)

        def sym(x: np.ndarray) -> np.ndarray:
            return (x + T_(x)) / 2

        def block(level: int, lam, Ainv, Fsel, Mbar, weights) -> np.ndarray:
            sel = s.selects[level]
            Mbar = Mbar[:, :, sel[:, None], sel[None, :]]
            lamT = T_(lam)  # lam: (B, q, q), shared by the units
            Fsel = np.broadcast_to(Fsel, Mbar.shape)
            Abar = Ainv * weights[:, None, None] - Ainv @ _by(lamT, _times(Mbar, lam)) @ Ainv
            grad = 2 * _unit_sum(_times(sym(Mbar), lam), Ainv) + 2 * _unit_sum(
                _times(Fsel, lam), sym(Abar)
            )
            off, q = s.slices[level]
            lam_bar[:, off : off + q, off : off + q] += grad
            return _by(lam, _times(Abar, lamT))  # F_selbar

        for level in range(s.levels - 1, 0, -1):
            lam, Ainv, Fsel, Mu = nested.tape[level]
            F_UU, F_UX = nested.F_UU[level - 1], nested.F_UX[level - 1]
            FX = F_UX  # (B, m, u, P)
            Mubar = _times(FX, Gbar[:, 0]) @ T_(FX)
            UXbar = 2 * _times(Mu @ FX, Gbar[:, 0])
            UUbar = np.zeros_like(F_UU)
            if up_UU is not None:
                parent = s.parents[level - 1]
                Bb, Cb = up_UU[:, parent], up_UX[:, parent]
                FMu = F_UU @ Mu
                UUbar += Bb - Bb @ FMu - T_(FMu) @ Bb
                UUbar -= Cb @ T_(FX) @ Mu
                UXbar += Cb - T_(FMu) @ Cb
                Mubar -= F_UU @ Bb @ F_UU + F_UU @ Cb @ T_(FX)
            sel = s.selects[level]
            Fbar = block(level, lam, Ainv, Fsel, Mubar, np.ones(Ainv.shape[1]))
            UUbar[:, :, sel[:, None], sel[None, :]] += Fbar
            up_UU, up_UX = UUbar, UXbar

        # persons: F_UU2 = C @ (T - N T), F_UX2 = W_c - Y @ Nmat, N = T Mu, G += <Mu, S>
        lam, Ainv, T11 = nested.tape[0]
        T = s.ztz
        K = T.shape[0]
        m2 = up_UU.shape[1]
        TTbar = (
            (s.unit_counts.T @ np.moveaxis(up_UU, 0, 1).reshape(m2, -1))
            .reshape(K, B, u, u)
            .transpose(1, 0, 2, 3)
        )
        UXflat = np.transpose(up_UX, (1, 3, 0, 2)).reshape(m2 * P, B * u)  # [(c, p), (b, a)]
        Nbar = -(s.unit_pattern_W.T @ UXflat).reshape(K, u, B, u).transpose(2, 0, 3, 1)
        Nbar -= TTbar @ T
        Mubar = T @ Nbar
        if s.S is not None:
            Mubar += (s.S.reshape(K * u * u, P * P) @ Gbar.reshape(B, P * P).T).T.reshape(
                B, K, u, u
            )
        else:
            Mubar += s.W @ Gbar @ T_(s.W)
        block(0, lam, Ainv, T11, Mubar, s.counts)
        return lam_bar[:, self._rows, self._cols]

    def varpar_gradient(self, varpar: np.ndarray) -> np.ndarray:
        """The gradient of :meth:`varpar_deviance` in (theta, sigma), exact."""
        return self.varpar_gradient_batch(np.asarray(varpar, dtype=float)[None, :])[0]

    def varpar_gradient_batch(self, varpars: np.ndarray) -> np.ndarray:
        """:meth:`varpar_gradient` at each row of ``varpars`` (B, k): one batched solve and
        one batched reverse pass (the large (unit, pattern) products read once for all)."""
        varpars = np.asarray(varpars, dtype=float)
        sigma = varpars[:, -1]
        beta, pwrss, _, _, AX, _, nested = self._solve(varpars[:, :-1], keep=True)
        g_theta = self._reverse(beta, 1.0 / sigma**2, AX, nested)
        g_sigma = 2.0 * self.nu / sigma - 2.0 * pwrss / sigma**3
        return np.concatenate([g_theta, g_sigma[:, None]], axis=1)

    def varpar_stencil_batch(self, varpars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`varpar_gradient_batch` and :meth:`covbeta_batch` at each row of ``varpars``
        from one batched solve (Satterthwaite's stencil needs both at the same points)."""
        varpars = np.asarray(varpars, dtype=float)
        sigma = varpars[:, -1]
        beta, pwrss, _, _, AX, _, nested = self._solve(varpars[:, :-1], keep=True)
        g_theta = self._reverse(beta, 1.0 / sigma**2, AX, nested)
        g_sigma = 2.0 * self.nu / sigma - 2.0 * pwrss / sigma**3
        AX = (AX + np.swapaxes(AX, 1, 2)) / 2
        covbeta = sigma[:, None, None] ** 2 * np.linalg.inv(AX)
        return np.concatenate([g_theta, g_sigma[:, None]], axis=1), covbeta

    def covbeta_batch(self, varpars: np.ndarray) -> np.ndarray:
        """:meth:`covbeta` at each row of ``varpars`` (B, k), in one batched solve (the large
        (unit, pattern) products are then read once for all rows)."""
        varpars = np.asarray(varpars, dtype=float)
        AX = self._solve(varpars[:, :-1])[4]
        AX = (AX + np.swapaxes(AX, 1, 2)) / 2
        return varpars[:, -1, None, None] ** 2 * np.linalg.inv(AX)

    # ------------------------------------------------------------------ BLUPs
    def conditional_modes(
        self, theta: np.ndarray, beta: np.ndarray, sigma: float
    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
        """BLUPs and conditional covariances at every factor, and per person the joint ones.

        Returns ``(b, V, b_person_chain, V_person_chain)``: per factor (innermost
        first) the BLUPs (m_l, q_l) and their conditional covariances
        (m_l, q_l, q_l), and per person the stacked BLUPs of the person and its
        units at every outer factor (m1, q) with their joint conditional
        covariance (m1, q, q), in Lambda's order.

        Top-down: ``b_c = M_c E_l' (F_UX v - F_UU sum_{outer} E b_outer)``; the
        conditional covariance adds the outer units' uncertainty:
        ``Var(b_c) = sigma^2 M_c + H Var(b_outer) H'`` with ``H = M_c E_l' F_UU E_outer``.
        """
        s = self.stats
        sol, nested = self.solve_nested(theta)
        v = np.append(-np.asarray(beta, dtype=float), 1.0)
        L = s.levels
        u = s.u
        sig2 = sigma**2
        # chain over the outer factors, built from the outermost in: per unit of factor l,
        # the stacked BLUPs of factors l..L-1 and their joint covariance
        chain_b: np.ndarray | None = None
        chain_V: np.ndarray | None = None
        chain_E: np.ndarray | None = None  # (u, q_chain): U columns of the stacked chain
        b_levels: list[np.ndarray] = [np.empty(0)] * L
        V_levels: list[np.ndarray] = [np.empty(0)] * L
        for level in range(L - 1, 0, -1):
            sel = s.selects[level]
            ql = sel.size
            M = nested.M[level]  # (m_l, ql, ql)
            F_UU = nested.F_UU[level - 1]
            F_UX = nested.F_UX[level - 1]
            r = F_UX @ v  # (m_l, u)
            E = np.zeros((u, ql))
            E[sel, np.arange(ql)] = 1.0
            if chain_b is None:
                b = (M @ (r[:, sel])[:, :, None])[:, :, 0]
                V = sig2 * M
                new_b, new_V, new_E = b, V, E
            else:
                parent = s.parents[level - 1]
                pb, pV = chain_b[parent], chain_V[parent]
                H = M @ ((F_UU @ chain_E)[:, sel, :])  # (m_l, ql, qc)
                b = (M @ r[:, sel][:, :, None])[:, :, 0] - (H @ pb[:, :, None])[:, :, 0]
                HV = H @ pV
                V = sig2 * M + HV @ np.swapaxes(H, 1, 2)
                new_b = np.concatenate([b, pb], axis=1)
                top = np.concatenate([V, -HV], axis=2)
                bottom = np.concatenate([-np.swapaxes(HV, 1, 2), pV], axis=2)
                new_V = np.concatenate([top, bottom], axis=1)
                new_E = np.concatenate([E, chain_E], axis=1)
            b_levels[level], V_levels[level] = b, V
            chain_b, chain_V, chain_E = new_b, new_V, new_E
        # persons: M and H = M E_1'T E_chain depend only on the time pattern and the outer
        # units' Var(b_outer) only on the unit, so the conditional covariances are formed per
        # (unit, pattern) pair and gathered; the BLUPs' M r is the one product per person
        sel = s.selects[0]
        q1 = sel.size
        pat = s.pattern_of
        Mk = nested.M[0]  # (K, q1, q1)
        Hk = Mk @ ((s.ztz @ chain_E)[:, sel, :])  # (K, q1, qc)
        qc = Hk.shape[2]
        P = v.size
        r = (s.W.reshape(-1, P) @ v).reshape(-1, u)[:, sel]  # (m1, q1)
        Hp = Hk[s.pair_pattern]  # (pairs, q1, qc)
        HV = -(Hp @ chain_V[s.pair_unit])  # (pairs, q1, qc): -H Var(b_outer)
        pair_V = np.empty((Hp.shape[0], q1 + qc, q1 + qc))
        pair_V[:, :q1, :q1] = sig2 * Mk[s.pair_pattern] - HV @ np.swapaxes(Hp, 1, 2)
        pair_V[:, :q1, q1:] = HV
        pair_V[:, q1:, :q1] = np.swapaxes(HV, 1, 2)
        pair_V[:, q1:, q1:] = chain_V[s.pair_unit]
        person_V = pair_V[s.person_pair]  # (m1, q, q)
        V = person_V[:, :q1, :q1]  # a view: the persons' own block
        # b = M r - H b_outer: H b_outer per pair, M r as q1 * q1 products of columns (numpy's
        # products of stacks of tiny matrices are slower than these)
        b = -(Hp @ chain_b[s.pair_unit][:, :, None])[:, :, 0][s.person_pair]  # (m1, q1)
        for i in range(q1):
            for j in range(q1):
                b[:, i] += Mk[:, i, j][pat] * r[:, j]
        b_levels[0], V_levels[0] = b, V
        person_b = np.concatenate([b, chain_b[s.person_parent]], axis=1)
        return b_levels, V_levels, person_b, person_V
