"""Errors meant for the user.

Every error a person can act on derives from :class:`GrowthError`; its message is
one line that names the file, the key, the column, the row or the person.
Anything else that escapes is a bug.
"""

from __future__ import annotations

from typing import Any


class GrowthError(Exception):
    """An error whose message is meant for the user (one clear line)."""


class ConfigError(GrowthError):
    """A study config that cannot be used: names the file, the key and what was expected."""


class DataError(GrowthError):
    """Input data that cannot be used: names the file, the column, the row or the person."""


class FormulaError(GrowthError):
    """A model formula that cannot be parsed or does not fit the data."""


class ModelError(GrowthError):
    """A model that cannot be fitted (rank-deficient design, constant outcome, ...)."""


class QuarantineLimitError(DataError):
    """More rows were invalid than the study allows; ``validation`` holds what was found."""

    def __init__(self, message: str, validation: Any = None) -> None:
        super().__init__(message)
        self.validation = validation
