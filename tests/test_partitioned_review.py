"""Review of the partitioned path (issue 13): credentials in Dask addresses, the scratch
folder (left by a killed run, unwritable, full, after an interrupted Dask run) and the
sample's independence of how the data are cut."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.io import load_data
from pipeline.partitioned import (
    FULL_DATA_TABLES,
    LocalExecutor,
    _scratch_prefix,
    _scrubbed,
    executor_for,
    read_partitioned,
)
from pipeline.validate import validate_data
from tests.test_partitioned import CONFIG, RECORD, _in_memory, _partitioned, _study


def _config(tmp_path: Path, extra: str = "", path: str = "data") -> Path:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(path=path, partitions=3, sample=1000) + extra)
    return config


def test_an_address_with_credentials_is_refused_without_showing_the_password(
    tmp_path: Path,
) -> None:
    cfg = load_config(_config(tmp_path))
    with pytest.raises(ConfigError) as caught:
        with executor_for(cfg, address="tcp://user:s3cretpw@127.0.0.1:8786"):
            pass
    message = str(caught.value)
    assert "s3cretpw" not in message and "user:s3" not in message
    assert message.startswith(
        "[execution] address 'tcp://127.0.0.1:8786': a user name or password in the address"
    )
    with pytest.raises(ConfigError, match=r"^\[execution\] address 'tcp://h:x': not a Dask"):
        with executor_for(cfg, address="tcp://h:x"):
            pass


def test_a_library_message_quoting_the_address_loses_its_credentials() -> None:
    address = "tls://ann:pw123@host:8786"
    text = _scrubbed(f"Timed out connecting to {address}; ann:pw123@host refused", address)
    assert "pw123" not in text and "tls://host:8786" in text


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_scratch_of_a_killed_run_is_removed_by_the_next_run(tmp_path: Path) -> None:
    parted, _ = _study(tmp_path, persons=40, bad=False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    host_prefix = _scratch_prefix().rsplit("-", 2)[0]
    dead = scratch / f"{host_prefix}-{_dead_pid()}-abc"
    alive = scratch / f"{host_prefix}-{os.getpid()}-def"
    other_host = scratch / f"growth-partitions-elsewhere-{_dead_pid()}-ghi"
    unrelated = scratch / "keep-me"
    for folder in (dead, alive, other_host, unrelated):
        (folder / "b00000").mkdir(parents=True)
    text = parted.read_text().replace("[execution]", f'[execution]\nscratch = "{scratch}"')
    parted.write_text(text)
    data = read_partitioned(load_config(parted), LocalExecutor(), validate_only=True)
    assert data.validation.rows_in == data.validation.rows_used + data.validation.rows_quarantined
    assert not dead.exists()
    assert alive.exists() and other_host.exists() and unrelated.exists()
    assert sorted(p.name for p in scratch.iterdir()) == sorted(
        [alive.name, other_host.name, "keep-me"]
    )  # and the run's own folder is gone


def test_a_scratch_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    parted, _ = _study(tmp_path, persons=40, bad=False)
    (tmp_path / "afile").write_text("x")
    where = tmp_path / "afile" / "sub"
    parted.write_text(
        parted.read_text().replace("[execution]", f'[execution]\nscratch = "{where}"')
    )
    with pytest.raises(
        ConfigError,
        match=r"^\[execution\] scratch = '.*afile/sub': cannot write the partitions there "
        r"\(Not a directory\)",
    ):
        read_partitioned(load_config(parted), LocalExecutor(), validate_only=True)


def test_a_full_scratch_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parted, _ = _study(tmp_path, persons=40, bad=False)
    scratch = tmp_path / "scratch"
    parted.write_text(
        parted.read_text().replace("[execution]", f'[execution]\nscratch = "{scratch}"')
    )

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    with pytest.raises(
        ConfigError,
        match=r"^cannot write the partitions in the scratch folder .*scratch "
        r"\(No space left on device\); give \[execution\] scratch a folder",
    ):
        read_partitioned(load_config(parted), LocalExecutor(), validate_only=True)
    assert list(scratch.iterdir()) == []


def _sampled(config: Path) -> tuple[set[str], object]:
    data = read_partitioned(load_config(config), LocalExecutor())
    return set(data.levels.level2["id"].to_list()), data


def test_the_sample_does_not_depend_on_the_files_or_partitions(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    a, whole = _study(one, persons=600, files=3, partitions=4, sample=100)
    b, _ = _study(two, persons=600, files=5, partitions=7, sample=100)
    ids_a, data_a = _sampled(a)
    ids_b, data_b = _sampled(b)
    assert ids_a == ids_b
    assert 60 < len(ids_a) < 140  # about sample_persons of the 600 (binomial, sd about 9)
    cfg = load_config(whole)
    memory = validate_data(load_data(cfg), cfg)
    for data in (data_a, data_b):
        v = data.validation
        assert v.rows_in == v.rows_used + v.rows_quarantined == memory.rows_in
        assert (v.rows_used, v.rows_quarantined) == (memory.rows_used, memory.rows_quarantined)
        assert v.reasons.sort("reason").equals(memory.reasons.sort("reason"))
        assert data.statistics.persons == memory.valid["id"].n_unique() > 590
        assert data.statistics.sampled


@pytest.mark.cluster
def test_an_interrupted_dask_run_leaves_no_scratch(tmp_path: Path) -> None:
    parted, _ = _study(tmp_path, persons=40, bad=False)
    scratch = tmp_path / "scratch"
    text = parted.read_text().replace(
        "[execution]", f'[execution]\nbackend = "dask"\nworkers = 1\nscratch = "{scratch}"'
    )
    parted.write_text(text)
    cfg = load_config(parted)
    with pytest.raises(KeyboardInterrupt):
        with executor_for(cfg) as executor:
            folder = scratch / "growth-partitions-written-late"
            executor.scratch.append(folder)
            assert any(scratch.iterdir())  # the local cluster's own folder
            folder.mkdir()  # as a worker still writing after the client gave up would
            raise KeyboardInterrupt
    assert list(scratch.iterdir()) == []


def test_every_table_named_as_resting_on_all_the_data_equals_the_in_memory_one(
    tmp_path: Path,
) -> None:
    """With a second person-level predictor (held at its mean by the trajectory tables)
    and a sample of about 100 of 800 persons, each table the report names as resting on
    all the data is the in-memory run's (group_trajectories was not: 1.7e-2 relative)."""
    parted, whole = _study(tmp_path, persons=800, files=3, partitions=4, sample=100, bad=False)
    for file in [*(tmp_path / "data").glob("*.csv"), tmp_path / "all.csv"]:
        frame = pl.read_csv(file, infer_schema_length=0)
        ses = (pl.col("id").str.slice(1).cast(pl.Int64) % 7).cast(pl.String)
        frame.with_columns(ses.alias("ses")).write_csv(file)
    for config in (parted, whole):
        text = config.read_text().replace(
            'person_covariates = ["group"]', 'person_covariates = ["group", "ses"]'
        )
        text = text.replace(
            'intercept_predictors = ["group"]', 'intercept_predictors = ["group", "ses"]'
        )
        config.write_text(text)
    _, expected = _in_memory(whole)
    data, got = _partitioned(parted)
    assert data.statistics.sampled and data.statistics.sample_persons < 200
    compared = sorted(FULL_DATA_TABLES & set(expected.tables))
    assert {"fixed_effects", "variance_components", "level_equations"} <= set(compared)
    for name in compared:
        a, b = expected.tables[name], got.tables[name]
        assert a.shape == b.shape, name
        for column in a.columns:
            if a[column].dtype.is_numeric() and column not in RECORD:
                x, y = a[column].cast(pl.Float64), b[column].cast(pl.Float64)
                scale = (x.abs() + 1e-12).to_numpy()
                worst = float(np.nanmax(np.abs((x - y).to_numpy()) / scale, initial=0.0))
                assert worst < 1e-5, (name, column, worst)
