"""``growth_study`` on a partitioned data set (a folder of files): the flow end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import pytest
from conftest import EXAMPLE_DATA

from flows.study import growth_study
from pipeline.errors import QuarantineLimitError
from pipeline.outputs import latest_run

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _split(tmp_path: Path, lines: list[str], files: int = 3) -> None:
    folder = tmp_path / "data" / "parts"
    folder.mkdir(parents=True)
    header, rows = lines[0], lines[1:]
    size = -(-len(rows) // files)
    for k in range(files):
        chunk = rows[k * size : (k + 1) * size]
        (folder / f"part{k}.csv").write_text("\n".join([header, *chunk]) + "\n", encoding="utf-8")


def _table(run: dict, name: str) -> pl.DataFrame:
    return pl.read_parquet(Path(run["run_folder"]) / "tables" / f"{name}.parquet")


def test_a_folder_of_files_gives_the_in_memory_run_and_names_the_file_of_each_bad_row(
    make_study, tmp_path
):
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()
    fields = lines[5].split(",")
    lines[5] = ",".join([fields[0], '"abc"', *fields[2:]])  # an unreadable score
    whole = make_study(data="\n".join(lines) + "\n", name="whole.toml")
    expected = growth_study(config=str(whole), output=str(tmp_path / "out-whole"))
    _split(tmp_path, lines)
    parted = make_study(
        replace={'path = "../data/early.csv"': 'path = "../data/parts"'}, name="parts.toml"
    )
    got = growth_study(config=str(parted), output=str(tmp_path / "out-parts"))
    assert (
        (got["rows_in"], got["rows_used"], got["rows_quarantined"])
        == (
            expected["rows_in"],
            expected["rows_used"],
            expected["rows_quarantined"],
        )
        == (309, 308, 1)
    )
    for name in ("fixed_effects", "variance_components"):
        a, b = _table(expected, name), _table(got, name)
        for column in ("estimate", "std_error", "variance"):
            if column in a.columns:
                assert (a[column] - b[column]).abs().max() <= 1e-9 * a[column].abs().max()
    manifest = json.loads(Path(got["manifest"]).read_text(encoding="utf-8"))
    execution = manifest["execution"]
    assert execution["backend"] == "local" and execution["files"] == 3
    assert execution["persons"] == execution["sample_persons"] == 103
    with (Path(got["run_folder"]) / "quarantine.csv").open(encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["_file"] == "part0.csv" and row["_line"] == "6"
    assert "score" in row["reason"] or "cog" in row["reason"]


def test_too_many_bad_rows_over_all_the_files_fail_and_nothing_is_published(make_study, tmp_path):
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()
    for index in range(1, 31):  # 30 of 309 rows, spread over the first file: above 5 %
        fields = lines[index].split(",")
        lines[index] = ",".join([fields[0], '"abc"', *fields[2:]])
    _split(tmp_path, lines)
    config = make_study(replace={'path = "../data/early.csv"': 'path = "../data/parts"'})
    with pytest.raises(QuarantineLimitError, match=r"30 of 309 rows \(9\.7%\) are invalid"):
        growth_study(config=str(config))
    out = tmp_path / "outputs" / "early"
    (failed,) = list((out / "runs").iterdir())
    assert len((failed / "quarantine.csv").read_text(encoding="utf-8").splitlines()) == 31
    manifest = json.loads((failed / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "failed" and manifest["rows_quarantined"] == 30
    assert latest_run(out) is None and not (out / "report.html").exists()


@pytest.mark.cluster
def test_dask_local_cluster_run_from_the_flow(make_study, tmp_path):
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()
    _split(tmp_path, lines, files=2)
    config = make_study(replace={'path = "../data/early.csv"': 'path = "../data/parts"'})
    result = growth_study(config=str(config), dask="local")
    manifest = json.loads(Path(result["manifest"]).read_text(encoding="utf-8"))
    assert manifest["execution"]["backend"] == "dask"
    assert manifest["execution"]["address"] == "local cluster"
    assert result["rows_used"] == 309 and result["latest"]


@pytest.mark.cluster
def test_several_studies_run_as_tasks_on_one_dask_cluster(make_study, tmp_path, capsys):
    from flows.cli import main

    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()
    _split(tmp_path, lines, files=2)
    first = make_study(replace={'path = "../data/early.csv"': 'path = "../data/parts"'})
    second = make_study(
        replace={
            'path = "../data/early.csv"': 'path = "../data/parts"',
            'name = "early"': 'name = "early_again"',
        },
        name="again.toml",
    )
    out = tmp_path / "both"
    assert main(["run", str(first), str(second), "--dask", "local", "--output", str(out)]) == 0
    printed = capsys.readouterr()
    assert "distributed" not in printed.err  # the cluster's own logging stays quiet
    for name in ("early", "early_again"):
        manifest = json.loads((out / name / "manifest.json").read_text(encoding="utf-8"))
        execution = manifest["execution"]
        assert execution["backend"] == "dask" and execution["address"].startswith(
            "tcp://127.0.0.1:"
        )
        assert manifest["rows_used"] == 309
