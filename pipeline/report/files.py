"""The report's tables and charts as files, for people who paste them into papers.

``tables/<name>.csv`` and ``tables/<name>.parquet`` for every table of the
context; ``charts/<key>.svg`` and ``charts/<key>.png`` (vl-convert) for every
chart that is available. File names are fixed by the table names and figure
keys, so the same inputs always give the same files.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import vl_convert

from .context import ANALYSIS_TABLES, ReportContext
from .figures import Figure, build_figures
from .formatting import is_available
from .html import chart_spec, vegalite_version

PNG_SCALE = 2.0
_NAME = re.compile(r"^[a-z0-9_]+$")


def report_tables(ctx: ReportContext) -> dict[str, pl.DataFrame]:
    """Every non-empty table of the context by its file name (without extension).

    The analysis tables keep their names from docs/CONTRACTS.md; the data
    tables are ``validation_reasons``, ``descriptive_summary``,
    ``occasions_per_person``, ``attrition``, ``missingness_patterns``,
    ``warnings`` and ``failures``.
    """
    candidates: dict[str, pl.DataFrame | None] = {
        "validation_reasons": ctx.reasons,
        "descriptive_summary": ctx.summary,
        "occasions_per_person": ctx.occasions_per_person,
        "attrition": ctx.attrition,
        "missingness_patterns": ctx.patterns,
        "warnings": ctx.warnings,
        "failures": ctx.failures,
    }
    names = [n for n in ANALYSIS_TABLES if n in ctx.tables]
    names += sorted(n for n in ctx.tables if n not in ANALYSIS_TABLES)
    for name in names:
        candidates[name] = ctx.tables[name]
    return {name: table for name, table in candidates.items() if is_available(table)}


def write_tables(*, tables: dict[str, pl.DataFrame], folder: Path) -> tuple[Path, ...]:
    """Write each table as ``folder/<name>.csv`` and ``folder/<name>.parquet``."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, table in tables.items():
        if not _NAME.match(name):
            raise ValueError(f"table name {name!r} is not a safe file name ([a-z0-9_]+)")
        csv_path, parquet_path = folder / f"{name}.csv", folder / f"{name}.parquet"
        from pipeline.csvsafe import csv_safe

        csv_safe(table).write_csv(csv_path)
        table.write_parquet(parquet_path, statistics=True)
        written += [csv_path, parquet_path]
    return tuple(written)


def write_charts(*, figures: tuple[Figure, ...], folder: Path) -> tuple[Path, ...]:
    """Write each available figure as ``folder/<key>.svg`` and ``folder/<key>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    version = vegalite_version()
    for figure in figures:
        if figure.chart is None:
            continue
        spec = chart_spec(figure.chart)
        svg_path, png_path = folder / f"{figure.key}.svg", folder / f"{figure.key}.png"
        svg_path.write_text(vl_convert.vegalite_to_svg(spec, vl_version=version), encoding="utf-8")
        png_path.write_bytes(vl_convert.vegalite_to_png(spec, vl_version=version, scale=PNG_SCALE))
        written += [svg_path, png_path]
    return tuple(written)


def write_report_files(
    *, context: ReportContext, folder: Path, figures: tuple[Figure, ...] | None = None
) -> tuple[Path, ...]:
    """Write ``folder/tables/*.csv|parquet`` and ``folder/charts/*.svg|png``.

    ``figures`` may be passed when already built for :func:`render_report`.
    Returns the paths written, tables first, in a fixed order.
    """
    folder = Path(folder)
    figures = build_figures(context) if figures is None else figures
    return write_tables(tables=report_tables(context), folder=folder / "tables") + write_charts(
        figures=figures, folder=folder / "charts"
    )
