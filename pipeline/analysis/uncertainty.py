"""Uncertainty, effect sizes, missing data, functional form and fit statistics of a run.

The analysis step that puts the functions of :mod:`~pipeline.analysis.profile`,
:mod:`~pipeline.analysis.bootstrap`, :mod:`~pipeline.analysis.effect_size`,
:mod:`~pipeline.analysis.missing_data`, :mod:`~pipeline.analysis.functional_form` and
:mod:`~pipeline.analysis.fit_stats` on the fitted model sequence. Which model each uses:

- ``effect_sizes``: Feingold's d of the model that compares the groups (the conditional
  model when the group predicts status and change, else ``group_comparison``); times
  in original units; no rows without ``[comparison] group``;
- ``variance_intervals`` (``[analysis] profile``): profile-likelihood intervals of the
  *key* model (:attr:`AnalysisContext.chosen`) or of every fitted model;
- ``bootstrap`` (``[analysis] bootstrap`` replicates, seeded with ``[report] seed``):
  the ICC of the unconditional means model; for the key model, the pseudo-R^2 of each
  variance against the unconditional growth model when both have the same random
  part; Feingold's d of the change over the study on the group model;
- ``dropout`` and ``dropout_summary``: completers against dropouts on the model frame
  (occasions: ``[data] occasion`` when numeric, else the time; a person is
  ``Levels.person_key``, so ids unique only within a cluster are told apart);
- ``functional_form``: the key model against the saturated means model;
  ``implied_means``: observed and model-implied means per occasion of the unconditional
  growth model and the key model;
- ``r2_y_yhat`` of every fitted model; ``between_person_variance`` on the rows of the
  unconditional means model; ``influence`` (``[analysis] influence`` persons) of the key
  model; ``within_between`` for each numeric time-varying covariate, added as a main
  effect to the key model.

Each part runs on its own (``ctx.notes.attempt``): one that fails is a warning and
the others go on.

The three analyses that refit a model many times (profile, bootstrap, influence: their
time is the persons times the number of refits) run only on studies of up to
``[limits] max_persons_refits`` persons (default 100,000); above it they are not run and
a note on the analysis's topic, beginning with :data:`LIMIT_NOTE`, says why and how to
raise the limit (the report shows it in the analysis's place).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from pipeline.analysis import bootstrap, effect_size, fit_stats, functional_form, missing_data
from pipeline.analysis.comparison import same_random_part
from pipeline.analysis.profile import profile_confint
from pipeline.analysis.sequence import CONDITIONAL, GROUP_COMPARISON, GROWTH, MEANS
from pipeline.model.formula import quote_name
from pipeline.model.results import GrowthFit
from schemas.tables import columns

if TYPE_CHECKING:
    from pipeline.analysis.context import AnalysisContext

__all__ = [
    "bootstrap_jobs",
    "group_model",
    "occasion_column",
    "profiled_models",
    "tables",
    "with_person_id",
]

DROPOUT_SUMMARY = columns("dropout_summary")


def _with_model(name: str, table: pl.DataFrame, schema: str) -> pl.DataFrame:
    return table.select(pl.lit(name, dtype=pl.String).alias("model"), pl.all()).cast(
        columns(schema)
    )


def group_model(ctx: AnalysisContext) -> str | None:
    """The model that compares the groups (as the group comparison step uses), or None."""
    spec = ctx.spec
    if spec.group is None:
        return None
    name = CONDITIONAL if spec.group_in_conditional else GROUP_COMPARISON
    return name if ctx.fit(name) is not None else None


def occasion_column(ctx: AnalysisContext, frame: pl.DataFrame) -> str | None:
    """``[data] occasion`` when it is a numeric column of ``frame``; else None (the time)."""
    occasion = ctx.spec.occasion
    if occasion is not None and occasion in frame.columns and frame.schema[occasion].is_numeric():
        return occasion
    return None


PERSON_KEY = "__person_key"


def with_person_id(ctx: AnalysisContext, frame: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """``frame`` and the column that identifies a person: the person id, or, when person
    ids are unique only within their cluster, the clusters and the id joined by ':'."""
    key = list(ctx.levels.person_key)
    if len(key) == 1:
        return frame, key[0]
    joined = pl.concat_str([pl.col(c).cast(pl.String) for c in key], separator=":")
    return frame.with_columns(joined.alias(PERSON_KEY)), PERSON_KEY


def profiled_models(ctx: AnalysisContext) -> tuple[str, ...]:
    """The models ``[analysis] profile`` asks for: none, the key model, or every fitted model."""
    if ctx.spec.profile == "all":
        return tuple(model.name for model in ctx.fitted_models)
    if ctx.spec.profile == "key" and ctx.chosen is not None:
        return (ctx.chosen.name,)
    return ()


def _effect_sizes(ctx: AnalysisContext) -> pl.DataFrame:
    spec = ctx.spec
    name = group_model(ctx)
    if name is None or spec.group is None:
        return pl.DataFrame(schema=columns("effect_sizes"))
    fit = ctx.fits[name]
    table = effect_size.feingold_effect_sizes(
        fit,
        group=spec.group,
        time=spec.time_name,
        status_times=[float(t) for t in spec.coded_time(np.asarray(spec.at_times, dtype=float))],
    )
    baseline = float(fit.frame[spec.time_name].cast(pl.Float64).min())  # as effect_size does
    coded_text = f"({spec.time_name} = {baseline:g};"
    original_text = f"({spec.time_text(float(spec.original_time(baseline)))};"
    table = table.with_columns(
        (pl.col("time_from") * spec.scale + spec.centre).alias("time_from"),
        (pl.col("time_to") * spec.scale + spec.centre).alias("time_to"),
        pl.col("sd_definition").str.replace(coded_text, original_text, literal=True),
    )
    return _with_model(name, table, "effect_sizes")


LIMIT_NOTE = "Not run: "
"""How the note of an analysis skipped by ``[limits] max_persons_refits`` begins (the
report shows that note in place of the analysis)."""


def persons_of(ctx: AnalysisContext) -> int:
    """The number of persons of the study (level 2)."""
    return int(ctx.levels.level2.height) if ctx.levels is not None else 0


def over_limit(ctx: AnalysisContext, topic: str, setting: str, cost: str) -> bool:
    """Whether the study has more persons than ``[limits] max_persons_refits``; if so, a
    note on ``topic`` says that the analysis asked for by ``setting`` was not run."""
    persons, limit = persons_of(ctx), ctx.spec.max_persons_refits
    if persons <= limit:
        return False
    ctx.notes.warn(
        topic,
        f"{LIMIT_NOTE}{setting} asks for {cost}, but the study has {persons:,} persons, more "
        f"than [limits] max_persons_refits = {limit:,}; raise that limit to run it (its time "
        "grows with the persons times the number of refits)",
        severity="note",
    )
    return True


def _profiles(ctx: AnalysisContext) -> pl.DataFrame | None:
    names = profiled_models(ctx)
    if not names:
        return None
    if over_limit(
        ctx,
        "profile intervals",
        f'[analysis] profile = "{ctx.spec.profile}"',
        f"profile-likelihood intervals of {len(names)} model(s), dozens of refits each",
    ):
        return None
    parts = []
    for name in names:
        table = ctx.notes.attempt(
            "profile intervals", lambda name=name: profile_confint(ctx.fits[name])
        )
        if table is not None:
            parts.append(_with_model(name, table, "variance_intervals"))
    return pl.concat(parts) if parts else None


Job = tuple[str, dict[str, bootstrap.Statistic], dict[str, str]]


def bootstrap_jobs(ctx: AnalysisContext) -> list[Job]:
    """(model, statistics, also_fit) of each bootstrapped model, in sequence order."""
    jobs: dict[str, tuple[dict[str, bootstrap.Statistic], dict[str, str]]] = {}

    def add(
        model: str, label: str, statistic: bootstrap.Statistic, also: Mapping[str, str]
    ) -> None:
        statistics, also_fit = jobs.setdefault(model, ({}, {}))
        statistics[label] = statistic
        also_fit.update(also)

    if ctx.fit(MEANS) is not None:
        add(MEANS, "ICC (unconditional means model)", bootstrap.ICC(), {})
    key, growth = ctx.chosen, ctx.fit(GROWTH)
    if key is not None and key.name not in (MEANS, GROWTH) and growth is not None:
        fit = ctx.fits[key.name]
        if same_random_part(growth, fit) and growth.nobs == fit.nobs:
            for term in fit.design.random_names:
                add(
                    key.name,
                    f"pseudo-R^2 of the {fit.design.group}: {term} variance (against {GROWTH})",
                    bootstrap.PseudoR2("reference", term),
                    {"reference": growth.formula},
                )
    name = group_model(ctx)
    if name is not None and ctx.spec.group is not None:
        add(
            name,
            "Feingold d, change over the study",
            effect_size.FeingoldD(group=ctx.spec.group, time=ctx.spec.time_name),
            {},
        )
    order = [model.name for model in ctx.fitted_models]
    return [(m, *jobs[m]) for m in sorted(jobs, key=order.index)]


def _bootstrap(ctx: AnalysisContext) -> pl.DataFrame | None:
    spec = ctx.spec
    if spec.bootstrap <= 0:
        return None
    if over_limit(
        ctx,
        "parametric bootstrap",
        f"[analysis] bootstrap = {spec.bootstrap}",
        f"{spec.bootstrap} refits of each bootstrapped model",
    ):
        return None
    parts = []
    for model, statistics, also_fit in bootstrap_jobs(ctx):
        table = ctx.notes.attempt(
            "parametric bootstrap",
            lambda model=model, statistics=statistics, also_fit=also_fit: (
                bootstrap.parametric_bootstrap(
                    ctx.fits[model],
                    statistics,
                    replicates=spec.bootstrap,
                    seed=spec.seed,
                    workers=spec.bootstrap_workers,
                    also_fit=also_fit or None,
                )
            ),
        )
        if table is not None:
            parts.append(_with_model(model, table, "bootstrap"))
    return pl.concat(parts) if parts else None


def _coded(ctx: AnalysisContext, frame: pl.DataFrame) -> pl.DataFrame | None:
    """The coded model frame (integer person ids) when ``frame`` is the model frame, its
    person is one coded column, and what is computed on it shows no ids."""
    key = ctx.levels.person_key
    if (
        ctx.coded_frame is not None
        and len(key) == 1
        and key[0] in ctx.coding.columns
        and (frame is ctx.frame or frame.height == ctx.frame.height)
    ):
        return ctx.coded_frame
    return None


def _dropout(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    spec = ctx.spec
    frame, person = with_person_id(ctx, ctx.frame)
    occasion = occasion_column(ctx, frame)
    covariates = [c for c in spec.person_covariates if c in frame.columns]
    coded = _coded(ctx, ctx.frame)  # the tables count persons, they do not name them
    table = missing_data.dropout_check(
        frame if coded is None else coded,
        person=person,
        outcome=spec.outcome,
        time=spec.time_name,
        covariates=covariates,
        occasion=occasion,
        coding=ctx.coding if coded is None else None,
    )
    persons = missing_data.person_dropout(
        frame if coded is None else coded,
        person=person,
        outcome=spec.outcome,
        time=spec.time_name,
        occasion=occasion,
    )
    dropouts = int(persons["dropout"].sum())
    summary = pl.DataFrame(
        {
            "persons": [persons.height],
            "completers": [persons.height - dropouts],
            "dropouts": [dropouts],
            "sentence": [missing_data.dropout_sentence(table)],
        },
        schema=DROPOUT_SUMMARY,
    )
    return {"dropout": table, "dropout_summary": summary}


def _functional_form(ctx: AnalysisContext) -> pl.DataFrame | None:
    key = ctx.chosen
    if key is None or key.name == MEANS:
        return None
    fit = ctx.fits[key.name]
    return functional_form.saturated_means_test(
        fit, time=ctx.spec.time_name, occasion=occasion_column(ctx, fit.frame)
    )


def _implied_means(ctx: AnalysisContext) -> pl.DataFrame | None:
    spec = ctx.spec
    names = [GROWTH] if ctx.fit(GROWTH) is not None else []
    if ctx.chosen is not None and ctx.chosen.name not in (MEANS, *names):
        names.append(ctx.chosen.name)
    parts = []
    for name in names:
        fit = ctx.fits[name]
        occasion = occasion_column(ctx, fit.frame)
        table = functional_form.occasion_means(fit, time=spec.time_name, occasion=occasion)
        if occasion is None:  # coded time -> original units
            table = table.with_columns(pl.col("occasion") * spec.scale + spec.centre)
        parts.append(_with_model(name, table, "implied_means"))
    return pl.concat(parts) if parts else None


def _r2(ctx: AnalysisContext) -> pl.DataFrame | None:
    parts = [
        _with_model(model.name, fit_stats.r2_y_yhat(ctx.fits[model.name]), "r2_y_yhat")
        for model in ctx.fitted_models
    ]
    return pl.concat(parts) if parts else None


def _variance_test(ctx: AnalysisContext) -> pl.DataFrame:
    means = ctx.fit(MEANS)
    frame, person = with_person_id(ctx, means.frame if means is not None else ctx.frame)
    coded = _coded(ctx, frame)  # the same rows as the model frame: its coded ids
    return fit_stats.between_person_variance_test(
        frame if coded is None else coded,
        outcome=ctx.spec.outcome,
        person=person,
        coding=ctx.coding if coded is None else None,
    )


def _influence(ctx: AnalysisContext) -> pl.DataFrame | None:
    if ctx.spec.influence <= 0 or ctx.chosen is None:
        return None
    if over_limit(
        ctx,
        "person influence",
        f"[analysis] influence = {ctx.spec.influence}",
        f"{ctx.spec.influence} refits of the key model, one without each sampled person",
    ):
        return None
    return fit_stats.person_influence(
        ctx.fits[ctx.chosen.name], max_persons=ctx.spec.influence, seed=ctx.spec.seed
    )


def _within_between(ctx: AnalysisContext) -> pl.DataFrame:
    spec, frame = ctx.spec, ctx.frame
    parts = [pl.DataFrame(schema=columns("within_between"))]
    key = ctx.chosen
    if key is None:
        return parts[0]
    for covariate in spec.time_covariates:
        if covariate not in frame.columns:
            continue
        if not frame.schema[covariate].is_numeric():
            ctx.notes.warn(
                "within and between effects",
                f"'{covariate}' is not numeric: its within- and between-person effects are not split",
                severity="note",
            )
            continue
        lhs, rhs = key.formula.split("~", 1)
        formula = f"{lhs.strip()} ~ {quote_name(covariate)} + {rhs.strip()}"

        def split(formula: str = formula, covariate: str = covariate) -> pl.DataFrame:
            fit: GrowthFit = ctx.fit_formula(formula, reml=True)
            return fit_stats.within_between(fit, covariate)

        table = ctx.notes.attempt("within and between effects", split)
        if table is not None:
            parts.append(table)
    return pl.concat(parts)


_PARTS: tuple[tuple[str, str, Callable[[AnalysisContext], object]], ...] = (
    ("effect_sizes", "effect sizes", _effect_sizes),
    ("variance_intervals", "profile intervals", _profiles),
    ("bootstrap", "parametric bootstrap", _bootstrap),
    ("", "missing data", _dropout),
    ("functional_form", "functional form", _functional_form),
    ("implied_means", "functional form", _implied_means),
    ("r2_y_yhat", "R^2 of y and y-hat", _r2),
    ("between_person_variance", "between-person variance test", _variance_test),
    ("influence", "person influence", _influence),
    ("within_between", "within and between effects", _within_between),
)


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """Every table of this module the study asks for (see the module docstring)."""
    out: dict[str, pl.DataFrame] = {}
    for name, topic, part in _PARTS:
        result = ctx.notes.attempt(topic, lambda part=part: part(ctx))
        if isinstance(result, dict):
            out.update(result)
        elif isinstance(result, pl.DataFrame):
            out[name] = result
    return out
