"""HLM's H test of a common level-1 variance across persons (assumptions.heterogeneity_check):
its type-I error by simulation at f = 1, 2 and 4 residual df per person (3, 4 and 6 waves of a
linear growth model), within Monte Carlo error of 5%, and its power against a level-1 variance
that differs between persons.

The old version (variance 2 / f for ln s^2, no bias correction, chi-square reference) rejected
99.9% (f = 1), 89% (f = 2) and 57% (f = 4) of the time on data with one common variance."""

import numpy as np
import pytest
from scipy import stats

from pipeline.analysis.assumptions import h_statistic, heterogeneity_check
from pipeline.analysis.reliability import per_person_ols


def _data(rng, persons, waves, log_sd=0.0):
    """Linear growth with random intercepts and slopes; the level-1 SD of person j is
    2 exp(log_sd z_j) (log_sd = 0: one common variance)."""
    t = np.tile(np.arange(waves, dtype=float), persons)
    pid = np.repeat(np.arange(persons), waves)
    sd = 2.0 * np.exp(log_sd * rng.normal(size=persons))
    y = (
        10.0
        + rng.normal(0, 3, persons)[pid]
        + (1.0 + rng.normal(0, 1, persons)[pid]) * t
        + rng.normal(size=t.size) * sd[pid]
    )
    return per_person_ols(persons=pid, time=t, outcome=y, order=1)


def _rejections(replicates, persons, waves, seed, log_sd=0.0, draws=499):
    rng = np.random.default_rng(seed)
    p_values = [
        heterogeneity_check(
            _data(rng, persons, waves, log_sd), parameters=2, seed=seed + r, draws=draws
        )["p_value"]
        for r in range(replicates)
    ]
    return int(np.sum(np.asarray(p_values) < 0.05))


def _within_monte_carlo_error(rejections, replicates, alpha=0.05):
    low, high = stats.binom.ppf([0.0005, 0.9995], replicates, alpha)  # 99.9% band
    return low <= rejections <= high


@pytest.mark.parametrize("waves", [3, 4, 6])  # f = 1, 2, 4
def test_type_one_error_quick(waves):
    replicates = 200
    rejections = _rejections(replicates, persons=30, waves=waves, seed=100 + waves)
    assert _within_monte_carlo_error(rejections, replicates), rejections / replicates


@pytest.mark.slow
@pytest.mark.parametrize("waves", [3, 4, 6])
def test_type_one_error(waves):
    replicates = 2000
    rejections = _rejections(replicates, persons=50, waves=waves, seed=200 + waves, draws=999)
    assert _within_monte_carlo_error(rejections, replicates), rejections / replicates


@pytest.mark.slow
def test_exact_moments_alone_are_not_enough_with_one_df():
    """Why the null distribution is simulated: with f = 1, ln s^2 has excess kurtosis 4, so even
    the bias-corrected H is far from chi-square on J - 1 df (about 16% rejections at 5%)."""
    rng = np.random.default_rng(7)
    persons = 50
    f = np.ones(persons)
    h = np.array([h_statistic(rng.chisquare(f) / f, f) for _ in range(2000)])
    rate = float(np.mean(stats.chi2.sf(h, persons - 1) < 0.05))
    assert rate > 0.10
    assert h.mean() == pytest.approx(persons - 1, rel=0.02)  # the exact moments: mean J - 1


def test_power_against_a_variance_that_differs_between_persons():
    """SD of the log level-1 SD 0.7 (persons' variances differ by a factor of 4 or more
    between the 16th and 84th percentile): the test finds it at f = 2 and 4 df."""
    for waves in (4, 6):
        rejections = _rejections(50, persons=60, waves=waves, seed=300 + waves, log_sd=0.7)
        assert rejections >= 40, (waves, rejections)


def test_large_samples_use_the_moment_matched_null():
    rng = np.random.default_rng(5)
    ols = _data(rng, 3000, 4)
    row = heterogeneity_check(ols, parameters=2, draws=10_000)  # 3e7 values: moment matching
    assert "scaled chi-square" in row["verdict"]
    assert row["p_value"] > 0.001
