"""Prefect artifacts of a study run: a markdown summary, a link to the report, key tables.

The text is built by pure functions (tested without a server); :func:`publish`
hands it to Prefect. Numbers are only formatted here, never computed.

Text that comes from the user or the data (the title, model names, formulas,
terms, error messages, warnings, quarantine reasons, paths) goes through
:func:`markdown_text` (Markdown syntax backslash-escaped, line breaks folded into
spaces) or :func:`markdown_code` (a code span), so it can neither break a table
nor add links, images or HTML to the summary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

__all__ = [
    "TABLE_ARTIFACTS",
    "artifact_key",
    "key_model",
    "markdown_code",
    "markdown_text",
    "publish",
    "summary_markdown",
    "table_rows",
]

TABLE_ARTIFACTS: tuple[str, ...] = (
    "fixed_effects",
    "variance_components",
    "model_comparison",
    "group_differences",
)
"""Analysis tables published as table artifacts (when present)."""

_MAX_ROWS = 500

# Markdown punctuation that can start a link, image, HTML tag, entity, emphasis, code
# span, heading or table cell (a backslash makes any ASCII punctuation literal);
# ``(``, ``:``, ``-`` and ``.`` are kept: alone they are inert mid-line (``age1:trtY``)
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#&!])")
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def markdown_text(value: Any) -> str:
    """``value`` as literal Markdown text, also safe inside a table cell.

    Markdown punctuation (``| [ ] < > ` * _`` and more) is backslash-escaped and
    line breaks and other control characters become one space.
    """
    text = _LINE_BREAKS.sub(" ", str(value))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def markdown_code(value: Any) -> str:
    """``value`` as an inline code span (outside tables), whatever backticks it holds."""
    text = _LINE_BREAKS.sub(" ", str(value))
    runs = [len(run) for run in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ")):
        text = f" {text} "
    return f"{fence}{text}{fence}"


def artifact_key(study: str, name: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes (``early-fixed-effects``)."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"{study}-{name}".lower()).strip("-")
    return re.sub(r"-{2,}", "-", key)


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def table_rows(table: pl.DataFrame, *, limit: int = _MAX_ROWS) -> list[dict[str, Any]]:
    """Rows as dicts (the column names survive in the UI); NaN and infinities become null."""
    return [
        {name: _cell(value) for name, value in row.items()} for row in table.head(limit).to_dicts()
    ]


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.001:
            return f"{value:.2e}"
        return f"{value:.4g}" if abs(value) >= 1000 else f"{value:.3f}"
    return markdown_text(value)


def _markdown_table(table: pl.DataFrame, columns: Sequence[str]) -> list[str]:
    present = [column for column in columns if column in table.columns]
    header = " | ".join(markdown_text(column) for column in present)
    lines = ["| " + header + " |", "|" + "---|" * len(present)]
    for row in table.select(present).iter_rows():
        lines.append("| " + " | ".join(_number(value) for value in row) + " |")
    return lines


def _changes_markdown(changes: Mapping[str, Any] | None) -> list[str]:
    if not changes:
        return []
    lines = [
        "",
        f"## Changes since run {markdown_text(changes.get('previous_run_id'))}",
        "",
        f"- data: {'changed' if changes.get('data_changed') else 'unchanged'}; "
        f"config: {'changed' if changes.get('config_changed') else 'unchanged'}",
    ]
    for key, count in (changes.get("counts") or {}).items():
        if count["change"]:
            lines.append(
                f"- {markdown_text(key)}: {_number(count['previous'])} -> "
                f"{_number(count['current'])} ({count['change']:+d})"
            )
    moved = [row for row in changes.get("estimates") or [] if row["change"]]
    moved.sort(key=lambda row: -abs(row["change"]))
    for row in moved[:10]:
        lines.append(
            f"- {markdown_text(row['model'])} {markdown_code(row['term'])}: "
            f"{_number(row['previous'])} -> "
            f"{_number(row['current'])}"
        )
    if not moved and changes.get("estimates"):
        lines.append("- estimates: unchanged")
    for label in ("terms_added", "terms_removed"):
        if changes.get(label):
            terms = ", ".join(markdown_code(term) for term in changes[label])
            lines.append(f"- {label.replace('_', ' ')}: {terms}")
    return lines


def key_model(analysis: Any) -> str | None:
    """The model the summary shows: the last conditional model fitted, else the last fit."""
    fitted = [spec for spec in analysis.models if spec.name in analysis.fits]
    conditional = [spec.name for spec in fitted if spec.role == "conditional"]
    if conditional:
        return conditional[-1]
    return fitted[-1].name if fitted else None


def summary_markdown(
    *,
    title: str,
    study: str,
    run_id: str,
    report: Path,
    manifest: Mapping[str, Any],
    analysis: Any,
) -> str:
    """The run in a few lines: counts, key estimates, failed models, warnings."""
    lines = [
        f"# {markdown_text(title)}",
        "",
        f"Study {markdown_code(study)}, run {markdown_code(run_id)}. "
        f"Report: {markdown_code(report)}",
        "",
        f"- rows: {_number(manifest.get('rows_in'))} in, "
        f"{_number(manifest.get('rows_used'))} used, "
        f"{_number(manifest.get('rows_quarantined'))} quarantined",
    ]
    if "persons" in manifest:
        lines.append(
            f"- persons: {_number(manifest['persons'])}, "
            f"occasions: {_number(manifest.get('occasions'))}"
        )
    reasons = manifest.get("reasons") or {}
    for reason, rows in sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:10]:
        lines.append(f"  - {_number(rows)} row(s): {markdown_text(reason)}")
    reused = (manifest.get("analysis") or {}).get("reused_cached_fits")
    lines.append(
        f"- models fitted: {', '.join(markdown_text(name) for name in sorted(analysis.fits))}"
        if analysis.fits
        else "- models fitted: none" + (" (reused from the cache)" if reused else "")
    )
    model = key_model(analysis)
    fixed = analysis.tables.get("fixed_effects")
    if model is not None and fixed is not None and "model" in fixed.columns:
        lines += ["", f"## Fixed effects: {markdown_text(model)}", ""]
        lines += _markdown_table(
            fixed.filter(pl.col("model") == model),
            ["term", "estimate", "std_error", "df", "p_value", "conf_low", "conf_high"],
        )
    lines += _changes_markdown(manifest.get("changes"))
    if analysis.failures.height:
        lines += ["", "## Models that failed", ""]
        lines += _markdown_table(analysis.failures, ["model", "formula", "error"])
    if analysis.warnings.height:
        lines += ["", "## Warnings", ""]
        for row in analysis.warnings.iter_rows(named=True):
            lines.append(
                f"- **{markdown_text(row.get('severity'))}** "
                f"({markdown_text(row.get('topic'))}): {markdown_text(row.get('message'))}"
            )
    return "\n".join(lines) + "\n"


def publish(
    *,
    study: str,
    title: str,
    run_id: str,
    report: Path,
    manifest: Mapping[str, Any],
    analysis: Any,
) -> None:
    """Create the run's artifacts (needs a Prefect flow or task run context)."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    create_markdown_artifact(
        markdown=summary_markdown(
            title=title,
            study=study,
            run_id=run_id,
            report=report,
            manifest=manifest,
            analysis=analysis,
        ),
        key=artifact_key(study, "summary"),
        description=f"{title}: run {run_id}",
    )
    create_link_artifact(
        link=report.resolve().as_uri(),
        link_text=f"{study} report ({run_id})",
        key=artifact_key(study, "report"),
        description="The HTML report of this run (a file on the machine that ran it)",
    )
    for name in TABLE_ARTIFACTS:
        table = analysis.tables.get(name)
        if table is None or table.height == 0:
            continue
        create_table_artifact(
            table=table_rows(table),
            key=artifact_key(study, name),
            description=f"{name} ({run_id})",
        )
