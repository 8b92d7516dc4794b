"""The report in a real browser: headless Chromium, network off.

Skips when Chromium is absent on a developer's machine; under CI (``CI`` set)
a missing Chromium is a failure, since .ci/run installs Debian's ``chromium``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from headless_chromium import ChromiumPage, find_chromium
from report_synthetic import synthetic_context

from pipeline.report import build_figures, render_report

pytestmark = pytest.mark.browser

FLAG_SCRIPT = "<script>window.__xss = 'script'; alert(1)</script>"
FLAG_IMG = "<img src=x onerror=\"window.__xss = 'img'; document.title = 'pwned'; alert(1)\">"
BREAKOUT = "</script><script>window.__xss = 'breakout'; alert(1)</script>"
ALL_CHARTS_DRAWN = """
Array.from(document.querySelectorAll('div.chart')).map(
  el => [el.id, el.querySelector('svg, canvas') !== null,
         el.querySelector('svg') ? el.querySelector('svg').getBoundingClientRect().width : 0])
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        reason = (
            "headless Chromium not found (looked for /usr/bin/chromium; set CHROMIUM to override). "
            "Install it with `apt-get install -y chromium chromium-driver`; CI installs it in .ci/run."
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    return path


def _open_report(
    chromium: str, tmp_path: Path, html: str, *, name: str
) -> tuple[ChromiumPage, float]:
    """Open ``html`` from a file; fail unless every chart reports it rendered."""
    report = tmp_path / f"{name}.html"
    report.write_text(html, encoding="utf-8")
    page = ChromiumPage(executable=chromium, profile=tmp_path / f"profile-{name}")
    page.__enter__()
    start = time.monotonic()
    page.open(report.resolve().as_uri())
    state = page.wait_until("document.body.getAttribute('data-charts')", timeout=60)
    elapsed = time.monotonic() - start
    assert state == "rendered", f"charts failed: {page.log.errors()}"
    return page, elapsed


def test_report_renders_offline_with_no_errors_and_no_injected_script(
    chromium: str, tmp_path: Path
) -> None:
    title = f"Injected {FLAG_SCRIPT} {FLAG_IMG}"
    ctx = synthetic_context(
        persons=150,
        seed=3,
        title=title,
        labels=(BREAKOUT, FLAG_IMG),
        group_column=f"trt{FLAG_SCRIPT}",
        reason=f"bad {FLAG_IMG}",
    )
    expected_charts = sum(f.available for f in build_figures(ctx))
    assert expected_charts == 10
    page, _ = _open_report(chromium, tmp_path, render_report(ctx), name="injected")
    try:
        drawn = page.evaluate(ALL_CHARTS_DRAWN)
        assert len(drawn) == expected_charts
        assert all(has_graphic for _, has_graphic, _ in drawn), drawn
        assert all(width > 100 for _, _, width in drawn), drawn
        # the report asked for nothing, on the network or on disk: the only request is itself
        assert page.log.requests == [(tmp_path / "injected.html").resolve().as_uri()]
        assert page.log.errors() == []
        # nothing injected ran: no flag, no alert, the title is the literal text
        assert page.evaluate("typeof window.__xss") == "undefined"
        assert page.log.dialogs == []
        assert page.evaluate("document.title") == title
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        # the group labels reached the legend as text (Vega shortens long labels with "…")
        legend_text = page.evaluate(
            "Array.from(document.querySelectorAll('#chart-group_trajectories svg text'))"
            ".map(t => t.textContent)"
        )
        assert any(text.startswith("</script><script>window") for text in legend_text)
        assert any(text.startswith("<img src=x onerror=") for text in legend_text)
        shot = page.screenshot(tmp_path / "report.png")
        assert shot.stat().st_size > 50_000
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        page.__exit__(None, None, None)


def test_report_at_100000_persons_renders_in_under_5_seconds(chromium: str, tmp_path: Path) -> None:
    html = render_report(synthetic_context(persons=100_000, seed=2))
    assert len(html.encode()) < 5 * 1024 * 1024
    page, elapsed = _open_report(chromium, tmp_path, html, name="large")
    try:
        drawn = page.evaluate(ALL_CHARTS_DRAWN)
        assert len(drawn) == 10 and all(ok for _, ok, _ in drawn), drawn
        assert page.log.errors() == []
        assert elapsed < 5.0, f"rendering took {elapsed:.1f} s"
        page.screenshot(tmp_path / "report-100000.png", full_page=False)
    finally:
        page.__exit__(None, None, None)


def test_report_layout_findings_first_tables_not_cut_off(chromium: str, tmp_path: Path) -> None:
    """At 1280 px: no table wider than the text column, charts as wide as most of it,
    every finding's link lands on an element, the findings come first."""
    ctx = synthetic_context(persons=150, seed=4)
    page, _ = _open_report(chromium, tmp_path, render_report(ctx), name="layout")
    try:
        cut = page.evaluate(
            "Array.from(document.querySelectorAll('.table-wrap'))"
            ".filter(w => w.scrollWidth > w.clientWidth + 1).map(w => w.id)"
        )
        assert cut == [], f"tables wider than the text column: {cut}"
        column = page.evaluate("document.querySelector('main').getBoundingClientRect().width")
        widths = page.evaluate(
            "['spaghetti', 'observed_means', 'group_trajectories'].map(k => "
            "document.querySelector('#chart-' + k + ' svg').getBoundingClientRect().width)"
        )
        assert all(0.75 * column <= w <= column + 1 for w in widths), (column, widths)
        links = page.evaluate(
            "Array.from(document.querySelectorAll('#findings a.source'))"
            ".map(a => [a.getAttribute('href'), "
            "document.getElementById(a.getAttribute('href').slice(1)) !== null])"
        )
        assert len(links) >= 6 and all(found for _, found in links), links
        first = page.evaluate("document.querySelector('main section').id")
        assert first == "findings"
    finally:
        page.__exit__(None, None, None)
