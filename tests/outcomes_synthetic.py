"""A synthetic study with two outcomes (math, read) for the tests of ``[data] outcomes``.

Persons at four waves with a random intercept and slope per outcome and a two-level
group (``trt``) that shifts status and change differently on each outcome. Some
``read`` values are missing (empty cells) while ``math`` is present, so that the
per-outcome row accounting is exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

CONFIG = """[study]
name = "twooutcomes"
title = "Two outcomes"

[data]
path = "two.csv"
person = "id"
time = "age"
outcomes = ["math", "read"]
outcome_label = {{ math = "Mathematics", read = "Reading" }}
outcome_unit = {{ math = "points", read = "words" }}
person_covariates = ["trt"]
max_invalid_fraction = 0.2
{extra}
[data.categories]
trt = ["N", "Y"]

[time]
name = "age1"
centre = 1.0
unit = "years"
label = "Age"

[models]
intercept_predictors = ["trt"]
slope_predictors = ["trt"]

[comparison]
group = "trt"
at_times = [1.0, 2.5]

[report]
sample_persons = 50
seed = 3

[output]
dir = "out"
"""


def simulate(persons: int = 120, *, seed: int = 11) -> pl.DataFrame:
    """id, age, trt, math, read; about 10% of read values missing."""
    rng = np.random.default_rng(seed)
    ages = np.array([1.0, 1.5, 2.0, 2.5])
    treated = rng.random(persons) < 0.5
    rows = []
    for person in range(persons):
        u = rng.normal(0, [8.0, 3.0, 5.0, 2.0])
        for age in ages:
            t = age - 1.0
            g = 1.0 if treated[person] else 0.0
            math = 100 + u[0] + (10 + u[1] + 4 * g) * t + 5 * g + rng.normal(0, 4)
            read = 50 + u[2] + (6 + u[3] - 2 * g) * t + rng.normal(0, 3)
            rows.append((f"p{person:03d}", age, "Y" if g else "N", math, read))
    frame = pl.DataFrame(rows, schema=["id", "age", "trt", "math", "read"], orient="row")
    missing = rng.random(frame.height) < 0.1
    return frame.with_columns(
        pl.when(pl.Series(missing)).then(None).otherwise(pl.col("read")).alias("read")
    )


def write_study(folder: Path, *, frame: pl.DataFrame | None = None, extra: str = "") -> Path:
    """Write ``two.csv`` and ``two.toml`` into ``folder``; the config's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (simulate() if frame is None else frame).write_csv(folder / "two.csv")
    config = folder / "two.toml"
    config.write_text(CONFIG.format(extra=extra), encoding="utf-8")
    return config
