"""Atomic run outputs and the manifest.

Layout of a study's output folder ``ROOT`` (``outputs/<study>/`` or ``--output DIR``)::

    ROOT/
      runs/<run-id>/          one folder per run, never changed once in place
        report.html
        manifest.json
        quarantine.csv
        tables/*.csv|parquet
        charts/*.svg|png
        failure.md            only in the folder of a failed run
      latest -> runs/<run-id> the newest successful run (a relative symlink; where
                              symlinks are not available, a text file holding
                              "runs/<run-id>")
      report.html             a copy of the newest successful run, so that the
      manifest.json           plain paths stay the same from run to run
      quarantine.csv
      tables/  charts/

How a run is written:

1. :func:`stage_run` makes ``ROOT/runs/.<run-id>.partial/``; the report, the
   tables, the charts and the quarantine are written there (:meth:`StagedRun.path`
   refuses any name that would leave the folder).
2. :func:`commit_run` hashes every file, writes ``manifest.json`` and renames the
   folder to ``ROOT/runs/<run-id>`` in one step, so a crash never leaves a
   half-written run in place.
3. For a successful run, ``latest`` is replaced atomically (a new symlink renamed
   over the old one), then the top-level copy is refreshed entry by entry, each
   entry renamed into place, ``manifest.json`` last.

A failed run (:func:`commit_run` with ``status="failed"``) is kept in ``runs/``
with its quarantine, its manifest and ``failure.md``; ``latest`` and the
top-level copy keep pointing at the last good run.

No Prefect here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

import polars as pl

from pipeline.errors import GrowthError
from pipeline.runinfo import canonical_json, sha256_file

__all__ = [
    "FAILURE",
    "LATEST",
    "MANIFEST",
    "MIRRORED",
    "QUARANTINE",
    "REPORT",
    "RUNS",
    "CommittedRun",
    "OutputPathError",
    "StagedRun",
    "commit_run",
    "discard_run",
    "file_entries",
    "latest_run",
    "read_latest",
    "manifest_text",
    "new_run_id",
    "safe_path",
    "stage_run",
    "timestamp_text",
]

REPORT = "report.html"
MANIFEST = "manifest.json"
QUARANTINE = "quarantine.csv"
FAILURE = "failure.md"
RUNS = "runs"
LATEST = "latest"
MIRRORED: tuple[str, ...] = (REPORT, QUARANTINE, "tables", "charts", MANIFEST)
"""Entries of the newest successful run copied to the top of the output folder,
in the order they are replaced (the manifest last)."""

_PARTIAL = ".partial"
_RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{4,32}$")


class OutputPathError(GrowthError):
    """An output path that would leave the output folder, or a folder we must not overwrite."""


def timestamp_text(moment: datetime) -> str:
    """``2026-11-25T19:56:06Z``: UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(moment: datetime | None = None, token: str | None = None) -> str:
    """A run id that sorts by time: ``20261125T195606Z-1a2b3c4d``.

    ``token`` (e.g. the Prefect flow run id) gives the hex suffix; a random one otherwise.
    """
    moment = datetime.now(UTC) if moment is None else moment
    hexes = re.sub(r"[^0-9a-f]", "", (token or uuid.uuid4().hex).lower())[:8]
    if len(hexes) < 4:
        hexes = uuid.uuid4().hex[:8]
    return f"{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}-{hexes}"


def safe_path(root: Path, relative: str | os.PathLike[str]) -> Path:
    """``root / relative``, refusing anything that would end up outside ``root``.

    Names made from data (a table or chart name, a group level) go through here:
    absolute paths, drive letters, ``..`` parts, backslashes and empty names are
    rejected with :class:`OutputPathError`.
    """
    text = os.fspath(relative)
    if not text or text.strip() != text or "\0" in text:
        raise OutputPathError(f"output name {text!r} is empty or has surrounding spaces")
    if "\\" in text or PureWindowsPath(text).drive:
        raise OutputPathError(f"output name {text!r} must use '/' and no drive letter")
    pure = PurePosixPath(text)
    if pure.is_absolute():
        raise OutputPathError(f"output name {text!r} is an absolute path; expected a relative one")
    if any(part in {"..", ".", ""} for part in text.split("/")):
        raise OutputPathError(f"output name {text!r} has a '..', '.' or empty part")
    target = Path(root, *pure.parts)
    resolved_root = Path(os.path.realpath(root))
    resolved = Path(os.path.realpath(target))
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise OutputPathError(f"output name {text!r} leads outside {root}")
    return target


@dataclass(frozen=True, slots=True)
class StagedRun:
    """A run being written: files go to ``staging``, which becomes ``final`` on commit."""

    root: Path
    run_id: str
    started: datetime
    staging: Path

    @property
    def final(self) -> Path:
        """Where the run folder will be once committed: ``root/runs/<run-id>``."""
        return self.root / RUNS / self.run_id

    def path(self, relative: str) -> Path:
        """A path inside the staging folder (parents created), checked by :func:`safe_path`."""
        target = safe_path(self.staging, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_text(self, relative: str, text: str) -> Path:
        target = self.path(relative)
        with target.open("w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        return target

    def write_bytes(self, relative: str, data: bytes) -> Path:
        target = self.path(relative)
        target.write_bytes(data)
        return target

    def write_csv(self, relative: str, frame: pl.DataFrame) -> Path:
        from pipeline.csvsafe import csv_safe

        target = self.path(relative)
        csv_safe(frame).write_csv(target)
        return target


@dataclass(frozen=True, slots=True)
class CommittedRun:
    """A run folder in place, with the manifest that describes it."""

    root: Path
    run_id: str
    folder: Path
    manifest: Mapping[str, Any]
    status: Literal["succeeded", "failed"]

    @property
    def report(self) -> Path | None:
        """The run's own ``report.html`` (``None`` for a failed run)."""
        path = self.folder / REPORT
        return path if path.exists() else None

    @property
    def latest_report(self) -> Path:
        """The stable path of the newest report: ``root/report.html``."""
        return self.root / REPORT


def stage_run(root: Path, run_id: str, started: datetime) -> StagedRun:
    """Make the staging folder ``root/runs/.<run-id>.partial/`` and return a :class:`StagedRun`."""
    if not _RUN_ID.match(run_id):
        raise OutputPathError(f"run id {run_id!r} is not of the form 20261125T195606Z-1a2b3c4d")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise OutputPathError(f"{root}: exists and is not a folder; expected an output folder")
    runs = root / RUNS
    runs.mkdir(parents=True, exist_ok=True)
    if (runs / run_id).exists():
        raise OutputPathError(f"{runs / run_id}: a run with this id exists already")
    staging = runs / f".{run_id}{_PARTIAL}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return StagedRun(root=root, run_id=run_id, started=started, staging=staging)


def discard_run(staged: StagedRun) -> None:
    """Remove a staging folder that will not be committed."""
    shutil.rmtree(staged.staging, ignore_errors=True)


def file_entries(folder: Path) -> list[dict[str, Any]]:
    """``[{"path": "tables/icc.csv", "bytes": 123, "sha256": "..."}]`` for every file but the manifest."""
    entries = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        relative = path.relative_to(folder).as_posix()
        if relative == MANIFEST:
            continue
        entries.append(
            {"path": relative, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        )
    return sorted(entries, key=lambda entry: entry["path"])


def manifest_text(manifest: Mapping[str, Any]) -> str:
    """The manifest as deterministic JSON (sorted keys, two-space indent, final newline)."""
    return canonical_json(manifest, indent=2) + "\n"


def commit_run(
    staged: StagedRun,
    fields: Mapping[str, Any],
    *,
    status: Literal["succeeded", "failed"] = "succeeded",
) -> CommittedRun:
    """Write the manifest, rename the staging folder into place and, on success, publish it.

    ``fields`` are the study's facts (config and data hashes, row counts, versions,
    ...); the run id, status, timestamp and the file list are added here. For a
    successful run the folder must hold ``report.html``.
    """
    if status == "succeeded" and not (staged.staging / REPORT).is_file():
        raise OutputPathError(f"{staged.staging}: no {REPORT} was written; nothing to publish")
    manifest = dict(fields)
    manifest.update(
        run_id=staged.run_id,
        status=status,
        timestamp=timestamp_text(staged.started),
        files=file_entries(staged.staging),
    )
    (staged.staging / MANIFEST).write_text(manifest_text(manifest), encoding="utf-8")
    _fsync_tree(staged.staging)
    os.rename(staged.staging, staged.final)
    if status == "succeeded":
        _point_latest(staged.root, staged.run_id)
        _mirror(staged.root, staged.final, staged.run_id)
    return CommittedRun(
        root=staged.root,
        run_id=staged.run_id,
        folder=staged.final,
        manifest=manifest,
        status=status,
    )


def latest_run(root: Path) -> Path | None:
    """The folder ``latest`` points to (symlink or pointer file), or ``None``."""
    pointer = Path(root) / LATEST
    if pointer.is_symlink():
        target = Path(root) / os.readlink(pointer)
    elif pointer.is_file():
        target = Path(root) / pointer.read_text(encoding="utf-8").strip()
    else:
        return None
    return target if target.is_dir() else None


def read_latest(
    root: Path, table: str = "fixed_effects"
) -> tuple[dict[str, Any] | None, pl.DataFrame | None]:
    """The newest successful run's manifest and one of its tables (``None`` where unreadable)."""
    folder = latest_run(root)
    if folder is None:
        return None, None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    try:
        frame = pl.read_csv(folder / "tables" / f"{table}.csv")
    except Exception:  # noqa: BLE001 - an older run without the table, or another layout
        frame = None
    return manifest, frame


def _point_latest(root: Path, run_id: str) -> None:
    """Make ``root/latest`` point at ``runs/<run-id>``, replacing the old pointer atomically."""
    relative = f"{RUNS}/{run_id}"
    pointer = root / LATEST
    if pointer.exists() and not pointer.is_symlink() and pointer.is_dir():
        raise OutputPathError(f"{pointer}: is a folder; expected the 'latest' pointer")
    temporary = root / f".{LATEST}-{run_id}"
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    try:
        os.symlink(relative, temporary, target_is_directory=True)
    except (OSError, NotImplementedError):
        temporary.write_text(relative + "\n", encoding="utf-8")
    os.replace(temporary, pointer)


def _mirror(root: Path, run_folder: Path, run_id: str) -> None:
    """Copy the run's entries to the top of ``root``, each renamed into place."""
    present = [name for name in MIRRORED if (run_folder / name).exists()]
    ours = (root / MANIFEST).is_file()
    for name in MIRRORED:
        existing = root / name
        if existing.exists() and existing.is_dir() != (name in {"tables", "charts"}):
            raise OutputPathError(f"{existing}: exists and is not what growth writes there")
        if existing.is_dir() and not ours:
            raise OutputPathError(
                f"{existing}: a folder that growth did not write is in the way; "
                "choose an empty output folder"
            )
    scratch = root / f".mirror-{run_id}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        for name in present:
            source = run_folder / name
            if source.is_dir():
                shutil.copytree(source, scratch / name)
            else:
                shutil.copy2(source, scratch / name)
        for name in MIRRORED:
            target = root / name
            if name in present:
                _replace(scratch / name, target, scratch)
            elif target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _replace(source: Path, target: Path, scratch: Path) -> None:
    if source.is_dir():
        if target.exists():
            old = scratch / f"old-{target.name}"
            os.rename(target, old)
        os.rename(source, target)
    else:
        os.replace(source, target)


def _fsync_tree(folder: Path) -> None:
    """Flush the files of a folder to disk before it is renamed into place."""
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                descriptor = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(descriptor)
            except OSError:
                pass
            finally:
                os.close(descriptor)
