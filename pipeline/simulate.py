"""Simulated growth data with known truth (for tests, benchmarks and power checks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True, slots=True)
class GrowthTruth:
    """True values for ``y ~ time * (g + ses) + (time | pid)``."""

    beta: tuple[float, ...] = (
        50.0,
        2.0,
        3.0,
        1.5,
        0.5,
        -0.4,
    )  # (Intercept), time, gB, ses, time:gB, time:ses
    sd_intercept: float = 5.0
    sd_slope: float = 1.0
    correlation: float = -0.3
    sigma: float = 3.0

    @property
    def covariance(self) -> np.ndarray:
        c = self.correlation * self.sd_intercept * self.sd_slope
        return np.array([[self.sd_intercept**2, c], [c, self.sd_slope**2]])


def simulate_growth(
    *,
    persons: int,
    waves: int = 6,
    missing: float = 0.1,
    seed: int = 1,
    truth: GrowthTruth | None = None,
) -> pl.DataFrame:
    """Long-format data: pid, time (0..waves-1), g ("A"/"B" person-level), ses (person-level), y.

    Occasions are missing completely at random with probability ``missing``
    (every person keeps at least one occasion).
    """
    truth = truth or GrowthTruth()
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 2, persons)
    ses = rng.normal(0.0, 1.0, persons)
    b = rng.multivariate_normal([0.0, 0.0], truth.covariance, size=persons)
    pid = np.repeat(np.arange(persons), waves)
    time = np.tile(np.arange(waves, dtype=float), persons)
    keep = rng.random(persons * waves) >= missing
    keep[::waves] |= ~keep.reshape(persons, waves).any(axis=1)
    gi, si = g[pid], ses[pid]
    b0, b1, b2, b3, b4, b5 = truth.beta
    mean = b0 + b1 * time + b2 * gi + b3 * si + b4 * time * gi + b5 * time * si
    y = mean + b[pid, 0] + b[pid, 1] * time + rng.normal(0.0, truth.sigma, persons * waves)
    return pl.DataFrame(
        {
            "pid": pid[keep],
            "time": time[keep],
            "g": np.where(gi[keep] == 1, "B", "A"),
            "ses": si[keep],
            "y": y[keep],
        }
    )
