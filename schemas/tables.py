"""The analysis tables: the one definition of each table's columns (``docs/CONTRACTS.md``, "Analysis").

``TABLES`` lists every table of ``Analysis.tables`` in the order the report and the
``tables/`` folder use, each with its columns (name, polars dtype, whether it may be
null, the value rules that always hold, and a one-line meaning). Everything else
derives from it:

- ``TABLE_NAMES``: the order of the tables (the report's list, the CSV files);
- ``columns(name)``: the polars schema the analysis modules build the table with;
- ``TABLE_SCHEMAS`` / ``validate_tables``: the pandera (polars backend) schemas;
- ``contract_markdown()``: the table of ``docs/CONTRACTS.md`` (a test checks that the
  document holds exactly this text; ``python -m schemas.tables`` prints it).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

__all__ = [
    "TABLES",
    "TABLE_NAMES",
    "TABLE_SCHEMAS",
    "Column",
    "Table",
    "columns",
    "contract_markdown",
    "validate_tables",
]


@dataclass(frozen=True, slots=True)
class Column:
    """One column: name, polars dtype, nullable, value rule, meaning."""

    name: str
    dtype: type[pl.DataType] | pl.DataType
    meaning: str = ""
    nullable: bool = False
    rule: str | None = None  # "p" (in [0, 1]), ">=0", ">=1", or "isin:a|b|c"


@dataclass(frozen=True, slots=True)
class Table:
    """One analysis table: name, meaning, columns, and whether conf_low <= conf_high holds."""

    name: str
    meaning: str
    columns: tuple[Column, ...]
    interval: bool = False
    optional: str = ""  # when the table is produced only on request: what asks for it


def _c(
    name: str,
    dtype: type[pl.DataType] | pl.DataType,
    meaning: str = "",
    *,
    null: bool = False,
    rule: str | None = None,
) -> Column:
    return Column(name, dtype, meaning, null, rule)


S, F, N, B = pl.String, pl.Float64, pl.Int64, pl.Boolean  # text, float, count, flag
MODEL = _c("model", S, "model name (an.models)")

TABLES: tuple[Table, ...] = (
    Table(
        "fixed_effects",
        "every fitted model's fixed effects (REML; t-tests with Satterthwaite df, 95% CI)",
        (
            MODEL,
            _c("term", S, "lme4 term name"),
            _c("estimate", F),
            _c("std_error", F, rule=">=0"),
            _c("df", F, "Satterthwaite df", rule=">=0"),
            _c("statistic", F, "t", null=True),
            _c("p_value", F, null=True, rule="p"),
            _c("conf_low", F, null=True),
            _c("conf_high", F, null=True),
        ),
        interval=True,
    ),
    Table(
        "variance_components",
        "lme4's as.data.frame(VarCorr()) of every fitted model",
        (
            MODEL,
            _c("group", S),
            _c("term1", S, null=True),
            _c("term2", S, "null for a variance", null=True),
            _c("variance", F, "variance or covariance"),
            _c("sd_cor", F, "SD or correlation", null=True),
        ),
    ),
    Table(
        "model_fit",
        "fit statistics and the optimizer record of every fitted model (REML)",
        (
            MODEL,
            _c(
                "role",
                S,
                "place in the sequence; auxiliary models are fitted for a comparison only",
                rule="isin:means|auxiliary|growth|conditional|group|extra",
            ),
            _c("formula", S),
            _c("nobs", N, rule=">=1"),
            _c("ngroups", N, rule=">=1"),
            _c("npar", N, rule=">=1"),
            _c("loglik", F),
            _c("aic", F),
            _c("bic", F),
            _c("reml", B),
            _c("converged", B),
            _c("singular", B),
            _c("optimizer", S),
            _c("evaluations", N, null=True, rule=">=0"),
            _c("max_abs_gradient", F, null=True, rule=">=0"),
        ),
    ),
    Table(
        "model_comparison",
        "information criteria of the ML refits, one row per model (including the auxiliary "
        "random-intercept growth model)",
        (
            MODEL,
            _c("npar", N, rule=">=1"),
            _c("deviance", F, "-2 log-likelihood (ML)"),
            _c("aic", F),
            _c("bic", F),
        ),
    ),
    Table(
        "likelihood_ratio_tests",
        "likelihood-ratio test of every pair of models where one is nested in the other "
        "(fixed and random parts) with no fitted model in between",
        (
            _c("model", S, "the larger model"),
            _c("against", S, "the model nested in it"),
            _c("chisq", F, "2 (logLik model - logLik against), ML", rule=">=0"),
            _c("df", N, "parameters added", rule=">=1"),
            _c("p_value", F, rule="p"),
            _c("reference", S, "null distribution, e.g. chi2(2) or 50:50 mixture chi2(1):chi2(2)"),
            _c("hypothesis", S, "what the smaller model sets to zero"),
        ),
    ),
    Table(
        "icc",
        "intraclass correlation of the unconditional means model (REML) with its "
        "profile-likelihood interval",
        (
            MODEL,
            _c("between_variance", F, rule=">=0"),
            _c("within_variance", F, rule=">=0"),
            _c("icc", F, null=True, rule="p"),
            _c("conf_low", F, null=True, rule="p"),
            _c("conf_high", F, null=True, rule="p"),
            _c("method", S),
            _c("interpretation", S),
        ),
        interval=True,
    ),
    Table(
        "icc_by_time",
        "share of the outcome's variance between persons at each occasion, implied by the "
        "unconditional growth model",
        (
            MODEL,
            _c("occasion", S),
            _c("time", F, "original units (mean time of the occasion)"),
            _c("between_variance", F, "z(t)' Sigma z(t)", rule=">=0"),
            _c("within_variance", F, "sigma^2", rule=">=0"),
            _c("icc", F, null=True, rule="p"),
        ),
    ),
    Table(
        "variance_explained",
        "proportional reduction of variance components between models with the same random part",
        (
            MODEL,
            _c("reference", S),
            _c("component", S),
            _c("reference_variance", F, rule=">=0"),
            _c("variance", F, rule=">=0"),
            _c("proportion_reduced", F, null=True),
            _c("note", S, "what the component means"),
        ),
    ),
    Table(
        "r2",
        "Nakagawa-Johnson marginal and conditional R2 of every fitted model",
        (
            MODEL,
            _c("r2_marginal", F, null=True, rule="p"),
            _c("r2_conditional", F, null=True, rule="p"),
        ),
    ),
    Table(
        "level_equations",
        "every fitted model written as level-1 and level-2 equations",
        (
            MODEL,
            _c("level", S, rule="isin:Level 1|Level 2|Variances|lme4"),
            _c("equation", S),
        ),
    ),
    Table(
        "ols_vs_mlm",
        "fixed effects by naive OLS, cluster-robust OLS (CR1 and CR2) and the mixed model",
        (
            MODEL,
            _c("term", S),
            _c("estimate_ols", F),
            _c("se_ols", F, rule=">=0"),
            _c("p_ols", F, null=True, rule="p"),
            _c("se_cr1", F, "CR1 sandwich, t on G - 1 df", null=True, rule=">=0"),
            _c("p_cr1", F, null=True, rule="p"),
            _c("se_cr2", F, "CR2 (Bell-McCaffrey) sandwich", null=True, rule=">=0"),
            _c("df_cr2", F, "Bell-McCaffrey df", null=True, rule=">=0"),
            _c("p_cr2", F, null=True, rule="p"),
            _c("estimate_mlm", F),
            _c("se_mlm", F, rule=">=0"),
            _c("p_mlm", F, null=True, rule="p"),
            _c("se_ratio", F, "se_mlm / se_ols", null=True, rule=">=0"),
            _c("flag", B, "naive OLS and the mixed model disagree on p < 0.05"),
            _c("disagreement", S, "which way they disagree", null=True),
        ),
    ),
    Table(
        "sample_size",
        "sample-size adequacy by rules of thumb",
        (
            _c("check", S),
            _c("value", F, rule=">=0"),
            _c("threshold", F, rule=">=0"),
            _c("status", S, rule="isin:ok|warning"),
            _c("message", S),
        ),
    ),
    Table(
        "assumptions",
        "checks of the chosen model's assumptions, each with a verdict",
        (
            _c("check", S),
            _c("statistic", F, null=True),
            _c("p_value", F, null=True, rule="p"),
            _c("verdict", S),
        ),
    ),
    Table(
        "reliability",
        "HLM reliability of the per-person OLS growth parameters and the chi-square test of "
        "each variance",
        (
            _c("coefficient", S),
            _c("reliability", F, null=True, rule="p"),
            _c("chisq", F, null=True, rule=">=0"),
            _c("df", N, null=True, rule=">=1"),
            _c("p_value", F, null=True, rule="p"),
        ),
    ),
    Table(
        "group_trajectories",
        "model-implied mean trajectory of each group on a grid of times (original units)",
        (
            _c("group", S),
            _c("time", F),
            _c("estimate", F),
            _c("std_error", F, rule=">=0"),
            _c("conf_low", F),
            _c("conf_high", F),
        ),
        interval=True,
    ),
    Table(
        "group_differences",
        "differences between groups in status at given times and in the rate of change; "
        "p_holm: Holm over all rows of the table; intervals not adjusted",
        (
            _c("contrast", S),
            _c("quantity", S, rule="isin:status at t|rate of change"),
            _c("time", F, null=True),
            _c("estimate", F),
            _c("std_error", F, rule=">=0"),
            _c("df", F, rule=">=0"),
            _c("p_value", F, rule="p"),
            _c("p_holm", F, rule="p"),
            _c("conf_low", F),
            _c("conf_high", F),
        ),
        interval=True,
    ),
    Table(
        "predictor_values",
        "the values of each continuous person- or cluster-level predictor at which "
        "predictor_trajectories are drawn; mean and SD over persons (a cluster-level "
        "predictor: over clusters), not over rows",
        (
            _c("predictor", S, "covariate"),
            _c("level", S, '"person" or the cluster column'),
            _c("units", N, "persons (or clusters) the mean and SD are over", rule=">=1"),
            _c("mean", F, "mean over units"),
            _c("sd", F, "SD over units (n - 1)", null=True, rule=">=0"),
            _c("setting", S, '"mean - 1 SD", "mean", "mean + 1 SD" or "at_values"'),
            _c("value", F, "the predictor's value"),
        ),
        optional="a continuous predictor in the conditional model, or [comparison] at_values",
    ),
    Table(
        "predictor_trajectories",
        "model-implied mean trajectory (conditional model) at each value of predictor_values "
        "on a grid of times (original units); other numeric covariates at their mean over "
        "persons, categorical ones averaged over their levels; pointwise 95% CI with "
        "Satterthwaite df",
        (
            MODEL,
            _c("predictor", S),
            _c("setting", S),
            _c("value", F),
            _c("time", F),
            _c("estimate", F),
            _c("std_error", F, rule=">=0"),
            _c("df", F, "Satterthwaite df", rule=">=0"),
            _c("conf_low", F),
            _c("conf_high", F),
        ),
        interval=True,
        optional="a continuous predictor in the conditional model, or [comparison] at_values",
    ),
    Table(
        "time_pieces",
        "piecewise-linear time: the slope before the first knot, the change of slope at each "
        "knot (the pmax term) and the slope after it (the sum), per unit of time, as "
        "contrasts of the fixed effects (t with Satterthwaite df); per group where the model "
        "compares groups",
        (
            MODEL,
            _c("group", S, '"all" or a level of [comparison] group'),
            _c("piece", S, rule="isin:slope|change of slope"),
            _c("time_from", F, "start of the segment (a change: the knot)"),
            _c("time_to", F, "end of the segment (a change: the knot)"),
            _c("estimate", F),
            _c("std_error", F, rule=">=0"),
            _c("df", F, rule=">=0"),
            _c("p_value", F, rule="p"),
            _c("conf_low", F),
            _c("conf_high", F),
        ),
        interval=True,
        optional="[time] knots",
    ),
    Table(
        "residuals",
        "chart data: level-1 residuals of the chosen model (the last conditional one)",
        (
            _c("person", S),
            _c("time", F),
            _c("fitted", F),
            _c("residual", F),
            _c("qq_theoretical", F),
        ),
    ),
    Table(
        "residual_variance_by_time",
        "chart data: variance of the chosen model's level-1 residuals at each occasion",
        (
            _c("occasion", S),
            _c("time", F, "mean time of the occasion (original units)"),
            _c("n", N, rule=">=1"),
            _c("variance", F, null=True, rule=">=0"),
        ),
    ),
    Table(
        "random_effects",
        "chart data: BLUPs of the chosen model with their conditional SEs",
        (
            _c("person", S),
            _c("term", S),
            _c("estimate", F),
            _c("std_error", F, rule=">=0"),
            _c("conf_low", F),
            _c("conf_high", F),
            _c("qq_theoretical", F),
        ),
        interval=True,
    ),
    Table(
        "observed_means",
        "observed mean of the outcome per group and occasion",
        (
            _c("group", S),
            _c("occasion", S),
            _c("time", F, "mean time of the occasion (original units)"),
            _c("mean", F),
            _c("std_error", F, null=True, rule=">=0"),
            _c("n", N, rule=">=1"),
        ),
    ),
    Table(
        "error_structures",
        "level-1 error structures compared (Singer & Willett Table 7.3): same fixed part, REML",
        (
            _c("model", S, "the standard multilevel model or the structure fitted as gls"),
            _c("structure", S, "mmrm's name, 'none' for the standard model"),
            _c("formula", S),
            _c("npar", N, "parameters (fixed, covariance, sigma)", null=True, rule=">=1"),
            _c("deviance", F, "-2 REML log-likelihood", null=True),
            _c("aic", F, null=True),
            _c("bic", F, null=True),
            _c("converged", pl.Boolean, null=True),
            _c("chosen", pl.Boolean, "the structure with the lowest BIC"),
            _c("note", S, "why it was chosen, or why it could not be fitted"),
        ),
        optional="[models] residual",
    ),
    Table(
        "error_structure_tests",
        "likelihood-ratio tests (ML refits) between structures of which one is a special case",
        (
            _c("model", S, "the more general structure"),
            _c("against", S, "the special case"),
            _c("chisq", F, rule=">=0"),
            _c("df", N, rule=">=1"),
            _c("p_value", F, rule="p"),
        ),
        optional="[models] residual",
    ),
    Table(
        "error_structure_covariance",
        "implied (chosen structure) and observed (OLS residuals, pairwise) covariance by occasion",
        (
            _c("source", S, rule="isin:implied|observed"),
            _c("structure", S),
            _c("occasion_row", S),
            _c("occasion_col", S),
            _c("covariance", F, null=True),
            _c("correlation", F, null=True),
        ),
        optional="[models] residual",
    ),
    Table(
        "error_structure_fixed_effects",
        "fixed effects of the standard model beside those of the chosen error structure",
        (
            _c("term", S),
            _c("estimate_standard", F, null=True),
            _c("se_standard", F, null=True, rule=">=0"),
            _c("estimate_chosen", F, null=True),
            _c("se_chosen", F, null=True, rule=">=0"),
            _c("chosen", S),
        ),
        optional="[models] residual",
    ),
    Table(
        "mmrm_visit_differences",
        "MMRM (group x visit, unstructured): group difference at every visit, Kenward-Roger SE and df",
        (
            _c("visit", S),
            _c("contrast", S),
            _c("estimate", F),
            _c("std_error", F, rule=">=0"),
            _c("df", F),
            _c("statistic", F),
            _c("p_value", F, rule="p"),
            _c("conf_low", F),
            _c("conf_high", F),
        ),
        interval=True,
        optional='[models] residual with "us", [data] occasion and [comparison] group',
    ),
    Table(
        "cluster_variance_partition",
        "unconditional means model: the variance at each level (persons, clusters, occasions) "
        "and its share of the total, 95% parametric-bootstrap interval of the share; the "
        "variance-partition chart",
        (
            MODEL,
            _c("level", S, "the person column, a cluster column, or occasion"),
            _c("group", S, "lme4 group name (Residual for occasions)"),
            _c("variance", F, rule=">=0"),
            _c("share", F, rule="p"),
            _c("conf_low", F, null=True, rule="p"),
            _c("conf_high", F, null=True, rule="p"),
            _c("method", S),
        ),
        interval=True,
        optional="[data] clusters",
    ),
    Table(
        "cluster_icc",
        "intraclass correlations of the unconditional means model with clusters "
        "(Raudenbush & Bryk ch. 8), 95% parametric-bootstrap interval",
        (
            MODEL,
            _c("icc", S),
            _c("definition", S),
            _c("estimate", F, null=True, rule="p"),
            _c("conf_low", F, null=True, rule="p"),
            _c("conf_high", F, null=True, rule="p"),
            _c("method", S),
        ),
        interval=True,
        optional="[data] clusters",
    ),
    Table(
        "cluster_growth_variance",
        "unconditional growth model: each random term's variance between persons within "
        "clusters and between clusters, and the share between clusters (status refers to "
        "time 0 of the coded time)",
        (
            MODEL,
            _c("term", S, "lme4 random term"),
            _c("level", S, "the cluster column"),
            _c("within_variance", F, "between persons within clusters", null=True, rule=">=0"),
            _c("between_variance", F, "between clusters", null=True, rule=">=0"),
            _c("share_between", F, null=True, rule="p"),
        ),
        optional="[data] clusters",
    ),
    Table(
        "cluster_variance_tests",
        "likelihood-ratio test of each cluster level's variance components: the model "
        "against itself without that level's random terms (ML refits, boundary mixture)",
        (
            MODEL,
            _c("level", S),
            _c("against", S, "formula of the model without the level"),
            _c("chisq", F, rule=">=0"),
            _c("df", N, rule=">=1"),
            _c("p_value", F, rule="p"),
            _c("reference", S),
            _c("hypothesis", S),
        ),
        optional="[data] clusters",
    ),
    Table(
        "cluster_design_effect",
        "design effect of each cluster level for the mean of the observations and of the "
        "person means, and the effective sample size",
        (
            MODEL,
            _c("level", S),
            _c("unit", S, rule="isin:observations|persons"),
            _c("count", N, rule=">=1"),
            _c("mean_per_cluster", F, rule=">=0"),
            _c("icc", F, rule="p"),
            _c("design_effect", F, rule=">=0"),
            _c("effective_n", F, rule=">=0"),
            _c("formula", S),
        ),
        optional="[data] clusters",
    ),
    Table(
        "cluster_predictor_se",
        "standard error of each fixed effect of a cluster-level covariate by OLS, by the "
        "two-level model without the clusters and by the model with them",
        (
            MODEL,
            _c("term", S),
            _c("method", S, rule="isin:OLS|two-level|three-level|all levels"),
            _c("estimate", F),
            _c("std_error", F, rule=">=0"),
            _c("ratio", F, "std_error / that of the model with the clusters", null=True),
            _c("formula", S),
        ),
        optional="[data] clusters and a cluster-level predictor",
    ),
    Table(
        "cluster_sample_size",
        "sample-size adequacy at every level (10 groups for fixed effects, 30 for variance "
        "components, 5 units per group)",
        (
            _c("level", S),
            _c("check", S),
            _c("value", F, rule=">=0"),
            _c("threshold", F, rule=">=0"),
            _c("status", S, rule="isin:ok|warning"),
            _c("message", S),
        ),
        optional="[data] clusters",
    ),
    Table(
        "cluster_reliability",
        "HLM reliability at every level: of person and cluster means (means model) and of "
        "each random term's BLUPs (growth model), averaged over units",
        (
            MODEL,
            _c("level", S),
            _c("term", S),
            _c("reliability", F, null=True, rule="p"),
            _c("units", N, rule=">=1"),
            _c("method", S),
        ),
        optional="[data] clusters",
    ),
    Table(
        "cluster_level_equations",
        "every nested model as level-1 (pi), level-2 (beta) and level-3 (gamma) equations",
        (
            MODEL,
            _c("level", S, rule="isin:Level 1|Level 2|Level 3|Variances|lme4"),
            _c("equation", S),
        ),
        optional="[data] clusters",
    ),
    Table(
        "cluster_caterpillar",
        "the outermost cluster level's random effects (BLUPs) with 95% intervals from their "
        "conditional variances (the fixed effects and variances taken as known), ranked "
        "within each term",
        (
            MODEL,
            _c("level", S),
            _c("cluster", S),
            _c("term", S),
            _c("estimate", F),
            _c("std_error", F, rule=">=0"),
            _c("conf_low", F),
            _c("conf_high", F),
            _c("rank", N, "1 = lowest estimate", rule=">=1"),
        ),
        interval=True,
        optional="[data] clusters",
    ),
    Table(
        "cluster_trajectories",
        "observed mean of each occasion for at most 20 clusters drawn with the report seed, "
        "and the cluster's trajectory implied by the unconditional growth model",
        (
            _c("level", S),
            _c("cluster", S),
            _c("occasion", S),
            _c("time", F, "original units"),
            _c("observations", N, rule=">=1"),
            _c("observed_mean", F),
            _c("fitted_mean", F, null=True),
        ),
        optional="[data] clusters",
    ),
)

# ---- uncertainty, effect sizes, missing data, functional form, fit statistics (issue 12):
# made by pipeline/analysis/uncertainty.py from the functions of profile.py, bootstrap.py,
# effect_size.py, missing_data.py, functional_form.py and fit_stats.py.
_SEQ = _c("model", S, "model name (an.models)")
_PROFILE_COLUMNS = (
    _c("parameter", S, "lme4's name: .sig01, .sig02, ..., .sigma"),
    _c("group", S, 'grouping factor; "Residual" for .sigma'),
    _c("term1", S, "random term of an SD; first term of a correlation", null=True),
    _c("term2", S, "second term of a correlation", null=True),
    _c("kind", S, rule="isin:sd|cor|sigma"),
    _c("estimate", F, "the ML estimate the profile is centred on"),
    _c("conf_low", F),
    _c("conf_high", F),
    _c("low_at_bound", B, "the lower limit is the edge of the space (0 or -1)"),
    _c("high_at_bound", B, "the upper limit is the edge of the space (1)"),
    _c("level", F, rule="p"),
    _c("criterion", S, 'always "ML" (as lme4)'),
)
_BOOTSTRAP_COLUMNS = (
    _c("statistic", S),
    _c("estimate", F, "the statistic on the original fit(s)", null=True),
    _c("boot_mean", F, null=True),
    _c("boot_std_error", F, "SD of the replicates", null=True, rule=">=0"),
    _c("conf_low", F, "percentile interval", null=True),
    _c("conf_high", F, null=True),
    _c("level", F, rule="p"),
    _c("replicates", N, "requested", rule=">=1"),
    _c("used", N, "replicates with a finite value", rule=">=0"),
    _c("failed", N, "refits that raised an error", rule=">=0"),
    _c("not_converged", N, rule=">=0"),
    _c("singular", N, rule=">=0"),
    _c("seed", N, rule=">=0"),
    _c("method", S),
)
_EFFECT_SIZE_COLUMNS = (
    _c("quantity", S, rule="isin:change over the study|status"),
    _c("group", S, "the level compared with the reference"),
    _c("reference", S),
    _c("time_from", F, "change: baseline; status: the time (original units)"),
    _c("time_to", F, "change: end of the study; status: the time (original units)"),
    _c("difference", F, "model-implied, outcome units"),
    _c("std_error", F, rule=">=0"),
    _c("df", F, "Satterthwaite", rule=">=0"),
    _c("conf_low", F),
    _c("conf_high", F),
    _c("sd", F, "the standardiser", rule=">=0"),
    _c("sd_definition", S, "which SD, in words"),
    _c("effect_size", F, "difference / sd"),
    _c("es_conf_low", F),
    _c("es_conf_high", F),
    _c("interval_method", S),
)
_MEANS_COLUMNS = (
    _c("occasion", F, "the time of the occasion (original units)"),
    _c("n", N, "rows observed at this occasion", rule=">=1"),
    _c("observed_mean", F),
    _c("observed_std_error", F, "sd / sqrt(n)", null=True, rule=">=0"),
    _c("model_mean", F, "mean of the fixed-part predictions X beta of the same rows"),
)
UNCERTAINTY_TABLES: tuple[Table, ...] = (
    Table(
        "effect_sizes",
        "Feingold (2009) standardized group differences: the model-implied difference in change "
        "over the study and in status, divided by the baseline SD (stated); no rows without a group",
        (_SEQ, *_EFFECT_SIZE_COLUMNS),
        interval=True,
    ),
    Table(
        "variance_intervals",
        "profile-likelihood 95% intervals (ML, as lme4's confint) of the SDs, correlations and "
        "residual SD",
        (_SEQ, *_PROFILE_COLUMNS),
        interval=True,
        optional='[analysis] profile = "key" or "all"',
    ),
    Table(
        "bootstrap",
        "parametric bootstrap (seeded) percentile intervals of the ICC, pseudo-R^2 and d",
        (_SEQ, *_BOOTSTRAP_COLUMNS),
        interval=True,
        optional="[analysis] bootstrap > 0",
    ),
    Table(
        "dropout",
        "completers against dropouts (baseline status, covariates, rate of change) and the "
        "pattern-mixture model; no rows when nobody (or everybody) dropped out",
        (
            _c("check", S, "what is compared"),
            _c(
                "kind",
                S,
                rule="isin:baseline status|covariate|rate of change|pattern mixture",
            ),
            _c("test", S),
            _c("n_completers", N, rule=">=0"),
            _c("n_dropouts", N, rule=">=0"),
            _c("mean_completers", F, null=True),
            _c("mean_dropouts", F, null=True),
            _c("difference", F, "dropouts - completers; the coefficient for model rows", null=True),
            _c("statistic", F, null=True),
            _c("df", F, null=True),
            _c("p_value", F, "unadjusted", null=True, rule="p"),
        ),
    ),
    Table(
        "dropout_summary",
        "what the dropout checks show, in one sentence (never more than consistent with MAR)",
        (
            _c("persons", N, rule=">=0"),
            _c("completers", N, rule=">=0"),
            _c("dropouts", N, rule=">=0"),
            _c("sentence", S),
        ),
    ),
    Table(
        "functional_form",
        "likelihood-ratio test (ML) of the key model's polynomial in time against the saturated "
        "means model (time as categories, same random part)",
        (
            _c("model", S, rule="isin:polynomial|saturated means"),
            _c("formula", S),
            _c("npar", N, rule=">=1"),
            _c("loglik", F, "ML"),
            _c("deviance", F),
            _c("chisq", F, null=True, rule=">=0"),
            _c("df", N, null=True, rule=">=1"),
            _c("p_value", F, null=True, rule="p"),
        ),
    ),
    Table(
        "implied_means",
        "observed and model-implied (fixed-part) means per occasion, growth and key model",
        (_SEQ, *_MEANS_COLUMNS),
    ),
    Table(
        "r2_y_yhat",
        "Singer & Willett's R^2 of y and y-hat: squared correlation of y and X beta",
        (
            _SEQ,
            _c("formula", S),
            _c("r2_y_yhat", F, rule="p"),
            _c("nobs", N, rule=">=1"),
        ),
    ),
    Table(
        "between_person_variance",
        "test of tau00 = 0 in the unconditional means model (ML against OLS; 50:50 mixture of "
        "chi^2_0 and chi^2_1)",
        (
            _c("outcome", S),
            _c("tau00", F, "ML between-person variance", rule=">=0"),
            _c("sigma2", F, "ML within-person variance", rule=">=0"),
            _c("loglik_mixed", F),
            _c("loglik_ols", F),
            _c("chisq", F, rule=">=0"),
            _c("df", S, '"0:1 mixture"'),
            _c("p_value", F, rule="p"),
        ),
    ),
    Table(
        "influence",
        "leave-one-person-out refits of the key model: Cook's distance of the fixed effects "
        "and the change of every variance component (a seeded sample beyond the cap)",
        (
            _c("person", S),
            _c("n_obs", N, rule=">=1"),
            _c("cooks_distance", F, "divided by p", null=True, rule=">=0"),
            _c("group", S, 'VarCorr group; "Residual" for sigma^2'),
            _c("term1", S, null=True),
            _c("term2", S, null=True),
            _c("variance", F),
            _c("variance_without", F, null=True),
            _c("change", F, null=True),
            _c("converged", B),
        ),
        optional="[analysis] influence > 0",
    ),
    Table(
        "within_between",
        "within- and between-person effects of each time-varying covariate (person-mean "
        "centring) beside the pooled effect; no rows without time covariates",
        (
            _c("effect", S, rule="isin:within|between|contextual (between - within)|pooled"),
            _c("term", S),
            _c("estimate", F),
            _c("std_error", F, rule=">=0"),
            _c("df", F, "Satterthwaite", rule=">=0"),
            _c("statistic", F),
            _c("p_value", F, rule="p"),
            _c("conf_low", F),
            _c("conf_high", F),
        ),
        interval=True,
    ),
)
TABLES = (*TABLES, *UNCERTAINTY_TABLES)

TABLE_NAMES: tuple[str, ...] = tuple(table.name for table in TABLES)
ALWAYS: tuple[str, ...] = tuple(table.name for table in TABLES if not table.optional)
"""The tables every analysis produces (the others only when the study asks for them)."""
_BY_NAME = {table.name: table for table in TABLES}


def columns(name: str) -> dict[str, pl.DataType]:
    """The polars schema of table ``name`` (column -> dtype, in order)."""
    return {column.name: column.dtype for column in _BY_NAME[name].columns}  # type: ignore[misc]


def _checks(rule: str | None) -> list[pa.Check] | None:
    if rule is None:
        return None
    if rule == "p":
        return [pa.Check.in_range(0.0, 1.0)]
    if rule.startswith(">="):
        return [pa.Check.ge(float(rule[2:]))]
    if rule.startswith("isin:"):
        return [pa.Check.isin(rule[5:].split("|"))]
    raise ValueError(f"unknown column rule {rule!r}")


def _ordered_interval(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(
        pl.col("conf_low").is_null()
        | pl.col("conf_high").is_null()
        | (pl.col("conf_low") <= pl.col("conf_high"))
    )


_INTERVAL = pa.Check(_ordered_interval, name="conf_low <= conf_high")


def _schema(table: Table) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            column.name: pa.Column(
                column.dtype, checks=_checks(column.rule), nullable=column.nullable
            )
            for column in table.columns
        },
        name=table.name,
        strict=True,
        ordered=True,
        checks=[_INTERVAL] if table.interval else None,
    )


TABLE_SCHEMAS: dict[str, pa.DataFrameSchema] = {table.name: _schema(table) for table in TABLES}


def validate_tables(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Validate every table; an unknown table name is an error. Returned in ``TABLE_NAMES`` order."""
    unknown = sorted(set(tables) - set(TABLE_SCHEMAS))
    if unknown:
        raise KeyError(
            f"no schema for the analysis table(s) {unknown}; add them to schemas/tables.py"
        )
    return {
        name: TABLE_SCHEMAS[name].validate(tables[name]) for name in TABLE_NAMES if name in tables
    }


def _column_text(column: Column) -> str:
    text = column.name
    if column.nullable:
        text += "?"
    return text


def contract_markdown() -> str:
    """The Markdown table of ``docs/CONTRACTS.md`` ("Analysis"): every table and its columns.

    A ``?`` after a column name: the column may be null.
    """
    lines = ["| table | columns | meaning |", "|---|---|---|"]
    for table in TABLES:
        names = ", ".join(_column_text(column) for column in table.columns)
        when = f" (only with {table.optional})" if table.optional else ""
        lines.append(f"| `{table.name}` | {names} | {table.meaning}{when} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(contract_markdown(), end="")
