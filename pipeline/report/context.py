"""What the report is made from, and the deterministic ways of making it small.

:class:`ReportContext` holds plain data only (strings, numbers, polars tables),
never live fit objects, so the report is a pure function of it and can be
tested on synthetic tables. The helpers here cut large tables down to a
bounded size with no randomness that is not seeded:

- :func:`sample_persons` keeps all rows of a seeded sample of persons;
- :func:`thin_quantiles` keeps evenly spaced order statistics (for QQ plots);
- :func:`sample_rows` keeps a seeded sample of rows (for scatter plots).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from schemas.tables import TABLE_NAMES

ANALYSIS_TABLES: tuple[str, ...] = TABLE_NAMES
"""The names of ``Analysis.tables`` (``schemas/tables.py``), in the order they are written."""


CHANGES_COLUMNS: tuple[str, ...] = ("quantity", "previous", "current", "change")
"""Columns of ``ReportContext.changes`` (all text, formatted for display)."""


def _empty(columns: Mapping[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=dict(columns))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportContext:
    """Everything the report shows, as plain data.

    Tables follow docs/CONTRACTS.md. Any table may be ``None`` or empty; the
    report then says "not available" in its place.

    ``level1_sample`` holds the rows of the persons drawn for the spaghetti plot
    (see :func:`sample_persons`) with columns ``person``, ``time`` (original
    units), ``outcome`` and ``group`` (the comparison group's label, or null).

    ``changes`` is what changed since the previous run, as text columns
    ``quantity``, ``previous``, ``current``, ``change`` (made by
    :func:`pipeline.report.changes_table`). ``None`` (no previous run) and an
    empty table (nothing changed) are shown the same way, so an unchanged rerun
    gives the same report as the first run.

    ``labels`` (``[data.labels]``) maps a categorical column to ``{level: label}``
    for legends, tables and findings; ``time_term`` is the coded time's name in
    the model formulas (``age1``), read as ``(time - time_centre) / time_scale``;
    ``chart_png`` asks for PNG copies of the charts beside the SVG files.

    ``outcome_name`` is the outcome column (the ``outcome`` column of the table
    files). A run of several outcomes (``[data] outcomes``) has one context per
    outcome in ``outcomes`` (each a whole one-outcome context whose
    ``missing_outcome`` counts the valid rows without a value of it); the run's own
    context then holds the run's facts (rows, reasons, config, versions, changes).
    """

    title: str
    study_name: str
    description: str = ""
    config_text: str = ""
    data_file: str
    data_sha256: str
    rows_in: int
    rows_used: int
    rows_quarantined: int
    file_rows: int = -1  # rows (records) of the data file: differs from rows_in for wide files
    reasons: pl.DataFrame | None = None
    quarantine_file: str | None = None
    summary: pl.DataFrame | None = None
    occasions_per_person: pl.DataFrame | None = None
    attrition: pl.DataFrame | None = None
    patterns: pl.DataFrame | None = None
    level1_sample: pl.DataFrame | None = None
    sample_seed: int | None = None
    time_label: str = "Time"
    time_unit: str = ""
    outcome_label: str = "Outcome"
    outcome_unit: str = ""
    group_name: str | None = None
    warnings: pl.DataFrame | None = None
    failures: pl.DataFrame | None = None
    tables: Mapping[str, pl.DataFrame] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    timestamp: str | None = None
    changes: pl.DataFrame | None = None
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    person_name: str | None = None
    time_term: str | None = None
    time_centre: float = 0.0
    time_scale: float = 1.0
    chart_png: bool = False
    outcome_name: str | None = None
    missing_outcome: int | None = None
    outcomes: tuple[ReportContext, ...] = ()

    @property
    def several_outcomes(self) -> bool:
        """A run of several outcomes: ``outcomes`` holds one context per outcome."""
        return len(self.outcomes) > 1

    def table(self, name: str) -> pl.DataFrame | None:
        """An analysis table by name, or ``None`` when it is absent."""
        return self.tables.get(name)

    @property
    def persons(self) -> int | None:
        """Persons in the valid data (from the descriptive summary), if known."""
        if (
            self.summary is None
            or self.summary.height == 0
            or "persons" not in self.summary.columns
        ):
            return None
        value = self.summary["persons"][0]
        return None if value is None else int(value)


def sample_persons(level1: pl.DataFrame, *, person_col: str, n: int, seed: int) -> pl.DataFrame:
    """All rows of ``n`` persons drawn without replacement, the same on every run.

    The unique persons are sorted, then a permutation from
    ``numpy.random.default_rng(seed)`` picks the first ``n`` of them. The rows
    kept are returned sorted by person (stable, so the order within a person is
    kept). With ``n`` at least the number of persons, every row is returned.
    """
    if n < 0:
        raise ValueError(f"sample_persons: n must be >= 0, got {n}")
    if person_col not in level1.columns:
        raise ValueError(
            f"sample_persons: column {person_col!r} is not in the table; columns are {level1.columns}"
        )
    persons = level1.get_column(person_col).drop_nulls().unique().sort()
    if n >= persons.len():
        chosen = persons
    else:
        order = np.random.default_rng(seed).permutation(persons.len())[:n]
        chosen = persons.gather(np.sort(order))
    return level1.filter(pl.col(person_col).is_in(chosen.implode())).sort(
        person_col, maintain_order=True
    )


def thin_quantiles(
    table: pl.DataFrame, *, by: str, max_rows: int, group: str | None = None
) -> pl.DataFrame:
    """Keep at most ``max_rows`` rows per group: evenly spaced ranks of ``by``.

    Rows are sorted by ``group`` then ``by``; within each group the ranks
    ``round(linspace(0, n - 1, max_rows))`` are kept, so the smallest and largest
    values are always there and the tails of a QQ plot stay exact.
    """
    if max_rows < 2:
        raise ValueError(f"thin_quantiles: max_rows must be >= 2, got {max_rows}")
    ordered = table.sort([*([group] if group else []), by], nulls_last=True, maintain_order=True)
    sizes = (
        ordered.group_by(group, maintain_order=True).len()["len"].to_list()
        if group
        else [ordered.height]
    )
    keep: list[np.ndarray] = []
    offset = 0
    for size in sizes:
        ranks = np.unique(np.round(np.linspace(0, size - 1, min(size, max_rows))).astype(np.int64))
        keep.append(offset + ranks)
        offset += size
    return ordered[np.concatenate(keep)] if keep else ordered


def sample_rows(table: pl.DataFrame, *, n: int, seed: int) -> pl.DataFrame:
    """A seeded sample of ``n`` rows in their original order (all rows when fewer)."""
    if table.height <= n:
        return table
    chosen = np.sort(np.random.default_rng(seed).choice(table.height, size=n, replace=False))
    return table[chosen]
