"""Feingold (2009) effect sizes: hand-checked on the Early data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.stats

from pipeline import fit_growth
from pipeline.analysis.bootstrap import parametric_bootstrap
from pipeline.analysis.effect_size import COLUMNS, FeingoldD, feingold_effect_sizes
from pipeline.errors import ModelError

REF = Path(__file__).parent / "reference"
EARLY = pl.read_csv(REF / "early.csv", schema_overrides={"id": pl.String, "trt": pl.String})


@pytest.fixture(scope="module")
def fit():
    return fit_growth(EARLY, "cog ~ age1 * trt + (age1 | id)")


def test_change_and_status_by_hand(fit) -> None:
    table = feingold_effect_sizes(fit, group="trt", time="age1", status_times=[1.0])
    assert table.schema == pl.Schema(COLUMNS)
    b = dict(zip(fit.fixed_effects["term"], fit.fixed_effects["estimate"], strict=True))
    base = EARLY.filter(pl.col("age1") == 0)
    n = base.group_by("trt").agg(pl.len(), pl.col("cog").var()).sort("trt")
    pooled = np.sqrt(((n["len"] - 1) * n["cog"]).sum() / (n["len"] - 1).sum())
    change, status = table.row(0, named=True), table.row(1, named=True)
    # duration = 1 year (age 1 to 2): the difference in change is the interaction times 1
    assert change["difference"] == pytest.approx(b["age1:trtY"] * 1.0)
    assert change["sd"] == pytest.approx(pooled)
    assert change["effect_size"] == pytest.approx(b["age1:trtY"] / pooled)
    assert status["difference"] == pytest.approx(b["trtY"] + b["age1:trtY"])
    assert status["effect_size"] == pytest.approx((b["trtY"] + b["age1:trtY"]) / pooled)
    # the interval: the Satterthwaite t interval of the coefficient divided by the fixed SD
    coef = fit.fixed_effects.filter(pl.col("term") == "age1:trtY").row(0, named=True)
    half = scipy.stats.t.ppf(0.975, coef["df"]) * coef["std_error"]
    assert change["es_conf_low"] == pytest.approx((coef["estimate"] - half) / pooled)
    assert change["es_conf_high"] == pytest.approx((coef["estimate"] + half) / pooled)
    assert (change["group"], change["reference"], change["time_from"], change["time_to"]) == (
        "Y",
        "N",
        0.0,
        1.0,
    )
    assert change["sd_definition"].startswith(
        "pooled within-group SD of the observed outcome at baseline (age1 = 0"
    )
    assert "SD treated as fixed" in change["interval_method"]


def test_total_sd_and_a_longer_duration(fit) -> None:
    table = feingold_effect_sizes(fit, group="trt", time="age1", sd="total", end=0.5)
    total = EARLY.filter(pl.col("age1") == 0)["cog"].std()
    b = dict(zip(fit.fixed_effects["term"], fit.fixed_effects["estimate"], strict=True))
    assert table["sd"][0] == pytest.approx(total)
    assert table["effect_size"][0] == pytest.approx(0.5 * b["age1:trtY"] / total)
    assert table["sd_definition"][0].startswith(
        "SD of the observed outcome of all persons at baseline"
    )


def test_other_covariates_are_held_fixed() -> None:
    """A quadratic model with a covariate that does not interact with the group: it cancels."""
    data = EARLY.with_columns((pl.col("id").cast(pl.Int64) % 5).cast(pl.Float64).alias("z"))
    fit = fit_growth(data, "cog ~ (age1 + I(age1^2)) * trt + z + (1 | id)")
    table = feingold_effect_sizes(fit, group="trt", time="age1", at={"z": 3.0})
    b = dict(zip(fit.fixed_effects["term"], fit.fixed_effects["estimate"], strict=True))
    assert table["difference"][0] == pytest.approx(b["age1:trtY"] + b["I(age1^2):trtY"])


def test_errors_are_named(fit) -> None:
    with pytest.raises(
        ModelError,
        match="'sex' is not a categorical predictor of 'cog ~ age1 \\* trt \\+ \\(age1 \\| id\\)' \\(categorical: trt\\)",
    ):
        feingold_effect_sizes(fit, group="sex", time="age1")
    with pytest.raises(ModelError, match="'wave' is not a numeric column"):
        feingold_effect_sizes(fit, group="trt", time="wave")
    with pytest.raises(
        ModelError, match="the end of the study \\(0\\) must be after baseline \\(0\\)"
    ):
        feingold_effect_sizes(fit, group="trt", time="age1", end=0.0)
    with pytest.raises(
        ModelError, match="fewer than 2 observed outcomes at baseline \\(age1 = 0.25\\)"
    ):
        feingold_effect_sizes(fit, group="trt", time="age1", baseline=0.25)
    with pytest.raises(ModelError, match="sd must be 'pooled' or 'total', not 'raw'"):
        feingold_effect_sizes(fit, group="trt", time="age1", sd="raw")


def test_bootstrap_statistic_recomputes_the_sd_from_the_simulated_outcome(fit) -> None:
    stat = FeingoldD(group="trt", time="age1")
    delta = feingold_effect_sizes(fit, group="trt", time="age1").row(0, named=True)
    assert stat({"model": fit}) == pytest.approx(delta["effect_size"])
    table = parametric_bootstrap(fit, {"d": stat}, replicates=8, seed=2).row(0, named=True)
    assert table["estimate"] == pytest.approx(delta["effect_size"])
    assert table["used"] == 8 and table["conf_low"] < table["conf_high"]
