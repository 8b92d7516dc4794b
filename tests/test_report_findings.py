"""The report's findings, publication table, labels and the rough edges of issue 14.

Hand-made tables with known numbers, so each sentence and cell can be checked
by hand: a clear group difference, one whose interval includes zero, and one
that excludes zero before but not after the Holm adjustment.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import parse_config
from pipeline.report import (
    ReportContext,
    build_findings,
    build_model_table,
    collect_alerts,
    effect_sizes,
    model_table_latex,
    model_table_markdown,
    render_report,
    write_report_files,
)
from pipeline.report.figures import attrition_figure, occasions_figure, study_design
from pipeline.report.formatting import format_share, format_value
from pipeline.report.html import comparison_note, design_text
from pipeline.report.publication import latex_escape, markdown_escape, relabel_term

FIXED = pl.DataFrame(
    {
        "model": ["unconditional_means", "unconditional_growth", "unconditional_growth"]
        + ["conditional_growth"] * 4,
        "term": ["(Intercept)", "(Intercept)", "age1", "(Intercept)", "age1", "trtY", "age1:trtY"],
        "estimate": [102.6, 111.7, -18.2, 107.8, -21.1, 6.9, 5.3],
        "std_error": [1.2, 1.4, 1.3, 2.1, 1.9, 2.7, 2.5],
        "df": [102.0, 102.0, 102.0, 102.3, 176.3, 102.3, 176.3],
        "statistic": [88.0, 80.0, -14.0, 52.0, -11.0, 2.5, 2.1],
        "p_value": [1e-90, 1e-90, 1e-26, 1e-70, 1e-22, 0.014, 0.038],
        "conf_low": [100.3, 108.9, -20.7, 103.8, -24.9, 1.4, 0.3],
        "conf_high": [104.9, 114.5, -15.7, 111.9, -17.4, 12.3, 10.3],
    }
)
VARIANCE = pl.DataFrame(
    {
        "model": ["unconditional_means", "unconditional_means", "conditional_growth"],
        "group": ["id", "Residual", "id"],
        "term1": ["(Intercept)", None, "(Intercept)"],
        "term2": [None, None, None],
        "variance": [85.7, 161.5, 126.8],
        "sd_cor": [9.26, 12.71, 11.26],
    },
    schema_overrides={"term1": pl.String, "term2": pl.String},
)
FIT = pl.DataFrame(
    {
        "model": ["unconditional_means", "unconditional_growth", "conditional_growth"],
        "nobs": [309, 309, 309],
        "ngroups": [103, 103, 103],
        "loglik": [-1271.5, -1195.9, -1179.4],
        "aic": [2549.0, 2403.8, 2374.7],
        "bic": [2560.2, 2426.2, 2404.6],
    }
)
COMPARISON = pl.DataFrame(
    {
        "model": [
            "unconditional_means",
            "growth_random_intercept",
            "unconditional_growth",
            "conditional_growth",
        ],
        "deviance": [2545.1, 2397.8, 2396.2, 2369.9],
        "aic": [2551.1, 2405.8, 2408.2, 2385.9],
        "bic": [2562.3, 2420.8, 2430.6, 2415.8],
    }
)
ICC = pl.DataFrame(
    {
        "model": ["unconditional_means"],
        "between_variance": [36.0],
        "within_variance": [64.0],
        "icc": [0.36],
        "conf_low": [0.22],
        "conf_high": [0.47],
        "interpretation": ["36% of the variance lies between persons. " * 4],
    }
)
DIFFERENCES = pl.DataFrame(
    {
        "contrast": ["trt: Y - N", "trt: Y - N", "trt: Y - N"],
        "quantity": ["status at t", "status at t", "rate of change"],
        "time": [1.0, 2.0, None],
        "estimate": [6.0, 1.0, 5.0],
        "std_error": [2.0, 2.0, 2.4],
        "df": [100.0, 100.0, 170.0],
        "p_value": [0.003, 0.62, 0.04],
        "p_holm": [0.009, 0.62, 0.08],
        "conf_low": [2.0, -3.0, 0.2],
        "conf_high": [10.0, 5.0, 9.8],
    }
)

# Feingold's d of the same differences: divided by a baseline SD of 8 (hand-checked:
# 6 / 8 = 0.75, interval 2 / 8 to 10 / 8; the change over the study 1 to 2 is 5 / 8 = 0.625)
EFFECT_SIZES = pl.DataFrame(
    {
        "model": ["conditional_growth"] * 3,
        "quantity": ["change over the study", "status", "status"],
        "group": ["Y"] * 3,
        "reference": ["N"] * 3,
        "time_from": [1.0, 1.0, 2.0],
        "time_to": [2.0, 1.0, 2.0],
        "difference": [5.0, 6.0, 1.0],
        "std_error": [2.4, 2.0, 2.0],
        "df": [170.0, 100.0, 100.0],
        "conf_low": [0.2, 2.0, -3.0],
        "conf_high": [9.8, 10.0, 5.0],
        "sd": [8.0] * 3,
        "sd_definition": ["pooled within-group SD of the observed outcome at baseline"] * 3,
        "effect_size": [0.625, 0.75, 0.125],
        "es_conf_low": [0.025, 0.25, -0.375],
        "es_conf_high": [1.225, 1.25, 0.625],
        "interval_method": ["t interval / SD"] * 3,
    }
)


def context(**changes: object) -> ReportContext:
    base = ReportContext(
        title="T",
        study_name="t",
        data_file="d.csv",
        data_sha256="0" * 64,
        rows_in=310,
        rows_used=309,
        rows_quarantined=1,
        summary=pl.DataFrame({"persons": [103]}),
        time_label="Age",
        time_unit="years",
        outcome_label="Cognitive score",
        outcome_unit="points",
        group_name="trt",
        person_name="id",
        time_term="age1",
        time_centre=1.0,
        tables={
            "fixed_effects": FIXED,
            "variance_components": VARIANCE,
            "model_fit": FIT,
            "model_comparison": COMPARISON,
            "icc": ICC,
            "group_differences": DIFFERENCES,
            "effect_sizes": EFFECT_SIZES,
        },
    )
    return dataclasses.replace(base, **changes)


def texts(ctx: ReportContext) -> list[str]:
    return [f.text for f in build_findings(ctx, collect_alerts(ctx))]


# --- findings ---------------------------------------------------------------------------


def test_a_difference_whose_interval_excludes_zero_is_stated_with_interval_and_size() -> None:
    sentence = next(t for t in texts(context()) if "differ in status at Age 1 years" in t)
    # Feingold's d from the effect_sizes table: 6 / 8 = 0.75 baseline SD, interval 2/8 to 10/8
    assert sentence == (
        "Y and N (trt) differ in status at Age 1 years (Y − N = 6.000 points, "
        "95% CI 2.000 to 10.000; Feingold d = 0.750 baseline SD of 8.000 points, "
        "95% CI 0.250 to 1.250; p = 0.003, Holm-adjusted p = 0.009)."
    )


def test_the_rate_difference_reports_d_over_the_whole_study() -> None:
    sentence = next(t for t in texts(context()) if "rate of change" in t and "Y − N" in t)
    assert (
        "Feingold d over the study (Age 1 years to 2) = 0.625 baseline SD of 8.000 points, "
        "95% CI 0.0250 to 1.225" in sentence
    )
    # without the analysis table there is no d (one definition: no fallback)
    plain = context(tables={**context().tables, "effect_sizes": EFFECT_SIZES.clear()})
    assert not any("Feingold" in t for t in texts(plain))


def test_an_interval_including_zero_is_no_evidence_not_no_difference() -> None:
    sentence = next(t for t in texts(context()) if "at Age 2 years" in t)
    assert sentence.startswith("No evidence of a difference in status at Age 2 years")
    assert "95% CI -3.000 to 5.000" in sentence and "p = 0.620" in sentence
    for overclaim in ("no difference", "did not differ", "same", "equal"):
        assert overclaim not in sentence.lower()


def test_a_difference_lost_to_the_holm_adjustment_says_so() -> None:
    sentence = next(t for t in texts(context()) if "rate of change" in t and "Y − N" in t)
    assert "excludes zero" in sentence
    assert "after the Holm adjustment across the 3 comparisons" in sentence
    assert "no evidence of a difference (p = 0.080)" in sentence
    assert "points per year" in sentence


def test_average_trajectory_and_icc_and_data_sentences() -> None:
    found = texts(context())
    assert (
        found[0]
        == "The analysis uses 103 persons and 309 of 310 rows; 1 rows (0.3%) failed validation and were left out."
    )
    assert (
        "On average (unconditional growth model), Cognitive score was 111.700 points at Age 1 "
        "years (95% CI 108.900 to 114.500) and changed by -18.200 points per year "
        "(95% CI -20.700 to -15.700), a decline." in found
    )
    assert any(
        t.startswith(
            "36.0% of the variance of Cognitive score lies between persons (ICC 0.360, 95% CI 0.220 to 0.470"
        )
        for t in found
    )


def test_a_slope_whose_interval_includes_zero_is_no_evidence_of_change() -> None:
    flat = FIXED.with_columns(
        pl.when(pl.col("term") == "age1")
        .then(-3.0)
        .otherwise(pl.col("conf_low"))
        .alias("conf_low"),
        pl.when(pl.col("term") == "age1")
        .then(1.0)
        .otherwise(pl.col("conf_high"))
        .alias("conf_high"),
    )
    ctx = context(tables={**context().tables, "fixed_effects": flat})
    sentence = next(t for t in texts(ctx) if t.startswith("On average"))
    assert "there is no evidence of an average change over time" in sentence


def test_every_finding_points_to_an_anchor_that_exists_in_the_report() -> None:
    ctx = context()
    html = render_report(ctx)
    findings = build_findings(ctx, collect_alerts(ctx))
    assert len(findings) >= 6
    ids = set(re.findall(r'id="([^"]+)"', html))
    for finding in findings:
        assert finding.source in ids, finding
        assert f'href="#{finding.source}"' in html
    # the findings come first: before the warnings and every other section
    assert html.index('id="findings"') < html.index('id="warnings"') < html.index('id="data"')


def test_findings_are_escaped() -> None:
    ctx = context(outcome_label="<b>score</b>", time_label="Age & <i>")
    html = render_report(ctx)
    findings = html[html.index('id="findings"') : html.index('id="warnings"')]
    assert "<b>" not in findings and "&lt;b&gt;score&lt;/b&gt;" in findings
    assert "Age &amp; &lt;i&gt;" in findings


def test_effect_sizes_are_the_analysis_table_and_the_report_states_the_sd() -> None:
    ctx = context()
    table = effect_sizes(ctx)
    assert table is not None and table.equals(EFFECT_SIZES)
    assert effect_sizes(context(tables={"group_differences": DIFFERENCES})) is None
    html = render_report(ctx)
    section = html[html.index('id="table-effect_sizes"') : html.index('id="uncertainty"')]
    assert "Feingold 2009" in section
    assert "pooled within-group SD of the observed outcome at baseline = 8.000" in section
    assert "treated as fixed" in section


def test_warnings_and_changes_sentences() -> None:
    warnings = pl.DataFrame(
        {"severity": ["warning"], "topic": ["boundary fit"], "message": ["singular"]}
    )
    found = texts(context(warnings=warnings))
    assert (
        "2 warnings change how to read these results (boundary fit; quarantined data); "
        "see Warnings." in found
    )
    assert "1 warning changes how to read these results (boundary fit); see Warnings." in texts(
        context(warnings=warnings, rows_quarantined=0, rows_used=310)
    )
    changes = pl.DataFrame(
        {
            "quantity": ["data file (SHA-256)", "configuration (SHA-256)", "persons", "m: age1"],
            "previous": ["a", "b", "100", "1"],
            "current": ["c", "b", "103", "2"],
            "change": ["changed", "same", "+3", "+1"],
        }
    )
    assert (
        "Since the previous run: the data changed, the configuration did not change, "
        "2 other quantities changed." in texts(context(changes=changes))
    )


# --- publication table -------------------------------------------------------------------


def test_the_model_table_puts_models_side_by_side() -> None:
    table = build_model_table(context().tables)
    assert table.models == ("unconditional_means", "unconditional_growth", "conditional_growth")
    numbers = table.numbers
    row = numbers.filter((pl.col("row") == "age1") & (pl.col("statistic") == "estimate"))
    assert row.row(0)[3:] == (None, -18.2, -21.1)
    fit = {r["row"]: r for r in numbers.filter(pl.col("section") == "fit").iter_rows(named=True)}
    assert list(fit) == ["ICC", "persons", "observations", "deviance", "AIC", "BIC"]
    # deviance, AIC, BIC from the ML fits of the comparison (not the REML fit table)
    assert fit["deviance"]["conditional_growth"] == 2369.9
    assert fit["AIC"]["unconditional_means"] == 2551.1
    assert fit["ICC"]["unconditional_means"] == 0.36 and fit["ICC"]["conditional_growth"] is None
    assert fit["persons"]["unconditional_growth"] == 103
    cells = table.cells
    first = cells.filter(pl.col("row") == "trtY").row(0)
    assert first[2:] == ("–", "–", "6.900 (2.700)")
    interval = cells.row(cells["row"].to_list().index("trtY") + 1)
    assert interval[1] == "" and interval[4] == "[1.400, 12.300]"
    variances = cells.filter(pl.col("section") == "random")["row"].to_list()
    assert variances == ["id: (Intercept)", "Residual (within-person)"]


def test_without_ml_fits_the_table_uses_the_reml_deviance() -> None:
    tables = {k: v for k, v in context().tables.items() if k != "model_comparison"}
    table = build_model_table(tables)
    deviance = table.numbers.filter(pl.col("row") == "deviance")
    assert deviance["unconditional_means"][0] == pytest.approx(2543.0)
    assert any("REML fits" in note for note in table.notes)


def test_latex_is_booktabs_and_escaped() -> None:
    names = ["a_b & c", "100% {x}", "m$\\n"]
    fixed = FIXED.with_columns(
        pl.col("model").replace(dict(zip(FIT["model"].to_list(), names, strict=True)))
    )
    fit = FIT.with_columns(pl.Series("model", names))
    table = build_model_table({"fixed_effects": fixed, "model_fit": fit})
    tex = model_table_latex(table, caption="Models #1")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    header = next(line for line in tex.splitlines() if "a\\_b" in line)
    assert header == " & a\\_b \\& c & 100\\% \\{x\\} & m\\$\\textbackslash{}n \\\\"
    assert "$-$18.200 (1.300)" in tex and "[$-$20.700, $-$15.700]" in tex
    assert "% Models \\#1" in tex
    # nothing unescaped: every & is a column separator or escaped
    body = [line for line in tex.splitlines() if not line.startswith("%")]
    for line in body:
        assert line.count("&") - line.count("\\&") in {0, len(names)}


def test_latex_escape_covers_the_special_characters() -> None:
    assert latex_escape("\\&%$#_{}~^<>|") == (
        "\\textbackslash{}\\&\\%\\$\\#\\_\\{\\}\\textasciitilde{}\\textasciicircum{}"
        "\\textless{}\\textgreater{}\\textbar{}"
    )
    assert latex_escape("a\nb") == "a b"


def test_markdown_is_a_pipe_table_and_escaped() -> None:
    fit = FIT.with_columns(pl.Series("model", ["a|b", "c_d", "*e*"]))
    fixed = FIXED.with_columns(
        pl.col("model").replace(
            dict(zip(FIT["model"].to_list(), ["a|b", "c_d", "*e*"], strict=True))
        )
    )
    md = model_table_markdown(build_model_table({"fixed_effects": fixed, "model_fit": fit}))
    lines = md.splitlines()
    assert lines[0] == "|  | a\\|b | c\\_d | \\*e\\* |"
    assert lines[1] == "|:---|---:|---:|---:|"
    table_lines = [line for line in lines if line.startswith("|")]
    for line in table_lines:  # every row has the same number of unescaped pipes
        assert len(re.findall(r"(?<!\\)\|", line)) == 5
    assert markdown_escape("x\ny `z` [l](u)") == "x y \\`z\\` \\[l\\](u)"


def test_labels_rename_terms_legends_and_contrasts(tmp_path: Path) -> None:
    labels = {"trt": {"Y": "programme", "N": "control"}}
    assert relabel_term("trtY", labels) == "trt: programme"
    assert relabel_term("age1:trtY", labels) == "age1 × trt: programme"
    assert relabel_term("trtYes", labels) == "trtYes"
    ctx = context(labels=labels)
    found = texts(ctx)
    assert any(t.startswith("Programme and control (trt) differ in status") for t in found)
    html = render_report(ctx)
    assert "trt: programme - control" in html
    written = write_report_files(context=ctx, folder=tmp_path)
    tex = next(p for p in written if p.suffix == ".tex").read_text()
    assert "trt: programme" in tex


def test_the_labels_config_key_is_validated() -> None:
    base = """[study]
name = "s"
title = "t"
[data]
path = "d.csv"
person = "id"
outcome = "y"
person_covariates = ["black"]
[data.labels]
{labels}
[time]
name = "t0"
[output]
dir = "out"
"""
    cfg = parse_config(
        base.format(labels='black = { "0" = "not Black", "1" = "Black" }'), path="s.toml"
    )
    assert cfg.data.labels == {"black": {"0": "not Black", "1": "Black"}}
    assert cfg.report.png is False
    with pytest.raises(Exception, match="labels are given for 'sex', which is not in"):
        parse_config(base.format(labels='sex = { "F" = "female" }'), path="s.toml")
    with pytest.raises(Exception, match="label of 'black' level '1' contains a line break"):
        parse_config(base.format(labels='black = { "1" = "a\\nb" }'), path="s.toml")


# --- rough edges -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1716 / 1721, "99.7%"),
        (0.99996, ">99.9%"),
        (0.9999999999999999, "100.0%"),
        (1.0, "100.0%"),
        (0.00004, "<0.1%"),
        (0.0, "0.0%"),
        (0.25, "25.0%"),
        (-0.05, "-5.0%"),
        (math.nan, "–"),
    ],
)
def test_a_share_below_100_percent_never_reads_100_percent(value: float, text: str) -> None:
    assert format_share(value) == text
    assert format_value("share", value) == text


def test_a_balanced_design_draws_no_one_bar_chart_and_no_flat_line() -> None:
    ctx = context(
        occasions_per_person=pl.DataFrame({"n_occasions": [3], "persons": [103]}),
        attrition=pl.DataFrame({"time": [1.0, 1.5, 2.0], "persons": [103] * 3, "share": [1.0] * 3}),
        patterns=pl.DataFrame({"pattern": ["X X X"], "persons": [103]}),
    )
    occasions, observed = occasions_figure(ctx), attrition_figure(ctx)
    assert occasions.chart is None and "Every person has 3 occasions" in occasions.description
    assert observed.chart is None and observed.key == "observations_by_time"
    assert design_text(ctx) == "Every person is observed at every time: no person left the study."


def test_attrition_only_where_persons_leave() -> None:
    attrition = pl.DataFrame({"time": [0.0, 1.0, 2.0], "persons": [10, 8, 6]})
    dropout = context(
        attrition=attrition,
        patterns=pl.DataFrame({"pattern": ["X X X", "X X .", "X . ."], "persons": [6, 2, 2]}),
    )
    design = study_design(dropout)
    assert design is not None and design.same_entry and design.left == 4
    assert (
        "4 of 10 persons (40.0%) have no observation at the last time (attrition)"
        in design_text(dropout)
    )
    figure = attrition_figure(dropout)
    assert figure.chart is not None and "persons who left" in str(figure.spec)
    staggered = context(
        attrition=attrition,
        patterns=pl.DataFrame({"pattern": ["X X .", ". X X", "X . ."], "persons": [4, 4, 2]}),
    )
    assert "enter at different times" in design_text(staggered)
    assert "not attrition" in design_text(staggered)
    figure = attrition_figure(staggered)
    assert figure.chart is not None and "persons who left" not in str(figure.spec)
    assert "Attrition" not in render_report(staggered).replace("attrition)", "")


def test_time_axes_are_ticked_at_the_observed_occasions() -> None:
    from report_synthetic import synthetic_context

    ctx = synthetic_context(persons=60)
    html = render_report(ctx)
    spec = re.search(r'id="spec-spaghetti">(.*?)</script>', html)
    assert spec is not None and '"values":[1.0,1.5,2.0,2.5]' in spec.group(1)


def test_a_failed_model_is_shown_once_and_auxiliary_models_are_named() -> None:
    failures = pl.DataFrame({"model": ["quadratic"], "formula": ["y ~ t"], "error": ["boom"]})
    warnings = pl.DataFrame(
        {
            "severity": ["warning"],
            "topic": ["model failure"],
            "message": ["model 'quadratic' (y ~ t) could not be fitted: boom"],
        }
    )
    alerts = collect_alerts(context(failures=failures, warnings=warnings))
    about = [a for a in alerts if "quadratic" in a.message]
    assert len(about) == 1 and about[0].severity == "error"
    # a failure the warnings do not mention still gets its own error
    alerts = collect_alerts(context(failures=failures))
    assert [a.severity for a in alerts if "quadratic" in a.message] == ["error"]
    note = comparison_note(context())
    assert note.startswith(
        "growth_random_intercept (the unconditional growth model with a random intercept"
    )
    assert note.endswith("so the Models section does not show it.")
    assert note in render_report(context())


def test_long_text_columns_become_paragraphs_under_the_table() -> None:
    html = render_report(context())
    icc = html[html.index('id="table-icc"') :]
    icc = icc[: icc.index("</section>")]
    header = icc[: icc.index("</thead>")]
    assert "interpretation" not in header
    assert '<p class="prose">36% of the variance lies between persons.' in icc


def test_png_copies_only_when_the_config_asks() -> None:
    text = """[study]
name = "s"
title = "t"
[data]
path = "d.csv"
person = "id"
outcome = "y"
[time]
name = "t0"
[report]
png = true
[output]
dir = "out"
"""
    assert parse_config(text, path="s.toml").report.png is True


# --- speed: the JavaScript bundle is kept in the private cache -----------------------------


def test_the_bundle_is_cached_privately_and_read_back_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.report import html

    monkeypatch.setenv("GROWTH_CACHE_DIR", str(tmp_path / "cache"))
    made = html._make_bundle()
    files = list((tmp_path / "cache" / html.BUNDLE_CACHE).glob("*.js"))
    assert len(files) == 1 and (files[0].stat().st_mode & 0o077) == 0
    assert (tmp_path / "cache" / html.BUNDLE_CACHE).stat().st_mode & 0o777 == 0o700
    calls: list[object] = []
    monkeypatch.setattr(html.vl_convert, "javascript_bundle", lambda **k: calls.append(k) or "")
    assert html._make_bundle() == made and calls == []  # read back, not made again
    # a truncated file (no end marker) is not trusted: the bundle is made again
    files[0].write_text(made[:1000], encoding="utf-8")
    html._make_bundle()
    assert len(calls) == 1


def test_a_shared_cache_folder_is_not_used_for_the_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.report import html

    shared = tmp_path / "shared"
    (shared / html.BUNDLE_CACHE).mkdir(parents=True)
    shared.chmod(0o777)
    monkeypatch.setenv("GROWTH_CACHE_DIR", str(shared))
    assert html.bundle_cache_dir() is None
    planted = shared / html.BUNDLE_CACHE / "planted.js"
    planted.write_text("alert(1)", encoding="utf-8")
    monkeypatch.setattr(html.vl_convert, "javascript_bundle", lambda **k: "/* made */")
    assert html._make_bundle() == "/* made */"
    monkeypatch.setenv("GROWTH_CACHE_DIR", str(tmp_path / "private"))
    folder = html.bundle_cache_dir()
    assert folder is not None and folder.parent == tmp_path / "private"
