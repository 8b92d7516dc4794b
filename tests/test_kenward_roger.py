"""Kenward-Roger: pbkrtest/lmerTest references (two and three levels), a dense brute-force check of the per-pattern
sums, exact F tests it must reproduce, bad input, and a type-I error simulation (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.stats

from pipeline import fit_growth
from pipeline.errors import ModelError
from pipeline.model import kenward_roger as kr
from pipeline.model.kenward_roger import kenward_roger, kenward_roger_terms, vcov_kenward_roger

REF = Path(__file__).parent / "reference"
REFERENCE = json.loads((REF / "kr_reference.json").read_text())
MODELS = [k for k in REFERENCE if k != "versions"]
OVERRIDES = {"id": pl.String, "Subject": pl.String, "trt": pl.String}


def _data(name: str) -> pl.DataFrame:
    if name == "pixel":  # integer dog ids, as R reads them
        return pl.read_csv(REF / "pixel.csv")
    return pl.read_csv(REF / f"{name}.csv", schema_overrides=OVERRIDES)


def _unit(p: int, j: int) -> np.ndarray:
    L = np.zeros(p)
    L[j] = 1.0
    return L


# ---------------------------------------------------------------- pbkrtest / lmerTest
# Tolerances: our optimum agrees with lme4's to ~1e-5 relative in the variance
# parameters (sleepstudy_growth is the loosest), and everything below is a smooth
# function of them; rtol 1e-4 covers that, and nothing else differs.
@pytest.mark.parametrize("name", MODELS)
def test_matches_pbkrtest_and_lmertest(name):
    ref = REFERENCE[name]
    fit = fit_growth(_data(ref["data"]), ref["formula"])
    assert list(fit.fixed_terms) == ref["terms"]
    terms = kenward_roger_terms(fit)
    np.testing.assert_allclose(terms.phi, fit.vcov, rtol=1e-10)
    adj = np.array(ref["vcov_adjusted"])
    np.testing.assert_allclose(vcov_kenward_roger(fit), adj, rtol=1e-4, atol=1e-4 * abs(adj).max())
    for j in range(len(fit.beta)):
        out = kenward_roger(fit, _unit(len(fit.beta), j), terms=terms)
        assert out["df"] == pytest.approx(ref["df_kr"][j], rel=1e-4)
        assert out["std_error"] == pytest.approx(ref["se_kr"][j], rel=1e-4)
        assert out["statistic"] == pytest.approx(ref["t_kr"][j], rel=1e-4)
        assert out["p_value"] == pytest.approx(ref["p_kr"][j], rel=1e-3)
    multi = ref["multi"]
    out = kenward_roger(fit, np.array(multi["L"]), terms=terms)
    assert out["ndf"] == len(multi["L"])
    assert out["ddf"] == pytest.approx(multi["ddf"], rel=1e-4)
    assert out["scale"] == pytest.approx(multi["scale"], rel=1e-6)
    assert out["F"] == pytest.approx(multi["F"], rel=1e-4)
    assert out["F_unscaled"] == pytest.approx(multi["F_unscaled"], rel=1e-4)
    assert out["p_value"] == pytest.approx(multi["p"], rel=1e-3)


@pytest.mark.parametrize(
    ("name", "formula"),
    [
        ("early_intercept", "cog ~ age1 * trt + cs(age | id)"),
        ("sleepstudy_intercept", "Reaction ~ Days + cs(Days | Subject)"),
    ],
)
def test_compound_symmetry_structure_matches_pbkrtest_random_intercept(name, formula):
    """cs(wave | id) with a positive correlation is the marginal model of (1 | id), and its
    (variance, covariance) are a linear reparametrisation of (tau^2, sigma^2): KR is the same."""
    ref = REFERENCE[name]
    fit = fit_growth(_data(ref["data"]), formula)
    terms = kenward_roger_terms(fit)
    assert terms.names == ("variance", "covariance")
    adj = np.array(ref["vcov_adjusted"])
    np.testing.assert_allclose(terms.phi_adjusted, adj, rtol=1e-6, atol=1e-6 * abs(adj).max())
    for j in range(len(fit.beta)):
        out = kenward_roger(fit, _unit(len(fit.beta), j), terms=terms)
        assert out["df"] == pytest.approx(ref["df_kr"][j], rel=1e-6)
        assert out["std_error"] == pytest.approx(ref["se_kr"][j], rel=1e-6)
    out = kenward_roger(fit, np.array(ref["multi"]["L"]), terms=terms)
    assert out["ddf"] == pytest.approx(ref["multi"]["ddf"], rel=1e-6)
    assert out["F"] == pytest.approx(ref["multi"]["F"], rel=1e-6)


def test_per_person_path_equals_per_pattern_path(monkeypatch):
    ref = REFERENCE["early_trt"]
    fit = fit_growth(_data("early"), ref["formula"])
    by_pattern = kenward_roger_terms(fit)
    monkeypatch.setattr(kr, "MAX_PATTERNS", 0)
    by_person = kenward_roger_terms(fit)
    np.testing.assert_allclose(by_person.phi_adjusted, by_pattern.phi_adjusted, rtol=1e-10)
    np.testing.assert_allclose(by_person.W, by_pattern.W, rtol=1e-8)
    monkeypatch.setattr(kr, "BLOCK_ELEMENTS", 1)  # one person per chunk
    chunked = kenward_roger_terms(fit)
    np.testing.assert_allclose(chunked.phi_adjusted, by_pattern.phi_adjusted, rtol=1e-10)


def test_nested_blocks_in_chunks_equal_one_chunk(monkeypatch):
    fit = fit_growth(_data("pixel"), REFERENCE["pixel_nested"]["formula"])
    whole = kenward_roger_terms(fit)
    monkeypatch.setattr(kr, "BLOCK_ELEMENTS", 1)  # one dog per chunk
    np.testing.assert_allclose(
        kenward_roger_terms(fit).phi_adjusted, whole.phi_adjusted, rtol=1e-10
    )


# ------------------------------------------------------------ dense brute force
def _simulated(seed: int, persons: int = 14, T: int = 4, times: bool = False) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(persons):
        b = rng.normal(scale=1.0)
        e = 0.0
        for t in range(T):
            e = 0.6 * e + rng.normal(scale=0.8)
            if t > 0 and rng.random() < 0.25:
                continue
            time = t + (rng.uniform(-0.3, 0.3) if times else 0.0)
            trt = "B" if i % 2 else "A"
            rows.append((f"p{i:02d}", t, time, trt, 1.0 + 0.5 * time + b + e))
    return pl.DataFrame(rows, schema=["id", "wave", "time", "trt", "y"], orient="row")


def _dense_kr(fit, values: np.ndarray, sigma_of) -> np.ndarray:
    """Phi_A straight from the definitions with dense n x n matrices and numerical
    derivatives of Sigma(values) (central differences, second differences for Sigma_kl)."""
    X = fit.design.X
    r = values.size

    S0 = sigma_of(values)
    Si = np.linalg.inv(S0)
    phi = np.linalg.inv(X.T @ Si @ X)
    h = 1e-4 * np.maximum(1.0, np.abs(values))
    d1, d2 = [], np.empty((r, r) + S0.shape)
    for k in range(r):
        e = np.zeros(r)
        e[k] = h[k]
        d1.append((sigma_of(values + e) - sigma_of(values - e)) / (2 * h[k]))
    for k in range(r):
        for m in range(r):
            ek, em = np.zeros(r), np.zeros(r)
            ek[k], em[m] = h[k], h[m]
            d2[k, m] = (
                sigma_of(values + ek + em)
                - sigma_of(values + ek - em)
                - sigma_of(values - ek + em)
                + sigma_of(values - ek - em)
            ) / (4 * h[k] * h[m])
    P = [-X.T @ Si @ d @ Si @ X for d in d1]
    Q = [[X.T @ Si @ a @ Si @ b @ Si @ X for b in d1] for a in d1]
    R = [[X.T @ Si @ d2[k, m] @ Si @ X for m in range(r)] for k in range(r)]
    proj = Si - Si @ X @ phi @ X.T @ Si
    info = np.array([[np.trace(proj @ a @ proj @ b) for b in d1] for a in d1])
    W = 2 * np.linalg.inv(info)
    U = sum(
        W[k, m] * (Q[k][m] - P[k] @ phi @ P[m] - R[k][m] / 4) for k in range(r) for m in range(r)
    )
    return phi + 2 * phi @ U @ phi


def _blocks(fit, cov_of_person):
    codes = fit.design.group_codes
    order = [np.flatnonzero(codes == i) for i in range(fit.ngroups)]

    def sigma_of(values):
        n = fit.design.nobs
        S = np.zeros((n, n))
        for rows in order:
            S[np.ix_(rows, rows)] = cov_of_person(values, rows)
        return S

    return sigma_of


def test_nonlinear_structure_equals_dense_definition():
    """(1 | id) + ar1(wave | id) with gaps: the per-pattern sums with second derivatives
    equal Phi_A computed densely from Sigma(tau^2, sigma^2, rho)."""
    fit = fit_growth(_simulated(3), "y ~ wave * trt + (1 | id) + ar1(wave | id)")
    terms = kenward_roger_terms(fit)
    assert terms.names[:2] == ("var((Intercept) | id)", "sigma^2")
    spec = fit.design.residual
    Z = fit.design.Z

    def cov(values, rows):
        tau2, s2, rho = values
        occ = spec.position[rows]
        return tau2 * np.outer(Z[rows, 0], Z[rows, 0]) + s2 * spec.structure.matrix([rho], occ)

    dense = _dense_kr(fit, terms.values, _blocks(fit, cov))
    np.testing.assert_allclose(terms.phi_adjusted, dense, rtol=1e-5)
    assert np.abs(terms.R).max() > 0  # the second derivatives did enter


def test_continuous_time_structure_per_person_equals_dense_definition():
    """sp_exp(time | id) with a random slope: every person is their own pattern."""
    fit = fit_growth(_simulated(5, times=True), "y ~ time + trt + (1 | id) + sp_exp(time | id)")
    assert fit.stats.Q is None  # the per-person path
    terms = kenward_roger_terms(fit)
    spec = fit.design.residual
    Z = fit.design.Z

    def cov(values, rows):
        tau2, s2, rho = values
        return tau2 * np.outer(Z[rows, 0], Z[rows, 0]) + s2 * spec.structure.matrix(
            [rho], spec.times[rows]
        )

    dense = _dense_kr(fit, terms.values, _blocks(fit, cov))
    np.testing.assert_allclose(terms.phi_adjusted, dense, rtol=1e-5)


def test_unstructured_equals_dense_definition():
    fit = fit_growth(_simulated(7), "y ~ wave * trt + us(wave | id)")
    terms = kenward_roger_terms(fit)
    T = fit.stats.T
    assert len(terms.names) == T * (T + 1) // 2
    assert np.all(terms.R == 0)  # linear in the covariances
    spec = fit.design.residual
    iu = np.triu_indices(T)

    def cov(values, rows):
        full = np.zeros((T, T))
        full[iu] = values
        full = full + np.triu(full, 1).T
        occ = spec.position[rows]
        return full[np.ix_(occ, occ)]

    dense = _dense_kr(fit, terms.values, _blocks(fit, cov))
    np.testing.assert_allclose(terms.phi_adjusted, dense, rtol=1e-6)


# ------------------------------------------------------------------- exact cases
def _balanced(seed: int, persons: int, T: int, cov: np.ndarray) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.multivariate_normal(np.zeros(T), cov, size=persons)
    return pl.DataFrame(
        {
            "id": np.repeat([f"p{i:02d}" for i in range(persons)], T),
            "wave": np.tile([f"w{t}" for t in range(T)], persons),
            "trt": np.repeat(["A" if i < persons // 2 else "B" for i in range(persons)], T),
            "y": y.reshape(-1) + np.tile(np.arange(T), persons),
        }
    )


def _trt_at_visits(fit, T: int) -> np.ndarray:
    """Rows of L: the treatment difference at each visit (treatment coding)."""
    names = fit.fixed_terms
    L = np.zeros((T, len(names)))
    for t in range(T):
        L[t, names.index("trtB")] = 1.0
        if t:
            L[t, names.index(f"wavew{t}:trtB")] = 1.0
    return L


def test_unstructured_balanced_complete_reproduces_t_and_hotelling():
    """MMRM with us and complete balanced data: the treatment difference at a visit is the
    two-sample t test (df N - 2), and the joint test of all visits is Hotelling's T^2,
    exactly F(T, N - T - 1); KR must give these df, and scale x F must be Hotelling's F."""
    N, T = 14, 4
    cov = np.array([[4, 2, 1, 1], [2, 5, 2, 1], [1, 2, 6, 3], [1, 1, 3, 7]], dtype=float)
    df = _balanced(11, N, T, cov)
    fit = fit_growth(df, "y ~ wave * trt + us(wave | id)")
    L = _trt_at_visits(fit, T)
    Y = df["y"].to_numpy().reshape(N, T)
    g = df["trt"].to_numpy()[::T] == "B"
    d = Y[g].mean(axis=0) - Y[~g].mean(axis=0)
    S = ((np.cov(Y[g].T) * (g.sum() - 1)) + np.cov(Y[~g].T) * ((~g).sum() - 1)) / (N - 2)
    c = 1 / g.sum() + 1 / (~g).sum()
    for t in range(T):
        out = kenward_roger(fit, L[t])
        assert out["df"] == pytest.approx(N - 2, rel=1e-6)
        assert out["statistic"] == pytest.approx(d[t] / np.sqrt(S[t, t] * c), rel=1e-5)
    t2 = d @ np.linalg.solve(S * c, d)
    hotelling_F = (N - 2 - T + 1) / ((N - 2) * T) * t2
    out = kenward_roger(fit, L)
    assert out["ddf"] == pytest.approx(N - T - 1, rel=1e-6)
    assert out["scale"] == pytest.approx((N - T - 1) / (N - 2), rel=1e-6)
    assert out["F"] == pytest.approx(hotelling_F, rel=1e-5)
    assert out["p_value"] == pytest.approx(scipy.stats.f.sf(hotelling_F, T, N - T - 1), rel=1e-4)


def test_compound_symmetry_balanced_reproduces_split_plot_anova():
    """cs with balanced complete data: the wave x treatment test is the split-plot F test
    (df (T-1), (N-2)(T-1); equal to the F of OLS with persons as fixed effects), and the
    treatment difference averaged over waves is the between-person t test (df N - 2)."""
    N, T = 12, 4
    cov = 2.0 * np.eye(T) + 1.5
    df = _balanced(4, N, T, cov)
    fit = fit_growth(df, "y ~ wave * trt + cs(wave | id)")
    names = fit.fixed_terms
    L = np.zeros((T - 1, len(names)))
    for t in range(1, T):
        L[t - 1, names.index(f"wavew{t}:trtB")] = 1.0
    out = kenward_roger(fit, L)
    assert out["ddf"] == pytest.approx((N - 2) * (T - 1), rel=1e-6)
    assert out["scale"] == pytest.approx(1.0, rel=1e-6)
    # the classical within-person F: OLS with a dummy per person
    ids = df["id"].to_numpy()
    P = (ids[:, None] == np.unique(ids)[None, :]).astype(float)
    wave = df["wave"].to_numpy()
    Wv = np.column_stack([(wave == f"w{t}").astype(float) for t in range(1, T)])
    trt = (df["trt"].to_numpy() == "B").astype(float)
    y = df["y"].to_numpy()

    def rss(M):
        beta = np.linalg.lstsq(M, y, rcond=None)[0]
        return float(((y - M @ beta) ** 2).sum())

    small = np.column_stack([P, Wv])
    big = np.column_stack([small, Wv * trt[:, None]])
    dfe = (N - 2) * (T - 1)
    F = ((rss(small) - rss(big)) / (T - 1)) / (rss(big) / dfe)
    assert out["F"] == pytest.approx(F, rel=1e-5)
    between = np.zeros(len(names))
    between[names.index("trtB")] = 1.0
    for t in range(1, T):
        between[names.index(f"wavew{t}:trtB")] = 1.0 / T
    assert kenward_roger(fit, between)["df"] == pytest.approx(N - 2, rel=1e-6)


# -------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def early_fit():
    return fit_growth(_data("early"), "cog ~ age1 * trt + (age1 | id)")


def test_contrast_of_wrong_length_is_named(early_fit):
    with pytest.raises(
        ModelError,
        match=r"^Kenward-Roger: the contrast has 3 columns; the model has 4 fixed effects$",
    ):
        kenward_roger(early_fit, [1.0, 0.0, 0.0])


def test_dependent_rows_are_named(early_fit):
    with pytest.raises(
        ModelError, match=r"the 2 rows of the contrast are linearly dependent \(rank 1\)"
    ):
        kenward_roger(early_fit, [[0, 0, 1, 0], [0, 0, 2, 0]])


def test_missing_value_in_contrast(early_fit):
    with pytest.raises(ModelError, match="the contrast has a missing or infinite value"):
        kenward_roger(early_fit, [0, np.nan, 1, 0])


def test_level_out_of_range(early_fit):
    with pytest.raises(ModelError, match=r"level must be between 0 and 1, not 95"):
        kenward_roger(early_fit, [0, 0, 1, 0], level=95)


def test_ml_fit_is_refused(early_fit):
    ml = early_fit.refit(reml=False)
    with pytest.raises(
        ModelError,
        match=r"needs a REML fit; 'cog ~ age1 \* trt \+ \(age1 \| id\)' was fitted by maximum likelihood",
    ):
        kenward_roger(ml, [0, 0, 1, 0])


def test_interval_and_p_use_the_kr_df(early_fit):
    out = kenward_roger(early_fit, [0, 0, 1, 0], level=0.9)
    crit = scipy.stats.t(out["df"]).ppf(0.95)
    assert out["conf_high"] - out["estimate"] == pytest.approx(crit * out["std_error"], rel=1e-12)
    assert out["p_value"] == pytest.approx(
        2 * scipy.stats.t(out["df"]).sf(abs(out["statistic"])), rel=1e-12
    )


# -------------------------------------------------------------- type-I error
def _mmrm_null(rng, N: int, T: int, miss: float) -> pl.DataFrame:
    A = np.array(
        [[1.0, 0.0, 0.0, 0.0], [0.7, 0.8, 0.0, 0.0], [0.5, 0.6, 0.9, 0.0], [0.4, 0.5, 0.6, 1.1]]
    )
    y = rng.standard_normal((N, T)) @ (2 * A[:T, :T]).T
    rows = []
    for i in range(N):
        for t in range(T):
            if t > 0 and rng.random() < miss:
                continue
            rows.append((f"p{i:02d}", f"w{t}", "A" if i % 2 else "B", float(y[i, t] + t)))
    return pl.DataFrame(rows, schema=["id", "wave", "trt", "y"], orient="row")


def type_one_error(reps: int, N: int = 12, T: int = 3, miss: float = 0.25, seed: int = 2024):
    """Rejection rates at 5% of the treatment difference at the last visit (true 0) in an
    MMRM with us, by the Wald z test, Satterthwaite's t and Kenward-Roger's t."""
    rng = np.random.default_rng(seed)
    hits = {"wald": 0, "satterthwaite": 0, "kenward_roger": 0}
    done = 0
    for _ in range(reps):
        df = _mmrm_null(rng, N, T, miss)
        try:
            fit = fit_growth(df, "y ~ wave * trt + us(wave | id)")
        except (ModelError, np.linalg.LinAlgError):  # the fit fails on a few small samples
            continue
        L = _trt_at_visits(fit, T)[-1]
        est = float(L @ fit.beta)
        z = est / np.sqrt(L @ fit.vcov @ L)
        hits["wald"] += 2 * scipy.stats.norm.sf(abs(z)) < 0.05
        hits["satterthwaite"] += fit.contrast(L)["p_value"] < 0.05
        hits["kenward_roger"] += kenward_roger(fit, L)["p_value"] < 0.05
        done += 1
    return {k: v / done for k, v in hits.items()}, done


@pytest.mark.slow
def test_kr_type_one_error_at_small_n():
    """20 persons, 3 visits (6 covariance parameters), a quarter of the later visits
    missing, 2000 samples: the Wald z test rejects 7.1%, beyond 5% by more than 3 Monte
    Carlo SE (0.49%); KR's t test rejects 4.9%, within 3 SE. (At 12 persons: Wald 10.9%,
    Satterthwaite 6.4%, KR 6.3%: KR is itself a little liberal there.)"""
    rates, done = type_one_error(2000, N=20, seed=11)
    se = np.sqrt(0.05 * 0.95 / done)
    assert abs(rates["kenward_roger"] - 0.05) < 3 * se, rates
    assert rates["wald"] > 0.05 + 3 * se, rates


def test_contrast_free_of_variance_parameters_has_infinite_df(early_fit):
    """A1 = A2 = 0 (Phi does not move with sigma): KR's df are infinite, the test is normal."""
    import dataclasses

    terms = kenward_roger_terms(early_fit)
    known = dataclasses.replace(terms, P=np.zeros_like(terms.P))
    out = kenward_roger(early_fit, [0, 0, 1, 0], terms=known)
    assert out["df"] == np.inf
    assert out["p_value"] == pytest.approx(2 * scipy.stats.norm.sf(abs(out["statistic"])))
    multi = kenward_roger(early_fit, [[0, 0, 1, 0], [0, 0, 0, 1]], terms=known)
    assert multi["ddf"] == np.inf and multi["scale"] == 1.0
    assert multi["p_value"] == pytest.approx(scipy.stats.chi2.sf(2 * multi["F"], 2))


@pytest.mark.parametrize(
    ("name", "linear"),
    [
        ("diag", True),
        ("toep", True),
        ("cs", True),
        ("ar1h", True),
        ("csh", True),
        ("toeph", True),
        ("us", False),
        ("cs", False),
    ],
)
def test_every_structure_equals_dense_definition(name, linear):
    """Linear structures in their covariances (R_kl = 0), the others (and any structure
    with ``linear=False``) in (sigma^2, rho)."""
    fit = fit_growth(_simulated(9, persons=16), f"y ~ wave + trt + {name}(wave | id)")
    terms = kenward_roger_terms(fit, linear=linear)
    spec = fit.design.residual
    T = fit.stats.T
    if linear and name in kr.LINEAR_STRUCTURES:
        assert np.all(terms.R == 0)
        labels = kr._linear_labels(name, T)

        def cov(values, rows):
            full = np.where(labels >= 0, np.append(values, 0.0)[labels], 0.0)
            occ = spec.position[rows]
            return full[np.ix_(occ, occ)]
    else:
        assert terms.names[0] == "sigma^2"

        def cov(values, rows):
            return values[0] * spec.structure.matrix(values[1:], spec.position[rows])

    # the parameters reproduce the fit's implied covariance (a person seen at every wave)
    _, V = fit.marginal
    codes = fit.design.group_codes
    complete = [np.flatnonzero(codes == i) for i in range(fit.ngroups)]
    rows = next(r for r in complete if r.size == T)
    rows = rows[np.argsort(spec.position[rows])]
    np.testing.assert_allclose(cov(terms.values, rows), V, rtol=1e-8)
    dense = _dense_kr(fit, terms.values, _blocks(fit, cov))
    np.testing.assert_allclose(terms.phi_adjusted, dense, rtol=1e-5)


def test_the_parametrisation_matters_only_through_second_order_terms():
    """KR is not invariant to a nonlinear reparametrisation, but the two choices agree to
    the order of the adjustment itself; Phi is the same."""
    fit = fit_growth(_simulated(9, persons=16), "y ~ wave + trt + us(wave | id)")
    a, b = kenward_roger_terms(fit), kenward_roger_terms(fit, linear=False)
    np.testing.assert_allclose(a.phi, b.phi, rtol=1e-10)
    assert not np.allclose(a.phi_adjusted, b.phi_adjusted, rtol=1e-8)
    adj_a, adj_b = a.phi_adjusted - a.phi, b.phi_adjusted - b.phi
    assert np.abs(adj_a - adj_b).max() < np.abs(adj_a).max()
