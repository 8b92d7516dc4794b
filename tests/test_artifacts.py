"""Audit finding 8: user text in the Prefect summary artifact is Markdown-escaped.

A title, model name, formula, term, error message, warning or quarantine reason
must neither break the summary's tables nor add links, images or HTML. The
summary is rendered with markdown-it (CommonMark + GFM tables, as in the UI).
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from markdown_it import MarkdownIt

from flows.artifacts import markdown_code, markdown_text, summary_markdown

HOSTILE = "x | y\n[link](https://evil.example) <img src=x onerror=alert(1)> `c` *b* _i_ ~~s~~ &amp;"


def _render(text: str) -> str:
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(text)


def _assert_inert(rendered: str, *, code: bool = False) -> None:
    tags = ["<a ", "<img", "<script", "<em>", "<strong>", "<s>", "<del>", "<h2>"]
    for tag in tags if code else [*tags, "<code>"]:
        assert tag not in rendered, (tag, rendered)


def _analysis(term: str, model: str, formula: str, error: str, message: str) -> SimpleNamespace:
    fixed = pl.DataFrame(
        {
            "model": [model, model],
            "term": ["(Intercept)", term],
            "estimate": [1.5, -0.25],
            "std_error": [0.1, 0.05],
            "df": [100.0, 100.0],
            "p_value": [0.0001, 0.02],
            "conf_low": [1.3, -0.35],
            "conf_high": [1.7, -0.15],
        }
    )
    return SimpleNamespace(
        models=[SimpleNamespace(name=model, role="conditional")],
        fits={model: object()},
        tables={"fixed_effects": fixed},
        failures=pl.DataFrame({"model": [model], "formula": [formula], "error": [error]}),
        warnings=pl.DataFrame({"severity": ["warn*"], "topic": ["<b>t</b>"], "message": [message]}),
    )


@pytest.fixture
def summary() -> str:
    manifest = {
        "rows_in": 10,
        "rows_used": 9,
        "rows_quarantined": 1,
        "reasons": {"[data] cog: 'a|b\n<i>' is not a number": 1},
        "changes": {
            "previous_run_id": "<script>alert(1)</script>",
            "data_changed": True,
            "config_changed": False,
            "counts": {},
            "estimates": [
                {"model": "m|x", "term": "a`b`|c", "previous": 1.0, "current": 2.0, "change": 1.0}
            ],
            "terms_added": ["n\new|t"],
        },
    }
    return summary_markdown(
        title="Study\n# injected [click](https://evil.example) <script>x</script>",
        study="early",
        run_id="20260101T000000Z-abc",
        report=Path("/shared/out`put/report.html"),
        manifest=manifest,
        analysis=_analysis(
            term="age1 | trt\nx",
            model="cond_<b>",
            formula="cog ~ age1 + (age1 | id)",
            error=HOSTILE,
            message=HOSTILE,
        ),
    )


def test_the_summary_renders_no_link_image_html_or_emphasis_from_user_text(summary):
    rendered = _render(summary)
    # the summary's own markup: section headings, code spans, the bold severity
    own = rendered.replace("<h2>", "<h2 ").replace("<strong>warn*</strong>", "warn*")
    _assert_inert(own, code=True)
    assert rendered.count("<strong>") == 1
    assert rendered.count("<h1>") == 1
    assert "<script" not in rendered and "&lt;script&gt;" in rendered
    assert "https://evil.example" in rendered  # shown as text, not as a link


def test_table_rows_keep_their_cells(summary):
    rendered = _render(summary)
    tables = re.findall(r"<table>.*?</table>", rendered, flags=re.DOTALL)
    assert len(tables) == 2  # fixed effects, failed models
    fixed, failed = tables
    assert fixed.count("<tr>") == 3 and fixed.count("<td>") == 2 * 7
    assert "age1 | trt x" in fixed
    assert failed.count("<tr>") == 2 and failed.count("<td>") == 3
    assert "cog ~ age1 + (age1 | id)" in failed
    assert "x | y [link](https://evil.example) &lt;img" in failed


def test_every_markdown_line_of_a_table_is_one_row(summary):
    for line in summary.splitlines():
        if line.startswith("|"):
            assert len(re.findall(r"(?<!\\)\|", line)) in {8, 4}, line


def test_code_spans_hold_backticks_and_line_breaks(summary):
    rendered = _render(summary)
    assert "<code>/shared/out`put/report.html</code>" in rendered
    assert "<code>a`b`|c</code>" in rendered
    assert "<code>n ew|t</code>" in rendered


@pytest.mark.parametrize(
    "text",
    [HOSTILE, "\\[x](y)", "a\r\nb\u2028c", "<!-- x -->", "![i](https://e/i.png)", "#", "&lt;b&gt;"],
)
def test_markdown_text_is_literal(text):
    escaped = markdown_text(text)
    assert "\n" not in escaped and "\r" not in escaped
    rendered = _render(f"| h |\n|---|\n| {escaped} |\n")
    _assert_inert(rendered)
    assert rendered.count("<td>") == 1
    cell = re.search(r"<td>(.*)</td>", rendered, flags=re.DOTALL).group(1)
    expected = re.sub(r"[\r\n\u2028]+", " ", text)
    expected = expected.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    expected = expected.replace('"', "&quot;")
    assert cell == expected


@pytest.mark.parametrize("text", ["plain", "a`b", "``x``", "`", " x ", "l1\nl2"])
def test_markdown_code_is_one_code_span_with_the_text(text):
    rendered = _render(f"- {markdown_code(text)}\n")
    assert rendered.count("<code>") == 1
    shown = re.search(r"<code>(.*)</code>", rendered).group(1)
    assert shown == text.replace("\n", " ")
