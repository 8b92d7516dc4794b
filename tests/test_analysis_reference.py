"""analyse() end to end on the Early and sleepstudy data, against lme4 / lmerTest reference
values (tests/reference/lme4_reference.json, lme4 1.1-31, lmerTest 3.1-3) where they exist."""

import json

import numpy as np
import polars as pl
import pytest
from analysis_support import REFERENCE, early_config, early_frame, levels_of, study_config
from pandera.errors import SchemaError

from pipeline.analysis import Analysis, analyse
from pipeline.analysis.comparison import holm
from schemas.tables import ALWAYS, TABLE_SCHEMAS, validate_tables

LME4 = json.loads((REFERENCE / "lme4_reference.json").read_text())
R = json.loads((REFERENCE / "analysis_reference.json").read_text())


@pytest.fixture(scope="module")
def early() -> Analysis:
    cfg = early_config()
    return analyse(levels_of(early_frame(), cfg), cfg)


def _components(name):
    return {
        (c["var1"], c["var2"]): c["vcov"] for c in LME4[name]["varcorr"] if c["grp"] != "Residual"
    }


def test_every_contract_table_is_there_and_valid(early):
    assert set(early.tables) == set(ALWAYS)  # the example asks for no optional table
    assert list(early.tables) == list(ALWAYS)  # in the contract's order
    validate_tables(early.tables)
    assert early.failures.height == 0
    assert [m.name for m in early.models] == [
        "unconditional_means",
        "growth_random_intercept",
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


def _test(early, model, against):
    tests = early.tables["likelihood_ratio_tests"]
    return tests.filter((pl.col("model") == model) & (pl.col("against") == against)).row(
        0, named=True
    )


def test_lrt_of_trt_matches_lme4(early):
    reference = LME4["lrt"]["early_trt_vs_growth"]
    row = _test(early, "conditional_growth", "unconditional_growth")
    assert row["chisq"] == pytest.approx(reference["chisq"], rel=1e-5)  # 26.271
    assert row["df"] == reference["df"] == 2
    assert row["p_value"] == pytest.approx(reference["p"], rel=1e-4)
    assert row["reference"] == "chi2(2)"
    assert row["hypothesis"] == "fixed effect(s) trtY, age1:trtY = 0"
    # ML deviances are lme4's -2 logLik of the ML fits
    deviance = early.tables["model_comparison"].filter(pl.col("model") == "unconditional_means")[
        "deviance"
    ][0]
    assert deviance == pytest.approx(-2 * LME4["early_null_ml"]["logLik"], rel=1e-7)


def test_random_slope_test_uses_the_mixture_and_agrees_with_r(early):
    # the same chi2 = 1.626 on 2 df: p = 0.443 from chi2(2) (what compare() used to give) is
    # conservative; the slope variance is on the boundary under the null, so the reference is
    # the 50:50 mixture of chi2(1) and chi2(2) (Stram & Lee 1994): p = 0.323
    reference = R["lrt"]["random_slope"]
    row = _test(early, "unconditional_growth", "growth_random_intercept")
    assert row["chisq"] == pytest.approx(reference["chisq"], rel=1e-5)
    assert row["df"] == reference["df"] == 2
    assert row["reference"] == "50:50 mixture chi2(1):chi2(2)"
    assert row["p_value"] == pytest.approx(reference["p_mixture"], rel=1e-5)  # 0.3228
    assert reference["p_chi2"] == pytest.approx(0.4435, abs=1e-4)


def test_only_covering_nested_pairs_are_tested(early):
    pairs = {
        (row["model"], row["against"])
        for row in early.tables["likelihood_ratio_tests"].iter_rows(named=True)
    }
    assert pairs == {
        ("growth_random_intercept", "unconditional_means"),
        ("unconditional_growth", "growth_random_intercept"),
        ("conditional_growth", "unconditional_growth"),
    }


def test_fixed_effects_and_boundary_warning_of_the_conditional_model(early):
    fixed = early.tables["fixed_effects"].filter(pl.col("model") == "conditional_growth")
    for term, estimate in LME4["early_trt_reml"]["fixef"].items():
        assert fixed.filter(pl.col("term") == term)["estimate"][0] == pytest.approx(
            estimate, rel=1e-4
        )
    boundary = early.warnings.filter(pl.col("topic") == "boundary fit")["message"].to_list()
    assert len(boundary) == 1
    assert "the correlation of (Intercept) and age1 is estimated at -1" in boundary[0]
    # it says what the data cannot support, and does not recommend uncorrelated effects
    assert "||" not in boundary[0] and "uncorrelated" not in boundary[0]
    assert "reliability" in boundary[0] and "test of the slope variance" in boundary[0]
    assert (
        "Satterthwaite df on a singular fit can be larger than the design supports" in boundary[0]
    )


def test_pseudo_r2_only_between_models_with_the_same_random_part(early):
    table = early.tables["variance_explained"]
    # time's share of the within-person variance: two random-intercept models (R reference)
    time = table.filter(pl.col("model") == "growth_random_intercept").row(0, named=True)
    assert time["reference"] == "unconditional_means"
    assert time["component"] == "Residual (within-person)"
    assert time["proportion_reduced"] == pytest.approx(R["pseudo_r2_time"]["proportion"], rel=1e-5)
    # trt (a person-level predictor): level-2 rows only, no level-1 row
    trt = table.filter(pl.col("model") == "conditional_growth")
    assert set(trt["reference"]) == {"unconditional_growth"}
    assert trt["component"].to_list() == ["id: (Intercept)", "id: age1"]
    intercept = trt.row(0, named=True)
    assert intercept["note"] == (
        "between-person variance of status at age = 1 years (where time is centred)"
    )
    # no row compares models whose random parts differ (e.g. the means and the growth model)
    assert table.filter(pl.col("model") == "unconditional_growth").height == 0


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
    frame = early_frame()
    cfg = early_config(time_name="age_half", scale=0.5)
    analysis = analyse(levels_of(frame, cfg), cfg)
    rate = analysis.tables["group_differences"].filter(pl.col("quantity") == "rate of change")
    assert rate["estimate"][0] == pytest.approx(
        LME4["early_trt_reml"]["fixef"]["age1:trtY"], rel=1e-4
    )
    assert analysis.tables["group_trajectories"]["time"].max() == pytest.approx(2.0)
    assert sorted(analysis.tables["residuals"]["time"].unique().to_list()) == [1.0, 1.5, 2.0]


def test_observed_means_by_hand():
    frame = early_frame()
    cfg = early_config()
    table = analyse(levels_of(frame, cfg), cfg).tables["observed_means"]
    subset = frame.filter((pl.col("trt") == "Y") & (pl.col("age") == 1.5))["cog"].to_numpy()
    row = table.filter((pl.col("group") == "Y") & (pl.col("time") == 1.5)).row(0, named=True)
    assert row["n"] == 58
    assert row["mean"] == pytest.approx(subset.mean())
    assert row["std_error"] == pytest.approx(subset.std(ddof=1) / np.sqrt(58))


def test_a_failing_model_is_recorded_and_the_others_go_on():
    extra = '[[models.extra]]\nname = "broken"\nformula = "cog ~ age1 + nosuchcolumn + (age1 | id)"'
    cfg = early_config(extra=extra)
    analysis = analyse(levels_of(early_frame(), cfg), cfg)
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
    cfg = study_config(person_covariates=("g",), group="g", at_times=(0.0,))
    analysis = analyse(levels_of(frame, cfg), cfg)
    assert "group_comparison" in analysis.fits  # g is not a predictor: a comparison model is added
    status = analysis.tables["group_differences"].filter(pl.col("quantity") == "status at t")
    assert status["contrast"].to_list() == ["g: b - a", "g: c - a", "g: c - b"]
    # Holm over every row of the table (the family is the table), not per time
    table = analysis.tables["group_differences"]
    np.testing.assert_allclose(table["p_holm"].to_numpy(), holm(table["p_value"].to_list()))
    assert table.height == 6  # 3 pairs x (status at t = 0, rate of change)
    assert status["estimate"][1] == pytest.approx(3.0, abs=0.8)


def test_sleepstudy_without_a_group():
    frame = pl.read_csv(REFERENCE / "sleepstudy.csv").with_columns(
        pl.col("Subject").cast(pl.String)
    )
    cfg = study_config(person="Subject", time="Days", outcome="Reaction", time_name="days")
    analysis = analyse(levels_of(frame, cfg), cfg)
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
