"""Per-person sufficient statistics: one pass over the data, then nothing else.

Two stages, so that the pass over the rows can be split:

- :func:`cross_products` turns one chunk of rows into :class:`CrossProducts`
  (global ``[X|y]'[X|y]``, and per unit of the innermost grouping factor
  ``U'U`` and ``U'[X|y]``); they are additive, so chunks of persons (or
  machines) are combined with :func:`merge`, and a person split between chunks
  is summed;
- :func:`compress` groups the merged persons by time pattern (two levels);
  :func:`pipeline.model.nested.nested_stats` does the same for nested models.

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


def _pattern_codes(keys: np.ndarray, *, with_order: bool = False) -> tuple[np.ndarray, ...]:
    """Distinct rows of ``keys``: (index of each distinct row's first occurrence, inverse, counts),
    and with ``with_order`` the stable permutation that groups the rows by distinct row.

    The rows are hashed into one 64-bit integer (their bits, mixed column by column) and the
    hashes are coded by a hash table (pandas' factorize: no sort of the rows; distinct rows
    are numbered in order of first appearance); a code whose rows are not all equal (a hash
    collision) sends the whole call to the exact path, which codes each column on its own
    and combines the codes (mixed radix).
    """
    keys = np.ascontiguousarray(keys)
    m = keys.shape[0]
    if m and keys.dtype == np.float64 and keys.ndim == 2:
        import pandas  # a dependency of statsmodels; imported by the pipeline already

        bits = (keys + 0.0).view(np.uint64)  # + 0.0: -0.0 and 0.0 are one value
        h = np.zeros(m, dtype=np.uint64)
        for j in range(keys.shape[1]):
            h ^= bits[:, j]
            h *= np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(29)
        inverse = np.asarray(pandas.factorize(h)[0], dtype=np.int64)
        # codes are given in order of first appearance: the running maximum steps there
        seen = np.maximum.accumulate(inverse)
        first = np.flatnonzero(np.diff(seen, prepend=-1) > 0)
        if np.array_equal(keys, keys[first[inverse]]):
            counts = np.bincount(inverse, minlength=first.size)
            if not with_order:
                return first, inverse, counts
            small = inverse.astype(np.int16) if first.size < 2**15 else inverse
            return first, inverse, counts, np.argsort(small, kind="stable")  # radix sort
    first, inverse, counts = _pattern_codes_exact(keys)
    if with_order:
        return first, inverse, counts, np.argsort(inverse, kind="stable")
    return first, inverse, counts


def _pattern_codes_exact(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


@dataclass(frozen=True, slots=True)
class CrossProducts:
    """The additive statistics of a set of rows (a chunk, a partition, or the whole data).

    ``units`` are the keys of the innermost grouping factor's units (sorted,
    distinct); ``ancestors[i]`` their units at each outer factor (innermost
    first; no columns for a two-level model).
    """

    n: int
    omega: np.ndarray  # (p+1, p+1): [X|y]'[X|y]
    units: np.ndarray  # (m,) int64
    utu: np.ndarray  # (m, u, u)
    W: np.ndarray  # (m, u, p+1): [U'X | U'y]
    ancestors: np.ndarray  # (m, levels - 1) int64

    @property
    def p(self) -> int:
        return int(self.omega.shape[0]) - 1

    @property
    def m(self) -> int:
        return int(self.units.shape[0])


def cross_products(
    X: np.ndarray,
    U: np.ndarray,
    y: np.ndarray,
    codes: np.ndarray,
    *,
    m: int | None = None,
    ancestors: np.ndarray | None = None,
    block: np.ndarray | None = None,
    gram: np.ndarray | None = None,
    ustart: int | None = None,
) -> CrossProducts:
    """One pass over the rows (sparse group-indicator products).

    ``codes`` are the rows' unit keys; when ``m`` is given they are already
    0..m-1 (every unit present), which saves a sort. ``ancestors`` (rows x outer
    levels) are the rows' units at the outer factors. ``block`` is one C-ordered array whose
    columns are X, then y, with U's columns from ``ustart`` on (within X's, or after y), and
    ``gram`` its ``block' block``, when the caller has them
    (:meth:`pipeline.model.design.Design.joined`): then nothing is copied.
    """
    n, p = X.shape
    q = U.shape[1]
    P = p + 1
    if block is None or ustart is None:
        block = np.empty((n, P + q))
        block[:, :p] = X
        block[:, p] = y
        block[:, P:] = U
        gram, ustart = None, P
    if gram is None:
        head = block[:, :P]
        omega = head.T @ head
    else:
        omega = np.array(gram[:P, :P])
    if m is None:
        units, codes = np.unique(codes, return_inverse=True)
        codes = codes.reshape(-1)
        m = int(units.shape[0])
    else:
        units = np.arange(m, dtype=np.int64)
    sizes = np.bincount(codes, minlength=m)
    index = np.int32 if n < 2**31 - 1 else np.int64
    indptr = np.concatenate(([0], np.cumsum(sizes))).astype(index)
    ordered = n < 2 or bool(np.all(codes[1:] >= codes[:-1]))
    rows = np.arange(n, dtype=index) if ordered else np.argsort(codes, kind="stable").astype(index)
    W = np.empty((m, q, P))
    utu = np.empty((m, q, q))
    # row i of G holds U[:, a] on the rows of unit i: G @ block = U_i[:, a]' [X_i | y_i (| U_i)];
    # one sparsity pattern for every a (only the values change), built without copies
    values = np.empty(n)
    G = scipy.sparse.csr_matrix((values, rows, indptr), shape=(m, n), copy=False)
    for a in range(q):
        column = block[:, ustart + a]
        if ordered:
            np.copyto(values, column)
        else:
            np.take(column, rows, out=values)
        G.data = values
        product = G @ block
        W[:, a, :] = product[:, :P]
        utu[:, a, :] = product[:, ustart : ustart + q]
    if ancestors is None or ancestors.shape[1] == 0:
        anc = np.zeros((m, 0), dtype=np.int64)
    else:
        anc = np.empty((m, ancestors.shape[1]), dtype=np.int64)
        anc[codes] = ancestors
    return CrossProducts(n, omega, units, utu, W, anc)


def merge(a: CrossProducts, b: CrossProducts) -> CrossProducts:
    """The statistics of the rows of ``a`` and ``b`` together (a unit in both is summed)."""
    if a.W.shape[1:] != b.W.shape[1:] or a.ancestors.shape[1] != b.ancestors.shape[1]:
        raise ValueError("cross-products of different models cannot be merged")
    keys = np.concatenate([a.units, b.units])
    units, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    m = units.shape[0]
    utu = np.zeros((m, *a.utu.shape[1:]))
    W = np.zeros((m, *a.W.shape[1:]))
    np.add.at(utu, inverse, np.concatenate([a.utu, b.utu]))
    np.add.at(W, inverse, np.concatenate([a.W, b.W]))
    both = np.concatenate([a.ancestors, b.ancestors])
    anc = np.empty((m, both.shape[1]), dtype=np.int64)
    anc[inverse] = both
    if both.shape[1] and not np.array_equal(anc[inverse], both):
        raise ValueError("a unit has different outer units in the two sets of rows (not nested)")
    return CrossProducts(a.n + b.n, a.omega + b.omega, units, utu, W, anc)


def sufficient_stats(
    X: np.ndarray, Z: np.ndarray, y: np.ndarray, codes: np.ndarray, m: int
) -> SufficientStats:
    """Cross-products of the rows, compressed by time pattern (a two-level model)."""
    return compress(cross_products(X, Z, y, codes, m=m))


# persons gathered at a time for the per-pattern moments (a reused buffer of this many rows)
MOMENT_ROWS = 1 << 15


def pattern_moments(
    W: np.ndarray, inverse: np.ndarray, counts: np.ndarray, order: np.ndarray | None = None
) -> np.ndarray:
    """Per pattern k, ``S_k = sum_{i in k} W_i (x) W_i`` laid out as (K, q, q, P, P);
    ``order`` (rows grouped by pattern, as :func:`_pattern_codes` gives it) saves a sort.

    The persons are gathered in pattern order a slice at a time into one buffer, and each
    slice's rows of a pattern are added to that pattern's sum (no copy of all of W)."""
    m, q, P = W.shape
    K = counts.shape[0]
    by_pattern = np.argsort(inverse, kind="stable") if order is None else order
    bounds = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    d = q * P
    S = np.zeros((K, d, d))
    flat = W.reshape(m, d)
    buffer = np.empty((min(m, MOMENT_ROWS), d))
    with single_threaded():  # many small products: threads only add overhead
        for start in range(0, m, MOMENT_ROWS):
            stop = min(m, start + MOMENT_ROWS)
            rows = buffer[: stop - start]
            np.take(flat, by_pattern[start:stop], axis=0, out=rows)
            first = int(np.searchsorted(bounds, start, side="right")) - 1
            for k in range(first, K):
                lo, hi = max(bounds[k], start), min(bounds[k + 1], stop)
                if lo >= stop:
                    break
                if hi > lo:
                    segment = rows[lo - start : hi - start]
                    S[k] += segment.T @ segment
    return np.ascontiguousarray(S.reshape(K, q, P, q, P).transpose(0, 1, 3, 2, 4))


def compress(cp: CrossProducts) -> SufficientStats:
    """Group the persons of merged cross-products by time pattern (two-level models)."""
    W, ztz_flat, omega = cp.W, cp.utu, cp.omega
    m, q, P = W.shape
    p = P - 1
    n = cp.n
    iu = np.triu_indices(q)
    keys = ztz_flat[:, iu[0], iu[1]]
    first, inverse, counts, order = _pattern_codes(keys, with_order=True)
    K = first.shape[0]
    if K <= MAX_PATTERNS and K < m:
        ztz = ztz_flat[first]
        S = pattern_moments(W, inverse, counts, order)
        return SufficientStats(n, p, q, m, omega, W, inverse, ztz, counts.astype(float), S)
    return SufficientStats(n, p, q, m, omega, W, np.arange(m), ztz_flat, np.ones(m), None)
