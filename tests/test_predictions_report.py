"""The report's Predictions section: the chart of predictor_trajectories, the values table
with how they were chosen, and the piecewise-linear time sentences traced to time_pieces."""

from __future__ import annotations

import dataclasses
import json
import re

import polars as pl
from analysis_support import early_config, early_frame, levels_of
from report_synthetic import synthetic_context
from test_predictions import ONLY, _config, _simulated

from pipeline.analysis import analyse
from pipeline.config import parse_config
from pipeline.report import ReportContext
from pipeline.report.figures import predictor_trajectories_figure
from pipeline.report.html import render_report
from pipeline.report.predictions import pieces_sentences

TABLES = ("predictor_values", "predictor_trajectories", "time_pieces")


def _context(tables: dict[str, pl.DataFrame]) -> ReportContext:
    ctx = synthetic_context(persons=60)
    kept = {k: v for k, v in ctx.tables.items() if k not in TABLES}
    return dataclasses.replace(ctx, tables={**kept, **tables})


def _prediction_tables() -> dict[str, pl.DataFrame]:
    frame = _simulated()
    cfg = _config()
    analysis = analyse(levels_of(frame, cfg), cfg, steps=ONLY)
    return {k: analysis.tables[k] for k in TABLES if k in analysis.tables}


def _section(html: str) -> str:
    start = html.index('<section id="predictions"')
    return html[start : html.index("</section>", start)]


def test_chart_and_values_table_in_the_report() -> None:
    tables = _prediction_tables()
    ctx = _context(tables)
    figure = predictor_trajectories_figure(ctx)
    assert figure.available
    spec = json.dumps(figure.spec)
    values = tables["predictor_values"]["value"].to_list()
    labels = [
        f"{v:.4g} ({s})"
        for v, s in zip(values, ["mean - 1 SD", "mean", "mean + 1 SD"], strict=True)
    ]
    # the legend lists the values in increasing order, not as sorted text
    assert json.dumps(labels)[1:-1] in spec
    html = render_report(ctx)
    section = _section(html)
    assert 'id="figure-predictor_trajectories"' in section
    assert 'id="table-predictor_values"' in section
    assert "Mean and SD over persons" in section and "not over rows" in section
    assert "Satterthwaite" in section
    assert "Piecewise-linear time" not in section  # no knots, no pieces


def test_no_predictions_section_without_its_tables() -> None:
    html = render_report(_context({}))
    assert '<section id="predictions"' not in html


def test_hostile_predictor_name_is_escaped() -> None:
    tables = _prediction_tables()
    hostile = "<script>alert(1)</script>"
    tables = {
        name: table.with_columns(pl.lit(hostile).alias("predictor"))
        if "predictor" in table.columns
        else table
        for name, table in tables.items()
    }
    section = _section(render_report(_context(tables)))
    assert hostile not in section
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section


def test_piece_sentences_are_traced_to_the_table() -> None:
    cfg = early_config()
    text = cfg.source_text.replace('unit = "years"\n', 'unit = "years"\nknots = [1.5]\n')
    cfg = parse_config(text, path=cfg.source_path)
    analysis = analyse(levels_of(early_frame(), cfg), cfg, steps=ONLY)
    pieces = analysis.tables["time_pieces"]
    ctx = _context({"time_pieces": pieces})
    sentences = pieces_sentences(ctx)
    assert len(sentences) == 3  # the growth model, and each group of the conditional model
    growth = pieces.filter(pl.col("model") == "unconditional_growth").to_dicts()
    first = sentences[0]
    assert first.startswith("unconditional_growth: from 1.000 years to 1.500 years")
    numbers = [float(x) for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", first)]
    for row in growth:
        assert any(
            abs(n - row["estimate"]) <= 5e-4 * max(1.0, abs(row["estimate"])) for n in numbers
        )
    section = _section(render_report(ctx))
    assert "Piecewise-linear time" in section
    assert "the slope before it plus the change of slope" in section
    assert sentences[1].replace("'", "&#39;") in section


def test_finding_is_traced_to_the_chart_summary() -> None:
    from pipeline.report.findings import build_findings

    tables = _prediction_tables()
    ctx = _context(tables)
    findings = [f for f in build_findings(ctx) if f.source_label == "Predictions"]
    assert len(findings) == 1
    finding = findings[0]
    assert finding.source == "figure-predictor_trajectories"
    summary = predictor_trajectories_figure(ctx).summary
    last = summary.filter(pl.col("time") == summary["time"].max()).sort("estimate")
    numbers = [float(x) for x in re.findall(r"-?\d+\.\d+", finding.text)]
    for row in last.iter_rows(named=True):
        if row["value"].endswith("(mean)"):
            continue
        for key in ("estimate", "conf_low", "conf_high"):
            assert any(abs(n - row[key]) <= 5e-3 * max(1.0, abs(row[key])) for n in numbers)
    assert "(mean + 1 SD) of ses" in finding.text and "(mean - 1 SD)" in finding.text
    html = render_report(ctx)
    assert 'href="#figure-predictor_trajectories"' in html
