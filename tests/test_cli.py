"""The command line: arguments, error messages and exit codes, and Prefect's quiet settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import EXAMPLE_CONFIG, EXAMPLE_DATA, REPO

from flows import cli
from flows.cli import main
from flows.settings import PREFECT_DEFAULTS, apply_prefect_defaults


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line on stderr (progress lines may come before it), no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert err.rstrip("\n").splitlines()[-1] == errors[0]
    return errors[0]


def _error_line_of(err: str) -> str:
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    return line


def _broken_data(rows: int) -> str:
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()
    out = [lines[0]]
    for index, line in enumerate(lines[1:], start=1):
        fields = line.split(",")
        out.append(",".join([fields[0], '"abc"', *fields[2:]]) if index <= rows else line)
    return "\n".join(out) + "\n"


# --- arguments -------------------------------------------------------------------------


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("growth 0.1.0 (prefect 3.")


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "validate", "serve"):
        assert command in out


def test_run_help_shows_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for option in ("CONFIG", "--output DIR", "--outcome COL", "--debug", "--no-cache"):
        assert option in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: growth" in capsys.readouterr().err


def test_a_missing_argument_is_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run"])
    assert exited.value.code == 2
    assert _error_line(capsys) == (
        "error: the following arguments are required: CONFIG (see 'growth run --help')"
    )


def test_an_unknown_command_is_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["fit", "x.toml"])
    assert exited.value.code == 2
    assert "invalid choice: 'fit'" in _error_line(capsys)


# --- errors before Prefect starts -----------------------------------------------------------


def test_missing_config(capsys, tmp_path):
    missing = tmp_path / "nope.toml"
    assert main(["run", str(missing)]) == 2
    assert _error_line(capsys) == (
        f"error: {missing}: config file not found (looked in {tmp_path})"
    )


def test_a_config_that_is_not_toml_is_refused(capsys, tmp_path):
    assert main(["run", str(tmp_path / "study.yaml")]) == 2
    assert _error_line(capsys) == (
        f"error: parameter 'config': expected a .toml study config, got '{tmp_path / 'study.yaml'}'"
    )


def test_unknown_key(capsys, make_study):
    config = make_study(replace={'person = "id"': 'persn = "id"'})
    assert main(["run", str(config)]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"error: {config}: [data] key 'persn' is not allowed")
    assert "did you mean 'person'?" in line


def test_an_outcome_override_that_clashes_is_refused(capsys, make_study):
    config = make_study()
    assert main(["run", str(config), "--outcome", "id"]) == 2
    line = _error_line(capsys)
    assert line.startswith(
        f"error: {config}: the override(s) [data] outcome = 'id' cannot be used:"
    )
    assert "'person'" in line


# --- errors from the flow ---------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_harness")
def test_missing_data_file(capsys, make_study, tmp_path):
    config = make_study(replace={'path = "../data/early.csv"': 'path = "../data/wave2.csv"'})
    assert main(["run", str(config)]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"error: {tmp_path / 'data' / 'wave2.csv'}: data file not found")
    assert "[data] path = '../data/wave2.csv' in study.toml" in line


@pytest.mark.usefixtures("prefect_harness")
def test_missing_column(capsys, make_study):
    config = make_study(replace={'outcome = "cog"': 'outcome = "cgo"'})
    assert main(["run", str(config)]) == 2
    line = _error_line(capsys)
    assert "column 'cgo' ([data] outcome in study.toml) not found; did you mean 'cog'?" in line


@pytest.mark.usefixtures("prefect_harness")
def test_run_prints_the_report_path(capsys, make_study, tmp_path):
    config = make_study()
    out = tmp_path / "elsewhere"
    assert main(["run", str(config), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1].endswith(f"{out / 'report.html'}")
    stages = [line.split(":")[0] for line in captured.err.splitlines()]
    assert stages == [
        "[early] load",
        "[early] validate",
        "[early] reshape",
        "[early] analyse",
        "[early] report",
        "[early] outputs",
    ]
    assert "[early] validate: 309 rows in, 309 used, 0 quarantined" in captured.err
    assert (out / "report.html").is_file()


# --- growth validate ------------------------------------------------------------------------------


def test_validate_a_valid_study(capsys):
    assert main(["validate", str(EXAMPLE_CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "rows: 309 in, 309 valid, 0 quarantined (0.0%; limit 5.0%)" in out
    assert out.strip().endswith("valid")


def test_validate_an_invalid_study(capsys, make_study):
    config = make_study(data=_broken_data(30))
    assert main(["validate", str(config)]) == 2
    captured = capsys.readouterr()
    assert "rows: 309 in, 279 valid, 30 quarantined (9.7%; limit 5.0%)" in captured.out
    assert "30 row(s): outcome (cog) is not a number" in captured.out
    assert "max_invalid_fraction = 0.05" in _error_line_of(captured.err)


def test_validate_strict_fails_on_any_quarantined_row(capsys, make_study):
    config = make_study(data=_broken_data(2))
    assert main(["validate", str(config)]) == 0
    capsys.readouterr()
    assert main(["validate", str(config), "--strict"]) == 2
    assert _error_line(capsys) == "error: 2 row(s) would be quarantined (--strict)"


def test_validate_names_a_missing_column(capsys, make_study):
    config = make_study(replace={'time = "age"': 'time = "agee"'})
    assert main(["validate", str(config)]) == 2
    assert "column 'agee' ([data] time in study.toml) not found" in _error_line(capsys)


def test_validate_checks_the_model_formulas(capsys, make_study):
    config = make_study(
        replace={
            "[comparison]": '[[models.extra]]\nname = "typo"\nformula = "cog ~ age1 * tr + (age1 | id)"\n\n[comparison]'
        }
    )
    # the run leaves such a model out and goes on: validate warns and agrees (exit 0)
    assert main(["validate", str(config)]) == 0
    captured = capsys.readouterr()
    assert (
        "warning: model 'typo' (cog ~ age1 * tr + (age1 | id)) could not be fitted: formula "
        "'cog ~ age1 * tr + (age1 | id)': column 'tr' does not exist" in captured.out
    )
    assert "1 of 5 model(s) cannot be fitted" in captured.out


def test_validate_reports_an_unparsable_extra_formula(capsys, make_study):
    config = make_study(
        replace={
            "[comparison]": '[[models.extra]]\nname = "broken"\nformula = "cog ~ (age1 + (1 | id)"\n\n[comparison]'
        }
    )
    assert main(["validate", str(config)]) == 0
    out = capsys.readouterr().out
    assert "warning: model 'broken'" in out and "unbalanced parenthesis" in out


# --- bugs ----------------------------------------------------------------------------------------


def test_a_bug_is_one_line_without_debug_and_a_traceback_with_it(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "_validate", broken)
    assert main(["validate", str(EXAMPLE_CONFIG)]) == 1
    assert _error_line(capsys) == (
        "error: RuntimeError: boom (this is a bug; run with --debug for the traceback)"
    )
    assert main(["validate", str(EXAMPLE_CONFIG), "--debug"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


# --- Prefect settings ------------------------------------------------------------------------------


def _toml_as_environment(table: dict, prefix: str = "PREFECT") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}_{key.upper()}"
        if isinstance(value, dict):
            flat.update(_toml_as_environment(value, name))
        else:
            flat[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return flat


def test_prefect_toml_and_the_cli_defaults_agree():
    table = tomllib.loads((REPO / "prefect.toml").read_text(encoding="utf-8"))
    assert _toml_as_environment(table) == PREFECT_DEFAULTS


def test_prefect_reads_the_settings_from_the_repository_root(monkeypatch):
    from prefect.settings import Settings

    for name in PREFECT_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(REPO)
    settings = Settings()
    assert settings.logging.level == "WARNING"
    assert settings.server.analytics_enabled is False
    assert settings.server.ephemeral.startup_timeout_seconds == 90


def test_defaults_apply_outside_the_repository_but_never_override(tmp_path):
    environ = {"PREFECT_LOGGING_LEVEL": "DEBUG"}
    applied = apply_prefect_defaults(environ, cwd=tmp_path)
    assert environ["PREFECT_LOGGING_LEVEL"] == "DEBUG"
    assert environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert "PREFECT_LOGGING_LEVEL" not in applied
    (tmp_path / "prefect.toml").write_text("[logging]\nlevel = 'INFO'\n")
    assert apply_prefect_defaults({}, cwd=tmp_path) == {}


def _growth() -> list[str]:
    script = Path(sys.executable).parent / "growth"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


def test_the_console_script_runs_from_any_folder(tmp_path):
    done = subprocess.run(
        [*_growth(), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.startswith("growth 0.1.0")


def test_a_failing_run_from_another_folder_is_quiet(tmp_path, make_study):
    """Outside the repository (no prefect.toml), with a Prefect home of its own: progress
    lines and one error line, no Prefect INFO lines, no telemetry, no traceback."""
    config = make_study(replace={'outcome = "cog"': 'outcome = "cgo"'})
    work = tmp_path / "work"
    work.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    environ["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    done = subprocess.run(
        [*_growth(), "run", str(config)],
        cwd=work,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert all(line.startswith(("[early] ", "error: ")) for line in lines), done.stderr
    assert lines[-1].startswith("error: ") and "column 'cgo'" in lines[-1]
    assert lines[0].startswith("[early] failed: quarantine and failure summary in")
    assert done.stdout == ""
    shutil.rmtree(tmp_path / "prefect-home", ignore_errors=True)


@pytest.mark.usefixtures("prefect_harness")
def test_run_several_studies_prints_each_report(capsys, make_study, tmp_path):
    first = make_study(name="early.toml")
    second = make_study(replace={'name = "early"': 'name = "early_b"'}, name="early_b.toml")
    out = tmp_path / "both"
    assert main(["run", str(first), str(second), "--output", str(out)]) == 0
    reports = [line for line in capsys.readouterr().out.splitlines() if line.startswith("report:")]
    assert reports == [
        f"report: {out / 'early' / 'report.html'}",
        f"report: {out / 'early_b' / 'report.html'}",
    ]


def test_a_predictor_override_must_be_a_declared_covariate(capsys, make_study):
    config = make_study()
    assert main(["run", str(config), "--slope-predictors", "trt,ses"]) == 2
    line = _error_line(capsys)
    assert line.startswith(
        f"error: {config}: the override(s) [models] slope_predictors = 'trt, ses' cannot be used:"
    )
    assert "'ses' is not a declared covariate" in line


def test_predictor_overrides_are_parsed_and_applied(make_study):
    from flows.params import RunParameters, study_config

    config = make_study()
    args = cli.build_parser().parse_args(
        ["run", str(config), "--intercept-predictors", " trt ", "--slope-predictors", ""]
    )
    assert args.intercept_predictors == ["trt"] and args.slope_predictors == []
    params = RunParameters.parse(config=config, slope_predictors=[])
    cfg = study_config(params)
    assert cfg.models.slope_predictors == [] and cfg.models.intercept_predictors == ["trt"]
    assert cfg.source_path == config  # the overridden config still knows its file
    assert params.overrides == {"[models] slope_predictors": ""}
