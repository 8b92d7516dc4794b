"""The two-level data path: one array for X, y and U, read once for the statistics.

``model_matrices`` converts the rows into one C-ordered block (X, y, and U's columns when
they are not X's own), and its Gram matrix serves the rank check, the finiteness check and
Omega. These tests pin what the shortcuts must not change: the statistics equal those of
separate arrays, a design whose arrays were replaced is not read through a stale block, and
errors still name the column, the row or the unit.
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from pipeline import fit_growth
from pipeline.errors import ModelError
from pipeline.model import stats as stats_module
from pipeline.model.design import build_design, model_matrices, specify
from pipeline.model.fit import design_cross_products, fit_design
from pipeline.model.stats import cross_products, pattern_moments
from pipeline.simulate import simulate_growth


def _data(persons: int = 60, seed: int = 3) -> pl.DataFrame:
    return simulate_growth(persons=persons, waves=5, missing=0.15, seed=seed)


def _plain(design) -> stats_module.CrossProducts:
    """The statistics from separate, freshly copied arrays (no block, no Gram matrix)."""
    return cross_products(
        design.X.copy(),
        design.union.copy(),
        design.y.copy(),
        design.group_codes.copy(),
        m=design.ngroups,
    )


@pytest.mark.parametrize(
    ("formula", "shared"),
    [
        ("y ~ time * (g + ses) + (time | pid)", True),  # U = X's (Intercept), time
        ("y ~ time + (1 | pid)", True),
        ("y ~ ses + time + (time | pid)", False),  # (Intercept), time not side by side in X
        ("y ~ ses + (0 + time | pid)", False),  # time is not a fixed effect
    ],
)
def test_block_statistics_equal_separate_arrays(formula, shared):
    design = build_design(_data(), formula)
    joined = design.joined()
    assert joined is not None
    block, gram, ustart = joined
    p = design.X.shape[1]
    assert (ustart < p) == shared
    assert block.shape[1] == p + 1 + (0 if shared else design.union.shape[1])
    assert np.shares_memory(design.X, block) and np.shares_memory(design.y, block)
    assert np.shares_memory(design.union, block)
    np.testing.assert_allclose(gram, block.T @ block, rtol=1e-13, atol=1e-9)
    fast, plain = design_cross_products(design), _plain(design)
    np.testing.assert_allclose(fast.W, plain.W, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(fast.utu, plain.utu, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(fast.omega, plain.omega, rtol=1e-13)


def test_a_replaced_outcome_is_not_read_through_the_old_block():
    """The bootstrap and the cluster simulation replace y: the statistics must be the new y's."""
    design = build_design(_data(), "y ~ time + (time | pid)")
    new_y = design.y[::-1].copy()
    other = replace(design, y=new_y)
    assert other.joined() is None
    cp = design_cross_products(other)
    np.testing.assert_allclose(cp.W, _plain(other).W, rtol=1e-13, atol=1e-12)
    assert cp.omega[-1, -1] == pytest.approx(float(new_y @ new_y), rel=1e-13)
    assert not np.allclose(cp.W, design_cross_products(design).W)


def test_pickled_design_keeps_its_arrays_not_the_block():
    design = build_design(_data(), "y ~ time * g + (time | pid)")
    copy = pickle.loads(pickle.dumps(design))
    assert copy.block is None and copy.joined() is None
    np.testing.assert_array_equal(copy.X, design.X)
    np.testing.assert_array_equal(copy.y, design.y)
    np.testing.assert_allclose(
        design_cross_products(copy).W, design_cross_products(design).W, rtol=1e-13, atol=1e-12
    )


def test_fits_from_the_block_and_from_separate_arrays_agree():
    df = _data(persons=120, seed=8)
    fit = fit_growth(df, "y ~ time * (g + ses) + (time | pid)")
    separate = replace(fit.design, y=fit.design.y.copy(), X=fit.design.X.copy())
    assert separate.joined() is None
    refit = fit_design(separate, reml=True)
    assert refit.loglik == pytest.approx(fit.loglik, rel=1e-12)
    np.testing.assert_allclose(refit.beta, fit.beta, rtol=1e-8)
    np.testing.assert_allclose(refit.blups, fit.blups, rtol=1e-6, atol=1e-9)


def test_pattern_moments_summed_across_slices(monkeypatch):
    """Persons are gathered a slice at a time; a pattern spread over several slices (and a
    slice holding several patterns) must still give each pattern's whole sum."""
    rng = np.random.default_rng(5)
    m, q, P, K = 301, 2, 4, 6
    W = rng.normal(size=(m, q, P))
    inverse = rng.integers(0, K, size=m)
    counts = np.bincount(inverse, minlength=K)
    monkeypatch.setattr(stats_module, "MOMENT_ROWS", 17)
    S = pattern_moments(W, inverse, counts)
    flat = W.reshape(m, q * P)
    for k in range(K):
        expected = (flat[inverse == k].T @ flat[inverse == k]).reshape(q, P, q, P)
        np.testing.assert_allclose(S[k], expected.transpose(0, 2, 1, 3), rtol=1e-12, atol=1e-12)


def test_values_too_large_to_square_are_named():
    df = pl.DataFrame(
        {
            "y": [1.0, 2.0, 3.0, 5.0, 4.0, 6.0],
            "t": [0.0, 1e200, 2.0, 3.0, 1.0, 2.0],
            "id": ["a", "a", "b", "b", "c", "c"],
        }
    )
    with pytest.raises(
        ModelError,
        match=r"'t' has values too large to compute with \(largest 1e\+200, in row 2 of the data used\)",
    ):
        fit_growth(df, "y ~ t + (1 | id)")


def test_a_unit_missing_from_the_specification_is_named_in_sorted_rows():
    """Sorted rows are coded a run at a time: a run whose person the specification does not
    know is refused, even between two known persons."""
    df = _data(persons=10)
    spec = specify(df.filter(pl.col("pid") != 4), "y ~ time + (time | pid)")
    with pytest.raises(ModelError, match=r"pid '4' in this chunk is not among the units"):
        model_matrices(spec, df)
    codes = model_matrices(spec, df.filter(pl.col("pid") != 4)).codes[0]
    assert codes.dtype == np.int64 and codes.max() == 8 and np.all(np.diff(codes) >= 0)
