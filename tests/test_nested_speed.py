"""The speed work on nested models (issue 10) must not move any answer.

Each shortcut is checked against the path it replaced, at the same inputs: the sparse
and dense storage of the (unit, pattern) sums, pairs counted without a sort, the 2 x 2
inverse by formula, the BLUPs' conditional covariances formed per (unit, pattern) pair,
Satterthwaite's stencil in one batched solve (to the accuracy of its differences). The optimizer's Newton polish must stop
once it works on rounding (it used to run its 20 iterations there: 146 evaluations in a
fit of a two-level model of 10,000 persons, 16 now), and never evaluate a point twice.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import fit_growth
from pipeline.model import nested
from pipeline.model.design import build_design
from pipeline.model.deviance import spd_inverse
from pipeline.model.fit import design_stats, deviance_function
from pipeline.model.inference import satterthwaite
from pipeline.model.nested import _distinct_keys, _logdet
from pipeline.simulate import simulate_growth, simulate_three_level

FORMULA = "y ~ time * (g + school_x) + (time | school) + (time | school:pid)"
THETA = np.array([1.6, -0.1, 0.3, 0.6, 0.03, 0.16])


@pytest.fixture(scope="module")
def three_level():
    return simulate_three_level(schools=60, pupils=12, seed=11)


def _deviance(df, monkeypatch=None, fill=None):
    if fill is not None:
        monkeypatch.setattr(nested, "DENSE_FILL", fill)
    design = build_design(df, FORMULA)
    stats = design_stats(design)
    return design, stats, deviance_function(design, stats, reml=True)


def test_sparse_and_dense_unit_pattern_sums_agree(three_level, monkeypatch):
    _, dense_stats, dense = _deviance(three_level, monkeypatch, fill=0.0)
    _, sparse_stats, sparse = _deviance(three_level, monkeypatch, fill=np.inf)
    assert isinstance(dense_stats.unit_pattern_Wc, np.ndarray)
    assert not isinstance(sparse_stats.unit_pattern_Wc, np.ndarray)
    for theta in (THETA, THETA * 0.5):
        vd, gd = dense.value_and_gradient(theta)
        vs, gs = sparse.value_and_gradient(theta)
        assert vs == pytest.approx(vd, rel=1e-13)
        np.testing.assert_allclose(gs, gd, rtol=1e-9, atol=1e-9 * np.abs(gd).max())
    varpars = np.array([np.append(THETA, 1.3), np.append(THETA * 0.9, 1.1)])
    np.testing.assert_allclose(
        sparse.varpar_gradient_batch(varpars), dense.varpar_gradient_batch(varpars), rtol=1e-9
    )


def test_sparse_gradient_matches_the_complex_step(three_level, monkeypatch):
    _, _, sparse = _deviance(three_level, monkeypatch, fill=np.inf)
    value, grad = sparse.value_and_gradient(THETA)
    cs_value, cs_grad = sparse.complex_step_gradient(THETA)
    assert value == pytest.approx(cs_value, rel=1e-13)
    np.testing.assert_allclose(grad, cs_grad, rtol=1e-7, atol=1e-7 * np.abs(cs_grad).max())


@pytest.mark.parametrize("span_factor", [1, 3])
def test_distinct_keys_by_counting_equals_unique(span_factor):
    rng = np.random.default_rng(4)
    key = rng.integers(0, 50 * span_factor, size=400)
    key[:5] = 50 * span_factor - 1  # the last possible key occurs
    expected = np.unique(key, return_inverse=True, return_counts=True)
    counted = _distinct_keys(key, 50 * span_factor, count_limit=10**9)
    sorted_ = _distinct_keys(key, 50 * span_factor, count_limit=0)
    for got in (counted, sorted_):
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, np.asarray(b).reshape(-1))


@pytest.mark.parametrize("q", [1, 2, 3])
def test_inverse_and_log_determinant_by_formula(q):
    rng = np.random.default_rng(q)
    L = rng.normal(size=(2, 5, q, q))
    A = L @ np.swapaxes(L, -1, -2) + np.eye(q)
    inv, logdet = spd_inverse(A)
    np.testing.assert_allclose(inv, np.linalg.inv(A), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(logdet, np.linalg.slogdet(A)[1], rtol=1e-12)
    # analytic: the complex step through the formula gives the derivative of log|A|
    E = rng.normal(size=(q, q))
    E = E + E.T
    h = 1e-30
    _, logdet_c = spd_inverse(A + 1j * h * E)
    np.testing.assert_allclose(logdet_c.imag / h, np.einsum("...ij,ji->...", inv, E), rtol=1e-9)
    np.testing.assert_allclose(_logdet(A + 1j * h * E).imag / h, logdet_c.imag / h, rtol=1e-9)


def _blups_per_person(dev, theta, beta, sigma):
    """The person-level BLUPs and conditional covariances person by person, from the factors'
    M and the outer units' chain (the formula the pairs' version regroups)."""
    s = dev.stats
    _, sol = dev.solve_nested(theta)
    b_levels, V_levels, _, _ = dev.conditional_modes(theta, beta, sigma)
    school_b, school_V = b_levels[1], V_levels[1]
    v = np.append(-beta, 1.0)
    sel = s.selects[0]
    E = np.zeros((s.u, s.selects[1].size))
    E[s.selects[1], np.arange(s.selects[1].size)] = 1.0
    bs, Vs = [], []
    for i in range(s.W.shape[0]):
        k = s.pattern_of[i]
        c = s.person_parent[i]
        M = sol.M[0][k]
        H = M @ (s.ztz[k] @ E)[sel, :]
        r = (s.W[i] @ v)[sel]
        bs.append(M @ r - H @ school_b[c])
        Vs.append(sigma**2 * M + H @ school_V[c] @ H.T)
    return np.array(bs), np.array(Vs)


def test_person_blups_per_pair_equal_the_per_person_formula(three_level):
    _, _, dev = _deviance(three_level)
    sol = dev.solve(THETA)
    sigma = dev.sigma(sol)
    b_levels, V_levels, person_b, person_V = dev.conditional_modes(THETA, sol.beta, sigma)
    b, V = _blups_per_person(dev, THETA, sol.beta, sigma)
    np.testing.assert_allclose(b_levels[0], b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(V_levels[0], V, rtol=1e-10, atol=1e-14)
    q1 = b.shape[1]
    np.testing.assert_array_equal(person_b[:, :q1], b_levels[0])
    np.testing.assert_array_equal(person_b[:, q1:], b_levels[1][dev.stats.person_parent])
    np.testing.assert_array_equal(person_V[:, q1:, q1:], V_levels[1][dev.stats.person_parent])
    np.testing.assert_allclose(person_V, np.swapaxes(person_V, 1, 2), rtol=0, atol=1e-15)


class _Separate:
    """The nested deviance without its one-solve stencil: Satterthwaite's separate path."""

    def __init__(self, dev):
        self._dev = dev
        self.stencil_halvings = dev.stencil_halvings
        self.varpar_gradient_batch = dev.varpar_gradient_batch
        self.covbeta_batch = dev.covbeta_batch
        self.covbeta = dev.covbeta


def test_satterthwaite_in_one_batched_solve_equals_the_separate_solves(three_level):
    _, _, dev = _deviance(three_level)
    sol = dev.solve(THETA)
    sigma = dev.sigma(sol)
    one = satterthwaite(dev, THETA, sigma)
    separate = satterthwaite(_Separate(dev), THETA, sigma)
    # central differences at steps of 1e-4 |x| carry ~1e-8 relative rounding, which the
    # batch's composition (15 rows instead of 14) moves: the differences' own accuracy
    scale_h = np.abs(separate.hessian).max()
    np.testing.assert_allclose(one.hessian, separate.hessian, rtol=1e-7, atol=1e-9 * scale_h)
    scale_j = np.abs(separate.jacobian).max()
    np.testing.assert_allclose(one.jacobian, separate.jacobian, rtol=1e-7, atol=1e-9 * scale_j)
    np.testing.assert_allclose(
        one.vcov_beta, separate.vcov_beta, rtol=1e-10, atol=1e-12 * np.abs(one.vcov_beta).max()
    )
    for L in np.eye(sol.beta.size):
        assert one.df(L) == pytest.approx(separate.df(L), rel=1e-6)


class _Recorder:
    """A deviance that records every point it is asked for."""

    def __init__(self, dev):
        self._dev = dev
        self.points: list[tuple[str, bytes]] = []
        self.evaluations = 0

    def __getattr__(self, name):
        return getattr(self._dev, name)

    def __call__(self, theta):
        self.points.append(("value", np.asarray(theta, dtype=float).tobytes()))
        self.evaluations += 1
        return self._dev(theta)

    def value_and_gradient(self, theta):
        self.points.append(("gradient", np.asarray(theta, dtype=float).tobytes()))
        self.evaluations += 1
        return self._dev.value_and_gradient(theta)


# evaluations from the identity start, before this work: 150 and 158 (the three-level data
# end on a boundary first and restart from inside it); now about 20 and 70
@pytest.mark.parametrize(("model", "most"), [("two-level", 40), ("three-level", 100)])
def test_newton_polish_stops_at_rounding_and_evaluates_no_point_twice(model, most, three_level):
    from pipeline.model.optimize import optimize_theta
    from pipeline.model.parameters import CovarianceParameters

    if model == "two-level":
        df = simulate_growth(persons=10_000, waves=6, missing=0.1, seed=2024)
        design = build_design(df, "y ~ time * (g + ses) + (time | pid)")
    else:
        df = three_level
        design = build_design(df, FORMULA)
    stats = design_stats(design)
    dev = _Recorder(deviance_function(design, stats, reml=True))
    if model == "two-level":  # the batched Hessian would bypass the recorder
        dev.gradient_batch = None
    params = CovarianceParameters.for_theta(design.theta_index)
    theta, record = optimize_theta(dev, params)
    assert record.converged
    # L-BFGS-B from the identity, a Newton step or two, the Hessian's gradients: not the
    # 20 polish iterations on rounding
    assert record.evaluations <= most
    gradients = [p for kind, p in dev.points if kind == "gradient"]
    assert len(gradients) == len(set(gradients))
    values = [p for kind, p in dev.points if kind == "value"]
    assert len(values) == len(set(values))
    # a value is never asked for where the gradient was already computed (the reverse, a
    # boundary probe then L-BFGS-B restarted from it, is allowed)
    for i, (kind, point) in enumerate(dev.points):
        if kind == "value":
            assert ("gradient", point) not in dev.points[:i]


def test_fit_at_the_optimum_is_unchanged_by_a_cold_cache(three_level):
    """Two fits of the same data (the optimizer's memory is per call) agree exactly."""
    a = fit_growth(three_level, FORMULA)
    b = fit_growth(three_level, FORMULA)
    assert a.loglik == b.loglik
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.optimization.evaluations == b.optimization.evaluations
