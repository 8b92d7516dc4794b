"""The three-level analyses (pipeline/analysis/clusters.py) against lme4 and by hand.

lme4/lmerTest values: tests/reference/clusters_reference.json, written by
tests/reference/make_clusters_reference.R on egsingle.csv (1721 pupils in 60 schools).
The type-I error and standard-error simulations are in test_analysis_clusters_sim.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import fit_growth
from pipeline.analysis import clusters as C
from pipeline.analysis.context import AnalysisContext, Notes
from pipeline.analysis.sequence import CONDITIONAL, GROWTH, MEANS, ModelSpec
from pipeline.analysis.spec import AnalysisSpec
from pipeline.errors import ModelError
from schemas.tables import validate_tables

REFERENCE = Path(__file__).parent / "reference"
REF = json.loads((REFERENCE / "clusters_reference.json").read_text())
NAMES = ("childid", "schoolid")
MEANS_F = "math ~ 1 + (1 | schoolid) + (1 | schoolid:childid)"
GROWTH_F = "math ~ year + (year | schoolid) + (year | schoolid:childid)"
COND_F = "math ~ year * (female + lowinc) + (year | schoolid) + (year | schoolid:childid)"


@pytest.fixture(scope="module")
def eg() -> pl.DataFrame:
    return pl.read_csv(REFERENCE / "egsingle.csv")


@pytest.fixture(scope="module")
def fits(eg: pl.DataFrame) -> dict:
    return {
        MEANS: fit_growth(eg, MEANS_F),
        GROWTH: fit_growth(eg, GROWTH_F),
        CONDITIONAL: fit_growth(eg, COND_F),
    }


def close(a, b, rel=2e-3, abs=1e-6):
    np.testing.assert_allclose(
        np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rel, atol=abs
    )


# ---------------------------------------------------------------------------- lme4 references


def test_variance_partition_and_icc_match_lme4(fits):
    out = C.partition_tables(fits[MEANS], names=NAMES, replicates=20, seed=5)
    part = out["cluster_variance_partition"]
    assert part["level"].to_list() == ["childid", "schoolid", "occasion"]
    assert part["group"].to_list() == ["schoolid:childid", "schoolid", "Residual"]
    close(part["variance"], REF["means"]["variance"])
    close(part["share"], REF["means"]["share"])
    assert part["share"].sum() == pytest.approx(1.0)
    icc = out["cluster_icc"]
    close(
        icc["estimate"],
        [
            REF["means"]["icc_cluster"],
            REF["means"]["icc_person"],
            REF["means"]["share_between_persons"],
        ],
    )
    assert (icc["conf_low"] <= icc["estimate"]).all() and (
        icc["estimate"] <= icc["conf_high"]
    ).all()
    assert "parametric-bootstrap percentile interval (20 simulations" in icc["method"][0]


def test_growth_variance_within_and_between_match_lme4(fits):
    table = C.growth_variance_table(fits[GROWTH], names=NAMES)
    assert table["term"].to_list() == ["(Intercept)", "year"]
    close(table["within_variance"], REF["growth"]["within"], rel=5e-3)
    close(table["between_variance"], REF["growth"]["between"], rel=5e-3)
    within, between = np.array(REF["growth"]["within"]), np.array(REF["growth"]["between"])
    close(table["share_between"], between / (between + within), rel=5e-3)


def test_cluster_variance_tests_match_lme4_anova(fits):
    table = C.variance_tests_table({MEANS: fits[MEANS], GROWTH: fits[GROWTH]}, names=NAMES)
    assert table["against"].to_list() == [
        "math ~ 1 + (1 | schoolid:childid)",
        "math ~ year + (year | schoolid:childid)",
    ]
    close(table["chisq"], [REF["lrt_means"]["chisq"], REF["growth"]["lrt_chisq"]], rel=1e-5)
    assert table["df"].to_list() == [1, 3]
    close(table["p_value"][0], REF["lrt_means"]["p_mixture"], rel=1e-4, abs=0)
    assert table["reference"][0] == "50:50 mixture chi2(0):chi2(1)"
    assert "conservative" in table["reference"][1]


def test_design_effect_matches_the_formulas_on_lme4_variances(fits):
    table = C.design_effect_table(fits[MEANS], names=NAMES)
    obs = table.filter(pl.col("unit") == "observations").row(0, named=True)
    persons = table.filter(pl.col("unit") == "persons").row(0, named=True)
    d = REF["design"]
    close(obs["design_effect"], d["deff_observations"])
    close(obs["effective_n"], d["effective_observations"])
    close(persons["design_effect"], d["deff_persons"])
    close(persons["icc"], d["icc_person_means"])
    close(persons["effective_n"], d["effective_persons"])
    assert (obs["count"], persons["count"]) == (7230, 1721)


def test_predictor_standard_errors_match_lm_and_lme4(fits):
    terms = C.cluster_terms(fits[CONDITIONAL], ["lowinc"])
    assert terms == ["lowinc", "year:lowinc"]
    table = C.predictor_se_table(fits[CONDITIONAL], terms, names=NAMES)
    p = REF["predictor"]
    for method, key in (("OLS", "ols"), ("two-level", "two"), ("three-level", "three")):
        rows = table.filter(pl.col("method") == method)
        close(rows["estimate"], p[f"{key}_estimate"], rel=3e-3)
        close(rows["std_error"], p[f"{key}_se"], rel=3e-3)
    assert table.filter(pl.col("method") == "three-level")["ratio"].to_list() == [1.0, 1.0]
    # the point: ignoring the schools understates the SE of the school-level predictor
    lowinc = table.filter(pl.col("term") == "lowinc")
    assert lowinc["ratio"][0] < 0.35 and lowinc["ratio"][1] < 0.55


def test_reliability_matches_lme4_and_the_closed_form(fits):
    table = C.reliability_table(means=fits[MEANS], growth=fits[GROWTH], names=NAMES)
    means = table.filter(pl.col("model") == MEANS)
    close(
        means["reliability"],
        [REF["reliability_means"]["person"], REF["reliability_means"]["school"]],
    )
    growth = table.filter(pl.col("model") == GROWTH)
    close(
        growth["reliability"],
        REF["growth"]["reliability_person"] + REF["growth"]["reliability_school"],
        rel=5e-3,
    )
    assert growth["units"].to_list() == [1721, 1721, 60, 60]


def test_caterpillar_blups_and_intervals_match_lme4(fits):
    table = C.caterpillar_table(fits[GROWTH], model=GROWTH, names=NAMES)
    g = REF["growth"]
    for term, key, var in (
        ("(Intercept)", "school_intercept", "school_condvar_intercept"),
        ("year", "school_slope", "school_condvar_slope"),
    ):
        rows = table.filter(pl.col("term") == term)
        assert rows.height == 60 and rows["rank"].to_list() == list(range(1, 61))
        assert rows["estimate"].is_sorted()
        chosen = rows.filter(pl.col("cluster").is_in(g["school_labels"])).sort("cluster")
        assert chosen["cluster"].to_list() == g["school_labels"]
        close(chosen["estimate"], g[key], rel=1e-2, abs=2e-4)
        close(chosen["std_error"] ** 2, g[var], rel=1e-2)
        close(chosen["conf_high"] - chosen["estimate"], 1.959964 * chosen["std_error"])


# ---------------------------------------------------------------------------- by hand


def _balanced(seed: int, *, schools=12, pupils=6, waves=4, tau_c=1.0, tau_p=2.0, sigma=1.0):
    rng = np.random.default_rng(seed)
    s = np.repeat(np.arange(schools), pupils * waves)
    p = np.repeat(np.arange(schools * pupils), waves)
    y = (
        10.0
        + rng.normal(0, np.sqrt(tau_c), schools)[s]
        + rng.normal(0, np.sqrt(tau_p), schools * pupils)[p]
        + rng.normal(0, sigma, s.size)
    )
    return pl.DataFrame(
        {
            "school": s,
            "pid": p % pupils,
            "time": np.tile(np.arange(waves, dtype=float), schools * pupils),
            "y": y,
        }
    )


def test_design_effect_of_observations_is_the_variance_ratio_of_the_grand_mean():
    """Balanced data: Var(grand mean) = tau_c/K + tau_p/(KJ) + sigma^2/(KJn), so
    deff = (sigma^2 + n tau_p + J n tau_c) / total and deff_persons = (J tau_c + tau_p +
    sigma^2/n) / (tau_c + tau_p + sigma^2/n), on the fit's own variances."""
    fit = fit_growth(_balanced(1), "y ~ 1 + (1 | school) + (1 | school:pid)")
    vc = {r["group"]: r["variance"] for r in fit.variance_components.iter_rows(named=True)}
    tc, tp, s2 = vc["school"], vc["school:pid"], vc["Residual"]
    J, n = 6, 4
    table = C.design_effect_table(fit, names=("pid", "school"))
    obs, persons = table["design_effect"].to_list()
    assert obs == pytest.approx((s2 + n * tp + J * n * tc) / (tc + tp + s2))
    assert persons == pytest.approx((J * tc + tp + s2 / n) / (tc + tp + s2 / n))
    assert table["mean_per_cluster"].to_list() == [24.0, 6.0]


def test_cluster_reliability_closed_form_equals_the_blup_form_when_balanced():
    """Balanced: the cluster mean is sufficient for the cluster effect, so lambda =
    1 - condvar / tau_c exactly; the two computations are independent."""
    fit = fit_growth(_balanced(2), "y ~ 1 + (1 | school) + (1 | school:pid)")
    closed = C._means_reliability(fit, C.cluster_levels(fit, ("pid", "school")))
    blup = C._blup_reliability(fit, C.cluster_levels(fit, ("pid", "school")))
    assert closed[1]["reliability"] == pytest.approx(blup[1]["reliability"], rel=1e-6)
    tc = float(fit.variance_components["variance"][1])
    tp = float(fit.variance_components["variance"][0])
    s2 = float(fit.sigma) ** 2
    assert closed[1]["reliability"] == pytest.approx(tc / (tc + tp / 6 + s2 / 24))
    assert closed[0]["reliability"] == pytest.approx(tp / (tp + s2 / 4))


def test_parametric_bootstrap_reproduces_the_fitted_variances():
    """Outcomes simulated from a fit and refitted recover its variances on average."""
    fit = fit_growth(_balanced(3, schools=30), "y ~ 1 + (1 | school) + (1 | school:pid)")
    draws = C.parametric_bootstrap(fit, C._shares, replicates=60, seed=1)
    assert draws.shape == (60, 6)
    point = C._shares(fit)
    se = draws.std(axis=0, ddof=1) / np.sqrt(60)
    # REML is close to unbiased for these variances: within 4 Monte Carlo SEs (+ 5%)
    assert np.all(np.abs(draws.mean(axis=0)[:3] - point[:3]) <= 4 * se[:3] + 0.05 * point[:3])


def test_bootstrap_size_falls_with_the_rows():
    assert C.bootstrap_replicates(7230) == 200
    assert C.bootstrap_replicates(100_000) == 100
    assert C.bootstrap_replicates(10_000_000) == 40


def test_sample_size_checks_each_level():
    fit = fit_growth(
        _balanced(4, schools=8, pupils=4, waves=3), "y ~ 1 + (1 | school) + (1 | school:pid)"
    )
    table = C.sample_size_table(fit, names=("pid", "school"))
    school = {
        r["check"]: r for r in table.filter(pl.col("level") == "school").iter_rows(named=True)
    }
    assert school["groups for fixed effects"]["value"] == 8.0
    assert school["groups for fixed effects"]["status"] == "warning"
    assert school["groups for variance components"]["status"] == "warning"
    assert school["mean pid per school"]["value"] == 4.0
    assert school["mean pid per school"]["message"] == (
        "4 pid per school on average, fewer than the 5 the rule of thumb asks for: the school "
        "effects rest on few pid each"
    )
    assert school["groups for fixed effects"]["message"] == (
        "only 8 school, fewer than the 10 the rule of thumb asks for the fixed effects of "
        "school-level predictors"
    )
    pid = {r["check"]: r for r in table.filter(pl.col("level") == "pid").iter_rows(named=True)}
    assert pid["groups for variance components"]["status"] == "ok"
    assert pid["mean observations per pid"]["value"] == 3.0
    assert pid["mean observations per pid"]["status"] == "warning"


def test_level_equations_use_pi_beta_gamma(fits):
    table = C.level_equations_table(
        fits[CONDITIONAL],
        model=CONDITIONAL,
        outcome="math",
        time_parts=("year",),
        cluster_covariates=["lowinc"],
        names=NAMES,
    )
    eq = dict.fromkeys(table["level"].to_list())
    assert list(eq) == ["Level 1", "Level 2", "Level 3", "Variances", "lme4"]
    rows = table["equation"].to_list()
    assert rows[0] == "math_tij = pi0ij + pi1ij*(year)_tij + e_tij"
    assert "pi0ij = beta00j + beta01j*(female)_ij + r0ij" in rows
    assert "pi1ij = beta10j + beta11j*(female)_ij + r1ij" in rows
    level3 = table.filter(pl.col("level") == "Level 3")["equation"].to_list()
    assert level3[0].startswith("beta00j = gamma000 [") and level3[0].endswith("u00j")
    assert "gamma001*(lowinc)_j [-0.01119" in level3[0]
    assert level3[1].startswith("beta01j = gamma010 [") and "u" not in level3[1].split("]")[-1]
    assert any(e.startswith("beta10j = gamma100 [") and "gamma101*(lowinc)_j" in e for e in level3)
    assert any(e.startswith("Var(schoolid: year) = ") for e in rows)
    assert rows[-1] == COND_F


def test_trajectories_sample_is_deterministic_and_means_are_observed(fits):
    fit = fits[GROWTH]
    occasions = np.array([f"{t:g}" for t in fit.frame["year"].to_numpy()])
    times = {o: float(o) for o in set(occasions)}

    def run(seed):
        return C.trajectories_table(
            fit,
            occasions=occasions,
            times=times,
            coded=lambda t: t,
            time_parts=("year",),
            seed=seed,
            names=NAMES,
        )

    a, b, c = run(7), run(7), run(8)
    assert a.equals(b) and not a.equals(c)
    assert a["cluster"].n_unique() == 20
    one = a.filter(pl.col("cluster") == a["cluster"][0])
    raw = (
        fit.frame.filter(pl.col("schoolid").cast(pl.String) == a["cluster"][0])
        .group_by("year")
        .agg(pl.col("math").mean(), pl.len())
        .sort("year")
    )
    close(one["observed_mean"], raw["math"], rel=1e-12)
    assert one["observations"].to_list() == raw["len"].to_list()
    blups = (
        fit.random_effects_of("schoolid")
        .filter(pl.col("schoolid") == a["cluster"][0])
        .row(0, named=True)
    )
    beta = dict(zip(fit.design.fixed_names, fit.beta, strict=True))
    expected = (beta["(Intercept)"] + blups["(Intercept)"]) + (beta["year"] + blups["year"]) * raw[
        "year"
    ].to_numpy()
    close(one["fitted_mean"], expected, rel=1e-10)
    assert C.sample_clusters(["b", "a"], seed=1) == ["a", "b"]


@pytest.mark.parametrize(
    ("formula", "group", "expected"),
    [
        ("y ~ t + (t | school) + (t | school:pid)", "school", "y ~ t + (t | school:pid)"),
        ("y ~ t + (t | school/pid)", "school", "y ~ t + (t | school:pid)"),
        ("y ~ t * x + (1 | pid) + (t || school)", "school", "y ~ t * x + (1 | pid)"),
        (
            "y ~ t + (1|school) + (1|school:room) + (t|school:room:pid)",
            "school:room",
            "y ~ t + (1 | school) + (t | school:room:pid)",
        ),
    ],
)
def test_without_level(formula, group, expected):
    assert C.without_level(formula, group) == expected


def test_errors_say_what_is_wrong(fits):
    with pytest.raises(
        ModelError,
        match=r"formula 'y ~ t \+ \(t \| pid\)' has no random term of the grouping factor 'school'",
    ):
        C.without_level("y ~ t + (t | pid)", "school")
    with pytest.raises(
        ModelError, match="the variance partition needs the unconditional means model"
    ):
        C.partition_tables(fits[GROWTH], names=NAMES, replicates=0)
    two = fit_growth(fits[MEANS].frame, "math ~ 1 + (1 | childid)")
    with pytest.raises(ModelError, match="the design effect needs at least one cluster level"):
        C.design_effect_table(two)
    four = fit_growth(
        _balanced(5).with_columns((pl.col("pid") // 3).alias("room")),
        "y ~ 1 + (1 | school) + (1 | school:room) + (1 | school:room:pid)",
    )
    with pytest.raises(
        ModelError, match=r"the level equations are written for three levels; .* has 4$"
    ):
        C.level_equations_table(four, model="m", outcome="y", time_parts=(), cluster_covariates=())
    with pytest.raises(ModelError, match="the model has no fixed effect 'size'"):
        C.predictor_se_table(fits[CONDITIONAL], ["size"], names=NAMES)


# ---------------------------------------------------------------------------- the step


@dataclass(frozen=True, kw_only=True)
class ClusterSpec(AnalysisSpec):
    """The spec fields that the parallel change adds (read with getattr by the module)."""

    clusters: tuple[str, ...] = ()
    cluster_covariates: dict = field(default_factory=dict)


def _context(fits, spec) -> AnalysisContext:
    models = (
        ModelSpec(MEANS, MEANS_F, "means"),
        ModelSpec(GROWTH, GROWTH_F, "growth"),
        ModelSpec(CONDITIONAL, COND_F, "conditional"),
    )
    return AnalysisContext(spec=spec, levels=None, models=models, fits=fits, notes=Notes())  # type: ignore[arg-type]


def test_step_produces_every_table_and_they_validate(fits, monkeypatch):
    monkeypatch.setattr(C, "BOOTSTRAP_REPLICATES", 10)
    spec = ClusterSpec(
        person="childid",
        time="year",
        time_name="year",
        outcome="math",
        person_covariates=("female", "lowinc"),
        clusters=("schoolid",),
        seed=3,
    )
    ctx = _context(fits, spec)
    out = C.tables(ctx)
    assert ctx.notes.warnings == []
    assert sorted(out) == sorted(
        [
            "cluster_variance_partition",
            "cluster_icc",
            "cluster_growth_variance",
            "cluster_variance_tests",
            "cluster_design_effect",
            "cluster_predictor_se",
            "cluster_sample_size",
            "cluster_reliability",
            "cluster_level_equations",
            "cluster_caterpillar",
            "cluster_trajectories",
        ]
    )
    validate_tables(out)
    # lowinc is undeclared but constant within schools: found as the cluster-level covariate
    assert out["cluster_predictor_se"]["term"].unique(maintain_order=True).to_list() == [
        "lowinc",
        "year:lowinc",
    ]
    assert out["cluster_variance_tests"]["model"].to_list() == [MEANS, GROWTH, CONDITIONAL]
    assert "10 simulations" in out["cluster_icc"]["method"][0]


def test_step_is_silent_without_clusters(fits):
    spec = AnalysisSpec(person="childid", time="year", time_name="year", outcome="math")
    assert C.tables(_context(fits, spec)) == {}
