"""The report's input and the manifest's facts from what the stages returned.

The report's input is assembled by :func:`pipeline.report.build_context` (no
Prefect, usable from a notebook); this module only passes the flow's values on
and maps the manifest's fields (names, counts, hashes). No statistics here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.config import StudyConfig
from pipeline.io import LoadedData
from pipeline.report import ReportContext, build_context, config_text
from pipeline.reshape import Descriptives, Levels
from pipeline.runinfo import sha256_bytes
from pipeline.validate import ValidationResult

__all__ = ["config_text", "manifest_fields", "report_context"]


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
    changes: Mapping[str, Any] | None = None,
) -> ReportContext:
    """:func:`pipeline.report.build_context` with the flow's values."""
    return build_context(
        cfg=cfg,
        loaded=loaded,
        validation=validation,
        levels=levels,
        descriptives=descriptives,
        analysis=analysis,
        versions=versions,
        changes=changes,
        overrides=overrides,
        quarantine_file=quarantine_file,
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
