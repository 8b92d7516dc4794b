"""The publication table: the model sequence side by side, one column per model.

The layout of HLM's and sjPlot's model tables: fixed effects (estimate with its
standard error, and the 95% confidence interval below), the random-effect
variances and covariances, the ICC, the numbers of persons and observations,
and the deviance, AIC and BIC. Made from the analysis tables only:

- ``fixed_effects`` and ``variance_components`` (REML estimates, per model);
- ``icc`` (the ICC of the unconditional means model);
- ``model_fit`` (persons, observations, and -2 log-likelihood when no ML fit is given);
- ``model_comparison`` (deviance, AIC and BIC of the ML fits, which compare
  across models with different fixed effects; used when present).

:func:`model_table` gives the numbers (one row per statistic, one ``Float64``
column per model: ``tables/model_table.csv``); :func:`model_table_text` the
same as text cells for the report, :func:`model_table_latex` (booktabs) and
:func:`model_table_markdown` files that paste into a paper. Every string from
the data or the config is escaped for its medium.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from .formatting import MISSING, format_number, is_available

__all__ = [
    "ModelTable",
    "build_model_table",
    "latex_escape",
    "markdown_escape",
    "model_table_latex",
    "model_table_markdown",
    "relabel_term",
]

SECTIONS = ("fixed", "random", "fit")
SECTION_TITLES = {
    "fixed": "Fixed effects",
    "random": "Random effects (variances and covariances)",
    "fit": "Model summary",
}
FIT_ROWS = ("ICC", "persons", "observations", "deviance", "AIC", "BIC")


@dataclass(frozen=True, slots=True)
class ModelTable:
    """The publication table: ``numbers`` (machine-readable) and ``cells`` (text).

    ``numbers`` has columns ``section``, ``row``, ``statistic`` and one Float64
    column per model; ``cells`` has ``section``, ``row`` and one String column
    per model: an estimate row ``"111.701 (1.390)"`` followed by its interval
    row ``"[108.943, 114.458]"`` (``row`` empty), as in a paper. ``notes`` are
    the sentences printed under the table.
    """

    models: tuple[str, ...]
    numbers: pl.DataFrame
    cells: pl.DataFrame
    notes: tuple[str, ...]

    @property
    def available(self) -> bool:
        return bool(self.models) and self.numbers.height > 0


def relabel_term(term: str, labels: Mapping[str, Mapping[str, str]]) -> str:
    """``trtY`` -> ``trt: programme`` when ``[data.labels] trt = { Y = "programme" }``.

    Each part of an interaction (``age1:trtY``) is relabelled on its own; a part
    is relabelled only when it is exactly a labelled column followed by one of
    its levels, so other terms are left as they are.
    """
    parts = []
    for part in term.split(":"):
        shown = part
        for column, levels in labels.items():
            for level, label in levels.items():
                if part == f"{column}{level}":
                    shown = f"{column}: {label}"
        parts.append(shown)
    return " × ".join(parts) if len(parts) > 1 and parts != term.split(":") else ":".join(parts)


def _models(tables: Mapping[str, pl.DataFrame]) -> list[str]:
    """The models of the sequence (auxiliary models, fitted for one comparison, left out)."""
    names: list[str] = []
    fits = tables.get("model_fit")
    if is_available(fits) and "role" in fits.columns:
        names = [
            n for n, role in zip(fits["model"], fits["role"], strict=True) if role != "auxiliary"
        ]
        return names
    for key in ("model_fit", "fixed_effects", "variance_components"):
        table = tables.get(key)
        if is_available(table) and "model" in table.columns:
            names.extend(n for n in table["model"].to_list() if n not in names)
    return names


def _value(table: pl.DataFrame | None, model: str, column: str) -> float | None:
    if not is_available(table) or column not in table.columns or "model" not in table.columns:
        return None
    match = table.filter(pl.col("model") == model)[column]
    if match.len() == 0 or match[0] is None:
        return None
    value = float(match[0])
    return value if math.isfinite(value) else None


def _component_name(group: str, term1: str | None, term2: str | None) -> str:
    if group == "Residual":
        return "Residual (within-person)"
    if term2:
        return f"{group}: cov({term1}, {term2})"
    return f"{group}: {term1}"


def build_model_table(
    tables: Mapping[str, pl.DataFrame],
    *,
    labels: Mapping[str, Mapping[str, str]] | None = None,
) -> ModelTable:
    """The publication table from the analysis tables (empty when no model was fitted)."""
    labels = labels or {}
    models = _models(tables)
    fixed = tables.get("fixed_effects")
    variance = tables.get("variance_components")
    fit = tables.get("model_fit")
    comparison = tables.get("model_comparison")
    icc = tables.get("icc")
    rows: list[tuple[str, str, str, dict[str, float | None]]] = []

    if is_available(fixed) and {"model", "term", "estimate"} <= set(fixed.columns):
        terms: list[str] = []
        for term in fixed["term"].to_list():
            if term not in terms:
                terms.append(term)
        for term in terms:
            part = fixed.filter(pl.col("term") == term)
            for statistic in ("estimate", "std_error", "conf_low", "conf_high", "p_value"):
                if statistic not in part.columns:
                    continue
                values = {m: _value(part, m, statistic) for m in models}
                rows.append(("fixed", relabel_term(str(term), labels), statistic, values))

    if is_available(variance) and {"model", "group", "variance"} <= set(variance.columns):
        keys: list[tuple[str, str | None, str | None]] = []
        for row in variance.iter_rows(named=True):
            key = (str(row["group"]), row.get("term1"), row.get("term2"))
            if key not in keys:
                keys.append(key)
        # residual last, as lme4 prints it
        keys.sort(key=lambda k: k[0] == "Residual")
        for group, term1, term2 in keys:
            condition = pl.col("group") == group
            for column, value in (("term1", term1), ("term2", term2)):
                if column in variance.columns:
                    condition &= (
                        pl.col(column).is_null() if value is None else pl.col(column) == value
                    )
            part = variance.filter(condition)
            name = _component_name(
                group,
                None if term1 is None else relabel_term(str(term1), labels),
                None if term2 is None else relabel_term(str(term2), labels),
            )
            statistic = "covariance" if term2 else "variance"
            rows.append(
                ("random", name, statistic, {m: _value(part, m, "variance") for m in models})
            )

    ml = is_available(comparison) and {"model", "deviance"} <= set(comparison.columns)
    fit_values: dict[str, dict[str, float | None]] = {
        "ICC": {m: _value(icc, m, "icc") for m in models},
        "persons": {m: _value(fit, m, "ngroups") for m in models},
        "observations": {m: _value(fit, m, "nobs") for m in models},
    }
    if ml:
        fit_values["deviance"] = {m: _value(comparison, m, "deviance") for m in models}
        fit_values["AIC"] = {m: _value(comparison, m, "aic") for m in models}
        fit_values["BIC"] = {m: _value(comparison, m, "bic") for m in models}
    else:
        loglik = {m: _value(fit, m, "loglik") for m in models}
        fit_values["deviance"] = {m: None if v is None else -2.0 * v for m, v in loglik.items()}
        fit_values["AIC"] = {m: _value(fit, m, "aic") for m in models}
        fit_values["BIC"] = {m: _value(fit, m, "bic") for m in models}
    for name in FIT_ROWS:
        values = fit_values[name]
        if any(v is not None for v in values.values()):
            rows.append(("fit", name, "value", values))

    schema: dict[str, pl.DataType] = {
        "section": pl.String(),
        "row": pl.String(),
        "statistic": pl.String(),
        **{m: pl.Float64() for m in models},
    }
    numbers = pl.DataFrame(
        [(s, r, st, *(v[m] for m in models)) for s, r, st, v in rows],
        schema=schema,
        orient="row",
    )
    notes = [
        "Fixed effects: estimate (standard error) and 95% confidence interval "
        "(t with Satterthwaite degrees of freedom); REML estimates.",
        "Random effects: variances and covariances of the REML fits.",
    ]
    if ml:
        notes.append(
            "Deviance (-2 log-likelihood), AIC and BIC of the maximum-likelihood fits, "
            "which compare across models with different fixed effects."
        )
    else:
        notes.append("Deviance (-2 log-likelihood), AIC and BIC of the REML fits.")
    if fit_values["ICC"] and any(v is not None for v in fit_values["ICC"].values()):
        notes.append("ICC: share of the variance between persons, unconditional means model.")
    notes.append(f"{MISSING}: not in the model.")
    return ModelTable(
        models=tuple(models),
        numbers=numbers,
        cells=_cells(numbers, models),
        notes=tuple(notes),
    )


def _count(value: float | None) -> str:
    return MISSING if value is None else f"{int(round(value)):,}"


def _cells(numbers: pl.DataFrame, models: list[str]) -> pl.DataFrame:
    """Text cells: estimate (SE) with its interval below; variances; summary rows."""
    out: list[tuple[str, str, *tuple[str, ...]]] = []
    if numbers.height == 0:
        return pl.DataFrame(schema={"section": pl.String, "row": pl.String})
    by_row: dict[tuple[str, str], dict[str, dict[str, float | None]]] = {}
    order: list[tuple[str, str]] = []
    for record in numbers.iter_rows(named=True):
        key = (record["section"], record["row"])
        if key not in by_row:
            by_row[key] = {}
            order.append(key)
        by_row[key][record["statistic"]] = {m: record[m] for m in models}
    for section, row in order:
        stats = by_row[(section, row)]
        if section == "fixed":
            estimate, se = stats.get("estimate", {}), stats.get("std_error", {})
            low, high = stats.get("conf_low", {}), stats.get("conf_high", {})
            first, second = [], []
            for m in models:
                e = estimate.get(m)
                if e is None:
                    first.append(MISSING)
                    second.append("")
                    continue
                s = se.get(m)
                first.append(format_number(e) + ("" if s is None else f" ({format_number(s)})"))
                lo, hi = low.get(m), high.get(m)
                second.append(
                    ""
                    if lo is None or hi is None
                    else f"[{format_number(lo)}, {format_number(hi)}]"
                )
            out.append((section, row, *first))
            if any(second):
                out.append((section, "", *second))
        else:
            values = next(iter(stats.values()))
            if row in {"persons", "observations"}:
                cells = [_count(values.get(m)) for m in models]
            else:
                cells = [
                    MISSING if values.get(m) is None else format_number(values[m]) for m in models
                ]
            out.append((section, row, *cells))
    schema = {"section": pl.String, "row": pl.String, **{m: pl.String for m in models}}
    return pl.DataFrame(out, schema=schema, orient="row")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "\n": " ",
    "\r": " ",
    "–": "--",
    "×": r"$\times$",
    "±": r"$\pm$",
    "²": r"\textsuperscript{2}",
    "χ": r"$\chi$",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    r"""``text`` safe in LaTeX body text: ``_`` -> ``\_``, ``\`` -> ``\textbackslash{}`` ..."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group(0)], text)


def _latex_number(text: str) -> str:
    """A cell with a leading minus sign set as a math minus (``$-$1.5``), escaped."""
    return re.sub(r"(?<![\w.])-(?=\d)", "$-$", latex_escape(text))


def model_table_latex(table: ModelTable, *, caption: str = "") -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``), every cell escaped."""
    models = table.models
    lines = [
        "% Model table written by growthcurves; needs \\usepackage{booktabs}",
        "\\begin{tabular}{l" + "r" * len(models) + "}",
        "\\toprule",
        " & ".join(["", *(latex_escape(m) for m in models)]) + " \\\\",
    ]
    section = None
    for record in table.cells.iter_rows(named=True):
        if record["section"] != section:
            section = record["section"]
            lines.append("\\midrule")
            title = latex_escape(SECTION_TITLES.get(section, section))
            lines.append(f"\\multicolumn{{{len(models) + 1}}}{{l}}{{\\textit{{{title}}}}} \\\\")
        cells = [latex_escape(record["row"]), *(_latex_number(record[m]) for m in models)]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    notes = [caption] if caption else []
    notes += list(table.notes)
    lines += [f"% {latex_escape(note)}" for note in notes]
    return "\n".join(lines) + "\n"


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def markdown_escape(text: str) -> str:
    """``text`` safe in a Markdown table cell: specials backslash-escaped, one line."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def model_table_markdown(table: ModelTable, *, caption: str = "") -> str:
    """A pipe table (GitHub / pandoc), section titles in italics, notes below."""
    models = table.models
    lines = []
    if caption:
        lines += [f"**{markdown_escape(caption)}**", ""]
    lines.append("| " + " | ".join(["", *(markdown_escape(m) for m in models)]) + " |")
    lines.append("|:---|" + "---:|" * len(models))
    section = None
    for record in table.cells.iter_rows(named=True):
        if record["section"] != section:
            section = record["section"]
            title = markdown_escape(SECTION_TITLES.get(section, section))
            lines.append("| *" + title + "* |" + " |" * len(models))
        cells = [markdown_escape(record["row"]), *(markdown_escape(record[m]) for m in models)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [markdown_escape(note) + "  " for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"
