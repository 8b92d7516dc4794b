"""The report's sections for clusters and for level-1 error structures, built from the
bundled studies through the pipeline's own stages (no Prefect)."""

from __future__ import annotations

from pathlib import Path

import pytest
from analysis_support import report_context

from pipeline.config import load_config, parse_config
from pipeline.report import build_figures, render_report

ROOT = Path(__file__).resolve().parents[1]


def _report(cfg):
    ctx = report_context(cfg)
    return ctx, render_report(ctx)


@pytest.fixture(scope="module")
def egsingle():
    return _report(load_config(ROOT / "config" / "egsingle.toml"))


def test_three_level_study_has_a_clusters_section_with_its_charts(egsingle):
    ctx, html = egsingle
    assert 'id="clusters-title"' in html
    figures = {f.key: f for f in build_figures(ctx)}
    for key in ("variance_partition", "cluster_caterpillar", "cluster_trajectories"):
        assert figures[key].available, figures[key].description
    assert "by a two-level model that ignores the clusters" in html
    assert 'id="structures-title"' not in html  # not asked for


def test_error_structures_section_only_when_asked(tmp_path):
    text = (ROOT / "config" / "early.toml").read_text()
    text = text.replace('path = "../data/early.csv"', f'path = "{ROOT / "data" / "early.csv"}"')
    text = text.replace(
        'slope_predictors = ["trt"]', 'slope_predictors = ["trt"]\nresidual = ["ar1", "cs", "us"]'
    )
    cfg = parse_config(text, path=tmp_path / "early.toml")
    ctx, html = _report(cfg)
    assert 'id="structures-title"' in html
    assert "Error structures compared (Singer &amp; Willett, Table 7.3)" in html
    figures = {f.key: f for f in build_figures(ctx)}
    assert figures["error_structure"].available
    assert 'id="clusters-title"' not in html


def test_hostile_occasion_labels_are_escaped_in_the_structures_section(tmp_path):
    import polars as pl

    labels = {1.0: "<img src=x onerror=alert(1)>", 1.5: "</script><b>w2", 2.0: "w3 & co"}
    data = pl.read_csv(ROOT / "data" / "early.csv").with_columns(
        wave=pl.col("age").replace_strict(labels, return_dtype=pl.String)
    )
    data.write_csv(tmp_path / "early.csv")
    text = (ROOT / "config" / "early.toml").read_text()
    text = text.replace('path = "../data/early.csv"', f'path = "{tmp_path / "early.csv"}"')
    text = text.replace('csv_separator = ","', 'csv_separator = ","\noccasion = "wave"')
    text = text.replace(
        'slope_predictors = ["trt"]', 'slope_predictors = ["trt"]\nresidual = ["us"]'
    )
    cfg = parse_config(text, path=tmp_path / "early.toml")
    ctx, html = _report(cfg)
    assert 'id="structures-title"' in html
    assert "<img src=x" not in html
    assert "</script><b>" not in html
