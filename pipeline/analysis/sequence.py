"""The whole model sequence (Singer & Willett 2003, ch. 4), written as lme4 formulas.

From the analysis specification, in this order:

- ``unconditional_means``: ``y ~ 1 + (1 | person)`` (role ``"means"``);
- ``growth_random_intercept``: ``y ~ t + ... + (1 | person)`` (role ``"auxiliary"``):
  the null model of the test for random slopes, and the reference of time's share of
  the within-person variance (it has the random part of the means model);
- ``unconditional_growth``: ``y ~ t + I(t^2) ... + (t + I(t^2) ... | person)`` up to
  the polynomial order (role ``"growth"``);
- ``conditional_growth``: the growth model plus ``intercept_predictors`` as main
  effects and ``slope_predictors`` interacting with every time term (role
  ``"conditional"``), only when predictors are configured;
- ``group_comparison``: ``y ~ t * group + (t | person)`` (role ``"group"``), when a
  comparison group is configured and the conditional model does not already use it
  for status and change;
- every ``[[models.extra]]`` formula as given (role ``"extra"``).

With ``[data] clusters`` (higher levels, innermost first) every model has the random
terms of every level, written as lme4 would for the id convention: with unique ids
each level by its own column, innermost first (``(t | pid) + (t | classroom) +
(t | school)``: lme4 finds the nesting itself); with ids unique only within clusters
outermost first, each level as the interaction with the levels above it
(``(t | school) + (t | school:classroom) + (t | school:classroom:pid)``). The random
time terms are the same at every level (the person level's, capped as below) unless
``[models] cluster_random`` restricts a level to a random intercept. Cluster-level
covariates may be predictors of status and change (cross-level interactions with time).

Piecewise-linear time (``[time] knots``, original units): each knot k adds the term
``pmax(t - k', 0)`` (k' = k in coded time; a change of slope after k) after the time
terms, so it enters every growth model's fixed part and interacts with the slope
predictors like the time terms. It is random at the person level only with
``[time] knots_random = true``: with few waves a random change of slope is rarely
identified apart from the random slope and the level-1 residual.

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
from typing import Literal

from pipeline.analysis.spec import AnalysisSpec
from pipeline.config import StudyConfig
from pipeline.model.formula import quote_name

__all__ = [
    "AUXILIARY",
    "CONDITIONAL",
    "GROUP_COMPARISON",
    "GROWTH",
    "MEANS",
    "knot_terms",
    "ModelSpec",
    "Role",
    "model_sequence",
    "random_intercept_growth",
    "random_order",
    "random_part",
    "time_terms",
]

Role = Literal["means", "auxiliary", "growth", "conditional", "group", "extra"]

MEANS = "unconditional_means"
AUXILIARY = "growth_random_intercept"
GROWTH = "unconditional_growth"
CONDITIONAL = "conditional_growth"
GROUP_COMPARISON = "group_comparison"


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


def _r_number(value: float) -> str:
    """A positive number as R deparses it in a formula (``0.5``, ``2``; 15 significant digits)."""
    return f"{value:.15g}"


def knot_terms(spec: AnalysisSpec) -> tuple[str, ...]:
    """``("pmax(age1 - 0.5, 0)", ...)``: one change-of-slope term per knot, in R's spelling,
    the knot converted to coded time."""
    name = quote_name(spec.time_name)
    out = []
    for knot in spec.knots:
        coded = float(spec.coded_time(knot))
        if coded == 0:
            out.append(f"pmax({name}, 0)")
        elif coded > 0:
            out.append(f"pmax({name} - {_r_number(coded)}, 0)")
        else:
            out.append(f"pmax({name} + {_r_number(-coded)}, 0)")
    return tuple(out)


def random_order(order: int, distinct_times: int | None) -> int:
    """The highest power of time that can vary between persons (see the module docstring)."""
    if distinct_times is None:
        return order
    return max(0, min(order, distinct_times - 2))


def random_part(spec: AnalysisSpec, random_time: tuple[str, ...]) -> str:
    """The random terms of every level: ``(t | pid)``, with clusters
    ``(t | pid) + (t | school)`` or ``(t | school) + (t | school:pid)`` (see the module
    docstring); ``random_time`` the time terms random at the person level (``()`` for a
    random intercept only)."""
    person_terms = " + ".join(random_time) or "1"
    if not spec.clusters:
        return f"({person_terms} | {quote_name(spec.person)})"
    levels = [(spec.person_key, person_terms)]
    for cluster in spec.clusters:
        only_intercept = spec.cluster_random.get(cluster, "polynomial") == "intercept"
        levels.append((spec.cluster_key(cluster), "1" if only_intercept else person_terms))
    if spec.ids == "within_cluster":
        levels.reverse()
        names = [":".join(quote_name(column) for column in key) for key, _ in levels]
    else:
        names = [quote_name(key[-1]) for key, _ in levels]
    return " + ".join(f"({terms} | {name})" for name, (_, terms) in zip(names, levels, strict=True))


def _spec(study: AnalysisSpec | StudyConfig, time_name: str | None) -> AnalysisSpec:
    if isinstance(study, AnalysisSpec):
        return study
    return AnalysisSpec.from_config(study, time_name=time_name)


def model_sequence(
    study: AnalysisSpec | StudyConfig,
    *,
    time_name: str | None = None,
    distinct_times: int | None = None,
) -> tuple[ModelSpec, ...]:
    """The models to fit, in order (``study``: an AnalysisSpec or the StudyConfig it comes from).

    ``distinct_times`` (the most distinct occasions any person has) caps the random
    polynomial order as explained in the module docstring.
    """
    spec = _spec(study, time_name)
    outcome = quote_name(spec.outcome)
    knots = knot_terms(spec)
    polynomial = time_terms(spec.time_name, spec.polynomial)
    random_time = polynomial[: random_order(spec.polynomial, distinct_times)]
    if spec.knots_random and random_time:
        random_time = (*random_time, *knots)
    time = (*polynomial, *knots)
    random = random_part(spec, random_time)
    intercepts = random_part(spec, ())
    fixed_time = " + ".join(time)
    specs = [
        ModelSpec(MEANS, f"{outcome} ~ 1 + {intercepts}", "means"),
        ModelSpec(AUXILIARY, f"{outcome} ~ {fixed_time} + {intercepts}", "auxiliary"),
        ModelSpec(GROWTH, f"{outcome} ~ {fixed_time} + {random}", "growth"),
    ]
    if random_time == ():  # the growth model has a random intercept only: no auxiliary needed
        specs.pop(1)
    intercept_predictors = [quote_name(c) for c in spec.intercept_predictors]
    slope_predictors = [quote_name(c) for c in spec.slope_predictors]
    if intercept_predictors or slope_predictors:
        main = [*time, *intercept_predictors]
        # written in the order lme4's terms() lists them: all main effects, then the
        # interactions in order of appearance (by time term, then predictor)
        interactions = [f"{term}:{predictor}" for term in time for predictor in slope_predictors]
        fixed = " + ".join([*main, *interactions])
        specs.append(ModelSpec(CONDITIONAL, f"{outcome} ~ {fixed} + {random}", "conditional"))
    if spec.group is not None and not spec.group_in_conditional:
        g = quote_name(spec.group)
        fixed = " + ".join([*time, g, *(f"{t}:{g}" for t in time)])
        specs.append(ModelSpec(GROUP_COMPARISON, f"{outcome} ~ {fixed} + {random}", "group"))
    names = {model.name for model in specs}
    for extra in spec.extra:
        if extra.name in names:
            raise ValueError(
                f"[[models.extra]] name '{extra.name}' is already used by the model sequence"
            )
        names.add(extra.name)
        specs.append(ModelSpec(extra.name, extra.formula, "extra"))
    return tuple(specs)


def random_intercept_growth(
    study: AnalysisSpec | StudyConfig, *, time_name: str | None = None
) -> ModelSpec:
    """The growth model with fixed slopes, ``y ~ t + (1 | person)``."""
    spec = _spec(study, time_name)
    time = (*time_terms(spec.time_name, spec.polynomial), *knot_terms(spec))
    return ModelSpec(
        AUXILIARY,
        f"{quote_name(spec.outcome)} ~ {' + '.join(time)} + {random_part(spec, ())}",
        "auxiliary",
    )
