"""The frozen result of a growth-model fit and its tidy tables.

Everything is computed once when the fit is assembled; nothing is patched
afterwards. ``fitted()``, ``residuals()`` and ``contrast()`` compute from what
the result holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from pipeline.errors import ModelError
from pipeline.model.design import Design, _matrix, _term_exprs
from pipeline.model.inference import Satterthwaite, wald_test
from pipeline.model.optimize import OptimizationRecord

Engine = Literal["fast", "statsmodels"]
Kind = Literal["conditional", "marginal"]


@dataclass(frozen=True, slots=True)
class GrowthFit:
    """A fitted two-level growth model (see ``pipeline.model`` for the glossary)."""

    formula: str
    engine: Engine
    reml: bool
    design: Design = field(repr=False)
    theta: np.ndarray = field(repr=False)
    beta: np.ndarray = field(repr=False)
    sigma: float
    vcov: np.ndarray = field(repr=False)
    deviance: float  # REML criterion for REML fits, -2 log-likelihood for ML fits (lme4's deviance/REMLcrit)
    loglik: float
    nobs: int
    ngroups: int
    converged: bool
    singular: bool
    optimization: OptimizationRecord
    fixed_effects: pl.DataFrame = field(repr=False)
    variance_components: pl.DataFrame = field(repr=False)
    random_effects: pl.DataFrame = field(repr=False)
    blups: np.ndarray = field(repr=False)  # (m, q)
    condvar: np.ndarray = field(repr=False)  # (m, q, q)
    covariance: np.ndarray = field(
        repr=False
    )  # (q, q) random-effects covariance (sigma^2 Lambda Lambda')
    inference: Satterthwaite | None = field(repr=False, default=None)
    stats: Any = field(repr=False, default=None)  # SufficientStats or NestedStats
    # per grouping factor (innermost first): BLUPs (m_l, q_l) and conditional covariances
    level_blups: tuple[np.ndarray, ...] = field(repr=False, default=())
    level_condvar: tuple[np.ndarray, ...] = field(repr=False, default=())
    refitter: Callable[[GrowthFit, bool], GrowthFit] | None = field(repr=False, default=None)
    # a level-1 error structure: its unconstrained parameters, their natural-scale table,
    # and the implied marginal covariance over the occasions of the most complete pattern
    rho: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))
    residual_parameters: pl.DataFrame | None = field(repr=False, default=None)
    marginal: tuple[list[str], np.ndarray] | None = field(repr=False, default=None)

    # ---- identification
    @property
    def response(self) -> str:
        return self.design.formula.response.label

    @property
    def group(self) -> str:
        return self.design.group

    @property
    def fixed_terms(self) -> tuple[str, ...]:
        return self.design.fixed_names

    @property
    def random_terms(self) -> tuple[str, ...]:
        return self.design.random_names

    @property
    def frame(self) -> pl.DataFrame:
        return self.design.frame

    @property
    def npar(self) -> int:
        """Parameters counted by lme4's logLik df: fixed effects, theta, sigma (and an error
        structure's parameters, as nlme and mmrm count them)."""
        return len(self.beta) + len(self.theta) + len(self.rho) + 1

    @property
    def aic(self) -> float:
        return -2.0 * self.loglik + 2.0 * self.npar

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + math.log(self.nobs) * self.npar

    @property
    def rows_dropped(self) -> int:
        return self.design.rows_dropped

    # ---- predictions
    def fitted(self, kind: Kind = "conditional") -> np.ndarray:
        marginal = self.design.X @ self.beta
        if kind == "marginal":
            return marginal
        if kind != "conditional":
            raise ValueError(f"kind must be 'conditional' or 'marginal', not {kind!r}")
        b = self.blups[self.design.group_codes]
        return marginal + np.einsum("ij,ij->i", self.design.Z, b)

    def residuals(self, kind: Kind = "conditional") -> np.ndarray:
        return self.design.y - self.fitted(kind)

    def design_matrix(self, data: pl.DataFrame) -> np.ndarray:
        """Fixed-effects rows for new data, coded as in the fit."""
        formula = self.design.formula
        missing = [c for t in formula.terms for f in t for c in f.columns if c not in data.columns]
        if missing:
            raise ModelError(f"design_matrix: column {missing[0]!r} is needed by {self.formula!r}")
        present = {()} if formula.intercept else set()
        present |= set(formula.terms)
        named: list[tuple[str, pl.Expr]] = []
        if formula.intercept:
            named.append(("(Intercept)", pl.repeat(1.0, pl.len())))
        for term in formula.terms:
            for c in term:
                if c.is_column and c.label in self.design.levels:
                    bad = set(data[c.label].cast(pl.String).to_list()) - set(
                        self.design.levels[c.label]
                    )
                    if bad:
                        raise ModelError(
                            f"design_matrix: {c.label!r} has level(s) {sorted(bad)} not seen in the fit "
                            f"(levels: {list(self.design.levels[c.label])})"
                        )
            named += _term_exprs(term, present, data.schema, self.design.levels, self.formula)
        return _matrix(data, named, self.formula)

    def design_row(self, values: dict[str, float | str]) -> np.ndarray:
        """The fixed-effects row x for given covariate values (for predictions and contrasts)."""
        frame = pl.DataFrame({k: [v] for k, v in values.items()})
        return self.design_matrix(frame)[0]

    def contrast(
        self,
        L: np.ndarray,
        *,
        level: float = 0.95,
        ddf: Literal["satterthwaite", "kenward-roger"] = "satterthwaite",
    ) -> dict[str, float]:
        """Estimate, SE, df, t, p and CI of ``L' beta``: Satterthwaite df (lmerTest's, mmrm's
        default), or Kenward-Roger's adjusted SE and df (REML fits; small samples, MMRMs)."""
        L = np.asarray(L, dtype=float)
        if L.shape != self.beta.shape:
            raise ModelError(
                f"contrast has {L.size} elements; the model has {self.beta.size} fixed effects"
            )
        if ddf == "kenward-roger":
            from pipeline.model.kenward_roger import kenward_roger

            out = kenward_roger(self, L, level=level)
            keys = ("estimate", "std_error", "df", "statistic", "p_value", "conf_low", "conf_high")
            return {k: float(out[k]) for k in keys}
        if ddf != "satterthwaite":
            raise ModelError(f"ddf must be 'satterthwaite' or 'kenward-roger', not {ddf!r}")
        estimate = float(L @ self.beta)
        if self.inference is not None:
            return self.inference.test(L, estimate, level)
        return wald_test(estimate, float(np.sqrt(L @ self.vcov @ L)), float("inf"), level=level)

    def refit(self, *, reml: bool) -> GrowthFit:
        if reml == self.reml:
            return self
        if self.refitter is None:
            raise ModelError("this fit cannot be refitted (it holds no refitter)")
        return self.refitter(self, reml)

    def unit_labels(self) -> pl.Series:
        """Each row's unit of the innermost grouping factor, as lme4 prints it (a person)."""
        if self.design.grouping:
            inner = self.design.grouping[0]
            return inner.labels.gather(inner.codes).alias(inner.name)
        return self.frame[self.group].cast(pl.String)

    def random_effects_of(self, group: str) -> pl.DataFrame:
        """The BLUPs of one grouping factor (lme4's ``ranef(fit)[[group]]``) with conditional variances."""
        names = [g.name for g in self.design.grouping] or [self.design.group]
        if group not in names:
            raise ModelError(f"no grouping factor {group!r}; the model has {', '.join(names)}")
        if not self.design.nested:
            return self.random_effects
        i = names.index(group)
        return _level_table(self.design.grouping[i], self.level_blups[i], self.level_condvar[i])

    def summary(self) -> str:
        """A console summary drawn from the tidy tables."""
        crit = "REML criterion" if self.reml else "deviance"
        lines = [
            f"Linear mixed model fit by {'REML' if self.reml else 'maximum likelihood'} ({self.engine} engine)",
            f"Formula: {self.formula}",
            f"  {crit} {self.deviance:.4f}   logLik {self.loglik:.4f}   AIC {self.aic:.4f}   BIC {self.bic:.4f}",
            f"  observations {self.nobs}, groups "
            + ", ".join(f"({g.name}) {g.m}" for g in self.design.grouping)
            if self.design.grouping
            else f"  observations {self.nobs}, groups ({self.group}) {self.ngroups}",
            f"  optimizer: {self.optimization.optimizer}: {self.optimization.message}",
            "",
            "Random effects:",
            f"  {'group':<10} {'term':<28} {'var / cov':>12} {'sd / cor':>10}",
        ]
        for row in self.variance_components.iter_rows(named=True):
            what = row["term1"] or ""
            if row["term2"]:
                what = f"{row['term1']} ~ {row['term2']} (cor)"
            lines.append(
                f"  {row['group']:<10} {what:<28} {row['variance']:>12.4f} {row['sd_cor']:>10.4f}"
            )
        lines += [
            "",
            "Fixed effects (t tests with Satterthwaite df):"
            if self.inference is not None
            else "Fixed effects (z tests):",
            f"  {'':<20} {'estimate':>12} {'std.error':>10} {'df':>9} {'t':>8} {'p':>10}",
        ]
        for row in self.fixed_effects.iter_rows(named=True):
            lines.append(
                f"  {row['term']:<20} {row['estimate']:>12.5f} {row['std_error']:>10.5f} "
                f"{row['df']:>9.2f} {row['statistic']:>8.3f} {row['p_value']:>10.3g}"
            )
        return "\n".join(lines)


def fixed_effects_table(
    fit_terms: tuple[str, ...], beta: np.ndarray, tests: list[dict[str, float]]
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "term": list(fit_terms),
            "estimate": [t["estimate"] for t in tests],
            "std_error": [t["std_error"] for t in tests],
            "df": [t["df"] for t in tests],
            "statistic": [t["statistic"] for t in tests],
            "p_value": [t["p_value"] for t in tests],
            "conf_low": [t["conf_low"] for t in tests],
            "conf_high": [t["conf_high"] for t in tests],
        },
        schema={
            "term": pl.String,
            "estimate": pl.Float64,
            "std_error": pl.Float64,
            "df": pl.Float64,
            "statistic": pl.Float64,
            "p_value": pl.Float64,
            "conf_low": pl.Float64,
            "conf_high": pl.Float64,
        },
    )


def variance_components_table(design: Design, covariance: np.ndarray, sigma: float) -> pl.DataFrame:
    """lme4's ``as.data.frame(VarCorr(fit))``: variances, then covariances, per block; Residual last."""
    groups: list[str] = []
    term1: list[str | None] = []
    term2: list[str | None] = []
    variance: list[float] = []
    sd_cor: list[float] = []
    for b in design.blocks:
        idx = list(range(b.start, b.start + b.size))
        for i, name in zip(idx, b.names, strict=True):
            groups.append(b.group_label)
            term1.append(name)
            term2.append(None)
            variance.append(float(covariance[i, i]))
            sd_cor.append(math.sqrt(max(covariance[i, i], 0.0)))
        if b.correlated:
            for a in range(b.size):
                for c in range(a + 1, b.size):
                    i, j = idx[a], idx[c]
                    cov = float(covariance[i, j])
                    denom = math.sqrt(max(covariance[i, i], 0.0) * max(covariance[j, j], 0.0))
                    groups.append(b.group_label)
                    term1.append(b.names[a])
                    term2.append(b.names[c])
                    variance.append(cov)
                    sd_cor.append(cov / denom if denom > 0 else float("nan"))
    groups.append("Residual")
    term1.append(None)
    term2.append(None)
    variance.append(sigma**2)
    sd_cor.append(sigma)
    return pl.DataFrame(
        {"group": groups, "term1": term1, "term2": term2, "variance": variance, "sd_cor": sd_cor},
        schema={
            "group": pl.String,
            "term1": pl.String,
            "term2": pl.String,
            "variance": pl.Float64,
            "sd_cor": pl.Float64,
        },
    )


def _level_table(level: Any, blups: np.ndarray, condvar: np.ndarray) -> pl.DataFrame:
    cols: dict[str, object] = {level.name: level.labels}
    for a, name in enumerate(level.names):
        cols[name] = blups[:, a]
    for a, name in enumerate(level.names):
        cols[f"condvar_{name}"] = condvar[:, a, a]
    return pl.DataFrame(cols)


def random_effects_table(
    design: Design,
    blups: np.ndarray,
    condvar: np.ndarray,
    level_blups: tuple[np.ndarray, ...] = (),
    level_condvar: tuple[np.ndarray, ...] = (),
) -> pl.DataFrame:
    """Two levels: the group's id column, one column per term, ``condvar_<term>``.

    Nested factors: one row per unit of every factor, innermost first, with the
    factor in ``group`` and the unit as lme4 prints it in ``unit``
    (``"3:17"`` for ``school:child``); a term a factor does not have is null.
    """
    if design.nested:
        frames = []
        terms: list[str] = []
        for g in design.grouping:
            terms += [t for t in g.names if t not in terms]
        for g, b, v in zip(design.grouping, level_blups, level_condvar, strict=True):
            cols: dict[str, object] = {
                "group": pl.Series([g.name] * g.m, dtype=pl.String),
                "unit": g.labels.alias("unit"),
            }
            for t in terms:
                cols[t] = b[:, g.names.index(t)] if t in g.names else np.full(g.m, np.nan)
            for t in terms:
                a = g.names.index(t) if t in g.names else None
                cols[f"condvar_{t}"] = v[:, a, a] if a is not None else np.full(g.m, np.nan)
            frames.append(pl.DataFrame(cols).fill_nan(None))
        return pl.concat(frames)
    cols: dict[str, object] = {design.group: design.group_levels}
    for a, name in enumerate(design.random_names):
        cols[name] = blups[:, a]
    for a, name in enumerate(design.random_names):
        cols[f"condvar_{name}"] = condvar[:, a, a]
    return pl.DataFrame(cols)


def assemble_fit(
    design: Design,
    *,
    engine: Engine,
    reml: bool,
    theta: np.ndarray,
    beta: np.ndarray,
    sigma: float,
    vcov: np.ndarray,
    deviance: float,
    loglik: float,
    converged: bool,
    singular: bool,
    optimization: OptimizationRecord,
    tests: list[dict[str, float]],
    covariance: np.ndarray,
    blups: np.ndarray,
    condvar: np.ndarray,
    level_blups: tuple[np.ndarray, ...] = (),
    level_condvar: tuple[np.ndarray, ...] = (),
    inference: Satterthwaite | None = None,
    stats: Any = None,
    refitter: Callable[[GrowthFit, bool], GrowthFit] | None = None,
    rho: np.ndarray | None = None,
    residual_parameters: pl.DataFrame | None = None,
    marginal: tuple[list[str], np.ndarray] | None = None,
    nobs: int | None = None,
    ngroups: int | None = None,
) -> GrowthFit:
    """The one constructor of a :class:`GrowthFit` for every engine: it draws the tidy tables.

    ``nobs``/``ngroups`` default to the design's; a fit on the merged statistics of all
    the data whose design holds a sample of persons gives the whole data's counts."""
    if not level_blups:
        level_blups, level_condvar = (blups,), (condvar,)
    return GrowthFit(
        formula=design.formula.text,
        engine=engine,
        reml=reml,
        design=design,
        theta=theta,
        beta=beta,
        sigma=sigma,
        vcov=vcov,
        deviance=deviance,
        loglik=loglik,
        nobs=design.nobs if nobs is None else int(nobs),
        ngroups=design.ngroups if ngroups is None else int(ngroups),
        converged=converged,
        singular=singular,
        optimization=optimization,
        fixed_effects=fixed_effects_table(design.fixed_names, beta, tests),
        variance_components=variance_components_table(design, covariance, sigma),
        random_effects=random_effects_table(design, blups, condvar, level_blups, level_condvar),
        blups=blups,
        condvar=condvar,
        covariance=covariance,
        inference=inference,
        stats=stats,
        level_blups=level_blups,
        level_condvar=level_condvar,
        refitter=refitter,
        rho=np.empty(0) if rho is None else np.asarray(rho, dtype=float),
        residual_parameters=residual_parameters,
        marginal=marginal,
    )
