"""Predictions for any predictor (``predictor_values``, ``predictor_trajectories``) and the
pieces of piecewise-linear time (``time_pieces``): hand-checked values, the choice of
values (over persons, not rows; over clusters for a cluster-level predictor), the held
covariates, ``[comparison] at_values``, and the messages for bad config keys.

The coverage of the bands under simulation is in test_predictions_coverage.py (slow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from analysis_support import early_config, early_frame, levels_of
from scipy import stats

from pipeline.analysis import STEPS, analyse
from pipeline.analysis.predictions import check_against_data
from pipeline.analysis.spec import AnalysisSpec
from pipeline.config import StudyConfig, parse_config
from pipeline.errors import ConfigError

ROOT = Path(__file__).parents[1]
ONLY = tuple(s for s in STEPS if s.topic in ("model tables", "predictions"))


def _simulated(seed: int = 3) -> pl.DataFrame:
    """Unbalanced on purpose: persons with high ses have more rows, so the mean of ses
    over rows differs from its mean over persons."""
    rng = np.random.default_rng(seed)
    rows = []
    for person in range(80):
        ses = rng.normal()
        trt = "Y" if person % 3 == 0 else "N"
        waves = 4 if ses > 0 else 2
        u0, u1 = rng.normal(scale=2.0), rng.normal(scale=0.5)
        for wave in range(waves):
            y = 10 + 2 * wave + 1.5 * ses + 0.5 * ses * wave + (trt == "Y") + u0 + u1 * wave
            rows.append(
                {
                    "pid": f"p{person}",
                    "wave": float(wave),
                    "y": y + rng.normal(),
                    "ses": ses,
                    "trt": trt,
                }
            )
    return pl.DataFrame(rows)


SIM_TOML = """
[study]
name = "sim"
title = "Simulated"

[data]
path = "sim.csv"
person = "pid"
time = "wave"
outcome = "y"
person_covariates = ["ses", "trt"]
{data_extra}

[time]
name = "t"

[models]
polynomial = 1
intercept_predictors = {intercept}
slope_predictors = ["ses"]

[comparison]
{comparison}

[output]
dir = "out"
"""


def _config(
    comparison: str = "", *, intercept: str = '["ses", "trt"]', data_extra: str = ""
) -> StudyConfig:
    text = SIM_TOML.format(comparison=comparison, intercept=intercept, data_extra=data_extra)
    return parse_config(text, path="sim_test.toml")


def test_values_are_over_persons_and_trajectories_are_x_beta() -> None:
    frame = _simulated()
    cfg = _config()
    analysis = analyse(levels_of(frame, cfg), cfg, steps=ONLY)
    values = analysis.tables["predictor_values"]
    per_person = frame.group_by("pid").agg(pl.col("ses").first())["ses"].to_numpy()
    mean, sd = per_person.mean(), per_person.std(ddof=1)
    assert abs(frame["ses"].mean() - mean) > 0.1  # rows and persons really differ here
    assert values["predictor"].to_list() == ["ses"] * 3
    assert values["level"].to_list() == ["person"] * 3
    assert values["units"].to_list() == [80] * 3
    assert values["setting"].to_list() == ["mean - 1 SD", "mean", "mean + 1 SD"]
    assert values["value"].to_numpy() == pytest.approx([mean - sd, mean, mean + sd], rel=1e-12)

    fit = analysis.fits["conditional_growth"]
    names = fit.fixed_effects["term"].to_list()
    assert names == ["(Intercept)", "t", "ses", "trtY", "t:ses"]
    beta = fit.fixed_effects["estimate"].to_numpy()
    table = analysis.tables["predictor_trajectories"]
    assert table.height == 3 * 25
    assert table["time"].min() == 0.0 and table["time"].max() == 3.0
    for row in table.filter(pl.col("time").is_in([0.0, 3.0])).iter_rows(named=True):
        v, t = row["value"], row["time"]
        # trt averaged over its two levels with equal weights (trtY = 1/2)
        x = np.array([1.0, t, v, 0.5, t * v])
        se = float(np.sqrt(x @ fit.vcov @ x))
        assert row["estimate"] == pytest.approx(float(x @ beta), rel=1e-10)
        assert row["std_error"] == pytest.approx(se, rel=1e-8)
        half = stats.t.ppf(0.975, row["df"]) * se
        assert row["conf_low"] == pytest.approx(row["estimate"] - half, rel=1e-8)
        assert row["conf_high"] == pytest.approx(row["estimate"] + half, rel=1e-8)
        assert 1.0 < row["df"] < 1000.0  # Satterthwaite, not the normal quantile


def test_at_values_replace_the_default() -> None:
    frame = _simulated()
    cfg = _config(comparison="at_values = { ses = [-1.0, 0.0, 3.5] }")
    analysis = analyse(levels_of(frame, cfg), cfg, steps=ONLY)
    values = analysis.tables["predictor_values"]
    assert values["value"].to_list() == [-1.0, 0.0, 3.5]
    assert values["setting"].to_list() == ["at_values"] * 3
    table = analysis.tables["predictor_trajectories"]
    assert sorted(set(table["value"].to_list())) == [-1.0, 0.0, 3.5]
    notes = analysis.warnings.filter(pl.col("topic") == "predictions")["message"].to_list()
    assert len(notes) == 1 and notes[0].startswith("ses = 3.5 lies outside the observed values")


def test_a_binary_predictor_gets_no_default_trajectory() -> None:
    frame = _simulated().with_columns((pl.col("trt") == "Y").cast(pl.Float64).alias("trt"))
    cfg = _config()
    analysis = analyse(levels_of(frame, cfg), cfg, steps=ONLY)
    assert set(analysis.tables["predictor_values"]["predictor"].to_list()) == {"ses"}


def test_cluster_level_predictor_values_are_over_clusters() -> None:
    cfg = parse_config(
        (ROOT / "config" / "egsingle.toml").read_text(), path=ROOT / "config" / "x.toml"
    )
    frame = pl.read_csv(
        ROOT / "data" / "egsingle.csv",
        schema_overrides={"childid": pl.String, "schoolid": pl.String},
    )
    analysis = analyse(levels_of(frame, cfg), cfg, steps=ONLY)
    values = analysis.tables["predictor_values"]
    # female, black, hispanic are 0/1 indicators: no default trajectories
    assert values["predictor"].to_list() == ["lowinc"] * 3
    assert values["level"].to_list() == ["schoolid"] * 3
    used = analysis.fits["conditional_growth"].frame
    schools = used.group_by("schoolid").agg(pl.col("lowinc").first())["lowinc"].to_numpy()
    assert values["units"][0] == schools.size == 60
    assert values["mean"][0] == pytest.approx(schools.mean(), rel=1e-12)
    assert values["sd"][0] == pytest.approx(schools.std(ddof=1), rel=1e-12)
    assert abs(used["lowinc"].mean() - schools.mean()) > 0.5  # rows would give another mean
    table = analysis.tables["predictor_trajectories"]
    low = table.filter(pl.col("setting") == "mean - 1 SD")
    high = table.filter(pl.col("setting") == "mean + 1 SD")
    # schools with more low-income pupils start lower (the Raudenbush & Bryk result)
    assert high["estimate"][0] < low["estimate"][0]


@pytest.mark.parametrize(
    ("comparison", "message"),
    [
        (
            "at_values = { age = [1.0] }",
            "[comparison] at_values: 'age' is not a continuous predictor: it is not a "
            "predictor of the conditional model ([models] intercept_predictors/"
            "slope_predictors: ['ses', 'trt'])",
        ),
        (
            'group = "trt"\nat_values = { trt = [1.0] }',
            "[comparison] at_values: 'trt' is not a continuous predictor: it is categorical "
            "(compare its levels with [comparison] group)",
        ),
        (
            "at_values = { sess = [1.0] }",
            "; did you mean 'ses'?",
        ),
        (
            "at_values = { ses = [] }",
            "[comparison] at_values: 'ses' has no values; expected a list such as [-1, 0, 1]",
        ),
        (
            "at_values = { ses = [1.0, 1.0] }",
            "[comparison] at_values: 'ses' lists a value twice, got [1.0, 1.0]",
        ),
    ],
)
def test_at_values_config_messages(comparison: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(comparison=comparison)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text and "sim_test.toml: " in text


def test_at_values_for_a_time_varying_covariate_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        _config(
            "at_values = { x = [0.0] }",
            intercept='["ses", "x"]',
            data_extra='time_covariates = ["x"]',
        )
    assert (
        "[comparison] at_values: 'x' is not a continuous predictor: it is time-varying; "
        "expected a person- or cluster-level predictor"
    ) in str(caught.value)


def test_at_values_on_a_text_column_is_refused_with_the_data() -> None:
    frame = _simulated().with_columns(pl.col("ses").round(1).cast(pl.String))
    cfg = _config(comparison="at_values = { ses = [0.0] }")
    with pytest.raises(ConfigError) as caught:
        check_against_data(AnalysisSpec.from_config(cfg), frame, source="study.toml")
    assert str(caught.value) == (
        "study.toml: [comparison] at_values: 'ses' is not a continuous predictor: its column "
        "is String, not numeric"
    )


def _early_with_knot(knot: str) -> tuple:
    cfg = early_config()
    text = cfg.source_text.replace('unit = "years"\n', f'unit = "years"\nknots = [{knot}]\n')
    cfg = parse_config(text, path=cfg.source_path)
    return levels_of(early_frame(), cfg), cfg


def test_knot_outside_the_observed_times_is_refused() -> None:
    levels, cfg = _early_with_knot("2.5")  # no [data] time_range: only the data can tell
    with pytest.raises(ConfigError) as caught:
        analyse(levels, cfg, steps=ONLY)
    assert str(caught.value).endswith(
        "early_test.toml: [time] knots: knot 2.5 is outside the observed times of 'age' "
        "(1 to 2); a knot must lie strictly inside them"
    )


def test_time_pieces_are_contrasts_of_the_knot_coefficients() -> None:
    levels, cfg = _early_with_knot("1.5")
    analysis = analyse(levels, cfg, steps=ONLY)
    pieces = analysis.tables["time_pieces"]
    growth = analysis.fits["unconditional_growth"]
    fe = {r["term"]: r for r in growth.fixed_effects.iter_rows(named=True)}
    assert list(fe) == ["(Intercept)", "age1", "pmax(age1 - 0.5, 0)"]
    rows = pieces.filter(pl.col("model") == "unconditional_growth").to_dicts()
    assert [(r["piece"], r["time_from"], r["time_to"]) for r in rows] == [
        ("slope", 1.0, 1.5),
        ("change of slope", 1.5, 1.5),
        ("slope", 1.5, 2.0),
    ]
    before, change, after = rows
    for key in ("estimate", "std_error", "df", "p_value"):
        assert before[key] == pytest.approx(fe["age1"][key], rel=1e-6)
        assert change[key] == pytest.approx(fe["pmax(age1 - 0.5, 0)"][key], rel=1e-6)
    total = growth.contrast(np.array([0.0, 1.0, 1.0]))
    assert after["estimate"] == pytest.approx(before["estimate"] + change["estimate"], rel=1e-9)
    for key in ("estimate", "std_error", "df", "conf_low", "conf_high"):
        assert after[key] == pytest.approx(total[key], rel=1e-6)
    # the SE of the slope after is not the sum of the SEs (nor their root sum of squares)
    assert after["std_error"] < before["std_error"] + change["std_error"]
    # per group from the conditional model (trt predicts status and change)
    groups = pieces.filter(pl.col("model") == "conditional_growth")
    assert groups["group"].to_list() == ["N"] * 3 + ["Y"] * 3
    conditional = analysis.fits["conditional_growth"]
    names = conditional.fixed_effects["term"].to_list()
    L = np.array([float(n in ("age1", "age1:trtY")) for n in names])
    slope_y = conditional.contrast(L)
    first_y = groups.filter((pl.col("group") == "Y") & (pl.col("time_to") == 1.5)).row(
        0, named=True
    )
    assert first_y["estimate"] == pytest.approx(slope_y["estimate"], rel=1e-6)
    assert first_y["std_error"] == pytest.approx(slope_y["std_error"], rel=1e-6)
