"""Config, issue 15: every problem listed (up to a bound), [limits], decimal_comma."""

from __future__ import annotations

import pytest

from pipeline.config import parse_config
from pipeline.errors import ConfigError

BASE = """\
[study]
name = "s"
title = "T"

[data]
path = "d.csv"
person = "id"
outcome = "y"
{data}

[time]
name = "t"

[output]
dir = "out"
{tail}
"""


def error(tmp_path, *, data: str = "", tail: str = "") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE.format(data=data, tail=tail), path=tmp_path / "s.toml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_other_problems_are_listed(tmp_path):
    message = error(tmp_path, data='max_invalid_fraction = 2\nformat = "xls"')
    assert message.startswith(f"{tmp_path / 's.toml'}: [data] ")
    assert "(and 1 more problem(s): [data] " in message
    assert "max_invalid_fraction" in message and "format" in message


def test_only_a_few_other_problems_are_listed(tmp_path):
    data = 'max_invalid_fraction = 2\nformat = "xls"\nlayout = "tall"\ncsv_separator = ";;"\n'
    data += "time_range = [3, 1]"
    message = error(tmp_path, data=data)
    assert "(and 4 more problem(s): " in message
    assert message.endswith("; and 1 more)")


def test_limits_have_defaults_and_can_be_raised(tmp_path):
    cfg = parse_config(BASE.format(data="", tail=""), path=tmp_path / "s.toml")
    limits = cfg.limits
    assert (limits.max_label_length, limits.max_levels, limits.max_groups) == (200, 50, 20)
    assert limits.max_fixed_effects == 200
    raised = parse_config(
        BASE.format(data="", tail="[limits]\nmax_levels = 500\nmax_groups = 100\n"),
        path=tmp_path / "s.toml",
    )
    assert (raised.limits.max_levels, raised.limits.max_groups) == (500, 100)


def test_an_unknown_limit_is_named(tmp_path):
    message = error(tmp_path, tail="[limits]\nmax_level = 5\n")
    assert "[limits] key 'max_level' is not allowed; did you mean 'max_levels'?" in message


def test_a_limit_below_its_minimum(tmp_path):
    message = error(tmp_path, tail="[limits]\nmax_groups = 1\n")
    assert "[limits] max_groups: expected a number greater than or equal to 2, got 1" in message


def test_decimal_comma_needs_another_separator(tmp_path):
    message = error(tmp_path, data="decimal_comma = true")
    assert message.endswith(
        '[data]: decimal_comma = true needs another column separator: set csv_separator to ";" '
        '(the usual one with decimal commas) or "\\t"'
    )
    cfg = parse_config(
        BASE.format(data='decimal_comma = true\ncsv_separator = ";"', tail=""),
        path=tmp_path / "s.toml",
    )
    assert cfg.data.decimal_comma


def test_a_100000_character_declared_level_is_refused(tmp_path):
    data = f'person_covariates = ["g"]\n[data.categories]\ng = ["a", "{"x" * 100_000}"]'
    message = error(tmp_path, data=data)
    assert "[data] categories: 'g': a level is 100,000 characters long ('xxxxx" in message
    assert "more than [limits] max_label_length = 200" in message
    assert len(message) < 400
