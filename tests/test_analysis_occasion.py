"""``[data] occasion``: a column of occasion labels (the wave) used by attrition, missingness
patterns and every per-occasion statistic, for persons measured at their own ages."""

import numpy as np
import polars as pl
import pytest
from analysis_support import levels_of, study_config

from pipeline.analysis import analyse
from pipeline.config import parse_config
from pipeline.errors import ConfigError, DataError
from pipeline.reshape import describe

WAVES = 9


def _own_ages(persons=40, seed=2):
    """Complete data: 9 visits per person, each at the person's own exact age (wave k near
    age k, jittered by up to +-0.3 years), so the distinct times are all different."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(persons):
        level, slope = rng.normal(10, 2), rng.normal(1, 0.3)
        for wave in range(1, WAVES + 1):
            age = round(wave + rng.uniform(-0.3, 0.3), 3)
            rows.append(
                {
                    "pid": f"p{p}",
                    "age": age,
                    "wave": f"w{wave}",
                    "y": level + slope * age + rng.normal(0, 1),
                    "_row": len(rows) + 2,
                }
            )
    return pl.DataFrame(rows)


def _cfg(occasion=True):
    extra = 'occasion = "wave"' if occasion else ""
    return study_config(time="age", data_extra=extra)


def test_per_occasion_statistics_use_the_wave_labels():
    frame = _own_ages()
    assert frame["age"].n_unique() > 300  # by time value there would be hundreds of "occasions"
    cfg = _cfg()
    levels = levels_of(frame, cfg)
    assert "wave" in levels.level1.columns and "wave" in levels.model_frame.columns
    analysis = analyse(levels, cfg)
    by_time = analysis.tables["residual_variance_by_time"]
    assert by_time["occasion"].to_list() == [f"w{k}" for k in range(1, WAVES + 1)]
    assert by_time["n"].to_list() == [40] * WAVES
    means = analysis.tables["observed_means"]
    assert means["occasion"].to_list() == [f"w{k}" for k in range(1, WAVES + 1)]
    w3 = frame.filter(pl.col("wave") == "w3")
    row = means.filter(pl.col("occasion") == "w3").row(0, named=True)
    assert row["mean"] == pytest.approx(w3["y"].mean())
    assert row["time"] == pytest.approx(w3["age"].mean())
    check = analysis.tables["assumptions"].filter(
        pl.col("check").str.contains("variance across occasions")
    )
    assert "occasions: column 'wave'" in check["check"][0]
    assert analysis.tables["icc_by_time"].height == WAVES


def test_attrition_and_patterns_count_waves():
    frame = _own_ages()
    cfg = _cfg()
    description = describe(levels_of(frame, cfg), cfg)
    assert description.attrition.height == WAVES
    assert description.attrition["persons"].to_list() == [40] * WAVES
    assert description.patterns.height == 1  # complete data: one pattern
    assert description.patterns["pattern"][0] == " ".join(["X"] * WAVES)


def test_without_occasion_the_distinct_times_are_the_occasions():
    frame = _own_ages().filter(pl.col("pid").is_in(["p0", "p1"]))
    cfg = _cfg(occasion=False)
    analysis = analyse(levels_of(frame, cfg), cfg)
    by_time = analysis.tables["residual_variance_by_time"]
    # 18 distinct ages of 2 persons: 18 "occasions" of one observation each (why the
    # occasion column exists); above 20 distinct times they are binned into deciles
    assert by_time.height == 18 and by_time["n"].to_list() == [1] * 18


def test_occasion_column_missing_from_the_data_is_named():
    cfg = _cfg()
    with pytest.raises(DataError) as error:
        levels_of(_own_ages().drop("wave"), cfg)
    assert str(error.value) == (
        "sim.csv: [data] occasion: column 'wave' is not in the data (columns: pid, age, y, _row)"
    )


def test_missing_occasion_label_names_row_and_person():
    frame = _own_ages().with_columns(
        pl.when(pl.col("_row") == 7).then(None).otherwise(pl.col("wave")).alias("wave")
    )
    with pytest.raises(DataError) as error:
        levels_of(frame, _cfg())
    assert (
        str(error.value) == "sim.csv: [data] occasion: column 'wave' is missing (row 7, person p0)"
    )


def test_repeated_occasion_label_names_the_person():
    frame = _own_ages().with_columns(
        pl.when(pl.col("_row") == 3).then(pl.lit("w1")).otherwise(pl.col("wave")).alias("wave")
    )
    with pytest.raises(DataError) as error:
        levels_of(frame, _cfg())
    assert str(error.value) == (
        "sim.csv: [data] occasion: person p0 has occasion 'w1' in 2 rows; each occasion label "
        "may appear once per person"
    )


def test_occasion_must_be_its_own_column_in_the_long_layout(tmp_path):
    with pytest.raises(ConfigError, match="'occasion' and 'person' both name the column 'pid'"):
        study_config(time="age", data_extra='occasion = "pid"')
    text = (
        '[study]\nname = "w"\ntitle = "W"\n[data]\npath = "w.csv"\nlayout = "wide"\nperson = "id"\n'
        'outcome = "y"\noccasion = "wave"\n[data.wide]\ncolumns = { y1 = 1.0, y2 = 2.0 }\n'
        '[time]\nname = "t"\n[output]\ndir = "out"\n'
    )
    with pytest.raises(ConfigError, match="'occasion' needs layout"):
        parse_config(text, path=tmp_path / "w.toml")
