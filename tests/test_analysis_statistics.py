"""Hand-computed checks of the analysis building blocks on small data."""

import math
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pipeline.analysis.adequacy import sample_size_table
from pipeline.analysis.assumptions import heterogeneity_check, normality_check, qq_theoretical
from pipeline.analysis.comparison import Compared, comparison_table, holm, mixture_p_value
from pipeline.analysis.equations import level_equations
from pipeline.analysis.icc import icc_interval, icc_table
from pipeline.analysis.reliability import PersonOls, per_person_ols, reliability_table
from pipeline.analysis.variance_explained import nakagawa_r2, pseudo_r2_rows

# ------------------------------------------------------------------ ICC


def test_icc_interval_matches_searle_formula_on_balanced_data():
    # 3 persons x 2 occasions: means 1.5, 11.5, 21.5; SSB = 400 (MSB 200), SSW = 1.5 (MSW 0.5): F = 400
    values = np.array([1.0, 2.0, 11.0, 12.0, 21.0, 22.0])
    groups = np.array(["a", "a", "b", "b", "c", "c"])
    interval = icc_interval(values=values, groups=groups)
    assert interval.f_statistic == pytest.approx(400.0)
    assert (interval.df_between, interval.df_within, interval.n0) == (2, 3, 2.0)
    f_hi, f_lo = 16.044106, 0.025349  # F(2, 3) quantiles 0.975 and 0.025
    assert interval.conf_low == pytest.approx(
        (400 / f_hi - 1) / (400 / f_hi + 1), abs=1e-5
    )  # 0.92287
    assert interval.conf_high == pytest.approx(
        (400 / f_lo - 1) / (400 / f_lo + 1), abs=1e-5
    )  # 0.99987
    assert interval.conf_low == pytest.approx(0.92287, abs=1e-4)


def test_icc_interval_is_clipped_at_zero_without_between_variance():
    values = np.array([1.0, 3.0, 1.0, 3.0, 1.0, 3.0])
    interval = icc_interval(values=values, groups=np.repeat([1, 2, 3], 2))
    assert interval.f_statistic == 0.0
    assert interval.conf_low == 0.0 and interval.conf_high == 0.0


def test_icc_table_reads_variance_components():
    components = pl.DataFrame(
        {
            "group": ["id", "Residual"],
            "term1": ["(Intercept)", None],
            "term2": [None, None],
            "variance": [3.0, 1.0],
            "sd_cor": [math.sqrt(3.0), 1.0],
        }
    )
    values = np.array([1.0, 2.0, 11.0, 12.0, 21.0, 22.0])
    table = icc_table(
        model="m",
        variance_components=components,
        values=values,
        groups=np.repeat([1, 2, 3], 2),
        outcome="y",
    )
    assert table["icc"][0] == pytest.approx(0.75)
    assert "75.0% of the total variance of y lies between persons" in table["interpretation"][0]


# ------------------------------------------------------------------ comparison


def test_mixture_p_value_by_hand():
    # 0.5 * P(chi2_1 > 3) + 0.5 * P(chi2_2 > 3) = 0.5 * 0.0832645 + 0.5 * exp(-1.5)
    assert mixture_p_value(3.0, 2) == pytest.approx(
        0.5 * 0.0832645 + 0.5 * math.exp(-1.5), rel=1e-6
    )
    # df 1: chi2(0) is the point mass at 0
    assert mixture_p_value(3.0, 1) == pytest.approx(0.5 * 0.0832645, rel=1e-6)
    assert mixture_p_value(0.0, 2) == 1.0


def test_holm_step_down():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    adjusted = holm([0.02, float("nan")])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])


def _fit(loglik, fixed, random, theta):
    return SimpleNamespace(
        loglik=loglik,
        beta=np.zeros(len(fixed)),
        theta=np.zeros(theta),
        nobs=100,
        response="y",
        fixed_terms=tuple(fixed),
        random_terms=tuple(random),
    )


def test_comparison_table_chain_and_tests():
    means = _fit(-500.0, ["(Intercept)"], ["(Intercept)"], 1)  # npar 3
    fixed_slope = _fit(-490.0, ["(Intercept)", "t"], ["(Intercept)"], 1)  # npar 4
    random_slope = _fit(-488.5, ["(Intercept)", "t"], ["(Intercept)", "t"], 3)  # npar 6
    conditional = _fit(-480.0, ["(Intercept)", "t", "g", "t:g"], ["(Intercept)", "t"], 3)  # npar 8
    table = comparison_table(
        [
            Compared("means", means),
            Compared("fixed", fixed_slope),
            Compared("random", random_slope),
            Compared("conditional", conditional),
        ]
    )
    rows = {row["model"]: row for row in table.iter_rows(named=True)}
    assert rows["means"]["chisq"] is None and rows["means"]["deviance"] == 1000.0
    assert rows["means"]["aic"] == 1006.0 and rows["means"]["bic"] == pytest.approx(
        1000 + 3 * math.log(100)
    )
    assert (rows["fixed"]["chisq"], rows["fixed"]["df"], rows["fixed"]["test"]) == (20.0, 1, "LRT")
    assert rows["fixed"]["p_value"] == pytest.approx(stats.chi2.sf(20.0, 1))
    assert rows["random"]["against"] == "fixed"
    assert rows["random"]["test"] == "LRT, 50:50 mixture chi2(1):chi2(2)"
    assert rows["random"]["p_value"] == pytest.approx(
        0.5 * 0.0832645 + 0.5 * math.exp(-1.5), rel=1e-6
    )
    assert (rows["conditional"]["chisq"], rows["conditional"]["df"]) == (17.0, 2)
    assert rows["conditional"]["test"] == "LRT"


def test_comparison_skips_models_that_are_not_nested():
    a = _fit(-500.0, ["(Intercept)", "x"], ["(Intercept)"], 1)
    b = _fit(-495.0, ["(Intercept)", "z", "w"], ["(Intercept)"], 1)
    table = comparison_table([Compared("a", a), Compared("b", b)])
    assert table["against"].to_list() == [None, None]


# ------------------------------------------------------------------ variance explained


def _components(intercept, slope, residual):
    return pl.DataFrame(
        {
            "group": ["id", "id", "id", "Residual"],
            "term1": ["(Intercept)", "t", "(Intercept)", None],
            "term2": [None, None, "t", None],
            "variance": [intercept, slope, 0.1, residual],
            "sd_cor": [0.0, 0.0, 0.1, 0.0],
        }
    )


def test_pseudo_r2_is_the_proportional_reduction():
    table = pseudo_r2_rows(
        model="conditional",
        reference="growth",
        model_components=_components(6.0, 1.5, 2.0),
        reference_components=_components(8.0, 2.0, 2.5),
    )
    reduced = dict(zip(table["component"], table["proportion_reduced"], strict=True))
    assert reduced == pytest.approx(
        {"id: (Intercept)": 0.25, "id: t": 0.25, "Residual (within-person)": 0.2}
    )
    residual_only = pseudo_r2_rows(
        model="g",
        reference="m",
        model_components=_components(6.0, 1.0, 2.0),
        reference_components=_components(8.0, 2.0, 4.0),
        residual_only=True,
    )
    assert residual_only["component"].to_list() == ["Residual (within-person)"]
    assert residual_only["proportion_reduced"][0] == pytest.approx(0.5)


def test_nakagawa_r2_with_random_slopes_by_hand():
    # var(Xb) = 1; z'Sz = 2, 4, 8 -> mean 14/3; sigma2 = 1; total 20/3
    marginal, conditional = nakagawa_r2(
        fixed_prediction=np.array([1.0, 2.0, 3.0]),
        random_design=np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]]),
        covariance=np.array([[2.0, 0.5], [0.5, 1.0]]),
        sigma2=1.0,
    )
    assert marginal == pytest.approx(0.15)
    assert conditional == pytest.approx(0.85)


# ------------------------------------------------------------------ reliability and H


def test_per_person_ols_and_reliability_by_hand():
    persons = np.array(["p1"] * 3 + ["p2"] * 3 + ["p3"])
    time = np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0])
    y = np.array([1.0, 2.0, 3.0, 2.0, 2.0, 5.0, 7.0])
    ols = per_person_ols(persons=persons, time=time, outcome=y, order=1)
    assert ols.persons.tolist() == ["p1", "p2"]  # p3 has one occasion: no OLS line
    np.testing.assert_allclose(ols.coefficients, [[1.0, 1.0], [1.5, 1.5]])
    np.testing.assert_allclose(ols.residual_ss, [0.0, 1.5], atol=1e-12)
    # X'X = [[3, 3], [3, 5]] -> inverse diag 5/6, 1/2; sigma2 = 1
    table = reliability_table(
        ols=ols,
        coefficient_names=["(Intercept)", "t"],
        tau=[1.0, 0.5],
        gamma=[1.25, 1.25],
        sigma2=1.0,
    )
    rows = {row["coefficient"]: row for row in table.iter_rows(named=True)}
    assert rows["(Intercept)"]["reliability"] == pytest.approx(1 / (1 + 5 / 6))
    assert rows["t"]["reliability"] == pytest.approx(0.5)
    assert rows["(Intercept)"]["chisq"] == pytest.approx(0.125 / (5 / 6))
    assert rows["t"]["chisq"] == pytest.approx(0.125 / 0.5)
    assert rows["t"]["df"] == 1
    assert rows["t"]["p_value"] == pytest.approx(stats.chi2.sf(0.25, 1))


def test_reliability_skips_fixed_coefficients():
    ols = per_person_ols(
        persons=np.repeat([1, 2], 3), time=np.tile([0.0, 1, 2], 2), outcome=np.arange(6.0), order=1
    )
    table = reliability_table(
        ols=ols, coefficient_names=["(Intercept)", "t"], tau=[1.0, None], gamma=[0, 0], sigma2=1
    )
    assert table["coefficient"].to_list() == ["(Intercept)"]


def test_hlm_h_statistic_by_hand():
    # s2 = 1 and 4 on f = 2 df each: pooled log = ln 2, d = -ln 2 and ln 2, H = 2 (ln 2)^2 on 1 df
    ols = PersonOls(
        persons=np.array(["a", "b"]),
        coefficients=np.zeros((2, 2)),
        xtx_inverse=np.zeros((2, 2, 2)),
        residual_ss=np.array([2.0, 8.0]),
        occasions=np.array([4, 4]),
    )
    row = heterogeneity_check(ols, parameters=2)
    assert row["statistic"] == pytest.approx(2 * math.log(2) ** 2)
    assert row["p_value"] == pytest.approx(stats.chi2.sf(2 * math.log(2) ** 2, 1))
    assert "no evidence" in row["verdict"]


# ------------------------------------------------------------------ assumptions


def test_qq_theoretical_uses_blom_positions_in_input_order():
    q = qq_theoretical(np.array([3.0, 1.0, 2.0]))
    expected = stats.norm.ppf((np.array([3, 1, 2]) - 0.375) / 3.25)
    np.testing.assert_allclose(q, expected)
    assert q[2] == pytest.approx(0.0)


def test_normality_check_verdicts():
    rng = np.random.default_rng(1)
    normal = normality_check(rng.normal(size=200), check="c", what="x")
    assert normal["p_value"] > 0.05 and "consistent with a normal" in normal["verdict"]
    skewed = normality_check(rng.exponential(size=200), check="c", what="x")
    assert skewed["p_value"] < 0.001 and "clear departure" in skewed["verdict"]
    large = normality_check(rng.normal(size=6000), check="c", what="x")
    assert "sample of 5000 of the 6000" in large["verdict"]
    # deterministic: the same data give the same statistic
    data = rng.normal(size=6000)
    assert (
        normality_check(data, check="c", what="x")["statistic"]
        == normality_check(data, check="c", what="x")["statistic"]
    )


# ------------------------------------------------------------------ sample size


def test_sample_size_warnings_carry_their_numbers():
    occasions = np.array([1, 1, 1, 2, 2, 3, 3, 4])
    table = sample_size_table(
        occasions_per_person=occasions, persons_per_group={"A": 5, "B": 3}, group_name="g"
    )
    rows = {row["check"]: row for row in table.iter_rows(named=True)}
    assert rows["persons for fixed effects"]["status"] == "warning"
    assert rows["persons for fixed effects"]["message"].startswith("8 persons; fewer than 10")
    assert rows["persons for variance components"]["status"] == "warning"
    assert rows["share of persons with 3 or more occasions"]["value"] == pytest.approx(3 / 8)
    assert rows["share of persons with 3 or more occasions"]["status"] == "warning"
    assert rows["share of persons with a single occasion"]["value"] == pytest.approx(3 / 8)
    assert "3 of 8 persons (38%)" in rows["share of persons with a single occasion"]["message"]
    assert rows["persons in the smallest g category"]["value"] == 3.0
    assert "g = B has only 3 persons" in rows["persons in the smallest g category"]["message"]
    fine = sample_size_table(occasions_per_person=np.full(40, 4))
    assert set(fine["status"]) == {"ok"}


# ------------------------------------------------------------------ level equations


def test_level_equations_from_lme4_reference_numbers():
    fixed = pl.DataFrame(
        {
            "term": ["(Intercept)", "age1", "trtY", "age1:trtY"],
            "estimate": [107.840740740738, -21.1333333333313, 6.85466155811272, 5.27126436781436],
        }
    )
    components = pl.DataFrame(
        {
            "group": ["id", "id", "id", "Residual"],
            "term1": ["(Intercept)", "age1", "(Intercept)", None],
            "term2": [None, None, "age1", None],
            "variance": [126.7610949919, 10.3221904149605, -36.172533222257, 75.492644734798],
            "sd_cor": [11.2588229843044, 3.21281658595079, -1.0, 8.6886503402311],
        }
    )
    table = level_equations(
        model="conditional_growth",
        formula="cog ~ age1 * trt + (age1 | id)",
        outcome="cog",
        fixed_effects=fixed,
        variance_components=components,
        random_terms=("(Intercept)", "age1"),
        time_terms=("age1",),
    )
    assert table["equation"].to_list() == [
        "Y_ti = pi0i + pi1i*(age1)_ti + e_ti   (Y = cog)",
        "pi0i = b00 + b01*trtY_i + r0i; b00 = 107.84, b01 = 6.8547",
        "pi1i = b10 + b11*trtY_i + r1i; b10 = -21.133, b11 = 5.2713",
        "Var(e_ti) = sigma^2 = 75.493; Var(r0i) = tau00 = 126.76; Var(r1i) = tau11 = 10.322; "
        "Cov(r0i, r1i) = tau01 = -36.173 (correlation -1.00)",
        "cog ~ age1 * trt + (age1 | id)",
    ]
    assert table["level"].to_list() == ["Level 1", "Level 2", "Level 2", "Variances", "lme4"]


def test_level_equations_put_a_time_varying_covariate_at_level_1():
    fixed = pl.DataFrame({"term": ["(Intercept)", "t", "stress"], "estimate": [1.0, 2.0, 3.0]})
    components = pl.DataFrame(
        {
            "group": ["id", "Residual"],
            "term1": ["(Intercept)", None],
            "term2": [None, None],
            "variance": [1.0, 2.0],
            "sd_cor": [1.0, 1.41],
        }
    )
    table = level_equations(
        model="m",
        formula="y ~ t + stress + (1 | id)",
        outcome="y",
        fixed_effects=fixed,
        variance_components=components,
        random_terms=("(Intercept)",),
        time_terms=("t",),
        level1_columns=["stress"],
    )
    equations = table["equation"].to_list()
    assert equations[0] == "Y_ti = pi0i + pi1i*(t)_ti + pi2i*(stress)_ti + e_ti   (Y = y)"
    assert equations[2] == "pi1i = b10; b10 = 2"  # no random slope: no r1i
    assert equations[3] == "pi2i = b20; b20 = 3"
