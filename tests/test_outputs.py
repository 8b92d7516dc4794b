"""pipeline.outputs: safe paths, atomic run folders, latest pointer, top-level copy, manifest."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from pipeline import outputs
from pipeline.outputs import (
    LATEST,
    MANIFEST,
    REPORT,
    OutputPathError,
    commit_run,
    discard_run,
    latest_run,
    manifest_text,
    new_run_id,
    safe_path,
    stage_run,
)
from pipeline.runinfo import canonical_json, sha256_file

T0 = datetime(2026, 11, 25, 19, 56, 6, tzinfo=UTC)
T1 = datetime(2026, 11, 25, 20, 0, 0, tzinfo=UTC)


def _run(root: Path, moment: datetime, token: str, report: str = "<html>r</html>\n", **tables):
    staged = stage_run(root, new_run_id(moment, token), moment)
    staged.write_text(REPORT, report)
    staged.write_csv("quarantine.csv", pl.DataFrame({"_row": [], "reason": []}))
    for name, frame in tables.items():
        staged.write_csv(f"tables/{name}.csv", frame)
    return staged


def test_run_id_sorts_by_time_and_uses_the_token():
    first, second = new_run_id(T0, "ABCDEF12-3456"), new_run_id(T1, "0123abcd")
    assert first == "20261125T195606Z-abcdef12"
    assert second == "20261125T200000Z-0123abcd"
    assert sorted([second, first]) == [first, second]
    assert new_run_id(T0) != new_run_id(T0)  # random suffix without a token


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../escape.csv", "'..'"),
        ("tables/../../escape.csv", "'..'"),
        ("/etc/passwd", "absolute"),
        ("C:/temp/x.csv", "drive"),
        ("tables\\x.csv", "'/'"),
        ("", "empty"),
        (" report.html", "spaces"),
        ("tables//x.csv", "empty part"),
    ],
)
def test_safe_path_refuses_names_that_leave_the_folder(tmp_path, name, message):
    with pytest.raises(OutputPathError, match=message):
        safe_path(tmp_path, name)


def test_safe_path_refuses_a_symlink_that_leads_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "tables").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OutputPathError, match="leads outside"):
        safe_path(root, "tables/x.csv")
    assert safe_path(root, "charts/a b.svg") == root / "charts" / "a b.svg"


def test_staged_writes_are_checked(tmp_path):
    staged = stage_run(tmp_path, new_run_id(T0, "aaaa1111"), T0)
    with pytest.raises(OutputPathError):
        staged.write_text("../../report.html", "x")
    assert not (tmp_path / "report.html").exists()


def test_commit_moves_the_run_into_place_with_a_manifest(tmp_path):
    root = tmp_path / "out"
    staged = _run(root, T0, "aaaa1111", fixed_effects=pl.DataFrame({"term": ["a"], "x": [1.5]}))
    assert staged.staging.name.startswith(".") and staged.staging.parent == root / "runs"
    assert not staged.final.exists()
    committed = commit_run(staged, {"study": "s", "rows_in": 3, "reasons": {"b": 1, "a": 2}})
    folder = root / "runs" / "20261125T195606Z-aaaa1111"
    assert committed.folder == folder and folder.is_dir()
    assert not staged.staging.exists()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["status"] == "succeeded"
    assert manifest["timestamp"] == "2026-11-25T19:56:06Z"
    assert manifest["run_id"] == "20261125T195606Z-aaaa1111"
    assert [entry["path"] for entry in manifest["files"]] == [
        "quarantine.csv",
        "report.html",
        "tables/fixed_effects.csv",
    ]
    for entry in manifest["files"]:
        assert entry["sha256"] == sha256_file(folder / entry["path"])
        assert entry["bytes"] == (folder / entry["path"]).stat().st_size
    text = (folder / MANIFEST).read_text()
    assert text == manifest_text(manifest)
    assert list(json.loads(text)) == sorted(json.loads(text))  # sorted keys


def test_latest_points_at_the_newest_success_and_the_top_level_mirrors_it(tmp_path):
    root = tmp_path / "out"
    commit_run(_run(root, T0, "aaaa1111", "<p>one</p>\n", old=pl.DataFrame({"x": [1]})), {})
    assert latest_run(root) == root / "runs" / "20261125T195606Z-aaaa1111"
    assert (root / REPORT).read_text() == "<p>one</p>\n"
    assert (root / "tables" / "old.csv").exists()

    second = commit_run(
        _run(root, T1, "bbbb2222", "<p>two</p>\n", new=pl.DataFrame({"y": [2]})), {}
    )
    assert (root / LATEST).is_symlink()
    assert os.readlink(root / LATEST) == "runs/20261125T200000Z-bbbb2222"
    assert latest_run(root) == second.folder
    assert (root / REPORT).read_text() == "<p>two</p>\n"
    assert not (root / "tables" / "old.csv").exists()  # nothing stale from the older run
    assert (root / "tables" / "new.csv").exists()
    assert json.loads((root / MANIFEST).read_text())["run_id"] == second.run_id
    assert (root / "runs" / "20261125T195606Z-aaaa1111" / REPORT).read_text() == "<p>one</p>\n"
    leftovers = [
        p.name for p in root.iterdir() if p.name.startswith(".") and p.name != ".growth.lock"
    ]
    assert leftovers == []


def test_a_failed_run_is_kept_but_not_published(tmp_path):
    root = tmp_path / "out"
    good = commit_run(_run(root, T0, "aaaa1111"), {})
    staged = stage_run(root, new_run_id(T1, "cccc3333"), T1)
    staged.write_text("failure.md", "# failed\n")
    failed = commit_run(staged, {"error": "too many invalid rows"}, status="failed")
    assert failed.folder.is_dir() and failed.report is None
    assert json.loads((failed.folder / MANIFEST).read_text())["status"] == "failed"
    assert latest_run(root) == good.folder
    assert json.loads((root / MANIFEST).read_text())["run_id"] == good.run_id


def test_a_crash_before_commit_leaves_the_published_run_untouched(tmp_path):
    root = tmp_path / "out"
    good = commit_run(_run(root, T0, "aaaa1111", "<p>good</p>\n"), {})
    staged = _run(root, T1, "dddd4444", "<p>half</p>")
    # the process dies here: nothing of the new run is visible
    assert not staged.final.exists()
    assert latest_run(root) == good.folder
    assert (root / REPORT).read_text() == "<p>good</p>\n"
    discard_run(staged)
    assert not staged.staging.exists()


def test_a_success_needs_a_report(tmp_path):
    staged = stage_run(tmp_path, new_run_id(T0, "aaaa1111"), T0)
    with pytest.raises(OutputPathError, match="no report.html"):
        commit_run(staged, {})


def test_a_run_id_is_used_once(tmp_path):
    commit_run(_run(tmp_path, T0, "aaaa1111"), {})
    with pytest.raises(OutputPathError, match="exists already"):
        stage_run(tmp_path, new_run_id(T0, "aaaa1111"), T0)
    with pytest.raises(OutputPathError, match="not of the form"):
        stage_run(tmp_path, "../x", T0)


def test_foreign_folders_are_not_overwritten(tmp_path):
    root = tmp_path / "mine"
    (root / "tables").mkdir(parents=True)
    (root / "tables" / "precious.txt").write_text("keep")
    with pytest.raises(OutputPathError, match="did not write"):
        commit_run(_run(root, T0, "aaaa1111"), {})
    assert (root / "tables" / "precious.txt").read_text() == "keep"


def test_latest_falls_back_to_a_pointer_file_without_symlinks(tmp_path, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks are not supported here")

    monkeypatch.setattr(outputs.os, "symlink", no_symlinks)
    root = tmp_path / "out"
    first = commit_run(_run(root, T0, "aaaa1111"), {})
    assert (root / LATEST).read_text() == f"runs/{first.run_id}\n"
    second = commit_run(_run(root, T1, "bbbb2222"), {})
    assert latest_run(root) == second.folder


def test_canonical_json_is_deterministic_and_has_no_nan():
    value = {"b": [1.0, float("nan")], "a": {"z": float("inf"), "y": Path("x/y")}}
    assert canonical_json(value) == '{"a":{"y":"x/y","z":null},"b":[1.0,null]}'


def test_changes_since_a_previous_run():
    from pipeline.runinfo import changes_since

    previous = {
        "run_id": "r1",
        "timestamp": "t1",
        "data": {"sha256": "a"},
        "config": {"sha256": "c"},
        "persons": 103,
        "rows_in": 309,
    }
    current = {**previous, "data": {"sha256": "b"}, "persons": 110, "rows_in": 330}
    before = pl.DataFrame(
        {"model": ["m", "m"], "term": ["(Intercept)", "x"], "estimate": [1.0, 2.0]}
    )
    after = pl.DataFrame(
        {"model": ["m", "m"], "term": ["(Intercept)", "z"], "estimate": [1.5, 3.0]}
    )
    changes = changes_since(previous, current, previous_fixed=before, current_fixed=after)
    assert changes["previous_run_id"] == "r1"
    assert changes["data_changed"] is True and changes["config_changed"] is False
    assert changes["counts"] == {
        "rows_in": {"previous": 309, "current": 330, "change": 21},
        "persons": {"previous": 103, "current": 110, "change": 7},
    }
    assert changes["estimates"] == [
        {"model": "m", "term": "(Intercept)", "previous": 1.0, "current": 1.5, "change": 0.5}
    ]
    assert changes["terms_added"] == ["m: z"] and changes["terms_removed"] == ["m: x"]
    assert changes_since(None, current) is None


def test_a_table_is_csv_and_parquet_up_to_the_threshold_and_parquet_only_above(tmp_path):
    from pipeline.outputs import CSV_MAX_ROWS, write_table
    from pipeline.report.files import write_tables

    small = pl.DataFrame({"person": [str(i) for i in range(CSV_MAX_ROWS)], "x": 1.5})
    large = pl.DataFrame({"person": [str(i) for i in range(CSV_MAX_ROWS + 1)], "x": -1.5})
    written = write_tables(tables={"small": small, "large": large}, folder=tmp_path)
    assert sorted(p.name for p in written) == ["large.parquet", "small.csv", "small.parquet"]
    assert pl.read_csv(tmp_path / "small.csv", schema=small.schema).equals(small)
    assert pl.read_parquet(tmp_path / "large.parquet").equals(large)
    # the CSV of a small table is the spreadsheet-safe one, byte for byte as before
    hostile = pl.DataFrame({"label": ["=1+1", "ok"]})
    (path,) = [p for p in write_table(tmp_path, "hostile", hostile) if p.suffix == ".csv"]
    assert path.read_text() == "label\n'=1+1\nok\n"
