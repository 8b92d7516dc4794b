"""The fast engine beyond the lme4 reference: coding, paths, errors, agreement, known truth."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.stats

from pipeline import fit_growth
from pipeline.errors import FormulaError, ModelError
from pipeline.model import stats as stats_module
from pipeline.simulate import GrowthTruth, simulate_growth

FORMULA = "y ~ time * (g + ses) + (time | pid)"


@pytest.fixture(scope="module")
def sim() -> pl.DataFrame:
    return simulate_growth(persons=300, waves=5, missing=0.15, seed=7)


def test_term_names_follow_lme4(sim):
    fit = fit_growth(sim, FORMULA)
    assert fit.fixed_terms == ("(Intercept)", "time", "gB", "ses", "time:gB", "time:ses")
    assert fit.random_terms == ("(Intercept)", "time")
    assert fit.random_effects.columns == [
        "pid",
        "(Intercept)",
        "time",
        "condvar_(Intercept)",
        "condvar_time",
    ]
    assert fit.random_effects.height == fit.ngroups == 300


def test_categorical_coding_rules(sim):
    no_intercept = fit_growth(sim, "y ~ 0 + g + time + (1 | pid)")
    assert no_intercept.fixed_terms == ("gA", "gB", "time")
    without_main = fit_growth(sim, "y ~ time + time:g + (1 | pid)")
    assert without_main.fixed_terms == ("(Intercept)", "time", "time:gB")
    enum = sim.with_columns(pl.col("g").cast(pl.Enum(["B", "A"])))
    assert fit_growth(enum, "y ~ g + (1 | pid)").fixed_terms == ("(Intercept)", "gA")
    quad = fit_growth(sim, "y ~ time + I(time^2) + (time | pid)")
    assert quad.fixed_terms == ("(Intercept)", "time", "I(time^2)")


def test_uncorrelated_random_effects_are_named_as_lme4(sim):
    fit = fit_growth(sim, "y ~ time + (time || pid)")
    vc = fit.variance_components
    assert vc["group"].to_list() == ["pid", "pid.1", "Residual"]
    assert vc["term1"].to_list() == ["(Intercept)", "time", None]
    assert fit.covariance[0, 1] == 0.0
    same = fit_growth(sim, "y ~ time + (1 | pid) + (0 + time | pid)")
    assert same.loglik == pytest.approx(fit.loglik, rel=1e-10)


def test_pattern_and_person_paths_agree(sim, monkeypatch):
    by_pattern = fit_growth(sim, FORMULA)
    assert by_pattern.stats.S is not None and by_pattern.stats.patterns < 300
    monkeypatch.setattr(stats_module, "MAX_PATTERNS", 0)
    by_person = fit_growth(sim, FORMULA)
    assert by_person.stats.S is None
    assert by_person.loglik == pytest.approx(by_pattern.loglik, rel=1e-12)
    np.testing.assert_allclose(by_person.beta, by_pattern.beta, rtol=1e-7)
    np.testing.assert_allclose(by_person.blups, by_pattern.blups, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        by_person.fixed_effects["df"].to_numpy(),
        by_pattern.fixed_effects["df"].to_numpy(),
        rtol=1e-5,
    )


def test_row_order_does_not_matter(sim):
    shuffled = sim.sample(fraction=1.0, shuffle=True, seed=3)
    a = fit_growth(sim, FORMULA)
    b = fit_growth(shuffled, FORMULA)
    assert b.loglik == pytest.approx(a.loglik, rel=1e-12)
    np.testing.assert_allclose(b.beta, a.beta, rtol=1e-6)


def test_agrees_with_statsmodels_on_random_data(sim):
    ours = fit_growth(sim, FORMULA)
    theirs = fit_growth(sim, FORMULA, engine="statsmodels")
    assert theirs.engine == "statsmodels"
    # ours is the optimum: never lower than statsmodels' (tiny slack for rounding)
    assert ours.loglik >= theirs.loglik - 1e-7
    assert ours.loglik == pytest.approx(theirs.loglik, rel=1e-7)
    np.testing.assert_allclose(ours.beta, theirs.beta, rtol=1e-4)
    np.testing.assert_allclose(
        ours.fixed_effects["std_error"].to_numpy(),
        theirs.fixed_effects["std_error"].to_numpy(),
        rtol=1e-3,
    )
    np.testing.assert_allclose(ours.covariance, theirs.covariance, rtol=5e-3, atol=1e-3)
    assert ours.sigma == pytest.approx(theirs.sigma, rel=1e-4)
    np.testing.assert_allclose(ours.blups, theirs.blups, rtol=1e-2, atol=1e-2)


def test_fitted_and_residuals(sim):
    fit = fit_growth(sim, FORMULA)
    assert fit.fitted().shape == (sim.height,)
    np.testing.assert_allclose(fit.fitted() + fit.residuals(), sim["y"].to_numpy())
    np.testing.assert_allclose(fit.fitted("marginal"), fit.design.X @ fit.beta)
    # conditional residuals are smaller than marginal ones
    assert np.var(fit.residuals()) < np.var(fit.residuals("marginal"))
    x = fit.design_row({"time": 2.0, "g": "B", "ses": 0.5})
    np.testing.assert_allclose(x, [1, 2.0, 1, 0.5, 2.0, 1.0])
    c = fit.contrast(x)
    assert c["conf_low"] < c["estimate"] < c["conf_high"]
    assert c["df"] > 10


def test_missing_values_are_left_out_and_counted(sim):
    holes = sim.with_columns(
        pl.when(pl.int_range(pl.len()) % 10 == 0).then(None).otherwise(pl.col("y")).alias("y")
    )
    fit = fit_growth(holes, FORMULA)
    assert fit.rows_dropped == holes["y"].null_count()
    assert fit.nobs == sim.height - fit.rows_dropped


@pytest.mark.parametrize(
    ("frame_change", "formula", "error", "message"),
    [
        (
            None,
            "y ~ tme + (1 | pid)",
            FormulaError,
            r"column 'tme' does not exist; did you mean 'time'\?",
        ),
        (pl.lit(3.0).alias("y"), FORMULA, ModelError, r"the outcome 'y' is constant \(3\)"),
        (
            (pl.col("time") * 2).alias("time2"),
            "y ~ time + time2 + (1 | pid)",
            ModelError,
            r"rank deficient: 'time2'",
        ),
        (
            pl.int_range(pl.len()).alias("row"),
            "y ~ time + (1 | row)",
            ModelError,
            r"as many levels \(1\d+\) as observations",
        ),
        (
            pl.col("g").alias("y"),
            "y ~ time + (1 | pid)",
            ModelError,
            r"the outcome 'y' is not numeric",
        ),
    ],
)
def test_bad_models_get_clear_messages(sim, frame_change, formula, error, message):
    df = sim if frame_change is None else sim.with_columns(frame_change)
    with pytest.raises(error, match=message):
        fit_growth(df, formula)


def test_more_random_effects_than_observations_is_an_error(sim):
    two_waves = sim.filter(pl.col("time") < 2)
    with pytest.raises(
        ModelError, match=r"number of observations \(\d+\) <= number of random effects \(2 x \d+ = "
    ):
        fit_growth(two_waves, "y ~ time + (time | pid)")


def test_single_group_level_is_an_error():
    df = pl.DataFrame({"y": [1.0, 2.0, 3.0, 5.0], "t": [0.0, 1.0, 2.0, 3.0], "id": ["a"] * 4})
    with pytest.raises(ModelError, match="has only 1 level"):
        fit_growth(df, "y ~ t + (1 | id)")


def test_infinite_values_are_named():
    df = pl.DataFrame(
        {"y": [1.0, 2.0, 3.0, 5.0], "t": [0.0, float("inf"), 2.0, 3.0], "id": ["a", "a", "b", "b"]}
    )
    with pytest.raises(ModelError, match=r"'t' has a non-finite value \(inf\) in row 2"):
        fit_growth(df, "y ~ t + (1 | id)")


def test_known_truth_bias_and_coverage():
    """200 replicates of 150 persons x 5 waves: estimates unbiased, 95 % intervals cover about 95 %."""
    truth = GrowthTruth()
    reps = 200
    est = np.empty((reps, 6))
    cover = np.empty((reps, 6), dtype=bool)
    var = np.empty((reps, 3))
    for r in range(reps):
        df = simulate_growth(persons=150, waves=5, missing=0.1, seed=5000 + r, truth=truth)
        fit = fit_growth(df, FORMULA)
        fe = fit.fixed_effects
        est[r] = fe["estimate"].to_numpy()
        cover[r] = (fe["conf_low"].to_numpy() <= truth.beta) & (
            np.asarray(truth.beta) <= fe["conf_high"].to_numpy()
        )
        var[r] = [fit.covariance[0, 0], fit.covariance[1, 1], fit.sigma**2]
    se_mean = est.std(axis=0) / np.sqrt(reps)
    # bias within 4 Monte Carlo standard errors
    assert np.all(np.abs(est.mean(axis=0) - truth.beta) < 4 * se_mean)
    # coverage: binomial(200, 0.95) lies in [0.90, 0.99] with probability > 0.999
    lo, hi = scipy.stats.binom.ppf([0.0005, 0.9995], reps, 0.95) / reps
    assert np.all((cover.mean(axis=0) >= lo) & (cover.mean(axis=0) <= hi)), cover.mean(axis=0)
    # REML variance components are close to unbiased
    true_var = [truth.sd_intercept**2, truth.sd_slope**2, truth.sigma**2]
    np.testing.assert_allclose(var.mean(axis=0), true_var, rtol=0.05)


def test_boundary_judgement_does_not_depend_on_the_units_of_time():
    """lme4 would call the slope variance zero when time is in tiny units; we do not."""
    from pathlib import Path

    df = pl.read_csv(
        Path(__file__).parent / "reference" / "sleepstudy.csv",
        schema_overrides={"Subject": pl.String},
    )
    base = fit_growth(df, "Reaction ~ Days + (Days | Subject)", reml=False)
    scaled = fit_growth(
        df.with_columns((pl.col("Days") * 10_000).alias("Days")),
        "Reaction ~ Days + (Days | Subject)",
        reml=False,
    )
    # in these units lme4's theta for the slope is about 2e-5, below its 1e-4 singularity tolerance
    assert scaled.theta[2] < 1e-4
    assert not scaled.singular and not base.singular
    assert scaled.converged
    assert scaled.loglik == pytest.approx(base.loglik, rel=1e-9)
    assert scaled.covariance[1, 1] * 10_000**2 == pytest.approx(base.covariance[1, 1], rel=1e-5)
    early = pl.read_csv(
        Path(__file__).parent / "reference" / "early.csv", schema_overrides={"id": pl.String}
    )
    days = early.with_columns((pl.col("age1") * 365.25).alias("age1"))
    assert fit_growth(days, "cog ~ age1 * trt + (age1 | id)").singular


def test_a_lazy_frame_is_collected_and_other_inputs_are_refused(sim):
    lazy = fit_growth(sim.lazy(), FORMULA)
    eager = fit_growth(sim, FORMULA)
    assert lazy.loglik == eager.loglik
    with pytest.raises(ModelError, match=r"expected a polars DataFrame or LazyFrame, got dict"):
        fit_growth(sim.to_dict(as_series=False), FORMULA)


def test_a_lazy_frame_with_a_missing_column_lists_all_columns(sim):
    with pytest.raises(
        FormulaError,
        match=r"column 'tme' does not exist; did you mean 'time'\? \(columns: pid, time, g, ses, y\)",
    ):
        fit_growth(sim.lazy(), "y ~ tme + (1 | pid)")


def test_optimizer_takes_bounds_that_are_not_variances():
    """A bounded parameter that is not a variance (e.g. a correlation in (-1, 1)) is kept
    inside its bounds and never reported as a singular boundary."""
    from pipeline.model.optimize import optimize_theta
    from pipeline.model.parameters import CovarianceParameters

    class Bowl:
        evaluations = 0

        def __call__(self, x):
            return self.value_and_gradient(x)[0]

        def value_and_gradient(self, x):
            self.evaluations += 1
            # minimum of the first parameter at 2.0, outside its upper bound of 0.9
            return float((x[0] - 2.0) ** 2 + (x[1] - 0.5) ** 2), np.array(
                [2 * (x[0] - 2.0), 2 * (x[1] - 0.5)]
            )

    params = CovarianceParameters(
        names=("rho", ".sig01"),
        lower=np.array([-0.9, 0.0]),
        upper=np.array([0.9, np.inf]),
        variance=np.array([False, True]),
        even=np.array([False, True]),
    )
    x, record = optimize_theta(Bowl(), params)
    assert x[0] == pytest.approx(0.9)
    assert x[1] == pytest.approx(0.5)
    assert not record.boundary
    assert record.at_bound == (True, False)
    assert record.converged
    assert CovarianceParameters.for_theta(((0, 0), (1, 0), (1, 1))).join(params).size == 5


def test_two_level_varpar_gradient_agrees_with_differences(sim):
    """The exact gradient in (theta, sigma) that the Satterthwaite Hessian differentiates."""
    from pipeline.model.design import build_design
    from pipeline.model.fit import design_stats, deviance_function

    design = build_design(sim, "y ~ time * (g + ses) + (time | pid)")
    for reml in (True, False):
        dev = deviance_function(design, design_stats(design), reml=reml)
        varpar = np.array([1.4, -0.2, 0.5, 2.9])
        h = 1e-5
        numeric = np.array(
            [
                (dev.varpar_deviance(varpar + h * e) - dev.varpar_deviance(varpar - h * e))
                / (2 * h)
                for e in np.eye(varpar.size)
            ]
        )
        np.testing.assert_allclose(dev.varpar_gradient(varpar), numeric, rtol=1e-6, atol=1e-4)
        for row, v in zip(
            dev.covbeta_batch(np.array([varpar, varpar * 1.1])), [varpar, varpar * 1.1], strict=True
        ):
            np.testing.assert_allclose(row, dev.covbeta(v), rtol=1e-12)


def test_hashed_pattern_codes_group_as_the_exact_ones():
    """Time patterns are grouped by a hash table of row hashes; the groups must be those of the
    exact per-column coding (-0.0 and 0.0 one value), and ``order`` must sort rows by group."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 4, size=(12, 3)).astype(float)
    keys = base[rng.integers(0, 12, size=5000)]
    keys[::7, 0] = np.where(keys[::7, 0] == 0, -0.0, keys[::7, 0])
    first, inverse, counts, order = stats_module._pattern_codes(keys, with_order=True)
    f2, i2, c2 = stats_module._pattern_codes_exact(keys)
    assert first.size == f2.size
    # the same partition of the rows (group numbers may differ)
    pairs = set(zip(inverse.tolist(), i2.tolist(), strict=True))
    assert len(pairs) == first.size
    np.testing.assert_array_equal(keys[first[inverse]] + 0.0, keys + 0.0)
    np.testing.assert_array_equal(np.sort(counts), np.sort(c2))
    assert np.all(np.diff(inverse[order]) >= 0)
    np.testing.assert_array_equal(np.bincount(inverse), counts)
