"""`growth init DATA`: a commented starter config that `growth validate` accepts (issue 15)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from pipeline.config import load_config
from pipeline.errors import DataError
from pipeline.starter import guess_roles, starter_config

ROOT = Path(__file__).resolve().parents[1]
EARLY = ROOT / "data" / "early.csv"


def test_init_on_the_example_then_validate(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    assert main(["init", str(EARLY)]) == 0
    target = tmp_path / "config" / "early.toml"
    assert capsys.readouterr().out.startswith("config: config/early.toml\n")
    text = target.read_text(encoding="utf-8")
    assert 'person = "id"   # guessed' in text
    assert 'time = "age"   # guessed' in text
    assert 'outcome = "cog"   # guessed' in text
    values = tomllib.loads(text)
    assert values["data"]["person_covariates"] == ["trt"]
    assert values["data"]["categories"] == {"trt": ["N", "Y"]}
    assert values["data"]["time_range"] == [1.0, 2.0]
    assert values["time"] == {"name": "age_c", "centre": 1.0, "scale": 1.0}
    cfg = load_config(target)
    assert cfg.data_path == EARLY
    assert cfg.output_dir == tmp_path / "outputs" / "early"
    assert main(["validate", str(target)]) == 0
    out = capsys.readouterr().out
    assert "rows: 309 in, 309 valid, 0 quarantined" in out
    assert out.strip().endswith("valid")


def test_init_never_overwrites(tmp_path: Path, capsys) -> None:
    target = tmp_path / "mine.toml"
    target.write_text("# mine\n")
    assert main(["init", str(EARLY), "--output", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {target}: already exists; not overwritten (use --output)"
    assert target.read_text() == "# mine\n"


def test_a_school_id_is_a_candidate_cluster_not_a_covariate(tmp_path: Path) -> None:
    rows = [
        {
            "pupil": f"p{p}",
            "school_id": p % 6,
            "sex": "F" if p % 2 else "M",
            "wave": w,
            "reading": 10.0 + p + 2.5 * w + (p * w) % 3,
        }
        for p in range(60)
        for w in range(4)
    ]
    data = tmp_path / "reading.csv"
    pl.DataFrame(rows).write_csv(data)
    guesses = guess_roles(pl.read_csv(data))
    assert (guesses.person, guesses.time, guesses.outcome) == ("pupil", "wave", "reading")
    assert guesses.clusters == ("school_id",)
    assert guesses.person_covariates == ("sex",)
    text = starter_config(data, config_path=tmp_path / "reading.toml")
    assert (
        "# candidate higher levels (ids constant within a person, several persons each), "
        "innermost first: school_id; to model them, uncomment:\n"
        '# clusters = ["school_id"]\n' in text
    )
    # sex happens to be constant within school (school = pupil % 6, sex by parity)
    assert guesses.cluster_covariates == {"school_id": ("sex",)}
    assert '\n# cluster_covariates = { school_id = ["sex"] }\n' in text
    (tmp_path / "reading.toml").write_text(text)
    assert main(["validate", str(tmp_path / "reading.toml")]) == 0
    # the commented lines are ready to use: uncommented, the config validates
    clustered = text.replace('# clusters = ["school_id"]', 'clusters = ["school_id"]')
    (tmp_path / "clustered.toml").write_text(clustered)
    assert main(["validate", str(tmp_path / "clustered.toml")]) == 0
    moved = clustered.replace(
        '# cluster_covariates = { school_id = ["sex"] }',
        'cluster_covariates = { school_id = ["sex"] }',
    ).replace('person_covariates = ["sex"]', "person_covariates = []")
    (tmp_path / "moved.toml").write_text(moved)
    assert main(["validate", str(tmp_path / "moved.toml")]) == 0


def test_a_school_id_column_named_schoolid_is_a_candidate_cluster(tmp_path: Path) -> None:
    rows = [
        {
            "childid": p,
            "schoolid": p // 5,
            "lowinc": float(p // 5 * 10),
            "year": t,
            "math": p + t + 0.5,
        }
        for p in range(30)
        for t in range(3)
    ]
    guesses = guess_roles(pl.DataFrame(rows))
    assert guesses.clusters == ("schoolid",)
    assert guesses.cluster_covariates == {"schoolid": ("lowinc",)}
    assert guesses.person_covariates == ("lowinc",)


def test_odd_column_names_are_escaped_in_the_toml(tmp_path: Path) -> None:
    rows = [
        {"id 'x'": p, "t\\ime": t, "score\nnew": float(p * t + t), "grp=1": "a" if p < 5 else "b"}
        for p in range(10)
        for t in range(3)
    ]
    data = tmp_path / "odd.csv"
    pl.DataFrame(rows).write_csv(data)
    text = starter_config(data, config_path=tmp_path / "odd.toml")
    values = tomllib.loads(text)
    assert values["data"]["person"] == "id 'x'"
    assert values["data"]["outcome"] == "score\nnew"
    assert values["data"]["categories"] == {"grp=1": ["a", "b"]}
    assert all("\x00" not in line for line in text.splitlines())


def test_data_that_are_not_long_get_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "flat.csv"
    pl.DataFrame({"a": [1.5, 2.5, 3.5], "b": [1.0, 2.0, 3.0], "c": [0.1, 0.2, 0.3]}).write_csv(data)
    with pytest.raises(DataError) as caught:
        starter_config(data, config_path=tmp_path / "flat.toml")
    assert str(caught.value) == (
        "cannot guess the person column: no column has values that repeat across rows "
        "(expected long data, one row per person and occasion)"
    )
