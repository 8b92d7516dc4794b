"""R^2 of y and y-hat, the means-model variance test, person influence, within/between effects.

Reference values: tests/reference/confint_more_reference.json (make_confint_reference.R,
lme4 1.1-31). Tolerances: 1e-6 relative where both engines reach the same optimum
(log-likelihoods, R^2); 1e-4 relative for leave-one-out refits (each refit is its own
optimisation, both engines converge to about 1e-5 in theta) and for Cook's distance
(a quadratic form in differences of estimates; observed 1.2e-5). The variance
components without a person: 5e-4 relative (a covariance: of the product of the two SDs),
observed up to 2e-4, because lme4's influence() refits start at the full fit's theta and
stop early: without subject 372 it gives an intercept variance of 637.707, a fresh
lmer() 637.585 and this engine 637.578.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.stats

from pipeline import fit_growth
from pipeline.analysis.fit_stats import (
    INFLUENCE_COLUMNS,
    R2_COLUMNS,
    VARIANCE_TEST_COLUMNS,
    WITHIN_BETWEEN_COLUMNS,
    between_person_variance_test,
    person_influence,
    r2_y_yhat,
    within_between,
)
from pipeline.errors import ModelError

REF = Path(__file__).parent / "reference"
MORE = json.loads((REF / "confint_more_reference.json").read_text())
EARLY = pl.read_csv(REF / "early.csv", schema_overrides={"id": pl.String, "trt": pl.String})
SLEEP = pl.read_csv(REF / "sleepstudy.csv", schema_overrides={"Subject": pl.String})


def test_r2_y_yhat_matches_r() -> None:
    table = r2_y_yhat(fit_growth(EARLY, "cog ~ age1 * trt + (age1 | id)"))
    assert table.schema == pl.Schema(R2_COLUMNS)
    assert table["r2_y_yhat"][0] == pytest.approx(MORE["r2_yhat_early_trt_reml"]["r2"], rel=1e-6)
    assert r2_y_yhat(fit_growth(EARLY, "cog ~ 1 + (1 | id)"))["r2_y_yhat"][0] == 0.0


@pytest.mark.parametrize(
    ("data", "outcome", "person", "key"),
    [(EARLY, "cog", "id", "early"), (SLEEP, "Reaction", "Subject", "sleepstudy")],
)
def test_means_model_variance_test_matches_r(data, outcome, person, key) -> None:
    r = MORE[f"means_variance_lrt_{key}"]
    table = between_person_variance_test(data, outcome=outcome, person=person)
    assert table.schema == pl.Schema(VARIANCE_TEST_COLUMNS)
    row = table.row(0, named=True)
    assert row["loglik_ols"] == pytest.approx(r["loglik_ols"], rel=1e-10)
    assert row["loglik_mixed"] == pytest.approx(r["loglik_mixed"], rel=1e-8)
    assert row["chisq"] == pytest.approx(r["chisq"], rel=1e-6)
    assert row["p_value"] == pytest.approx(r["p"], rel=1e-5)


def test_means_model_variance_test_names_a_missing_column() -> None:
    with pytest.raises(
        ModelError, match="column 'score' does not exist \\(columns: id, cog, age, trt, age1\\)"
    ):
        between_person_variance_test(EARLY, outcome="score", person="id")


def _null_data(rng, persons: int = 30, waves: int = 4) -> pl.DataFrame:
    pid = np.repeat(np.arange(persons), waves).astype(str)
    return pl.DataFrame({"pid": pid, "y": rng.normal(10.0, 2.0, persons * waves)})


def _rejection_rate(reps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        table = between_person_variance_test(_null_data(rng), outcome="y", person="pid")
        hits += table["p_value"][0] < 0.05
    return hits / reps


def test_means_model_variance_test_type1_quick() -> None:
    """100 data sets with no between-person variance: a gross check (3 MC SDs = 0.065)."""
    assert _rejection_rate(100, seed=10) <= 0.05 + 0.065


@pytest.mark.slow
def test_means_model_variance_test_type1() -> None:
    """2000 data sets with tau00 = 0: rejection 5 % within 3 MC SDs (0.015)."""
    assert abs(_rejection_rate(2000, seed=11) - 0.05) <= 0.015


def test_person_influence_matches_lme4() -> None:
    r = MORE["influence_sleepstudy_growth_reml"]
    fit = fit_growth(SLEEP, "Reaction ~ Days + (Days | Subject)")
    table = person_influence(fit)
    assert table.schema == pl.Schema(INFLUENCE_COLUMNS)
    persons = table.unique("person", maintain_order=True)
    assert persons["person"].to_list() == r["group"]
    m, p = 18, 2
    assert (persons["cooks_distance"] * (m - p) / m).to_list() == pytest.approx(
        r["cooks_distance_lme4"], rel=1e-4
    )
    names = {
        ("Residual", None, None): "sigma^2",
        ("Subject", "(Intercept)", None): "v[(Intercept)]",
        ("Subject", "Days", None): "v[Days]",
        ("Subject", "(Intercept)", "Days"): "C[Days,(Intercept)]",
    }
    for i, person in enumerate(r["group"]):
        rows = table.filter(pl.col("person") == person)
        full = r["varcomp_without"][i]
        for row in rows.iter_rows(named=True):
            expected = full[names[(row["group"], row["term1"], row["term2"])]]
            # a covariance to 1e-4 of the product of the SDs (its correlation to 1e-4)
            scale = (
                abs(expected)
                if row["term2"] is None
                else np.sqrt(full["v[(Intercept)]"] * full["v[Days]"])
            )
            assert row["variance_without"] == pytest.approx(expected, abs=5e-4 * scale), person
            assert row["change"] == pytest.approx(row["variance_without"] - row["variance"])
    assert persons["n_obs"].to_list() == [10] * 18


def test_person_influence_sample_is_deterministic() -> None:
    fit = fit_growth(EARLY, "cog ~ age1 + (1 | id)")
    a = person_influence(fit, max_persons=5, seed=4)
    b = person_influence(fit, max_persons=5, seed=4)
    assert a.equals(b)
    assert a["person"].n_unique() == 5
    assert not a.equals(person_influence(fit, max_persons=5, seed=5))
    with pytest.raises(ModelError, match="max_persons must be at least 1, not 0"):
        person_influence(fit, max_persons=0)


def _tv_data(seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    persons = 60
    sizes = rng.integers(2, 6, persons)  # unbalanced
    pid = np.repeat(np.arange(persons), sizes)
    xbar = rng.normal(0, 1, persons)
    x = xbar[pid] + rng.normal(0, 1, pid.size)
    y = (
        1.0
        + 0.5 * (x - xbar[pid])
        + 2.0 * xbar[pid]
        + rng.normal(0, 1, persons)[pid]
        + rng.normal(0, 1, pid.size)
    )
    return pl.DataFrame({"pid": pid.astype(str), "x": x, "y": y})


def test_within_effect_is_the_within_estimator() -> None:
    """Random intercept + person mean: the within effect equals demeaned OLS exactly (Mundlak), any balance."""
    data = _tv_data()
    fit = fit_growth(data, "y ~ x + (1 | pid)")
    table = within_between(fit, "x")
    assert table.schema == pl.Schema(WITHIN_BETWEEN_COLUMNS)
    assert table["effect"].to_list() == [
        "within",
        "between",
        "contextual (between - within)",
        "pooled",
    ]
    dm = data.with_columns(
        (pl.col("x") - pl.col("x").mean().over("pid")).alias("xw"),
        (pl.col("y") - pl.col("y").mean().over("pid")).alias("yw"),
    )
    expected = float((dm["xw"] * dm["yw"]).sum() / (dm["xw"] ** 2).sum())
    est = dict(zip(table["effect"], table["estimate"], strict=True))
    assert est["within"] == pytest.approx(expected, rel=1e-8)
    assert est["contextual (between - within)"] == pytest.approx(est["between"] - est["within"])
    assert est["pooled"] == pytest.approx(fit.fixed_effects["estimate"][1])
    # the truth: within 0.5, between 2.0; the pooled effect lies between them
    assert est["within"] < est["pooled"] < est["between"]


def test_within_between_errors_are_named() -> None:
    data = _tv_data().with_columns((pl.col("pid").cast(pl.Int64) % 3).cast(pl.Float64).alias("z"))
    with pytest.raises(
        ModelError, match="has no fixed effect 'w' \\(fixed effects: \\(Intercept\\), x\\)"
    ):
        within_between(fit_growth(data, "y ~ x + (1 | pid)"), "w")
    with pytest.raises(ModelError, match="'x' is also in the interaction 'x:z'"):
        within_between(fit_growth(data, "y ~ x * z + (1 | pid)"), "x")
    with pytest.raises(ModelError, match="'z' does not vary within persons"):
        within_between(fit_growth(data, "y ~ x + z + (1 | pid)"), "z")


def _within_between_rejections(reps: int, seed: int) -> np.ndarray:
    """Within effect 0.5 = between effect 0.5: the contextual test's null holds; within, between
    and pooled effects are tested against their true value 0.5 via the interval."""
    rng = np.random.default_rng(seed)
    hits = np.zeros(4)
    for _ in range(reps):
        persons = 40
        sizes = rng.integers(2, 6, persons)
        pid = np.repeat(np.arange(persons), sizes)
        xbar = rng.normal(0, 1, persons)
        x = xbar[pid] + rng.normal(0, 1, pid.size)
        y = 0.5 * x + rng.normal(0, 1, persons)[pid] + rng.normal(0, 1, pid.size)
        data = pl.DataFrame({"pid": pid.astype(str), "x": x, "y": y})
        table = within_between(fit_growth(data, "y ~ x + (1 | pid)"), "x")
        truth = np.array([0.5, 0.5, 0.0, 0.5])
        est, se, df = (table[c].to_numpy() for c in ("estimate", "std_error", "df"))
        p = 2 * scipy.stats.t.sf(np.abs(est - truth) / se, df)
        hits += p < 0.05
        # the table's own p-value is the test of zero: it agrees with this one for the contextual row
        assert table["p_value"][2] == pytest.approx(p[2])
    return hits / reps


def test_within_between_type1_quick() -> None:
    """30 data sets: no test rejects a true value grossly often (3 MC SDs = 0.12)."""
    assert (_within_between_rejections(30, seed=20) <= 0.05 + 0.12).all()


@pytest.mark.slow
def test_within_between_type1() -> None:
    """500 data sets: within, between, contextual and pooled tests reject 5 % within 3 MC SDs (0.03)."""
    rates = _within_between_rejections(500, seed=21)
    assert (np.abs(rates - 0.05) <= 0.03).all(), rates
