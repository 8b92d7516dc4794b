"""The HTML report: sampling, formatting, assembly, safety, size and the files.

Inputs are synthetic (tests/report_synthetic.py simulates growth data and
computes the contract tables with numpy); the browser checks are in
test_report_browser.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from report_synthetic import simulate_level1, synthetic_context

from pipeline.report import (
    ANALYSIS_TABLES,
    CHANGES_COLUMNS,
    ReportContext,
    build_figures,
    changes_table,
    collect_alerts,
    render_report,
    sample_persons,
    script_json,
    thin_quantiles,
    write_report_files,
)
from pipeline.report.figures import MAX_CHART_ROWS, SPAGHETTI_MAX_PERSONS
from pipeline.report.formatting import format_number, format_p_value, format_value

SCRIPT_PAYLOAD = "<script>alert(1)</script>"
IMG_PAYLOAD = "<img src=x onerror=alert(1)>"
BREAKOUT_PAYLOAD = "</script><script>alert(1)</script>"


# -- parsing helpers ---------------------------------------------------------


class _Collector(HTMLParser):
    """Elements, attributes and script bodies of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script: dict[str, str | None] | None = None
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script, self._buffer = dict(attrs), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._in_script is not None:
            self.scripts.append((self._in_script, "".join(self._buffer)))
            self._in_script = None

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            self._buffer.append(data)


def parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector


def chart_specs(html: str) -> dict[str, dict]:
    """The Vega-Lite spec of each chart container, by the container's id."""
    doc = parse(html)
    bodies = {attrs.get("id"): body for attrs, body in doc.scripts if attrs.get("id")}
    specs = {}
    for tag, attrs in doc.tags:
        if tag == "div" and "chart" in (attrs.get("class") or "").split():
            specs[attrs["id"]] = json.loads(bodies[attrs["data-spec"]])
    return specs


def _walk(node, key: str):
    """Every value stored under ``key`` anywhere in a nested spec."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


def axis_titles(spec: dict) -> set[str]:
    titles = set()
    for channel in ("x", "y"):
        for enc in _walk(spec, channel):
            if isinstance(enc, dict) and isinstance(enc.get("title"), str):
                titles.add(enc["title"])
    return titles


def strip_scripts(html: str) -> str:
    return re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.DOTALL | re.IGNORECASE)


@pytest.fixture(scope="module")
def context() -> ReportContext:
    return synthetic_context(persons=150, seed=11)


@pytest.fixture(scope="module")
def html(context: ReportContext) -> str:
    return render_report(context)


# -- sampling ----------------------------------------------------------------


def test_sample_persons_is_deterministic_and_keeps_whole_persons() -> None:
    level1 = simulate_level1(persons=500, seed=3, labels=("a", "b"))
    first = sample_persons(level1, person_col="person", n=40, seed=99)
    again = sample_persons(level1, person_col="person", n=40, seed=99)
    assert first.equals(again)
    chosen = first["person"].unique()
    assert chosen.len() == 40
    # every row of each chosen person is kept, and nothing else
    expected = level1.filter(pl.col("person").is_in(chosen.implode()))
    assert first.height == expected.height
    assert first.sort("person", "time").equals(expected.sort("person", "time"))
    # the draw depends on the seed
    other = sample_persons(level1, person_col="person", n=40, seed=100)
    assert set(other["person"].unique().to_list()) != set(chosen.to_list())


def test_sample_persons_does_not_depend_on_row_order() -> None:
    level1 = simulate_level1(persons=300, seed=5, labels=("a", "b"))
    shuffled = level1.sample(fraction=1.0, shuffle=True, seed=1)
    a = sample_persons(level1, person_col="person", n=25, seed=7)
    b = sample_persons(shuffled, person_col="person", n=25, seed=7)
    assert a["person"].unique().sort().equals(b["person"].unique().sort())


def test_sample_persons_pins_the_draw() -> None:
    """The rule is: sorted unique persons, seeded permutation, first n."""
    table = pl.DataFrame({"id": ["p3", "p1", "p2", "p5", "p4", "p1"], "y": [1, 2, 3, 4, 5, 6]})
    expected_order = np.random.default_rng(42).permutation(5)[:2]
    expected = sorted(np.array(["p1", "p2", "p3", "p4", "p5"])[expected_order].tolist())
    got = sample_persons(table, person_col="id", n=2, seed=42)
    assert sorted(got["id"].unique().to_list()) == expected
    assert got["id"].to_list() == sorted(got["id"].to_list())


def test_sample_persons_with_n_at_least_all_returns_everything() -> None:
    level1 = simulate_level1(persons=30, seed=1, labels=("a", "b"))
    assert sample_persons(level1, person_col="person", n=30, seed=1).height == level1.height
    assert sample_persons(level1, person_col="person", n=1000, seed=1).height == level1.height
    assert sample_persons(level1, person_col="person", n=0, seed=1).height == 0


def test_sample_persons_rejects_bad_arguments_with_clear_messages() -> None:
    level1 = simulate_level1(persons=10, seed=1, labels=("a", "b"))
    with pytest.raises(ValueError, match="column 'id' is not in the table"):
        sample_persons(level1, person_col="id", n=3, seed=1)
    with pytest.raises(ValueError, match="n must be >= 0"):
        sample_persons(level1, person_col="person", n=-1, seed=1)


def test_thin_quantiles_keeps_the_tails_and_bounds_each_group() -> None:
    rng = np.random.default_rng(0)
    table = pl.DataFrame(
        {
            "term": ["a"] * 5000 + ["b"] * 30,
            "z": np.concatenate([rng.normal(size=5000), rng.normal(size=30)]),
        }
    )
    thinned = thin_quantiles(table, by="z", max_rows=100, group="term")
    counts = dict(thinned.group_by("term").len().iter_rows())
    assert counts == {"a": 100, "b": 30}
    for term in ("a", "b"):
        part, kept = table.filter(pl.col("term") == term), thinned.filter(pl.col("term") == term)
        assert kept["z"].min() == part["z"].min() and kept["z"].max() == part["z"].max()
        assert kept["z"].is_sorted()


# -- formatting --------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "text"),
    [
        ("p_value", 0.00004, "<0.001"),
        ("p_value", 0.0421, "0.042"),
        ("p_holm", 1.0, "1.000"),
        ("estimate", 109.88166, "109.882"),
        ("estimate", -0.0421567, "-0.0422"),
        ("estimate", 12345.6789, "12,345.679"),
        ("max_abs_gradient", 3.2e-7, "3.200e-07"),
        ("nobs", 1234, "1,234"),
        ("persons", 12.0, "12"),
        ("share", 0.8123, "81.2%"),
        ("df", 101.0, "101"),
        ("df", 56.37, "56.4"),
        ("time", 1.5, "1.5"),
        ("time", 2.0, "2"),
        ("converged", True, "yes"),
        ("estimate", None, "–"),
        ("estimate", float("nan"), "–"),
        ("term", "age1:trtY", "age1:trtY"),
    ],
)
def test_format_value(column: str, value: object, text: str) -> None:
    assert format_value(column, value) == text


def test_format_number_and_p_value_edge_cases() -> None:
    assert format_number(0.0) == "0"
    assert format_number(float("inf")) == "∞"
    assert format_p_value(0.001) == "0.001"
    assert format_p_value(0.0009999) == "<0.001"


# -- script-safe JSON -------------------------------------------------------


def test_script_json_cannot_close_a_script_and_round_trips() -> None:
    value = {"b": BREAKOUT_PAYLOAD, "a": ["<!--", "&amp;", "x\u2028y", IMG_PAYLOAD]}
    text = script_json(value)
    assert not set("<>&") & set(text)
    assert "\u2028" not in text
    assert json.loads(text) == value
    assert text.index('"a"') < text.index('"b"')  # sorted keys


# -- the document -------------------------------------------------------------


def test_render_is_byte_identical_for_the_same_inputs(context: ReportContext, html: str) -> None:
    assert render_report(context) == html
    # a context rebuilt from scratch (new DataFrames, new altair objects) gives the same bytes
    rebuilt = synthetic_context(persons=150, seed=11)
    assert render_report(rebuilt).encode() == html.encode()
    # and a different input gives a different report
    assert render_report(synthetic_context(persons=150, seed=12)) != html


def test_report_has_every_section_and_the_header_facts(context: ReportContext, html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    for section in (
        "warnings",
        "data",
        "trajectories",
        "models",
        "groups",
        "diagnostics",
        "provenance",
    ):
        assert f'<section id="{section}"' in html
    assert html.index('id="warnings"') < html.index('id="data"') < html.index('id="models"')
    assert context.data_sha256 in html
    assert "synthetic.csv" in html
    assert f"{context.rows_in:,} read, {context.rows_used:,} used" in html
    assert "<dt>Persons</dt><dd>150</dd>" in html
    # config in full, in a <pre>
    pre = re.search(r'<pre class="config">(.*?)</pre>', html, flags=re.DOTALL)
    assert pre is not None
    assert pre.group(1).replace("&#34;", '"') == context.config_text
    for package, version in context.versions.items():
        assert f"<td>{package}</td><td>{version}</td>" in html
    # quarantine file, reasons, models, tables
    assert "<code>quarantine.csv</code>" in html
    assert "outcome is not a number" in html
    assert "Model conditional" in html and "Model means" in html
    assert "π1i = γ10 + γ11·trt_i + ζ1i" in html
    assert '<td class="num">&lt;0.001</td>' in html


def test_no_timestamp_unless_given(context: ReportContext, html: str) -> None:
    assert "<dt>Run</dt>" not in html
    stamped = render_report(dataclasses.replace(context, timestamp="2024-05-01T06:00:00Z"))
    assert "<dt>Run</dt><dd>2024-05-01T06:00:00Z</dd>" in stamped


def test_self_contained_no_external_resources(html: str) -> None:
    doc = parse(html)
    for tag, attrs in doc.tags:
        assert "src" not in attrs, f"<{tag}> loads {attrs['src']}"
        href = attrs.get("href")
        if href is not None:
            assert href.startswith(("#", "data:")), f"<{tag}> links to {href}"
    scripts = [body for _, body in doc.scripts]
    assert any(
        "vegaEmbed" in body and len(body) > 100_000 for body in scripts
    )  # the inlined bundle
    assert not re.search(r"https?://", strip_scripts(html))
    assert "default-src 'none'" in html  # CSP: the page may not fetch anything


def test_every_chart_has_title_axis_titles_units_and_text_alternative(html: str) -> None:
    specs = chart_specs(html)
    assert set(specs) == {
        "chart-occasions_per_person",
        "chart-observations_by_time",
        "chart-spaghetti",
        "chart-observed_means",
        "chart-group_trajectories",
        "chart-implied_means",
        "chart-residual_qq",
        "chart-residuals_vs_fitted",
        "chart-random_effects_qq",
        "chart-caterpillar",
    }
    doc = parse(html)
    containers = {a["id"]: a for t, a in doc.tags if t == "div" and a.get("id") in specs}
    for chart_id, spec in specs.items():
        title = spec["title"]["text"] if isinstance(spec["title"], dict) else spec["title"]
        assert title, chart_id
        assert spec["description"], chart_id
        assert containers[chart_id]["aria-label"] == spec["description"]
        assert containers[chart_id]["role"] == "img"
        assert axis_titles(spec), chart_id
        for rows in spec.get("datasets", {}).values():
            assert len(rows) <= MAX_CHART_ROWS
    units = {cid: axis_titles(spec) for cid, spec in specs.items()}
    for chart_id in (
        "chart-spaghetti",
        "chart-observed_means",
        "chart-group_trajectories",
        "chart-implied_means",
    ):
        assert {"Age (years)", "Cognitive score (points)"} <= units[chart_id]
    assert "Residual (points)" in units["chart-residual_qq"]
    assert {"Fitted value (points)", "Residual (points)"} <= units["chart-residuals_vs_fitted"]
    # each figure has a caption and a <details> data summary with a real table
    for key in (cid.removeprefix("chart-") for cid in specs):
        block = html[html.index(f'<figure class="figure" id="figure-{key}">') :]
        block = block[: block.index("</figure>")]
        assert "<figcaption>" in block and "<details" in block and "<table>" in block


def test_chart_data_is_what_the_tables_say(context: ReportContext, html: str) -> None:
    specs = chart_specs(html)
    spaghetti = specs["chart-spaghetti"]
    data = [rows for rows in spaghetti["datasets"].values()]
    lines = max(data, key=len)
    assert {row["person"] for row in lines} == {
        str(p) for p in context.level1_sample["person"].unique().to_list()
    }
    means = context.tables["observed_means"]
    mean_rows = next(rows for rows in data if rows and "mean" in rows[0])
    assert sorted(r["mean"] for r in mean_rows) == pytest.approx(sorted(means["mean"].to_list()))
    trajectories = next(iter(specs["chart-group_trajectories"]["datasets"].values()))
    assert len(trajectories) == context.tables["group_trajectories"].height
    assert {r["group"] for r in trajectories} == {"control", "treated"}


def test_missing_and_empty_tables_say_not_available() -> None:
    bare = ReportContext(
        title="Bare study",
        study_name="bare",
        data_file="bare.csv",
        data_sha256="0" * 64,
        rows_in=0,
        rows_used=0,
        rows_quarantined=0,
    )
    html = render_report(bare)
    assert 'class="chart"' not in html
    assert html.count('class="na"') >= 20
    assert "Individual trajectories:</strong> No level-1 data" in html
    assert "No model results are available." in html
    # empty tables (right columns, no rows) behave the same
    empty = {
        name: pl.DataFrame({"model": []}, schema={"model": pl.String}) for name in ANALYSIS_TABLES
    }
    html_empty = render_report(dataclasses.replace(bare, tables=empty, warnings=pl.DataFrame()))
    assert 'class="chart"' not in html_empty


@pytest.mark.parametrize("missing", ANALYSIS_TABLES)
def test_each_analysis_table_may_be_missing(context: ReportContext, missing: str) -> None:
    tables = {k: v for k, v in context.tables.items() if k != missing}
    html = render_report(dataclasses.replace(context, tables=tables))
    assert "</html>" in html
    if missing in context.tables:  # the optional tables the synthetic study does not make
        emptied = {**context.tables, missing: context.tables[missing].clear()}
        assert "</html>" in render_report(dataclasses.replace(context, tables=emptied))


def test_nan_and_infinite_values_render_as_missing(context: ReportContext) -> None:
    means = context.tables["observed_means"].with_columns(
        pl.when(pl.col("n") > 0).then(float("nan")).alias("std_error")
    )
    trajectories = context.tables["group_trajectories"].with_columns(
        pl.lit(float("inf")).alias("conf_high")
    )
    tables = {**context.tables, "observed_means": means, "group_trajectories": trajectories}
    html = render_report(dataclasses.replace(context, tables=tables))
    specs = chart_specs(html)
    rows = next(iter(specs["chart-group_trajectories"]["datasets"].values()))
    assert {r["conf_high"] for r in rows} == {None}
    assert "NaN" not in strip_scripts(html) and "Infinity" not in json.dumps(specs)


def test_wrong_columns_are_reported_as_unavailable_not_crashes(context: ReportContext) -> None:
    broken = {**context.tables, "residuals": pl.DataFrame({"other": [1.0, 2.0]})}
    figures = {f.key: f for f in build_figures(dataclasses.replace(context, tables=broken))}
    assert not figures["residual_qq"].available
    assert figures["residual_qq"].description == "Residuals are not available."
    assert figures["caterpillar"].available


def test_context_is_frozen_and_keyword_only(context: ReportContext) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.title = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ReportContext("t", "s", "", "", "f", "h", 1, 1, 0)  # type: ignore[misc]


# -- warnings ------------------------------------------------------------------


def test_alerts_cover_quarantine_failures_and_fits(context: ReportContext, html: str) -> None:
    alerts = collect_alerts(context)
    topics = [a.topic for a in alerts]
    assert "quarantined data" in topics and "model failed" in topics
    # the analysis already warned about the boundary fit: no second alert on it
    assert topics.count("boundary fit") == 1
    quiet = dataclasses.replace(context, warnings=None)
    derived = collect_alerts(quiet)
    assert [a.message for a in derived if a.topic == "boundary fit"] == [
        "Model conditional is a singular (boundary) fit: a variance is estimated as zero or a "
        "correlation as ±1."
    ]
    small = {
        **context.tables,
        "sample_size": pl.DataFrame(
            {
                "check": ["persons"],
                "value": [12.0],
                "threshold": [30.0],
                "status": ["too small"],
                "message": ["Only 12 persons; at least 30 are advised."],
            }
        ),
    }
    assert any(
        a.topic == "sample size" and a.message.startswith("Only 12 persons")
        for a in collect_alerts(dataclasses.replace(context, tables=small))
    )
    warnings_block = html[html.index('id="warnings"') : html.index('id="data"')]
    assert "failed validation and were left out; they are in quarantine.csv" in warnings_block


# -- since the previous run ------------------------------------------------------


def _changes(
    *,
    data: tuple[str, str] = ("a" * 64, "a" * 64),
    config: tuple[str, str] = ("c" * 64, "c" * 64),
    persons: tuple[int, int] = (103, 103),
    estimates: tuple[tuple[str, str, float, float], ...] = (
        ("growth", "(Intercept)", 110.0, 110.0),
        ("growth", "age1", -10.0, -10.0),
    ),
    **extra: object,
) -> dict[str, object]:
    """A ``changes`` mapping as :func:`pipeline.runinfo.changes_since` makes it."""
    return {
        "previous_run_id": "20240101T060000Z-1a2b3c4d",
        "previous_timestamp": "2024-01-01T06:00:00Z",
        "data_changed": data[0] != data[1],
        "config_changed": config[0] != config[1],
        "overrides_changed": False,
        "data": {"previous": data[0], "current": data[1]},
        "config": {"previous": config[0], "current": config[1]},
        "overrides": {"previous": {}, "current": {}},
        "counts": {
            "persons": {
                "previous": persons[0],
                "current": persons[1],
                "change": persons[1] - persons[0],
            }
        },
        "estimates": [
            {"model": m, "term": t, "previous": a, "current": b, "change": b - a}
            for m, t, a, b in estimates
        ],
        "terms_added": [],
        "terms_removed": [],
        **extra,
    }


def _changes_section(html: str) -> str:
    return html[html.index('<section id="changes"') : html.index('<section id="data"')]


def test_changes_table_is_none_empty_or_the_differences() -> None:
    assert changes_table(None) is None
    same = changes_table(_changes())
    assert same is not None and same.height == 0 and same.columns == list(CHANGES_COLUMNS)
    # NaN on both sides is no change either
    nan = changes_table(_changes(estimates=(("growth", "sigma", float("nan"), float("nan")),)))
    assert nan is not None and nan.height == 0
    table = changes_table(
        _changes(
            data=("a" * 64, "b" * 64),
            persons=(100, 103),
            estimates=(("growth", "age1", -10.0, -9.5), ("growth", "(Intercept)", 110.0, 110.0)),
            terms_added=["growth: age1:trtY"],
            terms_removed=["growth: trtY"],
        )
    )
    assert table is not None
    assert table.columns == list(CHANGES_COLUMNS)
    assert table.rows() == [
        ("data file (SHA-256)", "a" * 12, "b" * 12, "changed"),
        ("configuration (SHA-256)", "c" * 12, "c" * 12, "same"),
        ("persons", "100", "103", "+3"),
        ("growth: age1", "-10.000", "-9.500", "+0.500"),
        ("growth: (Intercept)", "110.000", "110.000", "0"),
        ("growth: age1:trtY", "not estimated", "estimated", "added"),
        ("growth: trtY", "estimated", "not estimated", "removed"),
    ]
    # overrides count as a change and are listed
    overridden = changes_table(
        _changes(
            overrides_changed=True,
            overrides={"previous": {}, "current": {"[data] outcome": "cog2"}},
        )
    )
    assert overridden is not None
    assert ("overrides", "none", "[data] outcome = 'cog2'", "changed") in overridden.rows()


def test_the_changes_section_follows_the_warnings(context: ReportContext, html: str) -> None:
    assert html.index('id="warnings"') < html.index('id="changes"') < html.index('id="data"')
    assert '<a href="#changes">Since the previous run</a>' in html
    section = _changes_section(html)
    assert "Nothing to compare: this is the first run in this output folder" in section
    assert "<table>" not in section


def test_a_first_run_and_an_unchanged_rerun_give_the_same_report(
    context: ReportContext, html: str
) -> None:
    unchanged = dataclasses.replace(context, changes=changes_table(_changes()))
    assert render_report(unchanged).encode() == html.encode()


def test_the_changes_section_shows_the_differences_and_no_run_id_or_time(
    context: ReportContext,
) -> None:
    changes = _changes(data=("a" * 64, "b" * 64), persons=(100, 103))
    html = render_report(dataclasses.replace(context, changes=changes_table(changes)))
    section = _changes_section(html)
    assert "What changed since the previous run" in section
    assert '<th scope="col">quantity</th>' in section
    assert '<th scope="col" class="num">previous run</th>' in section
    assert (
        '<td>persons</td><td class="num">100</td><td class="num">103</td>'
        '<td class="num">+3</td>' in section
    )
    assert '<td class="num">aaaaaaaaaaaa</td><td class="num">bbbbbbbbbbbb</td>' in section
    assert "Nothing to compare" not in section
    assert str(changes["previous_run_id"]) not in html
    assert str(changes["previous_timestamp"]) not in html
    # deterministic: the same comparison gives the same bytes, another one other bytes
    again = dataclasses.replace(context, changes=changes_table(dict(changes)))
    assert render_report(again) == html
    other = _changes(data=("a" * 64, "b" * 64), persons=(101, 103))
    assert render_report(dataclasses.replace(context, changes=changes_table(other))) != html


def test_the_changes_section_is_escaped() -> None:
    changes = _changes(
        estimates=((f"m{SCRIPT_PAYLOAD}", IMG_PAYLOAD, 1.0, 2.0),),
        overrides_changed=True,
        overrides={"previous": {}, "current": {"[data] outcome": BREAKOUT_PAYLOAD}},
    )
    ctx = dataclasses.replace(injected_context(), changes=changes_table(changes))
    html = render_report(ctx)
    section = _changes_section(html)
    for payload in (SCRIPT_PAYLOAD, IMG_PAYLOAD, BREAKOUT_PAYLOAD):
        assert payload not in html
    assert (
        "<td>m&lt;script&gt;alert(1)&lt;/script&gt;: &lt;img src=x onerror=alert(1)&gt;</td>"
        in (section)
    )
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert "<img" not in strip_scripts(html)


# -- safety ---------------------------------------------------------------------


def injected_context(persons: int = 80) -> ReportContext:
    return synthetic_context(
        persons=persons,
        seed=5,
        title=f"Study {SCRIPT_PAYLOAD} {IMG_PAYLOAD}",
        labels=(BREAKOUT_PAYLOAD, IMG_PAYLOAD),
        group_column=f"trt{SCRIPT_PAYLOAD}",
        reason=f"bad value {IMG_PAYLOAD}",
    )


def test_strings_from_data_and_config_are_escaped_everywhere() -> None:
    ctx = injected_context()
    html = render_report(ctx)
    for payload in (SCRIPT_PAYLOAD, IMG_PAYLOAD, BREAKOUT_PAYLOAD, "alert(1)</script>"):
        assert payload not in html, payload
    assert "<img" not in strip_scripts(html)  # (the Vega bundle itself mentions "<img")
    # the strings did get in, escaped: in the HTML text and in the chart JSON
    assert "Study &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in html
    # no element other than ours: script tags are the bundle, our loader and one per chart
    doc = parse(html)
    n_charts = len(chart_specs(html))
    assert [t for t, _ in doc.tags].count("script") == n_charts + 2
    assert html.lower().count("</script") == n_charts + 2
    assert not any(t == "img" for t, _ in doc.tags)
    assert not any(k.startswith("on") for _, attrs in doc.tags for k in attrs)
    # and the labels survive, unescaped, as data for the charts
    specs = chart_specs(html)
    groups = {
        r["group"] for rows in specs["chart-group_trajectories"]["datasets"].values() for r in rows
    }
    assert groups == {BREAKOUT_PAYLOAD, IMG_PAYLOAD}
    titles = [t for t in _walk(specs["chart-spaghetti"], "title") if isinstance(t, str)]
    assert f"trt{SCRIPT_PAYLOAD}" in titles  # the legend title: the group column's name


def test_the_page_title_is_escaped() -> None:
    html = render_report(injected_context())
    title = re.search(r"<title>(.*?)</title>", html, flags=re.DOTALL).group(1)
    assert title == (
        "Study &lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror=alert(1)&gt;"
    )


# -- size -------------------------------------------------------------------------


def test_report_stays_small_at_100000_persons() -> None:
    ctx = synthetic_context(persons=100_000, seed=2)
    assert ctx.tables["residuals"].height > 300_000
    assert ctx.tables["random_effects"].height == 200_000
    html = render_report(ctx)
    size = len(html.encode())
    assert size < 5 * 1024 * 1024, f"report is {size / 1e6:.2f} MB"
    specs = chart_specs(html)
    assert len(specs) == 10
    for chart_id, spec in specs.items():
        for rows in spec.get("datasets", {}).values():
            assert len(rows) <= MAX_CHART_ROWS, chart_id
    lines = max(specs["chart-spaghetti"]["datasets"].values(), key=len)
    assert len({r["person"] for r in lines}) <= SPAGHETTI_MAX_PERSONS
    assert "of 100,000 persons" in html


def test_spaghetti_sample_is_cut_to_the_row_budget() -> None:
    ctx = synthetic_context(persons=60, seed=1)
    # 2,000 persons with 4 occasions each: more persons and more rows than a chart may hold
    big = simulate_level1(persons=2000, seed=1, labels=("control", "treated"))
    figures = {f.key: f for f in build_figures(dataclasses.replace(ctx, level1_sample=big))}
    spec = figures["spaghetti"].chart.to_dict()
    lines = max(spec["datasets"].values(), key=len)
    assert len({r["person"] for r in lines}) == SPAGHETTI_MAX_PERSONS
    assert len(lines) <= MAX_CHART_ROWS


# -- files --------------------------------------------------------------------------


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_write_report_files(tmp_path: Path, context: ReportContext) -> None:
    written = write_report_files(context=context, folder=tmp_path / "a")
    root = tmp_path / "a"
    names = {str(p.relative_to(root)) for p in written}
    for table in context.tables:  # every table the study made (optional ones need not be)
        assert table in ANALYSIS_TABLES
        assert f"tables/{table}.csv" in names and f"tables/{table}.parquet" in names
    for extra in (
        "validation_reasons",
        "descriptive_summary",
        "missingness_patterns",
        "warnings",
        "failures",
    ):
        assert f"tables/{extra}.csv" in names
    for figure in ("spaghetti", "caterpillar", "group_trajectories", "residual_qq"):
        assert f"charts/{figure}.svg" in names and f"charts/{figure}.png" not in names
    for extension in ("csv", "parquet", "tex", "md"):
        assert f"tables/model_table.{extension}" in names
    assert len(names) == len(written) == len(list(root.rglob("*.*")))
    # the files hold the tables and real images
    fixed = pl.read_csv(root / "tables/fixed_effects.csv")
    assert fixed.columns == context.tables["fixed_effects"].columns
    assert fixed["estimate"].to_list() == pytest.approx(
        context.tables["fixed_effects"]["estimate"].to_list()
    )
    assert pl.read_parquet(root / "tables/random_effects.parquet").equals(
        context.tables["random_effects"]
    )
    svg = (root / "charts/spaghetti.svg").read_text()
    assert svg.lstrip().startswith("<svg") and "Age (years)" in svg
    # deterministic: a second run writes the same bytes
    write_report_files(context=context, folder=tmp_path / "b")
    assert _digest(root) == _digest(tmp_path / "b")
    # PNG copies only on request ([report] png = true)
    with_png = write_report_files(
        context=dataclasses.replace(context, chart_png=True), folder=tmp_path / "c"
    )
    pngs = {p.name for p in with_png if p.suffix == ".png"}
    assert pngs == {p.name.replace(".svg", ".png") for p in written if p.suffix == ".svg"}
    assert (tmp_path / "c/charts/spaghetti.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
