"""Audit: ``growth validate`` on hostile inputs prints one line ``error: ...`` and exits 2.

Runs in-process through :func:`flows.cli.main` (``validate`` does not start Prefect).
The line-break test covered an audit finding (fixed: names are escaped in the message).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main

ROOT = Path(__file__).resolve().parents[1]
EARLY = (ROOT / "data" / "early.csv").read_text(encoding="utf-8")


def _config(tmp_path: Path, data: str = "early.csv", **replace: str) -> Path:
    text = (ROOT / "config" / "early.toml").read_text(encoding="utf-8")
    text = text.replace('path = "../data/early.csv"', f'path = "{data}"')
    text = text.replace('dir = "../outputs/early"', 'dir = "out"')
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "study.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _validate(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, str]:
    code = main(["validate", str(config)])
    return code, capsys.readouterr().err


def _one_line_user_error(code: int, err: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_study_name_with_dotdot_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "early.csv").write_text(EARLY, encoding="utf-8")
    code, err = _validate(capsys, _config(tmp_path, **{'name = "early"': 'name = "../../etc"'}))
    _one_line_user_error(code, err)
    assert "[study] name" in err


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("folder", None, "the folder has no .parquet or .csv file"),
        ("binary.csv", bytes(range(256)) * 16, "not UTF-8"),
        ("empty.csv", b"", "empty"),
        ("header.csv", b'"id","cog","age","trt","age1"\n', "no data rows"),
        ("fake.parquet", b"not parquet", "Parquet"),
        ("missing.csv", None, "not found"),
    ],
)
def test_bad_data_files_are_one_line_errors(
    tmp_path: Path, capsys, name: str, content: bytes | None, expected: str
) -> None:
    if name == "folder":
        (tmp_path / name).mkdir()
    elif content is not None:
        (tmp_path / name).write_bytes(content)
    code, err = _validate(capsys, _config(tmp_path, data=name))
    _one_line_user_error(code, err)
    assert expected in err
    assert name in err


def test_html_in_column_names_and_values_validates_quietly(tmp_path: Path, capsys) -> None:
    lines = EARLY.splitlines()
    header = lines[0].replace('"cog"', '"<script>alert(1)</script>"')
    body = [line.replace('"Y"', '"</script><b>Y"') for line in lines[1:]]
    (tmp_path / "x.csv").write_text("\n".join([header, *body]) + "\n", encoding="utf-8")
    config = _config(
        tmp_path,
        data="x.csv",
        **{
            'outcome = "cog"': 'outcome = "<script>alert(1)</script>"',
            'trt = ["N", "Y"]': 'trt = ["N", "</script><b>Y"]',
        },
    )
    assert main(["validate", str(config)]) == 0


@pytest.mark.parametrize("where", ["data header", "config"])
def test_a_line_break_in_a_column_name_keeps_the_error_on_one_line(
    tmp_path: Path, capsys, where: str
) -> None:
    if where == "data header":
        lines = EARLY.splitlines()
        lines[0] = lines[0].replace('"cog"', '"co\ng"')
        (tmp_path / "early.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        config = _config(tmp_path)
    else:
        (tmp_path / "early.csv").write_text(EARLY, encoding="utf-8")
        config = _config(tmp_path, **{'person = "id"': 'person = "i\\nd"'})
    code, err = _validate(capsys, config)
    _one_line_user_error(code, err)


def test_the_cli_keeps_any_user_error_on_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    """Backstop: whatever a GrowthError says, ``error: ...`` is one line (finding 7)."""
    import pipeline.config
    from pipeline.errors import ConfigError

    def fail(path: object) -> None:
        raise ConfigError("study.toml: key 'a\nb\r\nc\u2028d\x1b[31m' is not allowed")

    monkeypatch.setattr(pipeline.config, "load_config", fail)
    code, err = _validate(capsys, tmp_path / "study.toml")
    _one_line_user_error(code, err)
    assert "'a\\nb\\r\\nc\\u2028d\\x1b[31m'" in err


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("cog", "cog"),
        ("co\ng", "co\\ng"),
        ("a\\nb", "a\\\\nb"),
        ("x\ty\x00", "x\\ty\\x00"),
        ("ñ", "ñ"),
    ],
)
def test_show_name_escapes_control_characters(name: str, shown: str) -> None:
    from pipeline.errors import show_name

    assert show_name(name) == shown
