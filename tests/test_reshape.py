"""Level split, time coding, centring helpers and descriptives."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import load_config, parse_config
from pipeline.io import load_data
from pipeline.reshape import (
    describe,
    grand_mean_centre,
    group_mean_centre,
    split_levels,
    split_within_between,
)
from pipeline.validate import validate_data

ROOT = Path(__file__).resolve().parents[1]

STUDY = """\
[study]
name = "reshape"
title = "Reshape fixture"

[data]
path = "data.csv"
person = "id"
time = "month"
outcome = "score"
person_covariates = ["sex", "ses"]
time_covariates = ["stress"]
max_invalid_fraction = 1.0
{extra}

[data.categories]
sex = ["M", "F"]

[time]
name = "years"
centre = 12
scale = 12
"""

CSV = (
    "id,month,score,sex,ses,stress\n"
    "10,12,50,F,1,2\n"
    "2,12,40,M,3,1\n"
    "10,24,55,F,1,4\n"
    "2,36,,M,3,3\n"
    "2,24,44,M,3,2\n"
    "7,12,30,F,5,0\n"
)


def levels_for(tmp_path: Path, *, extra: str = ""):
    (tmp_path / "data.csv").write_text(CSV, encoding="utf-8")
    text = STUDY.format(extra=extra) + '\n[output]\ndir = "out"\n'
    cfg = parse_config(text, path=tmp_path / "study.toml")
    result = validate_data(load_data(cfg), cfg)
    return split_levels(result.valid, cfg), cfg


def test_level_tables_time_coding_and_order(tmp_path):
    levels, _ = levels_for(tmp_path)
    assert levels.time_name == "years"
    assert levels.level1.columns == ["id", "month", "years", "score", "stress"]
    # persons in numeric order (2, 7, 10), then time
    assert levels.level1.select("id", "month", "years").rows() == [
        ("2", 12.0, 0.0),
        ("2", 24.0, 1.0),
        ("2", 36.0, 2.0),
        ("7", 12.0, 0.0),
        ("10", 12.0, 0.0),
        ("10", 24.0, 1.0),
    ]
    assert levels.level2.rows() == [
        ("2", "M", 3.0, 3, 12.0, 36.0),
        ("7", "F", 5.0, 1, 12.0, 12.0),
        ("10", "F", 1.0, 2, 12.0, 24.0),
    ]
    assert levels.level2.columns == ["id", "sex", "ses", "n_occasions", "first_time", "last_time"]


def test_model_frame_drops_missing_outcome_and_uses_declared_level_order(tmp_path):
    levels, _ = levels_for(tmp_path)
    frame = levels.model_frame
    assert frame.height == 5
    assert frame.get_column("score").null_count() == 0
    assert frame.schema["sex"] == pl.Enum(["M", "F"])
    assert frame.schema["ses"] == pl.Float64
    assert frame.columns == ["id", "month", "years", "score", "stress", "sex", "ses"]


def test_example_levels():
    cfg = load_config(ROOT / "config" / "early.toml")
    levels = split_levels(validate_data(load_data(cfg), cfg).valid, cfg)
    assert levels.level1.height == 309 and levels.level2.height == 103
    assert sorted(levels.level1.get_column("age1").unique().to_list()) == [0.0, 0.5, 1.0]
    assert levels.level2.group_by("trt").len().sort("trt").rows() == [("N", 45), ("Y", 58)]
    assert levels.model_frame.schema["trt"] == pl.Enum(["N", "Y"])


def test_descriptives(tmp_path):
    levels, cfg = levels_for(tmp_path)
    desc = describe(levels, cfg)
    assert desc.summary.row(0, named=True) == {
        "persons": 3,
        "occasions": 6,
        "occasions_with_outcome": 5,
        "mean_occasions": 2.0,
        "min_occasions": 1,
        "max_occasions": 3,
    }
    assert desc.occasions_per_person.rows() == [(1, 1), (2, 1), (3, 1)]
    assert desc.attrition.rows() == [(12.0, 3, 1.0), (24.0, 2, 2 / 3), (36.0, 0, 0.0)]
    assert desc.patterns.rows() == [
        ("X X .", "12, 24", 2, 2 / 3),
        ("X . .", "12", 1, 1 / 3),
    ]


def test_describe_example():
    cfg = load_config(ROOT / "config" / "early.toml")
    levels = split_levels(validate_data(load_data(cfg), cfg).valid, cfg)
    desc = describe(levels, cfg)
    assert desc.patterns.rows() == [("X X X", "1, 1.5, 2", 103, 1.0)]
    assert desc.summary.get_column("occasions").item() == 309


def test_centring_from_config(tmp_path):
    extra = '[data.centre]\nses = "grand"\nstress = "person"'
    levels, _ = levels_for(tmp_path, extra=extra)
    # ses grand-mean centred over persons: values 3, 5, 1 -> mean 3
    assert levels.level2.get_column("ses").to_list() == [0.0, 2.0, -2.0]
    assert levels.level2.get_column("stress_person_mean").to_list() == [2.0, 0.0, 3.0]
    assert levels.level1.get_column("stress_within").to_list() == [-1.0, 0.0, 1.0, 0.0, -1.0, 1.0]
    assert "stress_person_mean" in levels.model_frame.columns


def test_group_centring_from_config(tmp_path):
    levels, _ = levels_for(tmp_path, extra='[data.centre]\nses = { group = "sex" }')
    # F persons: ses 5 and 1 (mean 3); M: 3
    assert dict(levels.level2.select("id", "ses").iter_rows()) == {"2": 0.0, "7": 2.0, "10": -2.0}


def test_centring_helpers():
    frame = pl.DataFrame(
        {"g": ["a", "a", "b", "b"], "x": [1.0, 3.0, 10.0, None], "p": [1, 1, 2, 2]}
    )
    centred = grand_mean_centre(frame, "x").get_column("x").to_list()
    assert centred[:3] == pytest.approx([1 - 14 / 3, 3 - 14 / 3, 10 - 14 / 3])
    assert centred[3] is None
    assert group_mean_centre(frame, "x", group="g", name="x_c").get_column("x_c").to_list() == [
        -1.0,
        1.0,
        0.0,
        None,
    ]
    split = split_within_between(frame, "x", person="p")
    assert split.get_column("x_person_mean").to_list() == [2.0, 2.0, 10.0, 10.0]
    assert split.get_column("x_within").to_list() == [-1.0, 1.0, 0.0, None]


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(
        st.tuples(st.integers(0, 5), st.floats(-1e6, 1e6, allow_nan=False)), min_size=1, max_size=30
    )
)
def test_within_plus_between_reconstructs_the_covariate(values):
    frame = pl.DataFrame({"p": [v[0] for v in values], "x": [v[1] for v in values]})
    split = split_within_between(frame, "x", person="p")
    rebuilt = (split.get_column("x_person_mean") + split.get_column("x_within")).to_list()
    assert rebuilt == pytest.approx(frame.get_column("x").to_list(), abs=1e-6)
    means = split.group_by("p").agg(pl.col("x_within").mean()).get_column("x_within").to_list()
    assert means == pytest.approx([0.0] * len(means), abs=1e-6)
