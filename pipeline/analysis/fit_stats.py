"""Fit statistics an applied researcher asks for (Singer & Willett 2003; Raudenbush & Bryk 2002).

- ``r2_y_yhat``: Singer & Willett's (2003, sec. 4.4.3) R^2 of y and y-hat, the
  squared correlation between the observed outcome and the fixed-part
  prediction X beta.
- ``between_person_variance_test``: the test of tau00 = 0 in the
  unconditional means model ``y ~ 1 + (1 | person)``: the likelihood-ratio
  statistic of the ML fit against OLS (``y ~ 1``), referred to the 50:50
  mixture of chi^2_0 and chi^2_1 (Self & Liang 1987; Stram & Lee 1994), i.e.
  p = P(chi^2_1 > LR) / 2, because the variance is on the edge of its space under H0.
- ``person_influence``: leave one person out and refit. Cook's distance for
  the fixed effects, ``D_i = (beta - beta_(i))' V^{-1} (beta - beta_(i)) / p``
  with V the full fit's covariance of beta (Christensen, Pearson & Johnson 1992;
  the ``influence.ME`` definition; lme4's ``cooks.distance`` multiplies this by
  ``(m - p) / m``, m persons), and the change in every variance component.
  Beyond ``max_persons`` a deterministic sample of persons is used (seeded).
- ``within_between``: a time-varying covariate split by person-mean centring
  into its person mean (a level-2 predictor: the between-person effect) and the
  deviation from it (level 1: the within-person effect), beside the single
  pooled effect of the uncentred covariate, and their difference (the
  contextual effect, between - within).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl
import scipy.stats

from pipeline.analysis.designs import IdCoding, fit_formula
from pipeline.errors import ModelError
from pipeline.model.fit import fit_design
from pipeline.model.results import GrowthFit
from schemas.tables import columns

__all__ = [
    "INFLUENCE_COLUMNS",
    "R2_COLUMNS",
    "VARIANCE_TEST_COLUMNS",
    "WITHIN_BETWEEN_COLUMNS",
    "between_person_variance_test",
    "person_influence",
    "r2_y_yhat",
    "within_between",
]

R2_COLUMNS: dict[str, pl.DataType] = {
    k: v for k, v in columns("r2_y_yhat").items() if k != "model"
}  # schemas/tables.py

VARIANCE_TEST_COLUMNS: dict[str, pl.DataType] = columns(
    "between_person_variance"
)  # schemas/tables.py

INFLUENCE_COLUMNS: dict[str, pl.DataType] = columns("influence")  # schemas/tables.py

WITHIN_BETWEEN_COLUMNS: dict[str, pl.DataType] = columns("within_between")  # schemas/tables.py


def r2_y_yhat(fit: GrowthFit) -> pl.DataFrame:
    """Singer & Willett's R^2_{y,yhat}: squared correlation of y and the fixed-part prediction."""
    yhat = fit.fitted("marginal")
    if np.ptp(yhat) == 0:
        r2 = 0.0  # an intercept-only model predicts a constant
    else:
        r2 = float(np.corrcoef(fit.design.y, yhat)[0, 1] ** 2)
    return pl.DataFrame(
        {"formula": [fit.formula], "r2_y_yhat": [r2], "nobs": [fit.nobs]}, schema=R2_COLUMNS
    )


def between_person_variance_test(
    data: pl.DataFrame, *, outcome: str, person: str, coding: IdCoding | None = None
) -> pl.DataFrame:
    """LRT of tau00 = 0 in ``outcome ~ 1 + (1 | person)`` (ML) with the 50:50 boundary mixture
    (``coding``: the analysis' id coding, :mod:`pipeline.analysis.designs`)."""
    for c in (outcome, person):
        if c not in data.columns:
            raise ModelError(f"column {c!r} does not exist (columns: {', '.join(data.columns)})")
    fit = fit_formula(data, f"{_q(outcome)} ~ 1 + (1 | {_q(person)})", reml=False, coding=coding)
    y = fit.design.y
    n = y.size
    rss = float(np.sum((y - y.mean()) ** 2))
    loglik_ols = -0.5 * n * (math.log(2 * math.pi * rss / n) + 1.0)
    chisq = max(0.0, 2.0 * (fit.loglik - loglik_ols))
    p = 0.5 * float(scipy.stats.chi2.sf(chisq, 1)) if chisq > 0 else 1.0
    return pl.DataFrame(
        {
            "outcome": [outcome],
            "tau00": [float(fit.covariance[0, 0])],
            "sigma2": [fit.sigma**2],
            "loglik_mixed": [fit.loglik],
            "loglik_ols": [loglik_ols],
            "chisq": [chisq],
            "df": ["0:1 mixture"],
            "p_value": [p],
        },
        schema=VARIANCE_TEST_COLUMNS,
    )


def _q(name: str) -> str:
    return name if name.isidentifier() else f"`{name}`"


def _components(fit: GrowthFit) -> list[tuple[str, str | None, str | None, float]]:
    return [
        (r["group"], r["term1"], r["term2"], r["variance"])
        for r in fit.variance_components.iter_rows(named=True)
    ]


def person_influence(fit: GrowthFit, *, max_persons: int = 500, seed: int = 0) -> pl.DataFrame:
    """Leave-one-person-out refits (columns :data:`INFLUENCE_COLUMNS`, one row per person and component).

    With more than ``max_persons`` persons, a sample of ``max_persons`` drawn
    with ``numpy.random.default_rng(seed)`` (the same persons every run).
    """
    if max_persons < 1:
        raise ModelError(f"person_influence: max_persons must be at least 1, not {max_persons}")
    d = fit.design
    if d.nested or d.residual is not None:
        raise ModelError(
            "person_influence: leave-one-person-out refits are for two-level models without a "
            f"level-1 error structure, not {fit.formula!r}"
        )
    m = d.ngroups
    chosen = np.arange(m)
    if m > max_persons:
        chosen = np.sort(np.random.default_rng(seed).choice(m, size=max_persons, replace=False))
    vinv = np.linalg.inv(fit.vcov)
    p = fit.beta.size
    full = _components(fit)
    counts = np.bincount(d.group_codes, minlength=m)
    rows: dict[str, list] = {c: [] for c in INFLUENCE_COLUMNS}
    levels = d.group_levels.cast(pl.String).to_list()
    for g in chosen:
        keep = d.group_codes != g
        codes = d.group_codes[keep]
        codes = codes - (codes > g)
        others = pl.Series(np.arange(m) != g)
        reduced = replace(
            d,
            frame=d.frame.filter(pl.Series(keep)),
            y=d.y[keep],
            X=d.X[keep],
            Z=d.Z[keep],
            group_codes=codes,
            group_levels=d.group_levels.filter(others),
            U=None if d.U is None else d.U[keep],
            grouping=tuple(
                replace(level, codes=codes, units=level.units.filter(others))
                for level in d.grouping
            ),
        )
        try:
            refit = fit_design(reduced, reml=fit.reml, engine=fit.engine)
        except (ModelError, np.linalg.LinAlgError):
            refit = None
        if refit is not None:
            db = fit.beta - refit.beta
            cook = float(db @ vinv @ db / p)
            without = [v for *_, v in _components(refit)]
            converged = bool(refit.converged)
        else:
            cook, without, converged = math.nan, [math.nan] * len(full), False
        for (group, t1, t2, v), w in zip(full, without, strict=True):
            rows["person"].append(levels[g])
            rows["n_obs"].append(int(counts[g]))
            rows["cooks_distance"].append(cook)
            rows["group"].append(group)
            rows["term1"].append(t1)
            rows["term2"].append(t2)
            rows["variance"].append(v)
            rows["variance_without"].append(w)
            rows["change"].append(w - v)
            rows["converged"].append(converged)
    return pl.DataFrame(rows, schema=INFLUENCE_COLUMNS)


def within_between(fit: GrowthFit, covariate: str) -> pl.DataFrame:
    """Within- and between-person effects of a time-varying covariate beside its pooled effect.

    ``fit`` is the model with the uncentred ``covariate`` as a main effect (not in
    an interaction). The decomposed model replaces that column by the person
    mean (``{covariate}_between``) and the deviation from it
    (``{covariate}_within``), with everything else (other fixed effects, the
    random part, REML or ML) unchanged. Columns :data:`WITHIN_BETWEEN_COLUMNS`.
    """
    d = fit.design
    if covariate not in d.fixed_names:
        raise ModelError(
            f"{fit.formula!r} has no fixed effect {covariate!r} (fixed effects: {', '.join(d.fixed_names)})"
        )
    inter = [n for n in d.fixed_names if covariate in n.split(":") and n != covariate]
    if inter:
        raise ModelError(
            f"{fit.formula!r}: {covariate!r} is also in the interaction {inter[0]!r}; "
            "split it by hand (the decomposition here is for a main effect)"
        )
    j = d.fixed_names.index(covariate)
    x = d.X[:, j]
    counts = np.bincount(d.group_codes)
    means = np.bincount(d.group_codes, weights=x) / counts
    between = means[d.group_codes]
    within = x - between
    if np.allclose(within, 0.0, atol=1e-12 * max(1.0, float(np.max(np.abs(x))))):
        raise ModelError(
            f"{covariate!r} does not vary within persons: it has no within-person effect"
        )
    X = np.column_stack([d.X[:, :j], between, within, d.X[:, j + 1 :]])
    names = (
        *d.fixed_names[:j],
        f"{covariate}_between",
        f"{covariate}_within",
        *d.fixed_names[j + 1 :],
    )
    split = fit_design(replace(d, X=X, fixed_names=names), reml=fit.reml, engine=fit.engine)
    rows: dict[str, list] = {c: [] for c in WITHIN_BETWEEN_COLUMNS}

    def add(effect: str, term: str, result: dict[str, float]) -> None:
        rows["effect"].append(effect)
        rows["term"].append(term)
        for c in ("estimate", "std_error", "df", "statistic", "p_value", "conf_low", "conf_high"):
            rows[c].append(float(result[c]))

    for effect, k in (("within", j + 1), ("between", j)):
        L = np.zeros(len(names))
        L[k] = 1.0
        add(effect, names[k], split.contrast(L))
    L = np.zeros(len(names))
    L[j], L[j + 1] = 1.0, -1.0
    add("contextual (between - within)", f"{names[j]} - {names[j + 1]}", split.contrast(L))
    L = np.zeros(len(d.fixed_names))
    L[j] = 1.0
    add("pooled", covariate, fit.contrast(L))
    return pl.DataFrame(rows, schema=WITHIN_BETWEEN_COLUMNS)
