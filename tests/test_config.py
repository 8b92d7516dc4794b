"""Study config: the bundled example loads; every mistake gives one line naming file, key, expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import StudyConfig, load_config, parse_config
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "early.toml"


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def example_text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


def test_bundled_example_loads_with_resolved_paths():
    cfg = load_config(EXAMPLE)
    assert isinstance(cfg, StudyConfig)
    assert cfg.study.name == "early"
    assert (cfg.data.person, cfg.data.time, cfg.data.outcome) == ("id", "age", "cog")
    assert cfg.data.person_covariates == ["trt"]
    assert cfg.data.categories == {"trt": ["N", "Y"]}
    assert (cfg.time.name, cfg.time.centre, cfg.time.scale) == ("age1", 1.0, 1.0)
    assert cfg.models.intercept_predictors == ["trt"] and cfg.models.slope_predictors == ["trt"]
    assert cfg.comparison.group == "trt" and cfg.comparison.at_times == [1.0, 1.5, 2.0]
    assert cfg.schedule is not None and cfg.schedule.cron == "0 6 * * 1"
    assert cfg.source_path == EXAMPLE
    assert cfg.source_text == example_text()
    assert cfg.data_path == ROOT / "data" / "early.csv"
    assert cfg.data_path.exists()
    assert cfg.output_dir == ROOT / "outputs" / "early"


def test_config_is_immutable():
    cfg = load_config(EXAMPLE)
    with pytest.raises(Exception, match="frozen"):
        cfg.data.person = "other"  # type: ignore[misc]


def test_relative_paths_follow_the_config_folder_not_the_working_directory(tmp_path, monkeypatch):
    folder = tmp_path / "studies"
    folder.mkdir()
    path = write(folder, example_text())
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("studies") / "study.toml")
    assert cfg.data_path == (tmp_path / "data" / "early.csv")
    assert cfg.output_dir == tmp_path / "outputs" / "early"
    assert cfg.source_path == path


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml")
    assert (
        str(caught.value)
        == f"{tmp_path / 'nope.toml'}: config file not found (looked in {tmp_path})"
    )


def test_unknown_key_is_an_error_with_the_nearest_allowed_key(tmp_path):
    message = error_for(tmp_path, example_text().replace('person = "id"', 'persn = "id"'))
    assert "[data] key 'persn' is not allowed; did you mean 'person'?" in message
    assert "Expected one of: path, format, layout, person," in message


def test_unknown_table_is_an_error_with_suggestion(tmp_path):
    message = error_for(tmp_path, example_text() + '\n[outptu]\ndir = "x"\n')
    assert "table [outptu] is not allowed; did you mean 'output'?" in message


def test_unknown_key_in_a_nested_list_table(tmp_path):
    text = example_text() + '\n[[models.extra]]\nname = "x"\nformla = "cog ~ 1 + (1 | id)"\n'
    message = error_for(tmp_path, text)
    assert "[[models.extra]] #1 key 'formla' is not allowed; did you mean 'formula'?" in message


def test_bad_toml_syntax_gives_the_line(tmp_path):
    text = example_text().replace('unit = "years"', 'unit = "years')
    line = text.splitlines().index('unit = "years') + 1
    message = error_for(tmp_path, text)
    assert "not valid TOML" in message
    assert f"(at line {line}, column 14)" in message


def test_wrong_type_names_key_and_expectation(tmp_path):
    message = error_for(
        tmp_path,
        example_text().replace("max_invalid_fraction = 0.05", 'max_invalid_fraction = "lots"'),
    )
    assert message.endswith("[data] max_invalid_fraction: expected a number, got 'lots'")


def test_fraction_out_of_bounds(tmp_path):
    message = error_for(
        tmp_path, example_text().replace("max_invalid_fraction = 0.05", "max_invalid_fraction = 5")
    )
    assert (
        "[data] max_invalid_fraction: expected a number less than or equal to 1, got 5" in message
    )


def test_missing_required_key(tmp_path):
    message = error_for(tmp_path, example_text().replace('outcome = "cog"\n', ""))
    assert message.endswith("[data] key 'outcome' is missing; expected text")


def test_missing_table(tmp_path):
    text = example_text().replace('[output]\ndir = "../outputs/early"\n', "")
    message = error_for(tmp_path, text)
    assert "table [output] is missing" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'label = "Age"',
            'label = "Age\\n(years)"',
            "[time] label: contains a line break (\\n); expected a label on one line without "
            "control characters, got 'Age\\n(years)'",
        ),
        (
            'label = "Age"',
            'label = "Age\\u2028(years)"',
            "[time] label: contains a line break (\\u2028); expected a label on one line",
        ),
        ('unit = "years"', 'unit = "years\\u2029"', "[time] unit: contains a line break (\\u2029)"),
        (
            'outcome_label = "Cognitive score"',
            'outcome_label = "Cognitive\\u0001score"',
            "[data] outcome_label: contains a control character (\\x01); expected a label on "
            "one line without control characters, got 'Cognitive\\x01score'",
        ),
        (
            'outcome_unit = "points"',
            'outcome_unit = "pts\\r"',
            "[data] outcome_unit: contains a line break (\\r)",
        ),
        (
            'outcome_unit = "points"',
            'outcome_unit = "p\\u007fts"',
            "[data] outcome_unit: contains a control character (\\x7f)",
        ),
    ],
)
def test_axis_labels_refuse_line_breaks_and_control_characters(tmp_path, old, new, expected):
    assert old in example_text()
    message = error_for(tmp_path, example_text().replace(old, new))
    assert expected in message
    assert not any(ord(c) < 0x20 or c in "\x7f\u2028\u2029" for c in message), repr(message)


def test_axis_labels_may_hold_any_printable_text(tmp_path):
    text = example_text().replace('label = "Age"', 'label = "Âge « t » \\" </script> ½"')
    cfg = load_config(write(tmp_path, text))
    assert cfg.time.label == 'Âge « t » " </script> ½'


def test_study_name_must_be_a_safe_folder_name(tmp_path):
    message = error_for(tmp_path, example_text().replace('name = "early"', 'name = "../evil"'))
    assert "[study] name: expected letters, digits, '_' or '-' only, got '../evil'" in message


def test_output_dir_must_not_be_blank(tmp_path):
    message = error_for(tmp_path, example_text().replace('dir = "../outputs/early"', 'dir = "  "'))
    assert "[output] dir: expected a folder name, got an empty text" in message


def test_literal_choices_are_listed(tmp_path):
    message = error_for(tmp_path, example_text().replace('format = "auto"', 'format = "xlsx"'))
    assert "[data] format: expected one of 'auto', 'csv' or 'parquet', got 'xlsx'" in message


def test_predictor_must_be_a_declared_covariate(tmp_path):
    text = example_text().replace('slope_predictors = ["trt"]', 'slope_predictors = ["sex"]')
    message = error_for(tmp_path, text)
    assert "[models] slope_predictors: 'sex' is not a declared covariate" in message


def test_comparison_group_must_be_a_person_covariate(tmp_path):
    message = error_for(tmp_path, example_text().replace('group = "trt"', 'group = "sex"'))
    assert "[comparison] group: 'sex' is not in [data] person_covariates (['trt'])" in message


def test_time_range_must_be_ordered(tmp_path):
    message = error_for(
        tmp_path, example_text().replace("time_range = [0.5, 3.0]", "time_range = [3, 1]")
    )
    assert "[data] time_range: expected [low, high] with low <= high, got [3.0, 1.0]" in message


def test_scale_must_be_positive(tmp_path):
    message = error_for(tmp_path, example_text().replace("scale = 1.0", "scale = 0"))
    assert "[time] scale: expected a number greater than 0, got 0.0" in message


def test_duplicate_levels_rejected(tmp_path):
    message = error_for(tmp_path, example_text().replace('trt = ["N", "Y"]', 'trt = ["N", "N"]'))
    assert "[data] categories: 'trt' lists the level(s) ['N'] more than once" in message


def test_cron_needs_five_fields(tmp_path):
    message = error_for(tmp_path, example_text().replace('cron = "0 6 * * 1"', 'cron = "weekly"'))
    assert "[schedule] cron: expected 5 cron fields like \"0 6 * * 1\", got 'weekly'" in message


def test_not_utf8_config(tmp_path):
    path = tmp_path / "study.toml"
    path.write_bytes(example_text().replace("Early", "Caf\xe9").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 on line 1\)"):
        load_config(path)


def test_centre_key_is_optional_and_validated(tmp_path):
    text = example_text().replace("time_covariates = []", 'time_covariates = ["stress"]')
    text = text.replace(
        "[data.categories]", '[data.centre]\nstress = "person"\n\n[data.categories]'
    )
    cfg = parse_config(text, path=tmp_path / "study.toml")
    assert cfg.data.centre == {"stress": "person"}
    bad = text.replace('stress = "person"', 'trt = "person"')
    with pytest.raises(ConfigError, match=r"\[data\]: centre names 'trt', a categorical covariate"):
        parse_config(bad, path=tmp_path / "study.toml")
    with pytest.raises(ConfigError, match=r"\[data\] centre.stress: expected"):
        parse_config(
            text.replace('stress = "person"', 'stress = "median"'), path=tmp_path / "s.toml"
        )


def test_wide_layout_needs_its_mapping(tmp_path):
    text = example_text().replace('layout = "long"', 'layout = "wide"')
    message = error_for(tmp_path, text)
    assert 'layout = "wide" needs a [data.wide] table' in message
