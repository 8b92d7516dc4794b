"""The uncertainty step in the run (pipeline/analysis/uncertainty.py): the Early example
produces its tables with hand-checkable values; [analysis] turns on the bootstrap,
the profile intervals and the influence refits; the report shows them with captions
that say what each statistic is and is not."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import polars as pl
import pytest
from analysis_support import EARLY_TOML, REFERENCE, early_config, early_frame, levels_of

from pipeline.analysis import STEPS, Step, analyse
from pipeline.analysis import uncertainty as step
from pipeline.analysis.profile import profile_confint
from pipeline.analysis.spec import AnalysisSpec
from pipeline.config import parse_config
from pipeline.errors import ConfigError
from pipeline.model.fit import fit_growth
from pipeline.report import render_report
from schemas.tables import ALWAYS, TABLE_SCHEMAS

# every step the uncertainty tables depend on: the models only (the step fits nothing else)
ONLY = tuple(s for s in STEPS if s.run is step.tables) + (Step("models", lambda ctx: {}),)


def config_text(analysis: str = "", data_extra: str = "") -> str:
    text = EARLY_TOML.format(time_name="age1", scale=1.0, extra="")
    if data_extra:
        text = text.replace(
            'person_covariates = ["trt"]', f'person_covariates = ["trt"]\n{data_extra}'
        )
    return text + (f"\n[analysis]\n{analysis}\n" if analysis else "")


@pytest.fixture(scope="module")
def early():
    cfg = early_config()
    return analyse(levels_of(early_frame(), cfg), cfg)


def test_the_early_run_makes_every_always_table_of_the_step(early) -> None:
    for name in (
        "effect_sizes",
        "dropout",
        "dropout_summary",
        "functional_form",
        "implied_means",
        "r2_y_yhat",
        "between_person_variance",
        "within_between",
    ):
        assert name in ALWAYS and name in early.tables, name
    for name in ("variance_intervals", "bootstrap", "influence"):  # off by default
        assert name not in ALWAYS and name not in early.tables, name
    assert not early.warnings.filter(
        pl.col("topic").str.contains("effect|dropout|form|R\\^2")
    ).height


def test_feingold_d_matches_the_group_differences_and_a_hand_computed_sd(early) -> None:
    sizes = early.tables["effect_sizes"]
    differences = early.tables["group_differences"]
    # the pooled within-group SD of cog at age 1, by hand
    data = early_frame().filter(pl.col("age") == 1.0)
    ss = dof = 0.0
    for _, part in data.group_by("trt"):
        v = part["cog"].to_numpy()
        ss += float(((v - v.mean()) ** 2).sum())
        dof += v.size - 1
    sd = math.sqrt(ss / dof)
    assert sizes["sd"].to_list() == pytest.approx([sd] * 4)
    assert sizes["model"].unique().to_list() == ["conditional_growth"]
    change = sizes.row(0, named=True)
    assert (change["quantity"], change["time_from"], change["time_to"]) == (
        "change over the study",
        1.0,
        2.0,
    )
    rate = differences.filter(pl.col("quantity").str.starts_with("rate")).row(0, named=True)
    # the change over one year (age 1 to 2) is the difference in rate per year
    assert change["difference"] == pytest.approx(rate["estimate"], rel=1e-8)
    assert change["effect_size"] == pytest.approx(rate["estimate"] / sd, rel=1e-8)
    assert change["es_conf_low"] == pytest.approx(rate["conf_low"] / sd, rel=1e-6)
    status = sizes.filter(pl.col("quantity") == "status").sort("time_from")
    assert status["time_from"].to_list() == [1.0, 1.5, 2.0]  # original units
    by_time = differences.filter(pl.col("quantity").str.starts_with("status")).sort("time")
    assert status["difference"].to_list() == pytest.approx(by_time["estimate"].to_list())
    assert "age = 1 years" in change["sd_definition"] and "age1" not in change["sd_definition"]


def test_r2_y_yhat_of_the_growth_model_is_the_squared_correlation_with_time(early) -> None:
    r2 = {r["model"]: r["r2_y_yhat"] for r in early.tables["r2_y_yhat"].iter_rows(named=True)}
    frame = early_frame()
    by_hand = float(np.corrcoef(frame["cog"].to_numpy(), frame["age"].to_numpy())[0, 1] ** 2)
    assert r2["unconditional_growth"] == pytest.approx(by_hand, rel=1e-8)
    assert r2["unconditional_means"] == 0.0
    assert r2["unconditional_growth"] < r2["conditional_growth"] < 1


def test_means_model_variance_test_and_functional_form(early) -> None:
    test = early.tables["between_person_variance"].row(0, named=True)
    assert test["chisq"] == pytest.approx(2 * (test["loglik_mixed"] - test["loglik_ols"]))
    from scipy import stats

    assert test["p_value"] == pytest.approx(stats.chi2.sf(test["chisq"], 1) / 2)
    assert test["tau00"] > 0 and test["p_value"] < 1e-6
    form = early.tables["functional_form"]
    assert form["model"].to_list() == ["polynomial", "saturated means"]
    assert form["df"][1] == 2  # 3 occasions x (intercept, trt) = 6 means against 4 columns
    means = early.tables["implied_means"]
    key = means.filter(pl.col("model") == "conditional_growth").sort("occasion")
    observed = early_frame().group_by("age").agg(pl.col("cog").mean()).sort("age")
    assert key["occasion"].to_list() == observed["age"].to_list()  # original units
    assert key["observed_mean"].to_list() == pytest.approx(observed["cog"].to_list())
    # the marginal means of a model with an intercept average to the observed grand mean
    assert float((key["model_mean"] * key["n"]).sum() / key["n"].sum()) == pytest.approx(
        float(early_frame()["cog"].mean()), rel=1e-6
    )


def test_nobody_dropped_out_of_early_and_the_sentence_says_only_mar() -> None:
    cfg = early_config()
    an = analyse(levels_of(early_frame(), cfg), cfg, steps=ONLY)
    assert an.tables["dropout"].height == 0
    summary = an.tables["dropout_summary"].row(0, named=True)
    assert (summary["persons"], summary["completers"], summary["dropouts"]) == (103, 103, 0)
    assert summary["sentence"].startswith("Nobody dropped out")


def test_dropouts_are_compared_with_completers() -> None:
    cfg = early_config()
    frame = early_frame()
    leavers = sorted(frame["id"].unique().to_list())[:25]
    frame = frame.filter(~(pl.col("id").is_in(leavers) & (pl.col("age") == 2.0)))
    an = analyse(levels_of(frame, cfg), cfg, steps=ONLY)
    table = an.tables["dropout"]
    assert set(table["kind"]) == {
        "baseline status",
        "covariate",
        "rate of change",
        "pattern mixture",
    }
    baseline = table.filter(pl.col("kind") == "baseline status").row(0, named=True)
    assert (baseline["n_completers"], baseline["n_dropouts"]) == (78, 25)
    first = frame.filter(pl.col("age") == 1.0)
    assert baseline["mean_dropouts"] == pytest.approx(
        float(first.filter(pl.col("id").is_in(leavers))["cog"].mean())
    )
    summary = an.tables["dropout_summary"].row(0, named=True)
    assert summary["dropouts"] == 25
    assert "missing at random" in summary["sentence"]
    assert "MAR holds" not in summary["sentence"]


def test_the_bootstrap_is_on_with_a_replicate_count_and_reproducible() -> None:
    cfg = parse_config(
        config_text("bootstrap = 12\nbootstrap_workers = 1"), path=REFERENCE / "x.toml"
    )
    spec = AnalysisSpec.from_config(cfg)
    assert (spec.bootstrap, spec.bootstrap_workers) == (12, 1)
    levels = levels_of(early_frame(), cfg)
    an = analyse(levels, cfg, steps=ONLY)
    boot = an.tables["bootstrap"]
    assert TABLE_SCHEMAS["bootstrap"].validate(boot) is not None
    assert boot["statistic"].to_list() == [
        "ICC (unconditional means model)",
        "pseudo-R^2 of the id: (Intercept) variance (against unconditional_growth)",
        "pseudo-R^2 of the id: age1 variance (against unconditional_growth)",
        "Feingold d, change over the study",
    ]
    assert boot["model"].to_list() == ["unconditional_means"] + ["conditional_growth"] * 3
    assert boot["replicates"].to_list() == [12] * 4
    icc = boot.row(0, named=True)
    means = an.fits["unconditional_means"]
    tau = float(means.covariance[0, 0])
    assert icc["estimate"] == pytest.approx(tau / (tau + means.sigma**2))
    assert 0 < icc["conf_low"] < icc["estimate"] < icc["conf_high"] < 1
    d = boot.row(3, named=True)
    assert d["estimate"] == pytest.approx(an.tables["effect_sizes"]["effect_size"][0])
    again = analyse(levels, cfg, steps=ONLY).tables["bootstrap"]
    assert again.equals(boot)  # seeded: the same numbers on every run


def test_influence_is_capped_with_a_seeded_sample() -> None:
    cfg = parse_config(config_text("influence = 4"), path=REFERENCE / "x.toml")
    levels = levels_of(early_frame(), cfg)
    table = analyse(levels, cfg, steps=ONLY).tables["influence"]
    persons = table["person"].unique(maintain_order=True).to_list()
    assert len(persons) == 4 and table.height == 4 * 4  # 4 persons x 4 variance components
    assert set(persons) <= set(early_frame()["id"].to_list())
    again = analyse(levels, cfg, steps=ONLY).tables["influence"]
    assert again.equals(table)
    assert (table["cooks_distance"] >= 0).all() and table["converged"].all()


def test_within_and_between_effects_of_a_time_varying_covariate() -> None:
    rng = np.random.default_rng(3)
    frame = early_frame()
    person_level = {p: rng.normal() for p in frame["id"].unique().sort().to_list()}
    frame = frame.with_columns(
        (
            pl.col("id").replace_strict(person_level, return_dtype=pl.Float64)
            + rng.normal(size=frame.height)
        ).alias("x")
    )
    cfg = parse_config(config_text(data_extra='time_covariates = ["x"]'), path=REFERENCE / "x.toml")
    an = analyse(levels_of(frame, cfg), cfg, steps=ONLY)
    table = an.tables["within_between"]
    assert table["effect"].to_list() == [
        "within",
        "between",
        "contextual (between - within)",
        "pooled",
    ]
    pooled = fit_growth(
        frame.with_columns((pl.col("age") - 1.0).alias("age1")),
        "cog ~ x + age1 + trt + age1:trt + (age1 | id)",
        reml=True,
    )
    expected = pooled.fixed_effects.filter(pl.col("term") == "x")["estimate"][0]
    assert table["estimate"][3] == pytest.approx(expected, rel=1e-6)
    assert table["estimate"][2] == pytest.approx(table["estimate"][1] - table["estimate"][0])


@pytest.mark.slow
def test_profile_intervals_of_the_key_model() -> None:
    cfg = parse_config(config_text('profile = "key"'), path=REFERENCE / "x.toml")
    an = analyse(levels_of(early_frame(), cfg), cfg, steps=ONLY)
    table = an.tables["variance_intervals"]
    assert table["model"].unique().to_list() == ["conditional_growth"]
    direct = profile_confint(an.fits["conditional_growth"])
    assert table.drop("model").equals(direct)


def test_profile_selection() -> None:
    cfg = early_config()
    spec = AnalysisSpec.from_config(cfg)
    an = analyse(levels_of(early_frame(), cfg), spec, steps=(Step("models", lambda ctx: {}),))
    from pipeline.analysis.context import AnalysisContext, Notes

    def ctx(profile: str) -> AnalysisContext:
        return AnalysisContext(
            spec=dataclasses.replace(spec, profile=profile),
            levels=levels_of(early_frame(), cfg),
            models=an.models,
            fits=an.fits,
            notes=Notes(),
        )

    assert step.profiled_models(ctx("none")) == ()
    assert step.profiled_models(ctx("key")) == ("conditional_growth",)
    assert step.profiled_models(ctx("all")) == tuple(an.fits)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "bootstrap = -1",
            r"\[analysis\] bootstrap: expected a number greater than or equal to 0, got -1",
        ),
        (
            'profile = "some"',
            r"\[analysis\] profile: expected one of 'none', 'key' or 'all', got 'some'",
        ),
        ("influnce = 3", r"\[analysis\] key 'influnce' is not allowed; did you mean 'influence'\?"),
        (
            "bootstrap_workers = 0",
            r"\[analysis\] bootstrap_workers: expected a number greater than or equal to 1",
        ),
    ],
)
def test_bad_analysis_settings_are_one_line_errors(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        parse_config(config_text(line), path=REFERENCE / "x.toml")
    assert "\n" not in str(error.value)


def test_defaults_are_off() -> None:
    spec = AnalysisSpec.from_config(early_config())
    assert (spec.bootstrap, spec.bootstrap_workers, spec.profile, spec.influence) == (
        0,
        1,
        "none",
        0,
    )


# --- the report ----------------------------------------------------------------------------


def _section(html: str) -> str:
    return html[html.index('id="uncertainty"') : html.index('id="diagnostics"')]


def test_the_report_section_says_what_each_statistic_is_and_is_not() -> None:
    from report_synthetic import synthetic_context

    ctx = synthetic_context(persons=150, seed=3)
    section = _section(render_report(ctx))
    for caption in (
        "Profile-likelihood 95% intervals of the SDs, correlations and residual SD (ML, as lme4&#39;s confint",
        "Parametric-bootstrap 95% percentile intervals (seeded, reproducible)",
        "MAR itself cannot be tested",
        "consistent with data missing at random, it does not show it",
        "Likelihood-ratio test (ML) of the key model&#39;s polynomial in time against the saturated means model",
        "not a share of any variance component",
        "50:50 mixture of χ²(0) and χ²(1)",
        "a seeded sample of 30 of 150 persons",
        '<th scope="col">quantity</th>',  # the bootstrapped quantity, not a "t / z" column
        'id="chart-implied_means"',
    ):
        assert caption in section, caption
    # off by default: the report says so and how to turn each on
    off = dataclasses.replace(
        ctx,
        tables={
            k: v
            for k, v in ctx.tables.items()
            if k not in {"bootstrap", "variance_intervals", "influence"}
        },
    )
    section = _section(render_report(off))
    assert "Off ([analysis] bootstrap = 0, the default): set [analysis] bootstrap = 1000" in section
    assert "Off ([analysis] profile = &#34;none&#34;, the default)" in section
    assert "Off ([analysis] influence = 0, the default)" in section


def test_the_report_escapes_the_dropout_sentence_and_statistic_names() -> None:
    from report_synthetic import synthetic_context

    ctx = synthetic_context(persons=60, seed=4)
    evil = "<script>alert(1)</script>"
    tables = dict(ctx.tables)
    tables["dropout_summary"] = tables["dropout_summary"].with_columns(
        pl.lit(evil).alias("sentence")
    )
    tables["bootstrap"] = tables["bootstrap"].with_columns(pl.lit(evil).alias("statistic"))
    section = _section(render_report(dataclasses.replace(ctx, tables=tables)))
    assert evil not in section
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section


def test_a_staggered_design_gets_a_caveat_on_dropout() -> None:
    from report_synthetic import synthetic_context

    ctx = synthetic_context(persons=80, seed=5)
    caveat = "includes persons whose window of observation ended early by design"
    assert caveat not in _section(render_report(ctx))  # everyone enters at the first wave
    staggered = ctx.patterns.with_columns(pl.lit(". X X X").alias("pattern"))
    assert caveat in _section(render_report(dataclasses.replace(ctx, patterns=staggered)))


def test_the_analysis_section_is_part_of_the_cache_key() -> None:
    from pipeline.runinfo import analysis_fingerprint

    off = parse_config(config_text(), path=REFERENCE / "x.toml").model_dump(mode="json")
    on = parse_config(config_text("bootstrap = 100"), path=REFERENCE / "x.toml").model_dump(
        mode="json"
    )
    keys = [
        analysis_fingerprint(data_sha256="0" * 64, config=c, code="c", versions={"numpy": "1"})
        for c in (off, on)
    ]
    assert keys[0] != keys[1]  # turning the bootstrap on must not reuse fits cached without it


def test_the_refitting_analyses_are_capped_by_persons_and_the_report_says_so() -> None:
    """[limits] max_persons_refits below the 103 persons of Early: bootstrap, profile and
    influence are asked for but not run; a note names each, and the report shows the note
    in the analysis's place instead of "Off (... the default)"."""
    text = config_text('bootstrap = 5\nprofile = "key"\ninfluence = 3')
    text = text + "\n[limits]\nmax_persons_refits = 50\n"
    cfg = parse_config(text, path=REFERENCE / "x.toml")
    an = analyse(levels_of(early_frame(), cfg), cfg, steps=ONLY)
    for name in ("variance_intervals", "bootstrap", "influence"):
        assert name not in an.tables, name
    notes = an.warnings.filter(pl.col("message").str.starts_with(step.LIMIT_NOTE))
    assert sorted(notes["topic"].to_list()) == [
        "parametric bootstrap",
        "person influence",
        "profile intervals",
    ]
    assert set(notes["severity"].to_list()) == {"note"}
    boot = notes.filter(pl.col("topic") == "parametric bootstrap")["message"][0]
    assert boot == (
        "Not run: [analysis] bootstrap = 5 asks for 5 refits of each bootstrapped model, but "
        "the study has 103 persons, more than [limits] max_persons_refits = 50; raise that "
        "limit to run it (its time grows with the persons times the number of refits)"
    )
    # at the limit they run
    at = parse_config(
        config_text("influence = 2") + "\n[limits]\nmax_persons_refits = 103\n",
        path=REFERENCE / "x.toml",
    )
    assert "influence" in analyse(levels_of(early_frame(), at), at, steps=ONLY).tables

    from report_synthetic import synthetic_context

    ctx = synthetic_context(persons=60, seed=4)
    capped = dataclasses.replace(
        ctx,
        tables={k: v for k, v in ctx.tables.items() if k != "bootstrap"},
        warnings=pl.concat([ctx.warnings, notes.filter(pl.col("topic") == "parametric bootstrap")])
        if ctx.warnings is not None
        else notes.filter(pl.col("topic") == "parametric bootstrap"),
    )
    section = _section(render_report(capped))
    assert "Not run: [analysis] bootstrap = 5 asks for 5 refits" in section
    assert "Off ([analysis] bootstrap = 0, the default)" not in section
