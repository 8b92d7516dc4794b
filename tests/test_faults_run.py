"""A run under faults (issue 15, faults 6, 8 and 9): no fit, a changing data file, no room.

- A run that fits no model fails with each model's reason and leaves ``latest`` and
  the published report alone; its failed run folder says why.
- The data file is read once: what is hashed (manifest, cache key) is what is parsed,
  even when the file is replaced while the run reads it.
- An output folder that cannot be written is reported before the data are read.
- Reused cached fits say where they came from.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import polars as pl
import pytest
from conftest import EXAMPLE_DATA

import pipeline.io
from pipeline import run as runmod
from pipeline.config import load_config
from pipeline.errors import DataError, GrowthError
from pipeline.outputs import latest_run
from pipeline.run import NoModelFitted, TransientReadError, is_transient, load_exact
from pipeline.runinfo import sha256_bytes

ROWS = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()
HEAD, BODY = ROWS[0], ROWS[1:]


def _with_outcome(value: str) -> list[str]:
    return [",".join([row.split(",")[0], value, *row.split(",")[2:]]) for row in BODY]


NO_FIT = {
    "one occasion each": [row for row in BODY if row.split(",")[2] == "1"],
    "a single person": [row for row in BODY if row.split(",")[0] == '"68"'],
    "a constant outcome": _with_outcome("100"),
    "all outcomes missing": _with_outcome("NA"),
}
NO_FIT_REASON = {
    "one occasion each": "each person needs repeated measures",
    "a single person": "has only 1 level",
    "a constant outcome": "is constant (100)",
    "all outcomes missing": "no rows left",
}


# ---------------------------------------------------------------- fault 9: hash what is parsed


def _study(make_study, text: str | None = None) -> Path:
    return make_study(data=text)


@pytest.mark.parametrize("moment", ["after the hash", "before the parse"])
def test_the_hash_describes_the_bytes_parsed_when_the_file_is_replaced(
    make_study, monkeypatch, moment
):
    config = _study(make_study)
    cfg = load_config(config)
    original = cfg.data_path.read_bytes()
    replaced = "\n".join([HEAD, *_with_outcome("1")]) + "\n"

    def swap() -> None:  # an export landing while the run reads the file
        cfg.data_path.write_text(replaced, encoding="utf-8")

    if moment == "after the hash":
        real = pipeline.io.file_sha256

        def hashed_then_swapped(path):
            digest = real(path)
            swap()
            return digest

        monkeypatch.setattr(pipeline.io, "file_sha256", hashed_then_swapped)
        monkeypatch.setattr(runmod, "_copy_hashing", _swap_after(runmod._copy_hashing, swap))
    else:
        real_read = pipeline.io._read_csv

        def swapped_then_read(*args, **kwargs):
            swap()
            return real_read(*args, **kwargs)

        monkeypatch.setattr(pipeline.io, "_read_csv", swapped_then_read)
    loaded = load_exact(cfg)
    assert loaded.path == cfg.data_path
    assert loaded.sha256 == sha256_bytes(original)
    expected = pl.read_csv(EXAMPLE_DATA, infer_schema=False)["cog"].to_list()
    assert loaded.frame["cog"].to_list() == expected  # the bytes hashed, not the new file


def _swap_after(function, swap):
    def wrapped(*args, **kwargs):
        result = function(*args, **kwargs)
        swap()
        return result

    return wrapped


def test_messages_name_the_data_file_not_the_snapshot(make_study):
    config = make_study(data="id,cog,age,trt,age1\n")
    cfg = load_config(config)
    with pytest.raises(DataError) as caught:
        load_exact(cfg)
    message = str(caught.value)
    assert "no data rows" in message
    assert "growth-data-" not in message and str(cfg.data_path.name) in message
    missing = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": "nope.csv"})})
    with pytest.raises(DataError, match="nope.csv: data file not found"):
        load_exact(missing)


def test_a_read_error_that_may_pass_is_a_transient_read_error(make_study, monkeypatch):
    cfg = load_config(_study(make_study))
    real_open = Path.open

    def flaky(self, mode="r", *args, **kwargs):
        if self == cfg.data_path:
            raise OSError(5, "Input/output error")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", flaky)
    with pytest.raises(TransientReadError) as caught:
        load_exact(cfg)
    assert str(caught.value).endswith("cannot read the data file: Input/output error")
    assert is_transient(caught.value)

    def denied(self, mode="r", *args, **kwargs):
        if self == cfg.data_path:
            raise PermissionError(13, "Permission denied")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(DataError) as caught:
        load_exact(cfg)
    assert not isinstance(caught.value, TransientReadError)
    assert not is_transient(caught.value)


# ---------------------------------------------------------------- fault 8: no model fitted


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("case", list(NO_FIT))
def test_a_run_that_fits_no_model_fails_and_leaves_the_report_alone(
    make_study, tmp_path, case, capfd
):
    from flows.study import growth_study

    config = make_study()
    out = tmp_path / "out"
    good = growth_study(config=str(config), output=str(out))
    report = (out / "report.html").read_bytes()
    (tmp_path / "data" / "early.csv").write_text("\n".join([HEAD, *NO_FIT[case]]) + "\n")
    capfd.readouterr()
    with pytest.raises(NoModelFitted) as caught:
        growth_study(config=str(config), output=str(out))
    message = str(caught.value)
    assert "\n" not in message
    assert re.match(
        r"early: no model could be fitted, so nothing is published \(\d+ failed\): ", message
    )
    assert NO_FIT_REASON[case] in message
    assert latest_run(out) == Path(good["run_folder"])
    assert (out / "report.html").read_bytes() == report
    failed = [
        folder
        for folder in (out / "runs").iterdir()
        if not folder.name.startswith(".") and folder.name != good["run_id"]
    ]
    assert len(failed) == 1
    manifest = json.loads((failed[0] / "manifest.json").read_text())
    assert manifest["status"] == "failed" and NO_FIT_REASON[case] in manifest["error"]
    summary = (failed[0] / "failure.md").read_text()
    assert "Models that could not be fitted:" in summary
    assert "- unconditional_means: " in summary
    assert "quarantine and failure summary in" in capfd.readouterr().err


# ---------------------------------------------------------------- fault 6: no room to write


@pytest.mark.usefixtures("prefect_harness")
def test_an_output_folder_in_the_way_is_reported_before_the_data_are_read(
    make_study, tmp_path, capfd
):
    from flows.study import growth_study

    config = make_study()
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "runs").write_text("a file where the runs folder goes")
    with pytest.raises(GrowthError, match="runs: exists and is not a folder"):
        growth_study(config=str(config), output=str(blocked))
    assert "load:" not in capfd.readouterr().err


# ---------------------------------------------------------------- cached fits: from where


@pytest.mark.usefixtures("prefect_harness")
def test_reused_fits_say_where_they_came_from(make_study, tmp_path, monkeypatch, capfd):
    from flows.study import growth_study

    cache = tmp_path / "cache"
    monkeypatch.setenv("GROWTH_CACHE_DIR", str(cache))
    config = make_study()
    first = growth_study(config=str(config), output=str(tmp_path / "a"))
    capfd.readouterr()
    second = growth_study(config=str(config), output=str(tmp_path / "b"))
    assert second["reused_cached_fits"] is True
    err = capfd.readouterr().err
    line = next(line for line in err.splitlines() if "analyse:" in line)
    assert f"(reused cached fits: from {cache / 'early'}, written " in line
    assert f"by run {first['run_id']} of {config}" in line
    # fits written by another checkout say which one
    (record,) = (cache / "early").glob("*.origin.json")
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "checkout": "/elsewhere/growthcurves"}))
    growth_study(config=str(config), output=str(tmp_path / "c"))
    assert "in another checkout, /elsewhere/growthcurves" in capfd.readouterr().err
    assert os.path.isdir(cache)


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("layout", ["runs symlink", "runs file", "output file"])
def test_the_cli_refuses_a_bad_output_folder_before_any_work(make_study, tmp_path, capsys, layout):
    from flows.cli import main

    config = make_study()
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    if layout == "output file":
        out.write_text("x")
        expected = "exists and is not a folder"
    else:
        out.mkdir()
        if layout == "runs symlink":
            (out / "runs").symlink_to(outside, target_is_directory=True)
            expected = f"{out / 'runs'}: is a symbolic link to {str(outside)!r}"
        else:
            (out / "runs").write_text("x")
            expected = f"{out / 'runs'}: exists and is not a folder"
    code = main(["run", str(config), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and expected in line and "this is a bug" not in line
    assert list(outside.iterdir()) == []


@pytest.mark.usefixtures("prefect_harness")
def test_a_publication_problem_after_the_rename_is_not_called_a_bug(
    make_study, tmp_path, capsys, monkeypatch
):
    from flows.cli import main
    from pipeline import outputs

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "_point_latest", broken)
    out = tmp_path / "out"
    code = main(["run", str(make_study()), "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and "this is a bug" not in err[-1]
    assert "the run is complete (succeeded) but could not be published" in err[-1]
    (folder,) = [p for p in (out / "runs").iterdir() if not p.name.startswith(".")]
    assert json.loads((folder / "manifest.json").read_text())["status"] == "succeeded"


@pytest.mark.usefixtures("prefect_harness")
def test_the_cli_fails_a_run_that_fits_no_model_with_one_line(make_study, tmp_path, capsys):
    from flows.cli import main

    config = make_study(data="\n".join([HEAD, *NO_FIT["a constant outcome"]]) + "\n")
    code = main(["run", str(config), "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("error: early: no model could be fitted, so nothing is published")
    assert "is constant (100)" in last
    assert not (tmp_path / "out" / "report.html").exists()
    assert not (tmp_path / "out" / "latest").exists()
