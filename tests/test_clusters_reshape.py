"""Reshape with nested levels: cluster columns in every table, one table per cluster."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipeline.config import parse_config
from pipeline.io import load_data
from pipeline.reshape import describe, split_levels
from pipeline.validate import validate_data

STUDY = """\
[study]
name = "c"
title = "c"

[data]
path = "data.csv"
person = "pid"
time = "t"
outcome = "y"
person_covariates = ["g"]
clusters = ["classroom", "school"]
cluster_covariates = {{ school = ["lowinc", "sector"], classroom = ["size"] }}
ids = "{ids}"
max_invalid_fraction = 1.0
{extra}

[data.categories]
sector = ["public", "private"]

[time]
name = "tc"
centre = 1.0

[output]
dir = "out"
"""

# school 1: classrooms a (pupils 1, 2) and b (pupil 3); school 2: classroom a (pupils 1, 4)
# with ids within clusters, pupil 1 of school 1 and pupil 1 of school 2 are two persons
CSV = """\
pid,t,y,g,classroom,school,lowinc,sector,size
1,0,1.0,0,a,1,10,public,20
1,1,2.0,0,a,1,10,public,20
2,0,1.5,1,a,1,10,public,20
2,1,,1,a,1,10,public,20
3,0,2.0,0,b,1,10,public,30
1,0,3.0,1,a,2,40,private,25
1,1,4.0,1,a,2,40,private,25
4,0,2.5,0,a,2,40,private,25
"""


def levels(tmp_path: Path, *, ids: str = "within_cluster", extra: str = ""):
    (tmp_path / "data.csv").write_text(CSV, encoding="utf-8")
    cfg = parse_config(STUDY.format(ids=ids, extra=extra), path=tmp_path / "study.toml")
    result = validate_data(load_data(cfg), cfg)
    assert result.rows_quarantined == 0
    return split_levels(result.valid, cfg), cfg


def test_persons_are_keyed_within_their_clusters(tmp_path):
    split, cfg = levels(tmp_path)
    assert split.person_key == ("school", "classroom", "pid")
    assert split.cluster_names == ("classroom", "school")
    level2 = split.level2
    assert level2.height == 5  # pupil 1 twice: once per school
    assert level2.columns[:3] == ["pid", "classroom", "school"]
    assert level2.select("school", "classroom", "pid", "g", "n_occasions").rows() == [
        ("1", "a", "1", 0, 2),
        ("1", "a", "2", 1, 2),
        ("1", "b", "3", 0, 1),
        ("2", "a", "1", 1, 2),
        ("2", "a", "4", 0, 1),
    ]
    frame = split.model_frame
    assert {"classroom", "school", "lowinc", "sector", "size"} <= set(frame.columns)
    assert frame.height == 7  # the missing outcome is not fitted
    assert frame.schema["sector"] == pl.Enum(["public", "private"])
    second = frame.filter((pl.col("school") == "2") & (pl.col("pid") == "1"))
    assert second.select("g", "lowinc", "size").unique().rows() == [(1, 40.0, 25.0)]
    assert describe(split, cfg).summary["persons"].item() == 5


def test_one_table_per_cluster_with_covariates_and_counts(tmp_path):
    split, _ = levels(tmp_path)
    classrooms = split.clusters["classroom"]
    assert classrooms.columns == ["school", "classroom", "size", "n_persons", "n_observations"]
    assert classrooms.rows() == [
        ("1", "a", 20.0, 2, 3),
        ("1", "b", 30.0, 1, 1),
        ("2", "a", 25.0, 2, 3),
    ]
    schools = split.clusters["school"]
    assert schools.columns == [
        "school",
        "lowinc",
        "sector",
        "n_persons",
        "n_observations",
        "n_classroom",
    ]
    assert schools.select(
        "school", "lowinc", "n_persons", "n_observations", "n_classroom"
    ).rows() == [
        ("1", 10.0, 3, 4, 2),
        ("2", 40.0, 2, 3, 1),
    ]
    assert schools["sector"].dtype == pl.Enum(["public", "private"])


def test_with_unique_ids_the_person_is_the_id_and_parents_are_kept(tmp_path):
    csv = (
        CSV.replace("\n1,0,3.0,1,a,2", "\n5,0,3.0,1,c,2")
        .replace("\n1,1,4.0,1,a,2", "\n5,1,4.0,1,c,2")
        .replace("\n4,0,2.5,0,a,2", "\n4,0,2.5,0,c,2")
    )
    (tmp_path / "data.csv").write_text(csv, encoding="utf-8")
    cfg = parse_config(STUDY.format(ids="unique", extra=""), path=tmp_path / "study.toml")
    result = validate_data(load_data(cfg), cfg)
    assert result.rows_quarantined == 0
    split = split_levels(result.valid, cfg)
    assert split.person_key == ("pid",)
    assert split.level2.select(pl.col("pid", "classroom", "school").cast(pl.String)).rows() == [
        ("1", "a", "1"),
        ("2", "a", "1"),
        ("3", "b", "1"),
        ("4", "c", "2"),
        ("5", "c", "2"),
    ]
    classrooms = split.clusters["classroom"]
    assert classrooms.columns == ["classroom", "school", "size", "n_persons", "n_observations"]
    assert classrooms.select("classroom", "n_persons", "n_observations").rows() == [
        ("a", 2, 3),
        ("b", 1, 1),
        ("c", 2, 3),
    ]


def test_a_cluster_covariate_is_grand_mean_centred_over_the_clusters(tmp_path):
    split, _ = levels(tmp_path, extra='centre = { lowinc = "grand", g = "grand" }')
    schools = split.clusters["school"]
    # mean over the two schools (10 and 40), not over their rows
    assert schools["lowinc"].to_list() == pytest.approx([-15.0, 15.0])
    frame = split.model_frame
    assert sorted(set(frame["lowinc"].to_list())) == pytest.approx([-15.0, 15.0])
    # the person covariate is centred over the five persons, as before
    assert split.level2["g"].sum() == pytest.approx(0.0)
