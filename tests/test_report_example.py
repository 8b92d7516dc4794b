"""The report on the bundled example, from the real stages (no Prefect): findings with
the real estimates, the model table files, SVG without PNG, and the same bytes twice."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from analysis_support import report_context

from pipeline.config import load_config
from pipeline.report import (
    build_findings,
    collect_alerts,
    render_report,
    write_report_files,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "early.toml"


@pytest.fixture(scope="module")
def example():
    return report_context(load_config(EXAMPLE), versions={"growthcurves": "test"})


def test_findings_on_the_example(example) -> None:
    texts = [f.text for f in build_findings(example, collect_alerts(example))]
    assert texts[0] == "The analysis uses 103 persons and 309 of 309 rows."
    # lme4 on Early: conditional growth, trtY = 6.855 (SE 2.736), age1:trtY = 5.271 (SE 2.523)
    assert any(
        t.startswith("Y and N (trt) differ in status at Age 1 years (Y − N = 6.855 points")
        for t in texts
    )
    assert any(
        t.startswith("Y and N (trt) differ in the rate of change (Y − N = 5.271 points per year")
        for t in texts
    )
    assert any(
        t.startswith("34.7% of the variance of Cognitive score lies between persons") for t in texts
    )
    assert any("boundary fit" in t for t in texts)


def test_example_files_and_bytes(example, tmp_path: Path) -> None:
    written = write_report_files(context=example, folder=tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {"tables/model_table.csv", "tables/model_table.tex", "tables/model_table.md"} <= names
    assert not [n for n in names if n.endswith(".png")]
    # the balanced design: no one-bar chart and no flat observations-by-time chart
    assert "charts/occasions_per_person.svg" not in names
    assert "charts/observations_by_time.svg" not in names
    assert "charts/spaghetti.svg" in names
    first, second = render_report(example), render_report(example)
    assert hashlib.sha256(first.encode()).digest() == hashlib.sha256(second.encode()).digest()
    tex = (tmp_path / "tables/model_table.tex").read_text()
    assert "unconditional\\_means & unconditional\\_growth & conditional\\_growth" in tex
    # the uncertainty section of the example: Feingold's d with its SD, and what is off
    section = first[first.index('id="uncertainty"') : first.index('id="diagnostics"')]
    assert "Off ([analysis] bootstrap = 0, the default)" in section
    assert 'id="chart-implied_means"' in section
    # balanced data, linear time: both models imply the observed grand mean line exactly
    assert "The models&#39; implied means coincide here" in section
    assert "Nobody dropped out" in section
    groups = first[first.index('id="groups"') : first.index('id="uncertainty"')]
    assert "pooled within-group SD of the observed outcome at baseline (age = 1 years" in groups
