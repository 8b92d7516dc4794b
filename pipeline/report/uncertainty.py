"""The report's "Uncertainty and checks" section: table views, and what each statistic is and is not.

Reads only the tables of the :class:`ReportContext` (made by
:mod:`pipeline.analysis.uncertainty`). An optional analysis that is off says so and
how to turn it on; a capped one says what the cap left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from .context import ReportContext
from .figures import study_design
from .findings import effect_sizes
from .formatting import TableView, format_number, is_available, table_view

__all__ = [
    "UncertaintyTexts",
    "effect_size_note",
    "effect_size_rows",
    "uncertainty_texts",
    "uncertainty_views",
]

INFLUENCE_ROWS = 25


def effect_size_rows(ctx: ReportContext) -> pl.DataFrame | None:
    """The ``effect_sizes`` table with a ``contrast`` column as ``group_differences`` writes
    it (``trt: Y - N``), so that ``[data.labels]`` relabel both the same way."""
    table = effect_sizes(ctx)
    if table is None or not {"group", "reference"} <= set(table.columns):
        return table
    prefix = f"{ctx.group_name}: " if ctx.group_name else ""
    return table.with_columns(
        pl.concat_str(pl.lit(prefix), "group", pl.lit(" - "), "reference").alias("contrast")
    )


def effect_size_note(ctx: ReportContext) -> str:
    """What d is (Feingold 2009), with the SD it divides by, and what its interval leaves out."""
    table = ctx.table("effect_sizes")
    if not is_available(table) or "sd_definition" not in table.columns:
        return ""
    row = table.row(0, named=True)
    model = f" of the {row['model']} model" if "model" in table.columns else ""
    return (
        f"d (Feingold 2009): the model-implied difference{model} (in change from baseline to the end of "
        f"the study, or in status at a time) divided by the {row['sd_definition']} = "
        f"{format_number(row['sd'])}. Its interval is the difference's t interval (Satterthwaite "
        "df) divided by the same SD, treated as fixed, so it is somewhat too narrow; the "
        "parametric bootstrap, when on, includes the SD's uncertainty."
    )


@dataclass(frozen=True, slots=True)
class UncertaintyTexts:
    """Notes and "not available" texts of the section (plain strings, escaped by the template)."""

    profile_missing: str
    profile_note: str
    bootstrap_missing: str
    bootstrap_note: str
    influence_missing: str
    influence_note: str
    dropout_sentence: str
    dropout_caveat: str
    functional_form_note: str


def _models(table: pl.DataFrame | None) -> list[str]:
    if not is_available(table) or "model" not in table.columns:
        return []
    assert table is not None
    return [str(m) for m in table["model"].unique(maintain_order=True).to_list()]


def uncertainty_texts(ctx: ReportContext) -> UncertaintyTexts:
    profiled = _models(ctx.table("variance_intervals"))
    boot = ctx.table("bootstrap")
    influence = ctx.table("influence")
    profile_note = ""
    if profiled:
        profile_note = (
            f'Profiled: {", ".join(profiled)} ([analysis] profile = "key" profiles the key model '
            'only, "all" every model of the sequence). Each interval is the set of values whose '
            "profile ML deviance is within the chi-square(1) 95% cut-off of the minimum; an "
            "interval that reaches 0 (an SD) or -1/1 (a correlation) stops at the edge of the "
            "parameter space. These are intervals for the variance parameters, not for the fixed "
            "effects."
        )
    boot_note = ""
    if is_available(boot):
        assert boot is not None
        replicates, seed = int(boot["replicates"][0]), int(boot["seed"][0])
        boot_note = (
            f"{replicates:,} replicates per model, seed {seed}: y simulated from each fitted model "
            "and every model refitted; percentile 95% intervals of the replicates that succeeded "
            "(used); the same seed gives the same numbers whatever the number of workers. A "
            "pseudo-R² is shown only between models with the same random part; it is a "
            "difference of two estimates divided by one of them, so its interval can reach far "
            "below zero when that variance is small in some replicates."
        )
    influence_note = ""
    if is_available(influence) and "person" in influence.columns:
        assert influence is not None
        refitted = influence["person"].n_unique()
        persons = ctx.persons
        sample = (
            f" (a seeded sample of {refitted:,} of {persons:,} persons: [analysis] influence caps "
            "the refits)"
            if persons is not None and refitted < persons
            else f" (every one of the {refitted:,} persons)"
        )
        influence_note = (
            f"Leave-one-person-out refits of the key model{sample}. Cook's distance is for the "
            "fixed effects (divided by their number); change is the variance without the person "
            f"minus the variance with everyone. The {INFLUENCE_ROWS} rows with the largest "
            "Cook's distance are shown."
        )
    summary = ctx.table("dropout_summary")
    sentence = (
        str(summary["sentence"][0])
        if is_available(summary) and "sentence" in summary.columns
        else ""
    )
    design = study_design(ctx)
    caveat = (
        "Persons enter the study at different times, so a dropout here (a person whose last "
        "observation is before the study's last occasion) includes persons whose window of "
        "observation ended early by design; read these comparisons with that in mind."
        if design is not None and design.persons > 0 and not design.same_entry
        else ""
    )
    form = ctx.table("functional_form")
    form_note = ""
    if is_available(form) and "p_value" in form.columns:
        assert form is not None
        form_note = (
            "A small p means the polynomial in time misses some of the occasion means; a large p "
            "means the data cannot tell the polynomial from one mean per occasion, not that the "
            "polynomial is the true shape."
        )
    return UncertaintyTexts(
        profile_missing=_limit_note(ctx, "profile intervals")
        or (
            'Off ([analysis] profile = "none", the default): set profile = "key" for the key '
            'model or "all" for every model of the sequence (about 15 s per growth model on '
            "the Early example)."
        ),
        profile_note=profile_note,
        bootstrap_missing=_limit_note(ctx, "parametric bootstrap")
        or (
            "Off ([analysis] bootstrap = 0, the default): set [analysis] bootstrap = 1000 (and "
            "bootstrap_workers for parallel processes) for percentile intervals of the ICC, the "
            "pseudo-R² and Feingold's d."
        ),
        bootstrap_note=boot_note,
        influence_missing=_limit_note(ctx, "person influence")
        or (
            "Off ([analysis] influence = 0, the default): set [analysis] influence = 200 to refit "
            "the key model without each person (a seeded sample of 200 when there are more)."
        ),
        influence_note=influence_note,
        dropout_sentence=sentence,
        dropout_caveat=caveat,
        functional_form_note=form_note,
    )


def _limit_note(ctx: ReportContext, topic: str) -> str:
    """The note of an analysis not run because of ``[limits] max_persons_refits`` ("" if none)."""
    from pipeline.analysis.uncertainty import LIMIT_NOTE

    warnings = ctx.warnings
    if not is_available(warnings) or "topic" not in warnings.columns:
        return ""
    assert warnings is not None
    hits = warnings.filter(
        (pl.col("topic") == topic) & pl.col("message").str.starts_with(LIMIT_NOTE)
    )
    return str(hits["message"][0]) if hits.height else ""


def _renamed(table: pl.DataFrame | None, names: dict[str, str]) -> pl.DataFrame | None:
    if not is_available(table):
        return table
    assert table is not None
    return table.rename({k: v for k, v in names.items() if k in table.columns})


def _influence_rows(table: pl.DataFrame | None) -> pl.DataFrame | None:
    if not is_available(table):
        return table
    assert table is not None
    return table.sort(
        ["cooks_distance", "person", "group", "term1", "term2"],
        descending=[True, False, False, False, False],
        nulls_last=True,
    )


def uncertainty_views(ctx: ReportContext) -> dict[str, TableView]:
    t = ctx.table
    texts = uncertainty_texts(ctx)
    return {
        "variance_intervals": table_view(
            t("variance_intervals"),
            key="variance_intervals",
            columns=[
                "model",
                "parameter",
                "group",
                "term1",
                "term2",
                "kind",
                "estimate",
                "conf_low",
                "conf_high",
                "low_at_bound",
                "high_at_bound",
            ],
            note=texts.profile_note,
        ),
        "bootstrap": table_view(
            _renamed(t("bootstrap"), {"statistic": "quantity"}),  # not a test statistic
            key="bootstrap",
            columns=[
                "model",
                "quantity",
                "estimate",
                "boot_std_error",
                "conf_low",
                "conf_high",
                "used",
                "failed",
                "singular",
            ],
            note=texts.bootstrap_note,
        ),
        "dropout": table_view(t("dropout"), key="dropout"),
        "functional_form": table_view(
            t("functional_form"), key="functional_form", note=texts.functional_form_note
        ),
        "implied_means": table_view(t("implied_means"), key="implied_means"),
        "r2_y_yhat": table_view(t("r2_y_yhat"), key="r2_y_yhat"),
        "between_person_variance": table_view(
            t("between_person_variance"), key="between_person_variance"
        ),
        "influence": table_view(
            _influence_rows(t("influence")),
            key="influence",
            max_rows=INFLUENCE_ROWS,
            note=texts.influence_note,
        ),
        "within_between": table_view(t("within_between"), key="within_between"),
    }
