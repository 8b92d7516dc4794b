"""pandera (polars backend) schemas of the analysis tables (``docs/CONTRACTS.md``, "Analysis").

``TABLE_SCHEMAS`` maps each table name in ``Analysis.tables`` to its schema;
``validate_tables`` checks a whole dict of tables and raises pandera's error naming
the table. Columns, dtypes and the value rules that always hold (shares in [0, 1],
p-values in [0, 1], variances >= 0, conf_low <= conf_high) are checked; nullable
columns are those that are legitimately empty (e.g. the test of the first model).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

__all__ = ["TABLE_SCHEMAS", "validate_tables"]


def _p(nullable: bool = False) -> pa.Column:
    return pa.Column(pl.Float64, checks=[pa.Check.in_range(0.0, 1.0)], nullable=nullable)


def _text(nullable: bool = False, isin: list[str] | None = None) -> pa.Column:
    checks = [pa.Check.isin(isin)] if isin else None
    return pa.Column(pl.String, checks=checks, nullable=nullable)


def _number(nullable: bool = False, minimum: float | None = None) -> pa.Column:
    checks = [pa.Check.ge(minimum)] if minimum is not None else None
    return pa.Column(pl.Float64, checks=checks, nullable=nullable)


def _ordered_interval(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(
        pl.col("conf_low").is_null()
        | pl.col("conf_high").is_null()
        | (pl.col("conf_low") <= pl.col("conf_high"))
    )


_INTERVAL = pa.Check(_ordered_interval, name="conf_low <= conf_high")


def _schema(name: str, columns: dict[str, pa.Column], interval: bool = False) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        columns, name=name, strict=True, ordered=True, checks=[_INTERVAL] if interval else None
    )


TABLE_SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "fixed_effects": _schema(
        "fixed_effects",
        {
            "model": _text(),
            "term": _text(),
            "estimate": _number(),
            "std_error": _number(minimum=0.0),
            "df": _number(minimum=0.0),
            "statistic": _number(nullable=True),
            "p_value": _p(nullable=True),
            "conf_low": _number(nullable=True),
            "conf_high": _number(nullable=True),
        },
        interval=True,
    ),
    "variance_components": _schema(
        "variance_components",
        {
            "model": _text(),
            "group": _text(),
            "term1": _text(nullable=True),
            "term2": _text(nullable=True),
            "variance": _number(),
            "sd_cor": _number(nullable=True),
        },
    ),
    "model_fit": _schema(
        "model_fit",
        {
            "model": _text(),
            "formula": _text(),
            "nobs": pa.Column(pl.Int64, checks=[pa.Check.ge(1)]),
            "ngroups": pa.Column(pl.Int64, checks=[pa.Check.ge(1)]),
            "npar": pa.Column(pl.Int64, checks=[pa.Check.ge(1)]),
            "loglik": _number(),
            "aic": _number(),
            "bic": _number(),
            "reml": pa.Column(pl.Boolean),
            "converged": pa.Column(pl.Boolean),
            "singular": pa.Column(pl.Boolean),
            "optimizer": _text(),
            "evaluations": pa.Column(pl.Int64, checks=[pa.Check.ge(0)], nullable=True),
            "max_abs_gradient": _number(nullable=True, minimum=0.0),
        },
    ),
    "model_comparison": _schema(
        "model_comparison",
        {
            "model": _text(),
            "npar": pa.Column(pl.Int64, checks=[pa.Check.ge(1)]),
            "deviance": _number(),
            "aic": _number(),
            "bic": _number(),
            "chisq": _number(nullable=True, minimum=0.0),
            "df": pa.Column(pl.Int64, checks=[pa.Check.ge(1)], nullable=True),
            "p_value": _p(nullable=True),
            "test": _text(nullable=True),
            "against": _text(nullable=True),
        },
    ),
    "icc": _schema(
        "icc",
        {
            "model": _text(),
            "between_variance": _number(minimum=0.0),
            "within_variance": _number(minimum=0.0),
            "icc": _p(nullable=True),
            "conf_low": _p(nullable=True),
            "conf_high": _p(nullable=True),
            "interpretation": _text(),
        },
        interval=True,
    ),
    "variance_explained": _schema(
        "variance_explained",
        {
            "model": _text(),
            "reference": _text(),
            "component": _text(),
            "reference_variance": _number(minimum=0.0),
            "variance": _number(minimum=0.0),
            "proportion_reduced": _number(nullable=True),
        },
    ),
    "r2": _schema(
        "r2",
        {"model": _text(), "r2_marginal": _p(nullable=True), "r2_conditional": _p(nullable=True)},
    ),
    "level_equations": _schema(
        "level_equations",
        {
            "model": _text(),
            "level": _text(isin=["Level 1", "Level 2", "Variances", "lme4"]),
            "equation": _text(),
        },
    ),
    "ols_vs_mlm": _schema(
        "ols_vs_mlm",
        {
            "model": _text(),
            "term": _text(),
            "estimate_ols": _number(),
            "se_ols": _number(minimum=0.0),
            "p_ols": _p(nullable=True),
            "se_cluster": _number(minimum=0.0, nullable=True),
            "p_cluster": _p(nullable=True),
            "estimate_mlm": _number(),
            "se_mlm": _number(minimum=0.0),
            "p_mlm": _p(nullable=True),
            "se_ratio": _number(nullable=True, minimum=0.0),
            "flag": pa.Column(pl.Boolean),
        },
    ),
    "sample_size": _schema(
        "sample_size",
        {
            "check": _text(),
            "value": _number(minimum=0.0),
            "threshold": _number(minimum=0.0),
            "status": _text(isin=["ok", "warning"]),
            "message": _text(),
        },
    ),
    "assumptions": _schema(
        "assumptions",
        {
            "check": _text(),
            "statistic": _number(nullable=True),
            "p_value": _p(nullable=True),
            "verdict": _text(),
        },
    ),
    "reliability": _schema(
        "reliability",
        {
            "coefficient": _text(),
            "reliability": _p(nullable=True),
            "chisq": _number(nullable=True, minimum=0.0),
            "df": pa.Column(pl.Int64, checks=[pa.Check.ge(1)], nullable=True),
            "p_value": _p(nullable=True),
        },
    ),
    "group_trajectories": _schema(
        "group_trajectories",
        {
            "group": _text(),
            "time": _number(),
            "estimate": _number(),
            "std_error": _number(minimum=0.0),
            "conf_low": _number(),
            "conf_high": _number(),
        },
        interval=True,
    ),
    "group_differences": _schema(
        "group_differences",
        {
            "contrast": _text(),
            "quantity": _text(isin=["status at t", "rate of change"]),
            "time": _number(nullable=True),
            "estimate": _number(),
            "std_error": _number(minimum=0.0),
            "df": _number(minimum=0.0),
            "p_value": _p(),
            "p_holm": _p(),
            "conf_low": _number(),
            "conf_high": _number(),
        },
        interval=True,
    ),
    "residuals": _schema(
        "residuals",
        {
            "person": _text(),
            "time": _number(),
            "fitted": _number(),
            "residual": _number(),
            "qq_theoretical": _number(),
        },
    ),
    "residual_variance_by_time": _schema(
        "residual_variance_by_time",
        {
            "time": _number(),
            "n": pa.Column(pl.Int64, checks=[pa.Check.ge(1)]),
            "variance": _number(nullable=True, minimum=0.0),
        },
    ),
    "random_effects": _schema(
        "random_effects",
        {
            "person": _text(),
            "term": _text(),
            "estimate": _number(),
            "std_error": _number(minimum=0.0),
            "conf_low": _number(),
            "conf_high": _number(),
            "qq_theoretical": _number(),
        },
        interval=True,
    ),
    "observed_means": _schema(
        "observed_means",
        {
            "group": _text(),
            "time": _number(),
            "mean": _number(),
            "std_error": _number(nullable=True, minimum=0.0),
            "n": pa.Column(pl.Int64, checks=[pa.Check.ge(1)]),
        },
    ),
}


def validate_tables(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Validate every table that has a schema; an unknown table name is an error."""
    unknown = sorted(set(tables) - set(TABLE_SCHEMAS))
    if unknown:
        raise KeyError(
            f"no schema for the analysis table(s) {unknown}; add them to schemas/tables.py"
        )
    return {name: TABLE_SCHEMAS[name].validate(table) for name, table in tables.items()}
