"""What the data can say about dropout: completers against dropouts, and a pattern-mixture check.

A mixed model fitted by (RE)ML gives valid estimates when the data are
missing at random (MAR): whether an occasion is missing may depend on the
observed outcomes and covariates, not on the unobserved ones. MAR cannot be
tested from the observed data; what can be checked is whether dropout is
related to what was observed:

- **Dropout**: a person whose last observed occasion is before the study's
  last occasion (so they leave and do not return); everyone else is a
  completer (intermittent gaps allowed). Occasions are the distinct values of
  ``occasion`` (default: the time column).
- **Completers vs dropouts** on the outcome at the first occasion (baseline
  status), on each person-level covariate, and on the rate of change (each
  person's OLS slope of the outcome on time, persons with two or more
  distinct times): Welch's t test for numeric variables, Pearson's
  chi-square test for categorical ones.
- **Pattern mixture** (Hedeker & Gibbons 1997): the dropout indicator (or the
  time of the last observed occasion) as a person-level predictor of status
  and of change, ``y ~ time * dropout + random part``, ML; a likelihood-ratio
  test of both effects together (2 df) and the two t tests (Satterthwaite).

p-values are not adjusted for multiplicity. :func:`dropout_sentence` says
what the table shows in one sentence that claims no more than the tests do
("consistent with MAR", never "MAR holds").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl
import scipy.stats

from pipeline.analysis.comparison import compare
from pipeline.analysis.designs import IdCoding, fit_formula
from pipeline.errors import ModelError
from schemas.tables import columns

__all__ = ["COLUMNS", "dropout_check", "dropout_sentence", "person_dropout"]

Predictor = Literal["dropout", "dropout_time"]

COLUMNS: dict[str, pl.DataType] = columns("dropout")  # schemas/tables.py

PERSON_COLUMNS: dict[str, pl.DataType] = {
    "person": pl.String(),
    "last_occasion": pl.Float64(),
    "dropout": pl.Boolean(),
}


def _check_columns(data: pl.DataFrame, columns: Sequence[str]) -> None:
    for c in columns:
        if c not in data.columns:
            raise ModelError(f"column {c!r} does not exist (columns: {', '.join(data.columns)})")


def _observed(data: pl.DataFrame, outcome: str) -> pl.DataFrame:
    keep = pl.col(outcome).is_not_null()
    if data.schema[outcome].is_float():
        keep &= pl.col(outcome).is_not_nan()
    return data.filter(keep)


def person_dropout(
    data: pl.DataFrame, *, person: str, outcome: str, time: str, occasion: str | None = None
) -> pl.DataFrame:
    """One row per person: the last occasion with an observed outcome, and whether that is a dropout."""
    occ = occasion or time
    observed, last = _observed_rows(data, person=person, outcome=outcome, time=time, occasion=occ)
    return (
        _status(observed, person=person, occasion=occ, last=last)
        .rename({"__person": "person"})
        .with_columns(pl.col("person").cast(pl.String))
        .sort("person")
        .cast(PERSON_COLUMNS)
    )


def _observed_rows(
    data: pl.DataFrame, *, person: str, outcome: str, time: str, occasion: str
) -> tuple[pl.DataFrame, float]:
    """The rows with an observed outcome and the last occasion (the columns checked)."""
    _check_columns(data, [person, outcome, time, occasion])
    if not data.schema[occasion].is_numeric():
        raise ModelError(
            f"the occasion column {occasion!r} must be numeric, not {data.schema[occasion]}"
        )
    observed = _observed(data, outcome)
    if observed.height == 0:
        raise ModelError(f"column {outcome!r} has no observed values")
    return observed, float(observed[occasion].cast(pl.Float64).max())


def _status(observed: pl.DataFrame, *, person: str, occasion: str, last: float) -> pl.DataFrame:
    """``__person`` (the id as it is: integer codes stay integers, so grouping is cheap),
    ``last_occasion`` and ``dropout``, persons in order of appearance."""
    return (
        observed.group_by(pl.col(person).alias("__person"), maintain_order=True)
        .agg(pl.col(occasion).cast(pl.Float64).max().alias("last_occasion"))
        .with_columns((pl.col("last_occasion") < last).alias("dropout"))
    )


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(t, df, p) of Welch's test; NaN when a group has fewer than 2 values or no spread."""
    if a.size < 2 or b.size < 2:
        return math.nan, math.nan, math.nan
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb <= 0:
        return math.nan, math.nan, math.nan
    t = (b.mean() - a.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return float(t), float(df), float(2 * scipy.stats.t.sf(abs(t), df))


def dropout_check(
    data: pl.DataFrame,
    *,
    person: str,
    outcome: str,
    time: str,
    covariates: Sequence[str] = (),
    occasion: str | None = None,
    predictor: Predictor = "dropout",
    random: str | None = None,
    coding: IdCoding | None = None,
) -> pl.DataFrame:
    """Completers against dropouts, and the pattern-mixture model (columns :data:`COLUMNS`).

    ``covariates`` are person-level (their first value per person is used).
    ``random`` is the random part of the pattern-mixture model (default
    ``(time | person)``). No dropout: the table has no rows. ``coding``: the analysis'
    id coding (:mod:`pipeline.analysis.designs`), for the pattern-mixture designs.
    """
    if predictor not in ("dropout", "dropout_time"):
        raise ModelError(f"predictor must be 'dropout' or 'dropout_time', not {predictor!r}")
    _check_columns(data, [person, outcome, time, *covariates])
    observed, last = _observed_rows(
        data, person=person, outcome=outcome, time=time, occasion=occasion or time
    )
    status = _status(observed, person=person, occasion=occasion or time, last=last)
    observed = observed.with_columns(pl.col(person).alias("__person")).join(
        status, on="__person", maintain_order="left"
    )
    n_drop = int(status["dropout"].sum())
    n_comp = status.height - n_drop
    rows: dict[str, list] = {c: [] for c in COLUMNS}
    if n_drop == 0 or n_comp == 0:
        return pl.DataFrame(rows, schema=COLUMNS)

    def add(check, kind, test, nc, nd, mc, md, diff, stat, df, p) -> None:
        for c, v in zip(
            COLUMNS,
            (check, kind, test, nc, nd, mc, md, diff, stat, df, p),
            strict=True,
        ):
            rows[c].append(None if isinstance(v, float) and math.isnan(v) else v)

    def compare_numeric(check: str, kind: str, frame: pl.DataFrame, column: str) -> None:
        comp = frame.filter(~pl.col("dropout"))[column].cast(pl.Float64).drop_nulls().to_numpy()
        drop = frame.filter(pl.col("dropout"))[column].cast(pl.Float64).drop_nulls().to_numpy()
        t, df, p = _welch(comp, drop)
        mc = float(comp.mean()) if comp.size else math.nan
        md = float(drop.mean()) if drop.size else math.nan
        add(check, kind, "Welch t", comp.size, drop.size, mc, md, md - mc, t, df, p)

    # baseline status: the outcome at the first occasion
    occ = occasion or time
    first = observed[occ].cast(pl.Float64).min()
    baseline = observed.filter(pl.col(occ).cast(pl.Float64) == first)
    compare_numeric(
        f"{outcome} at the first occasion ({occ} = {first:g})", "baseline status", baseline, outcome
    )

    # person-level covariates
    # in order of appearance: the sums below do not depend on the order groups come out in
    persons = observed.group_by("__person", maintain_order=True).agg(
        pl.col("dropout").first(), *[pl.col(c).first() for c in covariates]
    )
    for c in covariates:
        dtype = data.schema[c]
        if dtype.is_numeric() and dtype != pl.Boolean:
            compare_numeric(c, "covariate", persons, c)
        else:
            sub = persons.select(pl.col(c).cast(pl.String), "dropout").drop_nulls()
            table = (
                sub.group_by(c, "dropout")
                .len()
                .pivot(on="dropout", index=c, values="len")
                .fill_null(0)
            )
            counts = table.select([k for k in ("false", "true") if k in table.columns]).to_numpy()
            nc = int(sub.filter(~pl.col("dropout")).height)
            nd = int(sub.filter(pl.col("dropout")).height)
            if counts.shape[0] < 2 or counts.shape[1] < 2:
                add(
                    c,
                    "covariate",
                    "Pearson chi-square",
                    nc,
                    nd,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                )
                continue
            chi2, p, df, _ = scipy.stats.chi2_contingency(counts, correction=False)
            add(
                c,
                "covariate",
                "Pearson chi-square",
                nc,
                nd,
                math.nan,
                math.nan,
                math.nan,
                float(chi2),
                float(df),
                float(p),
            )

    # rate of change: per-person OLS slope
    slopes = (
        observed.with_columns(
            pl.col(time).cast(pl.Float64).alias("__t"),
            pl.col(outcome).cast(pl.Float64).alias("__y"),
        )
        .group_by("__person", maintain_order=True)
        .agg(
            pl.col("dropout").first(),
            pl.col("__t").n_unique().alias("__k"),
            (
                (
                    (pl.col("__t") - pl.col("__t").mean()) * (pl.col("__y") - pl.col("__y").mean())
                ).sum()
                / ((pl.col("__t") - pl.col("__t").mean()) ** 2).sum()
            ).alias("__slope"),
        )
        .filter(pl.col("__k") >= 2)
    )
    compare_numeric(
        f"rate of change (per-person OLS slope of {outcome} on {time})",
        "rate of change",
        slopes,
        "__slope",
    )

    # pattern mixture
    name = "dropout" if predictor == "dropout" else "dropout_time"
    pm_data = observed.with_columns(
        (
            pl.col("dropout").cast(pl.Float64)
            if predictor == "dropout"
            else pl.col("last_occasion")
        ).alias(name)
    )
    if pm_data[name].n_unique() < 2:
        return pl.DataFrame(rows, schema=COLUMNS)
    q = _q
    rand = random or f"({q(time)} | {q(person)})"
    if coding is not None and coding.labels:
        try:
            coded = coding.encode(pm_data)
        except pl.exceptions.InvalidOperationError:  # an id the coding does not know
            coded = None
    else:
        coded = None
    small = fit_formula(
        pm_data, f"{q(outcome)} ~ {q(time)} + {rand}", reml=False, coding=coding, coded=coded
    )
    big = fit_formula(
        pm_data,
        f"{q(outcome)} ~ {q(time)} * {name} + {rand}",
        reml=False,
        coding=coding,
        coded=coded,
    )
    fe = big.fixed_effects
    what = "dropout (1 = dropped out)" if predictor == "dropout" else f"the last observed {occ}"
    for term, label in ((name, "status"), (f"{big.fixed_terms[1]}:{name}", "change")):
        r = fe.filter(pl.col("term") == term).row(0, named=True)
        add(
            f"pattern mixture: {what} predicts {label}",
            "pattern mixture",
            "t (Satterthwaite), ML fit",
            n_comp,
            n_drop,
            math.nan,
            math.nan,
            r["estimate"],
            r["statistic"],
            r["df"],
            r["p_value"],
        )
    lrt = compare(small, big).row(1, named=True)
    add(
        f"pattern mixture: {what} predicts status and change (jointly)",
        "pattern mixture",
        "likelihood ratio (ML)",
        n_comp,
        n_drop,
        math.nan,
        math.nan,
        math.nan,
        lrt["chisq"],
        float(lrt["df"]),
        lrt["p_value"],
    )
    return pl.DataFrame(rows, schema=COLUMNS)


def _q(name: str) -> str:
    return name if name.isidentifier() else f"`{name}`"


def dropout_sentence(table: pl.DataFrame, *, alpha: float = 0.05) -> str:
    """One sentence on what :func:`dropout_check`'s table shows, claiming no more than its tests."""
    if table.height == 0:
        return (
            "Nobody dropped out (or everybody did), so completers and dropouts cannot be compared; "
            "the estimates rest on the usual assumption that missing occasions are missing at random."
        )
    n_comp = int(table["n_completers"].max())
    n_drop = int(table["n_dropouts"].max())
    tested = table.filter(pl.col("p_value").is_not_null())
    hits = tested.filter(pl.col("p_value") < alpha)
    if hits.height == 0:
        names = {
            "baseline status": "baseline status",
            "covariate": "covariates",
            "rate of change": "rate of change",
            "pattern mixture": "dropout as a predictor of status and change",
        }
        kinds = [names[k] for k in tested["kind"].unique(maintain_order=True).to_list()]
        listed = ", ".join(kinds[:-1]) + (" and " if len(kinds) > 1 else "") + kinds[-1]
        return (
            f"Completers (n = {n_comp}) and dropouts (n = {n_drop}) did not differ detectably in "
            f"{tested.height} checks ({listed}; all p >= {alpha:g}, unadjusted): this is consistent "
            "with data missing at random, though no test of the observed data can show that they are."
        )
    found = "; ".join(f"{r['check']} (p = {r['p_value']:.2g})" for r in hits.iter_rows(named=True))
    return (
        f"Dropouts (n = {n_drop}) differed from completers (n = {n_comp}) on: {found} "
        f"(p < {alpha:g}, unadjusted for {len(tested)} checks). Dropout is related to the observed "
        "data, so the data are not missing completely at random and completers alone are not "
        "representative; the model's estimates remain valid if dropout depends only on the observed "
        "outcomes and the model's covariates (missing at random), which the data cannot confirm."
    )
