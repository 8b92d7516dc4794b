"""Model comparison: information criteria and likelihood-ratio tests between nested models.

One implementation serves the public ``compare(fit_a, fit_b)`` and the report's tables.
All likelihoods come from maximum-likelihood fits (REML fits are refitted by ML first,
as lme4's ``anova()`` does): REML likelihoods of models with different fixed effects
are not comparable.

Nesting is decided from both parts of the model (:func:`nesting`). A model A is
nested in B when they are fitted to the same observations (same outcome values, same
persons) and

- the fixed-effects design of A lies in the column space of B's (so ``age1 * trt`` and
  ``age1 + trt + age1:trt`` are the same, and a reparametrised time is recognised);
- every random-effect variance of A is a variance of B, and every random-effect
  covariance of A is a covariance of B. ``(age1 || id)`` is nested in ``(age1 | id)``
  (the covariance is 0), a random-intercept model is nested in the random-slope model
  (the slope variance and its covariance are 0), but ``(age1 | id)`` is not nested in
  ``(age1 || id)`` or in a model with more fixed effects and ``||``.

The reference distribution of the likelihood ratio depends on what the restriction sets
to zero (Self & Liang 1987; Stram & Lee 1994; Verbeke & Molenberghs 2000, sec. 6.3):

- fixed effects and covariances only (inner points of the parameter space): chi2(df);
- one variance (a random effect dropped, with its covariances): the 50:50 mixture of
  chi2(df - 1) and chi2(df) (chi2(0) is the point mass at zero);
- k > 1 variances of uncorrelated random effects and no covariance: the chi-bar-square
  mixture with binomial weights C(k, j) / 2^k on chi2(df - k + j), j = 0..k;
- k > 1 variances with covariances: the weights depend on the information matrix; the
  test uses chi2(df), which is conservative (p too large), and says so.

The table of tests (:func:`likelihood_ratio_tests`) holds every nested pair with no
fitted model in between (the covering pairs of the nesting order), so a model is
tested against each model it directly extends, whatever the order of the sequence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from scipy import stats

from pipeline.analysis.designs import distinct_rows
from pipeline.errors import ModelError
from pipeline.model.results import GrowthFit
from schemas.tables import columns

if TYPE_CHECKING:  # the public compare() must not import the analysis pipeline
    from pipeline.analysis.context import AnalysisContext

__all__ = [
    "Compared",
    "Nesting",
    "chi_bar_square_p_value",
    "compare",
    "comparison_table",
    "holm",
    "likelihood_ratio_tests",
    "mixture_p_value",
    "nesting",
    "npar",
    "same_random_part",
    "tables",
]

COLUMN_SPACE_TOLERANCE = 1e-8


@dataclass(frozen=True, slots=True)
class Compared:
    """A model in the comparison: its name and its maximum-likelihood fit."""

    name: str
    fit: GrowthFit


def npar(fit: GrowthFit) -> int:
    """Parameters as lme4's ``logLik`` counts them: fixed effects, theta, sigma."""
    return int(fit.npar)


def mixture_p_value(chisq: float, df: int) -> float:
    """p-value of a 50:50 mixture of chi2(df - 1) and chi2(df); chi2(0) is the point mass at 0."""
    if df < 1:
        raise ValueError(f"the mixture needs df >= 1, got {df}")
    return chi_bar_square_p_value(chisq, df=df, variances=1)


def chi_bar_square_p_value(chisq: float, *, df: int, variances: int) -> float:
    """p-value of sum_j C(k, j) / 2^k chi2(df - k + j), j = 0..k (k = ``variances``)."""
    k = variances
    if k < 0 or df < k:
        raise ValueError(f"need 0 <= variances <= df, got variances={k}, df={df}")
    if chisq <= 0.0:
        return 1.0
    total = 0.0
    for j in range(k + 1):
        dof = df - k + j
        tail = float(stats.chi2.sf(chisq, dof)) if dof > 0 else 0.0
        total += math.comb(k, j) / 2.0**k * tail
    return total


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in the input order (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return adjusted
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


# ---------------------------------------------------------------------------- nesting

_SPLIT_SUFFIX = re.compile(r"\.\d+$")


def _random_part(fit: GrowthFit) -> tuple[frozenset, frozenset]:
    """(variances, covariances) of the random part: (group, term) and (group, {term, term})."""
    variances, covariances = set(), set()
    for row in fit.variance_components.iter_rows(named=True):
        if row["group"] == "Residual":
            continue
        group = _SPLIT_SUFFIX.sub("", row["group"])  # lme4 names the blocks of || id, id.1, ...
        if row["term2"] is None:
            variances.add((group, row["term1"]))
        else:
            covariances.add((group, frozenset((row["term1"], row["term2"]))))
    return frozenset(variances), frozenset(covariances)


def same_random_part(a: GrowthFit, b: GrowthFit) -> bool:
    """Whether two fits have the same random-effect variances and covariances."""
    return _random_part(a) == _random_part(b)


def _in_column_space(small: np.ndarray, big: np.ndarray) -> bool:
    if small.shape[1] == 0:
        return True
    if big.shape[1] == 0:
        return False
    rows, counts = distinct_rows(np.hstack([big, small]))  # same residual norms, fewer rows
    rows = rows * np.sqrt(counts)[:, None]
    if rows.shape[0] < small.shape[0]:
        big, small = rows[:, : big.shape[1]], rows[:, big.shape[1] :]
    coefficients, *_ = np.linalg.lstsq(big, small, rcond=None)
    residual = small - big @ coefficients
    scale = np.maximum(np.linalg.norm(small, axis=0), 1.0)
    return bool(np.all(np.linalg.norm(residual, axis=0) <= COLUMN_SPACE_TOLERANCE * scale))


@dataclass(frozen=True, slots=True)
class Nesting:
    """How a smaller model restricts a larger one, and the reference distribution of the LRT."""

    df: int
    fixed_added: tuple[str, ...]
    variances_added: tuple[str, ...]
    covariances_added: tuple[str, ...]
    variances_correlated: bool  # an added variance has a covariance in the larger model
    structure_added: str = ""  # a level-1 error structure the larger model adds or generalises
    structure_boundary: bool = False  # independence is on the boundary of the larger structure

    @property
    def _boundary(self) -> int:
        return len(self.variances_added) + int(self.structure_boundary)

    @property
    def reference(self) -> str:
        k = self._boundary
        if k == 0:
            return f"chi2({self.df})"
        if k == 1:
            return f"50:50 mixture chi2({self.df - 1}):chi2({self.df})"
        if not self.variances_correlated:
            parts = ":".join(f"chi2({self.df - k + j})" for j in range(k + 1))
            return f"chi-bar-square, binomial weights {parts}"
        return f"chi2({self.df}), conservative: {k} variances tested on the boundary"

    def p_value(self, chisq: float) -> float:
        k = self._boundary
        if k == 1 or (k > 1 and not self.variances_correlated):
            return chi_bar_square_p_value(chisq, df=self.df, variances=k)
        return float(stats.chi2.sf(chisq, self.df))

    @property
    def hypothesis(self) -> str:
        parts = []
        if self.fixed_added:
            parts.append(f"fixed effect(s) {', '.join(self.fixed_added)} = 0")
        if self.variances_added:
            parts.append(
                f"variance of the random effect(s) {', '.join(self.variances_added)} = 0"
                + (" (with their covariances)" if self.variances_correlated else "")
            )
        lone = [c for c in self.covariances_added if not any(v in c for v in self.variances_added)]
        if lone:
            parts.append(f"covariance(s) {', '.join(lone)} = 0")
        if self.structure_added:
            parts.append(self.structure_added)
        return "; ".join(parts)


# level-1 error structures: which ones contain which as a special case (the key is nested
# in every structure of its value; independence, None, in all of them)
STRUCTURE_CONTAINS: dict[str | None, frozenset[str]] = {
    None: frozenset({"us", "toep", "toeph", "ar1", "ar1h", "cs", "csh", "diag", "sp_exp"}),
    "cs": frozenset({"csh", "toep", "toeph", "us"}),
    "ar1": frozenset({"ar1h", "toep", "toeph", "us"}),
    "diag": frozenset({"ar1h", "csh", "toeph", "us"}),
    "ar1h": frozenset({"toeph", "us"}),
    "csh": frozenset({"us"}),
    "toep": frozenset({"toeph", "us"}),
    "toeph": frozenset({"us"}),
    "us": frozenset(),
    "sp_exp": frozenset(),
}


def _structure(fit: GrowthFit) -> tuple[str | None, str | None]:
    term = fit.design.formula.residual
    return (None, None) if term is None else (term.structure, term.occasion)


def _structure_reason(small: GrowthFit, big: GrowthFit) -> str | None:
    (s_name, s_occ), (b_name, b_occ) = _structure(small), _structure(big)
    if s_name == b_name and s_occ == b_occ:
        return None
    if s_name is not None and b_name is not None and s_occ != b_occ:
        return "their error structures are over different occasion columns"
    if b_name is None or b_name not in STRUCTURE_CONTAINS[s_name]:
        return f"the error structure {s_name or 'independent'} is not a special case of {b_name or 'independent'}"
    return None


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two codings of the rows group them into the same units."""
    if a.shape != b.shape:
        return False
    if np.array_equal(a, b):  # the usual case: designs of the same rows code them alike
        return True
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return pairs.shape[0] == np.unique(a).size == np.unique(b).size


def _cheap_reason(small: GrowthFit, big: GrowthFit) -> str | None:
    """A reason from :func:`_not_nested` that needs no pass over the rows (None: look further)."""
    if small.nobs != big.nobs:
        return "they are not fitted to the same observations"
    reason = _structure_reason(small, big)
    if reason is not None:
        return reason
    variances_s, covariances_s = _random_part(small)
    variances_b, covariances_b = _random_part(big)
    if not (variances_s <= variances_b and covariances_s <= covariances_b):
        return "their random parts are not nested"
    if npar(small) >= npar(big):
        return "the first has as many parameters as the second"
    return None


def _not_nested(small: GrowthFit, big: GrowthFit) -> str | None:
    """Why ``small`` is not nested in ``big`` (None when it is)."""
    if small.nobs != big.nobs or not np.array_equal(small.design.y, big.design.y):
        return "they are not fitted to the same observations"
    if not _same_partition(small.design.group_codes, big.design.group_codes):
        return "they do not group the observations by the same persons"
    reason = _structure_reason(small, big)
    if reason is not None:
        return reason
    if not _in_column_space(np.asarray(small.design.X), np.asarray(big.design.X)):
        return "the fixed effects of the first are not a restriction of those of the second"
    variances_s, covariances_s = _random_part(small)
    variances_b, covariances_b = _random_part(big)
    if not variances_s <= variances_b:
        extra = sorted(term for _, term in variances_s - variances_b)
        return f"the first has random effect(s) {extra} that the second lacks"
    if not covariances_s <= covariances_b:
        extra = sorted(" with ".join(sorted(pair)) for _, pair in covariances_s - covariances_b)
        return f"the first has random-effect covariance(s) {extra} that the second sets to 0"
    if npar(small) >= npar(big):
        return "the first has as many parameters as the second"
    return None


def nesting(small: GrowthFit, big: GrowthFit) -> Nesting | None:
    """How ``small`` restricts ``big``, or None when it is not nested in it."""
    if _cheap_reason(small, big) is not None or _not_nested(small, big) is not None:
        return None
    variances_s, covariances_s = _random_part(small)
    variances_b, covariances_b = _random_part(big)
    added_variances = variances_b - variances_s
    added_covariances = covariances_b - covariances_s
    added_terms = {term for _, term in added_variances}
    fixed_names = set(small.design.fixed_names)
    fixed_added = tuple(name for name in big.design.fixed_names if name not in fixed_names)
    added = len(big.design.fixed_names) - len(small.design.fixed_names)
    if len(fixed_added) != added:  # a reparametrised fixed part: count, do not name
        fixed_added = (f"{added} fixed-effect direction(s)",) if added else ()
    return Nesting(
        df=npar(big) - npar(small),
        fixed_added=fixed_added,
        variances_added=tuple(sorted(added_terms)),
        covariances_added=tuple(
            sorted(" with ".join(sorted(pair)) for _, pair in added_covariances)
        ),
        variances_correlated=any(pair & added_terms for _, pair in added_covariances),
        **_structure_change(small, big),
    )


def _structure_change(small: GrowthFit, big: GrowthFit) -> dict:
    (s_name, _), (b_name, _) = _structure(small), _structure(big)
    if s_name == b_name:
        return {}
    before = s_name or "independent residuals"
    return {
        "structure_added": f"the level-1 errors follow {before} rather than {b_name}",
        "structure_boundary": s_name is None and b_name == "sp_exp",
    }


def _ml(fit: GrowthFit) -> GrowthFit:
    return fit.refit(reml=False) if fit.reml else fit


def _statistic(small: GrowthFit, big: GrowthFit) -> float:
    return max(0.0, 2.0 * (float(big.loglik) - float(small.loglik)))


# ---------------------------------------------------------------------------- outputs


def compare(fit_a: GrowthFit, fit_b: GrowthFit) -> pl.DataFrame:
    """Likelihood-ratio test of two nested models, as lme4's ``anova()`` (the public ``compare``).

    REML fits are refitted by ML first. Rows are ordered by the number of parameters;
    the test is on the second row, with the reference distribution of :func:`nesting`
    (a mixture when a variance is tested). Models that are not nested are an error.
    """
    small, big = sorted([fit_a, fit_b], key=npar)
    if small.nobs != big.nobs:
        raise ModelError(
            f"the models were fitted to different numbers of observations ({small.nobs} and "
            f"{big.nobs}); a likelihood-ratio test needs the same data"
        )
    reason = _not_nested(small, big)
    if reason is not None:
        raise ModelError(
            f"'{small.formula}' is not nested in '{big.formula}': {reason}; a likelihood-ratio "
            "test needs nested models (compare AIC/BIC instead)"
        )
    how = nesting(small, big)
    assert how is not None
    refitted = [_ml(small), _ml(big)]
    chisq = _statistic(*refitted)
    return pl.DataFrame(
        {
            "model": [f.formula for f in refitted],
            "npar": [npar(f) for f in refitted],
            "aic": [float(f.aic) for f in refitted],
            "bic": [float(f.bic) for f in refitted],
            "loglik": [float(f.loglik) for f in refitted],
            "deviance": [-2.0 * float(f.loglik) for f in refitted],
            "chisq": [None, chisq],
            "df": [None, how.df],
            "p_value": [None, how.p_value(chisq)],
        },
        schema={
            "model": pl.String,
            "npar": pl.Int64,
            "aic": pl.Float64,
            "bic": pl.Float64,
            "loglik": pl.Float64,
            "deviance": pl.Float64,
            "chisq": pl.Float64,
            "df": pl.Int64,
            "p_value": pl.Float64,
        },
    )


def comparison_table(models: Sequence[Compared]) -> pl.DataFrame:
    """The ``model_comparison`` table: information criteria of ML fits, one row per model."""
    rows = []
    for entry in models:
        deviance = -2.0 * float(entry.fit.loglik)
        parameters = npar(entry.fit)
        rows.append(
            {
                "model": entry.name,
                "npar": parameters,
                "deviance": deviance,
                "aic": deviance + 2.0 * parameters,
                "bic": deviance + math.log(entry.fit.nobs) * parameters,
            }
        )
    return pl.DataFrame(rows, schema=columns("model_comparison"))


def likelihood_ratio_tests(models: Sequence[Compared]) -> pl.DataFrame:
    """The ``likelihood_ratio_tests`` table over ML fits: every covering nested pair."""
    n = len(models)
    relation: dict[tuple[int, int], Nesting] = {}
    for i in range(n):
        for j in range(n):
            if i != j:
                how = nesting(models[i].fit, models[j].fit)
                if how is not None:
                    relation[(i, j)] = how
    rows = []
    for (i, j), how in relation.items():
        between = any((i, m) in relation and (m, j) in relation for m in range(n))
        if between:
            continue
        chisq = _statistic(models[i].fit, models[j].fit)
        rows.append(
            {
                "model": models[j].name,
                "against": models[i].name,
                "chisq": chisq,
                "df": how.df,
                "p_value": how.p_value(chisq),
                "reference": how.reference,
                "hypothesis": how.hypothesis,
            }
        )
    order = {entry.name: k for k, entry in enumerate(models)}
    rows.sort(key=lambda row: (order[row["model"]], order[row["against"]]))
    return pl.DataFrame(rows, schema=columns("likelihood_ratio_tests"))


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """``model_comparison`` and ``likelihood_ratio_tests`` from ML refits of every fitted model."""
    entries: list[Compared] = []
    for model in ctx.fitted_models:
        try:
            entries.append(Compared(model.name, ctx.ml(model.name)))
        except Exception as error:  # the others are still compared
            ctx.notes.warn(
                "model comparison",
                f"the ML refit of '{model.name}' failed, so it is not compared: {error}",
            )
    if not entries:
        return {}
    return {
        "model_comparison": comparison_table(entries),
        "likelihood_ratio_tests": likelihood_ratio_tests(entries),
    }
