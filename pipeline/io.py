"""Load a study's data file (CSV or Parquet) into one long-format polars table.

The file is read once into memory: the SHA-256 in the manifest and the cache key
is the hash of exactly the bytes that are parsed. CSV files are parsed with every
column read as text, so that a value like ``"abc"`` in a numeric column reaches
validation (which names its line) instead of stopping the parser. Parquet keeps
its stored types; nested types (lists, structs) are refused, naming the column.
A wide file (one column per wave) is reshaped to long from ``[data.wide] columns``;
a wave whose outcome cell is empty is not an occasion, so it makes no long row
(a wide row with no value in any wave keeps one long row, with a missing outcome,
so that no row of the file is lost from the accounting).

Every row carries ``_line``: the line of the file on which the row starts, as a
text editor numbers them (the header is line 1, so the first data row is line 2;
a quoted value spanning several lines counts them all). A Parquet file has no
lines: there ``_line`` is the row number plus one, the line the row would have in
a CSV export with a header. For a wide file it is the wide row's line. Blank
lines (empty or only spaces) are skipped and counted, never analysed. A header
that names a column twice is refused. Problems with the file itself raise
:class:`pipeline.errors.DataError` with one line.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import StudyConfig
from pipeline.errors import PERMANENT_ERRNOS, DataError, TransientReadError, one_line, show_name

__all__ = [
    "MISSING_MARKERS",
    "ROW_COLUMN",
    "LoadedData",
    "csv_records",
    "file_sha256",
    "load_data",
]

ROW_COLUMN = "_line"
# cells that mean "no value" in a CSV export (R, SAS/Stata, SQL dumps)
MISSING_MARKERS = ["", "NA", "N/A", "NULL", "null", "."]
_SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_DECIMAL_COMMA = re.compile(r"\d,\d")


@dataclass(frozen=True, slots=True)
class LoadedData:
    """The data as read: long layout, every original column plus ``_line``.

    ``rows_in`` counts the data rows of the file (for a wide file, the wide rows;
    blank lines not counted); ``blank_lines`` the blank lines skipped;
    ``long_rows`` the rows of ``frame`` (for a wide file, the occasions after
    reshaping; otherwise equal to ``rows_in``).
    """

    frame: pl.DataFrame
    path: Path
    sha256: str
    rows_in: int
    format: str
    layout: str
    blank_lines: int = 0
    long_rows: int = -1


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class CsvRecords:
    """Where each record of a CSV text starts, and which are blank (header included)."""

    lines: np.ndarray  # 1-based line on which each record starts
    blank: np.ndarray  # True for an empty or all-space record
    fields: np.ndarray  # number of fields (separators outside quotes + 1)


_SPACE_TABLE = np.array([byte in b" \t\r\n\x0b\x0c" for byte in range(256)], dtype=bool)


def csv_records(raw: bytes, separator: str, *, count_fields: bool = True) -> CsvRecords:
    """Split CSV bytes into records the way the parser does (double-quote quoting).

    A line break inside a quoted value does not end a record. Vectorised with numpy
    over the positions of line breaks and quotes (not every byte), so it costs a
    fraction of the parse. ``fields`` is only counted when asked (it explains a
    parse failure); otherwise it is empty.
    """
    data = np.frombuffer(raw, dtype=np.uint8)
    if data.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return CsvRecords(lines=empty, blank=np.zeros(0, dtype=bool), fields=empty)
    newlines = np.flatnonzero(data == ord("\n"))
    if b'"' in raw:
        # a line break ends a record when an even number of quotes comes before it;
        # quotes are counted per line in uint8, whose wrap-around keeps the parity
        line_starts = np.concatenate(([0], newlines + 1))
        line_starts = line_starts[line_starts < data.size]
        per_line = np.add.reduceat((data == ord('"')).view(np.uint8), line_starts)
        parity = np.cumsum(per_line, dtype=np.uint8) & 1
        ends_record = parity[: newlines.size] == 0
    else:
        ends_record = np.ones(newlines.size, dtype=bool)
    starts = np.concatenate(([0], newlines[ends_record] + 1))
    lines = np.concatenate(([1], np.flatnonzero(ends_record) + 2))
    if starts[-1] >= data.size:
        starts, lines = starts[:-1], lines[:-1]
    # blank: nothing but spaces up to the next record; only a record that starts with
    # a space (or is empty) can be blank, so only those are looked at closely
    blank = _SPACE_TABLE[data[starts]]
    stops = np.concatenate((starts[1:], [data.size]))
    for index in np.flatnonzero(blank):
        if raw[starts[index] : stops[index]].strip():
            blank[index] = False
    fields = np.zeros(0, dtype=np.int64)
    if count_fields:
        quoted = np.concatenate(([False], data[:-1] == ord('"')))
        inside = (np.cumsum(quoted, dtype=np.uint8) & 1).astype(bool)
        separators = np.flatnonzero((data == ord(separator)) & ~inside)
        fields = np.searchsorted(separators, stops) - np.searchsorted(separators, starts) + 1
    return CsvRecords(lines=lines.astype(np.int64), blank=blank, fields=fields)


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
        raw = path.read_bytes()
    except OSError as error:
        kind = DataError if error.errno in PERMANENT_ERRNOS else TransientReadError
        raise kind(f"{display}: cannot read the data file: {error.strerror}") from None
    if not raw:
        raise DataError(
            f"{display}: the file is empty (0 bytes); expected a header line and data rows"
        )
    sha256 = hashlib.sha256(raw).hexdigest()
    file_format = _format(cfg, path)
    required = _required_columns(cfg)
    blank_lines = 0
    if file_format == "csv":
        frame, blank_lines = _read_csv(cfg, raw, path, display, required)
    else:
        frame = _read_parquet(raw, display)
        frame = frame.with_row_index(ROW_COLUMN, offset=2).with_columns(
            pl.col(ROW_COLUMN).cast(pl.Int64)
        )
    if frame.height == 0:
        columns = [column for column in frame.columns if column != ROW_COLUMN]
        raise DataError(
            f"{display}: the file has a header ({_names(columns[:8])}"
            f"{', ...' if len(columns) > 8 else ''}) but no data rows"
        )
    _check_columns(cfg, frame.columns, display, required)
    rows_in = frame.height
    if cfg.data.layout == "wide":
        frame = wide_to_long(frame, cfg=cfg)
    return LoadedData(
        frame=frame,
        path=path,
        sha256=sha256,
        rows_in=rows_in,
        format=file_format,
        layout=cfg.data.layout,
        blank_lines=blank_lines,
        long_rows=frame.height,
    )


def wide_to_long(frame: pl.DataFrame, *, cfg: StudyConfig) -> pl.DataFrame:
    """Unpivot the wave columns of ``[data.wide]`` into the time and outcome columns.

    Rows come out ordered by wide row, then by time; ``_line`` is the wide row's line.
    A wave whose cell is empty (missing, blank or NaN) is not an occasion and makes
    no row, except that a wide row with no value in any wave keeps its first wave
    (outcome missing), so that every row of the file is accounted for.
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
    value = pl.col(cfg.data.outcome)
    dtype = long.schema[cfg.data.outcome]
    empty = value.is_null()
    if dtype == pl.String:
        empty = empty | (value.str.strip_chars() == "")
    elif dtype.is_float():
        empty = empty | value.is_nan()
    return (
        long.with_columns(
            pl.col("__wave__").replace_strict(waves, return_dtype=pl.Float64).alias(cfg.data.time),
            pl.col("__wave__").replace_strict(order, return_dtype=pl.Int64).alias("__order__"),
            empty.alias("__empty__"),
        )
        .filter(
            ~pl.col("__empty__")
            | (pl.col("__empty__").all().over(ROW_COLUMN) & (pl.col("__order__") == 0))
        )
        .sort(ROW_COLUMN, "__order__")
        .drop("__wave__", "__order__", "__empty__")
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
        for column in data.outcomes[1:]:
            required.setdefault(column, "[data] outcomes")
    else:
        assert data.wide is not None
        for column in data.wide.columns:
            required[column] = "[data.wide] columns"
    for column in data.person_covariates:
        required.setdefault(column, "[data] person_covariates")
    for column in data.time_covariates:
        required.setdefault(column, "[data] time_covariates")
    for column in data.clusters:
        required.setdefault(column, "[data] clusters")
    for cluster, names in data.cluster_covariates.items():
        for column in names:
            required.setdefault(column, f"[data] cluster_covariates.{cluster}")
    return required


def _separator(cfg: StudyConfig, path: Path) -> str:
    if cfg.data.csv_separator is not None:
        return cfg.data.csv_separator
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _header_names(raw: bytes, separator: str) -> list[str]:
    """The header's column names as written (polars renames a repeated one)."""
    import csv

    text = raw[:65536].decode("utf-8", errors="replace").lstrip("\ufeff")
    first = next(csv.reader(io.StringIO(text), delimiter=separator), [])
    return [name.strip() for name in first]


def _check_header(raw: bytes, separator: str, display: str) -> None:
    names = _header_names(raw, separator)
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in seen:
            raise DataError(
                f"{display}: the header names the column '{show_name(name)}' twice (columns "
                f"{seen[name]} and {position}); rename one of them so that every column has "
                "its own name"
            )
        seen[name] = position
    if ROW_COLUMN in seen:
        raise DataError(
            f"{display}: has a column named '{ROW_COLUMN}', a name the pipeline reserves for "
            "line numbers; rename that column"
        )


def _read_csv(
    cfg: StudyConfig, raw: bytes, path: Path, display: str, required: dict[str, str]
) -> tuple[pl.DataFrame, int]:
    """The CSV's rows (blank lines dropped) with ``_line``, and the number of blank lines."""
    separator = _separator(cfg, path)
    try:
        frame = pl.read_csv(
            raw,
            separator=separator,
            infer_schema=False,
            null_values=MISSING_MARKERS,
            encoding="utf8",
        )
    except pl.exceptions.NoDataError:
        raise DataError(f"{display}: the file has no header line and no data") from None
    except (pl.exceptions.ComputeError, pl.exceptions.PolarsError, OSError) as error:
        raise DataError(_csv_failure(raw, separator, display, error)) from None
    _check_header(raw, separator, display)
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
    records = csv_records(raw, separator, count_fields=False)
    if records.lines.size - 1 == frame.height:
        lines = pl.Series(ROW_COLUMN, records.lines[1:], dtype=pl.Int64)
        blank = pl.Series("__blank__", records.blank[1:])
    else:  # the parser split records otherwise (stray quotes): count rows instead
        lines = pl.int_range(2, frame.height + 2, dtype=pl.Int64, eager=True).alias(ROW_COLUMN)
        blank = frame.select(
            pl.all_horizontal(
                pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")
                for column in frame.columns
            ).alias("__blank__")
        ).to_series()
    frame = frame.with_columns(lines, blank)
    blank_lines = int(blank.sum())
    frame = frame.filter(~pl.col("__blank__")).drop("__blank__")
    return frame.select(ROW_COLUMN, pl.exclude(ROW_COLUMN)), blank_lines


def _csv_failure(raw: bytes, separator: str, display: str, error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "utf-8" in text.lower() or "utf8" in text.lower():
        return _utf8_failure(raw, display)
    try:
        records = csv_records(raw, separator)
    except (ValueError, MemoryError):
        return f"{display}: cannot be read as CSV: {text}"
    expected = int(records.fields[0]) if records.fields.size else 0
    wrong = np.flatnonzero((records.fields != expected) & ~records.blank)
    if wrong.size:
        index = int(wrong[0])
        line, found = int(records.lines[index]), int(records.fields[index])
        shown = "\\t" if separator == "\t" else separator
        hint = f'; check the separator (csv_separator = "{shown}") and the quoting of values'
        if separator == "," and _DECIMAL_COMMA.search(_record_text(raw, records, index)):
            hint += (
                "; if a number on that line has a decimal comma (12,5), quote it or separate "
                'the columns with ";" (csv_separator = ";", decimal_comma = true)'
            )
        return (
            f"{display}: cannot be read as CSV: line {line} has {found} fields but the header "
            f"has {expected}{hint}"
        )
    return f"{display}: cannot be read as CSV: {text}"


def _record_text(raw: bytes, records: CsvRecords, index: int) -> str:
    """The text of record ``index`` (for a hint), at most a few thousand characters."""
    lines = raw.split(b"\n")
    first = int(records.lines[index]) - 1
    last = int(records.lines[index + 1]) - 1 if index + 1 < records.lines.size else len(lines)
    return b"\n".join(lines[first : max(last, first + 1)])[:4096].decode("utf-8", "replace")


def _utf8_failure(raw: bytes, display: str) -> str:
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


_NESTED = (pl.List, pl.Array, pl.Struct, pl.Object)


def _read_parquet(raw: bytes, display: str) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(io.BytesIO(raw))
    except (pl.exceptions.PolarsError, OSError) as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{display}: cannot be read as Parquet: {text}") from None
    except BaseException as error:  # pyo3 panics derive from BaseException
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        raise DataError(f"{display}: cannot be read as Parquet: {type(error).__name__}") from None
    for name, dtype in frame.schema.items():
        if isinstance(dtype, _NESTED) or dtype in _NESTED:
            raise DataError(
                f"{display}: column '{show_name(name)}' has a nested Parquet type ({dtype}); "
                "the pipeline reads plain columns only (numbers, text, dates, true/false): "
                "flatten it into plain columns or leave it out of the file"
            )
    if ROW_COLUMN in frame.columns:
        raise DataError(
            f"{display}: has a column named '{ROW_COLUMN}', a name the pipeline reserves for "
            "line numbers; rename that column"
        )
    return frame


def _key_source(cfg: StudyConfig, key: str, column: str) -> str:
    """Where a column name came from: the config file, or a run parameter that replaced it.

    A run's ``--outcome`` (or the deployment parameter ``outcome``) replaces
    ``[data] outcome`` after the file is read; the file's own text tells which.
    """
    file = one_line(cfg.source_path.name)
    if key == "[data] outcome" and cfg.source_text:
        try:
            section = tomllib.loads(cfg.source_text).get("data", {})
        except tomllib.TOMLDecodeError:
            section = {"outcome": column}
        written = section.get("outcome")
        if written is None and column in (section.get("outcomes") or []):
            return f"[data] outcomes in {file}"
        if written != column:
            return f"the run parameter outcome (--outcome), replacing [data] outcome of {file}"
    return f"{key} in {file}"


def _check_columns(
    cfg: StudyConfig, columns: list[str], display: str, required: dict[str, str]
) -> None:
    columns = [column for column in columns if column != ROW_COLUMN]
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
        f"{display}: column '{show_name(column)}' ({_key_source(cfg, required[column], column)}) "
        f"not found{hint}{listed}{more}"
    )
