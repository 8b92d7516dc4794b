"""What every analysis step receives: the specification, the levels, the fitted sequence.

:class:`AnalysisContext` is built once by :func:`pipeline.analysis.analyse` after the
model sequence is fitted; each step (``tables(ctx) -> dict[str, DataFrame]`` in its
own module) reads it and returns its tables. :class:`Notes` collects warnings and
failures while the steps run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import polars as pl

from pipeline.analysis.designs import IdCoding, fit_formula
from pipeline.analysis.sequence import ModelSpec, Role
from pipeline.analysis.spec import AnalysisSpec, Occasions, occasions_of
from pipeline.errors import GrowthError
from pipeline.model.results import GrowthFit
from pipeline.reshape import Levels

__all__ = ["AnalysisContext", "Engine", "Notes", "Severity"]

Engine = Literal["fast", "statsmodels"]
Severity = Literal["warning", "note"]
T = TypeVar("T")


@dataclass
class Notes:
    """Warnings and failures collected while the analysis runs."""

    warnings: list[dict[str, str]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)

    def warn(self, topic: str, message: str, *, severity: Severity = "warning") -> None:
        self.warnings.append({"severity": severity, "topic": topic, "message": message})

    def fail(self, *, model: str, formula: str, error: BaseException) -> None:
        text = str(error).strip() or type(error).__name__
        if not isinstance(error, GrowthError):
            text = f"{type(error).__name__}: {text}"
        self.failures.append({"model": model, "formula": formula, "error": text})
        self.warn("model failure", f"model '{model}' ({formula}) could not be fitted: {text}")

    def attempt(self, topic: str, action: Callable[[], T]) -> T | None:
        """Run one part of the analysis; a failure becomes a warning and None."""
        try:
            return action()
        except Exception as error:  # one failed table must not lose the rest
            self.warn(topic, f"{topic} could not be computed: {type(error).__name__}: {error}")
            return None


@dataclass(frozen=True, slots=True)
class AnalysisContext:
    """The fitted model sequence and what it was fitted on (REML fits; failed models absent)."""

    spec: AnalysisSpec
    levels: Levels
    models: tuple[ModelSpec, ...]
    fits: Mapping[str, GrowthFit]
    notes: Notes
    engine: Engine = "fast"
    coding: IdCoding = field(default_factory=IdCoding)
    coded_frame: pl.DataFrame | None = None  # ``frame`` with its ids coded by ``coding``
    _ml: dict[str, GrowthFit] = field(default_factory=dict, repr=False)
    _cache: dict[tuple[str, str], object] = field(default_factory=dict, repr=False)

    def cached(self, kind: str, name: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per (kind, model name) for all the steps (per-person OLS, ...)."""
        key = (kind, name)
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]  # type: ignore[return-value]

    @property
    def frame(self) -> pl.DataFrame:
        return self.levels.model_frame

    @property
    def fitted_models(self) -> tuple[ModelSpec, ...]:
        return tuple(model for model in self.models if model.name in self.fits)

    def with_role(self, *roles: Role) -> tuple[ModelSpec, ...]:
        """The fitted models with one of ``roles``, in sequence order."""
        return tuple(model for model in self.fitted_models if model.role in roles)

    def fit_formula(
        self, formula: str, *, reml: bool, frame: pl.DataFrame | None = None
    ) -> GrowthFit:
        """``fit_growth(frame, formula)`` (default: the model frame) on the coded ids
        (:mod:`pipeline.analysis.designs`)."""
        if frame is None:
            return fit_formula(
                self.frame,
                formula,
                reml=reml,
                engine=self.engine,
                coding=self.coding,
                coded=self.coded_frame,
            )
        return fit_formula(frame, formula, reml=reml, engine=self.engine, coding=self.coding)

    def fit(self, name: str) -> GrowthFit | None:
        return self.fits.get(name)

    def ml(self, name: str) -> GrowthFit:
        """The maximum-likelihood refit of model ``name``, computed once and shared by the steps."""
        if name not in self._ml:
            fit = self.fits[name]
            self._ml[name] = fit.refit(reml=False) if fit.reml else fit
        return self._ml[name]

    @property
    def chosen(self) -> ModelSpec | None:
        """The model for the residual and random-effect diagnostics: the last conditional
        model fitted, else the unconditional growth model, else the means model."""
        for role in ("conditional", "growth", "means"):
            candidates = self.with_role(role)  # type: ignore[arg-type]
            if candidates:
                return candidates[-1]
        return None

    def occasions(self, fit: GrowthFit) -> Occasions:
        """The occasions of the rows ``fit`` used (computed once per set of rows)."""
        known = self._cache.get(("occasions", str(id(fit.frame))))
        if known is not None and known[0] is fit.frame:  # type: ignore[index]
            return known[1]  # type: ignore[index]
        occasions = occasions_of(fit.frame, self.spec)
        self._cache[("occasions", str(id(fit.frame)))] = (fit.frame, occasions)
        return occasions

    def categories(self, frame: pl.DataFrame) -> dict[str, list[str]]:
        """Levels of each categorical covariate present in ``frame`` (declared order, else sorted)."""
        out: dict[str, list[str]] = {}
        for column in self.spec.covariates:
            if column not in frame.columns:
                continue
            if column in self.spec.categories:
                out[column] = list(self.spec.categories[column])
            elif frame.schema[column] in (pl.String, pl.Categorical, pl.Boolean) or isinstance(
                frame.schema[column], pl.Enum
            ):
                out[column] = sorted(frame[column].drop_nulls().cast(pl.String).unique().to_list())
        return out
