"""The covariance parameters the optimizer moves: their layout, bounds and meaning.

lme4 optimizes theta, the entries of the relative covariance factor Lambda,
with a lower bound of 0 on its diagonal. The optimizer here does not assume
that: it is given a :class:`CovarianceParameters` that says, for every
parameter, its bounds, whether it is a variance (a diagonal entry of Lambda:
zero means a zero variance, the singular boundary lme4 reports) and whether the
criterion is even in it (so that a stop at zero may be a saddle worth looking
past). Further parameters, such as the correlations and variance ratios of a
level-1 error structure, join the same object with their own bounds and flags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class CovarianceParameters:
    names: tuple[str, ...]  # lme4's .sig01, .sig02, ... for theta
    lower: np.ndarray
    upper: np.ndarray
    variance: np.ndarray  # bool: zero means a zero variance (boundary, singular fit)
    even: np.ndarray  # bool: the criterion is even in this parameter (a diagonal of Lambda)

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def bounded(self) -> np.ndarray:
        return np.isfinite(self.lower) | np.isfinite(self.upper)

    @classmethod
    def for_theta(cls, theta_index: tuple[tuple[int, int], ...]) -> CovarianceParameters:
        diag = np.array([i == j for i, j in theta_index], dtype=bool)
        k = len(theta_index)
        return cls(
            names=tuple(f".sig{j + 1:02d}" for j in range(k)),
            lower=np.where(diag, 0.0, -np.inf),
            upper=np.full(k, np.inf),
            variance=diag,
            even=diag.copy(),
        )

    def join(self, other: CovarianceParameters) -> CovarianceParameters:
        """These parameters followed by ``other``'s (e.g. a residual structure's)."""
        return CovarianceParameters(
            names=self.names + other.names,
            lower=np.concatenate([self.lower, other.lower]),
            upper=np.concatenate([self.upper, other.upper]),
            variance=np.concatenate([self.variance, other.variance]),
            even=np.concatenate([self.even, other.even]),
        )

    def start(self) -> np.ndarray:
        """lme4's start for theta: 1 on Lambda's diagonal, 0 elsewhere; inside other bounds."""
        x = np.where(self.variance, 1.0, 0.0)
        return np.clip(x, self.lower, self.upper)
