"""The comparison of level-1 error structures (Singer & Willett Table 7.3) and the MMRM."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from analysis_support import early_config, early_frame, levels_of, study_config

from pipeline import fit_growth
from pipeline.analysis import analyse
from pipeline.analysis.structures import fixed_formula
from pipeline.simulate import simulate_structured


def test_early_structures_compared_on_the_growth_models_fixed_part():
    cfg = early_config(extra='residual = ["diag", "ar1", "cs", "us"]')
    result = analyse(levels_of(early_frame(), cfg), cfg)
    table = result.tables["error_structures"]
    assert table["structure"].to_list() == ["none", "diag", "ar1", "cs", "us"]
    assert table["chosen"].sum() == 1
    chosen = table.filter(pl.col("chosen")).row(0, named=True)
    assert chosen["bic"] == table["bic"].min()
    assert chosen["note"].startswith("lowest BIC")
    # every row: the same fixed part (cog ~ age1 * trt), fitted by REML
    fixed = {fixed_formula(f) for f in table["formula"]}
    assert fixed == {"cog ~ age1 + trt + age1:trt"}
    # us has 3 + 2 + 1 = 6 covariance parameters: 4 fixed + 5 (relative to sigma^2) + sigma
    assert table.filter(pl.col("structure") == "us")["npar"][0] == 4 + 5 + 1
    tests = result.tables["error_structure_tests"]
    pairs = set(zip(tests["against"], tests["model"], strict=True))
    assert ("diag", "us") in pairs and ("ar1", "us") in pairs and ("cs", "us") in pairs
    cov = result.tables["error_structure_covariance"]
    assert set(cov["source"]) == {"implied", "observed"}
    assert cov.filter(pl.col("source") == "implied").height == 9
    fe = result.tables["error_structure_fixed_effects"]
    assert fe["term"].to_list() == ["(Intercept)", "age1", "trtY", "age1:trtY"]


def test_unstructured_standalone_equals_the_direct_fit():
    cfg = early_config(extra='residual = ["us"]')
    result = analyse(levels_of(early_frame(), cfg), cfg)
    row = result.tables["error_structures"].filter(pl.col("structure") == "us").row(0, named=True)
    direct = fit_growth(
        levels_of(early_frame(), cfg).model_frame, "cog ~ age1 * trt + us(age1 | id)"
    )
    assert row["deviance"] == pytest.approx(-2 * direct.loglik, rel=1e-9)


def test_fixed_formula_drops_random_terms_and_structures():
    assert fixed_formula("y ~ t * g + (t | id)") == "y ~ t * g"
    assert fixed_formula("y ~ t + (1 | s) + (t | s:id) + ar1(w | id)") == "y ~ t"


def test_mmrm_visit_differences(tmp_path):
    T = 4
    lag = np.abs(np.subtract.outer(np.arange(T), np.arange(T)))
    df = simulate_structured(persons=120, covariance=4 * 0.5**lag, seed=4, effect=1.0).with_columns(
        pid=pl.col("pid").cast(pl.String), visit=pl.col("wave").cast(pl.Int64)
    )
    cfg = study_config(
        person="pid",
        time="wave",
        outcome="y",
        time_name="t",
        person_covariates=("trt",),
        intercept=("trt",),
        slope=("trt",),
        group="trt",
        at_times=(0.0, 3.0),
        data_extra='occasion = "visit"\n[data.categories]\ntrt = ["A", "B"]',
    )
    cfg = cfg.model_copy(
        update={"models": cfg.models.model_copy(update={"residual": ["ar1", "us"]})}
    )
    result = analyse(levels_of(df, cfg), cfg)
    visits = result.tables["mmrm_visit_differences"]
    assert visits["visit"].to_list() == ["0", "1", "2", "3"]
    assert visits["contrast"].unique().to_list() == ["B - A"]
    # the simulated effect is 1.0 per wave: the difference grows with the visit
    est = visits["estimate"].to_numpy()
    assert abs(est[0]) < 1.0 and est[3] > 1.5
    assert (visits["conf_low"] <= visits["estimate"]).all()
