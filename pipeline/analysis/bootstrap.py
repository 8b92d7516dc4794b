"""Parametric bootstrap of derived quantities (ICC, pseudo-R^2, anything computed from a fit).

Each replicate simulates a new outcome from the fitted model,

    y* = X beta_hat + Z b* + e*,   b*_i ~ N(0, Sigma_hat) per person,   e* ~ N(0, sigma_hat^2 I),

refits the model (and any further models named in ``also_fit``, on the same
y*), and evaluates every statistic. The interval is the percentile interval
of the replicates whose refits succeeded (Efron & Tibshirani 1993, ch. 13);
a statistic that is NaN in a replicate is left out of its interval and
counted.

Reproducible byte for byte, whatever the number of workers: replicate ``r``
draws from its own generator, ``numpy.random.SeedSequence(seed).spawn(R)[r]``,
and every refit runs with one BLAS thread; the values are put back in
replicate order. ``workers > 1`` runs chunks of replicates in separate
processes (``concurrent.futures.ProcessPoolExecutor``, spawn start); the
statistics must then be picklable (module-level functions or the classes
below, not lambdas).

A statistic is a callable ``f(fits) -> float`` where ``fits`` maps ``"model"``
to the refit of the bootstrapped model and each name of ``also_fit`` to the
refit of that formula.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from pipeline.errors import ModelError
from pipeline.model.fit import fit_design, fit_growth
from pipeline.model.results import GrowthFit
from pipeline.model.threads import single_threaded
from schemas.tables import columns

__all__ = [
    "COLUMNS",
    "DRAW_COLUMNS",
    "ICC",
    "MAX_REPLICATES",
    "PseudoR2",
    "bootstrap_draws",
    "parametric_bootstrap",
    "simulate_outcome",
]

MAX_REPLICATES = 100_000

Statistic = Callable[[Mapping[str, GrowthFit]], float]

COLUMNS: dict[str, pl.DataType] = {
    k: v for k, v in columns("bootstrap").items() if k != "model"
}  # schemas/tables.py

DRAW_COLUMNS: dict[str, pl.DataType] = {
    "replicate": pl.Int64(),
    "statistic": pl.String(),
    "value": pl.Float64(),
    "failed": pl.Boolean(),
    "converged": pl.Boolean(),
    "singular": pl.Boolean(),
}


@dataclass(frozen=True, slots=True)
class ICC:
    """Intraclass correlation tau00 / (tau00 + sigma^2) of a model with a random intercept."""

    model: str = "model"

    def __call__(self, fits: Mapping[str, GrowthFit]) -> float:
        fit = fits[self.model]
        tau00 = _variance(fit, "(Intercept)")
        return tau00 / (tau00 + fit.sigma**2)


@dataclass(frozen=True, slots=True)
class PseudoR2:
    """Proportional reduction of one variance component from ``reference`` to ``model``.

    ``term`` is a random term (e.g. ``"(Intercept)"``, ``"age1"``), or None for the
    residual variance. Only meaningful between models with the same random part.
    """

    reference: str
    term: str | None
    model: str = "model"

    def __call__(self, fits: Mapping[str, GrowthFit]) -> float:
        ref = _variance(fits[self.reference], self.term)
        new = _variance(fits[self.model], self.term)
        return (ref - new) / ref if ref > 0 else math.nan


def _variance(fit: GrowthFit, term: str | None) -> float:
    if term is None:
        return fit.sigma**2
    names = fit.design.random_names
    if term not in names:
        raise ModelError(
            f"{fit.formula!r} has no random term {term!r} (random terms: {', '.join(names)})"
        )
    i = names.index(term)
    return float(fit.covariance[i, i])


def simulate_outcome(fit: GrowthFit, rng: np.random.Generator) -> np.ndarray:
    """One draw of y from the fitted model (the random effects from their fitted, possibly singular, covariance)."""
    d = fit.design
    w, v = np.linalg.eigh((fit.covariance + fit.covariance.T) / 2)
    root = v * np.sqrt(np.maximum(w, 0.0))
    b = rng.standard_normal((d.ngroups, root.shape[0])) @ root.T
    e = rng.standard_normal(d.nobs) * fit.sigma
    return d.X @ fit.beta + np.einsum("ij,ij->i", d.Z, b[d.group_codes]) + e


@dataclass(frozen=True, slots=True)
class _Job:
    fit: GrowthFit
    also_fit: tuple[tuple[str, str], ...]
    statistics: tuple[tuple[str, Statistic], ...]


def _one(job: _Job, seed: np.random.SeedSequence) -> tuple[list[float], bool, bool, bool]:
    """(values, failed, converged, singular) of one replicate.

    A refit that raises a model error counts as failed (its values are NaN);
    an error inside a statistic is the statistic's bug and is raised.
    """
    fit = job.fit
    rng = np.random.default_rng(seed)
    try:
        with single_threaded():
            y = simulate_outcome(fit, rng)
            refit = fit_design(replace(fit.design, y=y), reml=fit.reml, engine=fit.engine)
            fits: dict[str, GrowthFit] = {"model": refit}
            if job.also_fit:
                frame = fit.frame.with_columns(pl.Series(fit.response, y))
                for name, formula in job.also_fit:
                    fits[name] = _fit_other(frame, name, formula, fit)
    except (ModelError, np.linalg.LinAlgError, FloatingPointError):
        return [math.nan] * len(job.statistics), True, False, False
    values = [float(f(fits)) for _, f in job.statistics]
    return values, False, bool(refit.converged), bool(refit.singular)


def _fit_other(frame: pl.DataFrame, name: str, formula: str, fit: GrowthFit) -> GrowthFit:
    other = fit_growth(frame, formula, reml=fit.reml)
    if other.nobs != fit.nobs:
        raise ModelError(
            f"bootstrap: also_fit {name!r} ({formula!r}) uses {other.nobs} rows, the model {fit.nobs}; "
            "they must be fitted to the same rows"
        )
    return other


def _chunk(
    job: _Job, seeds: list[np.random.SeedSequence]
) -> list[tuple[list[float], bool, bool, bool]]:
    return [_one(job, s) for s in seeds]


def bootstrap_draws(
    fit: GrowthFit,
    statistics: Mapping[str, Statistic],
    *,
    replicates: int = 1000,
    seed: int = 0,
    workers: int = 1,
    also_fit: Mapping[str, str] | None = None,
    max_replicates: int = MAX_REPLICATES,
) -> pl.DataFrame:
    """Every replicate's value of every statistic (long format; columns :data:`DRAW_COLUMNS`)."""
    if not statistics:
        raise ModelError("bootstrap: give at least one statistic")
    if not 1 <= replicates <= max_replicates:
        raise ModelError(
            f"bootstrap: replicates must be between 1 and {max_replicates}, not {replicates}"
        )
    if workers < 1:
        raise ModelError(f"bootstrap: workers must be at least 1, not {workers}")
    if seed < 0:
        raise ModelError(f"bootstrap: seed must be a non-negative integer, not {seed}")
    if also_fit and fit.response not in fit.frame.columns:
        raise ModelError(
            f"bootstrap: also_fit needs the outcome {fit.response!r} to be a plain column of the data"
        )
    job = _Job(fit, tuple((also_fit or {}).items()), tuple(statistics.items()))
    seeds = np.random.SeedSequence(seed).spawn(replicates)
    if workers == 1:
        results = _chunk(job, seeds)
    else:
        size = max(1, math.ceil(replicates / (4 * workers)))
        chunks = [seeds[i : i + size] for i in range(0, replicates, size)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            parts = pool.map(_chunk, [job] * len(chunks), chunks)
            results = [r for part in parts for r in part]
    names = list(statistics)
    rows: dict[str, list] = {c: [] for c in DRAW_COLUMNS}
    for r, (values, failed, converged, singular) in enumerate(results):
        for name, value in zip(names, values, strict=True):
            rows["replicate"].append(r)
            rows["statistic"].append(name)
            rows["value"].append(value)
            rows["failed"].append(failed)
            rows["converged"].append(converged)
            rows["singular"].append(singular)
    return pl.DataFrame(rows, schema=DRAW_COLUMNS)


def parametric_bootstrap(
    fit: GrowthFit,
    statistics: Mapping[str, Statistic],
    *,
    replicates: int = 1000,
    seed: int = 0,
    workers: int = 1,
    level: float = 0.95,
    also_fit: Mapping[str, str] | None = None,
    max_replicates: int = MAX_REPLICATES,
) -> pl.DataFrame:
    """Percentile intervals of each statistic from a parametric bootstrap (columns :data:`COLUMNS`).

    ``also_fit`` names further formulas fitted to the original data and to each
    simulated outcome (e.g. the reference model of a pseudo-R^2).
    """
    if not 0 < level < 1:
        raise ModelError(f"bootstrap: level must be between 0 and 1, not {level}")
    draws = bootstrap_draws(
        fit,
        statistics,
        replicates=replicates,
        seed=seed,
        workers=workers,
        also_fit=also_fit,
        max_replicates=max_replicates,
    )
    original: dict[str, GrowthFit] = {"model": fit}
    for name, formula in (also_fit or {}).items():
        original[name] = _fit_other(fit.frame, name, formula, fit)
    per_rep = draws.filter(pl.col("statistic") == next(iter(statistics)))
    failed = int(per_rep["failed"].sum())
    not_converged = int((~per_rep["converged"] & ~per_rep["failed"]).sum())
    singular = int(per_rep["singular"].sum())
    alpha = (1 - level) / 2
    rows: dict[str, list] = {c: [] for c in COLUMNS}
    for name, f in statistics.items():
        values = draws.filter(pl.col("statistic") == name)["value"].to_numpy()
        values = values[np.isfinite(values)]
        rows["statistic"].append(name)
        rows["estimate"].append(float(f(original)))
        if values.size:
            lo, hi = np.quantile(values, [alpha, 1 - alpha])
            rows["boot_mean"].append(float(values.mean()))
            rows["boot_std_error"].append(
                float(values.std(ddof=1)) if values.size > 1 else math.nan
            )
            rows["conf_low"].append(float(lo))
            rows["conf_high"].append(float(hi))
        else:
            for c in ("boot_mean", "boot_std_error", "conf_low", "conf_high"):
                rows[c].append(math.nan)
        rows["level"].append(level)
        rows["replicates"].append(replicates)
        rows["used"].append(int(values.size))
        rows["failed"].append(failed)
        rows["not_converged"].append(not_converged)
        rows["singular"].append(singular)
        rows["seed"].append(seed)
        rows["method"].append("parametric bootstrap, percentile interval")
    return pl.DataFrame(rows, schema=COLUMNS)
