"""schemas/tables.py is the one source of the analysis tables' columns: the contract in
docs/CONTRACTS.md, the report's list of tables (and so the CSV files) derive from it."""

from pathlib import Path

import polars as pl

from pipeline.report.context import ANALYSIS_TABLES
from schemas.tables import TABLE_NAMES, TABLE_SCHEMAS, TABLES, columns, contract_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_contract_document_holds_the_generated_table():
    text = (ROOT / "docs" / "CONTRACTS.md").read_text(encoding="utf-8")
    block = text.split("<!-- tables:begin -->\n", 1)[1].split("<!-- tables:end -->", 1)[0]
    assert block == contract_markdown(), "regenerate with: python -m schemas.tables"
    assert "| `residual_variance_by_time` | occasion, time, n, variance? |" in block


def test_report_lists_every_table_in_the_contract_order():
    assert ANALYSIS_TABLES == TABLE_NAMES
    assert "residual_variance_by_time" in ANALYSIS_TABLES


def test_polars_and_pandera_schemas_come_from_the_same_columns():
    for table in TABLES:
        assert list(columns(table.name)) == [c.name for c in table.columns]
        assert list(TABLE_SCHEMAS[table.name].columns) == [c.name for c in table.columns]
    assert columns("likelihood_ratio_tests")["df"] == pl.Int64
