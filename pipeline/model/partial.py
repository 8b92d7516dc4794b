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
from pipeline.model.design import Design, build_design, model_matrices, specify
from pipeline.model.fit import (
    conditional_modes,
    design_stats,
    deviance_function,
    optimize_multistart,
)
from pipeline.model.formula import Formula, parse_formula
from pipeline.model.inference import satterthwaite
from pipeline.model.nested import NestedStats, nested_stats
from pipeline.model.results import GrowthFit, assemble_fit
from pipeline.model.stats import CrossProducts, SufficientStats, compress, cross_products
from pipeline.model.threads import single_threaded

__all__ = [
    "MergedRefitter",
    "PartitionStats",
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
    """The categorical levels of ``formula``'s columns on this partition's complete rows."""
    spec = specify(frame, _parsed(formula))
    return spec.levels, spec.schema


def merge_levels(found: list[Levels], schema: pl.Schema) -> Levels:
    """The union of the partitions' levels, ordered as :func:`specify` orders one frame's."""
    columns = sorted({column for levels in found for column in levels})
    merged: Levels = {}
    for column in columns:
        present = {value for levels in found for value in levels.get(column, ())}
        dtype = schema[column]
        if isinstance(dtype, pl.Enum):
            merged[column] = tuple(v for v in dtype.categories.to_list() if v in present)
        elif dtype == pl.Boolean:
            merged[column] = tuple(v for v in ("false", "true") if v in present)
        else:
            merged[column] = tuple(sorted(present))
    return merged


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
    cp = cross_products(mats.X, mats.U, mats.y, mats.codes[0], m=inner.m, ancestors=ancestors)
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


def _check_merged(design: Design, part: PartitionStats) -> None:
    text = design.formula.text
    n, sizes = part.cp.n, part.sizes
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
    p = part.cp.p
    xtx = part.cp.omega[:p, :p]
    scale = np.sqrt(np.maximum(np.diag(xtx), 1e-300))
    eig = np.linalg.eigvalsh(xtx / np.outer(scale, scale))
    if eig[0] <= 1e-10 * max(eig[-1], 1e-300):
        raise ModelError(
            f"formula {text!r}: the fixed-effects design is rank deficient on the whole data "
            "(a predictor is constant or a linear combination of others)"
        )


def sample_design(frame: pl.DataFrame, formula: str | Formula, levels: Levels) -> Design:
    """The design of a sample of whole outermost units, coded as the whole data."""
    return build_design(frame, _parsed(formula), levels=levels, check_rank=False)


def fit_merged(
    design: Design,
    stats: SufficientStats | NestedStats | PartitionStats,
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
    if isinstance(stats, PartitionStats):
        _check_merged(design, stats)
        stats = merged_stats(design, stats)
    dev = deviance_function(design, stats, reml=reml)
    with single_threaded():
        theta, record = optimize_multistart(dev, design, stats)
        sol = dev.solve(theta)
        sigma = dev.sigma(sol)
        criterion = dev.criterion(sol)
        lam = sol.lam
        own = deviance_function(design, design_stats(design), reml=reml)
        b_levels, v_levels, blups, condvar = conditional_modes(own, theta, sol.beta, sigma)
        inference = satterthwaite(dev, theta, sigma)
        tests = inference.coefficient_tests(sol.beta)
    m = stats.m if isinstance(stats, SufficientStats) else stats.m[0]
    return assemble_fit(
        design,
        engine="fast",
        reml=reml,
        theta=np.asarray(theta, dtype=float),
        beta=sol.beta,
        sigma=sigma,
        vcov=inference.vcov_beta,
        deviance=criterion,
        loglik=-criterion / 2.0,
        converged=record.converged,
        singular=record.boundary,
        optimization=record,
        tests=tests,
        covariance=sigma**2 * lam @ lam.T,
        blups=blups,
        condvar=condvar,
        level_blups=tuple(b_levels),
        level_condvar=tuple(v_levels),
        inference=inference,
        stats=stats,
        refitter=MERGED_REFITTER,
        nobs=stats.n,
        ngroups=m,
    )


class MergedRefitter:
    """Refits a merged-statistics fit (REML or ML) on the same merged statistics (picklable)."""

    def __call__(self, fit: GrowthFit, reml: bool) -> GrowthFit:
        return fit_merged(fit.design, fit.stats, reml=reml)


MERGED_REFITTER = MergedRefitter()
