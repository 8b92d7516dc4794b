"""A synthetic but realistic ReportContext for the report tests.

Data are simulated from a linear growth model with a random intercept and
slope and a two-level group that shifts status and rate of change, with
dropout. The tables of docs/CONTRACTS.md are then computed from the simulated
data with numpy (per-person least squares for the person-level parts, pooled
least squares for the fixed parts): realistic values with the right columns,
not the real mixed-model estimates, which the analysis stage computes.
Vectorised with ``np.bincount`` so that 100,000 persons take about a second.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats

from pipeline.report import ReportContext, sample_persons

WAVES = np.array([1.0, 1.5, 2.0, 2.5])
CONFIG_TEMPLATE = """[study]
name = "synthetic"
title = "{title}"

[data]
path = "synthetic.csv"
person = "id"
time = "age"
outcome = "cog"
person_covariates = ["{group}"]

[time]
name = "age1"
centre = 1.0
unit = "years"
label = "Age"

[comparison]
group = "{group}"
at_times = [1.0, 2.5]

[report]
sample_persons = 200
seed = 7
"""


def simulate_level1(*, persons: int, seed: int, labels: tuple[str, str]) -> pl.DataFrame:
    """person, time, outcome, group for ``persons`` persons at up to four waves."""
    rng = np.random.default_rng(seed)
    treated = rng.random(persons) < 0.5
    u0 = rng.normal(0.0, 9.0, persons)
    u1 = rng.normal(0.0, 4.0, persons)
    # dropout: each person stays for 1-4 waves, most for all four
    stay = rng.choice([1, 2, 3, 4], size=persons, p=[0.05, 0.1, 0.15, 0.7])
    person = np.repeat(np.arange(1, persons + 1), 4)
    wave = np.tile(np.arange(4), persons)
    keep = wave < np.repeat(stay, 4)
    person, wave = person[keep], wave[keep]
    idx = person - 1
    time = WAVES[wave]
    age1 = time - 1.0
    g = treated[idx].astype(float)
    outcome = (
        110.0
        + 6.0 * g
        + u0[idx]
        + (-15.0 + 5.0 * g + u1[idx]) * age1
        + rng.normal(0, 8.0, idx.size)
    )
    group = np.where(treated[idx], labels[1], labels[0])
    return pl.DataFrame({"person": person, "time": time, "outcome": outcome, "group": group})


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int]:
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    df = x.shape[0] - x.shape[1]
    sigma2 = float(resid @ resid) / df
    vcov = sigma2 * np.linalg.inv(x.T @ x)
    return beta, vcov, sigma2, df


def _per_person(level1: pl.DataFrame) -> dict[str, np.ndarray]:
    """Per-person least-squares intercept and slope (on age1) and their SEs."""
    idx = level1["person"].to_numpy() - 1
    n_persons = int(idx.max()) + 1
    t = level1["time"].to_numpy() - 1.0
    y = level1["outcome"].to_numpy()
    n = np.bincount(idx, minlength=n_persons).astype(float)
    st, sy = np.bincount(idx, t, n_persons), np.bincount(idx, y, n_persons)
    stt, sty = np.bincount(idx, t * t, n_persons), np.bincount(idx, t * y, n_persons)
    sxx = stt - st**2 / np.maximum(n, 1)
    slope = np.where(
        sxx > 1e-12, (sty - st * sy / np.maximum(n, 1)) / np.where(sxx > 0, sxx, 1), 0.0
    )
    intercept = sy / np.maximum(n, 1) - slope * st / np.maximum(n, 1)
    fitted = intercept[idx] + slope[idx] * t
    return {
        "n": n,
        "intercept": intercept,
        "slope": slope,
        "sxx": sxx,
        "fitted": fitted,
        "residual": y - fitted,
    }


def _qq(values: np.ndarray) -> np.ndarray:
    ranks = stats.rankdata(values, method="ordinal")
    return stats.norm.ppf((ranks - 0.5) / values.size)


def descriptives(level1: pl.DataFrame) -> dict[str, pl.DataFrame]:
    per_person = level1.group_by("person").agg(pl.len().alias("n_occasions"))
    persons = per_person.height
    summary = pl.DataFrame(
        {
            "persons": [persons],
            "occasions": [level1.height],
            "occasions_with_outcome": [level1.height],
            "mean_occasions": [per_person["n_occasions"].mean()],
            "min_occasions": [per_person["n_occasions"].min()],
            "max_occasions": [per_person["n_occasions"].max()],
        }
    )
    occasions = (
        per_person.group_by("n_occasions").agg(pl.len().alias("persons")).sort("n_occasions")
    )
    attrition = (
        level1.group_by("time")
        .agg(pl.col("person").n_unique().alias("persons"))
        .sort("time")
        .with_columns((pl.col("persons") / persons).alias("share"))
    )
    patterns = (
        per_person.with_columns(
            pl.col("n_occasions")
            .map_elements(lambda k: " ".join(["X"] * k + ["."] * (4 - k)), return_dtype=pl.String)
            .alias("pattern")
        )
        .group_by("pattern")
        .agg(pl.len().alias("persons"))
        .with_columns(
            pl.lit("1, 1.5, 2, 2.5").alias("times"), (pl.col("persons") / persons).alias("share")
        )
        .sort(["persons", "pattern"], descending=[True, False])
        .select("pattern", "times", "persons", "share")
    )
    return {
        "summary": summary,
        "occasions_per_person": occasions,
        "attrition": attrition,
        "patterns": patterns,
    }


def analysis_tables(
    level1: pl.DataFrame, *, labels: tuple[str, str], group_column: str
) -> dict[str, pl.DataFrame]:
    """The analysis tables of docs/CONTRACTS.md computed from ``level1`` with numpy."""
    t = level1["time"].to_numpy() - 1.0
    y = level1["outcome"].to_numpy()
    g = (level1["group"].to_numpy() == labels[1]).astype(float)
    persons = level1["person"].n_unique()
    term_g = f"{group_column}{labels[1]}"
    terms = ["(Intercept)", "age1", term_g, f"age1:{term_g}"]
    x = np.column_stack([np.ones_like(t), t, g, t * g])
    beta, vcov, sigma2, df_resid = _ols(x, y)
    se = np.sqrt(np.diag(vcov))
    df_sat = np.array([persons - 2.0, persons * 0.9, persons - 2.0, persons * 0.9])
    tstat = beta / se
    p = 2 * stats.t.sf(np.abs(tstat), df_sat)
    q = stats.t.ppf(0.975, df_sat)
    pp = _per_person(level1)
    full = pp["n"] >= 2
    tau00, tau11 = float(np.var(pp["intercept"][full])), float(np.var(pp["slope"][full]))
    sigma_w2 = float(np.mean(pp["residual"] ** 2)) * 2.0
    fixed = pl.DataFrame(
        {
            "model": ["conditional"] * 4,
            "term": terms,
            "estimate": beta,
            "std_error": se,
            "df": df_sat,
            "statistic": tstat,
            "p_value": p,
            "conf_low": beta - q * se,
            "conf_high": beta + q * se,
        }
    )
    means_model = pl.DataFrame(
        {
            "model": ["means"],
            "term": ["(Intercept)"],
            "estimate": [float(y.mean())],
            "std_error": [float(y.std() / np.sqrt(persons))],
            "df": [persons - 1.0],
            "statistic": [float(y.mean() / (y.std() / np.sqrt(persons)))],
            "p_value": [1e-300],
            "conf_low": [float(y.mean()) - 2.0],
            "conf_high": [float(y.mean()) + 2.0],
        }
    )
    variance = pl.DataFrame(
        {
            "model": ["means", "means", *(["conditional"] * 4)],
            "group": ["id", "Residual", "id", "id", "id", "Residual"],
            "term1": ["(Intercept)", None, "(Intercept)", "age1", "(Intercept)", None],
            "term2": [None, None, None, None, "age1", None],
            "variance": [tau00 + tau11, sigma_w2 + tau11, tau00, tau11, None, sigma_w2],
            "sd_cor": [
                np.sqrt(tau00 + tau11),
                np.sqrt(sigma_w2 + tau11),
                np.sqrt(tau00),
                np.sqrt(tau11),
                -0.12,
                np.sqrt(sigma_w2),
            ],
        }
    )
    loglik = -0.5 * y.size * (np.log(2 * np.pi * sigma2) + 1)
    model_fit = pl.DataFrame(
        {
            "model": ["means", "conditional"],
            "formula": [
                "cog ~ 1 + (1 | id)",
                f"cog ~ age1 * {group_column} + (age1 | id)",
            ],
            "nobs": [y.size, y.size],
            "ngroups": [persons, persons],
            "npar": [3, 8],
            "loglik": [loglik - 400.0, loglik],
            "aic": [-2 * (loglik - 400.0) + 6, -2 * loglik + 16],
            "bic": [-2 * (loglik - 400.0) + 3 * np.log(y.size), -2 * loglik + 8 * np.log(y.size)],
            "reml": [True, True],
            "converged": [True, True],
            "singular": [False, True],
            "optimizer": ["L-BFGS-B", "L-BFGS-B"],
            "evaluations": [14, 61],
            "max_abs_gradient": [3.2e-7, 8.1e-6],
        }
    )
    comparison = pl.DataFrame(
        {
            "model": ["means", "conditional"],
            "npar": [3, 8],
            "deviance": [-2 * (loglik - 400.0), -2 * loglik],
            "aic": model_fit["aic"],
            "bic": model_fit["bic"],
            "chisq": [None, 800.0],
            "df": [None, 5],
            "p_value": [None, float(stats.chi2.sf(800.0, 5))],
            "test": [None, "LRT, 50:50 mixture chi2(1):chi2(2)"],
            "against": [None, "means"],
        }
    )
    icc_value = (tau00 + tau11) / (tau00 + tau11 + sigma_w2)
    icc = pl.DataFrame(
        {
            "model": ["means"],
            "between_variance": [tau00 + tau11],
            "within_variance": [sigma_w2],
            "icc": [icc_value],
            "conf_low": [icc_value - 0.05],
            "conf_high": [icc_value + 0.05],
            "interpretation": [
                f"{100 * icc_value:.0f}% of the outcome's variance lies between persons"
            ],
        }
    )
    explained = pl.DataFrame(
        {
            "model": ["conditional", "conditional"],
            "reference": ["growth", "growth"],
            "component": ["(Intercept)", "age1"],
            "reference_variance": [tau00 * 1.1, tau11 * 1.3],
            "variance": [tau00, tau11],
            "proportion_reduced": [1 - 1 / 1.1, 1 - 1 / 1.3],
        }
    )
    r2 = pl.DataFrame({"model": ["conditional"], "r2_marginal": [0.21], "r2_conditional": [0.74]})
    equations = pl.DataFrame(
        {
            "model": ["conditional"] * 3,
            "level": ["Level 1", "Level 2", "Level 2"],
            "equation": [
                "cog_ij = π0i + π1i·age1_ij + ε_ij",
                f"π0i = γ00 + γ01·{group_column}_i + ζ0i",
                f"π1i = γ10 + γ11·{group_column}_i + ζ1i",
            ],
        }
    )
    ratio = np.array([0.62, 1.35, 0.64, 1.31])
    ols_vs_mlm = pl.DataFrame(
        {
            "model": ["conditional"] * 4,
            "term": terms,
            "estimate_ols": beta,
            "se_ols": se * ratio,
            "p_ols": p / 3,
            "se_cluster": se * 1.02,
            "p_cluster": p,
            "estimate_mlm": beta,
            "se_mlm": se,
            "p_mlm": p,
            "se_ratio": ratio,
            "flag": ["OLS SE too small", "", "OLS SE too small", ""],
        }
    )
    sample_size = pl.DataFrame(
        {
            "check": ["persons", "occasions per person", "persons per group"],
            "value": [float(persons), float(y.size / persons), float(persons / 2)],
            "threshold": [30.0, 3.0, 20.0],
            "status": ["ok", "ok", "ok"],
            "message": ["enough persons", "enough occasions", "enough persons per group"],
        }
    )
    shapiro_p = 0.31
    assumptions = pl.DataFrame(
        {
            "check": ["residual normality", "random-effect normality", "homoscedasticity"],
            "statistic": [0.998, 0.995, 1.04],
            "p_value": [shapiro_p, 0.12, 0.0004],
            "verdict": ["no evidence against", "no evidence against", "variance differs by wave"],
        }
    )
    rel_int = tau00 / (tau00 + float(np.mean(sigma_w2 / np.maximum(pp["n"], 1))))
    reliability = pl.DataFrame(
        {
            "coefficient": ["(Intercept)", "age1"],
            "reliability": [rel_int, 0.41],
            "chisq": [float(persons) * 3.1, float(persons) * 1.4],
            "df": [persons - 2, persons - 2],
            "p_value": [1e-12, 2e-4],
        }
    )
    grid = np.linspace(WAVES[0], WAVES[-1], 16)
    traj_rows = []
    for gv, label in ((0.0, labels[0]), (1.0, labels[1])):
        xg = np.column_stack(
            [np.ones_like(grid), grid - 1.0, np.full_like(grid, gv), (grid - 1.0) * gv]
        )
        est = xg @ beta
        sg = np.sqrt(np.einsum("ij,jk,ik->i", xg, vcov, xg))
        traj_rows.append(
            pl.DataFrame(
                {
                    "group": label,
                    "time": grid,
                    "estimate": est,
                    "std_error": sg,
                    "conf_low": est - 1.96 * sg,
                    "conf_high": est + 1.96 * sg,
                }
            )
        )
    trajectories = pl.concat(traj_rows)
    differences = pl.DataFrame(
        {
            "contrast": [f"{labels[1]} - {labels[0]}"] * 3,
            "quantity": ["status at t", "status at t", "rate of change"],
            "time": [1.0, 2.5, None],
            "estimate": [beta[2], beta[2] + 1.5 * beta[3], beta[3]],
            "std_error": [se[2], se[2] * 1.2, se[3]],
            "df": [df_sat[2], df_sat[2], df_sat[3]],
            "p_value": [p[2], p[2] / 2, p[3]],
            "p_holm": [min(1.0, 3 * p[2]), min(1.0, 2 * p[2]), p[3]],
            "conf_low": [
                beta[2] - 2 * se[2],
                beta[2] + 1.5 * beta[3] - 2.4 * se[2],
                beta[3] - 2 * se[3],
            ],
            "conf_high": [
                beta[2] + 2 * se[2],
                beta[2] + 1.5 * beta[3] + 2.4 * se[2],
                beta[3] + 2 * se[3],
            ],
        }
    )
    residuals = pl.DataFrame(
        {
            "person": level1["person"],
            "time": level1["time"],
            "fitted": pp["fitted"],
            "residual": pp["residual"],
            "qq_theoretical": _qq(pp["residual"]),
        }
    )
    ids = np.arange(1, pp["n"].size + 1)
    re_parts = []
    for term, values, var in (
        ("(Intercept)", pp["intercept"] - beta[0], sigma_w2 / np.maximum(pp["n"], 1)),
        ("age1", pp["slope"] - beta[1], sigma_w2 / np.maximum(pp["sxx"], 0.25)),
    ):
        shrink = 0.7 * values
        sd = np.sqrt(var) * 0.6
        re_parts.append(
            pl.DataFrame(
                {
                    "person": ids,
                    "term": term,
                    "estimate": shrink,
                    "std_error": sd,
                    "conf_low": shrink - 1.96 * sd,
                    "conf_high": shrink + 1.96 * sd,
                    "qq_theoretical": _qq(shrink),
                }
            )
        )
    random_effects = pl.concat(re_parts)
    observed = (
        level1.group_by("group", "time")
        .agg(
            pl.col("outcome").mean().alias("mean"),
            (pl.col("outcome").std() / pl.len().sqrt()).alias("std_error"),
            pl.len().alias("n"),
        )
        .sort("group", "time")
    )
    extra = uncertainty_tables(level1, x=x, beta=beta, vcov=vcov, df=df_sat, labels=labels)
    return {
        **extra,
        "fixed_effects": pl.concat([means_model, fixed]),
        "variance_components": variance,
        "model_fit": model_fit,
        "model_comparison": comparison,
        "icc": icc,
        "variance_explained": explained,
        "r2": r2,
        "level_equations": equations,
        "ols_vs_mlm": ols_vs_mlm,
        "sample_size": sample_size,
        "assumptions": assumptions,
        "reliability": reliability,
        "group_trajectories": trajectories,
        "group_differences": differences,
        "residuals": residuals,
        "random_effects": random_effects,
        "observed_means": observed,
        "likelihood_ratio_tests": pl.DataFrame(
            {
                "model": ["conditional"],
                "against": ["means"],
                "chisq": [800.0],
                "df": [5],
                "p_value": [float(stats.chi2.sf(800.0, 5))],
                "reference": ["50:50 mixture chi2(4):chi2(5)"],
                "hypothesis": [
                    "fixed effect(s) age1 = 0; variance of the random effect(s) age1 = 0"
                ],
            }
        ),
        "icc_by_time": pl.DataFrame(
            {
                "model": ["growth"] * 2,
                "occasion": ["1", "2"],
                "time": [1.0, 2.0],
                "between_variance": [tau00, tau00 + tau11],
                "within_variance": [sigma_w2, sigma_w2],
                "icc": [tau00 / (tau00 + sigma_w2), (tau00 + tau11) / (tau00 + tau11 + sigma_w2)],
            }
        ),
        "residual_variance_by_time": observed.group_by("time")
        .agg(pl.col("n").sum().cast(pl.Int64))
        .sort("time")
        .select(
            pl.col("time").cast(pl.String).alias("occasion"),
            "time",
            "n",
            pl.lit(sigma_w2).alias("variance"),
        ),
    }


def uncertainty_tables(
    level1: pl.DataFrame,
    *,
    x: np.ndarray,
    beta: np.ndarray,
    vcov: np.ndarray,
    df: np.ndarray,
    labels: tuple[str, str],
) -> dict[str, pl.DataFrame]:
    """The tables of the "Uncertainty and checks" section, from the pooled least squares
    fit ``beta`` of ``x`` (columns 1, t, g, t g): Feingold's d with the pooled baseline SD,
    observed and implied means, R^2 of y and y-hat, the completers-dropouts check on
    baseline status, and illustrative profile, bootstrap and influence rows."""
    t = level1["time"].to_numpy() - 1.0
    y = level1["outcome"].to_numpy()
    g = x[:, 2]
    base = t == 0
    pooled = [y[base & (g == k)] for k in (0.0, 1.0)]
    sd = float(
        np.sqrt(sum(((v - v.mean()) ** 2).sum() for v in pooled) / sum(v.size - 1 for v in pooled))
    )
    end = float(t.max())
    rows = []
    for quantity, t0, t1, L in (
        ("change over the study", 0.0, end, np.array([0.0, 0.0, 0.0, end])),
        ("status", 0.0, 0.0, np.array([0.0, 0.0, 1.0, 0.0])),
        ("status", end, end, np.array([0.0, 0.0, 1.0, end])),
    ):
        est, se = float(L @ beta), float(np.sqrt(L @ vcov @ L))
        half = float(stats.t.ppf(0.975, df[3])) * se
        rows.append(
            {
                "model": "conditional",
                "quantity": quantity,
                "group": labels[1],
                "reference": labels[0],
                "time_from": t0 + 1.0,
                "time_to": t1 + 1.0,
                "difference": est,
                "std_error": se,
                "df": float(df[3]),
                "conf_low": est - half,
                "conf_high": est + half,
                "sd": sd,
                "sd_definition": "pooled within-group SD of the observed outcome at baseline",
                "effect_size": est / sd,
                "es_conf_low": (est - half) / sd,
                "es_conf_high": (est + half) / sd,
                "interval_method": "t interval of the difference / SD; the SD treated as fixed",
            }
        )
    yhat = x @ beta
    means = (
        pl.DataFrame({"occasion": t + 1.0, "y": y, "yhat": yhat})
        .group_by("occasion")
        .agg(
            pl.len().alias("n"),
            pl.col("y").mean().alias("observed_mean"),
            (pl.col("y").std() / pl.len().sqrt()).alias("observed_std_error"),
            pl.col("yhat").mean().alias("model_mean"),
        )
        .sort("occasion")
        .with_columns(pl.lit("conditional").alias("model"))
        .select("model", "occasion", "n", "observed_mean", "observed_std_error", "model_mean")
    )
    last = level1.group_by("person").agg(pl.col("time").max().alias("last"))
    dropped = set(last.filter(pl.col("last") < level1["time"].max())["person"].to_list())
    first = level1.filter(pl.col("time") == level1["time"].min())
    is_drop = first["person"].is_in(list(dropped)).to_numpy()
    a, b = first["outcome"].to_numpy()[~is_drop], first["outcome"].to_numpy()[is_drop]
    welch = stats.ttest_ind(b, a, equal_var=False)
    persons = last.height
    influence_people = last["person"].sort().head(30).to_list()
    return {
        "effect_sizes": pl.DataFrame(rows),
        "implied_means": means,
        "r2_y_yhat": pl.DataFrame(
            {
                "model": ["conditional"],
                "formula": ["cog ~ age1 * trt + (age1 | id)"],
                "r2_y_yhat": [float(np.corrcoef(y, yhat)[0, 1] ** 2)],
                "nobs": [y.size],
            }
        ),
        "dropout": pl.DataFrame(
            {
                "check": ["cog at the first occasion (age1 = 0)"],
                "kind": ["baseline status"],
                "test": ["Welch t"],
                "n_completers": [a.size],
                "n_dropouts": [b.size],
                "mean_completers": [float(a.mean())],
                "mean_dropouts": [float(b.mean())],
                "difference": [float(b.mean() - a.mean())],
                "statistic": [float(welch.statistic)],
                "df": [float(welch.df)],
                "p_value": [float(welch.pvalue)],
            }
        ),
        "dropout_summary": pl.DataFrame(
            {
                "persons": [persons],
                "completers": [persons - len(dropped)],
                "dropouts": [len(dropped)],
                "sentence": [
                    "Completers and dropouts did not differ detectably: this is consistent with "
                    "data missing at random, though no test of the observed data can show that they are."
                ],
            }
        ),
        "variance_intervals": pl.DataFrame(
            {
                "model": ["conditional"] * 2,
                "parameter": [".sig01", ".sigma"],
                "group": ["id", "Residual"],
                "term1": ["(Intercept)", None],
                "term2": [None, None],
                "kind": ["sd", "sigma"],
                "estimate": [9.0, 5.0],
                "conf_low": [7.9, 4.6],
                "conf_high": [10.3, 5.5],
                "low_at_bound": [False, False],
                "high_at_bound": [False, False],
                "level": [0.95, 0.95],
                "criterion": ["ML", "ML"],
            },
            schema_overrides={"term1": pl.String, "term2": pl.String},
        ),
        "bootstrap": pl.DataFrame(
            {
                "model": ["means"],
                "statistic": ["ICC (unconditional means model)"],
                "estimate": [0.45],
                "boot_mean": [0.45],
                "boot_std_error": [0.05],
                "conf_low": [0.35],
                "conf_high": [0.55],
                "level": [0.95],
                "replicates": [200],
                "used": [200],
                "failed": [0],
                "not_converged": [0],
                "singular": [0],
                "seed": [7],
                "method": ["parametric bootstrap, percentile interval"],
            }
        ),
        "influence": pl.DataFrame(
            {
                "person": [str(p) for p in influence_people],
                "n_obs": [4] * len(influence_people),
                "cooks_distance": [0.01 * (i % 7) for i in range(len(influence_people))],
                "group": ["Residual"] * len(influence_people),
                "term1": [None] * len(influence_people),
                "term2": [None] * len(influence_people),
                "variance": [25.0] * len(influence_people),
                "variance_without": [25.0 - 0.1 * (i % 5) for i in range(len(influence_people))],
                "change": [-0.1 * (i % 5) for i in range(len(influence_people))],
                "converged": [True] * len(influence_people),
            },
            schema_overrides={"term1": pl.String, "term2": pl.String},
        ),
    }


def synthetic_context(
    *,
    persons: int = 120,
    seed: int = 7,
    title: str = "Synthetic growth study",
    labels: tuple[str, str] = ("control", "treated"),
    group_column: str = "trt",
    reason: str = "outcome is not a number",
    timestamp: str | None = None,
) -> ReportContext:
    """A complete ReportContext for ``persons`` simulated persons."""
    level1 = simulate_level1(persons=persons, seed=seed, labels=labels)
    desc = descriptives(level1)
    quarantined = max(1, level1.height // 200)
    return ReportContext(
        title=title,
        study_name="synthetic",
        description="Simulated data: linear growth, random intercept and slope, dropout.",
        config_text=CONFIG_TEMPLATE.format(title=title, group=group_column),
        data_file="synthetic.csv",
        data_sha256="9f2c" * 16,
        rows_in=level1.height + quarantined,
        rows_used=level1.height,
        rows_quarantined=quarantined,
        reasons=pl.DataFrame({"reason": [reason], "rows": [quarantined]}),
        quarantine_file="quarantine.csv",
        summary=desc["summary"],
        occasions_per_person=desc["occasions_per_person"],
        attrition=desc["attrition"],
        patterns=desc["patterns"],
        level1_sample=sample_persons(level1, person_col="person", n=200, seed=seed),
        sample_seed=seed,
        time_label="Age",
        time_unit="years",
        outcome_label="Cognitive score",
        outcome_unit="points",
        group_name=group_column,
        warnings=pl.DataFrame(
            {
                "severity": ["warning", "note"],
                "topic": ["boundary fit", "time coding"],
                "message": [
                    "Model conditional is singular: the intercept-slope correlation is at the boundary.",
                    "Time is centred at age 1 (years).",
                ],
            }
        ),
        failures=pl.DataFrame(
            {
                "model": ["quadratic"],
                "formula": [f"cog ~ (age1 + I(age1^2)) * {group_column} + (age1 + I(age1^2) | id)"],
                "error": ["ModelError: too few occasions per person for a random quadratic term"],
            }
        ),
        tables=analysis_tables(level1, labels=labels, group_column=group_column),
        versions={"growthcurves": "0.1.0", "numpy": np.__version__, "polars": pl.__version__},
        timestamp=timestamp,
        person_name="id",
        time_term="age1",
        time_centre=1.0,
    )
