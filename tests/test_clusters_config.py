"""Config of nested levels: [data] clusters, cluster_covariates, ids; [models] cluster_random."""

from __future__ import annotations

import pytest

from pipeline.analysis.spec import AnalysisSpec
from pipeline.config import parse_config
from pipeline.errors import ConfigError

BASE = """\
[study]
name = "c"
title = "c"

[data]
path = "data.csv"
person = "pid"
time = "t"
outcome = "y"
person_covariates = ["g"]
{data}

[time]
name = "tc"

[models]
{models}

[output]
dir = "out"
"""


def parse(data: str = "", models: str = ""):
    return parse_config(BASE.format(data=data, models=models), path="s.toml")


def message(data: str = "", models: str = "") -> str:
    with pytest.raises(ConfigError) as caught:
        parse(data, models)
    return str(caught.value)


def test_a_three_level_config_is_read_and_handed_to_the_analysis():
    cfg = parse(
        'clusters = ["classroom", "school"]\n'
        'cluster_covariates = { school = ["lowinc", "sector"], classroom = ["size"] }\n'
        'ids = "within_cluster"\n'
        'centre = { lowinc = "grand" }\n'
        '[data.categories]\nsector = ["public", "private"]',
        'intercept_predictors = ["g", "lowinc"]\nslope_predictors = ["sector"]\n'
        'cluster_random = { school = "intercept" }',
    )
    assert cfg.data.clusters == ["classroom", "school"]
    assert cfg.data.ids == "within_cluster"
    assert cfg.covariates == ["g", "size", "lowinc", "sector"]
    assert cfg.cluster_covariates == ["size", "lowinc", "sector"]
    assert cfg.data.cluster_of == {"lowinc": "school", "sector": "school", "size": "classroom"}
    spec = AnalysisSpec.from_config(cfg)
    assert spec.clusters == ("classroom", "school")
    assert spec.cluster_covariates == {"classroom": ("size",), "school": ("lowinc", "sector")}
    assert spec.cluster_random == {"classroom": "polynomial", "school": "intercept"}
    assert spec.person_key == ("school", "classroom", "pid")
    assert spec.cluster_key("classroom") == ("school", "classroom")
    assert spec.covariates == ("g", "size", "lowinc", "sector")


def test_defaults_have_no_clusters_and_unique_ids():
    cfg = parse()
    assert (cfg.data.clusters, cfg.data.cluster_covariates, cfg.data.ids) == ([], {}, "unique")
    assert cfg.models.cluster_random == {}
    spec = AnalysisSpec.from_config(cfg)
    assert (spec.clusters, spec.person_key) == ((), ("pid",))


@pytest.mark.parametrize(
    ("data", "models", "expected"),
    [
        (
            'clusters = ["school", "school"]',
            "",
            "s.toml: [data]: clusters lists 'school' more than once",
        ),
        (
            'clusters = ["pid"]',
            "",
            "s.toml: [data]: clusters names 'pid', which is also the person column; expected "
            "the column of a higher level (e.g. a school id)",
        ),
        (
            'clusters = ["t"]',
            "",
            "s.toml: [data]: clusters names 't', which is also the time column; expected the "
            "column of a higher level (e.g. a school id)",
        ),
        (
            'clusters = ["y"]',
            "",
            "s.toml: [data]: clusters names 'y', which is also the outcome column; expected the "
            "column of a higher level (e.g. a school id)",
        ),
        (
            'clusters = ["g"]',
            "",
            "s.toml: [data]: clusters names 'g', which is also listed as a covariate; a cluster "
            "id is a level, not a predictor: remove it from the covariates",
        ),
        (
            'clusters = ["school"]\ncluster_covariates = { schol = ["lowinc"] }',
            "",
            "s.toml: [data]: cluster_covariates are given for 'schol', which is not in clusters "
            "(['school']); did you mean 'school'?",
        ),
        (
            'clusters = ["school"]\ncluster_covariates = { school = ["lowinc", "lowinc"] }',
            "",
            "s.toml: [data]: cluster_covariates.school lists 'lowinc' more than once",
        ),
        (
            'clusters = ["school"]\ncluster_covariates = { school = ["g"] }',
            "",
            "s.toml: [data]: covariate 'g' is listed more than once in "
            "person_covariates/time_covariates/cluster_covariates",
        ),
        (
            'clusters = ["school"]\ncluster_covariates = { school = ["school"] }',
            "",
            "s.toml: [data]: covariate 'school' is also the cluster column; expected another column",
        ),
        (
            'ids = "within_cluster"',
            "",
            's.toml: [data]: ids = "within_cluster" needs [data] clusters (the level within '
            "which person ids are unique)",
        ),
        (
            'clusters = ["school"]\nids = "within"',
            "",
            "s.toml: [data] ids: expected one of 'unique' or 'within_cluster', got 'within'",
        ),
        (
            'clusters = ["school"]\ncluster_covariates = { school = ["lowinc"] }\n'
            'centre = { lowinc = "person" }',
            "",
            "s.toml: [data]: centre 'lowinc' is a cluster-level covariate; only \"grand\" "
            "(grand-mean centring over the clusters) is supported for it",
        ),
        (
            'clusters = ["school"]',
            'cluster_random = { schoool = "intercept" }',
            "s.toml: [models] cluster_random: 'schoool' is not in [data] clusters (['school']); "
            "did you mean 'school'?",
        ),
        (
            'clusters = ["school"]',
            'cluster_random = { school = "slope" }',
            "s.toml: [models] cluster_random.school: expected one of 'polynomial' or "
            "'intercept', got 'slope'",
        ),
        (
            'clusters = ["school"]\ncluster_covariates = { school = ["lowinc"] }',
            'intercept_predictors = ["lowinx"]',
            "s.toml: [models] intercept_predictors: 'lowinx' is not a declared covariate; "
            "expected one of ['g', 'lowinc']; did you mean 'lowinc'?",
        ),
        (
            'clusters = ["school"]\ncluster_covariates = { school = ["lowinc"] }\n'
            '[data.categories]\nsector = ["a"]',
            "",
            "s.toml: [data]: categories are given for 'sector', which is not in "
            "person_covariates, time_covariates or cluster_covariates (['g', 'lowinc'])",
        ),
        (
            'clusters = ["tc"]',
            "",
            "s.toml: [time] name: 'tc' is already a column role in [data]; expected a new name "
            "for the coded time",
        ),
    ],
)
def test_cluster_roles_are_checked_with_one_line(data, models, expected):
    assert message(data, models) == expected
