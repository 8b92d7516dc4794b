"""Ids coded once (pipeline/analysis/designs.py): a fit on the coded ids is the fit on the
text ids, the same numbers and the same ids in every table, also with rows left out and
with a nested level."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.analysis.designs import code_ids, fit_formula
from pipeline.model.fit import fit_growth


def _frame(seed: int = 2) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    persons, waves = 60, 4
    pid = np.repeat(np.arange(persons), waves)
    time = np.tile(np.arange(waves, dtype=float), persons)
    school = pid % 6
    y = 10 + 2 * time + rng.normal(0, 2, persons)[pid] + rng.normal(0, 1, pid.size)
    y += rng.normal(0, 1, 6)[school]
    y[rng.random(pid.size) < 0.1] = np.nan  # rows left out by every model
    return pl.DataFrame(
        {
            # text ids whose sorted order is not the numeric one ("10" < "9")
            "pid": [str(v) for v in pid],
            "school": [f"s{v}" for v in school],
            "time": time,
            "y": y,
        }
    ).with_columns(pl.col("y").fill_nan(None))


@pytest.mark.parametrize(
    "formula", ["y ~ time + (time | pid)", "y ~ time + (1 | school) + (time | pid)"]
)
def test_a_fit_on_coded_ids_is_the_fit_on_the_text_ids(formula: str) -> None:
    frame = _frame()
    coding, coded = code_ids(frame, ("pid", "school"))
    assert coded.schema["pid"] == pl.Int64 and coded.schema["school"] == pl.Int64
    # code k is the k-th id in sorted text order
    assert coding.labels["pid"].to_list() == sorted(set(frame["pid"].to_list()))
    plain = fit_growth(frame, formula)
    ours = fit_formula(frame, formula, reml=True, coding=coding, coded=coded)
    assert ours.loglik == pytest.approx(plain.loglik, rel=1e-12)
    assert ours.fixed_effects.equals(plain.fixed_effects)
    assert ours.variance_components.equals(plain.variance_components)
    assert ours.random_effects.equals(plain.random_effects)  # the text ids, in lme4's order
    assert ours.frame.equals(plain.frame)
    assert ours.unit_labels().equals(plain.unit_labels())
    np.testing.assert_array_equal(ours.design.group_codes, plain.design.group_codes)
    assert ours.refit(reml=False).loglik == pytest.approx(plain.refit(reml=False).loglik, 1e-12)


def test_a_frame_with_an_id_the_coding_does_not_know_is_fitted_on_its_text() -> None:
    frame = _frame()
    coding, _ = code_ids(frame.filter(pl.col("pid") != "7"), ("pid",))
    formula = "y ~ time + (1 | pid)"
    ours = fit_formula(frame, formula, reml=True, coding=coding)
    assert ours.random_effects.equals(fit_growth(frame, formula).random_effects)


def test_numeric_ids_are_left_as_they_are() -> None:
    frame = _frame().with_columns(pl.col("pid").cast(pl.Int64))
    coding, coded = code_ids(frame, ("pid",))
    assert coding.columns == ()
    assert coded is frame


def test_the_fit_cache_is_used_only_up_to_its_row_limit(monkeypatch) -> None:
    import pipeline.analysis as analysis

    class Levels:  # only the model frame's height is read
        model_frame = _frame()

    rows = Levels.model_frame.height
    monkeypatch.setattr(analysis, "CACHE_MAX_ROWS", rows)
    assert analysis.fits_cacheable(Levels())  # type: ignore[arg-type]
    monkeypatch.setattr(analysis, "CACHE_MAX_ROWS", rows - 1)
    assert not analysis.fits_cacheable(Levels())  # type: ignore[arg-type]
