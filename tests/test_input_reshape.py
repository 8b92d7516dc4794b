"""Wide layout (issue 15): the file's rows are the rows read, empty waves are not occasions,
and the descriptives agree with the attrition table."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import parse_config
from pipeline.io import load_data
from pipeline.reshape import describe, split_levels
from pipeline.validate import validate_data

WIDE = """\
[study]
name = "wide"
title = "Wide fixture"

[data]
path = "data.csv"
layout = "wide"
person = "id"
outcome = "score"
person_covariates = ["sex"]

[data.wide]
columns = { s1 = 1.0, s2 = 2.0, s3 = 3.0, s4 = 4.0 }

[time]
name = "t"

[output]
dir = "out"
"""

# 4 children with 2, 4, 3 and 2 observed waves (empty cells: not occasions)
CSV = "id,sex,s1,s2,s3,s4\n1,F,10,11,,\n2,M,10,12,13,14\n3,F,9,,11,12\n4,M,,8,9,\n"


def test_wide_descriptives_count_observed_waves_and_rows_read_count_the_file(tmp_path: Path):
    (tmp_path / "data.csv").write_text(CSV)
    cfg = parse_config(WIDE, path=tmp_path / "study.toml")
    loaded = load_data(cfg)
    assert loaded.rows_in == 4  # rows of the file
    assert loaded.long_rows == 11  # occasions after reshaping
    validation = validate_data(loaded, cfg)
    assert (validation.file_rows, validation.rows_in, validation.rows_used) == (4, 11, 11)
    descriptives = describe(split_levels(validation.valid, cfg), cfg)
    summary = descriptives.summary.row(0, named=True)
    assert summary["persons"] == 4
    assert summary["occasions"] == summary["occasions_with_outcome"] == 11
    assert (summary["min_occasions"], summary["max_occasions"]) == (2, 4)
    assert descriptives.occasions_per_person.rows() == [(2, 2), (3, 1), (4, 1)]
    # the attrition table says the same: persons observed per wave
    assert descriptives.attrition.select("time", "persons").rows() == [
        (1.0, 3),
        (2.0, 3),
        (3.0, 3),
        (4.0, 2),
    ]
    assert (
        sum(persons for _, persons in descriptives.attrition.select("time", "persons").rows()) == 11
    )
