"""The fast engine against lme4 1.1-31 / lmerTest 3.1-3 on public longitudinal data.

Data and models: tests/reference/make_more_reference.R (nlme::Orthodont,
nlme::Oxboys, datasets::ChickWeight, nlme::BodyWeight; random intercepts,
correlated and uncorrelated slopes, quadratic growth, a 3-4 level factor and
its interaction with time, REML and ML). R is not needed: the values are in
lme4_more_reference.json, the data in the CSVs beside it.

Tolerances are those of test_model_reference.py (relative unless stated):
fixed effects, standard errors, variance components, sigma 1e-4; Satterthwaite
df 1e-3; p-values 1e-2; log-likelihood within 1e-6 or higher than lme4's;
BLUPs and conditional variances 1e-3.

Exceptions (``LOOSE``): where lme4's optimizer stopped short of the optimum,
our log-likelihood is *higher* and the estimates differ by more than 1e-4.
For those fits ``test_engine_at_lme4_theta`` shows that the difference is the
optimum only: evaluated at lme4's own theta, our deviance, beta, SE, sigma and
Satterthwaite df reproduce lme4's to ~1e-10 (df ~1e-5) in every case.

Known engine failure (``ENGINE_BUG``, xfail strict): the ChickWeight quadratic
model with a 3x3 random-effects covariance ends at a boundary local minimum
(intercept SD = 0) whose deviance is 48 worse than lme4's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import compare, fit_growth
from pipeline.model.deviance import ProfiledDeviance
from pipeline.model.inference import satterthwaite

REF_DIR = Path(__file__).parent / "reference"
REF = json.loads((REF_DIR / "lme4_more_reference.json").read_text())
CASES = sorted(k for k, v in REF.items() if isinstance(v, dict) and "formula" in v)

BASE = {"estimate": 1e-4, "df": 1e-3, "p": 1e-2, "blup": 1e-3}
# lme4 stops short (its log-likelihood is lower than ours): wider tolerances on the
# estimates; the loglik test still asserts ours >= lme4's. dLL = ours - lme4's.
LOOSE: dict[str, dict[str, float]] = {
    # dLL = +2.8e-6; lme4 gives no warning; VC (correlation) differs by 3.2e-3,
    # BLUPs/condvar by 1.9e-3, p of the intercept (1.9e-13) by 1.2e-2
    "orthodont_slope_reml": {"estimate": 5e-3, "df": 1e-3, "p": 3e-2, "blup": 5e-3},
    # 3x3 covariance, flat surface: |dLL| <= 4e-8 (1e-10 relative) yet VC differ by
    # 2.3e-4 (ML) / 1.0e-4 (uncorrelated REML); p of the intercept (1e-35) by 1.8e-2
    "oxboys_quadratic_full_ml": {"estimate": 5e-4, "df": 1e-3, "p": 5e-2, "blup": 1e-3},
    "oxboys_quadratic_uncorrelated_reml": {"estimate": 3e-4, "df": 1e-3, "p": 1e-2, "blup": 1e-3},
    # lme4 warns "failed to converge, max|grad| = 0.015 / 0.0021 / 0.0041"; dLL = +1.1e-4 /
    # +5.9e-6 / +2.6e-5. The design is balanced (16 rats x 11 days), so at the REML optimum the
    # between-rat terms have df = 16 - 3 = 13 exactly: ours 12.9999, lme4 13.109
    "bodyweight_diet_reml": {"estimate": 1e-2, "df": 2e-2, "p": 0.3, "blup": 2e-3},
    "bodyweight_diet_ml": {"estimate": 2e-3, "df": 5e-3, "p": 0.1, "blup": 1e-3},
    "bodyweight_uncorrelated_reml": {"estimate": 5e-3, "df": 1e-2, "p": 0.2, "blup": 1e-3},
    # the quadratic ChickWeight fits: ours is the lower deviance: dLL = +1.8e-5 (REML) / +2.8e-4 (ML, lme4 warns max|grad| = 0.018)
    "chickweight_quadratic_singular_reml": {"estimate": 5e-3, "df": 5e-3, "p": 0.2, "blup": 5e-3},
    "chickweight_quadratic_singular_ml": {"estimate": 2e-2, "df": 1e-2, "p": 0.5, "blup": 1e-2},
}
# lme4 calls the ML fit non-singular (theta for I(Time^2) = 3.1e-4, just above its 1e-4
# tolerance) but stops with max|grad| = 0.018; the optimum (2.8e-4 lower deviance) is at zero
SINGULAR = {"chickweight_quadratic_singular_ml": True}
# Formerly engine failures, fixed by starting from per-person OLS moments as well
# as the identity and keeping the lower deviance (see optimize_multistart).
ENGINE_BUG: dict[str, str] = {}
# fits that agree with lme4 but whose optimizer record says "not converged"
# Formerly flagged "not converged" by a noisy Newton decrement; the five-point
# gradient at the end fixed it.
CONVERGENCE_FALSE_ALARM: dict[str, str] = {}


def cases(xfail: dict[str, str]) -> list:
    return [
        pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=xfail[k])) if k in xfail else k
        for k in CASES
    ]


def tol(case: str, what: str) -> float:
    return LOOSE.get(case, BASE)[what]


@pytest.fixture(scope="module")
def data() -> dict[str, pl.DataFrame]:
    return {
        name: pl.read_csv(
            REF_DIR / spec["file"], schema_overrides={c: pl.String for c in spec["character"]}
        )
        for name, spec in REF["datasets"].items()
    }


@pytest.fixture(scope="module")
def fits(data):
    return {
        k: fit_growth(data[REF[k]["data"]], REF[k]["formula"], reml=REF[k]["REML"]) for k in CASES
    }


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("case", cases(ENGINE_BUG))
def test_fixed_effects_and_satterthwaite(fits, case):
    ref = REF[case]
    fe = fits[case].fixed_effects
    assert fe["term"].to_list() == list(ref["fixef"])
    for row in fe.iter_rows(named=True):
        term = row["term"]
        assert rel(row["estimate"], ref["fixef"][term]) < tol(case, "estimate"), term
        assert rel(row["std_error"], ref["se"][term]) < tol(case, "estimate"), term
        assert rel(row["df"], ref["df_satterthwaite"][term]) < tol(case, "df"), term
        assert rel(row["p_value"], ref["p_satterthwaite"][term]) < tol(case, "p"), term
        assert row["conf_low"] < row["estimate"] < row["conf_high"]


@pytest.mark.parametrize("case", cases(ENGINE_BUG))
def test_variance_components(fits, case):
    ref = REF[case]
    vc = fits[case].variance_components
    assert vc.height == len(ref["varcorr"])
    for mine, theirs in zip(vc.iter_rows(named=True), ref["varcorr"], strict=True):
        assert mine["group"] == theirs["grp"]
        assert mine["term1"] == theirs["var1"]
        assert mine["term2"] == theirs["var2"]
        assert rel(mine["variance"], theirs["vcov"]) < tol(case, "estimate")
        assert rel(mine["sd_cor"], theirs["sdcor"]) < tol(case, "estimate")
    assert rel(fits[case].sigma, ref["sigma"]) < tol(case, "estimate")


@pytest.mark.parametrize("case", cases(ENGINE_BUG))
def test_likelihood_and_information_criteria(fits, case):
    ref = REF[case]
    fit = fits[case]
    singular = SINGULAR.get(case, ref["singular"])
    assert fit.loglik >= ref["logLik"] - 1e-6 * abs(ref["logLik"])
    assert rel(fit.loglik, ref["logLik"]) < 1e-6
    assert rel(fit.deviance, ref["deviance_or_REMLcrit"]) < 1e-6
    assert rel(fit.aic, ref["AIC"]) < 1e-6
    assert rel(fit.bic, ref["BIC"]) < 1e-6
    assert fit.nobs == ref["nobs"]
    assert fit.ngroups == ref["ngroups"][ref["ranef_group"]]
    assert fit.singular == singular
    assert fit.optimization.boundary == singular


@pytest.mark.parametrize("case", cases({**ENGINE_BUG, **CONVERGENCE_FALSE_ALARM}))
def test_optimizer_reports_convergence(fits, case):
    assert fits[case].converged
    assert fits[case].optimization.converged


@pytest.mark.parametrize("case", cases(ENGINE_BUG))
def test_blups_and_conditional_variances(fits, case):
    ref = REF[case]
    fit = fits[case]
    re = fit.random_effects
    group = ref["ranef_group"]
    names = list(fit.random_terms)
    t = tol(case, "blup")
    for row, condvar in zip(ref["ranef_first5"], ref["ranef_condvar_first5"], strict=True):
        mine = re.filter(pl.col(group) == row["id"])  # by id: lme4 orders rows by factor level
        assert mine.height == 1
        values = [v for k, v in row.items() if k != "id"]
        for name, v in zip(names, values, strict=True):
            assert abs(mine[name][0] - v) <= t * max(1.0, abs(v)), (row["id"], name)
        k = fit.design.group_levels.to_list().index(row["id"])
        cv = np.atleast_1d(np.asarray(condvar, dtype=float))
        # (x || g): lme4 gives one postVar per term, i.e. only the diagonal
        ours = np.diag(fit.condvar[k]) if ref["ranef_condvar_diagonal_only"] else fit.condvar[k]
        np.testing.assert_allclose(np.ravel(ours), cv, rtol=t, atol=1e-6)
        for a, name in enumerate(names):
            assert mine[f"condvar_{name}"][0] == pytest.approx(fit.condvar[k][a, a])


@pytest.mark.parametrize("case", CASES)
def test_engine_at_lme4_theta(fits, case):
    """Same objective and inference as lme4/lmerTest: evaluated at lme4's theta, the
    engine reproduces lme4's criterion, beta, SE, sigma and Satterthwaite df, so any
    difference in the tests above is where the optimizers stopped."""
    ref = REF[case]
    fit = fits[case]
    dev = ProfiledDeviance(fit.stats, fit.design.theta_index, reml=fit.reml)
    theta = np.atleast_1d(np.asarray(ref["theta"], dtype=float))
    sol = dev.solve(theta)
    sigma = dev.sigma(sol)
    assert rel(dev.criterion(sol), ref["deviance_or_REMLcrit"]) < 1e-9
    assert rel(sigma, ref["sigma"]) < 1e-8
    inference = satterthwaite(dev, theta, sigma)
    p = len(sol.beta)
    for j, term in enumerate(fit.design.fixed_names):
        assert rel(sol.beta[j], ref["fixef"][term]) < 1e-8, term
        assert rel(np.sqrt(inference.vcov_beta[j, j]), ref["se"][term]) < 1e-8, term
        assert rel(inference.df(np.eye(p)[j]), ref["df_satterthwaite"][term]) < 1e-4, term


def test_quadratic_singular_fit_is_singular_in_lme4():
    assert REF["chickweight_quadratic_singular_reml"]["singular"]
    assert REF["chickweight_quadratic_singular_reml"]["theta"][-1] == 0


def test_likelihood_ratio_test_matches_anova(data):
    ref = REF["lrt"]["orthodont_sex_vs_growth"]
    small = fit_growth(data[ref["data"]], ref["small"])
    big = fit_growth(data[ref["data"]], ref["big"])
    table = compare(small, big)
    assert table["npar"].to_list() == [6, 8]
    assert rel(table["chisq"][1], ref["chisq"]) < 1e-5
    assert table["df"][1] == ref["df"]
    assert rel(table["p_value"][1], ref["p"]) < 1e-4
    assert rel(table["loglik"][0], ref["logLik_small"]) < 1e-8
    assert rel(table["loglik"][1], ref["logLik_big"]) < 1e-8
