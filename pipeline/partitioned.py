"""Data larger than memory, or spread over machines: the run's stages per partition.

A partitioned data set (``[data] path`` naming a folder or a glob of Parquet or CSV
files), a ``[execution] partitions`` count above 1 or the Dask backend make the run go
through here instead of reading one frame into memory. The steps are the in-memory
stages themselves, run on partitions that each hold whole units, then merged:

1. **spill** (one task per file): the file is read as :func:`pipeline.io.load_data`
   reads one (the same parsing, line numbers and messages), its rows get the file's
   name in ``_file``, and they are written into ``partitions`` Parquet buckets by a
   hash of the outermost unit (the person, or with ``[data] clusters`` the outermost
   cluster), so that a unit's rows are never split between buckets.
2. **validate** (one task per bucket): :func:`pipeline.validate.validate_data` and
   :func:`pipeline.reshape.split_levels` on the bucket, with the covariates' roles
   decided over the whole data set; the quarantined rows, the valid rows and the model
   frame are written beside the bucket. The accounting is summed:
   ``rows_in = rows_used + rows_quarantined`` holds for the whole set, every reason is
   kept, and the ``max_invalid_fraction`` check is made once on the totals.
3. **levels** then **statistics** (one task per bucket and model): the categorical
   levels of each model's columns are merged first, so every bucket codes X the same
   way; then each bucket's cross-products (:mod:`pipeline.model.partial`). They are
   combined on the client, where the models are fitted: the estimates, standard
   errors, df and likelihoods are those of all the data.
4. **sample**: the analyses that need the rows (residual checks, per-person OLS,
   reliability, descriptive charts, models fitted only for a comparison) run on a
   deterministic sample of whole outermost units, chosen by a second hash of the
   unit's key (about ``[execution] sample_persons`` persons; all of them when there
   are fewer). :data:`FULL_DATA_TABLES` are the tables that rest on all the data; the
   report names the others as resting on the sample.

The tasks run in this process (``backend = "local"``: one bucket in memory at a time,
so memory is bounded by the largest bucket, not by the data), or on a Dask cluster
(:class:`DaskExecutor`): the same functions, mapped over the same buckets, the results
gathered on the client. Dask reschedules the tasks of a worker that dies; a task that
still fails ends the run with one line naming the stage, and nothing is published.

Grand-mean centring uses the means of all the data: each bucket sums the centred
columns, the model frames are centred on the totals when read. Limitations (refused
with one line): group-mean centring and centring cluster-level covariates (the means
would be those of each bucket), level-1 error structures, and with ``ids = "unique"``
persons in two clusters are detected only within a bucket.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from pipeline.config import StudyConfig
from pipeline.errors import ConfigError, DataError, GrowthError, one_line
from pipeline.io import ROW_COLUMN, LoadedData, load_data
from pipeline.model.partial import (
    PartitionStats,
    PatternStats,
    combine,
    merge_levels,
    merge_patterns,
    partition_cross_products,
    partition_levels,
    pattern_stats,
)
from pipeline.reshape import (
    Descriptives,
    Levels,
    describe,
    descriptive_summary,
    grand_centred,
    grand_sums,
    split_levels,
)
from pipeline.validate import ValidationResult, enforce_limits, validate_data

__all__ = [
    "FILE_COLUMN",
    "FULL_DATA_TABLES",
    "DaskExecutor",
    "Executor",
    "LocalExecutor",
    "PartitionedData",
    "PartitionedStatistics",
    "dataset_files",
    "executor_for",
    "is_partitioned",
    "read_partitioned",
    "sequence_formulas",
    "without_credentials",
]

FILE_COLUMN = "_file"
_SCRATCH = "growth-partitions-"
_BUCKET = "__bucket__"
_SEED_BUCKET = 0x5EED
_SEED_SAMPLE = 0xC0FFEE
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".txt": "csv"}

FULL_DATA_TABLES = frozenset(
    {
        "fixed_effects",
        "variance_components",
        "model_fit",
        "model_comparison",
        "likelihood_ratio_tests",
        "variance_explained",
        "level_equations",
        "cluster_growth_variance",
        "cluster_level_equations",
        "icc",  # its interval from the means model's statistics (pipeline.analysis.icc)
    }
)
"""Tables computed from the models' estimates alone: they rest on all the data. The
others rest on the sample when the data have more persons than it (the report says so).
Not ``group_trajectories`` nor ``group_differences``: they hold the other predictors at
their mean over the sample's persons, and their times come from the sample's rows."""


# --- which files -------------------------------------------------------------------------


def _is_glob(text: str) -> bool:
    return any(character in text for character in "*?[")


def is_partitioned(cfg: StudyConfig) -> bool:
    """Whether the run goes through this module (see the module docstring): a folder or
    a glob, ``partitions`` above 1, the Dask backend, or a single file with more rows
    than ``[execution] partition_rows`` (its rows counted from the Parquet metadata or
    the CSV's line breaks), so that a large export is never read whole into memory."""
    execution = cfg.execution
    if (
        execution.backend == "dask"
        or execution.partitions > 1
        or _is_glob(cfg.data.path)
        or cfg.data_path.is_dir()
    ):
        return True
    path = cfg.data_path
    return path.is_file() and _rows_of(path) > execution.partition_rows


def _rows_of(path: Path) -> int:
    """About how many rows a data file holds, without parsing it (0 when unknown)."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return int(pl.scan_parquet(path).select(pl.len()).collect().item())
        lines = 0
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                lines += chunk.count(b"\n")
        return lines
    except (OSError, pl.exceptions.PolarsError):
        return 0  # unreadable: the in-memory path reports it with its own message


def dataset_files(cfg: StudyConfig) -> list[Path]:
    """The data set's files, sorted: the file, the folder's data files (recursively, hidden
    and ``_``-prefixed names left out, as Spark and Dask write them), or the glob's."""
    raw, path = cfg.data.path, cfg.data_path
    if _is_glob(raw):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"{raw}: no file matches this pattern ([data] path)")
    elif path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in _SUFFIXES
            and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
        )
        if not files:
            raise DataError(
                f"{raw}: the folder has no .parquet or .csv file ([data] path names a folder)"
            )
    else:
        if not path.exists():
            raise DataError(f"{raw}: data file not found ([data] path)")
        files = [path]
    kinds = {_SUFFIXES.get(p.suffix.lower(), cfg.data.format or "csv") for p in files}
    if len(kinds) > 1:
        raise DataError(
            f"{raw}: the data set mixes Parquet and CSV files ({files[0].name}, ...); "
            "give it files of one format"
        )
    return files


# --- executors ---------------------------------------------------------------------------


class Executor(Protocol):
    """Runs one function over items, returning the results in order."""

    description: dict[str, Any]

    def map(self, function: Callable[..., Any], items: Sequence[Any], stage: str) -> list[Any]: ...


# a partition task whose file could not be read for a reason that may pass (an I/O error,
# a network share briefly away: pipeline.run.is_transient) is tried this many times more,
# after these pauses (seconds); a task that keeps failing, or fails otherwise, ends the run
PARTITION_RETRIES = 2
PARTITION_RETRY_DELAYS = (1.0, 5.0)


def _attempts(function: Callable[[Any], Any], item: Any) -> Any:
    """``function(item)``, again after a transient read error (up to PARTITION_RETRIES
    times). Safe to repeat: a task writes whole files of its own, by name."""
    from pipeline.run import is_transient

    for attempt in range(PARTITION_RETRIES):
        try:
            return function(item)
        except Exception as error:
            if not is_transient(error):
                raise
            time.sleep(PARTITION_RETRY_DELAYS[min(attempt, len(PARTITION_RETRY_DELAYS) - 1)])
    return function(item)  # the last attempt: what it raises ends the task


class LocalExecutor:
    """In this process, one item at a time (memory: one bucket)."""

    def __init__(self) -> None:
        self.description = {"backend": "local", "workers": 1}

    def map(self, function: Callable[..., Any], items: Sequence[Any], stage: str) -> list[Any]:
        return [_attempts(function, item) for item in items]


class DaskExecutor:
    """On a Dask cluster: ``client.map`` over the items, gathered in order.

    A worker that dies has its tasks rescheduled by Dask; when a task still fails (its
    worker died repeatedly, or the task raised), the run ends with one line."""

    def __init__(self, client: Any, address: str, workers: int) -> None:
        self.client = client
        self.description = {"backend": "dask", "address": address, "workers": workers}
        # scratch folders to remove again once the cluster is closed: a run interrupted
        # while tasks run leaves workers writing into them after the client gave up
        self.scratch: list[Path] = []

    def map(self, function: Callable[..., Any], items: Sequence[Any], stage: str) -> list[Any]:
        from distributed import KilledWorker

        if not items:
            return []
        futures = self.client.map(functools.partial(_attempts, function), list(items), pure=False)
        try:
            return list(self.client.gather(futures))
        except GrowthError:
            raise
        except KilledWorker as error:
            raise DataError(
                f"the Dask workers running the {stage} stage died repeatedly ({error}); the run "
                "stopped and nothing was published: check the workers' memory and logs"
            ) from None
        finally:
            for future in futures:
                future.cancel()


def without_credentials(address: str) -> str:
    scheme, _, rest = address.partition("://")
    host = rest.rsplit("@", 1)[-1]
    return f"{scheme}://{host}" if rest else address


def _scrubbed(text: str, address: str) -> str:
    """``text`` without the credentials of ``address`` (a library's message may quote it)."""
    _, _, rest = address.partition("://")
    credentials, at, _ = rest.rpartition("@")
    if at and credentials:
        text = text.replace(address, without_credentials(address))
        text = text.replace(credentials + "@", "").replace(credentials, "***")
    return text


def _check_address(address: str) -> None:
    """Refuse, in one line and before any connection is tried, an address that Dask cannot
    parse (a Client built on one raises a ValueError quoting it whole, credentials
    included, and leaves a half-made client that stalls the interpreter's exit)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    shown = without_credentials(address)
    scheme, _, rest = address.partition("://")
    if "@" in rest:
        raise ConfigError(
            f"[execution] address {shown!r}: a user name or password in the address "
            "(user:password@host) is not supported by Dask's scheduler addresses; give "
            "scheme://host:port and secure the connection with Dask's TLS settings"
        )
    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls", "ws", "wss", "ucx"):
            parse_host_port(location)
    except ValueError as error:
        raise ConfigError(
            f"[execution] address {shown!r}: not a Dask scheduler address "
            f"({_scrubbed(one_line(str(error)), address)[:200]}); expected e.g. tcp://host:8786"
        ) from None


def _current_worker() -> Any:
    """The Dask worker running this code, or None (not in a Dask task)."""
    try:
        from distributed import get_worker
    except ImportError:  # pragma: no cover - dask is a dependency
        return None
    try:
        return get_worker()
    except ValueError:
        return None


@contextmanager
def executor_for(cfg: StudyConfig, *, address: str | None = None) -> Iterator[Executor]:
    """The executor of ``[execution]`` (``address`` overrides the config's, as
    ``growth run --dask ADDRESS`` does). A local cluster started here is stopped on exit,
    also when the run fails or is interrupted."""
    execution = cfg.execution
    address = address or execution.address
    if execution.backend != "dask" and address is None:
        yield LocalExecutor()
        return
    worker = _current_worker()
    if worker is not None:
        # already on a worker of the cluster (the flow's tasks run on it through Prefect's
        # Dask task runner): use that cluster, leaving this task's thread while waiting
        from distributed import worker_client

        with worker_client() as client:
            workers = len(client.scheduler_info().get("workers", {}))
            yield DaskExecutor(client, without_credentials(worker.scheduler.address), workers)
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - dask is a dependency
        raise ConfigError(
            "[execution] backend = 'dask' needs the dask and distributed packages"
        ) from None
    if address is not None:
        _check_address(address)
        try:
            client = Client(address, timeout="20s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            raise ConfigError(
                f"[execution] address {without_credentials(address)!r}: cannot reach the Dask "
                f"scheduler ({_scrubbed(one_line(str(error)), address)[:200]})"
            ) from None
        try:
            workers = len(client.scheduler_info().get("workers", {}))
            executor = DaskExecutor(client, without_credentials(address), workers)
            yield executor
        finally:
            client.close()
            _remove(executor.scratch)
        return
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.ERROR)  # the run's own lines are its report
    local = Path(tempfile.mkdtemp(prefix=_scratch_prefix(), dir=_scratch_base(cfg)))
    cluster = LocalCluster(
        local_directory=str(local),
        n_workers=execution.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=50,
    )
    try:
        client = Client(cluster, set_as_default=False)
        executor = DaskExecutor(client, "local cluster", execution.workers)
        try:
            yield executor
        finally:
            client.close()
    finally:
        cluster.close()
        _remove([*executor.scratch, local] if "executor" in locals() else [local])


# --- the tasks (module-level functions: picklable, run on workers) -----------------------


def _unit_key(cfg: StudyConfig) -> list[str]:
    """The columns of the outermost unit: buckets hold whole units of it."""
    data = cfg.data
    return [data.clusters[-1]] if data.clusters else [data.person]


def _hash(cfg: StudyConfig, seed: int) -> pl.Expr:
    columns = [pl.col(c).cast(pl.String) for c in _unit_key(cfg)]
    key = columns[0] if len(columns) == 1 else pl.concat_str(columns, separator="\x1f")
    return key.hash(seed=seed)


@dataclass(frozen=True, slots=True)
class _Spill:
    index: int
    path: Path
    folder: Path
    partitions: int
    cfg: StudyConfig


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What one file held, for the manifest and the accounting."""

    path: Path
    sha256: str
    rows_in: int
    blank_lines: int
    long_rows: int
    format: str
    layout: str
    numeric: dict[str, tuple[int, int]]


def _write(frame: pl.DataFrame, path: Path) -> None:
    """Write a scratch file; a full or unwritable scratch folder is a one-line error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path)
    except (OSError, pl.exceptions.ComputeError) as error:
        text = str(error)
        if isinstance(error, pl.exceptions.ComputeError) and "error" not in text.lower():
            raise
        reason = (
            error.strerror
            if isinstance(error, OSError) and error.strerror
            else one_line(text.rsplit(":", 1)[-1].strip())[:120]
        )
        raise ConfigError(
            f"cannot write the partitions in the scratch folder {path.parent.parent.parent} "
            f"({reason}); give [execution] scratch a folder with room for a copy of the data"
        ) from None


def _bucket_folder(folder: Path, bucket: int) -> Path:
    return folder / f"b{bucket:05d}"


def _spill(task: _Spill) -> FileFacts:
    from schemas.input import numeric_counts

    cfg = task.cfg
    data = cfg.data.model_copy(update={"path": str(task.path)})
    loaded = load_data(cfg.model_copy(update={"data": data}))
    name = _display_name(cfg, task.path)
    frame = loaded.frame.with_columns(
        pl.lit(name, dtype=pl.String).alias(FILE_COLUMN),
        (_hash(cfg, _SEED_BUCKET) % task.partitions).cast(pl.Int64).alias(_BUCKET),
    )
    for (bucket,), part in frame.partition_by(_BUCKET, as_dict=True).items():
        target = _bucket_folder(task.folder, int(bucket))
        target.mkdir(parents=True, exist_ok=True)
        _write(part.drop(_BUCKET), target / f"f{task.index:06d}.parquet")
    return FileFacts(
        path=task.path,
        sha256=loaded.sha256,
        rows_in=loaded.rows_in,
        blank_lines=loaded.blank_lines,
        long_rows=loaded.long_rows,
        format=loaded.format,
        layout=loaded.layout,
        numeric=numeric_counts(loaded.frame, cfg),
    )


def _display_name(cfg: StudyConfig, path: Path) -> str:
    root = cfg.data_path
    base = root if root.is_dir() else root.parent
    try:
        return str(path.relative_to(base))
    except ValueError:
        return path.name


@dataclass(frozen=True, slots=True)
class _Validate:
    bucket: int
    folder: Path
    cfg: StudyConfig
    numeric: tuple[str, ...]
    # units whose rows lie in several buckets (column -> values as text); their rows are
    # validated together in the extra bucket ``buckets`` (see :func:`_crossing_units`)
    crossing: tuple[tuple[str, tuple[str, ...]], ...] = ()
    buckets: int = 0


@dataclass(frozen=True, slots=True)
class BucketFacts:
    """One bucket's validation: its counts and reasons (the rows are in its folder)."""

    bucket: int
    rows_in: int
    rows_used: int
    rows_quarantined: int
    missing_outcome: int
    reasons: pl.DataFrame
    persons: int
    units: int
    distinct_times: int
    time_name: str
    summary: pl.DataFrame | None = None  # the bucket's descriptive summary (one row)
    sums: dict[str, tuple[float, int]] = field(default_factory=dict)  # grand-centred columns


def _distinct_occasions(frame: pl.DataFrame, spec: Any) -> int:
    """The most distinct occasions of a person, as :func:`pipeline.analysis.analyse` counts
    them (occasion labels, or times written as ``f"{t:g}"``).

    With more distinct times than occasions can be (continuous time), the in-memory count
    uses decile bins of all the times, which no partition knows; the distinct times per
    person are counted instead (an upper bound: a higher random polynomial may be tried)."""
    from pipeline.analysis.spec import MAX_DISTINCT_OCCASIONS

    person = spec.person
    if spec.occasion is not None and spec.occasion in frame.columns:
        label = pl.col(spec.occasion).cast(pl.String)
        return int(frame.group_by(person).agg(label.n_unique())[spec.occasion].max() or 0)
    if spec.time in frame.columns:
        time = pl.col(spec.time).cast(pl.Float64)
    else:
        raise ValueError("the model frame has no original time column")
    values = frame.select(time.unique()).to_series().to_list()
    if len(values) > MAX_DISTINCT_OCCASIONS:
        counts = frame.group_by(person).agg(time.n_unique().alias("k"))["k"]
        return int(counts.max() or 0)
    labels = {value: f"{value:g}" for value in values}
    coded = frame.select(
        pl.col(person), time.replace_strict(labels, return_dtype=pl.String).alias("label")
    )
    counts = coded.group_by(person).agg(pl.col("label").n_unique().alias("k"))["k"]
    return int(counts.max() or 0)


def _read_bucket(folder: Path) -> pl.DataFrame | None:
    files = sorted(folder.glob("f*.parquet"))
    if not files:
        return None
    frames = [pl.read_parquet(file) for file in files]
    return pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]


def _crossing_rows(crossing: tuple[tuple[str, tuple[str, ...]], ...]) -> pl.Expr:
    expression = pl.lit(False)
    for column, values in crossing:
        expression = expression | pl.col(column).cast(pl.String).is_in(list(values))
    return expression


def _bucket_rows(task: _Validate) -> pl.DataFrame | None:
    """A bucket's rows without the crossing units', or (the extra bucket) only theirs."""
    if not task.crossing:
        return _read_bucket(_bucket_folder(task.folder, task.bucket))
    crossing = _crossing_rows(task.crossing)
    if task.bucket < task.buckets:
        frame = _read_bucket(_bucket_folder(task.folder, task.bucket))
        return None if frame is None else frame.filter(~crossing)
    frames = [
        pl.read_parquet(file).filter(crossing)
        for b in range(task.buckets)
        for file in sorted(_bucket_folder(task.folder, b).glob("f*.parquet"))
    ]
    frames = [frame for frame in frames if frame.height]
    if not frames:
        return None
    frame = pl.concat(frames, how="diagonal_relaxed")
    return frame.sort(FILE_COLUMN, ROW_COLUMN)


def _crossing_units(folder: Path, cfg: StudyConfig) -> tuple:
    """Units whose rows can lie in two buckets: with clusters and ids unique in the study,
    a person in two clusters (or with a row missing its cluster), a cluster in two outer
    clusters; and every outermost cluster they touch. Found over all the rows at once;
    their rows are validated together in one more bucket, where the in-memory checks
    quarantine them with the same reasons. That bucket holds whole outermost clusters,
    so no unit is in two buckets (it grows with the movers' clusters)."""
    data = cfg.data
    if not data.clusters or data.ids == "within_cluster":
        return ()
    columns = [data.person, *data.clusters]
    files = sorted(folder.glob("b*/f*.parquet"))
    if not files:
        return ()
    lazy = pl.concat(
        [
            pl.scan_parquet(file).select(pl.col(c).cast(pl.String) for c in columns)
            for file in files
        ],
        how="vertical",
    )
    found: list[tuple[str, tuple[str, ...]]] = []
    for position, (inner, outer) in enumerate(zip(columns[:-1], columns[1:], strict=True)):
        crossing = (
            lazy.select(inner, outer)
            .filter(pl.col(inner).is_not_null())
            .unique()
            .group_by(inner)
            .agg((pl.col(outer).n_unique() + pl.col(outer).null_count().clip(0, 1)).alias("n"))
            .filter(pl.col("n") > 1)
            .select(inner)
            .collect()
        )
        if position == 0:  # a person with a row missing any cluster
            missing = (
                lazy.filter(pl.any_horizontal(pl.col(c).is_null() for c in columns[1:]))
                .filter(pl.col(inner).is_not_null())
                .select(inner)
                .unique()
                .collect()
            )
            crossing = pl.concat([crossing, missing]).unique()
        if crossing.height:
            found.append((inner, tuple(sorted(crossing[inner].to_list()))))
    if not found:
        return ()
    # with them, every row of their outermost clusters: the extra bucket then holds whole
    # clusters (the cluster-level checks see all their rows) and no unit of another bucket
    outer = columns[-1]
    involved = (
        lazy.filter(_crossing_rows(tuple(found)))
        .select(outer)
        .filter(pl.col(outer).is_not_null())
        .unique()
        .collect()
    )
    if involved.height:
        found.append((outer, tuple(sorted(involved[outer].to_list()))))
    return tuple(found)


def _validate(task: _Validate) -> BucketFacts:
    from pipeline.analysis.spec import AnalysisSpec

    cfg = task.cfg
    folder = _bucket_folder(task.folder, task.bucket)
    frame = _bucket_rows(task)
    time_name = cfg.time.name
    if frame is None:
        empty = pl.DataFrame(schema={"reason": pl.String, "rows": pl.Int64})
        return BucketFacts(task.bucket, 0, 0, 0, 0, empty, 0, 0, 0, time_name)
    loaded = LoadedData(
        frame=frame,
        path=cfg.data_path,
        sha256="",
        rows_in=frame.height,
        format="parquet",
        layout="long",
        long_rows=frame.height,
    )
    result = validate_data(loaded, cfg, limits=False, numeric_covariates=task.numeric)
    folder.mkdir(parents=True, exist_ok=True)
    _write(result.quarantine, folder / "quarantine.parquet")
    valid = result.valid
    _write(valid, folder / "valid.parquet")
    persons = units = distinct = 0
    summary = None
    sums: dict[str, tuple[float, int]] = {}
    if valid.height:
        # grand-centred columns stay as they are here (means of 0): the means of all the
        # data are known once every bucket's sums are in, and are applied to the model
        # frame when it is read (_model_frame)
        levels = split_levels(valid, cfg, means=dict.fromkeys(grand_centred(cfg), 0.0))
        sums = grand_sums(levels, cfg)
        _write(levels.model_frame, folder / "model.parquet")
        persons = levels.level2.height
        units = levels.level2.select(_unit_key(cfg)).n_unique()
        if levels.model_frame.height:
            spec = AnalysisSpec.from_config(cfg, time_name=levels.time_name)
            distinct = _distinct_occasions(levels.model_frame, spec)
        time_name = levels.time_name
        summary = descriptive_summary(levels)
    return BucketFacts(
        bucket=task.bucket,
        rows_in=result.rows_in,
        rows_used=result.rows_used,
        rows_quarantined=result.rows_quarantined,
        missing_outcome=result.missing_outcome,
        reasons=result.reasons,
        persons=persons,
        units=units,
        distinct_times=distinct,
        time_name=time_name,
        summary=summary,
        sums=sums,
    )


@dataclass(frozen=True, slots=True)
class _Models:
    bucket: int
    folder: Path
    formulas: tuple[str, ...]
    levels: tuple[dict[str, tuple[str, ...]], ...] | None = None  # None: find the levels
    per_person: frozenset[str] = frozenset()  # formulas reduced per person, not per pattern
    means: tuple[tuple[str, float], ...] = ()  # grand means of all the data, to centre on


def _model_frame(folder: Path, bucket: int, means=()) -> pl.DataFrame | None:
    """A bucket's model frame, with the grand-centred columns centred on ``means``."""
    path = _bucket_folder(folder, bucket) / "model.parquet"
    if not path.exists():
        return None
    frame = pl.read_parquet(path)
    shifts = [
        (pl.col(column).cast(pl.Float64) - mean).alias(column)
        for column, mean in means
        if column in frame.columns
    ]
    return frame.with_columns(shifts) if shifts else frame


def _levels(task: _Models) -> list[tuple[dict[str, tuple[str, ...]], pl.Schema] | None]:
    frame = _model_frame(task.folder, task.bucket, task.means)
    if frame is None:
        return [None] * len(task.formulas)
    return [partition_levels(frame, formula) for formula in task.formulas]


def _statistics(task: _Models) -> list[PartitionStats | PatternStats | None]:
    """Each formula's statistics of one bucket: summed per time pattern for a two-level
    model whose persons share few patterns (memory that does not grow with the persons),
    else per person (nested models, continuous time, or ``per_person``)."""
    frame = _model_frame(task.folder, task.bucket, task.means)
    if frame is None:
        return [None] * len(task.formulas)
    assert task.levels is not None
    out: list[PartitionStats | PatternStats | None] = []
    for formula, levels in zip(task.formulas, task.levels, strict=True):
        try:
            part = partition_cross_products(frame, formula, levels)
        except GrowthError:
            out.append(None)  # the model's own error comes from the client's fit
            continue
        if part is None or len(part.sizes) > 1 or formula in task.per_person:
            out.append(part)
            continue
        patterns = pattern_stats(part.cp)
        out.append(part if patterns is None else patterns)
    return out


def _merge_statistics(pieces: list[PartitionStats | PatternStats | None]) -> Any:
    """One formula's statistics over the buckets; None when the buckets used both kinds
    (then they are reduced again per person)."""
    kinds = {type(piece) for piece in pieces if piece is not None}
    if kinds == {PatternStats}:
        return merge_patterns(pieces)  # type: ignore[arg-type]
    if kinds == {PartitionStats}:
        return combine(pieces)  # type: ignore[arg-type]
    return None


@dataclass(frozen=True, slots=True)
class _Sample:
    bucket: int
    folder: Path
    cfg: StudyConfig
    threshold: int  # a unit is in the sample when its sample hash is below this (of 2**32)


def _sample(task: _Sample) -> pl.DataFrame | None:
    path = _bucket_folder(task.folder, task.bucket) / "valid.parquet"
    if not path.exists():
        return None
    valid = pl.read_parquet(path)
    if task.threshold >= 1 << 32:
        return valid
    chosen = (_hash(task.cfg, _SEED_SAMPLE) % (1 << 32)) < task.threshold
    return valid.filter(chosen)


# --- the client ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionedStatistics:
    """What the analysis needs to fit the model sequence on all the data."""

    distinct_times: int
    statistics: dict[str, PartitionStats | PatternStats]  # formula -> merged statistics
    levels: dict[str, dict[str, tuple[str, ...]]]  # formula -> categorical levels
    persons: int
    sample_persons: int

    @property
    def sampled(self) -> bool:
        return self.sample_persons < self.persons


@dataclass(frozen=True, slots=True)
class PartitionedData:
    """The partitioned counterpart of load -> validate -> reshape."""

    loaded: LoadedData  # the set's facts; ``frame`` is the sample's valid rows
    validation: ValidationResult  # totals; ``valid`` the sample's rows, all quarantined rows
    levels: Levels | None  # of the sample (None: validation only)
    descriptives: Descriptives | None  # summary of all the data; the other tables of the sample
    statistics: PartitionedStatistics | None
    facts: dict[str, Any] = field(default_factory=dict)  # for the manifest


def _grand_means(facts: list[BucketFacts], cfg: StudyConfig) -> tuple[tuple[str, float], ...]:
    """The grand means of the grand-centred columns over all the data, from the buckets'
    sums and counts (buckets hold whole persons)."""
    out = []
    for column in grand_centred(cfg):
        total = sum(f.sums[column][0] for f in facts if column in f.sums)
        count = sum(f.sums[column][1] for f in facts if column in f.sums)
        out.append((column, total / count if count else float("nan")))
    return tuple(out)


def _check_supported(cfg: StudyConfig) -> None:
    if len(cfg.outcomes) > 1:
        raise ConfigError(
            f"[data] outcomes = {list(cfg.outcomes)}: several outcomes in one run are analysed "
            "in memory only; for partitioned data run one outcome at a time (--outcome NAME)"
        )
    clustered = set(cfg.cluster_covariates)
    centred = [
        column
        for column, spec in cfg.data.centre.items()
        if spec not in ("person", "grand") or column in clustered
    ]
    if centred:
        # a cluster-level covariate is refused even with "grand": no other centring to offer
        other = "" if centred[0] in clustered else ", or use centre = 'grand' or 'person'"
        raise ConfigError(
            f"[data] centre.{centred[0]}: group-mean centring, and centring a cluster-level "
            "covariate, are not available for partitioned data (each partition would be "
            f"centred on its own means); centre the column in the export{other}"
        )
    if cfg.models.residual:
        raise ConfigError(
            "[models] residual: level-1 error structures are fitted in memory only; leave "
            "them out for partitioned data"
        )


def _partitions(cfg: StudyConfig, files: list[Path], workers: int) -> int:
    if cfg.execution.partitions > 0:
        return cfg.execution.partitions
    rows = sum(_rows_of(file) for file in files)
    return max(len(files), -(-rows // cfg.execution.partition_rows), 2 * workers, 2)


def _merge_reasons(found: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [frame for frame in found if frame.height]
    if not frames:
        return pl.DataFrame(schema={"reason": pl.String, "rows": pl.Int64})
    return (
        pl.concat(frames)
        .group_by("reason")
        .agg(pl.col("rows").sum().cast(pl.Int64))
        .sort(["rows", "reason"], descending=[True, False])
    )


def _merged_summary(facts: list[BucketFacts], like: pl.DataFrame) -> pl.DataFrame:
    """The descriptive summary of all the data from the buckets' summaries."""
    rows = pl.concat([f.summary for f in facts if f.summary is not None and f.summary.height])
    persons = rows["persons"].sum()
    merged = rows.select(
        pl.col("persons").sum(),
        pl.col("occasions").sum(),
        pl.col("occasions_with_outcome").sum(),
        ((pl.col("mean_occasions") * pl.col("persons")).sum() / max(persons, 1)).alias(
            "mean_occasions"
        ),
        pl.col("min_occasions").min(),
        pl.col("max_occasions").max(),
    )
    return merged.select(like.columns).cast(like.schema)


def _dataset_sha(files: list[FileFacts], cfg: StudyConfig) -> str:
    digest = hashlib.sha256()
    for fact in files:
        digest.update(_display_name(cfg, fact.path).encode() + b"\0" + fact.sha256.encode() + b"\n")
    return digest.hexdigest()


def sequence_formulas(cfg: StudyConfig) -> Callable[[int, str], tuple[str, ...]]:
    """The formulas of the study's model sequence, given the most distinct occasions of a
    person and the coded time's name (what :func:`pipeline.analysis.analyse` fits)."""
    from pipeline.analysis.sequence import model_sequence
    from pipeline.analysis.spec import AnalysisSpec

    def formulas(distinct_times: int, time_name: str) -> tuple[str, ...]:
        spec = AnalysisSpec.from_config(cfg, time_name=time_name)
        return tuple(m.formula for m in model_sequence(spec, distinct_times=distinct_times))

    return formulas


def read_partitioned(
    cfg: StudyConfig,
    executor: Executor,
    *,
    formulas_for: Callable[[int, str], tuple[str, ...]] | None = None,
    scratch: Path | None = None,
    validate_only: bool = False,
) -> PartitionedData:
    """Spill, validate, reshape and reduce the data set by partitions (module docstring).

    ``formulas_for(distinct_times, time_name)`` gives the formulas to reduce once the
    largest number of distinct occasions of a person is known (default: the study's
    model sequence, :func:`sequence_formulas`). ``validate_only``: stop after the
    validation (``levels``, ``descriptives`` and ``statistics`` are None)."""
    _check_supported(cfg)
    formulas_for = None if validate_only else formulas_for or sequence_formulas(cfg)
    files = dataset_files(cfg)
    workers = int(executor.description.get("workers") or 1)
    buckets = _partitions(cfg, files, workers)
    base = scratch or _scratch_base(cfg)
    folder = Path(tempfile.mkdtemp(prefix=_scratch_prefix(), dir=base))
    if isinstance(getattr(executor, "scratch", None), list):
        executor.scratch.append(folder)  # type: ignore[attr-defined]
    try:
        spilled: list[FileFacts] = executor.map(
            _spill, [_Spill(i, path, folder, buckets, cfg) for i, path in enumerate(files)], "read"
        )
        numeric = _numeric_decision(spilled)
        crossing = _crossing_units(folder, cfg)
        tasks = [_Validate(b, folder, cfg, numeric, crossing, buckets) for b in range(buckets)]
        if crossing:  # the crossing units and their whole clusters: one more bucket
            tasks.append(_Validate(buckets, folder, cfg, numeric, crossing, buckets))
        facts: list[BucketFacts] = executor.map(_validate, tasks, "validate")
        buckets = len(tasks)
        return _assemble(
            cfg, files, spilled, facts, numeric, folder, buckets, formulas_for, executor
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _scratch_prefix() -> str:
    """``growth-partitions-HOST-PID-``: a folder left by a killed run (SIGKILL, a crash)
    is recognised, and removed, by the next run on the same host."""
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "host"
    return f"{_SCRATCH}{host}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _scratch_base(cfg: StudyConfig) -> Path | None:
    """``[execution] scratch`` (created if need be; None: the system's temporary folder),
    after removing the folders of this host's runs whose process is gone. A folder that
    cannot be created or written is a one-line error."""
    raw = cfg.execution.scratch
    base = Path(raw) if raw else None
    where = f"[execution] scratch = {raw!r}" if raw else "the temporary folder (TMPDIR)"
    try:
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        root = base if base is not None else Path(tempfile.gettempdir())
        host = _scratch_prefix().rsplit("-", 2)[0] + "-"
        for entry in root.glob(f"{_SCRATCH}*"):
            rest = entry.name[len(host) :] if entry.name.startswith(host) else ""
            pid = rest.split("-", 1)[0]
            if entry.is_dir() and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)
        probe = Path(tempfile.mkdtemp(prefix=_scratch_prefix(), dir=root))
        probe.rmdir()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"{where}: cannot write the partitions there ({reason}); give a folder with free "
            "space that this process can write"
        ) from None
    return base


def _remove(folders: Sequence[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _numeric_decision(spilled: list[FileFacts]) -> tuple[str, ...]:
    totals: dict[str, list[int]] = {}
    for fact in spilled:
        for column, (present, numbers) in fact.numeric.items():
            entry = totals.setdefault(column, [0, 0])
            entry[0] += present
            entry[1] += numbers
    return tuple(
        column
        for column, (present, numbers) in totals.items()
        if present and numbers / present > 0.5
    )


def _assemble(
    cfg: StudyConfig,
    files: list[Path],
    spilled: list[FileFacts],
    facts: list[BucketFacts],
    numeric: tuple[str, ...],
    folder: Path,
    buckets: int,
    formulas_for: Callable[[int, str], tuple[str, ...]] | None,
    executor: Executor,
) -> PartitionedData:
    rows_in = sum(f.rows_in for f in facts)
    persons = sum(f.persons for f in facts)
    units = sum(f.units for f in facts)
    quarantine_files = [
        path
        for b in range(buckets)
        if (path := _bucket_folder(folder, b) / "quarantine.parquet").exists()
    ]
    quarantine = (
        pl.concat([pl.read_parquet(p) for p in quarantine_files], how="diagonal_relaxed")
        if quarantine_files
        else pl.DataFrame()
    )
    if quarantine.height and FILE_COLUMN in quarantine.columns:
        quarantine = quarantine.sort(FILE_COLUMN, ROW_COLUMN).select(
            ROW_COLUMN, FILE_COLUMN, pl.exclude(ROW_COLUMN, FILE_COLUMN)
        )
    sample_target = cfg.execution.sample_persons
    threshold = 1 << 32 if persons <= sample_target else int((sample_target / persons) * (1 << 32))
    parts = executor.map(
        _sample, [_Sample(b, folder, cfg, threshold) for b in range(buckets)], "sample"
    )
    present = [part for part in parts if part is not None and part.height]
    valid = pl.concat(present, how="diagonal_relaxed") if present else pl.DataFrame()
    validation = ValidationResult(
        valid=valid,
        quarantine=quarantine,
        rows_in=rows_in,
        rows_used=sum(f.rows_used for f in facts),
        rows_quarantined=sum(f.rows_quarantined for f in facts),
        reasons=_merge_reasons([f.reasons for f in facts]),
        missing_outcome=sum(f.missing_outcome for f in facts),
        numeric_covariates=numeric,
        file_rows=sum(f.rows_in for f in spilled),
        blank_lines=sum(f.blank_lines for f in spilled),
    )
    first = spilled[0]
    loaded = LoadedData(
        frame=valid,
        path=cfg.data_path,
        sha256=_dataset_sha(spilled, cfg),
        rows_in=validation.file_rows,
        format=first.format,
        layout=first.layout,
        blank_lines=validation.blank_lines,
        long_rows=sum(f.long_rows for f in spilled),
    )
    enforce_limits(validation, loaded, cfg)
    if formulas_for is None:  # validation only (growth validate)
        return PartitionedData(
            loaded=loaded,
            validation=validation,
            levels=None,
            descriptives=None,
            statistics=None,
            facts={**executor.description, "partitions": buckets, "files": len(files)},
        )
    grand = _grand_means(facts, cfg)
    levels = split_levels(valid, cfg, means=dict(grand))
    descriptives = describe(levels, cfg)
    distinct = max(f.distinct_times for f in facts)
    formulas = formulas_for(distinct, levels.time_name)
    found = executor.map(
        _levels,
        [_Models(b, folder, formulas, means=grand) for b in range(buckets)],
        "model levels",
    )
    model_levels: dict[str, dict[str, tuple[str, ...]]] = {}
    for j, formula in enumerate(formulas):
        per_bucket = [entry[j] for entry in found if entry[j] is not None]
        if per_bucket:
            model_levels[formula] = merge_levels([lv for lv, _ in per_bucket], per_bucket[0][1])
    usable = tuple(f for f in formulas if f in model_levels)
    level_list = tuple(model_levels[f] for f in usable)
    reduced = executor.map(
        _statistics,
        [_Models(b, folder, usable, level_list, means=grand) for b in range(buckets)],
        "statistics",
    )
    statistics: dict[str, PartitionStats | PatternStats] = {}
    again: list[str] = []
    for j, formula in enumerate(usable):
        pieces = [entry[j] for entry in reduced]
        if any(piece is not None for piece in pieces):
            merged = _merge_statistics(pieces)
            if merged is None:
                again.append(formula)
            else:
                statistics[formula] = merged
    if again:  # some buckets had too many time patterns: per person for these formulas
        subset = tuple(again)
        levels_of = tuple(model_levels[f] for f in subset)
        redone = executor.map(
            _statistics,
            [
                _Models(b, folder, subset, levels_of, per_person=frozenset(subset), means=grand)
                for b in range(buckets)
            ],
            "statistics",
        )
        for j, formula in enumerate(subset):
            statistics[formula] = combine([entry[j] for entry in redone])
    if descriptives.summary.height and levels.level2.height < persons:
        descriptives = Descriptives(
            summary=_merged_summary(facts, descriptives.summary),
            occasions_per_person=descriptives.occasions_per_person,
            attrition=descriptives.attrition,
            patterns=descriptives.patterns,
        )
    return PartitionedData(
        loaded=loaded,
        validation=validation,
        levels=levels,
        descriptives=descriptives,
        statistics=PartitionedStatistics(
            distinct_times=distinct,
            statistics=statistics,
            levels=model_levels,
            persons=persons,
            sample_persons=levels.level2.height,
        ),
        facts={
            **executor.description,
            "partitions": buckets,
            "files": len(files),
            "persons": persons,
            "units": units,
            "sample_persons": levels.level2.height,
        },
    )
