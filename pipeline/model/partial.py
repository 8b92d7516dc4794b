"""Fitting from the statistics of partitions: data larger than memory, or spread over machines.

The profiled deviance needs only sums over persons (:mod:`pipeline.model.stats`), so
the rows can be split into partitions that each hold whole outermost units (whole
persons for two levels, whole schools for three), reduced where they lie, and merged:

- :func:`partition_levels` the categorical levels a partition's rows take for a
  formula, and :func:`merge_levels` their union ordered as :func:`specify` orders the
  levels of the whole data (so every partition codes X identically);
- :func:`partition_cross_products` one partition's :class:`CrossProducts`, its units
  numbered locally, with the number of units at each level;
- :func:`combine` the partitions' statistics as one set, units renumbered
  partition by partition (a unit lies in one partition only);
- :func:`fit_merged` the model from those statistics. Everything that is a sum over
  the data (estimates, deviance, standard errors, Satterthwaite df, counts) is that
  of all the data; the fit's design holds a sample of whole outermost units (or all
  of them), whose BLUPs and conditional variances are computed at the optimum from
  their own statistics. A unit's BLUPs depend only on its own rows and the global
  parameters, so they are the BLUPs the whole-data fit gives those units.

A fit refitted (ML for a likelihood-ratio test, say) is refitted on the merged
statistics too (:class:`MergedRefitter`). Models with a level-1 error structure are
not additive in this form and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.errors import ModelError
from pipeline.model.design import (
    Design,
    build_design,
    categorical_levels,
    model_matrices,
    ordered_levels,
    specify,
)
from pipeline.model.fit import (
    assemble,
    design_stats,
    deviance_function,
    optimize_multistart,
)
from pipeline.model.formula import Formula, parse_formula
from pipeline.model.nested import NestedStats, nested_stats
from pipeline.model.results import GrowthFit
from pipeline.model.stats import (
    CrossProducts,
    SufficientStats,
    compress,
    cross_products,
)
from pipeline.model.threads import single_threaded

__all__ = [
    "MergedRefitter",
    "PartitionStats",
    "PatternStats",
    "merge_patterns",
    "pattern_stats",
    "combine",
    "fit_merged",
    "merge_levels",
    "merged_stats",
    "partition_cross_products",
    "partition_levels",
]

Levels = dict[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class PartitionStats:
    """One partition's statistics for one formula: units numbered 0..m-1 within it.

    ``sizes`` are its units per grouping factor (innermost first); ``cp.ancestors``
    hold each person's units of the outer factors in the same local numbering."""

    cp: CrossProducts
    sizes: tuple[int, ...]


def _parsed(formula: str | Formula) -> Formula:
    return parse_formula(formula) if isinstance(formula, str) else formula


def partition_levels(frame: pl.DataFrame, formula: str | Formula) -> tuple[Levels, pl.Schema]:
    """The categorical levels of ``formula``'s columns on this partition's complete rows
    (a partition may hold one level of a predictor: only the merged levels are checked)."""
    return categorical_levels(frame, _parsed(formula))


def merge_levels(found: list[Levels], schema: pl.Schema) -> Levels:
    """The union of the partitions' levels, ordered as :func:`specify` orders one frame's."""
    columns = sorted({column for levels in found for column in levels})
    return {
        column: ordered_levels(
            {value for levels in found for value in levels.get(column, ())}, schema[column]
        )
        for column in columns
    }


def partition_cross_products(
    frame: pl.DataFrame, formula: str | Formula, levels: Levels
) -> PartitionStats | None:
    """One partition's cross-products for ``formula`` (None: no complete row in it)."""
    parsed = _parsed(formula)
    if parsed.residual is not None:
        raise ModelError(
            f"formula {parsed.text!r}: a level-1 error structure cannot be fitted from "
            "partitioned statistics; fit it on data that fit in memory"
        )
    spec = specify(frame, parsed, levels=levels)
    mats = model_matrices(spec, frame)
    if mats.y.shape[0] == 0:
        return None
    factors = spec.factors
    inner = factors[0]
    ancestors = np.column_stack(mats.codes[1:]) if len(factors) > 1 else None
    cp = cross_products(
        mats.X,
        mats.U,
        mats.y,
        mats.codes[0],
        m=inner.m,
        ancestors=ancestors,
        block=mats.block,
        gram=mats.gram,
        ustart=mats.ustart,
    )
    return PartitionStats(cp=cp, sizes=tuple(int(f.m) for f in factors))


def combine(parts: list[PartitionStats | None]) -> PartitionStats:
    """The partitions' statistics as one set; the units of partition k follow those of k-1.

    Every unit (of every factor) must lie in one partition only, which holds when the
    partitions are made of whole outermost units."""
    present = [part for part in parts if part is not None]
    if not present:
        raise ModelError("no partition has a complete row for this model")
    levels = len(present[0].sizes)
    offsets = np.zeros(levels, dtype=np.int64)
    units, utu, W, ancestors = [], [], [], []
    n = 0
    omega = np.zeros_like(present[0].cp.omega)
    for part in present:
        cp = part.cp
        if len(part.sizes) != levels or cp.W.shape[1:] != present[0].cp.W.shape[1:]:
            raise ValueError("statistics of different models cannot be combined")
        units.append(cp.units + offsets[0])
        utu.append(cp.utu)
        W.append(cp.W)
        ancestors.append(cp.ancestors + offsets[1:][None, :])
        omega = omega + cp.omega
        n += cp.n
        offsets = offsets + np.asarray(part.sizes, dtype=np.int64)
    merged = CrossProducts(
        n,
        omega,
        np.concatenate(units),
        np.concatenate(utu),
        np.concatenate(W),
        np.concatenate(ancestors),
    )
    return PartitionStats(cp=merged, sizes=tuple(int(s) for s in offsets))


def merged_stats(design: Design, part: PartitionStats) -> SufficientStats | NestedStats:
    """The deviance's statistics from combined partitions (the structure from ``design``)."""
    cp = part.cp
    if not design.nested:
        return compress(cp)
    grouping = design.grouping
    sizes = part.sizes
    parents = []
    for level in range(1, len(grouping) - 1):
        parent = np.zeros(sizes[level], dtype=np.int64)
        parent[cp.ancestors[:, level - 1]] = cp.ancestors[:, level]
        parents.append(parent)
    return nested_stats(
        cp,
        selects=tuple(g.select for g in grouping),
        slices=tuple((g.offset, g.q) for g in grouping),
        m=sizes,
        parents=tuple(parents),
    )


def _check_merged(design: Design, part: PartitionStats | PatternStats) -> None:
    text = design.formula.text
    if isinstance(part, PatternStats):
        n, sizes, omega = part.n, (part.m,), part.omega
    else:
        n, sizes, omega = part.cp.n, part.sizes, part.cp.omega
    for g, m in zip(design.grouping, sizes, strict=True):
        if m < 2:
            raise ModelError(f"formula {text!r}: the grouping factor {g.name!r} has only {m} level")
    if sizes[0] >= n:
        raise ModelError(
            f"formula {text!r}: the grouping factor {design.grouping[0].name!r} has as many "
            f"levels ({sizes[0]}) as observations ({n}); each person needs repeated measures"
        )
    total = sum(g.q * m for g, m in zip(design.grouping, sizes, strict=True))
    if total >= n:
        raise ModelError(
            f"formula {text!r}: number of observations ({n}) <= number of random effects "
            f"({total}); the residual variance is not identifiable: use fewer random slopes"
        )
    p = omega.shape[0] - 1
    xtx = omega[:p, :p]
    scale = np.sqrt(np.maximum(np.diag(xtx), 1e-300))
    eig = np.linalg.eigvalsh(xtx / np.outer(scale, scale))
    if eig[0] <= 1e-10 * max(eig[-1], 1e-300):
        raise ModelError(
            f"formula {text!r}: the fixed-effects design is rank deficient on the whole data "
            "(a predictor is constant or a linear combination of others)"
        )


@dataclass(frozen=True, slots=True)
class PatternStats:
    """A two-level model's statistics summed per time pattern, not kept per person.

    ``keys`` (K, t) are the distinct ``Z_i'Z_i`` (upper triangle), ``ztz`` (K, q, q)
    themselves, ``counts`` (K,) persons, ``S`` (K, q, q, P, P) the sums of
    ``W_i (x) W_i`` and ``W`` (K, q, P) the sums of ``W_i`` per pattern: all additive,
    so partitions are merged pattern by pattern (:func:`merge_patterns`) in memory that
    grows with the patterns, not with the persons. The profiled deviance needs nothing
    else (the per-pattern path of :class:`ProfiledDeviance`), and the moment start is
    computed from the same sums (:func:`pipeline.model.optimize.moment_start`)."""

    n: int
    m: int
    omega: np.ndarray
    keys: np.ndarray
    ztz: np.ndarray
    counts: np.ndarray
    S: np.ndarray
    W: np.ndarray

    @property
    def p(self) -> int:
        return int(self.omega.shape[0]) - 1


def pattern_stats(cp: CrossProducts) -> PatternStats | None:
    """One partition's two-level cross-products summed per time pattern (the engine's own
    grouping, :func:`pipeline.model.stats.compress`); None when its persons share too few
    patterns for that to pay (then the partition keeps its per-person statistics)."""
    stats = compress(cp)
    if stats.S is None:
        return None
    m, q, P = cp.W.shape
    K = stats.ztz.shape[0]
    flat = cp.W.reshape(m, q * P)
    W = np.stack(
        [np.bincount(stats.pattern_of, weights=flat[:, j], minlength=K) for j in range(q * P)],
        axis=1,
    ).reshape(K, q, P)
    iu = np.triu_indices(q)
    return PatternStats(
        n=cp.n,
        m=m,
        omega=cp.omega,
        keys=stats.ztz[:, iu[0], iu[1]],
        ztz=stats.ztz,
        counts=np.asarray(stats.counts, dtype=float),
        S=stats.S,
        W=W,
    )


def merge_patterns(parts: list[PatternStats | None]) -> PatternStats:
    """The partitions' pattern statistics as one set (a pattern in several is summed)."""
    present = [part for part in parts if part is not None]
    if not present:
        raise ModelError("no partition has a complete row for this model")
    keys = np.concatenate([part.keys for part in present])
    distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    K = distinct.shape[0]
    first = np.zeros(K, dtype=np.int64)
    first[inverse[::-1]] = np.arange(keys.shape[0])[::-1]
    ztz = np.concatenate([part.ztz for part in present])[first]
    counts = np.zeros(K)
    np.add.at(counts, inverse, np.concatenate([part.counts for part in present]))
    S = np.zeros((K, *present[0].S.shape[1:]))
    np.add.at(S, inverse, np.concatenate([part.S for part in present]))
    W = np.zeros((K, *present[0].W.shape[1:]))
    np.add.at(W, inverse, np.concatenate([part.W for part in present]))
    return PatternStats(
        n=sum(part.n for part in present),
        m=sum(part.m for part in present),
        omega=np.sum([part.omega for part in present], axis=0),
        keys=distinct,
        ztz=ztz,
        counts=counts,
        S=S,
        W=W,
    )


def sufficient_from_patterns(part: PatternStats) -> SufficientStats:
    """The deviance's statistics on their per-pattern path, with no per-person arrays:
    ``W`` holds each pattern's sum of the persons' ``W_i`` and ``pattern_of`` is
    ``0..K-1``, so the deviance, its gradient and the moment start (which use the
    patterns' sums only) see the numbers of the per-person statistics; per-person BLUPs
    come from the persons' own statistics (:func:`fit_merged`)."""
    K, q, P = part.W.shape
    return SufficientStats(
        n=part.n,
        p=P - 1,
        q=q,
        m=part.m,
        omega=part.omega,
        W=part.W,
        pattern_of=np.arange(K, dtype=np.int64),
        ztz=part.ztz,
        counts=part.counts,
        S=part.S,
    )


def sample_design(frame: pl.DataFrame, formula: str | Formula, levels: Levels) -> Design:
    """The design of a sample of whole outermost units, coded as the whole data."""
    return build_design(frame, _parsed(formula), levels=levels, check_rank=False)


def fit_merged(
    design: Design,
    stats: SufficientStats | NestedStats | PartitionStats | PatternStats,
    *,
    reml: bool = True,
) -> GrowthFit:
    """Fit ``design``'s model on merged statistics; BLUPs for ``design``'s own units.

    ``stats`` are those of all the data (:func:`combine` then :func:`merged_stats`, or a
    :class:`PartitionStats` which is compressed here). ``design`` must code its rows as
    the whole data do (:func:`sample_design`), and hold whole outermost units."""
    if design.residual is not None:
        raise ModelError(
            f"formula {design.formula.text!r}: a level-1 error structure cannot be fitted from "
            "partitioned statistics"
        )
    source = stats
    if isinstance(stats, PatternStats):
        if design.nested:
            raise ModelError(f"formula {design.formula.text!r}: pattern statistics are two-level")
        _check_merged(design, stats)
        stats = sufficient_from_patterns(stats)
    elif isinstance(stats, PartitionStats):
        _check_merged(design, stats)
        stats = merged_stats(design, stats)
    dev = deviance_function(design, stats, reml=reml)
    m = stats.m if isinstance(stats, SufficientStats) else stats.m[0]
    with single_threaded():
        theta, record = optimize_multistart(dev, design, stats)
        return assemble(
            design,
            stats,
            dev,
            theta,
            record,
            units=deviance_function(design, design_stats(design), reml=reml),
            refitter=MergedRefitter(source),
            counts=(stats.n, m),
        )


@dataclass(frozen=True, slots=True)
class MergedRefitter:
    """Refits a merged-statistics fit (REML or ML) on the same statistics (picklable)."""

    source: object

    def __call__(self, fit: GrowthFit, reml: bool) -> GrowthFit:
        return fit_merged(fit.design, self.source, reml=reml)  # type: ignore[arg-type]
