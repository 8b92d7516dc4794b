"""Partitioned data (issue 13): the same answers from partitions as from one frame in memory.

Tolerances, relative (|a - b| / max(|b|, 1e-3 max|column|, 1e-6)): the fixed effects,
their standard errors, the variance components and the likelihoods 1e-10 (the optimum
is polished until the exact gradient stops halving, so the order in which the data
were summed moves it by rounding only); quantities computed from them per person or
as differences of likelihoods (BLUPs, residuals, test statistics) 1e-9; Satterthwaite
df and what follows from them (p-values, intervals) 1e-6, the accuracy of the
numerical Hessian they come from (measured: up to 1.3e-7; 2.7e-6 with continuous time,
a time pattern per person, whose criterion carries more rounding: 1e-4 there). The
optimizer's own record (which start was kept, evaluations, the final gradient) is not
compared.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import fit_growth
from pipeline.analysis import analyse
from pipeline.config import load_config
from pipeline.errors import ConfigError, DataError, GrowthError
from pipeline.io import load_data
from pipeline.model.partial import (
    combine,
    fit_merged,
    merge_levels,
    partition_cross_products,
    partition_levels,
    sample_design,
)
from pipeline.partitioned import (
    FULL_DATA_TABLES,
    LocalExecutor,
    dataset_files,
    executor_for,
    is_partitioned,
    read_partitioned,
)
from pipeline.reshape import split_levels
from pipeline.validate import validate_data

ROOT = Path(__file__).resolve().parents[1]
LOOSE = {"df", "p_value", "conf_low", "conf_high", "statistic_p", "p"}
RECORD = {"optimizer", "evaluations", "max_abs_gradient", "starts"}
STRICT = {
    ("fixed_effects", "estimate"): 1e-10,
    ("fixed_effects", "std_error"): 1e-10,
    ("variance_components", "variance"): 1e-10,
    ("variance_components", "sd_cor"): 1e-10,
    ("model_fit", "deviance"): 1e-10,
    ("model_fit", "loglik"): 1e-10,
    ("model_fit", "aic"): 1e-10,
    ("model_fit", "bic"): 1e-10,
    # 1 - (a variance) / (another): the subtraction turns 1e-12 in the variances into
    # up to 3.5e-9 here (measured with grand-centred covariates)
    ("variance_explained", "proportion_reduced"): 1e-8,
}

CONFIG = """[study]
name = "parts"
title = "Partitioned study"

[data]
path = "{path}"
person = "id"
time = "age"
outcome = "score"
person_covariates = ["group"]
max_invalid_fraction = 0.2
time_range = [0.0, 10.0]

[data.categories]
group = ["control", "treated"]

[time]
name = "t"
centre = 1.0
unit = "years"
label = "Age"

[models]
polynomial = 1
intercept_predictors = ["group"]
slope_predictors = ["group"]

[comparison]
group = "group"
at_times = [1.0, 3.0]

[output]
dir = "out"

[execution]
partitions = {partitions}
sample_persons = {sample}
"""


def _simulate(persons: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    treated = rng.random(persons) < 0.5
    u0 = rng.normal(0, 5, persons)
    u1 = rng.normal(0, 1.5, persons)
    waves = np.array([1.0, 2.0, 3.0, 4.0])
    stay = rng.choice([2, 3, 4], size=persons, p=[0.15, 0.25, 0.6])
    person = np.repeat(np.arange(persons), 4)
    wave = np.tile(np.arange(4), persons)
    keep = wave < np.repeat(stay, 4)
    person, wave = person[keep], wave[keep]
    t = waves[wave] - 1.0
    g = treated[person].astype(float)
    y = 50 + 3 * g + u0[person] + (2 - 1 * g + u1[person]) * t + rng.normal(0, 3, person.size)
    return pl.DataFrame(
        {
            "id": [f"p{i:05d}" for i in person],
            "age": [f"{v:g}" for v in waves[wave]],
            "score": [f"{v:.4f}" for v in y],
            "group": np.where(treated[person], "treated", "control"),
        }
    )


def _study(
    tmp_path: Path,
    *,
    persons: int = 600,
    files: int = 3,
    partitions: int = 4,
    sample: int = 100_000,
    bad: bool = True,
) -> tuple[Path, Path]:
    """A partitioned CSV study (a folder of ``files`` files) and the same data as one file."""
    frame = _simulate(persons, seed=11)
    if bad:  # rows the validation must quarantine, spread over the files
        rows = frame.with_row_index("i")
        frame = rows.with_columns(
            pl.when(pl.col("i") == 5).then(pl.lit("abc")).otherwise(pl.col("score")).alias("score"),
            pl.when(pl.col("i") == 700).then(pl.lit("99")).otherwise(pl.col("age")).alias("age"),
            pl.when(pl.col("i") == 1500)
            .then(pl.lit("other"))
            .otherwise(pl.col("group"))
            .alias("group"),
        ).drop("i")
    folder = tmp_path / "data"
    folder.mkdir()
    n = frame.height
    cuts = np.linspace(0, n, files + 1).astype(int)
    for k in range(files):
        frame.slice(int(cuts[k]), int(cuts[k + 1] - cuts[k])).write_csv(folder / f"part{k}.csv")
    frame.write_csv(tmp_path / "all.csv")
    parted = tmp_path / "parts.toml"
    parted.write_text(CONFIG.format(path="data", partitions=partitions, sample=sample))
    whole = tmp_path / "whole.toml"
    whole.write_text(CONFIG.format(path="all.csv", partitions=0, sample=sample))
    return parted, whole


def _in_memory(config: Path):
    cfg = load_config(config)
    validation = validate_data(load_data(cfg), cfg)
    levels = split_levels(validation.valid, cfg)
    return validation, analyse(levels, cfg)


def _partitioned(config: Path, executor=None):
    cfg = load_config(config)
    data = read_partitioned(cfg, executor or LocalExecutor())
    return data, analyse(data.levels, cfg, partitioned=data.statistics)


def _loose(column: str) -> bool:
    """Satterthwaite df and what follows from them: p-values, t quantiles, intervals."""
    return (
        column in LOOSE
        or column.startswith(("p_", "ci_", "conf", "lower", "upper"))
        or column.endswith(("_p", "_df", "_low", "_high", "_lower", "_upper"))
        or column == "df"
    )


def _compare(a: pl.DataFrame, b: pl.DataFrame, name: str, *, df_tol: float = 1e-6) -> None:
    assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
    for column in a.columns:
        if column in RECORD:
            continue
        x, y = a[column], b[column]
        if a.schema[column].is_float():
            x, y = x.to_numpy().astype(float), y.to_numpy().astype(float)
            assert np.array_equal(np.isnan(x), np.isnan(y)), f"{name}.{column}: missing differ"
            ok = ~np.isnan(x)
            # relative, with a floor of 1e-3 of the column's largest value (a residual near
            # zero carries the rounding of the whole outcome's scale)
            floor = max(1e-3 * float(np.max(np.abs(x[ok]), initial=0)), 1e-6)
            worst = float(
                np.max(np.abs(x[ok] - y[ok]) / np.maximum(np.abs(x[ok]), floor), initial=0)
            )
            tol = df_tol if _loose(column) else STRICT.get((name, column), 1e-9)
            assert worst < tol, f"{name}.{column}: relative difference {worst:.2e} > {tol:g}"
        else:
            assert x.equals(y), f"{name}.{column}: {x.head(3).to_list()} != {y.head(3).to_list()}"


# --- the engine ---------------------------------------------------------------------------


def _split_fit(frame: pl.DataFrame, formula: str, key: str, parts: int, sample_part: int):
    bucket = frame.with_columns((pl.col(key).cast(pl.String).hash(seed=3) % parts).alias("_b"))
    pieces = [bucket.filter(pl.col("_b") == k).drop("_b") for k in range(parts)]
    found = [partition_levels(p, formula) for p in pieces]
    levels = merge_levels([f[0] for f in found], found[0][1])
    stats = combine([partition_cross_products(p, formula, levels) for p in pieces])
    design = sample_design(pieces[sample_part], formula, levels)
    return fit_merged(design, stats, reml=True), design


@pytest.mark.parametrize(
    ("formula", "key"),
    [
        ("math ~ year * female + (year | childid)", "childid"),
        ("math ~ year * female + lowinc + (year | schoolid) + (year | childid)", "schoolid"),
        ("math ~ year + lowinc + (1 | schoolid/childid)", "schoolid"),
    ],
)
def test_merged_statistics_fit_equals_whole_data_fit(formula: str, key: str) -> None:
    eg = pl.read_csv(ROOT / "data" / "egsingle.csv").with_columns(
        pl.col("schoolid").cast(pl.String),
        pl.col("childid").cast(pl.String),
        pl.col("female").cast(pl.String),
    )
    whole = fit_growth(eg, formula)
    fit, design = _split_fit(eg, formula, key, parts=3, sample_part=1)
    assert (fit.nobs, fit.ngroups) == (whole.nobs, whole.ngroups)
    assert fit.deviance == pytest.approx(whole.deviance, rel=1e-12)
    np.testing.assert_allclose(fit.beta, whole.beta, rtol=1e-9)
    np.testing.assert_allclose(np.diag(fit.vcov), np.diag(whole.vcov), rtol=1e-9)
    np.testing.assert_allclose(fit.covariance, whole.covariance, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(
        fit.fixed_effects["df"].to_numpy(), whole.fixed_effects["df"].to_numpy(), rtol=1e-6
    )
    # the sample's BLUPs are the whole-data fit's BLUPs of the same units
    inner = fit.random_effects
    keys = [c for c in inner.columns if c in ("group", "unit", "childid")]
    joined = inner.join(whole.random_effects, on=keys, how="left", suffix="_whole")
    # one row per unit of the sample at every level, each found among the whole fit's units
    assert joined.height == sum(level.m for level in design.grouping)
    assert joined["(Intercept)_whole"].null_count() == 0
    for column in ("(Intercept)",):
        np.testing.assert_allclose(
            joined[column].to_numpy(), joined[f"{column}_whole"].to_numpy(), rtol=1e-6, atol=1e-9
        )
    # refits (ML, for likelihood-ratio tests) use the merged statistics too
    ml, ml_whole = fit.refitter(fit, False), whole.refitter(whole, False)
    assert ml.deviance == pytest.approx(ml_whole.deviance, rel=1e-12)
    assert ml.nobs == whole.nobs


def test_statistics_summed_per_time_pattern_give_the_per_person_fit() -> None:
    from pipeline.model.fit import design_stats
    from pipeline.model.optimize import moment_start
    from pipeline.model.partial import merge_patterns, pattern_stats, sufficient_from_patterns

    eg = pl.read_csv(ROOT / "data" / "egsingle.csv").with_columns(
        pl.col("childid").cast(pl.String), pl.col("female").cast(pl.String)
    )
    formula = "math ~ year * female + (year | childid)"
    whole = fit_growth(eg, formula)
    bucket = eg.with_columns((pl.col("childid").hash(seed=5) % 4).alias("_b"))
    pieces = [bucket.filter(pl.col("_b") == k).drop("_b") for k in range(4)]
    found = [partition_levels(p, formula) for p in pieces]
    levels = merge_levels([f[0] for f in found], found[0][1])
    patterns = merge_patterns(
        [pattern_stats(partition_cross_products(p, formula, levels).cp) for p in pieces]
    )
    assert patterns.m == whole.ngroups and patterns.ztz.shape[0] < 50  # persons -> patterns
    index = whole.design.theta_index
    np.testing.assert_allclose(
        moment_start(sufficient_from_patterns(patterns), index),
        moment_start(design_stats(whole.design), index),
        rtol=1e-11,
    )
    fit = fit_merged(sample_design(pieces[2], formula, levels), patterns)
    assert fit.deviance == pytest.approx(whole.deviance, rel=1e-12)
    np.testing.assert_allclose(fit.beta, whole.beta, rtol=1e-10)
    np.testing.assert_allclose(np.diag(fit.vcov), np.diag(whole.vcov), rtol=1e-10)
    assert fit.refitter(fit, False).deviance == pytest.approx(
        whole.refitter(whole, False).deviance, rel=1e-12
    )


def test_buckets_with_many_and_few_time_patterns_are_reduced_per_person(tmp_path: Path) -> None:
    """A study whose continuous times make some buckets pattern-per-person and others not."""
    parted, whole = _study(tmp_path, persons=300, partitions=150, bad=False)
    for path in (tmp_path / "all.csv", *sorted((tmp_path / "data").glob("*.csv"))):
        frame = pl.read_csv(path, infer_schema=False)
        jitter = (pl.col("id").str.slice(1).cast(pl.Int64) % 2 == 0) & (pl.col("age") != "1")
        frame = frame.with_columns(
            pl.when(jitter)
            .then(
                (
                    pl.col("age").cast(pl.Float64)
                    + pl.col("id").str.slice(1).cast(pl.Float64) / 1e4
                ).cast(pl.String)
            )
            .otherwise(pl.col("age"))
            .alias("age")
        )
        frame.write_csv(path)
    _, expected = _in_memory(whole)
    data, got = _partitioned(parted)
    kinds = {type(s).__name__ for s in data.statistics.statistics.values()}
    assert kinds == {"PartitionStats"}, kinds
    # with a pattern per person the df are less precise (see the module docstring)
    for name in ("fixed_effects", "variance_components", "model_fit"):
        _compare(expected.tables[name], got.tables[name], name, df_tol=1e-4)


def test_a_level_outside_the_merged_levels_is_refused() -> None:
    frame = pl.DataFrame(
        {"y": [1.0, 2.0, 3.0, 4.0], "g": ["a", "b", "c", "a"], "id": ["1", "1", "2", "2"]}
    )
    with pytest.raises(GrowthError, match="'c', which is not among the levels of the whole data"):
        partition_cross_products(frame, "y ~ g + (1 | id)", {"g": ("a", "b")})


# --- the run's stages ----------------------------------------------------------------------


def test_partitioned_run_equals_the_in_memory_run(tmp_path: Path) -> None:
    parted, whole = _study(tmp_path)
    validation, expected = _in_memory(whole)
    data, got = _partitioned(parted)
    v = data.validation
    assert (v.rows_in, v.rows_used, v.rows_quarantined, v.missing_outcome) == (
        validation.rows_in,
        validation.rows_used,
        validation.rows_quarantined,
        validation.missing_outcome,
    )
    assert v.rows_in == v.rows_used + v.rows_quarantined
    assert v.reasons.sort("reason").equals(validation.reasons.sort("reason"))
    # every quarantined row, with its file and its line in that file
    assert v.quarantine.height == validation.quarantine.height > 0
    assert set(v.quarantine["_file"]) <= {"part0.csv", "part1.csv", "part2.csv"}
    assert (
        v.quarantine["reason"].sort().to_list() == validation.quarantine["reason"].sort().to_list()
    )
    assert data.descriptives.summary.equals(_summary_of(whole)), (
        "the descriptive summary counts all the data"
    )
    assert set(got.tables) == set(expected.tables)
    for name, table in expected.tables.items():
        _compare(table, got.tables[name], name)
    persons = data.levels.level2.height
    assert got.sample == {"persons": persons, "sample_persons": persons} and persons == 599
    assert "sample" not in got.warnings["topic"].to_list()


def _summary_of(config: Path) -> pl.DataFrame:
    from pipeline.reshape import describe

    cfg = load_config(config)
    levels = split_levels(validate_data(load_data(cfg), cfg).valid, cfg)
    return describe(levels, cfg).summary


def test_a_sample_for_the_row_level_tables_keeps_the_models_on_all_the_data(
    tmp_path: Path,
) -> None:
    parted, whole = _study(tmp_path, sample=200, bad=False)
    _, expected = _in_memory(whole)
    data, got = _partitioned(parted)
    stats = data.statistics
    assert stats.persons == 600 and 120 < stats.sample_persons < 280, stats.sample_persons
    assert "icc" in expected.tables  # its interval too rests on all the data
    for name in FULL_DATA_TABLES & set(expected.tables):
        _compare(expected.tables[name], got.tables[name], name)
    note = got.warnings.filter(pl.col("topic") == "sample")["message"].item()
    assert "all 600 persons" in note and f"sample of {stats.sample_persons}" in note
    assert data.descriptives.summary["persons"].item() == 600
    # the sample depends on the persons' ids only, not on how the data are partitioned
    (tmp_path / "parts5.toml").write_text(
        parted.read_text().replace("partitions = 4", "partitions = 7")
    )
    again, _ = _partitioned(tmp_path / "parts5.toml")
    assert again.levels.level2["id"].sort().equals(data.levels.level2["id"].sort())


@pytest.mark.slow
def test_three_levels_by_partitions_of_whole_schools(tmp_path: Path) -> None:
    text = (ROOT / "config" / "egsingle.toml").read_text()
    eg = pl.read_csv(ROOT / "data" / "egsingle.csv", infer_schema=False)
    folder = tmp_path / "eg"
    folder.mkdir()
    split = eg.with_columns((pl.col("schoolid").cast(pl.Int64) % 3).alias("_k"))
    for k, part in enumerate(split.partition_by("_k")):
        part.drop("_k").write_csv(folder / f"p{k}.csv")
    eg.write_csv(tmp_path / "eg.csv")
    import re

    base = re.sub(r"(?m)^path = .*$", 'path = "eg.csv"', text)
    base = re.sub(r"(?m)^dir = .*$", 'dir = "out"', base)
    (tmp_path / "whole.toml").write_text(base)
    (tmp_path / "parts.toml").write_text(
        base.replace('path = "eg.csv"', 'path = "eg"') + "\n[execution]\npartitions = 5\n"
    )
    _, expected = _in_memory(tmp_path / "whole.toml")
    _, got = _partitioned(tmp_path / "parts.toml")
    for name in sorted(FULL_DATA_TABLES & set(expected.tables)):
        _compare(expected.tables[name], got.tables[name], name)
    _compare(expected.tables["random_effects"], got.tables["random_effects"], "random_effects")


def test_movers_between_schools_in_different_partitions_are_quarantined_as_in_memory(
    tmp_path: Path,
) -> None:
    text = (ROOT / "config" / "egsingle.toml").read_text()
    eg = pl.read_csv(ROOT / "data" / "egsingle.csv", infer_schema=False)
    schools = eg["schoolid"].unique().sort().to_list()
    # child of the first school seen again in another school; another with a missing school
    first = eg.filter(pl.col("schoolid") == schools[0]).row(0, named=True)
    second = eg.filter(pl.col("schoolid") == schools[1]).row(0, named=True)
    moved = {**first, "schoolid": schools[-1], "year": "9.5"}
    unplaced = {**second, "schoolid": None, "year": "9.5"}
    eg = pl.concat([eg, pl.DataFrame([moved, unplaced], schema=eg.schema)])
    folder = tmp_path / "eg"
    folder.mkdir()
    n = eg.height
    eg.slice(0, n // 2).write_csv(folder / "a.csv")
    eg.slice(n // 2).write_csv(folder / "b.csv")
    eg.write_csv(tmp_path / "eg.csv")
    import re

    base = re.sub(r"(?m)^path = .*$", 'path = "eg.csv"', text)
    base = re.sub(r"(?m)^dir = .*$", 'dir = "out"', base)
    (tmp_path / "whole.toml").write_text(base)
    (tmp_path / "parts.toml").write_text(
        base.replace('path = "eg.csv"', 'path = "eg"') + "\n[execution]\npartitions = 6\n"
    )
    cfg = load_config(tmp_path / "whole.toml")
    expected = validate_data(load_data(cfg), cfg)
    data = read_partitioned(load_config(tmp_path / "parts.toml"), LocalExecutor())
    got = data.validation
    assert expected.rows_quarantined > 0
    assert (got.rows_in, got.rows_used, got.rows_quarantined) == (
        expected.rows_in,
        expected.rows_used,
        expected.rows_quarantined,
    )
    assert got.reasons.sort("reason").equals(expected.reasons.sort("reason"))
    assert sorted(got.quarantine["reason"].to_list()) == sorted(
        expected.quarantine["reason"].to_list()
    )
    assert str(first["childid"]) in " ".join(got.quarantine["reason"].to_list())


# --- which files, and the one-line errors ---------------------------------------------------


def _cfg(tmp_path: Path, path: str, extra: str = ""):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(path=path, partitions=0, sample=1000) + extra)
    return load_config(config)


def test_folder_glob_and_single_file(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.csv", "d/sub/b.csv", "d/_SUCCESS", "d/.hidden.csv", "x1.csv", "x2.csv"):
        (tmp_path / name).write_text("id,age,score,group\n")
    assert [p.name for p in dataset_files(_cfg(tmp_path, "d"))] == ["a.csv", "b.csv"]
    assert [p.name for p in dataset_files(_cfg(tmp_path, "x*.csv"))] == ["x1.csv", "x2.csv"]
    assert is_partitioned(_cfg(tmp_path, "d")) and is_partitioned(_cfg(tmp_path, "x*.csv"))
    assert not is_partitioned(_cfg(tmp_path, "x1.csv"))


def test_messages(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"^empty: the folder has no \.parquet or \.csv file"):
        dataset_files(_cfg(tmp_path, "empty"))
    with pytest.raises(DataError, match=r"^nothing\*\.csv: no file matches this pattern"):
        dataset_files(_cfg(tmp_path, "nothing*.csv"))
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.csv").write_text("id\n")
    pl.DataFrame({"id": ["1"]}).write_parquet(tmp_path / "mixed" / "b.parquet")
    with pytest.raises(DataError, match="mixes Parquet and CSV files"):
        dataset_files(_cfg(tmp_path, "mixed"))


def _with_covariates(parted: Path, whole: Path, centre: str) -> None:
    """Add a person-level ``ses`` and a time-varying ``stress`` to the study's files and
    configs, centred per ``centre`` (a [data.centre] body), and a model that uses both."""
    rng = np.random.default_rng(5)
    frames = sorted((parted.parent / "data").glob("*.csv"))
    all_rows = pl.read_csv(whole.parent / "all.csv", infer_schema=False)
    ids = all_rows["id"].unique().sort()
    ses = dict(zip(ids.to_list(), (rng.normal(2.0, 1.0, ids.len())).round(3), strict=True))

    def extend(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(
            pl.col("id").replace_strict(ses, return_dtype=pl.Float64).alias("ses"),
            # a value of each row's own (the same in the whole file and in the parts)
            (pl.concat_str("id", "age").hash(seed=1) % 1000 / 100.0 + 1.3).alias("stress"),
        )

    extend(all_rows).write_csv(whole.parent / "all.csv")
    for path in frames:
        extend(pl.read_csv(path, infer_schema=False)).write_csv(path)
    for config in (parted, whole):
        text = config.read_text().replace(
            'person_covariates = ["group"]',
            'person_covariates = ["group", "ses"]\ntime_covariates = ["stress"]',
        )
        text = text.replace("[data.categories]", f"[data.centre]\n{centre}\n\n[data.categories]")
        text = text.replace(
            'intercept_predictors = ["group"]', 'intercept_predictors = ["group", "ses"]'
        )
        text = text.replace(
            "[comparison]",
            '[[models.extra]]\nname = "stress"\n'
            'formula = "score ~ t * (group + ses) + stress + (t | id)"\n\n[comparison]',
        )
        config.write_text(text)


def test_grand_mean_centring_of_partitioned_data_uses_the_means_of_all_the_data(
    tmp_path: Path,
) -> None:
    parted, whole = _study(tmp_path, persons=300, bad=False, sample=120)
    _with_covariates(parted, whole, 'ses = "grand"\nstress = "grand"')
    _, expected = _in_memory(whole)
    data, got = _partitioned(parted)
    assert data.statistics.persons == 300 and data.statistics.sample_persons < 300
    # the sample's centred values are those of all the data, not of the sample
    level2 = data.levels.level2
    full = split_levels(
        validate_data(load_data(load_config(whole)), load_config(whole)).valid, load_config(whole)
    )
    joined = level2.join(full.level2, on="id", suffix="_all")
    np.testing.assert_allclose(joined["ses"].to_numpy(), joined["ses_all"].to_numpy(), atol=1e-12)
    assert abs(float(level2["ses"].mean())) > 1e-6  # a sample's own mean would be 0
    assert "stress" in expected.tables["fixed_effects"]["term"].to_list()
    for name in FULL_DATA_TABLES & set(expected.tables):
        _compare(expected.tables[name], got.tables[name], name)


def test_group_mean_centring_is_refused_for_partitioned_data(tmp_path: Path) -> None:
    parted, whole = _study(tmp_path, persons=60, bad=False)
    _with_covariates(parted, whole, 'stress = { group = "group" }')
    with pytest.raises(ConfigError, match=r"^\[data\] centre\.stress: group-mean centring"):
        read_partitioned(load_config(parted), LocalExecutor())


def test_dask_address_is_checked_in_the_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    text = CONFIG.format(path="x.csv", partitions=0, sample=1000)
    config.write_text(text.replace("[execution]", '[execution]\naddress = "localhost 8786"'))
    with pytest.raises(
        ConfigError, match=r"\[execution\] address = 'localhost 8786': expected a Dask"
    ):
        load_config(config)


# --- Dask ---------------------------------------------------------------------------------


def _partitioned_on_dask(config: Path, workers: int = 2):
    """:func:`_partitioned` on a local Dask cluster of ``workers`` workers."""
    cfg = load_config(config)
    cfg = cfg.model_copy(
        update={
            "execution": cfg.execution.model_copy(update={"backend": "dask", "workers": workers})
        }
    )
    with executor_for(cfg) as executor:
        assert executor.description["backend"] == "dask"
        data = read_partitioned(cfg, executor)
    return data, analyse(data.levels, cfg, partitioned=data.statistics)


@pytest.mark.cluster
def test_dask_cluster_of_two_workers_gives_the_local_answers(tmp_path: Path) -> None:
    parted, _ = _study(tmp_path, persons=300, bad=True)
    local, expected = _partitioned(parted)
    data, got = _partitioned_on_dask(parted)
    assert data.validation.quarantine.equals(local.validation.quarantine)
    for name, table in expected.tables.items():
        _compare(table, got.tables[name], name)


@pytest.mark.cluster
@pytest.mark.slow
def test_a_worker_killed_mid_run_is_replaced_and_the_answers_do_not_change(
    tmp_path: Path,
) -> None:
    from distributed import Client, LocalCluster

    from pipeline.partitioned import DaskExecutor

    parted, _ = _study(tmp_path, persons=3000, partitions=24, bad=False)
    local, _ = _partitioned(parted)
    cfg = load_config(parted)
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    )
    try:
        with Client(cluster, set_as_default=False) as client:
            killed: list[int] = []
            killed_at: list[float] = []

            def kill_one() -> None:
                time.sleep(1.5)
                info = client.run(os.getpid)
                pid = next(iter(info.values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                killed_at.append(time.monotonic())

            killer = threading.Thread(target=kill_one)
            killer.start()
            data = read_partitioned(cfg, DaskExecutor(client, "test", 2))
            finished = time.monotonic()
            killer.join()
    finally:
        cluster.close()
    assert killed, "no worker was killed"
    assert killed_at[0] < finished, "the worker was killed after the run had finished"
    assert data.validation.rows_in == local.validation.rows_in
    for formula, stats in local.statistics.statistics.items():
        got = data.statistics.statistics[formula]
        assert type(got) is type(stats)
        for name in ("omega", "counts", "S", "W"):  # two-level: summed per time pattern
            np.testing.assert_allclose(getattr(got, name), getattr(stats, name), rtol=1e-12)


@pytest.mark.cluster
@pytest.mark.slow
def test_a_task_that_keeps_killing_its_workers_ends_the_run_with_one_line() -> None:
    import functools

    from distributed import Client, LocalCluster

    from pipeline.partitioned import DaskExecutor

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    )
    try:
        with Client(cluster, set_as_default=False) as client:
            executor = DaskExecutor(client, "test", 1)
            with pytest.raises(DataError) as caught:
                executor.map(functools.partial(signal.raise_signal), [signal.SIGKILL], "validate")
    finally:
        cluster.close()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the Dask workers running the validate stage died repeatedly")
    assert "nothing was published" in message


def test_growth_validate_reads_a_folder_by_partitions(tmp_path: Path, capsys) -> None:
    from flows.cli import main

    parted, whole = _study(tmp_path, persons=100, files=2, partitions=3)
    assert main(["validate", str(parted)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"parts: {tmp_path / 'data'}"
    assert "rows: 336 in, 335 valid, 1 quarantined (0.3%; limit 20.0%)" in out
    assert "1 row(s): outcome (score) is not a number" in out
    assert main(["validate", str(whole)]) == 0  # the same counts as the single file
    assert out.splitlines()[1:] == capsys.readouterr().out.splitlines()[1:]


def test_a_single_file_with_more_rows_than_a_partition_is_read_by_partitions(
    tmp_path: Path,
) -> None:
    _, whole = _study(tmp_path, persons=600, bad=False)  # 2,068 rows in all.csv
    text = whole.read_text()
    small = tmp_path / "small.toml"
    small.write_text(text.replace("[execution]", "[execution]\npartition_rows = 3000"))
    large = tmp_path / "large.toml"
    large.write_text(text.replace("[execution]", "[execution]\npartition_rows = 1000"))
    assert not is_partitioned(load_config(small))
    cfg = load_config(large)
    assert is_partitioned(cfg)
    data = read_partitioned(cfg, LocalExecutor())
    assert data.facts["files"] == 1 and data.facts["partitions"] == 3  # ceil(2068 / 1000)
    assert data.validation.rows_in == data.validation.rows_used == 2068


def test_a_bad_dask_address_in_the_config_never_shows_its_password(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    text = CONFIG.format(path="x.csv", partitions=0, sample=1000)
    config.write_text(
        text.replace("[execution]", '[execution]\naddress = "tcp://ann:s3cret@host :1"')
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "s3cret" not in str(caught.value) and "ann" not in str(caught.value)
    assert "'tcp://host :1': expected a Dask scheduler address" in str(caught.value)


def test_a_transient_read_error_is_retried_and_a_lasting_one_ends_the_run(
    tmp_path: Path, monkeypatch
) -> None:
    """A file that cannot be read for a reason that may pass (an I/O error: a share
    briefly away) is read again; the result is that of a run without the error. A file
    that keeps failing ends the run with its one-line error; a bad file is not retried."""
    import errno

    import pipeline.partitioned as partitioned_module
    from pipeline.errors import TransientReadError

    parted, _ = _study(tmp_path, persons=120, bad=False)
    monkeypatch.setattr(partitioned_module, "PARTITION_RETRY_DELAYS", (0.0,))
    cfg = load_config(parted)
    clean = read_partitioned(cfg, LocalExecutor())
    real = partitioned_module.load_data
    calls: dict[str, int] = {}

    def flaky(failures: int, error: Exception):
        def load(config):
            name = Path(config.data.path).name
            calls[name] = calls.get(name, 0) + 1
            if name == "part1.csv" and calls[name] <= failures:
                raise error
            return real(config)

        return load

    # an OSError that may pass, as pipeline.io reports it
    monkeypatch.setattr(
        partitioned_module,
        "load_data",
        flaky(2, TransientReadError("data/part1.csv: cannot read the data file: I/O error")),
    )
    again = read_partitioned(cfg, LocalExecutor())
    assert calls["part1.csv"] == 3 and calls["part0.csv"] == 1
    for formula, merged in clean.statistics.statistics.items():
        np.testing.assert_array_equal(again.statistics.statistics[formula].omega, merged.omega)
    assert again.validation.rows_in == clean.validation.rows_in
    # failing every time: the run ends with the file's own line
    calls.clear()
    monkeypatch.setattr(
        partitioned_module, "load_data", flaky(99, OSError(errno.EIO, "Input/output error"))
    )
    with pytest.raises(OSError, match="Input/output error"):
        read_partitioned(cfg, LocalExecutor())
    assert calls["part1.csv"] == 3
    # a file that cannot be used is not read again
    calls.clear()
    monkeypatch.setattr(
        partitioned_module, "load_data", flaky(99, DataError("data/part1.csv: bad header"))
    )
    with pytest.raises(DataError, match="bad header"):
        read_partitioned(cfg, LocalExecutor())
    assert calls["part1.csv"] == 1
