"""Assemble a :class:`ReportContext` from what the pipeline's stages returned.

```python
from pipeline.report import build_context, render_report

ctx = build_context(cfg=cfg, loaded=loaded, validation=vr, levels=lv,
                    descriptives=desc, analysis=an, versions=library_versions())
html = render_report(ctx)
```

Plain field mapping (names, counts, hashes) and the seeded spaghetti-plot sample;
no statistics and no Prefect, so a notebook builds the very report a flow writes.

- :func:`build_context` -- the report's input from the stage results;
- :func:`changes_table` -- what changed since the previous run
  (:func:`pipeline.runinfo.changes_since`) as a small table of text;
- :func:`config_text` -- the config as read, plus the overrides of this run;
- :func:`level1_sample` -- the rows of the persons drawn for the spaghetti plot.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from .context import CHANGES_COLUMNS, ReportContext, sample_persons
from .formatting import MISSING, format_number
from .html import prefetch_javascript

if TYPE_CHECKING:
    from pipeline.analysis import Analysis
    from pipeline.config import StudyConfig
    from pipeline.io import LoadedData
    from pipeline.reshape import Descriptives, Levels
    from pipeline.validate import ValidationResult

__all__ = [
    "build_context",
    "changes_table",
    "config_text",
    "level1_sample",
]

_COUNT_LABELS: tuple[tuple[str, str], ...] = (
    ("persons", "persons"),
    ("occasions", "occasions"),
    ("rows_in", "rows read"),
    ("rows_used", "rows used"),
    ("rows_quarantined", "rows quarantined"),
)
_HASH_LENGTH = 12


def config_text(cfg: StudyConfig, overrides: Mapping[str, str] | None = None) -> str:
    """The config as read, plus a comment naming the overrides of this run."""
    if not overrides:
        return cfg.source_text
    lines = [f"# {key} = {value!r}" for key, value in sorted(overrides.items())]
    return (
        cfg.source_text.rstrip("\n") + "\n\n# overridden for this run:\n" + "\n".join(lines) + "\n"
    )


def level1_sample(levels: Levels, cfg: StudyConfig) -> pl.DataFrame:
    """``person, time, outcome, group`` for the persons drawn by :func:`sample_persons`."""
    level1 = levels.level1
    group = cfg.comparison.group
    if group is not None and group in levels.level2.columns and group not in level1.columns:
        level1 = level1.join(
            levels.level2.select(levels.person, group),
            on=levels.person,
            how="left",
            maintain_order="left",
        )
    sample = sample_persons(
        level1, person_col=levels.person, n=cfg.report.sample_persons, seed=cfg.report.seed
    )
    group_column = (
        pl.col(group).cast(pl.String)
        if group is not None and group in sample.columns
        else pl.lit(None, dtype=pl.String)
    )
    return sample.select(
        pl.col(levels.person).alias("person"),
        pl.col(levels.time).cast(pl.Float64).alias("time"),
        pl.col(levels.outcome).cast(pl.Float64).alias("outcome"),
        group_column.alias("group"),
    )


def _same(previous: Any, current: Any) -> bool:
    """Equal, with two missing values (None or NaN) counting as the same."""

    def missing(value: Any) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    if missing(previous) or missing(current):
        return missing(previous) and missing(current)
    return previous == current


def _number(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return format_number(float(value))


def _signed(previous: Any, current: Any) -> str:
    if _same(previous, current):
        return "0"
    if previous is None or current is None:
        return MISSING
    change = current - previous
    text = _number(change)
    return text if text.startswith(("-", MISSING)) or change == 0 else f"+{text}"


def _hash(value: Any) -> str:
    return str(value)[:_HASH_LENGTH] if value else MISSING


def _overrides(value: Mapping[str, Any]) -> str:
    return "; ".join(f"{key} = {item!r}" for key, item in sorted(value.items())) or "none"


def changes_table(changes: Mapping[str, Any] | None) -> pl.DataFrame | None:
    """What changed since the previous run, as rows ``quantity, previous, current, change``.

    ``changes`` is what :func:`pipeline.runinfo.changes_since` returns (or the
    ``"changes"`` entry of a manifest). ``None`` (no previous run) gives ``None``;
    a previous run with the same data, config, overrides, counts and estimates
    gives an empty table; otherwise one row each for the data and config hashes
    (first 12 hex digits), the overrides (when there are any), the counts and
    every fixed effect (``"<model>: <term>"``), terms added or removed last.

    The previous run's id and time are left out on purpose: the table depends
    only on the two runs' data, config and results, never on when they ran.
    """
    if changes is None:
        return None
    rows: list[tuple[str, str, str, str]] = []
    differs = False
    for part, label in (("data", "data file (SHA-256)"), ("config", "configuration (SHA-256)")):
        changed = bool(changes.get(f"{part}_changed"))
        differs |= changed
        hashes = changes.get(part) or {}
        rows.append(
            (
                label,
                _hash(hashes.get("previous")),
                _hash(hashes.get("current")),
                "changed" if changed else "same",
            )
        )
    overrides = changes.get("overrides") or {}
    before, after = overrides.get("previous") or {}, overrides.get("current") or {}
    differs |= bool(changes.get("overrides_changed"))
    if before or after:
        rows.append(
            (
                "overrides",
                _overrides(before),
                _overrides(after),
                "changed" if changes.get("overrides_changed") else "same",
            )
        )
    counts = changes.get("counts") or {}
    for key, label in _COUNT_LABELS:
        count = counts.get(key)
        if not count:
            continue
        differs |= not _same(count.get("previous"), count.get("current"))
        rows.append(
            (
                label,
                _number(count.get("previous")),
                _number(count.get("current")),
                _signed(count.get("previous"), count.get("current")),
            )
        )
    for row in changes.get("estimates") or []:
        previous, current = row.get("previous"), row.get("current")
        differs |= not _same(previous, current)
        rows.append(
            (
                f"{row.get('model')}: {row.get('term')}",
                _number(previous),
                _number(current),
                _signed(previous, current),
            )
        )
    for key, previous, current in (
        ("terms_added", "not estimated", "estimated"),
        ("terms_removed", "estimated", "not estimated"),
    ):
        for term in changes.get(key) or []:
            differs = True
            rows.append((str(term), previous, current, key.removeprefix("terms_")))
    schema = dict.fromkeys(CHANGES_COLUMNS, pl.String)
    if not differs:
        return pl.DataFrame(schema=schema)
    return pl.DataFrame(rows, schema=schema, orient="row")


def build_context(
    *,
    cfg: StudyConfig,
    loaded: LoadedData,
    validation: ValidationResult,
    levels: Levels,
    descriptives: Descriptives,
    analysis: Analysis,
    versions: Mapping[str, str],
    changes: Mapping[str, Any] | None = None,
    overrides: Mapping[str, str] | None = None,
    quarantine_file: str | None = "quarantine.csv",
) -> ReportContext:
    """Everything the report shows, as plain data, from the stages' results.

    ``changes`` is :func:`pipeline.runinfo.changes_since`'s result (``None``: no
    previous run); ``overrides`` the run's overrides of the config (shown under
    the config text); ``quarantine_file`` the name the report points to.
    Nothing here depends on the run's time or on where the files are, so the
    same data and config (and the same previous run) give the same report.
    Starts making the report's JavaScript in the background
    (:func:`pipeline.report.html.prefetch_javascript`), since a report follows.
    """
    prefetch_javascript()
    return ReportContext(
        title=cfg.study.title,
        study_name=cfg.study.name,
        description=cfg.study.description or "",
        config_text=config_text(cfg, overrides),
        data_file=cfg.data.path,
        data_sha256=loaded.sha256,
        rows_in=validation.rows_in,
        rows_used=validation.rows_used,
        rows_quarantined=validation.rows_quarantined,
        file_rows=validation.file_rows,
        reasons=validation.reasons,
        quarantine_file=quarantine_file,
        summary=descriptives.summary,
        occasions_per_person=descriptives.occasions_per_person,
        attrition=descriptives.attrition,
        patterns=descriptives.patterns,
        level1_sample=level1_sample(levels, cfg),
        sample_seed=cfg.report.seed,
        time_label=cfg.time.label or cfg.data.time,
        time_unit=cfg.time.unit or "",
        outcome_label=cfg.data.outcome_label or cfg.data.outcome,
        outcome_unit=cfg.data.outcome_unit or "",
        group_name=cfg.comparison.group,
        warnings=analysis.warnings,
        failures=analysis.failures,
        tables=dict(analysis.tables),
        versions=dict(versions),
        timestamp=cfg.report.timestamp or None,
        changes=changes_table(changes),
        labels={column: dict(levels) for column, levels in cfg.data.labels.items()},
        person_name=cfg.data.person,
        time_term=cfg.time.name,
        time_centre=float(cfg.time.centre),
        time_scale=float(cfg.time.scale),
        chart_png=cfg.report.png,
        outcome_name=cfg.data.outcome,
    )


def build_outcomes_context(
    *,
    cfg: StudyConfig,
    loaded: LoadedData,
    validation: ValidationResult,
    outcomes: Mapping[str, tuple[ValidationResult, Levels, Descriptives, Analysis]],
    versions: Mapping[str, str],
    changes: Mapping[str, Any] | None = None,
    overrides: Mapping[str, str] | None = None,
    quarantine_file: str | None = "quarantine.csv",
) -> ReportContext:
    """The report of a run of several outcomes (``[data] outcomes``).

    ``validation`` is the run's (:func:`pipeline.outcomes.validate_outcomes`);
    ``outcomes`` maps each outcome, in config order, to its validation, levels,
    descriptives and analysis. Each outcome gets a whole one-outcome context (its
    own label and unit from :meth:`StudyConfig.for_outcome`); the run's context holds
    the run's facts and these in ``outcomes``. With one outcome this is
    :func:`build_context` of that outcome.
    """
    contexts = []
    for name, (own, levels, descriptives, analysis) in outcomes.items():
        context = build_context(
            cfg=cfg.for_outcome(name) if len(outcomes) > 1 else cfg,
            loaded=loaded,
            validation=own,
            levels=levels,
            descriptives=descriptives,
            analysis=analysis,
            versions=versions,
            changes=changes,
            overrides=overrides,
            quarantine_file=quarantine_file,
        )
        if len(outcomes) > 1:
            context = dataclasses.replace(context, missing_outcome=own.missing_outcome)
        contexts.append(context)
    if len(contexts) == 1:
        return contexts[0]
    first = contexts[0]
    return dataclasses.replace(
        first,
        rows_in=validation.rows_in,
        rows_used=validation.rows_used,
        rows_quarantined=validation.rows_quarantined,
        reasons=validation.reasons,
        summary=None,
        occasions_per_person=None,
        attrition=None,
        patterns=None,
        level1_sample=None,
        outcome_label="Outcomes",
        outcome_unit="",
        outcome_name=None,
        warnings=None,
        failures=None,
        tables={},
        outcomes=tuple(contexts),
    )
