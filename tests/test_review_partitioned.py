"""Adversarial review of partitioned grand-mean centring and of the partition task retries.

Each test compares a partitioned run with the in-memory run of the same data (the
helpers of tests/test_partitioned.py), or checks the retry wrapper where it runs.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.config import load_config
from pipeline.errors import PERMANENT_ERRNOS, ConfigError, DataError, TransientReadError
from pipeline.io import load_data
from pipeline.partitioned import FULL_DATA_TABLES, LocalExecutor, read_partitioned
from pipeline.reshape import split_levels
from pipeline.run import is_transient
from pipeline.validate import validate_data
from tests.test_partitioned import (
    _compare,
    _in_memory,
    _partitioned,
    _study,
    _with_covariates,
)


def _levels_in_memory(whole: Path):
    cfg = load_config(whole)
    return split_levels(validate_data(load_data(cfg), cfg).valid, cfg)


def _add_time_covariate(parted: Path, whole: Path, name: str, centre: str) -> None:
    """Add a second time-varying covariate ``name`` (a value of each row's own, the same
    in the whole file and in the parts), centred per ``centre`` after the others."""
    paths = [whole.parent / "all.csv", *sorted((parted.parent / "data").glob("*.csv"))]
    for path in paths:
        frame = pl.read_csv(path, infer_schema=False)
        value = pl.concat_str("id", "age").hash(seed=7) % 997 / 50.0 + 4.0
        frame.with_columns(value.alias(name)).write_csv(path)
    for config in (parted, whole):
        text = config.read_text()
        text = text.replace(
            'time_covariates = ["stress"]', f'time_covariates = ["stress", "{name}"]'
        )
        text = text.replace("\n\n[data.categories]", f"\n{centre}\n\n[data.categories]")
        text = text.replace("+ stress + (t | id)", f"+ stress + {name} + (t | id)")
        config.write_text(text)


def test_a_time_covariate_centred_on_its_grand_mean_after_a_person_centred_one_in_memory(
    tmp_path: Path,
) -> None:
    """Found: ``_apply_centring`` reused the name ``means`` (the grand means to centre on)
    for the person-centred split, so a later grand-centred time-varying covariate became
    itself minus itself: all zeros, even in memory."""
    parted, whole = _study(tmp_path, persons=80, bad=False)
    _with_covariates(parted, whole, 'stress = "person"')
    _add_time_covariate(parted, whole, "load", 'load = "grand"')
    raw = pl.read_csv(whole.parent / "all.csv", infer_schema=False)
    levels = _levels_in_memory(whole)
    load = levels.level1["load"].to_numpy()
    assert np.std(load) > 1.0  # not all zeros
    expected = raw["load"].cast(pl.Float64)
    np.testing.assert_allclose(np.sort(load), np.sort((expected - expected.mean()).to_numpy()))
    assert "stress_within" in levels.level1.columns
    assert "stress_person_mean" in levels.level2.columns


@pytest.mark.parametrize("order", ["person first", "grand first"])
def test_a_person_covariate_grand_centred_beside_a_person_centred_one(
    tmp_path: Path, order: str
) -> None:
    """Found: with a person-centred covariate before it, a grand-centred person covariate
    was centred on each bucket's own mean (the buckets' sums were then about 0), and the
    sample on the sample's mean: the fits differed from the in-memory run (fixed effects
    by 6e-2). In either order the partitioned run now equals the in-memory run."""
    parted, whole = _study(tmp_path, persons=300, bad=False, sample=120)
    centre = (
        'stress = "person"\nses = "grand"'
        if order == "person first"
        else 'ses = "grand"\nstress = "person"'
    )
    _with_covariates(parted, whole, centre)
    _, expected = _in_memory(whole)
    data, got = _partitioned(parted)
    assert data.statistics.sample_persons < data.statistics.persons
    full = _levels_in_memory(whole).level2
    joined = data.levels.level2.join(full, on="id", suffix="_all")
    np.testing.assert_allclose(joined["ses"].to_numpy(), joined["ses_all"].to_numpy(), atol=1e-12)
    assert abs(float(data.levels.level2["ses"].mean())) > 1e-6  # not the sample's own mean
    for name in FULL_DATA_TABLES & set(expected.tables):
        _compare(expected.tables[name], got.tables[name], name)


def _as_text(paths: list[Path], column: str) -> None:
    for path in paths:
        frame = pl.read_csv(path, infer_schema=False)
        value = pl.col(column).cast(pl.Float64)
        text = pl.when(value > 5).then(pl.lit("high")).otherwise(pl.lit("low"))
        frame.with_columns(text.alias(column)).write_csv(path)


@pytest.mark.parametrize("centre", ['stress = "grand"', 'stress = "person"'])
def test_a_centred_covariate_of_text_is_one_line_in_memory_and_by_partitions(
    tmp_path: Path, centre: str
) -> None:
    """Found: a centred covariate whose values are text (not declared categorical) ended
    both runs with polars' multi-line InvalidOperationError (a crash); now one line
    naming the file, the key and a value, the same in both."""
    parted, whole = _study(tmp_path, persons=60, bad=False)
    _with_covariates(parted, whole, centre)
    _as_text([whole.parent / "all.csv", *sorted((parted.parent / "data").glob("*.csv"))], "stress")
    pattern = (
        r"^{}: \[data\] centre\.stress: column 'stress' holds text \(e\.g\. '(high|low)'\), "
        r"not numbers; only a numeric covariate can be centred$"
    )
    with pytest.raises(DataError, match=pattern.format("all.csv")):
        _in_memory(whole)
    with pytest.raises(DataError, match=pattern.format("data")):
        _partitioned(parted)


def test_a_mostly_numeric_centred_covariate_quarantines_the_same_rows_both_ways(
    tmp_path: Path,
) -> None:
    """What held: a grand-centred covariate with a few values that are not numbers is
    quarantined row by row, the same in both runs, and the fits agree."""
    parted, whole = _study(tmp_path, persons=200, bad=False)
    _with_covariates(parted, whole, 'ses = "grand"\nstress = "grand"')
    for path in [whole.parent / "all.csv", *sorted((parted.parent / "data").glob("*.csv"))]:
        frame = pl.read_csv(path, infer_schema=False)
        bad = (pl.concat_str("id", "age").hash(seed=3) % 40) == 0
        frame.with_columns(
            pl.when(bad).then(pl.lit("n/a?")).otherwise(pl.col("stress")).alias("stress")
        ).write_csv(path)
    validation, expected = _in_memory(whole)
    data, got = _partitioned(parted)
    assert validation.rows_quarantined > 0
    assert data.validation.rows_quarantined == validation.rows_quarantined
    for name in FULL_DATA_TABLES & set(expected.tables):
        _compare(expected.tables[name], got.tables[name], name)


# --- retries of partition tasks -------------------------------------------------------------


def _eio_file() -> Path:
    """A path whose read fails with a real EIO (Linux: the process's own memory at 0)."""
    path = Path("/proc/self/mem")
    try:
        path.read_bytes()
    except OSError as error:
        if error.errno == errno.EIO:
            return path
    pytest.skip("no file that fails with EIO here")


def test_a_transient_error_in_the_validate_stage_is_retried(tmp_path: Path, monkeypatch) -> None:
    """What held: a bucket whose scratch files fail once with EIO is validated again; its
    files are overwritten by name (one of each), and the answers are those of a clean run."""
    import pipeline.partitioned as module

    parted, _ = _study(tmp_path, persons=120, bad=True)
    cfg = load_config(parted)
    clean = read_partitioned(cfg, LocalExecutor())
    monkeypatch.setattr(module, "PARTITION_RETRY_DELAYS", (0.0,))
    real_read, real_write = module._read_bucket, module._write
    written: list[str] = []
    failed: list[str] = []

    def read(folder: Path):
        if folder.name == "b00001" and not failed:
            failed.append(folder.name)
            raise OSError(errno.EIO, "Input/output error")
        return real_read(folder)

    def write(frame, path: Path) -> None:
        written.append(f"{path.parent.name}/{path.name}")
        real_write(frame, path)

    monkeypatch.setattr(module, "_read_bucket", read)
    monkeypatch.setattr(module, "_write", write)
    again = read_partitioned(cfg, LocalExecutor())
    assert failed, sorted(set(written))
    assert len(written) == len(set(written))  # each file once: the failed try wrote nothing
    assert again.validation.quarantine.equals(clean.validation.quarantine)
    for formula, merged in clean.statistics.statistics.items():
        np.testing.assert_array_equal(again.statistics.statistics[formula].omega, merged.omega)


def test_a_real_lasting_io_error_ends_the_run_in_one_line_after_three_tries(
    tmp_path: Path, monkeypatch
) -> None:
    """What held: a data file whose read fails with EIO every time is tried three times
    (after pauses of 1 and 5 s) and ends the run with load_data's one line."""
    import pipeline.partitioned as module

    source = _eio_file()
    parted, _ = _study(tmp_path, persons=60, bad=False)
    target = parted.parent / "data" / "part1.csv"
    target.unlink()
    target.symlink_to(source)
    pauses: list[float] = []
    monkeypatch.setattr(module.time, "sleep", pauses.append)
    with pytest.raises(TransientReadError) as caught:
        read_partitioned(load_config(parted), LocalExecutor())
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith("part1.csv: cannot read the data file: Input/output error")
    assert pauses == [1.0, 5.0]


def _fails_once(counter: str) -> tuple[int, int]:
    """Fails with a transient read error on its first call (counted in a file)."""
    path = Path(counter)
    calls = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls == 1:
        raise TransientReadError(f"{path.name}: cannot read the data file: I/O error")
    return calls, os.getpid()


@pytest.mark.cluster
def test_a_transient_error_on_a_dask_worker_is_retried_on_the_worker(tmp_path: Path) -> None:
    """What held: the retry wrapper pickles to a worker process and retries there; a file
    failing with EIO every time ends the Dask run with the same one line."""
    from distributed import Client, LocalCluster

    from pipeline.partitioned import DaskExecutor

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    )
    try:
        with Client(cluster, set_as_default=False) as client:
            executor = DaskExecutor(client, "test", 1)
            counters = [str(tmp_path / "c0"), str(tmp_path / "c1")]
            got = executor.map(_fails_once, counters, "read")
            assert [calls for calls, _ in got] == [2, 2]
            assert all(pid != os.getpid() for _, pid in got)  # on the worker
            source = _eio_file()
            parted, _ = _study(tmp_path, persons=60, bad=False)
            target = parted.parent / "data" / "part1.csv"
            target.unlink()
            target.symlink_to(source)
            with pytest.raises(TransientReadError) as caught:
                read_partitioned(load_config(parted), executor)
    finally:
        cluster.close()
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith("part1.csv: cannot read the data file: Input/output error")


@pytest.mark.parametrize("code", sorted(PERMANENT_ERRNOS))
def test_an_os_error_that_load_data_calls_permanent_is_not_retried(code: int) -> None:
    """Found: ``is_transient`` (which decides the partition retries) called ENOTDIR and
    ELOOP transient while load_data calls them permanent: a task failing so was tried
    three times, 6 s of pauses, for nothing."""
    assert not is_transient(OSError(code, os.strerror(code)))
    assert is_transient(OSError(errno.EIO, os.strerror(errno.EIO)))
    assert is_transient(TimeoutError("share went away"))  # no errno: may pass


def test_a_partition_task_failing_with_a_permanent_os_error_is_tried_once(monkeypatch) -> None:
    import pipeline.partitioned as module

    pauses: list[float] = []
    monkeypatch.setattr(module.time, "sleep", pauses.append)
    calls: list[int] = []

    def loop(item: int) -> None:
        calls.append(item)
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))

    with pytest.raises(OSError):
        LocalExecutor().map(loop, [1], "read")
    assert calls == [1] and pauses == []


@pytest.mark.cluster
def test_grand_centring_on_a_dask_cluster_equals_the_in_memory_run(tmp_path: Path) -> None:
    """What held: the buckets' sums come back from the workers and the model frames are
    centred there on the grand means (a sample smaller than the data)."""
    from tests.test_partitioned import _partitioned_on_dask

    parted, whole = _study(tmp_path, persons=300, bad=True, sample=120)
    _with_covariates(parted, whole, 'stress = "person"\nses = "grand"')
    _, expected = _in_memory(whole)
    data, got = _partitioned_on_dask(parted)
    assert data.statistics.sample_persons < data.statistics.persons
    for name in FULL_DATA_TABLES & set(expected.tables):
        _compare(expected.tables[name], got.tables[name], name)


def test_a_grand_centred_cluster_covariate_is_refused_for_partitioned_data(
    tmp_path: Path,
) -> None:
    """Found: the one line of this refusal had no test, and it advised centre = 'grand'
    for a column it refused although centred so; now it advises the export only."""
    import re

    from tests.test_partitioned import ROOT

    text = (ROOT / "config" / "egsingle.toml").read_text()
    text = re.sub(r"(?m)^path = .*$", 'path = "eg"', text)
    text = re.sub(r"(?m)^dir = .*$", 'dir = "out"', text)
    text = text.replace("[time]", '[data.centre]\nlowinc = "grand"\n\n[time]')
    (tmp_path / "eg").mkdir()
    pl.read_csv(ROOT / "data" / "egsingle.csv", infer_schema=False).head(50).write_csv(
        tmp_path / "eg" / "a.csv"
    )
    config = tmp_path / "parts.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_partitioned(load_config(config), LocalExecutor())
    assert str(caught.value) == (
        "[data] centre.lowinc: group-mean centring, and centring a cluster-level covariate, "
        "are not available for partitioned data (each partition would be centred on its own "
        "means); centre the column in the export"
    )


@pytest.mark.usefixtures("prefect_harness")
def test_growth_run_of_partitioned_data_survives_a_file_read_that_fails_once(
    tmp_path: Path, monkeypatch
) -> None:
    """What held: end to end through the flow, a data file whose read fails once with a
    transient error is read again and the run publishes (with grand centring)."""
    import pipeline.partitioned as module
    from flows.study import growth_study

    parted, _ = _study(tmp_path, persons=150, bad=False)
    _with_covariates(parted, tmp_path / "whole.toml", 'stress = "person"\nses = "grand"')
    monkeypatch.setattr(module, "PARTITION_RETRY_DELAYS", (0.0,))
    real = module.load_data
    calls: list[str] = []

    def load(config):
        name = Path(config.data.path).name
        calls.append(name)
        if name == "part1.csv" and calls.count(name) == 1:
            raise TransientReadError("data/part1.csv: cannot read the data file: I/O error")
        return real(config)

    monkeypatch.setattr(module, "load_data", load)
    result = growth_study(config=str(parted), output=str(tmp_path / "out"), use_cache=False)
    assert calls.count("part1.csv") == 2 and calls.count("part0.csv") == 1
    assert (tmp_path / "out" / "report.html").exists(), result


@pytest.mark.slow
def test_grand_centring_with_pupil_ids_within_schools_equals_the_in_memory_run(
    tmp_path: Path,
) -> None:
    """What held: three levels (egsingle), ``ids = "within_cluster"``, two grand-centred
    pupil covariates, pupils quarantined for a missing covariate, and a sample of about
    300 of the 1,681 pupils: the tables on all the data equal the in-memory run."""
    import re

    from tests.test_partitioned import ROOT

    text = (ROOT / "config" / "egsingle.toml").read_text()
    eg = pl.read_csv(ROOT / "data" / "egsingle.csv", infer_schema=False)
    kids = eg["childid"].unique().sort().head(40).to_list()
    eg = eg.with_columns(
        pl.when(pl.col("childid").is_in(kids))
        .then(None)
        .otherwise(pl.col("female"))
        .alias("female"),
        pl.col("childid").rank("dense").over("schoolid").cast(pl.String).alias("childid"),
    )
    folder = tmp_path / "eg"
    folder.mkdir()
    eg.slice(0, eg.height // 2).write_csv(folder / "a.csv")
    eg.slice(eg.height // 2).write_csv(folder / "b.csv")
    eg.write_csv(tmp_path / "eg.csv")
    base = re.sub(r"(?m)^path = .*$", 'path = "eg.csv"', text)
    base = re.sub(r"(?m)^dir = .*$", 'dir = "out"', base)
    base = base.replace('ids = "unique"', 'ids = "within_cluster"')
    base = base.replace("[time]", '[data.centre]\nfemale = "grand"\nhispanic = "grand"\n\n[time]')
    (tmp_path / "whole.toml").write_text(base + "\n[execution]\nsample_persons = 300\n")
    (tmp_path / "parts.toml").write_text(
        base.replace('path = "eg.csv"', 'path = "eg"')
        + "\n[execution]\npartitions = 6\nsample_persons = 300\n"
    )
    validation, expected = _in_memory(tmp_path / "whole.toml")
    data, got = _partitioned(tmp_path / "parts.toml")
    assert validation.rows_quarantined == data.validation.rows_quarantined > 0
    assert data.statistics.sample_persons < data.statistics.persons == 1681
    for name in sorted(FULL_DATA_TABLES & set(expected.tables)):
        _compare(expected.tables[name], got.tables[name], name)
