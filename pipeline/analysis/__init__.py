"""The multilevel analysis: the model sequence and everything an applied researcher
reads off it (issue 5).

``analyse(levels, cfg)`` fits the model sequence of :mod:`pipeline.analysis.sequence`
by REML on ``levels.model_frame`` and draws every table of ``docs/CONTRACTS.md``
("Analysis") from the fits; comparisons use ML refits. A model that fails is
recorded in ``failures`` (and ``warnings``) and the others go on. Every table is
validated against its pandera schema in ``schemas/tables.py``; missing numbers are
nulls, never NaN.

The chosen model for the residual and random-effect diagnostics is the last
conditional model that was fitted (else the unconditional growth model, else the
unconditional means model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from pipeline.analysis import assumptions as checks
from pipeline.analysis.adequacy import sample_size_table
from pipeline.analysis.comparison import Compared, comparison_table, npar
from pipeline.analysis.equations import level_equations
from pipeline.analysis.groups import (
    Predictor,
    group_differences,
    group_trajectories,
    observed_means,
)
from pipeline.analysis.icc import icc_table
from pipeline.analysis.ols import ols_vs_mlm_table
from pipeline.analysis.reliability import per_person_ols, reliability_table
from pipeline.analysis.sequence import (
    CONDITIONAL,
    GROWTH,
    MEANS,
    ModelSpec,
    model_sequence,
    random_intercept_growth,
    time_terms,
)
from pipeline.analysis.variance_explained import nakagawa_r2, pseudo_r2_rows, r2_row
from pipeline.model.formula import quote_name
from schemas.tables import validate_tables

__all__ = ["Analysis", "ModelSpec", "analyse", "model_sequence"]

GROUP_COMPARISON = "group_comparison"
Engine = Literal["fast", "statsmodels"]

FAILURE_SCHEMA = {"model": pl.String, "formula": pl.String, "error": pl.String}
WARNING_SCHEMA = {"severity": pl.String, "topic": pl.String, "message": pl.String}


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything the analysis produced (see ``docs/CONTRACTS.md``, "Analysis").

    models: the ModelSpecs fitted, in order; fits: name -> REML GrowthFit (failed
    models absent); failures: model, formula, error; warnings: severity
    ("warning" | "note"), topic, message; tables: name -> tidy table.
    """

    models: tuple[ModelSpec, ...]
    fits: dict[str, Any]
    failures: pl.DataFrame
    warnings: pl.DataFrame
    tables: dict[str, pl.DataFrame]


class _Notes:
    """Collects warnings and failures while the analysis runs."""

    def __init__(self) -> None:
        self.warnings: list[dict[str, str]] = []
        self.failures: list[dict[str, str]] = []

    def warn(self, topic: str, message: str, *, severity: str = "warning") -> None:
        self.warnings.append({"severity": severity, "topic": topic, "message": message})

    def fail(self, *, model: str, formula: str, error: BaseException) -> None:
        text = str(error).strip() or type(error).__name__
        if not isinstance(error, _user_errors()):
            text = f"{type(error).__name__}: {text}"
        self.failures.append({"model": model, "formula": formula, "error": text})
        self.warn("model failure", f"model '{model}' ({formula}) could not be fitted: {text}")

    def attempt(self, topic: str, action: Callable[[], Any]) -> Any:
        """Run one part of the analysis; a failure becomes a warning and None."""
        try:
            return action()
        except Exception as error:  # one failed table must not lose the rest
            self.warn(topic, f"{topic} could not be computed: {type(error).__name__}: {error}")
            return None


def _user_errors() -> tuple[type[BaseException], ...]:
    from pipeline.errors import GrowthError

    return (GrowthError,)


# ------------------------------------------------------------------ helpers on fits


def _fixed_design(fit: Any) -> np.ndarray:
    """X of the rows the fit used (engine: ``design_matrix``, not in the contract yet)."""
    return np.asarray(fit.design_matrix(fit.frame), dtype=float)


def _random_design(fit: Any) -> np.ndarray:
    """Z of the rows the fit used: the fixed-design columns named like the random terms."""
    X = _fixed_design(fit)
    names = list(fit.fixed_terms)
    if all(term in names for term in fit.random_terms):
        return X[:, [names.index(term) for term in fit.random_terms]]
    return np.asarray(fit.design.Z, dtype=float)


def _random_covariance(fit: Any) -> np.ndarray:
    """Sigma (q x q) of the random effects, rebuilt from the variance_components table."""
    terms = list(fit.random_terms)
    sigma = np.zeros((len(terms), len(terms)))
    for row in fit.variance_components.filter(pl.col("group") != "Residual").iter_rows(named=True):
        i = terms.index(row["term1"])
        if row["term2"] is None:
            sigma[i, i] = row["variance"]
        else:
            j = terms.index(row["term2"])
            sigma[i, j] = sigma[j, i] = row["variance"]
    return sigma


def _residual_variance(fit: Any) -> float:
    return float(fit.sigma) ** 2


def _boundary_message(name: str, fit: Any) -> str:
    parts = []
    for row in fit.variance_components.filter(pl.col("group") != "Residual").iter_rows(named=True):
        if row["term2"] is None and row["variance"] <= 1e-8 * max(_residual_variance(fit), 1e-300):
            parts.append(f"the variance of {row['term1']} is estimated at 0")
        elif row["term2"] is not None and row["sd_cor"] is not None and abs(row["sd_cor"]) > 0.999:
            parts.append(
                f"the correlation of {row['term1']} and {row['term2']} is estimated at {row['sd_cor']:+.0f}"
            )
    what = "; ".join(parts) if parts else "a random-effects covariance matrix is singular"
    return (
        f"boundary fit of '{name}': {what}. The fixed effects are usable, but the data cannot separate "
        "all random effects; consider a simpler random part (e.g. uncorrelated random effects with ||)"
    )


def _with_model(name: str, table: pl.DataFrame) -> pl.DataFrame:
    return table.select(pl.lit(name, dtype=pl.String).alias("model"), pl.all())


def _original_time(coded: np.ndarray, cfg: Any) -> np.ndarray:
    return np.asarray(coded, dtype=float) * cfg.time.scale + cfg.time.centre


def _nan_to_null(table: pl.DataFrame) -> pl.DataFrame:
    floats = [name for name, dtype in table.schema.items() if dtype == pl.Float64]
    if not floats:
        return table
    return table.with_columns(
        pl.when(pl.col(name).is_nan()).then(None).otherwise(pl.col(name)).alias(name)
        for name in floats
    )


# ------------------------------------------------------------------------- analyse


def analyse(levels: Any, cfg: Any, *, engine: Engine = "fast") -> Analysis:
    """Fit the model sequence on ``levels.model_frame`` and compute every analysis table."""
    from pipeline import fit_growth

    notes = _Notes()
    frame: pl.DataFrame = levels.model_frame
    person = cfg.data.person
    outcome = cfg.data.outcome
    time_name = levels.time_name
    distinct_times = int(
        frame.group_by(person).agg(pl.col(time_name).n_unique().alias("k"))["k"].max() or 0
    )
    specs = list(model_sequence(cfg, time_name=time_name, distinct_times=distinct_times))
    random_order = max(0, min(cfg.models.polynomial, distinct_times - 2))
    if random_order < cfg.models.polynomial:
        notes.warn(
            "model specification",
            f"persons have at most {distinct_times} distinct occasions, so only time terms up to order "
            f"{random_order} can vary between persons; higher-order terms are fixed",
            severity="note",
        )
    for predictor in cfg.models.slope_predictors:
        if predictor not in cfg.models.intercept_predictors:
            notes.warn(
                "model specification",
                f"'{predictor}' predicts the rate of change but not the initial status: the model assumes the "
                "groups start at the same level",
                severity="note",
            )
    group = cfg.comparison.group
    if group is not None and not any(
        spec.role == "conditional"
        and group in cfg.models.intercept_predictors
        and group in cfg.models.slope_predictors
        for spec in specs
    ):
        time = time_terms(time_name, cfg.models.polynomial)
        random = " + ".join(time[:random_order]) or "1"
        g = quote_name(group)
        fixed = " + ".join([*time, g, *(f"{t}:{g}" for t in time)])
        specs.append(
            ModelSpec(
                name=GROUP_COMPARISON,
                formula=f"{quote_name(outcome)} ~ {fixed} + ({random} | {quote_name(person)})",
                role="extra",
            )
        )

    fits: dict[str, Any] = {}
    for spec in specs:
        try:
            fit = fit_growth(frame, spec.formula, reml=True, engine=engine)
        except Exception as error:  # recorded; the other models go on
            notes.fail(model=spec.name, formula=spec.formula, error=error)
            continue
        fits[spec.name] = fit
        if fit.singular:
            notes.warn("boundary fit", _boundary_message(spec.name, fit))
        if not fit.converged:
            notes.warn(
                "convergence",
                f"'{spec.name}' did not converge ({fit.optimization.message}); its estimates are not reliable",
            )

    tables: dict[str, pl.DataFrame] = {}
    fitted_specs = [spec for spec in specs if spec.name in fits]

    def put(name: str, table: pl.DataFrame | None) -> None:
        if table is not None:
            tables[name] = table

    put(
        "fixed_effects",
        _concat([_with_model(s.name, fits[s.name].fixed_effects) for s in fitted_specs]),
    )
    put(
        "variance_components",
        _concat([_with_model(s.name, fits[s.name].variance_components) for s in fitted_specs]),
    )
    put("model_fit", _model_fit_table(fitted_specs, fits))
    put(
        "model_comparison",
        notes.attempt(
            "model comparison",
            lambda: _comparison(specs, fits, frame, cfg, notes, engine, time_name),
        ),
    )
    if MEANS in fits:
        put("icc", notes.attempt("ICC", lambda: _icc(fits[MEANS], cfg)))
    variance, r2 = _variance_explained(fitted_specs, fits, notes)
    put("variance_explained", variance)
    put("r2", r2)
    put(
        "level_equations",
        notes.attempt("level equations", lambda: _equations(fitted_specs, fits, cfg, time_name)),
    )
    put("ols_vs_mlm", notes.attempt("OLS versus multilevel", lambda: _ols(fitted_specs, fits)))

    sample = sample_size_table(
        occasions_per_person=frame.group_by(person).len()["len"].to_numpy(),
        persons_per_group=_persons_per_group(frame, person, group),
        group_name=group,
    )
    put("sample_size", sample)
    for row in sample.filter(pl.col("status") == "warning").iter_rows(named=True):
        notes.warn("sample size", row["message"])

    chosen = _chosen(fitted_specs)
    if chosen is not None:
        diagnostics = notes.attempt(
            "assumption checks", lambda: _diagnostics(fits[chosen.name], frame, cfg, time_name)
        )
        if diagnostics is not None:
            tables.update(diagnostics)
    if GROWTH in fits:
        put(
            "reliability",
            notes.attempt("reliability", lambda: _reliability(fits[GROWTH], cfg, time_name)),
        )
    put(
        "observed_means",
        observed_means(
            frame=_with_original_time(frame, cfg, time_name),
            outcome=outcome,
            time="__time__",
            group=group,
        ),
    )
    groups = notes.attempt(
        "group comparison", lambda: _group_tables(specs, fits, frame, cfg, time_name)
    )
    if groups is not None:
        tables.update(groups)

    tables = validate_tables({name: _nan_to_null(table) for name, table in tables.items()})
    return Analysis(
        models=tuple(specs),
        fits=fits,
        failures=pl.DataFrame(notes.failures, schema=FAILURE_SCHEMA),
        warnings=pl.DataFrame(notes.warnings, schema=WARNING_SCHEMA),
        tables=tables,
    )


def _concat(tables: list[pl.DataFrame]) -> pl.DataFrame | None:
    return pl.concat(tables, how="vertical_relaxed") if tables else None


def _model_fit_table(specs: list[ModelSpec], fits: Mapping[str, Any]) -> pl.DataFrame:
    rows = []
    for spec in specs:
        fit = fits[spec.name]
        record = fit.optimization
        rows.append(
            {
                "model": spec.name,
                "formula": spec.formula,
                "nobs": int(fit.nobs),
                "ngroups": int(fit.ngroups),
                "npar": npar(fit),
                "loglik": float(fit.loglik),
                "aic": float(fit.aic),
                "bic": float(fit.bic),
                "reml": bool(fit.reml),
                "converged": bool(fit.converged),
                "singular": bool(fit.singular),
                "optimizer": str(record.optimizer),
                "evaluations": int(record.evaluations),
                "max_abs_gradient": float(max((abs(g) for g in record.gradient), default=0.0)),
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "model": pl.String,
            "formula": pl.String,
            "nobs": pl.Int64,
            "ngroups": pl.Int64,
            "npar": pl.Int64,
            "loglik": pl.Float64,
            "aic": pl.Float64,
            "bic": pl.Float64,
            "reml": pl.Boolean,
            "converged": pl.Boolean,
            "singular": pl.Boolean,
            "optimizer": pl.String,
            "evaluations": pl.Int64,
            "max_abs_gradient": pl.Float64,
        },
    )


def _comparison(
    specs: list[ModelSpec],
    fits: Mapping[str, Any],
    frame: pl.DataFrame,
    cfg: Any,
    notes: _Notes,
    engine: Engine,
    time_name: str,
) -> pl.DataFrame:
    """ML fits in sequence order, with ``y ~ t + (1 | person)`` before the growth model so that
    the random slopes get their own (mixture) test."""
    from pipeline import fit_growth

    entries: list[Compared] = []
    for spec in specs:
        if spec.name == GROWTH:
            auxiliary = random_intercept_growth(cfg, time_name=time_name)
            try:
                entries.append(
                    Compared(
                        auxiliary.name,
                        fit_growth(frame, auxiliary.formula, reml=False, engine=engine),
                    )
                )
            except Exception as error:
                notes.fail(model=auxiliary.name, formula=auxiliary.formula, error=error)
        if spec.name not in fits:
            continue
        try:
            entries.append(Compared(spec.name, fits[spec.name].refit(reml=False)))
        except Exception as error:
            notes.warn(
                "model comparison",
                f"the ML refit of '{spec.name}' failed, so it is not compared: {error}",
            )
    return comparison_table(entries)


def _icc(fit: Any, cfg: Any) -> pl.DataFrame:
    used = fit.frame
    return icc_table(
        model=MEANS,
        variance_components=fit.variance_components,
        values=used[fit.response].cast(pl.Float64).to_numpy(),
        groups=used[fit.group].cast(pl.String).to_numpy(),
        outcome=cfg.data.outcome,
    )


def _variance_explained(
    specs: list[ModelSpec], fits: Mapping[str, Any], notes: _Notes
) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    pieces: list[pl.DataFrame] = []
    if MEANS in fits and GROWTH in fits:
        pieces.append(
            pseudo_r2_rows(
                model=GROWTH,
                reference=MEANS,
                model_components=fits[GROWTH].variance_components,
                reference_components=fits[MEANS].variance_components,
                residual_only=True,
            )
        )
    if GROWTH in fits:
        for spec in specs:
            if spec.role in ("conditional", "extra") and spec.name in fits:
                pieces.append(
                    pseudo_r2_rows(
                        model=spec.name,
                        reference=GROWTH,
                        model_components=fits[spec.name].variance_components,
                        reference_components=fits[GROWTH].variance_components,
                    )
                )
    r2_rows = []
    for spec in specs:
        fit = fits[spec.name]

        def one(fit: Any = fit, name: str = spec.name) -> pl.DataFrame:
            marginal, conditional = nakagawa_r2(
                fixed_prediction=fit.fitted(kind="marginal"),
                random_design=_random_design(fit),
                covariance=_random_covariance(fit),
                sigma2=_residual_variance(fit),
            )
            return r2_row(model=name, marginal=marginal, conditional=conditional)

        row = notes.attempt(f"R2 of {spec.name}", one)
        if row is not None:
            r2_rows.append(row)
    return _concat(pieces), _concat(r2_rows)


def _categories(frame: pl.DataFrame, cfg: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for column in cfg.covariates:
        if column not in frame.columns:
            continue
        if column in cfg.data.categories:
            out[column] = list(cfg.data.categories[column])
        elif frame.schema[column] in (pl.String, pl.Categorical, pl.Boolean) or isinstance(
            frame.schema[column], pl.Enum
        ):
            out[column] = sorted(frame[column].drop_nulls().cast(pl.String).unique().to_list())
    return out


def _equations(
    specs: list[ModelSpec], fits: Mapping[str, Any], cfg: Any, time_name: str
) -> pl.DataFrame | None:
    categories = _categories(next(iter(fits.values())).frame, cfg) if fits else {}
    tables = [
        level_equations(
            model=spec.name,
            formula=spec.formula,
            outcome=cfg.data.outcome,
            fixed_effects=fits[spec.name].fixed_effects,
            variance_components=fits[spec.name].variance_components,
            random_terms=fits[spec.name].random_terms,
            time_terms=time_terms(time_name, 5),
            level1_columns=cfg.data.time_covariates,
            categories=categories,
        )
        for spec in specs
    ]
    return _concat(tables)


def _ols(specs: list[ModelSpec], fits: Mapping[str, Any]) -> pl.DataFrame | None:
    tables = []
    for spec in specs:
        fit = fits[spec.name]
        tables.append(
            ols_vs_mlm_table(
                model=spec.name,
                terms=fit.fixed_terms,
                X=_fixed_design(fit),
                y=fit.frame[fit.response].cast(pl.Float64).to_numpy(),
                groups=fit.frame[fit.group].cast(pl.String).to_numpy(),
                fixed_effects=fit.fixed_effects,
            )
        )
    return _concat(tables)


def _persons_per_group(
    frame: pl.DataFrame, person: str, group: str | None
) -> dict[str, int] | None:
    if group is None or group not in frame.columns:
        return None
    counts = frame.select(person, group).unique().group_by(group).len()
    return {
        str(row[group]): int(row["len"])
        for row in counts.iter_rows(named=True)
        if row[group] is not None
    }


def _chosen(specs: list[ModelSpec]) -> ModelSpec | None:
    for role in ("conditional", "growth", "means"):
        candidates = [spec for spec in specs if spec.role == role]
        if candidates:
            return candidates[-1]
    return None


def _diagnostics(
    fit: Any, frame: pl.DataFrame, cfg: Any, time_name: str
) -> dict[str, pl.DataFrame]:
    used = fit.frame
    residuals = np.asarray(fit.residuals(kind="conditional"), dtype=float)
    fitted = np.asarray(fit.fitted(kind="conditional"), dtype=float)
    persons = used[fit.group].cast(pl.String)
    time = _original_time(used[time_name].cast(pl.Float64).to_numpy(), cfg)
    residual_table = pl.DataFrame(
        {
            "person": persons,
            "time": time,
            "fitted": fitted,
            "residual": residuals,
            "qq_theoretical": checks.qq_theoretical(residuals),
        }
    )
    rows = [
        checks.normality_check(
            residuals, check="level-1 residuals: normality (Shapiro-Wilk)", what="level-1 residuals"
        ),
        checks.spread_check(residuals=residuals, fitted=fitted),
    ]
    by_time, occasion_row = checks.variance_by_occasion(residuals=residuals, time=time)
    rows.append(occasion_row)
    ols = per_person_ols(
        persons=persons.to_numpy(),
        time=used[time_name].cast(pl.Float64).to_numpy(),
        outcome=used[fit.response].cast(pl.Float64).to_numpy(),
        order=cfg.models.polynomial,
    )
    rows.append(checks.heterogeneity_check(ols, parameters=cfg.models.polynomial + 1))

    blups = fit.random_effects
    ids = blups[fit.group].cast(pl.String)
    rms = (
        pl.DataFrame({"person": persons, "squared": residuals**2})
        .group_by("person")
        .agg(pl.col("squared").mean().sqrt().alias("rms"))
    )
    rms_aligned = pl.DataFrame({"person": ids}).join(rms, on="person", how="left")["rms"].to_numpy()
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
                    "conf_low": values - 1.959963984540054 * se,
                    "conf_high": values + 1.959963984540054 * se,
                    "qq_theoretical": checks.qq_theoretical(values),
                }
            )
        )
    return {
        "assumptions": checks.assumptions_table(rows),
        "residuals": residual_table,
        "residual_variance_by_time": by_time,
        "random_effects": pl.concat(effect_tables),
    }


def _reliability(fit: Any, cfg: Any, time_name: str) -> pl.DataFrame:
    order = cfg.models.polynomial
    names = ["(Intercept)", *time_terms(time_name, order)]
    used = fit.frame
    ols = per_person_ols(
        persons=used[fit.group].cast(pl.String).to_numpy(),
        time=used[time_name].cast(pl.Float64).to_numpy(),
        outcome=used[fit.response].cast(pl.Float64).to_numpy(),
        order=order,
    )
    components = fit.variance_components.filter(
        (pl.col("group") != "Residual") & pl.col("term2").is_null()
    )
    tau = {row["term1"]: float(row["variance"]) for row in components.iter_rows(named=True)}
    estimates = dict(
        zip(
            fit.fixed_effects["term"].to_list(),
            fit.fixed_effects["estimate"].to_list(),
            strict=True,
        )
    )
    return reliability_table(
        ols=ols,
        coefficient_names=names,
        tau=[tau.get(name) for name in names],
        gamma=[float(estimates[name]) for name in names],
        sigma2=_residual_variance(fit),
    )


def _with_original_time(frame: pl.DataFrame, cfg: Any, time_name: str) -> pl.DataFrame:
    return frame.with_columns(
        (pl.col(time_name).cast(pl.Float64) * cfg.time.scale + cfg.time.centre).alias("__time__")
    )


def _group_tables(
    specs: list[ModelSpec], fits: Mapping[str, Any], frame: pl.DataFrame, cfg: Any, time_name: str
) -> dict[str, pl.DataFrame]:
    group = cfg.comparison.group
    if group is not None:
        uses_group = (
            group in cfg.models.intercept_predictors and group in cfg.models.slope_predictors
        )
        name = CONDITIONAL if uses_group else GROUP_COMPARISON
        if name not in fits:
            raise ValueError(
                f"the model '{name}' that compares the groups of '{group}' was not fitted"
            )
    else:
        if GROWTH not in fits:
            raise ValueError("the unconditional growth model was not fitted")
        name = GROWTH
    fit = fits[name]
    used = fit.frame
    categories = _categories(used, cfg)
    numeric = {
        column: float(_person_level(used, cfg.data.person, column).mean())
        for column in cfg.covariates
        if column in used.columns and column not in categories and column != group
    }
    others = {column: levels for column, levels in categories.items() if column != group}
    predictor = Predictor(
        design_row=fit.design_row,
        time_name=time_name,
        centre=cfg.time.centre,
        scale=cfg.time.scale,
        group=group,
        numeric=numeric,
        categorical=others,
    )
    coded = used[time_name].cast(pl.Float64)
    time_range = (
        float(_original_time(np.array([coded.min()]), cfg)[0]),
        float(_original_time(np.array([coded.max()]), cfg)[0]),
    )
    levels: list[Any] = [None]
    if group is not None:
        present = set(used[group].drop_nulls().cast(pl.String).unique().to_list())
        declared = categories.get(group, sorted(present))
        levels = [level for level in declared if level in present]

    def contrast(vector: np.ndarray) -> Mapping[str, float]:
        return fit.contrast(vector)

    tables = {
        "group_trajectories": group_trajectories(
            predictor=predictor, contrast=contrast, levels=levels, time_range=time_range
        )
    }
    if group is not None and len(levels) >= 2:
        at_times = list(cfg.comparison.at_times) or sorted(
            {time_range[0], float(np.median(_original_time(coded.to_numpy(), cfg))), time_range[1]}
        )
        tables["group_differences"] = group_differences(
            predictor=predictor, contrast=contrast, levels=levels, at_times=at_times
        )
    return tables


def _person_level(frame: pl.DataFrame, person: str, column: str) -> pl.Series:
    """A person-level covariate once per person (a time-varying one: every row)."""
    per_person = frame.group_by(person).agg(pl.col(column).n_unique().alias("k"))
    if int(per_person["k"].max() or 0) <= 1:
        return frame.group_by(person).agg(pl.col(column).first())[column].cast(pl.Float64)
    return frame[column].cast(pl.Float64)
