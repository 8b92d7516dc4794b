"""Cells made safe for a spreadsheet before a table is written as CSV.

A CSV file is often opened in a spreadsheet, which treats a cell that starts with
``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return followed by one) as a
formula: an id such as ``=HYPERLINK("http://...")`` in ``quarantine.csv`` would
run as one ("CSV injection"). :func:`csv_safe` applies the OWASP rule to every text
column: such a cell gets a leading single quote (``'=HYPERLINK(...)``), which a
spreadsheet shows as text. A cell that is a plain number (``-1.5``, ``+2``,
``-3e-05``) is left alone, so numbers stay numbers, and numeric columns are never
touched. Control characters (C0 other than tab, line feed and carriage return,
and DEL) are written as ``\\xNN`` text. The Parquet copies of the tables keep the
raw values; only the CSV files are changed.
"""

from __future__ import annotations

import polars as pl

__all__ = ["FORMULA_PREFIXES", "csv_safe", "csv_safe_text"]

# a cell starting with one of these is read as a formula by spreadsheets
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_FORMULA_START = r"^[=+\-@\t\r]"
_CONTROLS = [chr(code) for code in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)]
_ESCAPES = [f"\\x{ord(character):02x}" for character in _CONTROLS]


def _safe(expression: pl.Expr) -> pl.Expr:
    text = expression.str.replace_many(_CONTROLS, _ESCAPES)
    risky = text.str.contains(_FORMULA_START) & ~text.str.contains(_NUMBER)
    return pl.when(risky).then(pl.lit("'") + text).otherwise(text)


def csv_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every text column (String, Categorical, Enum) neutralised for CSV.

    Numeric, boolean and temporal columns come back unchanged. The header is a row
    of cells too: a column name that starts like a formula is neutralised the same
    way (unless that would make two names equal).
    """
    text_columns = [
        name
        for name, dtype in frame.schema.items()
        if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)
    ]
    safe = frame
    if text_columns:
        safe = frame.with_columns(
            _safe(pl.col(name).cast(pl.String)).alias(name) for name in text_columns
        )
    header = {name: csv_safe_text(name) for name in safe.columns}
    renamed = {old: new for old, new in header.items() if old != new}
    if renamed and len(set(header.values())) == len(header):
        safe = safe.rename(renamed)
    return safe


def csv_safe_text(value: str) -> str:
    """:func:`csv_safe` for one Python string (a header name, a single cell)."""
    return pl.select(_safe(pl.lit(value, dtype=pl.String))).item()
