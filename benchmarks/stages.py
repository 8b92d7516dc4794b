"""Where one fit's time goes, stage by stage (imported by bench_engine.py and bench_nested.py).

The stages are run as ``fit_growth`` runs them (the same functions, BLAS single-threaded
after the design), each timed on its own; the best of ``repeat`` runs is printed per stage,
with the optimizer's evaluations and the cost of one value-and-gradient evaluation at the
optimum.
"""

from __future__ import annotations

import time


def fit_stages(df, formula: str, *, repeat: int = 3) -> str:
    from pipeline.model import fit as F
    from pipeline.model.design import build_design
    from pipeline.model.inference import satterthwaite
    from pipeline.model.threads import single_threaded

    best: dict[str, float] = {}

    def timed(name, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
        return out

    for _ in range(repeat):
        design = timed("design", build_design, df, formula)
        with single_threaded():
            cp = timed("cross-products", F.design_cross_products, design)
            stats = timed("statistics", F.design_stats, design, cp)
            dev = F.deviance_function(design, stats, reml=True)
            theta, record = timed(
                "optimizer (start included)", F.optimize_multistart, dev, design, stats
            )
            sol = dev.solve(theta)
            sigma = dev.sigma(sol)
            timed("BLUPs", F.conditional_modes, dev, theta, sol.beta, sigma)
            timed("Satterthwaite", satterthwaite, dev, theta, sigma)
            timed("whole assemble", F.assemble, design, stats, dev, theta, record)
        with single_threaded():
            start = time.perf_counter()
            for _ in range(100):
                dev.value_and_gradient(theta)
            one = (time.perf_counter() - start) / 100
    parts = ", ".join(f"{name} {1000 * t:.1f}" for name, t in best.items())
    return (
        f"{parts} ms (best of {repeat}); optimizer {record.evaluations} evaluations, "
        f"{record.iterations} iterations; one value and gradient {1e6 * one:.0f} us"
    )
