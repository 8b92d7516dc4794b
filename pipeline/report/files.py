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
from .outcomes import stack_tables, with_outcome
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

    Every table has the outcome column ``outcome`` first (when the context names
    its outcome). A run of several outcomes stacks each outcome's tables (the
    outcomes in config order); ``validation_reasons`` is the run's (``outcome``
    empty: a row is quarantined for every outcome), and ``outcome_comparison``
    holds the same predictors' fixed effects on each outcome.
    """
    if ctx.several_outcomes:
        return _outcome_tables(ctx)
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
    return {
        name: table if ctx.outcome_name is None else with_outcome(table, ctx.outcome_name)
        for name, table in candidates.items()
        if is_available(table)
    }


def _outcome_tables(ctx: ReportContext) -> dict[str, pl.DataFrame]:
    per_outcome = [report_tables(own) for own in ctx.outcomes]
    names: list[str] = []
    for tables in per_outcome:
        names += [name for name in tables if name not in names]
    stacked: dict[str, pl.DataFrame] = {}
    for name in names:
        if name == "validation_reasons":
            if is_available(ctx.reasons):
                stacked[name] = with_outcome(ctx.reasons, None)
            continue
        table = stack_tables(
            {
                str(own.outcome_name): tables.get(name)
                for own, tables in zip(ctx.outcomes, per_outcome, strict=True)
            }
        )
        if table is not None:
            stacked[name] = table
    from .outcomes import comparison_table

    comparison = comparison_table(ctx)
    if comparison is not None:
        stacked["outcome_comparison"] = comparison
    return stacked


def write_model_table(*, context: ReportContext, folder: Path) -> tuple[Path, ...]:
    """``folder/model_table.tex`` (booktabs) and ``folder/model_table.md`` (none without models).

    With several outcomes, one table per outcome in each file, one after the other,
    each captioned with its outcome.
    """
    contexts = context.outcomes if context.several_outcomes else (context,)
    tex_parts, md_parts = [], []
    for own in contexts:
        table = build_model_table(own.tables, labels=own.labels)
        if not table.available:
            continue
        caption = MODEL_TABLE_CAPTION
        if context.several_outcomes:
            from .outcomes import outcome_title

            caption = f"{MODEL_TABLE_CAPTION}: {outcome_title(own)}"
        tex_parts.append(model_table_latex(table, caption=caption))
        md_parts.append(model_table_markdown(table, caption=caption))
    if not tex_parts:
        return ()
    folder.mkdir(parents=True, exist_ok=True)
    tex, md = folder / f"{MODEL_TABLE}.tex", folder / f"{MODEL_TABLE}.md"
    tex.write_text("\n".join(tex_parts), encoding="utf-8")
    md.write_text("\n".join(md_parts), encoding="utf-8")
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
