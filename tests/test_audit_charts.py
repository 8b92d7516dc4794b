"""Audit: labels from the config or the data must not crash chart export.

A control character in a group label (a data value) makes vl-convert panic in
Rust and abort the whole Python process; a line break or U+2028 in an axis title
(a config label) breaks the Vega expression Vega-Lite builds for the tooltip.
The crash cases run in a subprocess so that an abort cannot take pytest down.
Both were fixed: ``chart_spec`` replaces control characters in every string of a
spec (``charts.chart_text``) and chart titles are put on one line
(``charts.title_text``); validation quarantines such ids and categories and the
config refuses such labels (tests in test_validate.py and test_config.py).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import polars as pl
import pytest
import vl_convert

from pipeline.report import charts
from pipeline.report.html import chart_spec, vegalite_version

_SCRIPT = textwrap.dedent(
    """
    import sys, polars as pl, vl_convert
    from pipeline.report import charts
    from pipeline.report.html import chart_spec, vegalite_version
    label = sys.argv[1].encode().decode("unicode_escape")
    t = pl.DataFrame({"group": ["a", label, "a", label], "time": [1.0, 1.0, 2.0, 2.0],
                      "mean": [1.0, 2.0, 3.0, 4.0], "std_error": [0.1] * 4})
    c = charts.observed_means_chart(t, time_title="Age", outcome_title="Score", group_title="trt")
    spec = chart_spec(c)
    svg = vl_convert.vegalite_to_svg(spec, vl_version=vegalite_version())
    assert "<svg" in svg
    print(sorted({row["group"] for rows in spec["datasets"].values() for row in rows}))
    """
)


def _svg_in_subprocess(label: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, label], capture_output=True, text=True, timeout=120
    )


def test_html_in_a_group_label_exports() -> None:
    result = _svg_in_subprocess("</script><img src=x onerror=alert(1)>")
    assert result.returncode == 0, result.stderr[-500:]


# audit: a control character in a group label aborted the process (Rust panic in
# vl-convert, exit 134); 'growth run' died without failure.md and orphaned the
# temporary Prefect server (pipeline/report/files.py write_charts)
@pytest.mark.parametrize("label", ["Y\\x01", "Y\\x00", "Y\\x1b", "Y\\x7f", "Y\\ufffe"])
def test_a_control_character_in_a_group_label_does_not_abort(label: str) -> None:
    result = _svg_in_subprocess(label)
    assert result.returncode == 0, result.stderr[-500:]
    # the character is drawn as U+FFFD, the other label is untouched
    assert result.stdout.strip() == repr(["Y\ufffd", "a"])


def _strings(value: object) -> list[str]:
    """Every string in a spec, keys included (JSON would escape control characters)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_every_string_of_a_chart_spec_is_safe_and_deterministic() -> None:
    unsafe = {chr(c) for c in (*range(0x20), 0x7F, 0x2028, 0x2029, 0xFFFE, 0xFFFF)} - {"\t"}
    t = pl.DataFrame(
        {
            "group": ["a\tb", "Y\x01", "a\tb", "Y\x01"],
            "time": [1.0, 1.0, 2.0, 2.0],
            "mean": [1.0, 2.0, 3.0, 4.0],
            "std_error": [0.1] * 4,
        }
    )
    chart = charts.observed_means_chart(
        t, time_title="Age\n(years)", outcome_title="Score\x1b", group_title="trt\u2028arm"
    )
    spec = chart_spec(chart)
    assert spec == chart_spec(chart)
    assert not unsafe & set("".join(_strings(spec)))
    groups = {row["group"] for rows in spec["datasets"].values() for row in rows}
    assert groups == {"a\tb", "Y\ufffd"}
    assert spec["layer"][0]["encoding"]["x"]["title"] == "Age (years)"
    assert spec["layer"][1]["encoding"]["y"]["title"] == "Score\ufffd"
    assert {layer["encoding"]["color"]["title"] for layer in spec["layer"]} == {"trt arm"}


ATTRITION = pl.DataFrame({"time": [1.0, 1.5, 2.0], "persons": [10, 9, 8], "share": [1.0, 0.9, 0.8]})


def test_quotes_and_markup_in_an_axis_title_export() -> None:
    chart = charts.attrition_chart(ATTRITION, time_title='Age "q" \\ </script>')
    assert "<svg" in vl_convert.vegalite_to_svg(chart_spec(chart), vl_version=vegalite_version())


# audit: a line break or U+2028/U+2029 in [time] label/unit or [data] outcome_label
# made the SVG export fail (Vega expression parse error), so 'growth run' exited 1 as
# a bug (pipeline/report/charts.py titles, files.py write_charts)
@pytest.mark.parametrize(
    ("title", "shown"),
    [
        ("Age\n(years)", "Age (years)"),
        ("Age\u2028(years)", "Age (years)"),
        ("Age\u2029", "Age"),
        ("Age \r\n\t (years) ", "Age (years)"),
    ],
)
def test_a_line_break_in_an_axis_title_exports(title: str, shown: str) -> None:
    chart = charts.attrition_chart(ATTRITION, time_title=title)
    spec = chart_spec(chart)
    assert spec["layer"][0]["encoding"]["x"]["title"] == shown
    assert spec["description"] == f"Line chart of persons observed against {shown}."
    assert "<svg" in vl_convert.vegalite_to_svg(spec, vl_version=vegalite_version())


@pytest.mark.parametrize("unit", ["years\n", "ye\u2028ars"])
def test_a_line_break_in_a_unit_is_collapsed_in_the_axis_title(unit: str) -> None:
    assert "\n" not in charts.axis_title("Age", unit)
    assert charts.axis_title("Age", unit).startswith("Age (ye")
