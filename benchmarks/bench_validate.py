"""Benchmark: load + validate + reshape 1,000,000 rows (100,000 persons x 10 waves, 3 covariates).

Not a test. Generates a seeded long table, writes it as Parquet and CSV to a
temporary folder, and times ``load_data`` + ``validate_data`` + ``split_levels``
+ ``describe`` on each. Target: under 3 s on a 2-core machine.

    .venv/bin/python benchmarks/bench_validate.py [--persons N] [--waves K]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.io import load_data  # noqa: E402
from pipeline.reshape import describe, split_levels  # noqa: E402
from pipeline.validate import validate_data  # noqa: E402

CONFIG = """\
[study]
name = "bench"
title = "Validation benchmark"

[data]
path = "{path}"
person = "person"
time = "wave"
outcome = "score"
person_covariates = ["sex", "ses"]
time_covariates = ["stress"]
max_invalid_fraction = 0.05
time_range = [0, 9]

[data.categories]
sex = ["F", "M"]

[time]
name = "wave0"

[output]
dir = "out"
"""


def make_data(*, persons: int, waves: int, seed: int) -> pl.DataFrame:
    """A long table with a random intercept and slope, ~2 % missing outcomes."""
    rng = np.random.default_rng(seed)
    person = np.repeat(np.arange(1, persons + 1), waves)
    wave = np.tile(np.arange(waves, dtype=np.float64), persons)
    sex = np.repeat(rng.choice(np.array(["F", "M"]), size=persons), waves)
    ses = np.repeat(np.round(rng.normal(0, 1, persons), 3), waves)
    intercept = np.repeat(rng.normal(50, 8, persons), waves)
    slope = np.repeat(rng.normal(2, 1, persons), waves)
    stress = np.round(rng.normal(0, 1, persons * waves), 3)
    score = np.round(intercept + slope * wave + 1.5 * stress + rng.normal(0, 4, persons * waves), 2)
    score[rng.random(persons * waves) < 0.02] = np.nan
    return pl.DataFrame(
        {
            "person": person,
            "wave": wave,
            "score": score,
            "sex": sex,
            "ses": ses,
            "stress": stress,
        }
    ).with_columns(pl.col("score").fill_nan(None))


def run(config_path: Path) -> tuple[int, int, float]:
    start = time.perf_counter()
    cfg = load_config(config_path)
    loaded = load_data(cfg)
    result = validate_data(loaded, cfg)
    levels = split_levels(result.valid, cfg=cfg)
    describe(levels, cfg)
    return loaded.rows_in, result.rows_quarantined, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--seed", type=int, default=20240101)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    frame = make_data(persons=arguments.persons, waves=arguments.waves, seed=arguments.seed)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"polars {pl.__version__} ({pl.thread_pool_size()} threads)"
    )
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        for suffix in ("parquet", "csv"):
            data_path = base / f"bench.{suffix}"
            if suffix == "parquet":
                frame.write_parquet(data_path)
            else:
                frame.write_csv(data_path)
            config_path = base / f"bench_{suffix}.toml"
            config_path.write_text(CONFIG.format(path=data_path.name), encoding="utf-8")
            timings = []
            for _ in range(arguments.repeat):
                rows, quarantined, seconds = run(config_path)
                timings.append(seconds)
            print(
                f"{suffix:8s} rows {rows:,}  quarantined {quarantined:,}  "
                f"load+validate+reshape best {min(timings):.2f} s  "
                f"(runs: {', '.join(f'{t:.2f}' for t in timings)})"
            )


if __name__ == "__main__":
    main()
