"""The model sequence of Singer & Willett (2003, ch. 4), written as lme4 formulas.

From the study config:

- ``unconditional_means``: ``y ~ 1 + (1 | person)`` (role ``"means"``);
- ``unconditional_growth``: ``y ~ t + I(t^2) ... + (t + I(t^2) ... | person)`` up to
  ``cfg.models.polynomial`` (role ``"growth"``);
- ``conditional_growth``: the growth model plus ``intercept_predictors`` as main
  effects and ``slope_predictors`` interacting with every time term (role
  ``"conditional"``), only when predictors are configured;
- every ``[[models.extra]]`` formula as given (role ``"extra"``).

Terms are written in lme4's order (main effects first, in order of appearance, then
interactions), so the formula reads the way ``summary(lmer(...))`` lists the terms.

The random part of the growth models holds every time term whose variance the data
can identify: with ``k`` distinct occasions per person at most ``k - 1`` random
coefficients can be separated from the level-1 residual, so when
``distinct_times`` is given the random polynomial order is capped at
``distinct_times - 2`` (a quadratic growth model on three waves keeps a random
intercept and a random linear slope, as Singer & Willett do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.errors import GrowthError
from pipeline.model.formula import parse_formula, quote_name

__all__ = ["ModelSpec", "Role", "model_sequence", "time_terms", "random_intercept_growth"]

Role = Literal["means", "growth", "conditional", "extra"]

MEANS = "unconditional_means"
GROWTH = "unconditional_growth"
CONDITIONAL = "conditional_growth"
RANDOM_INTERCEPT_GROWTH = "growth_random_intercept"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model of the sequence: its name, its lme4 formula and its role."""

    name: str
    formula: str
    role: Role


def time_terms(time_name: str, order: int) -> tuple[str, ...]:
    """The polynomial time terms in lme4 spelling: ``("age1", "I(age1^2)", ...)``."""
    if order < 1:
        raise ValueError(f"polynomial order must be at least 1, got {order}")
    name = quote_name(time_name)
    return tuple(name if power == 1 else f"I({name}^{power})" for power in range(1, order + 1))


def _random_order(order: int, distinct_times: int | None) -> int:
    if distinct_times is None:
        return order
    return max(0, min(order, distinct_times - 2))


def _random_part(time: tuple[str, ...], person: str) -> str:
    inside = " + ".join(time) if time else "1"
    return f"({inside} | {person})"


def model_sequence(
    cfg: Any, *, time_name: str | None = None, distinct_times: int | None = None
) -> tuple[ModelSpec, ...]:
    """The models to fit for ``cfg`` (a StudyConfig), in order.

    ``time_name`` defaults to ``cfg.time.name``; ``distinct_times`` (the most
    distinct occasions any person has) caps the random polynomial order as
    explained in the module docstring.
    """
    outcome = quote_name(cfg.data.outcome)
    person = quote_name(cfg.data.person)
    time = time_terms(time_name or cfg.time.name, cfg.models.polynomial)
    random_time = time[: _random_order(cfg.models.polynomial, distinct_times)]
    random = _random_part(random_time, person)
    specs = [
        ModelSpec(name=MEANS, formula=f"{outcome} ~ 1 + (1 | {person})", role="means"),
        ModelSpec(name=GROWTH, formula=f"{outcome} ~ {' + '.join(time)} + {random}", role="growth"),
    ]
    intercept_predictors = [quote_name(c) for c in dict.fromkeys(cfg.models.intercept_predictors)]
    slope_predictors = [quote_name(c) for c in dict.fromkeys(cfg.models.slope_predictors)]
    if intercept_predictors or slope_predictors:
        main = [*time, *intercept_predictors]
        # written in the order lme4's terms() lists them: all main effects, then the
        # interactions in order of appearance (by time term, then predictor)
        interactions = [f"{term}:{predictor}" for term in time for predictor in slope_predictors]
        fixed = " + ".join([*main, *interactions])
        specs.append(
            ModelSpec(
                name=CONDITIONAL, formula=f"{outcome} ~ {fixed} + {random}", role="conditional"
            )
        )
    names = {spec.name for spec in specs}
    for extra in cfg.models.extra:
        if extra.name in names:
            raise ValueError(
                f"[[models.extra]] name '{extra.name}' is already used by the model sequence"
            )
        names.add(extra.name)
        specs.append(ModelSpec(name=extra.name, formula=extra.formula, role="extra"))
    return tuple(specs)


def random_intercept_growth(cfg: Any, *, time_name: str | None = None) -> ModelSpec:
    """The growth model with fixed slopes, ``y ~ t + (1 | person)``: the null model of the
    test for random slopes (fitted by ML for the comparison table only)."""
    time = time_terms(time_name or cfg.time.name, cfg.models.polynomial)
    return ModelSpec(
        name=RANDOM_INTERCEPT_GROWTH,
        formula=f"{quote_name(cfg.data.outcome)} ~ {' + '.join(time)} + (1 | {quote_name(cfg.data.person)})",
        role="growth",
    )


def check_models(cfg: Any, *, columns: list[str], time_name: str | None = None) -> list[str]:
    """Problems with the configured models that show before any fitting, one line each.

    Every formula of the sequence (the generated ones and ``[[models.extra]]``)
    must parse and use only columns of the model frame (``columns``).
    """
    try:
        specs = model_sequence(cfg, time_name=time_name)
    except (GrowthError, ValueError) as error:
        return [str(error)]
    problems = []
    for spec in specs:
        where = (
            f"[[models.extra]] {spec.name!r}" if spec.role == "extra" else f"model {spec.name!r}"
        )
        try:
            formula = parse_formula(spec.formula)
        except GrowthError as error:
            problems.append(f"{where}: {error}")
            continue
        missing = [c for c in formula.columns if c not in columns]
        if missing:
            problems.append(
                f"{where}: formula {spec.formula!r} uses column {missing[0]!r}, which is not in "
                f"the model frame (columns: {', '.join(columns)})"
            )
    return problems
