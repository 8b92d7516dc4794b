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


@dataclass(frozen=True, slots=True)
class ThreeLevelTruth:
    """True values for ``y ~ time * (g + school_x) + (time | school) + (time | school:pid)``."""

    beta: tuple[float, ...] = (
        50.0,
        2.0,
        3.0,
        1.5,
        0.5,
        -0.4,
    )  # (Intercept), time, gB, school_x, time:gB, time:school_x
    person: tuple[float, float, float] = (5.0, 1.0, -0.3)  # SD intercept, SD slope, correlation
    school: tuple[float, float, float] = (2.0, 0.5, 0.2)
    sigma: float = 3.0

    @staticmethod
    def _cov(sd0: float, sd1: float, cor: float) -> np.ndarray:
        c = cor * sd0 * sd1
        return np.array([[sd0**2, c], [c, sd1**2]])

    @property
    def person_covariance(self) -> np.ndarray:
        return self._cov(*self.person)

    @property
    def school_covariance(self) -> np.ndarray:
        return self._cov(*self.school)


def simulate_three_level(
    *,
    schools: int,
    pupils: int,
    waves: int = 6,
    missing: float = 0.1,
    seed: int = 1,
    truth: ThreeLevelTruth | None = None,
) -> pl.DataFrame:
    """Long-format data: school, pid (numbered within the school), time, g ("A"/"B"),
    school_x (school-level), y; occasions missing completely at random."""
    truth = truth or ThreeLevelTruth()
    rng = np.random.default_rng(seed)
    persons = schools * pupils
    school_of = np.repeat(np.arange(schools), pupils)
    g = rng.integers(0, 2, persons)
    sx = rng.normal(0.0, 1.0, schools)
    bs = rng.multivariate_normal([0.0, 0.0], truth.school_covariance, size=schools)
    bp = rng.multivariate_normal([0.0, 0.0], truth.person_covariance, size=persons)
    person = np.repeat(np.arange(persons), waves)
    time = np.tile(np.arange(waves, dtype=float), persons)
    keep = rng.random(persons * waves) >= missing
    keep[::waves] |= ~keep.reshape(persons, waves).any(axis=1)
    s = school_of[person]
    gi, xi = g[person], sx[s]
    b0, b1, b2, b3, b4, b5 = truth.beta
    mean = b0 + b1 * time + b2 * gi + b3 * xi + b4 * time * gi + b5 * time * xi
    y = (
        mean
        + bs[s, 0]
        + bs[s, 1] * time
        + bp[person, 0]
        + bp[person, 1] * time
        + rng.normal(0.0, truth.sigma, persons * waves)
    )
    return pl.DataFrame(
        {
            "school": s.astype(np.int64),
            "pid": (person % pupils).astype(np.int64),
            "time": time,
            "g": np.where(gi == 1, "B", "A"),
            "school_x": xi,
            "y": y,
        }
    ).filter(pl.Series(keep))


def simulate_structured(
    *,
    persons: int,
    covariance: np.ndarray,
    waves: int | None = None,
    missing: float = 0.1,
    seed: int = 1,
    intercept_sd: float = 0.0,
    effect: float = 1.0,
) -> pl.DataFrame:
    """Long data with a level-1 error covariance ``covariance`` (waves x waves) across occasions:
    pid, wave (0..T-1), trt ("A"/"B"), y = 10 + 0.5 wave + effect * trt * wave + u_i + e_i,
    ``u_i ~ N(0, intercept_sd^2)``, ``e_i ~ N(0, covariance)``; occasions missing at random."""
    rng = np.random.default_rng(seed)
    T = covariance.shape[0] if waves is None else waves
    trt = rng.integers(0, 2, persons)
    e = rng.multivariate_normal(np.zeros(T), covariance, size=persons)
    u = rng.normal(0.0, intercept_sd, persons)
    wave = np.tile(np.arange(T, dtype=float), persons)
    pid = np.repeat(np.arange(persons), T)
    y = 10 + 0.5 * wave + effect * trt[pid] * wave + u[pid] + e.reshape(-1)
    keep = rng.random(persons * T) >= missing
    keep[::T] |= ~keep.reshape(persons, T).any(axis=1)
    return pl.DataFrame(
        {"pid": pid, "wave": wave, "trt": np.where(trt[pid] == 1, "B", "A"), "y": y}
    ).filter(pl.Series(keep))
