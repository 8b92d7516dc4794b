"""Numbers and tables as text for the HTML report.

Every number in the report goes through :func:`format_value`, chosen by column
name: p-values as ``<0.001``, counts as integers with thousands separators,
shares as percentages, estimates with three significant decimals. The result is
plain text; HTML escaping is left to the template (jinja2 autoescape).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

MISSING = "–"

P_VALUE_COLUMNS = frozenset({"p_value", "p_ols", "p_cr1", "p_cr2", "p_mlm", "p_holm"})
COUNT_COLUMNS = frozenset(
    {
        "rows",
        "persons",
        "occasions",
        "occasions_with_outcome",
        "min_occasions",
        "max_occasions",
        "n_occasions",
        "n",
        "nobs",
        "ngroups",
        "npar",
        "evaluations",
        "rows_in",
        "rows_used",
        "rows_quarantined",
    }
)
SHARE_COLUMNS = frozenset({"share", "proportion_reduced"})
DEGREES_OF_FREEDOM_COLUMNS = frozenset({"df", "df_cr2"})
TIME_COLUMNS = frozenset({"time", "first_time", "last_time"})

COLUMN_LABELS: Mapping[str, str] = {
    "std_error": "SE",
    "statistic": "t / z",
    "p_value": "p",
    "p_holm": "p (Holm)",
    "conf_low": "95% CI low",
    "conf_high": "95% CI high",
    "ci": "95% CI",
    "sd_cor": "SD / cor",
    "term1": "term",
    "term2": "with",
    "nobs": "observations",
    "ngroups": "persons",
    "npar": "parameters",
    "loglik": "log-likelihood",
    "aic": "AIC",
    "bic": "BIC",
    "reml": "REML",
    "chisq": "χ²",
    "icc": "ICC",
    "max_abs_gradient": "max |gradient|",
    "estimate_ols": "est. OLS",
    "se_ols": "SE OLS",
    "p_ols": "p OLS",
    "se_cr1": "SE CR1",
    "p_cr1": "p CR1",
    "se_cr2": "SE CR2",
    "df_cr2": "df CR2",
    "p_cr2": "p CR2",
    "estimate_mlm": "est. MLM",
    "se_mlm": "SE MLM",
    "p_mlm": "p MLM",
    "se_ratio": "SE ratio",
    "n_occasions": "occasions",
    "r2_marginal": "R² marginal",
    "r2_conditional": "R² conditional",
    "proportion_reduced": "proportion reduced",
    "reference_variance": "reference variance",
    "between_variance": "between-person variance",
    "within_variance": "within-person variance",
    "sd": "SD",
    "effect_size": "d",
    "es_conf_low": "d 95% CI low",
    "es_conf_high": "d 95% CI high",
    "time_from": "from",
    "time_to": "to",
    "boot_std_error": "bootstrap SE",
    "low_at_bound": "low at bound",
    "high_at_bound": "high at bound",
    "r2_y_yhat": "R² y, ŷ",
    "tau00": "τ00",
    "sigma2": "σ²",
    "loglik_mixed": "log-lik. mixed",
    "loglik_ols": "log-lik. OLS",
    "cooks_distance": "Cook's D",
    "variance_without": "variance without",
    "n_completers": "completers",
    "n_dropouts": "dropouts",
    "mean_completers": "mean completers",
    "mean_dropouts": "mean dropouts",
    "observed_mean": "observed mean",
    "observed_std_error": "observed SE",
    "model_mean": "model-implied mean",
    "previous": "previous run",
    "current": "this run",
}


def column_label(name: str) -> str:
    """The header shown for a column: a fixed label, or the name with spaces."""
    return COLUMN_LABELS.get(name, name.replace("_", " "))


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_number(value: float) -> str:
    """An estimate-like number: three decimals, three significant digits below 1.

    >>> format_number(109.88166), format_number(-0.0421567), format_number(0.0)
    ('109.882', '-0.0422', '0')
    """
    if math.isnan(value):
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e7 or magnitude < 1e-4:
        return f"{value:.3e}"
    if magnitude >= 1:
        return f"{value:,.3f}"
    decimals = 2 - math.floor(math.log10(magnitude))
    return f"{value:.{decimals}f}"


def format_time(value: float) -> str:
    """A time point: up to four significant digits, no trailing zeros (``1.5``, ``2``)."""
    if math.isnan(value):
        return MISSING
    text = f"{value:,.4f}".rstrip("0").rstrip(".")
    return "0" if text in {"-0", ""} else text


def format_p_value(value: float) -> str:
    """A p-value: ``<0.001`` below one in a thousand, else three decimals."""
    if math.isnan(value):
        return MISSING
    if value < 0.001:
        return "<0.001"
    return f"{value:.3f}"


def format_share(value: float, *, decimals: int = 1) -> str:
    """A share as a percentage that never rounds to 0% or 100% unless it is exactly that.

    >>> format_share(0.25), format_share(1716 / 1721), format_share(0.99996), format_share(1e-5)
    ('25.0%', '99.7%', '>99.9%', '<0.1%')

    Floating-point noise (within 1e-12 of 0 or 1, e.g. 103 / 103 computed as a
    sum of shares) counts as exactly 0 or 1.
    """
    if math.isnan(value):
        return MISSING
    if abs(value - 1.0) <= 1e-12:
        value = 1.0
    elif abs(value) <= 1e-12:
        value = 0.0
    step = 10.0**-decimals
    text = f"{100 * value:.{decimals}f}"
    if 0.0 < value < 1.0:
        if float(text) >= 100.0:
            return f">{100 - step:.{decimals}f}%"
        if float(text) <= 0.0:
            return f"<{step:.{decimals}f}%"
    return f"{text}%"


def format_value(column: str, value: object) -> str:
    """Format one cell for display, choosing the rule by the column's name."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if column in P_VALUE_COLUMNS:
            return format_p_value(value)
        if column in COUNT_COLUMNS and value.is_integer():
            return f"{int(value):,}"
        if column in SHARE_COLUMNS:
            return format_share(value)
        if column in TIME_COLUMNS:
            return format_time(value)
        if column in DEGREES_OF_FREEDOM_COLUMNS:
            return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}"
        return format_number(value)
    return str(value)


@dataclass(frozen=True, slots=True)
class TableView:
    """A table ready for the template: header labels, cell text, numeric flags."""

    key: str
    headers: tuple[str, ...]
    numeric: tuple[bool, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""
    paragraphs: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return bool(self.rows)


def is_available(table: pl.DataFrame | None) -> bool:
    """True when a table is present and has at least one row and one column."""
    return table is not None and table.height > 0 and table.width > 0


def table_view(
    table: pl.DataFrame | None,
    *,
    key: str,
    columns: Sequence[str] | None = None,
    max_rows: int | None = None,
    note: str = "",
    prose: Sequence[str] = (),
) -> TableView:
    """Turn a polars table into a :class:`TableView` (empty when not available).

    ``columns`` picks and orders the columns shown (those absent are skipped);
    ``max_rows`` keeps the first rows and says in the note how many were left out;
    ``prose`` columns (long sentences, such as an interpretation) are not shown
    as columns but as paragraphs under the table, one per distinct value.
    """
    if not is_available(table):
        return TableView(key=key, headers=(), numeric=(), rows=(), note=note)
    assert table is not None
    paragraphs: list[str] = []
    for column in prose:
        if column in table.columns:
            for value in table[column].to_list():
                text = "" if _is_missing(value) else str(value)
                if text and text not in paragraphs:
                    paragraphs.append(text)
    shown = [c for c in (columns or table.columns) if c in table.columns and c not in set(prose)]
    if not shown:
        return TableView(key=key, headers=(), numeric=(), rows=(), note=note)
    subset = table.select(shown)
    if max_rows is not None and subset.height > max_rows:
        left_out = subset.height - max_rows
        subset = subset.head(max_rows)
        extra = f"The first {max_rows:,} of {table.height:,} rows are shown ({left_out:,} more in the tables folder)."
        note = f"{note} {extra}".strip()
    numeric = tuple(subset.schema[c].is_numeric() and subset.schema[c] != pl.Boolean for c in shown)
    rows = tuple(
        tuple(format_value(c, v) for c, v in zip(shown, row, strict=True))
        for row in subset.iter_rows()
    )
    return TableView(
        key=key,
        headers=tuple(column_label(c) for c in shown),
        numeric=numeric,
        rows=rows,
        note=note,
        paragraphs=tuple(paragraphs),
    )
