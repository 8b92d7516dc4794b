"""Validation with nested levels: every message names the person or cluster and what was found."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipeline.config import parse_config
from pipeline.io import load_data
from pipeline.validate import ValidationResult, validate_data

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
clusters = {clusters}
cluster_covariates = {cluster_covariates}
ids = "{ids}"
max_invalid_fraction = 1.0
{extra}

[time]
name = "tc"

[output]
dir = "out"
"""


def run(
    tmp_path: Path,
    csv: str,
    *,
    clusters: str = '["school"]',
    cluster_covariates: str = '{ school = ["lowinc"] }',
    ids: str = "unique",
    extra: str = "",
) -> ValidationResult:
    (tmp_path / "data.csv").write_text(csv, encoding="utf-8")
    text = STUDY.format(
        clusters=clusters, cluster_covariates=cluster_covariates, ids=ids, extra=extra
    )
    cfg = parse_config(text, path=tmp_path / "study.toml")
    result = validate_data(load_data(cfg), cfg)
    assert result.rows_in == result.rows_used + result.rows_quarantined
    return result


def by_line(result: ValidationResult) -> dict[int, str]:
    return dict(result.quarantine.select("_line", "reason").iter_rows())


def counts(result: ValidationResult) -> dict[str, int]:
    return dict(result.reasons.iter_rows())


CLEAN = "pid,t,y,g,school,lowinc\n1,0,1,0,1,10\n1,1,2,0,1,10\n2,0,1,1,1,10\n2,1,3,1,1,10\n"


def test_a_clean_nested_file_passes(tmp_path):
    result = run(tmp_path, CLEAN + "3,0,2,0,2,20\n3,1,2,0,2,20\n")
    assert (result.rows_in, result.rows_used, result.rows_quarantined) == (6, 6, 0)
    assert result.valid["school"].cast(pl.String).to_list() == ["1", "1", "1", "1", "2", "2"]


def test_a_mover_has_every_row_quarantined_with_both_schools_named(tmp_path):
    csv = CLEAN + "17,0,1,0,3,30\n17,1,2,0,5,50\n17,2,2,0,3,30\n"
    result = run(tmp_path, csv)
    message = "person 17 appears in school 3 and school 5 (a mover); crossed membership is not supported yet"
    assert by_line(result) == {6: message, 7: message, 8: message}
    assert (result.rows_used, result.rows_quarantined) == (4, 3)
    assert counts(result) == {
        "person appears in more than one school (a mover); crossed membership is not "
        'supported yet (if person ids are unique only within their cluster, set [data] ids = "'
        'within_cluster"): every row of this person is left out (1 person(s): 17)': 3
    }


def test_movers_in_three_schools_and_many_movers_are_listed_briefly(tmp_path):
    rows = "".join(f"{p},{t},1,0,{s},1\n" for p in range(20, 27) for t, s in enumerate((9, 4, 12)))
    result = run(tmp_path, CLEAN + rows, cluster_covariates="{}")
    assert by_line(result)[6] == (
        "person 20 appears in school 4, school 9 and school 12 (a mover); crossed membership "
        "is not supported yet"
    )
    (reason, rows_counted), *_ = result.reasons.rows()
    assert rows_counted == 21
    assert reason.endswith("(7 person(s): 20, 21, 22, 23, 24 and 2 more)")


def test_with_ids_within_cluster_the_same_id_in_two_schools_is_two_persons(tmp_path):
    csv = CLEAN + "1,0,1,1,2,20\n1,1,2,1,2,20\n"
    assert run(tmp_path, csv, ids="within_cluster").rows_quarantined == 0
    # with unique ids person 1 is a mover; its person covariate also varies
    unique = run(tmp_path, csv)
    assert by_line(unique)[2] == (
        "person 1 appears in school 1 and school 2 (a mover); crossed membership is not "
        "supported yet; person-level covariate g varies within person 1: 0, 1; duplicate of "
        "person 1 at time 0 (lines 2, 6)"
    )


def test_person_checks_use_the_full_person_key_with_ids_within_cluster(tmp_path):
    csv = CLEAN + "1,0,1,0,2,20\n1,0,5,1,2,20\n"
    result = run(tmp_path, csv, ids="within_cluster")
    assert by_line(result) == {
        6: "person-level covariate g varies within person 1 in school 2: 0, 1; duplicate of "
        "person 1 in school 2 at time 0 (lines 6, 7)",
        7: "person-level covariate g varies within person 1 in school 2: 0, 1; duplicate of "
        "person 1 in school 2 at time 0 (lines 6, 7)",
    }
    assert (
        counts(result)[
            "person-level covariate g varies within person: every row of this person is left out "
            "(1 person(s): 1 in school 2)"
        ]
        == 2
    )


def test_a_missing_cluster_id_quarantines_the_row(tmp_path):
    result = run(tmp_path, CLEAN + "3,0,1,0,,10\n3,1,1,0,  ,10\n", cluster_covariates="{}")
    assert by_line(result) == {6: "school is missing", 7: "school is missing"}
    assert counts(result) == {"school is missing": 2}


def test_a_cluster_covariate_that_varies_quarantines_its_cluster(tmp_path):
    csv = CLEAN + "3,0,1,0,4,12\n3,1,2,0,4,13\n5,0,1,0,4,12\n"
    result = run(tmp_path, csv)
    message = "school-level covariate lowinc varies within school 4: 12 and 13"
    assert by_line(result) == {6: message, 7: message, 8: message}
    assert counts(result) == {
        "school-level covariate lowinc varies within school: every row of this school is "
        "left out (1 school(s): school 4)": 3
    }


def test_a_text_cluster_covariate_has_declared_levels(tmp_path):
    csv = "pid,t,y,g,school,sector\n1,0,1,0,1,public\n1,1,2,0,1,public\n2,0,1,0,2,charter\n"
    result = run(
        tmp_path,
        csv,
        cluster_covariates='{ school = ["sector"] }',
        extra='[data.categories]\nsector = ["public", "private"]',
    )
    assert by_line(result) == {
        4: "school-level covariate sector 'charter' is not one of the declared levels "
        "public, private"
    }


def test_a_classroom_in_two_schools_is_not_nested(tmp_path):
    csv = (
        "pid,t,y,g,classroom,school\n1,0,1,0,a,1\n1,1,2,0,a,1\n"
        "2,0,1,0,b,1\n2,1,1,0,b,1\n3,0,1,0,b,2\n"
    )
    result = run(tmp_path, csv, clusters='["classroom", "school"]', cluster_covariates="{}")
    message = (
        "classroom b appears in school 1 and school 2; a classroom must lie in one school "
        "(crossed membership is not supported yet)"
    )
    assert by_line(result) == {4: message, 5: message, 6: message}
    assert counts(result) == {
        "classroom appears in more than one school (not nested); crossed membership is not "
        "supported yet (if classroom ids are unique only within the next level, set [data] "
        'ids = "within_cluster"): every row of this classroom is left out (1 classroom(s): '
        "classroom b)": 3
    }
    within = run(
        tmp_path,
        csv,
        clusters='["classroom", "school"]',
        cluster_covariates="{}",
        ids="within_cluster",
    )
    assert within.rows_quarantined == 0


def test_a_classroom_covariate_is_named_by_its_school_with_ids_within_cluster(tmp_path):
    csv = (
        "pid,t,y,g,classroom,school,size\n1,0,1,0,a,1,20\n1,1,2,0,a,1,20\n"
        "2,0,1,0,a,2,25\n2,1,1,0,a,2,26\n"
    )
    result = run(
        tmp_path,
        csv,
        clusters='["classroom", "school"]',
        cluster_covariates='{ classroom = ["size"] }',
        ids="within_cluster",
    )
    message = "classroom-level covariate size varies within classroom a in school 2: 25 and 26"
    assert by_line(result) == {4: message, 5: message}


def test_cluster_ids_respect_the_label_limit_and_control_characters(tmp_path):
    csv = CLEAN + f'3,0,1,0,{"s" * 30},10\n4,0,1,0,"x\x01y",10\n'
    result = run(tmp_path, csv, cluster_covariates="{}")
    (tmp_path / "data.csv").write_text(csv, encoding="utf-8")
    cfg = parse_config(
        STUDY.format(clusters='["school"]', cluster_covariates="{}", ids="unique", extra="")
        + "\n[limits]\nmax_label_length = 20\n",
        path=tmp_path / "study.toml",
    )
    limited = validate_data(load_data(cfg), cfg)
    assert by_line(limited)[6] == (
        f"school '{'s' * 30}' is longer than 20 characters ([limits] "
        "max_label_length; raise it in the config if the study needs longer)"
    )
    assert by_line(result)[7] == (
        "school contains a control character (\\x01) in the value 'x\\x01y'; remove it from "
        "the data file (or fix the file's encoding)"
    )
    assert 6 not in by_line(result)


def test_row_accounting_holds_on_a_mixed_file(tmp_path):
    csv = (
        CLEAN
        + "17,0,1,0,3,30\n17,1,2,0,5,50\n"  # mover
        + "8,0,1,0,,10\n"  # missing school
        + "9,0,1,0,6,1\n9,1,x,0,6,2\n"  # covariate varies, outcome not a number
        + "10,0,1,0,7,1\n10,1,2,0,7,1\n"
    )
    result = run(tmp_path, csv)
    assert (result.rows_in, result.rows_used, result.rows_quarantined) == (11, 6, 5)
    assert result.valid.filter(pl.col("pid").cast(pl.String) == "17").height == 0


def test_a_missing_cluster_column_is_a_one_line_error(tmp_path):
    from pipeline.errors import DataError

    with pytest.raises(DataError) as caught:
        run(tmp_path, "pid,t,y,g,schol,lowinc\n1,0,1,0,1,10\n")
    assert str(caught.value).endswith(
        "data.csv: column 'school' ([data] clusters in study.toml) not found; did you mean "
        "'schol'? The file has: pid, t, y, g, schol, lowinc"
    )
    with pytest.raises(DataError) as caught:
        run(tmp_path, "pid,t,y,g,school\n1,0,1,0,1\n")
    assert str(caught.value).endswith(
        "data.csv: column 'lowinc' ([data] cluster_covariates.school in study.toml) not found; "
        "the file has: pid, t, y, g, school"
    )


def test_a_wide_file_with_a_cluster_column_is_validated_per_occasion(tmp_path):
    csv = "pid,g,school,lowinc,y0,y1\n1,0,1,10,1.0,2.0\n2,1,1,10,1.5,\n3,0,2,20,2.0,2.5\n"
    result = run(
        tmp_path,
        csv,
        extra='layout = "wide"\n[data.wide]\ncolumns = { y0 = 0.0, y1 = 1.0 }',
    )
    assert (result.rows_in, result.rows_quarantined) == (5, 0)
    assert sorted(result.valid["school"].cast(pl.String).to_list()) == ["1", "1", "1", "2", "2"]
