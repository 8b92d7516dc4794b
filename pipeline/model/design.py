"""From a polars frame and a parsed formula to the model matrices.

Glossary (Bates et al. 2015): y the response (n), X the fixed-effects model
matrix (n x p), Z the random-effects model matrix (n x q, the columns of every
grouping factor side by side, innermost factor first), theta the covariance
parameters that fill the lower triangle of the relative covariance factor
Lambda (q x q, block diagonal: one block per term), column by column, block by
block.

Several grouping factors must be nested (each unit of an inner factor lies in
one unit of the next outer factor: a pupil in one school). The factors are
ordered as lme4 orders them, by decreasing number of units (innermost first),
and the nesting is checked on the data, so ``(year | child) + (year | school)``
with child ids unique in the study is nested just as ``(year | school/child)``.
Crossed factors get an error that says so. ``U`` holds the distinct
random-effects columns of all factors once (``Z`` is ``U`` with each factor's
columns selected), which is all the statistics need.

Coding of categorical predictors follows R: treatment contrasts (the first
level is the reference: the first of a ``pl.Enum``'s categories, else the first
in sorted order) where the term without the factor is in the model, indicator
columns for every level where it is not (``0 + trt`` gives ``trtN`` and ``trtY``).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields, replace

import numpy as np
import polars as pl
import scipy.linalg

from pipeline.errors import FormulaError, ModelError
from pipeline.model.formula import (
    BinOp,
    Call,
    Col,
    Expr,
    Factor,
    Formula,
    Neg,
    Num,
    Paren,
    RandomTerm,
    Term,
    parse_formula,
)


@dataclass(frozen=True, slots=True)
class Block:
    """One random-effects term's block of Lambda: columns [start, stop) of Z."""

    group_label: str  # "id" or "id.1" (lme4's VarCorr naming for split terms)
    names: tuple[str, ...]
    start: int
    correlated: bool

    @property
    def size(self) -> int:
        return len(self.names)


@dataclass(frozen=True, slots=True)
class GroupingLevel:
    """One grouping factor: its units, the random effects it carries, its parent units."""

    name: str  # lme4's name: "id", "school:child"
    columns: tuple[str, ...]  # the data columns whose combination is a unit
    codes: np.ndarray  # (n,) unit of each row, 0..m-1 in sorted order of the unit keys
    units: pl.DataFrame  # (m, columns) the unit keys, sorted
    names: tuple[str, ...]  # random-effects terms of this factor (q_l)
    offset: int  # first column of this factor in Z and Lambda
    select: tuple[int, ...]  # column of U that each term is
    blocks: tuple[Block, ...]  # starts are global (in Z and Lambda)
    parent: np.ndarray | None  # (m,) unit of the next outer factor, None for the outermost

    @property
    def m(self) -> int:
        return int(self.units.height)

    @property
    def q(self) -> int:
        return len(self.names)

    @property
    def labels(self) -> pl.Series:
        """Unit labels as lme4 prints them (values joined by ':')."""
        if len(self.columns) == 1:
            return self.units[self.columns[0]].cast(pl.String).alias(self.name)
        return self.units.select(
            pl.concat_str([pl.col(c).cast(pl.String) for c in self.columns], separator=":").alias(
                self.name
            )
        ).to_series()


@dataclass(frozen=True, slots=True)
class Design:
    formula: Formula
    frame: pl.DataFrame  # the rows used, in input order
    y: np.ndarray
    X: np.ndarray
    Z: np.ndarray
    fixed_names: tuple[str, ...]
    random_names: tuple[str, ...]
    group: str
    group_codes: np.ndarray  # int64 per row, 0..m-1
    group_levels: pl.Series  # m group values, sorted
    blocks: tuple[Block, ...]
    levels: dict[str, tuple[str, ...]]  # categorical column -> levels (reference first)
    rows_dropped: int
    grouping: tuple[GroupingLevel, ...] = ()  # innermost first; one entry for two levels
    U: np.ndarray | None = None  # (n, u) distinct random-effects columns; None: U is Z
    residual: object | None = None  # pipeline.model.structured.ResidualSpec: a level-1 structure
    # [X | y | U] side by side (X, y and the union are views of it) and its Gram matrix, as
    # model_matrices made them: one pass over the rows for the statistics (see joined())
    block: np.ndarray | None = None
    gram: np.ndarray | None = None

    def joined(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(block, gram, first column of the union in block) while X, y and the union are
        still the views of ``block`` that :func:`model_matrices` made (a design whose y was
        replaced, say, gets None)."""
        if self.block is None or self.gram is None:
            return None
        ustart = _views_of(self.block, self.X, self.y, self.union)
        return None if ustart is None else (self.block, self.gram, ustart)

    def __getstate__(self) -> list:
        # the block is not pickled (X, y and U are, as copies of their views)
        return [
            None if f.name in ("block", "gram") else getattr(self, f.name) for f in fields(self)
        ]

    @property
    def nested(self) -> bool:
        return len(self.grouping) > 1

    @property
    def union(self) -> np.ndarray:
        return self.Z if self.U is None else self.U

    @property
    def nobs(self) -> int:
        return int(self.y.shape[0])

    @property
    def ngroups(self) -> int:
        return int(self.group_levels.len())

    @property
    def theta_index(self) -> tuple[tuple[int, int], ...]:
        """(row, column) of Lambda filled by each theta, in lme4's order."""
        out: list[tuple[int, int]] = []
        for b in self.blocks:
            for j in range(b.size):
                rows = range(j, b.size) if b.correlated else (j,)
                out += [(b.start + i, b.start + j) for i in rows]
        return tuple(out)

    @property
    def theta_lower(self) -> np.ndarray:
        """Lower bounds: 0 for diagonal elements of Lambda, -inf otherwise."""
        return np.array([0.0 if i == j else -np.inf for i, j in self.theta_index])


@dataclass(frozen=True, slots=True)
class Specification:
    """lme4's ``lFormula`` without the rows: the formula turned into named column expressions
    for the response, X and U, the categorical levels, and the grouping factors with their
    units (keys only), nesting and blocks. :func:`model_matrices` turns any chunk of rows into
    model matrices with it, so chunks (or partitions on other machines) are coded alike."""

    formula: Formula
    schema: pl.Schema  # dtypes of the used columns
    levels: dict[str, tuple[str, ...]]
    response: tuple[str, pl.Expr]
    fixed: tuple[tuple[str, pl.Expr], ...]
    union: tuple[tuple[str, pl.Expr], ...]  # the distinct random-effects columns (U)
    factors: tuple[GroupingLevel, ...]  # innermost first; ``codes`` empty (no rows)
    blocks: tuple[Block, ...]
    random_names: tuple[str, ...]

    @property
    def fixed_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.fixed)

    @property
    def nested(self) -> bool:
        return len(self.factors) > 1


@dataclass(frozen=True, slots=True)
class Matrices:
    """The model matrices of one chunk of rows (rows with a missing used value left out)."""

    frame: pl.DataFrame
    y: np.ndarray
    X: np.ndarray
    U: np.ndarray
    codes: tuple[np.ndarray, ...]  # per factor (innermost first): each row's unit
    rows_dropped: int
    block: np.ndarray  # (n, p + 1 [+ u]): [X | y (| U)], of which X, y and U are views
    gram: np.ndarray  # block' block
    ustart: int  # U's first column in block (in X when U's columns are X's)


# rows converted at a time when filling the block (a polars temporary of this many rows is
# reused, instead of a frame-sized one per column that is written once and thrown away)
FILL_ROWS = 1 << 16


def _shared_union(spec: Specification) -> int | None:
    """The column of X where U's columns start, when they are X's columns side by side in
    the same order (``(time | id)`` beside ``(Intercept)``, ``time``); else None."""
    if not spec.union:
        return None
    fixed = [e for _, e in spec.fixed]
    first = [j for j, e in enumerate(fixed) if e.meta.eq(spec.union[0][1])]
    for start in first:
        if start + len(spec.union) <= len(fixed) and all(
            fixed[start + k].meta.eq(e) for k, (_, e) in enumerate(spec.union)
        ):
            return start
    return None


def _fill_block(
    frame: pl.DataFrame, named: list[tuple[str, pl.Expr]]
) -> tuple[np.ndarray, np.ndarray]:
    """The named expressions as the columns of one C-ordered float array, evaluated by polars a
    slice of rows at a time into an array numpy allocates (one allocation; polars' own
    temporaries stay the size of a slice), and the array's Gram matrix ``block' block``,
    summed over the slices while each is still in cache (BLAS's symmetric rank-k update;
    the upper triangle)."""
    n, k = frame.height, len(named)
    block = np.empty((n, k))
    upper = np.zeros((k, k), order="F")
    exprs = [e.alias(f"c{j}") for j, (_, e) in enumerate(named)]
    for start in range(0, n, FILL_ROWS):
        part = frame.slice(start, FILL_ROWS).select(exprs)
        rows = block[start : start + part.height]
        for j, column in enumerate(part.get_columns()):
            rows[:, j] = column.to_numpy()
        # rows.T is Fortran-ordered: no copy; beta=1 adds to the running sum in place
        upper = scipy.linalg.blas.dsyrk(1.0, rows.T, beta=1.0, c=upper, trans=0, overwrite_c=1)
    return block, upper


def _views_of(block: np.ndarray, X: np.ndarray, y: np.ndarray, U: np.ndarray) -> int | None:
    """Where U's columns start in the C-ordered ``block`` when X, y and U are its columns
    [0, p), p and a run of u columns (None when they are not views of it)."""
    n = block.shape[0]
    if not block.flags.c_contiguous or X.shape[0] != n or y.shape != (n,) or U.shape[0] != n:
        return None
    start = block.__array_interface__["data"][0]
    size = block.itemsize

    def offset(a: np.ndarray) -> int | None:
        if a.size and n > 1 and a.strides[0] != block.strides[0]:
            return None
        if a.ndim == 2 and a.shape[1] > 1 and a.strides[1] != size:  # columns side by side
            return None
        at = a.__array_interface__["data"][0] - start
        return at // size if at % size == 0 and 0 <= at < block.strides[0] else None

    p, u = X.shape[1], U.shape[1]
    ustart = offset(U) if u else p + 1
    if offset(X) != 0 or offset(y) != p or ustart is None or ustart + u > block.shape[1]:
        return None
    return ustart


def _as_frame(df: pl.DataFrame | pl.LazyFrame, parsed: Formula) -> pl.LazyFrame:
    if isinstance(df, pl.DataFrame):
        df = df.lazy()
    if not isinstance(df, pl.LazyFrame):
        raise ModelError(
            f"expected a polars DataFrame or LazyFrame, got {type(df).__name__} "
            "(convert with polars.from_pandas(...) first)"
        )
    names = df.collect_schema().names()
    missing = [c for c in parsed.columns if c not in names]
    if missing:
        name = missing[0]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise FormulaError(
            f"formula {parsed.text!r}: column {name!r} does not exist{hint} "
            f"(columns: {', '.join(names)})"
        )
    return df.select(parsed.columns)


def _complete(schema: pl.Schema, used: list[str]) -> pl.Expr:
    return pl.all_horizontal(
        [
            pl.col(c).is_not_null()
            & (pl.col(c).is_not_nan() if schema[c].is_float() else pl.lit(True))
            for c in used
        ]
    )


def categorical_levels(
    df: pl.DataFrame | pl.LazyFrame, formula: str | Formula
) -> tuple[dict[str, tuple[str, ...]], pl.Schema]:
    """The levels :func:`specify` finds for ``formula``'s categorical columns on the complete
    rows of ``df``, and the columns' types (for merging the levels of several partitions)."""
    parsed = parse_formula(formula) if isinstance(formula, str) else formula
    lazy = _as_frame(df, parsed)
    schema = lazy.collect_schema()
    kept = lazy.filter(_complete(schema, parsed.columns))
    return _found_levels(kept, parsed, schema, given=None), schema


def _found_levels(
    kept: pl.LazyFrame,
    parsed: Formula,
    schema: pl.Schema,
    *,
    given: dict[str, tuple[str, ...]] | None,
) -> dict[str, tuple[str, ...]]:
    categorical = [
        c
        for c in _predictor_columns(parsed)
        if isinstance(schema[c], pl.Enum | pl.Categorical) or schema[c] in (pl.String, pl.Boolean)
    ]
    found = (
        kept.select([pl.col(c).cast(pl.String).unique().implode() for c in categorical])
        .collect()
        .row(0)
        if categorical
        else ()
    )
    levels: dict[str, tuple[str, ...]] = {}
    for c, values in zip(categorical, found, strict=True):
        if given is not None and c in given:
            extra = sorted(set(values) - set(given[c]))
            if extra:
                raise ModelError(
                    f"formula {parsed.text!r}: {c} has the value {extra[0]!r}, which is not "
                    "among the levels of the whole data"
                )
            levels[c] = tuple(given[c])
            continue
        levels[c] = ordered_levels(set(values), schema[c])
    return levels


def _predictor_columns(parsed: Formula) -> list[str]:
    """The columns the fixed and random terms read (the response too, to refuse a text
    outcome): a column that only names a grouping factor or the occasions of an error
    structure has units, not levels (a million person ids are not a million levels)."""
    out: list[str] = list(parsed.response.columns)
    for term in (*parsed.terms, *(t for r in parsed.random for t in r.terms)):
        for factor in term:
            out.extend(c for c in factor.columns if c not in out)
    return out


def ordered_levels(present: set[str], dtype: pl.DataType) -> tuple[str, ...]:
    """A categorical column's levels in the model's order (reference first): an Enum's own
    order, false before true, else sorted text."""
    if isinstance(dtype, pl.Enum):
        return tuple(v for v in dtype.categories.to_list() if v in present)
    if dtype == pl.Boolean:
        return tuple(v for v in ("false", "true") if v in present)
    return tuple(sorted(present))


def specify(
    df: pl.DataFrame | pl.LazyFrame,
    formula: str | Formula,
    *,
    levels: dict[str, tuple[str, ...]] | None = None,
) -> Specification:
    """The specification of ``formula`` on the complete rows of ``df`` (one cheap pass:
    categorical levels, unit keys, nesting; no rows are kept).

    ``levels`` (categorical column -> levels, reference first) replaces the levels found
    in ``df``: a partition of the data is then coded exactly as the whole data are
    (:mod:`pipeline.model.partial`); a value outside them is an error."""
    parsed = parse_formula(formula) if isinstance(formula, str) else formula
    lazy = _as_frame(df, parsed)
    schema = lazy.collect_schema()
    kept = lazy.filter(_complete(schema, parsed.columns))
    levels = _found_levels(kept, parsed, schema, given=levels)
    resp = parsed.response
    if any(c in levels for c in resp.columns):
        raise ModelError(f"formula {parsed.text!r}: the outcome {resp.label!r} is not numeric")
    response = (resp.label, _expr(resp.expr, schema, parsed.text))
    present_terms = {()} if parsed.intercept else set()
    present_terms |= set(parsed.terms)
    fixed: list[tuple[str, pl.Expr]] = []
    if parsed.intercept:
        fixed.append(("(Intercept)", pl.repeat(1.0, pl.len())))
    for term in parsed.terms:
        fixed += _term_exprs(term, present_terms, schema, levels, parsed.text)
    if not fixed:
        raise ModelError(f"formula {parsed.text!r}: no fixed effects (not even an intercept)")
    factors, zexprs, uexprs, blocks = _random_structure(kept, parsed, schema, levels)
    return Specification(
        formula=parsed,
        schema=schema,
        levels=levels,
        response=response,
        fixed=tuple(fixed),
        union=tuple(uexprs),
        factors=tuple(factors),
        blocks=tuple(blocks),
        random_names=tuple(n for n, _ in zexprs),
    )


def model_matrices(spec: Specification, chunk: pl.DataFrame | pl.LazyFrame) -> Matrices:
    """y, X, U and every row's units for a chunk of rows, coded by ``spec``."""
    parsed = spec.formula
    if isinstance(chunk, pl.DataFrame) and all(c in chunk.columns for c in parsed.columns):
        frame_all = chunk  # every column stays with the rows used (fit.frame)
    else:
        frame_all = _as_frame(chunk, parsed).collect()
    used = parsed.columns
    keep = _complete(frame_all.schema, used)
    n_keep = int(frame_all.select(keep.sum()).item()) if frame_all.height else 0
    frame = frame_all if n_keep == frame_all.height else frame_all.filter(keep)
    text = parsed.text
    # one array for X, y and U, of which they are views (U's columns are X's when the random
    # terms repeat fixed ones, as (time | id) does); the statistics then read the rows once
    p = len(spec.fixed)
    ustart = _shared_union(spec)
    named = [*spec.fixed, spec.response, *(spec.union if ustart is None else ())]
    ustart = p + 1 if ustart is None else ustart
    block, upper = _fill_block(frame, named)
    gram = _gram(block, upper, named, text)
    X, y, U = block[:, :p], block[:, p], block[:, ustart : ustart + len(spec.union)]
    codes: list[np.ndarray] = []
    for level, g in enumerate(spec.factors):
        inner = spec.factors[level - 1] if level else None
        if inner is not None and set(g.columns) <= set(inner.columns) and inner.parent is not None:
            # the inner unit's key holds this factor's key: its unit is the inner unit's parent
            codes.append(inner.parent[codes[-1]].astype(np.int64))
        else:
            codes.append(_codes_of(frame, g, text))
    return Matrices(
        frame, y, X, U, tuple(codes), frame_all.height - frame.height, block, gram, ustart
    )


def _codes_of(frame: pl.DataFrame, factor: GroupingLevel, text: str) -> np.ndarray:
    """Each row's unit of ``factor`` (its position among the specification's sorted keys)."""
    cols = list(factor.columns)
    if frame.height == 0:
        return np.zeros(0, dtype=np.int64)
    packed = _packed_keys(frame, factor)
    if packed is not None:
        keys, values, ok = packed
        runs = _sorted_codes(keys, values) if keys.size else None
        if not keys.size:  # no units at all: every row is outside them
            codes = np.zeros(values.size, dtype=np.int64)
            ok &= False
        elif runs is not None:  # checked per run of equal keys, not per row
            codes, starts, run_codes = runs
            found = keys[np.minimum(run_codes, keys.size - 1)] == values[starts]
            if not (found.all() and run_codes.max(initial=0) < keys.size):
                bad = (run_codes >= keys.size) | ~found
                ok &= np.repeat(~bad, np.diff(np.append(starts, values.size)))
        else:  # rows not grouped by unit: a binary search per row
            codes = np.searchsorted(keys, values)
            ok &= (codes < keys.size) & (keys[np.minimum(codes, keys.size - 1)] == values)
    else:
        coded = (
            frame.select(cols)
            .with_row_index("_row")
            .join(factor.units.with_row_index("_unit"), on=cols, how="left", maintain_order="left")
        )
        unit = coded["_unit"]
        ok = unit.is_not_null().to_numpy()
        codes = unit.fill_null(0).cast(pl.Int64).to_numpy()
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        value = ":".join(str(v) for v in frame.select(cols).row(row))
        raise ModelError(
            f"formula {text!r}: {factor.name} {value!r} in this chunk is not among the units of the "
            "specification (build it on all the data, or on a first pass over every chunk)"
        )
    return codes.astype(np.int64, copy=False)


def _packed_keys(
    frame: pl.DataFrame, factor: GroupingLevel
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Unit keys and row keys as one sortable number each, when that is possible: one numeric
    column, or integer columns whose ranges (over the units) pack into an int64 in the
    units' lexicographic order. Returns (unit keys, row keys, rows whose values are in range),
    or None (then units are matched by a join)."""
    cols = list(factor.columns)
    if len(cols) == 1 and frame.schema[cols[0]].is_numeric():
        return (
            factor.units[cols[0]].to_numpy(),
            frame[cols[0]].to_numpy(),
            np.ones(frame.height, bool),
        )
    if not all(frame.schema[c].is_integer() and factor.units.schema[c].is_integer() for c in cols):
        return None
    if factor.units.height == 0:
        return None
    lows = [int(factor.units[c].min()) for c in cols]
    spans = [int(factor.units[c].max()) - lo + 1 for c, lo in zip(cols, lows, strict=True)]
    if float(np.prod(np.array(spans, dtype=float))) >= 2.0**62:
        return None
    keys = np.zeros(factor.units.height, dtype=np.int64)
    values = np.zeros(frame.height, dtype=np.int64)
    ok = np.ones(frame.height, dtype=bool)
    for c, lo, span in zip(cols, lows, spans, strict=True):
        # values outside the units' range are marked (and replaced, so nothing overflows)
        col = frame[c].to_numpy()
        if col.size and (int(col.min()) < lo or int(col.max()) > lo + span - 1):
            inside = (col >= lo) & (col <= lo + span - 1)
            ok &= inside
            col = np.where(inside, col, lo)
        col = col.astype(np.int64, copy=False)
        keys = keys * span + (factor.units[c].to_numpy().astype(np.int64) - lo)
        values *= span
        values += col
        values -= lo
    return keys, values, ok


def _sorted_codes(
    keys: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Codes without a search per row when the rows come grouped by unit in sorted order (the
    usual layout of a long file): one search per run of equal keys. Returns (codes, first row
    of each run, each run's code), or None if the rows are not so grouped."""
    if values.size < 2:
        return None
    starts = np.flatnonzero(values[1:] != values[:-1])
    starts += 1
    starts = np.concatenate(([0], starts))
    firsts = values[starts]
    if firsts.size > 1 and not bool(np.all(firsts[1:] > firsts[:-1])):
        return None
    run_codes = np.searchsorted(keys, firsts).astype(np.int64, copy=False)
    lengths = np.diff(np.append(starts, values.size))
    return np.repeat(run_codes, lengths), starts, run_codes


def build_design(
    df: pl.DataFrame,
    formula: str | Formula,
    *,
    levels: dict[str, tuple[str, ...]] | None = None,
    check_rank: bool = True,
) -> Design:
    """Model matrices for ``formula`` on ``df``; rows with a missing value in a used column are left out.

    ``levels`` codes categorical columns as in the whole data (see :func:`specify`);
    ``check_rank=False`` skips the rank check of X, for a sample of persons whose model is
    fitted on the statistics of all of them (the rank is checked there)."""
    parsed = parse_formula(formula) if isinstance(formula, str) else formula
    spec = specify(df, parsed, levels=levels)
    mats = model_matrices(spec, df)
    frame, y, X, U = mats.frame, mats.y, mats.X, mats.U
    if frame.height == 0:
        raise ModelError(
            f"formula {parsed.text!r}: no rows left after leaving out rows with missing values"
        )
    resp = parsed.response
    if y.size > 1 and np.ptp(y) == 0:
        raise ModelError(
            f"formula {parsed.text!r}: the outcome {resp.label!r} is constant ({y[0]:g}); there is nothing to model"
        )
    names = list(spec.fixed_names)
    if check_rank:
        _check_rank(mats.gram[: X.shape[1], : X.shape[1]], names, parsed.text)
    grouping = [replace(g, codes=c) for g, c in zip(spec.factors, mats.codes, strict=True)]
    select = [i for g in grouping for i in g.select]
    nested = len(grouping) > 1
    Z = U[:, select] if nested or select != list(range(U.shape[1])) else U

    inner = grouping[0]
    m = inner.m
    n = frame.height
    for g in grouping:
        if g.m < 2:
            raise ModelError(
                f"formula {parsed.text!r}: the grouping factor {g.name!r} has only {g.m} level"
            )
    if m >= n:
        raise ModelError(
            f"formula {parsed.text!r}: the grouping factor {inner.name!r} has as many levels ({m}) as observations ({n}); "
            "each person needs repeated measures"
        )
    total = sum(g.q * g.m for g in grouping)
    if total >= n:
        counts = " + ".join(f"{g.q} x {g.m}" for g in grouping)
        raise ModelError(
            f"formula {parsed.text!r}: number of observations ({n}) <= number of random effects "
            f"({counts} = {total}); the residual variance is not identifiable: "
            "use fewer random slopes"
        )
    group_levels = inner.units[inner.columns[0]] if len(inner.columns) == 1 else inner.labels
    residual = None
    if parsed.residual is not None:
        from pipeline.model.structured import residual_spec

        residual = residual_spec(frame, parsed.residual, inner.codes, inner.m, parsed.text)
    return Design(
        formula=parsed,
        frame=frame,
        y=y,
        X=X,
        Z=Z,
        fixed_names=tuple(names),
        random_names=spec.random_names,
        group=inner.name,
        group_codes=inner.codes,
        group_levels=group_levels,
        blocks=spec.blocks,
        levels=spec.levels,
        rows_dropped=mats.rows_dropped,
        grouping=tuple(grouping),
        U=U if nested else None,
        residual=residual,
        block=mats.block,
        gram=mats.gram,
    )


def _random_structure(
    kept: pl.LazyFrame, parsed: Formula, schema: pl.Schema, levels: dict[str, tuple[str, ...]]
) -> tuple[list[GroupingLevel], list[tuple[str, pl.Expr]], list[tuple[str, pl.Expr]], list[Block]]:
    """The grouping factors (checked to be nested, innermost first), Z's and U's columns, the blocks."""
    text = parsed.text
    by_group: dict[str, list] = {}
    columns_of: dict[str, tuple[str, ...]] = {}
    for r in parsed.random:
        by_group.setdefault(r.group, []).append(r)
        columns_of[r.group] = r.columns_of_group
    res = parsed.residual
    if res is not None:
        if not by_group:  # gls / mmrm: no random effects, the persons are the structure's group
            by_group[res.group] = []
            columns_of[res.group] = (res.group,)
        elif res.group not in by_group or len(by_group) > 1:
            raise FormulaError(
                f"formula {text!r}: the error structure {res.text} must group by the random "
                f"effects' one grouping column ({', '.join(by_group)}); error structures beside "
                "nested grouping factors are not supported yet"
            )
    for cols in columns_of.values():
        for c in cols:
            if schema[c] == pl.Boolean:
                raise ModelError(f"formula {text!r}: the grouping column {c!r} is boolean")
    # one pass over the rows: the distinct combinations of all grouping columns; the units of
    # every factor and the nesting pairs are read from those (persons, not rows)
    group_cols = list(dict.fromkeys(c for cols in columns_of.values() for c in cols))
    packed = _integer_units(kept, group_cols, columns_of, schema)
    if packed is not None:
        combos, units, pack = packed
    else:
        pack = None
        combos = kept.select(group_cols).unique().collect()
        units = {
            name: (combos if list(cols) == group_cols else combos.select(cols).unique()).sort(
                list(cols)
            )
            for name, cols in columns_of.items()
        }
    # lme4's order: decreasing number of units (innermost first); ties keep formula order
    order = sorted(columns_of, key=lambda g: -units[g].height)
    parents: dict[str, np.ndarray | None] = {}
    for inner, outer in zip(order, order[1:], strict=False):
        icols, ocols = list(columns_of[inner]), list(columns_of[outer])
        mi, mo = units[inner].height, units[outer].height
        both = list(dict.fromkeys(icols + ocols))
        if set(ocols) <= set(icols) and pack is not None:  # as below, by packed keys
            outer_keys = pack({c: units[outer][c].to_numpy() for c in ocols}, ocols)
            inner_keys = pack({c: units[inner][c].to_numpy() for c in ocols}, ocols)
            pairs = pl.DataFrame(
                {
                    "_inner": np.arange(mi, dtype=np.int64),
                    "_outer": np.searchsorted(outer_keys, inner_keys).astype(np.int64),
                }
            )
        elif set(ocols) <= set(icols):  # school:pid in school: the inner key holds the outer one
            pairs = (
                units[inner]
                .select(ocols)
                .join(
                    units[outer].with_row_index("_outer"),
                    on=ocols,
                    how="left",
                    maintain_order="left",
                )
                .with_row_index("_inner")
                .select("_inner", "_outer")
            )
        else:
            pairs = (
                (combos if set(both) == set(group_cols) else combos.select(both).unique())
                .join(units[inner].with_row_index("_inner"), on=icols, how="left")
                .join(units[outer].with_row_index("_outer"), on=ocols, how="left")
                .select("_inner", "_outer")
                .unique()
                .sort("_inner", "_outer")
            )
        inner_codes = pairs["_inner"].cast(pl.Int64).to_numpy()
        outer_codes = pairs["_outer"].cast(pl.Int64).to_numpy()
        if pairs.height > mi or mi == mo:
            if mi == mo and pairs.height == mi:
                raise FormulaError(
                    f"formula {text!r}: the grouping factors {inner!r} and {outer!r} have the same "
                    "units; use one of them"
                )
            dup = int(np.flatnonzero(inner_codes[1:] == inner_codes[:-1])[0])
            unit = _label(units[inner], int(inner_codes[dup]))
            a = _label(units[outer], int(outer_codes[dup]))
            b = _label(units[outer], int(outer_codes[dup + 1]))
            raise FormulaError(
                f"formula {text!r}: the grouping factors {inner!r} and {outer!r} are crossed, not nested "
                f"({inner} {unit!r} occurs in {outer} {a!r} and {b!r}); crossed random effects are "
                f"not supported yet (if ids are unique only within {outer}, write ({outer}/{inner}))"
            )
        parents[inner] = outer_codes
    parents[order[-1]] = None

    uexprs: list[tuple[str, pl.Expr]] = []
    zexprs: list[tuple[str, pl.Expr]] = []
    blocks: list[Block] = []
    grouping: list[GroupingLevel] = []
    for name in order:
        split = 0
        offset = len(zexprs)
        local: list[str] = []
        select: list[int] = []
        level_blocks: list[Block] = []
        for r in by_group[name]:
            parts = _random_exprs(r, schema, levels, text)
            pieces = [parts] if r.correlated else [[part] for part in parts]
            for piece in pieces:
                label = name if split == 0 else f"{name}.{split}"
                split += 1
                start = len(zexprs)
                for term, expr in piece:
                    if term in local:
                        raise FormulaError(
                            f"formula {text!r}: the random effect {term!r} appears twice for {name!r}"
                        )
                    local.append(term)
                    zexprs.append((term, expr))
                    known = [n for n, _ in uexprs]
                    if term not in known:
                        uexprs.append((term, expr))
                    select.append([n for n, _ in uexprs].index(term))
                block = Block(label, tuple(n for n, _ in piece), start, r.correlated)
                level_blocks.append(block)
        blocks += level_blocks
        grouping.append(
            GroupingLevel(
                name=name,
                columns=columns_of[name],
                codes=np.zeros(0, dtype=np.int64),
                units=units[name],
                names=tuple(local),
                offset=offset,
                select=tuple(select),
                blocks=tuple(level_blocks),
                parent=parents[name],
            )
        )
    return grouping, zexprs, uexprs, blocks


def _integer_units(
    kept: pl.LazyFrame,
    group_cols: list[str],
    columns_of: dict[str, tuple[str, ...]],
    schema: pl.Schema,
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame], object] | None:
    """The distinct combinations of integer grouping columns and every factor's sorted units,
    by packing each row's keys into one int64 (no hashing of rows, no sort when the rows come
    sorted by their keys, as long files usually do). Returns (combinations, units, the packing
    function), or None when a column is not an integer type or the keys do not fit."""
    if not all(schema[c].is_integer() and schema[c] != pl.UInt64 for c in group_cols):
        return None
    rows = kept.select(group_cols).collect()
    if rows.height == 0:
        return None
    arrays = {c: rows[c].to_numpy() for c in group_cols}
    low = {c: int(arrays[c].min()) for c in group_cols}
    span = {c: int(arrays[c].max()) - low[c] + 1 for c in group_cols}
    if math.prod(span.values()) >= 2**62:
        return None

    def pack(values: dict[str, np.ndarray], names) -> np.ndarray:
        key = np.zeros(len(values[names[0]]), dtype=np.int64)
        for c in names:
            key *= span[c]
            key += values[c].astype(np.int64, copy=False) - low[c]
        return key

    def unpack(key: np.ndarray, names) -> pl.DataFrame:
        out: dict[str, np.ndarray] = {}
        for c in reversed(names):
            out[c] = key % span[c] + low[c]
            key = key // span[c]
        return pl.DataFrame([pl.Series(c, out[c]).cast(schema[c]) for c in names])

    key = pack(arrays, group_cols)
    step = key[1:] != key[:-1]
    if key.size < 2 or bool(np.all(key[1:] >= key[:-1])):
        distinct = key[np.concatenate(([0], np.flatnonzero(step) + 1))]
    else:
        distinct = np.unique(key)
    combos = unpack(distinct, group_cols)
    combo_arrays = {c: combos[c].to_numpy() for c in group_cols}
    units = {}
    for name, cols in columns_of.items():
        own = distinct if list(cols) == group_cols else np.unique(pack(combo_arrays, list(cols)))
        units[name] = unpack(own, list(cols))
    return combos, units, pack


def _label(units: pl.DataFrame, i: int) -> str:
    return ":".join(str(v) for v in units.row(i))


def _expr(expr: Expr, schema: pl.Schema, text: str) -> pl.Expr:
    """A polars expression for an arithmetic expression on numeric columns (no Python eval)."""
    if isinstance(expr, Num):
        return pl.lit(expr.value, dtype=pl.Float64)
    if isinstance(expr, Col):
        dtype = schema[expr.name]
        if not dtype.is_numeric():
            raise ModelError(
                f"formula {text!r}: column {expr.name!r} is not numeric ({dtype}) but is used as a number"
            )
        return pl.col(expr.name).cast(pl.Float64)
    if isinstance(expr, Paren):
        return _expr(expr.inner, schema, text)
    if isinstance(expr, Neg):
        return -_expr(expr.operand, schema, text)
    if isinstance(expr, Call):
        arg = _expr(expr.argument, schema, text)
        return {"log": arg.log, "exp": arg.exp, "sqrt": arg.sqrt, "abs": arg.abs}[expr.function]()
    assert isinstance(expr, BinOp)
    a = _expr(expr.left, schema, text)
    b = _expr(expr.right, schema, text)
    if expr.op == "+":
        return a + b
    if expr.op == "-":
        return a - b
    if expr.op == "*":
        return a * b
    if expr.op == "/":
        return a / b
    return a.pow(b)


def _gram(
    block: np.ndarray, upper: np.ndarray, named: list[tuple[str, pl.Expr]], text: str
) -> np.ndarray:
    """``block' block`` from its upper triangle, with the check that every value is finite: a
    non-finite value makes the diagonal non-finite, and only then are the rows searched for
    it (to name it)."""
    gram = np.triu(upper) + np.triu(upper, 1).T
    if not np.all(np.isfinite(np.diag(gram))):
        _check_finite(block, named, text)
        col = int(np.flatnonzero(~np.isfinite(np.diag(gram)))[0])
        row = int(np.argmax(np.abs(block[:, col])))
        raise ModelError(
            f"formula {text!r}: {named[col][0]!r} has values too large to compute with "
            f"(largest {block[row, col]:.3g}, in row {row + 1} of the data used): rescale "
            "the column"
        )
    return gram


def _matrix(frame: pl.DataFrame, named: list[tuple[str, pl.Expr]], text: str) -> np.ndarray:
    """Evaluate named column expressions into an (n, k) float array; a non-finite value is named."""
    out = frame.select([e.alias(f"c{j}") for j, (_, e) in enumerate(named)]).to_numpy(order="c")
    out = np.asarray(out, dtype=float)
    _check_finite(out, named, text)
    return out


def _check_finite(values: np.ndarray, named: list[tuple[str, pl.Expr]], text: str) -> None:
    """Refuse a non-finite value of the (rows x named columns) array, naming column and row."""
    finite = np.isfinite(values)
    if not finite.all():
        row, col = (int(v[0]) for v in np.nonzero(~finite))
        raise ModelError(
            f"formula {text!r}: {named[col][0]!r} has a non-finite value ({values[row, col]}) "
            f"in row {row + 1} of the data used (check the column's range)"
        )


def _factor_exprs(
    factor: Factor,
    contrasts: bool,
    schema: pl.Schema,
    levels: dict[str, tuple[str, ...]],
    text: str,
) -> list[tuple[str, pl.Expr]]:
    if factor.is_column and factor.label in levels:
        lv = levels[factor.label]
        use = lv[1:] if contrasts else lv
        if contrasts and len(lv) < 2:
            raise ModelError(
                f"formula {text!r}: the categorical column {factor.label!r} has a single level ({lv[0]!r}) in the data used"
            )
        col = pl.col(factor.label)
        if schema[factor.label] == pl.Boolean:
            col = col.cast(pl.String)
        return [
            (
                f"{factor.label}{'TRUE' if v == 'true' else 'FALSE' if v == 'false' else v}",
                (col == v).cast(pl.Float64),
            )
            for v in use
        ]
    for c in factor.columns:
        if c in levels:
            raise ModelError(
                f"formula {text!r}: column {c!r} is categorical and cannot be used inside {factor.label}"
            )
    return [(factor.label, _expr(factor.expr, schema, text))]


def _term_exprs(
    term: Term, present: set[Term], schema: pl.Schema, levels: dict[str, tuple[str, ...]], text: str
) -> list[tuple[str, pl.Expr]]:
    out: list[tuple[str, pl.Expr | None]] = [("", None)]
    for factor in term:
        rest = tuple(f for f in term if f != factor)
        contrasts = rest in present
        cols = _factor_exprs(factor, contrasts, schema, levels, text)
        # R: the first factor varies fastest
        out = [
            (f"{n1}:{n2}" if n1 else n2, c2 if c1 is None else c1 * c2)
            for n2, c2 in cols
            for n1, c1 in out
        ]
    return [(n, e) for n, e in out if e is not None]


def _random_exprs(
    r: RandomTerm, schema: pl.Schema, levels: dict[str, tuple[str, ...]], text: str
) -> list[tuple[str, pl.Expr]]:
    present = {()} if r.intercept else set()
    present |= set(r.terms)
    out: list[tuple[str, pl.Expr]] = []
    if r.intercept:
        out.append(("(Intercept)", pl.repeat(1.0, pl.len())))
    for term in r.terms:
        out += _term_exprs(term, present, schema, levels, text)
    return out


def _check_rank(xtx: np.ndarray, names: list[str], text: str) -> None:
    """Refuse a rank-deficient X, from its cross-product ``X'X``."""
    d = np.sqrt(np.diag(xtx))
    if np.any(d == 0):
        bad = names[int(np.flatnonzero(d == 0)[0])]
        raise ModelError(
            f"formula {text!r}: the fixed-effect column {bad!r} is all zero in the data used"
        )
    scaled = xtx / np.outer(d, d)
    _, r, piv = scipy.linalg.qr(scaled, pivoting=True)
    tol = np.abs(r[0, 0]) * 1e-10 * max(scaled.shape)
    rank = int(np.sum(np.abs(np.diag(r)) > tol))
    if rank < len(names):
        dropped = [names[i] for i in sorted(piv[rank:])]
        raise ModelError(
            f"formula {text!r}: the fixed-effects design is rank deficient: "
            f"{', '.join(repr(n) for n in dropped)} is a linear combination of the other columns "
            "(remove it or check the data: a covariate that is constant, or duplicated)"
        )
