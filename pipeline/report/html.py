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
import os
import re
import stat
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import jinja2
import polars as pl
import vl_convert
from markupsafe import Markup

from .charts import chart_spec
from .context import CHANGES_COLUMNS, ReportContext
from .figures import Figure, build_figures, outcome_stem, study_design
from .findings import build_findings, changes_finding
from .formatting import (
    TableView,
    column_label,
    format_number,
    format_p_value,
    format_share,
    is_available,
    table_view,
)
from .outcomes import comparison_table, outcome_title
from .predictions import pieces_sentences, prediction_views
from .publication import ModelTable, build_model_table, relabel_term
from .uncertainty import (
    effect_size_note,
    effect_size_rows,
    uncertainty_texts,
    uncertainty_views,
)

__all__ = [
    "chart_spec",
    "collect_alerts",
    "javascript_bundle",
    "prefetch_javascript",
    "render_report",
    "script_json",
    "stylesheet",
    "vegalite_version",
]

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


def vegalite_version() -> str:
    """The Vega-Lite ``major.minor`` Altair writes, as vl-convert names its bundles."""
    wanted = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    available = vl_convert.get_vegalite_versions()
    return wanted if wanted in available else available[-1]


BUNDLE_CACHE = "report-assets"
"""Folder under the user's private cache (``$GROWTH_CACHE_DIR``, else
``$XDG_CACHE_HOME/growthcurves``, else ``~/.cache/growthcurves``) that keeps the
JavaScript bundle between runs."""


def bundle_cache_dir() -> Path | None:
    """The private folder that keeps the bundle, created (mode 0700); ``None`` when unusable.

    Used only when it (and the cache root) is a folder owned by this user that
    the group and others cannot write, since the bundle's code runs in every
    report; otherwise the bundle is made afresh each time, silently.
    """
    override = os.environ.get("GROWTH_CACHE_DIR", "").strip()
    if override:
        root = Path(override).expanduser().absolute()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
        root = base / "growthcurves"
    folder = root / BUNDLE_CACHE
    geteuid = getattr(os, "geteuid", None)
    for path in (root, folder):
        try:
            path.mkdir(mode=0o700, parents=path is root, exist_ok=True)
            info = path.stat()
        except OSError:
            return None
        if not stat.S_ISDIR(info.st_mode):
            return None
        if geteuid is not None and (
            info.st_uid != geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            return None
    return folder


def _bundle_file() -> Path | None:
    folder = bundle_cache_dir()
    if folder is None:
        return None
    version = getattr(vl_convert, "__version__", "unknown")
    name = re.sub(r"[^A-Za-z0-9.]+", "_", f"vega-bundle-{version}-{vegalite_version()}")
    return folder / f"{name}.js"


def _make_bundle() -> str:
    """The bundle, read from the private cache when it was made before by this vl-convert."""
    cached = _bundle_file()
    if cached is not None:
        try:
            code = cached.read_text(encoding="utf-8")
        except (OSError, UnicodeError):
            code = ""
        if code.endswith(_BUNDLE_END):
            return code.removesuffix(_BUNDLE_END)
    code = vl_convert.javascript_bundle(vl_version=vegalite_version())
    code = re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE)
    code = code.replace("<!--", "<\\!--")
    if cached is not None:  # written whole or not at all: a crash leaves no half file
        try:
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", dir=cached.parent, delete=False, suffix=".partial"
            ) as handle:
                handle.write(code + _BUNDLE_END)
            os.replace(handle.name, cached)
        except OSError:
            pass
    return code


_BUNDLE_END = "\n// end of the growthcurves bundle cache file\n"
_WARM_UP_SPEC: dict[str, Any] = {
    "data": {"values": [{"x": 0}]},
    "mark": "point",
    "encoding": {"x": {"field": "x", "type": "quantitative"}},
}
_bundle_lock = threading.Lock()
_bundle: Future[str] | None = None


def prefetch_javascript() -> None:
    """Start making :func:`javascript_bundle` in a background thread (once per process).

    Bundling takes 1-2 s; vl-convert releases the GIL while it works, so a
    caller that knows a report will be rendered (:func:`build_context`) starts
    it early and the fits, figures and tables are made meanwhile.
    """
    global _bundle
    with _bundle_lock:
        if _bundle is not None:
            return
        future: Future[str] = Future()
        _bundle = future

    def work() -> None:
        try:
            future.set_result(_make_bundle())
        except BaseException as error:  # handed to the caller of javascript_bundle()
            future.set_exception(error)
            return
        try:  # start vl-convert's chart converter too: the first SVG then costs ~0.2 s less
            vl_convert.vegalite_to_svg(_WARM_UP_SPEC, vl_version=vegalite_version())
        except Exception:  # noqa: BLE001 - only a warm-up; write_charts reports real errors
            pass

    threading.Thread(target=work, name="vega-bundle", daemon=True).start()


def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script (globals ``vega``, ``vegaLite``, ``vegaEmbed``).

    Made safe to inline: a ``</script`` or ``<!--`` inside the code (there is
    none in the bundles checked) would be written with an escaped character
    that JavaScript reads the same way in strings and regular expressions.
    Made once per process (see :func:`prefetch_javascript`).
    """
    global _bundle
    prefetch_javascript()
    future = _bundle
    assert future is not None
    try:
        return future.result()
    except BaseException:
        with _bundle_lock:  # not cached: the next call tries again
            if _bundle is future:
                _bundle = None
        raise


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

    The analysis's own warnings come first, as given (a warning about a failed
    model is shown as an error). Added to them: failed models the warnings do
    not name, quarantined rows (always), and, only when the analysis
    did not already warn on the topic, non-converged or singular fits from
    ``model_fit`` and sample-size checks whose status is not ``ok``.
    """
    alerts: list[Alert] = []
    warnings = ctx.warnings
    failed = (
        [str(m) for m in ctx.failures["model"].to_list()]
        if is_available(ctx.failures) and "model" in ctx.failures.columns
        else []
    )
    announced: set[str] = set()
    if is_available(warnings):
        for row in warnings.iter_rows(named=True):
            topic = str(row.get("topic") or "")
            message = str(row.get("message") or "")
            severity = str(row.get("severity") or "warning")
            if "fail" in topic.lower():
                named = [m for m in failed if f"'{m}'" in message or f" {m} " in f" {message} "]
                if named:  # the analysis' own message about a failed model: one error box
                    announced.update(named)
                    severity = "error"
            alerts.append(Alert(severity=severity, topic=topic, message=message))
    if is_available(ctx.failures):
        for row in ctx.failures.iter_rows(named=True):
            if str(row.get("model")) in announced:
                continue
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
                    f"{ctx.rows_quarantined:,} of {ctx.rows_in:,} rows ({format_share(share)}) failed "
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
    if figure.chart is None:
        spec = None
    else:
        data = figure.spec if figure.spec is not None else chart_spec(figure.chart)
        spec = Markup(script_json(data))
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


_AUXILIARY_MODELS = {
    "growth_random_intercept": (
        "the unconditional growth model with a random intercept and no random slope, "
        "so that the variance of the rate of change is tested on its own"
    ),
}
_CONTRAST = re.compile(r"^(?P<group>.+): (?P<a>.+) - (?P<b>.+)$")


def comparison_note(ctx: ReportContext) -> str:
    """Names the models of the comparison that the Models section does not show."""
    comparison, fit = ctx.table("model_comparison"), ctx.table("model_fit")
    if not is_available(comparison) or "model" not in comparison.columns:
        return ""
    shown = set(fit["model"].to_list()) if is_available(fit) and "model" in fit.columns else set()
    extra = [str(m) for m in comparison["model"].to_list() if m not in shown]
    parts = []
    for name in extra:
        what = _AUXILIARY_MODELS.get(name)
        parts.append(f"{name} ({what})" if what else name)
    if not parts:
        return ""
    one = len(parts) == 1
    return (
        f"{'; '.join(parts)} {'was' if one else 'were'} fitted by maximum likelihood for this "
        f"comparison only, so the Models section does not show {'it' if one else 'them'}."
    )


def _relabel_contrasts(ctx: ReportContext, table: pl.DataFrame | None) -> pl.DataFrame | None:
    """``trt: Y - N`` -> ``trt: programme - control`` with ``[data.labels]``."""
    if not is_available(table) or "contrast" not in table.columns or not ctx.labels:
        return table

    def relabel(text: str) -> str:
        match = _CONTRAST.match(text)
        if not match or match["group"] not in ctx.labels:
            return text
        levels = ctx.labels[match["group"]]
        a, b = levels.get(match["a"], match["a"]), levels.get(match["b"], match["b"])
        return f"{match['group']}: {a} - {b}"

    mapping = {text: relabel(text) for text in table["contrast"].unique().to_list() if text}
    return table.with_columns(pl.col("contrast").replace(mapping))


def design_text(ctx: ReportContext) -> str:
    """When persons enter and leave: attrition only where every person entered at the start."""
    design = study_design(ctx)
    if design is None or design.persons == 0:
        return ""
    if design.balanced:
        return "Every person is observed at every time: no person left the study."
    if not design.same_entry:
        return (
            "Persons enter at different times (as in a cohort-sequential or staggered design), "
            "so these are counts of observations by time, not attrition."
        )
    if design.left == 0:
        return (
            "Every person entered at the first time and was observed at the last; some missed "
            "occasions in between (see the missingness patterns)."
        )
    return (
        f"Every person entered at the first time; {design.left:,} of {design.persons:,} persons "
        f"({format_share(design.left / design.persons)}) have no observation at the last time "
        "(attrition)."
    )


def _tables(ctx: ReportContext) -> dict[str, TableView]:
    t = ctx.table
    return {
        "changes": _changes_table(ctx),
        "summary": table_view(ctx.summary, key="summary"),
        "reasons": table_view(ctx.reasons, key="reasons", columns=["reason", "rows"]),
        "occasions_per_person": table_view(ctx.occasions_per_person, key="occasions_per_person"),
        "attrition": table_view(ctx.attrition, key="attrition", note=design_text(ctx)),
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
        "model_comparison": table_view(
            t("model_comparison"), key="model_comparison", note=comparison_note(ctx)
        ),
        "likelihood_ratio_tests": table_view(
            t("likelihood_ratio_tests"), key="likelihood_ratio_tests"
        ),
        "icc": table_view(t("icc"), key="icc", prose=["interpretation"]),
        "icc_by_time": table_view(t("icc_by_time"), key="icc_by_time"),
        "variance_explained": table_view(t("variance_explained"), key="variance_explained"),
        "r2": table_view(t("r2"), key="r2"),
        "group_differences": table_view(
            _relabel_contrasts(ctx, t("group_differences")), key="group_differences"
        ),
        "effect_sizes": table_view(
            _relabel_contrasts(ctx, effect_size_rows(ctx)),
            key="effect_sizes",
            columns=[
                "contrast",
                "quantity",
                "time_from",
                "time_to",
                "difference",
                "sd",
                "effect_size",
                "es_conf_low",
                "es_conf_high",
            ],
            note=effect_size_note(ctx),
        ),
        **uncertainty_views(ctx),
        **prediction_views(ctx),
        "ols_vs_mlm": table_view(t("ols_vs_mlm"), key="ols_vs_mlm"),
        **{
            name: table_view(t(name), key=name)
            for name in (
                "cluster_variance_partition",
                "cluster_icc",
                "cluster_growth_variance",
                "cluster_variance_tests",
                "cluster_design_effect",
                "cluster_predictor_se",
                "cluster_sample_size",
                "cluster_reliability",
                "cluster_level_equations",
            )
        },
        "error_structures": table_view(t("error_structures"), key="error_structures"),
        "error_structure_tests": table_view(
            t("error_structure_tests"), key="error_structure_tests"
        ),
        "error_structure_fixed_effects": table_view(
            t("error_structure_fixed_effects"), key="error_structure_fixed_effects"
        ),
        "mmrm_visit_differences": table_view(
            t("mmrm_visit_differences"), key="mmrm_visit_differences"
        ),
        "assumptions": table_view(t("assumptions"), key="assumptions"),
        "reliability": table_view(t("reliability"), key="reliability"),
        "sample_size": table_view(t("sample_size"), key="sample_size"),
        "failures": table_view(ctx.failures, key="failures"),
    }


@dataclass(frozen=True, slots=True)
class ModelTableView:
    """The publication table for the template: header, rows (``kind`` section or row)."""

    models: tuple[str, ...]
    rows: tuple[tuple[str, tuple[str, ...]], ...]
    notes: tuple[str, ...]

    @property
    def available(self) -> bool:
        return bool(self.rows)


def model_table_view(table: ModelTable) -> ModelTableView:
    from .publication import SECTION_TITLES

    rows: list[tuple[str, tuple[str, ...]]] = []
    section = None
    for record in table.cells.iter_rows(named=True) if table.available else ():
        if record["section"] != section:
            section = record["section"]
            rows.append(("section", (SECTION_TITLES.get(section, section),)))
        kind = "row" if record["row"] else "interval"
        rows.append((kind, (record["row"], *(record[m] for m in table.models))))
    return ModelTableView(models=table.models, rows=tuple(rows), notes=table.notes)


@dataclass(frozen=True, slots=True)
class OutcomeView:
    """One outcome of a run of several outcomes: its views, ids prefixed with ``prefix``."""

    name: str
    title: str
    prefix: str
    ctx: ReportContext
    alerts: tuple[Alert, ...]
    findings: tuple[Any, ...]
    model_table: ModelTableView
    validation: TableView
    tables: dict[str, TableView]
    uncertainty: Any
    models: tuple[ModelView, ...]
    figures: dict[str, FigureView]
    time_pieces: tuple[str, ...] = ()


def _prefixed(view: TableView, prefix: str) -> TableView:
    return dataclasses.replace(view, key=prefix + view.key)


def _prefixed_finding(finding: Any, prefix: str) -> Any:
    source = finding.source
    if source.startswith(("table-", "figure-")):
        kind, _, rest = source.partition("-")
        source = f"{kind}-{prefix}{rest}"
    elif source != "changes":  # the run's comparison with the previous run is shared
        source = prefix + source
    return dataclasses.replace(finding, source=source)


def _outcome_view(ctx: ReportContext, index: int, figures: tuple[Figure, ...]) -> OutcomeView:
    prefix = f"o{index}-"
    views = {}
    for figure in figures:
        view = _figure_view(figure)
        views[figure.key] = dataclasses.replace(
            view, key=prefix + view.key, summary=_prefixed(view.summary, prefix)
        )
    alerts = tuple(a for a in collect_alerts(ctx) if a.topic != "quarantined data")
    models = tuple(
        dataclasses.replace(
            m,
            fixed_effects=_prefixed(m.fixed_effects, prefix),
            variance_components=_prefixed(m.variance_components, prefix),
        )
        for m in _models(ctx)
    )
    return OutcomeView(
        name=str(ctx.outcome_name),
        title=outcome_title(ctx),
        prefix=prefix,
        ctx=ctx,
        alerts=alerts,
        findings=tuple(
            _prefixed_finding(f, prefix)
            for f in build_findings(ctx, alerts)
            if f.source != "changes"  # once for the run, after every outcome's findings
        ),
        model_table=model_table_view(build_model_table(ctx.tables, labels=ctx.labels)),
        validation=_prefixed(_validation_table(ctx), prefix),
        tables={name: _prefixed(view, prefix) for name, view in _tables(ctx).items()},
        uncertainty=uncertainty_texts(ctx),
        models=models,
        figures=views,
        time_pieces=tuple(pieces_sentences(ctx)),
    )


def outcome_rows_table(ctx: ReportContext) -> pl.DataFrame:
    """Per outcome: persons, the valid rows with a value of it, and those without."""
    rows = []
    for own in ctx.outcomes:
        missing = own.missing_outcome or 0
        rows.append(
            {
                "outcome": outcome_title(own),
                "persons": own.persons,
                "rows_with_outcome": ctx.rows_used - missing,
                "rows_missing_outcome": missing,
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "outcome": pl.String,
            "persons": pl.Int64,
            "rows_with_outcome": pl.Int64,
            "rows_missing_outcome": pl.Int64,
        },
    )


def _comparison_view(ctx: ReportContext) -> tuple[TableView, str]:
    """The comparison across outcomes for the report: per term, one row per outcome with
    the estimate (SE), the 95% CI and p (the term named on its first row); and the
    sentence naming the model. Narrow whatever the number of outcomes."""
    table = comparison_table(ctx)
    if table is None:
        return table_view(None, key="outcome_comparison"), ""
    titles = {str(own.outcome_name): outcome_title(own) for own in ctx.outcomes}
    labels = ctx.outcomes[0].labels
    rows: list[tuple[str, ...]] = []
    previous = None
    for record in table.iter_rows(named=True):
        low, high, p_value = record["conf_low"], record["conf_high"], record["p_value"]
        interval = (
            f"[{format_number(low)}, {format_number(high)}]"
            if low is not None and high is not None
            else "–"
        )
        term = record["term"]
        rows.append(
            (
                relabel_term(term, labels) if term != previous else "",
                titles[record["outcome"]],
                f"{format_number(record['estimate'])} ({format_number(record['std_error'])})",
                interval,
                format_p_value(p_value) if p_value is not None else "–",
            )
        )
        previous = term
    view = TableView(
        key="outcome_comparison",
        headers=("term", "outcome", "estimate (SE)", "95% CI", "p"),
        numeric=(False, False, True, True, True),
        rows=tuple(rows),
    )
    model = str(table["model"][0])
    note = (
        f"Model {model}, fitted to each outcome with the same predictors (REML; t-tests with "
        "Satterthwaite df). Each estimate is in its outcome's own units, so compare signs, "
        "intervals and p-values, and sizes only where the units agree."
    )
    return view, note


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
    if ctx.several_outcomes:
        return _render_outcomes(ctx, figures)
    views = {f.key: _figure_view(f) for f in figures}
    template = _environment().get_template("report.html.j2")
    alerts = collect_alerts(ctx)
    html = template.render(
        ctx=ctx,
        persons=ctx.persons,
        alerts=alerts,
        findings=build_findings(ctx, alerts),
        model_table=model_table_view(build_model_table(ctx.tables, labels=ctx.labels)),
        validation=_validation_table(ctx),
        versions=_versions_table(ctx.versions),
        tables=_tables(ctx),
        uncertainty=uncertainty_texts(ctx),
        time_pieces=pieces_sentences(ctx),
        models=_models(ctx),
        figures=views,
        css=Markup(stylesheet()),
        javascript=Markup(javascript_bundle()),
    )
    return html.lstrip()


def _render_outcomes(ctx: ReportContext, figures: tuple[Figure, ...]) -> str:
    """The report of several outcomes: findings per outcome first, the comparison across
    outcomes, then one section per outcome (its models, data, charts and checks)."""
    outcomes = []
    for index, own in enumerate(ctx.outcomes, start=1):
        stem = f"{outcome_stem(str(own.outcome_name), index)}_"
        mine = tuple(
            dataclasses.replace(f, key=f.key.removeprefix(stem))
            for f in figures
            if f.outcome == own.outcome_name
        )
        outcomes.append(_outcome_view(own, index, mine))
    comparison, comparison_note_text = _comparison_view(ctx)
    run_figures = {f.key: _figure_view(f) for f in figures if f.outcome is None}
    template = _environment().get_template("report.html.j2")
    html = template.render(
        ctx=ctx,
        persons=None,
        outcomes=outcomes,
        outcome_rows=table_view(outcome_rows_table(ctx), key="outcome_rows"),
        comparison=comparison,
        comparison_note=comparison_note_text,
        run_findings=(changes_finding(ctx.changes),),
        figures=run_figures,
        alerts=collect_alerts(ctx),
        validation=_validation_table(ctx),
        versions=_versions_table(ctx.versions),
        tables={
            "changes": _changes_table(ctx),
            "reasons": table_view(ctx.reasons, key="reasons", columns=["reason", "rows"]),
        },
        css=Markup(stylesheet()),
        javascript=Markup(javascript_bundle()),
    )
    return html.lstrip()
