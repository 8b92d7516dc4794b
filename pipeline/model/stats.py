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

# use the per-pattern path when there are at most this many distinct patterns
MAX_PATTERNS = 4096
CHUNK_ROWS = 1 << 20


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


def _segment_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(values, starts, axis=0)


def sufficient_stats(
    X: np.ndarray, Z: np.ndarray, y: np.ndarray, codes: np.ndarray, m: int
) -> SufficientStats:
    """Compute the statistics in one pass (chunked, so memory stays bounded)."""
    n, p = X.shape
    q = Z.shape[1]
    XY = np.empty((n, p + 1))
    XY[:, :p] = X
    XY[:, p] = y
    omega = XY.T @ XY

    if n > 1 and np.any(codes[1:] < codes[:-1]):
        order = np.argsort(codes, kind="stable")
    else:
        order = None

    W = np.zeros((m, q, p + 1))
    ztz_flat = np.zeros((m, q, q))
    start = 0
    while start < n:
        stop = min(n, start + CHUNK_ROWS)
        idx = slice(start, stop) if order is None else order[start:stop]
        c = codes[idx]  # sorted; a group split across chunks simply adds up
        z = Z[idx]
        xy = XY[idx]
        boundaries = np.flatnonzero(np.diff(c)) + 1
        seg_starts = np.concatenate(([0], boundaries))
        groups = c[seg_starts]
        prod = (z[:, :, None] * xy[:, None, :]).reshape(len(c), q * (p + 1))
        W[groups] += _segment_sums(prod, seg_starts).reshape(-1, q, p + 1)
        zz = (z[:, :, None] * z[:, None, :]).reshape(len(c), q * q)
        ztz_flat[groups] += _segment_sums(zz, seg_starts).reshape(-1, q, q)
        start = stop

    iu = np.triu_indices(q)
    keys = ztz_flat[:, iu[0], iu[1]]
    uniq, first, inverse, counts = np.unique(
        keys, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.reshape(-1)
    K = uniq.shape[0]
    if K <= MAX_PATTERNS and K < m:
        ztz = ztz_flat[first]
        by_pattern = np.argsort(inverse, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(counts)))
        d = q * (p + 1)
        S = np.empty((K, d, d))
        for k in range(K):
            Wk = W[by_pattern[bounds[k] : bounds[k + 1]]].reshape(-1, d)
            S[k] = Wk.T @ Wk
        S = np.ascontiguousarray(S.reshape(K, q, p + 1, q, p + 1).transpose(0, 1, 3, 2, 4))
        return SufficientStats(n, p, q, m, omega, W, inverse, ztz, counts.astype(float), S)
    return SufficientStats(n, p, q, m, omega, W, np.arange(m), ztz_flat, np.ones(m), None)
