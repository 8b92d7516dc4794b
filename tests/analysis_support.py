"""Shared helpers for the analysis tests: a study config and Levels-like stand-ins."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import polars as pl

from pipeline.config import parse_config

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


def early_config(*, time_name: str = "age1", scale: float = 1.0, extra: str = ""):
    text = EARLY_TOML.format(time_name=time_name, scale=scale, extra=extra)
    return parse_config(text, path=REFERENCE / "early_test.toml")


def early_frame() -> pl.DataFrame:
    return pl.read_csv(
        REFERENCE / "early.csv", schema_overrides={"id": pl.String, "trt": pl.String}
    )


def levels_of(frame: pl.DataFrame, time_name: str) -> SimpleNamespace:
    """A stand-in for pipeline.reshape.Levels with the attributes analyse() reads."""
    return SimpleNamespace(level1=frame, level2=None, model_frame=frame, time_name=time_name)
