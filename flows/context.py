"""The report's input and the manifest's facts from what the stages returned.

The report's input is assembled by :func:`pipeline.report.build_outcomes_context` (no
Prefect, usable from a notebook); this module only passes the flow's values on
and re-exports :func:`pipeline.run.manifest_fields` (the manifest's facts). No
statistics here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.config import StudyConfig
from pipeline.io import LoadedData
from pipeline.report import ReportContext, build_outcomes_context, config_text
from pipeline.reshape import Descriptives, Levels
from pipeline.run import manifest_fields
from pipeline.validate import ValidationResult

__all__ = ["config_text", "manifest_fields", "report_context"]


def report_context(
    *,
    cfg: StudyConfig,
    loaded: LoadedData,
    validation: ValidationResult,
    outcomes: Mapping[str, tuple[ValidationResult, Levels, Descriptives, Any]],
    versions: Mapping[str, str],
    overrides: Mapping[str, str],
    quarantine_file: str,
    changes: Mapping[str, Any] | None = None,
) -> ReportContext:
    """:func:`pipeline.report.build_outcomes_context` with the flow's values (with one
    outcome, :func:`pipeline.report.build_context` of it)."""
    return build_outcomes_context(
        cfg=cfg,
        loaded=loaded,
        validation=validation,
        outcomes=outcomes,
        versions=versions,
        changes=changes,
        overrides=overrides,
        quarantine_file=quarantine_file,
    )
