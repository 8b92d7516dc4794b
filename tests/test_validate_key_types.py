"""Integer id columns are grouped as they are, text columns as stripped text: the rules must
quarantine the same rows with the same reasons either way (an integer and its decimal text
group alike; a number's text is never empty)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipeline.config import parse_config
from pipeline.io import load_data
from pipeline.validate import validate_data
from schemas.input import input_roles, prepare_input

STUDY = """\
[study]
name = "k"
title = "k"

[data]
path = "data.parquet"
person = "pid"
time = "t"
outcome = "y"
person_covariates = ["g", "ses"]
time_covariates = ["stress"]
clusters = ["school"]
cluster_covariates = {{ school = ["lowinc"] }}
ids = "{ids}"
max_invalid_fraction = 1.0

[time]
name = "tc"

[output]
dir = "out"
"""

# every kind of trouble the grouping rules look for, with integer ids
ROWS = [
    # pid, school, t, y, g, ses, stress, lowinc
    (1, 10, 0.0, 5.0, "a", 0.5, 0.1, 30.0),
    (1, 10, 1.0, 6.0, "a", 0.5, 0.2, 30.0),
    (1, 10, 1.0, 6.5, "a", 0.5, 0.2, 30.0),  # a second, different occasion 1
    (2, 10, 0.0, 4.0, "b", 1.5, 0.3, 30.0),
    (2, 10, 1.0, 5.0, "b", 1.5, 0.3, 30.0),
    (2, 10, 1.0, 5.0, "b", 1.5, 0.3, 30.0),  # an exact copy
    (3, 11, 0.0, 7.0, "a", 2.0, 0.0, 12.0),
    (3, 11, 1.0, 8.0, "b", 2.0, 0.1, 12.0),  # g varies within the person
    (4, 11, 0.0, 3.0, "b", 0.1, 0.4, 12.0),
    (4, 11, 1.0, 4.0, "b", 0.9, 0.4, 12.0),  # ses varies within the person
    (5, 11, 0.0, 6.0, "a", 1.0, 0.2, 12.0),
    (5, 12, 1.0, 6.0, "a", 1.0, 0.2, 40.0),  # a mover: school 11 then 12
    (6, 12, 0.0, 2.0, "a", 1.0, 0.2, 40.0),
    (6, 12, 1.0, 2.5, "a", 1.0, 0.2, 41.0),  # lowinc varies within school 12
    (None, 12, 0.0, 2.5, "a", 1.0, 0.2, 40.0),  # no person
    (7, None, 0.0, 2.5, "a", 1.0, 0.2, 40.0),  # no school
    (7, 13, 1.0, 2.5, "a", 1.0, 0.2, 40.0),
    (8, 13, 0.0, 1.0, "b", 0.3, 0.1, 40.0),
    (8, 13, 1.0, 1.5, "b", 0.3, 0.1, 40.0),
]


def _frame(id_type: pl.DataType) -> pl.DataFrame:
    columns = ["pid", "school", "t", "y", "g", "ses", "stress", "lowinc"]
    frame = pl.DataFrame(ROWS, schema=columns, orient="row")
    return frame.with_columns(pl.col("pid", "school").cast(id_type))


def _quarantine(tmp_path: Path, frame: pl.DataFrame, ids: str) -> dict[int, str]:
    frame.write_parquet(tmp_path / "data.parquet")
    cfg = parse_config(STUDY.format(ids=ids), path=tmp_path / "study.toml")
    loaded = load_data(cfg)
    result = validate_data(loaded, cfg)
    assert result.rows_in == result.rows_used + result.rows_quarantined
    return dict(result.quarantine.select("_line", "reason").iter_rows())


@pytest.mark.parametrize("ids", ["unique", "within_cluster"])
def test_integer_and_text_ids_quarantine_alike(tmp_path: Path, ids: str) -> None:
    (tmp_path / "int").mkdir()
    (tmp_path / "text").mkdir()
    as_integers = _quarantine(tmp_path / "int", _frame(pl.Int64), ids)
    as_text = _quarantine(tmp_path / "text", _frame(pl.String), ids)
    assert as_integers == as_text
    reasons = " ".join(as_integers.values())
    expected = [
        "duplicate of person 1 ",
        "exact duplicate of line 6",
        "person-level covariate g varies within person 3",
        "person-level covariate ses varies within person 4",
        "person id (pid) is missing",
        "school-level covariate lowinc varies within school 12",
        "school is missing",
    ]
    if ids == "unique":
        expected.append("person 5")  # the mover, named with both schools
    for text in expected:
        assert text in reasons, (text, as_integers)


def test_the_roles_know_the_column_types(tmp_path: Path) -> None:
    frame = _frame(pl.Int64)
    frame.write_parquet(tmp_path / "data.parquet")
    cfg = parse_config(STUDY.format(ids="unique"), path=tmp_path / "study.toml")
    loaded = load_data(cfg)
    roles = input_roles(loaded.frame, cfg)
    assert roles.dtypes["pid"] == pl.Int64 and roles.dtypes["g"] == pl.String
    prepared = prepare_input(loaded.frame, roles)
    assert prepared.height == frame.height
