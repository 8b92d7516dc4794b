"""The HTML report and its files: charts (a table in, a chart out) and the assembly.

```python
from pipeline.report import ReportContext, render_report, write_report_files, sample_persons

sample = sample_persons(level1, person_col="person", n=200, seed=20240101)
ctx = ReportContext(title=..., study_name=..., data_file=..., data_sha256=..., rows_in=...,
                    rows_used=..., rows_quarantined=..., level1_sample=sample, tables=..., ...)
html = render_report(ctx)                         # str; same ctx -> same bytes
write_report_files(context=ctx, folder=out_dir)   # tables/*.csv|parquet, charts/*.svg|png

# or straight from the stages' results (what the Prefect flow does):
ctx = build_context(cfg=cfg, loaded=loaded, validation=vr, levels=lv, descriptives=desc,
                    analysis=an, versions=library_versions(), changes=None)
```

No Prefect here: this package depends on polars, numpy, altair, vl-convert and jinja2 only.
"""

from .build import build_context, changes_table, config_text, level1_sample
from .context import (
    ANALYSIS_TABLES,
    CHANGES_COLUMNS,
    ReportContext,
    sample_persons,
    sample_rows,
    thin_quantiles,
)
from .figures import Figure, build_figures
from .files import report_tables, write_charts, write_report_files, write_tables
from .html import collect_alerts, render_report, script_json

__all__ = [
    "ANALYSIS_TABLES",
    "CHANGES_COLUMNS",
    "Figure",
    "ReportContext",
    "build_context",
    "build_figures",
    "changes_table",
    "collect_alerts",
    "config_text",
    "level1_sample",
    "render_report",
    "report_tables",
    "sample_persons",
    "sample_rows",
    "script_json",
    "thin_quantiles",
    "write_charts",
    "write_report_files",
    "write_tables",
]
