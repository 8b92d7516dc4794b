"""Validation: every failure found in one pass, quarantined with its reason; the counts always add up."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import StudyConfig, load_config, parse_config
from pipeline.errors import DataError, QuarantineLimitError
from pipeline.io import LoadedData, load_data
from pipeline.validate import ValidationResult, validate_data

ROOT = Path(__file__).resolve().parents[1]

STUDY = """\
[study]
name = "messy"
title = "Messy fixture"

[data]
path = "data.csv"
person = "id"
time = "age"
outcome = "cog"
person_covariates = ["trt"]
time_covariates = {time_covariates}
max_invalid_fraction = {fraction}
{extra}

[data.categories]
trt = ["N", "Y"]

[time]
name = "age1"
centre = 1.0

[output]
dir = "out"
"""


def config(
    tmp_path: Path, *, fraction: float = 1.0, extra: str = "", time_covariates: str = "[]"
) -> StudyConfig:
    text = STUDY.format(fraction=fraction, extra=extra, time_covariates=time_covariates)
    return parse_config(text, path=tmp_path / "study.toml")


def run(tmp_path: Path, csv: str, **options) -> ValidationResult:
    (tmp_path / "data.csv").write_text(csv, encoding="utf-8")
    cfg = config(tmp_path, **options)
    return validate_data(load_data(cfg), cfg)


def reasons_by_row(result: ValidationResult) -> dict[int, str]:
    """Reason by data row (1 = the first row after the header, i.e. ``_line`` - 1)."""
    return dict(result.quarantine.select(pl.col("_line") - 1, "reason").iter_rows())


def test_example_is_clean():
    cfg = load_config(ROOT / "config" / "early.toml")
    result = validate_data(load_data(cfg), cfg)
    assert (result.rows_in, result.rows_used, result.rows_quarantined) == (309, 309, 0)
    assert result.quarantine.columns == ["_line", "id", "cog", "age", "trt", "age1", "reason"]
    assert result.reasons.height == 0
    assert result.missing_outcome == 0
    assert result.valid.schema["age"] == pl.Float64 and result.valid.schema["cog"] == pl.Float64


def test_duplicates_quarantine_every_copy_and_name_rows(tmp_path):
    result = run(tmp_path, "id,cog,age,trt\n68,1,1,Y\n68,2,1.5,Y\n68,3,1.50,Y\n69,4,1,N\n")
    assert reasons_by_row(result) == {
        2: "duplicate of person 68 at time 1.5 (lines 3, 4)",
        3: "duplicate of person 68 at time 1.5 (lines 3, 4)",
    }
    assert result.quarantine.filter(pl.col("_line") == 4).get_column("age").item() == "1.50"
    assert result.reasons.rows() == [("duplicate occasion (same person and time)", 2)]


def test_varying_person_covariate_quarantines_the_whole_person(tmp_path):
    result = run(tmp_path, "id,cog,age,trt\n68,1,1,Y\n68,2,1.5,N\n68,3,2,Y\n69,4,1,N\n")
    reasons = reasons_by_row(result)
    assert reasons == {
        row: "person-level covariate trt varies within person 68: N, Y" for row in (1, 2, 3)
    }
    assert result.valid.get_column("id").to_list() == ["69"]
    assert result.reasons.rows() == [
        (
            "person-level covariate trt varies within person: every row of this person is "
            "left out (1 person(s): 68)",
            3,
        )
    ]


def test_text_nan_inf_and_missing_values(tmp_path):
    csv = (
        "id,cog,age,trt\n"
        "1,100,1,N\n"  # 1 valid
        "1,abc,1.5,N\n"  # 2 outcome text
        "1,,2,N\n"  # 3 missing outcome: valid
        "2,NaN,1,Y\n"  # 4 NaN outcome counts as missing: valid
        "2,inf,1.5,Y\n"  # 5 infinite outcome
        "2,90,two,Y\n"  # 6 time text
        "3,90,-inf,N\n"  # 7 infinite time
        "3,91,NaN,N\n"  # 8 NaN time
        ",92,1,N\n"  # 9 person missing
        "4,93,,N\n"  # 10 time missing
        "5,94,1,\n"  # 11 covariate missing
        "6,95,1,maybe\n"  # 12 undeclared level
    )
    result = run(tmp_path, csv)
    assert reasons_by_row(result) == {
        2: "outcome (cog) 'abc' is not a number",
        5: "outcome (cog) is infinite",
        6: "time (age) 'two' is not a number",
        7: "time (age) is infinite",
        8: "time (age) is NaN (not a number)",
        9: "person id (id) is missing",
        10: "time (age) is missing",
        11: "person-level covariate trt is missing",
        12: "person-level covariate trt 'maybe' is not one of the declared levels N, Y",
    }
    assert result.valid.get_column("_line").to_list() == [2, 4, 5]
    assert result.valid.get_column("cog").to_list() == [100.0, None, None]
    assert result.missing_outcome == 2
    assert result.rows_in == 12 and result.rows_used == 3 and result.rows_quarantined == 9
    # the original text is kept in the quarantine, not the parsed value
    assert result.quarantine.filter(pl.col("_line") == 3).row(0, named=True)["cog"] == "abc"


def test_several_reasons_on_one_row_are_all_given(tmp_path):
    result = run(tmp_path, "id,cog,age,trt\n1,x,y,Z\n2,1,1,N\n")
    assert reasons_by_row(result)[1] == (
        "time (age) 'y' is not a number; outcome (cog) 'x' is not a number; "
        "person-level covariate trt 'Z' is not one of the declared levels N, Y"
    )


CONTROL = "; remove it from the data file (or fix the file's encoding)"


def test_control_characters_in_ids_and_categories_are_quarantined_with_escaped_reasons(tmp_path):
    csv = (
        "id,cog,age,trt,site\n"
        "1,100,1,N,a\n"  # 1 valid
        "2,101,1,Y\x01,a\n"  # 2 control character in a declared-level covariate
        "3\x1b,102,1,N,a\n"  # 3 escape in the person id
        "4,103,1,N,b\x00c\n"  # 4 NUL in a text time-varying covariate
        "5,104,1,N\x7f,a\n"  # 5 DEL
        "6\t7,105,1,Y,a\n"  # 6 a tab is allowed
    )
    result = run(tmp_path, csv, time_covariates='["site"]')
    assert reasons_by_row(result) == {
        2: "person-level covariate trt contains a control character (\\x01) in the value "
        "'Y\\x01'" + CONTROL + "; person-level covariate trt 'Y\\x01' is not one of the "
        "declared levels N, Y",
        3: "person id (id) contains a control character (\\x1b) in the value '3\\x1b'" + CONTROL,
        4: "time-varying covariate site contains a control character (\\x00) in the value "
        "'b\\x00c'" + CONTROL,
        5: "person-level covariate trt contains a control character (\\x7f) in the value "
        "'N\\x7f'" + CONTROL + "; person-level covariate trt 'N\\x7f' is not one of the "
        "declared levels N, Y",
    }
    assert result.valid.get_column("id").to_list() == ["1", "6\t7"]
    assert (result.rows_in, result.rows_used, result.rows_quarantined) == (6, 2, 4)
    assert result.rows_in == result.rows_used + result.rows_quarantined
    assert result.reasons.rows() == [
        ("person-level covariate trt contains a control character", 2),
        (
            "person-level covariate trt has undeclared level(s) 'N\\x7f', 'Y\\x01' "
            "(declared in [data.categories]: N, Y)",
            2,
        ),
        ("person id (id) contains a control character", 1),
        ("time-varying covariate site contains a control character", 1),
    ]
    # the quarantine keeps the original value; no reason carries a raw control character
    assert result.quarantine.filter(pl.col("_line") == 3).item(0, "trt") == "Y\x01"
    for reason in result.quarantine.get_column("reason"):
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in reason), repr(reason)


def test_a_control_character_in_a_declared_level_still_quarantines_the_row(tmp_path):
    # the audit's reproduction: "Y" replaced by "Y\x01" in the data and in [data.categories]
    (tmp_path / "data.csv").write_text(
        "id,cog,age,trt\n1,100,1,N\n1,101,1.5,N\n2,102,1,Y\x01\n2,103,1.5,Y\x01\n",
        encoding="utf-8",
    )
    text = STUDY.format(fraction=1.0, extra="", time_covariates="[]").replace(
        'trt = ["N", "Y"]', 'trt = ["N", "Y\\u0001"]'
    )
    cfg = parse_config(text, path=tmp_path / "study.toml")
    result = validate_data(load_data(cfg), cfg)
    assert reasons_by_row(result) == {
        row: "person-level covariate trt contains a control character (\\x01) in the value "
        "'Y\\x01'" + CONTROL
        for row in (3, 4)
    }
    assert (result.rows_in, result.rows_used, result.rows_quarantined) == (4, 2, 2)


def test_time_range(tmp_path):
    result = run(tmp_path, "id,cog,age,trt\n1,1,1,N\n1,2,12,N\n", extra="time_range = [0.5, 3]")
    assert reasons_by_row(result) == {
        2: "time (age) 12 is outside the allowed range 0.5 to 3 ([data] time_range)"
    }


def test_numeric_time_covariate_is_checked_and_typed(tmp_path):
    csv = "id,cog,age,trt,stress\n1,1,1,N,0.5\n1,2,2,N,oops\n2,3,1,N,1e3\n2,4,2,N,1.25\n"
    result = run(tmp_path, csv, time_covariates='["stress"]')
    assert reasons_by_row(result) == {2: "time-varying covariate stress 'oops' is not a number"}
    assert result.valid.schema["stress"] == pl.Float64
    assert result.valid.get_column("stress").to_list() == [0.5, 1000.0, 1.25]


def test_waves_are_mapped_to_times(tmp_path):
    (tmp_path / "data.csv").write_text("id,cog,age,trt\n1,5,w1,N\n1,6,w2,N\n1,7,w9,N\n")
    text = STUDY.format(fraction=1.0, extra="", time_covariates="[]").replace(
        "centre = 1.0", "centre = 1.0\nwaves = { w1 = 1.0, w2 = 1.5 }"
    )
    cfg = parse_config(text, path=tmp_path / "study.toml")
    result = validate_data(load_data(cfg), cfg)
    assert result.valid.get_column("age").to_list() == [1.0, 1.5]
    assert reasons_by_row(result) == {
        3: "time (age) 'w9' is not one of the waves in [time] waves (w1, w2)"
    }


def test_limit_raises_with_counts_and_keeps_the_result(tmp_path):
    csv = (
        "id,cog,age,trt\n"
        + "".join(f"{i},{i},1,N\n" for i in range(1, 19))
        + "19,x,1,N\n20,y,1,N\n"
    )
    with pytest.raises(QuarantineLimitError) as caught:
        run(tmp_path, csv, fraction=0.05)
    message = str(caught.value)
    assert message == (
        f"{tmp_path / 'data.csv'}: 2 of 20 rows (10.0%) are invalid, above the allowed 5.0% "
        "([data] max_invalid_fraction = 0.05); most common reasons: outcome (cog) is not a number (2 rows)"
    )
    validation = caught.value.validation
    assert isinstance(validation, ValidationResult)
    assert validation.quarantine.get_column("_line").to_list() == [20, 21]
    assert isinstance(caught.value, DataError)


def test_at_the_limit_the_run_goes_on(tmp_path):
    csv = "id,cog,age,trt\n" + "".join(f"{i},{i},1,N\n" for i in range(1, 20)) + "20,y,1,N\n"
    result = run(tmp_path, csv, fraction=0.05)
    assert result.rows_quarantined == 1 and result.rows_used == 19


def test_no_valid_rows_is_a_data_error(tmp_path):
    with pytest.raises(DataError) as caught:
        run(tmp_path, "id,cog,age,trt\n1,1,x,N\n2,1,y,N\n")
    assert str(caught.value).endswith(
        "no valid rows: all 2 rows were quarantined; most common reasons: time (age) is not a number (2 rows)"
    )


def test_data_checks_run_even_on_parquet_with_types(tmp_path):
    frame = pl.DataFrame(
        {
            "id": [1, 1, 2, 2],
            "age": [1.0, 1.0, math.inf, 2.0],
            "cog": [1.0, 2.0, 3.0, 4.0],
            "trt": ["N", "N", "Y", "Y"],
        }
    )
    frame.write_parquet(tmp_path / "data.parquet")
    text = STUDY.format(fraction=1.0, extra="", time_covariates="[]").replace(
        "data.csv", "data.parquet"
    )
    cfg = parse_config(text, path=tmp_path / "study.toml")
    result = validate_data(load_data(cfg), cfg)
    assert reasons_by_row(result) == {
        1: "duplicate of person 1 at time 1 (lines 2, 3)",
        2: "duplicate of person 1 at time 1 (lines 2, 3)",
        3: "time (age) is infinite",
    }
    assert result.quarantine.schema["age"] == pl.String
    assert result.valid.rows() == [(5, 2, 2.0, 4.0, "Y")]


# --- property: for any long table the accounting holds and no valid row is quarantined -------

cells = st.one_of(
    st.none(),
    st.sampled_from(["1", "1.5", "2", "abc", "inf", "NaN", " 3 ", "-1e2"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
rows = st.lists(
    st.tuples(
        st.one_of(st.none(), st.sampled_from(["a", "b", "c", "7"])),
        cells,
        cells,
        st.one_of(st.none(), st.sampled_from(["N", "Y", "Q"])),
    ),
    min_size=1,
    max_size=40,
)


def _is_number(text: str | None) -> bool:
    if text is None:
        return False
    try:
        float(text.strip())
    except ValueError:
        return False
    return True


def _expected_valid(table: list[tuple]) -> set[int]:
    """An independent, slow statement of the rules: the rows that should pass."""
    times: dict[tuple[str, float], int] = {}
    levels: dict[str, set[str]] = {}
    seen: set[tuple] = set()
    copies: set[int] = set()  # exact copies of an earlier row: quarantined, not counted
    for position, row in enumerate(table, start=1):
        if row in seen:
            copies.add(position)
        seen.add(row)
    for position, (person, time, _, trt) in enumerate(table, start=1):
        if position in copies:
            continue
        if person is not None and _is_number(time):
            key = (person, float(time.strip()))
            times[key] = times.get(key, 0) + 1
        if person is not None and trt is not None:
            levels.setdefault(person, set()).add(trt)
    valid = set()
    for position, (person, time, outcome, trt) in enumerate(table, start=1):
        ok = position not in copies
        ok = ok and person is not None and _is_number(time)
        ok = ok and math.isfinite(float(time.strip())) and abs(float(time.strip())) <= 1e30
        ok = ok and (outcome is None or (_is_number(outcome) and not math.isinf(float(outcome))))
        ok = ok and (outcome is None or not abs(float(outcome)) > 1e100)
        ok = ok and trt in {"N", "Y"}
        ok = ok and times[(person, float(time.strip()))] == 1 and len(levels[person]) == 1
        if ok:
            valid.add(position)
    return valid


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(table=rows)
def test_row_accounting_property(tmp_path, table):
    frame = (
        pl.DataFrame(
            {
                "id": [r[0] for r in table],
                "age": [r[1] for r in table],
                "cog": [r[2] for r in table],
                "trt": [r[3] for r in table],
            },
            schema={"id": pl.String, "age": pl.String, "cog": pl.String, "trt": pl.String},
        )
        .with_row_index("_line", offset=1)
        .with_columns(pl.col("_line").cast(pl.Int64))
    )
    cfg = config(tmp_path)
    loaded = LoadedData(
        frame=frame,
        path=tmp_path / "data.csv",
        sha256="",
        rows_in=frame.height,
        format="csv",
        layout="long",
    )
    try:
        result = validate_data(loaded, cfg)
    except QuarantineLimitError as error:
        result = error.validation
    assert result.rows_in == result.rows_used + result.rows_quarantined == len(table)
    valid_rows = set(result.valid.get_column("_line").to_list())
    quarantined = set(result.quarantine.get_column("_line").to_list())
    assert valid_rows.isdisjoint(quarantined)
    assert valid_rows == _expected_valid(table)
    assert result.quarantine.get_column("reason").null_count() == 0
    assert (result.quarantine.get_column("reason").str.len_chars() > 0).all()
