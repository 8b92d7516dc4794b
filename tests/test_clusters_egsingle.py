"""The three-level example study (egsingle) end to end: config -> validate -> reshape -> analysis.

The conditional model is lme4's ``math ~ year * (lowinc + female + black + hispanic) +
(year | childid) + (year | schoolid)`` (R&B ch. 8); its reference values are the tight
refit in ``tests/reference/lme4_nested_reference.json`` (``make_nested_reference.R``).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.analysis import analyse
from pipeline.config import load_config
from pipeline.io import load_data
from pipeline.reshape import split_levels
from pipeline.validate import validate_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    cfg = load_config(ROOT / "config" / "egsingle.toml")
    result = validate_data(load_data(cfg), cfg)
    levels = split_levels(result.valid, cfg)
    return cfg, result, levels, analyse(levels, cfg)


def test_the_bundled_copy_is_the_reference_data():
    bundled = (ROOT / "data" / "egsingle.csv").read_bytes()
    assert bundled == (ROOT / "tests" / "reference" / "egsingle.csv").read_bytes()


def test_the_example_validates_and_reshapes_into_three_levels(study):
    _, result, levels, _ = study
    assert (result.rows_in, result.rows_used, result.rows_quarantined) == (7230, 7230, 0)
    assert levels.level2.height == 1721
    schools = levels.clusters["schoolid"]
    assert schools.height == 60
    assert schools.columns == ["schoolid", "lowinc", "n_persons", "n_observations"]
    assert int(schools["n_persons"].sum()) == 1721
    assert int(schools["n_observations"].sum()) == 7230
    assert {"schoolid", "lowinc"} <= set(levels.model_frame.columns)


def test_the_three_level_sequence_is_fitted(study):
    _, _, _, analysis = study
    random = "(years | childid) + (years | schoolid)"
    expected = {
        "unconditional_means": "math ~ 1 + (1 | childid) + (1 | schoolid)",
        "growth_random_intercept": "math ~ years + (1 | childid) + (1 | schoolid)",
        "unconditional_growth": f"math ~ years + {random}",
        "conditional_growth": "math ~ years + female + black + hispanic + lowinc + "
        "years:female + years:black + years:hispanic + years:lowinc + " + random,
    }
    assert {model.name: model.formula for model in analysis.models} == expected
    assert set(analysis.fits) == set(expected)
    assert analysis.failures.height == 0
    for fit in analysis.fits.values():
        groups = fit.variance_components["group"].unique(maintain_order=True).to_list()
        assert groups == ["childid", "schoolid", "Residual"]


def test_the_conditional_model_agrees_with_lme4(study):
    _, _, _, analysis = study
    reference = json.loads(
        (ROOT / "tests" / "reference" / "lme4_nested_reference.json").read_text()
    )["eg_conditional_unique_ids_reml"]
    tight = reference["tight_refit"]
    fit = analysis.fits["conditional_growth"]
    # our log-likelihood equals lme4's tightly converged one (its default fit stops short)
    assert fit.loglik == pytest.approx(tight["logLik"], abs=1e-5)
    assert fit.loglik >= reference["logLik"] - 1e-6
    estimates = dict(fit.fixed_effects.select("term", "estimate").iter_rows())
    for term, value in tight["fixef"].items():
        ours = term.replace("year", "years")  # lme4 writes year:lowinc as we do
        assert estimates[ours] == pytest.approx(value, abs=2e-4), term
    errors = dict(fit.fixed_effects.select("term", "std_error").iter_rows())
    for term, value in reference["se"].items():
        assert errors[term.replace("year", "years")] == pytest.approx(value, rel=2e-3), term
    school = fit.variance_components.filter(
        (pl.col("group") == "schoolid") & pl.col("term2").is_null()
    )
    expected = {
        row["var1"]: row["vcov"]
        for row in reference["varcorr"]
        if row["grp"] == "schoolid" and row["var2"] is None
    }
    for term1, variance in school.select("term1", "variance").iter_rows():
        assert variance == pytest.approx(expected[term1.replace("years", "year")], rel=2e-3)
