"""The model sequence written from the config (pipeline.analysis.sequence)."""

from types import SimpleNamespace

import pytest

from pipeline.analysis.sequence import model_sequence, random_intercept_growth, time_terms


def _cfg(*, polynomial=1, intercept=(), slope=(), extra=()):
    return SimpleNamespace(
        data=SimpleNamespace(outcome="y", person="pid"),
        time=SimpleNamespace(name="t"),
        models=SimpleNamespace(
            polynomial=polynomial,
            intercept_predictors=list(intercept),
            slope_predictors=list(slope),
            extra=[SimpleNamespace(name=n, formula=f) for n, f in extra],
        ),
    )


def test_time_terms_in_lme4_spelling():
    assert time_terms("age1", 3) == ("age1", "I(age1^2)", "I(age1^3)")
    with pytest.raises(ValueError, match="at least 1"):
        time_terms("age1", 0)


def test_linear_sequence_with_predictors_orders_terms_as_lme4():
    specs = model_sequence(_cfg(intercept=["trt", "ses"], slope=["trt"]))
    assert [(s.name, s.role) for s in specs] == [
        ("unconditional_means", "means"),
        ("unconditional_growth", "growth"),
        ("conditional_growth", "conditional"),
    ]
    assert specs[0].formula == "y ~ 1 + (1 | pid)"
    assert specs[1].formula == "y ~ t + (t | pid)"
    assert specs[2].formula == "y ~ t + trt + ses + t:trt + (t | pid)"


def test_quadratic_sequence_and_random_order_cap():
    specs = model_sequence(_cfg(polynomial=2, intercept=["g"], slope=["g"]))
    assert specs[1].formula == "y ~ t + I(t^2) + (t + I(t^2) | pid)"
    assert specs[2].formula == "y ~ t + I(t^2) + g + t:g + I(t^2):g + (t + I(t^2) | pid)"
    # three waves identify at most two random coefficients: intercept and linear slope
    capped = model_sequence(_cfg(polynomial=2), distinct_times=3)
    assert capped[1].formula == "y ~ t + I(t^2) + (t | pid)"
    # two waves: random intercept only
    assert model_sequence(_cfg(), distinct_times=2)[1].formula == "y ~ t + (1 | pid)"


def test_no_conditional_model_without_predictors_and_extras_appended():
    specs = model_sequence(_cfg(extra=[("uncorrelated", "y ~ t + (t || pid)")]))
    assert [s.role for s in specs] == ["means", "growth", "extra"]
    assert specs[-1].formula == "y ~ t + (t || pid)"
    with pytest.raises(ValueError, match="already used"):
        model_sequence(_cfg(extra=[("unconditional_means", "y ~ 1 + (1 | pid)")]))


def test_random_intercept_growth_is_the_null_of_the_random_slope_test():
    spec = random_intercept_growth(_cfg(polynomial=2))
    assert spec.formula == "y ~ t + I(t^2) + (1 | pid)"
