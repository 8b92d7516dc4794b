"""The model sequence written from the analysis specification (pipeline.analysis.sequence)."""

import pytest
from analysis_support import early_config, spec_of

from pipeline.analysis.sequence import (
    model_sequence,
    random_intercept_growth,
    time_terms,
)
from pipeline.analysis.spec import AnalysisSpec, ExtraModel


def _spec(*, polynomial=1, intercept=(), slope=(), extra=(), group=None):
    return AnalysisSpec(
        person="pid",
        time="wave",
        time_name="t",
        outcome="y",
        polynomial=polynomial,
        person_covariates=("trt", "ses", "g"),
        intercept_predictors=tuple(intercept),
        slope_predictors=tuple(slope),
        extra=tuple(ExtraModel(n, f) for n, f in extra),
        group=group,
    )


def test_time_terms_in_lme4_spelling():
    assert time_terms("age1", 3) == ("age1", "I(age1^2)", "I(age1^3)")
    with pytest.raises(ValueError, match="at least 1"):
        time_terms("age1", 0)


def test_linear_sequence_with_predictors_orders_terms_as_lme4():
    specs = model_sequence(_spec(intercept=["trt", "ses"], slope=["trt"]))
    assert [(s.name, s.role) for s in specs] == [
        ("unconditional_means", "means"),
        ("growth_random_intercept", "auxiliary"),
        ("unconditional_growth", "growth"),
        ("conditional_growth", "conditional"),
    ]
    assert specs[0].formula == "y ~ 1 + (1 | pid)"
    assert specs[1].formula == "y ~ t + (1 | pid)"
    assert specs[2].formula == "y ~ t + (t | pid)"
    assert specs[3].formula == "y ~ t + trt + ses + t:trt + (t | pid)"


def test_quadratic_sequence_and_random_order_cap():
    specs = model_sequence(_spec(polynomial=2, intercept=["g"], slope=["g"]))
    assert specs[2].formula == "y ~ t + I(t^2) + (t + I(t^2) | pid)"
    assert specs[3].formula == "y ~ t + I(t^2) + g + t:g + I(t^2):g + (t + I(t^2) | pid)"
    # three waves identify at most two random coefficients: intercept and linear slope
    capped = model_sequence(_spec(polynomial=2), distinct_times=3)
    assert capped[2].formula == "y ~ t + I(t^2) + (t | pid)"
    # two waves: random intercept only, so the growth model is its own random-intercept version
    two = model_sequence(_spec(), distinct_times=2)
    assert [s.name for s in two] == ["unconditional_means", "unconditional_growth"]
    assert two[1].formula == "y ~ t + (1 | pid)"


def test_group_comparison_model_is_part_of_the_sequence():
    specs = model_sequence(_spec(group="g"))
    assert specs[-1].name == "group_comparison" and specs[-1].role == "group"
    assert specs[-1].formula == "y ~ t + g + t:g + (t | pid)"
    # not added when the conditional model already compares the groups
    assert "group_comparison" not in {
        s.name for s in model_sequence(_spec(intercept=["g"], slope=["g"], group="g"))
    }


def test_no_conditional_model_without_predictors_and_extras_appended():
    specs = model_sequence(_spec(extra=[("uncorrelated", "y ~ t + (t || pid)")]))
    assert [s.role for s in specs] == ["means", "auxiliary", "growth", "extra"]
    assert specs[-1].formula == "y ~ t + (t || pid)"
    with pytest.raises(ValueError, match="already used"):
        model_sequence(_spec(extra=[("unconditional_means", "y ~ 1 + (1 | pid)")]))


def test_random_intercept_growth_is_the_null_of_the_random_slope_test():
    spec = random_intercept_growth(_spec(polynomial=2))
    assert spec.formula == "y ~ t + I(t^2) + (1 | pid)"


def test_the_specification_comes_from_the_study_config():
    spec = spec_of(early_config())
    assert (spec.person, spec.time, spec.time_name, spec.outcome) == ("id", "age", "age1", "cog")
    assert spec.group == "trt" and spec.group_in_conditional
    assert spec.categories == {"trt": ("N", "Y")}
    assert spec.time_text(1.0) == "age = 1 years"
    assert model_sequence(early_config()) == model_sequence(spec)
