"""Load a study's data file (CSV or Parquet) into one long-format polars table.

CSV files are scanned lazily with every column read as text, so that a value like
``"abc"`` in a numeric column reaches validation (which names its row) instead of
stopping the parser. Parquet keeps its stored types. A wide file (one column per
wave) is reshaped to long from ``[data.wide] columns``. Every row carries ``_row``,
its 1-based data row number in the file (for a wide file: the wide row). Problems
with the file itself raise :class:`pipeline.errors.DataError` with one line.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.config import StudyConfig
from pipeline.errors import DataError, one_line, show_name

__all__ = ["MISSING_MARKERS", "ROW_COLUMN", "LoadedData", "file_sha256", "load_data"]

ROW_COLUMN = "_row"
# cells that mean "no value" in a CSV export (R, SAS/Stata, SQL dumps)
MISSING_MARKERS = ["", "NA", "N/A", "NULL", "null", "."]
_SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}


@dataclass(frozen=True, slots=True)
class LoadedData:
    """The data as read: long layout, every original column plus ``_row``."""

    frame: pl.DataFrame
    path: Path
    sha256: str
    rows_in: int
    format: str
    layout: str


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_data(cfg: StudyConfig) -> LoadedData:
    """Read the study's data file, check its columns and return it in long layout."""
    path = cfg.data_path
    display = _display(path)
    if not path.exists():
        raise DataError(
            f"{display}: data file not found ([data] path = {cfg.data.path!r} in "
            f"{one_line(cfg.source_path.name)})"
        )
    if path.is_dir():
        raise DataError(f"{display}: is a folder; expected a CSV or Parquet file ([data] path)")
    try:
        size = path.stat().st_size
        sha256 = file_sha256(path)
    except OSError as error:
        raise DataError(f"{display}: cannot read the data file: {error.strerror}") from None
    if size == 0:
        raise DataError(
            f"{display}: the file is empty (0 bytes); expected a header line and data rows"
        )
    file_format = _format(cfg, path)
    required = _required_columns(cfg)
    if file_format == "csv":
        frame = _read_csv(cfg, path, display, required)
    else:
        frame = _read_parquet(path, display)
    if frame.height == 0:
        raise DataError(
            f"{display}: the file has a header ({_names(frame.columns[:8])}"
            f"{', ...' if frame.width > 8 else ''}) but no data rows"
        )
    _check_columns(cfg, frame.columns, display, required)
    frame = frame.with_row_index(ROW_COLUMN, offset=1).with_columns(
        pl.col(ROW_COLUMN).cast(pl.Int64)
    )
    if cfg.data.layout == "wide":
        frame = wide_to_long(frame, cfg=cfg)
    return LoadedData(
        frame=frame,
        path=path,
        sha256=sha256,
        rows_in=frame.height,
        format=file_format,
        layout=cfg.data.layout,
    )


def wide_to_long(frame: pl.DataFrame, *, cfg: StudyConfig) -> pl.DataFrame:
    """Unpivot the wave columns of ``[data.wide]`` into the time and outcome columns.

    Rows come out ordered by wide row, then by time; ``_row`` is the wide row's number.
    """
    assert cfg.data.wide is not None
    waves = cfg.data.wide.columns
    index = [column for column in frame.columns if column not in waves]
    order = {
        column: position for position, column in enumerate(sorted(waves, key=waves.__getitem__))
    }
    long = frame.unpivot(
        on=list(waves),
        index=index,
        variable_name="__wave__",
        value_name=cfg.data.outcome,
    )
    return (
        long.with_columns(
            pl.col("__wave__").replace_strict(waves, return_dtype=pl.Float64).alias(cfg.data.time),
            pl.col("__wave__").replace_strict(order, return_dtype=pl.Int64).alias("__order__"),
        )
        .sort(ROW_COLUMN, "__order__")
        .drop("__wave__", "__order__")
        .select(*index, cfg.data.time, cfg.data.outcome)
    )


def _display(path: Path) -> str:
    try:
        return one_line(str(path.relative_to(Path.cwd())))
    except ValueError:
        return one_line(str(path))


def _names(names: list[str]) -> str:
    """Column names for a one-line message: ``id, cog, age`` (line breaks escaped)."""
    return ", ".join(show_name(name) for name in names)


def _format(cfg: StudyConfig, path: Path) -> str:
    if cfg.data.format != "auto":
        return cfg.data.format
    suffix = path.suffix.lower()
    if suffix in _CSV_SUFFIXES:
        return "csv"
    if suffix in _PARQUET_SUFFIXES:
        return "parquet"
    raise DataError(
        f"{_display(path)}: cannot tell the file format from the suffix {suffix!r}; "
        'expected .csv or .parquet, or set [data] format = "csv" or "parquet"'
    )


def _required_columns(cfg: StudyConfig) -> dict[str, str]:
    """Column name -> the config key that names it."""
    data = cfg.data
    required = {data.person: "[data] person"}
    if data.layout == "long":
        required[data.time] = "[data] time"
        required[data.outcome] = "[data] outcome"
    else:
        assert data.wide is not None
        for column in data.wide.columns:
            required[column] = "[data.wide] columns"
    for column in data.person_covariates:
        required.setdefault(column, "[data] person_covariates")
    for column in data.time_covariates:
        required.setdefault(column, "[data] time_covariates")
    return required


def _separator(cfg: StudyConfig, path: Path) -> str:
    if cfg.data.csv_separator is not None:
        return cfg.data.csv_separator
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _read_csv(cfg: StudyConfig, path: Path, display: str, required: dict[str, str]) -> pl.DataFrame:
    separator = _separator(cfg, path)
    try:
        frame = pl.scan_csv(
            path,
            separator=separator,
            infer_schema=False,
            null_values=MISSING_MARKERS,
            encoding="utf8",
        ).collect()
    except pl.exceptions.NoDataError:
        raise DataError(f"{display}: the file has no header line and no data") from None
    except (pl.exceptions.ComputeError, pl.exceptions.PolarsError, OSError) as error:
        raise DataError(_csv_failure(path, display, error)) from None
    renamed = {column: column.lstrip("\ufeff").strip() for column in frame.columns}
    if any(old != new for old, new in renamed.items()):
        frame = frame.rename(renamed)
    if frame.width == 1 and len(required) > 1:
        header = frame.columns[0]
        found = [symbol for symbol in _SEPARATORS if symbol != separator and symbol in header]
        if found:
            symbol = found[0]
            shown = "\\t" if symbol == "\t" else symbol
            raise DataError(
                f"{display}: only one column found ({header[:60]!r}) although {len(required)} "
                f"were expected; the file seems to be separated by {_SEPARATORS[symbol]}s: "
                f'set [data] csv_separator = "{shown}"'
            )
    return frame


def _csv_failure(path: Path, display: str, error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "utf-8" in text.lower() or "utf8" in text.lower():
        return _utf8_failure(path, display)
    return f"{display}: cannot be read as CSV: {text}"


def _utf8_failure(path: Path, display: str) -> str:
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line_number = raw[: error.start].count(b"\n") + 1
        line_start = raw.rfind(b"\n", 0, error.start) + 1
        column = error.start - line_start + 1
        return (
            f"{display}: not UTF-8 text: byte 0x{raw[error.start]:02x} on line {line_number}, "
            f"position {column} (the file may be Latin-1 or Windows-1252; save it as UTF-8)"
        )
    return f"{display}: cannot be read as CSV: invalid UTF-8"


def _read_parquet(path: Path, display: str) -> pl.DataFrame:
    try:
        frame = pl.scan_parquet(path).collect()
    except (pl.exceptions.PolarsError, OSError) as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{display}: cannot be read as Parquet: {text}") from None
    return frame


def _check_columns(
    cfg: StudyConfig, columns: list[str], display: str, required: dict[str, str]
) -> None:
    if ROW_COLUMN in columns:
        raise DataError(
            f"{display}: has a column named '{ROW_COLUMN}', a name the pipeline reserves for "
            "row numbers; rename that column"
        )
    missing = [column for column in required if column not in columns]
    if not missing:
        return
    column = missing[0]
    nearest = difflib.get_close_matches(column, columns, n=1, cutoff=0.6)
    if not nearest:
        lowered = {name.lower(): name for name in columns}
        if column.lower() in lowered:
            nearest = [lowered[column.lower()]]
    hint = (
        f"; did you mean '{show_name(nearest[0])}'? The file has: "
        if nearest
        else "; the file has: "
    )
    more = (
        f" ({len(missing) - 1} more configured column(s) missing: {_names(missing[1:])})"
        if len(missing) > 1
        else ""
    )
    listed = _names(columns[:30]) + (", ..." if len(columns) > 30 else "")
    raise DataError(
        f"{display}: column '{show_name(column)}' ({required[column]} in "
        f"{one_line(cfg.source_path.name)}) not found{hint}{listed}{more}"
    )
