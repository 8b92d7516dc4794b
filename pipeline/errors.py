"""Errors meant for the user.

Every error a person can act on derives from :class:`GrowthError`; its message is
one line that names the file, the key, the column, the row or the person.
Anything else that escapes is a bug.
"""

from __future__ import annotations

import errno
from typing import Any

__all__ = [
    "ConfigError",
    "DataError",
    "FormulaError",
    "GrowthError",
    "ModelError",
    "QuarantineLimitError",
    "one_line",
    "show_name",
]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped (``\\n``, ``\\x1b``).

    Printable text, including non-ASCII letters and backslashes, is kept as is, so
    a message stays readable and is always one line on a terminal.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def show_name(name: object) -> str:
    """A column or key name from a file, for a message: repr-like escapes, no quotes.

    ``"co\\ng"`` -> ``co\\ng`` (a backslash and an ``n``); a backslash in the name is
    doubled so the escapes are unambiguous. Plain names come back unchanged.
    """
    text = str(name)
    if text.isprintable() and "\\" not in text:
        return text
    return one_line(text.replace("\\", "\\\\"))


class GrowthError(Exception):
    """An error whose message is meant for the user (one clear line)."""


class ConfigError(GrowthError):
    """A study config that cannot be used: names the file, the key and what was expected."""


class DataError(GrowthError):
    """Input data that cannot be used: names the file, the column, the row or the person."""


class TransientReadError(DataError):
    """Reading the data file failed for a reason that may pass (I/O error, a share away)."""


# errors of reading a file that no retry cures (missing, a folder, not allowed, a loop)
PERMANENT_ERRNOS = frozenset(
    {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ELOOP}
)


class FormulaError(GrowthError):
    """A model formula that cannot be parsed or does not fit the data."""


class ModelError(GrowthError):
    """A model that cannot be fitted (rank-deficient design, constant outcome, ...)."""


class QuarantineLimitError(DataError):
    """More rows were invalid than the study allows; ``validation`` holds what was found."""

    def __init__(self, message: str, validation: Any = None) -> None:
        super().__init__(message)
        self.validation = validation
