"""From a polars frame and a parsed formula to the model matrices.

Glossary (Bates et al. 2015): y the response (n), X the fixed-effects model
matrix (n x p), Z the random-effects model matrix of the one grouping factor
(n x q per group; row i belongs to group ``group_codes[i]``), theta the
covariance parameters that fill the lower triangle of the relative covariance
factor Lambda (q x q), column by column, block by block.

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

_CATEGORICAL = (pl.String, pl.Categorical, pl.Enum, pl.Boolean)


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
    if not isinstance(df, pl.DataFrame):
        raise ModelError(f"expected a polars DataFrame, got {type(df).__name__}")
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
    frame = df.filter(keep)
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
    y = _evaluate(resp.expr, frame, parsed.text)
    if y.size > 1 and np.ptp(y) == 0:
        raise ModelError(
            f"formula {parsed.text!r}: the outcome {resp.label!r} is constant ({y[0]:g}); there is nothing to model"
        )

    # fixed effects
    present = {()} if parsed.intercept else set()
    present |= set(parsed.terms)
    cols: list[np.ndarray] = []
    names: list[str] = []
    if parsed.intercept:
        cols.append(np.ones(frame.height))
        names.append("(Intercept)")
    for term in parsed.terms:
        for name, col in _term_columns(term, present, frame, levels, parsed.text):
            cols.append(col)
            names.append(name)
    if not cols:
        raise ModelError(f"formula {parsed.text!r}: no fixed effects (not even an intercept)")
    X = np.column_stack(cols)
    _check_rank(X, names, parsed.text)

    # random effects: one grouping factor, blocks in order
    group = parsed.random[0].group
    zcols: list[np.ndarray] = []
    znames: list[str] = []
    blocks: list[Block] = []
    split = 0
    for r in parsed.random:
        parts = _random_columns(r, frame, levels, parsed.text)
        if r.correlated:
            pieces = [parts]
        else:
            pieces = [[p] for p in parts]
        for piece in pieces:
            label = group if split == 0 else f"{group}.{split}"
            split += 1
            start = len(znames)
            for name, col in piece:
                if name in znames:
                    raise FormulaError(
                        f"formula {parsed.text!r}: the random effect {name!r} appears twice for {group!r}"
                    )
                znames.append(name)
                zcols.append(col)
            blocks.append(Block(label, tuple(n for n, _ in piece), start, r.correlated))
    Z = np.column_stack(zcols)

    gser = frame[group]
    codes_frame = frame.select(pl.col(group).rank("dense").cast(pl.Int64) - 1)
    group_codes = codes_frame.to_series().to_numpy()
    group_levels = gser.unique().sort()
    m = group_levels.len()
    n = frame.height
    if m < 2:
        raise ModelError(
            f"formula {parsed.text!r}: the grouping column {group!r} has only {m} level"
        )
    if m >= n:
        raise ModelError(
            f"formula {parsed.text!r}: the grouping column {group!r} has as many levels ({m}) as observations ({n}); "
            "each person needs repeated measures"
        )
    if Z.shape[1] * m >= n:
        raise ModelError(
            f"formula {parsed.text!r}: number of observations ({n}) <= number of random effects "
            f"({Z.shape[1]} x {m} = {Z.shape[1] * m}); the residual variance is not identifiable: "
            "use fewer random slopes"
        )
    return Design(
        formula=parsed,
        frame=frame,
        y=y,
        X=X,
        Z=Z,
        fixed_names=tuple(names),
        random_names=tuple(znames),
        group=group,
        group_codes=group_codes,
        group_levels=group_levels,
        blocks=tuple(blocks),
        levels=levels,
        rows_dropped=rows_dropped,
    )


def _evaluate(expr: Expr, frame: pl.DataFrame, text: str) -> np.ndarray:
    """Evaluate an arithmetic expression on numeric columns (no Python eval)."""
    if isinstance(expr, Num):
        return np.full(frame.height, expr.value)
    if isinstance(expr, Col):
        dtype = frame.schema[expr.name]
        if not dtype.is_numeric():
            raise ModelError(
                f"formula {text!r}: column {expr.name!r} is not numeric ({dtype}) but is used in arithmetic"
            )
        values = frame[expr.name].cast(pl.Float64).to_numpy()
        if not np.all(np.isfinite(values)):
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ModelError(
                f"formula {text!r}: column {expr.name!r} has a non-finite value ({values[bad]}) in row {bad + 1} of the data used"
            )
        return values
    if isinstance(expr, Paren):
        return _evaluate(expr.inner, frame, text)
    if isinstance(expr, Neg):
        return -_evaluate(expr.operand, frame, text)
    if isinstance(expr, Call):
        arg = _evaluate(expr.argument, frame, text)
        with np.errstate(all="ignore"):
            out = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs}[expr.function](arg)
        if not np.all(np.isfinite(out)):
            raise ModelError(
                f"formula {text!r}: {expr.function}() gives non-finite values (check the column's range)"
            )
        return out
    assert isinstance(expr, BinOp)
    a = _evaluate(expr.left, frame, text)
    b = _evaluate(expr.right, frame, text)
    with np.errstate(all="ignore"):
        out = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": np.power}[
            expr.op
        ](a, b)
    if not np.all(np.isfinite(out)):
        raise ModelError(
            f"formula {text!r}: the expression gives non-finite values (division by zero?)"
        )
    return out


def _factor_columns(
    factor: Factor,
    contrasts: bool,
    frame: pl.DataFrame,
    levels: dict[str, tuple[str, ...]],
    text: str,
) -> list[tuple[str, np.ndarray]]:
    if factor.is_column and factor.label in levels:
        lv = levels[factor.label]
        values = frame[factor.label].cast(pl.String).to_numpy()
        use = lv[1:] if contrasts else lv
        if contrasts and len(lv) < 2:
            raise ModelError(
                f"formula {text!r}: the categorical column {factor.label!r} has a single level ({lv[0]!r}) in the data used"
            )
        label = factor.label
        return [
            (
                f"{label}{'TRUE' if v == 'true' else 'FALSE' if v == 'false' else v}",
                (values == v).astype(float),
            )
            for v in use
        ]
    for c in factor.columns:
        if c in levels:
            raise ModelError(
                f"formula {text!r}: column {c!r} is categorical and cannot be used inside {factor.label}"
            )
    return [(factor.label, _evaluate(factor.expr, frame, text))]


def _term_columns(
    term: Term,
    present: set[Term],
    frame: pl.DataFrame,
    levels: dict[str, tuple[str, ...]],
    text: str,
) -> list[tuple[str, np.ndarray]]:
    out: list[tuple[str, np.ndarray]] = [("", np.ones(frame.height))]
    for factor in term:
        rest = tuple(f for f in term if f != factor)
        contrasts = rest in present
        cols = _factor_columns(factor, contrasts, frame, levels, text)
        # R: the first factor varies fastest
        out = [(f"{n1}:{n2}" if n1 else n2, c1 * c2) for n2, c2 in cols for n1, c1 in out]
    return out


def _random_columns(
    r: RandomTerm, frame: pl.DataFrame, levels: dict[str, tuple[str, ...]], text: str
) -> list[tuple[str, np.ndarray]]:
    present = {()} if r.intercept else set()
    present |= set(r.terms)
    out: list[tuple[str, np.ndarray]] = []
    if r.intercept:
        out.append(("(Intercept)", np.ones(frame.height)))
    for term in r.terms:
        out += _term_columns(term, present, frame, levels, text)
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
