"""Validation, issue 15: exact duplicates, bounds, extreme values, decimal commas, messages that
say what was found, and `growth validate` agreeing with `growth run` on models."""

from __future__ import annotations

import warnings
from pathlib import Path

import polars as pl
import pytest
from test_validate import STUDY, config, reasons_by_row, run

from flows.cli import main
from pipeline.analysis import analyse
from pipeline.config import load_config, parse_config
from pipeline.io import load_data
from pipeline.reshape import split_levels
from pipeline.validate import StudyLimitError, check_models, validate_data

ROOT = Path(__file__).resolve().parents[1]


def test_exact_duplicates_keep_one_copy_conflicting_ones_stay_quarantined(tmp_path):
    csv = (
        "id,cog,age,trt\n"
        "1,100,1,N\n"  # line 2: kept
        "1,100,1,N\n"  # line 3: exact copy of line 2
        "1,100,1,N\n"  # line 4: exact copy of line 2
        "2,90,1,Y\n"  # line 5: conflicts with line 6
        "2,91,1,Y\n"  # line 6
        "3,80,1,N\n"
    )
    result = run(tmp_path, csv)
    assert reasons_by_row(result) == {
        2: "exact duplicate of line 2",
        3: "exact duplicate of line 2",
        4: "duplicate of person 2 at time 1 (lines 5, 6)",
        5: "duplicate of person 2 at time 1 (lines 5, 6)",
    }
    assert result.valid.get_column("_line").to_list() == [2, 7]
    assert ("exact duplicate of an earlier row", 2) in result.reasons.rows()


def test_blank_lines_are_skipped_not_quarantined(tmp_path):
    result = run(tmp_path, "id,cog,age,trt\n1,100,1,N\n\n\n2,90,1,Y\n")
    assert (result.rows_in, result.rows_used, result.rows_quarantined) == (2, 2, 0)
    assert result.blank_lines == 2 and result.file_rows == 2


def test_a_100000_character_id_or_label_is_quarantined_with_a_short_reason(tmp_path):
    long_id, long_label = "x" * 100_000, "L" * 100_000
    csv = f"id,cog,age,trt,site\n1,100,1,N,a\n{long_id},90,1,Y,a\n2,80,1,N,{long_label}\n"
    result = run(tmp_path, csv, time_covariates='["site"]')
    reasons = reasons_by_row(result)
    assert reasons[2] == (
        "person id (id) 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (100000 characters)' is "
        "longer than 200 characters ([limits] max_label_length; raise it in the config if the "
        "study needs longer)"
    )
    assert reasons[3].startswith("time-varying covariate site 'LLLL")
    assert "is longer than 200 characters" in reasons[3]
    assert max(len(reason) for reason in reasons.values()) < 300
    assert result.valid.get_column("id").to_list() == ["1"]


def test_the_label_limit_can_be_raised(tmp_path):
    csv = f"id,cog,age,trt\n{'x' * 300},90,1,Y\n"
    (tmp_path / "data.csv").write_text(csv)
    text = STUDY.format(fraction=1.0, extra="", time_covariates="[]") + (
        "\n[limits]\nmax_label_length = 1000\n"
    )
    cfg = parse_config(text, path=tmp_path / "study.toml")
    assert validate_data(load_data(cfg), cfg).rows_quarantined == 0


def test_extreme_outcome_is_a_clear_reason_without_warnings(tmp_path):
    csv = "id,cog,age,trt\n1,1e300,1,N\n1,2,2,N\n2,-3e120,1,Y\n2,4,2,Y\n3,5,1e40,N\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run(tmp_path, csv)
    reasons = reasons_by_row(result)
    assert reasons[1] == (
        "outcome (cog) '1e300' is larger than 1e+100 in absolute value: its square would "
        "overflow in the fit; rescale it (e.g. to thousands or millions of its unit)"
    )
    assert reasons[3].startswith("outcome (cog) '-3e120' is larger than 1e+100")
    assert reasons[5].startswith("time (age) '1e40' is larger than 1e+30 in absolute value")
    assert (
        "outcome (cog) is larger than 1e+100 in absolute value: rescale the outcome (e.g. "
        "to thousands or millions of its unit)",
        2,
    ) in result.reasons.rows()


def test_extreme_outcome_everywhere_is_a_one_line_validate_error(tmp_path, capsys, make_study):
    data = "id,cog,age,trt\n" + "".join(
        f"{p},{(p + t) * 1e300},{t},N\n" for p in range(1, 20) for t in (1, 2, 3)
    )
    config_path = make_study(data=data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["validate", str(config_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no valid rows" in err[0] and "rescale the outcome" in err[0]


def test_decimal_comma_gets_a_hint_and_can_be_read(tmp_path):
    (tmp_path / "data.csv").write_text("id;cog;age;trt\n1;12,5;1;N\n1;13;2;N\n")
    text = STUDY.format(fraction=1.0, extra='csv_separator = ";"', time_covariates="[]")
    cfg = parse_config(text, path=tmp_path / "study.toml")
    result = validate_data(load_data(cfg), cfg)
    assert reasons_by_row(result) == {
        1: "outcome (cog) '12,5' is not a number (a decimal comma? set [data] decimal_comma = "
        'true, with a csv_separator other than ",", e.g. ";")'
    }
    text = STUDY.format(
        fraction=1.0, extra='csv_separator = ";"\ndecimal_comma = true', time_covariates="[]"
    )
    cfg = parse_config(text, path=tmp_path / "study.toml")
    result = validate_data(load_data(cfg), cfg)
    assert result.valid.get_column("cog").to_list() == [12.5, 13.0]


def test_undeclared_levels_say_which_values_were_found(tmp_path):
    csv = "id,cog,age,trt\n1,1,1,yes\n2,2,1,no\n3,3,1,no\n4,4,1,N\n"
    result = run(tmp_path, csv)
    assert result.reasons.rows() == [
        (
            "person-level covariate trt has undeclared level(s) 'no', 'yes' (declared in "
            "[data.categories]: N, Y)",
            3,
        )
    ]


def test_persons_removed_for_a_varying_covariate_are_named(tmp_path):
    csv = "id,cog,age,trt\n1,1,1,N\n1,2,2,Y\n2,1,1,N\n2,2,2,Y\n3,1,1,N\n3,2,2,N\n" + "".join(
        f"{p},1,1,N\n{p},2,2,Y\n" for p in range(10, 17)
    )
    result = run(tmp_path, csv)
    (reason, rows), *_ = result.reasons.rows()
    assert rows == 18
    assert reason == (
        "person-level covariate trt varies within person: every row of these persons is left "
        "out (9 person(s): 1, 2, 10, 11, 12 and 4 more)"
    )


# --- bounds ------------------------------------------------------------------------------


def _many_levels(tmp_path: Path, *, group: bool, limits: str = "") -> StudyLimitError:
    rows = "".join(f"{p},{p % 7},{t},s{p}\n" for p in range(1, 10_001) for t in (1, 2))
    (tmp_path / "data.csv").write_text("id,cog,age,site\n" + rows)
    text = (
        STUDY.format(fraction=1.0, extra="", time_covariates="[]")
        .replace('person_covariates = ["trt"]', 'person_covariates = ["site"]')
        .replace('[data.categories]\ntrt = ["N", "Y"]\n', "")
        .replace("[output]", '[models]\nintercept_predictors = ["site"]\n\n[output]')
    )
    if group:
        text = text.replace("[output]", '[comparison]\ngroup = "site"\n\n[output]')
    cfg = parse_config(text + limits, path=tmp_path / "study.toml")
    with pytest.raises(StudyLimitError) as caught:
        validate_data(load_data(cfg), cfg)
    assert caught.value.validation.rows_in == 20_000
    return caught.value


def test_a_comparison_group_with_10000_levels_is_refused(tmp_path):
    message = str(_many_levels(tmp_path, group=True))
    assert message.endswith(
        "data.csv: the comparison group site ([comparison] group) has 10,000 distinct values "
        "in the valid rows, more than the limit of 20 ([limits] max_groups); compare fewer "
        "groups (a coarser grouping) or raise the limit"
    )


def test_a_predictor_with_10000_levels_is_refused(tmp_path):
    message = str(_many_levels(tmp_path, group=False))
    assert message.endswith(
        "data.csv: the categorical predictor site has 10,000 levels in the valid rows, more "
        "than the limit of 50 ([limits] max_levels), in model 'conditional_growth'; use a "
        "coarser grouping (or model it as a higher level) or raise the limit"
    )


def test_the_fixed_effects_bound(tmp_path):
    message = str(_many_levels(tmp_path, group=False, limits="\n[limits]\nmax_levels = 20000\n"))
    assert message.endswith(
        "data.csv: model 'conditional_growth' would have up to 10,002 fixed effects, more than "
        "the limit of 200 ([limits] max_fixed_effects); simplify the formula or raise the limit"
    )


def test_validate_reports_the_bound_in_one_line(tmp_path, capsys, make_study):
    data = "id,cog,age,trt\n" + "".join(
        f"{p},{p % 5 + t},{t},g{p}\n" for p in range(1, 40) for t in (1, 1.5, 2)
    )
    config_path = make_study(data=data, replace={'[data.categories]\ntrt = ["N", "Y"]\n': ""})
    code = main(["validate", str(config_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "the comparison group trt ([comparison] group) has 39 distinct values" in err[0]
    assert "([limits] max_groups)" in err[0]


# --- validate and run agree on models -----------------------------------------------------

EXTRAS = (
    '[[models.extra]]\nname = "two_groups"\n'
    'formula = "cog ~ age1 + (1 | id) + (1 | trt)"\n\n'
    '[[models.extra]]\nname = "collinear"\n'
    'formula = "cog ~ age + age1 + (1 | id)"\n\n[comparison]'
)


def test_validate_and_run_agree_on_every_model(capsys, make_study):
    # two grouping columns (the case: whether the engine fits it depends on the
    # engine, and validate asks the engine) and a rank-deficient design (always refused)
    config_path = make_study(replace={"[comparison]": EXTRAS})
    assert main(["validate", str(config_path)]) == 0
    out = capsys.readouterr().out
    cfg = load_config(config_path)
    levels = split_levels(validate_data(load_data(cfg), cfg).valid, cfg)
    checked = check_models(levels, cfg)
    assert checked.errors == ()
    assert "collinear" in checked.models and "two_groups" in checked.models
    assert any(
        warning.startswith("model 'collinear' (cog ~ age + age1 + (1 | id)) could not be fitted:")
        and "rank deficient" in warning
        for warning in checked.warnings
    )
    for warning in checked.warnings:
        assert f"warning: {warning} (the run leaves it out)" in out
    # the run records the same failures, in the same words, and no others
    analysis = analyse(levels, cfg)
    recorded = analysis.warnings.filter(pl.col("topic") == "model failure")
    assert recorded.get_column("message").to_list() == list(checked.warnings)
    assert set(analysis.failures.get_column("model")) == {
        warning.split("'")[1] for warning in checked.warnings
    }


def test_validate_fails_only_when_no_model_can_be_fitted(tmp_path, capsys, make_study):
    # every person has one occasion: no model can be built
    data = "id,cog,age,trt\n" + "".join(f"{p},{p % 9},1,N\n" for p in range(1, 30))
    config_path = make_study(data=data)
    assert main(["validate", str(config_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        "error: no model of the study can be fitted; the first: model 'unconditional_means'"
    )


def test_validate_prints_file_rows_blank_lines_and_the_reasons_note(capsys, make_study):
    text = (ROOT / "data" / "early.csv").read_text()
    lines = text.splitlines()
    data = "\n".join([*lines[:5], "", lines[5], lines[5], *lines[6:]]) + "\n"
    assert '\n"68",103,1,"Y",0\n' in data
    data = data.replace('\n"68",103,1,"Y",0\n', '\n"68",abc,1,"Y",0\n', 1)
    config_path = make_study(data=data)
    assert main(["validate", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert "blank lines skipped: 1" in out
    assert "rows: 310 in, 308 valid, 2 quarantined" in out
    assert "1 row(s): exact duplicate of an earlier row" in out
    assert "1 row(s): outcome (cog) is not a number" in out
    assert "reasons (a row can have several, so the counts can add up to more):" in out


def test_config_fixture_is_consistent(tmp_path):
    assert config(tmp_path).limits.max_levels == 50
