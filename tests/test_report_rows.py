"""The report's row counts for wide files, and the note that a row can have several reasons."""

from __future__ import annotations

import dataclasses

from report_synthetic import synthetic_context

from pipeline.report import render_report


def test_wide_files_show_file_rows_and_reshaped_rows():
    context = synthetic_context()
    wide = dataclasses.replace(
        context, file_rows=1721, rows_in=10326, rows_used=10300, rows_quarantined=26
    )
    html = render_report(wide)
    assert "1,721 rows in the file (one per person: wide layout)" in html
    assert "10,326 person-occasions after reshaping" in html
    long = dataclasses.replace(context, file_rows=context.rows_in)
    html = render_report(long)
    assert "rows in the file" not in html
    assert f"{context.rows_in:,} read" in html


def test_reasons_caption_says_a_row_can_have_several_reasons():
    html = render_report(synthetic_context())
    assert "a row can fail for several reasons" in html
