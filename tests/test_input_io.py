"""Loading, issue 15: line numbers, blank lines, duplicate header names, parse failures with
their line, decimal commas, nested Parquet types, a run parameter naming a missing column."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
from test_io import STUDY, load_error, study

from pipeline.io import csv_records, load_data


def test_line_numbers_count_the_header_blank_lines_and_quoted_line_breaks(tmp_path: Path) -> None:
    text = 'id,cog,age,trt\n1,100,1,N\n\n1,"9\n0",2,N\n   \n2,80,1,Y\n\n\n'
    loaded = load_data(study(tmp_path, text))
    assert loaded.frame.get_column("_line").to_list() == [2, 4, 7]
    assert loaded.blank_lines == 4
    assert loaded.rows_in == 3


def test_blank_lines_with_crlf_are_skipped(tmp_path: Path) -> None:
    loaded = load_data(study(tmp_path, "id,cog,age,trt\r\n1,100,1,N\r\n\r\n2,90,1,Y\r\n"))
    assert loaded.frame.get_column("_line").to_list() == [2, 4]
    assert loaded.blank_lines == 1


def test_csv_records_is_the_parser_split() -> None:
    records = csv_records(b'a,b\n"x,\ny",2\n\n3,4', ",")
    assert records.lines.tolist() == [1, 2, 4, 5]
    assert records.blank.tolist() == [False, False, True, False]
    assert records.fields.tolist() == [2, 2, 1, 2]


def test_the_hash_is_of_the_bytes_parsed(tmp_path: Path) -> None:
    text = "id,cog,age,trt\n1,100,1,N\n"
    loaded = load_data(study(tmp_path, text))
    assert loaded.sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_a_column_named_twice_in_the_header_is_an_error(tmp_path: Path) -> None:
    message = load_error(study(tmp_path, "id,cog,age,trt,cog\n1,100,1,N,5\n"))
    assert message.endswith(
        "data.csv: the header names the column 'cog' twice (columns 2 and 5); rename one of "
        "them so that every column has its own name"
    )


def test_a_parse_failure_names_the_line(tmp_path: Path) -> None:
    message = load_error(study(tmp_path, "id,cog,age,trt\n1,100,1,N\n\n2,x,1,Y,extra\n"))
    assert message.endswith(
        "data.csv: cannot be read as CSV: line 4 has 5 fields but the header has 4; check the "
        'separator (csv_separator = ",") and the quoting of values'
    )


def test_a_decimal_comma_with_comma_separator_gets_a_hint(tmp_path: Path) -> None:
    message = load_error(study(tmp_path, "id,cog,age,trt\n1,100,1,N\n1,12,5,2,N\n"))
    assert "line 3 has 5 fields but the header has 4" in message
    assert (
        "if a number on that line has a decimal comma (12,5), quote it or separate the columns"
        in message
    )
    assert 'csv_separator = ";", decimal_comma = true' in message


def test_nested_parquet_column_is_named(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "id": [1, 1],
            "age": [1.0, 2.0],
            "cog": [3.0, 4.0],
            "trt": ["N", "N"],
            "tags": [[1, 2], [3]],
        }
    )
    frame.write_parquet(tmp_path / "data.parquet")
    cfg = study(tmp_path, (tmp_path / "data.parquet").read_bytes(), name="data.parquet")
    message = load_error(cfg)
    assert message.endswith(
        "data.parquet: column 'tags' has a nested Parquet type (List(Int64)); the pipeline "
        "reads plain columns only (numbers, text, dates, true/false): flatten it into plain "
        "columns or leave it out of the file"
    )


def test_struct_parquet_column_is_named(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"id": [1], "age": [1.0], "cog": [{"a": 1, "b": 2}], "trt": ["N"]},
    )
    frame.write_parquet(tmp_path / "data.parquet")
    cfg = study(tmp_path, (tmp_path / "data.parquet").read_bytes(), name="data.parquet")
    assert "column 'cog' has a nested Parquet type (Struct(" in load_error(cfg)


def test_a_run_parameter_naming_a_missing_column_is_named_as_such(tmp_path: Path) -> None:
    cfg = study(tmp_path, "id,cog,age,trt\n1,100,1,N\n")
    changed = cfg.model_copy(update={"data": cfg.data.model_copy(update={"outcome": "score"})})
    message = load_error(changed)
    assert (
        "column 'score' (the run parameter outcome (--outcome), replacing [data] outcome of "
        "study.toml) not found" in message
    )
    # the same name written in the file is reported as the file's key
    text = STUDY.format(path="data.csv", extra_data="").replace('"cog"', '"score"')
    (tmp_path / "study.toml").write_text(text)
    from pipeline.config import load_config

    assert "column 'score' ([data] outcome in study.toml) not found" in load_error(
        load_config(tmp_path / "study.toml")
    )
