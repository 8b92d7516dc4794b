"""Shared helpers for the analysis tests: study configs, and the Levels and AnalysisSpec the
pipeline builds from them (never stand-ins)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.analysis.spec import AnalysisSpec
from pipeline.config import StudyConfig, parse_config
from pipeline.reshape import Levels, split_levels

REFERENCE = Path(__file__).parent / "reference"

EARLY_TOML = """
[study]
name = "early"
title = "Early"

[data]
path = "early.csv"
person = "id"
time = "age"
outcome = "cog"
person_covariates = ["trt"]

[data.categories]
trt = ["N", "Y"]

[time]
name = "{time_name}"
centre = 1.0
scale = {scale}
unit = "years"

[models]
polynomial = 1
intercept_predictors = ["trt"]
slope_predictors = ["trt"]
{extra}

[comparison]
group = "trt"
at_times = [1.0, 1.5, 2.0]

[output]
dir = "out"
"""

STUDY_TOML = """
[study]
name = "sim"
title = "Simulated"

[data]
path = "sim.csv"
person = "{person}"
time = "{time}"
outcome = "{outcome}"
person_covariates = {person_covariates}
{data_extra}

[time]
name = "{time_name}"
centre = {centre}

[models]
polynomial = {polynomial}
intercept_predictors = {intercept}
slope_predictors = {slope}

[comparison]
{comparison}

[output]
dir = "out"
"""


def early_config(*, time_name: str = "age1", scale: float = 1.0, extra: str = "") -> StudyConfig:
    text = EARLY_TOML.format(time_name=time_name, scale=scale, extra=extra)
    return parse_config(text, path=REFERENCE / "early_test.toml")


def study_config(
    *,
    person: str = "pid",
    time: str = "wave",
    outcome: str = "y",
    time_name: str = "t",
    centre: float = 0.0,
    polynomial: int = 1,
    person_covariates: tuple[str, ...] = (),
    intercept: tuple[str, ...] = (),
    slope: tuple[str, ...] = (),
    group: str | None = None,
    at_times: tuple[float, ...] = (),
    data_extra: str = "",
) -> StudyConfig:
    """A study config for simulated or reference data (lists written as TOML arrays)."""

    def array(values: tuple[str, ...]) -> str:
        return "[" + ", ".join(f'"{v}"' for v in values) + "]"

    comparison = ""
    if group is not None:
        comparison = f'group = "{group}"\nat_times = [{", ".join(str(t) for t in at_times)}]'
    text = STUDY_TOML.format(
        person=person,
        time=time,
        outcome=outcome,
        time_name=time_name,
        centre=centre,
        polynomial=polynomial,
        person_covariates=array(person_covariates),
        intercept=array(intercept),
        slope=array(slope),
        comparison=comparison,
        data_extra=data_extra,
    )
    return parse_config(text, path=REFERENCE / "sim_test.toml")


def early_frame() -> pl.DataFrame:
    return pl.read_csv(
        REFERENCE / "early.csv", schema_overrides={"id": pl.String, "trt": pl.String}
    ).drop("age1")


def levels_of(frame: pl.DataFrame, cfg: StudyConfig) -> Levels:
    """The Levels the pipeline builds from valid rows ``frame`` and ``cfg``."""
    return split_levels(frame, cfg)


def spec_of(cfg: StudyConfig) -> AnalysisSpec:
    return AnalysisSpec.from_config(cfg)


def report_context(cfg: StudyConfig, *, versions: dict[str, str] | None = None):
    """The report context of a study run in memory (load, validate, reshape, analyse) as the
    flow makes it, for the report tests."""
    from pipeline.analysis import analyse
    from pipeline.io import load_data
    from pipeline.report import build_context
    from pipeline.reshape import describe
    from pipeline.validate import validate_data

    loaded = load_data(cfg)
    validation = validate_data(loaded, cfg)
    levels = split_levels(validation.valid, cfg)
    return build_context(
        cfg=cfg,
        loaded=loaded,
        validation=validation,
        levels=levels,
        descriptives=describe(levels, cfg),
        analysis=analyse(levels, cfg),
        versions={} if versions is None else versions,
    )
