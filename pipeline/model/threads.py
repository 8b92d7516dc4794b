"""BLAS threads off for the small-matrix phases of a fit.

Every matrix in the optimisation is q x q or p x p; a multithreaded BLAS only
adds overhead there (seen here: 3x slower on 2 cores). The controller is
built once (threadpoolctl scans the loaded libraries, which costs ~2 ms a call).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import lru_cache

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    import numpy  # noqa: F401  (make sure numpy's and scipy's BLAS are loaded first)
    import scipy.linalg  # noqa: F401
    import scipy.optimize  # noqa: F401

    return ThreadpoolController()


def single_threaded() -> AbstractContextManager:
    return _controller().limit(limits=1)
