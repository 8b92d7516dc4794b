"""Likelihood-ratio tests between nested models (pipeline.analysis.comparison): nesting from
the fixed and the random part, the chi-bar-square reference distributions, the public
compare() and the report's table as one implementation, and the type-I error of the
mixture test by simulation."""

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pipeline import fit_growth
from pipeline.analysis.comparison import (
    Compared,
    chi_bar_square_p_value,
    compare,
    likelihood_ratio_tests,
    mixture_p_value,
    nesting,
)
from pipeline.errors import ModelError

REFERENCE = Path(__file__).parent / "reference"
R = json.loads((REFERENCE / "analysis_reference.json").read_text())


@pytest.fixture(scope="module")
def early():
    frame = pl.read_csv(REFERENCE / "early.csv", schema_overrides={"id": pl.String})
    formulas = {
        "means": "cog ~ 1 + (1 | id)",
        "ri": "cog ~ age1 + (1 | id)",
        "growth": "cog ~ age1 + (age1 | id)",
        "conditional": "cog ~ age1 * trt + (age1 | id)",
        "uncorrelated": "cog ~ age1 * trt + (age1 || id)",
        "spelled_out": "cog ~ age1 + trt + age1:trt + (age1 | id)",
    }
    return {name: fit_growth(frame, formula) for name, formula in formulas.items()}


def test_mixture_p_values_by_hand():
    # 0.5 * P(chi2_1 > 3) + 0.5 * P(chi2_2 > 3) = 0.5 * 0.0832645 + 0.5 * exp(-1.5)
    assert mixture_p_value(3.0, 2) == pytest.approx(
        0.5 * 0.0832645 + 0.5 * math.exp(-1.5), rel=1e-6
    )
    assert mixture_p_value(3.0, 1) == pytest.approx(0.5 * 0.0832645, rel=1e-6)  # chi2(0): mass at 0
    assert mixture_p_value(0.0, 2) == 1.0
    # two uncorrelated variances: 1/4 chi2(0) + 1/2 chi2(1) + 1/4 chi2(2)
    assert chi_bar_square_p_value(3.0, df=2, variances=2) == pytest.approx(
        0.5 * 0.0832645 + 0.25 * math.exp(-1.5), rel=1e-6
    )
    assert chi_bar_square_p_value(3.0, df=2, variances=0) == pytest.approx(math.exp(-1.5))


def test_uncorrelated_is_nested_in_correlated_by_a_zero_covariance(early):
    how = nesting(early["uncorrelated"], early["conditional"])
    assert how is not None
    assert (how.df, how.reference) == (1, "chi2(1)")
    assert how.hypothesis == "covariance(s) (Intercept) with age1 = 0"
    reference = R["lrt"]["covariance"]  # lme4 anova(uncorrelated, conditional)
    table = compare(early["uncorrelated"], early["conditional"])
    assert table["chisq"][1] == pytest.approx(reference["chisq"], rel=1e-5)  # 5.392
    assert table["p_value"][1] == pytest.approx(reference["p"], rel=1e-4)  # 0.0202
    assert nesting(early["conditional"], early["uncorrelated"]) is None


def test_random_intercept_is_nested_in_random_slope_with_the_mixture(early):
    how = nesting(early["ri"], early["growth"])
    assert (how.df, how.reference) == (2, "50:50 mixture chi2(1):chi2(2)")
    assert how.hypothesis == "variance of the random effect(s) age1 = 0 (with their covariances)"
    table = compare(early["growth"], early["ri"])  # either order
    reference = R["lrt"]["random_slope"]
    assert table["model"].to_list() == ["cog ~ age1 + (1 | id)", "cog ~ age1 + (age1 | id)"]
    assert table["chisq"][1] == pytest.approx(reference["chisq"], rel=1e-5)  # 1.626
    # compare() used to give chi2(2): 0.443; the variance is on the boundary: 0.323
    assert table["p_value"][1] == pytest.approx(reference["p_mixture"], rel=1e-5)
    assert table.columns == [
        "model", "npar", "aic", "bic", "loglik", "deviance", "chisq", "df", "p_value",
    ]  # fmt: skip


def test_means_model_in_growth_model_adds_a_fixed_effect_and_a_variance(early):
    how = nesting(early["means"], early["growth"])
    assert (how.df, how.reference) == (3, "50:50 mixture chi2(2):chi2(3)")
    assert how.hypothesis.startswith(
        "fixed effect(s) age1 = 0; variance of the random effect(s) age1"
    )
    chisq = 2 * (early["growth"].refit(reml=False).loglik - early["means"].refit(reml=False).loglik)
    assert how.p_value(chisq) == pytest.approx(
        0.5 * stats.chi2.sf(chisq, 2) + 0.5 * stats.chi2.sf(chisq, 3)
    )


def test_models_that_are_not_nested_are_refused_with_the_reason(early):
    # growth (correlated) vs uncorrelated with more fixed effects: neither nested in the other
    assert nesting(early["growth"], early["uncorrelated"]) is None
    assert nesting(early["uncorrelated"], early["growth"]) is None
    with pytest.raises(ModelError) as error:
        compare(early["growth"], early["uncorrelated"])
    assert str(error.value) == (
        "'cog ~ age1 + (age1 | id)' is not nested in 'cog ~ age1 * trt + (age1 || id)': the first "
        "has random-effect covariance(s) ['(Intercept) with age1'] that the second sets to 0; a "
        "likelihood-ratio test needs nested models (compare AIC/BIC instead)"
    )


def test_the_same_model_written_twice_is_not_a_test(early):
    assert nesting(early["conditional"], early["spelled_out"]) is None
    with pytest.raises(ModelError, match="as many parameters"):
        compare(early["conditional"], early["spelled_out"])


def test_different_data_are_refused():
    frame = pl.read_csv(REFERENCE / "early.csv", schema_overrides={"id": pl.String})
    small = fit_growth(frame.filter(pl.col("age") < 2), "cog ~ 1 + (1 | id)")
    big = fit_growth(frame, "cog ~ age1 + (1 | id)")
    with pytest.raises(ModelError, match="different numbers of observations"):
        compare(small, big)


def test_table_tests_every_covering_pair_whatever_the_order(early):
    entries = [
        Compared(name, early[name].refit(reml=False))
        for name in ("uncorrelated", "conditional", "growth", "ri", "means")
    ]
    table = likelihood_ratio_tests(entries)
    pairs = {(row["model"], row["against"]) for row in table.iter_rows(named=True)}
    assert pairs == {
        ("conditional", "uncorrelated"),
        ("conditional", "growth"),
        ("growth", "ri"),
        ("uncorrelated", "ri"),
        ("ri", "means"),
    }
    # one implementation: the table's numbers are compare()'s
    row = table.filter(pl.col("model") == "growth").row(0, named=True)
    public = compare(early["ri"], early["growth"])
    assert row["chisq"] == pytest.approx(public["chisq"][1], rel=1e-12)
    assert row["p_value"] == pytest.approx(public["p_value"][1], rel=1e-12)


def _random_slope_p_values(replicates, persons, waves, seed):
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(persons), waves).astype(str)
    t = np.tile(np.arange(waves, dtype=float), persons)
    p_values = []
    for _ in range(replicates):
        y = 1.0 + 0.5 * t + np.repeat(rng.normal(0, 1, persons), waves) + rng.normal(0, 1, t.size)
        frame = pl.DataFrame({"pid": pid, "t": t, "y": y})
        small = fit_growth(frame, "y ~ t + (1 | pid)", reml=False)
        big = fit_growth(frame, "y ~ t + (t | pid)", reml=False)
        how = nesting(small, big)
        p_values.append(how.p_value(max(0.0, 2 * (big.loglik - small.loglik))))
    return np.array(p_values)


def _within_monte_carlo_error(rejections, replicates, alpha=0.05):
    low, high = stats.binom.ppf([0.0005, 0.9995], replicates, alpha)  # 99.9% band
    return low <= rejections <= high


def test_type_one_error_of_the_random_slope_test_quick():
    """No slope variance in truth: the mixture test rejects about 5% (80 replicates)."""
    p = _random_slope_p_values(80, persons=30, waves=4, seed=11)
    assert _within_monte_carlo_error(int(np.sum(p < 0.05)), 80)


@pytest.mark.slow
def test_type_one_error_of_the_random_slope_test():
    """1000 replicates of 50 persons x 5 waves with a random intercept only: the mixture test
    rejects within Monte Carlo error of 5% (chi2(2) would be conservative)."""
    p = _random_slope_p_values(1000, persons=50, waves=5, seed=12)
    rejections = int(np.sum(p < 0.05))
    assert _within_monte_carlo_error(rejections, 1000), rejections / 1000
