"""Level-1 error structures (pipeline/model/residual.py).

Checked: positive definiteness over random parameters, gaps (a subset of occasions
gives the submatrix), the nesting relations between structures, the natural-scale
round trip, the complex-step gradient against finite differences, mmrm's parameter
counts, every error message, and, at nlme's own estimates, nlme's marginal
covariance matrices (to ~3e-13) and nlme's ML/REML log-likelihoods (to ~3e-10,
which pins down sigma's scale, the reference occasion and the REML constant)
for every converged gls and lme fit in tests/reference/structures_reference.json
(made by make_structures_reference.R: Orthodont, Orthodont with gaps, Dialyzer,
BodyWeight and egsingle).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.model.residual import (
    AR1,
    STRUCTURES,
    AR1Het,
    CompoundSymmetry,
    CompoundSymmetryHet,
    Diagonal,
    SpatialExponential,
    Toeplitz,
    ToeplitzHet,
    Unstructured,
    make_structure,
)

REF = json.loads((Path(__file__).parent / "reference" / "structures_reference.json").read_text())
INDEXED = [n for n in STRUCTURES if n != "sp_exp"]


def _occasions(structure, t, rng, size=None):
    """All occasions (or a random subset in random order) for one person."""
    if isinstance(structure, SpatialExponential):
        times = np.cumsum(rng.uniform(0.1, 3.0, size=t))
    else:
        times = np.arange(t)
    if size is not None:
        times = rng.permutation(times)[:size]
    return times


@pytest.mark.parametrize("name", sorted(STRUCTURES))
@pytest.mark.parametrize("t", [2, 4, 7])
def test_symmetric_positive_definite_over_random_parameters(name, t):
    rng = np.random.default_rng(t * 31 + len(name))
    s = make_structure(name, t)
    for _ in range(200):
        p = rng.normal(scale=1.5, size=s.n_params)
        for size in (None, max(1, t - 2)):
            occ = _occasions(s, t, rng, size)
            m = s.matrix(p, occ)
            assert m.shape == (len(occ), len(occ))
            assert np.array_equal(m, m.T)
            assert np.linalg.eigvalsh(m).min() > 0
            if s.homogeneous:
                assert np.allclose(np.diag(m), 1.0, rtol=0, atol=1e-14)
            elif 0 in list(occ):
                # heterogeneous: relative to the variance at occasion 0
                assert m[list(occ).index(0), list(occ).index(0)] == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_a_subset_of_occasions_is_the_submatrix(name):
    # gaps respected: persons missing occasions keep the ones they have
    rng = np.random.default_rng(7)
    s = make_structure(name, 6)
    full_occ = _occasions(s, 6, rng)
    for _ in range(20):
        p = rng.normal(size=s.n_params)
        full = s.matrix(p, full_occ)
        pick = rng.permutation(6)[: rng.integers(1, 6)]
        assert np.allclose(s.matrix(p, full_occ[pick]), full[np.ix_(pick, pick)], rtol=1e-13)


def test_ar1_gap_is_phi_squared():
    s = AR1(4)
    p = s.from_natural({"Phi": 0.6})
    m = s.matrix(p, [0, 2, 3])
    assert m[0, 1] == pytest.approx(0.36, rel=1e-14)
    assert m[0, 2] == pytest.approx(0.216, rel=1e-14)
    assert m[1, 2] == pytest.approx(0.6, rel=1e-14)
    # the same through Toeplitz and sp_exp at the same spacing
    assert Toeplitz(4).matrix(Toeplitz(4).from_natural({"cor(lag 1)": 0.6, "cor(lag 2)": 0.36,
        "cor(lag 3)": 0.216}), [0, 2])[0, 1] == pytest.approx(0.36)  # fmt: skip


@pytest.mark.parametrize("name", INDEXED)
def test_start_is_independent_with_one_variance(name):
    s = make_structure(name, 5)
    assert np.allclose(s.matrix(s.start(), [0, 1, 3, 4]), np.eye(4), rtol=0, atol=1e-15)


def test_sp_exp_start_and_its_independence_limit():
    s = SpatialExponential()
    assert s.natural(s.start()) == {"Phi": 0.5}
    m = s.matrix([-800.0], [0.0, 1.0, 2.5])  # Phi -> 0: independence
    assert np.array_equal(m, np.eye(3))


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_natural_round_trip(name):
    rng = np.random.default_rng(3)
    s = make_structure(name, 5)
    for _ in range(50):
        p = rng.normal(size=s.n_params)
        nat = s.natural(p)
        assert tuple(nat) == s.param_names
        assert np.allclose(s.from_natural(nat), p, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_gradient_matches_central_differences(name):
    rng = np.random.default_rng(11)
    s = make_structure(name, 5)
    p = rng.normal(scale=0.7, size=s.n_params)
    occ = _occasions(s, 5, rng, 4)
    g = s.gradient(p, occ)
    assert g.shape == (s.n_params, 4, 4)
    h = 1e-6
    for j in range(s.n_params):
        e = np.zeros(s.n_params)
        e[j] = h
        fd = (s.matrix(p + e, occ) - s.matrix(p - e, occ)) / (2 * h)
        assert np.allclose(g[j], fd, rtol=1e-6, atol=1e-8)


def test_parameter_counts_are_mmrms():
    # mmrm counts sigma among the covariance parameters: n_params + 1
    t = 4
    expected = {"us": 10, "toep": 4, "toeph": 7, "ar1": 2, "ar1h": 5, "cs": 2, "csh": 5,
                "diag": 4, "sp_exp": 2}  # fmt: skip
    for name, k in expected.items():
        s = make_structure(name, t)
        assert s.n_params_with_sigma == k, name
        assert len(s.param_names) == len(s.unconstrained_names) == s.n_params
        assert s.name == name


# --- nesting relations -----------------------------------------------------------------

RATIOS = {"sd_ratio(2)": 1.3, "sd_ratio(3)": 0.7, "sd_ratio(4)": 1.9}
ONES = dict.fromkeys(RATIOS, 1.0)
OCC = [0, 1, 2, 3]


def _m(s, **nat):
    return s.matrix(s.from_natural(nat), OCC)


def test_independence_is_common_to_all():
    eye = np.eye(4)
    assert np.allclose(_m(AR1(4), Phi=0.0), eye)
    assert np.allclose(_m(CompoundSymmetry(4), Rho=0.0), eye)
    assert np.allclose(_m(Toeplitz(4), **{f"cor(lag {k})": 0.0 for k in (1, 2, 3)}), eye)
    assert np.allclose(_m(Diagonal(4), **ONES), eye)
    us = Unstructured(4)
    assert np.allclose(us.matrix(us.start(), OCC), eye)


def test_homogeneous_is_heterogeneous_with_equal_variances():
    assert np.allclose(_m(AR1Het(4), Phi=0.4, **ONES), _m(AR1(4), Phi=0.4))
    assert np.allclose(
        _m(CompoundSymmetryHet(4), Rho=-0.2, **ONES), _m(CompoundSymmetry(4), Rho=-0.2)
    )
    lags = {"cor(lag 1)": 0.5, "cor(lag 2)": 0.1, "cor(lag 3)": 0.3}
    assert np.allclose(_m(ToeplitzHet(4), **lags, **ONES), _m(Toeplitz(4), **lags))


def test_zero_correlation_is_diag():
    d = _m(Diagonal(4), **RATIOS)
    assert np.allclose(np.diag(d), [1.0, 1.3**2, 0.7**2, 1.9**2])
    assert np.allclose(_m(AR1Het(4), Phi=0.0, **RATIOS), d)
    assert np.allclose(_m(CompoundSymmetryHet(4), Rho=0.0, **RATIOS), d)
    zero = {f"cor(lag {k})": 0.0 for k in (1, 2, 3)}
    assert np.allclose(_m(ToeplitzHet(4), **zero, **RATIOS), d)


def test_ar1_and_cs_are_toeplitz():
    phi = -0.55
    ar = _m(AR1(4), Phi=phi)
    assert np.allclose(_m(Toeplitz(4), **{f"cor(lag {k})": phi**k for k in (1, 2, 3)}), ar)
    # an AR(1) process has partial autocorrelations (phi, 0, 0)
    assert np.allclose(Toeplitz(4).from_natural(Toeplitz(4).natural([np.arctanh(phi), 0, 0])),
                       [np.arctanh(phi), 0, 0])  # fmt: skip
    assert np.allclose(Toeplitz(4).matrix([np.arctanh(phi), 0.0, 0.0], OCC), ar)
    rho = 0.35
    assert np.allclose(_m(Toeplitz(4), **{f"cor(lag {k})": rho for k in (1, 2, 3)}),
                       _m(CompoundSymmetry(4), Rho=rho))  # fmt: skip
    assert np.allclose(_m(ToeplitzHet(4), **{f"cor(lag {k})": phi**k for k in (1, 2, 3)}, **RATIOS),
                       _m(AR1Het(4), Phi=phi, **RATIOS))  # fmt: skip


def test_ar1_is_sp_exp_at_integer_times():
    phi = 0.8
    sp = SpatialExponential()
    assert np.allclose(sp.matrix(sp.from_natural({"Phi": phi}), [0.0, 1.0, 3.0, 4.0]),
                       AR1(5).matrix(AR1(5).from_natural({"Phi": phi}), [0, 1, 3, 4]))  # fmt: skip
    # unequal spacing: correlation Phi^distance
    m = sp.matrix(sp.from_natural({"Phi": phi}), [1.0, 43.0, 44.0])
    assert m[1, 2] == pytest.approx(phi) and m[0, 1] == pytest.approx(phi**42)


def _us_natural(m):
    sd = np.sqrt(np.diag(m))
    t = len(sd)
    nat = {
        f"cor({i + 1},{j + 1})": m[i, j] / (sd[i] * sd[j])
        for i in range(t)
        for j in range(i + 1, t)
    }
    nat.update({f"sd_ratio({k + 1})": sd[k] / sd[0] for k in range(1, t)})
    return nat


@pytest.mark.parametrize("name", INDEXED)
def test_every_structure_is_a_special_case_of_us(name):
    rng = np.random.default_rng(5)
    s = make_structure(name, 4)
    us = Unstructured(4)
    for _ in range(10):
        m = s.matrix(rng.normal(size=s.n_params), OCC)
        assert np.allclose(us.matrix(us.from_natural(_us_natural(m)), OCC), m, rtol=1e-10)


# --- nlme's marginal covariance at nlme's estimates -------------------------------------


def _yule_walker(phis):
    """Lag correlations r_1..r_p of an AR(p) process with coefficients phis."""
    p = len(phis)
    a = np.zeros((p, p))
    b = np.zeros(p)
    for k in range(1, p + 1):  # r_k = sum_j phi_j r_|k-j|, r_0 = 1
        a[k - 1, k - 1] += 1.0
        for j in range(1, p + 1):
            lag = abs(k - j)
            if lag == 0:
                b[k - 1] += phis[j - 1]
            else:
                a[k - 1, lag - 1] -= phis[j - 1]
    return np.linalg.solve(a, b)


def _structure_and_params(fit):
    """Our structure and unconstrained parameters at nlme's estimates, and nlme's sigma
    rescaled to the variance at the first occasion."""
    cp = fit["correlation_params"] or {}
    t = 11 if fit["data"] == "bodyweight" else {"egsingle": 6, "dialyzer": 7}.get(fit["data"], 4)
    sigma = fit["sigma"]
    nat: dict[str, float] = {}
    ratios = fit["variance_sd_ratios"]
    if ratios is not None:
        ref = ratios["1"]
        sigma *= ref
        nat.update({f"sd_ratio({k})": ratios[str(k)] / ref for k in range(2, t + 1)})
    structure = fit["structure"]
    if structure in ("ar1", "ar1h", "sp_exp"):
        # with gaps in the occasions nlme turns corAR1 into corARMA(p = 1): Phi1
        nat["Phi"] = cp["Phi"] if "Phi" in cp else cp["Phi1"]
    elif structure in ("cs", "csh"):
        nat["Rho"] = cp["Rho"]
    elif structure in ("toep", "toeph"):
        lags = _yule_walker([cp[f"Phi{k}"] for k in range(1, t)])
        nat.update({f"cor(lag {k})": lags[k - 1] for k in range(1, t)})
    elif structure == "us":
        nat.update(cp)
    s = make_structure(structure, t)
    return s, s.from_natural(nat), sigma


def _random_part(fit, person):
    """Z G Z' of an lme fit for one person (random intercept, or intercept and slope)."""
    g = np.asarray(fit["random_effects"]["random_covariance"], dtype=float)
    occ = np.asarray(person["occasions"], dtype=float)
    covariate = {"orthodont_waves": 6 + 2 * occ, "orthodont_gaps": 6 + 2 * occ,
                 "bodyweight": occ}[fit["data"]]  # fmt: skip
    z = np.column_stack([np.ones_like(occ), covariate])[:, : g.shape[0]]
    return z @ g @ z.T


NLME = sorted(
    k for k, f in REF["fits"].items() if f["engine"].startswith("nlme") and f["converged"]
)


@pytest.mark.parametrize("key", NLME)
def test_reproduces_nlme_marginal_covariance(key):
    fit = REF["fits"][key]
    s, params, sigma = _structure_and_params(fit)
    checked = 0
    for which in ("marginal_cov_full_person", "marginal_cov_gap_person"):
        person = fit[which]
        if person is None:
            continue
        marginal = np.asarray(person["matrix"], dtype=float)
        if fit["engine"] == "nlme::lme":
            marginal = marginal - _random_part(fit, person)
        occ = (
            person["occasions"]
            if fit["structure"] == "sp_exp"
            else np.asarray(person["occasions"]) - 1
        )
        ours = sigma**2 * s.matrix(params, np.asarray(occ, dtype=float))
        assert np.allclose(ours, marginal, rtol=1e-10, atol=1e-12 * np.abs(marginal).max()), which
        checked += 1
    assert checked >= 1


def test_nlme_cases_cover_every_structure_and_gaps():
    structures = {REF["fits"][k]["structure"] for k in NLME}
    assert structures == set(STRUCTURES)
    gaps = [k for k in NLME if REF["fits"][k]["marginal_cov_gap_person"] is not None]
    assert {REF["fits"][k]["structure"] for k in gaps} >= {"ar1", "diag", "us"}


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make_structure("arma", 4), r"unknown residual structure 'arma': expected one of us, "),
        (lambda: make_structure("ar1"), r"ar1: needs the number of occasions"),
        (lambda: AR1(0), r"ar1: the number of occasions must be a positive integer, got 0"),
        (lambda: Unstructured(2.5), r"us: the number of occasions must be a positive integer, got 2.5"),
        (lambda: AR1(4).matrix([0.1, 0.2], [0, 1]), r"ar1: expected 1 parameters, got shape \(2,\)"),
        (lambda: CompoundSymmetry(4).matrix([np.nan], [0, 1]), r"cs: parameters must be finite"),
        (lambda: AR1(4).matrix([0.1], [0, 4]), r"ar1: occasion index 4 is outside 0\.\.3"),
        (lambda: AR1(4).matrix([0.1], [0, -1]), r"ar1: occasion index -1 is outside 0\.\.3"),
        (lambda: Diagonal(4).matrix([0, 0, 0], [1, 1]), r"diag: occasion index 1 appears more than once"),
        (lambda: Toeplitz(4).matrix([0, 0, 0], [0.0, 1.5]), r"toep: occasion indices must be integers, got 1\.5"),
        (lambda: AR1(4).matrix([0.1], [0.0, np.nan]), r"ar1: occasion indices must be integers, got nan"),
        (lambda: Toeplitz(4).matrix([0, 0, 0], ["a"]), r"toep: occasion indices must be integers"),
        (lambda: AR1(4).matrix([0.1], []), r"ar1: occasions must be a non-empty list"),
        (lambda: SpatialExponential().matrix([0.0], [1.0, 2.0, 1.0]),
         r"sp_exp: two observations of one person at the same time \[1\.0\]"),
        (lambda: SpatialExponential().matrix([0.0], ["x"]), r"sp_exp: times must be a non-empty list of numbers"),
        (lambda: SpatialExponential().matrix([0.0], [0.0, np.inf]), r"sp_exp: times must be finite"),
        (lambda: AR1(4).from_natural({"Rho": 0.2}), r"ar1: natural parameters must be Phi \(missing: Phi; unknown: Rho\)"),
        (lambda: AR1(4).from_natural({"Phi": 1.0}), r"ar1: Phi must lie in \(-1, 1\), got 1\.0"),
        (lambda: SpatialExponential().from_natural({"Phi": -0.1}), r"sp_exp: Phi must lie in \(0, 1\)"),
        (lambda: CompoundSymmetry(4).from_natural({"Rho": -0.5}), r"cs: Rho must lie in \(-0\.333333, 1\) for 4 occasions"),
        (lambda: Toeplitz(3).from_natural({"cor(lag 1)": 0.9, "cor(lag 2)": -0.9}),
         r"toep: the lag correlations \[0\.9, -0\.9\] are not positive definite"),
        (lambda: Toeplitz(3).from_natural({"cor(lag 1)": 1.0, "cor(lag 2)": 0.0}), r"toep: lag correlations must lie in \(-1, 1\)"),
        (lambda: Diagonal(3).from_natural({"sd_ratio(2)": 1.0, "sd_ratio(3)": 0.0}), r"diag: SD ratios must be positive"),
        (lambda: Unstructured(3).from_natural({"cor(1,2)": 0.9, "cor(1,3)": 0.9, "cor(2,3)": -0.9,
                                               "sd_ratio(2)": 1.0, "sd_ratio(3)": 1.0}),
         r"us: the correlations \[0\.9, 0\.9, -0\.9\] are not positive definite"),
        (lambda: Unstructured(2).from_natural({"cor(1,2)": 0.1, "sd_ratio(2)": -1.0}), r"us: SD ratios must be positive"),
    ],
)  # fmt: skip
def test_error_messages(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- nlme's log-likelihood of a gls fit from our matrices ---------------------------------


def _gls_design(fit):
    """y, X (columns in nlme's order), person ids and occasions for the gls fixed parts
    used in structures_reference.json, built by hand from the CSVs."""
    spec = REF["datasets"][fit["data"]]
    df = pl.read_csv(Path(__file__).parent / "reference" / spec["file"])
    if fit["data"] == "egsingle":
        df = df.with_columns(wave=(pl.col("year") + 3.5).round().cast(pl.Int64))
    ident = fit["id"]
    occasion = "Time" if fit["data"] == "bodyweight" else "wave"
    df = df.sort(ident, occasion)

    def col(name):
        return df[name].cast(pl.Float64).to_numpy()

    def ind(name, level):
        return (df[name].cast(pl.String) == str(level)).cast(pl.Float64).to_numpy()

    one = np.ones(df.height)
    fixed = fit["fixed"]
    if fixed == "distance ~ age * Sex":
        male = ind("Sex", "Male")
        x, y = [one, col("age"), male, col("age") * male], col("distance")
    elif fixed == "distance ~ Sex * factor(wave)":
        male = ind("Sex", "Male")
        waves = [ind("wave", w) for w in (2, 3, 4)]
        x, y = [one, male, *waves, *(male * w for w in waves)], col("distance")
    elif fixed == "rate ~ factor(QB) * factor(wave)":
        qb = ind("QB", 300)
        waves = [ind("wave", w) for w in range(2, 8)]
        x, y = [one, qb, *waves, *(qb * w for w in waves)], col("rate")
    elif fixed == "weight ~ Time * Diet":
        d2, d3 = ind("Diet", 2), ind("Diet", 3)
        t = col("Time")
        x, y = [one, t, d2, d3, t * d2, t * d3], col("weight")
    elif fixed == "math ~ year * (lowinc + female)":
        yr, li, fe = col("year"), col("lowinc"), col("female")
        x, y = [one, yr, li, fe, yr * li, yr * fe], col("math")
    else:  # pragma: no cover - a new model in the R script needs its design here
        raise AssertionError(fixed)
    return y, np.column_stack(x), df[ident].cast(pl.String).to_numpy(), df[occasion].to_numpy()


@pytest.mark.parametrize("key", NLME)
def test_nlme_loglik_from_our_matrices(key):
    # -2 l_ML = sum_i [n_i log(2 pi) + log|V_i| + r_i' V_i^-1 r_i] with
    # V_i = sigma^2 R_i (gls) or Z_i G Z_i' + sigma^2 R_i (lme); REML adds
    # log|X'V^-1 X| and counts N - p observations in the 2 pi term
    fit = REF["fits"][key]
    s, params, sigma = _structure_and_params(fit)
    y, x, ids, occ = _gls_design(fit)
    beta = np.array(list(fit["fixef"].values()))
    assert x.shape[1] == len(beta)
    n, p = x.shape
    m2ll = n * np.log(2 * np.pi)
    xvx = np.zeros((p, p))
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], n], strict=True):
        o = occ[a:b].astype(float) if fit["structure"] == "sp_exp" else occ[a:b] - 1
        v = sigma**2 * s.matrix(params, o)
        if fit["engine"] == "nlme::lme":
            v = v + _random_part(fit, {"occasions": occ[a:b].tolist()})
        c = np.linalg.cholesky(v)
        r = np.linalg.solve(c, y[a:b] - x[a:b] @ beta)
        xi = np.linalg.solve(c, x[a:b])
        m2ll += 2 * np.log(np.diag(c)).sum() + r @ r
        xvx += xi.T @ xi
    if fit["REML"]:
        m2ll += np.linalg.slogdet(xvx)[1] - p * np.log(2 * np.pi)
    assert -m2ll / 2 == pytest.approx(fit["logLik"], abs=1e-8)
