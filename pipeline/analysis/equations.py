"""A fitted growth model written as level-1 and level-2 equations (HLM notation).

Raudenbush & Bryk (2002, ch. 6) and Singer & Willett (2003, ch. 4) write the
model in two levels:

    Level 1:  Y_ti = pi0i + pi1i*(age1)_ti + e_ti
    Level 2:  pi0i = b00 + b01*trtY_i + r0i
              pi1i = b10 + b11*trtY_i + r1i

Each fixed-effect term of the lme4 formula is split into its level-1 part (the
time terms and any time-varying covariate) and its level-2 part (person-level
predictors): the level-1 part says which growth parameter pi_k it belongs to, the
level-2 part is the predictor of that parameter. ``(Intercept)`` is b00;
``age1:trtY`` is b11. A growth parameter has a level-2 residual r_ki when its
level-1 term is a random term of the model.

Columns of the table: model, level ("Level 1", "Level 2", "Variances",
"lme4"), equation (the symbolic equation followed by the estimates).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import polars as pl

from pipeline.analysis.sequence import knot_terms
from pipeline.analysis.sequence import time_terms as polynomial_terms
from schemas.tables import columns

if TYPE_CHECKING:
    from pipeline.analysis.context import AnalysisContext

__all__ = ["LEVEL_EQUATIONS_SCHEMA", "level_equations", "number", "tables"]

LEVEL_EQUATIONS_SCHEMA = columns("level_equations")


def number(value: float) -> str:
    """Five significant digits, no exponent for ordinary magnitudes."""
    if value != value:  # NaN
        return "NaN"
    return f"{value:.5g}"


def _level1_names(
    level1_columns: Iterable[str], categories: Mapping[str, Sequence[str]]
) -> set[str]:
    names: set[str] = set()
    for column in level1_columns:
        names.add(column)
        names.update(f"{column}{level}" for level in categories.get(column, ()))
    return names


def level_equations(
    *,
    model: str,
    formula: str,
    outcome: str,
    fixed_effects: pl.DataFrame,
    variance_components: pl.DataFrame,
    random_terms: Sequence[str],
    time_terms: Sequence[str],
    level1_columns: Iterable[str] = (),
    categories: Mapping[str, Sequence[str]] | None = None,
) -> pl.DataFrame:
    """The ``level_equations`` rows of one fitted model."""
    level1 = set(time_terms) | _level1_names(level1_columns, categories or {})
    # growth parameter (level-1 part) -> list of (level-2 part, estimate)
    parameters: dict[str, list[tuple[str, float]]] = {}
    for term, estimate in zip(
        fixed_effects["term"].to_list(), fixed_effects["estimate"].to_list(), strict=True
    ):
        if term == "(Intercept)":
            parameters.setdefault("", []).insert(0, ("", float(estimate)))
            continue
        factors = term.split(":")
        inner = ":".join(f for f in factors if f in level1)
        outer = ":".join(f for f in factors if f not in level1)
        parameters.setdefault(inner, []).append((outer, float(estimate)))
    random_parts = ["" if term == "(Intercept)" else term for term in random_terms]
    for part in random_parts:
        parameters.setdefault(part, [])
    order = sorted(parameters, key=lambda part: (part != "", _position(part, time_terms), part))
    index = {part: k for k, part in enumerate(order)}

    level1_terms = []
    for part in order:
        k = index[part]
        level1_terms.append(f"pi{k}i" if part == "" else f"pi{k}i*({part})_ti")
    rows = [("Level 1", f"Y_ti = {' + '.join(level1_terms)} + e_ti   (Y = {outcome})")]

    for part in order:
        k = index[part]
        symbols: list[str] = []
        values: list[str] = []
        predictors = parameters[part]
        has_constant = any(outer == "" for outer, _ in predictors)
        j = 0 if has_constant else 1
        for outer, estimate in sorted(predictors, key=lambda item: item[0] != ""):
            name = f"b{k}{j}"
            symbols.append(name if outer == "" else f"{name}*{outer}_i")
            values.append(f"{name} = {number(estimate)}")
            j += 1
        if part in random_parts:
            symbols.append(f"r{k}i")
        equation = f"pi{k}i = {' + '.join(symbols) if symbols else '0'}"
        if values:
            equation += "; " + ", ".join(values)
        rows.append(("Level 2", equation))

    rows.append(("Variances", _variances(variance_components, random_parts, index)))
    rows.append(("lme4", formula))
    return pl.DataFrame(
        {
            "model": [model] * len(rows),
            "level": [r[0] for r in rows],
            "equation": [r[1] for r in rows],
        },
        schema=LEVEL_EQUATIONS_SCHEMA,
    )


def _position(part: str, time_terms: Sequence[str]) -> int:
    for position, term in enumerate(time_terms):
        if part == term:
            return position
    return len(time_terms)


def _variances(
    variance_components: pl.DataFrame, random_parts: Sequence[str], index: Mapping[str, int]
) -> str:
    def k_of(term: str | None) -> int | None:
        part = "" if term == "(Intercept)" else term
        return index.get(part) if part is not None else None

    pieces: list[str] = []
    for row in variance_components.iter_rows(named=True):
        if row["group"] == "Residual":
            pieces.insert(0, f"Var(e_ti) = sigma^2 = {number(row['variance'])}")
            continue
        a = k_of(row["term1"])
        if row["term2"] is None:
            pieces.append(f"Var(r{a}i) = tau{a}{a} = {number(row['variance'])}")
        else:
            b = k_of(row["term2"])
            pieces.append(
                f"Cov(r{a}i, r{b}i) = tau{a}{b} = {number(row['variance'])} (correlation {row['sd_cor']:.2f})"
            )
    return "; ".join(pieces)


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """``level_equations`` of every fitted model."""
    fitted = ctx.fitted_models
    if not fitted:
        return {}
    categories = ctx.categories(ctx.fits[fitted[0].name].frame)
    return {
        "level_equations": pl.concat(
            [
                level_equations(
                    model=model.name,
                    formula=model.formula,
                    outcome=ctx.spec.outcome,
                    fixed_effects=ctx.fits[model.name].fixed_effects,
                    variance_components=ctx.fits[model.name].variance_components,
                    random_terms=ctx.fits[model.name].random_terms,
                    time_terms=(
                        *polynomial_terms(ctx.spec.time_name, 5),
                        *knot_terms(ctx.spec),
                    ),
                    level1_columns=ctx.spec.time_covariates,
                    categories=categories,
                )
                for model in fitted
            ]
        )
    }
