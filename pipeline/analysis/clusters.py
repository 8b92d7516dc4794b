"""Nested levels: persons in clusters (pupils in schools), the three-level analyses.

Raudenbush & Bryk (2002, ch. 8) write the three-level growth model with occasions t in
persons i in clusters j; with more cluster levels (classrooms in schools) every statistic
below is given for each cluster level. The fits are those of the model sequence (REML),
whose grouping factors are, innermost first, the person and then the clusters. Notation:
sigma^2 the level-1 (occasion) variance, tau_p the person-level and tau_c the
cluster-level variance of a random term; total = sigma^2 + tau_p + tau_c.

Tables (only when the study declares clusters, ``[data] clusters``):

- ``cluster_variance_partition``: the unconditional means model's variance at each level
  and its share of the total, with 95% parametric-bootstrap percentile intervals
  (:data:`BOOTSTRAP_REPLICATES` simulations from the REML fit, each refitted by REML;
  fewer beyond :data:`BOOTSTRAP_ROWS` rows, see :func:`bootstrap_replicates`);
  the same rows serve the variance-partition chart (level, variance, share).
- ``cluster_icc``: the intraclass correlations of the means model (Raudenbush & Bryk
  eq. 8.4-8.6): between clusters, tau_c / total, the correlation of two observations of
  different persons in the same cluster; within persons, (tau_p + tau_c) / total, the
  correlation of two observations of the same person; and the share of the between-person
  variance that lies between clusters, tau_c / (tau_p + tau_c). Same bootstrap intervals.
- ``cluster_growth_variance``: the unconditional growth model's variance of each random
  term (status at time 0 of the coded time, rate of change, ...) within clusters (between
  persons) and between clusters, and the share between clusters tau_c / (tau_p + tau_c).
- ``cluster_variance_tests``: the likelihood-ratio test of each cluster level's random
  terms: the model against the same model without that level's terms (the same persons),
  by :func:`pipeline.analysis.comparison.compare` (ML refits; 50:50 mixture for one
  variance, a conservative chi2 when correlated variances are tested).
- ``cluster_design_effect``: for the mean of the observations, with n the mean
  observations per person and N the mean observations per cluster,
  deff = 1 + (n - 1) rho_person + (N - n) rho_cluster (rho_person = (tau_p + tau_c) /
  total, rho_cluster = tau_c / total); for the mean of the person means, with m the mean
  persons per cluster, deff = 1 + (m - 1) ICC with ICC = tau_c / (tau_c + tau_p +
  sigma^2 / n), the correlation of two person means in the same cluster. Both are exact
  for balanced data; effective n = count / deff.
- ``cluster_predictor_se``: the standard error of each fixed effect that involves a
  cluster-level covariate by OLS (independent rows), by the two-level model without the
  cluster terms, and by the model with them.
- ``cluster_sample_size``: groups per level (at least 10 for fixed effects, 30 for
  variance components) and the mean number of units per group (at least 5).
- ``cluster_reliability``: HLM reliability at every level. Of the means model in closed
  form (Raudenbush & Bryk eq. 8.7-8.8): person means lambda_i = tau_p / (tau_p +
  sigma^2 / n_i); cluster means of the observations lambda_j = tau_c / (tau_c + tau_p
  sum_i n_ij^2 / N_j^2 + sigma^2 / N_j); averaged over units (with more than one cluster
  level, the variances below a cluster level are pooled as tau_p, which is exact for the
  innermost cluster level only; the same holds for the design effect). Of the growth model's random
  terms at each level: the mean over units of 1 - condvar / tau (the empirical-Bayes
  reliability, which equals lambda for a random intercept in balanced data).
- ``cluster_level_equations``: each fitted model in Raudenbush & Bryk's notation (level 1
  pi, level 2 beta, level 3 gamma).
- ``cluster_caterpillar``: the outermost cluster level's BLUPs of the growth model (else
  the means model) with 95% intervals from their conditional variances, ranked.
- ``cluster_trajectories``: observed cluster means by occasion for at most
  :data:`TRAJECTORY_CLUSTERS` clusters drawn with the spec's seed, beside the cluster's
  trajectory implied by the unconditional growth model (fixed part plus cluster BLUPs).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from scipy import stats

from pipeline.analysis.comparison import compare, nesting
from pipeline.analysis.sequence import CONDITIONAL, GROWTH, MEANS, time_terms
from pipeline.errors import ModelError
from pipeline.model.fit import fit_design, fit_growth
from pipeline.model.results import GrowthFit
from schemas.tables import columns

if TYPE_CHECKING:
    from pipeline.analysis.context import AnalysisContext

__all__ = [
    "BOOTSTRAP_REPLICATES",
    "BOOTSTRAP_ROWS",
    "bootstrap_replicates",
    "TRAJECTORY_CLUSTERS",
    "caterpillar_table",
    "cluster_levels",
    "design_effect_table",
    "growth_variance_table",
    "level_equations_table",
    "parametric_bootstrap",
    "partition_tables",
    "predictor_se_table",
    "reliability_table",
    "sample_size_table",
    "tables",
    "trajectories_table",
    "variance_tests_table",
    "without_level",
]

BOOTSTRAP_REPLICATES = 200
BOOTSTRAP_ROWS = 50_000
TRAJECTORY_CLUSTERS = 20
LEVEL = 0.95
Z95 = float(stats.norm.ppf(0.975))
MIN_FIXED, MIN_VARIANCE, MIN_PER_GROUP = 10, 30, 5
SYMBOLS = ("pi", "beta", "gamma", "delta")


# ---------------------------------------------------------------------------- the levels


def cluster_levels(fit: GrowthFit, names: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(label, lme4 group name) of each grouping factor of ``fit``, innermost (person) first.

    ``names``: the person and the cluster labels to show (e.g. ("pid", "school")); the
    lme4 names are used when their count differs from the factors'.
    """
    groups = [g.name for g in fit.design.grouping] or [fit.design.group]
    labels = list(names) if len(names) == len(groups) else groups
    return list(zip(labels, groups, strict=True))


def _intercepts(fit: GrowthFit) -> dict[str, float]:
    """lme4 group -> random-intercept variance; 'Residual' -> sigma^2."""
    vc = fit.variance_components
    out = {"Residual": float(fit.sigma) ** 2}
    for row in vc.filter(pl.col("term2").is_null()).iter_rows(named=True):
        if row["group"] != "Residual" and row["term1"] == "(Intercept)":
            out[row["group"]] = float(row["variance"])
    return out


def _term_variances(fit: GrowthFit) -> dict[tuple[str, str], float]:
    vc = fit.variance_components.filter(pl.col("term2").is_null() & (pl.col("group") != "Residual"))
    return {(r["group"], r["term1"]): float(r["variance"]) for r in vc.iter_rows(named=True)}


# ---------------------------------------------------------------------------- bootstrap


def _simulate(fit: GrowthFit, rng: np.random.Generator) -> np.ndarray:
    """One outcome vector drawn from the fitted model (fixed part, every level, residual)."""
    design = fit.design
    y = np.asarray(design.X, dtype=float) @ np.asarray(fit.beta, dtype=float)
    covariance = np.asarray(fit.covariance, dtype=float)
    Z = np.asarray(design.Z, dtype=float)
    levels = design.grouping
    if not levels:
        raise ModelError("the parametric bootstrap needs a fit with its grouping factors")
    for g in levels:
        block = covariance[g.offset : g.offset + g.q, g.offset : g.offset + g.q]
        root = _root(block)
        effects = rng.standard_normal((g.m, g.q)) @ root.T
        y += np.sum(Z[:, g.offset : g.offset + g.q] * effects[g.codes], axis=1)
    return y + rng.normal(0.0, float(fit.sigma), y.shape[0])


def _root(block: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(block)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def parametric_bootstrap(
    fit: GrowthFit,
    statistic: Callable[[GrowthFit], np.ndarray],
    *,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = 20240101,
) -> np.ndarray:
    """``statistic`` of ``replicates`` REML refits of outcomes simulated from ``fit``
    (rows: replicates; a refit that fails is left out)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(replicates):
        design = dataclasses.replace(fit.design, y=_simulate(fit, rng))
        try:
            out.append(np.asarray(statistic(fit_design(design, reml=fit.reml)), dtype=float))
        except ModelError:
            continue
    return np.array(out)


def bootstrap_replicates(nobs: int) -> int:
    """Bootstrap size for ``nobs`` rows: :data:`BOOTSTRAP_REPLICATES` up to
    :data:`BOOTSTRAP_ROWS` rows, fewer (at least 40) beyond, so that large studies stay fast."""
    if nobs <= BOOTSTRAP_ROWS:
        return BOOTSTRAP_REPLICATES
    return max(40, int(BOOTSTRAP_REPLICATES * BOOTSTRAP_ROWS / nobs))


# ---------------------------------------------------------------------------- partition


def _shares(fit: GrowthFit) -> np.ndarray:
    """Variances (innermost grouping first, residual last) and their shares of the total."""
    parts = _intercepts(fit)
    groups = [g.name for g in fit.design.grouping]
    variances = np.array([parts.get(g, 0.0) for g in groups] + [parts["Residual"]])
    return np.concatenate([variances, variances / variances.sum()])


def _icc_values(shares: np.ndarray, levels: int) -> np.ndarray:
    """For each cluster level k (1..levels-1): rho_cluster_k, rho_person, and tau_c / tau_between."""
    var = shares[: levels + 1]
    total = var.sum()
    between = var[:levels].sum()
    out = []
    for k in range(1, levels):
        above = var[k:levels].sum()
        out.extend([above / total, between / total, above / between if between > 0 else np.nan])
    return np.array(out)


def partition_tables(
    fit: GrowthFit,
    *,
    model: str = MEANS,
    names: Sequence[str] = (),
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = 20240101,
) -> dict[str, pl.DataFrame]:
    """``cluster_variance_partition`` and ``cluster_icc`` of a random-intercept model."""
    vc = fit.variance_components
    if vc.filter(pl.col("term2").is_not_null() | (pl.col("term1") != "(Intercept)")).height:
        raise ModelError("the variance partition needs the unconditional means model")
    levels = cluster_levels(fit, names)
    k = len(levels)
    if k < 2:
        raise ModelError("the variance partition by level needs at least one cluster level")
    point = _shares(fit)
    boot = (
        parametric_bootstrap(
            fit,
            lambda f: np.concatenate([_shares(f), _icc_values(_shares(f), k)]),
            replicates=replicates,
            seed=seed,
        )
        if replicates > 0
        else np.empty((0, 0))
    )
    method = (
        f"REML estimate; 95% parametric-bootstrap percentile interval ({boot.shape[0]} "
        "simulations from the fit, each refitted by REML)"
        if boot.shape[0]
        else "REML estimate; no interval"
    )

    def interval(j: int) -> tuple[float | None, float | None]:
        if not boot.shape[0]:
            return None, None
        lo, hi = np.quantile(boot[:, j], [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        return float(lo), float(hi)

    labels = [label for label, _ in levels] + ["occasion"]
    groups = [group for _, group in levels] + ["Residual"]
    rows = []
    for j, (label, group) in enumerate(zip(labels, groups, strict=True)):
        lo, hi = interval(k + 1 + j)
        share = float(point[k + 1 + j])
        rows.append(
            {
                "model": model,
                "level": label,
                "group": group,
                "variance": float(point[j]),
                "share": share,
                "conf_low": None if lo is None else min(lo, share),
                "conf_high": None if hi is None else max(hi, share),
                "method": method,
            }
        )
    partition = pl.DataFrame(rows, schema=columns("cluster_variance_partition"))
    icc = _icc_values(point, k)
    person = labels[0]
    icc_rows = []
    for c in range(1, k):
        cluster = labels[c]
        texts = [
            (
                f"between {cluster}",
                f"tau({cluster} and above) / total: the correlation of two observations of "
                f"different {person} in the same {cluster}",
            ),
            (
                f"within {person}",
                "between-person variance (all levels) / total: the correlation of two "
                f"observations of the same {person}",
            ),
            (
                f"{cluster} share of between-{person} variance",
                f"tau({cluster} and above) / (tau({person}) + tau(clusters)): the share of the "
                f"variation between {person} that lies between {cluster}",
            ),
        ]
        for i, (name, definition) in enumerate(texts):
            if c > 1 and i == 1:
                continue  # the same for every cluster level
            j = 3 * (c - 1) + i
            value = float(icc[j])
            lo, hi = interval(2 * (k + 1) + j)
            icc_rows.append(
                {
                    "model": model,
                    "icc": name,
                    "definition": definition,
                    "estimate": value,
                    "conf_low": None if lo is None else min(lo, value),
                    "conf_high": None if hi is None else max(hi, value),
                    "method": method,
                }
            )
    return {
        "cluster_variance_partition": partition,
        "cluster_icc": pl.DataFrame(icc_rows, schema=columns("cluster_icc")),
    }


def growth_variance_table(
    fit: GrowthFit, *, model: str = GROWTH, names: Sequence[str] = ()
) -> pl.DataFrame:
    """``cluster_growth_variance``: each random term's variance within and between clusters."""
    levels = cluster_levels(fit, names)
    if len(levels) < 2:
        raise ModelError("the growth variance by level needs at least one cluster level")
    variances = _term_variances(fit)
    person_label, person_group = levels[0]
    rows = []
    for term in fit.design.grouping[0].names:
        within = variances.get((person_group, term))
        for label, group in levels[1:]:
            between = variances.get((group, term))
            share = (
                between / (between + within)
                if between is not None and within is not None and between + within > 0
                else None
            )
            rows.append(
                {
                    "model": model,
                    "term": term,
                    "level": label,
                    "within_variance": within,
                    "between_variance": between,
                    "share_between": share,
                }
            )
    return pl.DataFrame(rows, schema=columns("cluster_growth_variance"))


# ---------------------------------------------------------------------------- tests


_GROUP = re.compile(r"\|\|?\s*(?P<group>[^()|]+?)\s*\)\s*$")


def _split_top(text: str) -> list[str]:
    """The '+'-separated terms of a formula side, outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "+" and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _group_text(term: str) -> str | None:
    if not (term.startswith("(") and term.endswith(")") and "|" in term):
        return None
    match = _GROUP.search(term)
    return None if match is None else re.sub(r"\s+", "", match.group("group"))


def without_level(formula: str, group: str) -> str:
    """``formula`` without the random terms of grouping factor ``group`` (lme4 spelling);
    ``(t | a/b)`` is expanded as lme4 does before the terms of ``group`` are dropped."""
    if "~" not in formula:
        raise ModelError(f"formula {formula!r} has no '~'")
    left, right = formula.split("~", 1)
    kept, removed = [], False
    target = re.sub(r"\s+", "", group)
    for term in _split_top(right):
        found = _group_text(term)
        if found is None:
            kept.append(term)
            continue
        inner = term[1 : term.rindex("|")].rstrip("|").strip()
        bar = "||" if "||" in term else "|"
        if "/" in found:
            parts = found.split("/")
            expanded = [":".join(parts[: i + 1]) for i in range(len(parts))]
        else:
            expanded = [found]
        for name in expanded:
            if name == target:
                removed = True
            else:
                kept.append(f"({inner} {bar} {name})")
    if not removed:
        raise ModelError(f"formula {formula!r} has no random term of the grouping factor {group!r}")
    return f"{left.strip()} ~ {' + '.join(kept)}"


def variance_tests_table(
    fits: Mapping[str, GrowthFit], *, names: Sequence[str] = ()
) -> pl.DataFrame:
    """``cluster_variance_tests``: each model against itself without one cluster level's terms."""
    rows = []
    for model, fit in fits.items():
        levels = cluster_levels(fit, names)
        for label, group in levels[1:]:
            smaller = fit_growth(fit.frame, without_level(fit.formula, group), reml=fit.reml)
            result = compare(smaller, fit)
            chisq = float(result["chisq"][1])
            how = nesting(smaller, fit)
            assert how is not None  # compare() has checked the nesting
            rows.append(
                {
                    "model": model,
                    "level": label,
                    "against": smaller.formula,
                    "chisq": chisq,
                    "df": int(result["df"][1]),
                    "p_value": float(result["p_value"][1]),
                    "reference": how.reference,
                    "hypothesis": f"no variance between {label} ({how.hypothesis})",
                }
            )
    return pl.DataFrame(rows, schema=columns("cluster_variance_tests"))


# ---------------------------------------------------------------------------- design effect


def design_effect_table(
    fit: GrowthFit, *, model: str = MEANS, names: Sequence[str] = ()
) -> pl.DataFrame:
    """``cluster_design_effect`` from a random-intercept model (module docstring)."""
    levels = cluster_levels(fit, names)
    if len(levels) < 2:
        raise ModelError("the design effect needs at least one cluster level")
    parts = _intercepts(fit)
    sigma2 = parts["Residual"]
    variances = [parts.get(group, 0.0) for _, group in levels]
    total = sigma2 + sum(variances)
    person = fit.design.grouping[0]
    n_obs = fit.nobs
    n_persons = person.m
    n_per_person = n_obs / n_persons
    rows = []
    for c, (label, _) in enumerate(levels[1:], start=1):
        clusters = fit.design.grouping[c].m
        tau_c = sum(variances[c:])
        tau_p = sum(variances[:c])
        rho_obs_person = (tau_p + tau_c) / total
        rho_obs_cluster = tau_c / total
        per_cluster_obs = n_obs / clusters
        deff_obs = (
            1
            + (n_per_person - 1) * rho_obs_person
            + (per_cluster_obs - n_per_person) * rho_obs_cluster
        )
        per_cluster_persons = n_persons / clusters
        icc_means = tau_c / (tau_c + tau_p + sigma2 / n_per_person)
        deff_persons = 1 + (per_cluster_persons - 1) * icc_means
        rows.append(
            {
                "model": model,
                "level": label,
                "unit": "observations",
                "count": n_obs,
                "mean_per_cluster": per_cluster_obs,
                "icc": rho_obs_cluster,
                "design_effect": deff_obs,
                "effective_n": n_obs / deff_obs,
                "formula": (
                    f"1 + (n - 1) rho_person + (N - n) rho_cluster; n = {n_per_person:.4g} "
                    f"observations per {levels[0][0]}, N = {per_cluster_obs:.4g} per {label}, "
                    f"rho_person = {rho_obs_person:.4g}, rho_cluster = {rho_obs_cluster:.4g}"
                ),
            }
        )
        rows.append(
            {
                "model": model,
                "level": label,
                "unit": "persons",
                "count": n_persons,
                "mean_per_cluster": per_cluster_persons,
                "icc": icc_means,
                "design_effect": deff_persons,
                "effective_n": n_persons / deff_persons,
                "formula": (
                    f"1 + (m - 1) ICC; m = {per_cluster_persons:.4g} {levels[0][0]} per {label}, "
                    f"ICC of person means = tau_c / (tau_c + tau_p + sigma^2 / n) = {icc_means:.4g}"
                ),
            }
        )
    return pl.DataFrame(rows, schema=columns("cluster_design_effect"))


# ---------------------------------------------------------------------------- standard errors


def _ols(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coefficients, *_ = np.linalg.lstsq(X, y, rcond=None)
    residual = y - X @ coefficients
    n, p = X.shape
    s2 = float(residual @ residual) / (n - p)
    return coefficients, np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ X)))


def predictor_se_table(
    fit: GrowthFit,
    terms: Sequence[str],
    *,
    model: str = CONDITIONAL,
    names: Sequence[str] = (),
) -> pl.DataFrame:
    """``cluster_predictor_se``: each term by OLS, by the two-level model, by ``fit``."""
    levels = cluster_levels(fit, names)
    if len(levels) < 2:
        raise ModelError("the standard-error comparison needs at least one cluster level")
    formula = fit.formula
    for _, group in levels[1:]:
        formula = without_level(formula, group)
    two = fit_growth(fit.frame, formula, reml=fit.reml)
    X, y = np.asarray(fit.design.X, dtype=float), np.asarray(fit.design.y, dtype=float)
    ols_beta, ols_se = _ols(X, y)
    names_fixed = list(fit.design.fixed_names)
    rows = []
    for term in terms:
        if term not in names_fixed:
            raise ModelError(f"the model has no fixed effect {term!r}")
        i = names_fixed.index(term)
        full = fit.fixed_effects.filter(pl.col("term") == term).row(0, named=True)
        other = two.fixed_effects.filter(pl.col("term") == term).row(0, named=True)
        reference = float(full["std_error"])
        for method, estimate, se in (
            ("OLS", float(ols_beta[i]), float(ols_se[i])),
            ("two-level", float(other["estimate"]), float(other["std_error"])),
            (
                "three-level" if len(levels) == 2 else "all levels",
                float(full["estimate"]),
                reference,
            ),
        ):
            rows.append(
                {
                    "model": model,
                    "term": term,
                    "method": method,
                    "estimate": estimate,
                    "std_error": se,
                    "ratio": se / reference if reference > 0 else None,
                    "formula": {
                        "OLS": "ordinary least squares on the same fixed effects",
                        "two-level": formula,
                    }.get(method, fit.formula),
                }
            )
    return pl.DataFrame(rows, schema=columns("cluster_predictor_se"))


def cluster_terms(fit: GrowthFit, covariates: Sequence[str]) -> list[str]:
    """The fixed effects of ``fit`` that involve one of the cluster-level ``covariates``."""
    pieces = {
        c: {c, *(f"{c}{level}" for level in fit.design.levels.get(c, ()))} for c in covariates
    }
    out = []
    for term in fit.design.fixed_names:
        factors = term.split(":")
        if any(f in allowed for allowed in pieces.values() for f in factors):
            out.append(term)
    return out


# ---------------------------------------------------------------------------- sample size


def sample_size_table(fit: GrowthFit, *, names: Sequence[str] = ()) -> pl.DataFrame:
    """``cluster_sample_size``: rules of thumb at every level of ``fit``."""
    levels = cluster_levels(fit, names)
    grouping = fit.design.grouping
    rows = []

    def add(level: str, check: str, value: float, threshold: float, message: str) -> None:
        ok = value >= threshold
        rows.append(
            {
                "level": level,
                "check": check,
                "value": float(value),
                "threshold": float(threshold),
                "status": "ok" if ok else "warning",
                "message": message if not ok else "",
            }
        )

    for k, (label, _) in enumerate(levels):
        units = grouping[k].m
        add(
            label,
            "groups for fixed effects",
            units,
            MIN_FIXED,
            f"only {units} {label}, fewer than the {MIN_FIXED} the rule of thumb asks for "
            f"the fixed effects of {label}-level predictors",
        )
        add(
            label,
            "groups for variance components",
            units,
            MIN_VARIANCE,
            f"only {units} {label}, fewer than the {MIN_VARIANCE} the rule of thumb asks for "
            f"the variance between {label}: its estimate may be imprecise",
        )
        if k == 0:
            per = fit.nobs / units
            below = "observations"
        else:
            per = grouping[k - 1].m / units
            below = levels[k - 1][0]
        add(
            label,
            f"mean {below} per {label}",
            per,
            MIN_PER_GROUP,
            f"{per:.3g} {below} per {label} on average, fewer than the {MIN_PER_GROUP} the rule "
            f"of thumb asks for: the {label} effects rest on few {below} each",
        )
    return pl.DataFrame(rows, schema=columns("cluster_sample_size"))


# ---------------------------------------------------------------------------- reliability


def _means_reliability(fit: GrowthFit, levels: list[tuple[str, str]]) -> list[dict]:
    parts = _intercepts(fit)
    sigma2 = parts["Residual"]
    grouping = fit.design.grouping
    variances = [parts.get(group, 0.0) for _, group in levels]
    rows = []
    person_codes = grouping[0].codes
    n_person = np.bincount(person_codes, minlength=grouping[0].m).astype(float)
    tau_p = variances[0]
    lam = tau_p / (tau_p + sigma2 / n_person) if tau_p > 0 else np.zeros_like(n_person)
    rows.append((levels[0][0], "(Intercept)", float(np.mean(lam)), grouping[0].m))
    for k in range(1, len(levels)):
        g = grouping[k]
        n_cluster = np.bincount(g.codes, minlength=g.m).astype(float)
        # the units of the level below (k - 1) with their cluster, and their row counts
        below = grouping[k - 1]
        n_below = np.bincount(below.codes, minlength=below.m).astype(float)
        parent = np.zeros(below.m, dtype=np.int64)
        parent[below.codes] = g.codes
        sum_sq = np.bincount(parent, weights=n_below**2, minlength=g.m)
        tau_below = sum(variances[:k])  # every level below the cluster, as one (exact for k=1)
        tau_c = variances[k]
        noise = tau_below * sum_sq / n_cluster**2 + sigma2 / n_cluster
        lam = tau_c / (tau_c + noise) if tau_c > 0 else np.zeros_like(noise)
        rows.append((levels[k][0], "(Intercept)", float(np.mean(lam)), g.m))
    return [
        {
            "level": level,
            "term": term,
            "reliability": value,
            "units": units,
            "method": (
                "lambda of the person means, tau_p / (tau_p + sigma^2 / n_i), averaged"
                if level == levels[0][0]
                else f"lambda of the {level} means of the observations, tau_c / (tau_c + tau_p "
                "sum n_ij^2 / N_j^2 + sigma^2 / N_j), averaged"
            ),
        }
        for level, term, value, units in rows
    ]


def _blup_reliability(fit: GrowthFit, levels: list[tuple[str, str]]) -> list[dict]:
    variances = _term_variances(fit)
    rows = []
    for k, (label, group) in enumerate(levels):
        g = fit.design.grouping[k]
        condvar = np.asarray(fit.level_condvar[k], dtype=float)
        for a, term in enumerate(g.names):
            tau = variances.get((group, term))
            if tau is None or tau <= 0:
                value = None
            else:
                value = float(np.clip(np.mean(1.0 - condvar[:, a, a] / tau), 0.0, 1.0))
            rows.append(
                {
                    "level": label,
                    "term": term,
                    "reliability": value,
                    "units": g.m,
                    "method": "mean over units of 1 - conditional variance / tau (empirical Bayes)",
                }
            )
    return rows


def reliability_table(
    *, means: GrowthFit | None, growth: GrowthFit | None, names: Sequence[str] = ()
) -> pl.DataFrame:
    """``cluster_reliability`` of the means model (closed form) and the growth model (BLUPs)."""
    rows = []
    if means is not None:
        rows += [
            {"model": MEANS, **r} for r in _means_reliability(means, cluster_levels(means, names))
        ]
    if growth is not None:
        rows += [
            {"model": GROWTH, **r} for r in _blup_reliability(growth, cluster_levels(growth, names))
        ]
    return pl.DataFrame(rows, schema=columns("cluster_reliability"))


# ---------------------------------------------------------------------------- equations


def _number(value: float) -> str:
    return f"{value:.5g}"


def level_equations_table(
    fit: GrowthFit,
    *,
    model: str,
    outcome: str,
    time_parts: Sequence[str],
    cluster_covariates: Sequence[str],
    names: Sequence[str] = (),
) -> pl.DataFrame:
    """``cluster_level_equations``: ``fit`` in Raudenbush & Bryk's notation.

    Every fixed term is split into its level-1 part (``time_parts``, the time terms), its
    cluster part (pieces of ``cluster_covariates``) and its person part (the rest); the
    coefficient gamma_pqs belongs to time term p, person predictor q, cluster predictor s
    (0 = none). Only three-level models are written (deeper ones are an error).
    """
    levels = cluster_levels(fit, names)
    if len(levels) != 2:
        raise ModelError(
            f"the level equations are written for three levels; '{fit.formula}' has "
            f"{len(levels) + 1}"
        )
    cluster_pieces = set()
    for c in cluster_covariates:
        cluster_pieces.add(c)
        cluster_pieces.update(f"{c}{level}" for level in fit.design.levels.get(c, ()))
    time_index = {"": 0, **{t: k + 1 for k, t in enumerate(time_parts)}}
    person_index: dict[str, int] = {"": 0}
    cluster_index: dict[str, int] = {"": 0}
    coefficients: dict[tuple[int, int, int], float] = {}
    for term, estimate in zip(
        fit.fixed_effects["term"].to_list(), fit.fixed_effects["estimate"].to_list(), strict=True
    ):
        factors = [] if term == "(Intercept)" else term.split(":")
        t = ":".join(f for f in factors if f in time_index)
        c = ":".join(f for f in factors if f in cluster_pieces)
        p = ":".join(f for f in factors if f not in time_index and f not in cluster_pieces)
        if t not in time_index:
            time_index[t] = len(time_index)
        person_index.setdefault(p, len(person_index))
        cluster_index.setdefault(c, len(cluster_index))
        coefficients[(time_index[t], person_index[p], cluster_index[c])] = float(estimate)
    person_names = {v: k for k, v in person_index.items()}
    cluster_names = {v: k for k, v in cluster_index.items()}
    time_names = {v: k for k, v in time_index.items()}
    random = [
        {term for term in g.names} for g in fit.design.grouping
    ]  # random terms per level, innermost first

    def tname(p: int) -> str:
        name = time_names[p]
        return "(Intercept)" if name == "" else name

    used_times = sorted(
        {p for p, _, _ in coefficients}
        | {time_index.get(n, 0) if n != "(Intercept)" else 0 for n in random[0]}
    )
    eq1 = (
        f"{outcome}_tij = "
        + " + ".join(f"pi{p}ij" if p == 0 else f"pi{p}ij*({time_names[p]})_tij" for p in used_times)
        + " + e_tij"
    )
    rows = [("Level 1", eq1)]
    level2, level3 = [], []
    for p in used_times:
        qs = sorted({q for (pp, q, _) in coefficients if pp == p} | {0})
        parts = [f"beta{p}{q}j" + ("" if q == 0 else f"*({person_names[q]})_ij") for q in qs]
        if tname(p) in random[0]:
            parts.append(f"r{p}ij")
        level2.append(f"pi{p}ij = " + " + ".join(parts))
        for q in qs:
            ss = sorted({s for (pp, qq, s) in coefficients if pp == p and qq == q} | {0})
            pieces = []
            for s in ss:
                value = coefficients.get((p, q, s))
                shown = "" if value is None else f" [{_number(value)}]"
                pieces.append(
                    f"gamma{p}{q}{s}" + ("" if s == 0 else f"*({cluster_names[s]})_j") + shown
                )
            if q == 0 and any(tname(p) in r for r in random[1:]):
                pieces.append(f"u{p}0j")
            level3.append(f"beta{p}{q}j = " + " + ".join(pieces))
    rows += [("Level 2", e) for e in level2] + [("Level 3", e) for e in level3]
    vc = fit.variance_components
    for row in vc.iter_rows(named=True):
        if row["group"] == "Residual":
            rows.append(("Variances", f"sigma^2 = Var(e_tij) = {_number(row['variance'])}"))
            continue
        which = {group: label for label, group in levels}.get(row["group"], row["group"])
        term = row["term1"] if row["term2"] is None else f"{row['term1']}, {row['term2']}"
        kind = "Var" if row["term2"] is None else "Cov"
        rows.append(("Variances", f"{kind}({which}: {term}) = {_number(row['variance'])}"))
    rows.append(("lme4", fit.formula))
    return pl.DataFrame(
        [{"model": model, "level": level, "equation": eq} for level, eq in rows],
        schema=columns("cluster_level_equations"),
    )


# ---------------------------------------------------------------------------- chart data


def caterpillar_table(fit: GrowthFit, *, model: str, names: Sequence[str] = ()) -> pl.DataFrame:
    """``cluster_caterpillar``: the outermost cluster level's BLUPs with conditional intervals."""
    levels = cluster_levels(fit, names)
    if len(levels) < 2:
        raise ModelError("the caterpillar table needs at least one cluster level")
    label, group = levels[-1]
    effects = fit.random_effects_of(group)
    units = effects[group].to_list()
    frames = []
    for term in fit.design.grouping[-1].names:
        estimate = effects[term].to_numpy()
        se = np.sqrt(np.clip(effects[f"condvar_{term}"].to_numpy(), 0.0, None))
        order = np.argsort(estimate, kind="stable")
        rank = np.empty(estimate.size, dtype=np.int64)
        rank[order] = np.arange(1, estimate.size + 1)
        frames.append(
            pl.DataFrame(
                {
                    "model": model,
                    "level": label,
                    "cluster": units,
                    "term": term,
                    "estimate": estimate,
                    "std_error": se,
                    "conf_low": estimate - Z95 * se,
                    "conf_high": estimate + Z95 * se,
                    "rank": rank,
                },
                schema=columns("cluster_caterpillar"),
            ).sort("rank")
        )
    return pl.concat(frames)


def sample_clusters(labels: Sequence[str], seed: int, size: int = TRAJECTORY_CLUSTERS) -> list[str]:
    """At most ``size`` of ``labels`` drawn without replacement with ``seed``, in sorted order."""
    ordered = sorted(labels)
    if len(ordered) <= size:
        return ordered
    chosen = np.random.default_rng(seed).choice(len(ordered), size=size, replace=False)
    return [ordered[i] for i in sorted(chosen)]


def trajectories_table(
    fit: GrowthFit,
    *,
    occasions: np.ndarray,
    times: Mapping[str, float],
    coded: Callable[[float], float],
    time_parts: Sequence[str],
    seed: int,
    names: Sequence[str] = (),
) -> pl.DataFrame:
    """``cluster_trajectories`` (module docstring); ``occasions``: each row's occasion label."""
    levels = cluster_levels(fit, names)
    if len(levels) < 2:
        raise ModelError("the cluster trajectories need at least one cluster level")
    label, group = levels[-1]
    g = fit.design.grouping[-1]
    unit = g.labels.to_numpy().astype(str)[g.codes]
    chosen = sample_clusters(list(g.labels.cast(pl.String).to_list()), seed)
    # means summed in a fixed order (numpy, sorted rows): a parallel group-by may add the
    # same numbers in another order and change the last digit between runs
    occ = np.asarray(occasions, dtype=str)
    keep = np.isin(unit, np.asarray(chosen, dtype=str))
    cu, co, cy = unit[keep], occ[keep], np.asarray(fit.design.y, dtype=float)[keep]
    order = np.lexsort((co, cu))
    cu, co, cy = cu[order], co[order], cy[order]
    starts = np.flatnonzero(np.r_[True, (cu[1:] != cu[:-1]) | (co[1:] != co[:-1])])
    counts = np.diff(np.r_[starts, cu.size])
    sums = np.add.reduceat(cy, starts) if cy.size else np.zeros(0)
    observed = pl.DataFrame(
        {
            "cluster": cu[starts],
            "occasion": co[starts],
            "observations": counts.astype(np.int64),
            "observed_mean": sums / np.maximum(counts, 1),
        }
    )
    powers = {"(Intercept)": 0, **{t: k + 1 for k, t in enumerate(time_parts)}}
    fixed_ok = all(name in powers for name in fit.design.fixed_names)
    blups = fit.random_effects_of(group)
    blup_of = {str(k): i for i, k in enumerate(blups[group].to_list())}
    rows = []
    for row in observed.iter_rows(named=True):
        t = float(times[row["occasion"]])
        fitted = None
        if fixed_ok:
            c = coded(t)
            value = sum(
                float(b) * c ** powers[name]
                for name, b in zip(fit.design.fixed_names, fit.beta, strict=True)
            )
            i = blup_of[row["cluster"]]
            value += sum(float(blups[term][i]) * c ** powers.get(term, 0) for term in g.names)
            fitted = value
        rows.append(
            {
                "level": label,
                "cluster": row["cluster"],
                "occasion": row["occasion"],
                "time": t,
                "observations": int(row["observations"]),
                "observed_mean": float(row["observed_mean"]),
                "fitted_mean": fitted,
            }
        )
    return pl.DataFrame(rows, schema=columns("cluster_trajectories")).sort("cluster", "time")


# ---------------------------------------------------------------------------- the step


def _cluster_covariates(ctx: AnalysisContext, fit: GrowthFit) -> list[str]:
    declared = getattr(ctx.spec, "cluster_covariates", {}) or {}
    found = [c for values in declared.values() for c in values]
    if found:
        return list(dict.fromkeys(found))
    # undeclared: the covariates constant within every unit of the innermost cluster
    if len(fit.design.grouping) < 2:
        return []
    codes = fit.design.grouping[1].codes
    frame = fit.frame.with_columns(pl.Series("__cluster", codes))
    out = []
    for c in ctx.spec.covariates:
        if c in frame.columns:
            varying = frame.group_by("__cluster").agg(pl.col(c).n_unique().alias("k"))["k"].max()
            if varying == 1:
                out.append(c)
    return out


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """Every cluster table (module docstring); nothing when the study has no clusters."""
    clusters = tuple(getattr(ctx.spec, "clusters", ()) or ())
    if not clusters:
        return {}
    names = (ctx.spec.person, *clusters)
    seed = ctx.spec.seed
    out: dict[str, pl.DataFrame] = {}
    nested = {
        name: fit
        for name in (MEANS, GROWTH, CONDITIONAL)
        if (fit := ctx.fit(name)) is not None and len(fit.design.grouping) > 1
    }
    means, growth, conditional = (nested.get(n) for n in (MEANS, GROWTH, CONDITIONAL))
    parts = time_terms(ctx.spec.time_name, max(ctx.spec.polynomial, 1))

    def attempt(topic: str, action: Callable[[], Mapping[str, pl.DataFrame]]) -> None:
        produced = ctx.notes.attempt(f"clusters: {topic}", lambda: dict(action()))
        out.update(produced or {})

    if means is not None:
        attempt(
            "variance partition",
            lambda: partition_tables(
                means, names=names, seed=seed, replicates=bootstrap_replicates(means.nobs)
            ),
        )
        attempt(
            "design effect",
            lambda: {"cluster_design_effect": design_effect_table(means, names=names)},
        )
    if growth is not None:
        attempt(
            "growth variance",
            lambda: {"cluster_growth_variance": growth_variance_table(growth, names=names)},
        )
    if nested:
        attempt(
            "variance tests",
            lambda: {"cluster_variance_tests": variance_tests_table(nested, names=names)},
        )
        first = next(iter(nested.values()))
        attempt(
            "sample size", lambda: {"cluster_sample_size": sample_size_table(first, names=names)}
        )
        attempt(
            "reliability",
            lambda: {
                "cluster_reliability": reliability_table(means=means, growth=growth, names=names)
            },
        )
    if conditional is not None:
        terms = cluster_terms(conditional, _cluster_covariates(ctx, conditional))
        if terms:
            attempt(
                "standard errors",
                lambda: {
                    "cluster_predictor_se": predictor_se_table(
                        conditional, terms, model=CONDITIONAL, names=names
                    )
                },
            )
    equation_frames = []
    for model, fit in nested.items():
        produced = ctx.notes.attempt(
            "clusters: level equations",
            lambda fit=fit, model=model: level_equations_table(
                fit,
                model=model,
                outcome=ctx.spec.outcome,
                time_parts=parts,
                cluster_covariates=_cluster_covariates(ctx, fit),
                names=names,
            ),
        )
        if produced is not None:
            equation_frames.append(produced)
    if equation_frames:
        out["cluster_level_equations"] = pl.concat(equation_frames)
    chart = growth if growth is not None else means
    if chart is not None:
        chart_name = GROWTH if growth is not None else MEANS
        attempt(
            "caterpillar",
            lambda: {
                "cluster_caterpillar": caterpillar_table(chart, model=chart_name, names=names)
            },
        )
    if growth is not None:
        occasions = ctx.occasions(growth)
        attempt(
            "trajectories",
            lambda: {
                "cluster_trajectories": trajectories_table(
                    growth,
                    occasions=occasions.labels,
                    times=occasions.mean_time,
                    coded=lambda t: float(ctx.spec.coded_time(t)),
                    time_parts=parts,
                    seed=seed,
                    names=names,
                )
            },
        )
    return out
