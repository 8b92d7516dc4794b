"""The formula parser: lme4's term expansion and order, and errors that point at the problem."""

from __future__ import annotations

import pytest

from pipeline.errors import FormulaError
from pipeline.model.formula import parse_formula, term_label


def labels(text: str) -> list[str]:
    return parse_formula(text).fixed_labels


def test_crossing_expands_in_r_order():
    assert labels("y ~ time * (g + ses) + (time | pid)") == [
        "(Intercept)",
        "time",
        "g",
        "ses",
        "time:g",
        "time:ses",
    ]
    assert labels("cog ~ age1 * trt + (age1 | id)") == ["(Intercept)", "age1", "trt", "age1:trt"]


def test_intercept_removal_and_terms():
    assert labels("y ~ 0 + x + (1 | g)") == ["x"]
    assert labels("y ~ x - 1 + (1 | g)") == ["x"]
    assert labels("y ~ 1 + (1 | g)") == ["(Intercept)"]
    assert labels("y ~ (a + b + c)^2 - a:b + (1 | g)") == [
        "(Intercept)",
        "a",
        "b",
        "c",
        "a:c",
        "b:c",
    ]


def test_expressions_are_parsed_not_evaluated():
    f = parse_formula("y ~ I(age1^2) + I(age - 1) + log(x) + (1 | g)")
    assert f.fixed_labels == ["(Intercept)", "I(age1^2)", "I(age - 1)", "log(x)"]
    assert f.columns == ["y", "age1", "age", "x", "g"]
    with pytest.raises(FormulaError, match=r"function __import__\(\) is not supported"):
        parse_formula("y ~ __import__(os) + (1 | g)")
    with pytest.raises(FormulaError, match="unexpected character"):
        parse_formula("y ~ x + (1 | g); print(1)")


def test_random_terms():
    f = parse_formula("y ~ t + (1 + t || id)")
    (r,) = f.random
    assert r.group == "id" and not r.correlated and r.intercept
    assert [term_label(t) for t in r.terms] == ["t"]
    f = parse_formula("y ~ t + (0 + t | id)")
    assert not f.random[0].intercept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("y ~ x + (x | )", r"needs a grouping column after '\|'"),
        ("y ~ (x + 1", r"unbalanced parenthesis: '\(' is never closed at position 5"),
        ("y ~ x) + (1 | g)", r"unbalanced parenthesis: '\)' without '\('"),
        ("y ~ x | g", r"must be in parentheses"),
        ("y ~ x", r"no random-effects term; add one such as \(1 \| id\)"),
        ("y x", r"no '~'"),
        ("y ~ ", r"nothing after '~'"),
        ("", r"the formula is empty"),
        ("y ~ x + (1 | g h)", r"one grouping column, an interaction \(school:child\)"),
        ("y ~ x + (1 | g/)", r"a grouping column is needed after '/'"),
        ("y ~ x + (1 | g:g)", r"a grouping column appears twice"),
        ("y ~ x + 2 + (1 | g)", r"a number \(2\) is not a term"),
        ("y ~ a/b + (1 | g)", r"nesting with '/' is not supported"),
    ],
)
def test_bad_formulas_point_at_the_problem(text, message):
    with pytest.raises(FormulaError, match=message):
        parse_formula(text)


def test_nested_groups_expand_as_lme4():
    f = parse_formula("y ~ t + (t | school/class/child)")
    assert [r.group for r in f.random] == ["school", "class:school", "child:(class:school)"]
    assert f.random[2].columns_of_group == ("child", "class", "school")
    assert f.columns == ["y", "t", "school", "class", "child"]
    f = parse_formula("y ~ t + (1 | school) + (t || school:child)")
    assert [(r.group, r.correlated) for r in f.random] == [
        ("school", True),
        ("school:child", False),
    ]
