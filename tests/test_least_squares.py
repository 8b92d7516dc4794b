"""pipeline.analysis.least_squares against statsmodels' OLS: the same numbers, bit for bit.

statsmodels is what the OLS-versus-multilevel table used before; the
replacement only saves its import, so every number must stay the same.
Hand-checked values pin the arithmetic independently of statsmodels.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from pipeline.analysis.least_squares import OLS, pseudo_inverse
from pipeline.analysis.ols import ols_estimates


def _data(seed: int, *, persons: int = 40, waves: int = 4, unbalanced: bool = False):
    rng = np.random.default_rng(seed)
    person = np.repeat(np.arange(persons), waves)
    time = np.tile(np.arange(waves, dtype=float), persons)
    group = np.repeat(rng.integers(0, 2, persons), waves).astype(float)
    y = 1.0 + 0.5 * time + 0.8 * group + np.repeat(rng.normal(0, 1, persons), waves)
    y += rng.normal(0, 0.7, person.size)
    X = np.column_stack([np.ones_like(time), time, group, time * group])
    if unbalanced:
        keep = rng.random(person.size) > 0.25
        X, y, person = X[keep], y[keep], person[keep]
    return X, y, person * 7 + 3  # person ids that are neither 0..G-1 nor sorted codes


CASES = [
    pytest.param(dict(seed=1), id="balanced"),
    pytest.param(dict(seed=2, unbalanced=True), id="unbalanced"),
    pytest.param(dict(seed=3, persons=6, waves=3), id="few-clusters"),
]


@pytest.mark.parametrize("case", CASES)
def test_naive_fit_is_statsmodels_to_the_bit(case):
    X, y, _ = _data(**case)
    ours = OLS(y, X).fit()
    theirs = sm.OLS(y, X).fit()
    np.testing.assert_array_equal(ours.params, theirs.params)
    np.testing.assert_array_equal(ours.resid, theirs.resid)
    np.testing.assert_array_equal(ours.cov_params(), theirs.cov_params())
    np.testing.assert_array_equal(ours.bse, theirs.bse)
    np.testing.assert_array_equal(ours.pvalues, theirs.pvalues)
    assert ours.df_resid == theirs.df_resid


@pytest.mark.parametrize("case", CASES)
def test_cluster_robust_fit_is_statsmodels_to_the_bit(case):
    X, y, person = _data(**case)
    codes = np.unique(person, return_inverse=True)[1].ravel()
    for groups in (codes, person):  # as ols.py passes them, and raw ids
        kwds = {"groups": groups}
        ours = OLS(y, X).fit(cov_type="cluster", cov_kwds=kwds, use_t=True)
        theirs = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds=kwds, use_t=True)
        np.testing.assert_array_equal(ours.params, theirs.params)
        np.testing.assert_array_equal(ours.cov_params(), theirs.cov_params())
        np.testing.assert_array_equal(ours.bse, theirs.bse)
        np.testing.assert_array_equal(ours.pvalues, theirs.pvalues)


def test_the_ols_table_estimates_are_unchanged():
    """ols_estimates (naive, CR1, CR2) equals what statsmodels' fits give."""
    X, y, person = _data(seed=4, unbalanced=True)
    got = ols_estimates(X=X, y=y, groups=person)
    codes = np.unique(person, return_inverse=True)[1].ravel()
    naive = sm.OLS(y, X).fit()
    robust = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
    np.testing.assert_array_equal(got.estimate, naive.params)
    np.testing.assert_array_equal(got.se, naive.bse)
    np.testing.assert_array_equal(got.p, naive.pvalues)
    np.testing.assert_array_equal(got.se_cr1, robust.bse)
    np.testing.assert_array_equal(got.p_cr1, robust.pvalues)


def test_hand_checked_line():
    """y = 1, 2, 4 on x = 0, 1, 2: slope 1.5, intercept 5/6, s^2 = 1/6 on 1 df."""
    X = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    y = np.array([1.0, 2.0, 4.0])
    fit = OLS(y, X).fit()
    np.testing.assert_allclose(fit.params, [5 / 6, 1.5], rtol=1e-13)
    np.testing.assert_allclose(fit.resid, [1 / 6, -1 / 3, 1 / 6], atol=1e-13)
    # (X'X)^-1 = [[5/6, -1/2], [-1/2, 1/2]]; times s^2 = 1/6
    np.testing.assert_allclose(fit.bse, np.sqrt([5 / 36, 1 / 12]), rtol=1e-12)
    assert fit.df_resid == 1.0
    # t = 1.5 / sqrt(1/12) = 5.196...; two-sided p on 1 df = 1 - 2 atan(t) / pi
    t = 1.5 / np.sqrt(1 / 12)
    assert fit.pvalues[1] == pytest.approx(1 - 2 * np.arctan(t) / np.pi, rel=1e-10)


def test_hand_checked_cluster_sandwich():
    """Two clusters of two: the CR1 sandwich worked out by hand for an intercept-only model."""
    y = np.array([1.0, 3.0, 2.0, 6.0])
    X = np.ones((4, 1))
    fit = OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": np.array([0, 0, 1, 1])})
    # mean 3; residuals -2, 0, -1, 3; cluster sums -2 and 2; meat 8; bread 1/4
    # CR1 = 8 / 16 * G/(G-1) * (n-1)/(n-p) = 0.5 * 2 * 1 = 1
    assert fit.params[0] == pytest.approx(3.0)
    assert fit.cov_params()[0, 0] == pytest.approx(1.0)
    assert fit.df_inference == 1.0
    assert fit.pvalues[0] == pytest.approx(1 - 2 * np.arctan(3.0) / np.pi, rel=1e-10)


def test_rank_deficient_design_uses_the_pseudo_inverse():
    X = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    pinv, singular = pseudo_inverse(X)
    np.testing.assert_allclose(pinv, np.linalg.pinv(X), atol=1e-14)
    assert singular[1] < 1e-15 * singular[0] * 10
    fit = OLS(np.array([1.0, 2.0, 3.0]), X).fit()
    assert fit.df_resid == 2.0  # rank 1


def test_bad_arguments_are_named():
    X = np.ones((3, 1))
    y = np.ones(3)
    with pytest.raises(ValueError, match=r"y must be \(n,\) and X \(n, p\)"):
        OLS(np.ones(4), X)
    with pytest.raises(ValueError, match="cov_type must be 'nonrobust' or 'cluster'"):
        OLS(y, X).fit(cov_type="HC3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs cov_kwds"):
        OLS(y, X).fit(cov_type="cluster")
    with pytest.raises(ValueError, match=r"groups must be \(n,\)"):
        OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": np.arange(2)})
    with pytest.raises(ValueError, match="only t-based inference"):
        OLS(y, X).fit(use_t=False)
