"""Benchmark: three-level growth models (pupils in schools) against lme4 through Rscript.

Simulated data: ``schools x pupils`` persons, 6 waves, 10 % of occasions missing
at random; model ``y ~ time * (g + school_x) + (time | school) + (time | school:pid)``,
REML. The same data (written once as CSV, integer ids, numeric time and school_x,
g as a string in both) is fitted by us and, when Rscript with lme4 is present, by
``lme4::lmer`` in the same run. lme4's time excludes reading the CSV and R's start
(it is measured inside R around ``lmer()``); ours is the whole ``fit_growth`` call
on a polars frame already in memory (design, statistics, optimisation, inference,
BLUPs), with its CPU time beside it. Peak memory is the VmHWM of a fresh process that
simulates and fits. The one-minute load average is printed with each figure.

    python benchmarks/bench_nested.py                          # 1,000 x 100 and 10,000 x 100
    python benchmarks/bench_nested.py --sizes 1000x100 --no-r
    python benchmarks/bench_nested.py --sizes 10000x100 --repeat 2 --no-r --stages
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from stages import fit_stages  # benchmarks/stages.py (this script's folder is on the path)

from pipeline import fit_growth
from pipeline.simulate import simulate_three_level

FORMULA = "y ~ time * (g + school_x) + (time | school) + (time | school:pid)"

R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
d$school <- factor(d$school); d$pid <- factor(d$pid)
t0 <- proc.time()
f <- lmer(y ~ time * (g + school_x) + (time | school) + (time | school:pid), data = d, REML = TRUE)
el <- proc.time() - t0
msgs <- f@optinfo$conv$lme4$messages
cat(sprintf('{"elapsed": %.4f, "cpu": %.4f, "loglik": %.10f, "warnings": %d, "theta": [%s]}\n',
    el[["elapsed"]], el[["user.self"]] + el[["sys.self"]], as.numeric(logLik(f)),
    length(msgs), paste(sprintf("%.10f", getME(f, "theta")), collapse = ",")))
"""


def process_peak_mb(schools: int, pupils: int) -> float:
    code = (
        "from pipeline import fit_growth; from pipeline.simulate import simulate_three_level; "
        f"fit_growth(simulate_three_level(schools={schools}, pupils={pupils}, seed=2024), {FORMULA!r}); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def run_lme4(df, workdir: Path) -> dict | None:
    if shutil.which("Rscript") is None:
        return None
    csv = workdir / "data.csv"
    script = workdir / "fit.R"
    df.write_csv(csv)
    script.write_text(R_SCRIPT)
    out = subprocess.run(
        ["Rscript", str(script), str(csv)], capture_output=True, text=True, timeout=3600
    )
    if out.returncode != 0:
        print(f"  lme4 failed: {out.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1000x100", "10000x100"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-r", action="store_true", help="do not run lme4")
    parser.add_argument(
        "--stages", action="store_true", help="also time each stage of three more fits"
    )
    parser.add_argument(
        "--r-max", type=int, default=100_000, help="largest number of pupils to give lme4"
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}"
    )
    print(f"model: {FORMULA}, REML, 6 waves, 10% missing\n")
    fit_growth(simulate_three_level(schools=20, pupils=10, seed=1), FORMULA)  # warm up imports
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            schools, pupils = (int(v) for v in size.split("x"))
            df = simulate_three_level(schools=schools, pupils=pupils, seed=2024)
            best, cpu, fit = float("inf"), float("inf"), None
            for _ in range(args.repeat):
                t, c = time.perf_counter(), time.process_time()
                fit = fit_growth(df, FORMULA)
                best = min(best, time.perf_counter() - t)
                cpu = min(cpu, time.process_time() - c)
            print(
                f"{schools:,} schools x {pupils} pupils = {schools * pupils:,} persons, "
                f"{df.height:,} rows"
            )
            print(
                f"  ours: {best:.2f} s (best of {args.repeat}; CPU {cpu:.2f} s), "
                f"{fit.optimization.evaluations} evaluations, {fit.optimization.message}, "
                f"peak {process_peak_mb(schools, pupils):.0f} MB, load average {os.getloadavg()[0]:.1f}"
            )
            if args.stages:
                print(f"  stages: {fit_stages(df, FORMULA)}")
            if not args.no_r and schools * pupils <= args.r_max:
                r = run_lme4(df, Path(tmp))
                if r is not None:
                    print(
                        f"  lme4: {r['elapsed']:.2f} s wall, {r['cpu']:.2f} s CPU, "
                        f"{r['warnings']} convergence warning(s); lme4 / ours = {r['elapsed'] / best:.1f}x; "
                        f"load average {os.getloadavg()[0]:.1f}"
                    )
                    print(
                        f"  log-likelihood: ours - lme4 = {fit.loglik - r['loglik']:+.3e} "
                        "(positive: our optimum is higher)"
                    )
            elif not args.no_r:
                print(f"  lme4: not run above {args.r_max:,} pupils (--r-max)")
            assert fit.converged, fit.optimization.message


if __name__ == "__main__":
    main()
