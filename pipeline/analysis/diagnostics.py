"""Residual and random-effect diagnostics of the chosen model (the last conditional model
fitted, else the unconditional growth model, else the means model): the ``assumptions``
table (checks in :mod:`pipeline.analysis.assumptions`) and its chart data
(``residuals``, ``residual_variance_by_time``, ``random_effects``)."""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats

from pipeline.analysis import assumptions as checks
from pipeline.analysis.context import AnalysisContext
from pipeline.analysis.reliability import person_ols_of
from schemas.tables import columns

__all__ = ["tables"]

Z95 = float(stats.norm.ppf(0.975))


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    """The assumption checks and chart data of the chosen model."""
    chosen = ctx.chosen
    if chosen is None:
        return {}
    fit = ctx.fits[chosen.name]
    spec = ctx.spec
    used = fit.frame
    residuals = np.asarray(fit.residuals(kind="conditional"), dtype=float)
    fitted = np.asarray(fit.fitted(kind="conditional"), dtype=float)
    persons = fit.unit_labels().cast(pl.String)
    time = spec.original_time(used[spec.time_name].cast(pl.Float64).to_numpy())
    residual_table = pl.DataFrame(
        {
            "person": persons,
            "time": time,
            "fitted": fitted,
            "residual": residuals,
            "qq_theoretical": checks.qq_theoretical(residuals),
        },
        schema=columns("residuals"),
    )
    rows = [
        checks.normality_check(
            residuals, check="level-1 residuals: normality (Shapiro-Wilk)", what="level-1 residuals"
        ),
        checks.spread_check(residuals=residuals, fitted=fitted),
    ]
    by_time, occasion_row = checks.variance_by_occasion(
        residuals=residuals, occasions=ctx.occasions(fit)
    )
    rows.append(occasion_row)
    rows.append(
        checks.heterogeneity_check(
            person_ols_of(ctx, chosen.name), parameters=spec.polynomial + 1, seed=spec.seed
        )
    )

    blups = fit.random_effects_of(fit.group)
    ids = blups[fit.group].cast(pl.String)
    # each person's RMS residual, in the order of the BLUP rows (the units' codes 0..m-1)
    codes = fit.design.grouping[0].codes if fit.design.grouping else fit.design.group_codes
    codes = np.asarray(codes)
    count = np.bincount(codes, minlength=ids.len())
    with np.errstate(invalid="ignore", divide="ignore"):
        rms_aligned = np.sqrt(np.bincount(codes, weights=residuals**2, minlength=ids.len()) / count)
    rms_aligned[count == 0] = np.nan
    effect_tables = []
    for term in fit.random_terms:
        values = blups[term].cast(pl.Float64).to_numpy()
        se = np.sqrt(np.maximum(blups[f"condvar_{term}"].cast(pl.Float64).to_numpy(), 0.0))
        rows.append(
            checks.normality_check(
                values,
                check=f"random effects {term}: normality of the BLUPs (Shapiro-Wilk)",
                what=f"BLUPs of {term}",
            )
        )
        rows.append(checks.residual_link_check(residual_rms=rms_aligned, blups=values, term=term))
        effect_tables.append(
            pl.DataFrame(
                {
                    "person": ids,
                    "term": [term] * len(values),
                    "estimate": values,
                    "std_error": se,
                    "conf_low": values - Z95 * se,
                    "conf_high": values + Z95 * se,
                    "qq_theoretical": checks.qq_theoretical(values),
                },
                schema=columns("random_effects"),
            )
        )
    out = {
        "assumptions": checks.assumptions_table(rows),
        "residuals": residual_table,
        "residual_variance_by_time": by_time,
    }
    if effect_tables:
        out["random_effects"] = pl.concat(effect_tables)
    return out
