"""Benchmark: the fast engine against statsmodels MixedLM (and mixedlm-rs when installed).

Simulated growth data: 6 waves, 10 % of occasions missing at random, model
``y ~ time * (g + ses) + (time | pid)``, REML, data already in memory as a
polars frame. Prints wall-clock seconds (best of ``--repeat``), our CPU seconds,
peak memory of the fit, ratios against the peers measured in the same run, and the
one-minute load average after each row (timings on a shared machine mean little without it).

    python benchmarks/bench_engine.py                 # 10,000 / 100,000 / 1,000,000 persons
    python benchmarks/bench_engine.py --sizes 10000 --no-statsmodels
    python benchmarks/bench_engine.py --sizes 100000 --no-statsmodels --stages
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
import tracemalloc

import numpy as np
from stages import fit_stages  # benchmarks/stages.py (this script's folder is on the path)

from pipeline import fit_growth
from pipeline.simulate import simulate_growth

FORMULA = "y ~ time * (g + ses) + (time | pid)"


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def best_cpu(fn, repeat: int) -> float:
    """Least CPU time of the process (all threads) over ``repeat`` runs: less sensitive than
    wall time to other work on a shared machine, but it counts every thread's time."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def peak_memory(fn) -> float:
    """Peak bytes allocated by numpy/Python during fn (tracemalloc; polars' own buffers are not counted)."""
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def run_statsmodels(df):
    import pandas as pd
    import statsmodels.formula.api as smf

    pdf = pd.DataFrame({c: df[c].to_numpy() for c in df.columns})
    model = smf.mixedlm("y ~ time * (g + ses)", pdf, groups=pdf["pid"], re_formula="~time")
    return model.fit(reml=True)


def run_mixedlm_rs(df, *, numeric: bool = True):  # pragma: no cover - optional peer
    """mixedlm-rs (Rust, statsmodels API) through its formula interface on a pandas frame.

    numeric=True: the frame the fit needs, with equal column types for both engines: a
    0/1 column gB instead of the string g, integer person ids. numeric=False: the frame as
    a user might have it (g a string column, person ids as strings), where most of its time
    goes to its formula layer (patsy coding the strings), not to the fit."""
    import mixedlm_rs  # type: ignore[import-not-found]
    import pandas as pd

    if numeric:
        pdf = pd.DataFrame(
            {
                "y": df["y"].to_numpy(),
                "time": df["time"].to_numpy(),
                "gB": (df["g"] == "B").cast(float).to_numpy(),
                "ses": df["ses"].to_numpy(),
                "pid": df["pid"].to_numpy(),
            }
        )
        formula = "y ~ time * (gB + ses)"
    else:
        pdf = pd.DataFrame({c: df[c].to_numpy() for c in df.columns})
        pdf["pid"] = pdf["pid"].astype(str)
        formula = "y ~ time * (g + ses)"
    model = mixedlm_rs.mixedlm(formula, pdf, groups=pdf["pid"], re_formula="~time")
    return model.fit(reml=True)


def process_peak_mb(n: int) -> float:
    """Maximum resident set size of a fresh process that simulates n persons and fits them."""
    code = (
        "from pipeline import fit_growth; from pipeline.simulate import simulate_growth; "
        f"fit_growth(simulate_growth(persons={n}, waves=6, missing=0.1, seed=2024), {FORMULA!r}); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--statsmodels-max", type=int, default=10_000, help="largest size to run statsmodels on"
    )
    parser.add_argument("--no-statsmodels", action="store_true")
    parser.add_argument(
        "--stages", action="store_true", help="also time each stage of three more fits"
    )
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"
    )
    print(f"model: {FORMULA}, REML, 6 waves, 10% missing\n")
    has_rs = importlib.util.find_spec("mixedlm_rs") is not None
    print(
        f"{'persons':>10} {'rows':>10} {'ours s':>9} {'CPU s':>6} {'peak MB':>8} {'statsmodels s':>14} {'ratio':>8} {'mixedlm-rs s':>13} {'ratio':>7} {'load':>5}  loglik diff (mixedlm-rs: numeric gB, integer ids)"
    )
    for n in args.sizes:
        df = simulate_growth(persons=n, waves=6, missing=0.1, seed=2024)
        fit_growth(df.head(2000), FORMULA)  # warm up imports
        ours_t, fit = best_of(lambda df=df: fit_growth(df, FORMULA), args.repeat)
        ours_cpu = best_cpu(lambda df=df: fit_growth(df, FORMULA), min(args.repeat, 2))
        peak = peak_memory(lambda df=df: fit_growth(df, FORMULA)) / 2**20
        sm_t = sm_ratio = rs_t = rs_ratio = float("nan")
        diff = ""
        if not args.no_statsmodels and n <= args.statsmodels_max:
            sm_t, sm = best_of(lambda df=df: run_statsmodels(df), 1)
            sm_ratio = sm_t / ours_t
            diff = f"ours - statsmodels = {fit.loglik - sm.llf:+.2e}"
        if has_rs:
            rs_t, rs = best_of(lambda df=df: run_mixedlm_rs(df, numeric=True), args.repeat)
            rs_ratio = rs_t / ours_t
            diff += f"  ours - mixedlm-rs = {fit.loglik - rs.llf:+.2e}"
            str_t, _ = best_of(lambda df=df: run_mixedlm_rs(df, numeric=False), 1)
            diff += (
                f"  [mixedlm-rs with string g and string ids: {str_t:.3f} s, "
                f"{str_t / ours_t:.1f}x; mostly its formula layer]"
            )
        print(
            f"{n:>10,} {df.height:>10,} {ours_t:>9.3f} {ours_cpu:>6.2f} {peak:>8.0f} {sm_t:>14.3f} {sm_ratio:>7.1f}x {rs_t:>13.3f} {rs_ratio:>6.2f}x {os.getloadavg()[0]:>5.1f}  {diff}"
        )
        assert fit.converged, fit.optimization.message
        if args.stages:
            print(f"{'':>10} stages: {fit_stages(df, FORMULA)}")
    print("\nmaximum resident set size of a fresh process that simulates the data and fits it:")
    for n in args.sizes:
        print(f"{n:>10,} persons: {process_peak_mb(n):.0f} MB")
    if not has_rs:
        print("mixedlm-rs is not installed (pip install mixedlm-rs to compare; never a dependency)")


if __name__ == "__main__":
    main()
