"""Hand-computed checks of the analysis building blocks on small data."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pipeline.analysis.adequacy import sample_size_table
from pipeline.analysis.assumptions import heterogeneity_check, normality_check, qq_theoretical
from pipeline.analysis.comparison import holm
from pipeline.analysis.equations import level_equations
from pipeline.analysis.icc import (
    icc_by_time_table,
    icc_profile_interval,
    interpret_icc,
    reml_criterion_random_intercept,
)
from pipeline.analysis.reliability import PersonOls, per_person_ols, reliability_table
from pipeline.analysis.variance_explained import nakagawa_r2, pseudo_r2_rows

# ------------------------------------------------------------------ ICC

R = json.loads((Path(__file__).parent / "reference" / "analysis_reference.json").read_text())


def _dense_reml_criterion(theta, y, persons):
    """lme4's REML criterion of y ~ 1 + (1 | person) from the dense marginal covariance."""
    n = y.size
    codes = np.unique(persons, return_inverse=True)[1]
    V = np.eye(n) + theta**2 * (codes[:, None] == codes[None, :])  # in units of sigma^2
    Vinv = np.linalg.inv(V)
    X = np.ones((n, 1))
    A = X.T @ Vinv @ X
    mu = np.linalg.solve(A, X.T @ Vinv @ y)
    r = y - X @ mu
    pwrss = float(r @ Vinv @ r)
    return (
        np.linalg.slogdet(V)[1]
        + np.log(A[0, 0])
        + (n - 1) * (1 + np.log(2 * np.pi * pwrss / (n - 1)))
    )


def test_reml_criterion_of_the_means_model_by_hand_and_against_lme4():
    y = np.array([1.0, 2.0, 4.0, 11.0, 12.0, 21.0, 22.0, 20.0])
    persons = np.array([1, 1, 1, 2, 2, 3, 3, 3])
    for theta in (0.0, 0.3, 1.7):
        assert reml_criterion_random_intercept(theta, y=y, persons=persons) == pytest.approx(
            _dense_reml_criterion(theta, y, persons), rel=1e-12
        )
    early = pl.read_csv(Path(__file__).parent / "reference" / "early.csv")
    reference = R["icc_means"]  # lme4's devFunOnly REML criterion
    for theta, value in ((0.0, "criterion_at_0"), (1.0, "criterion_at_1")):
        assert reml_criterion_random_intercept(
            theta, y=early["cog"].to_numpy(), persons=early["id"].to_numpy()
        ) == pytest.approx(reference[value], rel=1e-12)


def test_icc_profile_interval_matches_lme4s_criterion():
    early = pl.read_csv(Path(__file__).parent / "reference" / "early.csv")
    reference = R["icc_means"]
    interval = icc_profile_interval(y=early["cog"].to_numpy(), persons=early["id"].to_numpy())
    assert interval.theta == pytest.approx(reference["theta"], rel=1e-5)
    assert interval.theta_low == pytest.approx(reference["theta_low"], rel=1e-6)
    assert interval.theta_high == pytest.approx(reference["theta_high"], rel=1e-6)
    assert interval.conf_low == pytest.approx(reference["icc_low"], rel=1e-6)  # 0.2235
    assert interval.conf_high == pytest.approx(reference["icc_high"], rel=1e-6)  # 0.4692


def test_icc_interval_from_the_fits_statistics_equals_the_one_from_the_rows(monkeypatch):
    """The interval is computed from the fit's per-pattern statistics (all the data on
    partitioned runs, where the fit's rows are a sample): it must be the rows' interval,
    on the per-pattern path and on the per-person path (too many patterns)."""
    from pipeline import fit_growth
    from pipeline.model import stats as stats_module

    early = pl.read_csv(Path(__file__).parent / "reference" / "early.csv")
    # persons pooled by their number of rows: balanced, and unbalanced (1 to 3 rows each)
    short = early.filter(~((pl.col("id") % 3 == 0) & (pl.col("age") > 1.4)))
    for frame in (early, short):
        for patterns in (stats_module.MAX_PATTERNS, 0):
            monkeypatch.setattr(stats_module, "MAX_PATTERNS", patterns)
            fit = fit_growth(frame, "cog ~ 1 + (1 | id)")
            assert (fit.stats.S is None) == (patterns == 0)
            theta = float(fit.theta[0])
            rows = icc_profile_interval(
                y=frame["cog"].to_numpy(), persons=frame["id"].to_numpy(), theta=theta
            )
            got = icc_profile_interval(fit=fit, theta=theta)
            # theta is the minimiser's, flat to rounding near 1e-7; the limits solve
            # d(theta) = min d + 3.84 to 1e-12, and min d is flat in theta
            assert got.theta == pytest.approx(rows.theta, rel=1e-6)
            for field in ("theta_low", "theta_high", "conf_low", "conf_high"):
                assert getattr(got, field) == pytest.approx(getattr(rows, field), rel=1e-9), field
    # a model with another fixed effect is not the means model: the rows are used
    with_age = fit_growth(early, "cog ~ age + (1 | id)")
    rows = icc_profile_interval(y=early["cog"].to_numpy(), persons=early["id"].to_numpy())
    assert icc_profile_interval(fit=with_age).conf_high == pytest.approx(rows.conf_high, rel=1e-9)


def test_icc_interval_reaches_zero_without_between_variance():
    rng = np.random.default_rng(3)
    y = rng.normal(size=60)
    y -= np.repeat(y.reshape(20, 3).mean(axis=1), 3) - y.mean()  # equal person means
    interval = icc_profile_interval(y=y, persons=np.repeat(np.arange(20), 3))
    assert interval.theta == 0.0 and interval.conf_low == 0.0
    assert 0.0 < interval.conf_high < 0.5


def test_icc_interpretation_states_the_growth_model_caveat():
    text = interpret_icc(0.75, conf_low=0.6, conf_high=0.85, outcome="y")
    assert text.startswith("Under the unconditional means model (no change over time), 75.0%")
    assert "95% CI 60.0% to 85.0%, REML profile likelihood" in text
    assert "depends on the time" in text


def test_icc_by_time_from_the_growth_model_by_hand():
    # Sigma = [[4, -1], [-1, 1]], sigma2 = 2: at t = 0 between 4, at t = 1 4 - 2 + 1 = 3,
    # at t = 2 4 - 4 + 4 = 4
    fit = SimpleNamespace(
        design=SimpleNamespace(random_names=("(Intercept)", "t")),
        covariance=np.array([[4.0, -1.0], [-1.0, 1.0]]),
        sigma=math.sqrt(2.0),
    )
    table = icc_by_time_table(
        model="g",
        fit=fit,
        time_terms=("t",),
        occasions=("w1", "w2", "w3"),
        times=(10.0, 11.0, 12.0),
        coded=(0.0, 1.0, 2.0),
    )
    assert table["between_variance"].to_list() == pytest.approx([4.0, 3.0, 4.0])
    assert table["icc"].to_list() == pytest.approx([4 / 6, 3 / 5, 4 / 6])
    assert table["time"].to_list() == [10.0, 11.0, 12.0]


def test_holm_step_down():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    adjusted = holm([0.02, float("nan")])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])


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
        level1=True,
        level2=True,
        status_at="age = 1",
    )
    reduced = dict(zip(table["component"], table["proportion_reduced"], strict=True))
    assert reduced == pytest.approx(
        {"id: (Intercept)": 0.25, "id: t": 0.25, "Residual (within-person)": 0.2}
    )
    assert (
        table["note"][0] == "between-person variance of status at age = 1 (where time is centred)"
    )
    level2_only = pseudo_r2_rows(
        model="g",
        reference="m",
        model_components=_components(6.0, 1.0, 2.0),
        reference_components=_components(8.0, 2.0, 4.0),
        level1=False,
        level2=True,
        status_at="t = 0",
    )
    assert level2_only["component"].to_list() == ["id: (Intercept)", "id: t"]


def test_pseudo_r2_refuses_models_with_different_random_parts():
    random_intercept = pl.DataFrame(
        {
            "group": ["id", "Residual"],
            "term1": ["(Intercept)", None],
            "term2": [None, None],
            "variance": [9.0, 2.0],
            "sd_cor": [3.0, 1.4],
        }
    )
    with pytest.raises(ValueError, match="different random parts"):
        pseudo_r2_rows(
            model="ri",
            reference="growth",
            model_components=random_intercept,
            reference_components=_components(8.0, 2.0, 2.5),
            level1=True,
            level2=True,
            status_at="t = 0",
        )


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


def test_hlm_h_statistic_with_exact_moments_by_hand():
    # s2 = 1 and 4 on f = 2 df each: the bias digamma(1) - ln(1) and the variance trigamma(1)
    # = pi^2 / 6 are the same for both, so H = 2 (ln 2)^2 / (pi^2 / 6) = 0.5842.
    # Exact null: chi2(2) / 2 is Exp(1), ln(E1 / E2) is standard logistic, and
    # P(H >= 0.5842) = P(|L| >= ln 4) = 2 / (1 + 4) = 0.4.
    ols = PersonOls(
        persons=np.array(["a", "b"]),
        coefficients=np.zeros((2, 2)),
        xtx_inverse=np.zeros((2, 2, 2)),
        residual_ss=np.array([2.0, 8.0]),
        occasions=np.array([4, 4]),
    )
    row = heterogeneity_check(ols, parameters=2, seed=1)
    assert row["statistic"] == pytest.approx(2 * math.log(2) ** 2 / (math.pi**2 / 6))
    assert row["p_value"] == pytest.approx(0.4, abs=0.05)  # 999 draws: MC SE 0.016
    assert "no evidence" in row["verdict"] and "999 simulated data sets" in row["verdict"]
    assert row["verdict"].endswith("so the test has little power")  # f = 2 per person
    # seeded: the same p-value on every run
    assert heterogeneity_check(ols, parameters=2, seed=1)["p_value"] == row["p_value"]


def test_hlm_h_statistic_is_not_tested_without_residual_df():
    ols = PersonOls(
        persons=np.array(["a", "b"]),
        coefficients=np.zeros((2, 2)),
        xtx_inverse=np.zeros((2, 2, 2)),
        residual_ss=np.array([0.0, 0.0]),
        occasions=np.array([2, 2]),
    )
    row = heterogeneity_check(ols, parameters=2)
    assert row["p_value"] is None
    assert row["verdict"] == (
        "not tested: only 0 persons have more occasions than growth parameters (at least 2 are needed)"
    )


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
    assert "3 of 8 persons (37.5%)" in rows["share of persons with a single occasion"]["message"]
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
