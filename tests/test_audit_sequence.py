"""Audit: the model formulas built from column names must parse for any valid column name.

``model_sequence`` pastes ``[data] outcome``/``person``/covariate names into the
formula text unquoted; a name that is not an R identifier (a space, '<', '-')
makes every model fail while ``growth validate`` says "valid" and ``growth run``
exits 0 with "0 model(s) fitted". The parser supports backtick quoting.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.analysis.sequence import model_sequence
from pipeline.config import parse_config
from pipeline.model.formula import parse_formula

ROOT = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, outcome: str):
    text = (ROOT / "config" / "early.toml").read_text(encoding="utf-8")
    text = text.replace('outcome = "cog"', f'outcome = "{outcome}"')
    return parse_config(text, path=tmp_path / "study.toml")


def test_plain_names_give_parsable_formulas(tmp_path: Path) -> None:
    for spec in model_sequence(_cfg(tmp_path, "cog")):
        parse_formula(spec.formula)


@pytest.mark.parametrize("outcome", ["cog score", "cog-2", "<script>alert(1)</script>"])
def test_any_column_name_gives_parsable_formulas(tmp_path: Path, outcome: str) -> None:
    for spec in model_sequence(_cfg(tmp_path, outcome)):
        assert parse_formula(spec.formula).response.label == outcome
