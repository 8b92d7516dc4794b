"""Facts about a run that are not statistics: versions, hashes, fingerprints.

- :func:`library_versions` -- Python and the versions of the packages that shape
  the results (shown in the report and written to the manifest);
- :func:`code_version` -- a digest of the source of ``pipeline`` and ``schemas``,
  so that a cached fit is never reused after the code that made it changed;
- :func:`sha256_bytes`, :func:`sha256_file`, :func:`canonical_json` -- the hashes
  and the deterministic JSON the manifest is made of;
- :func:`analysis_fingerprint` -- the cache key of a study's fits.

No Prefect here.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

__all__ = [
    "DISTRIBUTIONS",
    "FIT_SECTIONS",
    "analysis_fingerprint",
    "canonical_json",
    "changes_since",
    "code_version",
    "library_versions",
    "sha256_bytes",
    "sha256_file",
]

DISTRIBUTIONS: tuple[str, ...] = (
    "growthcurves",
    "numpy",
    "scipy",
    "polars",
    "statsmodels",
    "pandera",
    "pydantic",
    "altair",
    "vl-convert-python",
    "jinja2",
    "prefect",
)
"""Packages whose versions are reported (the project itself first)."""

FIT_SECTIONS: tuple[str, ...] = ("data", "time", "models", "comparison", "analysis")
"""Config sections that change what is fitted; the others (titles, report options,
output folder, schedule) do not invalidate cached fits."""

_CODE_PACKAGES = ("pipeline", "schemas")
_CODE_SUFFIXES = (".py", ".html", ".j2", ".css", ".js", ".json")


def library_versions(names: Iterable[str] = DISTRIBUTIONS) -> dict[str, str]:
    """``{"python": "3.11.7", "numpy": "2.1.0", ...}``; a missing package reads "not installed"."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """JSON-safe version of ``value``: NaN and infinities become null, paths text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return value.as_posix()
    return value


def canonical_json(value: Any, *, indent: int | None = None) -> str:
    """Deterministic JSON: sorted keys, no NaN (null instead), UTF-8 text kept as is."""
    return json.dumps(
        _plain(value),
        sort_keys=True,
        indent=indent,
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ": ") if indent is not None else (",", ":"),
    )


@lru_cache(maxsize=1)
def code_version() -> str:
    """Digest of the project's library code (``pipeline`` and ``schemas`` sources).

    The package version alone would not change while a fit is being developed;
    the digest of the files does, so a cached fit is reused only with the very
    code that made it.
    """
    import importlib

    digest = hashlib.sha256()
    for package in _CODE_PACKAGES:
        module = importlib.import_module(package)
        root = Path(module.__file__ or "").parent
        files = sorted(
            path
            for path in root.rglob("*")
            if path.is_file() and path.suffix in _CODE_SUFFIXES and "__pycache__" not in path.parts
        )
        for path in files:
            relative = f"{package}/{path.relative_to(root).as_posix()}"
            digest.update(relative.encode())
            digest.update(b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def analysis_fingerprint(
    *,
    data_sha256: str,
    config: Mapping[str, Any],
    code: str,
    versions: Mapping[str, str],
) -> str:
    """The cache key of a study's fits.

    ``config`` is the study config as plain data (``cfg.model_dump(mode="json")``);
    only :data:`FIT_SECTIONS` count. ``versions`` are the library versions (a new
    numpy or scipy may change the last digits of an estimate).
    """
    payload = {
        "data": data_sha256,
        "config": {section: config.get(section) for section in FIT_SECTIONS},
        "code": code,
        "versions": {name: versions[name] for name in sorted(versions) if name != "prefect"},
    }
    return sha256_bytes(canonical_json(payload).encode())


_COUNTS = ("rows_in", "rows_used", "rows_quarantined", "persons", "occasions")


def changes_since(
    previous: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    *,
    previous_fixed: pl.DataFrame | None = None,
    current_fixed: pl.DataFrame | None = None,
) -> dict[str, Any] | None:
    """What changed since the previous successful run (``None`` when there is none).

    ``previous``/``current`` are manifests (the current one without its files);
    ``*_fixed`` the ``fixed_effects`` tables. Gives whether the data, the config and
    the run's overrides changed (with the hashes and overrides before and after),
    the counts before and after, and per model and term the estimate before and
    after (terms only in one run are listed as added or removed).
    """
    if previous is None:
        return None

    def digest(manifest: Mapping[str, Any], part: str) -> Any:
        return (manifest.get(part) or {}).get("sha256")

    overrides = {
        "previous": dict(previous.get("overrides") or {}),
        "current": dict(current.get("overrides") or {}),
    }
    changes: dict[str, Any] = {
        "previous_run_id": previous.get("run_id"),
        "previous_timestamp": previous.get("timestamp"),
        "data_changed": digest(previous, "data") != digest(current, "data"),
        "config_changed": digest(previous, "config") != digest(current, "config"),
        "overrides_changed": overrides["previous"] != overrides["current"],
        "data": {"previous": digest(previous, "data"), "current": digest(current, "data")},
        "config": {"previous": digest(previous, "config"), "current": digest(current, "config")},
        "overrides": overrides,
        "counts": {},
    }
    for key in _COUNTS:
        before, after = previous.get(key), current.get(key)
        if isinstance(before, int) and isinstance(after, int):
            changes["counts"][key] = {
                "previous": before,
                "current": after,
                "change": after - before,
            }
    keys = ["model", "term"]
    if (
        previous_fixed is not None
        and current_fixed is not None
        and {*keys, "estimate"} <= set(previous_fixed.columns)
        and {*keys, "estimate"} <= set(current_fixed.columns)
    ):
        before = previous_fixed.select(*keys, pl.col("estimate").alias("previous"))
        after = current_fixed.select(*keys, pl.col("estimate").alias("current"))
        joined = after.join(before, on=keys, how="full", coalesce=True).sort(keys)
        both = joined.filter(pl.col("previous").is_not_null() & pl.col("current").is_not_null())
        changes["estimates"] = [
            {**row, "change": row["current"] - row["previous"]}
            for row in both.iter_rows(named=True)
        ]
        changes["terms_added"] = [
            f"{row['model']}: {row['term']}"
            for row in joined.filter(pl.col("previous").is_null()).iter_rows(named=True)
        ]
        changes["terms_removed"] = [
            f"{row['model']}: {row['term']}"
            for row in joined.filter(pl.col("current").is_null()).iter_rows(named=True)
        ]
    return changes
