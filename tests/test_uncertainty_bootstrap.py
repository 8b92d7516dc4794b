"""Parametric bootstrap: reproducibility (seeds, workers), hand-checked statistics, failures, coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import fit_growth
from pipeline.analysis import bootstrap as B
from pipeline.analysis.bootstrap import (
    COLUMNS,
    DRAW_COLUMNS,
    ICC,
    PseudoR2,
    bootstrap_draws,
    parametric_bootstrap,
    simulate_outcome,
)
from pipeline.errors import ModelError

REF = Path(__file__).parent / "reference"
EARLY = pl.read_csv(REF / "early.csv", schema_overrides={"id": pl.String, "trt": pl.String})


@pytest.fixture(scope="module")
def means_fit():
    return fit_growth(EARLY, "cog ~ 1 + (1 | id)")


def slope(fits) -> float:  # module level: picklable for the worker processes
    return float(fits["model"].beta[1])


def test_icc_and_pseudo_r2_by_hand(means_fit) -> None:
    vc = means_fit.variance_components["variance"].to_list()
    assert ICC()({"model": means_fit}) == pytest.approx(vc[0] / (vc[0] + vc[1]), rel=1e-12)
    growth = fit_growth(EARLY, "cog ~ age1 + (1 | id)")
    r2 = PseudoR2(reference="means", term=None, model="model")
    expected = (means_fit.sigma**2 - growth.sigma**2) / means_fit.sigma**2
    assert r2({"model": growth, "means": means_fit}) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(
        ModelError, match="has no random term 'age1' \\(random terms: \\(Intercept\\)\\)"
    ):
        PseudoR2(reference="means", term="age1")({"model": growth, "means": means_fit})


def test_simulated_outcome_has_the_model_moments(means_fit) -> None:
    rng = np.random.default_rng(5)
    ys = np.array([simulate_outcome(means_fit, rng) for _ in range(400)])
    # mean: X beta; variance of one observation: tau00 + sigma^2; covariance within a person: tau00
    tau00 = float(means_fit.covariance[0, 0])
    assert ys.mean() == pytest.approx(means_fit.beta[0], abs=0.5)
    assert ys[:, 0].var() == pytest.approx(tau00 + means_fit.sigma**2, rel=0.15)
    assert np.cov(ys[:, 0], ys[:, 1])[0, 1] == pytest.approx(tau00, rel=0.25)


GROWTH_STATS = {"icc": ICC(), "slope": slope}


def test_same_seed_same_numbers() -> None:
    growth = fit_growth(EARLY, "cog ~ age1 + (1 | id)")
    stats = GROWTH_STATS
    one = bootstrap_draws(growth, stats, replicates=8, seed=11)
    again = bootstrap_draws(growth, stats, replicates=8, seed=11)
    other = bootstrap_draws(growth, stats, replicates=8, seed=12)
    assert one.schema == pl.Schema(DRAW_COLUMNS)
    assert one["value"].to_numpy().tobytes() == again["value"].to_numpy().tobytes()
    assert not np.array_equal(one["value"].to_numpy(), other["value"].to_numpy())
    # replicate r uses the r-th spawned seed: a shorter run is a prefix of a longer one
    short = bootstrap_draws(growth, stats, replicates=5, seed=11)
    assert short["value"].to_list() == one["value"].to_list()[: short.height]


def test_summary_percentiles_and_counts(means_fit) -> None:
    table = parametric_bootstrap(
        means_fit,
        {"icc": ICC(), "r2_within": PseudoR2(reference="model", term=None, model="growth")},
        replicates=10,
        seed=3,
        also_fit={"growth": "cog ~ age1 + (1 | id)"},
    )
    assert table.schema == pl.Schema(COLUMNS)
    draws = bootstrap_draws(
        means_fit,
        {"icc": ICC(), "r2_within": PseudoR2(reference="model", term=None, model="growth")},
        replicates=10,
        seed=3,
        also_fit={"growth": "cog ~ age1 + (1 | id)"},
    )
    icc = draws.filter(pl.col("statistic") == "icc")["value"].to_numpy()
    row = table.row(0, named=True)
    assert row["conf_low"] == pytest.approx(np.quantile(icc, 0.025))
    assert row["conf_high"] == pytest.approx(np.quantile(icc, 0.975))
    assert row["boot_std_error"] == pytest.approx(icc.std(ddof=1))
    assert row["estimate"] == pytest.approx(ICC()({"model": means_fit}))
    assert (row["replicates"], row["used"], row["failed"]) == (10, 10, 0)
    assert table["estimate"][1] > 0  # time explains within-person variance in Early


def test_failed_refits_are_counted_not_hidden(means_fit, monkeypatch) -> None:
    real = B.fit_design
    calls = {"n": 0}

    def flaky(design, **kw):
        calls["n"] += 1
        if calls["n"] % 4 == 0:
            raise ModelError("simulated failure")
        return real(design, **kw)

    monkeypatch.setattr(B, "fit_design", flaky)
    table = parametric_bootstrap(means_fit, {"icc": ICC()}, replicates=8, seed=1)
    row = table.row(0, named=True)
    assert (row["failed"], row["used"], row["replicates"]) == (2, 6, 8)


def test_bad_arguments_are_named(means_fit) -> None:
    with pytest.raises(ModelError, match="replicates must be between 1 and 100, not 101"):
        bootstrap_draws(means_fit, {"icc": ICC()}, replicates=101, max_replicates=100)
    with pytest.raises(ModelError, match="workers must be at least 1, not 0"):
        bootstrap_draws(means_fit, {"icc": ICC()}, replicates=2, workers=0)
    with pytest.raises(ModelError, match="give at least one statistic"):
        bootstrap_draws(means_fit, {}, replicates=2)
    with pytest.raises(ModelError, match="level must be between 0 and 1, not 0"):
        parametric_bootstrap(means_fit, {"icc": ICC()}, replicates=2, level=0)
    logged = fit_growth(EARLY, "log(cog) ~ 1 + (1 | id)")
    with pytest.raises(ModelError, match="needs the outcome 'log\\(cog\\)' to be a plain column"):
        parametric_bootstrap(
            logged, {"icc": ICC()}, replicates=2, also_fit={"x": "cog ~ 1 + (1 | id)"}
        )
    holes = EARLY.with_columns(
        pl.when(pl.col("id") == "68").then(None).otherwise(pl.col("age1")).alias("a")
    )
    fit = fit_growth(holes, "cog ~ 1 + (1 | id)")
    with pytest.raises(
        ModelError,
        match="also_fit 'x' \\('cog ~ a \\+ \\(1 \\| id\\)'\\) uses 306 rows, the model 309",
    ):
        parametric_bootstrap(
            fit, {"icc": ICC()}, replicates=2, also_fit={"x": "cog ~ a + (1 | id)"}
        )


@pytest.mark.slow  # spawning two processes takes 5-20 s on a shared machine
def test_one_or_two_workers_give_the_same_bytes() -> None:
    """Two spawned processes (their start-up is most of this test's time)."""
    growth = fit_growth(EARLY, "cog ~ age1 + (1 | id)")
    one = bootstrap_draws(growth, GROWTH_STATS, replicates=6, seed=11)
    two = bootstrap_draws(growth, GROWTH_STATS, replicates=6, seed=11, workers=2)
    assert one.equals(two)
    assert one["value"].to_numpy().tobytes() == two["value"].to_numpy().tobytes()


@pytest.mark.slow
def test_percentile_interval_covers_the_true_slope() -> None:
    """40 data sets from a known model; the 95 % interval of the fixed slope covers it in 95 % +- MC error."""
    rng = np.random.default_rng(2024)
    persons, waves, true_slope = 30, 4, 2.0
    covered = 0
    sets = 40
    for s in range(sets):
        pid = np.repeat(np.arange(persons), waves)
        t = np.tile(np.arange(waves, dtype=float), persons)
        b0 = rng.normal(0, 3, persons)
        b1 = rng.normal(0, 1, persons)
        y = 10 + true_slope * t + b0[pid] + b1[pid] * t + rng.normal(0, 2, t.size)
        df = pl.DataFrame({"pid": pid.astype(str), "t": t, "y": y})
        fit = fit_growth(df, "y ~ t + (t | pid)")
        row = parametric_bootstrap(fit, {"slope": slope}, replicates=99, seed=s).row(0, named=True)
        covered += row["conf_low"] <= true_slope <= row["conf_high"]
    # binomial(40, 0.95): 3 SDs = 0.10; percentile intervals run slightly short with 30 persons
    assert 0.95 - 0.10 - 0.03 <= covered / sets <= 1.0
