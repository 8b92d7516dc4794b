"""Assemble the report's input and the manifest's facts from what the stages returned.

Plain field mapping (names, counts, hashes); no statistics. The spaghetti-plot
sample is drawn by ``pipeline.report.sample_persons`` (seeded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from pipeline.config import StudyConfig
from pipeline.io import LoadedData
from pipeline.report import ReportContext, sample_persons
from pipeline.reshape import Descriptives, Levels
from pipeline.runinfo import sha256_bytes
from pipeline.validate import ValidationResult

__all__ = ["config_text", "manifest_fields", "report_context"]


def config_text(cfg: StudyConfig, overrides: Mapping[str, str]) -> str:
    """The config as read, plus a comment naming the overrides of this run."""
    if not overrides:
        return cfg.source_text
    lines = [f"# {key} = {value!r}" for key, value in sorted(overrides.items())]
    return (
        cfg.source_text.rstrip("\n") + "\n\n# overridden for this run:\n" + "\n".join(lines) + "\n"
    )


def _level1_sample(levels: Levels, cfg: StudyConfig) -> pl.DataFrame:
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


def report_context(
    *,
    cfg: StudyConfig,
    loaded: LoadedData,
    validation: ValidationResult,
    levels: Levels,
    descriptives: Descriptives,
    analysis: Any,
    versions: Mapping[str, str],
    overrides: Mapping[str, str],
    quarantine_file: str,
) -> ReportContext:
    """Everything the report shows, as plain data. Nothing here depends on the run's time
    or on where the files are, so the same data and config give the same report."""
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
        reasons=validation.reasons,
        quarantine_file=quarantine_file,
        summary=descriptives.summary,
        occasions_per_person=descriptives.occasions_per_person,
        attrition=descriptives.attrition,
        patterns=descriptives.patterns,
        level1_sample=_level1_sample(levels, cfg),
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
    )


def manifest_fields(
    *,
    cfg: StudyConfig,
    overrides: Mapping[str, str],
    versions: Mapping[str, str],
    code_version: str,
    loaded: LoadedData | None = None,
    validation: ValidationResult | None = None,
    descriptives: Descriptives | None = None,
    analysis: Any = None,
    fingerprint: str | None = None,
    reused_fits: bool | None = None,
    flow_run: Mapping[str, str] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The study's facts for ``manifest.json`` (the writer adds run id, time and files)."""
    fields: dict[str, Any] = {
        "study": cfg.study.name,
        "title": cfg.study.title,
        "config": {
            "path": str(cfg.source_path),
            "sha256": sha256_bytes(cfg.source_text.encode("utf-8")),
        },
        "overrides": dict(overrides),
        "versions": dict(versions),
        "code_version": code_version,
    }
    if flow_run:
        fields["prefect"] = dict(flow_run)
    if loaded is not None:
        fields["data"] = {
            "path": str(loaded.path),
            "sha256": loaded.sha256,
            "format": loaded.format,
            "layout": loaded.layout,
        }
    if validation is not None:
        fields.update(
            rows_in=validation.rows_in,
            rows_used=validation.rows_used,
            rows_quarantined=validation.rows_quarantined,
            missing_outcome=validation.missing_outcome,
            reasons={
                str(row["reason"]): int(row["rows"])
                for row in validation.reasons.select("reason", "rows").iter_rows(named=True)
            },
        )
    if descriptives is not None and descriptives.summary.height:
        summary = descriptives.summary.row(0, named=True)
        fields["persons"] = int(summary["persons"])
        fields["occasions"] = int(summary["occasions"])
    if analysis is not None:
        fields["models"] = {
            "fitted": sorted(analysis.fits),
            "failed": sorted(str(name) for name in analysis.failures.get_column("model"))
            if analysis.failures.height
            else [],
        }
        fields["analysis"] = {"fingerprint": fingerprint, "reused_cached_fits": bool(reused_fits)}
    if error is not None:
        fields["error"] = error
    return fields
