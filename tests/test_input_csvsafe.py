"""CSV injection: formula-leading cells are neutralised in every CSV written (issue 15, fault 5)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from pipeline.csvsafe import csv_safe, csv_safe_text
from pipeline.outputs import new_run_id, stage_run
from pipeline.report.files import write_tables

HOSTILE = [
    '=HYPERLINK("http://x","y")',
    "@SUM(A1:A2)",
    "+cmd|' /C calc'!A0",
    "-2+3",
    "\t=1",
    "\r=1",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_formula_leading_text_gets_a_quote(value: str) -> None:
    assert csv_safe_text(value) == "'" + value


@pytest.mark.parametrize("value", ["-1.5", "+2", "-3e-05", "12", ".5", "ok", "a-b", "x=1"])
def test_numbers_and_plain_text_stay_as_they_are(value: str) -> None:
    assert csv_safe_text(value) == value


def test_control_characters_are_escaped() -> None:
    assert csv_safe_text("a\x01b\x7f") == "a\\x01b\\x7f"
    assert csv_safe_text("\x1b[31m") == "\\x1b[31m"


def test_only_text_columns_are_touched() -> None:
    frame = pl.DataFrame(
        {"id": ["=1+1", "7"], "estimate": [-1.5, 2.0], "n": [-3, 4], "flag": [True, False]}
    )
    safe = csv_safe(frame)
    assert safe.get_column("id").to_list() == ["'=1+1", "7"]
    assert safe.get_column("estimate").to_list() == [-1.5, 2.0]
    assert safe.get_column("n").to_list() == [-3, 4]
    assert safe.schema == frame.schema
    # the header is a row of cells too
    assert csv_safe(pl.DataFrame({"=cmd": ["a"]})).columns == ["'=cmd"]


def _cells(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


def test_quarantine_csv_and_tables_are_neutralised_parquet_keeps_raw(tmp_path: Path) -> None:
    moment = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    staged = stage_run(tmp_path, new_run_id(moment, "abcd1234"), moment)
    frame = pl.DataFrame({"_line": [2], "id": ["=HYPERLINK(1)"], "cog": ["-1.5"], "reason": ["x"]})
    written = staged.write_csv("quarantine.csv", frame)
    cells = _cells(written)
    assert "'=HYPERLINK(1)" in cells and "-1.5" in cells
    assert not any(cell.startswith(("=", "@", "+")) for cell in cells)

    table = pl.DataFrame({"term": ["@SUM(1)", "age"], "estimate": [-1.25, 3.0]})
    paths = write_tables(tables={"fixed_effects": table}, folder=tmp_path / "tables")
    csv_cells = _cells(tmp_path / "tables" / "fixed_effects.csv")
    assert "'@SUM(1)" in csv_cells and "-1.25" in csv_cells
    raw = pl.read_parquet(tmp_path / "tables" / "fixed_effects.parquet")
    assert raw.get_column("term").to_list() == ["@SUM(1)", "age"]
    assert len(paths) == 2
