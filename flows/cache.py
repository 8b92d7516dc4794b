"""Where a study's cached fits are kept: a private folder of the user, never the output folder.

Cached fits are Prefect results serialised with cloudpickle, and loading a pickle
can run any code. They are therefore kept out of the published output folder
(often a shared drive) in a per-user folder that only its owner can write:

- ``$GROWTH_CACHE_DIR/<study>`` when ``GROWTH_CACHE_DIR`` is set, else
- ``$XDG_CACHE_HOME/growthcurves/<study>`` (when ``XDG_CACHE_HOME`` is an absolute path), else
- ``~/.cache/growthcurves/<study>``.

Both the cache folder and ``<study>`` below it are created with mode 0700. A
folder that is not a directory, that is owned by another user, or that the group
or others can write is not used: one warning on stderr, and the run goes on
without the cache (the models are fitted; nothing is read from or written to it).
On systems without POSIX ownership (Windows) only the folder's existence is checked.

Beside each cached result, ``growth-analysis-<key>.origin.json`` records who wrote
it (the config, the checkout of the code, the run id, the time), so that a run
that reuses fits says where they came from: a fresh clone whose first run reuses
the fits of another checkout (same code, same data) says so.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import one_line

__all__ = [
    "CACHE_ENV",
    "cache_origin",
    "cache_root",
    "record_cache_origin",
    "study_cache_dir",
    "unsafe_reason",
]

CACHE_ENV = "GROWTH_CACHE_DIR"
"""Environment variable that overrides the cache folder (``<it>/<study>`` holds the fits)."""

_APP = "growthcurves"
_warned: set[tuple[str, str]] = set()


def cache_root() -> Path:
    """The folder that holds one cache folder per study (see the module docstring)."""
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / _APP


def unsafe_reason(folder: Path) -> str | None:
    """Why ``folder`` must not hold pickles (``None`` when it is a private folder)."""
    try:
        info = folder.stat()
    except OSError as error:
        return f"cannot be read ({error.strerror or type(error).__name__})"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None:  # no POSIX owner and mode bits to check (Windows)
        return None
    if info.st_uid != geteuid():
        return f"is owned by another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"can be written by other users (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def study_cache_dir(study: str) -> Path | None:
    """The study's private cache folder, created (mode 0700) when missing.

    Returns ``None``, after one warning on stderr, when the folder cannot be
    created or is not private; the caller then runs without the cache.
    """
    root = cache_root()
    folder = root / study
    if not study or study in {".", ".."} or Path(study).name != study:
        return _refuse(folder, f"the study name {study!r} is not a folder name")
    for path in (root, folder):
        try:
            path.mkdir(mode=0o700, parents=path is root, exist_ok=True)
        except OSError as error:
            return _refuse(path, f"cannot be created ({error.strerror or type(error).__name__})")
        reason = unsafe_reason(path)
        if reason is not None:
            return _refuse(path, reason)
    return folder


def _refuse(path: Path, reason: str) -> None:
    key = (str(path), reason)
    if key not in _warned:
        _warned.add(key)
        print(
            f"warning: cache folder {one_line(str(path))} {reason}; running without cached fits "
            f"(set {CACHE_ENV} to a private folder)",
            file=sys.stderr,
            flush=True,
        )
    return None


def _origin_path(folder: Path, fingerprint: str) -> Path:
    return folder / f"growth-analysis-{fingerprint}.origin.json"


def _checkout() -> str:
    """The folder of the code that runs (the checkout holding ``pipeline``)."""
    import pipeline

    return str(Path(pipeline.__file__).resolve().parents[1])


def record_cache_origin(folder: Path, fingerprint: str, *, config: Path, run_id: str) -> None:
    """Note beside a freshly cached result which config, checkout and run wrote it."""
    record = {
        "config": str(config),
        "checkout": _checkout(),
        "run_id": run_id,
        "written": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    target = _origin_path(folder, fingerprint)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        temporary.write_text(json.dumps(record, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)  # only a note: the cache works without it


def cache_origin(folder: Path, fingerprint: str) -> str:
    """Where reused fits came from: the cache folder, and who wrote them when recorded."""
    where = f"from {one_line(str(folder))}"
    try:
        record = json.loads(_origin_path(folder, fingerprint).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return where + " (who wrote them was not recorded)"
    if not isinstance(record, dict):
        return where
    parts = [f"written {record.get('written', '?')} by run {record.get('run_id', '?')}"]
    parts.append(f"of {one_line(str(record.get('config', '?')))}")
    checkout = record.get("checkout")
    if checkout and checkout != _checkout():
        parts.append(f"in another checkout, {one_line(str(checkout))}")
    return f"{where}, {' '.join(parts)}"
