"""A commented starter study config (TOML) guessed from a data file: ``growth init DATA``.

:func:`starter_config` reads a long-layout CSV or Parquet file (one row per person and
occasion) and writes the text of a config that ``growth validate`` accepts:

- the person column: an id-like name (``id``, ``pid``, ``subject``, ...) whose values
  repeat, else the repeating column with the most distinct values;
- the time column: a numeric column that varies within persons with a time-like name
  (``time``, ``age``, ``wave``, ...), else the one with the fewest distinct values;
- the outcome: a numeric column that varies within persons with an outcome-like name,
  else the one with the most distinct values;
- person-level covariates: every other column constant within each person; a text
  column gets its levels declared in ``[data.categories]`` (up to ``[limits]
  max_levels``), a numeric one stays numeric;
- candidate higher levels (``clusters``): an id-like column constant within persons
  with several persons per value and more than two values, such as a school id,
  innermost (most values) first: written as a commented ``# clusters = [...]`` line
  ready to uncomment, and the person-level covariates that are constant within a
  candidate cluster (the outermost one they are constant within) as a commented
  ``# cluster_covariates = {...}`` line (to be moved there from person_covariates);
- the time range of the data, and time centred at the first occasion.

Every guess is marked ``# guessed`` in the text, with the alternatives. Nothing is
evaluated; names from the data are written as TOML strings (escaped) and shown in
comments on one line. Pure: no Prefect, no file written here (the caller writes).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline.errors import DataError, one_line

__all__ = ["Guesses", "guess_roles", "read_for_starter", "starter_config"]

_PERSON_NAMES = (
    "id",
    "pid",
    "person",
    "subject",
    "participant",
    "child",
    "patient",
    "pupil",
    "student",
    "respondent",
    "case",
    "individual",
)
_TIME_NAMES = (
    "time",
    "age",
    "wave",
    "visit",
    "occasion",
    "month",
    "months",
    "year",
    "years",
    "week",
    "weeks",
    "day",
    "days",
    "session",
    "grade",
    "t",
)
_OUTCOME_NAMES = ("outcome", "score", "y", "value", "response", "result", "dv")
_CLUSTER_NAMES = (
    "school",
    "class",
    "classroom",
    "site",
    "clinic",
    "centre",
    "center",
    "cluster",
    "hospital",
    "ward",
    "team",
    "family",
    "household",
    "unit",
    "practice",
    "region",
)
_MAX_LEVELS = 50
_SEPARATORS = (",", ";", "\t", "|")


@dataclass(frozen=True, slots=True)
class Guesses:
    """The roles guessed for each column, with the runners-up for the comments."""

    person: str
    time: str
    outcome: str
    person_covariates: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    clusters: tuple[str, ...]
    other: tuple[str, ...]
    time_range: tuple[float, float]
    alternatives: dict[str, tuple[str, ...]]
    rows: int
    persons: int
    cluster_covariates: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _words(name: str) -> set[str]:
    return {part for part in re.split(r"[^a-z0-9]+", name.lower()) if part}


def _matches(name: str, hints: tuple[str, ...]) -> int:
    """2 for an exact (case-insensitive) hint, 1 for a hint as a word of the name."""
    lowered = name.lower()
    if lowered in hints:
        return 2
    return 1 if _words(name) & set(hints) else 0


def read_for_starter(path: Path, *, separator: str | None = None) -> tuple[pl.DataFrame, str]:
    """The data with inferred types, and the CSV separator used (``""`` for Parquet)."""
    display = one_line(str(path))
    if not path.is_file():
        raise DataError(f"{display}: data file not found; expected a CSV or Parquet file")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pl.read_parquet(path), ""
        raw = path.read_bytes()
        if separator is None:
            header = raw.split(b"\n", 1)[0].decode("utf-8", "replace")
            counts = {symbol: header.count(symbol) for symbol in _SEPARATORS}
            separator = max(counts, key=counts.__getitem__) if any(counts.values()) else ","
        frame = pl.read_csv(
            raw,
            separator=separator,
            null_values=["", "NA", "N/A", "NULL", "null", "."],
            infer_schema_length=10_000,
        )
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{display}: cannot be read: {one_line(text)}") from None
    frame = frame.rename({name: name.lstrip("\ufeff").strip() for name in frame.columns})
    return frame, separator


def _constant_within(frame: pl.DataFrame, person: str, column: str) -> bool:
    return bool(
        frame.group_by(person)
        .agg(pl.col(column).drop_nulls().n_unique().alias("n"))
        .select((pl.col("n") <= 1).all())
        .item()
    )


def _pick(candidates: list[str], score) -> tuple[str | None, tuple[str, ...]]:
    ranked = sorted(candidates, key=score)
    return (ranked[0] if ranked else None), tuple(ranked[1:4])


def guess_roles(frame: pl.DataFrame) -> Guesses:
    """Guess the person, time and outcome columns and the covariates (see the module)."""
    if frame.height == 0 or frame.width < 3:
        raise DataError(
            "the data need at least three columns (person, time, outcome) and one row; "
            f"found {frame.width} column(s) and {frame.height} row(s)"
        )
    distinct = {name: frame.get_column(name).n_unique() for name in frame.columns}
    repeating = [
        name
        for name in frame.columns
        if 2 <= distinct[name] <= frame.height / 2
        and not frame.schema[name].is_float()
        and frame.get_column(name).null_count() == 0
    ]
    person, person_alternatives = _pick(
        repeating, lambda name: (-_matches(name, _PERSON_NAMES), -distinct[name], name)
    )
    if person is None:
        raise DataError(
            "cannot guess the person column: no column has values that repeat across rows "
            "(expected long data, one row per person and occasion)"
        )
    numeric = [name for name in frame.columns if name != person and frame.schema[name].is_numeric()]
    varying = [name for name in numeric if not _constant_within(frame, person, name)]
    time, time_alternatives = _pick(
        varying, lambda name: (-_matches(name, _TIME_NAMES), distinct[name], name)
    )
    if time is None:
        raise DataError(
            f"cannot guess the time column: no numeric column varies within persons "
            f"(person column guessed: {one_line(person)})"
        )
    outcomes = [name for name in varying if name != time]
    outcome, outcome_alternatives = _pick(
        outcomes, lambda name: (-_matches(name, _OUTCOME_NAMES), -distinct[name], name)
    )
    if outcome is None:
        raise DataError(
            f"cannot guess the outcome column: no numeric column other than the time "
            f"({one_line(time)}) varies within persons"
        )
    persons = distinct[person]
    covariates: list[str] = []
    categories: dict[str, tuple[str, ...]] = {}
    clusters: list[str] = []
    other: list[str] = []
    for name in frame.columns:
        if name in {person, time, outcome}:
            continue
        if not _constant_within(frame, person, name):
            other.append(name)
            continue
        values = frame.get_column(name).drop_nulls()
        count = values.n_unique()
        # "school", "school_id", "schoolid", "SiteCode" look like the id of a higher level
        stem = re.sub(r"[_ .-]?(id|code|no|nr|num)$", "", name.lower())
        looks_like_id = (
            _matches(name, _CLUSTER_NAMES)
            or _matches(name, _PERSON_NAMES)
            or (stem != name.lower() and _matches(stem, _CLUSTER_NAMES))
        )
        if looks_like_id and 3 <= count <= persons / 2:
            clusters.append(name)
            continue
        dtype = frame.schema[name]
        if dtype.is_numeric():
            covariates.append(name)
        elif dtype == pl.String or dtype == pl.Boolean:
            if count > _MAX_LEVELS or count < 2:
                other.append(name)
                continue
            covariates.append(name)
            categories[name] = tuple(sorted(values.cast(pl.String).unique().to_list()))
        else:
            other.append(name)
    clusters.sort(key=lambda name: (-distinct[name], name))
    cluster_covariates: dict[str, list[str]] = {}
    for name in covariates:
        constant = [
            cluster
            for cluster in clusters
            if frame.get_column(name).drop_nulls().n_unique() > 1
            and _constant_within(frame.filter(pl.col(cluster).is_not_null()), cluster, name)
        ]
        if constant:
            cluster_covariates.setdefault(constant[-1], []).append(name)
    times = frame.get_column(time).drop_nulls().cast(pl.Float64)
    return Guesses(
        person=person,
        time=time,
        outcome=outcome,
        person_covariates=tuple(covariates),
        categories=categories,
        clusters=tuple(clusters),
        other=tuple(other),
        time_range=(float(times.min()), float(times.max())),
        alternatives={
            "person": person_alternatives,
            "time": time_alternatives,
            "outcome": outcome_alternatives,
        },
        rows=frame.height,
        persons=persons,
        cluster_covariates={
            cluster: tuple(cluster_covariates[cluster])
            for cluster in clusters
            if cluster in cluster_covariates
        },
    )


def _string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def _key(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else _string(text)


def _strings(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_string(value) for value in values) + "]"


def _shown(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(one_line(value) for value in values) if values else "none"


def _number(value: float) -> str:
    text = repr(float(value))
    return text if text not in {"inf", "-inf", "nan"} else "0.0"


def _free_name(base: str, taken: set[str]) -> str:
    name, index = base, 2
    while name in taken:
        name, index = f"{base}{index}", index + 1
    return name


def starter_config(data_path: Path, *, config_path: Path) -> str:
    """The text of a starter config for ``data_path``, to be written at ``config_path``.

    Paths in the text are relative to ``config_path``'s folder, as the config
    loader resolves them.
    """
    frame, separator = read_for_starter(data_path)
    guesses = guess_roles(frame)
    base = config_path.parent.resolve()
    relative_data = os.path.relpath(data_path.resolve(), base)
    study = re.sub(r"[^A-Za-z0-9_-]+", "_", data_path.stem).strip("_") or "study"
    relative_output = os.path.relpath(Path.cwd().resolve() / "outputs" / study, base)
    coded = _free_name(f"{re.sub(r'[^A-Za-z0-9_]+', '_', guesses.time)}_c", set(frame.columns))
    low, high = guesses.time_range
    alternatives = guesses.alternatives
    lines = [
        f"# Starter config written by `growth init` from {one_line(data_path.name)}",
        f"# ({guesses.rows:,} rows, {guesses.persons:,} persons). Lines marked 'guessed' are",
        "# the tool's guesses from the data: check them, then run `growth validate` on this",
        "# file and `growth run` to get the report.",
        "",
        "[study]",
        f"name = {_string(study)}",
        f"title = {_string(f'Growth of {guesses.outcome}')}",
        "",
        "[data]",
        f"path = {_string(relative_data)}",
        'layout = "long"',
    ]
    if separator and separator != ",":
        lines.append(f"csv_separator = {_string(separator)}")
    lines += [
        f"person = {_string(guesses.person)}   # guessed; other candidates: "
        f"{_shown(alternatives['person'])}",
        f"time = {_string(guesses.time)}   # guessed; other candidates: "
        f"{_shown(alternatives['time'])}",
        f"outcome = {_string(guesses.outcome)}   # guessed; other candidates: "
        f"{_shown(alternatives['outcome'])}",
        f"person_covariates = {_strings(guesses.person_covariates)}   # guessed: constant "
        "within each person",
        "time_covariates = []",
    ]
    if guesses.other:
        lines.append(
            f"# other columns (vary within persons, or unusable as categories): "
            f"{_shown(guesses.other)}"
        )
    if guesses.clusters:
        lines += [
            f"# candidate higher levels (ids constant within a person, several persons "
            f"each), innermost first: {_shown(guesses.clusters)}; to model them, uncomment:",
            f"# clusters = {_strings(guesses.clusters)}",
        ]
    if guesses.cluster_covariates:
        listed = "; ".join(
            f"{one_line(cluster)}: {_shown(names)}"
            for cluster, names in guesses.cluster_covariates.items()
        )
        table = ", ".join(
            f"{_key(cluster)} = {_strings(names)}"
            for cluster, names in guesses.cluster_covariates.items()
        )
        lines += [
            f"# constant within a candidate cluster too ({listed}): to make them cluster-level",
            "# covariates, uncomment this line with clusters and remove them from person_covariates:",
            f"# cluster_covariates = {{ {table} }}",
        ]
    lines += [
        f"time_range = [{_number(low)}, {_number(high)}]   # the range in the data",
        "max_invalid_fraction = 0.05",
    ]
    if guesses.categories:
        lines += ["", "[data.categories]   # declared levels; the first is the reference"]
        for name, levels in guesses.categories.items():
            lines.append(f"{_key(name)} = {_strings(levels)}")
    lines += [
        "",
        "[time]",
        f"name = {_string(coded)}   # the coded time used in the models",
        f"centre = {_number(low)}   # status is read at the first occasion",
        "scale = 1.0",
        "",
        "[models]",
        "polynomial = 1",
        "# predictors of status and change (person-level covariates), e.g.:",
    ]
    example = guesses.person_covariates[:1]
    lines += [
        f"# intercept_predictors = {_strings(example)}",
        f"# slope_predictors = {_strings(example)}",
        "",
        "[output]",
        f"dir = {_string(relative_output)}",
        "",
    ]
    return "\n".join(lines)
