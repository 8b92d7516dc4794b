"""Level-1 error structures against nlme 3.1-162 and glmmTMB 1.1.5
(tests/reference/make_structures_reference.R; the formulas are translated one to one:
``gls(y ~ x, correlation = corAR1(form = ~ wave | id))`` is ``y ~ x + ar1(wave | id)``,
corSymm + varIdent is ``us``, corARMA(p = T-1) is ``toep``, corCAR1 is ``sp_exp``, and
lme's ``random = ~ age | Subject`` is ``(age | Subject)``).

Tolerances, per quantity (measured when written: log-likelihood within 9e-9 of
nlme's, fixed effects 9e-6 relative, REML SE 5e-6):

- log-likelihood: never below nlme's by more than 1e-7, nor above by more than 1e-5;
- fixed effects: 2e-5 relative; REML standard errors: 1e-4 relative. nlme's
  ML standard errors are larger by sqrt(N / (N - p)) (``summary.gls`` rescales
  sigma for ML fits; lme4, and we, do not): compared after that factor;
- the structure's parameters on the natural scale and the marginal covariance of a
  complete person (getVarCov): 1e-3 relative (they are flatter than the likelihood).

Where nlme fails (lme with a random slope and AR(1) on egsingle stops at its
iteration limit), glmmTMB is the reference: our fit converges, and its
log-likelihood is at least glmmTMB's.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import fit_growth

REF = Path(__file__).parent / "reference"
FITS = json.loads((REF / "structures_reference.json").read_text())["fits"]
FILES = {
    "orthodont_waves": "orthodont_waves.csv",
    "orthodont_gaps": "orthodont_gaps.csv",
    "dialyzer": "dialyzer.csv",
    "bodyweight": "bodyweight.csv",
    "egsingle": "egsingle.csv",
}
NLME = sorted(k for k, v in FITS.items() if v["engine"] != "glmmTMB" and v.get("converged"))


def _data(name: str) -> pl.DataFrame:
    df = pl.read_csv(REF / FILES[name])
    if name == "egsingle":
        df = df.with_columns(wave=pl.col("year") + 3.5)
    if name == "bodyweight":
        df = df.with_columns(pl.col("Diet").cast(pl.String))
    return df


def _translate(ref: dict) -> tuple[pl.DataFrame, str]:
    df = _data(ref["data"])
    fixed = ref.get("fixed") or ref["formula"].split(" + ")[0]
    for column in ("wave", "QB"):
        if f"factor({column})" in fixed:
            df = df.with_columns(pl.col(column).cast(pl.String).alias(f"f{column}"))
            fixed = fixed.replace(f"factor({column})", f"f{column}")
    occasion = "Time" if ref["structure"] == "sp_exp" else "wave"
    random = ""
    if ref.get("random"):
        m = re.match(r"~\s*(.*)\|\s*(\w+)", ref["random"])
        random = f" + ({m.group(1).strip()} | {m.group(2)})"
    return df, f"{fixed}{random} + {ref['structure']}({occasion} | {ref['id']})"


@pytest.fixture(scope="module")
def fits():
    out = {}
    for key in NLME:
        df, formula = _translate(FITS[key])
        out[key] = fit_growth(df, formula, reml=FITS[key]["REML"])
    return out


@pytest.mark.parametrize("key", NLME)
def test_loglik_and_fixed_effects_equal_nlme(fits, key):
    ref, fit = FITS[key], fits[key]
    assert fit.converged, fit.optimization.message
    assert ref["logLik"] - 1e-7 <= fit.loglik <= ref["logLik"] + 1e-5
    fe = fit.fixed_effects
    ours = fe["estimate"].to_numpy()
    theirs = np.array(list(ref["fixef"].values()))
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=1e-8 * np.abs(theirs).max())
    se = fe["std_error"].to_numpy()
    if not ref["REML"]:
        se = se * math.sqrt(fit.nobs / (fit.nobs - len(fit.beta)))
    np.testing.assert_allclose(se, np.array(list(ref["se"].values())), rtol=1e-4)
    assert fit.npar == ref["df_logLik"]


@pytest.mark.parametrize("key", NLME)
def test_structure_parameters_and_marginal_covariance(fits, key):
    ref, fit = FITS[key], fits[key]
    table = dict(
        zip(fit.residual_parameters["parameter"], fit.residual_parameters["estimate"], strict=True)
    )
    params = ref.get("correlation_params") or {}
    if ref["structure"] not in ("toep", "toeph"):  # corARMA's Phi are AR coefficients
        for name, value in params.items():
            ours = table["Phi"] if name == "Phi1" else table[name]
            assert ours == pytest.approx(value, rel=1e-3, abs=1e-4), name
    for wave, ratio in (ref.get("variance_sd_ratios") or {}).items():
        labels = fit.marginal[0]
        k = [float(v) for v in labels].index(float(wave)) + 1
        if k > 1:
            assert table[f"sd_ratio({k})"] == pytest.approx(ratio, rel=1e-3), wave
    full = ref.get("marginal_cov_full_person")
    if full is not None:
        labels, V = fit.marginal
        assert [float(v) for v in labels] == [float(v) for v in full["occasions"]]
        np.testing.assert_allclose(V, np.array(full["matrix"]), rtol=1e-3, atol=1e-6)


def test_where_nlme_fails_we_converge_at_least_as_high_as_glmmtmb():
    nlme = FITS["egsingle_lme_slope_ar1_reml"]
    assert not nlme["converged"]
    tmb = FITS["egsingle_tmb_slope_ar1_reml"]
    df = _data("egsingle")
    fit = fit_growth(df, "math ~ year * (lowinc + female) + (year | childid) + ar1(wave | childid)")
    assert fit.converged, fit.optimization.message
    assert fit.loglik >= tmb["minus_objective"] - 1e-6


@pytest.mark.parametrize(
    ("key", "formula"),
    [
        ("dialyzer_tmb_toeph_ml", "rate ~ fQB * fwave + toeph(wave | Subject)"),
        ("orth_tmb_us_ml", "distance ~ Sex * fwave + us(wave | Subject)"),
    ],
)
def test_glmmtmb_ml_fits(key, formula):
    tmb = FITS[key]
    df = _data(tmb["data"]).with_columns(
        [
            pl.col(c).cast(pl.String).alias(f"f{c}")
            for c in ("wave", "QB")
            if c in _data(tmb["data"]).columns
        ]
    )
    fit = fit_growth(df, formula, reml=False)
    assert fit.converged
    assert fit.loglik == pytest.approx(tmb["minus_objective"], abs=1e-5)
