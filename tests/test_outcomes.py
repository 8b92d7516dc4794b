"""Several outcomes in one run (``[data] outcomes``): config messages, the row rule, the
flow end to end (per-outcome estimates equal one-outcome runs exactly, an ``outcome``
column in every table file, the manifest, the cache key), and the report in Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from analysis_support import report_context
from outcomes_synthetic import simulate, write_study

from pipeline.analysis import analyse
from pipeline.config import load_config
from pipeline.errors import ConfigError, DataError
from pipeline.io import load_data
from pipeline.outcomes import validate_outcomes
from pipeline.report import build_outcomes_context, render_report, write_report_files
from pipeline.reshape import describe, split_levels
from pipeline.validate import validate_data


def _error(folder: Path, old: str, new: str) -> str:
    config = write_study(folder)
    config.write_text(config.read_text().replace(old, new), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    return str(caught.value)


OUTCOMES_LINE = 'outcomes = ["math", "read"]'


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (
            'outcomes = ["math", "read", "math"]',
            "[data] outcomes: lists 'math' more than once; expected each outcome once",
        ),
        (
            'outcome = "math"\n' + OUTCOMES_LINE,
            "[data] outcome and outcomes are both given; expected one of them: "
            'outcome = "score" for one outcome, outcomes = ["math", "read"] for several',
        ),
        (
            'outcomes = ["math", "id"]',
            "[data]: 'outcomes (id)' and 'person' both name the column 'id'; expected "
            "different columns",
        ),
        (
            'outcomes = ["math", "trt"]',
            "[data]: covariate 'trt' is also the outcomes (trt) column; expected another column",
        ),
    ],
)
def test_config_messages_for_the_outcome_list(tmp_path: Path, new: str, expected: str) -> None:
    message = _error(tmp_path, OUTCOMES_LINE, new)
    assert message == f"{tmp_path / 'two.toml'}: {expected}"


def test_config_messages_for_labels_and_units(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        'outcome_label = { math = "Mathematics", read = "Reading" }',
        'outcome_label = { math = "Mathematics", raed = "Reading" }',
    )
    assert message.endswith(
        "[data]: outcome_label is given for 'raed', which is not an outcome (math, read); "
        "did you mean 'read'?"
    )
    message = _error(
        tmp_path / "b", 'outcome_unit = { math = "points", read = "words" }', 'outcome_unit = "pts"'
    )
    assert message.endswith(
        "[data]: outcome_unit is one text but there are 2 outcomes; expected a table with one "
        'per outcome: outcome_unit = { math = "...", read = "..." }'
    )
    message = _error(
        tmp_path / "c",
        'outcome_unit = { math = "points", read = "words" }',
        'outcome_unit = { math = "points", read = "two\\nlines" }',
    )
    assert message.endswith(
        "[data] outcome_unit: 'read' contains a line break (\\n); expected a label on one line "
        "without control characters, got 'two\\nlines'"
    )


def test_one_outcome_keys_still_work_and_per_outcome_configs(tmp_path: Path) -> None:
    cfg = load_config(write_study(tmp_path))
    assert cfg.outcomes == ["math", "read"] and cfg.data.outcome == "math"
    read = cfg.for_outcome("read")
    assert (read.data.outcome, read.outcomes) == ("read", ["read"])
    assert (read.data.outcome_label, read.data.outcome_unit) == ("Reading", "words")
    assert read.source_text == cfg.source_text
    single = load_config(Path(__file__).resolve().parents[1] / "config" / "early.toml")
    assert single.outcomes == ["cog"] and single.data.outcome_label == "Cognitive score"


def test_an_unknown_outcome_column_is_named_with_its_key(tmp_path: Path) -> None:
    config = write_study(tmp_path)
    config.write_text(config.read_text().replace(OUTCOMES_LINE, 'outcomes = ["math", "raed"]'))
    config.write_text(config.read_text().replace("read = ", "raed = "))
    with pytest.raises(DataError) as caught:
        load_data(load_config(config))
    assert str(caught.value).startswith(
        f"{tmp_path / 'two.csv'}: column 'raed' ([data] outcomes in two.toml) not found; "
        "did you mean 'read'? The file has: id, age, trt, math, read"
    )


def test_a_missing_value_is_kept_for_the_other_outcome_a_bad_one_quarantines_the_row(
    tmp_path: Path,
) -> None:
    frame = simulate(40, seed=5).with_columns(pl.col("math", "read").cast(pl.String))
    # line 2: read missing (kept, used for math); line 3: read not a number (quarantined);
    # line 4: math infinite (quarantined); line 5: both missing (kept, used by neither)
    frame = frame.with_columns(
        read=pl.when(pl.int_range(pl.len()) == 0)
        .then(None)
        .when(pl.int_range(pl.len()) == 1)
        .then(pl.lit("n/a"))
        .when(pl.int_range(pl.len()) == 3)
        .then(None)
        .otherwise(pl.col("read")),
        math=pl.when(pl.int_range(pl.len()) == 2)
        .then(pl.lit("inf"))
        .when(pl.int_range(pl.len()) == 3)
        .then(None)
        .otherwise(pl.col("math")),
    )
    cfg = load_config(write_study(tmp_path, frame=frame))
    loaded = load_data(cfg)
    checked = validate_outcomes(loaded, cfg)
    run = checked.run
    assert run.rows_in == loaded.frame.height == run.rows_used + run.rows_quarantined
    assert run.quarantine["_line"].to_list() == [3, 4]
    reasons = dict(zip(run.quarantine["_line"], run.quarantine["reason"], strict=True))
    assert "outcome (read) 'n/a' is not a number" in reasons[3]
    assert "outcome (math)" in reasons[4] and "infinite" in reasons[4], reasons[4]
    assert sum(run.reasons["rows"]) == 2
    math, read = checked.per_outcome["math"], checked.per_outcome["read"]
    read_missing = frame["read"].is_null().sum()
    assert read.missing_outcome == read_missing  # lines 2 and 5 and the simulated gaps
    assert math.missing_outcome == 1  # line 5
    assert run.missing_outcome == 1  # line 5 has neither outcome
    for name, own in checked.per_outcome.items():
        assert own.valid.height == run.rows_used
        assert own.valid.schema[name] == pl.Float64
    # line 2 (read missing) is used for math
    assert math.valid.filter(pl.col("_line") == 2)["math"].is_not_null().all()
    # one outcome alone: exactly validate_data
    alone = cfg.for_outcome("math").model_copy()
    assert validate_outcomes(loaded, alone).run.quarantine.equals(
        validate_data(loaded, alone).quarantine
    )


def test_the_run_limit_counts_the_rows_of_every_outcome(tmp_path: Path) -> None:
    frame = simulate(20, seed=6).with_columns(pl.col("read").cast(pl.String))
    frame = frame.with_columns(
        read=pl.when(pl.int_range(pl.len()) < 20).then(pl.lit("x")).otherwise(pl.col("read"))
    )
    config = write_study(tmp_path, frame=frame)
    cfg = load_config(config)
    from pipeline.errors import QuarantineLimitError

    with pytest.raises(QuarantineLimitError) as caught:
        validate_outcomes(load_data(cfg), cfg)
    assert "20 of 80 rows (25.0%) are invalid" in str(caught.value)
    assert "checked for the outcomes math, read" in str(caught.value)
    validation = caught.value.validation
    assert validation.rows_in == validation.rows_used + validation.rows_quarantined == 80


def _one_outcome(cfg, loaded, name):
    own = cfg.for_outcome(name)
    validation = validate_data(loaded, own)
    levels = split_levels(validation.valid, own)
    return validation, levels, describe(levels, own), analyse(levels, own)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two")
    cfg = load_config(write_study(folder))
    loaded = load_data(cfg)
    checked = validate_outcomes(loaded, cfg)
    outcomes = {}
    for name in cfg.outcomes:
        own = cfg.for_outcome(name)
        levels = split_levels(checked.per_outcome[name].valid, own)
        outcomes[name] = (
            checked.per_outcome[name],
            levels,
            describe(levels, own),
            analyse(levels, own),
        )
    ctx = build_outcomes_context(
        cfg=cfg, loaded=loaded, validation=checked.run, outcomes=outcomes, versions={"x": "1"}
    )
    return {"cfg": cfg, "loaded": loaded, "ctx": ctx, "outcomes": outcomes, "folder": folder}


def test_each_outcome_equals_a_one_outcome_run_exactly(two) -> None:
    for name in ("math", "read"):
        alone = _one_outcome(two["cfg"], two["loaded"], name)[3]
        together = two["outcomes"][name][3]
        for table in ("fixed_effects", "variance_components", "model_fit", "group_differences"):
            assert together.tables[table].equals(alone.tables[table]), (name, table)


def test_every_table_file_has_the_outcome_column(two, tmp_path: Path) -> None:
    ctx = two["ctx"]
    written = write_report_files(context=ctx, folder=tmp_path)
    tables = [p for p in written if p.suffix in {".csv", ".parquet"}]
    assert len(tables) > 40
    for path in tables:
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
        assert frame.columns[0] == "outcome", path.name
        if path.stem != "validation_reasons":
            assert set(frame["outcome"].drop_nulls().unique()) <= {"math", "read"}, path.name
    fixed = pl.read_csv(tmp_path / "tables" / "fixed_effects.csv")
    assert set(fixed["outcome"]) == {"math", "read"}
    for name in ("math", "read"):
        own = two["outcomes"][name][3].tables["fixed_effects"]
        mine = pl.read_parquet(tmp_path / "tables" / "fixed_effects.parquet").filter(
            pl.col("outcome") == name
        )
        assert mine.drop("outcome").equals(own)
    # the publication table: numbers per outcome, the paper files one table per outcome
    numbers = pl.read_csv(tmp_path / "tables" / "model_table.csv")
    assert numbers.columns[:2] == ["outcome", "section"]
    assert set(numbers["outcome"]) == {"math", "read"}
    markdown = (tmp_path / "tables" / "model_table.md").read_text()
    assert "Multilevel growth models: Mathematics (math)" in markdown
    assert "Multilevel growth models: Reading (read)" in markdown
    latex = (tmp_path / "tables" / "model_table.tex").read_text()
    assert latex.count("\\begin{tabular}") == 2
    comparison = pl.read_csv(tmp_path / "tables" / "outcome_comparison.csv")
    assert comparison.columns == [
        "outcome",
        "model",
        "term",
        "estimate",
        "std_error",
        "conf_low",
        "conf_high",
        "p_value",
    ]
    assert comparison["term"].to_list()[:2] == ["(Intercept)", "(Intercept)"]
    assert comparison["outcome"].to_list()[:2] == ["math", "read"]
    charts = sorted(p.name for p in written if p.suffix == ".svg")
    assert "math_spaghetti.svg" in charts and "read_spaghetti.svg" in charts
    assert "outcome_comparison.svg" in charts


def test_one_outcome_table_files_gain_the_outcome_column_only(tmp_path: Path) -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "early.toml")

    ctx = report_context(cfg, versions={"x": "1"})
    write_report_files(context=ctx, folder=tmp_path)
    fixed = pl.read_parquet(tmp_path / "tables" / "fixed_effects.parquet")
    assert fixed.columns[0] == "outcome" and set(fixed["outcome"]) == {"cog"}
    assert fixed.drop("outcome").equals(ctx.tables["fixed_effects"])


def test_the_report_has_findings_per_outcome_and_the_comparison(two) -> None:
    html = render_report(two["ctx"])
    findings = html[
        html.index('<section id="findings"') : html.index('<section id="outcomes-compared"')
    ]
    assert '<h3 id="o1-findings">Mathematics (math)</h3>' in findings
    assert '<h3 id="o2-findings">Reading (read)</h3>' in findings
    assert "The analysis of Mathematics uses 120 persons and 480 of 480 rows" in findings
    assert "(0 valid rows have no value of it)" in findings
    read_missing = two["outcomes"]["read"][0].missing_outcome
    assert f"The analysis of Reading uses 120 persons and {480 - read_missing} of 480" in findings
    compared = html[
        html.index('<section id="outcomes-compared"') : html.index('<section id="warnings"')
    ]
    assert "<td>Mathematics (math)</td>" in compared and "<td>Reading (read)</td>" in compared
    table = compared[compared.index('id="table-outcome_comparison"') :]
    table = table[: table.index("</table>")]
    assert table.count("<td>(Intercept)</td>") == 1  # the term on its first row only
    assert table.count("<td>Reading (read)</td>") == 4  # one row per term
    assert "Model conditional_growth, fitted to each outcome" in compared
    # the sections of each outcome, with ids of their own
    for prefix, title in (("o1-", "Mathematics (math)"), ("o2-", "Reading (read)")):
        assert f'<h2 id="{prefix}outcome-title">Outcome: {title}</h2>' in html
        for section in ("model-table", "data", "models", "groups", "diagnostics"):
            assert f'<section id="{prefix}{section}"' in html
        assert f'id="chart-{prefix}spaghetti"' in html
    import re

    ids = re.findall(r' id="([^"]+)"', html)
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1][:5]
    # every finding's link names an element of the report
    for target in re.findall(r'<a class="source" href="#([^"]+)"', html):
        assert target in ids, target


def test_the_report_renders_in_chromium(two, tmp_path: Path) -> None:
    headless = pytest.importorskip("headless_chromium")
    chromium = headless.find_chromium()
    if chromium is None:
        pytest.skip("headless Chromium not found")
    report = tmp_path / "two.html"
    report.write_text(render_report(two["ctx"]), encoding="utf-8")
    page = headless.ChromiumPage(executable=chromium, profile=tmp_path / "profile")
    page.__enter__()
    try:
        page.open(report.resolve().as_uri())
        state = page.wait_until("document.body.getAttribute('data-charts')", timeout=90)
        assert state == "rendered", page.log.errors()
        drawn = page.evaluate(
            "Array.from(document.querySelectorAll('div.chart')).map(el => [el.id, "
            "el.querySelector('svg') !== null])"
        )
        assert len(drawn) >= 16 and all(ok for _, ok in drawn), drawn
        expected = {"chart-o1-spaghetti", "chart-o2-spaghetti", "chart-outcome_comparison"}
        assert expected <= {key for key, _ in drawn}
        assert page.log.errors() == []
        cut = page.evaluate(
            "Array.from(document.querySelectorAll('.table-wrap'))"
            ".filter(w => w.scrollWidth > w.clientWidth + 1).map(w => w.id)"
        )
        # the tables of this layout fit (ols_vs_mlm is as wide as in a one-outcome report)
        assert not {"table-outcome_rows", "table-outcome_comparison"} & set(cut), cut
        first = page.evaluate("document.querySelector('main section').id")
        assert first == "findings"
        page.screenshot(tmp_path / "two.png")
    finally:
        page.__exit__(None, None, None)


@pytest.mark.usefixtures("prefect_harness")
def test_the_flow_runs_every_outcome_and_reuses_each_outcome_s_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.study import growth_study

    monkeypatch.setenv("GROWTH_CACHE_DIR", str(tmp_path / "cache"))
    config = write_study(tmp_path / "study")
    first = growth_study(config=str(config), output=str(tmp_path / "out"))
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outcomes"] == ["math", "read"]
    assert manifest["rows_in"] == manifest["rows_used"] + manifest["rows_quarantined"] == 480
    per = manifest["per_outcome"]
    assert per["math"]["rows_with_outcome"] == 480 and per["math"]["rows_missing_outcome"] == 0
    assert per["read"]["rows_with_outcome"] + per["read"]["rows_missing_outcome"] == 480
    assert "conditional_growth" in per["read"]["models"]["fitted"]
    keys = manifest["analysis"]["fingerprints"]
    assert keys["math"] != keys["read"]  # the outcome is in the cache key
    assert not first["reused_cached_fits"]
    fixed = pl.read_csv(out / "tables" / "fixed_effects.csv")
    assert fixed.columns[0] == "outcome" and set(fixed["outcome"]) == {"math", "read"}
    html = (out / "report.html").read_text()
    assert "Outcome: Mathematics (math)" in html and "Outcome: Reading (read)" in html
    second = growth_study(config=str(config), output=str(out))
    assert second["reused_cached_fits"]
    assert (Path(second["run_folder"]) / "report.html").read_bytes() == (
        Path(first["run_folder"]) / "report.html"
    ).read_bytes()
    # one outcome of the study alone (--outcome): exactly the estimates of the joint run
    alone = growth_study(config=str(config), output=str(tmp_path / "alone"), outcome="read")
    single = pl.read_csv(Path(alone["run_folder"]) / "tables" / "fixed_effects.csv")
    assert set(single["outcome"]) == {"read"}
    assert single.equals(fixed.filter(pl.col("outcome") == "read"))
    assert json.loads((tmp_path / "alone" / "manifest.json").read_text())["outcomes"] == ["read"]


def test_growth_validate_checks_every_outcome(tmp_path: Path, capsys) -> None:
    from flows.cli import main

    frame = simulate(20, seed=8).with_columns(pl.col("read").cast(pl.String))
    frame = frame.with_columns(
        read=pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("x")).otherwise(pl.col("read"))
    )
    config = write_study(tmp_path, frame=frame)
    assert main(["validate", str(config)]) == 0
    out = capsys.readouterr().out
    assert "rows: 80 in, 79 valid, 1 quarantined (1.2%; limit 20.0%)" in out
    assert "1 row(s): outcome (read) is not a number" in out


@pytest.mark.usefixtures("prefect_harness")
def test_several_studies_at_once_run_each_outcome_task_inside_the_study_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.study import growth_studies

    monkeypatch.setenv("GROWTH_CACHE_DIR", str(tmp_path / "cache"))
    config = write_study(tmp_path / "study")
    [result] = growth_studies(configs=[str(config)], output=str(tmp_path / "out"))
    manifest = json.loads(Path(result["manifest"]).read_text())
    assert manifest["outcomes"] == ["math", "read"] and manifest["status"] == "succeeded"
    assert sorted(manifest["per_outcome"]) == ["math", "read"]
