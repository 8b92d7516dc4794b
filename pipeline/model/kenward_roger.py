"""Kenward-Roger (1997) small-sample inference for fixed-effect contrasts.

Notation of Kenward & Roger (1997, Biometrics 53, 983-997). The marginal model
is ``y ~ N(X beta, Sigma(sigma))`` with ``Sigma`` block diagonal over persons,

    Sigma_i = Z_i G Z_i' + sigma^2 R_i(rho),      G = sigma^2 Lambda Lambda',

and ``sigma = (sigma_1, ..., sigma_r)`` the variance parameters (below). With
``Sigma_k = d Sigma / d sigma_k`` and ``Sigma_kl = d^2 Sigma / d sigma_k d sigma_l``:

- ``Phi = (X' Sigma^{-1} X)^{-1}``, the plug-in covariance of beta-hat;
- ``P_k = -X' Sigma^{-1} Sigma_k Sigma^{-1} X``,
  ``Q_kl = X' Sigma^{-1} Sigma_k Sigma^{-1} Sigma_l Sigma^{-1} X``,
  ``R_kl = X' Sigma^{-1} Sigma_kl Sigma^{-1} X``;
- ``W = Var(sigma-hat)``, the inverse of the expected REML information
  ``I_kl = 1/2 tr(Pi Sigma_k Pi Sigma_l)`` with ``Pi = Sigma^{-1} - Sigma^{-1} X Phi X' Sigma^{-1}``,
  i.e. ``2 I_kl = tr(Sigma^{-1} Sigma_k Sigma^{-1} Sigma_l) - 2 tr(Phi Q_kl) + tr(Phi P_k Phi P_l)``
  (pbkrtest's ``IE2``; a generalised inverse when it is singular, as pbkrtest does);
- the adjusted covariance ``Phi_A = Phi + 2 Phi {sum_kl W_kl (Q_kl - P_k Phi P_l - R_kl / 4)} Phi``.

For a contrast matrix ``L`` (``ell`` rows of full rank; the paper's ``L'``) with
``Theta = L'(L Phi L')^{-1} L``:

- ``A_1 = sum_kl W_kl tr(Theta Phi P_k Phi) tr(Theta Phi P_l Phi)``,
  ``A_2 = sum_kl W_kl tr(Theta Phi P_k Phi Theta Phi P_l Phi)``;
- ``B = (A_1 + 6 A_2) / (2 ell)``, ``g = ((ell+1) A_1 - (ell+4) A_2) / ((ell+2) A_2)``,
  ``c_1 = g / (3 ell + 2(1-g))``, ``c_2 = (ell-g) / (3 ell + 2(1-g))``,
  ``c_3 = (ell+2-g) / (3 ell + 2(1-g))``;
- ``E* = 1 / (1 - A_2/ell)``, ``V* = (2/ell)(1 + c_1 B) / ((1 - c_2 B)^2 (1 - c_3 B))``,
  ``rho = V* / (2 E*^2)``; denominator df ``m = 4 + (ell+2) / (ell rho - 1)`` and scale
  ``lambda = m / (E* (m - 2))``;
- ``F = (1/ell) beta-hat' L' (L Phi_A L')^{-1} L beta-hat`` and ``lambda F ~ F(ell, m)``.

For one row lmerTest's ``ddf = "Kenward-Roger"`` reports ``t = L beta / sqrt(L Phi_A L')``
with ``m`` df (no scale), and so does :func:`kenward_roger`; the scale is returned beside it.

Variance parameters. KR is invariant to a linear reparametrisation of ``sigma`` but
not to a nonlinear one, so the choice is stated:

- random effects: the distinct elements of each block of ``G`` (variances and, for
  correlated terms, covariances): ``Sigma_k = Z_i (E_ab + E_ba) Z_i'`` (pbkrtest's ``G``
  list for lme4 models);
- no structure, and the linear structures ``us``, ``diag``, ``cs``, ``toep``: the
  distinct elements of ``sigma^2 R`` over the occasions (for ``us`` every covariance,
  for ``toep`` one per lag, for no structure sigma^2): ``Sigma`` is linear in them
  and ``R_kl = 0`` (SAS's parametrisation of these structures);
- the other structures (``ar1``, ``ar1h``, ``csh``, ``toeph``, ``sp_exp``): ``sigma^2``
  and the structure's own unconstrained parameters ``rho``
  (``Sigma_k = R_i``, resp. ``sigma^2 dR_i/drho_a``; ``R_kl`` from the second
  derivatives), as mmrm's ``"Kenward-Roger"`` works in its own parametrisation;
  ``linear=False`` does this for the linear structures too.

The df and scale depend on ``sigma`` only through ``sum_kl W_kl P_k (x) P_l``, which is
invariant to any reparametrisation; the choice moves only ``Phi_A`` (through ``R_kl``),
hence the standard error and F.

Computation. Every sum is over persons; ``Sigma_i`` depends on the person only
through the observed occasions and ``Z_i`` (the pattern), so per pattern ``k``
the small matrices ``Sigma_k^{-1} Sigma_a Sigma_k^{-1} ...`` are formed once and
contracted with the pattern's moments ``sum_{i in k} X_i (x) X_i`` (rows padded to
every slot, zero where unobserved); with too many patterns, per person. A nested
(three-level) model's ``Sigma`` is block diagonal over the units of the outermost
factor, not over persons: there each such unit is one block (rows padded, a random
effect of an inner factor shared by the slots of the same inner unit), dense, so the
cost grows as the cube of the rows per outermost unit (egsingle, 60 schools of up to
387 rows: about 13 s); blocks are processed in chunks of bounded memory.

Use: ``kenward_roger(fit, L)`` for a REML fit (lmerTest refuses ML fits, and so does
this); :func:`kenward_roger_terms` once and ``terms=`` for many contrasts of one fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats

from pipeline.errors import ModelError
from pipeline.model.stats import MAX_PATTERNS, _pattern_codes, pattern_moments
from pipeline.model.threads import single_threaded

LINEAR_STRUCTURES = ("us", "diag", "cs", "toep")
_H = 1e-30  # complex step
_EPS = np.finfo(float).eps


@dataclass(frozen=True, slots=True)
class _Layout:
    """Per unit (a pattern, or one independent block: a person, or the outermost unit of a
    nested model): padded Z, observed slots, persons, X moments or X itself."""

    Z: np.ndarray  # (K, T, q)
    mask: np.ndarray  # (K, T) bool
    counts: np.ndarray  # (K,)
    moments: np.ndarray | None  # (K, T, T, p, p) sum over the unit's persons of X_i (x) X_i
    X: np.ndarray | None  # (K, T, p) per block, when moments is None
    # nested models: per grouping factor but the outermost, whether two slots share its unit
    same: tuple[np.ndarray, ...] = ()  # each (K, T, T) bool
    level_of: np.ndarray | None = None  # (q,) grouping factor of each column of Z

    def together(self, column: int, sel) -> np.ndarray:
        """(k, T, T): whether two slots share the unit of ``column``'s grouping factor."""
        if self.level_of is None or self.level_of[column] >= len(self.same):
            m = self.mask[sel]
            return m[:, :, None] & m[:, None, :]
        return self.same[self.level_of[column]][sel]


@dataclass(frozen=True, slots=True)
class KenwardRogerTerms:
    """The pieces of the adjustment at the fit's estimates (see the module docstring)."""

    names: tuple[str, ...]  # the variance parameters sigma_k
    values: np.ndarray  # their estimates
    phi: np.ndarray  # (p, p) Phi
    P: np.ndarray  # (r, p, p)
    Q: np.ndarray  # (r, r, p, p)
    R: np.ndarray  # (r, r, p, p)
    information2: np.ndarray  # (r, r) twice the expected REML information (pbkrtest's IE2)
    W: np.ndarray  # (r, r) Var(sigma-hat)
    phi_adjusted: np.ndarray  # (p, p) Phi_A
    condition: float  # smallest |eigenvalue| of information2


# ---------------------------------------------------------------------------- layout
def _standard_layout(design) -> _Layout:
    """No structure: each independent block's rows (a person's, or in a nested model the
    outermost unit's) in input order, padded; two-level blocks grouped by pattern."""
    nested = design.nested
    codes = np.asarray(design.grouping[-1].codes if nested else design.group_codes, dtype=np.int64)
    m = int(codes.max()) + 1
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    sizes = np.bincount(codes, minlength=m)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    slot = np.arange(sc.size) - starts[sc]
    T = int(sizes.max())
    p, q = design.X.shape[1], design.Z.shape[1]
    X = np.zeros((m, T, p))
    X[sc, slot] = design.X[order]
    Z = np.zeros((m, T, q))
    Z[sc, slot] = design.Z[order]
    mask = np.zeros((m, T), dtype=bool)
    mask[sc, slot] = True
    if nested:
        same = []
        for level in design.grouping[:-1]:
            u = np.full((m, T), -1, dtype=np.int64)
            u[sc, slot] = level.codes[order]
            same.append((u[:, :, None] == u[:, None, :]) & (u[:, :, None] >= 0))
        level_of = np.empty(q, dtype=np.int64)
        for i, level in enumerate(design.grouping):
            level_of[level.offset : level.offset + level.q] = i
        return _Layout(Z, mask, np.ones(m), None, X, tuple(same), level_of)
    first, inverse, counts = _pattern_codes(np.hstack([mask.astype(float), Z.reshape(m, -1)]))
    K = first.shape[0]
    if K <= MAX_PATTERNS and K < m:
        moments = pattern_moments(X, inverse, counts)  # (K, T, T, p, p)
        return _Layout(Z[first], mask[first], counts.astype(float), moments, None)
    return _Layout(Z, mask, np.ones(m), None, X)


def _structured_layout(stats) -> _Layout:
    p = stats.p
    if stats.Q is not None:
        return _Layout(stats.pZ, stats.pmask, stats.counts, stats.Q[..., :p, :p], None)
    return _Layout(stats.pZ, stats.pmask, stats.counts, None, stats.D[:, :, :p])


# ---------------------------------------------------------------- variance parameters
def _random_effect_parameters(design, covariance: np.ndarray):
    """The distinct elements of G: names, values, and the (a, c) elements of Z they sit in."""
    names, values, cells = [], [], []
    for b in design.blocks:
        for j in range(b.size):
            rows = range(j, b.size) if b.correlated else (j,)
            for i in rows:
                a, c = b.start + i, b.start + j
                if a == c:
                    names.append(f"var({b.names[i]} | {b.group_label})")
                else:
                    names.append(f"cov({b.names[i]}, {b.names[j]} | {b.group_label})")
                values.append(float(covariance[a, c]))
                cells.append((a, c))
    return names, values, cells


def _random_effect_matrices(lay: _Layout, cells, sel) -> list[np.ndarray]:
    """Sigma_k = Z (E_ac + E_ca) Z' (within the unit of the factor) for the units ``sel``."""
    Z = lay.Z[sel]
    out = []
    for a, c in cells:
        zz = (Z[:, :, a][:, :, None] * Z[:, :, c][:, None, :]) * lay.together(a, sel)
        out.append(zz if a == c else zz + np.swapaxes(zz, 1, 2))
    return out


def _random_effect_covariance(lay: _Layout, D: np.ndarray, sel) -> np.ndarray:
    """sum over factors of (Z_l D_l Z_l') within the factor's units, for the units ``sel``."""
    Z = lay.Z[sel]
    k, T, q = Z.shape
    if q == 0:
        return np.zeros((k, T, T))
    if lay.level_of is None:
        return np.einsum("kta,ab,ksb->kts", Z, D, Z)
    V = np.zeros((k, T, T))
    for level in np.unique(lay.level_of):
        cols = np.flatnonzero(lay.level_of == level)
        Zl = Z[:, :, cols]
        part = np.einsum("kta,ab,ksb->kts", Zl, D[np.ix_(cols, cols)], Zl)
        V += part * lay.together(int(cols[0]), sel)
    return V


def _linear_labels(name: str, T: int) -> np.ndarray:
    """Class of every element of sigma^2 R over the occasions (-1: structurally zero)."""
    i, j = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    if name == "us":
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        return lo * T - lo * (lo - 1) // 2 + (hi - lo)
    if name == "toep":
        return np.abs(i - j)
    if name == "cs":
        return np.where(i == j, 0, 1)
    if name == "diag":
        return np.where(i == j, i, -1)
    raise ValueError(name)


def _linear_residual(labels: np.ndarray, full: np.ndarray, lay: _Layout, names_of):
    """Residual classes of a linear structure: values, Sigma_k per unit."""
    mm = lay.mask[:, :, None] & lay.mask[:, None, :]
    names, values, G = [], [], []
    for c in range(int(labels.max()) + 1):
        sel = labels == c
        v = full[sel]
        if not np.allclose(v, v.mean(), rtol=1e-9, atol=1e-12 * np.abs(full).max()):
            raise AssertionError("the structure is not linear in its classes")
        names.append(names_of(c))
        values.append(float(v.mean()))
        G.append(np.where(mm & sel[None], 1.0, 0.0))
    return names, values, G


def _residual_matrices(dev, rho: np.ndarray) -> np.ndarray:
    """R per unit, zero where unobserved: (K, T, T), real or complex."""
    s = dev.stats
    mm = s.pmask[:, :, None] & s.pmask[:, None, :]
    return np.where(mm, dev.residual_matrices(rho)[0], 0.0)


def _dR(dev, rho: np.ndarray) -> np.ndarray:
    """d R / d rho_a per unit by the complex step: (a, K, T, T)."""
    out = []
    for a in range(rho.size):
        rc = rho.astype(complex)
        rc[a] += 1j * _H
        out.append(_residual_matrices(dev, rc).imag / _H)
    return np.stack(out)


def _d2R(dev, rho: np.ndarray) -> np.ndarray:
    """d^2 R / d rho_a d rho_b: central differences of the exact first derivative,
    Richardson-extrapolated over two steps (error O(h^4))."""
    n = rho.size
    out = np.empty((n, n) + _residual_matrices(dev, rho).shape)
    for b in range(n):
        ests = []
        for h in (1e-3 * max(1.0, abs(rho[b])), 0.5e-3 * max(1.0, abs(rho[b]))):
            up, down = rho.copy(), rho.copy()
            up[b] += h
            down[b] -= h
            ests.append((_dR(dev, up) - _dR(dev, down)) / (2 * h))
        out[:, b] = (4 * ests[1] - ests[0]) / 3
    return (out + np.swapaxes(out, 0, 1)) / 2


def _parameters(fit, linear: bool = True):
    """Layout, names, values, and ``pieces(sel)``: for the units ``sel``, the Sigma_k
    (r, k, T, T), the nonzero Sigma_kl and Sigma itself (identity where unobserved)."""
    design = fit.design
    spec = design.residual
    sigma2 = fit.sigma**2
    second: dict[tuple[int, int], np.ndarray] = {}
    if spec is None:
        lay = _standard_layout(design)
        rn, rv = ["sigma^2"], [sigma2]

        def residual(sel):
            m = lay.mask[sel]
            eye = np.where(m[:, :, None] & np.eye(m.shape[1], dtype=bool)[None], 1.0, 0.0)
            return [eye], {}, sigma2 * eye

    else:
        from pipeline.model.structured import StructuredDeviance, StructuredStats

        if not isinstance(fit.stats, StructuredStats):
            raise ModelError(
                f"Kenward-Roger: the fit of {fit.formula!r} holds no structure statistics"
            )
        structure = spec.structure
        dev = StructuredDeviance(fit.stats, design.theta_index, structure, reml=fit.reml)
        lay = _structured_layout(fit.stats)
        rho = np.asarray(fit.rho, dtype=float)
        labels_ = spec.labels
        if linear and structure.name in LINEAR_STRUCTURES:
            T = fit.stats.T
            labels = _linear_labels(structure.name, T)
            full = sigma2 * structure._matrix(rho, np.arange(T))

            def names_of(c, name=structure.name):
                i, j = np.argwhere(labels == c)[0]
                if name == "toep":
                    return f"cov(lag {c})"
                if name == "cs":
                    return "variance" if c == 0 else "covariance"
                return f"var({labels_[i]})" if i == j else f"cov({labels_[i]}, {labels_[j]})"

            rn, rv, rG = _linear_residual(labels, full, lay, names_of)
            resid = np.einsum("k,k...->...", np.asarray(rv), np.stack(rG))
        else:
            R = _residual_matrices(dev, rho)
            dR = _dR(dev, rho)
            d2R = _d2R(dev, rho)
            rn = ["sigma^2", *structure.unconstrained_names]
            rv = [sigma2, *rho.tolist()]
            rG = [R, *(sigma2 * dR)]
            resid = sigma2 * R
            n = rho.size
            for a in range(n):  # (sigma^2, rho_a) and (rho_a, rho_b)
                second[(0, 1 + a)] = second[(1 + a, 0)] = dR[a]
                for b in range(n):
                    second[(1 + a, 1 + b)] = sigma2 * d2R[a, b]

        def residual(sel):
            return [g[sel] for g in rG], {k: v[sel] for k, v in second.items()}, resid[sel]

    gn, gv, cells = _random_effect_parameters(design, fit.covariance)
    shift = len(gn)
    D = fit.covariance

    def pieces(sel):
        rG, sec, res = residual(sel)
        G = np.stack(_random_effect_matrices(lay, cells, sel) + rG)
        sec = {(a + shift, b + shift): v for (a, b), v in sec.items()}
        m = lay.mask[sel]
        mm = m[:, :, None] & m[:, None, :]
        V = np.where(mm, _random_effect_covariance(lay, D, sel) + res, np.eye(m.shape[1]))
        return G, sec, V

    return lay, tuple(gn + rn), np.array(gv + rv), pieces


# ----------------------------------------------------------------------- the terms
def _inverse(V: np.ndarray, mm: np.ndarray) -> np.ndarray:
    Vinv = np.linalg.inv(V)
    return np.where(mm, (Vinv + np.swapaxes(Vinv, 1, 2)) / 2, 0.0)


def _pattern_sums(lay: _Layout, G, second, V, p: int):
    """X'V^{-1}X, P_k, Q_kl, R_kl and tr(V^{-1}V_k V^{-1}V_l) from the patterns' moments."""
    K, T = lay.mask.shape
    mm = lay.mask[:, :, None] & lay.mask[:, None, :]
    Vinv = _inverse(V, mm)
    mom = lay.moments.reshape(K * T * T, p * p)

    def xax(A: np.ndarray) -> np.ndarray:
        lead = A.shape[:-3]
        return (A.reshape(-1, K * T * T) @ mom).reshape(*lead, p, p)

    r = G.shape[0]
    B = Vinv[None] @ G  # V^{-1} V_k: (r, K, T, T)
    P = -xax(B @ Vinv[None])
    Q = np.empty((r, r, p, p))
    for a in range(r):
        Q[a] = xax(B[a][None] @ B @ Vinv[None])
    R = np.zeros((r, r, p, p))
    for (a, b), H in second.items():
        R[a, b] = xax(Vinv @ H @ Vinv)
    ktrace = np.einsum("k,akij,bkji->ab", lay.counts, B, B)
    return xax(Vinv), P, Q, R, ktrace


def _block_sums(X: np.ndarray, G, second, V, mask: np.ndarray):
    """The same sums over blocks with their own X: with O_k = V_k V^{-1} X,
    P_k = -X'V^{-1} O_k and Q_kl = O_k' V^{-1} O_l."""
    mm = mask[:, :, None] & mask[:, None, :]
    Vinv = _inverse(V, mm)
    VX = Vinv @ X  # (k, T, p)
    GVX = G @ VX[None]  # (r, k, T, p): V_k V^{-1} X
    Y = Vinv[None] @ GVX
    xvx = np.einsum("ktp,ktq->pq", X, VX)
    P = -np.einsum("ktp,aktq->apq", VX, GVX)
    Q = np.einsum("aktp,bktq->abpq", GVX, Y)
    r, p = G.shape[0], X.shape[2]
    R = np.zeros((r, r, p, p))
    for (a, b), H in second.items():
        R[a, b] = np.einsum("ktp,kts,ksq->pq", VX, H, VX)
    B = Vinv[None] @ G
    ktrace = np.einsum("akij,bkji->ab", B, B)
    return xvx, P, Q, R, ktrace


BLOCK_ELEMENTS = 4_000_000  # per chunk of blocks: r x k x T x T doubles (32 MB)


def kenward_roger_terms(fit, *, linear: bool = True) -> KenwardRogerTerms:
    """Phi, P_k, Q_kl, R_kl, W and Phi_A at the fit's REML estimates.

    ``linear=False`` works in the structure's own parameters even for ``us``, ``diag``,
    ``cs`` and ``toep`` (as mmrm's ``"Kenward-Roger"`` does; ``True`` is SAS's choice).
    """
    with single_threaded():  # many small products: BLAS threads only cost time
        return _terms(fit, linear)


def _terms(fit, linear: bool) -> KenwardRogerTerms:
    if not fit.reml:
        raise ModelError(
            f"Kenward-Roger needs a REML fit; {fit.formula!r} was fitted by maximum likelihood "
            "(use fit.refit(reml=True))"
        )
    lay, names, values, pieces = _parameters(fit, linear)
    p = fit.beta.size
    K, T = lay.mask.shape
    if lay.moments is not None:
        G, second, V = pieces(slice(None))
        xvx, P, Q, R, ktrace = _pattern_sums(lay, G, second, V, p)
    else:  # every block its own: in chunks, so that memory stays bounded
        r = len(names)
        step = max(1, BLOCK_ELEMENTS // max(1, r * T * T))
        total = None
        for lo in range(0, K, step):
            sel = slice(lo, min(K, lo + step))
            G, second, V = pieces(sel)
            part = _block_sums(lay.X[sel], G, second, V, lay.mask[sel])
            total = (
                part if total is None else tuple(a + b for a, b in zip(total, part, strict=True))
            )
        xvx, P, Q, R, ktrace = total
    phi = np.linalg.inv(xvx)
    phi = (phi + phi.T) / 2
    P = (P + np.swapaxes(P, 1, 2)) / 2
    info2 = (
        ktrace
        - 2 * np.einsum("ij,abji->ab", phi, Q)
        + np.einsum("aij,jk,bkl,li->ab", P, phi, P, phi)
    )
    info2 = (info2 + info2.T) / 2
    eig = np.linalg.eigvalsh(info2)
    condition = float(np.min(np.abs(eig))) if eig.size else float("inf")
    if condition > 1e-10:
        W = 2 * np.linalg.inv(info2)
    else:  # MASS::ginv's tolerance, as pbkrtest
        W = 2 * np.linalg.pinv(info2, rcond=np.sqrt(_EPS), hermitian=True)
    W = (W + W.T) / 2
    U = np.einsum("ab,abij->ij", W, Q - np.einsum("aij,jk,bkl->abil", P, phi, P) - R / 4)
    U = (U + U.T) / 2
    phi_adj = phi + 2 * phi @ U @ phi
    return KenwardRogerTerms(
        names=names,
        values=values,
        phi=phi,
        P=P,
        Q=Q,
        R=R,
        information2=info2,
        W=W,
        phi_adjusted=(phi_adj + phi_adj.T) / 2,
        condition=condition,
    )


def vcov_kenward_roger(fit, *, linear: bool = True) -> np.ndarray:
    """The Kenward-Roger adjusted covariance of beta-hat, Phi_A (pbkrtest's ``vcovAdj``)."""
    return kenward_roger_terms(fit, linear=linear).phi_adjusted


# --------------------------------------------------------------------- the tests
def _contrast_matrix(fit, L) -> np.ndarray:
    L = np.asarray(L, dtype=float)
    p = fit.beta.size
    if L.ndim == 1:
        L = L[None, :]
    if L.ndim != 2 or L.shape[1] != p:
        raise ModelError(
            f"Kenward-Roger: the contrast has {L.shape[-1]} columns; the model has {p} fixed effects"
        )
    if not np.all(np.isfinite(L)):
        raise ModelError("Kenward-Roger: the contrast has a missing or infinite value")
    if np.linalg.matrix_rank(L) < L.shape[0]:
        raise ModelError(
            f"Kenward-Roger: the {L.shape[0]} rows of the contrast are linearly dependent "
            f"(rank {np.linalg.matrix_rank(L)})"
        )
    return L


def ddf_scale(terms: KenwardRogerTerms, L: np.ndarray) -> tuple[float, float, float, float]:
    """Denominator df m, scale lambda, and A_1, A_2 for the rows of L."""
    phi, P, W = terms.phi, terms.P, terms.W
    ell = L.shape[0]
    theta = L.T @ np.linalg.solve(L @ phi @ L.T, L)
    u = theta @ phi @ P @ phi  # (r, p, p): Theta Phi P_k Phi
    tr = np.trace(u, axis1=1, axis2=2)
    A1 = float(tr @ W @ tr)
    A2 = float(np.einsum("ab,aij,bji->", W, u, u))
    if A1 == 0 and A2 == 0:  # the contrast's variance does not depend on sigma: known
        return float("inf"), 1.0, A1, A2
    with np.errstate(divide="ignore", invalid="ignore"):  # as R: x / 0 is Inf or NaN
        A1_, A2_ = np.float64(A1), np.float64(A2)
        B = (A1_ + 6 * A2_) / (2 * ell)
        g = ((ell + 1) * A1_ - (ell + 4) * A2_) / ((ell + 2) * A2_)
        den = 3 * ell + 2 * (1 - g)
        c1, c2, c3 = g / den, (ell - g) / den, (ell + 2 - g) / den
        V0 = 1 + c1 * B
        V0 = np.float64(0.0) if abs(V0) < 1e-10 else V0
        V1, V2 = 1 - c2 * B, 1 - c3 * B
        num = 1 - A2_ / ell
        ratio = np.float64(1.0) if abs(num) < 1e-14 and abs(V1) < 1e-14 else num / V1
        rho = ratio**2 * V0 / V2 / ell
        m = 4 + (ell + 2) / (ell * rho - 1)
        scale = np.float64(1.0) if abs(m - 2) < 1e-2 else m * (1 - A2_ / ell) / (m - 2)
    return float(m), float(scale), A1, A2


def kenward_roger(fit, L, *, level: float = 0.95, terms: KenwardRogerTerms | None = None) -> dict:
    """Kenward-Roger test of ``L beta = 0``.

    One row (a vector, or a 1 x p matrix): lmerTest's ``ddf = "Kenward-Roger"`` t test:
    estimate, std_error (from Phi_A), df, statistic, p_value, conf_low, conf_high (and
    the unadjusted std_error and the F scale). Several rows: pbkrtest's ``KRmodcomp``:
    F (scaled), ndf, ddf, scale, p_value, F_unscaled.
    """
    L = _contrast_matrix(fit, L)
    if not 0 < level < 1:
        raise ModelError(f"Kenward-Roger: level must be between 0 and 1, not {level!r}")
    terms = kenward_roger_terms(fit) if terms is None else terms
    m, scale, A1, A2 = ddf_scale(terms, L)
    est = L @ fit.beta
    if L.shape[0] == 1:
        var = float(L[0] @ terms.phi_adjusted @ L[0])
        se = float(np.sqrt(var)) if var >= 0 else float("nan")
        dist = scipy.stats.t(m) if np.isfinite(m) or np.isnan(m) else scipy.stats.norm()
        stat = float(est[0]) / se
        crit = float(dist.ppf(0.5 + level / 2))
        return {
            "estimate": float(est[0]),
            "std_error": se,
            "df": m,
            "statistic": stat,
            "p_value": float(2 * dist.sf(abs(stat))),
            "conf_low": float(est[0]) - crit * se,
            "conf_high": float(est[0]) + crit * se,
            "std_error_unadjusted": float(np.sqrt(L[0] @ terms.phi @ L[0])),
            "scale": scale,
        }
    ell = L.shape[0]
    wald = float(est @ np.linalg.solve(L @ terms.phi_adjusted @ L.T, est))
    F0 = wald / ell
    F = scale * F0
    return {
        "F": F,
        "ndf": float(ell),
        "ddf": m,
        "scale": scale,
        "p_value": float(
            scipy.stats.f.sf(F, ell, m) if not np.isposinf(m) else scipy.stats.chi2.sf(ell * F, ell)
        ),
        "F_unscaled": F0,
        "estimate": est.tolist(),
    }
