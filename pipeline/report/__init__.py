"""The HTML report and its files: charts (a table in, a chart out) and the assembly.

```python
from pipeline.report import ReportContext, render_report, write_report_files, sample_persons

sample = sample_persons(level1, person_col="person", n=200, seed=20240101)
ctx = ReportContext(title=..., study_name=..., data_file=..., data_sha256=..., rows_in=...,
                    rows_used=..., rows_quarantined=..., level1_sample=sample, tables=..., ...)
html = render_report(ctx)                         # str; same ctx -> same bytes
write_report_files(context=ctx, folder=out_dir)   # tables/*.csv|parquet|tex|md, charts/*.svg (png: opt-in)

# or straight from the stages' results (what the Prefect flow does):
ctx = build_context(cfg=cfg, loaded=loaded, validation=vr, levels=lv, descriptives=desc,
                    analysis=an, versions=library_versions(), changes=None)
```

No Prefect here: this package depends on polars, numpy, altair, vl-convert and jinja2 only.
"""

from .build import (
    build_context,
    build_outcomes_context,
    changes_table,
    config_text,
    level1_sample,
)
from .context import (
    ANALYSIS_TABLES,
    CHANGES_COLUMNS,
    ReportContext,
    sample_persons,
    sample_rows,
    thin_quantiles,
)
from .figures import Figure, build_figures
from .files import (
    report_tables,
    write_charts,
    write_model_table,
    write_report_files,
    write_tables,
)
from .findings import Finding, build_findings, effect_sizes
from .html import collect_alerts, prefetch_javascript, render_report, script_json
from .publication import (
    ModelTable,
    build_model_table,
    model_table_latex,
    model_table_markdown,
)

__all__ = [
    "ANALYSIS_TABLES",
    "CHANGES_COLUMNS",
    "Figure",
    "Finding",
    "ModelTable",
    "ReportContext",
    "build_context",
    "build_outcomes_context",
    "build_figures",
    "build_findings",
    "build_model_table",
    "effect_sizes",
    "model_table_latex",
    "model_table_markdown",
    "prefetch_javascript",
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
    "write_model_table",
    "write_report_files",
    "write_tables",
]
