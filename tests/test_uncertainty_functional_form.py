"""Observed vs model-implied means per occasion, and the LRT against the saturated means model.

Reference: tests/reference/confint_more_reference.json (make_confint_reference.R):
lme4's anova() of ``cog ~ age1 * trt`` against ``cog ~ factor(age1) * trt`` (same random
part, ML). Tolerance 1e-6 relative on the log-likelihoods (both engines reach the same
optimum on these models) and 1e-4 on chi-square (a difference of two large numbers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import fit_growth
from pipeline.analysis.functional_form import (
    COLUMNS,
    MEANS_COLUMNS,
    occasion_means,
    saturated_means_test,
)
from pipeline.errors import ModelError

REF = Path(__file__).parent / "reference"
MORE = json.loads((REF / "confint_more_reference.json").read_text())
EARLY = pl.read_csv(REF / "early.csv", schema_overrides={"id": pl.String, "trt": pl.String})


@pytest.mark.parametrize("key", ["saturated_lrt_early_trt", "saturated_lrt_early_growth"])
def test_saturated_lrt_matches_lme4(key: str) -> None:
    r = MORE[key]
    table = saturated_means_test(
        fit_growth(EARLY, r["polynomial"].replace("|", " | ")), time="age1"
    )
    assert table.schema == pl.Schema(COLUMNS)
    poly, sat = table.row(0, named=True), table.row(1, named=True)
    assert poly["loglik"] == pytest.approx(r["loglik_polynomial"], rel=1e-6)
    assert sat["loglik"] == pytest.approx(r["loglik_saturated"], rel=1e-6)
    assert sat["chisq"] == pytest.approx(r["chisq"], rel=1e-4)
    assert sat["df"] == r["df"]
    assert sat["p_value"] == pytest.approx(r["p"], rel=1e-3)


def test_occasion_means_by_hand() -> None:
    fit = fit_growth(EARLY, "cog ~ age1 * trt + (age1 | id)")
    table = occasion_means(fit, time="age1")
    assert table.schema == pl.Schema(MEANS_COLUMNS)
    assert table["occasion"].to_list() == [0.0, 0.5, 1.0]
    at1 = EARLY.filter(pl.col("age1") == 0.5)["cog"].to_numpy()
    row = table.row(1, named=True)
    assert row["n"] == 103
    assert row["observed_mean"] == pytest.approx(at1.mean())
    assert row["observed_std_error"] == pytest.approx(at1.std(ddof=1) / np.sqrt(103))
    b = dict(zip(fit.fixed_effects["term"], fit.fixed_effects["estimate"], strict=True))
    share_y = (EARLY.filter(pl.col("age1") == 0.5)["trt"] == "Y").mean()
    expected = b["(Intercept)"] + 0.5 * b["age1"] + share_y * (b["trtY"] + 0.5 * b["age1:trtY"])
    assert row["model_mean"] == pytest.approx(expected)


def test_not_nested_and_bad_columns_are_named() -> None:
    fit = fit_growth(EARLY, "cog ~ age1 + (1 | id)")
    with pytest.raises(
        ModelError, match="column 'wave' is not in the data of 'cog ~ age1 \\+ \\(1 \\| id\\)'"
    ):
        saturated_means_test(fit, time="wave")
    with pytest.raises(ModelError, match="has no fixed-effect term in 'age'"):
        saturated_means_test(fit_growth(EARLY, "cog ~ trt + (1 | id)"), time="age")
    # age1 is a polynomial of degree 1 in age: with three occasions of age1, a quadratic is saturated
    quad = fit_growth(EARLY, "cog ~ age1 + I(age1^2) + (1 | id)")
    with pytest.raises(ModelError, match="already has one mean per occasion \\(3 occasions\\)"):
        saturated_means_test(quad, time="age1")
    # own ages: time is not a function of the occasion labels given
    jitter = EARLY.with_columns(
        (pl.col("age1") + pl.col("id").cast(pl.Int64) % 7 * 0.01).alias("exact"),
        (pl.col("age1") * 2).alias("wave"),
    )
    own = fit_growth(jitter, "cog ~ exact + (1 | id)")
    with pytest.raises(ModelError, match="column 'exact' is not a function of the occasion"):
        saturated_means_test(own, time="exact", occasion="wave")


def _type1(reps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    persons, waves = 40, 4
    pid = np.repeat(np.arange(persons), waves).astype(str)
    t = np.tile(np.arange(waves, dtype=float), persons)
    rejections = 0
    for _ in range(reps):
        u = rng.normal(0, 2, persons)
        y = 5 + 1.0 * t + u[np.arange(persons).repeat(waves)] + rng.normal(0, 1.5, t.size)
        fit = fit_growth(
            pl.DataFrame({"pid": pid, "t": t, "y": y}), "y ~ t + (1 | pid)", reml=False
        )
        rejections += saturated_means_test(fit, time="t")["p_value"][1] < 0.05
    return rejections / reps


def test_type1_quick() -> None:
    """60 data sets where the linear model is true: a gross check (3 MC SDs = 0.085)."""
    assert _type1(60, seed=1) <= 0.05 + 0.085


@pytest.mark.slow
def test_type1_error_is_five_percent() -> None:
    """1000 data sets where the linear model is true: rejection rate 5 % within 3 MC SDs (0.021)."""
    assert abs(_type1(1000, seed=2) - 0.05) <= 0.021
