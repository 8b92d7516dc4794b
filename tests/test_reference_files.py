"""The R reference files for nested levels and level-1 error structures load and hold
what tests/reference/README.md says they hold (no R needed).

These tests check the files, not the engine: models present, fields present, ids
and occasions consistent with the CSVs beside them, matrices of the right shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

REF_DIR = Path(__file__).parent / "reference"

NESTED_MODELS = {
    "eg_means": ("egsingle", {"schoolid:childid", "schoolid"}),
    "eg_growth": ("egsingle", {"schoolid:childid", "schoolid"}),
    "eg_conditional_colon": ("egsingle", {"schoolid:childid", "schoolid"}),
    "eg_conditional_slash": ("egsingle", {"childid:schoolid", "schoolid"}),
    "eg_conditional_unique_ids": ("egsingle", {"childid", "schoolid"}),
    "eg_conditional_school_intercept": ("egsingle", {"schoolid:childid", "schoolid"}),
    "pixel": ("pixel", {"Dog:Side", "Dog"}),
}
NESTED_FIELDS = {
    "name", "data", "formula", "REML", "fixef", "se", "df_satterthwaite", "p_satterthwaite",
    "varcorr", "sigma", "logLik", "AIC", "BIC", "deviance_or_REMLcrit", "nobs", "ngroups",
    "singular", "ranef", "theta", "theta_names", "lme4_messages", "warnings", "tight_refit",
}  # fmt: skip
STRUCTURES = {"us", "toep", "toeph", "ar1", "ar1h", "cs", "csh", "diag", "sp_exp"}


@pytest.fixture(scope="module")
def nested():
    return json.loads((REF_DIR / "lme4_nested_reference.json").read_text())


@pytest.fixture(scope="module")
def structures():
    return json.loads((REF_DIR / "structures_reference.json").read_text())


def _csv(name: str) -> pl.DataFrame:
    return pl.read_csv(REF_DIR / name)


def test_nested_has_every_model_reml_and_ml(nested):
    keys = {k for k, v in nested.items() if isinstance(v, dict) and "formula" in v}
    assert keys == {f"{m}_{e}" for m in NESTED_MODELS for e in ("reml", "ml")}
    assert set(nested["versions"]) >= {"R", "lme4", "lmerTest", "mlmRev"}


@pytest.mark.parametrize("model", sorted(NESTED_MODELS))
@pytest.mark.parametrize("estimation", ["reml", "ml"])
def test_nested_fit_fields_and_ids(nested, model, estimation):
    fit = nested[f"{model}_{estimation}"]
    data, groups = NESTED_MODELS[model]
    assert NESTED_FIELDS <= set(fit)
    assert fit["REML"] is (estimation == "reml")
    assert set(fit["fixef"]) == set(fit["se"]) == set(fit["df_satterthwaite"])
    assert set(fit["ranef"]) == set(fit["ngroups"]) == groups
    assert len(fit["theta"]) == len(fit["theta_names"])
    residual = [v for v in fit["varcorr"] if v["grp"] == "Residual"]
    assert residual[0]["sdcor"] == pytest.approx(fit["sigma"], rel=1e-12)
    assert fit["tight_refit"]["logLik"] >= fit["logLik"] - 1e-8

    df = _csv(nested["datasets"][data]["file"])
    assert fit["nobs"] == df.height
    outer, inner = nested["datasets"][data]["ids"]
    assert fit["ngroups"][outer] == df[outer].n_unique()
    pairs = {f"{a}:{b}" for a, b in df.select(outer, inner).unique().iter_rows()}
    for group, level in fit["ranef"].items():
        assert level["group"] == group
        assert level["n_levels"] == fit["ngroups"][group]
        k = len(level["terms"])
        assert len(level["ranef_first5"]) == len(level["ranef_condvar_first5"]) == 5
        for blup, condvar in zip(level["ranef_first5"], level["ranef_condvar_first5"], strict=True):
            assert set(blup) == {"id", *level["terms"]}
            cv = np.asarray(condvar, dtype=float).reshape(k, k)
            assert np.allclose(cv, cv.T) and np.all(np.linalg.eigvalsh(cv) > 0)
            # every id names a group present in the CSV
            if group == f"{outer}:{inner}":
                assert blup["id"] in pairs
            elif group == f"{inner}:{outer}":
                b, a = blup["id"].split(":")
                assert f"{a}:{b}" in pairs
            else:
                values = {str(v) for v in df[group].unique().to_list()}
                assert blup["id"] in values


def test_nested_syntaxes_agree(nested):
    # (year | schoolid/childid) and (year | childid) + (year | schoolid) are one model
    for est in ("reml", "ml"):
        slash = nested[f"eg_conditional_slash_{est}"]
        unique = nested[f"eg_conditional_unique_ids_{est}"]
        colon = nested[f"eg_conditional_colon_{est}"]
        assert slash["logLik"] == pytest.approx(unique["logLik"], abs=1e-9)
        assert colon["tight_refit"]["logLik"] == pytest.approx(
            slash["tight_refit"]["logLik"], abs=1e-6
        )


def test_structures_cover_every_structure(structures):
    fits = structures["fits"]
    assert {f["structure"] for f in fits.values()} == STRUCTURES
    nlme = {
        f["structure"] for f in fits.values() if f["engine"].startswith("nlme") and f["converged"]
    }
    assert nlme == STRUCTURES
    for f in fits.values():
        assert f["engine"] in {"nlme::gls", "nlme::lme", "glmmTMB"}
        twin = fits[f"{f['name']}_{'ml' if f['REML'] else 'reml'}"]
        assert twin["REML"] is not f["REML"]
    assert set(structures["versions"]) >= {"R", "nlme", "glmmTMB"}


def _person_rows(structures, fit, person):
    spec = structures["datasets"][fit["data"]]
    df = _csv(spec["file"])
    occasion = "Time" if fit["data"] == "bodyweight" else "wave"
    if fit["data"] == "egsingle":
        df = df.with_columns(wave=(pl.col("year") + 3.5).round().cast(pl.Int64))
    rows = df.filter(pl.col(fit["id"]).cast(pl.String) == person["id"])
    return rows.sort(occasion)[occasion].to_list()


def test_structures_nlme_fields_and_matrices(structures):
    n_gap = 0
    for key, fit in structures["fits"].items():
        if not fit["engine"].startswith("nlme"):
            continue
        if not fit["converged"]:
            assert fit["error"], key
            continue
        for field in ("fixef", "se", "df", "sigma", "logLik", "AIC", "BIC", "df_logLik", "nobs"):
            assert field in fit, (key, field)
        assert set(fit["fixef"]) == set(fit["se"]) == set(fit["df"])
        assert fit["AIC"] == pytest.approx(-2 * fit["logLik"] + 2 * fit["df_logLik"], rel=1e-12)
        for which in ("marginal_cov_full_person", "marginal_cov_gap_person"):
            person = fit.get(which)
            if person is None:
                continue
            n_gap += which.endswith("gap_person")
            m = np.asarray(person["matrix"], dtype=float)
            assert m.shape == (len(person["occasions"]),) * 2, key
            assert np.allclose(m, m.T) and np.all(np.linalg.eigvalsh(m) > 0), key
            assert person["occasions"] == _person_rows(structures, fit, person), key
        assert fit["marginal_cov_full_person"] is not None, key
    assert n_gap >= 6  # the gapped Orthodont and egsingle fits


def test_structures_unconverged_are_recorded(structures):
    fits = structures["fits"]
    # nlme cannot fit a random slope plus AR(1) on egsingle (README)
    assert not fits["egsingle_lme_slope_ar1_reml"]["converged"]
    assert "iteration limit" in fits["egsingle_lme_slope_ar1_reml"]["error"]
    tmb = fits["egsingle_tmb_slope_ar1_reml"]
    assert tmb["engine"] == "glmmTMB" and "optimizer_message" in tmb


def test_glmmtmb_and_nlme_agree_where_both_fit(structures):
    fits = structures["fits"]
    pairs = {"orth_tmb_us": "orth_us", "orth_tmb_ar1": "orth_ar1", "orth_tmb_diag": "orth_diag",
             "orth_tmb_csh": "orth_csh", "orth_tmb_toeph": "orth_toeph",
             "orth_gaps_tmb_us": "orth_gaps_us", "dialyzer_tmb_us": "dialyzer_us"}  # fmt: skip
    for tmb, nlme in pairs.items():
        for est in ("reml", "ml"):
            a, b = fits[f"{tmb}_{est}"], fits[f"{nlme}_{est}"]
            assert a["minus_objective"] == pytest.approx(b["logLik"], abs=1e-4), (tmb, est)
