"""The report's tables and charts as files, for people who paste them into papers.

``tables/<name>.parquet`` for every table of the context, and
``tables/<name>.csv`` for those up to :data:`pipeline.outputs.CSV_MAX_ROWS` rows; the publication table also as ``tables/model_table.tex`` (booktabs)
and ``tables/model_table.md``; ``charts/<key>.svg`` (vl-convert) for every
chart that is available, and ``charts/<key>.png`` beside it when the context
asks for PNG copies (``[report] png = true``; they take about 0.3 s per chart).
File names are fixed by the table names and figure keys, so the same inputs
always give the same files.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import vl_convert

from pipeline.outputs import write_table

from .charts import chart_spec
from .context import ANALYSIS_TABLES, ReportContext
from .figures import Figure, build_figures
from .formatting import is_available
from .html import vegalite_version
from .publication import build_model_table, model_table_latex, model_table_markdown

MODEL_TABLE = "model_table"
MODEL_TABLE_CAPTION = "Multilevel growth models"
CHART_THREADS = 2

PNG_SCALE = 2.0
_NAME = re.compile(r"^[a-z0-9_]+$")


def report_tables(ctx: ReportContext) -> dict[str, pl.DataFrame]:
    """Every non-empty table of the context by its file name (without extension).

    The analysis tables keep their names from docs/CONTRACTS.md; the data
    tables are ``validation_reasons``, ``descriptive_summary``,
    ``occasions_per_person``, ``attrition``, ``missingness_patterns``,
    ``warnings`` and ``failures``; the report's own are ``model_table`` (the
    publication table's numbers, :mod:`.publication`).
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
    candidates[MODEL_TABLE] = build_model_table(ctx.tables, labels=ctx.labels).numbers
    return {name: table for name, table in candidates.items() if is_available(table)}


def write_model_table(*, context: ReportContext, folder: Path) -> tuple[Path, ...]:
    """``folder/model_table.tex`` (booktabs) and ``folder/model_table.md`` (none without models)."""
    table = build_model_table(context.tables, labels=context.labels)
    if not table.available:
        return ()
    folder.mkdir(parents=True, exist_ok=True)
    tex, md = folder / f"{MODEL_TABLE}.tex", folder / f"{MODEL_TABLE}.md"
    tex.write_text(model_table_latex(table, caption=MODEL_TABLE_CAPTION), encoding="utf-8")
    md.write_text(model_table_markdown(table, caption=MODEL_TABLE_CAPTION), encoding="utf-8")
    return (tex, md)


def write_tables(*, tables: dict[str, pl.DataFrame], folder: Path) -> tuple[Path, ...]:
    """Write each table as ``folder/<name>.parquet`` and, up to
    :data:`pipeline.outputs.CSV_MAX_ROWS` rows, ``folder/<name>.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, table in tables.items():
        if not _NAME.match(name):
            raise ValueError(f"table name {name!r} is not a safe file name ([a-z0-9_]+)")
        written += write_table(folder, name, table)
    return tuple(written)


def _svg(spec: dict, version: str) -> str:
    return vl_convert.vegalite_to_svg(spec, vl_version=version)


def write_charts(
    *, figures: tuple[Figure, ...], folder: Path, png: bool = False
) -> tuple[Path, ...]:
    """Write each available figure as ``folder/<key>.svg`` (and ``folder/<key>.png``).

    The conversions run on :data:`CHART_THREADS` threads (vl-convert releases
    the GIL); the files are written in figure order, so the result is the same.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    version = vegalite_version()
    shown = [f for f in figures if f.chart is not None]
    specs = [dict(f.spec) if f.spec is not None else chart_spec(f.chart) for f in shown]
    with ThreadPoolExecutor(max_workers=CHART_THREADS, thread_name_prefix="svg") as pool:
        svgs = list(pool.map(_svg, specs, [version] * len(specs)))
    for figure, spec, svg in zip(shown, specs, svgs, strict=True):
        svg_path = folder / f"{figure.key}.svg"
        svg_path.write_text(svg, encoding="utf-8")
        written.append(svg_path)
        if png:
            png_path = folder / f"{figure.key}.png"
            png_path.write_bytes(
                vl_convert.vegalite_to_png(spec, vl_version=version, scale=PNG_SCALE)
            )
            written.append(png_path)
    return tuple(written)


def write_report_files(
    *,
    context: ReportContext,
    folder: Path,
    figures: tuple[Figure, ...] | None = None,
    png: bool | None = None,
) -> tuple[Path, ...]:
    """Write ``folder/tables/*`` and ``folder/charts/*.svg`` (and ``*.png`` when asked).

    ``figures`` may be passed when already built for :func:`render_report`;
    ``png`` defaults to ``context.chart_png`` (``[report] png``).
    Returns the paths written, tables first, in a fixed order.
    """
    folder = Path(folder)
    figures = build_figures(context) if figures is None else figures
    png = context.chart_png if png is None else png
    tables = write_tables(tables=report_tables(context), folder=folder / "tables")
    tables += write_model_table(context=context, folder=folder / "tables")
    return tables + write_charts(figures=figures, folder=folder / "charts", png=png)
