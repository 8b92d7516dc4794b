"""The multilevel analysis: the model sequence and everything an applied researcher reads off it.

``analyse(levels, cfg)`` derives one :class:`~pipeline.analysis.spec.AnalysisSpec` from
the study config, fits the whole model sequence of :mod:`pipeline.analysis.sequence` by
REML on ``levels.model_frame`` (:func:`pipeline.analysis.models.fit_sequence`), then
runs every step of ``STEPS`` on the same :class:`~pipeline.analysis.context.AnalysisContext`.
A step is a function ``tables(ctx) -> dict[str, DataFrame]`` in the module that owns its
concept; adding an analysis is one line in ``STEPS`` (and its tables in
``schemas/tables.py``). A step that fails becomes a warning and the others go on; a model
that fails is recorded in ``failures``. Every table is validated against
``schemas/tables.py``; missing numbers are nulls, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from pipeline.analysis import (
    adequacy,
    clusters,
    comparison,
    diagnostics,
    equations,
    groups,
    icc,
    models,
    ols,
    predictions,
    reliability,
    structures,
    uncertainty,
    variance_explained,
)
from pipeline.analysis.context import AnalysisContext, Engine, Notes
from pipeline.analysis.designs import code_ids
from pipeline.analysis.sequence import ModelSpec, model_sequence
from pipeline.analysis.spec import AnalysisSpec, occasions_of
from pipeline.config import StudyConfig
from pipeline.model.results import GrowthFit
from pipeline.reshape import Levels

if TYPE_CHECKING:
    from pipeline.partitioned import PartitionedStatistics
from schemas.tables import validate_tables

__all__ = [
    "CACHE_MAX_ROWS",
    "STEPS",
    "Analysis",
    "AnalysisSpec",
    "ModelSpec",
    "Step",
    "analyse",
    "fits_cacheable",
    "model_sequence",
]

CACHE_MAX_ROWS = 1_000_000
"""The run keeps an analysis in its private fit cache (a pickle) only up to this many rows
of the model frame: every fit holds its design, so the pickle grows with the rows (450 MB
at 810,000 rows) and writing it took the peak memory of a run of 300,000 persons from
1.4 GB to 3.5 GB; above this a rerun refits."""


def fits_cacheable(levels: Levels) -> bool:
    """Whether an analysis of ``levels`` is small enough for the fit cache (:data:`CACHE_MAX_ROWS`)."""
    return levels.model_frame.height <= CACHE_MAX_ROWS


FAILURE_SCHEMA = {"model": pl.String, "formula": pl.String, "error": pl.String}
WARNING_SCHEMA = {"severity": pl.String, "topic": pl.String, "message": pl.String}


@dataclass(frozen=True, slots=True)
class Step:
    """One analysis step: a topic (named in warnings when it fails) and its function."""

    topic: str
    run: Callable[[AnalysisContext], Mapping[str, pl.DataFrame]]


STEPS: tuple[Step, ...] = (
    Step("model tables", models.tables),
    Step("model comparison", comparison.tables),
    Step("ICC", icc.tables),
    Step("variance explained", variance_explained.tables),
    Step("level equations", equations.tables),
    Step("OLS versus multilevel", ols.tables),
    Step("sample size", adequacy.tables),
    Step("assumption checks", diagnostics.tables),
    Step("reliability", reliability.tables),
    Step("group comparison", groups.tables),
    Step("predictions", predictions.tables),
    Step("error structures", structures.tables),
    Step("clusters", clusters.tables),
    Step("uncertainty, effect sizes and missing data", uncertainty.tables),
)
"""The analysis steps, in order; the tables of later steps may not overwrite earlier ones."""


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything the analysis produced (see ``docs/CONTRACTS.md``, "Analysis").

    models: the ModelSpecs fitted, in order; fits: name -> REML GrowthFit (failed
    models absent); failures: model, formula, error; warnings: severity
    ("warning" | "note"), topic, message; tables: name -> tidy table.
    """

    models: tuple[ModelSpec, ...]
    fits: dict[str, GrowthFit]
    failures: pl.DataFrame
    warnings: pl.DataFrame
    tables: dict[str, pl.DataFrame]
    # partitioned data: persons in all the data and in the sample the row-level tables use
    sample: dict[str, int] | None = None


def _specification_notes(spec: AnalysisSpec, distinct: int, notes: Notes) -> None:
    from pipeline.analysis.sequence import random_order

    order = random_order(spec.polynomial, distinct)
    if order < spec.polynomial:
        notes.warn(
            "model specification",
            f"persons have at most {distinct} distinct occasions, so only time terms up to order "
            f"{order} can vary between persons; higher-order terms are fixed",
            severity="note",
        )
    for predictor in spec.slope_predictors:
        if predictor not in spec.intercept_predictors:
            notes.warn(
                "model specification",
                f"'{predictor}' predicts the rate of change but not the initial status: the model "
                "assumes the groups start at the same level",
                severity="note",
            )


def _nan_to_null(table: pl.DataFrame) -> pl.DataFrame:
    floats = [name for name, dtype in table.schema.items() if dtype == pl.Float64]
    if not floats:
        return table
    return table.with_columns(
        pl.when(pl.col(name).is_nan()).then(None).otherwise(pl.col(name)).alias(name)
        for name in floats
    )


def analyse(
    levels: Levels,
    cfg: StudyConfig | AnalysisSpec,
    *,
    engine: Engine = "fast",
    steps: tuple[Step, ...] = STEPS,
    partitioned: PartitionedStatistics | None = None,
) -> Analysis:
    """Fit the model sequence on ``levels.model_frame`` and run every analysis step.

    ``partitioned`` (:func:`pipeline.partitioned.read_partitioned`): the models are fitted
    on the merged statistics of all the data, and ``levels`` hold a sample of its persons
    (or all of them) on which the steps that need rows run."""
    spec = (
        cfg
        if isinstance(cfg, AnalysisSpec)
        else AnalysisSpec.from_config(cfg, time_name=levels.time_name)
    )
    notes = Notes()
    frame = levels.model_frame
    predictions.check_against_data(
        spec, frame, source=str(cfg.source_path) if isinstance(cfg, StudyConfig) else ""
    )
    occasions = occasions_of(frame, spec)
    distinct = (
        partitioned.distinct_times
        if partitioned is not None
        else int(
            pl.DataFrame({"person": frame[spec.person], "occasion": occasions.labels})
            .group_by("person")
            .agg(pl.col("occasion").n_unique().alias("k"))["k"]
            .max()
            or 0
        )
    )
    sequence = model_sequence(spec, distinct_times=distinct)
    _specification_notes(spec, distinct, notes)
    coding, coded = code_ids(frame, (*levels.person_key, *levels.cluster_names))
    fits = models.fit_sequence(
        sequence,
        frame,
        notes,
        engine=engine,
        partitioned=partitioned,
        coding=coding,
        coded=coded,
    )
    if partitioned is not None and partitioned.sampled:
        from pipeline.partitioned import FULL_DATA_TABLES

        notes.warn(
            "sample",
            f"the models are fitted on all {partitioned.persons:,} persons; the tables that need "
            f"the rows rest on a deterministic sample of {partitioned.sample_persons:,} of them "
            "(whole outermost units chosen by a hash of their id, [execution] sample_persons). "
            f"On all the data: {', '.join(sorted(FULL_DATA_TABLES))}; every other table, chart "
            "and the descriptive tables other than the summary are of the sample",
            severity="note",
        )
    ctx = AnalysisContext(
        spec=spec,
        levels=levels,
        models=sequence,
        fits=fits,
        notes=notes,
        engine=engine,
        coding=coding,
        coded_frame=coded,
    )
    tables: dict[str, pl.DataFrame] = {}
    for step in steps:
        produced = notes.attempt(step.topic, lambda step=step: dict(step.run(ctx)))
        for name, table in (produced or {}).items():
            if name in tables:
                raise ValueError(f"analysis step '{step.topic}' produces '{name}' a second time")
            tables[name] = _nan_to_null(table)
    return Analysis(
        models=sequence,
        fits=fits,
        failures=pl.DataFrame(notes.failures, schema=FAILURE_SCHEMA),
        warnings=pl.DataFrame(notes.warnings, schema=WARNING_SCHEMA),
        tables=validate_tables(tables),
        sample=(
            {"persons": partitioned.persons, "sample_persons": partitioned.sample_persons}
            if partitioned is not None
            else None
        ),
    )
