"""A study run as files: the exact data read, the manifest, the comparison, the failure record.

What a run is, apart from its statistics, lives here so that it can be driven
from a notebook as well as from the Prefect flow (which only wires these steps):

- :func:`load_exact` reads the data file once, into a private snapshot, hashing
  the bytes as they are copied, and parses the snapshot: the SHA-256 in the
  manifest and in the cache key is that of the very bytes analysed, even when an
  export replaces the file while the run starts.
- :class:`TransientReadError` marks a read failure that a retry may cure (an I/O
  error on a network share); retries key on this type, not on message text
  (:func:`is_transient`).
- :func:`require_fits` fails a run that fitted no model, with every model's reason.
- :func:`manifest_fields` the study's facts for ``manifest.json``;
  :func:`previous_changes` what changed since the published run;
  :func:`write_run` commits and publishes a successful run.
- :func:`failure_summary` and :func:`record_failure` write a failed run's folder
  (``failure.md``, a manifest with ``"status": "failed"``, the quarantine when
  validation got that far), also for a run ended by Ctrl-C or SIGTERM.

No Prefect here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.config import StudyConfig
from pipeline.errors import (
    PERMANENT_ERRNOS,
    DataError,
    GrowthError,
    ModelError,
    TransientReadError,
    one_line,
)
from pipeline.io import LoadedData, load_data
from pipeline.outputs import (
    FAILURE,
    QUARANTINE,
    CommittedRun,
    StagedRun,
    commit_run,
    read_latest,
    stage_run,
)
from pipeline.runinfo import changes_since, sha256_bytes

__all__ = [
    "Interrupted",
    "NoModelFitted",
    "TransientReadError",
    "describe_error",
    "failure_summary",
    "is_transient",
    "load_exact",
    "manifest_fields",
    "previous_changes",
    "record_failure",
    "require_fits",
    "write_run",
]

_CHUNK = 1 << 20
_PERMANENT = PERMANENT_ERRNOS


class NoModelFitted(ModelError):
    """Not one model of the sequence could be fitted; ``failures`` holds each model's reason."""

    def __init__(self, message: str, failures: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.failures = failures


class Interrupted(KeyboardInterrupt):
    """A run ended by a signal (``signal`` is its number, e.g. 15 for SIGTERM)."""

    def __init__(self, signal: int) -> None:
        super().__init__(signal)
        self.signal = signal


def is_transient(error: BaseException | None) -> bool:
    """A read failure that a retry may cure: :class:`TransientReadError` or such an OS error."""
    if isinstance(error, TransientReadError):
        return True
    if isinstance(error, OSError):  # as load_data classifies them (PERMANENT_ERRNOS)
        permanent = FileNotFoundError | IsADirectoryError | PermissionError
        return error.errno not in _PERMANENT and not isinstance(error, permanent)
    return False


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _copy_hashing(source: Path, target: Path) -> str:
    """Copy ``source`` to ``target`` in one pass, returning the SHA-256 of the bytes copied."""
    digest = hashlib.sha256()
    try:
        with source.open("rb") as reader, target.open("wb") as writer:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
    except OSError as error:
        if error.filename is not None and Path(error.filename) == target:
            raise DataError(
                f"{target.parent}: cannot write the private copy of the data file "
                f"({error.strerror or type(error).__name__}); set TMPDIR to a folder with room"
            ) from None
        kind = DataError if error.errno in _PERMANENT else TransientReadError
        raise kind(
            f"{_display(source)}: cannot read the data file: "
            f"{error.strerror or type(error).__name__}"
        ) from None
    return digest.hexdigest()


def load_exact(cfg: StudyConfig) -> LoadedData:
    """:func:`pipeline.io.load_data` on a private snapshot of the data file, hashed as copied.

    The file is opened once: its bytes are streamed into a snapshot in a private
    temporary folder (mode 0700) while they are hashed, and the snapshot is parsed.
    So the returned ``sha256`` (the manifest's and the cache key's) describes exactly
    the bytes analysed. Hashing first and re-checking afterwards would leave a
    window in which the file can change and change back; the snapshot has none,
    for the price of one local copy (removed before this returns). Messages name
    the original file, never the snapshot.
    """
    source = cfg.data_path
    if not source.is_file():
        return load_data(cfg)  # not found, a folder: its own message, nothing to hash
    folder = Path(tempfile.mkdtemp(prefix="growth-data-"))
    try:
        snapshot = folder / source.name
        sha256 = _copy_hashing(source, snapshot)
        data = cfg.data.model_copy(update={"path": str(snapshot)})
        try:
            loaded = load_data(cfg.model_copy(update={"data": data}))
        except DataError as error:
            message = str(error)
            for shown in {str(snapshot), _display(snapshot)}:
                message = message.replace(shown, _display(source))
            raise type(error)(message) from None
        return dataclasses.replace(loaded, path=source, sha256=sha256)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def require_fits(analysis: Any, *, study: str) -> None:
    """Raise :class:`NoModelFitted` when the analysis fitted no model, naming each reason."""
    if analysis.fits:
        return
    failures = [
        (str(row["model"]), str(row["error"]))
        for row in analysis.failures.select("model", "error").iter_rows(named=True)
    ]
    reasons = "; ".join(f"{model}: {error}" for model, error in failures) or "no model was tried"
    raise NoModelFitted(
        f"{study}: no model could be fitted, so nothing is published "
        f"({len(failures)} failed): {reasons}",
        failures,
    )


def describe_error(error: BaseException) -> str:
    """One line for a failure record: the message of a :class:`GrowthError`, else the type too."""
    if isinstance(error, GrowthError):
        return str(error)
    number = getattr(error, "signal", None)
    if isinstance(number, int):
        name = {2: "SIGINT", 15: "SIGTERM", 1: "SIGHUP"}.get(number, f"signal {number}")
        return f"the run was ended by {name} before it finished; nothing was published"
    if isinstance(error, KeyboardInterrupt):
        return "the run was interrupted (Ctrl-C) before it finished; nothing was published"
    return f"{type(error).__name__}: {error}"


def manifest_fields(
    *,
    cfg: StudyConfig,
    overrides: Mapping[str, str],
    versions: Mapping[str, str],
    code_version: str,
    loaded: LoadedData | None = None,
    validation: Any = None,
    descriptives: Any = None,
    analysis: Any = None,
    fingerprint: str | None = None,
    reused_fits: bool | None = None,
    flow_run: Mapping[str, str] | None = None,
    error: str | None = None,
    outcomes: Mapping[str, tuple[Any, Any, Any, str, bool]] | None = None,
) -> dict[str, Any]:
    """The study's facts for ``manifest.json`` (the writer adds run id, time and files).

    ``outcomes`` (a run of several outcomes) maps each outcome to its validation,
    descriptives, analysis, cache key and whether its fits were reused; they are
    listed under ``per_outcome`` (rows with and without a value of the outcome,
    persons, occasions, models fitted and failed, cache key). ``outcomes`` in the
    manifest always lists the outcome columns of the run.
    """
    fields: dict[str, Any] = {
        "study": cfg.study.name,
        "title": cfg.study.title,
        "outcomes": list(cfg.outcomes),
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
            file_rows=validation.file_rows,
            blank_lines=validation.blank_lines,
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
        fields["models"] = _models_fields(analysis)
        fields["analysis"] = {"fingerprint": fingerprint, "reused_cached_fits": bool(reused_fits)}
    if outcomes:
        fields["per_outcome"] = {
            name: _outcome_fields(*facts, rows_used=fields.get("rows_used"))
            for name, facts in outcomes.items()
        }
        fields["analysis"] = {
            "fingerprints": {name: facts[3] for name, facts in outcomes.items()},
            "reused_cached_fits": bool(reused_fits),
        }
    if error is not None:
        fields["error"] = error
    return fields


def _models_fields(analysis: Any) -> dict[str, list[str]]:
    return {
        "fitted": sorted(analysis.fits),
        "failed": sorted(str(name) for name in analysis.failures.get_column("model"))
        if analysis.failures.height
        else [],
    }


def _outcome_fields(
    validation: Any,
    descriptives: Any,
    analysis: Any,
    fingerprint: str,
    reused: bool,
    *,
    rows_used: int | None,
) -> dict[str, Any]:
    """One outcome's entry of ``per_outcome`` in the manifest."""
    entry: dict[str, Any] = {
        "rows_missing_outcome": int(validation.missing_outcome),
        "models": _models_fields(analysis),
        "fingerprint": fingerprint,
        "reused_cached_fits": bool(reused),
    }
    if rows_used is not None:
        entry["rows_with_outcome"] = int(rows_used) - int(validation.missing_outcome)
    if descriptives is not None and descriptives.summary.height:
        summary = descriptives.summary.row(0, named=True)
        entry["persons"] = int(summary["persons"])
        entry["occasions"] = int(summary["occasions"])
    return entry


def previous_changes(
    root: Path,
    fields: Mapping[str, Any],
    current_fixed: pl.DataFrame | None,
    *,
    several: bool = False,
) -> dict[str, Any] | None:
    """What changed since the run ``latest`` points at (``None`` when there is none).

    With several outcomes (``current_fixed`` has an ``outcome`` column) the estimates
    are compared per outcome, model and term, the model named ``<outcome>: <model>``.
    """
    previous, previous_fixed = read_latest(root)
    if several:
        current_fixed = _outcome_models(current_fixed)
        previous_fixed = _outcome_models(previous_fixed)
    return changes_since(
        previous, fields, previous_fixed=previous_fixed, current_fixed=current_fixed
    )


def _outcome_models(fixed: pl.DataFrame | None) -> pl.DataFrame | None:
    """``model`` as ``<outcome>: <model>`` when the table has an ``outcome`` column."""
    if fixed is None or not {"outcome", "model"} <= set(fixed.columns):
        return fixed
    return fixed.with_columns(
        (pl.col("outcome").cast(pl.String) + pl.lit(": ") + pl.col("model").cast(pl.String)).alias(
            "model"
        )
    )


def write_run(
    staged: StagedRun,
    validation: Any,
    fields: Mapping[str, Any],
    *,
    keep_runs: int | None = None,
) -> CommittedRun:
    """Write the quarantine beside the report, then commit and publish the run."""
    staged.write_csv(QUARANTINE, validation.quarantine)
    return commit_run(staged, fields, keep_runs=keep_runs)


def failure_summary(cfg: StudyConfig, run_id: str, error: BaseException, validation: Any) -> str:
    """``failure.md``: what failed (each model's reason), and the row accounting when known."""
    lines = [f"# {cfg.study.title}: run {run_id} failed", "", describe_error(error), ""]
    if isinstance(error, NoModelFitted) and error.failures:
        lines.append("Models that could not be fitted:")
        lines.append("")
        lines += [f"- {model}: {one_line(reason)}" for model, reason in error.failures]
        lines.append("")
    if validation is not None:
        lines += [
            f"- rows in: {validation.rows_in}",
            f"- rows used: {validation.rows_used}",
            f"- rows quarantined: {validation.rows_quarantined} (see {QUARANTINE})",
        ]
        for row in validation.reasons.iter_rows(named=True):
            lines.append(f"  - {row['rows']} row(s): {row['reason']}")
    return "\n".join(lines) + "\n"


def record_failure(
    *,
    root: Path,
    run_id: str,
    started: datetime,
    cfg: StudyConfig,
    error: BaseException,
    fields: Mapping[str, Any],
    validation: Any = None,
    keep_runs: int | None = None,
) -> CommittedRun:
    """Write the failed run's folder: quarantine (when known), ``failure.md``, manifest.

    ``fields`` are the manifest's facts as far as the run got; the error's one-line
    description is added as ``error``. ``latest`` and the published report are left alone.
    """
    staged = stage_run(root, run_id, started)
    try:
        if validation is not None:
            staged.write_csv(QUARANTINE, validation.quarantine)
        staged.write_text(FAILURE, failure_summary(cfg, run_id, error, validation))
        return commit_run(
            staged,
            {**fields, "error": describe_error(error)},
            status="failed",
            keep_runs=keep_runs,
        )
    except BaseException:
        if staged.staging.exists():
            shutil.rmtree(staged.staging, ignore_errors=True)
        raise
