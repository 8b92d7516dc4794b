"""Coverage of the 95% bands of ``predictor_trajectories`` by simulation (slow: ~1 min).

Truth: y = 10 + 2 t + 1.5 ses + 0.5 ses t + u0 + u1 t + e, 60 persons x 4 waves,
ses ~ N(0, 1) per person, SD(u0) = 2, SD(u1) = 0.5, corr 0, SD(e) = 1. In each of 500
replicates the conditional model y ~ t + ses + t:ses + (t | pid) is fitted and the
band is drawn at the sample's mean and mean -+ 1 SD of ses (over persons), at the first,
middle and last time; the true mean there is 10 + 2 t + 1.5 v + 0.5 v t at the same v.
Each of the 9 pointwise coverages must be within 3 Monte Carlo SEs of 0.95
(sqrt(0.95 * 0.05 / 500) = 0.0097, so 0.921 to 0.979).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline import fit_growth
from pipeline.analysis.groups import Predictor
from pipeline.analysis.predictions import DEFAULT_SETTINGS, PREDICTOR_VALUES_SCHEMA, trajectories

REPLICATES = 500
PERSONS, WAVES = 60, 4


def _replicate(rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    ses = rng.normal(size=PERSONS)
    u0 = rng.normal(scale=2.0, size=PERSONS)
    u1 = rng.normal(scale=0.5, size=PERSONS)
    pid = np.repeat(np.arange(PERSONS), WAVES)
    t = np.tile(np.arange(WAVES, dtype=float), PERSONS)
    s = ses[pid]
    y = 10 + 2 * t + 1.5 * s + 0.5 * s * t + u0[pid] + u1[pid] * t
    y = y + rng.normal(size=y.size)
    frame = pl.DataFrame({"pid": pid.astype(str), "t": t, "ses": s, "y": y})
    return frame, ses


@pytest.mark.slow
def test_band_covers_the_true_mean_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(20240611)
    covered = np.zeros((3, 3))
    for _ in range(REPLICATES):
        frame, ses = _replicate(rng)
        fit = fit_growth(frame, "y ~ t + ses + t:ses + (t | pid)")
        mean, sd = ses.mean(), ses.std(ddof=1)
        values = pl.DataFrame(
            [
                {
                    "predictor": "ses",
                    "level": "person",
                    "units": PERSONS,
                    "mean": mean,
                    "sd": sd,
                    "setting": name,
                    "value": mean + k * sd,
                }
                for name, k in DEFAULT_SETTINGS
            ],
            schema=PREDICTOR_VALUES_SCHEMA,
        )
        predictor = Predictor(
            design_row=fit.design_row,
            time_name="t",
            centre=0.0,
            scale=1.0,
            group=None,
            numeric={"ses": mean},
            categorical={},
        )
        table = trajectories(
            model="m",
            predictor=predictor,
            contrast=fit.contrast,
            values=values,
            time_range=(0.0, WAVES - 1.0),
            grid_points=3,
        )
        v = table["value"].to_numpy()
        t = table["time"].to_numpy()
        truth = 10 + 2 * t + 1.5 * v + 0.5 * v * t
        hit = (table["conf_low"].to_numpy() <= truth) & (truth <= table["conf_high"].to_numpy())
        covered += hit.reshape(3, 3)
    coverage = covered / REPLICATES
    mc_se = np.sqrt(0.95 * 0.05 / REPLICATES)
    assert np.all(np.abs(coverage - 0.95) <= 3 * mc_se), coverage
