"""Benchmark: level-1 error structures against nlme and glmmTMB through Rscript.

Simulated data: persons x 6 waves, 10 % of occasions missing at random, AR(1)
errors (rho 0.6) plus a random intercept. Two models, REML:

- ``y ~ wave * trt + (wave | pid) + ar1(wave | pid)`` (nlme: ``lme(random = ~ wave | pid,
  correlation = corAR1(form = ~ wave | pid))``; glmmTMB: ``(wave | pid) + ar1(0 + visit | pid)``,
  which keeps a residual variance beside the AR(1) term: one parameter more, so only its
  time is compared);
- the MMRM ``y ~ visit * trt + us(wave | pid)`` (nlme: ``gls(correlation = corSymm, weights =
  varIdent)``; glmmTMB: ``us(0 + visit | pid)`` with ``dispformula = ~ 0``).

Ours is the whole ``fit_growth`` call on a polars frame in memory. The R peers are
timed inside R around the fitting call only (not R's start or reading the CSV), on the
same data written once as CSV (integer ids, numeric wave, visit and trt as text), at
each size until a peer exceeds ``--r-limit`` seconds; larger sizes are not given to it.

    python benchmarks/bench_structures.py                          # 1k, 10k, 100k persons
    python benchmarks/bench_structures.py --sizes 2000 --no-r
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import fit_growth
from pipeline.simulate import simulate_structured

MODELS = {
    "ar1": "y ~ wave * trt + (wave | pid) + ar1(wave | pid)",
    "us": "y ~ visit * trt + us(wave | pid)",
}

R_CALLS = {
    ("ar1", "nlme"): "nlme::lme(y ~ wave * trt, random = ~ wave | pid, "
    "correlation = nlme::corAR1(form = ~ wave | pid), data = d, method = 'REML')",
    ("us", "nlme"): "nlme::gls(y ~ visit * trt, correlation = nlme::corSymm(form = ~ w1 | pid), "
    "weights = nlme::varIdent(form = ~ 1 | visit), data = d, method = 'REML')",
    ("us", "glmmTMB"): "glmmTMB::glmmTMB(y ~ visit * trt + us(0 + visit | pid), "
    "dispformula = ~ 0, data = d, REML = TRUE)",
    ("ar1", "glmmTMB"): "glmmTMB::glmmTMB(y ~ wave * trt + (wave | pid) + ar1(0 + visit | pid), "
    "data = d, REML = TRUE)",
}

R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1]); d$pid <- factor(d$pid); d$visit <- factor(d$visit); d$w1 <- d$wave + 1L
t0 <- proc.time()
ok <- TRUE; ll <- NA
res <- tryCatch({ f <- eval(parse(text = args[2])); ll <- as.numeric(logLik(f)); TRUE },
                error = function(e) { message(conditionMessage(e)); FALSE })
el <- proc.time() - t0
cat(sprintf('{"elapsed": %.3f, "ok": %s, "loglik": %s}\n', el[["elapsed"]],
    if (res) "true" else "false", if (is.na(ll)) "null" else sprintf("%.8f", ll)))
"""


def run_r(csv: Path, call: str, workdir: Path, limit: float) -> dict | None:
    script = workdir / "fit.R"
    script.write_text(R_SCRIPT)
    try:
        out = subprocess.run(
            ["Rscript", str(script), str(csv), call],
            capture_output=True,
            text=True,
            timeout=limit * 3 + 30,
        )
    except subprocess.TimeoutExpired:
        return {"elapsed": float("inf"), "ok": False, "loglik": None}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-r", action="store_true")
    parser.add_argument(
        "--r-limit", type=float, default=60.0, help="seconds; larger sizes skip a peer"
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}"
    )
    T = 6
    lag = np.abs(np.subtract.outer(np.arange(T), np.arange(T)))
    cov = 4.0 * 0.6**lag
    has_r = shutil.which("Rscript") is not None and not args.no_r
    too_slow: set[tuple[str, str]] = set()
    fit_growth(
        simulate_structured(persons=50, covariance=cov, seed=1).with_columns(
            visit=pl.col("wave").cast(pl.Int64).cast(pl.String)
        ),
        MODELS["us"],
    )  # warm up imports
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            df = simulate_structured(
                persons=n, covariance=cov, seed=2024, intercept_sd=1.0
            ).with_columns(
                visit=pl.col("wave").cast(pl.Int64).cast(pl.String),
                wave=pl.col("wave").cast(pl.Int64),
            )
            csv = Path(tmp) / "data.csv"
            if has_r:
                df.write_csv(csv)
            print(f"\n{n:,} persons, {df.height:,} rows")
            for key, formula in MODELS.items():
                best, fit = float("inf"), None
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    fit = fit_growth(df, formula)
                    best = min(best, time.perf_counter() - t)
                print(
                    f"  {key:>4} ours: {best:7.2f} s  ({fit.optimization.message}; "
                    f"{fit.optimization.evaluations} evaluations; loglik {fit.loglik:.4f})"
                )
                if not has_r:
                    continue
                for peer in ("nlme", "glmmTMB"):
                    if (key, peer) in too_slow:
                        print(
                            f"  {key:>4} {peer}: not run (over {args.r_limit:.0f} s at a smaller size)"
                        )
                        continue
                    r = run_r(csv, R_CALLS[(key, peer)], Path(tmp), args.r_limit)
                    if r is not None and r["elapsed"] == float("inf"):
                        too_slow.add((key, peer))
                        print(f"  {key:>4} {peer}: stopped after {args.r_limit * 3 + 30:.0f} s")
                        continue
                    if r is None or not r["ok"]:
                        print(f"  {key:>4} {peer}: failed (an error in R)")
                        continue
                    if r["elapsed"] > args.r_limit:
                        too_slow.add((key, peer))
                    note = ""
                    if r["loglik"] is not None and not (key == "ar1" and peer == "glmmTMB"):
                        note = f"; ours - {peer} log-likelihood {fit.loglik - r['loglik']:+.2e}"
                    elif key == "ar1" and peer == "glmmTMB":
                        note = "; glmmTMB keeps a residual variance beside ar1 (one more parameter)"
                    print(
                        f"  {key:>4} {peer}: {r['elapsed']:7.2f} s  ({r['elapsed'] / best:.1f}x ours){note}"
                    )


if __name__ == "__main__":
    main()
