"""Review of the engine and validation speed-ups (785eb35..f0d5ff5): hostile inputs that the
shortcuts must handle as the plain paths do."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from pipeline import fit_growth
from pipeline.analysis.icc import _fit_sums, icc_profile_interval
from pipeline.model.design import build_design
from pipeline.model.deviance import spd_inverse
from pipeline.model.fit import design_cross_products
from pipeline.model.stats import cross_products
from pipeline.simulate import simulate_growth


def test_two_by_two_log_determinant_does_not_overflow():
    """log|A| of a 2 x 2 block is log(a) + log(schur): the product a * schur overflows when
    each factor is finite but their product is above 1.8e308 (Cholesky's value is finite)."""
    A = np.array([[[1e200, 3e99], [3e99, 1e200]], [[4.0, 1.0], [1.0, 3.0]]])
    inv, logdet = spd_inverse(A.copy())
    L = np.linalg.cholesky(A)
    expected = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)
    assert np.all(np.isfinite(logdet))
    np.testing.assert_allclose(logdet, expected, rtol=1e-14)
    np.testing.assert_allclose(inv[1], np.linalg.inv(A[1]), rtol=1e-14)


def test_a_column_strided_view_of_the_block_is_not_taken_for_its_columns():
    """joined() vouches that the union is a run of the block's columns: a view of columns 0
    and 2 (a step of 2) starts where column 0 does but is not columns 0 and 1."""
    design = build_design(
        simulate_growth(persons=40, waves=4, seed=2), "y ~ time + g + (time | pid)"
    )
    assert design.fixed_names == ("(Intercept)", "time", "gB")
    other = replace(design, Z=design.block[:, 0:3:2])  # (Intercept) and gB, as a view
    assert other.joined() is None
    fast = design_cross_products(other)
    plain = cross_products(
        other.X.copy(), other.Z.copy(), other.y.copy(), other.group_codes, m=other.ngroups
    )
    np.testing.assert_allclose(fast.W, plain.W, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(fast.utu, plain.utu, rtol=1e-13, atol=1e-12)


def test_icc_interval_from_a_fit_is_of_the_random_intercept_model_only():
    """A fit with one fixed intercept and one random column that is not the intercept has
    Z_i'Z_i = sum of time^2, not n_i: its statistics are not the means model's, so the
    interval comes from the rows (the interval of y ~ 1 + (1 | person), as documented)."""
    df = simulate_growth(persons=200, waves=4, missing=0.2, seed=5).with_columns(
        time=pl.col("time") + 1.0
    )
    slope = fit_growth(df, "y ~ 1 + (0 + time | pid)")
    assert _fit_sums(slope) is None
    from_fit = icc_profile_interval(fit=slope)
    from_rows = icc_profile_interval(y=slope.design.y, persons=slope.design.group_codes)
    assert from_fit.conf_low == pytest.approx(from_rows.conf_low, rel=1e-9)
    assert from_fit.conf_high == pytest.approx(from_rows.conf_high, rel=1e-9)
    means = fit_growth(df, "y ~ 1 + (1 | pid)")
    assert _fit_sums(means) is not None  # the means model still uses its statistics
    assert icc_profile_interval(fit=means).conf_low == pytest.approx(from_rows.conf_low, rel=1e-9)


STUDY = """\
[study]
name = "k"
title = "k"

[data]
path = "data.parquet"
person = "pid"
time = "t"
outcome = "y"
max_invalid_fraction = 1.0

[time]
name = "tc"

[limits]
max_label_length = 24

[output]
dir = "out"
"""


@pytest.mark.parametrize("dtype", [pl.Int128, pl.String])
def test_a_128_bit_integer_id_longer_than_the_limit_is_quarantined(tmp_path, dtype):
    """A 64-bit integer's text has at most 20 characters, so the label-length rule may skip
    such columns when the limit is 20 or more; a 128-bit integer's text has up to 40."""
    from pipeline.config import parse_config
    from pipeline.io import load_data
    from pipeline.validate import validate_data

    big = 10**29  # 30 digits
    frame = pl.DataFrame(
        {
            "pid": [1, 1, 2, 2, big, big, 3, 3],
            "t": [0.0, 1.0] * 4,
            "y": [1.0, 2.0, 3.0, 4.5, 5.0, 6.5, 7.0, 8.5],
        },
        schema={"pid": pl.Int128, "t": pl.Float64, "y": pl.Float64},
    ).with_columns(pl.col("pid").cast(dtype))
    frame.write_parquet(tmp_path / "data.parquet")
    cfg = parse_config(STUDY, path=tmp_path / "study.toml")
    loaded = load_data(cfg)
    assert loaded.frame.schema["pid"] == dtype
    reasons = dict(validate_data(loaded, cfg).quarantine.select("_line", "reason").iter_rows())
    assert sorted(reasons) == [6, 7]
    assert all("is longer than 24 characters" in reason for reason in reasons.values())


def test_a_hash_collision_falls_back_to_the_exact_coding_in_a_fit(monkeypatch):
    """Every hash coded as one (as if all rows collided): the check sees rows that differ
    under one code and the exact path codes the patterns; the fit is unchanged."""
    import pandas

    df = simulate_growth(persons=150, waves=5, missing=0.3, seed=21)
    formula = "y ~ time + (time | pid)"
    plain = fit_growth(df, formula)
    assert plain.stats.S is not None  # the per-pattern path, coded by the hash table
    calls = []

    def collide(values):
        calls.append(len(values))
        return np.zeros(len(values), dtype=np.int64), np.zeros(1, dtype=values.dtype)

    monkeypatch.setattr(pandas, "factorize", collide)
    collided = fit_growth(df, formula)
    assert calls  # the hash table was asked, and its answer refused
    assert collided.stats.patterns == plain.stats.patterns
    assert collided.loglik == pytest.approx(plain.loglik, rel=1e-12)
    np.testing.assert_allclose(collided.theta, plain.theta, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(collided.blups, plain.blups, rtol=1e-6, atol=1e-9)
