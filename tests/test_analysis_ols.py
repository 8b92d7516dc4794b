"""OLS versus multilevel: hand-computed OLS, the CR1 and CR2 sandwiches (clubSandwich
references), the flag in both directions, and a simulation
showing that naive OLS standard errors on clustered data are too small and the multilevel
ones are not."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from scipy import stats

from pipeline import fit_growth
from pipeline.analysis.ols import cr2, ols_estimates, ols_vs_mlm_table

X = np.column_stack([np.ones(4), [0.0, 1.0, 2.0, 3.0]])
Y = np.array([1.0, 2.0, 2.0, 4.0])
GROUPS = np.array(["a", "a", "b", "b"])


def test_naive_ols_by_hand():
    ols = ols_estimates(X=X, y=Y, groups=GROUPS)
    estimate, se, p = ols.estimate, ols.se, ols.p
    # slope = 4.5 / 5 = 0.9, intercept = 2.25 - 1.35 = 0.9; residual SS 0.7 on 2 df
    np.testing.assert_allclose(estimate, [0.9, 0.9])
    assert se[1] == pytest.approx(np.sqrt(0.35 / 5.0))
    assert p[1] == pytest.approx(2 * stats.t.sf(0.9 / np.sqrt(0.07), 2))


def test_cr1_is_the_small_sample_sandwich():
    ols = ols_estimates(X=X, y=Y, groups=GROUPS)
    se_cluster, p_cluster = ols.se_cr1, ols.p_cr1
    residual = Y - X @ np.array([0.9, 0.9])
    bread = np.linalg.inv(X.T @ X)
    meat = sum(np.outer(X[g].T @ residual[g], X[g].T @ residual[g]) for g in ([0, 1], [2, 3]))
    correction = (2 / 1) * (3 / 2)  # G / (G - 1) * (N - 1) / (N - K)
    expected = np.sqrt(np.diag(correction * bread @ meat @ bread))
    np.testing.assert_allclose(se_cluster, expected)
    assert p_cluster[1] == pytest.approx(2 * stats.t.sf(0.9 / expected[1], 1))  # t on G - 1 = 1 df


R = json.loads((Path(__file__).parent / "reference" / "analysis_reference.json").read_text())


@pytest.mark.parametrize(
    ("name", "formula", "cluster"),
    [("ols_early", "cog ~ age1 * trt", "id"), ("ols_sleep", "Reaction ~ Days", "Subject")],
)
def test_cr1_and_cr2_with_bell_mccaffrey_df_match_clubsandwich(name, formula, cluster):
    reference = R[name]
    data = "early.csv" if name == "ols_early" else "sleepstudy.csv"
    frame = pl.read_csv(Path(__file__).parent / "reference" / data).with_columns(
        pl.col(cluster).cast(pl.String)
    )
    fit = fit_growth(frame, formula + f" + (1 | {cluster})")
    assert list(fit.fixed_terms) == reference["term"]
    ols = ols_estimates(X=fit.design.X, y=fit.design.y, groups=frame[cluster].to_numpy())
    np.testing.assert_allclose(ols.se_cr1, reference["se_cr1"], rtol=1e-8)  # clubSandwich CR1S
    np.testing.assert_allclose(ols.se_cr2, reference["se_cr2"], rtol=1e-8)
    np.testing.assert_allclose(ols.df_cr2, reference["df_cr2"], rtol=1e-8)
    np.testing.assert_allclose(ols.p_cr2, reference["p_cr2"], rtol=1e-6)


def test_cr2_with_singleton_clusters_is_hc2_and_its_df_by_hand():
    rng = np.random.default_rng(4)
    x = np.column_stack([np.ones(12), rng.normal(size=12)])
    y = x @ [1.0, 0.5] + rng.normal(size=12)
    residuals = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
    covariance, df = cr2(X=x, residuals=residuals, codes=np.arange(12))
    hc2 = sm.OLS(y, x).fit(cov_type="HC2").cov_params()
    np.testing.assert_allclose(covariance, hc2, rtol=1e-10)
    # Bell-McCaffrey df from the dense n x G matrix G = (I - H) [A_g X_g (X'X)^-1 c]
    bread = np.linalg.inv(x.T @ x)
    H = x @ bread @ x.T
    for j in range(2):
        c = np.eye(2)[j]
        G = np.zeros((12, 12))
        for g in range(12):
            w = (x[g] @ bread @ c) / np.sqrt(1.0 - H[g, g])
            G[:, g] = (np.eye(12) - H)[:, g] * w
        eigen = np.linalg.eigvalsh(G.T @ G)
        assert df[j] == pytest.approx(eigen.sum() ** 2 / np.sum(eigen**2), rel=1e-10)


def _mixed(p_values):
    return pl.DataFrame(
        {
            "term": ["(Intercept)", "x"],
            "estimate": [1.0, 0.4],
            "std_error": [0.2, 0.3],
            "p_value": p_values,
        }
    )


def test_flag_marks_disagreements_in_both_directions():
    rng = np.random.default_rng(1)  # naive p = 0.013 for x
    n = 60
    x = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = x @ [1.0, 0.4] + rng.normal(size=n)
    groups = np.repeat(np.arange(12), 5)
    assert ols_estimates(X=x, y=y, groups=groups).p[1] < 0.05
    table = ols_vs_mlm_table(
        model="m",
        terms=["(Intercept)", "x"],
        X=x,
        y=y,
        groups=groups,
        fixed_effects=_mixed([0.001, 0.2]),
    )
    assert table["flag"].to_list() == [False, True]
    assert table["disagreement"].to_list() == [None, "naive OLS: p < 0.05; multilevel model: not"]
    assert table["se_ratio"][1] == pytest.approx(0.3 / table["se_ols"][1])
    # the other direction: the multilevel model significant, naive OLS not
    y_flat = x @ [1.0, 0.0] + rng.normal(size=n)
    p_naive = ols_estimates(X=x, y=y_flat, groups=groups).p[1]
    assert p_naive >= 0.05
    table = ols_vs_mlm_table(
        model="m",
        terms=["(Intercept)", "x"],
        X=x,
        y=y_flat,
        groups=groups,
        fixed_effects=_mixed([0.001, 0.01]),
    )
    assert table["flag"].to_list() == [False, True]
    assert table["disagreement"][1] == "multilevel model: p < 0.05; naive OLS: not"


def test_simulation_naive_ols_se_too_small_multilevel_se_right():
    """40 seeded replicates of 40 persons x 5 waves, random intercept SD 2 and slope SD 0.5,
    residual SD 1, a person-level binary x. For the effect of x, the mean naive OLS SE is
    about half the empirical SD of the estimates; the mean multilevel SE matches it."""
    rng = np.random.default_rng(20240101)
    persons, waves, replicates = 40, 5, 40
    pid = np.repeat(np.arange(persons), waves).astype(str)
    time = np.tile(np.arange(waves, dtype=float), persons)
    estimates_ols, se_ols, estimates_mlm, se_mlm = [], [], [], []
    for _ in range(replicates):
        x = np.repeat(rng.integers(0, 2, persons), waves).astype(float)
        b0 = np.repeat(rng.normal(0, 2.0, persons), waves)
        b1 = np.repeat(rng.normal(0, 0.5, persons), waves)
        y = 1.0 + 0.5 * time + 1.0 * x + b0 + b1 * time + rng.normal(0, 1.0, persons * waves)
        design = np.column_stack([np.ones_like(time), time, x])
        ols = ols_estimates(X=design, y=y, groups=pid)
        estimates_ols.append(ols.estimate[2])
        se_ols.append(ols.se[2])
        fit = fit_growth(
            pl.DataFrame({"pid": pid, "t": time, "x": x, "y": y}), "y ~ t + x + (t | pid)"
        )
        row = fit.fixed_effects.filter(pl.col("term") == "x")
        estimates_mlm.append(row["estimate"][0])
        se_mlm.append(row["std_error"][0])
    naive_ratio = np.mean(se_ols) / np.std(estimates_ols, ddof=1)
    mixed_ratio = np.mean(se_mlm) / np.std(estimates_mlm, ddof=1)
    assert naive_ratio < 0.7, naive_ratio
    assert 0.75 < mixed_ratio < 1.3, mixed_ratio


def _clustered(age_origin: float, seed: int = 13):
    rng = np.random.default_rng(seed)
    persons = 400
    sizes = rng.integers(1, 6, persons)
    person = np.repeat(np.arange(persons), sizes)
    rng.shuffle(person)  # rows not sorted by person, ids with gaps
    labels = np.array([f"p{k * 7:05d}" for k in range(persons)])[person]
    n = person.size
    age = age_origin + rng.uniform(0, 5, n)
    g = rng.integers(0, 2, persons)[person]
    X = np.column_stack([np.ones(n), age, g, age * g])
    y = X @ [3.0, 0.2, -1.0, 0.05] + rng.normal(0, 2, persons)[person] + rng.normal(0, 1, n)
    return X, y, labels


def _ours_and_statsmodels(age_origin: float):
    """Our OLS estimates on ``_clustered(age_origin)``, statsmodels' naive OLS and its
    cluster-robust (CR1) fit, and the person codes."""
    X, y, labels = _clustered(age_origin)
    ours = ols_estimates(X=X, y=y, groups=labels)
    codes = np.unique(labels, return_inverse=True)[1]
    naive = sm.OLS(y, X).fit()
    robust = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
    return X, y, codes, ours, naive, robust


def test_naive_and_cr1_from_person_sums_equal_statsmodels_to_1e_10():
    """Beta from X'X and X'y, the naive covariance, and the CR1 sandwich from the per-person
    sums s_g = X_g' e_g agree with statsmodels' OLS and its cluster-robust covariance
    (which sorts the rows by cluster) on an unbalanced design, rows in random order."""
    X, y, codes, ours, naive, robust = _ours_and_statsmodels(0.0)
    np.testing.assert_allclose(ours.estimate, naive.params, rtol=1e-10)
    np.testing.assert_allclose(ours.se, naive.bse, rtol=1e-10)
    np.testing.assert_allclose(ours.p, naive.pvalues, rtol=1e-10)
    np.testing.assert_allclose(ours.se_cr1, robust.bse, rtol=1e-10)
    np.testing.assert_allclose(ours.p_cr1, robust.pvalues, rtol=1e-10)
    # integer codes (a design's group_codes) give the same numbers as the labels
    again = ols_estimates(X=X, y=y, groups=codes)
    np.testing.assert_array_equal(again.se_cr1, ours.se_cr1)
    np.testing.assert_array_equal(again.se_cr2, ours.se_cr2)


def test_a_badly_conditioned_design_loses_no_accuracy():
    """Age near 1000 (cond(X) = 1.8e6, cond(X'X) = 3e12): forming X'X naively would leave
    about 1e-9 relative in the SEs; X'X = R'R from a QR of the rows keeps the naive SEs at
    statsmodels' 1e-10. The CR1 SEs are compared at 2e-9: against exact rational arithmetic
    (checked by hand with fractions.Fraction) ours are off by 2.3e-10 and statsmodels' by
    9.4e-10, so the two differ by up to 1.1e-9 here."""
    X, y, codes, ours, naive, robust = _ours_and_statsmodels(1000.0)
    np.testing.assert_allclose(ours.estimate, naive.params, rtol=1e-10)
    np.testing.assert_allclose(ours.se, naive.bse, rtol=1e-10)
    np.testing.assert_allclose(ours.se_cr1, robust.bse, rtol=2e-9)
