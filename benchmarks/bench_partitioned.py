"""Benchmark: ``growth run`` on a partitioned Parquet data set, local streaming and Dask.

Not a test. Writes a synthetic study itself (``--persons`` persons x ``--waves`` waves,
10% of occasions missing, a two-group predictor, ``--files`` Parquet files, written a
file at a time so that writing needs little memory), then runs the real command line
(``growth run CONFIG --no-cache``) in a fresh process against a Prefect server started
here on a loopback port, in these set-ups (``--modes``):

- ``local``: the partitioned path in one process (``[execution] backend = "local"``);
- ``dask``: the same with ``--dask local``: a local Dask cluster of ``--workers``
  processes started and stopped by the run;
- ``memory``: the in-memory path on the first ``--memory-persons`` persons written as
  one Parquet file, and the partitioned path on the same file split in ``--files``
  files, to check that the estimates are the same (fixed effects and their standard
  errors, variance components: the largest relative difference is printed).

For each run: wall time, the time of each stage (from the progress lines), and peak
memory: of the run's own process and of all its processes together (Dask workers
included), sampled every 0.2 s with psutil. Targets (issue 13): local streaming under
4 GB, a full ``growth run`` under 2 minutes on 2 cores at 10,000,000 persons x 6 waves.

    .venv/bin/python benchmarks/bench_partitioned.py [--persons 10000000] [--waves 6]
        [--files 40] [--memory-persons 1000000] [--modes local,dask,memory] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import ROOT, Server, _bin, _environment  # noqa: E402

CONFIG = """[study]
name = "bench"
title = "Partitioned benchmark"

[data]
path = "{path}"
person = "id"
time = "age"
outcome = "score"
person_covariates = ["group"]
time_range = [0.0, 100.0]

[data.categories]
group = ["control", "treated"]

[time]
name = "t"
centre = 1.0
unit = "years"
label = "Age"

[models]
polynomial = 1
intercept_predictors = ["group"]
slope_predictors = ["group"]

[comparison]
group = "group"

[output]
dir = "out"

[execution]
partitions = {partitions}
"""


def write_study(folder: Path, persons: int, waves: int, files: int, *, seed: int = 1) -> int:
    """``files`` Parquet files of whole persons; returns the number of rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = -(-persons // files)
    rows = 0
    for f in range(files):
        ids = np.arange(f * per, min(persons, (f + 1) * per), dtype=np.int64)
        n = ids.size
        if n == 0:
            break
        g = rng.random(n) < 0.5
        u0, u1 = rng.normal(0, 5, n), rng.normal(0, 1.5, n)
        idx = np.repeat(np.arange(n), waves)
        wave = np.tile(np.arange(waves, dtype=float), n)
        keep = rng.random(idx.size) > 0.1
        idx, wave = idx[keep], wave[keep]
        y = 50 + 3 * g[idx] + u0[idx] + (2 - g[idx] + u1[idx]) * wave
        y = y + rng.normal(0, 3, idx.size)
        pl.DataFrame(
            {
                "id": ids[idx],
                "age": wave + 1.0,
                "score": y,
                "group": np.where(g[idx], "treated", "control"),
            }
        ).write_parquet(folder / f"part-{f:05d}.parquet")
        rows += int(idx.size)
    return rows


class Peak:
    """Peak RSS of a process and of it with all its descendants, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.own = self.tree = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                own = self.process.memory_info().rss
                tree = own
                for child in self.process.children(recursive=True):
                    try:
                        tree += child.memory_info().rss
                    except psutil.Error:
                        pass
                self.own, self.tree = max(self.own, own), max(self.tree, tree)
            except psutil.Error:
                break
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run(config: Path, env: dict[str, str], extra: list[str]) -> dict[str, object]:
    command = [_bin("growth"), "run", str(config), "--no-cache", *extra]
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=config.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = Peak(process.pid)
    marks: list[tuple[str, float, str]] = []
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line.rstrip())
            if line.startswith("["):
                stage = line.split("]", 1)[1].split(":", 1)[0].strip()
                marks.append((stage, time.perf_counter() - start, line.strip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert process.stdout is not None
    out = process.stdout.read()
    code = process.wait()
    total = time.perf_counter() - start
    peak.stop()
    reader.join()
    if code != 0:
        raise SystemExit(f"error: growth run failed ({code}):\n" + "\n".join(lines[-15:]))
    return {"total": total, "marks": marks, "own": peak.own, "tree": peak.tree, "stdout": out}


def show(label: str, result: dict[str, object]) -> None:
    gib = 1024**3
    print(
        f"\n{label}: {result['total']:.1f} s wall; peak memory {result['own'] / gib:.2f} GiB "
        f"(this process), {result['tree'] / gib:.2f} GiB (with its workers)"
    )
    previous = 0.0
    for stage, at, line in result["marks"]:  # type: ignore[union-attr]
        name = "start + read, validate, reduce" if stage == "load" else stage
        print(f"  {name:<32} {at - previous:7.1f} s   {line[:110]}")
        previous = at
    print(f"  {'exit':<32} {float(result['total']) - previous:7.1f} s")


def latest_table(folder: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(folder / "out" / "latest" / "tables" / f"{name}.parquet")


def compare(a: Path, b: Path) -> float:
    worst = 0.0
    for name, columns in (
        ("fixed_effects", ("estimate", "std_error")),
        ("variance_components", ("variance",)),
    ):
        x, y = latest_table(a, name), latest_table(b, name)
        for column in columns:
            u, v = x[column].to_numpy().astype(float), y[column].to_numpy().astype(float)
            ok = ~np.isnan(u)
            worst = max(
                worst, float(np.max(np.abs(u[ok] - v[ok]) / np.maximum(np.abs(u[ok]), 1e-12)))
            )
    return worst


def study(folder: Path, path: str, partitions: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "study.toml"
    config.write_text(CONFIG.format(path=path, partitions=partitions))
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=10_000_000)
    parser.add_argument("--waves", type=int, default=6)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--memory-persons", type=int, default=1_000_000)
    parser.add_argument("--modes", default="local,dask,memory")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="write the data and outputs here (kept)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 1024**3:.0f} GiB, Python {platform.python_version()}, "
        f"polars {pl.__version__}, load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_partitioned_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        with Server(work / "prefect-home", work / "server.log") as server:
            env = _environment(work / "prefect-home", work / "cache", server.url)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            if {"local", "dask"} & set(modes):
                data = work / "big" / "data"
                started = time.perf_counter()
                rows = write_study(data, args.persons, args.waves, args.files)
                print(
                    f"data: {args.persons:,} persons x {args.waves} waves, {rows:,} rows in "
                    f"{args.files} Parquet files ({sum(f.stat().st_size for f in data.iterdir()) / 1e6:.0f} MB), "
                    f"written in {time.perf_counter() - started:.1f} s"
                )
                if "local" in modes:
                    show("local streaming", run(study(work / "big", "data"), env, []))
                if "dask" in modes:
                    config = work / "big" / "study.toml"
                    config.write_text(
                        CONFIG.format(path="data", partitions=0) + f"workers = {args.workers}\n"
                    )
                    show(
                        f"dask, local cluster of {args.workers} workers",
                        run(config, env, ["--dask", "local"]),
                    )
            if "memory" in modes:
                n = args.memory_persons
                one = work / "memory" / "one"
                write_study(one, n, args.waves, 1)
                split = work / "split" / "data"
                split.mkdir(parents=True, exist_ok=True)
                whole = pl.read_parquet(one / "part-00000.parquet")  # the same rows, cut by person
                per = -(-n // args.files)
                for f in range(args.files):
                    whole.filter((pl.col("id") // per) == f).write_parquet(
                        split / f"part-{f:05d}.parquet"
                    )
                del whole
                print(
                    f"\nsame data, {n:,} persons: one file in memory, {args.files} files partitioned"
                )
                config = study(work / "memory", "one/part-00000.parquet")
                # one partition as large as the file: the in-memory path whatever its size
                config.write_text(config.read_text() + "partition_rows = 1000000000\n")
                in_memory = run(config, env, [])
                show("in memory", in_memory)
                parted = run(study(work / "split", "data"), env, [])
                show("partitioned (local)", parted)
                worst = compare(work / "memory", work / "split")
                print(
                    f"\nlargest relative difference, fixed effects, SEs and variance components: "
                    f"{worst:.1e}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
