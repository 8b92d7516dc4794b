"""Benchmark: a whole ``growth run`` on a large synthetic study, with per-stage times.

Not a test. Writes a seeded study in the layout of ``config/early.toml`` (person
id, age 1 / 1.5 / 2, a cognitive score, a two-level treatment group that predicts
status and change; 10 % of occasions missing at random, so N persons make about
2.7 N rows) as a CSV file into a temporary folder, with its config, and runs the
real command line (``growth run CONFIG --output DIR --no-cache``) in a fresh
process, as a user would. The time of each progress line the run prints on stderr,
counted from the start of the process, splits the run into stages (as in
``benchmarks/bench_run.py``); ``start + load`` includes the imports and Prefect's
start-up. Peak memory is the largest resident set of any child process
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``: the run or the temporary
Prefect server it starts, whichever is larger). The size of the written tables is
printed too.

Targets (issue 13): 1,000,000 persons x 3 waves from CSV in under 60 s and under
4 GB on the project's 2-core machine.

    .venv/bin/python benchmarks/bench_scale.py [PERSONS] [--seed S] [--keep DIR]
                                               [--server] [--profile FILE]

``--server`` starts a Prefect server first (as ``benchmarks/bench_run.py`` does) and
points the run at it, instead of the temporary server ``growth run`` starts for itself;
its memory is then not in the peak (it is not a child of the run).

``--profile FILE`` runs the analysis part in this process under cProfile instead
(load, validate, reshape, analyse, report context and tables, without Prefect) and
writes the statistics to FILE, printing the top functions by cumulative time.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 60.0
TARGET_BYTES = 4 * 1024**3

CONFIG = """\
[study]
name = "scale"
title = "Synthetic cohort for the end-to-end benchmark"

[data]
path = "{data}"
layout = "long"
person = "id"
time = "age"
outcome = "cog"
person_covariates = ["trt"]
max_invalid_fraction = 0.05
time_range = [0.5, 3.0]

[data.categories]
trt = ["N", "Y"]

[time]
name = "age1"
centre = 1.0
scale = 1.0
unit = "years"
label = "Age"

[models]
polynomial = 1
intercept_predictors = ["trt"]
slope_predictors = ["trt"]

[comparison]
group = "trt"
at_times = [1.0, 1.5, 2.0]

[report]
sample_persons = 200
seed = 20240101

[output]
dir = "out"
"""


def make_data(persons: int, *, seed: int) -> pl.DataFrame:
    """``id, cog, age, trt``: a random intercept and slope per person, trt shifting both."""
    rng = np.random.default_rng(seed)
    ages = np.array([1.0, 1.5, 2.0])
    waves = ages.size
    trt = rng.integers(0, 2, persons)
    b0 = rng.normal(0.0, 10.0, persons)
    b1 = rng.normal(0.0, 4.0, persons)
    person = np.repeat(np.arange(1, persons + 1), waves)
    age = np.tile(ages, persons)
    t = age - 1.0
    g = trt[person - 1]
    cog = (
        110.0
        + 6.0 * g
        + (-20.0 + 5.0 * g) * t
        + b0[person - 1]
        + b1[person - 1] * t
        + rng.normal(0.0, 8.0, person.size)
    )
    keep = rng.random(person.size) >= 0.1
    return pl.DataFrame(
        {
            "id": person[keep],
            "cog": np.round(cog[keep]).astype(np.int64),
            "age": age[keep],
            "trt": np.where(g[keep] == 1, "Y", "N"),
        }
    )


def write_study(folder: Path, persons: int, *, seed: int) -> Path:
    """The data CSV and ``scale.toml`` in ``folder``; returns the config's path."""
    data = folder / "scale.csv"
    make_data(persons, seed=seed).write_csv(data)
    config = folder / "scale.toml"
    config.write_text(CONFIG.format(data=data.name), encoding="utf-8")
    return config


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = here if here.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"error: {name!r} not found beside {sys.executable} or on PATH")
    return str(found)


def _environment(
    home: Path, api_url: str | None = None, *, fit_cache: bool = True
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # without the fit cache: a cache folder that cannot be created (the run says so once)
        GROWTH_CACHE_DIR=str(home / "cache") if fit_cache else "/dev/null/no-fit-cache",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def run_growth(config: Path, output: Path, env: dict[str, str]) -> tuple[float, list, int]:
    """``growth run`` in a fresh process: total seconds, (stage, seconds since start), peak RSS."""
    command = [_bin("growth"), "run", str(config), "--output", str(output), "--no-cache"]
    marks: list[tuple[str, float]] = []
    lines: list[str] = []
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None and process.stdout is not None

    def read_stderr() -> None:
        for line in process.stderr:
            at = time.perf_counter() - start
            lines.append(line.rstrip("\n"))
            if line.startswith("["):
                marks.append((line.split("]", 1)[1].split(":", 1)[0].strip(), at))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout = process.stdout.read()
    code = process.wait()
    total = time.perf_counter() - start
    reader.join()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    if code != 0 or "report:" not in stdout:
        raise SystemExit(f"error: growth run failed (exit {code}):\n" + "\n".join(lines[-20:]))
    for line in lines:
        if line.startswith("["):
            print(f"  | {line}")
    return total, marks, peak


def _folder_bytes(folder: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            sizes[str(path.relative_to(folder))] = path.stat().st_size
    return sizes


def profile(config: Path, out: Path) -> None:
    """The stages after start-up in this process under cProfile (no Prefect)."""
    import cProfile
    import pstats

    sys.path.insert(0, str(ROOT))
    from pipeline.analysis import analyse
    from pipeline.config import load_config
    from pipeline.io import load_data
    from pipeline.reshape import describe, split_levels
    from pipeline.validate import validate_data

    cfg = load_config(config)
    profiler = cProfile.Profile()
    stamps: list[tuple[str, float]] = []
    start = time.perf_counter()
    profiler.enable()
    loaded = load_data(cfg)
    stamps.append(("load", time.perf_counter()))
    validation = validate_data(loaded, cfg)
    stamps.append(("validate", time.perf_counter()))
    levels = split_levels(validation.valid, cfg)
    describe(levels, cfg)
    stamps.append(("reshape", time.perf_counter()))
    analyse(levels, cfg)
    stamps.append(("analyse", time.perf_counter()))
    profiler.disable()
    previous = start
    for name, at in stamps:
        print(f"  {name:<10} {at - previous:7.2f} s")
        previous = at
    profiler.dump_stats(out)
    pstats.Stats(str(out)).sort_stats("cumulative").print_stats(45)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("persons", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--seed", type=int, default=20240101)
    parser.add_argument("--keep", type=Path, help="write the study and outputs here and keep them")
    parser.add_argument("--profile", type=Path, help="cProfile the stages in-process into FILE")
    parser.add_argument("--server", action="store_true", help="run against a Prefect server")
    parser.add_argument(
        "--no-fit-cache",
        action="store_true",
        help="run without the private fit cache (growth run then does not pickle the analysis)",
    )
    args = parser.parse_args(argv)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        work = args.keep.resolve() if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        config = write_study(work, args.persons, seed=args.seed)
        data = work / "scale.csv"
        rows = sum(1 for _ in data.open("rb")) - 1
        print(
            f"study: {args.persons:,} persons x 3 waves, {rows:,} rows, "
            f"{data.stat().st_size / 1e6:.1f} MB CSV (written in "
            f"{time.perf_counter() - started:.1f} s)"
        )
        if args.profile:
            profile(config, args.profile.resolve())
            return 0
        output = work / "out"
        if args.server:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from bench_run import Server

            (work / "server-home").mkdir(exist_ok=True)
            with Server(work / "server-home", work / "server.log") as server:
                total, marks, peak = run_growth(
                    config,
                    output,
                    _environment(work / "home", server.url, fit_cache=not args.no_fit_cache),
                )
        else:
            env = _environment(work / "home", fit_cache=not args.no_fit_cache)
            total, marks, peak = run_growth(config, output, env)
        print(f"growth run, fresh process (load average now {os.getloadavg()[0]:.2f}):")
        previous = 0.0
        for name, at in marks:
            label = "start + load" if name == "load" else name
            print(f"  {label:<28} {at - previous:7.2f} s")
            previous = at
        print(f"  {'exit (artifacts, shutdown)':<28} {total - previous:7.2f} s")
        sizes = _folder_bytes(output)
        tables = {k: v for k, v in sizes.items() if "/tables/" in f"/{k}"}
        largest = sorted(tables.items(), key=lambda item: -item[1])[:3]
        print(
            f"  outputs: {sum(sizes.values()) / 1e6:.1f} MB in {len(sizes)} files, tables "
            f"{sum(tables.values()) / 1e6:.1f} MB; largest: "
            + ", ".join(f"{Path(k).name} {v / 1e6:.1f} MB" for k, v in largest)
        )
        time_ok = "meets" if total < TARGET_SECONDS else "MISSES"
        memory_ok = "meets" if peak < TARGET_BYTES else "MISSES"
        print(
            f"total wall time {total:.1f} s ({time_ok} < {TARGET_SECONDS:.0f} s); "
            f"peak memory {peak / 1024**3:.2f} GB ({memory_ok} < 4 GB)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
