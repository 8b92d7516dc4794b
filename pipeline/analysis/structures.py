"""Level-1 error structures compared side by side (Singer & Willett 2003, ch. 7, Table 7.3).

For the fixed part of the growth model the study reads its answer from (the
conditional growth model, else the unconditional one), every structure of
``[models] residual`` is fitted without random effects (as gls / mmrm), beside
the standard multilevel model (random effects, independent errors with one
variance). All rows share the fixed effects and are fitted by REML, so their
REML criteria, AIC and BIC are comparable; the structure with the lowest BIC is
chosen (the reason is stated, and AIC's choice when it differs). Likelihood-ratio
tests are made between structures of which one is a special case of the other
(``comparison.STRUCTURE_CONTAINS``), by ML refits.

Tables: ``error_structures`` (one row per structure), ``error_structure_tests``,
``error_structure_covariance`` (the chosen structure's implied covariance and
correlation across occasions beside the observed ones, from the residuals of the
fixed part by OLS, pairwise-complete), ``error_structure_fixed_effects`` (the
standard model's fixed effects beside the chosen structure's) and, when the study
compares groups and ``us`` is among the structures, ``mmrm_visit_differences``
(the mixed model for repeated measures ``y ~ group * visit + us(visit | person)``:
the group difference at every visit with Satterthwaite df, as mmrm and emmeans
report it).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from pipeline.analysis import comparison
from pipeline.analysis.context import AnalysisContext
from pipeline.errors import GrowthError
from pipeline.model.formula import parse_formula, quote_name
from pipeline.model.results import GrowthFit
from schemas.tables import columns

STANDARD = "standard (random effects, independent errors)"
VISIT = "_visit"


def _base(ctx: AnalysisContext):
    for role in ("conditional", "growth"):
        models = ctx.with_role(role)
        if models:
            return models[0]
    return None


def fixed_formula(formula: str) -> str:
    """The formula without its random-effects terms (and without an error structure)."""
    parsed = parse_formula(formula)
    text = formula
    for r in parsed.random:
        text = text.replace(f" + {r.text}", "")
    if parsed.residual is not None:
        text = text.replace(f" + {parsed.residual.text}", "")
    return text


def _occasion(ctx: AnalysisContext) -> str:
    return ctx.spec.occasion or ctx.spec.time_name


def structure_formula(ctx: AnalysisContext, fixed: str, structure: str) -> str:
    occasion = _occasion(ctx) if structure != "sp_exp" else ctx.spec.time_name
    return f"{fixed} + {structure}({quote_name(occasion)} | {quote_name(ctx.spec.person)})"


def _row(label: str, structure: str, formula: str, fit: GrowthFit | None, error: str) -> dict:
    return {
        "model": label,
        "structure": structure,
        "formula": formula,
        "npar": int(fit.npar) if fit else None,
        "deviance": float(-2 * fit.loglik) if fit else None,
        "aic": float(fit.aic) if fit else None,
        "bic": float(fit.bic) if fit else None,
        "converged": bool(fit.converged) if fit else None,
        "chosen": False,
        "note": error,
    }


def _fit(ctx: AnalysisContext, formula: str, frame: pl.DataFrame) -> tuple[GrowthFit | None, str]:
    try:
        return ctx.fit_formula(formula, reml=True, frame=frame), ""
    except GrowthError as error:
        return None, str(error)


def tables(ctx: AnalysisContext) -> dict[str, pl.DataFrame]:
    spec = ctx.spec
    wanted = tuple(getattr(spec, "residual", ()) or ())
    base = _base(ctx)
    if not wanted or base is None:
        return {}
    standard = ctx.fits[base.name]
    fixed = fixed_formula(base.formula)
    frame = ctx.frame
    rows = [_row(STANDARD, "none", base.formula, standard, "")]
    fits: dict[str, GrowthFit] = {}
    for name in wanted:
        formula = structure_formula(ctx, fixed, name)
        fit, error = _fit(ctx, formula, frame)
        if fit is not None:
            fits[name] = fit
            if not fit.converged:
                error = f"did not converge: {fit.optimization.message}"
        else:
            ctx.notes.warn("error structures", f"{name} could not be fitted: {error}")
        rows.append(_row(name, name, formula, fit, error))
    table = pl.DataFrame(rows, schema=columns("error_structures"), orient="row")
    candidates = table.filter(pl.col("bic").is_not_null())
    out: dict[str, pl.DataFrame] = {}
    if candidates.height == 0:
        return {"error_structures": table}
    best = candidates.sort("bic").row(0, named=True)
    by_aic = candidates.sort("aic").row(0, named=True)["model"]
    reason = "lowest BIC" + (
        " (AIC agrees)" if by_aic == best["model"] else f"; AIC prefers {by_aic}"
    )
    table = table.with_columns(
        chosen=pl.col("model") == best["model"],
        note=pl.when(pl.col("model") == best["model"])
        .then(pl.lit(reason))
        .otherwise(pl.col("note")),
    )
    out["error_structures"] = table
    out["error_structure_tests"] = _tests(fits)
    chosen_fit = fits.get(best["structure"]) if best["structure"] != "none" else standard
    if chosen_fit is not None:
        out["error_structure_covariance"] = _covariance(
            ctx, best["model"], chosen_fit, fixed, frame
        )
        out["error_structure_fixed_effects"] = _fixed_side_by_side(
            standard, chosen_fit, best["model"]
        )
    if "us" in wanted and spec.group is not None and spec.occasion is not None:
        visits = _visit_differences(ctx, frame)
        if visits is not None:
            out["mmrm_visit_differences"] = visits
    return out


def _tests(fits: dict[str, GrowthFit]) -> pl.DataFrame:
    rows = []
    names = list(fits)
    for small in names:
        for big in names:
            if big not in comparison.STRUCTURE_CONTAINS.get(small, frozenset()):
                continue
            try:
                table = comparison.compare(fits[small], fits[big])
            except GrowthError:
                continue
            rows.append(
                {
                    "model": big,
                    "against": small,
                    "chisq": float(table["chisq"][1]),
                    "df": int(table["df"][1]),
                    "p_value": float(table["p_value"][1]),
                }
            )
    return pl.DataFrame(rows, schema=columns("error_structure_tests"), orient="row")


def _observed(ctx: AnalysisContext, fixed: str, frame: pl.DataFrame, labels: list[str]):
    """Covariance of the OLS residuals of the fixed part across occasions (pairwise complete)."""
    from pipeline.model.design import build_design

    # the fixed part alone, with a throwaway random intercept for the design step
    design = build_design(frame, f"{fixed} + (1 | {quote_name(ctx.spec.person)})")
    beta, *_ = np.linalg.lstsq(design.X, design.y, rcond=None)
    resid = design.y - design.X @ beta
    used = design.frame
    occ_col = _occasion(ctx)
    occ = np.array([f"{v:g}" if isinstance(v, float) else str(v) for v in used[occ_col].to_list()])
    persons = design.group_codes
    wide = np.full((design.ngroups, len(labels)), np.nan)
    index = {label: k for k, label in enumerate(labels)}
    for row, (p, o) in enumerate(zip(persons, occ, strict=True)):
        k = index.get(o)
        if k is not None:
            wide[p, k] = resid[row]
    T = len(labels)
    cov = np.full((T, T), np.nan)
    for a in range(T):
        for b in range(T):
            ok = ~np.isnan(wide[:, a]) & ~np.isnan(wide[:, b])
            if ok.sum() > 2:
                x, y = wide[ok, a], wide[ok, b]
                cov[a, b] = float(
                    np.mean((x - x.mean()) * (y - y.mean())) * ok.sum() / (ok.sum() - 1)
                )
    return cov


def _covariance(
    ctx: AnalysisContext, label: str, fit: GrowthFit, fixed: str, frame: pl.DataFrame
) -> pl.DataFrame:
    if fit.marginal is not None:
        labels, implied = fit.marginal
    else:  # the standard model: Z D Z' + sigma^2 I at the occasions of a complete person
        return pl.DataFrame(schema=columns("error_structure_covariance"))
    observed = _observed(ctx, fixed, frame, list(labels))
    rows = []
    for source, matrix in (("implied", implied), ("observed", observed)):
        sd = np.sqrt(np.diag(matrix))
        for a, ra in enumerate(labels):
            for b, rb in enumerate(labels):
                value = matrix[a, b]
                corr = value / (sd[a] * sd[b]) if sd[a] > 0 and sd[b] > 0 else math.nan
                rows.append(
                    {
                        "source": source,
                        "structure": label,
                        "occasion_row": ra,
                        "occasion_col": rb,
                        "covariance": None if not np.isfinite(value) else float(value),
                        "correlation": None if not np.isfinite(corr) else float(corr),
                    }
                )
    return pl.DataFrame(rows, schema=columns("error_structure_covariance"), orient="row")


def _fixed_side_by_side(standard: GrowthFit, chosen: GrowthFit, label: str) -> pl.DataFrame:
    a = standard.fixed_effects.select("term", "estimate", "std_error")
    b = chosen.fixed_effects.select(
        "term", pl.col("estimate").alias("estimate_chosen"), pl.col("std_error").alias("se_chosen")
    )
    joined = a.join(b, on="term", how="full", coalesce=True, maintain_order="left")
    return joined.select(
        "term",
        pl.col("estimate").alias("estimate_standard"),
        pl.col("std_error").alias("se_standard"),
        "estimate_chosen",
        "se_chosen",
        pl.lit(label).alias("chosen"),
    ).cast(columns("error_structure_fixed_effects"))


def _visit_differences(ctx: AnalysisContext, frame: pl.DataFrame) -> pl.DataFrame | None:
    spec = ctx.spec
    group, occasion, person = spec.group, spec.occasion, spec.person
    data = frame.with_columns(pl.col(occasion).cast(pl.String).alias(VISIT))
    order = [str(v) for v in data.select(pl.col(occasion).unique().sort()).to_series().to_list()]
    data = data.with_columns(pl.col(VISIT).cast(pl.Enum(order)))
    formula = (
        f"{quote_name(spec.outcome)} ~ {quote_name(group)} * {VISIT} + "
        f"us({quote_name(occasion)} | {quote_name(person)})"
    )
    fit, error = _fit(ctx, formula, data)
    if fit is None:
        ctx.notes.warn("MMRM", f"the MMRM ({formula}) could not be fitted: {error}")
        return None
    levels = fit.design.levels.get(group)
    if not levels or len(levels) < 2:
        return None
    reference = levels[0]
    from pipeline.model.kenward_roger import kenward_roger, kenward_roger_terms

    kr_terms = kenward_roger_terms(fit)  # once for every visit's contrast
    rows = []
    for visit in order:
        for other in levels[1:]:
            X = fit.design_matrix(
                pl.DataFrame(
                    {group: [reference, other], VISIT: [visit, visit]},
                    schema={group: data.schema[group], VISIT: data.schema[VISIT]},
                )
            )
            test = kenward_roger(fit, X[1] - X[0], terms=kr_terms)
            rows.append(
                {
                    "visit": visit,
                    "contrast": f"{other} - {reference}",
                    "estimate": test["estimate"],
                    "std_error": test["std_error"],
                    "df": test["df"],
                    "statistic": test["statistic"],
                    "p_value": test["p_value"],
                    "conf_low": test["conf_low"],
                    "conf_high": test["conf_high"],
                }
            )
    return pl.DataFrame(rows, schema=columns("mmrm_visit_differences"), orient="row")
