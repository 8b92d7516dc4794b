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
from dataclasses import dataclass

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


def build_design(df: pl.DataFrame, formula: str | Formula) -> Design:
    """Model matrices for ``formula`` on ``df``; rows with a missing value in a used column are left out."""
    parsed = parse_formula(formula) if isinstance(formula, str) else formula
    if isinstance(df, pl.LazyFrame):
        names = df.collect_schema().names()
        if all(c in names for c in parsed.columns):
            df = df.select(parsed.columns).collect()
        else:  # collect the header only, for the message below
            df = df.head(0).collect()
    if not isinstance(df, pl.DataFrame):
        raise ModelError(
            f"expected a polars DataFrame or LazyFrame, got {type(df).__name__} "
            "(convert with polars.from_pandas(...) first)"
        )
    missing = [c for c in parsed.columns if c not in df.columns]
    if missing:
        name = missing[0]
        close = difflib.get_close_matches(name, df.columns, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise FormulaError(
            f"formula {parsed.text!r}: column {name!r} does not exist{hint} "
            f"(columns: {', '.join(df.columns)})"
        )
    used = parsed.columns
    keep = pl.all_horizontal(
        [
            pl.col(c).is_not_null()
            & (pl.col(c).is_not_nan() if df.schema[c].is_float() else pl.lit(True))
            for c in used
        ]
    )
    n_before = df.height
    n_keep = int(df.select(keep.sum()).item())
    frame = df if n_keep == n_before else df.filter(keep)
    rows_dropped = n_before - frame.height
    if frame.height == 0:
        raise ModelError(
            f"formula {parsed.text!r}: no rows left after leaving out rows with missing values"
        )

    levels: dict[str, tuple[str, ...]] = {}
    for c in used:
        dtype = frame.schema[c]
        if isinstance(dtype, pl.Enum):
            present = set(frame[c].cast(pl.String).unique().to_list())
            levels[c] = tuple(v for v in dtype.categories.to_list() if v in present)
        elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Categorical):
            levels[c] = tuple(sorted(frame[c].cast(pl.String).unique().to_list()))
        elif dtype == pl.Boolean:
            levels[c] = tuple(
                v for v in ("false", "true") if v in set(frame[c].cast(pl.String).to_list())
            )

    # response
    resp = parsed.response
    if any(c in levels for c in resp.columns):
        raise ModelError(f"formula {parsed.text!r}: the outcome {resp.label!r} is not numeric")
    schema = frame.schema
    y = _matrix(frame, [(resp.label, _expr(resp.expr, schema, parsed.text))], parsed.text)[:, 0]
    if y.size > 1 and np.ptp(y) == 0:
        raise ModelError(
            f"formula {parsed.text!r}: the outcome {resp.label!r} is constant ({y[0]:g}); there is nothing to model"
        )

    # fixed effects
    present = {()} if parsed.intercept else set()
    present |= set(parsed.terms)
    fixed: list[tuple[str, pl.Expr]] = []
    if parsed.intercept:
        fixed.append(("(Intercept)", pl.repeat(1.0, pl.len())))
    for term in parsed.terms:
        fixed += _term_exprs(term, present, schema, levels, parsed.text)
    if not fixed:
        raise ModelError(f"formula {parsed.text!r}: no fixed effects (not even an intercept)")
    names = [n for n, _ in fixed]
    X = _matrix(frame, fixed, parsed.text)
    _check_rank(X, names, parsed.text)

    # random effects: one or more grouping factors, each with its blocks in order
    grouping, zexprs, uexprs, blocks = _random_structure(frame, parsed, schema, levels)
    znames = [n for n, _ in zexprs]
    U = _matrix(frame, uexprs, parsed.text) if uexprs else np.zeros((frame.height, 0))
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
    group_levels = (
        frame[inner.columns[0]].unique().sort() if len(inner.columns) == 1 else inner.labels
    )
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
        random_names=tuple(znames),
        group=inner.name,
        group_codes=inner.codes,
        group_levels=group_levels,
        blocks=tuple(blocks),
        levels=levels,
        rows_dropped=rows_dropped,
        grouping=tuple(grouping),
        U=U if nested else None,
        residual=residual,
    )


def _unit_codes(frame: pl.DataFrame, columns: tuple[str, ...]) -> tuple[np.ndarray, pl.DataFrame]:
    """Code each row's unit (0..m-1, in sorted order of the unit keys) and the sorted keys."""
    if len(columns) == 1:
        c = columns[0]
        codes = frame.select(pl.col(c).rank("dense").cast(pl.Int64) - 1).to_series().to_numpy()
        return codes, frame.select(pl.col(c).unique().sort())
    units = frame.select(columns).unique().sort(list(columns))
    coded = (
        frame.select(columns)
        .with_row_index("_row")
        .join(units.with_row_index("_unit"), on=list(columns), how="left")
    )
    codes = coded.sort("_row")["_unit"].cast(pl.Int64).to_numpy()
    return codes, units


def _random_structure(
    frame: pl.DataFrame, parsed: Formula, schema: pl.Schema, levels: dict[str, tuple[str, ...]]
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
            if c in levels and schema[c] == pl.Boolean:
                raise ModelError(f"formula {text!r}: the grouping column {c!r} is boolean")
    coded = {name: _unit_codes(frame, cols) for name, cols in columns_of.items()}
    # lme4's order: decreasing number of units (innermost first); ties keep formula order
    order = sorted(columns_of, key=lambda g: -coded[g][1].height)
    parents: dict[str, np.ndarray | None] = {}
    for inner, outer in zip(order, order[1:], strict=False):
        ci, co = coded[inner][0], coded[outer][0]
        mi, mo = coded[inner][1].height, coded[outer][1].height
        _, first_row = np.unique(ci, return_index=True)
        first = co[first_row]  # the outer unit of each inner unit's first row
        moved = np.flatnonzero(first[ci] != co)
        if moved.size or mi == mo:
            if mi == mo and not moved.size:
                raise FormulaError(
                    f"formula {text!r}: the grouping factors {inner!r} and {outer!r} have the same "
                    "units; use one of them"
                )
            row = int(moved[0])
            unit = _label(coded[inner][1], int(ci[row]))
            a = _label(coded[outer][1], int(first[ci[row]]))
            b = _label(coded[outer][1], int(co[row]))
            raise FormulaError(
                f"formula {text!r}: the grouping factors {inner!r} and {outer!r} are crossed, not nested "
                f"({inner} {unit!r} occurs in {outer} {a!r} and {b!r}); crossed random effects are "
                f"not supported yet (if ids are unique only within {outer}, write ({outer}/{inner}))"
            )
        parents[inner] = first
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
        codes, units = coded[name]
        grouping.append(
            GroupingLevel(
                name=name,
                columns=columns_of[name],
                codes=codes,
                units=units,
                names=tuple(local),
                offset=offset,
                select=tuple(select),
                blocks=tuple(level_blocks),
                parent=parents[name],
            )
        )
    return grouping, zexprs, uexprs, blocks


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


def _matrix(frame: pl.DataFrame, named: list[tuple[str, pl.Expr]], text: str) -> np.ndarray:
    """Evaluate named column expressions into an (n, k) float array; a non-finite value is named."""
    out = frame.select([e.alias(f"c{j}") for j, (_, e) in enumerate(named)]).to_numpy(order="c")
    out = np.asarray(out, dtype=float)
    finite = np.isfinite(out)
    if not finite.all():
        row, col = (int(v[0]) for v in np.nonzero(~finite))
        raise ModelError(
            f"formula {text!r}: {named[col][0]!r} has a non-finite value ({out[row, col]}) "
            f"in row {row + 1} of the data used (check the column's range)"
        )
    return out


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


def _check_rank(X: np.ndarray, names: list[str], text: str) -> None:
    xtx = X.T @ X
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
