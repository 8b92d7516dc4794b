"""The intraclass correlation: of the unconditional means model, and implied at each time by
the unconditional growth model.

ICC = tau00 / (tau00 + sigma^2): the share of the outcome's variance that lies between
persons (Raudenbush & Bryk 2002, eq. 4.5; Singer & Willett 2003, sec. 4.4), from the
REML fit of ``y ~ 1 + (1 | person)``. With theta = tau00^(1/2) / sigma (lme4's relative
covariance factor), ICC = theta^2 / (1 + theta^2), a monotone function of theta alone.

Interval: the REML profile-likelihood interval of theta, mapped to the ICC, so that the
point estimate and the interval come from the same (REML) likelihood. The REML
criterion of the random-intercept model, profiled over the mean and sigma, has a closed
form (person i with n_i rows, sums S_i and Q_i of y and y^2):

    A(theta)     = sum n_i / (1 + n_i theta^2),   mu(theta) = sum S_i / (1 + n_i theta^2) / A
    pwrss(theta) = sum [Q_i - 2 mu S_i + n_i mu^2 - theta^2 (S_i - n_i mu)^2 / (1 + n_i theta^2)]
    d(theta)     = sum log(1 + n_i theta^2) + log A + (N - 1) (1 + log(2 pi pwrss / (N - 1)))

(lme4's REML criterion; at the fit's theta it equals the fit's). The 95% interval holds
the theta with d(theta) - min d <= chi2(1) 0.95 quantile (3.84); the lower limit is 0
when d(0) is within that distance.

``icc_by_time``: under the unconditional growth model the between-person variance at
coded time t is z(t)' Sigma z(t) with z(t) = (1, t, t^2, ...) over the random terms,
so the share of variance between persons changes with time; one row per occasion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from scipy import optimize, stats

from pipeline.analysis.sequence import GROWTH, MEANS, time_terms
from pipeline.model.results import GrowthFit
from schemas.tables import columns

if TYPE_CHECKING:
    from pipeline.analysis.context import AnalysisContext

__all__ = [
    "IccInterval",
    "icc_by_time_table",
    "icc_profile_interval",
    "icc_table",
    "interpret_icc",
    "reml_criterion_random_intercept",
    "tables",
]

LEVEL = 0.95


def reml_criterion_random_intercept(theta: float, *, y: np.ndarray, persons: np.ndarray) -> float:
    """lme4's REML criterion of ``y ~ 1 + (1 | person)`` at relative SD ``theta`` (module docstring)."""
    return _grouped_criterion(theta, _row_sums(y, persons))


def _person_codes(persons: np.ndarray) -> np.ndarray:
    """Codes 0.. of the persons; a design's ``group_codes`` (non-negative integers) as they
    are (a code no row has is a person with no rows: it adds nothing to the sums below)."""
    persons = np.asarray(persons)
    if persons.dtype.kind in "iu" and persons.size and persons.min() >= 0:
        return persons
    return np.unique(persons, return_inverse=True)[1].ravel()


@dataclass(frozen=True, slots=True)
class _Sums:
    """The criterion's statistics over groups of persons with the same number of rows
    (a person is a group of one): rows per person ``n``, persons ``c``, the sum over the
    group's persons of S_i (``s1``) and of S_i^2 (``s2``), and the total of y^2 (``total_q``).
    Every term of d(theta) is a sum of these, so persons with equal n_i can be pooled."""

    n: np.ndarray
    c: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    total_q: float


def _grouped_criterion(theta: float, g: _Sums) -> float:
    t2 = float(theta) ** 2
    shrink = 1.0 + g.n * t2
    a = float(np.sum(g.c * g.n / shrink))
    mu = float(np.sum(g.s1 / shrink)) / a
    total = float(np.sum(g.c * g.n))
    # sum_i (S_i - n_i mu)^2 / shrink_i, expanded over the group sums
    spread = np.sum((g.s2 - 2.0 * mu * g.n * g.s1 + g.c * (g.n * mu) ** 2) / shrink)
    pwrss = float(g.total_q - 2.0 * mu * float(np.sum(g.s1)) + total * mu**2 - t2 * float(spread))
    return float(
        np.sum(g.c * np.log(shrink))
        + np.log(a)
        + (total - 1.0) * (1.0 + np.log(2.0 * np.pi * pwrss / (total - 1.0)))
    )


def _row_sums(y: np.ndarray, persons: np.ndarray) -> _Sums:
    y = np.asarray(y, dtype=float)
    codes = _person_codes(persons)
    n = np.bincount(codes).astype(float)
    s = np.bincount(codes, weights=y)
    return _Sums(n, np.ones_like(n), s, s * s, float(y @ y))


def _fit_sums(fit: GrowthFit) -> _Sums | None:
    """The sums from a fit's own statistics, when it is ``y ~ 1 + (1 | person)`` fitted on
    per-pattern or per-person cross-products: on partitioned data they are those of all
    the data (the fit's rows are a sample). None when the statistics are of another kind."""
    from pipeline.model.stats import SufficientStats

    st = fit.stats
    if not isinstance(st, SufficientStats) or st.p != 1 or st.q != 1:
        return None
    if tuple(fit.design.fixed_names) != ("(Intercept)",):
        return None
    if tuple(fit.design.random_names) != ("(Intercept)",) or fit.design.residual is not None:
        return None  # Z_i'Z_i = n_i only for a random intercept (and no level-1 structure)
    n = st.ztz[:, 0, 0]
    K = n.shape[0]
    # W_i = [Z_i'X_i | Z_i'y_i] = [n_i | S_i]: per person, or (merged data) per pattern
    s1 = np.bincount(st.pattern_of, weights=st.W[:, 0, 1], minlength=K)
    s2 = st.S[:, 0, 0, 1, 1] if st.S is not None else st.W[:, 0, 1] ** 2
    return _Sums(n, np.asarray(st.counts, dtype=float), s1, s2, float(st.omega[1, 1]))


@dataclass(frozen=True, slots=True)
class IccInterval:
    """The REML estimate of theta, its profile interval, and the ICC limits."""

    theta: float
    theta_low: float
    theta_high: float
    conf_low: float
    conf_high: float


def _icc(theta: float) -> float:
    return theta**2 / (1.0 + theta**2)


def icc_profile_interval(
    *,
    y: np.ndarray | None = None,
    persons: np.ndarray | None = None,
    theta: float | None = None,
    level: float = LEVEL,
    fit: GrowthFit | None = None,
) -> IccInterval:
    """The REML profile-likelihood interval of the ICC of ``y ~ 1 + (1 | person)``: from the
    rows (``y``, ``persons``), or from the statistics of the model's ``fit`` (all the data,
    also when the fit's rows are a sample of partitioned data)."""
    sums = _fit_sums(fit) if fit is not None else None
    if sums is None:
        if fit is not None:
            y, persons = fit.design.y, fit.design.group_codes
        if y is None or persons is None:
            raise ValueError("icc_profile_interval needs y and persons, or a fit")
        sums = _row_sums(y, persons)

    def d(t: float) -> float:
        return _grouped_criterion(t, sums)

    start = 1.0 if theta is None or not np.isfinite(theta) else max(float(theta), 1e-6)
    best = optimize.minimize_scalar(
        lambda u: d(np.exp(u)), bracket=(np.log(start) - 1.0, np.log(start) + 1.0)
    )
    theta_hat, d_min = float(np.exp(best.x)), float(best.fun)
    if d(0.0) <= d_min:
        theta_hat, d_min = 0.0, d(0.0)
    critical = float(stats.chi2.ppf(level, 1))

    def excess(t: float) -> float:
        return d(t) - d_min - critical

    low = 0.0 if excess(0.0) <= 0.0 else float(optimize.brentq(excess, 0.0, theta_hat))
    high_bracket = max(theta_hat, 1e-3) * 2.0
    while excess(high_bracket) <= 0.0 and high_bracket < 1e8:
        high_bracket *= 2.0
    high = (
        float(optimize.brentq(excess, theta_hat, high_bracket))
        if excess(high_bracket) > 0.0
        else float("inf")
    )
    return IccInterval(
        theta=theta_hat,
        theta_low=low,
        theta_high=high,
        conf_low=_icc(low),
        conf_high=1.0 if not np.isfinite(high) else _icc(high),
    )


def interpret_icc(icc: float, *, conf_low: float, conf_high: float, outcome: str) -> str:
    """A plain-language reading of the ICC, with the growth-model caveat."""
    if not np.isfinite(icc):
        return "The ICC could not be estimated."
    share = 100.0 * icc
    if icc < 0.05:
        size = "very little of the variation lies between persons"
    elif icc < 0.25:
        size = "a modest part of the variation lies between persons"
    elif icc < 0.5:
        size = "a substantial part of the variation lies between persons"
    else:
        size = "most of the variation lies between persons"
    return (
        f"Under the unconditional means model (no change over time), {share:.1f}% of the total "
        f"variance of {outcome} lies between persons (95% CI {100 * conf_low:.1f}% to "
        f"{100 * conf_high:.1f}%, REML profile likelihood): {size}. This model treats systematic "
        "change as within-person variance; when the outcome changes over time, the share of "
        "variance between persons depends on the time (see the ICC implied at each time by the "
        "growth model)."
    )


def icc_table(*, model: str, fit: GrowthFit, outcome: str) -> pl.DataFrame:
    """The ``icc`` table (one row) from the REML fit of a random-intercept model."""
    components = fit.variance_components
    between_rows = components.filter(
        (pl.col("group") != "Residual")
        & (pl.col("term1") == "(Intercept)")
        & pl.col("term2").is_null()
    )
    within_rows = components.filter(pl.col("group") == "Residual")
    if between_rows.height != 1 or within_rows.height != 1 or components.height != 2:
        raise ValueError(
            "the ICC needs a model with exactly one random intercept and a residual variance"
        )
    between = float(between_rows["variance"][0])
    within = float(within_rows["variance"][0])
    icc = between / (between + within) if between + within > 0 else float("nan")
    interval = icc_profile_interval(fit=fit, theta=float(fit.theta[0]))
    return pl.DataFrame(
        {
            "model": [model],
            "between_variance": [between],
            "within_variance": [within],
            "icc": [icc],
            "conf_low": [min(interval.conf_low, icc)],
            "conf_high": [max(interval.conf_high, icc)],
            "method": ["REML estimate; 95% REML profile-likelihood interval"],
            "interpretation": [
                interpret_icc(
                    icc, conf_low=interval.conf_low, conf_high=interval.conf_high, outcome=outcome
                )
            ],
        },
        schema=columns("icc"),
    )


def icc_by_time_table(
    *,
    model: str,
    fit: GrowthFit,
    time_terms: Sequence[str],
    occasions: Sequence[str],
    times: Sequence[float],
    coded: Sequence[float],
) -> pl.DataFrame:
    """The ``icc_by_time`` rows: z(t)' Sigma z(t) / (z(t)' Sigma z(t) + sigma^2) at each occasion.

    ``time_terms``: the polynomial terms in lme4 spelling, power 1 first; ``times`` the
    occasions' times in original units and ``coded`` the same times coded.
    """
    terms = list(fit.design.random_names)
    powers = {"(Intercept)": 0, **{term: k + 1 for k, term in enumerate(time_terms)}}
    unknown = [term for term in terms if term not in powers]
    if unknown:
        raise ValueError(f"the growth model has random terms other than time: {unknown}")
    sigma = np.asarray(fit.covariance, dtype=float)
    within = float(fit.sigma) ** 2
    rows = []
    for label, time, t in zip(occasions, times, coded, strict=True):
        z = np.array([float(t) ** powers[term] for term in terms])
        between = float(max(z @ sigma @ z, 0.0))
        rows.append(
            {
                "model": model,
                "occasion": label,
                "time": float(time),
                "between_variance": between,
                "within_variance": within,
                "icc": between / (between + within) if between + within > 0 else None,
            }
        )
    return pl.DataFrame(rows, schema=columns("icc_by_time"))


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """``icc`` (the means model) and ``icc_by_time`` (the unconditional growth model)."""
    out: dict[str, pl.DataFrame] = {}
    means = ctx.fit(MEANS)
    if means is not None and means.design.nested:
        ctx.notes.warn(
            "ICC",
            "with clusters the ICC of each level is in the variance partition of the "
            "clusters section (the two-level ICC does not apply)",
            severity="note",
        )
        return out
    if means is not None:
        out["icc"] = icc_table(model=MEANS, fit=means, outcome=ctx.spec.outcome)
    growth = ctx.fit(GROWTH)
    if growth is not None:
        occasions = ctx.occasions(growth)
        times = [occasions.mean_time[label] for label in occasions.order]
        out["icc_by_time"] = icc_by_time_table(
            model=GROWTH,
            fit=growth,
            time_terms=time_terms(ctx.spec.time_name, max(ctx.spec.polynomial, 1)),
            occasions=occasions.order,
            times=times,
            coded=[float(ctx.spec.coded_time(t)) for t in times],
        )
    return out
