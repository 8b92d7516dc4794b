"""The analysis specification: the part of a study config the analysis reads, in one object.

:class:`AnalysisSpec` is derived from a :class:`~pipeline.config.StudyConfig` once
(``AnalysisSpec.from_config(cfg)``) and handed to every analysis module; nothing in
``pipeline.analysis`` reads the config itself. Times: ``coded = (time - centre) / scale``;
``original_time`` undoes it.

Occasions: with ``[data] occasion`` (a column of occasion labels, e.g. the wave), every
per-occasion statistic groups rows by that label; without it, the occasions are the
distinct time values (binned into deciles when there are more than
``MAX_DISTINCT_OCCASIONS``). :func:`occasions_of` gives each row its occasion and each
occasion its mean time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from pipeline.config import StudyConfig

__all__ = ["AnalysisSpec", "ExtraModel", "MAX_DISTINCT_OCCASIONS", "Occasions", "occasions_of"]

MAX_DISTINCT_OCCASIONS = 20


@dataclass(frozen=True, slots=True)
class ExtraModel:
    """A ``[[models.extra]]`` entry: a name and an lme4 formula."""

    name: str
    formula: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisSpec:
    """What the analysis needs to know about the study (see the module docstring)."""

    person: str
    time: str
    time_name: str
    outcome: str
    centre: float = 0.0
    scale: float = 1.0
    time_unit: str = ""
    occasion: str | None = None
    polynomial: int = 1
    knots: tuple[float, ...] = ()  # piecewise-linear time: knots in original units
    knots_random: bool = False  # the changes of slope vary between persons too
    person_covariates: tuple[str, ...] = ()
    time_covariates: tuple[str, ...] = ()
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    intercept_predictors: tuple[str, ...] = ()
    slope_predictors: tuple[str, ...] = ()
    extra: tuple[ExtraModel, ...] = ()
    group: str | None = None
    at_times: tuple[float, ...] = ()
    # continuous predictor -> the values of its trajectories ([comparison] at_values)
    at_values: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    residual: tuple[str, ...] = ()  # level-1 error structures to compare
    seed: int = 20240101
    # higher levels, innermost first; their covariates; "polynomial" | "intercept" per level
    clusters: tuple[str, ...] = ()
    cluster_covariates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cluster_random: Mapping[str, str] = field(default_factory=dict)
    ids: str = "unique"  # "within_cluster": a person id is unique only within its cluster
    # [analysis]: bootstrap replicates (0: off) and workers, profile intervals
    # ("none" | "key" | "all"), persons for the influence refits (0: off)
    bootstrap: int = 0
    bootstrap_workers: int = 1
    profile: str = "none"
    influence: int = 0
    # [limits] max_persons_refits: above it, bootstrap, profile and influence are not run
    max_persons_refits: int = 100_000

    @classmethod
    def from_config(cls, cfg: StudyConfig, *, time_name: str | None = None) -> AnalysisSpec:
        """The specification of ``cfg`` (``time_name`` overrides ``[time] name``)."""
        data = cfg.data
        return cls(
            person=data.person,
            time=data.time,
            time_name=time_name or cfg.time.name,
            outcome=data.outcome,
            centre=float(cfg.time.centre),
            scale=float(cfg.time.scale),
            time_unit=cfg.time.unit or "",
            occasion=data.occasion,
            polynomial=int(cfg.models.polynomial),
            knots=tuple(float(k) for k in cfg.time.knots),
            knots_random=bool(cfg.time.knots_random),
            person_covariates=tuple(data.person_covariates),
            time_covariates=tuple(data.time_covariates),
            categories={name: tuple(levels) for name, levels in data.categories.items()},
            intercept_predictors=tuple(dict.fromkeys(cfg.models.intercept_predictors)),
            slope_predictors=tuple(dict.fromkeys(cfg.models.slope_predictors)),
            extra=tuple(ExtraModel(e.name, e.formula) for e in cfg.models.extra),
            group=cfg.comparison.group,
            at_times=tuple(float(t) for t in cfg.comparison.at_times),
            at_values={
                column: tuple(float(v) for v in values)
                for column, values in cfg.comparison.at_values.items()
            },
            residual=tuple(cfg.models.residual),
            seed=int(cfg.report.seed),
            clusters=tuple(data.clusters),
            cluster_covariates={
                cluster: tuple(data.cluster_covariates.get(cluster, ()))
                for cluster in data.clusters
            },
            cluster_random={
                cluster: cfg.models.cluster_random.get(cluster, "polynomial")
                for cluster in data.clusters
            },
            ids=data.ids,
            bootstrap=int(cfg.analysis.bootstrap),
            bootstrap_workers=int(cfg.analysis.bootstrap_workers),
            profile=str(cfg.analysis.profile),
            influence=int(cfg.analysis.influence),
            max_persons_refits=int(cfg.limits.max_persons_refits),
        )

    @property
    def covariates(self) -> tuple[str, ...]:
        """Person-level, time-varying, then cluster-level covariates."""
        flat = (
            name for cluster in self.clusters for name in self.cluster_covariates.get(cluster, ())
        )
        return (*self.person_covariates, *self.time_covariates, *flat)

    @property
    def person_key(self) -> tuple[str, ...]:
        """The columns that identify a person: the id, or with ids unique only within
        clusters, the clusters (outermost first) and the id."""
        if self.ids != "within_cluster":
            return (self.person,)
        return (*reversed(self.clusters), self.person)

    def cluster_key(self, cluster: str) -> tuple[str, ...]:
        """The columns that identify a unit of ``cluster`` (outermost first)."""
        if self.ids != "within_cluster":
            return (cluster,)
        return tuple(reversed(self.clusters[self.clusters.index(cluster) :]))

    @property
    def group_in_conditional(self) -> bool:
        """Whether the conditional model already compares the groups (status and change)."""
        return (
            self.group is not None
            and self.group in self.intercept_predictors
            and self.group in self.slope_predictors
        )

    def original_time(self, coded: np.ndarray | float) -> np.ndarray:
        return np.asarray(coded, dtype=float) * self.scale + self.centre

    def coded_time(self, time: np.ndarray | float) -> np.ndarray:
        return (np.asarray(time, dtype=float) - self.centre) / self.scale

    def time_text(self, time: float) -> str:
        """``age = 1`` style text for a time in original units."""
        unit = f" {self.time_unit}" if self.time_unit else ""
        return f"{self.time} = {time:g}{unit}"


@dataclass(frozen=True, slots=True)
class Occasions:
    """Each row's occasion label, and per occasion (ordered by mean time) its mean time."""

    labels: np.ndarray  # str per row
    order: tuple[str, ...]
    mean_time: Mapping[str, float]
    source: str  # "column 'wave'", "distinct times" or "decile bins of time"


def occasions_of(frame: pl.DataFrame, spec: AnalysisSpec) -> Occasions:
    """The occasions of the rows of ``frame`` (a model frame: original time in ``spec.time``
    or, when that column is absent, the coded time)."""
    if spec.time in frame.columns:
        time = frame[spec.time].cast(pl.Float64).to_numpy()
    else:
        time = spec.original_time(frame[spec.time_name].cast(pl.Float64).to_numpy())
    if spec.occasion is not None and spec.occasion in frame.columns:
        labels = frame[spec.occasion].cast(pl.String).to_numpy().astype(str)
        source = f"column '{spec.occasion}'"
    elif (distinct := np.unique(time)).size <= MAX_DISTINCT_OCCASIONS:
        # each distinct time formatted once, then looked up for every row
        texts = np.array([f"{t:g}" for t in distinct], dtype=str)
        labels = texts[np.searchsorted(distinct, time)]
        source = "distinct times"
    else:
        edges = np.unique(np.quantile(time, np.linspace(0, 1, 11)))
        bins = np.clip(np.searchsorted(edges, time, side="right") - 1, 0, edges.size - 2)
        means = np.bincount(bins, weights=time) / np.maximum(np.bincount(bins), 1)
        labels = np.array([f"{m:.4g}" for m in means], dtype=str)[bins]
        source = "decile bins of time"
    table = (
        pl.DataFrame({"occasion": labels, "time": time})
        .group_by("occasion")
        .agg(pl.col("time").mean())
        .sort("time", "occasion")
    )
    return Occasions(
        labels=labels,
        order=tuple(table["occasion"].to_list()),
        mean_time=dict(zip(table["occasion"].to_list(), table["time"].to_list(), strict=True)),
        source=source,
    )
