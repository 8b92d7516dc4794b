"""Completers vs dropouts and the pattern-mixture check: hand-checked tests, words, type-I error under MCAR."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.stats

from pipeline.analysis.missing_data import (
    COLUMNS,
    dropout_check,
    dropout_sentence,
    person_dropout,
)
from pipeline.errors import ModelError


def simulate(seed: int, *, persons: int = 80, waves: int = 4, mnar: float = 0.0) -> pl.DataFrame:
    """Linear growth; each person drops out after a random wave (MCAR), or, with mnar > 0,
    more often when their own slope is low."""
    rng = np.random.default_rng(seed)
    b0 = rng.normal(0, 2, persons)
    b1 = rng.normal(0, 0.7, persons)
    ses = rng.normal(0, 1, persons)
    sex = rng.choice(["f", "m"], persons)
    rows = []
    for i in range(persons):
        logit = -1.0 - mnar * b1[i]
        last = waves - 1
        for w in range(1, waves):
            if rng.random() < 1 / (1 + np.exp(-logit)) / 2:
                last = w
                break
        for w in range(last + 1):
            y = 10 + b0[i] + (1 + b1[i]) * w + rng.normal(0, 1)
            rows.append((str(i), float(w), y, ses[i], sex[i]))
    return pl.DataFrame(rows, schema=["pid", "wave", "y", "ses", "sex"], orient="row")


def test_dropout_definition_allows_intermittent_gaps() -> None:
    data = pl.DataFrame(
        {
            "pid": ["a"] * 3 + ["b"] * 2 + ["c"] * 3,
            "t": [0.0, 1.0, 2.0, 0.0, 2.0, 0.0, 1.0, 2.0],
            "y": [1.0, 2.0, 3.0, 1.0, 2.0, 1.0, 2.0, None],
        }
    )
    status = person_dropout(data, person="pid", outcome="y", time="t")
    # b misses t = 1 but returns: a completer; c's last outcome is missing: a dropout at t = 1
    assert status.rows() == [("a", 2.0, False), ("b", 2.0, False), ("c", 1.0, True)]


def test_table_by_hand() -> None:
    data = simulate(3)
    table = dropout_check(data, person="pid", outcome="y", time="wave", covariates=["ses", "sex"])
    assert table.schema == pl.Schema(COLUMNS)
    status = person_dropout(data, person="pid", outcome="y", time="wave")
    drop = set(status.filter(pl.col("dropout"))["person"])
    assert table["kind"].to_list() == [
        "baseline status",
        "covariate",
        "covariate",
        "rate of change",
        "pattern mixture",
        "pattern mixture",
        "pattern mixture",
    ]
    base = data.filter(pl.col("wave") == 0)
    a = base.filter(~pl.col("pid").is_in(drop))["y"].to_numpy()
    b = base.filter(pl.col("pid").is_in(drop))["y"].to_numpy()
    welch = scipy.stats.ttest_ind(b, a, equal_var=False)
    row = table.row(0, named=True)
    assert row["statistic"] == pytest.approx(welch.statistic)
    assert row["p_value"] == pytest.approx(welch.pvalue)
    assert (row["n_completers"], row["n_dropouts"]) == (a.size, b.size)
    assert row["difference"] == pytest.approx(b.mean() - a.mean())
    # categorical covariate: Pearson's chi-square without continuity correction
    persons = data.unique("pid").with_columns(pl.col("pid").is_in(drop).alias("d"))
    counts = [
        [persons.filter((pl.col("sex") == s) & (pl.col("d") == d)).height for d in (False, True)]
        for s in ("f", "m")
    ]
    chi2, p, _, _ = scipy.stats.chi2_contingency(np.array(counts), correction=False)
    assert table["statistic"][2] == pytest.approx(chi2) and table["p_value"][2] == pytest.approx(p)
    # per-person OLS slopes
    slopes = {
        k: np.polyfit(g["wave"].to_numpy(), g["y"].to_numpy(), 1)[0]
        for (k,), g in data.group_by("pid")
        if g.height >= 2
    }
    sa = np.array([v for k, v in slopes.items() if k not in drop])
    sb = np.array([v for k, v in slopes.items() if k in drop])
    assert table["statistic"][3] == pytest.approx(
        scipy.stats.ttest_ind(sb, sa, equal_var=False).statistic
    )
    assert table["df"][6] == 2.0


def test_sentences_do_not_overclaim() -> None:
    calm = dropout_check(simulate(3), person="pid", outcome="y", time="wave")
    text = dropout_sentence(calm)
    assert not (calm["p_value"] < 0.05).any()  # this seed's MCAR data reject nothing
    assert "consistent with data missing at random" in text
    assert "in 5 checks (baseline status, rate of change and dropout as a predictor" in text
    assert "MAR holds" not in text and "are missing at random." not in text
    strong = dropout_check(
        simulate(4, persons=300, mnar=4.0), person="pid", outcome="y", time="wave"
    )
    text = dropout_sentence(strong)
    assert text.startswith("Dropouts (n = ")
    assert "rate of change" in text
    assert "which the data cannot confirm" in text
    assert dropout_sentence(pl.DataFrame(schema=COLUMNS)).startswith("Nobody dropped out")


def test_no_dropout_gives_an_empty_table_and_errors_are_named() -> None:
    full = pl.DataFrame(
        {"pid": ["a", "a", "b", "b"], "wave": [0.0, 1.0, 0.0, 1.0], "y": [1.0, 2.0, 2.0, 5.0]}
    )
    table = dropout_check(full, person="pid", outcome="y", time="wave")
    assert table.height == 0
    with pytest.raises(
        ModelError, match="column 'score' does not exist \\(columns: pid, wave, y, ses, sex\\)"
    ):
        dropout_check(simulate(1), person="pid", outcome="score", time="wave")
    with pytest.raises(ModelError, match="predictor must be 'dropout' or 'dropout_time', not 'x'"):
        dropout_check(simulate(1), person="pid", outcome="y", time="wave", predictor="x")


def test_dropout_time_as_the_predictor() -> None:
    table = dropout_check(
        simulate(5), person="pid", outcome="y", time="wave", predictor="dropout_time"
    )
    assert (
        table["check"][-1]
        == "pattern mixture: the last observed wave predicts status and change (jointly)"
    )


def _type1(reps: int, seed: int) -> np.ndarray:
    hits = None
    for r in range(reps):
        table = dropout_check(
            simulate(seed * 100_000 + r),
            person="pid",
            outcome="y",
            time="wave",
            covariates=["ses", "sex"],
        )
        rejected = (table["p_value"] < 0.05).to_numpy()
        hits = rejected.astype(int) if hits is None else hits + rejected
    return hits / reps


def test_type1_under_mcar_quick() -> None:
    """20 MCAR data sets: no check rejects grossly often (3 MC SDs = 0.15)."""
    assert (_type1(20, seed=1) <= 0.05 + 0.15).all()


@pytest.mark.slow
def test_type1_under_mcar() -> None:
    """600 MCAR data sets: each of the 7 tests rejects 5 % within 3 MC SDs (0.027)."""
    rates = _type1(600, seed=2)
    assert (np.abs(rates - 0.05) <= 0.027).all(), rates
