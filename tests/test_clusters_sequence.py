"""The model sequence with nested levels: lme4's random terms for both id conventions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from flows.cli import main
from pipeline.analysis.sequence import model_sequence, random_intercept_growth
from pipeline.config import parse_config
from pipeline.io import load_data
from pipeline.reshape import split_levels
from pipeline.validate import check_models, validate_data

STUDY = """\
[study]
name = "c"
title = "c"

[data]
path = "data.csv"
person = "pid"
time = "t"
outcome = "y"
person_covariates = ["g"]
clusters = {clusters}
cluster_covariates = {{ school = ["lowinc"] }}
ids = "{ids}"

[time]
name = "tc"

[models]
polynomial = {polynomial}
intercept_predictors = ["g", "lowinc"]
slope_predictors = ["lowinc"]
{models}

[output]
dir = "out"
"""


def config(*, clusters='["school"]', ids="unique", polynomial=1, models="", path=Path("s.toml")):
    text = STUDY.format(clusters=clusters, ids=ids, polynomial=polynomial, models=models)
    return parse_config(text, path=path)


def formulas(cfg, distinct_times=None) -> dict[str, str]:
    return {m.name: m.formula for m in model_sequence(cfg, distinct_times=distinct_times)}


def test_unique_ids_list_each_level_by_its_column_innermost_first():
    assert formulas(config()) == {
        "unconditional_means": "y ~ 1 + (1 | pid) + (1 | school)",
        "growth_random_intercept": "y ~ tc + (1 | pid) + (1 | school)",
        "unconditional_growth": "y ~ tc + (tc | pid) + (tc | school)",
        "conditional_growth": "y ~ tc + g + lowinc + tc:lowinc + (tc | pid) + (tc | school)",
    }


def test_ids_within_cluster_are_written_as_interactions_outermost_first():
    assert formulas(config(ids="within_cluster")) == {
        "unconditional_means": "y ~ 1 + (1 | school) + (1 | school:pid)",
        "growth_random_intercept": "y ~ tc + (1 | school) + (1 | school:pid)",
        "unconditional_growth": "y ~ tc + (tc | school) + (tc | school:pid)",
        "conditional_growth": "y ~ tc + g + lowinc + tc:lowinc + (tc | school) + (tc | school:pid)",
    }


def test_four_levels_and_a_level_restricted_to_a_random_intercept():
    cfg = config(
        clusters='["classroom", "school"]',
        ids="within_cluster",
        polynomial=2,
        models='cluster_random = { school = "intercept" }',
    )
    growth = formulas(cfg, distinct_times=4)["unconditional_growth"]
    assert growth == (
        "y ~ tc + I(tc^2) + (1 | school) + (tc + I(tc^2) | school:classroom) + "
        "(tc + I(tc^2) | school:classroom:pid)"
    )
    # three occasions: only a random linear slope can be separated, at every level
    capped = formulas(cfg, distinct_times=3)["unconditional_growth"]
    assert capped == (
        "y ~ tc + I(tc^2) + (1 | school) + (tc | school:classroom) + (tc | school:classroom:pid)"
    )
    unique = config(clusters='["classroom", "school"]', polynomial=2)
    assert formulas(unique, distinct_times=4)["unconditional_means"] == (
        "y ~ 1 + (1 | pid) + (1 | classroom) + (1 | school)"
    )
    assert random_intercept_growth(unique).formula == (
        "y ~ tc + I(tc^2) + (1 | pid) + (1 | classroom) + (1 | school)"
    )


def test_names_that_need_quoting_are_quoted_at_every_level():
    text = STUDY.format(clusters='["my school"]', ids="within_cluster", polynomial=1, models="")
    text = text.replace('cluster_covariates = { school = ["lowinc"] }', "").replace(
        ', "lowinc"]', "]"
    )
    text = text.replace('slope_predictors = ["lowinc"]', "slope_predictors = []")
    cfg = parse_config(text, path="s.toml")
    assert (
        formulas(cfg)["unconditional_means"] == "y ~ 1 + (1 | `my school`) + (1 | `my school`:pid)"
    )


def _levels(tmp_path: Path, csv: str, **options):
    (tmp_path / "data.csv").write_text(csv, encoding="utf-8")
    cfg = config(path=tmp_path / "study.toml", **options)
    result = validate_data(load_data(cfg), cfg)
    return split_levels(result.valid, cfg), cfg


def _nested_csv(*, reuse_ids: bool) -> str:
    lines = ["pid,t,y,g,school,lowinc"]
    for school in range(6):
        for pupil in range(5):
            pid = pupil if reuse_ids else school * 10 + pupil
            for t in range(3):
                y = 0.3 * school + 0.1 * pupil + (0.5 + 0.05 * school) * t + ((pupil * t) % 3) / 7
                lines.append(f"{pid},{t},{y:.4f},{pupil % 2},{school},{school * 7 % 5}")
    return "\n".join(lines) + "\n"


def test_check_models_builds_every_three_level_model(tmp_path):
    levels, cfg = _levels(tmp_path, _nested_csv(reuse_ids=True), ids="within_cluster")
    assert levels.model_frame.height == 90
    checked = check_models(levels, cfg)
    assert checked.models == (
        "unconditional_means",
        "growth_random_intercept",
        "unconditional_growth",
        "conditional_growth",
    )
    assert (checked.errors, checked.warnings) == ((), ())


def test_check_models_reports_a_model_the_engine_refuses(tmp_path):
    # pupils numbered 0-4 in every school taken as unique ids: every pupil is a mover
    # (quarantined); with the ids made unique the models build
    levels, cfg = _levels(tmp_path, _nested_csv(reuse_ids=False))
    assert check_models(levels, cfg).warnings == ()
    frame = levels.model_frame.with_columns(pl.lit(1.0).alias("lowinc"))
    broken = dataclasses.replace(levels, model_frame=frame)
    checked = check_models(broken, cfg)
    assert checked.errors == ()
    assert len(checked.warnings) == 1
    assert checked.warnings[0].startswith(
        "model 'conditional_growth' (y ~ tc + g + lowinc + tc:lowinc + (tc | pid) + (tc | school)) "
        "could not be fitted:"
    )


def test_growth_validate_passes_on_the_three_level_example(capsys):
    root = Path(__file__).resolve().parents[1]
    assert main(["validate", str(root / "config" / "egsingle.toml")]) == 0
    out = capsys.readouterr().out
    assert "rows: 7230 in, 7230 valid, 0 quarantined" in out
