"""The fast engine against lme4 1.1-31 / lmerTest 3.1-3 (tests/reference/).

Tolerances, per quantity (relative unless stated):
- fixed effects, standard errors, variance components, sigma: 1e-4
  (lme4's BOBYQA stops a little short of the optimum: our log-likelihood is
  equal or higher, and the estimates differ by up to 7e-5);
- Satterthwaite df: 1e-3; p-values: 1e-2 relative (they inherit the df's error
  through the t tail, where 1e-5 in df moves p by up to 1e-3);
- log-likelihood: within 1e-6 relative, or higher than lme4's;
- BLUPs and their conditional variances: 1e-3 relative (or 1e-3 absolute near zero).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import compare, fit_growth

REF_DIR = Path(__file__).parent / "reference"
REF = json.loads((REF_DIR / "lme4_reference.json").read_text())
CASES = sorted(k for k in REF if k != "lrt")


@pytest.fixture(scope="module")
def data() -> dict[str, pl.DataFrame]:
    return {
        "sleepstudy": pl.read_csv(
            REF_DIR / "sleepstudy.csv", schema_overrides={"Subject": pl.String}
        ),
        "early": pl.read_csv(REF_DIR / "early.csv", schema_overrides={"id": pl.String}),
    }


@pytest.fixture(scope="module")
def fits(data):
    return {
        k: fit_growth(data[REF[k]["data"]], REF[k]["formula"], reml=REF[k]["REML"]) for k in CASES
    }


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("case", CASES)
def test_fixed_effects_and_satterthwaite(fits, case):
    ref = REF[case]
    fe = fits[case].fixed_effects
    assert fe["term"].to_list() == list(ref["fixef"])
    for row in fe.iter_rows(named=True):
        term = row["term"]
        assert rel(row["estimate"], ref["fixef"][term]) < 1e-4, term
        assert rel(row["std_error"], ref["se"][term]) < 1e-4, term
        assert rel(row["df"], ref["df_satterthwaite"][term]) < 1e-3, term
        assert rel(row["p_value"], ref["p_satterthwaite"][term]) < 1e-2, term
        assert row["conf_low"] < row["estimate"] < row["conf_high"]


@pytest.mark.parametrize("case", CASES)
def test_variance_components(fits, case):
    ref = REF[case]
    vc = fits[case].variance_components
    assert vc.height == len(ref["varcorr"])
    for mine, theirs in zip(vc.iter_rows(named=True), ref["varcorr"], strict=True):
        assert mine["group"] == theirs["grp"]
        assert mine["term1"] == theirs["var1"]
        assert mine["term2"] == theirs["var2"]
        assert rel(mine["variance"], theirs["vcov"]) < 1e-4
        assert rel(mine["sd_cor"], theirs["sdcor"]) < 1e-4
    assert rel(fits[case].sigma, ref["sigma"]) < 1e-4


@pytest.mark.parametrize("case", CASES)
def test_likelihood_and_information_criteria(fits, case):
    ref = REF[case]
    fit = fits[case]
    assert fit.loglik >= ref["logLik"] - 1e-6 * abs(ref["logLik"])
    assert rel(fit.loglik, ref["logLik"]) < 1e-6
    assert rel(fit.deviance, ref["deviance_or_REMLcrit"]) < 1e-6
    assert rel(fit.aic, ref["AIC"]) < 1e-6
    assert rel(fit.bic, ref["BIC"]) < 1e-6
    assert fit.nobs == ref["nobs"]
    assert fit.ngroups == ref["ngroups"][ref["ranef_group"]]
    assert fit.singular == ref["singular"]
    assert fit.converged
    assert fit.optimization.converged
    assert fit.optimization.boundary == ref["singular"]


@pytest.mark.parametrize("case", CASES)
def test_blups_and_conditional_variances(fits, case):
    ref = REF[case]
    fit = fits[case]
    re = fit.random_effects
    group = ref["ranef_group"]
    names = list(fit.random_terms)
    for row, condvar in zip(ref["ranef_first5"], ref["ranef_condvar_first5"], strict=True):
        mine = re.filter(pl.col(group) == row["id"])
        assert mine.height == 1
        values = [v for k, v in row.items() if k != "id"]
        for name, v in zip(names, values, strict=True):
            assert abs(mine[name][0] - v) <= 1e-3 * max(1.0, abs(v)), (row["id"], name)
        k = fit.design.group_levels.to_list().index(row["id"])
        cv = np.atleast_1d(np.asarray(condvar, dtype=float))
        np.testing.assert_allclose(fit.condvar[k].ravel(), cv, rtol=1e-3, atol=1e-6)
        for a, name in enumerate(names):
            assert mine[f"condvar_{name}"][0] == pytest.approx(fit.condvar[k][a, a])


def test_early_conditional_model_is_a_boundary_fit(fits):
    fit = fits["early_trt_reml"]
    assert fit.singular
    cor = fit.variance_components.filter(pl.col("term2").is_not_null())["sd_cor"][0]
    assert cor == pytest.approx(-1.0, abs=1e-8)
    assert any(fit.optimization.at_bound)
    assert "boundary" in fit.optimization.message


def test_likelihood_ratio_test_matches_anova(data):
    ref = REF["lrt"]["early_trt_vs_growth"]
    small = fit_growth(data["early"], ref["small"])
    big = fit_growth(data["early"], ref["big"])
    table = compare(small, big)
    assert table["npar"].to_list() == [6, 8]
    assert rel(table["chisq"][1], ref["chisq"]) < 1e-5
    assert table["df"][1] == ref["df"]
    assert rel(table["p_value"][1], ref["p"]) < 1e-4
    # anova() refits by ML: the log-likelihoods are the ML ones
    assert rel(table["loglik"][0], REF["early_growth_ml"]["logLik"]) < 1e-8
    assert rel(table["loglik"][1], REF["early_trt_ml"]["logLik"]) < 1e-8


def test_ml_refit_reuses_the_statistics_and_matches(data, fits):
    reml = fits["sleepstudy_growth_reml"]
    ml = reml.refit(reml=False)
    assert not ml.reml
    assert ml.stats is reml.stats
    assert rel(ml.loglik, REF["sleepstudy_growth_ml"]["logLik"]) < 1e-8
