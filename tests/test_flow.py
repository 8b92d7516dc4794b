"""The growth_study flow end to end on the bundled example, under a temporary Prefect server."""

from __future__ import annotations

import csv
import html
import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_CONFIG, EXAMPLE_DATA

from flows.study import growth_study, is_transient
from pipeline.errors import DataError, QuarantineLimitError
from pipeline.outputs import latest_run
from pipeline.run import TransientReadError
from pipeline.runinfo import sha256_file

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="session")
def early_runs(prefect_harness, tmp_path_factory) -> dict[str, Any]:
    """The example study run twice into the same (temporary) output folder.

    With a fit cache of its own, so that no other test's run of the example fills it first.
    """
    out = tmp_path_factory.mktemp("early-out")
    cache = tmp_path_factory.mktemp("early-cache") / "growthcurves"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GROWTH_CACHE_DIR", str(cache))
        first = growth_study(config=str(EXAMPLE_CONFIG), output=str(out))
        first_report = (Path(first["run_folder"]) / "report.html").read_bytes()
        second = growth_study(config=str(EXAMPLE_CONFIG), output=str(out))
    return {
        "out": out,
        "cache": cache,
        "first": first,
        "second": second,
        "first_report": first_report,
    }


def _data_rows() -> int:
    with EXAMPLE_DATA.open(newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def test_report_holds_the_fixed_effects_and_the_charts(early_runs):
    out = early_runs["out"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Fixed effects" in html or "fixed effects" in html
    for term in ("(Intercept)", "age1", "trtY", "age1:trtY"):
        assert term in html
    for chart in ("spaghetti", "observed_means", "group_trajectories"):
        assert f'id="chart-{chart}"' in html
        assert (out / "charts" / f"{chart}.svg").is_file()
    for table in ("fixed_effects", "variance_components", "model_comparison"):
        assert (out / "tables" / f"{table}.csv").is_file()
    assert (out / "quarantine.csv").is_file()


def test_manifest_counts_match_the_data(early_runs):
    out = early_runs["out"]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert _data_rows() == 309
    assert manifest["rows_in"] == 309
    assert manifest["rows_used"] + manifest["rows_quarantined"] == manifest["rows_in"]
    assert sum(manifest["reasons"].values()) == manifest["rows_quarantined"]
    assert manifest["persons"] == 103
    assert manifest["data"]["sha256"] == sha256_file(EXAMPLE_DATA)
    assert manifest["config"]["sha256"] == sha256_file(EXAMPLE_CONFIG)
    assert manifest["status"] == "succeeded"
    assert manifest["timestamp"].endswith("Z")
    assert {"python", "numpy", "polars", "prefect", "growthcurves"} <= set(manifest["versions"])
    for entry in manifest["files"]:
        assert sha256_file(out / entry["path"]) == entry["sha256"], entry["path"]
    assert "report.html" in {entry["path"] for entry in manifest["files"]}


def test_the_report_is_byte_identical_on_a_rerun_and_has_no_run_time(early_runs):
    out = early_runs["out"]
    first, second = early_runs["first"], early_runs["second"]
    assert first["run_id"] != second["run_id"]
    assert (out / "report.html").read_bytes() == early_runs["first_report"]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["timestamp"] not in (out / "report.html").read_text(encoding="utf-8")


def test_a_rerun_reuses_the_cached_fits(early_runs):
    assert early_runs["first"]["reused_cached_fits"] is False
    assert early_runs["second"]["reused_cached_fits"] is True


def test_each_run_has_its_folder_and_latest_points_at_the_newest(early_runs):
    out = early_runs["out"]
    runs = sorted(path.name for path in (out / "runs").iterdir())
    assert runs == sorted([early_runs["first"]["run_id"], early_runs["second"]["run_id"]])
    assert latest_run(out) == out / "runs" / early_runs["second"]["run_id"]
    assert early_runs["second"]["report"] == str(out / "report.html")
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert hidden == [".growth.lock"]  # the publication lock, nothing left over
    for name in ("report.html", "manifest.json", "tables", "charts", "quarantine.csv"):
        assert os.readlink(out / name) == f"latest/{name}"


def test_cached_fits_are_kept_in_the_private_cache_not_in_the_output_folder(early_runs):
    out = early_runs["out"]
    assert not (out / ".cache").exists()
    cache = early_runs["cache"] / "early"
    fingerprint = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["analysis"][
        "fingerprint"
    ]
    assert (cache / f"growth-analysis-{fingerprint}").is_file()
    assert not cache.resolve().is_relative_to(out.resolve())
    assert not out.resolve().is_relative_to(cache.resolve())
    assert cache.stat().st_mode & 0o777 == 0o700
    assert early_runs["cache"].stat().st_mode & 0o777 == 0o700


def test_the_run_leaves_artifacts(early_runs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = {
            artifact.key: artifact
            for key in ("early-summary", "early-report", "early-fixed-effects")
            for artifact in client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
        }
    assert set(found) == {"early-summary", "early-report", "early-fixed-effects"}
    assert "age1:trtY" in found["early-summary"].data
    rows = found["early-fixed-effects"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert {"model", "term", "estimate", "std_error", "p_value"} <= set(rows[0])


def test_too_many_invalid_rows_fail_with_the_quarantine_written(make_study, tmp_path):
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()
    # 30 of 309 rows with an unreadable score: above the 5 % the study allows
    broken = [lines[0]]
    for index, line in enumerate(lines[1:], start=1):
        fields = line.split(",")
        broken.append(",".join([fields[0], '"abc"', *fields[2:]]) if index <= 30 else line)
    config = make_study(data="\n".join(broken) + "\n")
    with pytest.raises(QuarantineLimitError) as raised:
        growth_study(config=str(config))
    out = tmp_path / "outputs" / "early"
    (failed,) = list((out / "runs").iterdir())
    quarantine = (failed / "quarantine.csv").read_text(encoding="utf-8").splitlines()
    assert len(quarantine) == 1 + 30
    assert "reason" in quarantine[0]
    summary = (failed / "failure.md").read_text(encoding="utf-8")
    assert str(raised.value) in summary
    manifest = json.loads((failed / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "failed"
    assert manifest["rows_quarantined"] == 30 and manifest["rows_in"] == 309
    assert manifest["error"] == str(raised.value)
    assert latest_run(out) is None and not (out / "report.html").exists()


def test_a_missing_column_fails_with_its_name_and_a_failure_summary(make_study, tmp_path):
    config = make_study(replace={'outcome = "cog"': 'outcome = "cgo"'})
    with pytest.raises(DataError, match=r"column 'cgo' .*not found; did you mean 'cog'"):
        growth_study(config=str(config))
    (failed,) = list((tmp_path / "outputs" / "early" / "runs").iterdir())
    assert "column 'cgo'" in (failed / "failure.md").read_text(encoding="utf-8")
    assert not (failed / "quarantine.csv").exists()


def test_outcome_override_is_recorded(make_study, tmp_path):
    data = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()
    # a second outcome column: cog doubled
    rows = [data[0] + ',"cog2"'] + [
        line + "," + str(2 * int(line.split(",")[1])) for line in data[1:]
    ]
    config = make_study(data="\n".join(rows) + "\n")
    result = growth_study(config=str(config), outcome="cog2", output=str(tmp_path / "o2"))
    manifest = json.loads(Path(result["manifest"]).read_text(encoding="utf-8"))
    assert manifest["overrides"] == {"[data] outcome": "cog2"}
    report = html.unescape(Path(result["report"]).read_text(encoding="utf-8"))
    assert "# [data] outcome = 'cog2'" in report


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OSError(5, "Input/output error"), True),
        (TimeoutError("share went away"), True),
        (FileNotFoundError(2, "No such file"), False),
        (TransientReadError("x.csv: cannot read the data file: Input/output error"), True),
        # the type decides, not the text: a plain DataError is never retried
        (DataError("x.csv: cannot read the data file: Input/output error"), False),
        (DataError("x.csv: data file not found ([data] path = 'x.csv')"), False),
        (DataError("x.csv: column 'cgo' not found"), False),
        (ValueError("bug"), False),
    ],
)
def test_only_read_failures_that_may_pass_are_retried(error, transient):
    assert is_transient(error) is transient


def test_several_studies_run_in_parallel_and_a_failure_loses_no_other(make_study, tmp_path):
    from flows.study import growth_studies
    from pipeline.errors import GrowthError

    good = make_study(name="early.toml")
    other = make_study(replace={'name = "early"': 'name = "early_b"'}, name="early_b.toml")
    broken = make_study(
        replace={'name = "early"': 'name = "broken"', 'outcome = "cog"': 'outcome = "cgo"'},
        name="broken.toml",
    )
    out = tmp_path / "all"
    with pytest.raises(GrowthError) as raised:
        growth_studies(configs=[str(good), str(other), str(broken)], output=str(out))
    message = str(raised.value)
    assert message.startswith("1 of 3 studies failed (2 succeeded): broken: ")
    assert "column 'cgo'" in message
    for name in ("early", "early_b"):
        manifest = json.loads((out / name / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["study"] == name and manifest["rows_in"] == 309
    assert (out / "broken" / "runs").is_dir() and not (out / "broken" / "report.html").exists()


def test_studies_run_together_need_different_names(make_study):
    from flows.study import growth_studies
    from pipeline.errors import ConfigError

    first = make_study(name="a.toml")
    second = make_study(name="b.toml")
    with pytest.raises(ConfigError, match="studies run together need different names"):
        growth_studies(configs=[str(first), str(second)])


def test_a_rerun_records_what_changed_since_the_previous_run(early_runs):
    out = early_runs["out"]
    first = json.loads(
        (out / "runs" / early_runs["first"]["run_id"] / "manifest.json").read_text(encoding="utf-8")
    )
    second = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert first["changes"] is None
    changes = second["changes"]
    assert changes["previous_run_id"] == first["run_id"]
    assert changes["data_changed"] is False and changes["config_changed"] is False
    assert changes["overrides_changed"] is False
    assert changes["data"] == {
        "previous": first["data"]["sha256"],
        "current": first["data"]["sha256"],
    }
    assert changes["counts"]["persons"] == {"previous": 103, "current": 103, "change": 0}
    assert changes["estimates"] and all(row["change"] == 0 for row in changes["estimates"])
    assert changes["terms_added"] == [] and changes["terms_removed"] == []


def _changes_section(report: str) -> str:
    return report[report.index('<section id="changes"') : report.index('<section id="data"')]


def test_a_rerun_on_new_data_shows_what_changed_in_the_report(early_runs, make_study, tmp_path):
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()
    full = "\n".join(lines) + "\n"
    # the first wave lacks the last three infants (9 rows)
    config = make_study(data="\n".join(lines[:-9]) + "\n")
    first = growth_study(config=str(config))
    out = tmp_path / "outputs" / "early"
    first_section = _changes_section((out / "report.html").read_text(encoding="utf-8"))
    assert "Nothing to compare: this is the first run" in first_section
    # the new wave arrives
    make_study(data=full)
    second = growth_study(config=str(config))
    report = (out / "report.html").read_text(encoding="utf-8")
    section = _changes_section(report)
    assert "What changed since the previous run" in section
    row = '<td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td>'
    assert row.format("persons", "100", "103", "+3") in section
    assert row.format("occasions", "300", "309", "+9") in section
    assert row.format("rows read", "300", "309", "+9") in section
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["changes"]["data_changed"] is True
    previous_sha = manifest["changes"]["data"]["previous"]
    assert (
        row.format(
            "data file (SHA-256)", previous_sha[:12], manifest["data"]["sha256"][:12], "changed"
        )
        in section
    )
    moved = [e for e in manifest["changes"]["estimates"] if e["change"] != 0]
    assert moved and html.escape(f"{moved[0]['model']}: {moved[0]['term']}") in section
    # the previous run is named by its data, not by its id or time
    first_manifest = json.loads(
        (out / "runs" / first["run_id"] / "manifest.json").read_text(encoding="utf-8")
    )
    assert first["run_id"] not in report and first_manifest["timestamp"] not in report
    # a rerun on the same data: nothing to compare, and the very report a first run of
    # the same data and config gives (in another output folder, early_runs)
    third = growth_study(config=str(config))
    assert third["run_id"] != second["run_id"]
    third_report = (out / "report.html").read_bytes()
    assert "Nothing to compare" in _changes_section(third_report.decode("utf-8"))
    assert third_report == early_runs["first_report"]


def test_a_notebook_builds_the_same_report_without_flows(early_runs):
    from analysis_support import report_context

    from pipeline.config import load_config
    from pipeline.report import render_report
    from pipeline.runinfo import library_versions

    context = report_context(load_config(EXAMPLE_CONFIG), versions=library_versions())
    assert render_report(context).encode("utf-8") == early_runs["first_report"]


def test_a_conditional_model_override_changes_the_fits(make_study, tmp_path):
    config = make_study()
    result = growth_study(config=str(config), slope_predictors=[], output=str(tmp_path / "o3"))
    out = Path(result["run_folder"])
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["overrides"] == {"[models] slope_predictors": ""}
    lines = (out / "tables" / "fixed_effects.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("outcome,model,term,")  # every table file names its outcome
    conditional = {
        line.split(",")[2] for line in lines if line.startswith("cog,conditional_growth,")
    }
    assert conditional == {"(Intercept)", "age1", "trtY"}
