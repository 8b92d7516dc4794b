"""Per-person sufficient statistics: one pass over the data, then nothing else.

For one grouping factor the profiled deviance needs only, per group i,
``Z_i'Z_i`` (q x q) and ``W_i = [Z_i'X_i | Z_i'y_i]`` (q x (p+1)), plus the global
cross-product ``Omega = [X | y]'[X | y]``. All of them are sums over rows, so
they are additive over persons (chunks, streams or machines can be summed).

Persons with the same observed time pattern share ``Z_i'Z_i``. When there are
few patterns (the usual case for a cohort study with fixed waves), the outer
products ``S_k = sum_{i in k} vec(W_i) vec(W_i)'`` are accumulated per pattern
once, and a deviance evaluation then costs O(patterns), not O(persons).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from pipeline.model.threads import single_threaded

# use the per-pattern path when there are at most this many distinct patterns
MAX_PATTERNS = 4096


@dataclass(frozen=True, slots=True)
class SufficientStats:
    n: int  # observations
    p: int  # fixed-effects columns
    q: int  # random-effects columns per group
    m: int  # groups
    omega: np.ndarray  # (p+1, p+1): [X|y]'[X|y]
    W: np.ndarray  # (m, q, p+1): per group [Z'X | Z'y]
    pattern_of: np.ndarray  # (m,) index of each group's Z'Z pattern
    ztz: np.ndarray  # (K, q, q) distinct Z_i'Z_i
    counts: np.ndarray  # (K,) groups per pattern
    S: (
        np.ndarray | None
    )  # (K, q, p+1, q, p+1) per-pattern sums of W_i (x) W_i, or None (per-person path)

    @property
    def patterns(self) -> int:
        return int(self.counts.shape[0])


def _pattern_codes(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows of ``keys``: (index of each distinct row's first occurrence, inverse, counts).

    Each column is coded on its own, then the codes are combined into one
    integer (mixed radix), which is much faster than a row-wise sort.
    """
    m, c = keys.shape
    combined = np.zeros(m, dtype=np.int64)
    radix = 1
    for j in range(c):
        _, col_codes = np.unique(keys[:, j], return_inverse=True)
        size = int(col_codes.max()) + 1 if m else 1
        if radix * size >= 2**62:
            _, first, inverse, counts = np.unique(
                keys, axis=0, return_index=True, return_inverse=True, return_counts=True
            )
            return first, inverse.reshape(-1), counts
        combined += col_codes.reshape(-1).astype(np.int64) * radix
        radix *= size
    _, first, inverse, counts = np.unique(
        combined, return_index=True, return_inverse=True, return_counts=True
    )
    return first, inverse.reshape(-1), counts


def sufficient_stats(
    X: np.ndarray, Z: np.ndarray, y: np.ndarray, codes: np.ndarray, m: int
) -> SufficientStats:
    """Compute the statistics in one pass over the rows (sparse group-indicator products)."""
    n, p = X.shape
    q = Z.shape[1]
    P = p + 1
    omega = np.empty((P, P))
    omega[:p, :p] = X.T @ X
    omega[:p, p] = omega[p, :p] = X.T @ y
    omega[p, p] = y @ y

    sizes = np.bincount(codes, minlength=m)
    indptr = np.concatenate(([0], np.cumsum(sizes)))
    ordered = n < 2 or bool(np.all(codes[1:] >= codes[:-1]))
    rows = np.arange(n) if ordered else np.argsort(codes, kind="stable")
    W = np.empty((m, q, P))
    ztz_flat = np.empty((m, q, q))
    # sparse x dense products run row by row: give them row-major operands (one copy each)
    X = np.ascontiguousarray(X)
    Z = np.ascontiguousarray(Z)
    for a in range(q):
        # row i of G_a holds Z[:, a] on the rows of group i: G_a @ [X | y] = Z_i[:, a]' [X_i | y_i]
        za = np.ascontiguousarray(Z[:, a]) if ordered else Z[rows, a]
        G = scipy.sparse.csr_matrix((za, rows, indptr), shape=(m, n))
        W[:, a, :p] = G @ X
        W[:, a, p] = G @ y
        ztz_flat[:, a, :] = G @ Z

    iu = np.triu_indices(q)
    keys = ztz_flat[:, iu[0], iu[1]]
    first, inverse, counts = _pattern_codes(keys)
    K = first.shape[0]
    if K <= MAX_PATTERNS and K < m:
        ztz = ztz_flat[first]
        by_pattern = np.argsort(inverse, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(counts)))
        d = q * (p + 1)
        S = np.empty((K, d, d))
        Ws = W[by_pattern].reshape(-1, d)
        with single_threaded():  # many small products: threads only add overhead
            for k in range(K):
                Wk = Ws[bounds[k] : bounds[k + 1]]
                S[k] = Wk.T @ Wk
        S = np.ascontiguousarray(S.reshape(K, q, p + 1, q, p + 1).transpose(0, 1, 3, 2, 4))
        return SufficientStats(n, p, q, m, omega, W, inverse, ztz, counts.astype(float), S)
    return SufficientStats(n, p, q, m, omega, W, np.arange(m), ztz_flat, np.ones(m), None)
