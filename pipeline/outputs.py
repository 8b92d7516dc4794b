"""Atomic run outputs, their publication and the manifest.

Layout of a study's output folder ``ROOT`` (``outputs/<study>/`` or ``--output DIR``)::

    ROOT/
      runs/<run-id>/          one folder per run, never changed once in place
        report.html
        manifest.json
        quarantine.csv
        tables/*.csv|parquet  every table as Parquet, and as CSV up to CSV_MAX_ROWS rows
        charts/*.svg|png
        failure.md            only in the folder of a failed run
      latest -> runs/<run-id> the newest successful run (a relative symlink; where
                              symlinks are not available, a text file holding
                              "runs/<run-id>")
      report.html -> latest/report.html     the stable paths: symlinks through
      manifest.json -> latest/manifest.json ``latest``, so they always show the
      quarantine.csv, tables, charts        run ``latest`` points at
      .growth.lock            the publication lock (an empty file)

How a run is written:

1. :func:`stage_run` makes ``ROOT/runs/.<run-id>.partial/`` with an owner record
   (``.owner.json``: pid, host, process start); the report, the tables, the charts
   and the quarantine are written there (:meth:`StagedRun.path` refuses any name
   that would leave the folder).
2. :func:`commit_run` hashes every file, writes ``manifest.json`` and, holding the
   output folder's lock, renames the folder to ``ROOT/runs/<run-id>`` in one step,
   so a crash never leaves a half-written run in place.
3. Still holding the lock, :func:`publish` points ``latest`` at the newest
   successful run in ``runs/`` (by start time, then run id: not the run that
   happened to finish last), with a new symlink renamed over the old one. The
   top-level entries are symlinks through ``latest``, made once, so they switch
   with it in the same instant: a reader never sees the report of one run beside
   the tables of another. Then dead runs' leftovers are removed (a ``.partial``
   folder whose owner process is gone, scratch folders of earlier versions) and,
   with ``keep_runs``, the oldest run folders beyond that number (never the one
   ``latest`` points at).

Where symlinks are not available, ``latest`` is a pointer file and the top-level
entries are copies, replaced entry by entry under the lock (the manifest last).

Every process that publishes to ``ROOT`` takes an exclusive ``fcntl.flock`` on
``ROOT/.growth.lock``, so publications to one folder never interleave (on
systems without ``fcntl`` there is no lock).

A failed run (:func:`commit_run` with ``status="failed"``) is kept in ``runs/``
with its quarantine, its manifest and ``failure.md``; ``latest`` and the
top-level entries keep pointing at the last good run.

:func:`check_output_folder` is called before a run does any work: it refuses an
output folder that cannot be written, a file in the way, and a ``runs``,
``latest`` or top-level entry that is a symlink leading elsewhere.

No Prefect here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

import polars as pl

from pipeline.errors import GrowthError
from pipeline.runinfo import canonical_json, sha256_file

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no publication lock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FAILURE",
    "LATEST",
    "LOCK",
    "MANIFEST",
    "MIRRORED",
    "OWNER",
    "QUARANTINE",
    "REPORT",
    "RUNS",
    "CommittedRun",
    "OutputPathError",
    "PublishError",
    "StagedRun",
    "check_output_folder",
    "CSV_MAX_ROWS",
    "commit_run",
    "discard_run",
    "file_entries",
    "latest_run",
    "manifest_text",
    "new_run_id",
    "output_lock",
    "publish",
    "read_latest",
    "safe_path",
    "stage_run",
    "table_formats",
    "timestamp_text",
    "write_table",
]

REPORT = "report.html"
MANIFEST = "manifest.json"
QUARANTINE = "quarantine.csv"
FAILURE = "failure.md"
RUNS = "runs"
LATEST = "latest"
LOCK = ".growth.lock"
OWNER = ".owner.json"
MIRRORED: tuple[str, ...] = (REPORT, QUARANTINE, "tables", "charts", MANIFEST)
"""Entries of the newest successful run shown at the top of the output folder
(symlinks through ``latest``; where copied, in this order, the manifest last)."""

_FOLDERS = frozenset({"tables", "charts"})
_PARTIAL = ".partial"
_RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{4,32}$")
_PARTIAL_NAME = re.compile(r"^\.([0-9]{8}T[0-9]{6}Z-[0-9a-f]{4,32})\.partial$")
_SCRATCH = re.compile(r"^\.(mirror|latest|link)-")
_STALE_SECONDS = 24 * 3600
"""A staging folder without an owner record (from an earlier version) is removed
once it is this old; one with an owner record as soon as its owner is gone."""


CSV_MAX_ROWS = 50_000
"""A table with more rows than this (the per-row and per-person tables of a large study:
residuals, random effects) is written as Parquet only; smaller ones as CSV and Parquet.
At 50,000 rows a CSV is a few MB, still quick to open in a spreadsheet; the per-row
CSVs of 1,000,000 persons were 400 MB and took longer to write than the whole fit."""


def table_formats(table: pl.DataFrame) -> tuple[str, ...]:
    """The file formats a table is written in: ``("csv", "parquet")``, or ``("parquet",)``
    above :data:`CSV_MAX_ROWS` rows."""
    return ("csv", "parquet") if table.height <= CSV_MAX_ROWS else ("parquet",)


def write_table(folder: Path, name: str, table: pl.DataFrame) -> tuple[Path, ...]:
    """``folder/<name>.csv`` (spreadsheet-safe, see :mod:`pipeline.csvsafe`) and
    ``folder/<name>.parquet`` (raw values), the CSV only up to :data:`CSV_MAX_ROWS` rows."""
    from pipeline.csvsafe import csv_safe

    written: list[Path] = []
    for suffix in table_formats(table):
        path = folder / f"{name}.{suffix}"
        if suffix == "csv":
            csv_safe(table).write_csv(path)
        else:
            table.write_parquet(path, statistics=True)
        written.append(path)
    return tuple(written)


class OutputPathError(GrowthError):
    """An output path that would leave the output folder, or a folder we must not overwrite."""


class PublishError(OutputPathError):
    """A run folder is complete and in place, but ``latest`` or the top level could not follow."""


def timestamp_text(moment: datetime) -> str:
    """``2026-11-25T19:56:06Z``: UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _precise_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    """A run folder in place, with the manifest that describes it.

    ``published`` is true when ``latest`` points at this run after the commit (a
    successful run that started before the one already published is kept, but is
    not published over it).
    """

    root: Path
    run_id: str
    folder: Path
    manifest: Mapping[str, Any]
    status: Literal["succeeded", "failed"]
    published: bool = False

    @property
    def report(self) -> Path | None:
        """The run's own ``report.html`` (``None`` for a failed run)."""
        path = self.folder / REPORT
        return path if path.exists() else None

    @property
    def latest_report(self) -> Path:
        """The stable path of the newest report: ``root/report.html``."""
        return self.root / REPORT


# ---------------------------------------------------------------- the output folder


def _link_text(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _refuse_link(path: Path, expected: str) -> OutputPathError:
    return OutputPathError(
        f"{path}: is a symbolic link to {_link_text(path)!r}, not one growth made "
        f"(expected {expected}); growth writes only inside the output folder: remove it"
    )


def _check_layout(root: Path) -> None:
    """Refuse planted symlinks and things in the way (no writing)."""
    runs = root / RUNS
    if runs.is_symlink():
        raise _refuse_link(runs, "a folder")
    if runs.exists() and not runs.is_dir():
        raise OutputPathError(f"{runs}: exists and is not a folder; expected the runs folder")
    pointer = root / LATEST
    if pointer.is_symlink():
        target = _link_text(pointer) or ""
        if not _is_run_link(target):
            raise _refuse_link(pointer, f"'{RUNS}/<run-id>'")
    elif pointer.is_dir():
        raise OutputPathError(f"{pointer}: is a folder; expected the 'latest' pointer")
    for name in MIRRORED:
        entry = root / name
        if entry.is_symlink() and _link_text(entry) != f"{LATEST}/{name}":
            raise _refuse_link(entry, f"'{LATEST}/{name}'")


def _is_run_link(target: str) -> bool:
    parts = target.split("/")
    return len(parts) == 2 and parts[0] == RUNS and bool(_RUN_ID.match(parts[1]))


def check_output_folder(root: Path) -> Path:
    """Make sure a run can be written to ``root`` before any work is done; return it.

    Creates ``root`` and ``root/runs`` when missing, refuses a file in the way and a
    ``runs``, ``latest`` or top-level entry that is a symlink growth did not make
    (it could send the run elsewhere), and writes and removes a probe file, so that
    a read-only folder is reported now, with one line, not after the analysis.
    """
    root = Path(root)
    for folder in (root, root / RUNS):
        if folder.is_symlink() and folder != root:
            raise _refuse_link(folder, "a folder")
        if folder.exists() and not folder.is_dir():
            raise OutputPathError(
                f"{folder}: exists and is not a folder; expected an output folder "
                "(choose another with --output or [output] dir)"
            )
    _check_layout(root)
    try:
        (root / RUNS).mkdir(parents=True, exist_ok=True)
        with output_lock(root):
            handle, probe = tempfile.mkstemp(prefix=".probe-", dir=root / RUNS)
            os.close(handle)
            os.unlink(probe)
    except OSError as error:
        where = error.filename or root
        raise OutputPathError(
            f"{where}: the output folder cannot be written "
            f"({error.strerror or type(error).__name__}); choose another with --output "
            "or [output] dir"
        ) from None
    return root


@contextlib.contextmanager
def output_lock(root: Path) -> Iterator[None]:
    """Hold the exclusive publication lock of ``root`` (``root/.growth.lock``).

    The lock file is created when missing and never removed (removing it would let
    two processes lock two different files).
    """
    descriptor = os.open(Path(root) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


# ---------------------------------------------------------------- owner records


def _process_start(pid: int) -> str | None:
    """The start time of a process in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()[19]


def _owner_record() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "process_start": _process_start(pid)}


def _owner_gone(owner: Mapping[str, Any]) -> bool:
    """True only when the owner is surely gone: same host and no such process (or a new one)."""
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # someone else's live process
    recorded = owner.get("process_start")
    current = _process_start(pid)
    return recorded is not None and current is not None and recorded != current


def _partial_is_dead(folder: Path) -> bool:
    try:
        owner = json.loads((folder / OWNER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        try:
            age = time.time() - folder.stat().st_mtime
        except OSError:
            return False
        return age > _STALE_SECONDS
    except (OSError, ValueError):
        return False
    return isinstance(owner, dict) and _owner_gone(owner)


# ---------------------------------------------------------------- writing a run


def stage_run(root: Path, run_id: str, started: datetime) -> StagedRun:
    """Make the staging folder ``root/runs/.<run-id>.partial/`` and return a :class:`StagedRun`.

    The folder holds an owner record (``.owner.json``) so that, if this process
    dies, a later run can tell the folder is dead and remove it.
    """
    if not _RUN_ID.match(run_id):
        raise OutputPathError(f"run id {run_id!r} is not of the form 20261125T195606Z-1a2b3c4d")
    root = Path(root)
    check_output_folder(root)
    runs = root / RUNS
    staging = runs / f".{run_id}{_PARTIAL}"
    with output_lock(root):
        if (runs / run_id).exists():
            raise OutputPathError(f"{runs / run_id}: a run with this id exists already")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        (staging / OWNER).write_text(canonical_json(_owner_record()) + "\n", encoding="utf-8")
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
        if relative in (MANIFEST, OWNER):
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
    keep_runs: int | None = None,
) -> CommittedRun:
    """Write the manifest, rename the staging folder into place and publish.

    ``fields`` are the study's facts (config and data hashes, row counts, versions,
    ...); the run id, status, timestamps and the file list are added here. For a
    successful run the folder must hold ``report.html``. The rename and the
    publication happen under the output folder's lock (:func:`publish`).

    A problem after the run folder is in place raises :class:`PublishError`,
    which says that the run itself is complete.
    """
    if status == "succeeded" and not (staged.staging / REPORT).is_file():
        raise OutputPathError(f"{staged.staging}: no {REPORT} was written; nothing to publish")
    manifest = dict(fields)
    manifest.update(
        run_id=staged.run_id,
        status=status,
        timestamp=timestamp_text(staged.started),
        started=_precise_text(staged.started),
        files=file_entries(staged.staging),
    )
    (staged.staging / MANIFEST).write_text(manifest_text(manifest), encoding="utf-8")
    _fsync_tree(staged.staging)
    with output_lock(staged.root):
        if staged.final.exists():
            raise OutputPathError(f"{staged.final}: a run with this id exists already")
        (staged.staging / OWNER).unlink(missing_ok=True)
        os.rename(staged.staging, staged.final)
        try:
            latest = _publish_locked(staged.root, keep_runs=keep_runs)
        except (OSError, GrowthError) as error:
            detail = str(error) if isinstance(error, GrowthError) else _os_text(error)
            raise PublishError(
                f"{staged.final}: the run is complete ({status}) but could not be published: "
                f"{detail}"
            ) from error
    return CommittedRun(
        root=staged.root,
        run_id=staged.run_id,
        folder=staged.final,
        manifest=manifest,
        status=status,
        published=latest == staged.run_id,
    )


def _os_text(error: OSError) -> str:
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or type(error).__name__}"


# ---------------------------------------------------------------- publication


def publish(root: Path, *, keep_runs: int | None = None) -> str | None:
    """Bring ``latest`` and the top level up to date under the lock; return the latest run id.

    Also what repairs an output folder after a run was killed between its rename
    and its publication: the newest successful run in ``runs/`` is published.
    """
    root = Path(root)
    _check_layout(root)
    with output_lock(root):
        return _publish_locked(root, keep_runs=keep_runs)


def _run_folders(root: Path) -> list[Path]:
    runs = root / RUNS
    if not runs.is_dir():
        return []
    return sorted(
        (path for path in runs.iterdir() if _RUN_ID.match(path.name) and path.is_dir()),
        key=lambda path: path.name,
    )


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _start_key(folder: Path, manifest: Mapping[str, Any]) -> tuple[str, str, str]:
    """Order of runs: the start second (the run id's prefix), the precise start, the run id."""
    started = manifest.get("started")
    return (folder.name[:16], started if isinstance(started, str) else "", folder.name)


def _newest_success(root: Path) -> Path | None:
    best: tuple[tuple[str, str, str], Path] | None = None
    for folder in _run_folders(root):
        manifest = _read_manifest(folder)
        if manifest is None or manifest.get("status") != "succeeded":
            continue
        if not (folder / REPORT).is_file():
            continue
        key = _start_key(folder, manifest)
        if best is None or key > best[0]:
            best = (key, folder)
    return None if best is None else best[1]


def _publish_locked(root: Path, *, keep_runs: int | None) -> str | None:
    _check_layout(root)
    _remove_leftovers(root)
    newest = _newest_success(root)
    if newest is not None:
        linked = _point_latest(root, newest.name)
        if linked:
            _link_top_level(root)
        else:
            _mirror(root, newest, newest.name)
    if keep_runs is not None:
        _prune(root, keep_runs, keep=None if newest is None else newest.name)
    return None if newest is None else newest.name


def _point_latest(root: Path, run_id: str) -> bool:
    """Make ``root/latest`` point at ``runs/<run-id>`` atomically; False for a pointer file."""
    relative = f"{RUNS}/{run_id}"
    pointer = root / LATEST
    if pointer.exists() and not pointer.is_symlink() and pointer.is_dir():
        raise OutputPathError(f"{pointer}: is a folder; expected the 'latest' pointer")
    if pointer.is_symlink() and _link_text(pointer) == relative:
        return True
    temporary = root / f".{LATEST}-{run_id}"
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    try:
        os.symlink(relative, temporary, target_is_directory=True)
        linked = True
    except (OSError, NotImplementedError):
        temporary.write_text(relative + "\n", encoding="utf-8")
        linked = False
    os.replace(temporary, pointer)
    return linked


def _link_top_level(root: Path) -> None:
    """Make each top-level entry a symlink ``latest/<name>`` (once; an old copy is replaced).

    A copy left by an earlier version is replaced only when the folder holds its
    manifest (a folder growth did not write is refused).
    """
    ours = (root / MANIFEST).is_file() or (root / MANIFEST).is_symlink()
    for name in MIRRORED:
        entry = root / name
        wanted = f"{LATEST}/{name}"
        if entry.is_symlink():
            if _link_text(entry) == wanted:
                continue
            raise _refuse_link(entry, f"'{wanted}'")
        if entry.exists() and entry.is_dir() != (name in _FOLDERS):
            raise OutputPathError(f"{entry}: exists and is not what growth writes there")
        if entry.is_dir() and not ours:
            raise OutputPathError(
                f"{entry}: a folder that growth did not write is in the way; "
                "choose an empty output folder"
            )
    for name in MIRRORED:  # the manifest last: it is what marks the folder as ours
        entry = root / name
        wanted = f"{LATEST}/{name}"
        if entry.is_symlink():
            continue
        temporary = root / f".link-{name}"
        if temporary.is_symlink() or temporary.exists():
            temporary.unlink()
        os.symlink(wanted, temporary, target_is_directory=name in _FOLDERS)
        if entry.is_dir():
            old = root / f".link-old-{name}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(entry, old)
            os.rename(temporary, entry)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, entry)


def _remove_leftovers(root: Path) -> None:
    """Remove dead runs' staging folders and scratch entries (called under the lock)."""
    for entry in list(root.iterdir()) if root.is_dir() else []:
        if _SCRATCH.match(entry.name):
            # made and removed under the lock: one seen while we hold it is dead
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
    runs = root / RUNS
    if not runs.is_dir():
        return
    for entry in list(runs.iterdir()):
        if _PARTIAL_NAME.match(entry.name) and entry.is_dir() and not entry.is_symlink():
            if _partial_is_dead(entry):
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(".probe-") and entry.is_file():
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime > 60:
                    entry.unlink()


def _prune(root: Path, keep_runs: int, *, keep: str | None) -> None:
    """Keep the newest ``keep_runs`` run folders (by run id) and the one ``latest`` points at."""
    folders = _run_folders(root)
    kept = {folder.name for folder in folders[-keep_runs:]} if keep_runs > 0 else set()
    if keep is not None:
        kept.add(keep)
    for folder in folders:
        if folder.name not in kept:
            shutil.rmtree(folder, ignore_errors=True)


def latest_run(root: Path) -> Path | None:
    """The folder ``latest`` points to (symlink or pointer file), or ``None``.

    A pointer that leads anywhere but ``runs/<run-id>`` is ignored.
    """
    pointer = Path(root) / LATEST
    if pointer.is_symlink():
        text = _link_text(pointer) or ""
    elif pointer.is_file():
        try:
            text = pointer.read_text(encoding="utf-8").strip()
        except OSError:
            return None
    else:
        return None
    if not _is_run_link(text):
        return None
    target = Path(root) / RUNS / text.split("/")[1]
    return target if target.is_dir() and not target.is_symlink() else None


def read_latest(
    root: Path, table: str = "fixed_effects"
) -> tuple[dict[str, Any] | None, pl.DataFrame | None]:
    """The newest successful run's manifest and one of its tables (``None`` where unreadable)."""
    folder = latest_run(root)
    if folder is None:
        return None, None
    manifest = _read_manifest(folder)
    if manifest is None:
        return None, None
    try:
        frame = pl.read_csv(folder / "tables" / f"{table}.csv")
    except Exception:  # noqa: BLE001 - an older run without the table, or another layout
        frame = None
    return manifest, frame


def _mirror(root: Path, run_folder: Path, run_id: str) -> None:
    """Without symlinks: copy the run's entries to the top of ``root``, each renamed into place."""
    present = [name for name in MIRRORED if (run_folder / name).exists()]
    ours = (root / MANIFEST).is_file()
    for name in MIRRORED:
        existing = root / name
        if existing.exists() and existing.is_dir() != (name in _FOLDERS):
            raise OutputPathError(f"{existing}: exists and is not what growth writes there")
        if existing.is_dir() and not ours:
            raise OutputPathError(
                f"{existing}: a folder that growth did not write is in the way; "
                "choose an empty output folder"
            )
    current = _read_manifest(root)
    if current is not None and current.get("run_id") == run_id:
        return
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
