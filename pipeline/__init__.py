"""Growth-curve analysis library: fast two-level linear mixed models and the pipeline around them.

No Prefect here, so that everything can be used from a notebook::

    from pipeline import fit_growth
    fit = fit_growth(df, "cog ~ age1 * trt + (age1 | id)", reml=True)
"""

from pipeline.analysis.comparison import compare
from pipeline.model.fit import fit_growth
from pipeline.model.results import GrowthFit

__version__ = "0.1.0"

__all__ = ["GrowthFit", "__version__", "compare", "fit_growth"]
