"""Assemble the self-contained HTML report.

:func:`render_report` is a pure function of its :class:`ReportContext`: the
same context gives the same bytes. The Vega, Vega-Lite and vega-embed
JavaScript comes inlined from vl-convert, so the file opens offline.

Safety: the template is rendered with jinja2 autoescape, so every string from
the data or the config is HTML-escaped. Chart specs go into
``<script type="application/json">`` blocks through :func:`script_json`, which
writes ``<``, ``>`` and ``&`` as ``\\u003c``, ``\\u003e`` and ``\\u0026``: no
label can close the script element or open a comment inside it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import altair as alt
import jinja2
import polars as pl
import vl_convert
from markupsafe import Markup

from .charts import chart_strings
from .context import CHANGES_COLUMNS, ReportContext
from .figures import Figure, build_figures
from .formatting import TableView, column_label, format_number, is_available, table_view

_SCRIPT_UNSAFE = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_SCRIPT_UNSAFE_RE = re.compile("[<>&\u2028\u2029]")


def script_json(value: Any) -> str:
    """JSON that is safe inside an HTML ``<script>`` element, with sorted keys.

    ``<``, ``>``, ``&`` and the JavaScript line separators are written as
    ``\\uXXXX`` escapes, which JSON and JavaScript read back as the same
    characters, so ``</script>`` or ``<!--`` cannot appear in the output.
    """
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return _SCRIPT_UNSAFE_RE.sub(lambda m: _SCRIPT_UNSAFE[m.group(0)], text)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None`` (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def chart_spec(chart: alt.TopLevelMixin) -> dict[str, Any]:
    """The Vega-Lite spec of a chart as a plain dict (datasets named by content hash).

    NaN and infinite values become null, which Vega treats as missing; JSON has
    no NaN. Every string (titles, descriptions, data values such as group
    labels) goes through :func:`.charts.chart_text`, so no control character
    reaches Vega or vl-convert (which aborts the process on one).
    """
    return chart_strings(_finite(chart.to_dict()))


def vegalite_version() -> str:
    """The Vega-Lite ``major.minor`` Altair writes, as vl-convert names its bundles."""
    wanted = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    available = vl_convert.get_vegalite_versions()
    return wanted if wanted in available else available[-1]


@functools.cache
def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script (globals ``vega``, ``vegaLite``, ``vegaEmbed``).

    Made safe to inline: a ``</script`` or ``<!--`` inside the code (there is
    none in the bundles checked) would be written with an escaped character
    that JavaScript reads the same way in strings and regular expressions.
    """
    code = vl_convert.javascript_bundle(vl_version=vegalite_version())
    code = re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE)
    return code.replace("<!--", "<\\!--")


@dataclass(frozen=True, slots=True)
class FigureView:
    key: str
    title: str
    description: str
    note: str
    spec: Markup | None
    summary: TableView


@dataclass(frozen=True, slots=True)
class ModelView:
    name: str
    formula: str
    equations: tuple[tuple[str, str], ...]
    fixed_effects: TableView
    variance_components: TableView


@dataclass(frozen=True, slots=True)
class Alert:
    severity: str
    topic: str
    message: str


def _has_topic(warnings: pl.DataFrame | None, *words: str) -> bool:
    if not is_available(warnings) or "topic" not in warnings.columns:
        return False
    topics = [str(t).lower() for t in warnings["topic"].to_list()]
    return any(word in topic for topic in topics for word in words)


def collect_alerts(ctx: ReportContext) -> tuple[Alert, ...]:
    """The warnings shown at the top of the report.

    The analysis's own warnings come first, as given. Added to them: failed
    models (always), quarantined rows (always), and, only when the analysis
    did not already warn on the topic, non-converged or singular fits from
    ``model_fit`` and sample-size checks whose status is not ``ok``.
    """
    alerts: list[Alert] = []
    warnings = ctx.warnings
    if is_available(warnings):
        for row in warnings.iter_rows(named=True):
            alerts.append(
                Alert(
                    severity=str(row.get("severity") or "warning"),
                    topic=str(row.get("topic") or ""),
                    message=str(row.get("message") or ""),
                )
            )
    if is_available(ctx.failures):
        for row in ctx.failures.iter_rows(named=True):
            alerts.append(
                Alert(
                    severity="error",
                    topic="model failed",
                    message=f"Model {row.get('model')} ({row.get('formula')}) could not be fitted: {row.get('error')}",
                )
            )
    if ctx.rows_quarantined > 0:
        share = ctx.rows_quarantined / ctx.rows_in if ctx.rows_in else float("nan")
        where = f"; they are in {ctx.quarantine_file}" if ctx.quarantine_file else ""
        alerts.append(
            Alert(
                severity="warning",
                topic="quarantined data",
                message=(
                    f"{ctx.rows_quarantined:,} of {ctx.rows_in:,} rows ({100 * share:.1f}%) failed "
                    f"validation and were left out{where}."
                ),
            )
        )
    model_fit = ctx.table("model_fit")
    if is_available(model_fit):
        if "converged" in model_fit.columns and not _has_topic(warnings, "converg"):
            for name in model_fit.filter(pl.col("converged").not_())["model"].to_list():
                alerts.append(
                    Alert(
                        severity="warning",
                        topic="convergence",
                        message=f"Model {name} did not converge; see its optimizer record.",
                    )
                )
        if "singular" in model_fit.columns and not _has_topic(warnings, "singular", "boundary"):
            for name in model_fit.filter(pl.col("singular"))["model"].to_list():
                alerts.append(
                    Alert(
                        severity="warning",
                        topic="boundary fit",
                        message=f"Model {name} is a singular (boundary) fit: a variance is "
                        "estimated as zero or a correlation as ±1.",
                    )
                )
    sample_size = ctx.table("sample_size")
    if (
        is_available(sample_size)
        and "status" in sample_size.columns
        and not _has_topic(warnings, "sample")
    ):
        for row in sample_size.iter_rows(named=True):
            if str(row.get("status", "")).lower() not in {"ok", "pass", "adequate"}:
                alerts.append(
                    Alert(
                        severity="warning",
                        topic="sample size",
                        message=str(row.get("message") or row.get("check")),
                    )
                )
    return tuple(alerts)


def _figure_view(figure: Figure) -> FigureView:
    spec = None if figure.chart is None else Markup(script_json(chart_spec(figure.chart)))
    return FigureView(
        key=figure.key,
        title=figure.title,
        description=figure.description,
        note=figure.note,
        spec=spec,
        summary=table_view(figure.summary, key=f"{figure.key}_summary"),
    )


def _models(ctx: ReportContext) -> tuple[ModelView, ...]:
    fit = ctx.table("model_fit")
    fixed = ctx.table("fixed_effects")
    variance = ctx.table("variance_components")
    equations = ctx.table("level_equations")
    names: list[str] = []
    for table in (fit, fixed, variance):
        if is_available(table) and "model" in table.columns:
            names.extend(n for n in table["model"].to_list() if n not in names)
    views = []
    for name in names:
        formula = ""
        if is_available(fit) and "formula" in fit.columns:
            match = fit.filter(pl.col("model") == name)["formula"]
            formula = str(match[0]) if match.len() else ""
        eqs: tuple[tuple[str, str], ...] = ()
        if is_available(equations) and {"model", "level", "equation"} <= set(equations.columns):
            rows = equations.filter(pl.col("model") == name)
            eqs = tuple((str(r["level"]), str(r["equation"])) for r in rows.iter_rows(named=True))
        fe = fixed.filter(pl.col("model") == name) if is_available(fixed) else None
        if fe is not None and {"conf_low", "conf_high"} <= set(fe.columns):
            fe = fe.with_columns(
                pl.struct("conf_low", "conf_high")
                .map_elements(
                    lambda s: (
                        f"[{format_number(s['conf_low'])}, {format_number(s['conf_high'])}]"
                        if s["conf_low"] is not None and s["conf_high"] is not None
                        else "–"
                    ),
                    return_dtype=pl.String,
                )
                .alias("ci")
            )
        vc = variance.filter(pl.col("model") == name) if is_available(variance) else None
        views.append(
            ModelView(
                name=str(name),
                formula=formula,
                equations=eqs,
                fixed_effects=table_view(
                    fe,
                    key=f"fixed_effects_{name}",
                    columns=["term", "estimate", "std_error", "df", "statistic", "p_value", "ci"],
                ),
                variance_components=table_view(
                    vc,
                    key=f"variance_components_{name}",
                    columns=["group", "term1", "term2", "variance", "sd_cor"],
                ),
            )
        )
    return tuple(views)


def _validation_table(ctx: ReportContext) -> TableView:
    share = (lambda n: n / ctx.rows_in) if ctx.rows_in else (lambda n: float("nan"))
    table = pl.DataFrame(
        {
            "rows": ["read", "used", "quarantined"],
            "count": [ctx.rows_in, ctx.rows_used, ctx.rows_quarantined],
            "share": [share(ctx.rows_in), share(ctx.rows_used), share(ctx.rows_quarantined)],
        }
    )
    return table_view(table, key="validation")


def _versions_table(versions: Mapping[str, str]) -> TableView:
    items = sorted(versions.items())
    table = pl.DataFrame(
        {"package": [k for k, _ in items], "version": [str(v) for _, v in items]},
        schema={"package": pl.String, "version": pl.String},
    )
    return table_view(table, key="versions")


def _changes_table(ctx: ReportContext) -> TableView:
    """What changed since the previous run; the values are right-aligned like numbers."""
    view = table_view(ctx.changes, key="changes", columns=list(CHANGES_COLUMNS))
    numeric = tuple(header != column_label("quantity") for header in view.headers)
    return dataclasses.replace(view, numeric=numeric)


def _tables(ctx: ReportContext) -> dict[str, TableView]:
    t = ctx.table
    return {
        "changes": _changes_table(ctx),
        "summary": table_view(ctx.summary, key="summary"),
        "reasons": table_view(ctx.reasons, key="reasons", columns=["reason", "rows"]),
        "occasions_per_person": table_view(ctx.occasions_per_person, key="occasions_per_person"),
        "attrition": table_view(ctx.attrition, key="attrition"),
        "patterns": table_view(ctx.patterns, key="patterns", max_rows=25),
        "model_fit": table_view(
            t("model_fit"),
            key="model_fit",
            columns=["model", "nobs", "ngroups", "npar", "loglik", "aic", "bic", "reml"],
        ),
        "optimizer": table_view(
            t("model_fit"),
            key="optimizer",
            columns=[
                "model",
                "optimizer",
                "evaluations",
                "max_abs_gradient",
                "converged",
                "singular",
            ],
        ),
        "model_comparison": table_view(t("model_comparison"), key="model_comparison"),
        "likelihood_ratio_tests": table_view(
            t("likelihood_ratio_tests"), key="likelihood_ratio_tests"
        ),
        "icc": table_view(t("icc"), key="icc"),
        "icc_by_time": table_view(t("icc_by_time"), key="icc_by_time"),
        "variance_explained": table_view(t("variance_explained"), key="variance_explained"),
        "r2": table_view(t("r2"), key="r2"),
        "group_differences": table_view(t("group_differences"), key="group_differences"),
        "ols_vs_mlm": table_view(t("ols_vs_mlm"), key="ols_vs_mlm"),
        "assumptions": table_view(t("assumptions"), key="assumptions"),
        "reliability": table_view(t("reliability"), key="reliability"),
        "sample_size": table_view(t("sample_size"), key="sample_size"),
        "failures": table_view(ctx.failures, key="failures"),
    }


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def stylesheet() -> str:
    """The report's CSS (package data ``templates/report.css``)."""
    loader = _environment().loader
    assert loader is not None
    source, _, _ = loader.get_source(_environment(), "report.css")
    return source


def render_report(ctx: ReportContext, *, figures: tuple[Figure, ...] | None = None) -> str:
    """The report as one self-contained HTML document (a pure function of ``ctx``).

    ``figures`` may be passed when they were already built (e.g. to also write
    them as PNG/SVG); by default they are built from ``ctx``.
    """
    figures = build_figures(ctx) if figures is None else figures
    views = {f.key: _figure_view(f) for f in figures}
    template = _environment().get_template("report.html.j2")
    html = template.render(
        ctx=ctx,
        persons=ctx.persons,
        alerts=collect_alerts(ctx),
        validation=_validation_table(ctx),
        versions=_versions_table(ctx.versions),
        tables=_tables(ctx),
        models=_models(ctx),
        figures=views,
        css=Markup(stylesheet()),
        javascript=Markup(javascript_bundle()),
    )
    return html.lstrip()
