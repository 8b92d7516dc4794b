"""OLS versus multilevel: hand-computed OLS, the cluster sandwich, the flag, and a simulation
showing that naive OLS standard errors on clustered data are too small and the multilevel
ones are not."""

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pipeline import fit_growth
from pipeline.analysis.ols import ols_estimates, ols_vs_mlm_table

X = np.column_stack([np.ones(4), [0.0, 1.0, 2.0, 3.0]])
Y = np.array([1.0, 2.0, 2.0, 4.0])
GROUPS = np.array(["a", "a", "b", "b"])


def test_naive_ols_by_hand():
    estimate, se, p, _, _ = ols_estimates(X=X, y=Y, groups=GROUPS)
    # slope = 4.5 / 5 = 0.9, intercept = 2.25 - 1.35 = 0.9; residual SS 0.7 on 2 df
    np.testing.assert_allclose(estimate, [0.9, 0.9])
    assert se[1] == pytest.approx(np.sqrt(0.35 / 5.0))
    assert p[1] == pytest.approx(2 * stats.t.sf(0.9 / np.sqrt(0.07), 2))


def test_cluster_robust_se_is_the_small_sample_sandwich():
    _, _, _, se_cluster, p_cluster = ols_estimates(X=X, y=Y, groups=GROUPS)
    residual = Y - X @ np.array([0.9, 0.9])
    bread = np.linalg.inv(X.T @ X)
    meat = sum(np.outer(X[g].T @ residual[g], X[g].T @ residual[g]) for g in ([0, 1], [2, 3]))
    correction = (2 / 1) * (3 / 2)  # G / (G - 1) * (N - 1) / (N - K)
    expected = np.sqrt(np.diag(correction * bread @ meat @ bread))
    np.testing.assert_allclose(se_cluster, expected)
    assert p_cluster[1] == pytest.approx(2 * stats.t.sf(0.9 / expected[1], 1))  # t on G - 1 = 1 df


def test_flag_marks_effects_only_naive_ols_calls_significant():
    rng = np.random.default_rng(1)  # naive p = 0.013 for x
    n = 60
    x = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = x @ [1.0, 0.4] + rng.normal(size=n)
    groups = np.repeat(np.arange(12), 5)
    _, _, p, _, _ = ols_estimates(X=x, y=y, groups=groups)
    assert p[1] < 0.05
    mixed = pl.DataFrame(
        {
            "term": ["(Intercept)", "x"],
            "estimate": [1.0, 0.4],
            "std_error": [0.2, 0.3],
            "p_value": [0.001, 0.2],
        }
    )
    table = ols_vs_mlm_table(
        model="m", terms=["(Intercept)", "x"], X=x, y=y, groups=groups, fixed_effects=mixed
    )
    assert table["flag"].to_list() == [False, True]
    assert table["se_ratio"][1] == pytest.approx(0.3 / table["se_ols"][1])


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
        estimate, se, _, _, _ = ols_estimates(X=design, y=y, groups=pid)
        estimates_ols.append(estimate[2])
        se_ols.append(se[2])
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
