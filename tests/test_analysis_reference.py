"""analyse() end to end on the Early and sleepstudy data, against lme4 / lmerTest reference
values (tests/reference/lme4_reference.json, lme4 1.1-31, lmerTest 3.1-3) where they exist."""

import json
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from analysis_support import REFERENCE, early_config, early_frame, levels_of
from pandera.errors import SchemaError

from pipeline.analysis import Analysis, analyse
from pipeline.analysis.comparison import holm
from schemas.tables import TABLE_SCHEMAS, validate_tables

LME4 = json.loads((REFERENCE / "lme4_reference.json").read_text())


@pytest.fixture(scope="module")
def early() -> Analysis:
    return analyse(levels_of(early_frame(), "age1"), early_config())


def _components(name):
    return {
        (c["var1"], c["var2"]): c["vcov"] for c in LME4[name]["varcorr"] if c["grp"] != "Residual"
    }


def test_every_contract_table_is_there_and_valid(early):
    expected = {
        "fixed_effects",
        "variance_components",
        "model_fit",
        "model_comparison",
        "icc",
        "variance_explained",
        "r2",
        "level_equations",
        "ols_vs_mlm",
        "sample_size",
        "assumptions",
        "reliability",
        "group_trajectories",
        "group_differences",
        "residuals",
        "random_effects",
        "observed_means",
        "residual_variance_by_time",
    }
    assert set(early.tables) == expected
    validate_tables(early.tables)
    assert early.failures.height == 0
    assert [m.name for m in early.models] == [
        "unconditional_means",
        "unconditional_growth",
        "conditional_growth",
    ]


def test_icc_follows_from_lme4_variance_components(early):
    tau = _components("early_null_reml")[("(Intercept)", None)]
    sigma2 = LME4["early_null_reml"]["sigma"] ** 2
    row = early.tables["icc"].row(0, named=True)
    assert row["icc"] == pytest.approx(tau / (tau + sigma2), rel=1e-4)  # 0.34670
    assert row["icc"] == pytest.approx(0.3467, abs=1e-4)
    assert 0.0 < row["conf_low"] < row["icc"] < row["conf_high"] < 1.0
    assert "34.7% of the total variance of cog lies between persons" in row["interpretation"]


def test_lrt_of_trt_matches_lme4(early):
    reference = LME4["lrt"]["early_trt_vs_growth"]
    row = (
        early.tables["model_comparison"]
        .filter(pl.col("model") == "conditional_growth")
        .row(0, named=True)
    )
    assert row["against"] == "unconditional_growth"
    assert row["chisq"] == pytest.approx(reference["chisq"], rel=1e-5)  # 26.271
    assert row["df"] == reference["df"] == 2
    assert row["p_value"] == pytest.approx(reference["p"], rel=1e-4)
    assert row["test"] == "LRT"
    # ML deviances are lme4's -2 logLik of the ML fits
    deviance = early.tables["model_comparison"].filter(pl.col("model") == "unconditional_means")[
        "deviance"
    ][0]
    assert deviance == pytest.approx(-2 * LME4["early_null_ml"]["logLik"], rel=1e-7)


def test_random_slope_test_uses_the_mixture(early):
    row = (
        early.tables["model_comparison"]
        .filter(pl.col("model") == "unconditional_growth")
        .row(0, named=True)
    )
    assert row["against"] == "growth_random_intercept"
    assert row["test"] == "LRT, 50:50 mixture chi2(1):chi2(2)"
    from scipy import stats

    expected = 0.5 * stats.chi2.sf(row["chisq"], 1) + 0.5 * stats.chi2.sf(row["chisq"], 2)
    assert row["p_value"] == pytest.approx(expected)


def test_fixed_effects_and_boundary_warning_of_the_conditional_model(early):
    fixed = early.tables["fixed_effects"].filter(pl.col("model") == "conditional_growth")
    for term, estimate in LME4["early_trt_reml"]["fixef"].items():
        assert fixed.filter(pl.col("term") == term)["estimate"][0] == pytest.approx(
            estimate, rel=1e-4
        )
    boundary = early.warnings.filter(pl.col("topic") == "boundary fit")["message"].to_list()
    assert len(boundary) == 1
    assert "the correlation of (Intercept) and age1 is estimated at -1" in boundary[0]


def test_pseudo_r2_of_time_from_lme4_residual_variances(early):
    before = LME4["early_null_reml"]["sigma"] ** 2
    after = LME4["early_growth_reml"]["sigma"] ** 2
    row = (
        early.tables["variance_explained"]
        .filter(pl.col("model") == "unconditional_growth")
        .row(0, named=True)
    )
    assert row["component"] == "Residual (within-person)"
    assert row["proportion_reduced"] == pytest.approx((before - after) / before, rel=1e-4)  # 0.526


def test_nakagawa_r2_of_the_means_model_is_the_icc(early):
    r2 = early.tables["r2"].filter(pl.col("model") == "unconditional_means").row(0, named=True)
    assert r2["r2_marginal"] == 0.0
    assert r2["r2_conditional"] == pytest.approx(early.tables["icc"]["icc"][0], rel=1e-10)


def test_group_differences_are_the_lmertest_contrasts(early):
    reference = LME4["early_trt_reml"]
    table = early.tables["group_differences"]
    status = table.filter((pl.col("quantity") == "status at t") & (pl.col("time") == 1.0)).row(
        0, named=True
    )
    assert status["contrast"] == "trt: Y - N"
    assert status["estimate"] == pytest.approx(reference["fixef"]["trtY"], rel=1e-4)
    assert status["std_error"] == pytest.approx(reference["se"]["trtY"], rel=1e-4)
    assert status["df"] == pytest.approx(reference["df_satterthwaite"]["trtY"], rel=1e-3)
    assert status["p_value"] == pytest.approx(reference["p_satterthwaite"]["trtY"], rel=1e-3)
    later = table.filter((pl.col("quantity") == "status at t") & (pl.col("time") == 2.0))[
        "estimate"
    ][0]
    assert later == pytest.approx(
        reference["fixef"]["trtY"] + reference["fixef"]["age1:trtY"], rel=1e-4
    )
    rate = table.filter(pl.col("quantity") == "rate of change").row(0, named=True)
    assert rate["time"] is None  # linear model: one rate
    assert rate["estimate"] == pytest.approx(reference["fixef"]["age1:trtY"], rel=1e-4)
    assert rate["std_error"] == pytest.approx(reference["se"]["age1:trtY"], rel=1e-4)
    assert rate["p_value"] == pytest.approx(reference["p_satterthwaite"]["age1:trtY"], rel=1e-3)


def test_trajectories_start_at_the_intercepts_and_span_the_observed_range(early):
    reference = LME4["early_trt_reml"]["fixef"]
    trajectories = early.tables["group_trajectories"]
    assert trajectories["time"].min() == 1.0 and trajectories["time"].max() == 2.0
    first = trajectories.filter(pl.col("time") == 1.0).sort("group")
    assert first["estimate"].to_list() == pytest.approx(
        [reference["(Intercept)"], reference["(Intercept)"] + reference["trtY"]], rel=1e-4
    )
    assert (trajectories["conf_low"] < trajectories["estimate"]).all()


def test_time_scale_is_undone_for_rates_and_times():
    frame = early_frame().with_columns(((pl.col("age") - 1.0) / 0.5).alias("age_half"))
    analysis = analyse(levels_of(frame, "age_half"), early_config(time_name="age_half", scale=0.5))
    rate = analysis.tables["group_differences"].filter(pl.col("quantity") == "rate of change")
    assert rate["estimate"][0] == pytest.approx(
        LME4["early_trt_reml"]["fixef"]["age1:trtY"], rel=1e-4
    )
    assert analysis.tables["group_trajectories"]["time"].max() == pytest.approx(2.0)
    assert sorted(analysis.tables["residuals"]["time"].unique().to_list()) == [1.0, 1.5, 2.0]


def test_observed_means_by_hand():
    frame = early_frame()
    table = analyse(levels_of(frame, "age1"), early_config()).tables["observed_means"]
    subset = frame.filter((pl.col("trt") == "Y") & (pl.col("age") == 1.5))["cog"].to_numpy()
    row = table.filter((pl.col("group") == "Y") & (pl.col("time") == 1.5)).row(0, named=True)
    assert row["n"] == 58
    assert row["mean"] == pytest.approx(subset.mean())
    assert row["std_error"] == pytest.approx(subset.std(ddof=1) / np.sqrt(58))


def test_a_failing_model_is_recorded_and_the_others_go_on():
    extra = '[[models.extra]]\nname = "broken"\nformula = "cog ~ age1 + nosuchcolumn + (age1 | id)"'
    analysis = analyse(levels_of(early_frame(), "age1"), early_config(extra=extra))
    assert analysis.failures["model"].to_list() == ["broken"]
    assert "nosuchcolumn" in analysis.failures["error"][0]
    assert "broken" not in analysis.fits and "conditional_growth" in analysis.fits
    assert "broken" in " ".join(
        analysis.warnings.filter(pl.col("topic") == "model failure")["message"]
    )
    assert analysis.tables["model_comparison"].height == 4


def test_more_than_two_groups_get_holm_adjusted_pairwise_differences():
    rng = np.random.default_rng(7)
    persons = 60
    group = np.repeat(np.array(["a", "b", "c"]), persons // 3)
    shift = {"a": 0.0, "b": 1.0, "c": 3.0}
    rows = []
    for index, g in enumerate(group):
        level = rng.normal(0, 1) + shift[g]
        for t in (0.0, 1.0, 2.0, 3.0):
            rows.append(
                {
                    "pid": f"p{index}",
                    "wave": t,
                    "t": t,
                    "g": g,
                    "y": level + 0.5 * t + rng.normal(0, 0.7),
                }
            )
    frame = pl.DataFrame(rows)
    cfg = SimpleNamespace(
        data=SimpleNamespace(
            person="pid",
            outcome="y",
            person_covariates=["g"],
            time_covariates=[],
            categories={},
            time="wave",
        ),
        covariates=["g"],
        time=SimpleNamespace(name="t", centre=0.0, scale=1.0),
        models=SimpleNamespace(
            polynomial=1, intercept_predictors=[], slope_predictors=[], extra=[]
        ),
        comparison=SimpleNamespace(group="g", at_times=[0.0]),
    )
    analysis = analyse(levels_of(frame, "t"), cfg)
    assert "group_comparison" in analysis.fits  # g is not a predictor: a comparison model is added
    status = analysis.tables["group_differences"].filter(pl.col("quantity") == "status at t")
    assert status["contrast"].to_list() == ["g: b - a", "g: c - a", "g: c - b"]
    np.testing.assert_allclose(status["p_holm"].to_numpy(), holm(status["p_value"].to_list()))
    assert status["estimate"][1] == pytest.approx(3.0, abs=0.8)


def test_sleepstudy_without_a_group():
    frame = pl.read_csv(REFERENCE / "sleepstudy.csv").with_columns(
        pl.col("Subject").cast(pl.String)
    )
    cfg = SimpleNamespace(
        data=SimpleNamespace(
            person="Subject",
            outcome="Reaction",
            person_covariates=[],
            time_covariates=[],
            categories={},
            time="Days",
        ),
        covariates=[],
        time=SimpleNamespace(name="Days", centre=0.0, scale=1.0),
        models=SimpleNamespace(
            polynomial=1, intercept_predictors=[], slope_predictors=[], extra=[]
        ),
        comparison=SimpleNamespace(group=None, at_times=[]),
    )
    analysis = analyse(levels_of(frame, "Days"), cfg)
    assert "group_differences" not in analysis.tables
    assert set(analysis.tables["group_trajectories"]["group"]) == {"all"}
    fixed = analysis.tables["fixed_effects"].filter(pl.col("model") == "unconditional_growth")
    assert fixed["estimate"].to_list() == pytest.approx(
        list(LME4["sleepstudy_growth_reml"]["fixef"].values()), rel=1e-4
    )
    sample = analysis.tables["sample_size"]
    assert (
        sample.filter(pl.col("check") == "persons for variance components")["status"][0]
        == "warning"
    )
    assert any("18 persons; fewer than 30" in m for m in analysis.warnings["message"])


def test_schemas_reject_bad_tables(early):
    bad = early.tables["icc"].with_columns(pl.lit(1.5).alias("icc"))
    with pytest.raises(SchemaError):
        TABLE_SCHEMAS["icc"].validate(bad)
    swapped = early.tables["group_differences"].with_columns(
        pl.col("conf_high").alias("conf_low"), pl.col("conf_low").alias("conf_high")
    )
    with pytest.raises(SchemaError):
        TABLE_SCHEMAS["group_differences"].validate(swapped)
    with pytest.raises(KeyError, match="no schema"):
        validate_tables({"unknown": pl.DataFrame()})
