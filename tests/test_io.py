"""Loading: CSV read as text with row numbers, Parquet, wide to long, and clear file errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipeline.config import StudyConfig, load_config, parse_config
from pipeline.errors import DataError
from pipeline.io import file_sha256, load_data

ROOT = Path(__file__).resolve().parents[1]

STUDY = """\
[study]
name = "messy"
title = "Messy fixture"

[data]
path = "{path}"
person = "id"
time = "age"
outcome = "cog"
person_covariates = ["trt"]
{extra_data}

[time]
name = "age1"
centre = 1.0

[output]
dir = "out"
"""


def study(
    tmp_path: Path, data: bytes | str, *, name: str = "data.csv", extra_data: str = ""
) -> StudyConfig:
    data_path = tmp_path / name
    if isinstance(data, str):
        data = data.encode("utf-8")
    data_path.write_bytes(data)
    text = STUDY.format(path=name, extra_data=extra_data)
    return parse_config(text, path=tmp_path / "study.toml")


def load_error(cfg: StudyConfig) -> str:
    with pytest.raises(DataError) as caught:
        load_data(cfg)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_example_loads_as_text_with_row_numbers():
    cfg = load_config(ROOT / "config" / "early.toml")
    loaded = load_data(cfg)
    assert loaded.rows_in == 309 == loaded.frame.height
    assert loaded.frame.columns == ["_line", "id", "cog", "age", "trt", "age1"]
    assert all(loaded.frame.schema[c] == pl.String for c in ["id", "cog", "age", "trt", "age1"])
    # _line: the line in the file, the header being line 1
    assert loaded.frame.get_column("_line").to_list() == list(range(2, 311))
    assert loaded.frame.row(0) == (2, "68", "103", "1", "Y", "0")
    assert loaded.blank_lines == 0 and loaded.long_rows == 309
    assert loaded.sha256 == file_sha256(cfg.data_path)
    assert len(loaded.sha256) == 64


def test_text_in_a_numeric_column_is_kept_for_validation(tmp_path):
    cfg = study(tmp_path, "id,cog,age,trt\n1,100,1,N\n1,101,one,N\n")
    frame = load_data(cfg).frame
    assert frame.filter(pl.col("_line") == 3).get_column("age").item() == "one"


def test_parquet_keeps_types(tmp_path):
    frame = pl.DataFrame(
        {"id": [1, 1, 2], "age": [1.0, 2.0, 1.0], "cog": [3.0, 4.0, 5.0], "trt": ["N"] * 3}
    )
    frame.write_parquet(tmp_path / "data.parquet")
    cfg = parse_config(
        STUDY.format(path="data.parquet", extra_data=""), path=tmp_path / "study.toml"
    )
    loaded = load_data(cfg)
    assert loaded.format == "parquet"
    assert loaded.frame.schema["age"] == pl.Float64
    # no lines in Parquet: the line the row would have in a CSV export with a header
    assert loaded.frame.get_column("_line").to_list() == [2, 3, 4]
    assert loaded.sha256 == file_sha256(tmp_path / "data.parquet")


def test_missing_file(tmp_path):
    cfg = parse_config(STUDY.format(path="nope.csv", extra_data=""), path=tmp_path / "study.toml")
    message = load_error(cfg)
    assert (
        message
        == f"{tmp_path / 'nope.csv'}: data file not found ([data] path = 'nope.csv' in study.toml)"
    )


def test_empty_file(tmp_path):
    message = load_error(study(tmp_path, b""))
    assert message.endswith(
        "data.csv: the file is empty (0 bytes); expected a header line and data rows"
    )


def test_header_only_file(tmp_path):
    message = load_error(study(tmp_path, "id,cog,age,trt\n"))
    assert message.endswith("data.csv: the file has a header (id, cog, age, trt) but no data rows")


def test_wrong_delimiter_suggests_the_separator(tmp_path):
    message = load_error(study(tmp_path, "id;cog;age;trt\n1;100;1;N\n"))
    assert "only one column found ('id;cog;age;trt') although 4 were expected" in message
    assert 'separated by semicolons: set [data] csv_separator = ";"' in message


def test_declared_separator_is_used(tmp_path):
    cfg = study(tmp_path, "id;cog;age;trt\n1;100;1;N\n", extra_data='csv_separator = ";"')
    assert load_data(cfg).frame.columns == ["_line", "id", "cog", "age", "trt"]


def test_non_utf8_bytes_name_line_and_byte(tmp_path):
    data = "id,cog,age,trt\n1,100,1,N\n2,100,1,Caf\xe9\n".encode("latin-1")
    message = load_error(study(tmp_path, data))
    assert "data.csv: not UTF-8 text: byte 0xe9 on line 3, position 12" in message
    assert "save it as UTF-8" in message


def test_missing_column_lists_columns_and_suggests(tmp_path):
    message = load_error(study(tmp_path, "id,cogn,age,trt\n1,100,1,N\n"))
    assert "column 'cog' ([data] outcome in study.toml) not found; did you mean 'cogn'?" in message
    assert message.endswith("The file has: id, cogn, age, trt")


def test_missing_column_without_close_name(tmp_path):
    message = load_error(study(tmp_path, "id,score,age,trt\n1,100,1,N\n"))
    assert (
        "column 'cog' ([data] outcome in study.toml) not found; the file has: id, score, age, trt"
        in message
    )


def test_reserved_row_column(tmp_path):
    message = load_error(study(tmp_path, "_line,id,cog,age,trt\n1,1,100,1,N\n"))
    assert "has a column named '_line', a name the pipeline reserves for line numbers" in message


def test_not_a_parquet_file(tmp_path):
    (tmp_path / "data.parquet").write_text("id,cog\n1,2\n")
    cfg = parse_config(
        STUDY.format(path="data.parquet", extra_data=""), path=tmp_path / "study.toml"
    )
    message = load_error(cfg)
    assert message.startswith(f"{tmp_path / 'data.parquet'}: cannot be read as Parquet:")


def test_unknown_suffix(tmp_path):
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    cfg = parse_config(STUDY.format(path="data.xlsx", extra_data=""), path=tmp_path / "study.toml")
    assert "cannot tell the file format from the suffix '.xlsx'" in load_error(cfg)


WIDE_STUDY_DATA = (
    'layout = "wide"\n[data.wide]\ncolumns = { cog_w2 = 1.5, cog_w1 = 1.0, cog_w3 = 2.0 }'
)


def test_wide_to_long_keeps_the_wide_row_and_drops_empty_waves(tmp_path):
    text = "id,trt,cog_w1,cog_w2,cog_w3\n7,N,100,,90\n8,Y,110,105,x\n9,N,,NA,\n"
    cfg = study(tmp_path, text, extra_data=WIDE_STUDY_DATA)
    loaded = load_data(cfg)
    # rows read: the file's rows; the reshaped occasions are counted apart
    assert loaded.rows_in == 3
    assert loaded.long_rows == loaded.frame.height == 6
    assert loaded.frame.columns == ["_line", "id", "trt", "age", "cog"]
    assert loaded.frame.rows() == [
        (2, "7", "N", 1.0, "100"),
        (2, "7", "N", 2.0, "90"),
        (3, "8", "Y", 1.0, "110"),
        (3, "8", "Y", 1.5, "105"),
        (3, "8", "Y", 2.0, "x"),
        # no wave observed: one row with a missing outcome, so the wide row is not lost
        (4, "9", "N", 1.0, None),
    ]


def test_wide_round_trip(tmp_path):
    wide = pl.DataFrame(
        {
            "id": [f"p{i}" for i in range(50)],
            "trt": ["N", "Y"] * 25,
            "cog_w1": [str(100 + i) for i in range(50)],
            "cog_w2": [str(90 + i) if i % 7 else None for i in range(50)],
            "cog_w3": [str(80 + i) for i in range(50)],
        }
    )
    wide.write_csv(tmp_path / "wide.csv")
    cfg = study(tmp_path, (tmp_path / "wide.csv").read_bytes(), extra_data=WIDE_STUDY_DATA)
    long = load_data(cfg).frame
    assert long.height == 150 - 8  # 8 empty cells of cog_w2 are not occasions
    back = (
        long.with_columns(
            pl.col("age").replace_strict({1.0: "cog_w1", 1.5: "cog_w2", 2.0: "cog_w3"})
        )
        .pivot(on="age", index=["_line", "id", "trt"], values="cog")
        .sort("_line")
        .select(wide.columns)
    )
    assert back.equals(wide)


def test_wide_missing_wave_column(tmp_path):
    cfg = study(tmp_path, "id,trt,cog_w1,cog_w2,cog_3\n7,N,1,2,3\n", extra_data=WIDE_STUDY_DATA)
    message = load_error(cfg)
    assert (
        "column 'cog_w3' ([data.wide] columns in study.toml) not found; did you mean 'cog_3'?"
        in message
    )
