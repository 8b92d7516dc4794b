"""Sample-size adequacy of a two-level growth model, by the usual rules of thumb.

- fewer than 10 persons: fixed effects and their standard errors are unreliable
  (Maas & Hox 2005 find biased SEs with very few groups);
- fewer than 30 persons: variance components (and their SEs) are unreliable
  (Maas & Hox 2005; Hox, Moerbeek & van de Schoot 2018, ch. 12);
- fewer than 3 occasions for most persons: with 2 occasions a person's intercept,
  slope and residual cannot be separated, so random slopes are poorly identified
  (Singer & Willett 2003, sec. 2.1: three waves are the minimum for growth);
- many persons (more than 20%) with a single occasion: they inform the intercept
  only and add nothing to the estimation of change;
- fewer than 5 persons in a category of the comparison group: that group's
  trajectory rests on too few persons.

Columns: check, value, threshold, status ("ok" | "warning"), message (with the
numbers). ``value`` and ``threshold`` are counts or shares, as the check says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from schemas.tables import columns

if TYPE_CHECKING:
    from pipeline.analysis.context import AnalysisContext

__all__ = ["SAMPLE_SIZE_SCHEMA", "sample_size_table", "tables"]

SAMPLE_SIZE_SCHEMA = columns("sample_size")

MIN_PERSONS_FIXED = 10
MIN_PERSONS_VARIANCE = 30
MIN_OCCASIONS_SLOPES = 3
MAX_SINGLE_OCCASION_SHARE = 0.2
MIN_PERSONS_PER_GROUP = 5


def _share(value: float) -> str:
    """A share that never reads 100% or 0% unless it is exactly that."""
    from pipeline.report.formatting import format_share

    return format_share(value)


def sample_size_table(
    *,
    occasions_per_person: np.ndarray,
    persons_per_group: Mapping[str, int] | None = None,
    group_name: str | None = None,
) -> pl.DataFrame:
    """The ``sample_size`` table from the number of occasions (with an outcome) of each
    person and, when a comparison group is configured, the persons in each of its categories."""
    occasions = np.asarray(occasions_per_person, dtype=int)
    persons = int(occasions.size)
    rows: list[dict[str, object]] = []

    def add(check: str, value: float, threshold: float, bad: bool, message: str) -> None:
        rows.append(
            {
                "check": check,
                "value": float(value),
                "threshold": float(threshold),
                "status": "warning" if bad else "ok",
                "message": message,
            }
        )

    add(
        "persons for fixed effects",
        persons,
        MIN_PERSONS_FIXED,
        persons < MIN_PERSONS_FIXED,
        f"{persons} persons; fewer than {MIN_PERSONS_FIXED} make the fixed effects and their standard errors unreliable"
        if persons < MIN_PERSONS_FIXED
        else f"{persons} persons: enough for the fixed effects (at least {MIN_PERSONS_FIXED})",
    )
    add(
        "persons for variance components",
        persons,
        MIN_PERSONS_VARIANCE,
        persons < MIN_PERSONS_VARIANCE,
        f"{persons} persons; fewer than {MIN_PERSONS_VARIANCE} make the variance components "
        "(between-person variances and the correlation of intercept and slope) unreliable"
        if persons < MIN_PERSONS_VARIANCE
        else f"{persons} persons: enough for the variance components (at least {MIN_PERSONS_VARIANCE})",
    )
    with_three = int(np.sum(occasions >= MIN_OCCASIONS_SLOPES))
    share_three = with_three / persons if persons else 0.0
    add(
        "share of persons with 3 or more occasions",
        share_three,
        0.5,
        share_three < 0.5,
        f"only {with_three} of {persons} persons ({_share(share_three)}) have {MIN_OCCASIONS_SLOPES} or more "
        "occasions; random slopes are poorly identified when most persons have fewer"
        if share_three < 0.5
        else f"{with_three} of {persons} persons ({_share(share_three)}) have {MIN_OCCASIONS_SLOPES} or more occasions",
    )
    single = int(np.sum(occasions == 1))
    share_single = single / persons if persons else 0.0
    add(
        "share of persons with a single occasion",
        share_single,
        MAX_SINGLE_OCCASION_SHARE,
        share_single > MAX_SINGLE_OCCASION_SHARE,
        f"{single} of {persons} persons ({_share(share_single)}) have a single occasion; they tell nothing "
        "about change and inform only the level"
        if share_single > MAX_SINGLE_OCCASION_SHARE
        else f"{single} of {persons} persons ({_share(share_single)}) have a single occasion",
    )
    if persons_per_group:
        smallest_name, smallest = min(
            persons_per_group.items(), key=lambda item: (item[1], item[0])
        )
        label = group_name or "group"
        add(
            f"persons in the smallest {label} category",
            smallest,
            MIN_PERSONS_PER_GROUP,
            smallest < MIN_PERSONS_PER_GROUP,
            f"{label} = {smallest_name} has only {smallest} persons; fewer than {MIN_PERSONS_PER_GROUP} make that "
            "group's trajectory and its differences from the others unreliable"
            if smallest < MIN_PERSONS_PER_GROUP
            else f"every {label} category has at least {smallest} persons",
        )
    return pl.DataFrame(rows, schema=SAMPLE_SIZE_SCHEMA)


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """``sample_size`` of the model frame; each warning also goes to the analysis warnings."""
    frame, person, group = ctx.frame, ctx.spec.person, ctx.spec.group
    per_group = None
    if group is not None and group in frame.columns:
        counts = frame.select(person, group).unique().group_by(group).len()
        per_group = {
            str(row[group]): int(row["len"])
            for row in counts.iter_rows(named=True)
            if row[group] is not None
        }
    table = sample_size_table(
        occasions_per_person=frame.group_by(person).len()["len"].to_numpy(),
        persons_per_group=per_group,
        group_name=group,
    )
    for row in table.filter(pl.col("status") == "warning").iter_rows(named=True):
        ctx.notes.warn("sample size", row["message"])
    return {"sample_size": table}
