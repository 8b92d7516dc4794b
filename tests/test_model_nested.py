"""Nested grouping factors: the staged engine against brute force, merges, syntaxes and errors.

The brute-force check builds the full marginal covariance ``V = Z Lambda Lambda' Z' + I``
of a small data set and evaluates the profiled ML deviance / REML criterion
directly (``log|V| + n (1 + log(2 pi r'V^{-1}r / n))``, plus ``log|X'V^{-1}X|`` for
REML with ``n - p``); the blocked absorption must agree to rounding.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from pipeline import fit_growth
from pipeline.errors import FormulaError
from pipeline.model.design import build_design
from pipeline.model.fit import design_cross_products, design_stats, deviance_function
from pipeline.model.nested import NestedDeviance
from pipeline.model.stats import compress, cross_products, merge
from pipeline.simulate import ThreeLevelTruth, simulate_three_level


def _four_level(seed: int = 3) -> pl.DataFrame:
    """Pupils in classrooms in schools, 3-4 waves with gaps."""
    rng = np.random.default_rng(seed)
    rows = []
    for school in range(5):
        bs = rng.normal(0, 1.5)
        for room in range(3):
            br = rng.normal(0, 1.0)
            for pupil in range(4):
                b0, b1 = rng.normal(0, 2.0), rng.normal(0, 0.5)
                waves = [t for t in range(4) if rng.random() > 0.2] or [0]
                for t in waves:
                    y = 10 + 2 * t + bs + br + b0 + b1 * t + rng.normal(0, 1)
                    rows.append((school, room, pupil, float(t), school * 0.1, y))
    return pl.DataFrame(rows, schema=["school", "room", "pupil", "time", "sx", "y"], orient="row")


def _brute_force(design, theta: np.ndarray, reml: bool) -> float:
    """The criterion from the full n x n marginal covariance (small data only)."""
    X, y = design.X, design.y
    n, p = X.shape
    blocks = []
    lam_big = np.zeros((len(design.random_names),) * 2)
    for (i, j), t in zip(design.theta_index, theta, strict=True):
        lam_big[i, j] = t
    for g in design.grouping:
        Zl = design.Z[:, g.offset : g.offset + g.q]
        lam = lam_big[g.offset : g.offset + g.q, g.offset : g.offset + g.q]
        for unit in range(g.m):
            rows = g.codes == unit
            block = np.zeros((n, g.q))
            block[rows] = Zl[rows]
            blocks.append(block @ lam)
    ZL = np.hstack(blocks)
    V = ZL @ ZL.T + np.eye(n)
    Vinv = np.linalg.inv(V)
    xtvx = X.T @ Vinv @ X
    beta = np.linalg.solve(xtvx, X.T @ Vinv @ y)
    r = y - X @ beta
    pwrss = float(r @ Vinv @ r)
    nu = n - p if reml else n
    dev = np.linalg.slogdet(V)[1] + nu * (1 + math.log(2 * math.pi * pwrss / nu))
    if reml:
        dev += np.linalg.slogdet(xtvx)[1]
    return float(dev)


FORMULAS = [
    "y ~ time * sx + (time | school) + (time | school:room:pupil)",
    "y ~ time + (1 | school) + (1 | school:room) + (time | school:room:pupil)",
    "y ~ time + (time || school/room) + (1 | school:room:pupil)",
]


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("reml", [True, False])
def test_blocked_absorption_equals_the_full_marginal_likelihood(formula, reml):
    df = _four_level()
    design = build_design(df, formula)
    assert design.nested
    stats = design_stats(design)
    dev = deviance_function(design, stats, reml=reml)
    assert isinstance(dev, NestedDeviance)
    rng = np.random.default_rng(1)
    for _ in range(3):
        theta = np.where(design.theta_lower == 0, rng.uniform(0.2, 1.5), rng.normal(0, 0.5))
        theta = np.asarray(theta, dtype=float)
        assert dev(theta) == pytest.approx(_brute_force(design, theta, reml), rel=1e-10)


@pytest.mark.parametrize("formula", FORMULAS)
def test_reverse_gradient_agrees_with_complex_step_and_differences(formula):
    df = _four_level()
    design = build_design(df, formula)
    dev = deviance_function(design, design_stats(design), reml=True)
    theta = np.linspace(0.4, 1.1, len(design.theta_index))
    value, grad = dev.value_and_gradient(theta)
    assert value == pytest.approx(dev(theta), rel=1e-13)
    cvalue, cgrad = dev.complex_step_gradient(theta)
    assert cvalue == pytest.approx(value, rel=1e-13)
    np.testing.assert_allclose(grad, cgrad, rtol=1e-9, atol=1e-9)
    h = 1e-6
    numeric = np.array(
        [(dev(theta + h * e) - dev(theta - h * e)) / (2 * h) for e in np.eye(theta.size)]
    )
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_two_halves_of_the_persons_merge_into_the_whole():
    df = simulate_three_level(schools=20, pupils=10, seed=5)
    design = build_design(df, "y ~ time * (g + school_x) + (time | school) + (time | school:pid)")
    whole = design_cross_products(design)
    inner = design.grouping[0]
    anc = np.column_stack([g.codes for g in design.grouping[1:]])
    # split by person (a hash of the code), and also a person split across the halves
    half = (inner.codes * 2654435761 % 7) < 3
    half[np.flatnonzero(inner.codes == 17)[:2]] = True
    half[np.flatnonzero(inner.codes == 17)[2:]] = False
    parts = [
        cross_products(
            design.X[rows],
            design.union[rows],
            design.y[rows],
            inner.codes[rows],
            ancestors=anc[rows],
        )
        for rows in (half, ~half)
    ]
    merged = merge(*parts)
    np.testing.assert_array_equal(merged.units, whole.units)
    np.testing.assert_allclose(merged.omega, whole.omega, rtol=1e-12)
    np.testing.assert_allclose(merged.W, whole.W, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(merged.utu, whole.utu, rtol=1e-12)
    np.testing.assert_array_equal(merged.ancestors, whole.ancestors)
    fit_whole = fit_growth(df, design.formula.text)
    dev = deviance_function(design, design_stats(design, merged), reml=True)
    assert dev(fit_whole.theta) == pytest.approx(fit_whole.deviance, rel=1e-12)


def test_two_level_merge_then_compress_equals_the_whole():
    df = simulate_three_level(schools=4, pupils=30, seed=2)
    design = build_design(df, "y ~ time + (time | school:pid)")
    assert not design.nested
    whole = compress(design_cross_products(design))
    codes = design.group_codes
    first = codes < 50
    parts = [
        cross_products(design.X[r], design.Z[r], design.y[r], codes[r]) for r in (first, ~first)
    ]
    merged = compress(merge(*parts))
    np.testing.assert_allclose(merged.S, whole.S, rtol=1e-12)
    np.testing.assert_array_equal(merged.counts, whole.counts)


def test_three_syntaxes_give_the_same_fit_and_lme4_group_names():
    df = simulate_three_level(schools=15, pupils=12, seed=8)
    df = df.with_columns(child=pl.col("school") * 1000 + pl.col("pid"))
    a = fit_growth(df, "y ~ time * g + (time | school) + (time | school:pid)")
    b = fit_growth(df, "y ~ time * g + (time | school/pid)")
    c = fit_growth(df, "y ~ time * g + (time | child) + (time | school)")
    assert a.loglik == pytest.approx(b.loglik, abs=1e-7)
    assert b.variance_components["group"][0] == "pid:school"  # lme4's name for school/pid
    assert a.loglik == pytest.approx(c.loglik, abs=1e-7)
    np.testing.assert_allclose(a.beta, c.beta, rtol=1e-6)
    assert a.variance_components["group"].to_list() == ["school:pid"] * 3 + ["school"] * 3 + [
        "Residual"
    ]
    assert c.variance_components["group"].unique(maintain_order=True).to_list() == [
        "child",
        "school",
        "Residual",
    ]
    re = a.random_effects
    assert re.columns[:2] == ["group", "unit"]
    assert re.filter(pl.col("group") == "school").height == 15
    assert re.filter(pl.col("group") == "school:pid").height == 180
    assert re.filter(pl.col("group") == "school:pid")["unit"][0] == "0:0"
    by = a.random_effects_of("school")
    assert by.columns == ["school", "(Intercept)", "time", "condvar_(Intercept)", "condvar_time"]
    # fitted values use every level: residuals are smaller than the marginal ones
    assert np.var(a.residuals()) < np.var(a.residuals("marginal"))


def test_crossed_factors_get_an_error_that_says_so():
    df = simulate_three_level(schools=6, pupils=8, seed=1)
    # pid is numbered within each school: as a factor of its own it is crossed with school
    with pytest.raises(FormulaError, match=r"'pid' and 'school' are crossed, not nested") as err:
        fit_growth(df, "y ~ time + (1 | pid) + (1 | school)")
    assert "crossed random effects are not supported yet" in str(err.value)
    assert "(school/pid)" in str(err.value)


def test_the_same_units_twice_is_an_error():
    df = simulate_three_level(schools=6, pupils=8, seed=1).with_columns(
        child=pl.col("school") * 100 + pl.col("pid")
    )
    with pytest.raises(FormulaError, match="have the same units"):
        fit_growth(df, "y ~ time + (1 | child) + (1 | school:pid)")


def test_statsmodels_engine_refuses_nested_factors_clearly():
    df = simulate_three_level(schools=6, pupils=8, seed=1)
    with pytest.raises(Exception, match="statsmodels engine fits one grouping factor"):
        fit_growth(df, "y ~ time + (1 | school/pid)", engine="statsmodels")


def test_ml_refit_of_a_nested_model_reuses_the_statistics():
    df = simulate_three_level(schools=12, pupils=10, seed=4)
    reml = fit_growth(df, "y ~ time * school_x + (time | school/pid)")
    ml = reml.refit(reml=False)
    direct = fit_growth(df, "y ~ time * school_x + (time | school/pid)", reml=False)
    assert not ml.reml
    assert ml.loglik == pytest.approx(direct.loglik, abs=1e-8)
    assert ml.stats is reml.stats


def _coverage_run(seed: int):
    truth = ThreeLevelTruth()
    df = simulate_three_level(schools=40, pupils=15, waves=5, seed=seed, truth=truth)
    fit = fit_growth(df, "y ~ time * (g + school_x) + (time | school) + (time | school:pid)")
    fe = fit.fixed_effects
    inside = (fe["conf_low"].to_numpy() <= truth.beta) & (truth.beta <= fe["conf_high"].to_numpy())
    vc = fit.variance_components
    return fit.beta - np.array(truth.beta), inside, vc["variance"].to_numpy()


def test_three_level_simulation_recovers_the_truth_quick():
    errors, inside, variances = zip(*(_coverage_run(s) for s in range(4)), strict=True)
    truth = ThreeLevelTruth()
    mean_var = np.mean(variances, axis=0)
    # person intercept variance 25, slope 1; school intercept 4; residual 9
    assert mean_var[0] == pytest.approx(truth.person[0] ** 2, rel=0.15)
    assert mean_var[1] == pytest.approx(truth.person[1] ** 2, rel=0.25)
    assert mean_var[-1] == pytest.approx(truth.sigma**2, rel=0.05)
    assert np.mean(inside) > 0.8


@pytest.mark.slow
def test_three_level_simulation_bias_and_coverage():
    """200 replicates: bias within 4 Monte Carlo SEs, 95% coverage in the binomial range."""
    reps = 200
    errors, inside, variances = zip(*(_coverage_run(1000 + s) for s in range(reps)), strict=True)
    errors = np.array(errors)
    mc_se = errors.std(axis=0, ddof=1) / math.sqrt(reps)
    assert np.all(np.abs(errors.mean(axis=0)) < 4 * mc_se + 1e-12)
    coverage = np.array(inside).mean(axis=0)
    assert np.all((coverage >= 0.90) & (coverage <= 0.99)), coverage
    truth = ThreeLevelTruth()
    mean_var = np.mean(variances, axis=0)
    expected = [25.0, 1.0, -1.5, 4.0, 0.25, 0.2, 9.0]
    np.testing.assert_allclose(mean_var, expected, rtol=0.1, atol=0.05)
    assert truth.school_covariance[0, 1] == pytest.approx(0.2)


def test_varpar_gradient_agrees_with_differences():
    df = _four_level()
    design = build_design(df, FORMULAS[0])
    for reml in (True, False):
        dev = deviance_function(design, design_stats(design), reml=reml)
        varpar = np.append(np.linspace(0.4, 1.1, len(design.theta_index)), 1.3)
        h = 1e-6
        numeric = np.array(
            [
                (dev.varpar_deviance(varpar + h * e) - dev.varpar_deviance(varpar - h * e))
                / (2 * h)
                for e in np.eye(varpar.size)
            ]
        )
        np.testing.assert_allclose(dev.varpar_gradient(varpar), numeric, rtol=1e-5, atol=1e-6)


def test_specification_without_rows_codes_chunks_alike():
    """lme4's lFormula stage: a specification from one pass (levels, units, nesting), then
    model matrices per chunk of rows; the chunks' cross-products merge into the whole's."""
    from pipeline.model.design import model_matrices, specify

    df = simulate_three_level(schools=12, pupils=9, seed=21).with_columns(
        pl.col("school").cast(pl.String).alias("school")
    )
    formula = "y ~ time * (g + school_x) + (time | school/pid)"
    spec = specify(df.lazy(), formula)
    assert not hasattr(spec, "frame")
    assert [f.name for f in spec.factors] == ["pid:school", "school"]
    assert spec.levels["g"] == ("A", "B")
    chunks = [df.filter(pl.col("pid") < 4), df.filter(pl.col("pid") >= 4)]
    parts = []
    for chunk in chunks:
        m = model_matrices(spec, chunk)
        parts.append(cross_products(m.X, m.U, m.y, m.codes[0], ancestors=m.codes[1][:, None]))
    merged = merge(*parts)
    whole = design_cross_products(build_design(df, formula))
    np.testing.assert_array_equal(merged.units, whole.units)
    np.testing.assert_allclose(merged.W, whole.W, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(merged.omega, whole.omega, rtol=1e-12)
    # a chunk with a unit the specification does not know is refused, naming it
    stranger = df.head(2).with_columns(pl.lit("zz").alias("school"))
    with pytest.raises(Exception, match=r"pid:school '0:zz' in this chunk is not among the units"):
        model_matrices(spec, stranger)


def test_batched_gradients_equal_one_at_a_time():
    """The optimizer's Hessian and the Satterthwaite step evaluate many points in one batched
    solve and reverse pass; each row must equal the point evaluated on its own."""
    design = build_design(_four_level(), FORMULAS[0])
    for reml in (True, False):
        dev = deviance_function(design, design_stats(design), reml=reml)
        k = len(design.theta_index)
        thetas = np.array([np.linspace(0.3, 1.2, k) * (1 + 0.2 * j) for j in range(3)])
        for row, theta in zip(dev.gradient_batch(thetas), thetas, strict=True):
            np.testing.assert_allclose(row, dev.value_and_gradient(theta)[1], rtol=1e-9, atol=1e-9)
        varpars = np.column_stack([thetas, [1.1, 1.3, 0.9]])
        for row, varpar in zip(dev.varpar_gradient_batch(varpars), varpars, strict=True):
            np.testing.assert_allclose(row, dev.varpar_gradient(varpar), rtol=1e-9, atol=1e-9)
        for row, varpar in zip(dev.covbeta_batch(varpars), varpars, strict=True):
            np.testing.assert_allclose(row, dev.covbeta(varpar), rtol=1e-9)


def test_integer_keys_are_coded_alike_in_any_row_order():
    """Units of integer key columns are found by one packed key (by runs when the rows come
    sorted, by binary search when not); a unit the specification lacks is named."""
    from pipeline.model.design import model_matrices, specify

    df = simulate_three_level(schools=7, pupils=5, seed=4)
    formula = "y ~ time + (time | school/pid)"
    spec = specify(df, formula)
    sorted_codes = model_matrices(spec, df).codes
    order = np.random.default_rng(1).permutation(df.height)
    shuffled = model_matrices(spec, df[order]).codes
    for a, b in zip(sorted_codes, shuffled, strict=True):
        np.testing.assert_array_equal(a[order], b)
    units = spec.factors[0].units
    for code, row in zip(sorted_codes[0], df.select("pid", "school").rows(), strict=True):
        assert units.row(int(code)) == row
    stranger = df.head(3).with_columns(pl.lit(99, dtype=pl.Int64).alias("pid"))
    with pytest.raises(Exception, match=r"pid:school '99:0' in this chunk is not among the units"):
        model_matrices(spec, stranger)
